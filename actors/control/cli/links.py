"""`farm links` and `farm conversations`: links in bio and the conversations the phones
read, through the control API (issue 21.6).

    farm links [list] [--account REF] [--removed]
    farm links add ACCOUNT URL [--title T]    a new link; prints its code and address
    farm links remove ID                      end it (its clicks are kept)
    farm links clicks CODE --date D --count N [--source S]
                                              add clicks counted elsewhere
    farm conversations [--account REF] [--limit N] | farm conversations show ID
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import quote, urlencode

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient, add_command
from actors.control.cli.format import format_table


def _query(**values: object) -> str:
    query = {k: v for k, v in values.items() if v is not None}
    return f"?{urlencode(query)}" if query else ""


def _cmd_links(client: FarmClient, args: argparse.Namespace) -> int:
    if args.action == "add":
        if len(args.args) != 2:
            print("farm links add: give ACCOUNT (an id or platform.number) and URL",
                  file=sys.stderr)
            return EXIT_REJECTED
        account, url = args.args
        link = client.post_json("/api/links", {
            "account": int(account) if account.isascii() and account.isdigit() else account,
            "url": url, "title": args.title})
        print(f"link {link['link_id']} of {link['account']} ({link['serial']}): code "
              f"{link['code']}, address {client.url}{link['path']} -> {link['url']}")
        return EXIT_OK
    if args.action == "remove":
        if len(args.args) != 1 or not args.args[0].isdigit():
            print("farm links remove: give the link's id (a number)", file=sys.stderr)
            return EXIT_REJECTED
        client.delete_json(f"/api/links/{args.args[0]}")
        print(f"link {args.args[0]} removed")
        return EXIT_OK
    if args.action == "clicks":
        if len(args.args) != 1 or args.date is None or args.count is None:
            print("farm links clicks: give CODE, --date YYYY-MM-DD and --count N",
                  file=sys.stderr)
            return EXIT_REJECTED
        link = client.post_json("/api/link-clicks", {
            "code": args.args[0], "date": args.date, "count": args.count,
            "source": args.source})
        print(f"link {link['link_id']}: {link['clicks']} clicks in all")
        return EXIT_OK
    links = client.get_json("/api/links" + _query(account=args.account,
                                                  removed="1" if args.removed else None))
    rows = [[str(x["link_id"]), x["account"], x["serial"] or "-", x["code"],
             str(x["clicks"]), x["url"], x["title"] or "",
             "removed" if x["removed_at"] else ""] for x in links["links"]]
    if rows:
        print(format_table(rows, ["ID", "ACCOUNT", "PHONE", "CODE", "CLICKS", "URL", "TITLE",
                                  ""]))
    return EXIT_OK


def _cmd_conversations(client: FarmClient, args: argparse.Namespace) -> int:
    if args.action == "show":
        if args.id is None or not args.id.isdigit():
            print("farm conversations show: give the conversation's id (a number)",
                  file=sys.stderr)
            return EXIT_REJECTED
        found = client.get_json(f"/api/conversations/{quote(args.id)}/messages")
        conv = found["conversation"]
        print(f"{conv['account']} ({conv['serial']}) with {conv['partner']}")
        for m in found["messages"]:
            print(f"  {'>' if m['sender'] == 'us' else '<'} {m['text']}")
        return EXIT_OK
    found = client.get_json("/api/conversations" + _query(account=args.account,
                                                          limit=args.limit))
    rows = [[str(c["conversation_id"]), c["account"], c["serial"] or "-", c["partner"],
             str(c["message_count"]), (c["last_message_at"] or "-")[:19],
             (c["last_message"] or {}).get("text", "")[:40]]
            for c in found["conversations"]]
    if rows:
        print(format_table(rows, ["ID", "ACCOUNT", "PHONE", "PARTNER", "MESSAGES", "LAST",
                                  "LAST MESSAGE"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "links",
                    "links in bio: list them with their clicks, add one to an account, "
                    "remove one, or add clicks counted elsewhere", _cmd_links)
    p.add_argument("action", nargs="?", choices=["list", "add", "remove", "clicks"],
                   default="list")
    p.add_argument("args", nargs="*", metavar="ARG",
                   help="add: ACCOUNT URL; remove: ID; clicks: CODE")
    p.add_argument("--account", metavar="REF", help="list: one account's (id or platform.number)")
    p.add_argument("--removed", action="store_true", help="list: removed links too")
    p.add_argument("--title", metavar="T", help="add: the link's title")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="clicks: the UTC day")
    p.add_argument("--count", type=int, metavar="N", help="clicks: how many")
    p.add_argument("--source", default="import", metavar="S",
                   help="clicks: where they came from (default import)")
    p = add_command(sub, common, "conversations",
                    "conversations the phones read (read_messages): list them, or show one's "
                    "messages", _cmd_conversations)
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("id", nargs="?", metavar="ID", help="show: the conversation's id")
    p.add_argument("--account", metavar="REF", help="one account's (id or platform.number)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N (default 100)")
