"""`farm schedule add|list|pause|resume|cancel`."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient
from actors.control.cli.format import format_table
from protocol.errors import FarmError


def _schedule_body(args: argparse.Namespace) -> dict:
    if args.workflow and args.sequence:
        raise FarmError(f"give a SEQUENCE or --workflow, not both (got {args.sequence!r} and "
                        f"--workflow {args.workflow!r})")
    if not args.workflow and not args.sequence:
        raise FarmError("give a SEQUENCE and a SCOPE, or --workflow NAME and a SCOPE")
    body: dict[str, Any] = {"target": args.scope}
    if args.workflow:
        body["workflow"] = args.workflow
    else:
        body["sequence"] = args.sequence
    if args.id:
        body["id"] = args.id
    chosen = [name for name in ("at", "window", "cron") if getattr(args, name)]
    if len(chosen) > 1:
        raise FarmError(f"choose one of --at, --window, --cron (got {', '.join(chosen)})")
    if args.at:
        body.update(type="scheduled", at=args.at)
    elif args.window:
        body.update(type="window", window_start=args.window[0], window_end=args.window[1],
                    count=args.count)
    elif args.cron:
        body.update(type="recurring", cron=args.cron)
    else:
        body["type"] = "immediate"
    if args.grace is not None:
        body["misfire"] = {"grace_s": args.grace}
    if args.depends_on:
        body["depends_on"] = args.depends_on
    if args.allow_past:
        body["allow_past"] = True  # the coordinator refuses a past time without it
    if getattr(args, "skip_at_risk", False):
        body["skip_at_risk"] = True  # an at_risk account's job is skipped, not run
    return body


def _schedule_line(s: dict) -> list[str]:
    jobs = ",".join(f"{k}={v}" for k, v in sorted(s.get("jobs", {}).items())) or "-"
    what = s.get("sequence") or f"workflow:{s.get('workflow')}"
    return [s["id"], s["type"], s["status"], s.get("next_fire") or "-", what, s["target"], jobs]


def _cmd_schedule(client: FarmClient, args: argparse.Namespace) -> int:
    action = args.schedule_command
    try:
        if action == "add":
            views = [client.post_json("/api/schedules", _schedule_body(args))]
        elif action == "list":
            views = client.get_json("/api/schedules")["schedules"]
        else:
            views = [client.post_json(
                f"/api/schedules/{urllib.parse.quote(args.schedule_id, safe='')}/{action}", {})]
    except FarmError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    if not views:
        print("no schedules")
        return EXIT_OK
    print(format_table([_schedule_line(s) for s in views],
                       ["ID", "TYPE", "STATUS", "NEXT", "SEQUENCE", "TARGET", "JOBS"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    schedule_help = "schedule sequences: add, list, pause, resume, cancel (times in UTC)"
    p = sub.add_parser("schedule", help=schedule_help, description=schedule_help)
    schedule_sub = p.add_subparsers(dest="schedule_command", required=True, metavar="COMMAND")
    help_text = ("schedule SEQUENCE (or --workflow NAME) on every phone (or account) of SCOPE: "
                 "now, --at a time, --count times in a --window, or by --cron")
    p = schedule_sub.add_parser("add", help=help_text, description=help_text, parents=[common])
    p.add_argument("sequence", nargs="?", default=None,
                   help="library name, e.g. clipshare/post_clip (leave out with --workflow)")
    p.add_argument("scope", help="phone:all | account:clipshare.all@phone1 | group:NAME ...")
    p.add_argument("--at", metavar="ISO", help="once at this time, e.g. 2026-12-01T09:00Z "
                                               "(ISO 8601 with Z or an offset)")
    p.add_argument("--window", nargs=2, metavar=("START", "END"),
                   help="--count random times between START and END (ISO)")
    p.add_argument("--allow-past", action="store_true",
                   help="accept an --at, a --window end or an until already past (refused "
                        "otherwise: nothing of it would run but a misfire)")
    p.add_argument("--count", type=int, default=1, help="runs in the --window (default 1)")
    p.add_argument("--skip-at-risk", action="store_true",
                   help="skip a job whose account's health is at_risk (farm accounts "
                        "--health at_risk); the schedule's events say which and why")
    p.add_argument("--cron", metavar="EXPR", help="recurring, 5-field cron in UTC")
    p.add_argument("--grace", type=float, default=None, metavar="S",
                   help="run an occurrence missed while down if at most S seconds late")
    p.add_argument("--depends-on", action="append", default=[], metavar="ID",
                   help="run only after this schedule (or job) completed (repeatable)")
    p.add_argument("--id", default=None, help="schedule id (default generated)")
    p.add_argument("--workflow", metavar="NAME", default=None,
                   help="each occurrence starts this workflow definition on SCOPE")
    p.set_defaults(func=_cmd_schedule)
    p = schedule_sub.add_parser("list", help="every schedule with its status and next fire",
                                parents=[common])
    p.set_defaults(func=_cmd_schedule)
    for action, text in (("pause", "stop firing (queued jobs stay)"),
                         ("resume", "fire again"),
                         ("cancel", "stop for good and drop queued jobs")):
        p = schedule_sub.add_parser(action, help=text, description=text, parents=[common])
        p.add_argument("schedule_id", metavar="ID")
        p.set_defaults(func=_cmd_schedule)
