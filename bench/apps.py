"""Installing an app across a rack (issue 20), printed, never asserted.

A real `farm-coordinator --demo --phones N` (N virtual phones behind one node, its adb
server and `farm-virtual` as the demo's children). A real APK of ``--mb`` MB (made by
tests/apk_factory.py: a binary manifest and a stored random asset) is uploaded to the
library (POST /api/apks), then installed on every phone (POST /api/apps/install
phone:all, allow_downgrade) and followed with GET /api/apps/installs/{id} until every phone
is done. Printed: the upload time, the install's total time (from the request to the last
phone's app_install_finished, as the coordinator records it), the phones ok and failed, and
the APK bytes the coordinator sent to the node (its ApkPut payload; on the link each chunk
is base64 in JSON, 4/3 of that), which should be the file's size once for the node, not
once per phone. Then the same install again: the node's cache has the file, nothing is
sent.

Run: python bench/apps.py [--phones 60] [--mb 50]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.node.device.adb_server import free_port  # noqa: E402
from tests.apk_factory import make_apk  # noqa: E402

PACKAGE = "com.phonefarm.clipshare"


def http(url: str, token: str, body: bytes | dict | None = None,
         content_type: str = "application/json", timeout: float = 600) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def start_demo(data: Path, phones: int, max_mb: int) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.coordinator", "--demo", "--phones", str(phones),
         "--http", f"127.0.0.1:{port}", "--listen", f"tcp://127.0.0.1:{free_port()}",
         "--data", str(data), "--log-level", "WARNING", "--base-port", "0",
         "--apk-max-mb", str(max_mb)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    for line in iter(proc.stdout.readline, ""):
        if re.search(r"phonefarm coordinator: ", line):
            break
    token = (data / "admin.token").read_text().strip()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status, answer = http(f"{base}/api/phones", token)
        online = sum(p["state"] == "online" for p in answer.get("phones", []))
        if online == phones:
            break
        time.sleep(0.5)
    return proc, base, token


def install(base: str, token: str, version: str) -> dict:
    started = time.monotonic()
    status, answer = http(f"{base}/api/apps/install", token, {
        "app": PACKAGE, "version": version, "scope": "phone:all", "allow_downgrade": True})
    assert status == 202, answer
    while True:
        status, view = http(f"{base}/api/apps/installs/{answer['install_id']}", token)
        if view.get("finished"):
            view["wall_s"] = time.monotonic() - started
            return view
        time.sleep(0.2)


def report(label: str, view: dict, size: int) -> None:
    pushed = view.get("pushed_bytes") or 0
    print(f"{label}: {view['wall_s']:.1f} s for {len(view['phones'])} phones "
          f"({view['counts']}); APK bytes sent to the node {pushed:,} "
          f"({pushed / size:.2f} x the file; ~{pushed * 4 // 3:,} on the link as base64)")
    failed = [p for p in view["phones"].values() if p["state"] == "failed"]
    for phone in failed[:3]:
        print(f"  {phone['serial']}: {phone['reason']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=60)
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-apps-") as tmp:
        proc, base, token = start_demo(Path(tmp) / "data", args.phones, args.mb + 20)
        try:
            apk = make_apk(PACKAGE, 990, "9.9.0", size_pad=args.mb * 1024 * 1024)
            t0 = time.monotonic()
            status, added = http(f"{base}/api/apks?name=bench.apk", token, apk,
                                 "application/octet-stream")
            assert status in (200, 201), added
            print(f"{args.phones} virtual phones on one node; APK {len(apk):,} bytes uploaded "
                  f"in {time.monotonic() - t0:.1f} s")
            report("install", install(base, token, "9.9.0"), len(apk))
            report("again (cached on the node)", install(base, token, "9.9.0"), len(apk))
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
