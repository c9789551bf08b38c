"""go_to over real adb and virtual phones running ClipShare: the library's login, switch_account
and post_clip start from whatever ClipShare screen the phone is on (the node walks the
registry's screen graph there, re-planning after a wrong turn), and a go_to with no route
left fails naming the path it tried, with its screenshot.

The phones are first put somewhere with plain taps (a RunSequence of registry taps), so what
is tested is only go_to and the library's use of it."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import orjson
import pytest

from actors.coordinator.hub import Hub
from sequences.model import GoToStep, LaunchAppStep, TapStep, WaitForScreenStep
from tests.e2e.run_stack import run_stack
from tests.e2e.test_farm_inprocess import phone_log
from tests.e2e.test_playback import Events, failed_steps, make_run, switch_steps
from tests.e2e.test_screen_identification import vphone

CLIPSHARE = "com.phonefarm.clipshare"
DEMO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "apps"


async def _stack(farm, adb_server, tmp_path, **node_options):
    """run_stack with ClipShare stopped on every phone and an execution event listener."""
    async with run_stack(farm, adb_server, tmp_path, node_options=node_options or None) \
            as (hub, db, node):
        for serial in farm.serials:
            await hub.run_action(serial, {"type": "stop_app", "package": CLIPSHARE})
        events = Events(hub)
        try:
            yield hub, events
        finally:
            events.close()


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    async for out in _stack(farm, adb_server, tmp_path):
        yield out


async def play(hub: Hub, events: Events, serial: str, steps: list, **kw) -> dict:
    """Play ``steps`` (a RunSequence of ClipShare) on ``serial``; its execution_finished."""
    run = make_run(steps, **kw)
    assert (await hub.send_run(serial, run))["status"] == "ok"
    fin = await events.finished(run.execution_id)
    fin["failed"] = failed_steps(events, run.execution_id)
    return fin


async def put_on(hub: Hub, events: Events, serial: str, username: str, taps: list) -> None:
    """Logged in as ``username`` on the feed (launch, and log in if needed), then ``taps``."""
    fin = await play(hub, events, serial, [LaunchAppStep(app="clipshare"),
                                           *switch_steps(username), *taps])
    assert fin["status"] == "completed", fin


async def run_done(hub: Hub, run_id: str, timeout: float = 120.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while (run := await hub.get_run(run_id))["status"] == "running":
        assert asyncio.get_running_loop().time() < deadline, f"run {run_id} still running: {run}"
        await asyncio.sleep(0.2)
    return run


def problems(run: dict) -> list:
    return [(e["serial"], e["status"], e["error"],
             [(s["path"], s["status"], s["screen"], s["error"]) for s in e["steps"]
              if s["status"] != "success"]) for e in run["executions"]]


TO_PROFILE = [TapStep(action="feed.go_to_profile"),
              WaitForScreenStep(screen="clipshare/profile", timeout_s=5)]


async def test_library_login_started_on_the_profile_logs_in(stack, farm, adb_server):
    """The issue's case: clipshare/login scheduled on a phone showing the profile failed with
    'clipshare/feed not shown within 15s (saw clipshare/profile)'."""
    hub, events = stack
    serial = farm.serials[0]
    await put_on(hub, events, serial, "dance_daily", TO_PROFILE)
    assert orjson.loads(vphone(adb_server, serial, "state"))["screen"] == "profile"
    run = await run_done(hub, (await hub.start_run("clipshare/login", f"phone:{serial}"))["run_id"])
    assert run["status"] == "completed", problems(run)
    (execution,) = run["executions"]
    go_to = next(s for s in execution["steps"] if s["path"] == "steps[1]")  # after launch_app
    assert (go_to["status"], go_to["screen"]) == ("success", "clipshare/login"), go_to
    state = orjson.loads(vphone(adb_server, serial, "state"))
    # The phone's first ClipShare account: logged in as it, on the feed.
    assert (state["account"], state["screen"]) == ("clip_creator", "feed"), state


async def test_post_clip_for_another_account_from_the_upload_screen(stack, farm, adb_server,
                                                                    caplog):
    """The switch_account the run needs first starts on the upload screen, opened from the
    profile: Cancel goes back there, not to the feed its linked_state names (a wrong turn,
    planned on from); then post_clip walks to the feed itself."""
    hub, events = stack
    serial = farm.serials[1]
    await put_on(hub, events, serial, "clip_creator",
                 TO_PROFILE + [TapStep(action="profile.go_to_upload"),
                               WaitForScreenStep(screen="clipshare/upload", timeout_s=5)])
    vphone(adb_server, serial, "log --clear")
    caplog.set_level(logging.INFO, logger="actors.node.playback")
    started = await hub.start_run("clipshare/post_clip", f"account:clipshare.account2@{serial}")
    run = await run_done(hub, started["run_id"])
    assert run["status"] == "completed", problems(run)
    state = orjson.loads(vphone(adb_server, serial, "state"))
    assert state["account"] == "dance_daily" and state["screen"] == "profile"
    assert "@dance_daily" in state["last_post"]
    typed = [e["text"] for e in phone_log(adb_server, serial) if e["kind"] == "text"]
    assert typed[:2] == ["dance_daily", "pass123"] and len(typed) == 3, typed
    assert state["last_post"] == typed[2]
    walked = [r.getMessage() for r in caplog.records if " done: " in r.getMessage()]
    assert any("go_to clipshare/login done: clipshare/upload --cancel--> clipshare/feed (saw "
               "clipshare/profile); clipshare/profile --switch_account--> " in m for m in walked), walked


@pytest.fixture()
def lying_registry(tmp_path) -> Path:
    """The demo registry, but the profile's Switch account claims to open the settings."""
    root = tmp_path / "lying-registry"
    shutil.copytree(DEMO_REGISTRY, root)
    app = json.loads((root / "clipshare.json").read_text())
    action = next(a for a in app["states"]["profile"]["actions"] if a["name"] == "switch_account")
    action["linked_state"] = "settings"
    (root / "clipshare.json").write_text(json.dumps(app, indent=2))
    return root


@pytest.fixture()
async def lying_stack(farm, adb_server, tmp_path, lying_registry):
    (tmp_path / "farm").mkdir()
    async for out in _stack(farm, adb_server, tmp_path / "farm", registry=lying_registry):
        yield out


async def test_go_to_without_a_route_left_fails_naming_the_path_tried(lying_stack, farm,
                                                                     adb_server):
    hub, events = lying_stack
    serial = farm.serials[2]
    await put_on(hub, events, serial, "clip_creator", [])
    fin = await play(hub, events, serial, [GoToStep(screen="clipshare/settings", timeout_s=30)])
    assert fin["status"] == "failed" and fin["reason"] == "no_route", fin
    assert fin["failed_step"] == "steps[0]"
    error = fin["error"]
    assert error.startswith("go_to clipshare/settings: no route from "
                            "clipshare/account_switcher to clipshare/settings"), error
    assert ("path tried: clipshare/feed --go_to_profile--> clipshare/profile; "
            "clipshare/profile --switch_account--> clipshare/settings (saw "
            "clipshare/account_switcher); ended on clipshare/account_switcher") in error, error
    (step,) = fin["failed"]
    assert step["path"] == "steps[0]" and step["type"] == "go_to"
    assert step["attempts"] == 1  # no route is final: no retry tier
    # The coordinator keeps the failed step's screenshot on disk (the event names it).
    assert Path(step["screenshot"]).read_bytes().startswith(b"\x89PNG"), step
    assert orjson.loads(vphone(adb_server, serial, "state"))["screen"] == "account_switcher"
