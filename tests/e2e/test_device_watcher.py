"""The node's device watcher over a real adb server that is killed and started again (the
fault-and-scale harness's adb_kill): virtual phones plugged back into the new server before
the watcher reconnects are reported ``device`` again, so a phone its actor paused on a
command that failed meanwhile is resumed; and `reaffirm` reports a known usable phone again."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

import actors.node.device.watcher as watcher_module
from actors.node.device.adb_server import kill_adb_server, start_adb_server, start_private_adb_server
from actors.node.device.watcher import DeviceWatcher
from tests.conftest import run_adb
from tests.e2e.test_agent import wait_until
from virtual.farm import FarmSpec, VirtualFarm


@pytest.fixture
def rack():
    server = start_private_adb_server()
    farm = VirtualFarm(FarmSpec(phones=2, adb=server)).start_in_thread()
    try:
        yield server, farm
    finally:
        farm.stop_thread()
        kill_adb_server(server.port)


def test_phones_back_on_a_new_server_before_the_watcher_reconnects_are_reported_again(
        rack, monkeypatch) -> None:
    server, farm = rack
    reports: list[tuple[str, str]] = []
    # The watcher's back-off sleep waits for the test: the new server has the phones first.
    gate = threading.Event()
    monkeypatch.setattr(watcher_module, "time", SimpleNamespace(sleep=lambda s: gate.wait()))
    watcher = DeviceWatcher(server, lambda serial, state: reports.append((serial, state))).start()
    try:
        wait_until(lambda: {s for s, st in reports if st == "device"} == set(farm.serials), 20,
                   "both phones reported")
        kill_adb_server(server.port)
        wait_until(lambda: _server_gone(server), 20, "the server to go")
        start_adb_server(server.port)
        for serial in farm.serials:
            run_adb(server, "connect", serial)
        wait_until(lambda: "device" in run_adb(server, "devices").stdout.decode().split(), 20,
                   "the phones on the new server")
        reports.clear()
        gate.set()  # now the watcher reconnects: nothing changed in its eyes
        wait_until(lambda: {s for s, st in reports if st == "device"} == set(farm.serials), 20,
                   f"the phones reported again (saw {reports})")
        reports.clear()
        watcher.reaffirm([farm.serials[0], "127.0.0.1:1"])  # the unknown one is not invented
        assert reports == [(farm.serials[0], "device")]
    finally:
        gate.set()
        watcher.stop()


def _server_gone(server) -> bool:
    try:
        server.host_query("host:version")
    except Exception:
        return True
    return False


def test_the_node_reaffirms_a_phone_paused_longer_than_its_threshold(monkeypatch) -> None:
    import actors.node.node as node_module
    from actors.node.node import REAFFIRM_AFTER_S, Node

    now = [100.0]
    monkeypatch.setattr(node_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    asked: list[list[str]] = []
    views = [{"serial": "a", "state": "paused"}, {"serial": "b", "state": "online"}]
    node = SimpleNamespace(watcher=SimpleNamespace(reaffirm=asked.append),
                           directory=SimpleNamespace(views=lambda: views))
    since: dict[str, float] = {}
    Node._reaffirm_paused(node, since)
    assert asked == []  # just paused: the watcher may still report it gone
    now[0] += REAFFIRM_AFTER_S
    Node._reaffirm_paused(node, since)
    assert asked == [["a"]]
    views[0]["state"] = "online"
    Node._reaffirm_paused(node, since)
    assert since == {} and asked == [["a"]]
