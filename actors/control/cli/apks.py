"""`farm apks`: the farm's APK library through the control API (issue 20.1).

    farm apks add FILE        upload an .apk, .xapk or .apkm (streamed from the file)
    farm apks [list] [--app APP]
    farm apks remove ID       one file of the library (refused while a pin names it)
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import quote, urlencode

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient, add_command
from actors.control.cli.format import format_table

# Uploading a GB over a slow link takes a while; the answer comes once it is stored.
UPLOAD_TIMEOUT_S = 3600.0


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MB" if n >= 1048576 else f"{n / 1024:.0f} KB"


def _add(client: FarmClient, path: str) -> int:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        print(f"farm apks add: {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_REJECTED
    with fh:
        size = os.fstat(fh.fileno()).st_size
        client.timeout = max(client.timeout, UPLOAD_TIMEOUT_S)
        name = quote(os.path.basename(path))
        result = client.post_file(f"/api/apks?name={name}", fh, size)
    verb = f"added {result['added']} file(s)" if result["added"] else "already in the library"
    print(f"{result['app']} ({result['package']}) {result['version_name']} "
          f"[{result['version_code']}]: {verb}")
    _print_files(result["files"])
    return EXIT_OK


def _print_files(files: list[dict]) -> None:
    rows = [[str(f["apk_id"]), f["app"], f["version_name"], str(f["version_code"]),
             f["split"] or ("obb" if f["kind"] == "obb" else "base"),
             ",".join(f["abis"] + f["densities"]) or "-", _size(f["size"]), f["sha256"][:12]]
            for f in files]
    if rows:
        print(format_table(rows, ["ID", "APP", "VERSION", "CODE", "PART", "ABI/DPI", "SIZE",
                                  "SHA256"]))


def _cmd_apks(client: FarmClient, args: argparse.Namespace) -> int:
    if args.action == "add":
        if not args.target:
            print("farm apks add: give the file (.apk, .xapk, .apkm)", file=sys.stderr)
            return EXIT_REJECTED
        return _add(client, args.target)
    if args.action == "remove":
        if not args.target or not args.target.isdigit():
            print("farm apks remove: give the file's id (a number, see farm apks list)",
                  file=sys.stderr)
            return EXIT_REJECTED
        removed = client.delete_json(f"/api/apks/{args.target}")["removed"]
        print(f"removed {removed['apk_id']}: {removed['app']} {removed['version_name']} "
              f"{removed['split'] or removed['kind']}")
        return EXIT_OK
    query = f"?{urlencode({'app': args.app})}" if args.app else ""
    files = client.get_json("/api/apks" + query)["apks"]
    if not files:
        print("the library is empty" if not args.app else f"no files of {args.app}")
    _print_files(files)
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "apks",
                    "the APK library: add an .apk/.xapk/.apkm, list the stored versions, "
                    "remove a file", _cmd_apks)
    p.add_argument("action", nargs="?", choices=["list", "add", "remove"], default="list")
    p.add_argument("target", nargs="?", metavar="FILE|ID", help="add: the file; remove: its id")
    p.add_argument("--app", metavar="APP", help="list: one app's (registry name or package)")
