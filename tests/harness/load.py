"""The steady load of a harness run (issue 22.3): work the farm does all along, so faults hit
a farm that is busy and the invariants have executions and taps to check.

`SteadyLoad(farm, timeline)`, started before the faults and stopped before the final check:

1. A recurring schedule ``harness-steady-<hex>`` (a new id per SteadyLoad: a cancelled
   schedule's id cannot be used again) over ``phone:all``, cron ``* * * * *`` (the
   scheduler's finest: once a minute, UTC), of the library sequence ``harness/steady``,
   which `start` writes into the coordinator's recorded sequences
   (``<coordinator data>/sequences/harness/steady.json``, read at every dispatch). Its
   taps are coded with `step_tap(step_index, SCHEDULE_OCCURRENCE)`: a fixed sequence, so
   every execution of the schedule has the same codes; the checker tells its executions
   apart by the node's own step events (invariants.step_spans), not by
   the records' times.
2. Runs: every ``run_every_s`` a ``POST /api/runs`` over ``phone:all`` of an inline sequence
   coded with its own occurrence (1, 2, ...: unique per run, so per phone). Phones busy
   with a scheduled execution answer ``locked`` and are left out. This is what lets the
   fault runner see "work resumed" within seconds of a fault's end instead of waiting for
   the next minute.
3. Broadcast taps: every ``broadcast_every_s`` a ``POST /api/actions`` tap over
   ``phone:all`` at `broadcast_tap(n)`, n = 0, 1, ... (each once per phone).

Not done: runs with AI recovery. Recovery needs the coordinator started with an AI model
(``--ai-base-url``); the only model without an AI server is the in-process
``virtual.model_server.ScriptedModel`` of the tests, which a HarnessFarm does not start.

Every request and its answer's status (0: nothing answered) is a ``request`` entry of the
timeline; a refused or failed request is recorded, never raised (the farm may be down).
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from actors.store.execution_records import utc_text
from tests.harness.faults import Timeline
from tests.harness.invariants import MAX_BROADCAST, MAX_OCCURRENCE, broadcast_tap, step_tap

SCHEDULE_PREFIX = "harness-steady-"
SEQUENCE_NAME = "harness/steady"
# The schedule's sequence is fixed, so all its executions share one occurrence code; the
# runs' codes count from 1.
SCHEDULE_OCCURRENCE = 0
TAP_STEPS = 3          # taps per sequence, at step indexes 0, 2, 4 (sleeps between)
STEP_SLEEP_S = 0.2     # between two taps: an execution takes about a second


def load_steps(occurrence: int) -> list[dict[str, Any]]:
    """The load sequence's steps for ``occurrence``: taps at top level (the checker reads
    ``steps[N]``), each coded with its own index, a short sleep between two."""
    steps: list[dict[str, Any]] = []
    for i in range(TAP_STEPS):
        if steps:
            steps.append({"type": "sleep", "seconds": STEP_SLEEP_S})
        x, y = step_tap(len(steps), occurrence)
        steps.append({"type": "tap", "x": x, "y": y})
    return steps


class SteadyLoad:
    """Owns the load's schedule, its sequence file, and one thread posting runs and
    broadcast taps; counts what it asked for and what the farm answered. `stop` cancels the
    schedule so the farm can settle (jobs already started run to their end)."""

    def __init__(self, farm: Any, timeline: Timeline, *, broadcast_every_s: float = 3.0,
                 run_every_s: float | None = 5.0, cron: str = "* * * * *",
                 tick_s: float = 0.25) -> None:
        self.farm = farm
        self.timeline = timeline
        self.broadcast_every_s = broadcast_every_s
        self.run_every_s = run_every_s
        self.cron = cron
        self.tick_s = tick_s
        self.broadcasts = 0     # broadcast numbers used (the next one is this)
        self.runs = 0           # run occurrences used (the next one is this + 1)
        self.schedule_id = f"{SCHEDULE_PREFIX}{uuid.uuid4().hex[:8]}"
        self.schedule_created = False
        self.answers: Counter[tuple[str, int]] = Counter()  # (path, status) -> count
        self._stop = threading.Event()
        self._kicked = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the schedule's sequence, then start the thread (which also creates the
        schedule, retrying while the coordinator does not take it)."""
        if self._thread is not None:
            raise RuntimeError("SteadyLoad.start: already started")
        path = self.sequence_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": "steady",
                                    "steps": load_steps(SCHEDULE_OCCURRENCE)}, indent=1))
        self.timeline.add("load", "started", sequence=str(path),
                          broadcast_every_s=self.broadcast_every_s,
                          run_every_s=self.run_every_s, cron=self.cron)
        self._thread = threading.Thread(target=self._loop, name="steady-load", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop posting and cancel the schedule (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.schedule_created:
            self._request("POST", f"/api/schedules/{self.schedule_id}/cancel", {})
            self.schedule_created = False
        self.timeline.add("load", "stopped", broadcasts=self.broadcasts, runs=self.runs)

    def kick(self) -> None:
        """Post the next run now rather than at its time (FaultRunner's ``on_phones_back``:
        the phones are back, so work resumes at once). Safe from any thread."""
        self._kicked.set()

    def sequence_file(self) -> Path:
        """Where the coordinator finds ``harness/steady``: its recorded sequences, in its
        data directory (the farm database's folder)."""
        return Path(self.farm.db_path()).parent / "sequences" / f"{SEQUENCE_NAME}.json"

    # --- the thread --------------------------------------------------------------------------

    def _loop(self) -> None:
        now = time.monotonic()
        next_broadcast = now
        next_run = now + (self.run_every_s or 0) / 2  # not in the same tick as a broadcast
        while not self._stop.is_set():
            now = time.monotonic()
            if not self.schedule_created:
                self._create_schedule()
            if now >= next_broadcast:
                next_broadcast = now + self.broadcast_every_s
                self._broadcast()
            if self.run_every_s is not None and (now >= next_run or self._kicked.is_set()):
                self._kicked.clear()
                next_run = now + self.run_every_s
                self._run()
            self._stop.wait(self.tick_s)

    def _create_schedule(self) -> None:
        status, body = self._request("POST", "/api/schedules", {
            "id": self.schedule_id, "sequence": SEQUENCE_NAME, "target": "phone:all",
            "type": "recurring", "cron": self.cron,
            # An occurrence missed while the coordinator was down runs late if at most
            # 30 s late (the next one is never more than a minute away).
            "misfire": {"grace_s": 30}})
        if status == 201:
            self.schedule_created = True
        elif status == 400 and "exists" in json.dumps(body or {}):
            # Already there: a retry whose first answer was lost (the id is ours alone).
            self.schedule_created = True

    def _broadcast(self) -> None:
        if self.broadcasts > MAX_BROADCAST:
            return  # the code box is full: no more broadcasts this run
        n = self.broadcasts
        self.broadcasts += 1
        x, y = broadcast_tap(n)
        status, body = self._request("POST", "/api/actions", {
            "scope": "phone:all", "action": {"type": "tap", "x": x, "y": y}},
            record=False)
        results = body.get("results", {}) if isinstance(body, dict) else {}
        self._record("POST", "/api/actions", status, n=n, x=x, y=y, outcomes=dict(Counter(
            r.get("status") for r in results.values() if isinstance(r, dict))))

    def _run(self) -> None:
        if self.runs >= MAX_OCCURRENCE:
            return  # the code box is full: no more runs this run
        self.runs += 1
        occurrence = self.runs
        status, body = self._request("POST", "/api/runs", {
            "scope": "phone:all",
            "sequence": {"name": f"harness_run_{occurrence}", "steps": load_steps(occurrence)}},
            record=False)
        executions = body.get("executions", {}) if isinstance(body, dict) else {}
        self._record("POST", "/api/runs", status, occurrence=occurrence,
                     run_id=body.get("run_id") if isinstance(body, dict) else None,
                     outcomes=dict(Counter(e.get("status") for e in executions.values()
                                           if isinstance(e, dict))))

    # --- requests ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any, *,
                 record: bool = True) -> tuple[int, Any]:
        try:
            status, answer = self.farm.post(path, body)
        except Exception as exc:  # the farm's post never raises; a bug there must not kill us
            status, answer = 0, {"error": f"{type(exc).__name__}: {exc}"}
        if record:
            extra = {}
            if status >= 400 and isinstance(answer, dict):
                extra["error"] = str(answer.get("error", answer))[:200]
            self._record(method, path, status, **extra)
        return status, answer

    def _record(self, method: str, path: str, status: int, **fields: Any) -> None:
        self.answers[(path, status)] += 1
        self.timeline.add("request", f"{method} {path}", method=method, path=path,
                          status=status, **fields)

    # --- figures -----------------------------------------------------------------------------

    def completed_per_minute(self, window: float = 60.0, *, end: float | None = None) -> float:
        """Executions completed per minute over the ``window`` seconds before ``end``
        (time.time(); default now), from the coordinator's farm database (read-only, so it
        answers while the coordinator is down). 0.0 when the database cannot be read."""
        end = time.time() if end is None else end
        return completed_between(self.farm.db_path(), end - window, end) * 60.0 / window


def completed_between(db_path: Path, start_wall: float, end_wall: float) -> int:
    """How many executions ended ``completed`` in (start_wall, end_wall] (time.time())."""
    def text(t: float) -> str:
        return utc_text(_dt.datetime.fromtimestamp(t, _dt.timezone.utc))

    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return 0
    try:
        (count,) = con.execute(
            "SELECT COUNT(*) FROM executions WHERE status = 'completed' AND end_time > ? "
            "AND end_time <= ?", (text(start_wall), text(end_wall))).fetchone()
        return int(count)
    except sqlite3.Error:
        return 0
    finally:
        con.close()
