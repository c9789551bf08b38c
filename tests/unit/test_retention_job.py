"""The coordinator's daily retention job (actors.store.retention.RetentionJob): one run on a tmp data
folder, the unknown-screens queue forgetting what the run deleted, the farm database's rows on
each engine (``target``), and the daily loop driven by a fake clock and a fake sleep (nothing
really waits)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pytest

from actors.coordinator.main import parse_args, retention_job
from actors.store.db_target import DbTarget, db_from_env
from actors.store.event_store import EventStore
from actors.store.farm_db import FarmDB, utc_text
from actors.store.pg import connect_sync
from actors.store.retention import RetentionJob, RetentionPolicy
from actors.coordinator.unknown_screens import UnknownScreenQueue
from protocol.errors import ValidationError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
DAY = 86400.0


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    frame = np.full((240, 108, 3), 200, np.uint8)
    frame[40:120, 10:90] = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    return cv2.imencode(".png", frame)[1].tobytes()


def age(path, seconds: float) -> None:
    when = NOW.timestamp() - seconds
    os.utime(path, (when, when))


def put(path, seconds: float, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(seed))
    age(path, seconds)
    return path


def test_run_once_compresses_deletes_and_the_queue_forgets(tmp_path) -> None:
    fresh = put(tmp_path / "executions/e1/steps[0].png", 3600)
    day_old = put(tmp_path / "executions/e1/steps[1].png", 2 * DAY)
    month_old = put(tmp_path / "executions/e2/steps[0].png", 31 * DAY)
    queue = UnknownScreenQueue(tmp_path / "unknown-screens")
    queue.add("n1-1", png(1), {"serial": "p1", "at": 1.0})
    other = cv2.imencode(".png", np.zeros((240, 108, 3), np.uint8))[1].tobytes()
    assert queue.add("n1-2", other, {"serial": "p2", "at": 2.0})["id"] == "n1-2"
    for path in (tmp_path / "unknown-screens").glob("n1-1.*"):
        age(path, 61 * DAY)

    job = RetentionJob(tmp_path, RetentionPolicy(compress_format="webp"), unknown=queue)
    done = job.run_once(NOW)
    assert (done.compressed, done.deleted, done.errors) == (1, 2, [])
    assert done.unknown_deleted == ["n1-1"]
    assert fresh.exists() and not day_old.exists() and not month_old.exists()
    assert cv2.imdecode(np.frombuffer(day_old.with_suffix(".webp").read_bytes(), np.uint8),
                        cv2.IMREAD_COLOR) is not None
    assert not list((tmp_path / "unknown-screens").glob("n1-1.*"))
    # The running queue forgot the deleted entry: not listed, no image, and the same screen
    # seen again is a new entry with its own files (not a count on a ghost).
    assert [e["id"] for e in queue.entries()] == ["n1-2"]
    with pytest.raises(Exception, match="no such entry"):
        queue.image("n1-1")
    again = queue.add("n1-9", png(1), {"serial": "p3", "at": 9.0})
    assert again["id"] == "n1-9" and again["seen"] == 1
    assert (tmp_path / "unknown-screens/n1-9.png").exists()
    # A second run at the same instant has nothing left to do.
    assert job.run_once(NOW).summary().startswith("compressed 0, deleted 0")


def connect(target: DbTarget, path) -> contextlib.closing:
    """A connection to the farm database of ``target`` (both engines take ``?``)."""
    if target.is_postgresql:
        conn = connect_sync(target.url, target.password)
        conn.execute("SELECT set_config('phonefarm.clients', '*', false)")  # every client's rows
        return contextlib.closing(conn)
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


def test_run_once_prunes_the_farm_database_of_its_target(tmp_path, engine) -> None:
    # The coordinator passes its --db target: the data folder's SQLite files, or PostgreSQL,
    # where the node events are in the farm's database too.
    target = db_from_env() if engine == "postgresql" else DbTarget("sqlite")
    farm, events = tmp_path / "farm.sqlite3", tmp_path / "coordinator.sqlite3"

    async def seed() -> None:
        await (await FarmDB.open(farm, target=target)).close()
        store = await EventStore(events, target).open()
        await store.add("rack1", 1, "step_ended", "p1", {}, NOW.timestamp() - 40 * DAY)
        await store.add("rack1", 2, "step_ended", "p1", {}, NOW.timestamp() - DAY)
        await store.close()

    asyncio.run(seed())
    with connect(target, farm) as conn:
        for key, days in (("old", 40), ("new", 2)):
            end = utc_text(NOW - timedelta(days=days))
            execution_id = conn.execute(
                "INSERT INTO executions (execution_key, status, start_time, end_time)"
                " VALUES (?, 'failed', ?, ?) RETURNING execution_id", (key, end, end)).fetchone()[0]
            conn.execute("INSERT INTO execution_steps (execution_id, step_number, status,"
                         " start_time, end_time, path, screenshot)"
                         " VALUES (?, 0, 'failed', ?, ?, '0', ?)",
                         (execution_id, end, end, f"data/executions/{key}/steps[0].png"))
    put(tmp_path / "executions/new/steps[0].png", 2 * DAY)

    done = RetentionJob(tmp_path, RetentionPolicy(), target=target).run_once(NOW)
    assert done.errors == [] and done.compressed == 1 and done.step_refs_updated == 1
    assert done.rows_deleted == 2  # the old step row and the old event
    with connect(target, farm) as conn:
        assert [tuple(r) for r in conn.execute(
            "SELECT e.execution_key, s.screenshot FROM execution_steps s"
            " JOIN executions e USING (execution_id) ORDER BY 1")] == [
            ("new", "data/executions/new/steps[0].jpg")]
    with connect(target, events) as conn:
        assert [tuple(r) for r in conn.execute("SELECT node, seq FROM node_events")] == [
            ("rack1", 2)]
    assert target.is_postgresql != farm.exists()


def test_tables_missing_from_the_database_are_skipped(pg_cluster, tmp_path) -> None:
    # An empty PostgreSQL database (no farm tables, no node_events): nothing to plan, no error.
    target = pg_cluster.new_database(migrated=False)
    done = RetentionJob(tmp_path, target=target).run_once(NOW)
    assert (done.errors, done.rows_deleted) == ([], 0)


def test_forget_returns_how_many_were_known(tmp_path) -> None:
    queue = UnknownScreenQueue(tmp_path)
    queue.add("a-1", png(1), {"at": 1.0})
    assert queue.forget(["a-1", "zz"]) == 1 and queue.entries() == []


class Stop(Exception):
    pass


class FakeTime:
    """A clock that only moves when the loop sleeps."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


class RecordingJob(RetentionJob):
    """Records each run's instant; ``fail_first`` makes the first run raise."""

    def __init__(self, *args, fail_first: bool = False, **kw) -> None:
        super().__init__(*args, **kw)
        self.ran: list[datetime] = []
        self.fail_first = fail_first

    def run_once(self, now: datetime):
        self.ran.append(now)
        if self.fail_first and len(self.ran) == 1:
            raise OSError("disk on fire")
        return super().run_once(now)


async def test_loop_waits_for_run_at_each_day_without_really_sleeping(tmp_path) -> None:
    fake = FakeTime(NOW)
    job = RecordingJob(tmp_path, RetentionPolicy(run_at="03:30"))

    async def sleep(seconds: float) -> None:
        if len(job.ran) >= 3:
            raise Stop
        await fake.sleep(seconds)

    with pytest.raises(Stop):
        await job.loop(fake.clock, sleep)
    day1 = datetime(2026, 11, 26, 3, 30, tzinfo=timezone.utc)
    assert job.ran == [day1, day1 + timedelta(days=1), day1 + timedelta(days=2)]
    # Slept in slices no longer than MAX_SLEEP_S, exactly up to the run time.
    assert max(fake.sleeps) <= RetentionJob.MAX_SLEEP_S
    assert sum(fake.sleeps) == pytest.approx((job.ran[-1] - NOW).total_seconds())


async def test_a_failing_run_is_logged_and_the_next_day_still_runs(tmp_path, caplog) -> None:
    fake = FakeTime(NOW)
    job = RecordingJob(tmp_path, RetentionPolicy(run_at="12:00"), fail_first=True)

    async def sleep(seconds: float) -> None:
        if len(job.ran) >= 2:
            raise Stop
        await fake.sleep(seconds)

    with pytest.raises(Stop):
        await job.loop(fake.clock, sleep)
    # 12:00 is now, so the first run is tomorrow's (strictly after now), then the day after.
    assert job.ran == [NOW + timedelta(days=1), NOW + timedelta(days=2)]
    assert "retention run failed" in caplog.text and "disk on fire" in caplog.text


async def test_a_clock_that_jumps_ahead_runs_at_once(tmp_path) -> None:
    fake = FakeTime(NOW)
    job = RecordingJob(tmp_path, RetentionPolicy(run_at="03:30"))

    async def sleep(seconds: float) -> None:
        if job.ran:
            raise Stop
        fake.now += timedelta(days=1)  # e.g. the machine was suspended through the night

    with pytest.raises(Stop):
        await job.loop(fake.clock, sleep)
    assert job.ran == [NOW + timedelta(days=1)]


def test_coordinator_flags(tmp_path, monkeypatch) -> None:
    for key in list(os.environ):
        if key.startswith("PHONEFARM_RETENTION"):
            monkeypatch.delenv(key)
    assert retention_job(parse_args(["--retention", "off"]), tmp_path, None) is None
    default = retention_job(parse_args([]), tmp_path, None)
    assert default.policy == RetentionPolicy() and default.data_dir == tmp_path
    config = tmp_path / "retention.toml"
    config.write_text('[retention]\nrun_at = "02:00"\nerror_screenshots = "10d"\n')
    monkeypatch.setenv("PHONEFARM_RETENTION_CONFIG", str(config))
    monkeypatch.setenv("PHONEFARM_RETENTION_RUN_AT", "04:15")
    queue = UnknownScreenQueue(tmp_path / "unknown-screens")
    job = retention_job(parse_args([]), tmp_path, queue)
    assert job.policy.run_at == "04:15" and job.policy.error_screenshots == timedelta(days=10)
    assert job.unknown is queue
    monkeypatch.setenv("PHONEFARM_RETENTION_RUN_AT", "25:00")
    with pytest.raises(ValidationError, match="run_at"):
        retention_job(parse_args(["--retention-config", str(config)]), tmp_path, None)
