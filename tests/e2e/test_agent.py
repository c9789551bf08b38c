"""The scrcpy agent end to end: the device driver, and the hub + node stack, driving virtual
phones through the real adb server and the virtual phones' scrcpy 3.3.4 server (which takes
any non-empty file as its jar). The phone's input log says which path an input took:
``"via": "agent"`` for the agent's control socket, no ``via`` for `input`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestServer

from actors.control.app import make_app
from actors.control.cli import main as farm_cli
from actors.node.device.adb_server import AdbServer
from actors.node.device.agent import AgentConfig
from actors.node.device.driver import DeviceDriver
from protocol.errors import DeviceError
from tests.e2e.test_farm_inprocess import shutdown, start_farm, wait_for

CLIPSHARE = "com.phonefarm.clipshare"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jar(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("agent") / "scrcpy-server-placeholder.jar"
    path.write_bytes(b"placeholder: the virtual phones run their own server\n")
    return path


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def drivers(adb_server):
    """Makes drivers (with an agent when given an AgentConfig); closes them all after."""
    made: list[DeviceDriver] = []

    def make(serial: str, config: AgentConfig | None = None, wait_io: str | None = None,
             **kwargs) -> DeviceDriver:
        driver = DeviceDriver(serial, AdbServer(port=adb_server.port), agent=config, **kwargs)
        made.append(driver)
        driver.start_agent()
        if wait_io is not None:
            wait_until(lambda: driver.io == wait_io, what=f"io {wait_io} ({driver.io_reason})")
        return driver

    yield make
    for driver in made:
        driver.close("test over")


def inputs(shell: DeviceDriver) -> list[dict]:
    return [orjson.loads(line) for line in shell.shell("vphone log").text.splitlines()
            if line.strip()]


def logged(shell: DeviceDriver, count: int) -> list[dict]:
    """The input log once it holds ``count`` entries: an action on the agent path returns
    once its messages are on the control socket, and the phone plays them a moment later."""
    def enough() -> list[dict] | None:
        log = inputs(shell)
        return log if len(log) >= count else None

    return wait_until(enough, what=f"{count} inputs logged")


def fresh(shell: DeviceDriver) -> None:
    shell.shell("am force-stop com.phonefarm.clipshare; input keyevent HOME; vphone log --clear")


# --- the driver on the agent path ----------------------------------------------------------------


def test_taps_swipes_keys_and_text_go_through_the_agent(farm, adb_server, jar, drivers):
    serial = farm.serials[0]
    shell = drivers(serial)
    fresh(shell)
    d = drivers(serial, AgentConfig(jar=jar), wait_io="agent")
    assert d.io_reason is None
    d.tap(321, 654)
    d.long_tap(100, 200, 900)
    d.swipe(100, 2000, 100, 500, 350)
    d.swipe(500, 1800, 900, 600, 400, path=[(500, 1800), (700, 1500), (800, 900), (900, 600)])
    d.key("BACK")
    d.key("DEL", repeat=3)
    d.type_text("hello world & 100%s")
    d.type_text("héllo ✓")
    d.type_text("a\nb")
    log = logged(shell, 13)
    assert all(e.get("via") == "agent" for e in log), log
    got = [(e["kind"], e.get("x", e.get("x1")), e.get("y", e.get("y1")), e.get("code"),
            e.get("text")) for e in log]
    assert got == [
        ("tap", 321, 654, None, None), ("long_press", 100, 200, None, None),
        ("swipe", 100, 2000, None, None), ("swipe", 500, 1800, None, None),
        ("key", None, None, 4, None)] + [("key", None, None, 67, None)] * 3 + [
        ("text", None, None, None, "hello world & 100%s"),
        ("key", None, None, 279, "héllo ✓"),  # not injectable: clipboard + PASTE
        ("text", None, None, None, "a"), ("key", None, None, 66, None),
        ("text", None, None, None, "b")]
    straight, along = log[2], log[3]
    assert (straight["x2"], straight["y2"]) == (100, 500)
    assert [tuple(p) for p in along["path"]][0] == (500, 1800)
    assert {(700, 1500), (800, 900)} <= {tuple(p) for p in along["path"]}
    assert (along["x2"], along["y2"]) == (900, 600)


def test_a_screenshot_after_an_action_is_a_stream_frame_showing_the_new_screen(
        farm, adb_server, jar, drivers):
    serial = farm.serials[1]
    shell = drivers(serial)
    fresh(shell)
    d = drivers(serial, AgentConfig(jar=jar), wait_io="agent")

    def no_screencap():
        raise AssertionError("screencap used: the video stream should have served")

    d._screencap = no_screencap
    home = d.screenshot()
    d.launch_app(CLIPSHARE, ".LoginActivity")
    login = d.screenshot()  # the first frame newer than the launch + the settle time
    assert login.shape == (2400, 1080, 4) and login.dtype == np.uint8
    below_bar = slice(200, None)  # the status bar clock may tick
    truth = drivers(serial).screenshot()  # raw screencap, the shell path
    changed = np.abs(login[below_bar, :, :3].astype(int) - home[below_bar, :, :3]).mean()
    off = np.abs(login[below_bar, :, :3].astype(int) - truth[below_bar, :, :3]).mean()
    assert changed > 10, "the frame after the launch still shows the home screen"
    assert off < 6, f"the stream's frame is not the screen (mean difference {off:.1f})"
    d.key("HOME")
    back_home = d.screenshot()
    assert np.abs(back_home[below_bar, :, :3].astype(int) - home[below_bar, :, :3]).mean() < 6


# --- the shell path, and why -------------------------------------------------------------------


def test_without_a_jar_the_phone_stays_on_the_shell_path_and_says_why(farm, drivers):
    serial = farm.serials[2]
    shell = drivers(serial)
    fresh(shell)
    d = drivers(serial, AgentConfig(jar=None))
    assert d.io == "shell" and "--scrcpy-server" in d.io_reason
    d.tap(11, 22)
    assert d.screenshot().shape == (2400, 1080, 4)
    assert [(e["kind"], e.get("via")) for e in inputs(shell)] == [("tap", None)]


def test_phone_io_shell_forces_the_shell_path(farm, jar, drivers):
    d = drivers(farm.serials[2], AgentConfig(mode="shell", jar=jar))
    assert d.io == "shell" and "--phone-io shell" in d.io_reason


def test_a_phone_too_old_for_scrcpy_stays_on_the_shell_path(farm, jar, drivers):
    serial = farm.serials[2]
    shell = drivers(serial)
    shell.shell("setprop ro.build.version.sdk 19")
    try:
        ios = []
        d = drivers(serial, AgentConfig(jar=jar), on_io=lambda io, why: ios.append((io, why)))
        wait_until(lambda: d.io_reason and "API 19" in d.io_reason, what="the too-old reason")
        assert d.io == "shell" and d._keeper.restarts == 0  # nothing to retry
        assert ios == [("shell", "scrcpy agent starting"), ("shell", d.io_reason)]
        fresh(shell)
        d.tap(5, 6)
        assert [e.get("via") for e in inputs(shell)] == [None]
    finally:
        shell.shell("setprop ro.build.version.sdk 30")


# --- faults ------------------------------------------------------------------------------------


def test_agent_killed_mid_long_tap_fails_it_with_the_reason_then_restarts(
        farm, adb_server, jar, drivers):
    serial = farm.serials[3]
    shell = drivers(serial)
    fresh(shell)
    # A 5 s first back-off: the shell path's turn below cannot meet the restart.
    d = drivers(serial, AgentConfig(jar=jar, backoff_first_s=5.0), wait_io="agent")
    killed_agent = d.agent
    outcome: list = []

    def hold() -> None:
        try:
            d.long_tap(540, 1200, 30_000)
            outcome.append("returned")
        except DeviceError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=hold)
    worker.start()
    wait_until(lambda: killed_agent.last_message == "InjectTouchEvent", what="the DOWN sent")
    assert "killed" in shell.shell("vphone agent-kill").text
    worker.join(15)  # not the 30 s hold: the death ends it
    assert not worker.is_alive()
    (error,) = outcome
    assert isinstance(error, DeviceError)
    assert "died" in error.reason and "not retried on the shell path" in error.reason
    # Until the restart, actions take the shell path, and the phone says why.
    assert d.io == "shell" and "scrcpy agent died" in d.io_reason and "restart 1 in 5 s" in d.io_reason
    shell.shell("vphone log --clear")
    d.tap(7, 8)
    assert [(e["kind"], e.get("via")) for e in inputs(shell)] == [("tap", None)]
    wait_until(lambda: d.io == "agent", what="the agent restarted")
    assert d.agent is not killed_agent and d._keeper.restarts == 1
    shell.shell("vphone log --clear")
    d.tap(9, 10)
    assert [(e["kind"], e.get("via")) for e in logged(shell, 1)] == [("tap", "agent")]


# --- the node and the hub --------------------------------------------------------------------------


async def _farm_phones(hub) -> list[str]:
    """`farm phones` against the hub's control endpoint: its output lines."""
    server = TestServer(make_app(hub))
    await server.start_server()
    try:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = await asyncio.to_thread(
                farm_cli, ["--url", str(server.make_url("")).rstrip("/"), "phones"])
        assert status == 0
        return out.getvalue().splitlines()
    finally:
        await server.close()


async def test_the_farm_shows_each_phone_s_io_and_a_kill_mid_action_orphans_nothing(
        farm, adb_server, jar, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path, node_options={
        "agent": AgentConfig(jar=jar), "debug_actions": True})
    try:
        await wait_for(lambda: all(p["io"] == "agent" for p in hub.phones()), 30,
                       "every phone on the agent path")
        lines = await _farm_phones(hub)
        assert lines[0].split()[-1] == "IO"
        assert [line.split()[-1] for line in lines[1:]] == ["agent"] * 4

        serial = farm.serials[0]
        shell = DeviceDriver(serial, AdbServer(port=adb_server.port))
        r = await hub.run_action(serial, {"type": "acquire", "execution_id": "ex-1", "lease_s": 60})
        assert r["status"] == "ok"
        agent = node.directory.driver(serial).agent
        held = asyncio.create_task(hub.run_action(
            serial, {"type": "long_tap", "x": 540, "y": 1200, "duration_ms": 25_000},
            execution_id="ex-1"))
        await wait_for(lambda: agent.last_message == "InjectTouchEvent", 10, "the DOWN sent")
        await asyncio.to_thread(shell.shell, "vphone agent-kill")
        result = await asyncio.wait_for(held, 15)  # the kill ends it, not the 25 s hold
        assert result["status"] == "error" and "died" in result["error"], result
        await wait_for(lambda: hub.phone_rows[serial]["io"] == "shell", 10, "io shell")
        assert "scrcpy agent died" in hub.phone_rows[serial]["io_reason"]
        await wait_for(lambda: hub.phone_rows[serial]["io"] == "agent", 30, "the agent back")
        # The lock is still the execution's: nobody else gets the phone, it can release it.
        assert hub.phone_rows[serial]["lock_holder"] == "ex-1"
        other = await hub.run_action(serial, {"type": "tap", "x": 1, "y": 1}, execution_id="ex-2")
        assert other["status"] == "locked"
        r = await hub.run_action(serial, {"type": "release", "execution_id": "ex-1"})
        assert r["status"] == "ok" and r["released"] is True
        await wait_for(lambda: hub.phone_rows[serial]["lock_holder"] is None, 10, "lock freed")
        r = await hub.run_action(serial, {"type": "tap", "x": 3, "y": 4})
        assert r["status"] == "ok"

        # A crashed phone actor gets a new driver; the old one's agent does not live on.
        before = node.directory.driver(serial).agent
        r = await hub.run_action(serial, {"type": "debug_crash"})
        assert r["status"] == "error"
        await wait_for(lambda: node.directory.driver(serial).agent not in (None, before), 30,
                       "a new agent for the restarted actor")
        assert not before.alive and "phone actor restarted" in before.death
        await wait_for(lambda: hub.phone_rows[serial]["io"] == "agent", 30, "io agent")
    finally:
        await shutdown(node, hub, store)


async def test_an_unplug_during_streaming_ends_the_action_and_the_agent_comes_back(
        farm, adb_server, jar, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path,
                                        node_options={"agent": AgentConfig(jar=jar)})
    try:
        serial = farm.serials[1]
        await wait_for(lambda: hub.phone_rows.get(serial, {}).get("io") == "agent", 30,
                       "the agent path")
        shell = DeviceDriver(serial, AdbServer(port=adb_server.port))
        agent = node.directory.driver(serial).agent
        held = asyncio.create_task(hub.run_action(
            serial, {"type": "long_tap", "x": 540, "y": 1200, "duration_ms": 25_000}))
        await wait_for(lambda: agent.last_message == "InjectTouchEvent", 10, "the DOWN sent")
        await asyncio.to_thread(shell.shell, "vphone unplug 2")
        result = await asyncio.wait_for(held, 15)
        assert result["status"] in ("gone", "error") and result["error"], result
        await wait_for(lambda: hub.phone_rows[serial]["state"] == "paused", 15, "paused")
        await wait_for(lambda: hub.phone_rows[serial]["state"] == "online", 30, "online again")
        await wait_for(lambda: hub.phone_rows[serial]["io"] == "agent", 30, "the agent back")
        r = await hub.run_action(serial, {"type": "tap", "x": 5, "y": 6})
        assert r["status"] == "ok"
        tap = await asyncio.to_thread(
            wait_until, lambda: [e for e in inputs(shell) if e["kind"] == "tap"], 10, "the tap")
        assert tap[-1] == {**tap[-1], "x": 5, "y": 6, "via": "agent"}
    finally:
        await shutdown(node, hub, store)


async def test_a_node_without_a_jar_shows_shell_and_why_in_farm_phones(farm, adb_server, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path,
                                        node_options={"agent": AgentConfig(jar=None)})
    try:
        await wait_for(lambda: all(p["io"] == "shell" for p in hub.phones()), 15, "io shell")
        lines = await _farm_phones(hub)
        assert [line.split()[-1] for line in lines[1:5]] == ["shell"] * 4
        (why,) = lines[5:]
        assert why.startswith("IO shell (") and "--scrcpy-server" in why
        assert all(serial in why for serial in farm.serials)
    finally:
        await shutdown(node, hub, store)


# --- farm-node and the demo ------------------------------------------------------------------------


@pytest.mark.parametrize("jar_content", [None, b""])
def test_farm_node_with_a_missing_or_empty_jar_exits_saying_so(tmp_path, jar_content):
    jar = tmp_path / "scrcpy-server.jar"
    if jar_content is not None:
        jar.write_bytes(jar_content)
    out = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "farm-node"), "--name", "n1", "--data",
         str(tmp_path / "data"), "--scrcpy-server", str(jar)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={**os.environ, "PHONEFARM_SECRET": "agent-test"})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("farm-node: ")]
    assert "--scrcpy-server" in line and str(jar) in line and "3.3.4" in line


def test_the_demo_node_uses_the_agent_with_a_placeholder_jar_unless_told_shell(tmp_path):
    from actors.coordinator.main import Demo, parse_args

    assert parse_args(["--demo"]).phone_io == "agent"
    assert parse_args(["--demo", "--phone-io", "shell"]).phone_io == "shell"
    argv = Demo(tmp_path, 2, "tcp://127.0.0.1:1", "secret").node_argv(adb_port=5999)
    assert argv[argv.index("--phone-io") + 1] == "agent"
    jar = Path(argv[argv.index("--scrcpy-server") + 1])
    assert jar.parent == tmp_path and jar.stat().st_size > 0  # the virtual phones take it
    argv = Demo(tmp_path, 2, "tcp://127.0.0.1:1", "secret", phone_io="shell").node_argv(5999)
    assert argv[argv.index("--phone-io") + 1] == "shell" and "--scrcpy-server" not in argv


def test_a_server_that_dies_at_start_leaves_the_shell_path_with_its_words(farm, tmp_path, drivers):
    """The virtual phone runs an empty jar as app_process does a missing class: it aborts.
    What the server printed is the reason, and the start is retried with back-off."""
    empty = tmp_path / "empty.jar"
    empty.write_bytes(b"")
    serial = farm.serials[2]
    d = drivers(serial, AgentConfig(jar=empty, backoff_first_s=30.0))
    wait_until(lambda: "did not start" in (d.io_reason or ""), what="the failed start")
    assert d.io == "shell"
    assert "exited (status 134)" in d.io_reason and "ClassNotFoundException" in d.io_reason
    assert d.io_reason.endswith("restart 1 in 30 s")
