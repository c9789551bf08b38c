"""`farm analytics`: the daily rollups (issue 21.2).

    farm analytics rollup --date YYYY-MM-DD   recompute one UTC day now (super users)
    farm analytics daily [--since D] [--until D] [--json]
"""

from __future__ import annotations

import argparse
import json
from urllib.parse import urlencode

from actors.control.cli.client import EXIT_OK, FarmClient, add_command
from actors.control.cli.format import format_table

COLUMNS = ("posts", "views", "likes", "comments", "link_clicks", "follower_growth")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _cmd_analytics(client: FarmClient, args: argparse.Namespace) -> int:
    if args.action == "rollup":
        made = client.post_json("/api/analytics/rollup", {"date": args.date})
        print(f"{made['date']}: {made['clients']} client rows, {made['platforms']} "
              "platform rows")
        return EXIT_OK
    query = {k: v for k, v in (("since", args.since), ("until", args.until)) if v}
    view = client.get_json("/api/analytics/daily" + (f"?{urlencode(query)}" if query else ""))
    if args.json:
        print(json.dumps(view, indent=2))
        return EXIT_OK
    heads = ["POSTS", "VIEWS", "LIKES", "COMMENTS", "CLICKS", "FOLLOWERS", "ENGAGEMENT"]
    rows = [[r["date"], r["client"] or str(r["client_id"]), r["platform"] or "-",
             *(str(r[c] or 0) for c in COLUMNS), _rate(r["engagement_rate"])]
            for r in view["clients"]]
    if rows:
        print(format_table(rows, ["DATE", "CLIENT", "PLATFORM", *heads]))
    rows = [[r["date"], r["platform"] or "-", *(str(r[c] or 0) for c in COLUMNS),
             _rate(r["engagement_rate"])] for r in view.get("platforms", [])]
    if rows:
        print(format_table(rows, ["DATE", "PLATFORM", *heads]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "analytics",
                    "daily metrics per client and platform; roll a day up now",
                    _cmd_analytics)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser("rollup", help="recompute one UTC day now (super users)",
                           parents=[common])
    q.add_argument("--date", required=True, metavar="YYYY-MM-DD")
    q = actions.add_parser("daily", help="the daily rows (default the last 30 days)",
                           parents=[common])
    q.add_argument("--since", metavar="YYYY-MM-DD")
    q.add_argument("--until", metavar="YYYY-MM-DD")
    q.add_argument("--json", action="store_true", help="the API's JSON")
