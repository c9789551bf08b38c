"""Sequence runs end to end in one process: hub (with a seeded farm database) + node + phone
actors over a real adb server and four virtual phones. `hub.start_run` resolves each phone's
texts, the node plays the library's clipshare/post_clip (switching to the run's account
first), and the execution records and `farm run` over the real HTTP app follow it."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestServer

from actors.control.app import make_app
from actors.control.cli import main as farm_main
from actors.coordinator.hub import Hub
from tests.e2e.run_stack import run_stack
from tests.e2e.test_farm_inprocess import phone_log

# Runs/schedules on each database engine (tests/conftest.py `engine`).
pytestmark = pytest.mark.usefixtures("engine")

playback = pytest.importorskip("actors.node.playback", reason="the node side of runs has not landed")

CLIPSHARE = "com.phonefarm.clipshare"


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    async with run_stack(farm, adb_server, tmp_path) as (hub, db, _node):
        for serial in farm.serials:
            await hub.run_action(serial, {"type": "stop_app", "package": CLIPSHARE})
        yield hub, db


async def _run_done(hub: Hub, run_id: str, timeout: float = 180.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = await hub.get_run(run_id)
        if run["status"] != "running":
            return run
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} still running: {run}")
        await asyncio.sleep(0.2)


async def test_post_clip_on_four_phones_each_with_its_own_caption(stack, farm, adb_server) -> None:
    hub, db = stack
    started = await hub.start_run("clipshare/post_clip", "phone:all")
    assert set(started["executions"]) == set(farm.serials)
    assert all(e["status"] == "pending" for e in started["executions"].values())
    run = await _run_done(hub, started["run_id"])
    assert run["status"] == "completed", [
        (e["serial"], e["status"], e["error"], e["reason"],
         [(s["path"], s["status"], s["screen"], s["error"]) for s in e["steps"] if s["status"] != "success"],
         phone_log(adb_server, e["serial"])[-40:])
        for e in run["executions"] if e["status"] != "completed"]
    captions = {}
    for ex in run["executions"]:
        assert ex["status"] == "completed" and ex["account"] == "clipshare.account1"
        paths = [s["path"] for s in ex["steps"]]
        assert [p for p in paths if p.startswith("steps[")][-1] == "steps[9]"  # record_post
        assert all(s["status"] in ("success", "skipped") for s in ex["steps"]), ex["steps"]
        assert all(s["start_time"] and s["end_time"] for s in ex["steps"])
        typed = [e["text"] for e in phone_log(adb_server, ex["serial"]) if e["kind"] == "text"]
        caption = typed[-1]
        assert "${" not in caption and "@clip_creator" in caption
        captions[ex["serial"]] = caption
        record = await db.get_execution(ex["execution_id"])
        assert record["status"] == "completed" and record["end_time"]
    assert len(set(captions.values())) == 4, captions


async def test_farm_run_over_http_prints_progress_and_exits_zero(stack, farm, capsys) -> None:
    hub, _ = stack
    server = TestServer(make_app(hub))
    await server.start_server()
    try:
        url = str(server.make_url("/")).rstrip("/")
        code = await asyncio.to_thread(farm_main, ["--url", url, "run", "clipshare/post_clip",
                                                   f"phone:{farm.serials[0]}", "--wait",
                                                   "--poll", "0.2"])
    finally:
        await server.close()
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[-1].endswith(": completed")
    assert any(" steps[8] wait_for_screen success screen=clipshare/profile" in line
               for line in out), out
