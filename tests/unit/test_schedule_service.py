"""actors.coordinator.scheduling.schedules.ScheduleService on a fake clock, a fake hub directory and fake runs over a
real (temporary) farm database: dispatch as one execution per job, job end seen from the
execution record, waiting for offline phones, state and events saved and loaded back."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Callable

import msgspec
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from actors.control.app import make_app
from actors.control.openapi import openapi_document
from actors.coordinator.loop_lag import LoopLagProbe
from actors.store.farm_db import FarmDB
from actors.coordinator.scheduling.scheduler import MAX_WINDOW_COUNT, Misfire, Schedule, ScheduleState
from actors.coordinator.scheduling.schedules import ScheduleNotFound, ScheduleRow, ScheduleService
from protocol.errors import ValidationError

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeHub:
    def __init__(self) -> None:
        self.phone_rows = {s: {"serial": s, "node": "rack1", "state": "online",
                               "lock_holder": None} for s in ("p1", "p2")}
        self.node_rows = {"rack1": {"name": "rack1", "state": "up"}}


class FakeRuns:
    """Starts nothing: records an execution per start, pending as if sent to the node."""

    def __init__(self, db: FarmDB) -> None:
        self.db = db
        self.started: list[tuple[str, str, str | None, str | None]] = []

    async def targets(self, scope: str) -> list[tuple[str, str | None]]:
        return [("p1", None), ("p2", None)] if scope == "phone:all" else [(scope[6:], None)]

    async def start_one(self, sequence, serial, account, variables=None, *, run_id=None) -> dict:
        execution_id = f"ex-{len(self.started) + 1}"
        self.started.append((execution_id, serial, account, run_id))
        await self.db.create_execution(execution_id, run_id=run_id, serial=serial,
                                       sequence=sequence)
        return {"execution_id": execution_id, "status": "pending", "account": account,
                "error": None}


@pytest.fixture()
async def env(tmp_path):
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    clock, hub, runs = Clock(), FakeHub(), FakeRuns(db)
    service = ScheduleService(hub, runs, db, clock=clock)
    await service.load()
    yield service, clock, hub, runs, db
    await db.close()


def immediate(sid: str, target: str = "phone:p1") -> Schedule:
    return Schedule(id=sid, sequence="demo/taps", target=target, type="immediate")


async def test_one_execution_per_phone_at_a_time_and_end_seen_from_the_record(env) -> None:
    service, clock, _, runs, db = env
    await service.add(immediate("a"))
    await service.add(immediate("b"))
    await service.step()
    assert [(s[1], s[3]) for s in runs.started] == [("p1", "a@20260301T120000Z")]
    clock.advance(2)
    await service.step()
    assert len(runs.started) == 1  # p1 is busy with a's job
    await db.update_execution("ex-1", status="completed")
    clock.advance(2)
    await service.step()
    assert [s[1] for s in runs.started] == ["p1", "p1"]
    await db.update_execution("ex-2", status="failed", error_message="boom")
    await service.step()
    views = {v["id"]: v for v in service.schedules()}
    assert views["a"]["jobs"] == {"completed": 1} and views["b"]["jobs"] == {"failed": 1}
    assert views["a"]["status"] == "completed" and views["a"]["next_fire"] is None
    kinds = [e["kind"] for e in await service.events("a")]
    assert kinds == ["fired", "queued", "dispatched", "finished"]
    finished = (await service.events("b"))[-1]
    assert finished["kind"] == "finished" and finished["execution_id"] == "ex-2"
    assert finished["detail"]["error"] == "boom"


async def test_locked_and_offline_phones_wait_without_an_execution(env) -> None:
    service, clock, hub, runs, _ = env
    service.offline_wait_s = 60
    hub.phone_rows["p1"]["lock_holder"] = "manual-run"
    hub.phone_rows["p2"]["state"] = "offline"
    await service.add(immediate("both", "phone:all"))
    await service.step()
    clock.advance(30)
    await service.step()
    assert runs.started == []
    hub.phone_rows["p1"]["lock_holder"] = None
    clock.advance(31)
    await service.step()
    assert [s[1] for s in runs.started] == ["p1"]
    clock.advance(2)  # the node's stagger slot
    await service.step()
    assert service.view("both")["jobs"] == {"running": 1, "failed": 1}
    failed = [e for e in await service.events("both") if e["kind"] == "dispatch_failed"]
    assert "p2 not online" in failed[0]["reason"]


async def test_state_survives_a_restart_and_misfires_are_the_cores(env) -> None:
    service, clock, hub, runs, db = env
    await service.add(Schedule(id="later", sequence="demo/taps", target="phone:p2",
                               type="scheduled", at=T0 + timedelta(minutes=5),
                               misfire=Misfire(grace_s=120)))
    await service.add(immediate("now"))
    await service.step()
    assert runs.started[0][1] == "p1"
    # The coordinator stops; meanwhile the execution ends and "later" becomes due.
    await db.update_execution("ex-1", status="completed")
    clock.advance(6 * 60)
    again = ScheduleService(hub, runs, db, clock=clock)
    await again.load()
    assert [v["id"] for v in again.schedules()] == ["later", "now"]
    assert again.view("later")["next_fire"] == (T0 + timedelta(minutes=5)).isoformat()
    await again.step()
    assert again.view("now")["jobs"] == {"completed": 1}
    assert [s[1] for s in runs.started] == ["p1", "p2"]
    misfire = [e for e in await again.events("later") if e["kind"] == "misfire"]
    assert misfire and misfire[0]["reason"] == "run_late"


async def test_add_validates_and_controls(env) -> None:
    service, clock, _, runs, _ = env
    with pytest.raises(ValidationError) as bad:
        await service.add(Schedule(id="s", sequence="x", target="phone:p1", type="scheduled"))
    assert bad.value.where == "$.at"
    with pytest.raises(ValidationError) as bad:
        await service.add(Schedule(id="w", sequence="x", target="phone:p1", type="window",
                                   window_start=T0, window_end=T0 + timedelta(seconds=30),
                                   count=5))
    assert bad.value.where == "$.count"
    with pytest.raises(ValidationError) as bad:
        await service.add(Schedule(id="t", sequence="x", target="phone:", type="immediate"))
    assert bad.value.where == "$.target"
    with pytest.raises(ValidationError) as bad:
        await service.add(Schedule(id="d", sequence="x", target="phone:p1", type="immediate",
                                   depends_on=["nope"]))
    assert bad.value.where == "$.depends_on"
    added = await service.add(Schedule(id="", sequence="x", target="phone:p1",
                                       type="recurring", cron="*/5 * * * *"))
    sid = added["id"]
    assert sid.startswith("sch-") and added["next_fire"] == "2026-03-01T12:00:00+00:00"
    assert (await service.control(sid, "pause"))["status"] == "paused"
    clock.advance(1)
    await service.step()
    assert runs.started == []
    assert (await service.control(sid, "resume"))["status"] == "pending"
    assert (await service.control(sid, "cancel"))["status"] == "cancelled"
    with pytest.raises(ValidationError):
        await service.control(sid, "resume")
    with pytest.raises(ScheduleNotFound):
        await service.control("ghost", "pause")


async def test_dropped_jobs_take_their_executions_with_them_and_reload_alike(env) -> None:
    service, clock, hub, runs, db = env
    await service.add(Schedule(id="r", sequence="demo/taps", target="phone:all",
                               type="recurring", cron="* * * * *"))
    for _ in range(30):
        for _ in range(3):
            await service.step()
            for execution_id, *_ in runs.started:
                await db.update_execution(execution_id, status="completed")
            clock.advance(2)
        clock.now = clock.now.replace(second=0) + timedelta(minutes=1)
    await service.control("r", "pause")
    await service.step()
    assert len(runs.started) == 60
    # Only the latest occurrence (two phones) is kept, in the core and in the map.
    assert len(service.core().state.jobs) <= 2 and len(service.executions) <= 2
    assert service.view("r")["jobs"] == {"completed": 60}
    saved = await db.load_scheduler_rows()
    assert sum(map(len, saved.values())) < 5_000
    # Events of dropped jobs still name their execution.
    first = [e for e in await service.events("r") if e["kind"] == "dispatched"][0]
    assert first["execution_id"] == "ex-1"
    again = ScheduleService(hub, runs, db, clock=clock)
    await again.load()
    assert again.view("r") == service.view("r")
    await again.control("r", "resume")
    await again.step()
    assert len(runs.started) == 61


async def test_a_finished_schedule_leaves_the_live_state_and_still_answers(env, monkeypatch) -> None:
    service, clock, hub, runs, db = env
    await service.add(immediate("a"))
    await service.add(Schedule(id="later", sequence="demo/taps", target="phone:p2",
                               type="scheduled", at=T0 + timedelta(hours=1)))
    await service.step()
    await db.update_execution("ex-1", status="completed")
    clock.advance(2)
    await service.step()
    core = service.core().state
    assert "a" not in core.schedules and not core.jobs  # pruned: the events are its record
    assert service.view("a")["jobs"] == {"completed": 1}
    assert service.view("a")["status"] == "completed"
    rows = await db.load_scheduler_rows()
    assert "f/a" in rows and "s/a" not in rows and not any(k.startswith("j/") for k in rows)
    again = ScheduleService(hub, runs, db, clock=clock)
    await again.load()
    assert [v["id"] for v in again.schedules()] == ["a", "later"]
    assert again.view("a") == service.view("a")
    kinds = [e["kind"] for e in await again.events("a")]
    assert kinds == ["fired", "queued", "dispatched", "finished"]
    with pytest.raises(ValidationError):
        await again.add(immediate("a"))  # the id is taken
    # Beyond the kept views, a finished schedule still answers its events from the rows.
    monkeypatch.setattr("actors.coordinator.scheduling.schedules.FINISHED_KEPT", 0)
    await again.control("later", "pause")
    assert "a" not in again.finished
    with pytest.raises(ScheduleNotFound):
        again.view("a")
    assert [e["kind"] for e in await again.events("a")] == kinds
    with pytest.raises(ScheduleNotFound):
        await again.events("ghost")


async def test_a_save_writes_only_what_changed(env) -> None:
    service, clock, hub, runs, db = env
    written: list[set[str]] = []
    save = db.save_scheduler_rows

    async def spy(rows, deletes, events, **kw):
        written.append(set(rows) | set(deletes))
        await save(rows, deletes, events, **kw)

    db.save_scheduler_rows = spy
    await service.add(Schedule(id="r", sequence="demo/taps", target="phone:p2",
                               type="recurring", cron="30 * * * *"))
    await service.add(immediate("a"))
    await service.step()
    assert written[-1] == {"core", "s/a", "j/a@20260301T120000Z/p1/-", "q/p1"}
    written.clear()
    clock.advance(2)
    await service.step()
    assert written == []  # nothing happened: nothing written
    await db.update_execution("ex-1", status="completed")
    await service.step()
    assert written[-1] == {"core", "s/a", "f/a", "j/a@20260301T120000Z/p1/-", "q/p1"}


async def test_a_crash_between_dispatch_and_save_does_not_start_twice(env) -> None:
    service, clock, hub, runs, db = env
    await service.add(immediate("a", "phone:all"))

    async def crash(*args, **kw):
        raise RuntimeError("kill -9")

    db_save = db.save_scheduler_rows
    db.save_scheduler_rows = crash
    with pytest.raises(RuntimeError):
        await service.step()  # fired and dispatched on p1: nothing of it saved
    db.save_scheduler_rows = db_save
    assert len(runs.started) == 1
    again = ScheduleService(hub, runs, db, clock=clock)
    await again.load()
    assert again.view("a")["jobs"] == {}
    await again.step()
    assert len(runs.started) == 1  # p1's execution already started is its job's
    assert again.view("a")["jobs"] == {"running": 1, "queued": 1}
    clock.advance(2)  # the node's stagger slot
    await again.step()
    assert [s[1] for s in runs.started] == ["p1", "p2"]
    for execution_id, *_ in runs.started:
        await db.update_execution(execution_id, status="completed")
    await again.step()
    assert again.view("a")["jobs"] == {"completed": 2}
    dispatched = [e for e in await again.events("a") if e["kind"] == "dispatched"]
    assert sorted(e["execution_id"] for e in dispatched) == ["ex-1", "ex-2"]


async def test_a_paused_phone_is_refused_with_the_reason_and_no_execution(env) -> None:
    from actors.coordinator.phone_pause import PhonePauses

    service, clock, hub, runs, db = env
    hub.pauses = PhonePauses(hub, db)
    await db.set_phone_pause("p2", "recovery_failures", {"failures_in_a_row": 3})
    await hub.pauses.load()
    await service.add(immediate("both", "phone:all"))
    await service.step()
    clock.advance(2)
    await service.step()
    assert [s[1] for s in runs.started] == ["p1"]
    failed = [e for e in await service.events("both") if e["kind"] == "dispatch_failed"]
    assert "p2 is paused (recovery_failures" in failed[0]["reason"]
    assert "farm resume p2" in failed[0]["reason"]


async def test_the_loop_ticks_at_a_planned_time_before_its_next_regular_tick(tmp_path) -> None:
    """With an hour between regular ticks, a schedule planned a moment ahead still starts:
    the loop sleeps only until the earliest planned time."""
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    runs = FakeRuns(db)
    service = ScheduleService(FakeHub(), runs, db, tick_s=3600)
    await service.start()
    try:
        await service.add(Schedule(id="soon", sequence="demo/taps", target="phone:p1",
                                   type="scheduled",
                                   at=datetime.now(timezone.utc) + timedelta(seconds=0.3)))
        for _ in range(200):
            if runs.started:
                break
            await asyncio.sleep(0.05)
        assert [s[1] for s in runs.started] == ["p1"]
    finally:
        await service.close()
        await db.close()


async def test_close_ends_the_loop_even_when_a_cancellation_is_swallowed(env, monkeypatch) -> None:
    """Python 3.11's wait_for can swallow a cancellation that meets its inner wait finishing;
    the loop must still end on close (it once ticked on while close waited for ever)."""
    service, *_ = env
    swallowed: list[bool] = []
    real_step = service.step

    async def step():
        try:
            await asyncio.sleep(0.2)  # the cancellation lands here
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)
            asyncio.current_task().uncancel()
            return []  # swallowed, as wait_for does when the wake() and the cancel meet
        return await real_step()

    monkeypatch.setattr(service, "step", step)
    await service.start()
    await asyncio.sleep(0.05)
    loop_task = service._task
    closing = asyncio.get_running_loop().create_task(service.close())
    await asyncio.wait({closing}, timeout=10)  # not wait_for: its cancel would rescue close
    try:
        assert closing.done() and loop_task.done() and swallowed == [True]
    finally:
        loop_task.cancel()
        closing.cancel()


# --- bad schedules over HTTP --------------------------------------------------------------------


class ServiceHub(FakeHub):
    """The directory above plus the hub's schedule calls, for the control endpoint."""

    def __init__(self, service_of: Callable[[], ScheduleService]) -> None:
        super().__init__()
        self._service = service_of

    async def add_schedule(self, schedule: Schedule) -> dict:
        return await self._service().add(schedule)

    def list_schedules(self) -> list[dict]:
        return self._service().schedules()

    async def control_schedule(self, schedule_id: str, action: str) -> dict:
        return await self._service().control(schedule_id, action)

    async def schedule_events(self, schedule_id: str) -> list[dict]:
        return await self._service().events(schedule_id)


@pytest.fixture()
async def api(env):
    """A real aiohttp server (ephemeral port) over the env's service and farm database."""
    holder = {"service": env[0]}
    hub = ServiceHub(lambda: holder["service"])
    async with TestClient(TestServer(make_app(hub))) as client:
        yield client, holder, env


GOOD = {"sequence": "demo/taps", "target": "phone:p1"}
WINDOW = {**GOOD, "type": "window", "window_start": "2026-03-01T13:00:00Z",
          "window_end": "2026-03-01T15:00:00Z"}


@pytest.mark.parametrize("body, field", [
    ({**GOOD, "type": "recurring", "cron": "0 0 31 2 *"}, "$.cron"),
    ({**GOOD, "type": "recurring", "cron": "* * * * * *"}, "$.cron"),  # seconds: no
    ({**GOOD, "type": "scheduled", "at": "0001-01-01T00:00:00+01:00"}, "$.at"),  # not in UTC
    ({**GOOD, "type": "recurring", "recurrence": {"every": "day", "at": 5}}, "$.recurrence.at"),
    ({**GOOD, "type": "recurring", "recurrence": {"every": "day", "interval": [1]}},
     "$.recurrence.interval"),
    ({**GOOD, "type": "recurring", "recurrence": {"every": "week", "days": [9]}},
     "$.recurrence.days"),
    ({**GOOD, "type": "recurring", "recurrence": "daily"}, "$.recurrence"),
    ({**WINDOW, "seed": 99999999999999999999999}, "$.seed"),
    ({**WINDOW, "seed": -1}, "$.seed"),
    ({**WINDOW, "count": -1}, "$.count"),
    ({**WINDOW, "count": 0}, "$.count"),
    ({**WINDOW, "count": 100_000}, "$.count"),
    ({**WINDOW, "min_gap_s": -60}, "$.min_gap_s"),
    ({**GOOD, "type": "immediate", "retry": {"attempts": -3}}, "$.retry.attempts"),
    ({**GOOD, "type": "immediate", "retry": {"delay_s": -1}}, "$.retry.delay_s"),
    ({**GOOD, "type": "immediate", "misfire": {"grace_s": -5}}, "$.misfire.grace_s"),
    ({**WINDOW, "window_start": "2026-02-01T09:00:00Z", "window_end": "2026-02-01T10:00:00Z"},
     "$.window_end"),
    ({**GOOD, "type": "scheduled", "at": "2026-03-01T11:00:00Z"}, "$.at"),
    ({**GOOD, "type": "recurring", "cron": "0 9 * * *", "until": "2026-03-01T11:00:00Z"},
     "$.until"),
    ({**GOOD, "type": "scheduled", "at": "2026-03-02T09:00"}, "$.at"),  # no zone
])
async def test_a_rejected_schedule_is_a_400_naming_the_field_and_leaves_nothing(
        api, body: dict, field: str) -> None:
    client, holder, (service, clock, hub, runs, db) = api
    resp = await client.post("/api/schedules", json=body)
    assert resp.status == 400 and resp.content_type == "application/json"
    error = await resp.json()
    assert error["field"] == field, error
    assert error["error"].startswith(field), error
    resp = await client.get("/api/schedules")
    assert resp.status == 200 and (await resp.json())["schedules"] == []
    assert not any(k.startswith(("s/", "f/")) for k in await db.load_scheduler_rows())
    # A good schedule still fires, now and after a restart.
    resp = await client.post("/api/schedules", json={**GOOD, "id": "ok", "type": "immediate"})
    assert resp.status == 201, await resp.text()
    await service.step()
    assert [s[1] for s in runs.started] == ["p1"]
    holder["service"] = again = ScheduleService(hub, runs, db, clock=clock)
    await again.load()
    resp = await client.get("/api/schedules")
    assert resp.status == 200
    assert [v["id"] for v in (await resp.json())["schedules"]] == ["ok"]


async def test_times_with_minutes_only_or_an_offset_are_accepted_and_the_past_on_request(
        api) -> None:
    client, *_ = api
    resp = await client.post("/api/schedules", json={
        **WINDOW, "id": "w", "window_start": "2026-03-02T09:00Z",
        "window_end": "2026-03-02T12:00+02:00"})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["window_end"] == "2026-03-02T10:00:00Z"
    past = {**WINDOW, "window_start": "2026-02-01T09:00Z", "window_end": "2026-02-01T10:00Z"}
    resp = await client.post("/api/schedules", json={**past, "id": "old", "allow_past": True})
    assert resp.status == 201, await resp.text()
    assert (await client.get("/api/schedules")).status == 200
    # A scheduled time within its misfire grace (60 s) runs at once: the sender's clock lags.
    resp = await client.post("/api/schedules", json={**GOOD, "id": "lagging", "type": "scheduled",
                                                     "at": "2026-03-01T11:59:30Z"})
    assert resp.status == 201, await resp.text()


async def test_an_immediate_schedule_is_completed_only_when_its_jobs_ended(env) -> None:
    service, clock, _, runs, db = env
    await service.add(immediate("a"))
    await service.step()
    assert service.view("a")["jobs"] == {"running": 1}
    assert service.view("a")["status"] == "active" and service.view("a")["next_fire"] is None
    await db.update_execution("ex-1", status="completed")
    await service.step()
    assert service.view("a")["status"] == "completed"


class BrokenRuns(FakeRuns):
    """Resolving ``phone:boom`` raises what no scope check expects (a crashed lookup)."""

    async def targets(self, scope: str) -> list[tuple[str, str | None]]:
        if scope == "phone:boom":
            raise RuntimeError("lookup crashed")
        return await super().targets(scope)


async def test_a_schedule_failing_in_a_tick_is_failed_and_the_others_fire(tmp_path) -> None:
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    clock, hub, runs = Clock(), FakeHub(), BrokenRuns(db)
    service = ScheduleService(hub, runs, db, clock=clock)
    await service.load()
    try:
        await service.add(Schedule(id="bad", sequence="demo/taps", target="phone:boom",
                                   type="recurring", cron="* * * * *"))
        await service.add(Schedule(id="good", sequence="demo/taps", target="phone:p1",
                                   type="recurring", cron="* * * * *"))
        await service.step()
        assert [s[1] for s in runs.started] == ["p1"]
        view = service.view("bad")
        assert view["status"] == "failed" and "lookup crashed" in view["error"]
        (error,) = [e for e in await service.events("bad") if e["kind"] == "error"]
        assert "lookup crashed" in error["reason"]
        await db.update_execution("ex-1", status="completed")
        clock.advance(60)
        await service.step()
        assert [s[1] for s in runs.started] == ["p1", "p1"]
        again = ScheduleService(hub, runs, db, clock=clock)
        await again.load()
        assert again.view("bad")["status"] == "failed"
        assert "lookup crashed" in again.view("bad")["error"]
        with pytest.raises(ValidationError):
            await again.control("bad", "resume")
    finally:
        await db.close()


async def test_a_stored_schedule_out_of_today_s_bounds_loads_as_failed(env) -> None:
    """A row saved before the bounds (a seed past 64 bits) no longer stops the load, the
    listing or its cancel: the bad member is reset and the schedule is failed."""
    service, clock, hub, runs, db = env
    await service.add(Schedule(id="ok", sequence="demo/taps", target="phone:p1",
                               type="recurring", cron="0 9 * * *"))
    row = msgspec.json.encode(ScheduleRow(
        Schedule(id="big", sequence="demo/taps", target="phone:p1", type="window",
                 window_start=T0 + timedelta(hours=1), window_end=T0 + timedelta(hours=2),
                 seed=99999999999999999999999),
        ScheduleState(next_due=T0 + timedelta(hours=1, minutes=30)))).decode()
    await db.save_scheduler_rows({"s/big": row}, [], [])
    again = ScheduleService(hub, runs, db, clock=clock)
    await again.load()
    view = again.view("big")
    assert view["status"] == "failed" and "$.schedule.seed" in view["error"]
    assert again.view("ok")["status"] == "pending"
    orjson.dumps(again.schedules())  # what GET /api/schedules sends
    assert (await again.control("big", "cancel"))["status"] == "cancelled"


async def test_a_max_count_window_half_past_never_stalls_the_loop(env) -> None:
    """Adding and ticking the largest window over a half-past window: the loop keeps
    answering (it stalled 7.9 s for 2,000 times: the misfire walk re-drew the window for
    every missed time)."""
    service, clock, _, runs, db = env
    probe = LoopLagProbe(interval_s=0.01).start()
    try:
        span = timedelta(seconds=MAX_WINDOW_COUNT * 61)
        added = await service.add(Schedule(
            id="max", sequence="demo/taps", target="phone:p1", type="window",
            window_start=clock.now - span / 2, window_end=clock.now + span / 2,
            count=MAX_WINDOW_COUNT))
        assert added["next_fire"]
        for _ in range(5):
            await service.step()
            await db.update_execution(f"ex-{len(runs.started)}", status="completed")
            clock.advance(600)
        await asyncio.sleep(0.05)
    finally:
        await probe.close()
    assert len(runs.started) == 5
    assert probe.samples > 0 and probe.max_ms < 500, probe.snapshot()


def test_the_openapi_document_publishes_the_schedule_bounds() -> None:
    schemas = openapi_document()["components"]["schemas"]
    request = schemas["ScheduleRequest"]["properties"]
    assert request["count"]["maximum"] == MAX_WINDOW_COUNT and request["count"]["minimum"] == 1
    seed = next(s for s in request["seed"]["anyOf"] if s.get("type") == "integer")
    assert seed["minimum"] == 0 and seed["maximum"] == 2**63 - 1 and seed["description"]
    assert request["min_gap_s"]["minimum"] == 0
    assert schemas["Misfire"]["properties"]["grace_s"]["minimum"] == 0
    retry = schemas["JobRetry"]["properties"]
    assert retry["attempts"]["minimum"] == 0 and "maximum" in retry["delay_s"]
    recurrence = schemas["Recurrence"]["properties"]
    assert set(recurrence["every"]["enum"]) == {"minute", "hour", "day", "week", "month"}
    assert recurrence["interval"]["minimum"] == 1
    assert request["allow_past"]["type"] == "boolean"
    assert "failed" in schemas["ScheduleView"]["properties"]["status"]["enum"]
