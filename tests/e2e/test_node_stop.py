"""A node's stop is bounded even while a phone does not answer.

CI saw "node.stop did not finish within 30 s": pykka runs every message queued before a
stop, so a phone actor blocked in an adb call, with device work queued behind it, held the
rack's stop, and a playback waiting on that phone held the node's playback phase first.
Here a real virtual phone is slowed with `vphone slow` (every adb service it opens answers
late), a playback waits on it and actions queue behind it; the node must stop within the
same 30 s bound the e2e fixtures use, without running the queued device work."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver
from protocol.errors import DeviceError
from protocol.messages import RunSequence
from sequences.model import TapStep
from tests.e2e.test_farm_inprocess import phone_log, shutdown, start_farm, wait_for

# Each adb service the slowed phone opens waits this long before it answers: below the adb
# socket timeout (20 s), so a call is blocked, not failed; two of them queued held the old
# stop past 30 s. (Set over adb; reset on the farm's phone directly, which a `vphone slow 0`
# over adb would itself wait this long for.)
SLOW_MS = 18000
QUEUED_TAP = (7, 7)


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path)
    stopped: list[bool] = []
    yield hub, node, store, stopped
    if not stopped:
        await shutdown(node, hub, store)


async def test_stop_does_not_wait_for_a_phone_blocked_in_an_adb_call(stack, farm, adb_server):
    hub, node, store, stopped = stack
    serial = farm.serials[0]
    vphone = DeviceDriver(serial, AdbServer(port=adb_server.port))
    await asyncio.to_thread(vphone.shell, "vphone log --clear")
    await asyncio.to_thread(vphone.shell, f"vphone slow {SLOW_MS}")
    pending: list[asyncio.Task] = []
    try:
        events = hub.subscribe()
        run = RunSequence(execution_id=uuid.uuid4().hex, run_id="run-stop", sequence="stop",
                          steps=[TapStep(x=1, y=1)], app="clipshare",
                          package="com.phonefarm.clipshare")
        assert (await hub.send_run(serial, run))["status"] == "ok"
        while (await asyncio.wait_for(events.get(), 30))["event"] != "execution_started":
            pass
        # The playback now waits on the phone actor, which is in its (slowed) screencap;
        # two taps of the run's own queue behind it.
        pending = [asyncio.create_task(hub.run_action(serial, {
            "type": "tap", "x": QUEUED_TAP[0], "y": QUEUED_TAP[1]}, execution_id=run.execution_id))
            for _ in range(2)]
        phone = node.directory.get(serial)
        await wait_for(lambda: phone.actor_inbox.qsize() >= 2, what="taps queued on the phone")

        stopped.append(True)
        await shutdown(node, hub, store)  # fails with "node.stop did not finish within 30 s"

        assert not node.playbacks, "the playback ended (cancelled, its phone's call cut)"
        assert all(node.directory.get(s) is None for s in farm.serials)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        farm.phones[0].slow_ms = 0
    # The queued taps were refused, not played on the phone after the node had stopped.
    taps = [e for e in phone_log(adb_server, serial) if e["kind"] == "tap"]
    assert (QUEUED_TAP[0], QUEUED_TAP[1]) not in [(e["x"], e["y"]) for e in taps]


async def test_closing_a_driver_cuts_its_call_in_flight_and_refuses_later_ones(farm, adb_server):
    serial = farm.serials[1]
    adb = AdbServer(port=adb_server.port)
    vphone = DeviceDriver(serial, adb)
    await asyncio.to_thread(vphone.shell, "vphone log --clear")
    await asyncio.to_thread(vphone.shell, f"vphone slow {SLOW_MS}")
    try:
        driver = DeviceDriver(serial, adb)
        outcome: list[BaseException | None] = []

        def tap() -> None:
            try:
                driver.tap(*QUEUED_TAP)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=tap, daemon=True)
        caller.start()
        await wait_for(lambda: driver._live, what="the tap's adb connection open")
        driver.close("closed by the test")
        await asyncio.to_thread(caller.join, 60)
        # Cut, not answered late: the slowed phone would have answered the tap (no error).
        assert isinstance(outcome[0], DeviceError) and "closed by the test" in str(outcome[0])
        with pytest.raises(DeviceError, match="closed by the test"):
            driver.screenshot()  # refused without opening anything on the phone
        assert not driver._live
    finally:
        farm.phones[1].slow_ms = 0
