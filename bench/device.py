"""Device driver figures, printed, never asserted (issue: virtual phones and the driver).

In one run, on virtual phones behind a private real adb server:
- tap latency: raw adb-server socket exchange (the floor), the driver, plain adbutils;
- screenshot latency to an array ready for matching: driver raw frame, driver PNG+decode,
  plain adbutils screenshot();
- screenshots/s with 1, 8 and 32 phones at once through the driver.

Run: python bench/device.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import adbutils  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from actors.node.device.adb_server import (AdbServer, kill_adb_server,  # noqa: E402
                                      start_private_adb_server)
from actors.node.device.driver import DeviceDriver  # noqa: E402


def start_phones(n: int, port: int) -> tuple[subprocess.Popen, list[str]]:
    """Virtual phones in their own process, as real phones are their own hardware: in the
    bench's process they would compete with the measuring threads for the GIL."""
    proc = subprocess.Popen([sys.executable, "-m", "virtual.cli", "--phones", str(n),
                             "--adb-port", str(port), "--base-port", "0"],
                            stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    serials = [proc.stdout.readline().strip() for _ in range(n)]
    if not all(serials):
        proc.kill()
        raise SystemExit("farm-virtual did not start its phones")
    return proc, serials


def raw_tap(port: int, serial: str) -> None:
    """The floor: the fewest bytes a client can exchange with the adb server for a tap."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        for req in (f"host:transport:{serial}", "shell:input tap 540 1200"):
            data = req.encode()
            s.sendall(b"%04x" % len(data) + data)
            assert s.recv(4) == b"OKAY"
        while s.recv(65536):
            pass


def timed(func, rounds: int) -> list[float]:
    func()  # warm
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        func()
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name: str, ms: list[float], base: float | None = None) -> None:
    ms = sorted(ms)
    p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    ratio = f"  {p50 / base:5.1f}x floor" if base else ""
    print(f"  {name:<34} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=3.0, help="per throughput figure")
    args = ap.parse_args()
    adb = start_private_adb_server()
    port = adb.port
    farm, serials = start_phones(32, port)
    try:
        serial = serials[0]
        driver = DeviceDriver(serial, AdbServer(port=port))
        plain = adbutils.AdbClient(port=port).device(serial)
        print(f"tap latency ({args.rounds} rounds, one virtual phone)")
        floor = timed(lambda: raw_tap(port, serial), args.rounds)
        base = statistics.median(floor)
        row("raw adb-server socket (floor)", floor, base)
        drv = timed(lambda: driver.tap(540, 1200), args.rounds)
        row("driver.tap", drv, base)
        au = timed(lambda: plain.click(540, 1200), min(args.rounds, 100))
        row("adbutils click", au, base)
        print(f"  driver vs adbutils: {statistics.median(au) / statistics.median(drv):.1f}x faster")

        print("screenshot latency (request to array ready for matching)")
        row("driver.screenshot (raw RGBA)", timed(driver.screenshot, 50))
        row("screencap -p + cv2.imdecode",
            timed(lambda: cv2.imdecode(np.frombuffer(driver.exec_out("screencap -p"), np.uint8),
                                       cv2.IMREAD_UNCHANGED), 50))
        row("adbutils screenshot() (PNG, PIL)", timed(lambda: np.asarray(plain.screenshot()), 30))

        print("screenshots/s through the driver, phones at once")
        for n in (1, 8, 32):
            drivers = [DeviceDriver(s, AdbServer(port=port)) for s in serials[:n]]
            done = [0] * n
            deadline = time.perf_counter() + args.seconds

            def loop(i: int) -> None:
                while time.perf_counter() < deadline:
                    drivers[i].screenshot()
                    done[i] += 1

            t = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(loop, range(n)))
            elapsed = time.perf_counter() - t
            print(f"  {n:>2} phones: {sum(done) / elapsed:7.1f} frames/s "
                  f"({sum(done) / elapsed / n:6.1f} per phone)")
    finally:
        farm.terminate()
        farm.wait(timeout=30)
        kill_adb_server(port)


if __name__ == "__main__":
    main()
