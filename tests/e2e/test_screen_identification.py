"""Screen identification in the running farm: hub + node (with the demo registry's matcher)
+ phone actors over a real adb server and virtual phones. After every action the phone actor
names the screen, clears a recognised popup with its handler, and queues an unknown screen
on the coordinator once."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from actors.node.device.adb_server import AdbServer
from actors.coordinator.unknown_screens import UnknownScreenQueue
from actors.node.device.driver import DeviceDriver
from tests.e2e.test_farm_inprocess import phone_log, shutdown, start_farm, wait_for

CLIPSHARE = "com.phonefarm.clipshare"


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path, hub_options={
        "unknown": UnknownScreenQueue(tmp_path / "unknown-screens")})
    yield hub, node
    await shutdown(node, hub, store)


async def next_event(q: asyncio.Queue, name: str, serial: str, timeout: float = 15.0,
                     where=lambda data: True) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {name} event for {serial} within {timeout}s")
        ev = await asyncio.wait_for(q.get(), left)
        if ev["event"] == name and ev["serial"] == serial and where(ev["data"]):
            return ev


def vphone(adb_server, serial: str, command: str) -> str:
    return DeviceDriver(serial, AdbServer(port=adb_server.port)).shell(f"vphone {command}").text


async def test_screens_named_popups_cleared_unknown_queued(stack, farm, adb_server):
    hub, node = stack
    serial = farm.serials[0]
    q = hub.subscribe()

    # 1. A launch lands on the login screen, and the directory says so.
    assert (await hub.run_action(serial, {"type": "launch_app", "package": CLIPSHARE}))["status"] == "ok"
    await wait_for(lambda: hub.phone_rows[serial]["last_screen"] == "clipshare/login",
                   what="clipshare/login in the directory")

    # 2. A popup over it is recognised and cleared by its handler (the Dismiss button).
    vphone(adb_server, serial, "popup update_available")
    vphone(adb_server, serial, "log --clear")
    await hub.run_action(serial, {"type": "key", "key": "VOLUME_UP"})  # changes nothing
    handled = await next_event(q, "interrupt_handled", serial)
    assert handled["data"]["screen"] == "clipshare/interrupt:update_available"
    assert handled["data"]["action"] == "dismiss"
    await wait_for(lambda: hub.phone_rows[serial]["last_screen"] == "clipshare/login",
                   what="back on clipshare/login after the popup")
    taps = [e for e in phone_log(adb_server, serial) if e["kind"] == "tap"]
    assert (taps[0]["x"], taps[0]["y"]) == (handled["data"]["x"], handled["data"]["y"])
    assert orjson.loads(vphone(adb_server, serial, "state"))["popup"] is None

    # 3. A global (system) popup is an interrupt too, over any app.
    vphone(adb_server, serial, "popup low_battery")
    await hub.run_action(serial, {"type": "key", "key": "VOLUME_UP"})
    handled = await next_event(q, "interrupt_handled", serial)
    assert handled["data"]["screen"] == "global/interrupt:low_battery"

    # 4. A screen nobody registered (the Chrome stub) is queued once, with its frame.
    await hub.run_action(serial, {"type": "launch_app", "package": "com.android.chrome"})
    ev = await next_event(q, "unknown_screen", serial)
    assert ev["data"]["url"].startswith("/api/unknown-screens/")
    assert ev["data"]["previous_screen"] == "clipshare/login"
    assert ev["data"]["last_action"] == {"type": "launch_app", "package": "com.android.chrome",
                                         "activity": None} or \
        ev["data"]["last_action"]["package"] == "com.android.chrome"
    await hub.run_action(serial, {"type": "key", "key": "VOLUME_UP"})  # same screen again
    await hub.run_action(serial, {"type": "key", "key": "VOLUME_DOWN"})
    await wait_for(lambda: hub.phone_rows[serial]["last_screen"] == "unknown", what="unknown")
    await asyncio.sleep(0.5)
    entries = hub.unknown_screens()
    assert len(entries) == 1 and entries[0]["serials"] == [serial] and entries[0]["seen"] == 1
    png = hub.unknown_screen_image(entries[0]["id"])
    assert png.startswith(b"\x89PNG")

    # 5. Home: the launcher is identified whatever app was active before.
    await hub.run_action(serial, {"type": "key", "key": "HOME"})
    await wait_for(lambda: hub.phone_rows[serial]["last_screen"] == "launcher/home",
                   what="launcher/home")
    await wait_for(lambda: hub.phone_rows[serial]["active_app"] == "com.android.launcher3",
                   what="active app follows the screen")
