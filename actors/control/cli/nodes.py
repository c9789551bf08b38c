"""Nodes from the command line (issue 17.6): `farm nodes` (the nodes and their state) and each
node's own key for the node link: `farm nodes add NAME [--key-file PATH]` (the key is shown
once, or written to PATH with mode 0600 instead), `farm nodes keys` (never the key) and
`farm nodes revoke NAME`.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from pathlib import Path

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient, add_command
from actors.control.cli.format import format_table
from protocol.files import write_atomic


def _cmd_nodes(client: FarmClient, args: argparse.Namespace) -> int:
    action = getattr(args, "nodes_command", None)
    if action == "add":
        return _add(client, args)
    if action == "keys":
        return _keys(client)
    if action == "revoke":
        view = client.delete_json(f"/api/nodes/keys/{urllib.parse.quote(args.name, safe='')}")
        print(f"{view['node']}: key …{view['key_last4']} revoked at {view['revoked_at']} "
              f"(the node is disconnected and refused from now on)")
        return EXIT_OK
    nodes = client.get_json("/api/nodes")["nodes"]
    if not nodes:
        print("no nodes")
        return EXIT_OK
    print(format_table([[n["name"], n["state"], str(n.get("phones", 0))] for n in nodes],
                       ["NODE", "STATE", "PHONES"]))
    return EXIT_OK


def _add(client: FarmClient, args: argparse.Namespace) -> int:
    """Issue the key; print it once, or write it to --key-file (0600, never over a file
    that exists: that may be another node's key)."""
    path = Path(args.key_file) if args.key_file else None
    if path is not None:
        if path.exists():
            print(f"farm: --key-file {path}: exists; remove it first or name another file "
                  f"(no key was issued)", file=sys.stderr)
            return EXIT_REJECTED
        if not os.access(path.parent if str(path.parent) else Path("."), os.W_OK):
            print(f"farm: --key-file {path}: cannot write in {path.parent} (no key was "
                  f"issued)", file=sys.stderr)
            return EXIT_REJECTED
    view = client.post_json("/api/nodes/keys", {"node": args.name})
    key = view.pop("key")
    if path is None:
        print(key)
        print(f"node {view['node']}: key issued; it is shown this once. Start the node with "
              f"`farm-node --name {view['node']} --key-file FILE` (FILE holding the key, "
              f"mode 0600)", file=sys.stderr)
        return EXIT_OK
    write_atomic(path, (key + "\n").encode())  # a mkstemp file: mode 0600 from the start
    print(f"node {view['node']}: key written to {path} (mode 0600); start the node with "
          f"`farm-node --name {view['node']} --key-file {path}`")
    return EXIT_OK


def _keys(client: FarmClient) -> int:
    keys = client.get_json("/api/nodes/keys")["keys"]
    if not keys:
        print("no node keys")
        return EXIT_OK
    print(format_table([[k["node"], "…" + k["key_last4"], k["status"], k["created_at"] or "-",
                         k["revoked_at"] or "-", k["last_seen_at"] or "-"] for k in keys],
                       ["NODE", "KEY", "STATUS", "CREATED", "REVOKED", "LAST SEEN"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help_text = "nodes, and each node's own key for the node link (add, keys, revoke)"
    p = add_command(sub, common, "nodes", help_text, _cmd_nodes)
    actions = p.add_subparsers(dest="nodes_command", metavar="ACTION")
    q = actions.add_parser("add", help="issue a node's key (shown once, or --key-file)",
                           parents=[common])
    q.add_argument("name", help="the node's --name")
    q.add_argument("--key-file", default=None, metavar="PATH",
                   help="write the key to PATH (mode 0600) instead of printing it")
    q.set_defaults(func=_cmd_nodes)
    q = actions.add_parser("keys", help="node keys (never the key: its last 4 characters)",
                           parents=[common])
    q.set_defaults(func=_cmd_nodes)
    q = actions.add_parser("revoke", help="revoke a node's key: it is disconnected and "
                                          "refused from then on", parents=[common])
    q.add_argument("name")
    q.set_defaults(func=_cmd_nodes)
