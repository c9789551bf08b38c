"""Faults of the scrcpy agent's sockets (issue 16, "Bad input and faults"), injected on the
virtual phone's scrcpy server with `vphone agent-fault` and met by the real stack: the hub,
the node, the real adb server and the virtual phones.

- corrupt (one video packet of garbage): the decoder refuses it and asks for a key frame
  (RESET_VIDEO); the agent stays, no frame built on the garbage is ever served, an action in
  flight is performed;
- truncate (the video stream ends inside a packet), header (a packet header no server
  writes), control-close (the server closes the control socket): the agent dies with the
  fault as its reason, the action in flight fails with it (its touch had begun: it is not
  replayed), the phone takes the shell path saying why, the agent comes back;

and in every case the phone's lock stays its holder's: no other holder gets the phone, the
holder acts on and releases it, and the next holder works. Taps sent one after another across
a video fault are each performed or failed with the fault named, never lost unseen."""

from __future__ import annotations

import asyncio
import base64
import threading

import cv2
import numpy as np
import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.agent import AgentConfig
from actors.node.device.driver import DeviceDriver
from tests.e2e.test_agent import (drivers, fresh, inputs, jar, logged,  # noqa: F401 (fixtures)
                                  wait_until)
from tests.e2e.tap_burst import TapBurst
from tests.e2e.test_farm_inprocess import shutdown, start_farm, wait_for

CLIPSHARE = "com.phonefarm.clipshare"
BELOW_BAR = slice(200, None)  # the status bar's clock may tick between two frames


def _png(data: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "not a PNG"
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)


def _small(image: np.ndarray) -> np.ndarray:
    """Every 8th pixel each way below the bar: enough to tell two screens, or a screen from a
    picture decoded out of garbage, apart."""
    return image[BELOW_BAR][::8, ::8, :3].astype(np.int16)


def _off(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _io_events(queue: asyncio.Queue, serial: str) -> list[tuple[str, str | None]]:
    """The phone_io events of ``serial`` the hub emitted so far (the queue is drained)."""
    seen = []
    while not queue.empty():
        event = queue.get_nowait()
        if event["event"] == "phone_io" and event["serial"] == serial:
            seen.append((event["data"]["io"], event["data"]["io_reason"]))
    return seen


class FrameSampler:
    """Every frame the agent's `FrameStore` holds while it runs (what any screenshot, the
    matcher or the live wall would be given), kept small (`_small`)."""

    def __init__(self, agent) -> None:
        self.agent = agent
        self.frames: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-sampler", daemon=True)

    def __enter__(self) -> "FrameSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        at = self.agent.frames.arrived_at or float("-inf")
        while not self._stop.is_set():
            got = self.agent.frames.wait_newer(at, 0.2)
            if got is not None:
                image, at = got
                self.frames.append(_small(image))


def test_vphone_agent_fault_names_what_it_takes_and_what_it_did(farm, adb_server):
    shell = DeviceDriver(farm.serials[0], AdbServer(port=adb_server.port))
    bad = shell.shell("vphone agent-fault bogus", check=False)
    assert bad.exit_code == 2
    assert b"unknown agent fault 'bogus'" in bad.stderr
    assert b"corrupt, truncate, header, control-close or clear" in bad.stderr
    assert shell.shell("vphone agent-fault", check=False).exit_code == 2  # usage
    # No driver with an agent runs on this phone here: nothing to arm, and nothing to clear.
    none = shell.shell("vphone agent-fault corrupt", check=False)
    assert none.exit_code == 1 and b"no agent running" in none.stderr
    assert shell.shell("vphone agent-fault clear").text == ""
    assert "agent-fault corrupt|truncate|header|control-close|clear" in shell.shell(
        "vphone help").text


async def _lock_is_not_orphaned(hub, shell: DeviceDriver, serial: str) -> None:
    """ex-1 holds the phone: another holder is refused, ex-1 taps (on the agent path) and
    releases it, then ex-2 takes it and taps."""
    assert hub.phone_rows[serial]["lock_holder"] == "ex-1"
    other = await hub.run_action(serial, {"type": "tap", "x": 1, "y": 1}, execution_id="ex-2")
    assert other["status"] == "locked", other
    await asyncio.to_thread(shell.shell, "vphone log --clear")
    r = await hub.run_action(serial, {"type": "tap", "x": 9, "y": 2300}, execution_id="ex-1")
    assert r["status"] == "ok", r
    (tap,) = await asyncio.to_thread(logged, shell, 1)
    assert (tap["kind"], tap["x"], tap["y"], tap.get("via")) == ("tap", 9, 2300, "agent")
    r = await hub.run_action(serial, {"type": "release", "execution_id": "ex-1"})
    assert r["status"] == "ok" and r["released"] is True, r
    await wait_for(lambda: hub.phone_rows[serial]["lock_holder"] is None, 10, "the lock freed")
    r = await hub.run_action(serial, {"type": "acquire", "execution_id": "ex-2", "lease_s": 60})
    assert r["status"] == "ok", r
    r = await hub.run_action(serial, {"type": "tap", "x": 11, "y": 2300}, execution_id="ex-2")
    assert r["status"] == "ok", r
    r = await hub.run_action(serial, {"type": "release", "execution_id": "ex-2"})
    assert r["status"] == "ok" and r["released"] is True, r


# (fault, phone, words of the reason that name it)
BREAKING = [("truncate", 0, "truncated"),
            ("header", 1, "packet size 4294967295"),
            ("control-close", 2, "the control socket was closed")]


@pytest.mark.parametrize("fault, phone, named", BREAKING, ids=[f for f, _, _ in BREAKING])
async def test_a_broken_socket_fails_the_action_in_flight_falls_back_and_the_agent_returns(
        farm, adb_server, jar, tmp_path, fault, phone, named):  # noqa: F811
    # A 5 s first back-off: the shell path's turn below cannot meet the restart.
    store, hub, node = await start_farm(adb_server, tmp_path, node_options={
        "agent": AgentConfig(jar=jar, backoff_first_s=5.0)})
    events = hub.subscribe()
    try:
        serial = farm.serials[phone]
        await wait_for(lambda: hub.phone_rows.get(serial, {}).get("io") == "agent", 30,
                       "the agent path")
        shell = DeviceDriver(serial, AdbServer(port=adb_server.port))
        await asyncio.to_thread(fresh, shell)
        driver = node.directory.driver(serial)
        broken = driver.agent
        _io_events(events, serial)
        r = await hub.run_action(serial, {"type": "acquire", "execution_id": "ex-1", "lease_s": 60})
        assert r["status"] == "ok", r
        held = asyncio.create_task(hub.run_action(
            serial, {"type": "long_tap", "x": 540, "y": 2300, "duration_ms": 25_000},
            execution_id="ex-1"))
        await wait_for(lambda: broken.last_message == "InjectTouchEvent", 10, "the DOWN sent")
        said = await asyncio.to_thread(shell.shell, f"vphone agent-fault {fault}")
        assert said.text.startswith(f"{fault} armed on scrcpy server scid="), said.text

        # Ended by the fault, well before the hold's 25 s and the command's 30 s deadline.
        result = await asyncio.wait_for(held, 15)
        assert result["status"] == "error", result
        assert named in result["error"] and "not retried on the shell path" in result["error"]
        await wait_for(lambda: hub.phone_rows[serial]["io"] == "shell", 10, "io shell")
        reason = hub.phone_rows[serial]["io_reason"]
        assert reason.startswith("scrcpy agent died: ") and named in reason, reason
        assert reason.endswith("restart 1 in 5 s"), reason
        assert not broken.alive and named in broken.death

        # The shell path serves the holder meanwhile.
        await asyncio.to_thread(shell.shell, "vphone log --clear")
        r = await hub.run_action(serial, {"type": "tap", "x": 7, "y": 2300}, execution_id="ex-1")
        assert r["status"] == "ok", r
        taps = await asyncio.to_thread(inputs, shell)
        assert [(e["kind"], e["x"], e.get("via")) for e in taps] == [("tap", 7, None)]

        await wait_for(lambda: hub.phone_rows[serial]["io"] == "agent", 30, "the agent back")
        assert node.directory.driver(serial) is driver  # the phone actor did not restart
        assert driver.agent not in (None, broken) and driver._keeper.restarts == 1
        assert [io for io, _ in _io_events(events, serial)] == ["shell", "agent"]
        await _lock_is_not_orphaned(hub, shell, serial)
    finally:
        hub.unsubscribe(events)
        await shutdown(node, hub, store)


async def test_a_corrupt_packet_is_refused_a_key_frame_follows_and_nothing_falls_back(
        farm, adb_server, jar, tmp_path):  # noqa: F811
    store, hub, node = await start_farm(adb_server, tmp_path,
                                        node_options={"agent": AgentConfig(jar=jar)})
    events = hub.subscribe()
    try:
        serial = farm.serials[3]
        await wait_for(lambda: hub.phone_rows.get(serial, {}).get("io") == "agent", 30,
                       "the agent path")
        shell = DeviceDriver(serial, AdbServer(port=adb_server.port))
        await asyncio.to_thread(fresh, shell)
        driver = node.directory.driver(serial)
        agent = driver.agent
        _io_events(events, serial)
        # Observe (and still run) the driver's screencap: the stream must serve throughout.
        screencaps: list[str] = []
        screencap = driver._screencap

        def counted():
            screencaps.append("screencap")
            return screencap()

        driver._screencap = counted
        home = _small(await asyncio.to_thread(shell.screenshot))
        r = await hub.run_action(serial, {"type": "acquire", "execution_id": "ex-1", "lease_s": 60})
        assert r["status"] == "ok", r

        with FrameSampler(agent) as sampler:
            # An action in flight across the fault is performed.
            held = asyncio.create_task(hub.run_action(
                serial, {"type": "long_tap", "x": 540, "y": 2300, "duration_ms": 1500},
                execution_id="ex-1"))
            await wait_for(lambda: agent.last_message == "InjectTouchEvent", 10, "the DOWN sent")
            said = await asyncio.to_thread(shell.shell, "vphone agent-fault corrupt")
            assert said.text.startswith("corrupt armed on scrcpy server scid="), said.text
            await wait_for(lambda: agent.decode_errors == 1, 10, "the garbage refused")
            result = await asyncio.wait_for(held, 15)
            assert result["status"] == "ok", result
            (press,) = await asyncio.to_thread(logged, shell, 1)
            assert (press["kind"], press["x"], press["y"], press.get("via")) == (
                "long_press", 540, 2300, "agent")

            # Garbage on a screen change: the next frame shown is the new screen, whole.
            await asyncio.to_thread(shell.shell, "vphone agent-fault corrupt")
            r = await hub.run_action(serial, {"type": "launch_app", "package": CLIPSHARE,
                                              "activity": ".LoginActivity"}, execution_id="ex-1")
            assert r["status"] == "ok", r
            await wait_for(lambda: agent.decode_errors == 2, 10, "the second garbage refused")
            named = await hub.device_action(serial, {"type": "identify", "png": True},
                                            execution_id="ex-1")
            assert named["status"] == "ok" and named["screen"] == "clipshare/login", named
            truth = await asyncio.to_thread(shell.screenshot)
            login = _small(truth)
            assert _off(_small(_png(named["png"])), login) < 8, "the frame is not the screen"
            # A frame or two of the repeats after the key frame, then stop sampling.
            count = agent.frames.count
            await wait_for(lambda: agent.frames.count >= count + 2, 10, "frames after it")

        assert screencaps == [], "the stream stopped serving: screencap was used"
        # Every frame the store held was one screen or the other, none decoded from garbage.
        assert sampler.frames, "no frame sampled"
        worst = max(min(_off(f, home), _off(f, login)) for f in sampler.frames)
        assert worst < 8, f"a frame served is neither screen (mean difference {worst:.1f})"
        assert _off(sampler.frames[-1], login) < 8
        # Recovered on a key frame: the same agent, never the shell path.
        assert driver.agent is agent and agent.alive and driver._keeper.restarts == 0
        assert _io_events(events, serial) == [] and hub.phone_rows[serial]["io"] == "agent"
        await _lock_is_not_orphaned(hub, shell, serial)
    finally:
        hub.unsubscribe(events)
        await shutdown(node, hub, store)


# (fault, words of the failure that name it; None: the agent lives on)
STREAMED = [("corrupt", None), ("truncate", "truncated"), ("header", "packet size 4294967295")]


@pytest.mark.parametrize("fault, named", STREAMED, ids=[f for f, _ in STREAMED])
def test_taps_sent_across_a_video_fault_are_each_performed_or_failed_naming_it(
        farm, jar, drivers, fault, named):  # noqa: F811
    serial = farm.serials[0]
    shell = drivers(serial)
    fresh(shell)
    d = drivers(serial, AgentConfig(jar=jar, backoff_first_s=30.0), wait_io="agent")
    agent = d.agent
    with TapBurst(d) as burst:
        done, failed = burst.done, burst.failed
        wait_until(lambda: len(done) >= 20, what="taps on the agent path")
        assert "armed" in shell.shell(f"vphone agent-fault {fault}").text
        if named is None:
            wait_until(lambda: agent.decode_errors == 1, what="the garbage refused")
        else:
            wait_until(lambda: d.io == "shell", what="the shell path")
        after = len(done)
        wait_until(lambda: len(done) >= after + 20, what="taps after the fault")
    assert not burst.alive
    expected = {x for x, _ in done}
    wait_until(lambda: expected <= {e["x"] for e in inputs(shell) if e["kind"] == "tap"},
               what="every tap answered ok on the phone")
    for x, reason in failed:  # a tap whose DOWN went out when the agent died
        assert named is not None and named in reason, (x, reason)
        assert "not retried on the shell path" in reason, (x, reason)
    if named is None:
        assert failed == [] and {io for _, io in done} == {"agent"}
        assert d.agent is agent and agent.alive and d._keeper.restarts == 0
    else:
        assert {io for _, io in done} == {"agent", "shell"}

