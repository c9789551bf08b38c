"""`farm stats`: the farm's history (GET /api/stats) as a table, one line per series and
step that saw anything: executions started/completed/failed, recovery, step time p50/p95
and phones by state (averages over the step); ``--failures`` lists the top failing
sequences and screens instead (GET /api/stats/top-failures); ``--json`` prints the answer.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from actors.control.cli.client import EXIT_OK, FarmClient, add_command
from actors.control.cli.format import format_table


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if digits else str(round(value))


def stats_rows(answer: dict) -> list[list[str]]:
    """One row per series and point with executions, recovery or phone counts."""
    rows = []
    for series in answer["series"]:
        for point in series["points"]:
            e, r, s, p = (point["executions"], point["recovery"], point["step_ms"],
                          point["phones"])
            if not any(e.values()) and not any(r.values()) and p is None:
                continue
            done = e["completed"] + e["failed"]
            rows.append([
                point["t"].replace("T", " ").rstrip("Z"), series["key"], str(e["started"]),
                str(e["completed"]), str(e["failed"]),
                f"{100 * e['failed'] / done:.0f}%" if done else "-",
                f"{r['succeeded']}/{r['attempts']}" if r["attempts"] else "-",
                _num(s["p50"]), _num(s["p95"]),
                *([_num(p[k], 1) for k in ("busy", "idle", "offline", "paused")]
                  if p is not None else ["-"] * 4)])
    return rows


def _cmd_stats(client: FarmClient, args: argparse.Namespace) -> int:
    if args.failures:
        query = {"since": args.since or args.from_, "limit": str(args.limit)}
        answer = client.get_json("/api/stats/top-failures?" + urllib.parse.urlencode(
            {k: v for k, v in query.items() if v}))
        if args.json:
            print(json.dumps(answer, indent=2, ensure_ascii=False))
            return EXIT_OK
        _print_failures(answer)
        return EXIT_OK
    query = {"from": args.from_, "to": args.to, "step": args.step, "by": args.by}
    answer = client.get_json("/api/stats?" + urllib.parse.urlencode(
        {k: v for k, v in query.items() if v}))
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"from {answer['from']} to {answer['to']}, step {answer['step_s']} s, "
          f"by {answer['by']}")
    rows = stats_rows(answer)
    if not rows:
        print("no activity in this range")
        return EXIT_OK
    print(format_table(rows, ["TIME (UTC)", answer["by"].upper(), "STARTED", "DONE", "FAILED",
                              "FAIL%", "RECOVERED", "P50 MS", "P95 MS", "BUSY", "IDLE",
                              "OFFLINE", "PAUSED"]))
    return EXIT_OK


def _print_failures(answer: dict) -> None:
    def last(entry: dict) -> list[str]:
        found = entry.get("last") or {}
        return [found.get("at") or "-", found.get("execution_id") or "-",
                found.get("serial") or "-", found.get("reason") or "-"]

    if not answer["sequences"] and not answer["screens"]:
        print("no failures in this range")
        return
    if answer["sequences"]:
        print(format_table([[s["sequence"], str(s["failures"]), str(s["executions"]), *last(s)]
                            for s in answer["sequences"]],
                           ["SEQUENCE", "FAILURES", "RUNS", "LAST (UTC)", "EXECUTION", "PHONE",
                            "REASON"]))
    if answer["screens"]:
        if answer["sequences"]:
            print()
        print(format_table([[s["screen"], str(s["failures"]), *last(s)]
                            for s in answer["screens"]],
                           ["SCREEN", "FAILURES", "LAST (UTC)", "EXECUTION", "PHONE", "REASON"]))


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "stats", "the farm's history from the one-minute rollups: "
                    "executions, failures, recovery, step times and phones by state per step "
                    "(your clients' only unless you are a super user)", _cmd_stats)
    p.add_argument("--from", dest="from_", default=None,
                   help="start: a duration back from now (24h, 7d) or an ISO time with a "
                        "zone (default 24h)")
    # Not --to: the farm parser reads that as an abbreviation of --token(-file).
    p.add_argument("--until", dest="to", default=None,
                   help="end (the API's `to`), the same forms (default now)")
    p.add_argument("--step", default=None, choices=("1m", "5m", "15m", "1h", "1d"),
                   help="bucket size (default the smallest giving at most 500 points)")
    p.add_argument("--by", default=None, choices=("farm", "client", "sequence", "node"),
                   help="one series per farm (default), client, sequence or node")
    p.add_argument("--failures", action="store_true",
                   help="the top failing sequences and screens instead, each with its latest "
                        "failure (--since, --limit)")
    p.add_argument("--since", default=None, help="with --failures: since (default 24h)")
    p.add_argument("--limit", type=int, default=10, help="with --failures: how many of each")
    p.add_argument("--json", action="store_true", help="the API's answer as JSON")
