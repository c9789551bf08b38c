"""`farm posts`: the posts the phones recorded and their latest metrics (issue 21.2).

    farm posts [--account platform.number] [--since 7d|ISO] [--limit N] [--json]
    farm posts show ID [--json]          one post's metric readings and daily rows
"""

from __future__ import annotations

import argparse
import json
from urllib.parse import urlencode

from actors.control.cli.client import EXIT_OK, FarmClient, add_command
from actors.control.cli.format import format_table

METRICS = ("views", "likes", "comments", "shares", "saves")


def _n(value: object) -> str:
    return "-" if value is None else str(value)


def _cmd_posts(client: FarmClient, args: argparse.Namespace) -> int:
    if args.action == "show":
        view = client.get_json(f"/api/posts/{int(args.id)}/metrics")
        if args.json:
            print(json.dumps(view, indent=2))
            return EXIT_OK
        post = view["post"]
        print(f"post {post['post_id']} {post['account']} {post['posted_at']} "
              f"{post['status']}: {post['caption'] or ''}")
        rows = [[d["date"], *(_n(d[m]) for m in METRICS)] for d in view["daily"]]
        if rows:
            print(format_table(rows, ["DATE", *(m.upper() for m in METRICS)]))
        return EXIT_OK
    query = {k: v for k, v in (("account", args.account), ("since", args.since),
                               ("limit", args.limit)) if v is not None}
    posts = client.get_json("/api/posts" + (f"?{urlencode(query)}" if query else ""))["posts"]
    if args.json:
        print(json.dumps(posts, indent=2))
        return EXIT_OK
    rows = [[str(p["post_id"]), p["account"] or "-", (p["posted_at"] or "")[:19], p["status"],
             *(_n(p["latest"][m]) for m in ("views", "likes", "comments")),
             (p["caption"] or "")[:40]] for p in posts]
    if rows:
        print(format_table(rows, ["ID", "ACCOUNT", "POSTED", "STATUS", "VIEWS", "LIKES",
                                  "COMMENTS", "CAPTION"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "posts",
                    "the posts the phones recorded, newest first, with their latest metrics",
                    _cmd_posts)
    p.set_defaults(action="list")
    p.add_argument("--account", metavar="REF", help="only this account (platform.number)")
    p.add_argument("--since", metavar="WHEN", help="posted since: 7d, 12h or an ISO time")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N (100)")
    p.add_argument("--json", action="store_true", help="the API's JSON")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    q = actions.add_parser("show", help="one post's daily metrics", parents=[common])
    q.add_argument("id", metavar="ID", type=int)
    q.add_argument("--json", action="store_true", help="the API's JSON")
