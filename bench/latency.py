"""Farm latency figures, printed, never asserted (issue: the actor system).

Starts `farm-coordinator --demo --phones N` (coordinator, one node, N virtual phones behind a
private real adb server) and measures, in one run:
- one phone's tap: raw adb-server socket (floor), the driver, and HTTP POST /api/actions
  (HTTP -> coordinator -> nng -> node -> phone actor -> driver -> phone, and back);
- a broadcast tap to all N phones over HTTP: time until the last phone has it (the request
  returns when every phone answered), as a ratio to the single HTTP tap, beside the rig's own
  floor: the same N taps sent straight to the adb server at once (raw sockets, one thread per
  phone, no farm) - what one adb server and the virtual phones on this machine can do;
- status-stream delay: from the node publishing an action_result to an SSE client reading it.

Run: python bench/latency.py [--phones 60] [--rounds 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.node.device.adb_server import AdbServer, free_port  # noqa: E402
from actors.node.device.driver import DeviceDriver  # noqa: E402
from bench.device import raw_tap, row, timed  # noqa: E402
from tests.e2e.farm_auth import admin_token, api_json, auth_headers  # noqa: E402


def start_demo(phones: int, data: str, *extra: str) -> tuple[subprocess.Popen, str, int]:
    """`farm-coordinator --demo` (``extra``: more of its options): the process, its HTTP
    address and its private adb server's port. Its admin token (``data``/admin.token) is
    remembered for that address (tests/e2e/farm_auth.py: `auth_headers`, `api_json`)."""
    http_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.coordinator", "--demo", "--phones", str(phones),
         "--http", f"127.0.0.1:{http_port}", "--listen", f"tcp://127.0.0.1:{free_port()}",
         "--data", data, "--log-level", "WARNING", "--base-port", "0", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"demo adb server 127\.0\.0\.1:(\d+)", line)
    if m is None:
        proc.kill()
        raise SystemExit(f"demo did not start: {line!r}")
    admin_token(data, f"127.0.0.1:{http_port}")
    return proc, f"127.0.0.1:{http_port}", int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phones", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--broadcasts", type=int, default=30)
    ap.add_argument("--quiet-s", type=float, default=2.0,
                    help="pause before each 'from quiet' broadcast round")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as data:
        proc, http_addr, adb_port = start_demo(args.phones, data)
        try:
            run(args, http_addr, adb_port)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def run(args: argparse.Namespace, http_addr: str, adb_port: int) -> None:
    base = f"http://{http_addr}"
    deadline = time.monotonic() + 120
    while True:
        try:
            phones = api_json(base + "/api/phones")["phones"]
        except OSError:
            phones = []
        if sum(p["state"] == "online" for p in phones) == args.phones:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(phones)} phones online after 120 s")
        time.sleep(0.2)
    serial = phones[0]["serial"]
    conn = http.client.HTTPConnection(http_addr)  # keep-alive: measure requests, not connects

    def post(scope: str) -> dict:
        body = json.dumps({"scope": scope, "action": {"type": "tap", "x": 540, "y": 1200}})
        conn.request("POST", "/api/actions", body,
                     auth_headers(base, {"Content-Type": "application/json"}))
        out = json.loads(conn.getresponse().read())
        assert all(r["status"] == "ok" for r in out["results"].values()), out
        return out

    driver = DeviceDriver(serial, AdbServer(port=adb_port))
    print(f"single-phone tap ({args.rounds} rounds, {args.phones} phones in the farm)")
    floor = timed(lambda: raw_tap(adb_port, serial), args.rounds)
    base_ms = statistics.median(floor)
    row("raw adb-server socket (floor)", floor, base_ms)
    drv = timed(lambda: driver.tap(540, 1200), args.rounds)
    row("driver.tap", drv, base_ms)
    back_to_back = timed(lambda: post(f"phone:{serial}"), args.rounds)
    row("HTTP tap, back to back", back_to_back, base_ms)

    def isolated() -> None:
        time.sleep(0.05)  # let the post-action screenshot of the previous tap finish

    single = []
    for _ in range(args.rounds):
        isolated()
        t = time.perf_counter()
        post(f"phone:{serial}")
        single.append((time.perf_counter() - t) * 1000)
    row("HTTP tap, isolated (1 phone)", single, base_ms)
    print(f"  HTTP above driver at p50: {statistics.median(single) - statistics.median(drv):.2f} ms"
          f" (target <= 5 ms)")

    delays: list[float] = []
    stop = threading.Event()

    def follow() -> None:
        stream = urllib.request.Request(base + "/api/stream", headers=auth_headers(base))
        with urllib.request.urlopen(stream, timeout=60) as r:
            name = None
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and name == "action_result":
                    ev = json.loads(line[5:])
                    delays.append((time.time() - ev["data"]["at"]) * 1000)
                if stop.is_set():
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)
    print(f"broadcast tap to {args.phones} phones ({args.broadcasts} rounds)")
    broadcast = timed(lambda: post("phone:all"), args.broadcasts)
    row(f"HTTP broadcast back to back, last of {args.phones}", broadcast)
    serials = [p["serial"] for p in phones]

    def rig_broadcast() -> None:
        threads = [threading.Thread(target=raw_tap, args=(adb_port, s)) for s in serials]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    rig = []
    for _ in range(args.broadcasts):
        time.sleep(args.quiet_s)
        t = time.perf_counter()
        rig_broadcast()
        rig.append((time.perf_counter() - t) * 1000)
    row(f"rig floor: raw sockets at once, last of {args.phones}", rig)
    quiet = []
    for _ in range(args.broadcasts):
        # From a quiet farm: the previous round's post-action frames (pulled and matched)
        # are done, as between an operator's clicks.
        time.sleep(args.quiet_s)
        t = time.perf_counter()
        post("phone:all")
        quiet.append((time.perf_counter() - t) * 1000)
    row(f"HTTP broadcast from quiet, last of {args.phones}", quiet)
    print(f"  broadcast from quiet / single HTTP tap at p50: "
          f"{statistics.median(quiet) / statistics.median(single):.1f}x (target <= 3x)")
    print(f"  broadcast from quiet / rig floor at p50: "
          f"{statistics.median(quiet) / statistics.median(rig):.1f}x (the farm's own share)")
    time.sleep(1)
    stop.set()
    if delays:
        print("status stream")
        row("node publish -> SSE client", delays)


if __name__ == "__main__":
    main()
