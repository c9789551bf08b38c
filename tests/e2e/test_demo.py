"""`farm-coordinator --demo`: the README's first command, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from actors.node.device.adb_server import free_port
from tests.e2e.farm_auth import admin_token, api_json
from tests.e2e.test_virtual_ports import free_run, listening

ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (children of each thread)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in found:
                    found.add(k)
                    todo.append(k)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_runs_a_farm_and_ctrl_c_stops_everything(tmp_path):
    http = free_port()
    # Not the default 40001: the README test's demo may hold it (this one would fall back).
    base = free_run(2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.coordinator", "--demo", "--phones", "2", "--http",
         f"127.0.0.1:{http}", "--listen", f"tcp://127.0.0.1:{free_port()}", "--data",
         str(tmp_path / "data"), "--base-port", str(base)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{http}/" in line
        adb_port = int(re.search(r"demo adb server 127\.0\.0\.1:(\d+)", line).group(1))
        admin_token(tmp_path / "data", f"http://127.0.0.1:{http}")
        deadline = time.monotonic() + 60
        phones = []
        while time.monotonic() < deadline:
            try:
                phones = api_json(f"http://127.0.0.1:{http}/api/phones", timeout=5)["phones"]
            except OSError:
                pass
            if sum(p["state"] == "online" for p in phones) == 2:
                break
            time.sleep(0.2)
        assert sum(p["state"] == "online" for p in phones) == 2, phones
        assert sorted(p["serial"] for p in phones) == [f"127.0.0.1:{base}",
                                                        f"127.0.0.1:{base + 1}"]
        children = descendants(proc.pid)
        assert len(children) >= 2  # virtual phones and node (adb daemonizes itself)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while any(alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in children if alive(c)], "processes left behind"
        with socket.socket() as sock:  # the demo's adb server is gone too
            assert sock.connect_ex(("127.0.0.1", adb_port)) != 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_demo_on_a_taken_base_port_it_was_given_stops_saying_why(tmp_path):
    base = free_run(2)
    with listening(base + 1):
        done = subprocess.run(
            [sys.executable, "-m", "actors.coordinator", "--demo", "--phones", "2", "--http",
             f"127.0.0.1:{free_port()}", "--listen", f"tcp://127.0.0.1:{free_port()}",
             "--data", str(tmp_path / "data"), "--base-port", str(base),
             "--log-level", "WARNING"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("farm-coordinator:") and "virtual phones" in lines[-1], lines
    assert str(base + 1) in done.stderr, done.stderr  # farm-virtual's line names the port
