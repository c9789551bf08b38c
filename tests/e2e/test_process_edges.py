"""Farm processes at their edges, as an operator runs them: `farm-virtual` stopped by Ctrl-C
takes down the adb server it started (and only that one), `farm-coordinator` on a public
address answers only with a token, and `/api/nodes` counts the phones a node has now (its
hello's count went stale as phones came and went)."""

from __future__ import annotations

import asyncio
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from actors.node.device.adb_server import AdbServer, free_port, kill_adb_server, start_private_adb_server
from tests.e2e.farm_auth import admin_token, api_json
from tests.e2e.test_farm_inprocess import shutdown, start_farm, wait_for
from virtual.farm import FarmSpec, VirtualFarm

ROOT = Path(__file__).resolve().parents[2]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class VirtualProcess:
    """`python -m virtual.cli --phones 1 --adb-port PORT`, its serial read from stdout."""

    def __init__(self, adb_port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "virtual.cli", "--phones", "1", "--adb-port", str(adb_port),
             "--base-port", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            self.serial = lines.get(timeout=60).strip()
        except queue.Empty:
            self.proc.kill()
            raise AssertionError("farm-virtual printed no serial within 60 s") from None
        assert self.serial, self.proc.stderr.read() if self.proc.poll() is not None else "no serial"

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: (exit code, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("farm-virtual did not stop within 60 s of SIGINT") from None
        return self.proc.returncode, err


def test_farm_virtual_stops_the_adb_server_it_started() -> None:
    port = free_port()
    assert not answers(port)
    try:
        virtual = VirtualProcess(port)
        assert answers(port)
        assert AdbServer(port=port).device_state(virtual.serial) == "device"
        code, err = virtual.interrupt()
        assert code == 0, err
        assert "Traceback" not in err, err
        wait_until(lambda: not answers(port), 10, f"the adb server on {port} to stop")
    finally:
        if answers(port):
            kill_adb_server(port)


def test_farm_virtual_leaves_an_adb_server_it_found_running() -> None:
    server = start_private_adb_server()
    try:
        virtual = VirtualProcess(server.port)
        code, err = virtual.interrupt()
        assert code == 0, err
        time.sleep(1.0)  # a kill-server, had one been sent, has landed by now
        assert server.host_query("host:version")
    finally:
        kill_adb_server(server.port)


def test_coordinator_on_a_public_address_answers_only_with_a_token(tmp_path: Path) -> None:
    # It used to refuse a non-loopback --http without --token; it now always authenticates
    # (issue 17.3), so it serves there and every /api request needs a user's token.
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.coordinator", "--http", f"0.0.0.0:{port}",
         "--listen", f"tcp://127.0.0.1:{free_port()}", "--data", str(tmp_path / "data"),
         "--secret", "edge-secret", "--log-level", "WARNING"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("phonefarm coordinator:")
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/api/phones", timeout=10)
        assert refused.value.code == 401
        admin_token(tmp_path / "data", url)
        assert api_json(url + "/api/phones", timeout=10)["phones"] == []
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err


async def test_nodes_count_the_phones_a_node_has_now(farm, adb_server, tmp_path) -> None:
    store, hub, node = await start_farm(adb_server, tmp_path)
    extra = None
    try:
        assert [n["phones"] for n in hub.nodes()] == [4]
        # A phone plugged in after the node's hello is counted from its phone_up on.
        extra = await asyncio.to_thread(
            VirtualFarm(FarmSpec(phones=1, adb=adb_server, seed=99)).start_in_thread)
        await wait_for(lambda: extra.serials[0] in hub.phone_rows, timeout=30,
                       what="the fifth phone known")
        assert [n["phones"] for n in hub.nodes()] == [5]
    finally:
        if extra is not None:
            await asyncio.to_thread(extra.stop_thread)
        await shutdown(node, hub, store)


def test_coordinator_stopped_right_after_its_first_line_exits_cleanly(tmp_path: Path) -> None:
    # A Ctrl-C sent as soon as the "phonefarm coordinator: URL" line is read landed before the
    # stop handler was installed: a KeyboardInterrupt traceback and exit 1, nearly every time.
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "actors.coordinator", "--http", f"127.0.0.1:{free_port()}",
             "--listen", f"tcp://127.0.0.1:{free_port()}", "--data",
             str(tmp_path / f"data{attempt}"), "--secret", "edge-secret", "--log-level",
             "WARNING"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().startswith("phonefarm coordinator:")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0 and "Traceback" not in err, err
