"""Workflows end to end in one process: hub (seeded farm database, its ScheduleService ticking
on the real clock) + node + phone actors over a real adb server and virtual phones, driven
through the control endpoint (real aiohttp). Three workflows of two sequences each contend
for the same two phones: every sequence runs, a phone never runs two executions at once,
and on each phone each workflow's sequences run in their order."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from actors.control.app import make_app
from tests.e2e.run_stack import run_stack
from tests.api_call import call  # noqa: E402

playback = pytest.importorskip("actors.node.playback", reason="the node side of runs has not landed")

# ClipShare brought up (every screen a known one), then sleeps: an overlap would show.
SEQUENCES = {
    "first": {"name": "first", "app": "clipshare",
              "steps": [{"type": "sleep", "seconds": 0.3}, {"type": "sleep", "seconds": 0.3}]},
    "second": {"name": "second", "app": "clipshare",
               "steps": [{"type": "sleep", "seconds": 0.3}]},
}


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    data = tmp_path / "data"
    (data / "sequences" / "wf").mkdir(parents=True)
    for name, body in SEQUENCES.items():
        (data / "sequences" / "wf" / f"{name}.json").write_text(json.dumps(body))
    async with run_stack(farm, adb_server, tmp_path, data_dir=data) as (hub, db, _node):
        async with TestClient(TestServer(make_app(hub))) as client:
            yield hub, db, client


async def test_three_workflows_on_two_phones_never_overlap_and_keep_their_order(
        stack, farm) -> None:
    hub, db, client = stack
    for name in SEQUENCES:
        status, body = await call(client, "POST", "/api/sequences", {"name": f"wf/{name}"})
        assert status == 201, body
    status, body = await call(client, "POST", "/api/sequences", {"name": "wf/missing"})
    assert status == 400 and body["field"] == "$.name"  # must load from the library
    for wf in ("alpha", "beta", "gamma"):
        status, body = await call(client, "POST", "/api/workflows", {
            "name": wf, "sequences": [{"sequence": "wf/first"},
                                      {"sequence": "wf/second", "depends_on": [0]}]})
        assert status == 201, body
    two = farm.serials[:2]
    scope = f"phone:{','.join(two)}"
    runs = {}
    for wf in ("alpha", "beta", "gamma"):
        status, body = await call(client, "POST", f"/api/workflows/{wf}/run", {"scope": scope})
        assert status == 201, body
        runs[wf] = body["workflow_execution_id"]

    views: dict[str, dict] = {}

    async def poll() -> bool:
        for wf, wfx in runs.items():
            views[wf] = (await call(client, "GET", f"/api/workflow-executions/{wfx}"))[1]
        return all(v["status"] not in ("pending", "running") for v in views.values())

    await wait_for_async(poll, timeout=180, what="3 workflow executions ended")
    assert all(v["status"] == "completed" for v in views.values()), views
    executions = {e["execution_id"]: e for e in await hub.list_executions(100)}
    for wf, view in views.items():
        assert sorted((s["position"], s["serial"]) for s in view["sequences"]) == sorted(
            (p, s) for p in (0, 1) for s in two)
        for serial in two:
            mine = sorted((s for s in view["sequences"] if s["serial"] == serial),
                          key=lambda s: s["position"])
            (first,), (second,) = (s["execution_ids"] for s in mine)
            # In order on the phone: the dependent started after its prerequisite ended.
            assert executions[first]["end_time"] <= executions[second]["start_time"]
            assert [executions[x]["sequence"] for x in (first, second)] == ["wf/first",
                                                                            "wf/second"]
    ours = [e for e in executions.values() if (e["run_id"] or "").startswith("wfx-")]
    assert len(ours) == 12 and all(e["status"] == "completed" for e in ours), ours
    for serial in two:
        mine = sorted((e for e in ours if e["serial"] == serial), key=lambda e: e["start_time"])
        assert len(mine) == 6
        for before, after in zip(mine, mine[1:]):
            assert before["end_time"] <= after["start_time"], (before, after)  # never overlap
    rows = await db.workflow_execution(runs["alpha"])
    assert {r["status"] for r in rows["sequences"]} == {"completed"}
    assert len(rows["sequences"]) == 4


async def wait_for_async(predicate, timeout: float, what: str) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.3)
