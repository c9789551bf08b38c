"""Predictable serials for virtual phones: `--base-port P` gives 127.0.0.1:P, P+1, ..; the
default (40001) falls back to random ports, saying so once, when one of them is taken; a port
the operator chose that is taken stops farm-virtual with one line."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from actors.node.device.adb_server import AdbServer, free_port
from virtual.cli import DEFAULT_BASE_PORT, parse_args
from virtual.farm import FarmSpec, VirtualFarm

ROOT = Path(__file__).resolve().parents[2]


def free_run(length: int) -> int:
    """The first of ``length`` consecutive loopback ports that were free a moment ago."""
    for _ in range(50):
        base = free_port()
        if base + length > 65535:
            continue
        held = []
        try:
            for port in range(base, base + length):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise AssertionError(f"no {length} consecutive free ports found")


def listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_phones_take_consecutive_ports_from_the_base(adb_server: AdbServer) -> None:
    base = free_run(2)
    farm = VirtualFarm(FarmSpec(phones=2, base_port=base, adb=adb_server)).start_in_thread()
    try:
        assert farm.serials == [f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"]
        assert all(adb_server.device_state(s) == "device" for s in farm.serials)
    finally:
        farm.stop_thread()


def test_a_taken_base_port_falls_back_to_random_ports_with_one_warning(
        adb_server: AdbServer, caplog: pytest.LogCaptureFixture) -> None:
    base = free_run(2)
    caplog.set_level(logging.WARNING, logger="virtual.farm")
    with listening(base + 1):
        farm = VirtualFarm(FarmSpec(phones=2, base_port=base, random_ports_if_taken=True,
                                    adb=adb_server)).start_in_thread()
        try:
            ports = [int(s.rpartition(":")[2]) for s in farm.serials]
            assert len(ports) == 2 and not {base, base + 1} & set(ports), ports
            assert all(adb_server.device_state(s) == "device" for s in farm.serials)
        finally:
            farm.stop_thread()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and r.name == "virtual.farm"]
    assert len(warnings) == 1, warnings
    assert f"{base}-{base + 1}" in warnings[0] and "random ports" in warnings[0]


def test_a_taken_base_port_without_fallback_is_an_error(adb_server: AdbServer) -> None:
    base = free_run(2)
    with listening(base + 1):
        farm = VirtualFarm(FarmSpec(phones=2, base_port=base, adb=adb_server))
        with pytest.raises(OSError, match=str(base + 1)):
            farm.start_in_thread()
    # The phone that did get its port let go of it again.
    listening(base).close()


def test_farm_virtual_defaults_to_40001_with_a_fallback_and_0_means_random() -> None:
    args = parse_args([])
    assert (args.base_port, args.random_ports_if_taken) == (DEFAULT_BASE_PORT, True)
    assert DEFAULT_BASE_PORT == 40001
    args = parse_args(["--base-port", "0"])
    assert (args.base_port, args.random_ports_if_taken) == (0, False)
    args = parse_args(["--base-port", "41000"])
    assert (args.base_port, args.random_ports_if_taken) == (41000, False)


@pytest.mark.parametrize("argv, message", [
    (["--base-port", "65535", "--phones", "2"], "--base-port"),
    (["--base-port", "5570"], "5555-5585"),
    (["--base-port", "-1"], "--base-port"),
])
def test_farm_virtual_refuses_impossible_base_ports(argv: list[str], message: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_farm_virtual_on_a_taken_port_it_was_given_says_so_in_one_line(
        adb_server: AdbServer) -> None:
    base = free_run(1)
    with listening(base):
        done = subprocess.run(
            [sys.executable, "-m", "virtual.cli", "--phones", "1", "--base-port", str(base),
             "--adb-port", str(adb_server.port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("farm-virtual:") and str(base) in lines[0], lines


def test_farm_virtual_stopped_right_after_its_serials_exits_cleanly(adb_server: AdbServer) -> None:
    # A Ctrl-C sent as soon as the serials are read landed before farm-virtual's handler was
    # installed: Python's own KeyboardInterrupt, a traceback and exit -2, most of the time.
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "virtual.cli", "--phones", "1", "--base-port", "0",
             "--adb-port", str(adb_server.port)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().startswith("127.0.0.1:")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0 and "Traceback" not in err, err
