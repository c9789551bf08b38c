"""What must always hold in a harness farm (issue 22.3), decided from the coordinator's
database, every virtual phone's ``vphone log``, the status stream and health answers.

Owns: the tap encoding the steady load uses so a phone's log proves which step of which
execution it played (`step_tap`/`decode_tap`, `broadcast_tap`/`decode_broadcast`, each saying its
code), `Violation`, `StreamWatcher` (a thread following
``GET /api/stream``), `HealthProbe` (a thread polling ``farm.health()`` every second),
`check` (every invariant, read-only) and `report` (a violation with the fault timeline
around it). The pure ``check_*`` functions take plain data so unit tests need no processes.

The database is opened read-only (``file:...?mode=ro``): the checker never writes a farm's
records. Times in the database are the coordinator's UTC wall clock at the moment it applied
a node's event (``actors/store/execution_records.py``), a phone's log ``ts`` is the phone
process's ``time.time()``; both run on this one machine, so one clock (a node's clock skew
does not reach either). Which execution held a phone is judged from the node's own lock
events in the coordinator's event store (`read_lock_holdings`): see `check_no_overlap`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

# --- the tap encoding (shared with tests/harness/load.py) --------------------------------
# Virtual phones are 1080 x 2400 (virtual/phone.py); both boxes lie inside and apart.
STEP_X0, STEP_X_STRIDE, STEP_Y0, STEP_Y_SPAN = 100, 100, 1000, 1000
MAX_STEP_INDEX = 7
MAX_OCCURRENCE = 99_999
BROADCAST_X0, BROADCAST_Y0, BROADCAST_Y_SPAN = 100, 2100, 200
MAX_BROADCAST = 179_999


def step_tap(step_index: int, occurrence: int) -> tuple[int, int]:
    """Where the load taps for top-level step ``step_index`` (0..7, its position in the
    sequence's ``steps``) of occurrence ``occurrence`` (0..99 999)."""
    if not 0 <= step_index <= MAX_STEP_INDEX:
        raise ValueError(f"step_index {step_index} outside 0..{MAX_STEP_INDEX}")
    if not 0 <= occurrence <= MAX_OCCURRENCE:
        raise ValueError(f"occurrence {occurrence} outside 0..{MAX_OCCURRENCE}")
    return (STEP_X0 + STEP_X_STRIDE * step_index + occurrence // STEP_Y_SPAN,
            STEP_Y0 + occurrence % STEP_Y_SPAN)


def decode_tap(x: int, y: int) -> tuple[int, int] | None:
    """(step_index, occurrence) of a step tap at (x, y), None outside the step box."""
    dx, dy = x - STEP_X0, y - STEP_Y0
    if not (0 <= dx < STEP_X_STRIDE * (MAX_STEP_INDEX + 1) and 0 <= dy < STEP_Y_SPAN):
        return None
    step_index, high = divmod(dx, STEP_X_STRIDE)
    occurrence = high * STEP_Y_SPAN + dy
    return (step_index, occurrence) if occurrence <= MAX_OCCURRENCE else None


def broadcast_tap(n: int) -> tuple[int, int]:
    """Where the load's ``n``-th broadcast tap (0..179 999) lands."""
    if not 0 <= n <= MAX_BROADCAST:
        raise ValueError(f"broadcast number {n} outside 0..{MAX_BROADCAST}")
    return BROADCAST_X0 + n // BROADCAST_Y_SPAN, BROADCAST_Y0 + n % BROADCAST_Y_SPAN


def decode_broadcast(x: int, y: int) -> int | None:
    """The broadcast number of a tap at (x, y), None outside the broadcast box."""
    dx, dy = x - BROADCAST_X0, y - BROADCAST_Y0
    if dx < 0 or not 0 <= dy < BROADCAST_Y_SPAN:
        return None
    n = dx * BROADCAST_Y_SPAN + dy
    return n if n <= MAX_BROADCAST else None


# --- tolerances ----------------------------------------------------------------------------
# An execution's start_time is written before it is sent and its end_time when its finish
# event is applied, so its taps fall inside; the slack covers rounding and the time between
# the phone logging a tap and the node reporting it.
ATTRIBUTION_SLACK_S = 2.0
# A tap attributed by the node's own step events: the node stamps step_started before it sends
# the tap and step_finished after the phone answered, on this machine's clock like the phone's
# log; the slack only covers rounding.
NODE_STEP_SLACK_S = 0.5
# A step replayed after a node kill -9 is played once the node is back and the coordinator
# resent the execution (actors/coordinator/runs.py resume): within this long of the restart.
REPLAY_GRACE_S = 60.0
# A restarted process needs a moment before it answers again.
RESTART_GRACE_S = 15.0
# The node's lock_freed may trail the record's end (records are applied first, hub.py).
LOCK_GRACE_S = 5.0
HEALTH_LIMIT_S = 1.0
# A miss while the machine's 1-minute load average is above this many times its CPU count
# says the machine starved the process (on this 2-core machine a 4 x 15 farm runs at ~20):
# a note, health_in_1s_overloaded, not a violation.
OVERLOAD_FACTOR = 2.0
# Mid-run checks leave the newest taps' records alone for this long (node events in flight).
RECORD_LAG_S = 10.0
CUTTING_FAULTS = frozenset({"node_kill", "coordinator_kill", "partition", "loss", "disk_full"})

FINAL = frozenset({"completed", "failed", "cancelled", "stopped"})
ACTIVE = frozenset({"pending", "running", "paused"})
# Ended by the coordinator itself, never by a node event, so the stream cannot show it:
# refused at dispatch (runs.py _failed_at_start) and a resume that could not be sent.
COORDINATOR_REASONS = frozenset({"locked", "resume", "resolve", "dispatch", "node_down",
                                 "not_started"})
EXECUTION_EVENTS = frozenset({"execution_started", "execution_finished", "execution_paused",
                              "execution_resumed"})


@dataclass
class Violation:
    """One broken invariant (or, from ``check(notes=...)``, an excused oddity): which, what,
    when (wall time, for the timeline around it) and the records that disagree."""

    invariant: str
    message: str
    at_wall: float | None
    records: list = field(default_factory=list)


# --- what the checker reads ----------------------------------------------------------------
@dataclass
class Execution:
    """One row of ``executions`` as the checker needs it (times as epoch seconds)."""

    key: str
    serial: str | None
    sequence: str | None
    status: str | None
    start: float | None
    end: float | None
    error_reason: str | None
    error_message: str | None
    has_plan: bool
    steps: list[dict] = field(default_factory=list)

    def ran(self) -> bool:
        """Whether it may have touched its phone: a node reported a step, or it is still
        active. A dispatch refused (locked, node down) never played anything."""
        return bool(self.steps) or self.status in ACTIVE

    def row(self) -> dict:
        return {"execution": self.key, "serial": self.serial, "status": self.status,
                "start": _iso(self.start), "end": _iso(self.end),
                "error_reason": self.error_reason, "steps": len(self.steps)}


@dataclass
class Tap:
    """A tap entry of a phone's ``vphone log``."""

    serial: str
    ts: float
    x: int
    y: int


@dataclass
class FaultWindow:
    """A fault from its start to its end on the timeline (end None: still on)."""

    kind: str
    target: str | None
    start: float
    end: float | None

    def covers(self, t: float, *, before: float = 0.0, after: float = 0.0,
               now: float | None = None) -> bool:
        end = self.end if self.end is not None else (now if now is not None else time.time())
        return self.start - before <= t <= end + after


@dataclass
class Holding:
    """One hold of a phone's lock by an execution, as the phone's node journaled it: from its
    ``lock_taken`` to its ``lock_freed`` (or the node's restart), as journal seqs of ``node``
    (their order is the phone actor's) with the node's own clock beside them."""

    key: str
    serial: str
    node: str
    taken: int
    taken_at: float | None
    freed: int | None = None  # None: still held
    freed_at: float | None = None
    ended_by: str | None = None

    def holds_at(self, seq: int) -> bool:
        return self.taken < seq and (self.freed is None or seq < self.freed)


def _epoch(text: Any) -> float | None:
    """A database timestamp (UTC text, naive) as epoch seconds."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    when = datetime.fromisoformat(str(text).replace("T", " ").rstrip("Z"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(
        sep=" ", timespec="milliseconds")


def read_executions(db_path: Path) -> list[Execution]:
    """Every execution with its steps, from the farm database opened read-only."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT execution_id, execution_key, serial, sequence, status, start_time,"
            " end_time, error_reason, error_message, plan IS NOT NULL AS has_plan"
            " FROM executions ORDER BY execution_id").fetchall()
        steps: dict[int, list[dict]] = {}
        for s in conn.execute("SELECT execution_id, step_number, action_type, path, status,"
                              " start_time, end_time FROM execution_steps ORDER BY step_id"):
            steps.setdefault(s["execution_id"], []).append(dict(s))
    finally:
        conn.close()
    return [Execution(key=str(r["execution_key"]), serial=r["serial"], sequence=r["sequence"],
                      status=r["status"], start=_epoch(r["start_time"]),
                      end=_epoch(r["end_time"]), error_reason=r["error_reason"],
                      error_message=r["error_message"], has_plan=bool(r["has_plan"]),
                      steps=steps.get(r["execution_id"], []))
            for r in rows]


LOCK_EVENTS = ("lock_taken", "lock_freed", "phone_up")


def read_lock_holdings(events_db: Path) -> dict[str, list[Holding]]:
    """`lock_holdings` of the coordinator's event store (node_events), opened read-only."""
    conn = sqlite3.connect(f"file:{events_db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT node, seq, event, serial, data FROM node_events WHERE event IN"
            f" ({', '.join('?' * len(LOCK_EVENTS))}) ORDER BY node, seq",
            LOCK_EVENTS).fetchall()
    finally:
        conn.close()
    return lock_holdings({"node": n, "seq": q, "event": e, "serial": se, "data": json.loads(d)}
                         for n, q, e, se, d in rows)


def lock_holdings(events: Iterable[dict]) -> dict[str, list[Holding]]:
    """Each execution's holds of its phone's lock, by execution key, from node events
    ({node, seq, event, serial, data}). A ``phone_up`` ends every hold of that phone: the
    node restarted and its new phone record has no lock (actors/node/rack.py; the other
    ``phone_up``, a failed phone plugged in again, comes after its playbacks failed with
    ``phone_failed`` and released their locks). A
    ``lock_taken`` while another execution's hold is open stays an overlap (nothing is
    closed for it): that is what `check_no_overlap` looks for."""
    held: dict[tuple[str, str, str], Holding] = {}  # (node, serial, key) -> open hold
    out: dict[str, list[Holding]] = {}
    for ev in sorted(events, key=lambda ev: (str(ev["node"]), int(ev["seq"]))):
        node, serial, seq = str(ev["node"]), str(ev.get("serial")), int(ev["seq"])
        data = ev.get("data") or {}
        if ev["event"] == "phone_up":
            for k in [k for k in held if k[:2] == (node, serial)]:
                h = held.pop(k)
                h.freed, h.freed_at, h.ended_by = seq, data.get("at"), "node restarted"
            continue
        key = data.get("execution_id")
        if not key:
            continue
        slot = (node, serial, str(key))
        if ev["event"] == "lock_taken" and slot not in held:
            held[slot] = Holding(str(key), serial, node, seq, data.get("at"))
            out.setdefault(str(key), []).append(held[slot])
        elif ev["event"] == "lock_freed" and slot in held:
            h = held.pop(slot)
            h.freed, h.freed_at, h.ended_by = seq, data.get("at"), data.get("reason")
    return out


NODE_EVENTS = ("lock_taken", "lock_freed", "phone_up", "step_started", "step_finished")


def read_node_events(events_db: Path) -> list[dict]:
    """The lock and step events of the coordinator's event store (node_events), opened
    read-only, as {node, seq, event, serial, data, received_at}; ``received_at`` is the
    coordinator's clock when it stored the event (a skewed node's ``at`` is not)."""
    conn = sqlite3.connect(f"file:{events_db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT node, seq, event, serial, data, received_at FROM node_events WHERE event IN"
            f" ({', '.join('?' * len(NODE_EVENTS))}) ORDER BY node, seq", NODE_EVENTS).fetchall()
    finally:
        conn.close()
    return [{"node": n, "seq": q, "event": e, "serial": se, "data": json.loads(d),
             "received_at": r} for n, q, e, se, d, r in rows]


@dataclass
class StepSpan:
    """One top-level step (``steps[index]``) of execution ``key`` on phone ``serial`` as its
    node journaled it: from its ``step_started`` to its ``step_finished`` (or the lock's
    release or the node's restart; None: still on), on this machine's clock (a clock-skewed
    node's times put back, see `step_spans`)."""

    key: str
    serial: str
    node: str
    index: int
    start: float
    end: float | None = None
    attempts: int | None = None  # step_finished's: more than 1, the node retried the action


@dataclass
class ClockSkew:
    """A clock_skew fault on rack (= node) ``node``: from ``start`` to ``end`` (wall), its
    node's clock ``seconds`` off (None: not known, its events' times are not trusted)."""

    node: str
    start: float
    end: float | None
    seconds: float | None


_TOP_STEP = re.compile(r"steps\[(\d+)\]")


def _node_time(ev: dict, skews: list[ClockSkew], now: float) -> float | None:
    """The event's ``at`` on this machine's clock; None when a skew of unknown size may be in
    it. A node restarted with a skewed clock for the fault stamps ``at`` ``seconds`` off,
    the coordinator's ``received_at`` is not: an event stored during the fault (or a
    journal replay just after) whose ``at`` sits nearer ``received_at + seconds`` than
    ``received_at`` came from the skewed process."""
    at = (ev.get("data") or {}).get("at")
    if not isinstance(at, (int, float)):
        return None
    received = ev.get("received_at")
    for skew in skews:
        if skew.node != ev["node"] or not isinstance(received, (int, float)):
            continue
        end = skew.end if skew.end is not None else now
        if not skew.start - 1.0 <= received <= end + REPLAY_GRACE_S:
            continue
        if skew.seconds is None:
            return None
        if abs(at - skew.seconds - received) < abs(at - received):
            return float(at) - skew.seconds
    return float(at)


def step_spans(events: Iterable[dict], skews: list[ClockSkew] | None = None,
               now: float | None = None) -> dict[str, list[StepSpan]]:
    """Each phone's top-level step spans from node events ({node, seq, event, serial, data,
    received_at}), in journal order. A step left open ends at its execution's lock_freed or
    the phone's next phone_up (the node restarted); events whose time cannot be trusted
    (a clock skew of unknown size) make no span, so their taps fall back to the records."""
    skews = skews or []
    now = time.time() if now is None else now
    open_: dict[tuple[str, str, str, int], StepSpan] = {}
    out: dict[str, list[StepSpan]] = {}
    for ev in sorted(events, key=lambda ev: (str(ev["node"]), int(ev["seq"]))):
        node, serial = str(ev["node"]), str(ev.get("serial"))
        data = ev.get("data") or {}
        key = str(data.get("execution_id") or "")
        at = _node_time(ev, skews, now)
        name = ev["event"]
        if name in ("lock_freed", "phone_up"):
            for slot in [k for k in open_ if k[:2] == (node, serial)
                         and (name == "phone_up" or k[2] == key)]:
                open_.pop(slot).end = at if at is not None else now
            continue
        match = _TOP_STEP.fullmatch(str(data.get("path") or ""))
        if not key or match is None or name not in ("step_started", "step_finished"):
            continue
        slot = (node, serial, key, int(match.group(1)))
        if name == "step_started":
            open_.pop(slot, None)
            if at is not None:
                open_[slot] = StepSpan(key, serial, node, slot[3], at)
                out.setdefault(serial, []).append(open_[slot])
        elif slot in open_:
            span = open_.pop(slot)
            span.end = at if at is not None else now
            if isinstance(data.get("attempts"), int):
                span.attempts = data["attempts"]
    return out


def clock_skews(timeline: Any, windows: list[FaultWindow]) -> list[ClockSkew]:
    """The clock_skew faults of the run with their size: from the start entry's ``seconds``
    or ``params`` field when it has one, else from its text (Part B's ``describe()``:
    ``clock_skew rack2 seconds=300 for 60s``); None when neither says."""
    sizes: list[tuple[float, str | None, float]] = []
    for entry in timeline_entries(timeline):
        if (_get(entry, "fault") or _get(entry, "kind")) != "clock_skew":
            continue
        wall = _get(entry, "wall", "wall_time", "at_wall")
        params = _get(entry, "params")
        seconds = _get(entry, "seconds")
        if isinstance(params, dict) and "seconds" in params:
            seconds = params["seconds"]
        if not isinstance(seconds, (int, float)):
            found = re.search(r"seconds=(-?[0-9.]+)", str(_get(entry, "what") or ""))
            seconds = float(found.group(1)) if found else None
        if isinstance(wall, (int, float)) and seconds is not None:
            sizes.append((float(wall), _get(entry, "target"), float(seconds)))
    out = []
    for w in windows:
        if w.kind != "clock_skew" or w.target is None:
            continue
        size = next((s for wall, target, s in sizes
                     if abs(wall - w.start) < 1e-3 and target in (None, w.target)), None)
        out.append(ClockSkew(w.target, w.start, w.end, size))
    return out


def _node_verdict(a: Execution, b: Execution,
                  holdings: dict[str, list[Holding]]) -> tuple[Holding, Holding] | None | bool:
    """Whether the node's lock events show ``a`` and ``b`` holding their phone at once: the
    two holds that did (taken while the other's was open), None when they did not, False
    when the journal cannot tell (either has no hold there, or they are on other nodes)."""
    ha = [h for h in holdings.get(a.key, []) if h.serial == a.serial]
    hb = [h for h in holdings.get(b.key, []) if h.serial == b.serial]
    if not ha or not hb or not {h.node for h in ha} & {h.node for h in hb}:
        return False
    for x in ha:
        for y in hb:
            if x.node == y.node and (x.holds_at(y.taken) or y.holds_at(x.taken)):
                return (x, y) if x.taken < y.taken else (y, x)
    return None


def taps_of(serial: str, log: Iterable[dict]) -> list[Tap]:
    """The tap entries of one phone's ``vphone log`` lines."""
    out = []
    for entry in log:
        if entry.get("kind") == "tap" and "x" in entry and "y" in entry:
            out.append(Tap(serial, float(entry.get("ts") or 0.0), int(entry["x"]),
                           int(entry["y"])))
    return out


# --- the timeline, read tolerantly (tests/harness/faults.py `Timeline` owns it) -------------
def _get(entry: Any, *names: str) -> Any:
    for name in names:
        if isinstance(entry, dict):
            if name in entry:
                return entry[name]
            inner = entry.get("fields")
            if isinstance(inner, dict) and name in inner:
                return inner[name]
        else:
            if hasattr(entry, name):
                return getattr(entry, name)
            inner = getattr(entry, "fields", None)
            if isinstance(inner, dict) and name in inner:
                return inner[name]
    return None


def timeline_entries(timeline: Any) -> list[Any]:
    if timeline is None:
        return []
    for attr in ("entries", "items"):
        got = getattr(timeline, attr, None)
        if got is not None:
            return list(got() if callable(got) else got)
    try:
        return list(timeline)
    except TypeError:
        return []


FAULT_KINDS = frozenset({"node_kill", "coordinator_kill", "adb_kill", "partition", "loss", "delay",
                         "unplug_storm", "slow", "disk_full", "clock_skew"})


def fault_windows(timeline: Any) -> list[FaultWindow]:
    """Each fault's start and end. From ``timeline.windows()`` when it has one (Part B's
    Timeline pairs its ``fault`` entries by the fault's index), else paired here by
    (kind, target) in entry order, entries being either ``kind="fault"`` with the fault's
    kind in field ``fault`` or of the fault's kind itself, ``phase`` start/end."""
    windows = getattr(timeline, "windows", None)
    if callable(windows):
        return [FaultWindow(w.kind, None if w.target in (None, "") else str(w.target),
                            float(w.start), None if w.end is None else float(w.end))
                for w in windows()]
    out: list[FaultWindow] = []
    open_: dict[tuple[str, str | None], FaultWindow] = {}
    for entry in timeline_entries(timeline):
        kind = _get(entry, "kind")
        if kind == "fault":
            kind = _get(entry, "fault")
        if kind not in FAULT_KINDS:
            continue
        target = _get(entry, "target") if _get(entry, "kind") == "fault" \
            else _get(entry, "what", "target")
        target = None if target in (None, "") else str(target)
        wall = _get(entry, "wall", "wall_time", "at_wall")
        phase = str(_get(entry, "phase") or "")
        if wall is None:
            continue
        if phase in ("start", "apply", "applied", "begin"):
            window = FaultWindow(kind, target, float(wall), None)
            open_[(kind, target)] = window
            out.append(window)
        elif phase in ("end", "undo", "undone", "restarted", "done"):
            window = open_.pop((kind, target), None)
            if window is not None:
                window.end = float(wall)
    return out


def _rack_of(serial: str, racks: dict[str, list[str]]) -> str | None:
    for name, serials in racks.items():
        if serial in serials:
            return name
    return None


# --- the invariants, on plain data ----------------------------------------------------------
def check_no_overlap(executions: list[Execution], now: float,
                     holdings: dict[str, list[Holding]] | None = None,
                     notes: list[Violation] | None = None, *,
                     events_read: bool | None = None,
                     records_until: float | None = None) -> list[Violation]:
    """No phone ran two executions at once.

    The records' times cannot show it: an execution's ``start_time`` is the coordinator's
    clock when it created the record, before sending it to the node (runs.py
    ``_start_one``), and its ``end_time`` the coordinator's clock when it applied the node's
    ``execution_finished``, which the node publishes after releasing the lock (playback.py
    ``_play``) and which reaches the coordinator through the node's journal. So a run the
    coordinator dispatches while the previous one ends is recorded as starting before that
    one's end although the node gave it the phone only after the release: seen on a 1 x 2
    farm under an unplug storm (record start 21.298, previous record end 21.312; the node's
    lock_freed at 21.285, the new lock_taken at 21.304, its first tap at 21.404).

    What the phone did is decided by its node's lock events (``holdings``, from
    `read_lock_holdings`): every action of an execution goes through the phone actor, which
    refuses an execution not holding the lock (phone.py ``perform``), and the node takes the
    lock before a playback starts and the playback releases it after its last action. The
    phone actor publishes ``lock_freed`` and ``lock_taken`` itself, in the order it hands
    the lock on, so their journal seqs (not any clock) tell whether a second execution took
    the phone while the first held it. Intervals [start, end] of the records (an open one
    lasting until ``now``) pick the pairs to look at; a pair the journal cannot judge (no
    lock events for one of them: not read, or lost) is judged by the records. A pair only
    the records overlap is a ``records_overlap_only`` note.

    When the node events were read (``events_read``, default: some holdings given), an
    execution with neither a lock hold nor a recorded step has not touched its phone: a run
    created (``pending``) but not yet given the lock, most often one the node is about to
    refuse with ``locked`` because the phone is busy (seen 55 times at one 4 x 15 mid-run
    check: ``pending`` with an open record "until now", later ``locked`` with no step). Any
    tap it played anyway is caught by `check_taps` (no execution recorded that step)."""
    out: list[Violation] = []
    holdings = holdings or {}
    if events_read is None:
        events_read = bool(holdings)
    by_serial: dict[str, list[Execution]] = {}
    for e in executions:
        if events_read and not e.steps and not holdings.get(e.key):
            continue
        if e.serial and e.start is not None and e.ran():
            by_serial.setdefault(e.serial, []).append(e)
    for serial, runs in by_serial.items():
        runs.sort(key=lambda e: e.start or 0.0)
        earlier: list[Execution] = []  # runs whose record interval reaches past this start
        for e in runs:
            start = e.start or 0.0
            earlier = [p for p in earlier if (p.end if p.end is not None else now) > start]
            for p in earlier:
                p_end = p.end if p.end is not None else now
                verdict = _node_verdict(p, e, holdings)
                if verdict is False and _records_ahead(e, records_until, notes,
                                                       f"phone {serial} after {p.key}",
                                                       started=e.start):
                    continue  # its lock events may not be stored yet: judged once settled
                if verdict is None:
                    if notes is not None:
                        notes.append(Violation(
                            "records_overlap_only",
                            f"phone {serial}: execution {e.key} recorded from {_iso(e.start)}, "
                            f"{p.key} until {_iso(p_end)}, but the node handed the lock on "
                            "only after it was freed", e.start, [p.row(), e.row()]))
                    continue
                if verdict is False:
                    message = (f"phone {serial}: execution {e.key} started {_iso(e.start)} "
                               f"while {p.key} ran until {_iso(p_end)}")
                else:
                    first, second = verdict
                    message = (f"phone {serial}: execution {second.key} took the lock (node "
                               f"{second.node} seq {second.taken}, {_iso(second.taken_at)}) "
                               f"while {first.key} held it (taken seq {first.taken}, "
                               + (f"freed seq {first.freed}, {_iso(first.freed_at)})"
                                  if first.freed is not None else "never freed)"))
                out.append(Violation("one_execution_per_phone", message, e.start,
                                     [p.row(), e.row()]
                                     + ([h.__dict__ for h in verdict] if verdict else [])))
                break  # one violation per execution
            earlier.append(e)
    return out


def _attribute(tap: Tap, executions: list[Execution], step_index: int) -> Execution | None:
    """The execution on the tap's phone whose interval holds the tap and that recorded step
    ``step_index``; None when there is none."""
    now = time.time()
    for e in executions:
        if e.serial != tap.serial or e.start is None:
            continue
        end = e.end if e.end is not None else now
        if not e.start - ATTRIBUTION_SLACK_S <= tap.ts <= end + ATTRIBUTION_SLACK_S:
            continue
        if any(s.get("step_number") == step_index for s in e.steps):
            return e
    return None


def _attribute_by_node(tap: Tap, spans: dict[str, list[StepSpan]], step_index: int,
                       now: float) -> StepSpan | None:
    """The execution whose node had step ``step_index`` on the tap's phone under way when
    the phone logged the tap (the latest started, should two be: an overlap the lock check
    reports); None when no node step span holds it."""
    held = [s for s in spans.get(tap.serial, []) if s.index == step_index
            and s.start - NODE_STEP_SLACK_S <= tap.ts
            <= (s.end if s.end is not None else now) + NODE_STEP_SLACK_S]
    return max(held, key=lambda s: s.start) if held else None


def check_taps(taps: list[Tap], executions: list[Execution], windows: list[FaultWindow],
               racks: dict[str, list[str]], notes: list[Violation], *,
               records_until: float | None = None,
               spans: dict[str, list[StepSpan]] | None = None) -> list[Violation]:
    """No step played twice, and every step a phone logged is in the execution records.

    A step tap is attributed to an execution by its node's own step events (``spans``, from
    `step_spans`: the execution whose node had that step under way on that phone when the
    phone logged it; the node's clock is this machine's, a skewed node's put back), and
    only where no span holds it (node events lost, or a skew of unknown size) by the
    records' time windows (`_attribute`). The records' windows alone cannot tell two
    executions of one fixed sequence apart: every execution of the load's schedule taps
    occurrence 0, and a scheduled job refused ``locked`` and retried seconds later runs
    while the previous one's record (ended when the coordinator applied its finish) is
    within ATTRIBUTION_SLACK_S, so one tap each was counted twice for the first (48 times in
    one 4 x 15 run). An execution the node names must also have recorded that step. Two taps with the same
    (phone, execution, step, occurrence), or one broadcast number twice on a phone, are a
    step played twice, unless the first was in flight when that phone's rack's node was
    killed -9 and the second came after (the node's at-least-once window): one such step
    per execution and kill is a ``replayed_at_kill`` note. ``records_until``: taps after it
    are not held to the records yet (a node reports a step when it ends, and a cut-off node
    later); None judges every tap (the farm settled)."""
    out: list[Violation] = []
    seen: dict[tuple, Tap] = {}
    excused: dict[tuple[str, int], tuple] = {}  # (execution, kill no.) -> first excused key
    kills = [w for w in windows if w.kind == "node_kill"]
    by_key = {e.key: e for e in executions}
    now = time.time()
    by_records = 0
    guessed: set[int] = set()  # taps attributed by the records' windows (id of the Tap)
    for tap in sorted(taps, key=lambda t: t.ts):
        if records_until is not None and tap.ts > records_until:
            # Mid-run, a recent tap's step events may not be read yet, while an earlier
            # execution's step still shows open (it runs to now): a later check judges it.
            continue
        step = decode_tap(tap.x, tap.y)
        if step is not None:
            span = _attribute_by_node(tap, spans, step[0], now) if spans else None
            named = span.key if span is not None else None
            if spans and span is None:
                guessed.add(id(tap))
            if named is not None:
                owner = by_key.get(named)
                if owner is not None and not any(s.get("step_number") == step[0]
                                                 for s in owner.steps):
                    owner = None
            else:
                owner = _attribute(tap, executions, step[0])
                by_records += spans is not None
            if owner is None:
                out.append(Violation(
                    "step_in_records",
                    f"phone {tap.serial} logged step {step[0]} (occurrence {step[1]}) at "
                    f"{_iso(tap.ts)}, but no execution on it recorded that step then"
                    + (f" (its node played it for execution {named})" if named else ""),
                    tap.ts, [tap.__dict__] + ([by_key[named].row()] if named in by_key
                                              else [])))
            key: tuple = ("step", tap.serial, owner.key if owner else named, *step)
        else:
            n = decode_broadcast(tap.x, tap.y)
            if n is None:
                continue  # not the load's: other taps are no one's business here
            owner, key = None, ("broadcast", tap.serial, n)
        first = seen.get(key)
        if first is None:
            seen[key] = tap
            continue
        rack = _rack_of(tap.serial, racks)
        kill = next((i for i, w in enumerate(kills)
                     if w.target == rack and first.ts <= w.start + 1.0
                     and tap.ts >= w.start
                     and w.covers(tap.ts, after=REPLAY_GRACE_S)), None)
        slot = ((owner.key if owner else f"broadcast:{tap.serial}"), kill)
        records = [first.__dict__, tap.__dict__] + ([owner.row()] if owner else [])
        what = (f"step {key[3]} (occurrence {key[4]}) of execution {key[2]}"
                if key[0] == "step" else f"broadcast tap {key[2]}")
        if kill is not None and excused.get(slot, key) == key:
            excused[slot] = key
            notes.append(Violation(
                "replayed_at_kill",
                f"phone {tap.serial}: {what} played again at {_iso(tap.ts)} after the kill -9 "
                f"of {rack}'s node at {_iso(kills[kill].start)} (at-least-once window)",
                tap.ts, records))
            continue
        if id(first) in guessed or id(tap) in guessed:
            # The records' windows cannot tell two executions of one fixed sequence apart
            # (see above): a pair one of whose taps no node step span holds is not proof.
            notes.append(Violation(
                "duplicate_attributed_by_records",
                f"phone {tap.serial}: {what} logged at {_iso(first.ts)} and {_iso(tap.ts)}, "
                "one of them attributed by the records' times only", tap.ts, records))
            continue
        retried = span.attempts if step is not None and span is not None else None
        out.append(Violation(
            "step_played_once",
            f"phone {tap.serial}: {what} played at {_iso(first.ts)} and again at "
            f"{_iso(tap.ts)}" + (f" (its node's step_finished says attempts={retried}: the "
                                 "node retried an action that had landed)"
                                 if retried and retried > 1 else ""), tap.ts, records))
    if by_records:
        notes.append(Violation("tap_attributed_by_records", f"{by_records} step tap(s) held "
                               "by no node step span were attributed by the records' times",
                               None, []))
    return out


def check_settled(executions: list[Execution], phones: dict[str, dict] | None,
                  notes: list[Violation]) -> list[Violation]:
    """Once the farm settled, every execution ended completed, failed with a reason, or is
    resumable: still active with its plan kept (``executions.plan`` is what runs.py resume
    resends; it is dropped once an execution ends) on a phone that is not online, so the
    coordinator resumes it when the phone's node comes back. ``locked`` is a refused dispatch
    (its reason is the status itself)."""
    out: list[Violation] = []
    for e in executions:
        if e.status == "completed" or e.status == "locked":
            continue
        if e.status in ("failed", "cancelled", "stopped"):
            if not (e.error_reason or e.error_message):
                out.append(Violation("ended_with_reason",
                                     f"execution {e.key} {e.status} without a reason",
                                     e.end, [e.row()]))
            continue
        if e.status in ACTIVE:
            state = (phones or {}).get(e.serial or "", {}).get("state")
            if e.has_plan and phones is not None and state != "online":
                notes.append(Violation("resumable", f"execution {e.key} {e.status} on phone "
                                       f"{e.serial} ({state or 'unknown'}): resumable",
                                       e.start, [e.row()]))
                continue
            out.append(Violation(
                "none_stuck", f"execution {e.key} still {e.status} after the farm settled "
                f"(phone {e.serial} {state or 'state unknown'}, plan "
                f"{'kept' if e.has_plan else 'none'})", e.start, [e.row()]))
            continue
        out.append(Violation("none_stuck", f"execution {e.key} has unknown status {e.status!r}",
                             e.start, [e.row()]))
    return out


def check_locks(executions: list[Execution], phones: dict[str, dict],
                now: float, *, records_until: float | None = None,
                notes: list[Violation] | None = None) -> list[Violation]:
    """No lock held by a finished execution: a phone's ``lock_holder`` (the hub's view of its
    node's lock, GET /api/phones) naming an execution that ended more than LOCK_GRACE_S ago.
    ``records_until`` (mid-run): an execution that ended after it is a ``records_ahead``
    note (see `_records_ahead`)."""
    by_key = {e.key: e for e in executions}
    out: list[Violation] = []
    for serial, phone in phones.items():
        holder = phone.get("lock_holder")
        e = by_key.get(str(holder)) if holder else None
        if e is None or e.status not in FINAL and e.status != "locked":
            continue  # free, held by an active execution, or by a pause/install lease
        if e.end is not None and now - e.end < LOCK_GRACE_S:
            continue
        if _records_ahead(e, records_until, notes, f"phone {serial} lock"):
            continue
        out.append(Violation("no_lock_after_end",
                             f"phone {serial} still locked by execution {e.key}, "
                             f"{e.status} since {_iso(e.end)}", now,
                             [{"serial": serial, **phone}, e.row()]))
    return out


def _records_ahead(e: Execution, records_until: float | None,
                   notes: list[Violation] | None, what: str, *,
                   started: float | None = None) -> bool:
    """Whether a mid-run check leaves ``e`` alone: the hub's phone view and the stream come
    from the node events the coordinator stored, and the records can be ahead of them (the
    records of a batch are written before its events; when the event store then refuses
    them, a full disk, the node re-sends the batch and the stored events lag until then:
    25 s behind a seq gap in one 4 x 15 run). An execution that ended after
    ``records_until`` (the newest event read of any node, at most now - RECORD_LAG_S) is a
    ``records_ahead`` note; the settled check (records_until None) judges it. ``started``:
    the same for an execution that began (its first step) after ``records_until``, whose
    ``execution_started`` may still wait behind the refused events."""
    at = e.end if started is None else started
    if records_until is None or at is None or at <= records_until:
        return False
    if notes is not None:
        how = "ended" if started is None else "started"
        notes.append(Violation("records_ahead", f"{what}: execution {e.key} {how} at "
                               f"{_iso(at)}, after the newest node event read "
                               f"({_iso(records_until)}): judged once settled", at,
                               [e.row()]))
    return True


def check_stream(executions: list[Execution], events: list[dict],
                 gaps: list[tuple[float, float | None]], watch_start: float | None,
                 windows: list[FaultWindow], racks: dict[str, list[str]],
                 notes: list[Violation], *,
                 events_before: list[dict] | None = None,
                 records_until: float | None = None) -> list[Violation]:
    """The status stream showed every state change: each execution that ran and ended while
    the watcher followed the stream shows an ``execution_started`` and an
    ``execution_finished`` whose status is the recorded one. A change the coordinator
    applied while the watcher was not connected (a gap: the coordinator down, or it back but
    the watcher not yet) is a ``stream_gap`` note; one the coordinator made itself (a refused
    dispatch, a failed resume: COORDINATOR_REASONS) has no event to show.

    The records and the stream are read at two moments, and each direction needs its own
    order: the coordinator writes a node event's record before it emits the event
    (hub.handle_batch), so ``events`` (read after the records) must show every change the
    records hold, and ``events_before`` (read before them; default ``events``) can only show
    a finish the records already hold. A finish the stream delivered after the records were
    read is no disagreement: at one 4 x 15 mid-run check the records were read, then 60
    phones' logs (20 s under load), then the stream, whose finishes had arrived in those
    20 s; all 432 such executions were recorded with the stream's status in the end."""
    out: list[Violation] = []
    if watch_start is None:
        return out
    shown: dict[str, list[dict]] = {}
    for ev in events:
        if ev.get("execution_id"):
            shown.setdefault(str(ev["execution_id"]), []).append(ev)
    shown_before: dict[str, list[dict]] = shown
    if events_before is not None:
        shown_before = {}
        for ev in events_before:
            if ev.get("execution_id"):
                shown_before.setdefault(str(ev["execution_id"]), []).append(ev)

    def in_gap(t: float | None) -> bool:
        now = time.time()
        return t is not None and any(a - 1.0 <= t <= (b if b is not None else now) + 1.0
                                     for a, b in gaps)

    for e in executions:
        if not e.ran() or e.error_reason in COORDINATOR_REASONS:
            continue
        seen = shown.get(e.key, [])
        finishes = [ev for ev in seen if ev.get("event") == "execution_finished"
                    and not ev.get("recovering")]
        if e.status in FINAL and e.end is not None and e.end >= watch_start:
            if not finishes:
                rack = _rack_of(e.serial or "", racks)
                if _records_ahead(e, records_until, notes, "stream"):
                    pass
                elif in_gap(e.end):
                    notes.append(Violation("stream_gap", f"execution {e.key} {e.status} at "
                                           f"{_iso(e.end)} while the stream watcher was not "
                                           "connected", e.end, [e.row()]))
                elif e.status == "completed" and any(
                        w.kind == "node_kill" and w.target == rack
                        and w.covers(e.end, after=REPLAY_GRACE_S) for w in windows):
                    # runs.py resume marks it completed itself when every step was done.
                    notes.append(Violation("completed_by_resume", f"execution {e.key} "
                                           "completed by the coordinator's resume after a "
                                           "node kill, no event", e.end, [e.row()]))
                else:
                    out.append(Violation("stream_shows_changes", f"execution {e.key} "
                                         f"{e.status} at {_iso(e.end)} never shown on the "
                                         "status stream", e.end, [e.row()]))
            elif finishes[-1].get("status") != e.status:
                out.append(Violation("stream_shows_changes", f"execution {e.key}: the stream "
                                     f"last showed it {finishes[-1].get('status')!r}, the "
                                     f"records say {e.status!r}", e.end,
                                     [e.row(), finishes[-1]]))
        elif e.status in ACTIVE and not e.status == "paused" and (finished_before := [
                ev for ev in shown_before.get(e.key, []) if ev.get("event") ==
                "execution_finished" and not ev.get("recovering")]):
            last = finished_before[-1]
            out.append(Violation("stream_shows_changes", f"execution {e.key} shown finished "
                                 f"({last.get('status')}) on the stream but recorded "
                                 f"{e.status}", last.get("wall"), [e.row(), last]))
        if e.start is not None and e.start >= watch_start and e.steps and not any(
                ev.get("event") == "execution_started" for ev in seen):
            started = min((_epoch(s.get("start_time")) or e.start) for s in e.steps)
            if in_gap(started) or in_gap(e.start):
                notes.append(Violation("stream_gap", f"execution {e.key} started while the "
                                       "stream watcher was not connected", e.start, [e.row()]))
            elif _records_ahead(e, records_until, notes, "stream", started=started):
                pass
            else:
                out.append(Violation("stream_shows_changes", f"execution {e.key} ran steps "
                                     "but the stream never showed it started", e.start,
                                     [e.row()]))
    return out


def _health_target(name: str, racks: dict[str, list[str]]) -> str | None:
    """The rack a health key names (``rack1``, ``node:rack1``, ``rack1-metrics``), None for
    the coordinator."""
    for rack in racks:
        if rack in name.replace(":", " ").replace("/", " ").split() or name == rack \
                or name.endswith(":" + rack) or name.startswith(rack + "-"):
            return rack
    return None


def check_health(misses: list[dict], windows: list[FaultWindow], racks: dict[str, list[str]],
                 notes: list[Violation], *, cpus: int | None = None) -> list[Violation]:
    """Coordinator and nodes answered within HEALTH_LIMIT_S throughout, except while a fault
    killed or cut them off: the coordinator during a coordinator_kill (and RESTART_GRACE_S
    after it), a node during its rack's node_kill or partition (and the grace after). A miss
    during 5% loss on its rack (a lost SYN is resent after 1 s), or during a delay on it
    (the proxy delays only the node's link, but a delay comes with loss in the issue's
    "5% loss and 200 ms jitter"), is a note. A clock_skew restarts its rack's node at its
    start and at its end (farm.skew_clock: SIGTERM, then a start with the new clock): a
    node's miss within RESTART_GRACE_S of either is excused; the skewed node must answer in
    between. A window still open (end None) lasts until now.

    A miss taken while the machine's 1-minute load average (``load1``, recorded by the
    probe), or the threads runnable at that moment (``running``: the average lags a burst),
    was above OVERLOAD_FACTOR x ``cpus`` (default os.cpu_count()) is a
    ``health_in_1s_overloaded`` note: the machine, not the process, was short of CPU."""
    out: list[Violation] = []
    cpus = cpus or os.cpu_count() or 1
    for miss in misses:
        name, at = str(miss["name"]), float(miss["wall"])
        rack = _health_target(name, racks)
        if rack is None:
            excuses = [w for w in windows if w.kind == "coordinator_kill"]
        else:
            excuses = [w for w in windows
                       if w.kind in ("node_kill", "partition") and w.target == rack]
        if any(w.covers(at, after=RESTART_GRACE_S) for w in excuses):
            continue
        if rack is not None and any(
                w.kind == "clock_skew" and w.target == rack
                and (w.start <= at <= w.start + RESTART_GRACE_S
                     or w.end is not None and w.end - RESTART_GRACE_S <= at
                     <= w.end + RESTART_GRACE_S) for w in windows):
            continue
        during = [w.kind for w in windows
                  if w.kind in ("loss", "delay") and w.target == rack and w.covers(at)]
        if rack is not None and during:
            notes.append(Violation("health_in_1s", f"{name} missed health during "
                                   f"{' and '.join(sorted(set(during)))} on {rack}", at,
                                   [miss]))
            continue
        took = miss.get("took")
        load1, running = miss.get("load1"), miss.get("running")
        if isinstance(load1, (int, float)) and load1 > OVERLOAD_FACTOR * cpus:
            notes.append(Violation("health_in_1s_overloaded", f"{name} missed health at "
                                   f"{_iso(at)} with the machine's load average at "
                                   f"{load1:.1f} on {cpus} CPU(s)", at, [miss]))
            continue
        if isinstance(running, int) and running > OVERLOAD_FACTOR * cpus:
            notes.append(Violation("health_in_1s_overloaded", f"{name} missed health at "
                                   f"{_iso(at)} with {running} threads runnable on {cpus} "
                                   f"CPU(s)", at, [miss]))
            continue
        out.append(Violation("health_in_1s", f"{name} did not answer its health check within "
                             f"{HEALTH_LIMIT_S:.0f} s at {_iso(at)}"
                             + (f" (took {took:.2f} s)" if took is not None else ""),
                             at, [miss]))
    return out


# --- the threads that watch while the farm runs --------------------------------------------
def _timeline_add(timeline: Any, kind: str, what: str | None, **fields: Any) -> None:
    """Add to Part B's timeline when there is one; never let its failure stop a watcher."""
    if timeline is None:
        return
    try:
        timeline.add(kind, what, **fields)
    except Exception:  # noqa: BLE001 - a watcher must outlive a timeline bug
        pass


class SSEParser:
    """Owns the bytes of one SSE response body not yet parsed: feed chunks, get events
    (``{"event": name, **json data}``); comments and heartbeats are skipped."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[dict]:
        self._buf += chunk.replace(b"\r\n", b"\n")
        out = []
        while b"\n\n" in self._buf:
            block, self._buf = self._buf.split(b"\n\n", 1)
            name, data = None, []
            for line in block.decode(errors="replace").split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
            if name and data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    continue
                out.append({**(payload if isinstance(payload, dict) else {"data": payload}),
                            "event": name})
        return out


class StreamWatcher:
    """Owns a thread that follows the coordinator's status stream (``GET /api/stream``, SSE)
    and keeps every execution state event (``execution_started/finished/paused/resumed``,
    with the wall time it arrived) and the intervals it was not connected (``gaps``: before
    the first connection, after the coordinator went away until it answers again). It
    reconnects every ``retry_s`` while stopped from outside only.

    A plain socket (HTTP/1.0, so no chunked body) read with a short timeout: a quiet stream
    is normal (heartbeats every 15 s), and only a closed or reset connection is a gap."""

    def __init__(self, farm: Any, timeline: Any = None, *, retry_s: float = 0.2) -> None:
        self.farm, self.timeline, self.retry_s = farm, timeline, retry_s
        self.events: list[dict] = []
        self.gaps: list[tuple[float, float | None]] = []
        self.overflows: list[dict] = []
        self.started_at: float | None = None  # first connection
        self.connected = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="stream-watcher", daemon=True)

    def start(self) -> "StreamWatcher":
        with self._lock:
            self.gaps.append((time.time(), None))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.connected:
                return True
            time.sleep(0.05)
        return self.connected

    def snapshot(self) -> tuple[list[dict], list[tuple[float, float | None]], float | None]:
        with self._lock:
            return list(self.events), list(self.gaps), self.started_at

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except OSError:
                pass
            if self.connected:
                self._mark_down()
            self._stop.wait(self.retry_s)

    def _mark_down(self) -> None:
        self.connected = False
        with self._lock:
            self.gaps.append((time.time(), None))
        _timeline_add(self.timeline, "stream", "status stream lost", state="lost")

    def _mark_up(self) -> None:
        now = time.time()
        self.connected = True
        with self._lock:
            if self.gaps and self.gaps[-1][1] is None:
                self.gaps[-1] = (self.gaps[-1][0], now)
            if self.started_at is None:
                self.started_at = now
        _timeline_add(self.timeline, "stream", "status stream connected", state="connected")

    def _follow(self) -> None:
        url = urlsplit(self.farm.base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.sendall((f"GET /api/stream HTTP/1.0\r\nHost: {host}:{port}\r\n"
                          f"Authorization: Bearer {self.farm.token}\r\n"
                          "Accept: text/event-stream\r\n\r\n").encode())
            sock.settimeout(0.5)
            head, parser = b"", SSEParser()
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return  # closed: the coordinator went away
                if parser is not None and head is not None:
                    head += chunk
                    if b"\r\n\r\n" not in head:
                        continue
                    status_line, _, rest = head.partition(b"\r\n")
                    headers, _, chunk = rest.partition(b"\r\n\r\n")
                    if b" 200" not in status_line:
                        return  # refused (starting up, or the token changed): retry
                    head = None
                    self._mark_up()
                self._take(parser.feed(chunk))

    def _take(self, items: list[dict]) -> None:
        now = time.time()
        with self._lock:
            for item in items:
                name = item.get("event")
                data = item.get("data") if isinstance(item.get("data"), dict) else {}
                if name == "overflow":
                    self.overflows.append({"wall": now, **data})
                    # Dropped events are unknown: count the moment as a gap.
                    self.gaps.append((now - 1.0, now))
                elif name in EXECUTION_EVENTS:
                    self.events.append({"event": name, "wall": now, "serial": item.get("serial"),
                                        "node": item.get("node"),
                                        "execution_id": data.get("execution_id"),
                                        "status": data.get("status"),
                                        "recovering": bool(data.get("recovering"))})


def _load1() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _running() -> int | None:
    """How many threads are runnable right now (/proc/loadavg's 4th field, R of R/T; None
    elsewhere). The 1-minute average lags a burst by tens of seconds: at a farm's start
    (60 phones, 4 nodes coming up) it read 0.5 while two nodes missed their health check."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


class HealthProbe:
    """Owns a thread that calls ``farm.health()`` every ``interval_s`` and keeps each answer
    slower than HEALTH_LIMIT_S or missing (None) as a miss ``{"name", "wall", "took", "load1",
    "running"}`` (the machine's 1-minute load average and its runnable threads then); the
    check excuses misses inside the faults that killed or cut off that process."""

    def __init__(self, farm: Any, timeline: Any = None, *, interval_s: float = 1.0) -> None:
        self.farm, self.timeline, self.interval_s = farm, timeline, interval_s
        self.misses: list[dict] = []
        self.samples = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def start(self) -> "HealthProbe":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            wall = time.time()
            try:
                answers = self.farm.health()
            except Exception as exc:  # noqa: BLE001 - a probe bug is reported, not fatal
                self.errors.append(f"{_iso(wall)}: {exc!r}")
                answers = {}
            self.samples += 1
            for name, took in answers.items():
                if took is None or took > HEALTH_LIMIT_S:
                    miss = {"name": name, "wall": wall, "took": took, "load1": _load1(),
                            "running": _running()}
                    self.misses.append(miss)
                    _timeline_add(self.timeline, "health_miss", name, took=took)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))


# --- the whole check ------------------------------------------------------------------------
def _phones(farm: Any) -> dict[str, dict] | None:
    status, body = farm.get("/api/phones")
    if status != 200 or not isinstance(body, dict):
        return None
    return {p["serial"]: p for p in body.get("phones", []) if p.get("serial")}


def check(farm: Any, timeline: Any, *, settled: bool, stream: StreamWatcher | None = None,
          health: HealthProbe | None = None,
          notes: list[Violation] | None = None) -> list[Violation]:
    """Every invariant of issue 22.3 on ``farm`` now; the violations (excused oddities go to
    ``notes`` when given). ``settled``: the faults are over and the farm had time to recover,
    so unfinished executions count. The stream and health invariants need the watcher and
    probe that ran alongside; without them they are not checked (a note says so).

    What is read when matters, as a check takes long under load (20 s to read 60 phones'
    logs): the health misses and the stream's events as they were before the fault windows
    (a miss is judged only against windows read after it, so a fault that began during the
    check excuses its misses), the records, then the node events (written after the
    records: every step recorded has its events), then the logs, then the stream again."""
    notes = notes if notes is not None else []
    misses = list(health.misses) if health is not None else []
    stream_before = stream.snapshot()[0] if stream is not None else None
    now = time.time()
    windows = fault_windows(timeline)
    racks = {name: list(rack.serials) for name, rack in farm.racks.items()}
    out: list[Violation] = []
    executions = read_executions(Path(farm.db_path()))
    holdings: dict[str, list[Holding]] = {}
    spans: dict[str, list[StepSpan]] | None = None
    events_read = False
    events_until: dict[str, float] = {}  # node -> its newest event read (node clock)
    events_db = getattr(farm, "events_db_path", None)
    if callable(events_db):
        try:
            node_events = read_node_events(Path(events_db()))
            holdings = lock_holdings(ev for ev in node_events if ev["event"] in LOCK_EVENTS)
            spans = step_spans(node_events, clock_skews(timeline, windows), now)
            events_read = True
            for ev in node_events:
                at = ev["data"].get("at")
                if isinstance(at, (int, float)):
                    events_until[ev["node"]] = max(events_until.get(ev["node"], at), at)
        except (OSError, sqlite3.Error, ValueError) as exc:
            notes.append(Violation("node_events_read", f"node events not read ({exc}): phone "
                                   "overlaps and taps judged by the records' times", now, []))
    # Mid-run, the last RECORD_LAG_S of records, and everything since a fault still cutting
    # a rack off, may be ahead of the node events stored; so may anything newer than a
    # node's newest event read (the event store may lag the nodes by more than RECORD_LAG_S
    # on a loaded machine, and a full disk holds a rack's events back): `_records_ahead`.
    lagging = [w.start for w in windows if w.end is None and w.kind in CUTTING_FAULTS]
    records_until = None if settled else min([now - RECORD_LAG_S, *lagging,
                                              *events_until.values()])
    out += check_no_overlap(executions, now, holdings, notes, events_read=events_read,
                            records_until=records_until)
    taps: list[Tap] = []
    for name, rack in farm.racks.items():
        for serial in rack.serials:
            try:
                taps += taps_of(serial, rack.vphone_log(serial))
            except Exception as exc:  # noqa: BLE001 - an unplugged phone, adb down
                (out if settled else notes).append(Violation(
                    "phone_log_read", f"phone {serial} on {name}: vphone log not read: {exc}",
                    now, []))
    # Taps past records_until may not be reported yet; once settled every tap must be.
    out += check_taps(taps, executions, windows, racks, notes, records_until=records_until,
                      spans=spans)
    phones = _phones(farm)
    if phones is None:
        (out if settled else notes).append(Violation(
            "coordinator_answers", "GET /api/phones did not answer: locks not checked", now, []))
    else:
        out += check_locks(executions, phones, now, records_until=records_until,
                           notes=notes)
    if settled:
        out += check_settled(executions, phones, notes)
    if stream is not None:
        events, gaps, started = stream.snapshot()
        out += check_stream(executions, events, gaps, started, windows, racks, notes,
                            events_before=stream_before, records_until=records_until)
    else:
        notes.append(Violation("stream_shows_changes", "no StreamWatcher: not checked", now, []))
    if health is not None:
        out += check_health(misses, windows, racks, notes)
        for error in health.errors:
            notes.append(Violation("health_in_1s", f"probe error {error}", now, []))
    else:
        notes.append(Violation("health_in_1s", "no HealthProbe: not checked", now, []))
    return out


def report(violations: list[Violation], timeline: Any, *, seconds: float = 30.0) -> str:
    """Each violation with the timeline ``seconds`` either side of it and its records."""
    lines: list[str] = []
    for i, v in enumerate(violations, 1):
        lines.append(f"[{i}] {v.invariant}: {v.message}")
        if v.at_wall is not None and timeline is not None and hasattr(timeline, "around"):
            try:
                around = timeline.around(v.at_wall, seconds)
            except Exception as exc:  # noqa: BLE001 - the report must still print
                around = [f"(timeline unavailable: {exc!r})"]
            lines.append(f"    timeline within {seconds:.0f} s of {_iso(v.at_wall)}:")
            lines += [f"      {_entry_text(e)}" for e in around] or ["      (nothing)"]
        if v.records:
            lines.append("    records:")
            lines += [f"      {json.dumps(r, default=str, sort_keys=True)}" for r in v.records]
    return "\n".join(lines)


def _entry_text(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if type(entry).__str__ is not object.__str__ and not isinstance(entry, dict):
        return str(entry)  # Part B's Entry prints itself
    wall = _get(entry, "wall", "wall_time", "at_wall")
    stamp = _iso(float(wall)) if isinstance(wall, (int, float)) else "?"
    rest = entry if isinstance(entry, dict) else getattr(entry, "__dict__", {})
    extra = {k: v for k, v in rest.items() if k not in ("kind", "what", "wall", "mono")}
    return f"{stamp} {_get(entry, 'kind')} {_get(entry, 'what') or ''} " \
           f"{json.dumps(extra, default=str, sort_keys=True) if extra else ''}".rstrip()
