"""Hub + node + rack + phone actors in one process: real nng on loopback, real adb server,
virtual phones. The multi-process farm is tested in test_farm_processes.py."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from actors.node.device.adb_server import AdbServer, free_port
from actors.node.device.driver import DeviceDriver
from actors.store.event_store import EventStore
from actors.coordinator.hub import Hub
from actors.node.node import Node
from protocol.errors import PhoneLocked

SECRET = "test-farm-secret"


async def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def start_farm(adb_server, tmp_path, *, hub_options: dict | None = None,
                     node_options: dict | None = None) -> tuple[EventStore, Hub, Node]:
    """An event store, a hub and node "rack-a" over the module's adb server, returned once
    its four virtual phones are online (close with `shutdown`)."""
    store = await EventStore(tmp_path / "coordinator.sqlite3").open()
    hub = await Hub(f"tcp://127.0.0.1:{free_port()}", SECRET, store, **(hub_options or {})).start()
    node = await Node("rack-a", hub.link.address, SECRET, AdbServer(port=adb_server.port),
                      tmp_path / "node", **(node_options or {})).start()
    try:
        await wait_for(lambda: len([p for p in hub.phones() if p["state"] == "online"]) == 4,
                       what="4 phones online")
    except BaseException:
        await shutdown(node, hub, store)
        raise
    return store, hub, node


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path, node_options={"debug_actions": True})
    yield hub, node
    await shutdown(node, hub, store)


async def shutdown(node: Node, hub: Hub, store: EventStore) -> None:
    for name, step in (("node.stop", node.stop), ("hub.close", hub.close),
                       ("store.close", store.close)):
        try:
            await asyncio.wait_for(step(), 30)
        except asyncio.TimeoutError:
            raise AssertionError(f"{name} did not finish within 30 s") from None


def phone_log(adb_server, serial: str) -> list[dict]:
    out = DeviceDriver(serial, AdbServer(port=adb_server.port)).shell("vphone log").text
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


async def test_broadcast_tap_reaches_every_phone_and_thumbnails_follow(stack, farm, adb_server):
    hub, node = stack
    q = hub.subscribe()
    results = await asyncio.gather(*(hub.run_action(s, {"type": "tap", "x": 321, "y": 654})
                                     for s in farm.serials))
    assert [r["status"] for r in results] == ["ok"] * 4
    for serial in farm.serials:
        taps = [e for e in phone_log(adb_server, serial) if e["kind"] == "tap"]
        assert taps and (taps[-1]["x"], taps[-1]["y"]) == (321, 654)
    seen = set()
    deadline = time.monotonic() + 10
    while len(seen) < 4 and time.monotonic() < deadline:
        ev = await asyncio.wait_for(q.get(), 10)
        if ev["event"] == "thumbnail":
            seen.add(ev["serial"])
            assert ev["data"]["url"].startswith(f"/api/phones/{ev['serial']}/screen?w=270")
    assert seen == set(farm.serials)
    jpeg, ctype = await hub.screen(farm.serials[0], 270)
    assert ctype == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    png, ctype = await hub.screen(farm.serials[0])
    assert ctype == "image/png" and png[:4] == b"\x89PNG"


async def test_two_concurrent_acquires_exactly_one_wins(stack, farm):
    hub, _ = stack
    serial = farm.serials[1]
    a, b = await asyncio.gather(
        hub.run_action(serial, {"type": "acquire", "execution_id": "ex-A", "lease_s": 30}),
        hub.run_action(serial, {"type": "acquire", "execution_id": "ex-B", "lease_s": 30}))
    assert sorted([a["status"], b["status"]]) == ["locked", "ok"]
    winner = "ex-A" if a["status"] == "ok" else "ex-B"
    loser = "ex-B" if winner == "ex-A" else "ex-A"
    # the loser's action is refused at once, the winner's runs
    r = await hub.run_action(serial, {"type": "tap", "x": 1, "y": 1}, execution_id=loser)
    assert r["status"] == "locked" and r["holder"] == winner
    r = await hub.run_action(serial, {"type": "tap", "x": 1, "y": 1}, execution_id=winner)
    assert r["status"] == "ok"
    await wait_for(lambda: hub.phone_rows[serial]["lock_holder"] == winner, what="lock in directory")
    # an operator's screen request names the holder (the control endpoint answers 409)
    with pytest.raises(PhoneLocked) as locked:
        await hub.screen(serial, 300)
    assert locked.value.holder == winner
    r = await hub.run_action(serial, {"type": "release", "execution_id": winner})
    assert r["status"] == "ok" and r["released"] is True
    await wait_for(lambda: hub.phone_rows[serial]["lock_holder"] is None, what="lock freed")


async def test_a_lease_that_expires_frees_the_lock(stack, farm):
    hub, _ = stack
    serial = farm.serials[2]
    r = await hub.run_action(serial, {"type": "acquire", "execution_id": "short", "lease_s": 0.5})
    assert r["status"] == "ok"
    r = await hub.run_action(serial, {"type": "acquire", "execution_id": "other", "lease_s": 5})
    assert r["status"] == "locked"
    await asyncio.sleep(0.7)
    r = await hub.run_action(serial, {"type": "acquire", "execution_id": "other", "lease_s": 5})
    assert r["status"] == "ok"
    await hub.run_action(serial, {"type": "release", "execution_id": "other"})


async def test_a_crash_restarts_only_that_phone_actor(stack, farm):
    hub, node = stack
    crashed, bystander = farm.serials[0], farm.serials[3]
    r = await hub.run_action(crashed, {"type": "acquire", "execution_id": "keep", "lease_s": 60})
    assert r["status"] == "ok"
    before = node.directory.get(crashed)
    other = node.directory.get(bystander)
    q = hub.subscribe()
    r = await hub.run_action(crashed, {"type": "debug_crash"}, execution_id="keep")
    assert r["status"] == "error" and "debug_crash" in r["error"]
    await wait_for(lambda: node.directory.get(crashed) not in (None, before), what="restart")
    assert node.directory.get(bystander) is other and other.is_alive()
    # the lock survived the restart: the phone is still "keep"'s
    r = await hub.run_action(crashed, {"type": "tap", "x": 5, "y": 5}, execution_id="intruder")
    assert r["status"] == "locked"
    r = await hub.run_action(crashed, {"type": "tap", "x": 5, "y": 5}, execution_id="keep")
    assert r["status"] == "ok"
    # The node's events travel on their own (journal, link, hub): wait for them.
    events: list[str] = []

    def drained() -> list[str]:
        while not q.empty():
            events.append(q.get_nowait()["event"])
        return events

    await wait_for(lambda: {"phone_crashed", "phone_restarted"} <= set(drained()),
                   what="phone_crashed and phone_restarted on the hub")
    await hub.run_action(crashed, {"type": "release", "execution_id": "keep"})


async def test_repeated_crashes_mark_the_phone_failed(farm, adb_server, tmp_path):
    store = await EventStore(tmp_path / "c.sqlite3").open()
    hub = await Hub(f"tcp://127.0.0.1:{free_port()}", SECRET, store).start()
    node = Node("rack-b", hub.link.address, SECRET, AdbServer(port=adb_server.port),
                tmp_path / "node", debug_actions=True)
    await node.start()
    try:
        serial = farm.serials[2]
        await wait_for(lambda: hub.phone_rows.get(serial, {}).get("state") == "online")
        node.rack.proxy().backoff_s = 0.01
        previous = None
        for attempt in range(6):
            current = await wait_for(
                lambda: (r := node.directory.get(serial)) is not None and r is not previous and r,
                what=f"actor back before crash {attempt + 1}")
            r = await hub.run_action(serial, {"type": "debug_crash"})
            assert r["status"] == "error" and "debug_crash" in r["error"], r
            previous = current
        await wait_for(lambda: hub.phone_rows[serial]["state"] == "failed", what="failed")
        r = await hub.run_action(serial, {"type": "tap", "x": 1, "y": 1})
        assert r["status"] == "error"
    finally:
        await shutdown(node, hub, store)


async def test_unplug_pauses_the_phone_keeps_its_lock_and_it_resumes(stack, farm, adb_server):
    hub, _ = stack
    serial = farm.serials[3]
    r = await hub.run_action(serial, {"type": "acquire", "execution_id": "ex-U", "lease_s": 60})
    assert r["status"] == "ok"
    DeviceDriver(serial, AdbServer(port=adb_server.port)).shell("vphone unplug 3")
    await wait_for(lambda: hub.phone_rows[serial]["state"] == "paused", what="paused")
    r = await hub.run_action(serial, {"type": "tap", "x": 1, "y": 1}, execution_id="ex-U")
    assert r["status"] == "gone"
    await wait_for(lambda: hub.phone_rows[serial]["state"] == "online", timeout=20, what="resumed")
    assert hub.phone_rows[serial]["lock_holder"] == "ex-U"
    r = await hub.run_action(serial, {"type": "tap", "x": 1, "y": 1}, execution_id="ex-U")
    assert r["status"] == "ok"
    await hub.run_action(serial, {"type": "release", "execution_id": "ex-U"})


async def test_a_stopping_node_starts_nothing_new(stack, farm, adb_server):
    """The 4 x 15 chaos bench: a node stopping (SIGTERM) had cancelled its playbacks, then
    took a run the link still delivered and played its taps while its event pump was being
    cancelled, so no record ever had them. From the start of `Node.stop` nothing new starts;
    a cancel or a release still passes."""
    from protocol.messages import RunSequence
    from sequences.model import TapStep

    hub, node = stack
    serial = farm.serials[3]
    taps = lambda: [e for e in phone_log(adb_server, serial) if e["kind"] == "tap"]  # noqa: E731
    before = len(taps())
    node.stopping = True  # what Node.stop sets before anything else
    try:
        tap = await hub.run_action(serial, {"type": "tap", "x": 7, "y": 7})
        assert tap["status"] == "error" and "stopping" in tap["error"], tap
        run = RunSequence(execution_id="ex-late", run_id="run-late", sequence="late",
                          steps=[TapStep(x=8, y=8)])
        started = await hub.send_run(serial, run)
        assert started["status"] == "error" and "stopping" in started["error"], started
        released = await hub.run_action(serial, {"type": "release", "execution_id": "ex-late"})
        assert released["status"] == "ok"
        assert "ex-late" not in node.playbacks and len(taps()) == before
        assert node.directory.record(serial).lock_holder is None
    finally:
        node.stopping = False


async def test_a_batch_cut_off_by_its_node_going_down_still_reaches_the_stream(tmp_path):
    """The 4 x 15 chaos bench: a stopping node's last batch (seven execution ends) was being
    stored when the node went down, which cancels its link worker. The events were stored
    but never emitted, and the node's re-send of events already stored emits nothing: no
    status-stream client ever saw those ends. The batch now finishes regardless."""
    from protocol.messages import Event

    class SlowStore:
        """The real event store; add_many holds until released (a loaded disk)."""

        def __init__(self, store: EventStore) -> None:
            self.store, self.release = store, asyncio.Event()

        def __getattr__(self, name):
            return getattr(self.store, name)

        async def add_many(self, *args, **kwargs):
            added = await self.store.add_many(*args, **kwargs)  # committed
            await self.release.wait()
            return added

    store = await EventStore(tmp_path / "coordinator.sqlite3").open()
    slow = SlowStore(store)
    hub = Hub(f"tcp://127.0.0.1:{free_port()}", SECRET, slow)
    q = hub.subscribe()
    try:
        event = Event(seq=1, event="execution_finished", serial=None,
                      data={"execution_id": "ex-cut", "status": "cancelled"})
        worker = asyncio.create_task(hub.handle_batch("rack-z", [event]))
        await asyncio.sleep(0.2)
        worker.cancel()  # what the link does when the node goes down
        slow.release.set()
        seen = await asyncio.wait_for(q.get(), 5)
        assert seen["event"] == "execution_finished" and seen["data"]["execution_id"] == "ex-cut"
    finally:
        hub.unsubscribe(q)
        await hub.close()
        await store.close()


async def test_a_run_sent_again_if_new_is_not_played_twice(stack, farm, adb_server):
    """What the coordinator sends at a node's hello for a record its crash left pending: the
    node plays a run marked if_new only if it never started that execution."""
    from protocol.messages import RunSequence
    from sequences.model import TapStep

    hub, node = stack
    serial = farm.serials[2]
    taps = lambda: [e for e in phone_log(adb_server, serial) if e["kind"] == "tap"  # noqa: E731
                    and (e["x"], e["y"]) == (9, 9)]
    run = RunSequence(execution_id="ex-once", run_id="run-once", sequence="once",
                      steps=[TapStep(x=9, y=9)], if_new=True)
    first = await hub.send_run(serial, run)
    assert first["status"] == "ok" and not first.get("already_played"), first
    await wait_for(lambda: "ex-once" not in node.playbacks
                   or not node.playbacks["ex-once"][0].is_alive(), what="the run to end")
    await wait_for(lambda: len(taps()) == 1, what="its tap")
    again = await hub.send_run(serial, run)
    assert again["status"] == "ok" and again.get("already_played"), again
    await asyncio.sleep(0.5)
    assert len(taps()) == 1
