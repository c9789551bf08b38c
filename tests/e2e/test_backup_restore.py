"""A backup taken mid-run restores into a fresh coordinator (issue 18.3).

A real demo farm (tests/e2e/demo_farm.py) gets an account, a sequence and a workflow
definition, a schedule, one completed run and one run still playing (a `sleep` step); `farm
backup` is taken through the API while it plays. The farm is stopped, `farm restore` puts the
backup into a fresh data folder, and a fresh coordinator started on it has every completed
execution, definition, schedule, account and user, and the execution that was in flight
marked failed with reason `restored` (actors/store/backup/restore.py says why)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from actors.node.device.adb_server import free_port
from tests.e2e.demo_farm import ROOT, DemoFarm, call


def _ok(status: int, body, what: str):
    assert status < 300, f"{what}: {status} {body}"
    return body


def _wait(predicate, what: str, timeout: float = 60.0, seen=None):
    """``predicate()`` once it is true; ``seen()`` says what was there instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}"
                         + (f"; last seen: {seen()}" if seen is not None else ""))


def _answer(base: str, path: str, token: str) -> tuple[int, object]:
    """``call``'s answer, or (0, why) while nothing listens there yet: the coordinator writes
    admin.token before its HTTP server is up."""
    try:
        return call(base, "GET", path, token)
    except OSError as exc:  # refused (URLError), or cut while the server starts
        return 0, str(getattr(exc, "reason", exc))


def _farm(args: list[str], token: str, base: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PHONEFARM_TOKEN": token, "PHONEFARM_URL": base}
    return subprocess.run([sys.executable, "-m", "actors.control.cli", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_backup_mid_run_restores_into_a_fresh_coordinator(tmp_path: Path) -> None:
    farm = DemoFarm(tmp_path, phones=2)
    try:
        base, token = farm.base, farm.admin_token
        post = lambda path, body: _ok(*call(base, "POST", path, token, body), path)  # noqa: E731
        serials = sorted(p["serial"] for p in call(base, "GET", "/api/phones", token)[1]["phones"])
        post("/api/accounts", {"serial": serials[0], "platform": "clipshare",
                               "account_number": "bk1", "username": "backup-ann",
                               "password": "kept-sealed-1"})
        post("/api/sequences", {"name": "clipshare/login"})
        post("/api/workflows", {"name": "bk_flow", "sequences": [{"sequence": "clipshare/login"}]})
        schedule = post("/api/schedules", {"sequence": "clipshare/post_clip",
                                           "target": "phone:all", "type": "scheduled",
                                           "at": "2099-01-01T00:00:00Z"})
        done_run = post("/api/runs", {"sequence": {"name": "bk_done", "steps": [
            {"type": "key", "key": "HOME"}]}, "scope": f"phone:{serials[0]}"})
        run_of = lambda run: call(base, "GET", f"/api/runs/{run['run_id']}", token)[1]  # noqa: E731
        done = _wait(lambda: (r := run_of(done_run))["status"] == "completed" and r,
                     "the short run completes", seen=lambda: run_of(done_run))
        live_run = post("/api/runs", {"sequence": {"name": "bk_live", "steps": [
            {"type": "key", "key": "HOME"}, {"type": "sleep", "seconds": 60}]},
            "scope": f"phone:{serials[1]}"})
        # In flight: its first step done, sleeping in the second.
        live = _wait(lambda: (r := run_of(live_run))["executions"][0]["current_step"] == 1
                     and r, "the long run is in its sleep step", seen=lambda: run_of(live_run))
        assert live["status"] == "running"
        out = _farm(["backup"], token, base)
        assert out.returncode == 0, out.stderr
        path = Path(out.stdout.split()[1].rstrip(":"))
        assert path.parent == tmp_path / "data" / "backups", out.stdout
        assert "master key: not included" in out.stdout
        listed = _farm(["backup", "list"], token, base)
        assert path.name in listed.stdout, listed.stdout
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["facts"]["executions_in_flight"] == 1
    finally:
        farm.stop()

    fresh = tmp_path / "fresh"
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "x").write_text("x")
    refused = _farm(["restore", str(path), "--data", str(tmp_path / "occupied")], "", "")
    assert refused.returncode == 2 and "not empty (x)" in refused.stderr, refused.stderr
    # The demo's master key is kept apart, as the backup says: the operator puts it back.
    restored = _farm(["restore", str(path), "--data", str(fresh)], "", "")
    assert restored.returncode == 0, restored.stderr
    assert "master key: the master key is NOT in this backup" in restored.stdout
    assert "1 execution(s) in flight" in restored.stdout, restored.stdout
    (fresh / "secret.key").write_bytes((tmp_path / "data" / "secret.key").read_bytes())

    http = free_port()
    new_base = f"http://127.0.0.1:{http}"
    log = tmp_path / "fresh-coordinator.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.coordinator", "--data", str(fresh), "--http",
         f"127.0.0.1:{http}", "--listen", f"tcp://127.0.0.1:{free_port()}",
         "--log-level", "WARNING"], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=log.open("wb"))
    try:
        new_token = _wait(lambda: (fresh / "admin.token").is_file()
                          and (fresh / "admin.token").read_text().strip(),
                          "the fresh coordinator writes admin.token",
                          seen=lambda: (proc.poll(), log.read_text()[-2000:]))
        get = lambda p: _wait(lambda: (r := _answer(new_base, p, new_token))[0] == 200  # noqa: E731
                              and r[1], f"GET {p}", seen=lambda: (_answer(new_base, p,
                                                                          new_token),
                                                                  log.read_text()[-2000:]))
        run = get(f"/api/runs/{done_run['run_id']}")
        assert run["status"] == "completed"
        assert run["executions"][0]["execution_id"] == done["executions"][0]["execution_id"]
        gone = get(f"/api/runs/{live_run['run_id']}")["executions"][0]
        assert gone["status"] == "failed" and gone["reason"] == "restored", gone
        assert path.name in gone["error"]
        accounts = get("/api/accounts")["accounts"]
        assert any(a["username"] == "backup-ann" and a["password_set"] for a in accounts)
        assert get("/api/sequences/clipshare%2Flogin")
        assert get("/api/workflows/bk_flow")
        assert schedule["id"] in [s["id"] for s in get("/api/schedules")["schedules"]]
        assert "admin" in [u["name"] for u in get("/api/users")["users"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()
