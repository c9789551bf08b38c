"""Schedules end to end in one process: hub (seeded farm database, its ScheduleService ticking
on the real clock) + node + phone actors over a real adb server and virtual phones. Three
immediate schedules contend for the same two phones: every job runs, one at a time per
phone; then the service restarts and finds its schedules again in the farm database."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from actors.coordinator.scheduling.scheduler import Schedule
from actors.coordinator.scheduling.schedules import ScheduleService
from tests.e2e.run_stack import run_stack
from tests.e2e.test_farm_inprocess import wait_for

# Runs/schedules on each database engine (tests/conftest.py `engine`).
pytestmark = pytest.mark.usefixtures("engine")

playback = pytest.importorskip("actors.node.playback", reason="the node side of runs has not landed")

# A short sequence: ClipShare brought up (so every screen is a known one), then sleeps, so
# the executions take a moment each and an overlap on a phone would show.
TAPS = {"name": "taps", "app": "clipshare",
        "steps": [{"type": "sleep", "seconds": 0.4}, {"type": "sleep", "seconds": 0.4}]}


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    data = tmp_path / "data"
    (data / "sequences" / "test").mkdir(parents=True)
    (data / "sequences" / "test" / "taps.json").write_text(json.dumps(TAPS))
    async with run_stack(farm, adb_server, tmp_path, data_dir=data) as (hub, db, _node):
        yield hub, db


async def test_three_schedules_on_two_phones_never_overlap_and_survive_a_restart(
        stack, farm) -> None:
    hub, db = stack
    two = farm.serials[:2]
    scope = f"phone:{','.join(two)}"
    for sid in ("a", "b", "c"):
        await hub.add_schedule(Schedule(id=sid, sequence="test/taps", target=scope,
                                        type="immediate"))
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    await hub.add_schedule(Schedule(id="later", sequence="test/taps", target=scope,
                                    type="scheduled", at=later))

    def done() -> bool:
        views = {v["id"]: v for v in hub.list_schedules()}
        return all(sum(views[s]["jobs"].values()) == 2
                   and set(views[s]["jobs"]) <= {"completed", "failed", "skipped", "cancelled"}
                   for s in "abc")

    await wait_for(done, timeout=120, what="6 scheduled jobs ended")
    views = {v["id"]: v for v in hub.list_schedules()}
    assert all(views[s]["jobs"] == {"completed": 2} for s in "abc"), (
        views, [(e["kind"], e["serial"], e["reason"]) for s in "abc"
                for e in await hub.schedule_events(s)],
        [(e["serial"], e["status"], e["error"], e["reason"])
         for e in await hub.list_executions(20)])

    executions = [e for e in await hub.list_executions(100)
                  if e["run_id"] and e["run_id"].split("@")[0] in "abc"]
    assert len(executions) == 6, executions
    assert all(e["status"] == "completed" for e in executions), executions
    for serial in two:
        mine = sorted((e for e in executions if e["serial"] == serial),
                      key=lambda e: e["start_time"])
        assert len(mine) == 3
        for before, after in zip(mine, mine[1:]):
            # Text timestamps in one format compare as times.
            assert before["end_time"] <= after["start_time"], (before, after)
    events = await hub.schedule_events("a")
    assert [e["kind"] for e in events].count("dispatched") == 2
    assert all(e["execution_id"] for e in events if e["kind"] in ("dispatched", "finished"))

    # The service stops (as with the coordinator) and a new one loads the saved state.
    await hub.schedules.close()
    hub.schedules = await ScheduleService(hub, hub.runs, db).start()
    again = {v["id"]: v for v in hub.list_schedules()}
    assert again.keys() == {"a", "b", "c", "later"}
    assert all(again[s]["jobs"] == {"completed": 2} and again[s]["status"] == "completed"
               for s in "abc")
    assert again["later"]["status"] == "pending"
    assert again["later"]["next_fire"] == later.isoformat()
    await asyncio.sleep(1.5)  # a few ticks: nothing runs again
    assert len([e for e in await hub.list_executions(100) if e["run_id"]
                and e["run_id"].split("@")[0] in "abc"]) == 6


async def test_a_bad_schedule_leaves_nothing_and_an_immediate_one_completes_after_its_jobs(
        stack, farm) -> None:
    """Over the control endpoint of the real hub: a cron that never fires is a 400 naming
    $.cron and leaves no trace (the listing answers, the next schedule fires); an immediate
    schedule stays active while its job runs and is completed once it ended."""
    from aiohttp.test_utils import TestClient, TestServer

    from actors.control.app import make_app

    hub, db = stack
    async with TestClient(TestServer(make_app(hub))) as client:
        resp = await client.post("/api/schedules", json={
            "sequence": "test/taps", "target": f"phone:{farm.serials[0]}", "type": "recurring",
            "cron": "0 0 31 2 *"})
        assert resp.status == 400 and (await resp.json())["field"] == "$.cron"
        resp = await client.get("/api/schedules")
        assert resp.status == 200 and (await resp.json())["schedules"] == []
        resp = await client.post("/api/schedules", json={
            "id": "now", "sequence": "test/taps", "target": f"phone:{farm.serials[0]}",
            "type": "immediate"})
        assert resp.status == 201, await resp.text()

        async def view() -> dict:
            resp = await client.get("/api/schedules")
            assert resp.status == 200
            return {v["id"]: v for v in (await resp.json())["schedules"]}["now"]

        seen: list[tuple[str, dict]] = []
        for _ in range(1200):
            v = await view()
            seen.append((v["status"], v["jobs"]))
            if v["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        assert seen[-1] == ("completed", {"completed": 1}), seen[-5:]
        # While its job was queued or running it was active (its one time had fired).
        assert ("active", {"running": 1}) in seen, seen
        assert all(status in ("pending", "active") for status, _ in seen[:-1]), seen
