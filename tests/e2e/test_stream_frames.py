"""Frames from the stream feed everything (issue 16 point 3): a phone on the scrcpy agent path
is named, shown and shot from its decoded video frames, never from `screencap`, also when the
stream is downscaled (max_size): frames come back in device pixels and a registry action's
tap lands on the device pixels it names. Real adb server, virtual phones and their scrcpy
server, the hub + node stack."""

from __future__ import annotations

import asyncio
import base64

import cv2
import numpy as np
import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.agent import AgentConfig
from actors.node.device.driver import DeviceDriver
from actors.node.matcher import action_centre
from actors.node.playback import PlaybackOptions
from registry.load import DEMO_REGISTRY, load_registry
from sequences.model import ExpectScreenStep, TapStep, WaitForScreenStep
from tests.e2e.test_agent import inputs, jar, wait_until  # noqa: F401 (jar: a fixture)
from tests.e2e.test_farm_inprocess import shutdown, start_farm, wait_for
from tests.e2e.test_playback import CLIPSHARE, Events, failed_steps, make_run

BELOW_BAR = slice(200, None)  # the status bar's clock may tick between two frames


def _png(data: str | bytes) -> np.ndarray:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "not a PNG"
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)


def _off(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a[BELOW_BAR, :, :3].astype(int) - b[BELOW_BAR, :, :3]).mean())


@pytest.mark.parametrize("max_size, video", [(0, (1080, 2400)), (1600, (720, 1600))])
async def test_a_phone_on_the_agent_path_is_named_and_shot_from_its_stream(
        farm, adb_server, jar, tmp_path, max_size, video):  # noqa: F811
    store, hub, node = await start_farm(adb_server, tmp_path, node_options={
        "agent": AgentConfig(jar=jar, max_size=max_size)})
    node.playback_options = PlaybackOptions(settle_s=0.05, poll_s=0.2, unknown_confirm_s=0.3)
    events = Events(hub)
    try:
        serial = farm.serials[2]
        await wait_for(lambda: hub.phone_rows.get(serial, {}).get("io") == "agent", 30,
                       "the agent path")
        driver = node.directory.driver(serial)
        assert driver.agent.video_size == video
        # Observe (and still run) the driver's one screencap: the stream must serve instead.
        screencaps: list[str] = []
        screencap = driver._screencap

        def counted():
            screencaps.append("screencap")
            return screencap()

        driver._screencap = counted
        shell = DeviceDriver(serial, AdbServer(port=adb_server.port))
        await asyncio.to_thread(shell.shell, "vphone log --clear")

        r = await hub.run_action(serial, {"type": "launch_app", "package": CLIPSHARE,
                                          "activity": ".LoginActivity"})
        assert r["status"] == "ok", r
        # What AI recovery asks the node for: the screen's name and its frame.
        named = await hub.device_action(serial, {"type": "identify", "png": True})
        assert named["status"] == "ok", named
        assert named["screen"] == "clipshare/login"
        assert (named["width"], named["height"]) == (1080, 2400)  # device pixels, not the video's
        shown = _png(named["png"])
        truth = await asyncio.to_thread(shell.screenshot)  # screencap, the shell path's frame
        assert shown.shape == truth.shape == (2400, 1080, 4)
        assert _off(shown, truth) < 8, "the identify PNG is not the phone's screen"

        # A run taps a registry action (device pixels from the frame's size) and then fails:
        # its failure screenshot is a stream frame too.
        run = make_run([WaitForScreenStep(screen="clipshare/login", timeout_s=10),
                        TapStep(action="login.username_field"),
                        ExpectScreenStep(screen="clipshare/settings")])
        await hub.send_run(serial, run)
        fin = await events.finished(run.execution_id)
        assert fin["status"] == "failed" and fin["reason"] == "wrong_screen", fin
        failed = failed_steps(events, run.execution_id)
        assert failed and failed[-1]["screen"] == "clipshare/login"
        shot = _png(failed[-1]["screenshot_png_b64"])
        truth = await asyncio.to_thread(shell.screenshot)
        assert shot.shape == (2400, 1080, 4) and _off(shot, truth) < 8

        app = load_registry(DEMO_REGISTRY).apps["clipshare"]
        field = next(a for a in app.states["login"].actions if a.name == "username_field")
        want = action_centre(field, tuple(app.screen_size), (1080, 2400))
        taps = await asyncio.to_thread(
            wait_until, lambda: [e for e in inputs(shell) if e["kind"] == "tap"], 10, "the tap")
        assert taps[-1]["via"] == "agent"
        # Scaled to the video and back by the server: a pixel or two of rounding at most.
        assert abs(taps[-1]["x"] - want[0]) <= 2 and abs(taps[-1]["y"] - want[1]) <= 2, \
            (taps[-1], want)
        assert screencaps == [], "a frame came from screencap, not from the stream"
    finally:
        events.close()
        await shutdown(node, hub, store)
