"""`farm apps`: installing apps on the phones, the inventory and pins (issue 20.2/20.3).

    farm apps install APP --version V SCOPE [--allow-downgrade] [--wait]
                                         install a library version on the scope's phones;
                                         --wait prints each phone's progress until done
    farm apps uninstall APP SCOPE [--wait]
    farm apps installs [ID]              recent installs, or one install's phones
    farm apps list [--outdated] [--all]  each phone's versions of the library's apps, the
                                         pinned one beside it (--outdated: drifted only)
    farm apps pin APP VERSION --client C | --group G [--client C]
    farm apps unpin APP --client C | --group G [--client C]
    farm apps pins                       the pins
"""

from __future__ import annotations

import argparse
import sys
import time
from urllib.parse import quote, urlencode

from actors.control.cli.client import (EXIT_OK, EXIT_PHONE_FAILED, EXIT_REJECTED, FarmClient,
                                       add_command)
from actors.control.cli.format import format_table

POLL_S = 0.5


def _progress(phone: dict) -> str:
    state = phone["state"]
    if state in ("sending", "installing") and phone.get("bytes_total"):
        pct = 100 * phone["bytes_sent"] // max(1, phone["bytes_total"])
        return f"{state} {pct}% ({phone['bytes_sent']}/{phone['bytes_total']} bytes)"
    if state == "ok":
        splits = ",".join(phone.get("splits") or [])
        return "ok" + (f" ({splits})" if splits else "")
    if state == "failed":
        return f"failed: {phone.get('reason')}"
    return state


def _wait(client: FarmClient, install_id: str) -> int:
    """Print each phone's progress as it changes until every phone is done; 1 if any
    failed."""
    shown: dict[str, str] = {}
    while True:
        view = client.get_json(f"/api/apps/installs/{quote(install_id)}")
        for serial, phone in sorted(view["phones"].items()):
            line = _progress(phone)
            if shown.get(serial) != line:
                shown[serial] = line
                print(f"{serial}: {line}", flush=True)
        if view["finished"]:
            counts = view["counts"]
            print(f"{install_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
            return EXIT_PHONE_FAILED if counts.get("failed") else EXIT_OK
        time.sleep(POLL_S)


def _started(client: FarmClient, answer: dict, wait: bool) -> int:
    phones = answer["phones"]
    version = f" {answer['version']}" if answer.get("version") else ""
    print(f"{answer['install_id']}: {answer['app']}{version} on {len(phones)} phone(s)")
    if not phones:
        return EXIT_PHONE_FAILED
    return _wait(client, answer["install_id"]) if wait else EXIT_OK


def _pin_body(args: argparse.Namespace) -> dict | None:
    if not args.client and not args.group:
        return None
    body = {}
    if args.client:
        body["client"] = args.client
    if args.group:
        body["group"] = args.group
    return body


def _cmd_apps(client: FarmClient, args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action == "install":
        answer = client.post_json("/api/apps/install", {
            "app": args.app, "version": args.version, "scope": args.scope,
            "allow_downgrade": args.allow_downgrade})
        return _started(client, answer, args.wait)
    if action == "uninstall":
        answer = client.post_json("/api/apps/uninstall", {"app": args.app, "scope": args.scope})
        return _started(client, answer, args.wait)
    if action == "installs":
        if args.id:
            view = client.get_json(f"/api/apps/installs/{quote(args.id)}")
            rows = [[s, p["node"] or "-", _progress(p)] for s, p in sorted(view["phones"].items())]
            print(f"{view['install_id']}: {view['kind']} {view['app']} {view['version'] or ''}")
            if rows:
                print(format_table(rows, ["SERIAL", "NODE", "STATE"]))
            return EXIT_OK
        rows = [[r["install_id"], r["kind"], r["app"], r["version"] or "-", str(r["phones"]),
                 str(r["ok"]), str(r["failed"]), str(r["created_at"])[:19]]
                for r in client.get_json("/api/apps/installs")["installs"]]
        if rows:
            print(format_table(rows, ["ID", "KIND", "APP", "VERSION", "PHONES", "OK", "FAILED",
                                      "CREATED"]))
        return EXIT_OK
    if action == "list":
        outdated, every = getattr(args, "outdated", False), getattr(args, "all", False)
        query = {k: "1" for k, on in (("outdated", outdated), ("all", every)) if on}
        inv = client.get_json("/api/apps/inventory" + (f"?{urlencode(query)}" if query else ""))
        drift = {(d["serial"], d["package"]): d for d in inv["drift"]}
        if outdated:
            rows = [[d["serial"], d["app"], d["installed"] or "(none)",
                     str(d["installed_code"] or "-"), d["pinned"]] for d in inv["drift"]]
            if rows:
                print(format_table(rows, ["SERIAL", "APP", "INSTALLED", "CODE", "PINNED"]))
            return EXIT_OK
        rows = []
        for r in inv["inventory"]:
            d = drift.pop((r["serial"], r["package"]), None)
            rows.append([r["serial"], r["package"], r["version_name"] or "-",
                         str(r["version_code"]), d["pinned"] + " (drift)" if d else ""])
        rows += [[d["serial"], d["package"], "(none)", "-", d["pinned"] + " (drift)"]
                 for d in drift.values()]
        if rows:
            print(format_table(sorted(rows), ["SERIAL", "PACKAGE", "VERSION", "CODE", "PINNED"]))
        return EXIT_OK
    if action == "pin":
        body = _pin_body(args)
        if body is None:
            print("farm apps pin: --client C or --group G", file=sys.stderr)
            return EXIT_REJECTED
        pin = client.post_json("/api/apps/pins", {"app": args.app,
                                                   "version": args.pin_version, **body})
        print(f"pin {pin['pin_id']}: {pin['app']} {pin['version']} ({pin['version_code']}) "
              f"for {pin['target']}")
        return EXIT_OK
    if action == "unpin":
        if _pin_body(args) is None:
            print("farm apps unpin: --client C or --group G", file=sys.stderr)
            return EXIT_REJECTED
        app = args.app
        pins = [p for p in client.get_json("/api/apps/pins")["pins"]
                if app in (p["app"], p["package"])
                and (args.group is None or p["group_name"] == args.group)
                and (args.group is not None or p["group_name"] is None)
                and (args.client is None or p["client"] == args.client)]
        if len(pins) != 1:
            print(f"farm apps unpin: {len(pins)} pins of {app} match", file=sys.stderr)
            return EXIT_REJECTED
        client.delete_json(f"/api/apps/pins/{pins[0]['pin_id']}")
        print(f"unpinned {app} for {pins[0]['target']}")
        return EXIT_OK
    # pins
    rows = [[str(p["pin_id"]), p["app"], p["version"], str(p["version_code"]),
             p["client"] or "-", p["group_name"] or "-"]
            for p in client.get_json("/api/apps/pins")["pins"]]
    if rows:
        print(format_table(rows, ["ID", "APP", "VERSION", "CODE", "CLIENT", "GROUP"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "apps",
                    "apps on the phones: install or uninstall a library version over a "
                    "scope, the installs, each phone's versions, pins per client or group",
                    _cmd_apps)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=help_text, description=help_text,
                                  parents=[common])

    q = action("list", "each phone's versions of the library's apps and their pins")
    q.add_argument("--outdated", action="store_true",
                   help="only phones whose version differs from their pin")
    q.add_argument("--all", action="store_true",
                   help="every package, not only the library's apps")
    for name, text in (("install", "install a library version on the phones of SCOPE"),
                       ("uninstall", "uninstall an app from the phones of SCOPE")):
        q = action(name, text)
        q.add_argument("app", metavar="APP", help="a library app (name or package)")
        q.add_argument("scope", metavar="SCOPE", help="phone:all, phone:S1,S2, node:N, ...")
        if name == "install":
            q.add_argument("--version", required=True, metavar="V",
                           help="the version (name or code)")
            q.add_argument("--allow-downgrade", action="store_true",
                           help="also over a newer version")
        q.add_argument("--wait", action="store_true",
                       help="print each phone's progress until all are done (exit 1 if any "
                            "failed)")
    q = action("installs", "recent installs, or one install's phones")
    q.add_argument("id", nargs="?", metavar="ID")
    for name, text in (("pin", "pin APP at VERSION for a client's or a group's phones"),
                       ("unpin", "remove the pin of APP for a client or a group")):
        q = action(name, text)
        q.add_argument("app", metavar="APP")
        if name == "pin":
            q.add_argument("pin_version", metavar="VERSION")
        q.add_argument("--client", metavar="C",
                       help="the client (with --group: whose group book has it)")
        q.add_argument("--group", metavar="G", help="the group")
    action("pins", "the pins")
