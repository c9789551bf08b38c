"""Virtual phones with the `real` cost profile, through a real adb server: what a real phone
costs (input's JVM start, one shared USB 2.0 bus) is what the driver sees; `instant` adds
nothing. These check that the costs are applied and shared, not how fast the machine is."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver
from tests.conftest import run_adb
from virtual.farm import FarmSpec, VirtualFarm
from virtual.profile import (INPUT_JVM_START_S, INSTANT, REAL, USB2_BUS_BYTES_PER_S,
                             USB_BURST_BYTES)

ROOT = Path(__file__).resolve().parents[2]
PULL_BYTES = 10 * 1024 * 1024  # one raw 1080x2400 frame, ~0.3 s on a 35 MB/s bus


@pytest.fixture(scope="module")
def real_farm(adb_server: AdbServer) -> VirtualFarm:
    f = VirtualFarm(FarmSpec(phones=2, adb=adb_server, profile=REAL)).start_in_thread()
    yield f
    f.stop_thread()


@pytest.fixture(scope="module")
def instant_farm(adb_server: AdbServer) -> VirtualFarm:
    f = VirtualFarm(FarmSpec(phones=1, adb=adb_server, profile=INSTANT)).start_in_thread()
    yield f
    f.stop_thread()


def tap_seconds(driver: DeviceDriver) -> float:
    start = time.monotonic()
    driver.tap(540, 1200)
    return time.monotonic() - start


def test_vphone_profile_prints_the_active_profile(adb_server, real_farm, instant_farm):
    out = run_adb(adb_server, "-s", real_farm.serials[0], "shell", "vphone profile")
    assert out.returncode == 0 and orjson.loads(out.stdout) == REAL.describe()
    out = run_adb(adb_server, "-s", instant_farm.serials[0], "shell", "vphone profile")
    assert orjson.loads(out.stdout)["profile"] == "instant"


def test_vphone_bus_counts_the_farm_buses_bytes_for_every_phone_on_it(adb_server, real_farm):
    """Every phone of a farm answers with the one bus they share: a frame pulled from one
    phone shows in the other's count (bench/realphone.py reads the bus's MB/s this way)."""
    first, second = real_farm.serials
    before = orjson.loads(run_adb(adb_server, "-s", second, "shell", "vphone bus").stdout)
    assert before["budget_mb_per_s"] == USB2_BUS_BYTES_PER_S / 1e6
    DeviceDriver(first, AdbServer(port=adb_server.port)).screenshot()
    after = orjson.loads(run_adb(adb_server, "-s", second, "shell", "vphone bus").stdout)
    assert after["bytes_total"] - before["bytes_total"] >= 1080 * 2400 * 4


def test_an_input_tap_pays_the_jvm_start_under_real_and_not_under_instant(
        adb_server, real_farm, instant_farm):
    real = DeviceDriver(real_farm.serials[0], AdbServer(port=adb_server.port))
    real.shell("vphone log --clear")  # also asks the features once, outside the timing
    assert all(tap_seconds(real) >= INPUT_JVM_START_S for _ in range(3))
    taps = [e for e in map(orjson.loads, real.shell("vphone log").stdout.splitlines())
            if e["kind"] == "tap"]
    assert len(taps) == 3  # the event still happens, after the cost
    instant = DeviceDriver(instant_farm.serials[0], AdbServer(port=adb_server.port))
    instant.shell("true")
    # the fastest of five: one tap slowed by a busy machine says nothing
    assert min(tap_seconds(instant) for _ in range(5)) < 0.5 * INPUT_JVM_START_S


def test_vphone_slow_still_adds_on_top_of_the_profile(adb_server, real_farm):
    real = DeviceDriver(real_farm.serials[1], AdbServer(port=adb_server.port))
    real.shell("vphone slow 300")
    try:
        assert tap_seconds(real) >= INPUT_JVM_START_S + 0.3
    finally:
        real.shell("vphone slow 0")


def pull_seconds(adb_server: AdbServer, serials: list[str], tmp_path) -> float:
    """Wall time of pulling the 10 MB file from every phone in ``serials`` at once."""
    results: list[int] = []

    def pull(i: int, serial: str) -> None:
        r = run_adb(adb_server, "-s", serial, "pull", "/sdcard/Download/frame.bin",
                    str(tmp_path / f"frame{i}.bin"))
        results.append(r.returncode)

    threads = [threading.Thread(target=pull, args=(i, s)) for i, s in enumerate(serials)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - start
    assert results == [0] * len(serials)
    return elapsed


def test_two_phones_share_one_usb_bus(adb_server, real_farm, tmp_path):
    """Two phones' parallel 10 MB pulls take about twice one: they queue on one bus budget
    (separate budgets, or none, would make them take about as long as one)."""
    blob = np.random.default_rng(3).integers(0, 256, PULL_BYTES, dtype=np.uint8).tobytes()
    src = tmp_path / "frame.bin"
    src.write_bytes(blob)
    serials = real_farm.serials
    for s in serials:  # host -> phone bytes are not the phone's to send: no bus cost
        assert run_adb(adb_server, "-s", s, "push", str(src),
                       "/sdcard/Download/frame.bin").returncode == 0
    one = min(pull_seconds(adb_server, serials[:1], tmp_path) for _ in range(2))
    both = min(pull_seconds(adb_server, serials, tmp_path) for _ in range(2))
    assert (tmp_path / "frame1.bin").read_bytes() == blob
    # What the bus alone makes them take (the first burst is free): a lower bound, true on any
    # machine; without a bus both take a few ms, with a bus per phone `both` ~ `one`.
    bus_s = (len(serials) * PULL_BYTES - USB_BURST_BYTES) / USB2_BUS_BYTES_PER_S
    assert one >= (PULL_BYTES - USB_BURST_BYTES) / USB2_BUS_BYTES_PER_S, one
    assert both >= bus_s, (one, both)
    assert both >= 1.6 * one, (one, both)


def test_farm_virtual_runs_its_phones_under_the_profile_it_is_given(adb_server):
    from virtual.cli import parse_args

    assert parse_args([]).profile == "instant"
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtual.cli", "--phones", "1", "--base-port", "0",
         "--profile", "real", "--adb-port", str(adb_server.port)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        serial = proc.stdout.readline().strip()
        assert serial, "farm-virtual printed no serial"
        out = run_adb(adb_server, "-s", serial, "shell", "vphone profile")
        assert orjson.loads(out.stdout)["profile"] == "real"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_farm_virtual_refuses_an_unknown_profile(capsys):
    from virtual.cli import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["--profile", "fast"])
    assert exit_.value.code == 2 and "--profile" in capsys.readouterr().err


def test_the_demo_starts_its_phones_under_the_phone_profile(tmp_path):
    from actors.coordinator.main import Demo, parse_args

    args = parse_args(["--demo", "--phone-profile", "real"])
    assert args.phone_profile == "real" and parse_args(["--demo"]).phone_profile == "instant"
    demo = Demo(tmp_path, 2, "tcp://127.0.0.1:1", "secret", phone_profile="real")
    argv = demo.virtual_argv(adb_port=5999)
    assert argv[argv.index("--profile") + 1] == "real"
    assert argv[argv.index("--adb-port") + 1] == "5999"
