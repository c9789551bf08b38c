"""`farm accounts`: each account's health, followers and last post (issue 21.3).

    farm accounts [--health at_risk[,watch]] [--json]
"""

from __future__ import annotations

import argparse
import json
from urllib.parse import urlencode

from actors.control.cli.client import EXIT_OK, FarmClient, add_command
from actors.control.cli.format import format_table


def _n(value: object) -> str:
    return "-" if value is None else str(value)


def _cmd_accounts(client: FarmClient, args: argparse.Namespace) -> int:
    query = {"health": args.health} if args.health else {}
    rows = client.get_json("/api/accounts" + (f"?{urlencode(query)}" if query
                                              else ""))["accounts"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = []
    for a in rows:
        h = a.get("health") or {}
        change = h.get("followers_change_7d")
        last = (a.get("last_posts") or [{}])[0].get("posted_at") or ""
        table.append([str(a["account_id"]), a.get("account") or "-", a.get("phone") or "-",
                      a.get("status") or "-", h.get("state", "-"), _n(h.get("followers")),
                      "-" if change is None else f"{change:+d}", last[:16],
                      "; ".join(h.get("reasons") or [])])
    if table:
        print(format_table(table, ["ID", "ACCOUNT", "PHONE", "STATUS", "HEALTH", "FOLLOWERS",
                                   "7D", "LAST POST", "REASONS"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "accounts",
                    "each account's health (ok, watch, at_risk and why), followers and their "
                    "change over 7 days, last post", _cmd_accounts)
    p.add_argument("--health", metavar="STATES",
                   help="only these states, comma-separated: ok, watch, at_risk")
    p.add_argument("--json", action="store_true", help="the API's JSON")
