"""`farm reports`: the clients' daily reports through the control API (issue 19.5).

    farm reports [list] [--client C] [--day YYYY-MM-DD] [--limit N]
    farm reports show ID [--html]        the text (or the HTML page) of one report
    farm reports make --client C [--day YYYY-MM-DD] [--send]
                                         make one now (super users, the client's admins)
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlencode

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient, add_command
from actors.control.cli.format import format_table


def _cmd_reports(client: FarmClient, args: argparse.Namespace) -> int:
    if args.action == "show":
        if args.id is None or not args.id.isdigit():
            print("farm reports show: give the report's id (a number)", file=sys.stderr)
            return EXIT_REJECTED
        if args.html:
            body, _ = client.get_bytes(f"/api/reports/{args.id}.html")
            sys.stdout.write(body.decode("utf-8"))
        else:
            sys.stdout.write(client.get_json(f"/api/reports/{args.id}")["text"])
        return EXIT_OK
    if args.action == "make":
        if not args.client:
            print("farm reports make: --client is required", file=sys.stderr)
            return EXIT_REJECTED
        body: dict = {"client": args.client, "send": args.send}
        if args.day:
            body["day"] = args.day
        report = client.post_json("/api/reports", body)
        print(f"report {report['id']}: {report['title']} ({report['html_url']})")
        sys.stdout.write(report["text"])
        return EXIT_OK
    query = {k: v for k, v in (("client", args.client), ("day", args.day),
                               ("limit", args.limit)) if v is not None}
    reports = client.get_json("/api/reports" + (f"?{urlencode(query)}" if query else ""))
    rows = [[str(r["id"]), r.get("client") or str(r["client_id"]), r["day"], r["kind"],
             str(r["created_at"])[:19], "yes" if r.get("sent_at") else
             ("failed" if r.get("send_error") else "no")] for r in reports["reports"]]
    if rows:
        print(format_table(rows, ["ID", "CLIENT", "DAY", "KIND", "CREATED", "SENT"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "reports",
                    "the clients' daily reports: list them, show one (text or --html), or "
                    "make one now for a client and a day", _cmd_reports)
    p.add_argument("action", nargs="?", choices=["list", "show", "make"], default="list")
    p.add_argument("id", nargs="?", metavar="ID", help="show: the report's id")
    p.add_argument("--client", metavar="C", help="list: one client's; make: the client")
    p.add_argument("--day", metavar="YYYY-MM-DD",
                   help="list: one day's; make: the UTC day (default yesterday)")
    p.add_argument("--limit", type=int, metavar="N", help="list: at most N (default 50)")
    p.add_argument("--html", action="store_true", help="show: the HTML page instead")
    p.add_argument("--send", action="store_true",
                   help="make: also send it through the alert channels that take reports")
