"""Recording and text entry through the running farm (hub with a seeded farm database, node,
real adb server, virtual phones): a sequence recorded from actions on one phone plays back on
another to the same final screen, and a run's `type` step delivers tricky text exactly."""

from __future__ import annotations

import orjson

from tests.e2e.test_farm_inprocess import phone_log, wait_for
from tests.e2e.test_runs import CLIPSHARE, _run_done, stack  # noqa: F401 - the fixture

TRICKY = "it's \"quoted\" $HOME; echo hi && rm -rf / | cat % 100%s ü 😀"


def vphone_state(adb_server, serial: str) -> dict:
    from actors.node.device.adb_server import AdbServer
    from actors.node.device.driver import DeviceDriver

    return orjson.loads(DeviceDriver(serial, AdbServer(port=adb_server.port)).shell("vphone state").text)


async def test_a_recorded_sequence_plays_back_to_the_same_final_screen(stack, farm, adb_server):
    hub, _ = stack
    lead, other = farm.serials[0], farm.serials[1]

    async def act(action: dict, then_screen: str) -> None:
        assert (await hub.run_action(lead, action))["status"] == "ok"
        await wait_for(lambda: hub.phone_rows[lead]["last_screen"] == then_screen,
                       what=f"{then_screen} after {action}")

    await act({"type": "key", "key": "HOME"}, "launcher/home")
    rec = hub.start_recording("log_in_and_upload", "clipshare", [lead])
    await act({"type": "launch_app", "package": CLIPSHARE}, "clipshare/login")
    await act({"type": "tap", "x": 540, "y": 875}, "clipshare/login")
    await act({"type": "text", "text": "dance_daily"}, "clipshare/login")
    await act({"type": "tap", "x": 540, "y": 1075}, "clipshare/login")
    await act({"type": "text", "text": "pass123"}, "clipshare/login")
    await act({"type": "tap", "x": 540, "y": 1330}, "clipshare/feed")
    await act({"type": "tap", "x": 540, "y": 2300}, "clipshare/upload")
    saved = hub.stop_recording(rec["recording_id"])
    steps = saved["sequence"]["steps"]
    assert steps[-1] == {"type": "wait_for_screen", "screen": "clipshare/upload", "timeout_s": 15.0}
    assert steps[0] == {"type": "launch_app", "package": CLIPSHARE}  # home is not ClipShare's
    assert sum(s["type"] == "expect_screen" for s in steps) == 6

    # Played by name (the recorded folder comes before the library) on another phone.
    await hub.run_action(other, {"type": "key", "key": "HOME"})
    started = await hub.start_run("clipshare/log_in_and_upload", f"phone:{other}")
    run = await _run_done(hub, started["run_id"])
    assert run["status"] == "completed", run
    state = vphone_state(adb_server, other)
    assert (state["screen"], state["account"]) == ("upload", "dance_daily")


async def test_a_type_step_delivers_tricky_text_exactly(stack, farm, adb_server):
    hub, _ = stack
    serial = farm.serials[2]
    sequence = {
        "name": "tricky_caption", "app": "clipshare", "account": "clipshare",
        "steps": [
            {"type": "if_screen", "screen": "clipshare/profile",
             "then": [{"type": "tap", "action": "profile.go_to_feed"}]},
            {"type": "wait_for_screen", "screen": "clipshare/feed", "timeout_s": 15},
            {"type": "tap", "action": "feed.go_to_upload"},
            {"type": "wait_for_screen", "screen": "clipshare/upload", "timeout_s": 10},
            {"type": "tap", "action": "upload.caption_field"},
            {"type": "type", "text": TRICKY.replace("$", "\\$")},  # \$: a literal dollar
            {"type": "expect_screen", "screen": "clipshare/upload"},
        ]}
    started = await hub.start_run(sequence, f"phone:{serial}")
    run = await _run_done(hub, started["run_id"])
    assert run["status"] == "completed", run
    assert vphone_state(adb_server, serial)["fields"]["caption"] == TRICKY
    typed = [e for e in phone_log(adb_server, serial) if e["kind"] == "text"]
    assert typed[-1]["text"] == TRICKY
