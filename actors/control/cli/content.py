"""`farm content`: what the content variables draw from, through the control API
(issue 21.4).

    farm content captions [list]
    farm content captions set NAME TEMPLATE [--client C]
    farm content captions remove NAME [--client C]
    farm content hashtags set NAME TAG [TAG ...] [--client C]      (list, remove as above)
    farm content vars set NAME VALUE [--client C | --account ID|PLATFORM.NUMBER]
    farm content media add FILE [--name N] [--client C]            (streamed from the file)
    farm content media [list] | remove ID
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from urllib.parse import quote, urlencode

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient, add_command
from actors.control.cli.format import format_table
from actors.control.cli.variables import caret_lines
from protocol.errors import FarmError

UPLOAD_TIMEOUT_S = 3600.0
VALUE_COLUMN = {"captions": "template", "hashtags": "tags", "vars": "value"}


def _owner(row: dict) -> str:
    return row.get("account") or row.get("client") or "(farm)"


def _query(args: argparse.Namespace) -> str:
    pairs = {k: v for k, v in (("client", args.client),
                               ("account", getattr(args, "account", None))) if v}
    return f"?{urlencode(pairs)}" if pairs else ""


def _list(client: FarmClient, kind: str) -> int:
    column = VALUE_COLUMN.get(kind)
    rows = client.get_json(f"/api/content/{kind}")[kind]
    if kind == "media":
        table = [[str(r["id"]), r["name"], _owner(r), r["mime"], str(r["size"]), r["file"]]
                 for r in rows]
        headers = ["ID", "NAME", "OWNER", "TYPE", "BYTES", "FILE"]
    else:
        table = [[r["name"], _owner(r), " ".join("#" + t for t in r[column])
                  if kind == "hashtags" else r[column]] for r in rows]
        headers = ["NAME", "OWNER", column.upper()]
    print(format_table(table, headers) if table else f"no {kind}")
    return EXIT_OK


def _set(client: FarmClient, args: argparse.Namespace) -> int:
    kind = args.kind
    if not args.name or not args.values:
        print(f"farm content {kind} set: give NAME and its "
              f"{'TAG ...' if kind == 'hashtags' else VALUE_COLUMN[kind].upper()}",
              file=sys.stderr)
        return EXIT_REJECTED
    body: dict = {VALUE_COLUMN[kind]: args.values if kind == "hashtags" else " ".join(args.values)}
    if args.client:
        body["client"] = args.client
    if getattr(args, "account", None):
        body["account"] = args.account
    try:
        with client._open(f"/api/content/{kind}/{quote(args.name, safe='')}", body,
                          method="PUT") as response:
            out = json.load(response)
    except FarmError as exc:
        return _explain(exc, body.get("template"))
    print(f"{kind[:-1] if kind != 'hashtags' else 'hashtag set'} {out['name']} saved")
    return EXIT_OK


def _explain(exc: Exception, template: str | None) -> int:
    """A refused template with a caret under the offset the server named."""
    print(f"farm: {exc}", file=sys.stderr)
    match = re.search(r"offset (\d+)", str(exc))
    if template is not None and match:
        for line in caret_lines(template, int(match.group(1))):
            print(line, file=sys.stderr)
    return EXIT_REJECTED


def _media_add(client: FarmClient, args: argparse.Namespace) -> int:
    path = args.name
    try:
        fh = open(path, "rb")
    except OSError as exc:
        print(f"farm content media add: {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_REJECTED
    name = args.as_name or re.sub(r"[^A-Za-z0-9_-]", "_",
                                  os.path.splitext(os.path.basename(path))[0])[:64]
    query = urlencode({"name": name, **({"client": args.client} if args.client else {})})
    with fh:
        client.timeout = max(client.timeout, UPLOAD_TIMEOUT_S)
        out = client.post_file(f"/api/content/media?{query}", fh, os.fstat(fh.fileno()).st_size)
    print(f"media {out['id']} {out['name']}: {out['mime']}, {out['size']} bytes, {out['file']}")
    return EXIT_OK


def _cmd_content(client: FarmClient, args: argparse.Namespace) -> int:
    kind, action = args.kind, args.action
    if action == "list":
        return _list(client, kind)
    if action == "set" and kind != "media":
        return _set(client, args)
    if action == "add" and kind == "media":
        if not args.name:
            print("farm content media add: give the file", file=sys.stderr)
            return EXIT_REJECTED
        return _media_add(client, args)
    if action == "remove":
        if not args.name:
            print(f"farm content {kind} remove: give the "
                  f"{'id' if kind == 'media' else 'name'}", file=sys.stderr)
            return EXIT_REJECTED
        if kind == "media":
            if not args.name.isdigit():
                print("farm content media remove: give the item's id (farm content media)",
                      file=sys.stderr)
                return EXIT_REJECTED
            removed = client.delete_json(f"/api/content/media/{args.name}")["removed"]
        else:
            removed = client.delete_json(f"/api/content/{kind}/{quote(args.name, safe='')}"
                                         f"{_query(args)}")["removed"]
        print(f"removed {removed['name']}")
        return EXIT_OK
    print(f"farm content {kind}: {action} is not a {kind} command (list, "
          f"{'add' if kind == 'media' else 'set'}, remove)", file=sys.stderr)
    return EXIT_REJECTED


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "content",
                    "what content variables draw from: caption templates, hashtag sets, "
                    "custom variables (per client or account), the media library",
                    _cmd_content)
    p.add_argument("kind", choices=["captions", "hashtags", "vars", "media"])
    p.add_argument("action", nargs="?", choices=["list", "set", "add", "remove"],
                   default="list")
    p.add_argument("name", nargs="?", metavar="NAME|FILE|ID")
    p.add_argument("values", nargs="*", metavar="VALUE",
                   help="set: the template, the tags, or the value")
    p.add_argument("--client", metavar="CLIENT", help="the client's (default: yours, or the "
                   "farm's shared one for a super user)")
    p.add_argument("--account", metavar="ID|PLATFORM.NUMBER",
                   help="vars: the account's own value (its id when several of your accounts "
                        "have that PLATFORM.NUMBER)")
    p.add_argument("--name", dest="as_name", metavar="NAME", help="media add: its name")
