"""AI recovery from the command line: `farm recovery` (statistics and attempts), `farm resume`
(a phone the coordinator paused) and `farm ai-keys`.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient, add_command
from actors.control.cli.format import format_table, format_value
from protocol.errors import FarmError


def _cmd_recovery(client: FarmClient, args: argparse.Namespace) -> int:
    stats = client.get_json(f"/api/recovery/stats?by={args.by}")
    rows = [[format_value(g[args.by]) if g[args.by] is not None else "-", str(g["attempts"]),
             str(g["succeeded"]), f"{g['success_rate']:.0%}",
             f"{g['mean_steps']:.1f}" if g["mean_steps"] is not None else "-"]
            for g in stats["groups"]]
    if not rows:
        print("no recovery attempts")
        return EXIT_OK
    print(format_table(rows, [args.by.upper(), "ATTEMPTS", "SUCCEEDED", "RATE", "MEAN STEPS"]))
    query = f"/api/recovery/attempts?limit={args.limit}"
    if args.execution:
        query += f"&execution_id={args.execution}"
    attempts = client.get_json(query)["attempts"]
    print()
    print(format_table([[str(a["recovery_id"]), a.get("execution_key") or "-",
                         a.get("serial") or "-", a.get("step_path") or "-",
                         a.get("status") or "-", str(a.get("steps") or 0),
                         a.get("reached_screen") or "-", format_value(a.get("error") or "")]
                        for a in attempts],
                       ["ID", "EXECUTION", "SERIAL", "STEP", "STATUS", "STEPS", "REACHED",
                        "ERROR"]))
    return EXIT_OK


def _cmd_resume(client: FarmClient, args: argparse.Namespace) -> int:
    """End the coordinator's pause of a phone (e.g. after repeated failed recoveries)."""
    body = {"reason": args.reason} if args.reason else {}
    try:
        out = client.post_json(f"/api/phones/{urllib.parse.quote(args.serial, safe='')}/resume",
                               body)
    except FarmError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(f"{out['serial']}: resumed (was paused: {out['was']['reason']} since "
          f"{out['was']['since']})")
    return EXIT_OK


def _cmd_ai_keys(client: FarmClient, args: argparse.Namespace) -> int:
    """List, add or delete the per-client / per-organization AI keys (the key itself is read
    from --key-file or standard input: never a command-line argument, which ps shows)."""
    action = getattr(args, "ai_keys_command", None) or "list"
    try:
        if action == "add":
            key = (open(args.key_file, encoding="utf-8").read() if args.key_file
                   else sys.stdin.readline()).strip()
            body: dict[str, Any] = {"base_url": args.base_url, "model": args.model, "key": key}
            for name in ("client", "organization", "label"):
                if getattr(args, name) is not None:
                    body[name] = getattr(args, name)
            views = [client.post_json("/api/ai-keys", body)]
        elif action == "delete":
            views = [client.delete_json(f"/api/ai-keys/{args.id}")]
        else:
            views = client.get_json("/api/ai-keys")["keys"]
    except (FarmError, OSError) as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    if not views:
        print("no AI keys")
        return EXIT_OK
    print(format_table([[str(k["id"]), k["client"] or f"org:{k['organization'] or k['organization_id']}",
                         k["base_url"] or "-", k["model"] or "-", "…" + k["key_last4"],
                         k["label"] or "-", k["status"] or "-"] for k in views],
                       ["ID", "FOR", "BASE URL", "MODEL", "KEY", "LABEL", "STATUS"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "recovery", "AI recovery: success rate per sequence (or --by screen, serial, "
                "failure_reason) and the latest attempts", _cmd_recovery)
    p.add_argument("--by", default="sequence",
                   choices=("sequence", "screen", "serial", "failure_reason"))
    p.add_argument("--limit", type=int, default=20, help="attempts listed (default 20)")
    p.add_argument("--execution", default=None, help="only this execution's attempts")

    p = add_command(sub, common, "resume", "resume a phone the coordinator paused (e.g. after repeated "
                "failed AI recoveries)", _cmd_resume)
    p.add_argument("serial")
    p.add_argument("--reason", default=None, help="why (kept in the audit trail)")

    ai_keys_help = "AI endpoint keys per client / organization (list, add, delete)"
    p = add_command(sub, common, "ai-keys", ai_keys_help, _cmd_ai_keys)
    ai_keys_sub = p.add_subparsers(dest="ai_keys_command", metavar="ACTION")
    q = ai_keys_sub.add_parser("list", help="stored keys (last 4 characters only)",
                               parents=[common])
    q.set_defaults(func=_cmd_ai_keys)
    q = ai_keys_sub.add_parser("add", help="store a key (read from --key-file or stdin)",
                               parents=[common])
    owner = q.add_mutually_exclusive_group(required=True)
    owner.add_argument("--client", default=None)
    owner.add_argument("--organization", default=None)
    q.add_argument("--base-url", required=True)
    q.add_argument("--model", required=True)
    q.add_argument("--label", default=None)
    q.add_argument("--key-file", default=None)
    q.set_defaults(func=_cmd_ai_keys)
    q = ai_keys_sub.add_parser("delete", help="soft-delete key ID", parents=[common])
    q.add_argument("id", type=int)
    q.set_defaults(func=_cmd_ai_keys)
