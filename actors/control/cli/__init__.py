"""`farm`: the operator's command line over the control endpoint's HTTP API.

Owns turning commands into HTTP requests (standard library urllib only, so the CLI starts
fast and needs nothing beyond Python) and their results into terminal lines. The `registry`
commands work locally on a registry folder, no endpoint involved (they import the registry
modules, OpenCV included, only when run).

    farm phones                          table: serial, node, state, lock, app, screen
    farm tap SCOPE X Y                   farm long-tap SCOPE X Y [--ms 800]
    farm swipe SCOPE X1 Y1 X2 Y2 [--ms 300]
    farm text SCOPE TEXT                 farm key SCOPE KEY [--repeat N]
    farm launch SCOPE PACKAGE [--activity A]
    farm stop SCOPE PACKAGE
    farm screenshot SERIAL -o F.png [--width W]
    farm watch [--count N]               one line per live event
    farm run SEQUENCE SCOPE [--var k=v ...] [--wait]
                                         start a sequence (library name or a JSON file) on
                                         every phone of SCOPE; --wait follows each phone's steps
    farm registry check [DIR]            every problem, ambiguity and dead screen, one a line
    farm registry identify IMAGE [--app APP] [--registry DIR] [--explain]
                                         app/state | app/interrupt:name | unknown [(ambiguous: ..)]
    farm registry apps                   the coordinator's registry: version, apps, screens
    farm vars preview TEXT --phone SERIAL [--account clipshare.account1] [--db PATH] [--seed N]
                                         TEXT with variables and spintax resolved (local DB)
    farm schedule add SEQUENCE SCOPE [--at ISO | --window START END --count N | --cron EXPR]
                      [--grace S] [--depends-on ID] [--id ID] [--allow-past]
                                         no time option: immediate
    farm schedule add --workflow NAME SCOPE [same options]
                                         each occurrence starts workflow NAME on SCOPE
    farm schedule list                   id, type, status, next fire, jobs by status
    farm schedule pause|resume|cancel ID
    farm runs [--limit N]                recent executions with their status
    farm groups [list]                   groups: kind, type, parent, member count
    farm groups add NAME KIND [--smart FILTER] [--parent P]
    farm groups member add|remove NAME MEMBER
    farm retention [--data DIR] [--dry-run] [--config FILE]
                                         prune/compress the data folder (spec 7.6; local)

The endpoint is ``--url`` or $PHONEFARM_URL (default http://127.0.0.1:8470); the access
token ``--token`` or $PHONEFARM_TOKEN; the registry DIR $PHONEFARM_REGISTRY (default the demo
registry, registry/apps). Exit status: 0 success; 1 some phone's action did not succeed (or
the scope matched no phone), or `registry check` found problems; 2 bad usage, a request the
endpoint rejected, an unreadable image or an invalid registry; 3 endpoint unreachable; 141
stdout closed by its reader (`farm runs | head`), quietly.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any, Iterator

from protocol.errors import DeliveryError, FarmError

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8470"
EXIT_OK, EXIT_PHONE_FAILED, EXIT_REJECTED, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_STDOUT_CLOSED = 141
# How long `--wait` keeps trying a coordinator it cannot reach (restarting) before exit 3.
RECONNECT_S = 60.0


class FarmClient:
    """Owns the conversation with one control endpoint: URLs, the bearer token, JSON in and
    out. An HTTP error answer raises FarmError (with the endpoint's message); no answer at
    all raises DeliveryError."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token or None
        self.timeout = timeout

    def _open(self, path: str, body: dict | None = None, timeout: float | None = None,
              method: str | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         method=method or ("GET" if body is None else "POST"))
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace").strip() or exc.reason
            raise FarmError(f"{self.url}{path}: HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(self.url, f"cannot reach the control endpoint: {reason}") from None

    def get_json(self, path: str) -> Any:
        with self._open(path) as response:
            try:
                return json.load(response)
            except (OSError, http.client.HTTPException) as exc:  # cut off mid-answer
                raise DeliveryError(self.url, f"the control endpoint broke off its answer: "
                                              f"{exc!r}") from None

    def poll_json(self, path: str, window_s: float) -> Any:
        """`get_json`, riding out an endpoint that cannot be reached (a coordinator being
        restarted) for up to ``window_s`` seconds with growing pauses; one line on stderr
        says so. DeliveryError once the window has passed."""
        deadline: float | None = None
        pause = 0.25
        while True:
            try:
                return self.get_json(path)
            except DeliveryError as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + window_s
                    print(f"farm: {exc}; reconnecting (for up to {window_s:g} s)",
                          file=sys.stderr, flush=True)
                elif now >= deadline:
                    raise
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, 5.0)

    def post_json(self, path: str, body: dict) -> Any:
        with self._open(path, body) as response:
            return json.load(response)

    def delete_json(self, path: str) -> Any:
        with self._open(path, method="DELETE") as response:
            return json.load(response)

    def get_bytes(self, path: str) -> tuple[bytes, str]:
        with self._open(path) as response:
            return response.read(), response.headers.get_content_type()

    def events(self, read_timeout: float = 60.0) -> Iterator[tuple[str, dict]]:
        """Follow /api/stream: (event name, payload) until the server ends the stream.
        Heartbeats (every 15 s) keep the read timeout from firing on a healthy stream."""
        with self._open("/api/stream", timeout=read_timeout) as response:
            name, data = None, []
            for raw in self._lines(response, read_timeout):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if name is not None or data:
                        yield name or "message", json.loads("\n".join(data) or "{}")
                    name, data = None, []
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)

    def _lines(self, response, read_timeout: float) -> Iterator[bytes]:
        try:
            yield from response
        except (TimeoutError, OSError) as exc:
            raise DeliveryError(self.url, f"status stream stalled or broke "
                                          f"(nothing for {read_timeout:g} s): {exc}") from None

    def run_action(self, scope: str, action: dict) -> dict[str, dict]:
        return self.post_json("/api/actions", {"scope": scope, "action": action})["results"]


# --- output ---------------------------------------------------------------------------------


def align_columns(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_table(rows: list[list[str]], header: list[str]) -> str:
    return "\n".join(align_columns([header, *rows]))


def phones_table(phones: list[dict]) -> str:
    def cell(value: Any) -> str:
        return "-" if value in (None, "") else str(value)

    rows = [[cell(p.get("serial")), cell(p.get("node")), cell(p.get("state")),
             cell(p.get("lock_holder")), cell(p.get("active_app")), cell(p.get("last_screen"))]
            for p in phones]
    return format_table(rows, ["SERIAL", "NODE", "STATE", "LOCK", "APP", "SCREEN"])


def _value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def format_event(name: str, payload: dict) -> str:
    """``HH:MM:SS event serial key=value ...`` (UTC); ``-`` when no phone is concerned."""
    ts = payload.get("ts")
    clock = (datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S")
             if isinstance(ts, (int, float)) else "--:--:--")
    parts = [clock, name, payload.get("serial") or "-"]
    if payload.get("node"):
        parts.append(f"node={_value(payload['node'])}")
    data = payload.get("data")
    if isinstance(data, dict):
        parts.extend(f"{key}={_value(value)}" for key, value in data.items())
    return " ".join(parts)


def format_result(serial: str, result: dict) -> str:
    status = result.get("status", "error")
    error = result.get("error")
    return f"{serial} {status}" + (f": {error}" if error and status != "ok" else "")


# --- commands -------------------------------------------------------------------------------


def _cmd_phones(client: FarmClient, args: argparse.Namespace) -> int:
    phones = client.get_json("/api/phones")["phones"]
    if args.json:
        print(json.dumps(phones, indent=2))
    else:
        print(phones_table(phones))
    return EXIT_OK


def _action_of(args: argparse.Namespace) -> dict:
    kind = args.command
    if kind == "tap":
        return {"type": "tap", "x": args.x, "y": args.y}
    if kind == "long-tap":
        return {"type": "long_tap", "x": args.x, "y": args.y, "duration_ms": args.ms}
    if kind == "swipe":
        return {"type": "swipe", "x1": args.x1, "y1": args.y1, "x2": args.x2, "y2": args.y2,
                "duration_ms": args.ms}
    if kind == "text":
        return {"type": "text", "text": args.text}
    if kind == "key":
        return {"type": "key", "key": int(args.key) if args.key.isdigit() else args.key,
                "repeat": args.repeat}
    if kind == "launch":
        return {"type": "launch_app", "package": args.package, "activity": args.activity}
    if kind == "stop":
        return {"type": "stop_app", "package": args.package}
    raise AssertionError(kind)


def _cmd_action(client: FarmClient, args: argparse.Namespace) -> int:
    results = client.run_action(args.scope, _action_of(args))
    if not results:
        print(f"farm: scope {args.scope!r} matched no phone", file=sys.stderr)
        return EXIT_PHONE_FAILED
    for serial, result in results.items():
        print(format_result(serial, result))
    failed = any(r.get("status") != "ok" for r in results.values())
    return EXIT_PHONE_FAILED if failed else EXIT_OK


def _cmd_screenshot(client: FarmClient, args: argparse.Namespace) -> int:
    path = f"/api/phones/{urllib.parse.quote(args.serial, safe='')}/screen"
    if args.width is not None:
        path += f"?w={args.width}"
    image, content_type = client.get_bytes(path)
    if args.output == "-":
        sys.stdout.buffer.write(image)
        sys.stdout.flush()
    else:
        with open(args.output, "wb") as f:
            f.write(image)
        print(f"{args.serial}: wrote {args.output} ({len(image)} bytes, {content_type})")
    return EXIT_OK


def _cmd_watch(client: FarmClient, args: argparse.Namespace) -> int:
    seen = 0
    for name, payload in client.events():
        print(format_event(name, payload), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            break
    return EXIT_OK


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
                error = f" error={_value(step['error'])}" if step.get("error") else ""
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


def _registry_dir(args: argparse.Namespace) -> str:
    if args.registry_dir:
        return args.registry_dir
    from registry.load import DEMO_REGISTRY

    return os.environ.get("PHONEFARM_REGISTRY") or str(DEMO_REGISTRY)


def _cmd_registry_check(client: FarmClient, args: argparse.Namespace) -> int:
    from protocol.errors import ValidationErrors
    from registry.check import check_registry

    path = _registry_dir(args)
    try:
        report = check_registry(path)
    except ValidationErrors as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{path}: {len(exc.problems)} problem(s); screenshots not cross-checked until "
              "the registry loads")
        return EXIT_PHONE_FAILED
    for line in report.lines():
        print(line)
    registry = report.registry
    errors = len(report.conflicts) + sum(not d.warning for d in report.dead)
    verdict = "ok" if report.clean else f"{errors} problem(s)"
    print(f"{path}: {verdict}: {len(registry.apps)} apps, {len(registry.screens())} screens, "
          f"{report.frames_checked} screenshots cross-checked, version {registry.version[:16]}")
    return EXIT_OK if report.clean else EXIT_PHONE_FAILED


def explain_lines(match) -> list[str]:
    """One line per region the matcher checked: screen, region, kind, score, threshold,
    pass/fail (and what OCR read)."""
    rows = [[score.screen.label(), score.region, score.kind, f"{score.score:.3f}",
             f"{score.threshold:.3f}", "pass" if score.passed else "fail",
             "" if score.text is None else f"read {score.text!r}"]
            for score in match.scores]
    return ["  " + line for line in align_columns(rows)]


def _cmd_registry_apps(client: FarmClient, args: argparse.Namespace) -> int:
    """The coordinator's registry (GET /api/registry): one line per app."""
    try:
        registry = client.get_json("/api/registry")
    except FarmError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(f"registry version {registry['version'][:16]}")
    print(format_table([[a["name"], a["package"] or "-", "x".join(map(str, a["screen_size"])),
                         ", ".join(a["states"]) or "-", ", ".join(a["interrupts"]) or "-"]
                        for a in registry["apps"]],
                       ["APP", "PACKAGE", "SIZE", "STATES", "INTERRUPTS"]))
    return EXIT_OK


def _cmd_registry_identify(client: FarmClient, args: argparse.Namespace) -> int:
    from protocol.errors import ValidationErrors
    from registry.check import describe
    from registry.load import load_registry
    from registry.match import Matcher, load_image

    frame = load_image(args.image)  # FarmError naming the file -> exit 2
    path = _registry_dir(args)
    try:
        registry = load_registry(path)
    except ValidationErrors as exc:
        print(f"farm: registry {path} is invalid (`farm registry check {path}`):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_REJECTED
    if args.app is not None and args.app not in registry.apps \
            and registry.app_for_package(args.app) is None:
        print(f"farm: --app {args.app!r} is neither an app nor a package of registry {path} "
              f"(apps: {', '.join(registry.apps)})", file=sys.stderr)
        return EXIT_REJECTED
    match = Matcher(registry).identify(frame, args.app, explain=args.explain)
    print(describe(match))
    if args.explain:
        for line in explain_lines(match):
            print(line)
    return EXIT_OK


def caret_lines(text: str, offset: int) -> list[str]:
    """TEXT on one line and a caret under character ``offset`` (newlines shown as spaces)."""
    return ["  " + text.replace("\n", " "), "  " + " " * offset + "^"]


def _cmd_vars_preview(client: FarmClient, args: argparse.Namespace) -> int:
    import asyncio
    import random
    from pathlib import Path

    from actors.store.farm_db import FarmDB, default_db_path
    from protocol.errors import VariableError

    path = Path(args.db) if args.db else default_db_path()
    if not path.exists():
        print(f"farm: no farm database at {path} (start the coordinator, or pass --db)",
              file=sys.stderr)
        return EXIT_REJECTED

    async def preview() -> str:
        db = await FarmDB.open(path)
        try:
            return await db.resolve_text(args.text, args.phone, args.account,
                                         rng=random.Random(args.seed))
        finally:
            await db.close()

    try:
        print(asyncio.run(preview()))
    except VariableError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        if exc.text == args.text:
            for line in caret_lines(exc.text, exc.offset):
                print(line, file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


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


def _workflow_execution_rows(views: list[dict]) -> list[list[str]]:
    return [[str(w["workflow_execution_id"]), w.get("workflow") or "-", w.get("target") or "-",
             w["status"], w.get("start_time") or "-", w.get("end_time") or "-",
             _value(w["error"]) if w.get("error") else ""] for w in views]


WORKFLOW_EXECUTION_HEADER = ["WORKFLOW RUN", "WORKFLOW", "TARGET", "STATUS", "START", "END",
                             "ERROR"]


def _cmd_runs(client: FarmClient, args: argparse.Namespace) -> int:
    try:
        workflows = client.get_json(
            f"/api/workflow-executions?limit={args.limit}")["workflow_executions"]
    except FarmError:
        workflows = []  # a coordinator without workflows (no farm database)
    if workflows:
        print(format_table(_workflow_execution_rows(workflows), WORKFLOW_EXECUTION_HEADER))
        print()
    executions = client.get_json(f"/api/executions?limit={args.limit}")["executions"]
    if not executions:
        print("no executions")
        return EXIT_OK
    rows = [[e["execution_id"], e.get("run_id") or "-", e.get("serial") or "-",
             e.get("sequence") or "-", e.get("account") or "-", e["status"],
             e.get("start_time") or "-", e.get("end_time") or "-",
             _value(e["error"]) if e.get("error") else ""] for e in executions]
    print(format_table(rows, ["EXECUTION", "RUN", "SERIAL", "SEQUENCE", "ACCOUNT", "STATUS",
                              "START", "END", "ERROR"]))
    return EXIT_OK


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
                         s.get("account") or "-", s["status"], _value(s["error"])
                         if s.get("error") else ""] for s in view["sequences"]],
                       ["POS", "SEQUENCE", "SERIAL", "ACCOUNT", "STATUS", "ERROR"]))
    print(f"workflow run {view['workflow_execution_id']}: {view['status']}")
    return EXIT_OK if view["status"] == "completed" else EXIT_REJECTED


def _group_line(g: dict) -> list[str]:
    count = g.get("member_count")
    return [g["name"], g["kind"], g["type"], g.get("parent") or "-",
            "-" if count is None else str(count),
            g.get("filter") or ", ".join(g.get("members") or []) or "-"]


def _cmd_groups(client: FarmClient, args: argparse.Namespace) -> int:
    action = getattr(args, "groups_command", None) or "list"
    try:
        if action == "add":
            body: dict[str, Any] = {"name": args.name, "kind": args.kind}
            if args.smart is not None:
                body["filter"] = args.smart
            if args.parent is not None:
                body["parent"] = args.parent
            views = [client.post_json("/api/groups", body)]
        elif action == "member":
            name = urllib.parse.quote(args.name, safe="")
            if args.member_command == "add":
                views = [client.post_json(f"/api/groups/{name}/members", {"member": args.member})]
            else:
                views = [client.delete_json(
                    f"/api/groups/{name}/members/{urllib.parse.quote(args.member, safe='')}")]
        else:
            views = client.get_json("/api/groups")["groups"]
    except FarmError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    if not views:
        print("no groups")
        return EXIT_OK
    print(format_table([_group_line(g) for g in views],
                       ["NAME", "KIND", "TYPE", "PARENT", "COUNT", "MEMBERS/FILTER"]))
    return EXIT_OK


def _cmd_recovery(client: FarmClient, args: argparse.Namespace) -> int:
    stats = client.get_json(f"/api/recovery/stats?by={args.by}")
    rows = [[_value(g[args.by]) if g[args.by] is not None else "-", str(g["attempts"]),
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
                         a.get("reached_screen") or "-", _value(a.get("error") or "")]
                        for a in attempts],
                       ["ID", "EXECUTION", "SERIAL", "STEP", "STATUS", "STEPS", "REACHED",
                        "ERROR"]))
    return EXIT_OK


def _cmd_retention(client: FarmClient, args: argparse.Namespace) -> int:
    from actors.store.retention import run_command

    return run_command(args.data, dry_run=args.dry_run, config=args.config,
                       now=datetime.now(timezone.utc), environ=os.environ)


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


# --- argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # Connection options work before or after the command (`farm --url U phones` and
    # `farm phones --url U`); the subcommand copies default to SUPPRESS so they don't clobber.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"control endpoint (env PHONEFARM_URL, default {DEFAULT_URL})")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="access token (env PHONEFARM_TOKEN)")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for an answer (default 60)")

    parser = argparse.ArgumentParser(prog="farm", description="Operate the phone farm.",
                                     epilog="SCOPE: phone:all | phone:SERIAL[,SERIAL..] | "
                                            "phone:all-SERIAL[,..] | node:NAME[,..]")
    parser.add_argument("--url", default=None,
                        help=f"control endpoint (env PHONEFARM_URL, default {DEFAULT_URL})")
    parser.add_argument("--token", default=None, help="access token (env PHONEFARM_TOKEN)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for an answer (default 60)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = command("phones", "list phones: serial, node, state, lock, app, screen", _cmd_phones)
    p.add_argument("--json", action="store_true", help="print the raw JSON")

    p = command("tap", "tap X Y on every phone of SCOPE", _cmd_action)
    p.add_argument("scope")
    p.add_argument("x", type=int)
    p.add_argument("y", type=int)

    p = command("long-tap", "press X Y for --ms milliseconds", _cmd_action)
    p.add_argument("scope")
    p.add_argument("x", type=int)
    p.add_argument("y", type=int)
    p.add_argument("--ms", type=int, default=800, help="press duration (default 800)")

    p = command("swipe", "swipe from X1 Y1 to X2 Y2", _cmd_action)
    p.add_argument("scope")
    for coordinate in ("x1", "y1", "x2", "y2"):
        p.add_argument(coordinate, type=int)
    p.add_argument("--ms", type=int, default=300, help="swipe duration (default 300)")

    p = command("text", "type TEXT into the focused field", _cmd_action)
    p.add_argument("scope")
    p.add_argument("text")

    p = command("key", "press KEY (a keycode number or a name: HOME, BACK, ENTER...)", _cmd_action)
    p.add_argument("scope")
    p.add_argument("key")
    p.add_argument("--repeat", type=int, default=1, help="presses in one go (default 1)")

    p = command("launch", "start the app PACKAGE", _cmd_action)
    p.add_argument("scope")
    p.add_argument("package")
    p.add_argument("--activity", default=None, help="activity to start, e.g. .MainActivity")

    p = command("stop", "force-stop the app PACKAGE", _cmd_action)
    p.add_argument("scope")
    p.add_argument("package")

    p = command("screenshot", "save the phone's latest frame", _cmd_screenshot)
    p.add_argument("serial")
    p.add_argument("-o", "--output", required=True, help="file to write ('-' for stdout)")
    p.add_argument("--width", type=int, default=None,
                   help="JPEG thumbnail this many pixels wide instead of the full PNG")

    p = command("watch", "follow live events, one line each (times in UTC)", _cmd_watch)
    p.add_argument("--count", type=int, default=0, help="stop after N events")

    p = command("run", "start a sequence on every phone of SCOPE; exit 1 if any phone failed",
                _cmd_run)
    p.add_argument("sequence", help="library name (clipshare/post_clip) or a sequence .json file")
    p.add_argument("scope")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="custom variable ${custom.NAME} for this run (repeatable)")
    p.add_argument("--wait", action="store_true",
                   help="follow every phone's steps until all have ended")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between progress checks")

    p = command("runs", "recent workflow runs and executions (newest first) with their "
                "status", _cmd_runs)
    p.add_argument("--limit", type=int, default=30, help="how many (default 30, max 1000)")

    p = command("recovery", "AI recovery: success rate per sequence (or --by screen, serial, "
                "failure_reason) and the latest attempts", _cmd_recovery)
    p.add_argument("--by", default="sequence",
                   choices=("sequence", "screen", "serial", "failure_reason"))
    p.add_argument("--limit", type=int, default=20, help="attempts listed (default 20)")
    p.add_argument("--execution", default=None, help="only this execution's attempts")

    p = command("resume", "resume a phone the coordinator paused (e.g. after repeated "
                "failed AI recoveries)", _cmd_resume)
    p.add_argument("serial")
    p.add_argument("--reason", default=None, help="why (kept in the audit trail)")

    ai_keys_help = "AI endpoint keys per client / organization (list, add, delete)"
    p = command("ai-keys", ai_keys_help, _cmd_ai_keys)
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

    command("workflows", "workflow definitions: their sequences in order, dependencies, "
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

    groups_help = "phone and account groups: list (default), add, member add|remove"
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

    registry_help = ("work on a screen registry folder (check, identify: locally, no endpoint) "
                     "or list the coordinator's (apps)")
    p = sub.add_parser("registry", help=registry_help, description=registry_help)
    registry_sub = p.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    dir_help = "registry folder or single JSON file (env PHONEFARM_REGISTRY, default the demo registry)"

    help_text = ("validate the registry and cross-check every screen against every reference "
                 "screenshot; exit 1 on any problem")
    p = registry_sub.add_parser("check", help=help_text, description=help_text)
    p.add_argument("registry_dir", nargs="?", default=None, metavar="DIR", help=dir_help)
    p.set_defaults(func=_cmd_registry_check)

    help_text = "print which registered screen IMAGE shows"
    p = registry_sub.add_parser("identify", help=help_text, description=help_text)
    p.add_argument("image", help="screenshot file (PNG, JPEG)")
    p.add_argument("--app", default=None,
                   help="the app in the foreground (key or package): its screens and the global "
                        "ones are tried; default every app")
    p.add_argument("--registry", dest="registry_dir", default=None, metavar="DIR", help=dir_help)
    p.add_argument("--explain", action="store_true",
                   help="also print one line per region checked: screen, region, kind, score, "
                        "threshold, pass/fail")
    p.set_defaults(func=_cmd_registry_identify)

    help_text = "the coordinator's screen registry: version, and per app its screens"
    p = registry_sub.add_parser("apps", help=help_text, description=help_text, parents=[common])
    p.set_defaults(func=_cmd_registry_apps)

    vars_help = "variables and spintax (locally, on the farm database file)"
    p = sub.add_parser("vars", help=vars_help, description=vars_help)
    vars_sub = p.add_subparsers(dest="vars_command", required=True, metavar="COMMAND")
    help_text = ("print TEXT with its ${...} variables and {a|b} spintax resolved for a phone "
                 "(counters and media moves are real: they persist)")
    p = vars_sub.add_parser("preview", help=help_text, description=help_text)
    p.add_argument("text")
    p.add_argument("--phone", required=True, metavar="SERIAL")
    p.add_argument("--account", default=None, metavar="PLATFORM.NUMBER",
                   help="current account for ${account.FIELD}, e.g. clipshare.account1")
    p.add_argument("--db", default=None, metavar="PATH",
                   help="farm database (default $PHONEFARM_DATA/farm.sqlite3, "
                        "PHONEFARM_DATA defaulting to ./farm-data)")
    p.add_argument("--seed", type=int, default=None, help="seed the random choices")
    p.set_defaults(func=_cmd_vars_preview)

    help_text = ("apply the data retention policy (spec 7.6) to a coordinator's data folder "
                 "(locally): one line per compress/delete/thin, then a summary")
    p = sub.add_parser("retention", help=help_text, description=help_text)
    p.add_argument("--data", default=os.environ.get("PHONEFARM_DATA", "./farm-data"),
                   metavar="DIR", help="data folder (env PHONEFARM_DATA, default ./farm-data)")
    p.add_argument("--dry-run", action="store_true", help="list what would be done; change nothing")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML with a [retention] table (see config/retention.example.toml); "
                        "PHONEFARM_RETENTION_<KEY> variables override it")
    p.set_defaults(func=_cmd_retention)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("PHONEFARM_LOG_LEVEL", "WARNING").upper(),
                        stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    url = args.url or os.environ.get("PHONEFARM_URL") or DEFAULT_URL
    token = args.token if args.token is not None else os.environ.get("PHONEFARM_TOKEN")
    client = FarmClient(url, token, timeout=args.timeout)
    try:
        code = args.func(client, args)
        sys.stdout.flush()  # a reader that went away shows here, not in the exit's flush
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except DeliveryError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except FarmError as exc:  # the endpoint answered with an error
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except OSError as exc:  # e.g. the screenshot file cannot be written
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        return 130


def _stdout_closed() -> int:
    """`farm runs | head`: the reader has what it wanted. Point stdout at /dev/null, so the
    interpreter's own flush at exit does not fail again, and exit as a process ended by
    SIGPIPE would (128 + 13), quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_STDOUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
