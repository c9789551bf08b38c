"""AI recovery end to end in one process: hub (farm database, unknown-screens queue, an
AIClient on the scripted OpenAI-compatible server) + node + phone actors over a real adb server
and virtual phones. The node's registry lacks the ClipShare 'Video options' dialog, so a long
tap on a video lands the sequence on a screen nobody registered; the scripted model's tool
calls are played on the phone until a screen the sequence can go on from shows."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from yarl import URL

from actors.coordinator.ai.client import AIClient, AIConfig
from actors.access.principal import SUPER_LOCAL
from actors.control.app import make_app
from actors.control.cli import main as farm_main
from actors.coordinator.hub import Hub
from actors.coordinator.phone_pause import PAUSE_HOLDER
from actors.coordinator.unknown_screens import UnknownScreenQueue
from registry.load import DEMO_REGISTRY
from tests.e2e.run_stack import run_stack
from tests.e2e.test_farm_inprocess import phone_log, wait_for
from tests.e2e.test_screen_identification import vphone
from virtual.model_server import reply_error, reply_malformed_tool, reply_tool

CLIPSHARE = "com.phonefarm.clipshare"
SAVE_BUTTON = (322, 1460)  # the dialog's "Save" button (dismisses it)

SEQUENCE = {
    "name": "open_profile_after_long_press",
    "app": "clipshare", "account": "clipshare",
    "recovery_prompt": "Get ClipShare back to its video feed: close any dialog that is open.",
    "retry": {"immediate": 0, "short": 0},
    "steps": [
        {"type": "wait_for_screen", "screen": "clipshare/feed", "timeout_s": 15},
        {"type": "long_tap", "x": 540, "y": 1000},          # opens 'Video options'
        {"type": "tap", "action": "feed.go_to_profile"},
        {"type": "wait_for_screen", "screen": "clipshare/profile", "timeout_s": 10},
    ]}


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture()
async def stack(farm, adb_server, tmp_path, scripted_model):
    registry = tmp_path / "registry"
    shutil.copytree(DEMO_REGISTRY, registry)
    app_file = registry / "clipshare.json"
    app = json.loads(app_file.read_text())
    del app["interrupts"]["video_options"]
    app_file.write_text(json.dumps(app))
    model = scripted_model
    ai = AIClient(AIConfig(base_url=model.base_url, model="scripted", timeout_s=10),
                  sleep=no_sleep)
    hub_options = {"ai": ai, "unknown": UnknownScreenQueue(tmp_path / "unknown-screens")}
    async with run_stack(farm, adb_server, tmp_path, hub_options=hub_options,
                         node_options={"registry": registry}) as (hub, db, _node):
        hub.recovery.options.settle_s = 0.2
        hub.recovery.options.max_steps = 3
        yield hub, db, model


async def run_to_end(hub: Hub, serial: str, timeout: float = 120.0) -> dict:
    started = await hub.start_run(SEQUENCE, f"phone:{serial}")
    (execution,) = started["executions"].values()
    assert execution["status"] == "pending", execution
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = await hub.get_run(started["run_id"])
        if run["status"] != "running":
            return run["executions"][0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run still running: {run}")
        await asyncio.sleep(0.2)


def drain(q: asyncio.Queue) -> list[dict]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def events(q: asyncio.Queue, serial: str) -> list[dict]:
    return [ev for ev in drain(q)
            if ev["serial"] == serial and ev["event"].startswith("recovery_")]


async def test_unknown_dialog_recovered_and_sequence_completes_each_step_once(
        stack, farm, adb_server, capsys) -> None:
    hub, db, model = stack
    serial = farm.serials[0]
    model.script = [reply_tool("tap", x=SAVE_BUTTON[0], y=SAVE_BUTTON[1])]
    await hub.run_action(serial, {"type": "stop_app", "package": CLIPSHARE})
    vphone(adb_server, serial, "log --clear")
    q = hub.subscribe()
    ex = await run_to_end(hub, serial)
    assert ex["status"] == "completed", (ex, phone_log(adb_server, serial)[-20:])
    by_path = {}
    for step in ex["steps"]:
        by_path.setdefault(step["path"], []).append(step["status"])
    assert by_path["steps[1]"] == ["recovered"]
    assert by_path["steps[2]"] == ["success"] and by_path["steps[3]"] == ["success"]
    # On the phone: one long press, the model's one tap, one tap on Profile (nothing twice).
    log = phone_log(adb_server, serial)
    assert len([e for e in log if e["kind"] == "long_press"]) == 1
    taps = [(e["x"], e["y"]) for e in log if e["kind"] == "tap"]
    assert taps.count(SAVE_BUTTON) == 1
    profile_taps = [t for t in taps if t[1] >= 2200 and t[0] >= 720]
    assert len(profile_taps) == 1, taps
    # The model saw the frame and the goal.
    request = model.requests[-1]
    text_part, image = request["messages"][1]["content"]
    text = text_part["text"]
    assert "clipshare/feed" in text and "does not know" in text
    assert image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert {t["function"]["name"] for t in request["tools"]} >= {"tap", "key", "give_up"}
    # The attempt's record, its frames, the queued screen, the stream events.
    (row,) = await db.recovery_attempts(execution_key=ex["execution_id"])
    assert row["status"] == "succeeded" and row["steps"] == 1 and row["resume_from"] == 2
    assert row["reached_screen"] == "clipshare/feed" and row["step_path"] == "steps[1]"
    assert Path(row["screenshot_before"]).is_file() and Path(row["screenshot_after"]).is_file()
    assert json.loads(row["actions_taken"])[0]["tool"] == "tap"
    assert "close any dialog" in row["recovery_prompt"]
    assert row["screen"] and any(e["id"] == row["screen"] for e in hub.unknown_screens())
    kinds = [e["event"] for e in events(q, serial)]
    assert kinds == ["recovery_started", "recovery_step", "recovery_succeeded"], kinds
    # Queryable over HTTP and with `farm recovery`.
    server = TestServer(make_app(hub))
    await server.start_server()
    try:
        client = server.make_url("/")
        async with ClientSession() as http:
            async with http.get(client.join(URL("api/recovery/stats?by=sequence"))) as r:
                stats = await r.json()
            async with http.get(client.join(URL(
                    f"api/recovery/attempts?execution_id={ex['execution_id']}"))) as r:
                (attempt,) = (await r.json())["attempts"]
            async with http.get(client.join(URL("api/recovery/stats?by=colour"))) as r:
                assert r.status == 400 and (await r.json())["field"] == "by"
        code = await asyncio.to_thread(farm_main, ["--url", str(client).rstrip("/"),
                                                   "recovery", "--by", "screen"])
    finally:
        await server.close()
    assert stats["groups"][0]["sequence"] == "inline/open_profile_after_long_press"
    assert stats["success_rate"] == 1.0 and stats["attempts"] == 1
    assert attempt["actions_taken"][0]["arguments"] == {"x": 322, "y": 1460}
    assert attempt["ai_response"][0]["tool_calls"][0]["name"] == "tap"
    out = capsys.readouterr().out
    assert code == 0 and "100%" in out and ex["execution_id"] in out


async def test_model_that_never_reaches_the_goal_is_stopped_and_the_execution_fails(
        stack, farm, adb_server) -> None:
    hub, db, model = stack
    serial = farm.serials[1]
    model.script = [reply_tool("wait", seconds=0)]
    await hub.run_action(serial, {"type": "stop_app", "package": CLIPSHARE})
    q = hub.subscribe()
    ex = await run_to_end(hub, serial)
    assert ex["status"] == "failed" and ex["reason"] == "recovery_failed"
    assert "max_steps" in ex["error"] and "3 step(s) tried" in ex["error"], ex["error"]
    assert "unknown_screen at steps[1]" in ex["error"]
    assert len(model.requests) == 3
    (row,) = await db.recovery_attempts(execution_key=ex["execution_id"])
    assert row["status"] == "failed" and row["steps"] == 3 and row["error"].startswith("max_steps")
    assert [e["event"] for e in events(q, serial)][-1] == "recovery_failed"
    # The phone is free again (the lock was given back), and usable.
    await wait_for(lambda: hub.phone_rows[serial]["lock_holder"] is None, what="lock freed")
    out = await hub.run_action(serial, {"type": "tap", "x": SAVE_BUTTON[0], "y": SAVE_BUTTON[1]})
    assert out["status"] == "ok"


async def test_server_error_and_malformed_tool_call_are_retried_then_recovery_goes_on(
        stack, farm, adb_server) -> None:
    hub, db, model = stack
    serial = farm.serials[2]
    model.script = [reply_error(500), reply_malformed_tool("tap"),
                    reply_tool("tap", x=SAVE_BUTTON[0], y=SAVE_BUTTON[1])]
    await hub.run_action(serial, {"type": "stop_app", "package": CLIPSHARE})
    ex = await run_to_end(hub, serial)
    assert ex["status"] == "completed", ex
    (row,) = await db.recovery_attempts(execution_key=ex["execution_id"])
    (response,) = json.loads(row["ai_response"])
    assert response["attempts"] == 3 and row["status"] == "succeeded"


async def test_model_always_failing_is_reported_and_repeated_failures_pause_the_phone(
        stack, farm, adb_server) -> None:
    hub, db, model = stack
    serial = farm.serials[3]
    hub.recovery.options.pause_after_failures = 2
    model.script = [reply_error(500)]
    q = hub.subscribe()
    for attempt in (1, 2):
        await hub.run_action(serial, {"type": "stop_app", "package": CLIPSHARE})
        ex = await run_to_end(hub, serial)
        assert ex["status"] == "failed" and "ai_error: http 500" in ex["error"], ex
        (row,) = await db.recovery_attempts(execution_key=ex["execution_id"])
        assert row["status"] == "failed" and row["steps"] == 1
    assert len(model.requests) == 2 * 4  # 1 try + 3 retries, per attempt
    # Two failures in a row: the phone is paused (reason recovery_failures), shown as such in
    # GET /api/phones and on the stream, with the lock held underneath on its node.
    await wait_for(lambda: hub.phone_rows[serial]["lock_holder"] == PAUSE_HOLDER,
                   what="pause lock held on the node")
    seen = [e for e in drain(q) if e["serial"] == serial]
    assert "recovery_phone_paused" in [e["event"] for e in seen]
    (paused_event,) = [e for e in seen if e["event"] == "phone_paused"]
    assert paused_event["data"]["reason"] == "recovery_failures"
    assert paused_event["data"]["detail"]["failures_in_a_row"] == 2
    server = TestServer(make_app(hub))
    await server.start_server()
    try:
        url = str(server.make_url("/")).rstrip("/")
        async with ClientSession() as http:
            async with http.get(f"{url}/api/phones") as r:
                view = next(p for p in (await r.json())["phones"] if p["serial"] == serial)
            assert view["state"] == "paused" and view["paused"]["reason"] == "recovery_failures"
            # New work is refused with the reason, and nothing reaches the phone.
            started = await hub.start_run(SEQUENCE, f"phone:{serial}")
            (refused,) = started["executions"].values()
            assert refused["status"] == "paused", refused
            assert "recovery_failures" in refused["error"] and f"farm resume {serial}" in refused["error"]
            record = await db.get_execution(refused["execution_id"])
            assert record["status"] == "failed" and record["error_reason"] == "phone_paused"
            # Resuming a phone that is not paused is refused (409); the operator resumes it.
            async with http.post(f"{url}/api/phones/{farm.serials[0]}/resume") as r:
                assert r.status == 409 and "not paused" in (await r.json())["error"]
            code = await asyncio.to_thread(farm_main, ["--url", url, "resume", serial,
                                                       "--reason", "checked the phone"])
            assert code == 0
            async with http.get(f"{url}/api/phones") as r:
                view = next(p for p in (await r.json())["phones"] if p["serial"] == serial)
            assert view["paused"] is None and view["state"] == "online"
    finally:
        await server.close()
    await wait_for(lambda: hub.phone_rows[serial]["lock_holder"] is None, what="lock given back")
    assert "phone_resumed" in [e["event"] for e in drain(q) if e["serial"] == serial]
    trail = await db.audit_trail("phone_pause", serial)
    assert [t["reason"] for t in trail] == ["resumed: checked the phone",
                                            "paused: recovery_failures"]
    # The caller of the API (an app with no access control: the local super user).
    assert trail[0]["actor"] == SUPER_LOCAL.actor and trail[0]["after"] is None
    # Recovery works again.
    await hub.run_action(serial, {"type": "tap", "x": SAVE_BUTTON[0], "y": SAVE_BUTTON[1]})
    model.script = [reply_tool("tap", x=SAVE_BUTTON[0], y=SAVE_BUTTON[1])]
    await hub.run_action(serial, {"type": "stop_app", "package": CLIPSHARE})
    ex = await run_to_end(hub, serial)
    assert ex["status"] == "completed", ex
    stats = {s["serial"]: s for s in await db.recovery_stats("serial")}
    assert stats[serial]["attempts"] == 3 and stats[serial]["succeeded"] == 1
