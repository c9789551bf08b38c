"""`farm groups [list]`, `farm groups add`, `farm groups member add|remove`. Each client has a
group book of its own: ``--client C`` names it (default: a super user's shared book, another
user's only client, or for a named group the one client of theirs that has it)."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient
from actors.control.cli.format import format_table
from protocol.errors import FarmError


def _group_line(g: dict) -> list[str]:
    count = g.get("member_count")
    return [g["name"], g.get("client") or "-", g["kind"], g["type"], g.get("parent") or "-",
            "-" if count is None else str(count),
            g.get("filter") or ", ".join(g.get("members") or []) or "-"]


def _cmd_groups(client: FarmClient, args: argparse.Namespace) -> int:
    action = getattr(args, "groups_command", None) or "list"
    book = getattr(args, "client", None)
    query = f"?client={urllib.parse.quote(book, safe='')}" if book else ""
    try:
        if action == "add":
            body: dict[str, Any] = {"name": args.name, "kind": args.kind}
            if args.smart is not None:
                body["filter"] = args.smart
            if args.parent is not None:
                body["parent"] = args.parent
            if book:
                body["client"] = book
            views = [client.post_json("/api/groups", body)]
        elif action == "member":
            name = urllib.parse.quote(args.name, safe="")
            if args.member_command == "add":
                views = [client.post_json(f"/api/groups/{name}/members{query}",
                                          {"member": args.member})]
            else:
                views = [client.delete_json(
                    f"/api/groups/{name}/members/{urllib.parse.quote(args.member, safe='')}"
                    f"{query}")]
        else:
            views = client.get_json(f"/api/groups{query}")["groups"]
    except FarmError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    if not views:
        print("no groups")
        return EXIT_OK
    print(format_table([_group_line(g) for g in views],
                       ["NAME", "CLIENT", "KIND", "TYPE", "PARENT", "COUNT", "MEMBERS/FILTER"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    groups_help = "phone and account groups: list (default), add, member add|remove"
    book = argparse.ArgumentParser(add_help=False)
    book.add_argument("--client", default=argparse.SUPPRESS, metavar="C",
                      help="the client whose group book (default: a super user's shared "
                           "book, another user's only client)")
    common = argparse.ArgumentParser(add_help=False, parents=[common, book])
    p = sub.add_parser("groups", help=groups_help, description=groups_help, parents=[common])
    p.set_defaults(func=_cmd_groups)
    groups_sub = p.add_subparsers(dest="groups_command", metavar="COMMAND")
    p = groups_sub.add_parser("list", help="every group: kind, type, parent, member count",
                              parents=[common])
    p.set_defaults(func=_cmd_groups)
    help_text = "create group NAME holding KIND (phone|account); --smart makes it a filter group"
    p = groups_sub.add_parser("add", help=help_text, description=help_text, parents=[common])
    p.add_argument("name", metavar="NAME")
    p.add_argument("kind", metavar="KIND", choices=["phone", "account"])
    p.add_argument("--smart", default=None, metavar="FILTER",
                   help="e.g. 'filter.phones where node = rack1'")
    p.add_argument("--parent", default=None, metavar="P", help="parent group")
    p.set_defaults(func=_cmd_groups)
    p = groups_sub.add_parser("member", help="add or remove a member (serial, or "
                              "PLATFORM.NUMBER@SERIAL)", parents=[common])
    member_sub = p.add_subparsers(dest="member_command", required=True, metavar="COMMAND")
    for verb in ("add", "remove"):
        q = member_sub.add_parser(verb, help=f"{verb} MEMBER of group NAME", parents=[common])
        q.add_argument("name", metavar="NAME")
        q.add_argument("member", metavar="MEMBER")
        q.set_defaults(func=_cmd_groups)
