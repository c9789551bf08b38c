"""People from the command line (issue 17): `farm login|logout|whoami`, `farm users`,
`farm orgs`, `farm clients`, `farm tokens` and `farm phones assign`.

Passwords and tokens never come on the command line (other users of the machine can read
it): a password is read from ``--password-file``, else from stdin (a prompt without echo
on a terminal); `farm login` keeps its token in ``~/.config/phonefarm/token`` (0600), and
`farm tokens add` prints a new token once, or writes it to ``--out FILE`` (0600).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import urllib.parse
from pathlib import Path

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient, add_command
from actors.control.cli.credentials import forget_user_token, save_user_token
from actors.control.cli.format import format_table
from protocol.files import write_atomic


def read_password(args: argparse.Namespace, prompt: str = "password: ") -> str:
    """The password from --password-file, else stdin (no echo on a terminal)."""
    if getattr(args, "password_file", None):
        return Path(args.password_file).read_text().rstrip("\r\n")
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _login(client: FarmClient, args: argparse.Namespace) -> int:
    password = read_password(args)
    answer = client.post_json("/api/login", {"user": args.user, "password": password})
    path = save_user_token(answer["token"])
    user = answer["user"]
    print(f"logged in as {user['name']} ({user['role']}); token kept in {path} until "
          f"{answer['expires_at']} UTC")
    return EXIT_OK


def _logout(client: FarmClient, args: argparse.Namespace) -> int:
    client.post_json("/api/logout", {})
    forget_user_token()
    print("logged out")
    return EXIT_OK


def _whoami(client: FarmClient, args: argparse.Namespace) -> int:
    me = client.get_json("/api/me")
    clients = "all" if me["role"] == "super" else ", ".join(me.get("clients") or ()) or "-"
    organization = f"; organization {me['organization']}" if me.get("organization") else ""
    print(f"{me['name']} ({me['role']}); clients: {clients}{organization}")
    return EXIT_OK


def _users(client: FarmClient, args: argparse.Namespace) -> int:
    action = args.users_command or "list"
    if action == "list":
        users = client.get_json("/api/users")["users"]
        print(format_table([[u["name"], u["role"], u["status"], ", ".join(u["clients"]) or "-",
                             u["organization"] or "-"] for u in users],
                           ["USER", "ROLE", "STATUS", "CLIENTS", "ORGANIZATION"]))
        return EXIT_OK
    if action == "add":
        password = read_password(args, f"password for {args.name}: ")
        body = {"name": args.name, "password": password, "role": args.role,
                "clients": args.client or []}
        if args.organization:
            body["organization"] = args.organization
        view = client.post_json("/api/users", body)
        print(f"user {view['name']} ({view['role']}) created")
        return EXIT_OK
    if action in ("disable", "enable"):
        view = client.post_json(f"/api/users/{_q(args.name)}/{action}", {})
        print(f"user {view['name']}: {view['status']}")
        return EXIT_OK
    password = read_password(args, f"new password for {args.name}: ")
    client.post_json(f"/api/users/{_q(args.name)}/password", {"password": password})
    print(f"user {args.name}: password changed")
    return EXIT_OK


def _orgs(client: FarmClient, args: argparse.Namespace) -> int:
    if args.orgs_command == "add":
        row = client.post_json("/api/organizations", {"name": args.name})
        print(f"organization {row['name']} created (id {row['organization_id']})")
        return EXIT_OK
    rows = client.get_json("/api/organizations")["organizations"]
    print(format_table([[str(r["organization_id"]), r["name"]] for r in rows],
                       ["ID", "ORGANIZATION"]))
    return EXIT_OK


def _clients(client: FarmClient, args: argparse.Namespace) -> int:
    if args.clients_command == "add":
        body = {"name": args.name}
        if args.organization:
            body["organization"] = args.organization
        row = client.post_json("/api/clients", body)
        print(f"client {row['name']} saved")
        return EXIT_OK
    rows = client.get_json("/api/clients")["clients"]
    print(format_table([[r["name"], r.get("status") or "-",
                         str(r.get("organization_id") or "-")] for r in rows],
                       ["CLIENT", "STATUS", "ORGANIZATION ID"]))
    return EXIT_OK


def _tokens(client: FarmClient, args: argparse.Namespace) -> int:
    action = args.tokens_command or "list"
    if action == "add":
        name = args.name or args.token_name  # --name NAME, or NAME alone
        if not name or (args.name and args.token_name and args.name != args.token_name):
            print("farm: tokens add: give the token's name once (NAME or --name NAME)",
                  file=sys.stderr)
            return EXIT_REJECTED
        body = {"name": name}
        if args.expires:
            body["expires"] = args.expires
        if args.scope:
            body["scope"] = args.scope
        if args.token_out and Path(args.token_out).exists():
            print(f"farm: --out {args.token_out}: exists (no token was made)", file=sys.stderr)
            return EXIT_REJECTED
        row = client.post_json("/api/tokens", body)
        if args.token_out:
            write_atomic(args.token_out, (row["token"] + "\n").encode())  # mode 0600
            print(f"token {row['name']} (id {row['token_id']}, expires {row['expires_at']}) "
                  f"written to {args.token_out}")
        else:
            print(row["token"])
            print(f"token {row['name']} (id {row['token_id']}, expires {row['expires_at']}): "
                  f"shown this once", file=sys.stderr)
        return EXIT_OK
    if action == "revoke":
        row = client.delete_json(f"/api/tokens/{args.token_id}")
        print(f"token {row['token_id']} ({row.get('name') or row['kind']}): {row['state']}")
        return EXIT_OK
    path = "/api/tokens?all=1" if args.all else "/api/tokens"
    rows = client.get_json(path)["tokens"]
    print(format_table([[str(r["token_id"]), r.get("user", "-"),
                         r["kind"] + (f":{r['scope']}" if r.get("scope") else ""),
                         r.get("name") or "-",
                         r["state"], r.get("expires_at") or "never",
                         r.get("last_used_at") or "-"] for r in rows],
                       ["ID", "USER", "KIND", "NAME", "STATE", "EXPIRES", "LAST USED"]))
    return EXIT_OK


def _assign(client: FarmClient, args: argparse.Namespace) -> int:
    body = {"client": None if args.none else args.client}
    row = client.post_json(f"/api/phones/{_q(args.serial)}/client", body)
    print(f"{row['serial']}: client {row['client'] or '(none: super users only)'}")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "login", "log in; the token is kept in "
                    "~/.config/phonefarm/token (0600)", _login)
    p.add_argument("user")
    p.add_argument("--password-file", help="read the password from this file (else stdin)")
    add_command(sub, common, "logout", "end this session (revoke its token, forget it)",
                _logout)
    add_command(sub, common, "whoami", "who the token belongs to", _whoami)

    users = add_command(sub, common, "users", "people: list, add, disable, enable, passwd",
                        _users)
    usub = users.add_subparsers(dest="users_command")
    usub.add_parser("list", parents=[common])
    add = usub.add_parser("add", parents=[common], help="add a user (password from "
                          "--password-file or stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("super", "admin", "client", "viewer"))
    add.add_argument("--client", action="append", help="a client it reaches (repeatable)")
    add.add_argument("--organization", help="an admin of an organization reaches its clients")
    add.add_argument("--password-file")
    for action in ("disable", "enable"):
        usub.add_parser(action, parents=[common]).add_argument("name")
    passwd = usub.add_parser("passwd", parents=[common])
    passwd.add_argument("name")
    passwd.add_argument("--password-file")

    orgs = add_command(sub, common, "orgs", "organizations: list, add", _orgs)
    osub = orgs.add_subparsers(dest="orgs_command")
    osub.add_parser("list", parents=[common])
    osub.add_parser("add", parents=[common]).add_argument("name")

    clients = add_command(sub, common, "clients", "clients: list, add", _clients)
    csub = clients.add_subparsers(dest="clients_command")
    csub.add_parser("list", parents=[common])
    cadd = csub.add_parser("add", parents=[common])
    cadd.add_argument("name")
    cadd.add_argument("--organization")

    tokens = add_command(sub, common, "tokens", "API tokens: list, add, revoke",
                         _tokens)
    tsub = tokens.add_subparsers(dest="tokens_command")
    tlist = tsub.add_parser("list", parents=[common])
    tlist.add_argument("--all", action="store_true", help="everyone's (super users)")
    tadd = tsub.add_parser("add", parents=[common], help="a token for scripts, shown once")
    tadd.add_argument("token_name", nargs="?", metavar="NAME", help="the token's name")
    tadd.add_argument("--name", help="the token's name (or NAME)")
    tadd.add_argument("--expires", help="30d, 12h or 45m (default 90d)")
    tadd.add_argument("--scope", choices=("metrics",),
                      help="metrics: the token may only GET /metrics (for Prometheus; super "
                           "users issue it)")
    tadd.add_argument("--out", dest="token_out", help="write the token to this file (0600)")
    trevoke = tsub.add_parser("revoke", parents=[common])
    trevoke.add_argument("token_id", type=int)
    tokens.set_defaults(all=False)


def add_assign_command(phones_sub: argparse._SubParsersAction,
                       common: argparse.ArgumentParser) -> None:
    """`farm phones assign SERIAL --client C | --none` (registered under `farm phones`)."""
    assign = phones_sub.add_parser("assign", parents=[common], help="give a phone to a client")
    assign.set_defaults(func=_assign)
    assign.add_argument("serial")
    group = assign.add_mutually_exclusive_group(required=True)
    group.add_argument("--client")
    group.add_argument("--none", action="store_true", help="no client: super users only")
