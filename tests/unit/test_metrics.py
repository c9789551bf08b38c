"""The metrics' collectors and labels (issue 19.1) without processes: CoordinatorMetrics
fed the events a hub emits and reading a hub's rows at scrape time, NodeMetrics fed what
phone actors publish, bounded label sets, a node's health report and its check, the
listen-address rule, and SingleWriter's timing hooks on a real SQLite file."""

from __future__ import annotations

import time
from collections import Counter as Tally
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.metrics.coordinator import CoordinatorMetrics, metrics_listen_address, phone_state
from actors.metrics.health import FIELDS, HealthProbe, health_row
from actors.metrics.labels import OTHER, BoundedLabel, LastSeen
from actors.metrics.node import NodeMetrics
from actors.metrics.serve import parse_listen, render
from actors.node.device.adb_server import AdbServer, free_port
from actors.process import StartupError
from actors.store.db_writer import SingleWriter


def samples(registry) -> dict[tuple[str, tuple], float]:
    """Every sample of a render, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(render(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(registry, name: str, **labels) -> float:
    return samples(registry).get((name, tuple(sorted(labels.items()))), 0.0)


class FakeHub:
    """What the collectors read of a Hub: its phone views, node rows, scheduler, link."""

    def __init__(self) -> None:
        self.rows = [
            {"serial": "s1", "node": "rack1", "client": "Acme", "state": "online",
             "lock_holder": "e1"},
            {"serial": "s2", "node": "rack1", "client": "Acme", "state": "online",
             "lock_holder": None},
            {"serial": "s3", "node": "rack1", "client": None, "state": "paused"},
            {"serial": "s4", "node": "rack2", "client": "Zeta", "state": "offline"}]
        health = {"cpu_pct": 12.5, "mem_used": 1000, "mem_total": 4000, "disk_used": 10,
                  "disk_total": 100, "adb_ok": True, "adb_rtt_ms": 2.0,
                  "at": "2026-12-07T00:00:00Z"}
        self.node_list = [{"name": "rack1", "state": "up", "last_heartbeat": time.time(),
                           "health": health},
                          {"name": "rack2", "state": "down", "last_heartbeat": time.time() - 60,
                           "health": None}]
        jobs = {"j1": SimpleNamespace(status="queued"), "j2": SimpleNamespace(status="running"),
                "j3": SimpleNamespace(status="queued")}
        state = SimpleNamespace(jobs=jobs)
        self.schedules = SimpleNamespace(scheduler=SimpleNamespace(state=state))
        self.link = SimpleNamespace(counts=Tally(command_resends=3, event_resend_requests=1))
        self.metrics = None

    def phones(self) -> list[dict]:
        return self.rows

    def nodes(self) -> list[dict]:
        return self.node_list


def emitted(event: str, data: dict, node: str | None = "rack1", serial: str | None = "s1",
            lag_s: float = 0.2) -> dict:
    now = time.time()
    return {"event": event, "ts": now, "node": node, "serial": serial,
            "data": {"at": now - lag_s, **data}}


def test_coordinator_series_move_with_the_events_and_the_hub() -> None:
    hub = FakeHub()
    m = CoordinatorMetrics(hub)
    for item in (
            emitted("action_result", {"action": "tap", "status": "ok", "ms": 12.0}),
            emitted("action_result", {"action": "tap", "status": "ok", "ms": 30.0}),
            emitted("action_result", {"action": "screenshot", "status": "ok"}),
            emitted("execution_started", {"execution_id": "e1", "sequence": "login"}),
            emitted("step_finished", {"status": "failed", "reason": "screen_mismatch"}),
            emitted("step_finished", {"status": "ok"}),
            emitted("execution_finished", {"execution_id": "e1", "status": "failed"}),
            emitted("execution_finished", {"execution_id": "e-unseen", "status": "completed"}),
            emitted("recovery_started", {}, node=None),
            emitted("recovery_failed", {"reason": "no_resume_point"}, node=None),
            emitted("recovery_started", {}, node=None),
            emitted("recovery_succeeded", {}, node=None)):
        m.observe(item)
    m.dispatched(1.5)
    r = m.registry
    assert value(r, "farm_actions_total", type="tap", status="ok") == 2
    assert value(r, "farm_action_seconds_count", type="tap") == 2
    assert value(r, "farm_action_seconds_sum", type="tap") == pytest.approx(0.042)
    assert value(r, "farm_action_seconds_count", type="screenshot") == 0  # no ms: not timed
    assert value(r, "farm_executions_started_total", sequence="login") == 1
    assert value(r, "farm_executions_finished_total", sequence="login", status="failed") == 1
    assert value(r, "farm_executions_finished_total", sequence="unknown",
                 status="completed") == 1
    assert value(r, "farm_step_failures_total", reason="screen_mismatch") == 1
    assert value(r, "farm_recovery_attempts_total") == 2
    assert value(r, "farm_recovery_outcomes_total", outcome="failed",
                 reason="no_resume_point") == 1
    assert value(r, "farm_recovery_outcomes_total", outcome="succeeded", reason="") == 1
    # Node events carry when they were published: lag measured (coordinator's own: not).
    assert value(r, "farm_event_link_lag_seconds_count", node="rack1") == 8
    assert 0.15 < value(r, "farm_event_link_lag_seconds_sum", node="rack1") / 8 < 1.0
    assert value(r, "farm_scheduler_dispatch_delay_seconds_count") == 1
    # Read from the hub when scraped.
    assert value(r, "farm_phones", node="rack1", client="Acme", state="busy") == 1
    assert value(r, "farm_phones", node="rack1", client="Acme", state="idle") == 1
    assert value(r, "farm_phones", node="rack1", client="", state="paused") == 1
    assert value(r, "farm_phones", node="rack2", client="Zeta", state="offline") == 1
    assert value(r, "farm_phones", node="rack2", client="Zeta", state="busy") == 0
    assert value(r, "farm_node_up", node="rack1") == 1
    assert value(r, "farm_node_up", node="rack2") == 0
    assert value(r, "farm_node_last_event_age_seconds", node="rack2") >= 59
    assert value(r, "farm_node_cpu_percent", node="rack1") == 12.5
    assert value(r, "farm_node_adb_rtt_seconds", node="rack1") == pytest.approx(0.002)
    assert ("farm_node_cpu_percent", (("node", "rack2"),)) not in samples(r)  # no report yet
    assert value(r, "farm_scheduler_queue_depth") == 2
    assert value(r, "farm_link_command_resends_total") == 3
    assert value(r, "farm_link_event_resend_requests_total") == 1
    # The hub moved on: the next scrape says so.
    hub.rows[1]["state"] = "offline"
    assert value(r, "farm_phones", node="rack1", client="Acme", state="idle") == 0


def test_no_serial_label_unless_per_phone() -> None:
    hub = FakeHub()
    plain, per_phone = CoordinatorMetrics(hub), CoordinatorMetrics(hub, per_phone=True)
    for m in (plain, per_phone):
        m.observe(emitted("action_result", {"action": "tap", "status": "ok", "ms": 5}))
    assert not any(dict(labels).get("serial") for _, labels in samples(plain.registry))
    got = samples(per_phone.registry)
    assert got[("farm_phone_state", (("client", "Acme"), ("node", "rack1"), ("serial", "s1"),
                                     ("state", "busy")))] == 1
    assert got[("farm_phone_actions_total", (("serial", "s1"), ("type", "tap")))] == 1


def test_label_values_are_bounded() -> None:
    label = BoundedLabel(3)
    assert [label(v) for v in ("a", "b", None, "c", "a", "")] == \
        ["a", "b", "unknown", OTHER, "a", "unknown"]
    m = CoordinatorMetrics(FakeHub())
    for n in range(600):  # inline sequences with a name each
        m.observe(emitted("execution_started", {"execution_id": f"e{n}", "sequence": f"s{n}"}))
    sequences = {dict(labels)["sequence"] for name, labels in samples(m.registry)
                 if name == "farm_executions_started_total"}
    assert len(sequences) == 501 and OTHER in sequences
    seen = LastSeen(limit=2)
    for key in ("x", "y", "z"):
        seen.put(key, key.upper())
    assert (seen.get("x"), seen.get("z")) == ("unknown", "Z")


def test_phone_state_words() -> None:
    assert phone_state({"state": "online", "lock_holder": "e"}) == "busy"
    assert phone_state({"state": "online"}) == "idle"
    assert phone_state({"state": "failed"}) == "failed"
    assert phone_state({"state": "something new"}) == "offline"


def test_node_metrics_count_frames_actions_and_read_the_node() -> None:
    directory = SimpleNamespace(views=lambda: [
        {"serial": "s1", "state": "online", "lock_holder": "e1"},
        {"serial": "s2", "state": "online", "lock_holder": None},
        {"serial": "s3", "state": "paused", "lock_holder": None}])
    link = SimpleNamespace(connected=True, journal=SimpleNamespace(last_seq=10, acked_upto=7),
                           counts=Tally(event_rewinds=2), commands_executed=5)
    node = SimpleNamespace(directory=directory, playbacks={"e1": None}, link=link)
    m = NodeMetrics(node)
    m.observe("thumbnail", "s1", {"jpeg": b"x" * 100, "width": 10, "height": 20})
    m.observe("thumbnail", "s2", {"jpeg": b"x" * 50, "width": 10, "height": 20})
    m.observe("action_result", "s1", {"action": "tap", "status": "ok", "ms": 8.0})
    m.observe("screen_changed", "s1", {"screen": "a/b"})
    r = m.registry
    assert value(r, "farm_node_capture_frames_total") == 2
    assert value(r, "farm_node_capture_bytes_total") == 2 * 10 * 20 * 4
    assert value(r, "farm_node_thumbnail_bytes_total") == 150
    assert value(r, "farm_node_actions_total", type="tap") == 1
    assert value(r, "farm_node_action_seconds_count", type="tap") == 1
    assert value(r, "farm_node_phones", state="busy") == 1
    assert value(r, "farm_node_phones", state="idle") == 1
    assert value(r, "farm_node_phones", state="paused") == 1
    assert value(r, "farm_node_events_unacked") == 3
    assert value(r, "farm_node_event_resends_total") == 2
    assert value(r, "farm_node_executions_playing") == 1
    assert ("farm_node_cpu_percent", ()) not in samples(r)
    m.health({"cpu_pct": 5.0, "mem_used": 1, "mem_total": 2, "disk_used": 3, "disk_total": 4,
              "adb_ok": False, "adb_rtt_ms": None, "at": "x"})
    assert value(r, "farm_node_cpu_percent") == 5.0 and value(r, "farm_node_adb_up") == 0
    assert not any(dict(labels).get("serial") for _, labels in samples(r))


def test_health_probe_and_its_check(tmp_path: Path) -> None:
    # A port nobody listens on: the adb server does not answer, the rest is measured.
    report = HealthProbe(tmp_path, AdbServer(port=free_port())).measure()
    assert tuple(report) == FIELDS
    assert report["adb_ok"] is False and report["adb_rtt_ms"] is None
    assert 0 < report["mem_used"] <= report["mem_total"]
    assert 0 < report["disk_used"] <= report["disk_total"]
    assert health_row(report) == report
    assert health_row({**report, "extra": 1}) == report  # only the contract's fields kept
    for bad in ({**report, "cpu_pct": "high"}, {**report, "adb_ok": 1},
                {**report, "mem_used": -1}, {**report, "cpu_pct": float("nan")},
                {k: v for k, v in report.items() if k != "at"}, "not a dict"):
        assert health_row(bad) is None


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9470", "--metrics", loopback_only=True) == ("127.0.0.1", 9470)
    assert parse_listen("[::1]:9470", "--metrics", loopback_only=True) == ("::1", 9470)
    assert parse_listen("0.0.0.0:9471", "--metrics") == ("0.0.0.0", 9471)
    assert parse_listen("rack-1.lan:9471", "--metrics") == ("rack-1.lan", 9471)
    for bad in ("9470", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":9470"):
        with pytest.raises(ValueError, match="--metrics"):
            parse_listen(bad, "--metrics")
    assert metrics_listen_address(None) is None
    with pytest.raises(StartupError, match="loopback"):
        metrics_listen_address("0.0.0.0:9470")
    with pytest.raises(StartupError, match="loopback"):
        metrics_listen_address("10.1.2.3:9470")


async def test_single_writer_times_each_write_and_each_batch(tmp_path: Path) -> None:
    writer = await SingleWriter(str(tmp_path / "w.sqlite3")).start()
    writes, commits = [], []
    writer.on_write, writer.on_commit = writes.append, commits.append
    try:
        await writer.run(lambda c: c.execute("CREATE TABLE t (x)"))
        for n in range(3):
            await writer.run(lambda c, n=n: c.execute("INSERT INTO t VALUES (?)", (n,)))
        with pytest.raises(Exception):
            await writer.run(lambda c: c.execute("INSERT INTO nope VALUES (1)"))
    finally:
        await writer.close()
    assert len(writes) == 5 and all(s >= 0 for s in writes)  # a failed write is timed too
    assert 1 <= len(commits) <= 5


def test_phones_from_the_hub_rows_as_its_views_show_them() -> None:
    """A real Hub's rows: the coordinator's pause wins over online, the client comes from
    the phone's owner (the same words `Hub.phones` would give, without building views)."""
    hub = FakeHub()
    hub.phone_rows = {
        "a": {"serial": "a", "node": "n1", "state": "online", "lock_holder": None},
        "b": {"serial": "b", "node": "n1", "state": "online", "lock_holder": "e9"},
        "c": {"serial": "c", "node": "n1", "state": "online", "lock_holder": None},
        "d": {"serial": "d", "node": "n2", "state": "offline", "lock_holder": None}}
    hub.pauses = SimpleNamespace(of=lambda s: {"reason": "recovery failed"} if s == "c" else None)
    hub.owners = SimpleNamespace(client_name=lambda s: "Acme" if s in "ab" else None)
    r = CoordinatorMetrics(hub).registry
    assert value(r, "farm_phones", node="n1", client="Acme", state="idle") == 1
    assert value(r, "farm_phones", node="n1", client="Acme", state="busy") == 1
    assert value(r, "farm_phones", node="n1", client="", state="paused") == 1
    assert value(r, "farm_phones", node="n2", client="", state="offline") == 1
