"""A real `farm-coordinator --demo` process group for tests about people and tenants: its
admin token, the one-time login link and Acme's demo users' passwords it printed, and which
phones are Acme's (the demo splits its phones between Demo Farm and Acme)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from actors.node.device.adb_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def call(base: str, method: str, path: str, token: str | None = None,
         body: dict | None = None) -> tuple[int, Any]:
    """(status, JSON answer) of one API request."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, _decoded(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decoded(exc.read() or b"{}")


def _decoded(raw: bytes) -> Any:
    """JSON as decoded; anything else (an image, a registry file) as {"raw": bytes}."""
    try:
        return json.loads(raw)
    except ValueError:
        return {"raw": raw}


class DemoFarm:
    """A `farm-coordinator --demo` process group, its admin token and what it printed: the
    admin's one-time login link and the passwords of Acme's demo users."""

    def __init__(self, tmp: Path, phones: int = 4, extra: tuple[str, ...] = ()) -> None:
        self.phones = phones
        self.data = tmp / "data"
        http = free_port()
        self.base = f"http://127.0.0.1:{http}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actors.coordinator", "--demo", "--phones", str(phones),
             "--http", f"127.0.0.1:{http}", "--listen", f"tcp://127.0.0.1:{free_port()}",
             "--data", str(self.data), "--log-level", "WARNING", "--base-port", "0", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        self.link: str | None = None
        self.passwords: dict[str, str] = {}
        self.adb_port = 0
        # The start line, the adb server, the link, then one line per demo user.
        for line in iter(self.proc.stdout.readline, ""):
            if match := re.search(r"demo adb server 127\.0\.0\.1:(\d+)", line):
                self.adb_port = int(match.group(1))
            elif match := re.search(r"#login=(\S+)", line):
                self.link = match.group(1)
            elif match := re.search(r"demo user (\S+) \(.*\), password: (\S+)", line):
                self.passwords[match.group(1)] = match.group(2)
            if len(self.passwords) == 2:
                break
        assert self.link and set(self.passwords) == {"acme", "acme-viewer"}, \
            f"the demo did not print its link and users: {self.link!r} {self.passwords}"
        self.admin_token = (self.data / "admin.token").read_text().strip()
        deadline = time.monotonic() + 60
        rows: list[dict] = []
        while time.monotonic() < deadline:
            status, answer = call(self.base, "GET", "/api/phones", self.admin_token)
            rows = answer.get("phones", []) if status == 200 else []
            if sum(p["state"] == "online" for p in rows) == phones:
                break
            time.sleep(0.2)
        assert sum(p["state"] == "online" for p in rows) == phones, rows
        self.phone_rows = rows
        self.acme_phones = sorted(p["serial"] for p in rows if p.get("client") == "Acme")
        assert 0 < len(self.acme_phones) < phones, rows  # the demo splits them

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
