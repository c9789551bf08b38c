"""Degenerate gestures and an agent dying under a burst of taps, on the scrcpy agent path, met
by the real stack: the control endpoint, the hub, the node, the real adb server and the virtual
phones' scrcpy 3.3.4 server (fixtures of test_agent.py).

- Every gesture the API takes is answered (ok, or an error naming the field) well before the
  hub's 30 s command deadline, the phones stay on the agent path and act afterwards. A gesture
  longer than a direct action may last is refused: a fuzzed 600 s swipe on phone:all held both
  demo phones for 10 minutes, and every later action (a 2 ms swipe) went unanswered.
- Taps sent one after another while the agent is killed (``vphone agent-kill``) are each
  performed or failed naming the death, never answered ok and lost: a control message written
  just after the server died reached only the adb server (a 60-phone bench lost 7 taps in 30).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer

from actors.control.app import make_app
from actors.control.schemas import MAX_GESTURE_MS
from actors.node.device.adb_server import AdbServer
from actors.node.device.agent import AgentConfig
from actors.node.device.driver import DeviceDriver
from protocol.messages import MAX_SWIPE_POINTS
from tests.e2e.test_agent import (drivers, fresh, inputs, jar,  # noqa: F401 (fixtures)
                                  wait_until)
from tests.e2e.tap_burst import TapBurst
from tests.e2e.test_farm_inprocess import shutdown, start_farm, wait_for

# Well before the hub's command deadline (30 s): a degenerate gesture costs nothing.
ANSWER_S = 10.0

# (action, what the phone logs of it on the agent path: the input log's kind, or None when the
# API refuses it and names this field)
DEGENERATE = [
    ({"type": "swipe", "x1": 100, "y1": 100, "x2": 100, "y2": 100, "duration_ms": 2}, "tap"),
    ({"type": "swipe", "path": [[100, 100], [100, 100]], "duration_ms": 2}, "tap"),
    ({"type": "swipe", "x1": 100, "y1": 100, "x2": 100, "y2": 100, "duration_ms": 1}, "tap"),
    ({"type": "swipe", "path": [[300, 300]] * MAX_SWIPE_POINTS, "duration_ms": 1}, "tap"),
    ({"type": "swipe", "x1": 0, "y1": 0, "x2": 100_000, "y2": 100_000, "duration_ms": 1},
     "swipe"),
    ({"type": "long_tap", "x": 100, "y": 100, "duration_ms": 1}, "tap"),
    ({"type": "tap", "x": 0, "y": 0}, "tap"),
    ({"type": "tap", "x": 1079, "y": 2399}, "tap"),  # the last pixel
    ({"type": "tap", "x": 1080, "y": 2400}, "tap"),  # just off the screen: `input tap` takes it
    ({"type": "tap", "x": 100_000, "y": 100_000}, "tap"),
    ({"type": "text", "text": " "}, "text"),
    ({"type": "text", "text": "\n"}, "key"),
    ({"type": "swipe", "x1": 1, "y1": 1, "x2": 1, "y2": 1, "duration_ms": 0}, "$.action.duration_ms"),
    ({"type": "long_tap", "x": 1, "y": 1, "duration_ms": 0}, "$.action.duration_ms"),
    ({"type": "swipe", "path": [[5, 5]], "duration_ms": 5}, "$.action.path"),
    ({"type": "text", "text": ""}, "$.action.text"),
    # Longer than any direct action may last: refused, not played for 10 minutes.
    ({"type": "swipe", "path": [[0, 0], [0, 0]], "duration_ms": 600_000}, "$.action.duration_ms"),
    ({"type": "long_tap", "x": 0, "y": 0, "duration_ms": MAX_GESTURE_MS + 1},
     "$.action.duration_ms"),
]


async def _post(client: TestClient, body: dict, within: float = ANSWER_S) -> tuple[int, dict]:
    async def call() -> tuple[int, dict]:
        async with client.post("/api/actions", json=body) as resp:
            return resp.status, await resp.json()

    try:
        return await asyncio.wait_for(call(), within)
    except asyncio.TimeoutError:
        raise AssertionError(f"{body} not answered within {within} s") from None


async def test_degenerate_gestures_are_each_answered_and_the_phones_stay_on_the_agent_path(
        farm, adb_server, jar, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path,
                                        node_options={"agent": AgentConfig(jar=jar)})
    shells = [DeviceDriver(serial, AdbServer(port=adb_server.port)) for serial in farm.serials]
    try:
        await wait_for(lambda: all(p["io"] == "agent" for p in hub.phones()), 30,
                       "every phone on the agent path")
        async with TestClient(TestServer(make_app(hub))) as client:
            for shell in shells:
                await asyncio.to_thread(fresh, shell)
            for action, expect in DEGENERATE:
                status, body = await _post(client, {"scope": "phone:all", "action": action})
                if expect.startswith("$."):
                    assert status == 400 and body.get("field") == expect, (action, body)
                    continue
                assert status == 200, (action, body)
                results = body["results"]
                assert sorted(results) == sorted(farm.serials), (action, body)
                assert {r["status"] for r in results.values()} == {"ok"}, (action, body)
                for shell in shells:  # performed once, through the agent
                    log = await asyncio.to_thread(
                        wait_until, lambda: inputs(shell) or None, 10, f"{action} performed")
                    assert [(e["kind"], e.get("via")) for e in log] == [(expect, "agent")], \
                        (action, log)
                    await asyncio.to_thread(shell.shell, "vphone log --clear")
            # The longest hold a direct action may ask for is answered before the deadline.
            serial = farm.serials[0]
            status, body = await _post(client, {
                "scope": f"phone:{serial}",
                "action": {"type": "long_tap", "x": 5, "y": 2300, "duration_ms": MAX_GESTURE_MS}},
                within=MAX_GESTURE_MS / 1000 + ANSWER_S)
            assert status == 200 and body["results"][serial]["status"] == "ok", body
            # Still on the agent path, and still acting.
            assert [p["io"] for p in hub.phones()] == ["agent"] * len(farm.serials)
            status, body = await _post(client, {"scope": "phone:all",
                                                "action": {"type": "tap", "x": 7, "y": 2300}})
            assert status == 200 and {r["status"] for r in body["results"].values()} == {"ok"}
            for shell in shells:
                taps = await asyncio.to_thread(wait_until, lambda: [
                    e for e in inputs(shell) if e["kind"] == "tap" and e["x"] == 7], 10, "the tap")
                assert taps[-1]["via"] == "agent"
    finally:
        await shutdown(node, hub, store)


def test_taps_across_agent_kills_are_each_performed_or_failed_naming_the_death(
        farm, jar, drivers):  # noqa: F811
    serial = farm.serials[1]
    shell = drivers(serial)
    fresh(shell)
    d = drivers(serial, AgentConfig(jar=jar, backoff_first_s=0.2), wait_io="agent")
    with TapBurst(d, pause_s=0.002) as burst:
        done, failed = burst.done, burst.failed
        for kill in range(4):
            agent = d.agent
            assert agent is not None
            before = len([x for x, io in done if io == "agent"])
            wait_until(lambda: len([x for x, io in done if io == "agent"]) >= before + 3,
                       what=f"taps on the agent path before kill {kill + 1}")
            assert "killed" in shell.shell("vphone agent-kill").text
            wait_until(lambda: not agent.alive, what="the death noticed")
            wait_until(lambda: d.agent not in (None, agent) and d.io == "agent",
                       what="the agent back")
        after = len(done)
        wait_until(lambda: len(done) >= after + 3, what="taps after the last restart")
    assert not burst.alive
    assert {io for _, io in done} == {"agent", "shell"}
    answered_ok = {x for x, _ in done}

    def performed() -> dict[int, int]:
        counts: dict[int, int] = {}
        for entry in inputs(shell):
            if entry["kind"] == "tap":
                counts[entry["x"]] = counts.get(entry["x"], 0) + 1
        return counts

    deadline = time.monotonic() + 10  # the last ones may still be on their way
    while True:
        counts = performed()
        lost = sorted(answered_ok - set(counts))
        if not lost or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not lost, f"taps answered ok, never performed: {lost} (failed: {failed})"
    assert max(counts.values()) == 1, "a tap was performed twice"
    # A failed tap's DOWN went out: the agent died before the UP ("is dead", or the write
    # failed on the closed socket) or before the phone was seen to take it ("died").
    for x, reason in failed:
        assert "scrcpy" in reason and any(
            words in reason for words in ("agent died", "agent is dead", "control socket")), \
            (x, reason)
        assert "not retried on the shell path" in reason, (x, reason)
