"""`farm run` (a sequence on a scope, `--wait` following it), `farm runs`, `farm workflows` and
`farm workflow run`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse

from actors.control.cli.client import (EXIT_OK, EXIT_PHONE_FAILED, EXIT_REJECTED, FarmClient,
                                       add_command)
from actors.control.cli.format import format_table, format_value
from actors.store.execution_history import EXECUTION_STATUSES
from protocol.errors import FarmError, ValidationError


# How long `--wait` keeps trying a coordinator it cannot reach (restarting) before exit 3.
RECONNECT_S = 60.0


def _parse_vars(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise FarmError(f"--var {pair!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _cmd_run(client: FarmClient, args: argparse.Namespace) -> int:
    sequence: str | dict = args.sequence
    if args.sequence.endswith(".json"):
        with open(args.sequence, encoding="utf-8") as f:
            sequence = json.load(f)
    try:
        started = client.post_json("/api/runs", {"sequence": sequence, "scope": args.scope,
                                                 "variables": _parse_vars(args.var)})
    except FarmError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    executions = started["executions"]
    if not executions:
        print(f"farm: scope {args.scope!r} matched no phone", file=sys.stderr)
        return EXIT_PHONE_FAILED
    print(f"run {started['run_id']}: {started.get('sequence')} on {len(executions)} phone(s)")
    for serial, ex in executions.items():
        error = f": {ex['error']}" if ex.get("error") else ""
        print(f"{serial} {ex['execution_id']} {ex['status']}{error}", flush=True)
    if not args.wait:
        return EXIT_PHONE_FAILED if any(e["status"] in ("failed", "locked")
                                        for e in executions.values()) else EXIT_OK
    return _follow_run(client, started["run_id"], args.poll)


def _follow_run(client: FarmClient, run_id: str, poll_s: float) -> int:
    """Poll the run (robust to a stream that started late), print each step once as it
    finishes and each execution once as it ends; exit 0 only if every phone completed. A
    coordinator that cannot be reached for a while (restarting) is waited for, `RECONNECT_S`."""
    printed: set[tuple[str, str, str]] = set()
    ended: set[str] = set()
    while True:
        run = client.poll_json(f"/api/runs/{urllib.parse.quote(run_id)}", RECONNECT_S)
        for ex in run["executions"]:
            serial = ex.get("serial") or "-"
            for step in ex.get("steps", []):
                key = (ex["execution_id"], str(step.get("path")), str(step.get("status")))
                if step.get("status") in (None, "running") or key in printed:
                    continue
                printed.add(key)
                screen = f" screen={step['screen']}" if step.get("screen") else ""
                error = f" error={format_value(step['error'])}" if step.get("error") else ""
                print(f"{serial} {step.get('path')} {step.get('type')} {step.get('status')}"
                      f"{screen}{error}", flush=True)
            if ex["status"] not in ("pending", "running", "paused") and ex["execution_id"] not in ended:
                ended.add(ex["execution_id"])
                error = f": {ex['error']}" if ex.get("error") else ""
                print(f"{serial} {ex['execution_id']} {ex['status']}{error}", flush=True)
        if run["status"] != "running":
            print(f"run {run_id}: {run['status']}")
            return EXIT_OK if run["status"] == "completed" else EXIT_PHONE_FAILED
        time.sleep(poll_s)


def _workflow_execution_rows(views: list[dict]) -> list[list[str]]:
    return [[str(w["workflow_execution_id"]), w.get("workflow") or "-", w.get("target") or "-",
             w["status"], w.get("start_time") or "-", w.get("end_time") or "-",
             format_value(w["error"]) if w.get("error") else ""] for w in views]


WORKFLOW_EXECUTION_HEADER = ["WORKFLOW RUN", "WORKFLOW", "TARGET", "STATUS", "START", "END",
                             "ERROR"]


def _iso_utc(option: str, text: str) -> str:
    """``--since``/``--until`` (2d, 12h, ... back from now, or an ISO time, UTC unless it
    says otherwise) as the ISO 8601 time with a zone the endpoint takes."""
    from actors.control.audit import parse_since  # the server's modules: only when asked

    try:
        return parse_since(text).replace(" ", "T") + "Z"
    except ValidationError as exc:
        raise FarmError(f"{option}: {exc.reason}") from None


def _executions_query(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The query of ``GET /api/executions`` for `farm runs`' filters (checked by the
    endpoint, which names a bad one)."""
    query = [("limit", str(args.limit))]
    query += [("status", s) for s in args.status]
    for name, value in (("serial", args.phone), ("sequence", args.sequence),
                        ("run_id", args.run), ("before", args.before)):
        if value is not None:
            query.append((name, value))
    for name in ("since", "until"):
        if getattr(args, name) is not None:
            query.append((name, _iso_utc(f"--{name}", getattr(args, name))))
    return query


def _cmd_runs(client: FarmClient, args: argparse.Namespace) -> int:
    query = _executions_query(args)
    filtered = len(query) > 1
    try:
        # Workflow runs have none of these filters: a filtered listing leaves them out.
        workflows = [] if filtered else client.get_json(
            f"/api/workflow-executions?limit={args.limit}")["workflow_executions"]
    except FarmError:
        workflows = []  # a coordinator without workflows (no farm database)
    if workflows:
        print(format_table(_workflow_execution_rows(workflows), WORKFLOW_EXECUTION_HEADER))
        print()
    page = client.get_json(f"/api/executions?{urllib.parse.urlencode(query)}")
    executions = page["executions"]
    if not executions:
        print("no executions")
        return EXIT_OK
    rows = [[e["execution_id"], e.get("run_id") or "-", e.get("serial") or "-",
             _sequence_at(e), e.get("account") or "-", e["status"],
             e.get("start_time") or "-", e.get("end_time") or "-",
             format_value(e["error"]) if e.get("error") else ""] for e in executions]
    print(format_table(rows, ["EXECUTION", "RUN", "SERIAL", "SEQUENCE", "ACCOUNT", "STATUS",
                              "START", "END", "ERROR"]))
    if page.get("next_before"):  # on stderr: stdout stays the table
        print(f"more: --before {page['next_before']}", file=sys.stderr)
    return EXIT_OK


def _sequence_at(execution: dict) -> str:
    """``clipshare/post_clip@3``: the sequence and the version of it the execution ran."""
    name = execution.get("sequence") or "-"
    version = execution.get("sequence_version")
    return name if version is None else f"{name}@{version}"


def _cmd_workflows(client: FarmClient, args: argparse.Namespace) -> int:
    workflows = client.get_json("/api/workflows")["workflows"]
    if not workflows:
        print("no workflows")
        return EXIT_OK
    rows = []
    for w in workflows:
        steps = []
        for s in w["sequences"]:
            extra = []
            if s["depends_on"]:
                extra.append("needs " + ",".join(str(d) for d in s["depends_on"]))
            if (s.get("retry") or {}).get("attempts"):
                extra.append(f"retry {s['retry']['attempts']}x")
            steps.append(f"{s['position']}:{s['sequence']}"
                         + (f" ({'; '.join(extra)})" if extra else ""))
        rows.append([w["name"], w.get("description") or "-", " -> ".join(steps)])
    print(format_table(rows, ["NAME", "DESCRIPTION", "SEQUENCES (position:name)"]))
    return EXIT_OK


def _cmd_workflow_run(client: FarmClient, args: argparse.Namespace) -> int:
    name = urllib.parse.quote(args.name, safe="")
    try:
        view = client.post_json(f"/api/workflows/{name}/run", {"scope": args.scope})
    except FarmError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(format_table(_workflow_execution_rows([view]), WORKFLOW_EXECUTION_HEADER))
    if not args.wait:
        return EXIT_OK
    path = f"/api/workflow-executions/{view['workflow_execution_id']}"
    while view["status"] in ("pending", "running"):
        time.sleep(args.poll)
        view = client.poll_json(path, RECONNECT_S)
    print(format_table([[str(s["position"]), s.get("sequence") or "-", s.get("serial") or "-",
                         s.get("account") or "-", s["status"], format_value(s["error"])
                         if s.get("error") else ""] for s in view["sequences"]],
                       ["POS", "SEQUENCE", "SERIAL", "ACCOUNT", "STATUS", "ERROR"]))
    print(f"workflow run {view['workflow_execution_id']}: {view['status']}")
    return EXIT_OK if view["status"] == "completed" else EXIT_REJECTED


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "run", "start a sequence on every phone of SCOPE; exit 1 if any phone failed",
                _cmd_run)
    p.add_argument("sequence", help="library name (clipshare/post_clip) or a sequence .json file")
    p.add_argument("scope")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="custom variable ${custom.NAME} for this run (repeatable)")
    p.add_argument("--wait", action="store_true",
                   help="follow every phone's steps until all have ended")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between progress checks")

    p = add_command(sub, common, "runs", "recent workflow runs and executions (newest first) with their "
                "status; filters list only the executions that match them all", _cmd_runs)
    p.add_argument("--limit", type=int, default=30, help="how many (default 30, max 1000)")
    p.add_argument("--status", action="append", default=[], metavar="STATUS",
                   help="only executions in this status (repeatable, or a comma list): "
                        + ", ".join(EXECUTION_STATUSES))
    p.add_argument("--phone", metavar="SERIAL", help="only the executions on this phone")
    p.add_argument("--sequence", metavar="NAME", help="only the executions of this sequence")
    p.add_argument("--run", metavar="RUN_ID", help="only the executions of this run")
    p.add_argument("--since", metavar="WHEN",
                   help="only executions started since WHEN: 2d, 12h, 30m back from now, or "
                        "an ISO time (UTC unless it names a zone)")
    p.add_argument("--until", metavar="WHEN", help="only executions started before WHEN "
                   "(as --since)")
    p.add_argument("--before", metavar="EXECUTION",
                   help="the next page: executions older than this one (printed as 'more:')")

    add_command(sub, common, "workflows", "workflow definitions: their sequences in order, dependencies, "
            "retries", _cmd_workflows)
    workflow_help = "run a workflow"
    p = sub.add_parser("workflow", help=workflow_help, description=workflow_help)
    workflow_sub = p.add_subparsers(dest="workflow_command", required=True, metavar="COMMAND")
    help_text = "run workflow NAME on every phone (or account) of SCOPE, its sequences in order"
    p = workflow_sub.add_parser("run", help=help_text, description=help_text, parents=[common])
    p.add_argument("name", help="workflow name")
    p.add_argument("scope", help="phone:all | account:clipshare.all@phone1 | group:NAME ...")
    p.add_argument("--wait", action="store_true", help="follow it until it has ended")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    p.set_defaults(func=_cmd_workflow_run)
