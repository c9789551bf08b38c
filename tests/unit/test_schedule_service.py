"""actors.schedules.ScheduleService on a fake clock, a fake hub directory and fake runs over a
real (temporary) farm database: dispatch as one execution per job, job end seen from the
execution record, waiting for offline phones, state and events saved and loaded back."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from actors.persistence import FarmDB
from actors.scheduler import Schedule
from actors.schedules import ScheduleNotFound, ScheduleService
from protocol.errors import ValidationError

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
                               misfire={"grace_s": 120}))
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
    assert len(service._core().state.jobs) <= 2 and len(service.executions) <= 2
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
    core = service._core().state
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
    monkeypatch.setattr("actors.schedules.FINISHED_KEPT", 0)
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
    from actors.phone_pause import PhonePauses

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
