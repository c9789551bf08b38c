"""tests/harness/invariants.py on hand-built farm databases, phone logs, stream events and
health misses: each invariant holding and broken, no farm processes."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiohttp import web

from tests.harness import invariants as inv
from tests.harness.invariants import (FaultWindow, Tap, Violation, broadcast_tap, decode_broadcast,
                                      decode_tap, step_tap)

SCHEMA = Path(__file__).resolve().parents[2] / "actors/store/schema"
T0 = 1_700_000_000.0


def utc(t: float) -> str:
    """A time as the farm database stores it (actors/store/execution_records.utc_text)."""
    return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None).isoformat(
        sep=" ", timespec="microseconds")


def make_db(path: Path) -> Path:
    """The executions tables as the product's migrations make them (v1 + v2's plan)."""
    text = (SCHEMA / "v1.sql").read_text()
    conn = sqlite3.connect(path)
    for table in ("executions", "execution_steps"):
        conn.execute(re.search(rf"CREATE TABLE {table} \(.*?\n\);", text, re.S).group(0)
                     .replace("FOREIGN KEY", "-- FOREIGN KEY").replace(",\n    --", "\n    --"))
    conn.execute("ALTER TABLE executions ADD COLUMN plan TEXT")
    conn.commit()
    conn.close()
    return path


def add_execution(db: Path, key: str, serial: str, status: str, start: float,
                  end: float | None, *, steps: int = 0, reason: str | None = None,
                  plan: str | None = None) -> None:
    conn = sqlite3.connect(db)
    eid = conn.execute(
        "INSERT INTO executions (execution_key, serial, sequence, status, start_time,"
        " end_time, error_reason, plan) VALUES (?, ?, 'load', ?, ?, ?, ?, ?)"
        " RETURNING execution_id",
        (key, serial, status, utc(start), None if end is None else utc(end), reason,
         plan)).fetchone()[0]
    for i in range(steps):
        conn.execute("INSERT INTO execution_steps (execution_id, step_number, action_type,"
                     " path, status, start_time) VALUES (?, ?, 'tap', ?, 'success', ?)",
                     (eid, i, f"steps[{i}]", utc(start + 0.1 * i)))
    conn.commit()
    conn.close()


def tap_entry(ts: float, step: int, occurrence: int) -> dict:
    x, y = step_tap(step, occurrence)
    return {"ts": ts, "kind": "tap", "x": x, "y": y}


@dataclass
class Entry:
    kind: str
    what: str | None
    wall: float
    fields: dict


class FakeTimeline:
    """The Timeline shape invariants.py reads (tests/harness/faults.py `Timeline`)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, kind: str, what: str | None, *, wall: float | None = None, **fields) -> None:
        self.entries.append(Entry(kind, what, time.time() if wall is None else wall, fields))

    def around(self, wall: float, seconds: float) -> list[Entry]:
        return [e for e in self.entries if abs(e.wall - wall) <= seconds]


@dataclass
class FakeRack:
    name: str
    serials: list[str]
    logs: dict[str, list[dict]] = field(default_factory=dict)

    def vphone_log(self, serial: str) -> list[dict]:
        if serial not in self.logs:
            raise RuntimeError(f"device '{serial}' not found")
        return self.logs[serial]


class FakeFarm:
    def __init__(self, db: Path, racks: dict[str, FakeRack], phones: list[dict] | None) -> None:
        self.db, self.racks, self.phones = db, racks, phones
        self.base_url, self.token = "http://127.0.0.1:9", "t"
        self.answers: dict[str, float | None] = {}

    def db_path(self) -> Path:
        return self.db

    def get(self, path: str):
        assert path == "/api/phones"
        return (200, {"phones": self.phones}) if self.phones is not None else (0, None)

    def health(self) -> dict[str, float | None]:
        return dict(self.answers)


# --- the tap encoding --------------------------------------------------------------------
def test_step_and_broadcast_codes_round_trip_inside_the_screen_and_apart():
    for step in range(8):
        for occ in (0, 1, 999, 1000, 54_321, 99_999):
            x, y = step_tap(step, occ)
            assert 0 <= x < 1080 and 0 <= y < 2400
            assert decode_tap(x, y) == (step, occ) and decode_broadcast(x, y) is None
    for n in (0, 199, 200, 179_999):
        x, y = broadcast_tap(n)
        assert 0 <= x < 1080 and 0 <= y < 2400
        assert decode_broadcast(x, y) == n and decode_tap(x, y) is None
    assert decode_tap(432, 876) is None and decode_tap(100, 2000) is None
    with pytest.raises(ValueError, match="step_index 8"):
        step_tap(8, 0)
    with pytest.raises(ValueError, match="occurrence"):
        step_tap(0, 100_000)


# --- one execution per phone ----------------------------------------------------------------
def test_overlap_holds_for_back_to_back_runs_and_ignores_refused_dispatches(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 5, steps=2)
    add_execution(db, "b", "p1", "completed", T0 + 5, T0 + 9, steps=2)
    add_execution(db, "c", "p1", "locked", T0 + 6, None, reason="locked")  # never played
    add_execution(db, "d", "p2", "completed", T0 + 1, T0 + 8, steps=1)     # another phone
    assert inv.check_no_overlap(inv.read_executions(db), T0 + 100) == []


def test_overlap_found_and_an_open_execution_lasts_until_now(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "running", T0, None, steps=1)
    add_execution(db, "b", "p1", "completed", T0 + 50, T0 + 55, steps=2)
    found = inv.check_no_overlap(inv.read_executions(db), T0 + 100)
    assert [v.invariant for v in found] == ["one_execution_per_phone"]
    assert "execution b started" in found[0].message and "while a ran" in found[0].message
    assert [r["execution"] for r in found[0].records] == ["a", "b"]


def lock_event(seq: int, event: str, key: str | None, at: float, serial: str = "p1",
               node: str = "rack1", reason: str | None = None) -> dict:
    """A node_events row as the coordinator's event store holds it (data decoded)."""
    data: dict = {"at": at}
    if key is not None:
        data["execution_id"] = key
    if reason is not None:
        data["reason"] = reason
    return {"node": node, "seq": seq, "event": event, "serial": serial, "data": data}


def make_events_db(path: Path, events: list[dict]) -> Path:
    """node_events as actors/store/event_store.py makes and fills it (data: JSON bytes)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE node_events (node TEXT NOT NULL, seq INTEGER NOT NULL, event"
                 " TEXT NOT NULL, serial TEXT, data BLOB NOT NULL, received_at REAL NOT NULL,"
                 " PRIMARY KEY (node, seq))")
    conn.executemany("INSERT INTO node_events VALUES (?, ?, ?, ?, ?, ?)",
                     [(e["node"], e["seq"], e["event"], e["serial"],
                       json.dumps(e["data"]).encode(), e.get("received_at", e["data"]["at"] + 0.02))
                      for e in events])
    conn.commit()
    conn.close()
    return path


def test_overlap_only_in_the_records_is_a_note_when_the_node_handed_the_lock_on_in_order(tmp_path):
    # The unplug-storm case: b's record starts (coordinator, before sending it) 14 ms before
    # a's record ends (coordinator, applying a's execution_finished), but the node freed a's
    # lock before it gave b the phone: no overlap on the phone.
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 3.554, steps=5)
    add_execution(db, "b", "p1", "completed", T0 + 3.540, T0 + 5.07, steps=5)
    events = make_events_db(tmp_path / "coordinator.db", [
        lock_event(103, "lock_taken", "a", T0 + 0.004),
        lock_event(161, "lock_freed", "a", T0 + 3.527, reason="released"),
        lock_event(164, "lock_taken", "b", T0 + 3.546),
        lock_event(186, "lock_freed", "b", T0 + 5.06, reason="released")])
    executions = inv.read_executions(db)
    assert [v.invariant for v in inv.check_no_overlap(executions, T0 + 100)] == \
        ["one_execution_per_phone"]  # the records alone cannot tell
    notes: list[Violation] = []
    holdings = inv.read_lock_holdings(events)
    assert inv.check_no_overlap(executions, T0 + 100, holdings, notes) == []
    assert [n.invariant for n in notes] == ["records_overlap_only"]


def test_overlap_the_node_journaled_is_a_violation_and_a_node_restart_frees_the_lock(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 4, steps=3)
    add_execution(db, "b", "p1", "completed", T0 + 3, T0 + 6, steps=3)
    add_execution(db, "c", "p2", "failed", T0, T0 + 20, steps=1, reason="device_gone")
    add_execution(db, "d", "p2", "completed", T0 + 10, T0 + 12, steps=3)
    events = [
        lock_event(1, "lock_taken", "a", T0 + 0.01),
        lock_event(5, "lock_taken", "b", T0 + 3.1),   # while a held it: a product fault
        lock_event(6, "lock_freed", "a", T0 + 3.9, reason="released"),
        lock_event(9, "lock_freed", "b", T0 + 5.9, reason="released"),
        # c's node was killed: its lock died with the process; the restarted node's
        # phone_up says the phone has a fresh record, and d takes it legitimately.
        lock_event(2, "lock_taken", "c", T0 + 0.02, serial="p2"),
        lock_event(30, "phone_up", None, T0 + 9, serial="p2"),
        lock_event(31, "lock_taken", "d", T0 + 10.1, serial="p2"),
        lock_event(40, "lock_freed", "d", T0 + 11.9, serial="p2", reason="released")]
    holdings = inv.lock_holdings(events)
    assert holdings["c"][0].ended_by == "node restarted" and holdings["c"][0].freed == 30
    found = inv.check_no_overlap(inv.read_executions(db), T0 + 100, holdings, [])
    assert [v.invariant for v in found] == ["one_execution_per_phone"]
    assert "execution b took the lock" in found[0].message and "while a held it" in found[0].message
    assert [r.get("execution", r.get("key")) for r in found[0].records] == ["a", "b", "a", "b"]


def test_a_pair_without_lock_events_is_judged_by_the_records(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 4, steps=3)
    add_execution(db, "b", "p1", "completed", T0 + 3, T0 + 6, steps=3)
    holdings = inv.lock_holdings([lock_event(5, "lock_taken", "b", T0 + 3.1)])  # a's lost
    found = inv.check_no_overlap(inv.read_executions(db), T0 + 100, holdings, [])
    assert [v.invariant for v in found] == ["one_execution_per_phone"]
    assert "execution b started" in found[0].message


# --- steps once, and in the records --------------------------------------------------------
RACKS = {"rack1": ["p1", "p2"], "rack2": ["p3"]}


def taps(serial: str, *entries: dict) -> list[Tap]:
    return inv.taps_of(serial, list(entries))


def test_each_step_once_and_recorded_holds(tmp_path):
    db = make_db(tmp_path / "farm.db")
    # A fixed schedule sequence: the same codes in two executions, told apart by time.
    add_execution(db, "a", "p1", "completed", T0, T0 + 5, steps=2)
    add_execution(db, "b", "p1", "completed", T0 + 10, T0 + 15, steps=2)
    logged = taps("p1", tap_entry(T0 + 1, 0, 7), tap_entry(T0 + 2, 1, 7),
                  tap_entry(T0 + 11, 0, 7), tap_entry(T0 + 12, 1, 7),
                  {"ts": T0 + 3, "kind": "tap", "x": 432, "y": 876},  # not the load's
                  {"ts": T0 + 4, "kind": "swipe", "x1": 1, "y1": 1, "x2": 2, "y2": 2})
    logged += taps("p2", {"ts": T0 + 3, "kind": "tap", "x": broadcast_tap(5)[0],
                          "y": broadcast_tap(5)[1]})
    notes: list[Violation] = []
    assert inv.check_taps(logged, inv.read_executions(db), [], RACKS, notes) == []
    assert notes == []


def test_a_step_played_twice_is_a_violation(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 5, steps=2)
    logged = taps("p1", tap_entry(T0 + 1, 0, 7), tap_entry(T0 + 2, 0, 7), tap_entry(T0 + 3, 1, 7))
    found = inv.check_taps(logged, inv.read_executions(db), [], RACKS, [])
    assert [v.invariant for v in found] == ["step_played_once"]
    assert "step 0 (occurrence 7) of execution a" in found[0].message
    assert found[0].at_wall == T0 + 2


def test_a_broadcast_tap_played_twice_is_a_violation(tmp_path):
    x, y = broadcast_tap(42)
    logged = taps("p3", {"ts": T0, "kind": "tap", "x": x, "y": y},
                  {"ts": T0 + 1, "kind": "tap", "x": x, "y": y})
    found = inv.check_taps(logged, [], [], RACKS, [])
    assert [v.invariant for v in found] == ["step_played_once"]
    assert "broadcast tap 42" in found[0].message


def test_the_step_in_flight_at_a_node_kill_is_a_note_but_only_one_per_execution(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 30, steps=3)
    kill = FaultWindow("node_kill", "rack1", T0 + 2.5, T0 + 5)
    logged = taps("p1", tap_entry(T0 + 1, 0, 3), tap_entry(T0 + 2, 1, 3),
                  tap_entry(T0 + 8, 1, 3), tap_entry(T0 + 9, 2, 3))
    notes: list[Violation] = []
    assert inv.check_taps(logged, inv.read_executions(db), [kill], RACKS, notes) == []
    assert [n.invariant for n in notes] == ["replayed_at_kill"]
    # A second step replayed at the same kill is more than the at-least-once window.
    logged += taps("p1", tap_entry(T0 + 10, 0, 3))
    found = inv.check_taps(logged, inv.read_executions(db), [kill], RACKS, [])
    assert [v.invariant for v in found] == ["step_played_once"]
    # A kill of another rack excuses nothing here.
    other = FaultWindow("node_kill", "rack2", T0 + 2.5, T0 + 5)
    found = inv.check_taps(logged[:4], inv.read_executions(db), [other], RACKS, [])
    assert [v.invariant for v in found] == ["step_played_once"]


def test_a_logged_step_missing_from_the_records_is_a_violation(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 5, steps=1)   # only step 0 recorded
    logged = taps("p1", tap_entry(T0 + 1, 0, 1), tap_entry(T0 + 2, 1, 1),
                  tap_entry(T0 + 60, 0, 2))                          # outside every execution
    found = inv.check_taps(logged, inv.read_executions(db), [], RACKS, [])
    assert [v.invariant for v in found] == ["step_in_records", "step_in_records"]
    assert "step 1 (occurrence 1)" in found[0].message
    assert "step 0 (occurrence 2)" in found[1].message


# --- settled: ended properly, no stale locks ------------------------------------------------
def test_settled_holds_for_completed_failed_with_reason_locked_and_resumable(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 5, steps=2)
    add_execution(db, "b", "p2", "failed", T0, T0 + 5, steps=1, reason="screen_timeout")
    add_execution(db, "c", "p2", "locked", T0, None, reason="locked")
    add_execution(db, "d", "p3", "running", T0, None, steps=1, plan="sealed")
    phones = {"p1": {"state": "online"}, "p2": {"state": "online"},
              "p3": {"state": "offline"}}
    notes: list[Violation] = []
    assert inv.check_settled(inv.read_executions(db), phones, notes) == []
    assert [n.invariant for n in notes] == ["resumable"]


def test_settled_finds_stuck_running_and_failed_without_a_reason(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "running", T0, None, steps=1, plan="sealed")  # phone online
    add_execution(db, "b", "p2", "failed", T0, T0 + 1, steps=1)
    add_execution(db, "c", "p3", "pending", T0, None)                         # no plan
    found = inv.check_settled(inv.read_executions(db),
                              {"p1": {"state": "online"}, "p3": {"state": "offline"}}, [])
    assert [(v.invariant, v.records[0]["execution"]) for v in found] == [
        ("none_stuck", "a"), ("ended_with_reason", "b"), ("none_stuck", "c")]


def test_locks_held_only_by_active_executions(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "running", T0, None, steps=1)
    add_execution(db, "b", "p2", "completed", T0, T0 + 10, steps=1)
    add_execution(db, "c", "p3", "completed", T0, T0 + 98, steps=1)
    phones = {"p1": {"lock_holder": "a"}, "p2": {"lock_holder": None},
              "p3": {"lock_holder": "c"},             # its lock_freed may trail (grace)
              "p4": {"lock_holder": "phone-paused"}}  # a pause, not an execution
    assert inv.check_locks(inv.read_executions(db), phones, T0 + 100) == []
    phones["p2"]["lock_holder"] = "b"
    found = inv.check_locks(inv.read_executions(db), phones, T0 + 100)
    assert [v.invariant for v in found] == ["no_lock_after_end"]
    assert "phone p2 still locked by execution b" in found[0].message


def test_mid_run_a_lock_and_a_stream_finish_behind_the_stored_events_are_notes(tmp_path):
    # One 4 x 15 run's disk_full: an execution's records said completed, but its node's
    # events (the hub's lock view, the stream) were stuck behind a seq gap for 25 s.
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 50, steps=1)
    executions = inv.read_executions(db)
    phones = {"p1": {"lock_holder": "a"}}
    notes: list[Violation] = []
    assert inv.check_locks(executions, phones, T0 + 100, records_until=T0 + 40,
                           notes=notes) == []
    assert inv.check_stream(executions, stream_events(("execution_started", "a", None)), [],
                            T0 - 1, [], RACKS, notes, records_until=T0 + 40) == []
    assert [n.invariant for n in notes] == ["records_ahead", "records_ahead"]
    # Settled (records_until None), both are judged.
    assert [v.invariant for v in inv.check_locks(executions, phones, T0 + 100)] == [
        "no_lock_after_end"]
    assert [v.invariant for v in inv.check_stream(
        executions, stream_events(("execution_started", "a", None)), [], T0 - 1, [], RACKS,
        [])] == ["stream_shows_changes"]


# --- the status stream ------------------------------------------------------------------
def stream_events(*items: tuple[str, str, str | None]) -> list[dict]:
    return [{"event": ev, "execution_id": key, "status": status, "wall": T0}
            for ev, key, status in items]


def test_stream_showed_every_change_holds(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0 + 1, T0 + 5, steps=2)
    add_execution(db, "b", "p2", "failed", T0 + 1, T0 + 5, steps=1, reason="screen_timeout")
    add_execution(db, "c", "p3", "locked", T0 + 1, None, reason="locked")  # coordinator-made
    add_execution(db, "d", "p3", "completed", T0 - 50, T0 - 40, steps=1)   # before watching
    events = stream_events(("execution_started", "a", None),
                           ("execution_finished", "a", "completed"),
                           ("execution_started", "b", None),
                           ("execution_finished", "b", "failed"))
    notes: list[Violation] = []
    assert inv.check_stream(inv.read_executions(db), events, [(T0 - 1, T0)], T0, [], RACKS,
                            notes) == []
    assert notes == []


def test_stream_missing_or_disagreeing_is_a_violation_unless_the_watcher_was_away(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0 + 1, T0 + 5, steps=2)   # finish never shown
    add_execution(db, "b", "p2", "failed", T0 + 1, T0 + 6, steps=1, reason="x")
    add_execution(db, "c", "p3", "completed", T0 + 1, T0 + 21, steps=1)  # ended in a gap
    events = stream_events(("execution_started", "a", None),
                           ("execution_started", "b", None),
                           ("execution_finished", "b", "completed"),
                           ("execution_started", "c", None))
    notes: list[Violation] = []
    found = inv.check_stream(inv.read_executions(db), events, [(T0 - 1, T0), (T0 + 20, T0 + 22)],
                             T0, [], RACKS, notes)
    assert [(v.invariant, v.records[0]["execution"]) for v in found] == [
        ("stream_shows_changes", "a"), ("stream_shows_changes", "b")]
    assert "never shown" in found[0].message and "'completed'" in found[1].message
    assert [n.invariant for n in notes] == ["stream_gap"]


def test_stream_showing_finished_while_recorded_running_is_a_violation(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "running", T0 + 1, None, steps=1)
    events = stream_events(("execution_started", "a", None),
                           ("execution_finished", "a", "completed"))
    found = inv.check_stream(inv.read_executions(db), events, [], T0, [], RACKS, [])
    assert [v.invariant for v in found] == ["stream_shows_changes"]
    assert "recorded running" in found[0].message


# --- health --------------------------------------------------------------------------------
def test_health_misses_are_excused_only_while_that_process_was_killed_or_cut_off():
    windows = [FaultWindow("coordinator_kill", None, T0, T0 + 5),
               FaultWindow("partition", "rack1", T0 + 100, T0 + 130),
               FaultWindow("loss", "rack2", T0 + 200, T0 + 260)]
    excused = [{"name": "coordinator", "wall": T0 + 3, "took": None},
               {"name": "coordinator", "wall": T0 + 12, "took": None},  # restart grace
               {"name": "rack1", "wall": T0 + 110, "took": None}]
    notes: list[Violation] = []
    assert inv.check_health(excused, windows, RACKS, notes) == []
    broken = [{"name": "coordinator", "wall": T0 + 110, "took": 1.4},   # rack1's partition
              {"name": "node:rack2", "wall": T0 + 3, "took": None},    # the coordinator's kill
              {"name": "rack2", "wall": T0 + 210, "took": None}]       # during loss: a note
    found = inv.check_health(broken, windows, RACKS, notes)
    assert [v.records[0]["name"] for v in found] == ["coordinator", "node:rack2"]
    assert "took 1.40 s" in found[0].message
    assert [n.invariant for n in notes] == ["health_in_1s"]


def test_health_probe_records_slow_and_missing_answers():
    farm = FakeFarm(Path("/nonexistent"), {}, [])
    farm.answers = {"coordinator": 0.01, "rack1": None, "rack2": 1.5}
    timeline = FakeTimeline()
    probe = inv.HealthProbe(farm, timeline, interval_s=0.05).start()
    time.sleep(0.3)
    probe.stop()
    assert probe.samples >= 2
    assert {m["name"] for m in probe.misses} == {"rack1", "rack2"}
    assert all("load1" in m and "running" in m for m in probe.misses)  # overloaded or not
    assert {e.kind for e in timeline.entries} == {"health_miss"}


# --- the whole check and its report ----------------------------------------------------------
def test_check_and_report_on_a_fake_farm(tmp_path):
    db = make_db(tmp_path / "farm.db")
    now = time.time()
    add_execution(db, "a", "p1", "completed", now - 60, now - 50, steps=2)
    add_execution(db, "b", "p3", "running", now - 40, None, steps=1, plan="sealed")
    racks = {"rack1": FakeRack("rack1", ["p1", "p2"], {
                 "p1": [tap_entry(now - 59, 0, 1), tap_entry(now - 58, 1, 1),
                        tap_entry(now - 57, 1, 1)],
                 "p2": []}),
             "rack2": FakeRack("rack2", ["p3"], {"p3": [tap_entry(now - 39, 0, 2)]})}
    farm = FakeFarm(db, racks, [{"serial": "p1", "state": "online", "lock_holder": None},
                                {"serial": "p3", "state": "online", "lock_holder": "b"}])
    timeline = FakeTimeline()
    timeline.add("partition", "rack2", phase="start", wall=now - 59.5)
    timeline.add("partition", "rack2", phase="end", wall=now - 45)
    notes: list[Violation] = []
    found = inv.check(farm, timeline, settled=True, notes=notes)
    assert sorted(v.invariant for v in found) == ["none_stuck", "step_played_once"]
    assert {n.invariant for n in notes} == {"stream_shows_changes", "health_in_1s"}  # unchecked
    text = inv.report(found, timeline)
    assert "step_played_once: phone p1: step 1 (occurrence 1) of execution a" in text
    assert "partition rack2" in text and '"execution": "a"' in text
    # While faults still run, a running execution is no violation and an unreadable log a note.
    del racks["rack1"].logs["p2"]
    notes = []
    found = inv.check(farm, timeline, settled=False, notes=notes)
    assert [v.invariant for v in found] == ["step_played_once"]
    assert "phone_log_read" in {n.invariant for n in notes}


def test_check_judges_phone_overlaps_by_the_farms_node_events(tmp_path):
    db = make_db(tmp_path / "farm.db")
    now = time.time()
    add_execution(db, "a", "p1", "completed", now - 60, now - 50.0, steps=1)
    add_execution(db, "b", "p1", "completed", now - 50.02, now - 45, steps=1)
    events = make_events_db(tmp_path / "coordinator.db", [
        lock_event(1, "lock_taken", "a", now - 59.9),
        lock_event(2, "lock_freed", "a", now - 50.05, reason="released"),
        lock_event(3, "lock_taken", "b", now - 50.0),
        lock_event(4, "lock_freed", "b", now - 45.1, reason="released")])
    farm = FakeFarm(db, {"rack1": FakeRack("rack1", ["p1"], {"p1": []})},
                    [{"serial": "p1", "state": "online", "lock_holder": None}])
    farm.events_db_path = lambda: events
    notes: list[Violation] = []
    assert inv.check(farm, FakeTimeline(), settled=True, notes=notes) == []
    assert "records_overlap_only" in {n.invariant for n in notes}
    farm.events_db_path = lambda: tmp_path / "missing.db"  # unreadable: the records decide
    notes = []
    found = inv.check(farm, FakeTimeline(), settled=True, notes=notes)
    assert [v.invariant for v in found] == ["one_execution_per_phone"]
    assert "node_events_read" in {n.invariant for n in notes}


def test_fault_windows_pair_starts_and_ends_from_dict_or_object_entries():
    timeline = FakeTimeline()
    timeline.add("node_kill", "rack1", phase="start", wall=T0)
    timeline.add("health_miss", "rack1", wall=T0 + 1)
    timeline.add("node_kill", "rack1", phase="end", wall=T0 + 5)
    timeline.entries.append({"kind": "coordinator_kill", "what": None, "wall": T0 + 9,  # type: ignore[arg-type]
                             "fields": {"phase": "start"}})
    windows = inv.fault_windows(timeline)
    assert [(w.kind, w.target, w.start, w.end) for w in windows] == [
        ("node_kill", "rack1", T0, T0 + 5), ("coordinator_kill", None, T0 + 9, None)]


# --- the stream watcher against a real SSE endpoint -----------------------------------------
class SSEServer:
    """An aiohttp app in a thread serving /api/stream the way actors/control/stream.py does,
    so the watcher's socket reading and its reconnect are tried for real."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue | None = None
        self.runner: web.AppRunner | None = None
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == "Bearer t"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n: connected\n\n")
        while True:
            await response.write(await self.queue.get())

    async def _start(self) -> None:
        self.queue = asyncio.Queue()
        app = web.Application()
        app.router.add_get("/api/stream", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)

    def send(self, raw: bytes) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, raw)


def wait_for(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_stream_watcher_records_execution_events_and_reconnects():
    server = SSEServer()
    server.start()
    farm = FakeFarm(Path("/nonexistent"), {}, [])
    farm.base_url, farm.token = f"http://127.0.0.1:{server.port}", "t"
    watcher = inv.StreamWatcher(farm, FakeTimeline(), retry_s=0.05).start()
    try:
        assert watcher.wait_connected(5)
        server.send(b'event: execution_finished\ndata: {"event": "execution_finished", "ts": 1,'
                    b' "node": "rack1", "serial": "p1", "data": {"execution_id": "e1",'
                    b' "status": "completed"}}\n\n: heartbeat\n\nevent: screen_changed\n'
                    b'data: {"event": "screen_changed", "data": {}}\n\n')
        wait_for(lambda: watcher.snapshot()[0])
        events, gaps, started = watcher.snapshot()
        assert [(e["event"], e["execution_id"], e["status"], e["serial"]) for e in events] == [
            ("execution_finished", "e1", "completed", "p1")]
        assert len(gaps) == 1 and gaps[0][1] == started
        server.stop()                         # the coordinator goes away ...
        wait_for(lambda: not watcher.connected)
        server.start()                        # ... and comes back on its port
        wait_for(lambda: watcher.connected)
        server.send(b'event: execution_started\ndata: {"data": {"execution_id": "e2"}}\n\n')
        wait_for(lambda: len(watcher.snapshot()[0]) == 2)
        events, gaps, _ = watcher.snapshot()
        assert len(gaps) == 2 and all(b is not None and a <= b for a, b in gaps)
    finally:
        watcher.stop()
        server.stop()


def test_fault_windows_from_fault_entries_and_from_part_bs_timeline():
    timeline = FakeTimeline()
    timeline.add("fault", "kill rack2's node", phase="start", fault="node_kill", target="rack2",
                 index=1, wall=T0)
    timeline.add("fault", "kill rack2's node", phase="end", fault="node_kill", target="rack2",
                 index=1, wall=T0 + 4)
    assert [(w.kind, w.target, w.start, w.end) for w in inv.fault_windows(timeline)] == [
        ("node_kill", "rack2", T0, T0 + 4)]
    faults = pytest.importorskip("tests.harness.faults")
    real = faults.Timeline()
    real.add("fault", "partition rack1", phase="start", fault="partition", target="rack1",
             index=1)
    real.add("fault", "partition rack1", phase="end", fault="partition", target="rack1",
             index=1)
    [window] = inv.fault_windows(real)
    assert (window.kind, window.target) == ("partition", "rack1") and window.end >= window.start


def test_mid_run_the_newest_taps_are_not_yet_held_to_the_records(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "running", T0, None, steps=1)
    logged = taps("p1", tap_entry(T0 + 1, 0, 1), tap_entry(T0 + 20, 1, 1))  # step 1 unreported
    assert inv.check_taps(logged, inv.read_executions(db), [], RACKS, [],
                          records_until=T0 + 10) == []
    found = inv.check_taps(logged, inv.read_executions(db), [], RACKS, [])
    assert [v.invariant for v in found] == ["step_in_records"]
    # Nor to the duplicate check: a newer tap of a step whose events are not read yet would
    # be put on the execution whose step still shows open; the settled check judges it.
    again = taps("p1", tap_entry(T0 + 1, 0, 1), tap_entry(T0 + 15, 0, 1))
    assert inv.check_taps(again, inv.read_executions(db), [], RACKS, [],
                          records_until=T0 + 10) == []
    assert [v.invariant for v in inv.check_taps(again, inv.read_executions(db), [], RACKS,
                                                 [])] == ["step_played_once"]


# --- artifacts of a loaded 4 x 15 run, each excused while the real fault is still found ------
def test_a_dispatch_the_node_never_gave_the_lock_is_no_overlap_but_one_it_gave_is(tmp_path):
    # Mid-run: b created (pending, record open "until now") while a plays; the node will
    # refuse it 'locked'. No lock hold, no step: it has not touched the phone.
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "running", T0, None, steps=2)
    add_execution(db, "b", "p1", "pending", T0 + 3, None)
    events = [lock_event(1, "lock_taken", "a", T0 + 0.01)]
    executions = inv.read_executions(db)
    assert inv.check_no_overlap(executions, T0 + 4, inv.lock_holdings(events), [],
                                events_read=True) == []
    # Without node events the records still decide (as before).
    assert [v.invariant for v in inv.check_no_overlap(executions, T0 + 4)] == \
        ["one_execution_per_phone"]
    # The node gave b the lock while a held it: a product fault, still reported.
    events.append(lock_event(2, "lock_taken", "b", T0 + 3.1))
    found = inv.check_no_overlap(executions, T0 + 4, inv.lock_holdings(events), [],
                                 events_read=True)
    assert [v.invariant for v in found] == ["one_execution_per_phone"]
    assert "execution b took the lock" in found[0].message
    # b recorded a step but its lock events are lost: judged by the records.
    add_execution(db, "c", "p2", "running", T0, None, steps=1)
    add_execution(db, "d", "p2", "running", T0 + 2, None, steps=1)
    found = inv.check_no_overlap(inv.read_executions(db), T0 + 4,
                                 inv.lock_holdings(events[:1]), [], events_read=True)
    assert [v.records[1]["execution"] for v in found] == ["d"]


def step_event(seq: int, event: str, key: str, index: int, at: float, serial: str = "p1",
               node: str = "rack1", received_at: float | None = None) -> dict:
    ev = {"node": node, "seq": seq, "event": event, "serial": serial,
          "data": {"execution_id": key, "index": index, "path": f"steps[{index}]", "at": at}}
    if received_at is not None:
        ev["received_at"] = received_at
    return ev


def test_taps_of_one_fixed_sequence_in_two_executions_are_told_apart_by_the_nodes_steps(tmp_path):
    # A scheduled job (occurrence 0) refused 'locked' and retried: b plays occurrence 0 again
    # 0.5 s after a's record ended, inside a's ATTRIBUTION_SLACK_S.
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0, T0 + 6, steps=1)
    add_execution(db, "b", "p1", "completed", T0 + 6.2, T0 + 9, steps=1)
    logged = taps("p1", tap_entry(T0 + 1, 0, 0), tap_entry(T0 + 6.5, 0, 0))
    executions = inv.read_executions(db)
    assert [v.invariant for v in inv.check_taps(logged, executions, [], RACKS, [])] == \
        ["step_played_once"]  # the records' windows alone: the artifact
    events = [step_event(1, "step_started", "a", 0, T0 + 0.9),
              step_event(2, "step_finished", "a", 0, T0 + 1.2),
              step_event(3, "step_started", "b", 0, T0 + 6.4),
              step_event(4, "step_finished", "b", 0, T0 + 6.7)]
    spans = inv.step_spans(inv.read_node_events(make_events_db(tmp_path / "ev.db", events)))
    notes: list[Violation] = []
    assert inv.check_taps(logged, executions, [], RACKS, notes, spans=spans) == []
    assert notes == []
    # The same step played twice within b's step (the node retried a tap that had landed,
    # as under `vphone slow`): still a violation, saying so.
    twice = logged + taps("p1", tap_entry(T0 + 6.6, 0, 0))
    events[3]["data"]["attempts"] = 2
    found = inv.check_taps(twice, executions, [], RACKS, [], spans=inv.step_spans(events))
    assert [v.invariant for v in found] == ["step_played_once"]
    assert "of execution b" in found[0].message and "attempts=2" in found[0].message
    # The node played a step for an execution whose records lack it: not in the records.
    events += [step_event(5, "step_started", "b", 2, T0 + 7), step_event(6, "step_finished", "b", 2, T0 + 7.3)]
    spans = inv.step_spans(events)
    found = inv.check_taps(logged + taps("p1", tap_entry(T0 + 7.1, 2, 0)), executions, [],
                           RACKS, [], spans=spans)
    assert [v.invariant for v in found] == ["step_in_records"]
    assert "its node played it for execution b" in found[0].message
    # A tap no node step holds falls back to the records' windows, with a note.
    notes = []
    assert inv.check_taps(taps("p1", tap_entry(T0 + 3, 0, 0)), executions, [], RACKS, notes,
                          spans=spans) == []
    assert [n.invariant for n in notes] == ["tap_attributed_by_records"]
    # Two taps of one step that the records' windows put on a, one of them held by no node
    # span (its execution's step events not read yet): not proof, a note.
    notes = []
    pair = taps("p1", tap_entry(T0 + 1, 0, 0), tap_entry(T0 + 3, 0, 0))
    assert inv.check_taps(pair, executions, [], RACKS, notes, spans=spans) == []
    assert sorted(n.invariant for n in notes) == ["duplicate_attributed_by_records",
                                                  "tap_attributed_by_records"]


def test_a_clock_skewed_nodes_step_times_are_put_back_or_left_to_the_records(tmp_path):
    # rack1's node ran 300 s ahead during the fault: its 'at' is 300 s off, the
    # coordinator's received_at is not.
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0 + 10, T0 + 13, steps=1)
    add_execution(db, "b", "p1", "completed", T0 + 13.2, T0 + 16, steps=1)
    events = [step_event(1, "step_started", "a", 0, T0 + 310.9, received_at=T0 + 11),
              step_event(2, "step_finished", "a", 0, T0 + 311.2, received_at=T0 + 11.3),
              step_event(3, "step_started", "b", 0, T0 + 313.4, received_at=T0 + 13.5),
              step_event(4, "step_finished", "b", 0, T0 + 313.7, received_at=T0 + 13.8)]
    logged = taps("p1", tap_entry(T0 + 11, 0, 0), tap_entry(T0 + 13.5, 0, 0))
    timeline = FakeTimeline()
    timeline.add("fault", "clock_skew rack1 seconds=300 for 60s", wall=T0, phase="start",
                 fault="clock_skew", target="rack1", index=1)
    timeline.add("fault", "clock_skew rack1 seconds=300 for 60s", wall=T0 + 60, phase="end",
                 fault="clock_skew", target="rack1", index=1)
    windows = inv.fault_windows(timeline)
    skews = inv.clock_skews(timeline, windows)
    assert [(k.node, k.seconds) for k in skews] == [("rack1", 300.0)]
    spans = inv.step_spans(events, skews, T0 + 100)
    assert [round(s.start - T0, 1) for s in spans["p1"]] == [10.9, 13.4]
    notes: list[Violation] = []
    executions = inv.read_executions(db)
    assert inv.check_taps(logged, executions, windows, RACKS, notes, spans=spans) == []
    assert notes == []
    # A skew of unknown size: those events make no span, the records decide (b's tap lies
    # in a's slack there: the old artifact, reported rather than hidden).
    unknown = [inv.ClockSkew("rack1", T0, T0 + 60, None)]
    spans = inv.step_spans(events, unknown, T0 + 100)
    assert spans == {}
    found = inv.check_taps(logged, executions, windows, RACKS, notes, spans=spans)
    assert [v.invariant for v in found] == ["step_played_once"]


def test_a_finish_the_stream_showed_after_the_records_were_read_is_no_disagreement(tmp_path):
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "running", T0 + 1, None, steps=1)
    before = stream_events(("execution_started", "a", None))
    after = before + stream_events(("execution_finished", "a", "completed"))
    executions = inv.read_executions(db)
    assert inv.check_stream(executions, after, [], T0, [], RACKS, [], events_before=before) == []
    # Shown finished before the records were read, yet recorded running: a product fault.
    found = inv.check_stream(executions, after, [], T0, [], RACKS, [], events_before=after)
    assert [v.invariant for v in found] == ["stream_shows_changes"]
    assert "recorded running" in found[0].message


def test_health_clock_skew_restarts_and_an_overloaded_machine_are_notes_not_violations():
    windows = [FaultWindow("clock_skew", "rack1", T0, T0 + 60),
               FaultWindow("partition", "rack2", T0 + 100, None)]  # still on
    notes: list[Violation] = []
    excused = [{"name": "rack1", "wall": T0 + 10, "took": None, "load1": 1.0},   # restart
               {"name": "rack1", "wall": T0 + 65, "took": None, "load1": 1.0},   # restart
               {"name": "rack2", "wall": T0 + 150, "took": None, "load1": 1.0}]  # open window
    assert inv.check_health(excused, windows, RACKS, notes, cpus=2) == []
    assert notes == []
    misses = [{"name": "rack1", "wall": T0 + 30, "took": None, "load1": 1.0},     # skewed, up
              {"name": "coordinator", "wall": T0 + 30, "took": 1.3, "load1": 3.9},
              {"name": "coordinator", "wall": T0 + 31, "took": None, "load1": 23.4}]
    found = inv.check_health(misses, windows, RACKS, notes, cpus=2)
    assert [(v.records[0]["name"], v.at_wall) for v in found] == [("rack1", T0 + 30),
                                                                  ("coordinator", T0 + 30)]
    assert [n.invariant for n in notes] == ["health_in_1s_overloaded"]
    assert "23.4 on 2 CPU(s)" in notes[0].message
    # The farm's own start: the 1-minute average still low, 9 threads runnable at the miss.
    notes = []
    burst = [{"name": "rack1", "wall": T0 - 30, "took": None, "load1": 0.5, "running": 9},
             {"name": "rack4", "wall": T0 - 30, "took": None, "load1": 0.5, "running": 2}]
    found = inv.check_health(burst, windows, RACKS, notes, cpus=2)
    assert [v.records[0]["name"] for v in found] == ["rack4"]
    assert [n.invariant for n in notes] == ["health_in_1s_overloaded"]
    assert "9 threads runnable on 2 CPU(s)" in notes[0].message


def test_check_judges_a_health_miss_only_against_windows_read_after_it(tmp_path):
    # A partition that begins while the check reads logs: its misses must wait for a check
    # that knows its window (they were violations when the misses were read last).
    db = make_db(tmp_path / "farm.db")
    now = time.time()
    farm = FakeFarm(db, {"rack1": FakeRack("rack1", ["p1"], {"p1": []}),
                         "rack2": FakeRack("rack2", ["p3"], {"p3": []})},
                    [{"serial": "p1", "state": "online", "lock_holder": None}])
    timeline = FakeTimeline()

    class Probe:
        misses: list[dict] = []
        errors: list[str] = []

    probe = Probe()

    def log_during_check(serial: str) -> list[dict]:
        timeline.add("fault", "partition rack2", wall=now, phase="start", fault="partition",
                     target="rack2", index=1)
        probe.misses.append({"name": "rack2", "wall": now + 0.5, "took": None, "load1": 0.1})
        return []

    farm.racks["rack1"].vphone_log = log_during_check
    notes: list[Violation] = []
    assert inv.check(farm, timeline, settled=False, health=probe, notes=notes) == []
    assert inv.check(farm, timeline, settled=False, health=probe, notes=notes) == []  # excused


def test_mid_run_a_start_behind_the_stored_events_is_a_note(tmp_path):
    # The next 4 x 15 run's disk_full: an execution began and recorded its first step while
    # the event store refused its node's batches, so no execution_started had reached the
    # stream at the mid-run check; by the settled check it had.
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "running", T0 + 50, None, steps=1)
    executions = inv.read_executions(db)
    notes: list[Violation] = []
    assert inv.check_stream(executions, [], [], T0 - 1, [], RACKS, notes,
                            records_until=T0 + 40) == []
    assert [n.invariant for n in notes] == ["records_ahead"]
    assert "started at" in notes[0].message
    # A start older than the newest stored event is still judged mid-run, and settled.
    assert [v.invariant for v in inv.check_stream(executions, [], [], T0 - 1, [], RACKS, [],
                                                  records_until=T0 + 60)] == [
        "stream_shows_changes"]
    assert [v.invariant for v in inv.check_stream(executions, [], [], T0 - 1, [], RACKS,
                                                  [])] == ["stream_shows_changes"]


def test_mid_run_an_overlap_whose_lock_events_are_not_stored_yet_is_a_note(tmp_path):
    # The 4 x 15 bench's disk_full after a coordinator_kill: b's record began 2.6 s before
    # a's record ended, and neither's lock events were stored yet (the event store refused
    # them), so the journal could not judge the pair at the mid-run check; settled it could.
    db = make_db(tmp_path / "farm.db")
    add_execution(db, "a", "p1", "completed", T0 + 41, T0 + 51, steps=5)
    add_execution(db, "b", "p1", "running", T0 + 48.5, None, steps=1)
    executions = inv.read_executions(db)
    holdings = inv.read_lock_holdings(make_events_db(tmp_path / "coordinator.db", [
        lock_event(1, "lock_taken", "x", T0 + 1)]))
    notes: list[Violation] = []
    assert inv.check_no_overlap(executions, T0 + 60, holdings, notes, events_read=True,
                                records_until=T0 + 40) == []
    assert [n.invariant for n in notes] == ["records_ahead"]
    # A start before the newest stored event, or the settled check, is judged by the records.
    for until in (T0 + 50, None):
        assert [v.invariant for v in inv.check_no_overlap(
            executions, T0 + 60, holdings, [], events_read=True, records_until=until)] == [
            "one_execution_per_phone"]
