"""Sequence and workflow definition routes (actors.control.workflows) over a fake hub with a
real FarmDB and a ScheduleService on a fake clock: create, list, get, update, soft delete,
each audited with before/after and reason; bad bodies are 400 naming the field; running a
workflow creates its execution; a schedule may target a workflow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.control.app import make_app  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from actors.coordinator.scheduling.schedules import ScheduleService  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from test_schedule_service import Clock, FakeRuns  # noqa: E402
from test_schedule_service import FakeHub as Directory  # noqa: E402
from tests.api_call import call  # noqa: E402

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
async def hub(db: FarmDB) -> FakeHub:
    hub = FakeHub()
    hub.db = db
    hub.schedules = ScheduleService(Directory(), FakeRuns(db), db, clock=Clock())
    await hub.schedules.load()
    hub.schedule_service = hub.schedules  # the fake hub's schedule calls go to it too
    return hub


@pytest.fixture
async def client(hub: FakeHub):
    async with TestClient(TestServer(make_app(hub))) as c:
        yield c


async def define_sequences(client: TestClient, *names: str) -> None:
    for name in names:
        status, body = await call(client, "POST", "/api/sequences",
                                  {"name": name, "description": f"{name} it"})
        assert status == 201, body


async def test_sequence_crud_is_audited(client: TestClient, db: FarmDB) -> None:
    status, body = await call(client, "POST", "/api/sequences",
                              {"name": "demo/login", "reason": "new routine"})
    assert status == 201 and body["version"] == 1 and body["status"] == "active"
    status, again = await call(client, "POST", "/api/sequences", {"name": "demo/login"})
    assert status == 409 and again["field"] == "$.name"
    status, body = await call(client, "PUT", "/api/sequences/demo/login",
                              {"description": "log in", "reason": "describe it"})
    assert status == 200 and body["version"] == 2 and body["description"] == "log in"
    status, body = await call(client, "GET", "/api/sequences/demo/login")
    assert status == 200 and body["description"] == "log in"
    status, listing = await call(client, "GET", "/api/sequences")
    assert [s["name"] for s in listing["sequences"]] == ["demo/login"]
    status, body = await call(client, "DELETE", "/api/sequences/demo/login?reason=obsolete")
    assert status == 200 and body["status"] == "retired"
    assert (await call(client, "GET", "/api/sequences/demo/login"))[0] == 404
    assert (await call(client, "GET", "/api/sequences"))[1]["sequences"] == []
    trail = await db.audit_trail("sequence_definition")
    assert [(t["action"], t["reason"]) for t in trail] == [
        ("delete", "obsolete"), ("update", "describe it"), ("create", "new routine")]
    assert trail[1]["before"]["version"] == 1 and trail[1]["after"]["version"] == 2
    assert trail[0]["after"]["status"] == "retired"


async def test_sequence_bad_bodies_name_the_field(client: TestClient) -> None:
    status, body = await call(client, "POST", "/api/sequences", {"description": "x"})
    assert status == 400 and body["field"] == "$.name"
    status, body = await call(client, "POST", "/api/sequences", {"name": "bad name!"})
    assert status == 400 and body["field"] == "$.name"
    status, body = await call(client, "POST", "/api/sequences", {"name": "a", "colour": 1})
    assert status == 400 and "colour" in body["error"]
    status, body = await call(client, "PUT", "/api/sequences/nope", {"description": "x"})
    assert status == 404


async def test_workflow_crud_run_and_audit(client: TestClient, db: FarmDB, hub) -> None:
    await define_sequences(client, "demo/login", "demo/post")
    definition = {"name": "daily", "description": "every day", "reason": "start posting",
                  "sequences": [{"sequence": "demo/login", "retry": {"attempts": 2,
                                                                     "delay_s": 10}},
                                {"sequence": "demo/post", "depends_on": ["demo/login"]}]}
    status, body = await call(client, "POST", "/api/workflows", definition)
    assert status == 201, body
    assert [(s["position"], s["sequence"], s["depends_on"], s["retry"])
            for s in body["sequences"]] == [(0, "demo/login", [], {"attempts": 2,
                                                                  "delay_s": 10.0}),
                                            (1, "demo/post", [0], {"attempts": 0,
                                                                   "delay_s": 60.0})]
    status, body = await call(client, "PUT", "/api/workflows/daily",
                              {"sequences": [{"sequence": "demo/post"}], "reason": "simpler"})
    assert status == 200 and [s["sequence"] for s in body["sequences"]] == ["demo/post"]
    status, listing = await call(client, "GET", "/api/workflows")
    assert [w["name"] for w in listing["workflows"]] == ["daily"]
    # A sequence a workflow uses cannot be retired under it.
    status, body = await call(client, "DELETE", "/api/sequences/demo/post")
    assert status == 409 and body["workflows"] == ["daily"]

    status, run = await call(client, "POST", "/api/workflows/daily/run", {"scope": "phone:all"})
    assert status == 201 and run["workflow"] == "daily" and run["status"] == "running"
    status, listing = await call(client, "GET", "/api/workflow-executions")
    assert [w["workflow_execution_id"] for w in listing["workflow_executions"]] == [
        run["workflow_execution_id"]]
    status, one = await call(client, "GET",
                             f"/api/workflow-executions/{run['workflow_execution_id']}")
    assert status == 200 and one["target"] == "phone:all"
    assert (await call(client, "GET", "/api/workflow-executions/999"))[0] == 404
    status, body = await call(client, "POST", "/api/workflows/daily/run", {"scope": "phone:,"})
    assert status == 400 and body["field"] == "$.scope"
    assert (await call(client, "POST", "/api/workflows/nope/run", {"scope": "phone:all"}))[0] \
        == 404

    status, body = await call(client, "POST", "/api/schedules", {
        "workflow": "daily", "target": "phone:all", "type": "immediate", "id": "wf-daily"})
    assert status == 201 and body["workflow"] == "daily", body
    status, body = await call(client, "POST", "/api/schedules", {
        "workflow": "nope", "target": "phone:all", "type": "immediate"})
    assert status == 400 and body["field"] == "$.workflow"

    status, body = await call(client, "DELETE", "/api/workflows/daily?reason=done")
    assert status == 200 and body["status"] == "retired"
    assert (await call(client, "GET", "/api/workflows/daily"))[0] == 404
    trail = await db.audit_trail("workflow_definition")
    assert [(t["action"], t["reason"]) for t in trail] == [
        ("delete", "done"), ("update", "simpler"), ("create", "start posting")]
    assert len(trail[1]["before"]["sequences"]) == 2 and len(trail[1]["after"]["sequences"]) == 1


async def test_workflow_bad_bodies_name_the_field(client: TestClient) -> None:
    await define_sequences(client, "demo/login")
    cases = [({"name": "w", "sequences": []}, "$.sequences"),
             ({"name": "w", "sequences": [{"sequence": "demo/nope"}]}, "$.sequences[0].sequence"),
             ({"name": "w", "sequences": [{"sequence": "demo/login", "depends_on": [0]}]},
              "$.sequences[0].depends_on"),
             ({"name": "w", "sequences": [{"sequence": "demo/login",
                                           "retry": {"attempts": -1}}]},
              "$.sequences[0].retry.attempts"),
             ({"sequences": [{"sequence": "demo/login"}]}, "$.name")]
    for body, field in cases:
        status, answer = await call(client, "POST", "/api/workflows", body)
        assert (status, answer.get("field")) == (400, field), (body, answer)


async def test_farm_cli_workflows_run_and_runs(hub, db: FarmDB, capsys) -> None:
    import asyncio

    from aiohttp.test_utils import TestServer

    from actors.control.cli import main

    server = TestServer(make_app(hub))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")

    async def farm(*argv: str) -> int:
        return await asyncio.to_thread(main, ["--url", url, *argv])

    try:
        for name in ("demo/login", "demo/post"):
            await db.save_sequence_definition(name)
        from actors.coordinator.scheduling.workflows import check_sequences

        known = {d["name"]: d for d in await db.sequence_definitions()}
        await db.save_workflow_definition("daily", check_sequences(
            [{"sequence": "demo/login", "retry": {"attempts": 1}},
             {"sequence": "demo/post", "depends_on": [0]}], known), description="posting")
        assert await farm("workflows") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split()[:2] == ["NAME", "DESCRIPTION"]
        assert out[1].split()[:2] == ["daily", "posting"]
        assert "0:demo/login (retry 1x) -> 1:demo/post (needs 0)" in out[1]
        assert await farm("workflow", "run", "daily", "phone:all") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[1].split()[1:4] == ["daily", "phone:all", "running"]
        assert await farm("workflow", "run", "nope", "phone:all") == 2
        assert "no such workflow" in capsys.readouterr().err
        assert await farm("runs") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split()[:3] == ["WORKFLOW", "RUN", "WORKFLOW"]
        assert out[1].split()[1:4] == ["daily", "phone:all", "running"]
    finally:
        await server.close()
