"""Workflows (actors.coordinator.scheduling.workflows) through the ScheduleService on a fake clock, fake runs and a
real farm database: sequences in order per phone, a failed prerequisite skips its dependents
(recorded with the reason) while a mere predecessor's failure does not, the retry policy per
workflow sequence, the sequence_executions / workflow_executions rows, a schedule that
targets a workflow, and a restarted service that carries on with an interrupted workflow."""

from __future__ import annotations

import pytest

from actors.store.farm_db import FarmDB
from actors.coordinator.scheduling.scheduler import TERMINAL, Schedule
from actors.coordinator.scheduling.schedules import ScheduleService
from actors.coordinator.scheduling.workflows import WorkflowNotFound, check_sequences
from protocol.errors import ValidationError
from tests.unit.test_schedule_service import Clock, FakeHub, FakeRuns

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture()
async def env(tmp_path):
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    clock, hub, runs = Clock(), FakeHub(), FakeRuns(db)
    service = ScheduleService(hub, runs, db, clock=clock, stagger_s=0)
    await service.load()
    await service.workflows.recover()
    for name in ("login", "post", "like"):
        await db.save_sequence_definition(f"demo/{name}")
    yield service, clock, hub, runs, db
    await db.close()


async def define(db: FarmDB, name: str, entries: list[dict]) -> dict:
    known = {d["name"]: d for d in await db.sequence_definitions()}
    return await db.save_workflow_definition(name, check_sequences(entries, known))


async def settle(service, runs, db, outcomes: dict[str, str]) -> None:
    """Tick until nothing more starts; each execution ends as ``outcomes[sequence]``
    (default completed)."""
    ended: set[str] = set()
    for _ in range(40):
        service.clock.advance(1)
        await service.step()
        fresh = [s for s in runs.started if s[0] not in ended]
        state = service.scheduler.state
        if not fresh and all(j.status in TERMINAL for j in state.jobs.values()) and all(
                s.status in ("completed", "cancelled") for s in state.schedules.values()):
            break
        for execution_id, *_ in fresh:
            record = await db.get_execution(execution_id)
            status = outcomes.get(record["sequence"], "completed")
            await db.update_execution(execution_id, status=status,
                                      error_message=None if status == "completed" else "boom")
            ended.add(execution_id)
    await service.step()


def sequences_run(runs, serial: str) -> list[str]:
    return [s[3].split("@")[0] for s in runs.started if s[1] == serial]


async def test_sequences_run_in_order_per_phone_and_records_are_written(env) -> None:
    service, _, _, runs, db = env
    await define(db, "daily", [{"sequence": "demo/login"},
                               {"sequence": "demo/post", "depends_on": ["demo/login"]},
                               {"sequence": "demo/like"}])
    view = await service.workflows.start("daily", "phone:all")
    wfx = view["workflow_execution_id"]
    await settle(service, runs, db, {})
    for serial in ("p1", "p2"):
        assert sequences_run(runs, serial) == [f"wfx-{wfx}.000", f"wfx-{wfx}.001",
                                               f"wfx-{wfx}.002"]
    view = await service.workflows.view(wfx)
    assert view["status"] == "completed" and view["end_time"]
    rows = [(s["position"], s["sequence"], s["serial"], s["status"]) for s in view["sequences"]]
    assert rows == [(0, "demo/login", "p1", "completed"), (0, "demo/login", "p2", "completed"),
                    (1, "demo/post", "p1", "completed"), (1, "demo/post", "p2", "completed"),
                    (2, "demo/like", "p1", "completed"), (2, "demo/like", "p2", "completed")]
    assert all(len(s["execution_ids"]) == 1 for s in view["sequences"])


async def test_failed_prerequisite_skips_dependents_but_order_alone_does_not(env) -> None:
    service, _, _, runs, db = env
    await define(db, "daily", [{"sequence": "demo/login"},
                               {"sequence": "demo/post", "depends_on": [0]},
                               {"sequence": "demo/like"}])
    wfx = (await service.workflows.start("daily", "phone:p1"))["workflow_execution_id"]
    await settle(service, runs, db, {"demo/login": "failed"})
    view = await service.workflows.view(wfx)
    by_position = {s["position"]: s for s in view["sequences"]}
    assert by_position[0]["status"] == "failed"
    assert by_position[1]["status"] == "skipped"
    assert by_position[1]["error"] == f"prerequisite wfx-{wfx}.000 failed"
    assert by_position[2]["status"] == "completed"  # only after, not dependent: it runs
    assert view["status"] == "failed" and view["error"] == "1 failed, 1 skipped"
    assert sequences_run(runs, "p1") == [f"wfx-{wfx}.000", f"wfx-{wfx}.002"]


async def test_retry_policy_per_workflow_sequence(env) -> None:
    service, clock, _, runs, db = env
    await define(db, "daily", [{"sequence": "demo/login",
                                "retry": {"attempts": 2, "delay_s": 5}},
                               {"sequence": "demo/post", "depends_on": [0]}])
    wfx = (await service.workflows.start("daily", "phone:p1"))["workflow_execution_id"]
    await settle(service, runs, db, {"demo/login": "failed"})
    view = await service.workflows.view(wfx)
    first = next(s for s in view["sequences"] if s["position"] == 0)
    assert first["status"] == "failed" and len(first["execution_ids"]) == 3  # 1 + 2 retries
    assert sequences_run(runs, "p1") == [f"wfx-{wfx}.000"] * 3
    kinds = [e["kind"] for e in await db.schedule_events(f"wfx-{wfx}.000")]
    assert kinds.count("retry") == 2


async def test_a_schedule_can_target_a_workflow(env) -> None:
    service, clock, _, runs, db = env
    await define(db, "daily", [{"sequence": "demo/login"}, {"sequence": "demo/post"}])
    with pytest.raises(ValidationError) as info:
        await service.add(Schedule(id="w", sequence="", workflow="nope", target="phone:p1",
                                   type="immediate"))
    assert info.value.where == "$.workflow"
    await service.add(Schedule(id="w", sequence="", workflow="daily", target="phone:p2",
                               type="scheduled", at=clock.now.replace(minute=5)))
    await service.step()
    assert runs.started == []
    clock.advance(5 * 60)
    await settle(service, runs, db, {})
    (row,) = await db.workflow_executions()
    assert row["workflow"] == "daily" and row["target"] == "phone:p2"
    assert row["status"] == "completed"
    assert len(sequences_run(runs, "p2")) == 2


async def test_a_restarted_service_carries_on_with_an_interrupted_workflow(env, tmp_path) -> None:
    service, clock, hub, runs, db = env
    await define(db, "daily", [{"sequence": "demo/login"}, {"sequence": "demo/post"}])
    wfx = (await service.workflows.start("daily", "phone:p1"))["workflow_execution_id"]
    clock.advance(1)
    await service.step()
    assert len(runs.started) == 1
    # The coordinator dies; a new service loads the saved state and finds the workflow.
    again = ScheduleService(hub, runs, db, clock=clock, stagger_s=0)
    await again.load()
    assert await again.workflows.recover() == [wfx]
    await db.update_execution(runs.started[0][0], status="completed")
    await settle(again, runs, db, {})
    assert (await again.workflows.view(wfx))["status"] == "completed"
    assert sequences_run(runs, "p1") == [f"wfx-{wfx}.000", f"wfx-{wfx}.001"]  # none twice


async def test_a_workflow_created_but_not_scheduled_before_a_crash_is_started_on_recovery(
        env) -> None:
    service, clock, hub, runs, db = env
    definition = await define(db, "daily", [{"sequence": "demo/login"}])
    wfx = await db.create_workflow_execution(definition["workflow_def_id"], "phone:p1",
                                             when=clock.now)
    assert await service.workflows.recover() == [wfx]
    await settle(service, runs, db, {})
    assert (await service.workflows.view(wfx))["status"] == "completed"


async def test_definition_checks_name_the_field(env) -> None:
    service, _, _, _, db = env
    known = {d["name"]: d for d in await db.sequence_definitions()}
    cases = [([], "$.sequences"),
             ([{"sequence": "demo/nope"}], "$.sequences[0].sequence"),
             ([{"sequence": "demo/login", "depends_on": [0]}], "$.sequences[0].depends_on"),
             ([{"sequence": "demo/login"}, {"sequence": "demo/post", "depends_on": ["x"]}],
              "$.sequences[1].depends_on")]
    for entries, field in cases:
        with pytest.raises(ValidationError) as info:
            check_sequences(entries, known)
        assert info.value.where == field
    with pytest.raises(WorkflowNotFound):
        await service.workflows.start("nope", "phone:p1")
    await define(db, "daily", [{"sequence": "demo/login"}])
    with pytest.raises(ValidationError) as info:
        await service.workflows.start("daily", "phone:all-,x")
    assert info.value.where == "$.scope"


async def test_an_ended_workflow_leaves_the_scheduler_state(env) -> None:
    service, _, _, runs, db = env
    await define(db, "daily", [{"sequence": "demo/login"}, {"sequence": "demo/post"}])
    wfx = (await service.workflows.start("daily", "phone:all"))["workflow_execution_id"]
    await settle(service, runs, db, {})
    state = service.scheduler.state
    assert not [s for s in state.schedules if s.startswith(f"wfx-{wfx}.")]
    assert not [j for j in state.jobs.values() if j.schedule_id.startswith(f"wfx-{wfx}.")]
    assert not service.executions
    view = await service.workflows.view(wfx)  # from the farm DB alone
    assert view["status"] == "completed"
    assert all(len(s["execution_ids"]) == 1 for s in view["sequences"])


async def test_a_sequence_whose_schedule_fails_fails_its_workflow_with_the_reason(env) -> None:
    """Firing the second sequence's schedule raises (its target lookup crashed): that
    schedule is failed, the others run, and the workflow execution fails naming it."""
    service, _, _, runs, db = env
    calls: list[str] = []
    targets = runs.targets

    async def crash_second(scope: str):
        calls.append(scope)
        if len(calls) == 2:
            raise RuntimeError("lookup crashed")
        return await targets(scope)

    runs.targets = crash_second
    await define(db, "daily", [{"sequence": "demo/login"}, {"sequence": "demo/post"},
                               {"sequence": "demo/like"}])
    wfx = (await service.workflows.start("daily", "phone:p1"))["workflow_execution_id"]
    await settle(service, runs, db, {})
    assert sequences_run(runs, "p1") == [f"wfx-{wfx}.000", f"wfx-{wfx}.002"]
    view = await service.workflows.view(wfx)
    assert view["status"] == "failed", view
    assert f"wfx-{wfx}.001 failed: RuntimeError: lookup crashed" in view["error"]
