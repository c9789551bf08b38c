"""The farm as an operator runs it: one coordinator process, two node processes, each node
with its own real adb server and 4 virtual phones in a `farm-virtual` process. Everything is
driven through the HTTP endpoint and checked on the phones themselves (`vphone log`)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import orjson
import pytest

from actors.node.device.adb_server import AdbServer, free_port, kill_adb_server, start_private_adb_server
from actors.node.device.driver import DeviceDriver
from tests.e2e.farm_auth import admin_token, auth_headers

ROOT = Path(__file__).resolve().parents[2]
SECRET = "process-test-secret"


class Farm:
    """The processes of one test farm, each stopped by its own PID."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.http = free_port()
        self.nng = free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        self.env = {**os.environ, "PHONEFARM_SECRET": SECRET, "PHONEFARM_LOG_LEVEL": "INFO"}
        self.coordinator: subprocess.Popen | None = None
        self.nodes: dict[str, subprocess.Popen] = {}
        self.virtual: list[subprocess.Popen] = []
        self.adb: dict[str, AdbServer] = {}
        self.serials: dict[str, list[str]] = {}

    def _spawn(self, *args: str, log_name: str, **kw) -> subprocess.Popen:
        log = open(self.data / f"{log_name}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=self.env,
                                stderr=log, **kw)

    def start_coordinator(self) -> None:
        self.coordinator = self._spawn(
            "actors.coordinator.main", "--http", f"127.0.0.1:{self.http}", "--listen",
            f"tcp://127.0.0.1:{self.nng}", "--data", str(self.data / "coordinator"),
            log_name="coordinator", stdout=subprocess.DEVNULL)
        # Written before the endpoint listens (kept over a restart): every /api call needs it.
        admin_token(self.data / "coordinator", self.url)
        wait(lambda: self.get("/api/health") is not None, 20, "coordinator HTTP")

    def start_node(self, name: str) -> None:
        self.nodes[name] = self._spawn(
            "actors.node", "--name", name, "--coordinator", f"tcp://127.0.0.1:{self.nng}",
            "--adb-port", str(self.adb[name].port), "--data", str(self.data / name),
            log_name=name)

    def add_rack(self, name: str, phones: int) -> None:
        self.adb[name] = start_private_adb_server()
        proc = self._spawn("virtual.cli", "--phones", str(phones), "--adb-port",
                           str(self.adb[name].port), "--seed", str(len(self.adb) * 10),
                           "--base-port", "0",
                           log_name=f"virtual-{name}", stdout=subprocess.PIPE, text=True)
        self.virtual.append(proc)
        self.serials[name] = [proc.stdout.readline().strip() for _ in range(phones)]
        self.start_node(name)

    def get(self, path: str):
        try:
            req = urllib.request.Request(self.url + path, headers=auth_headers(self.url))
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers=auth_headers(self.url,
                                                          {"Content-Type": "application/json"}))
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            exc.add_note(f"POST {path}: {exc.code} {exc.read()[:500]!r}")  # why, in the report
            raise

    def phones(self) -> dict[str, dict]:
        listing = self.get("/api/phones") or {"phones": []}
        return {p["serial"]: p for p in listing["phones"]}

    def driver(self, serial: str) -> DeviceDriver:
        node = next(n for n, s in self.serials.items() if serial in s)
        return DeviceDriver(serial, self.adb[node])

    def stop(self) -> None:
        procs = [self.coordinator, *self.nodes.values(), *self.virtual]
        for p in procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            if p is not None:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for server in self.adb.values():
            kill_adb_server(server.port)


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Farm:
    f = Farm(tmp_path_factory.mktemp("farm"))
    try:
        f.start_coordinator()
        f.add_rack("rack1", 4)
        f.add_rack("rack2", 4)
        wait(lambda: sum(p["state"] == "online" for p in f.phones().values()) == 8, 60,
             "8 phones online")
        yield f
    finally:
        f.stop()


def all_serials(farm: Farm) -> list[str]:
    return [s for serials in farm.serials.values() for s in serials]


def taps(farm: Farm, serial: str) -> list[dict]:
    out = farm.driver(serial).shell("vphone log").text
    return [e for e in map(orjson.loads, out.splitlines()) if e["kind"] == "tap"]


def test_broadcast_tap_reaches_all_8_phones_and_the_stream_reports_it(farm):
    events: list[dict] = []

    def follow() -> None:
        req = urllib.request.Request(farm.url + "/api/stream", headers=auth_headers(farm.url))
        with urllib.request.urlopen(req, timeout=30) as r:
            name = None
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and name:
                    events.append({"event": name, **json.loads(line[5:])})
                if sum(e["event"] == "action_result" for e in events) >= 8:
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)
    out = farm.post("/api/actions", {"scope": "phone:all", "action": {"type": "tap", "x": 432,
                                                                        "y": 876}})
    assert sorted(out["results"]) == sorted(all_serials(farm))
    assert {r["status"] for r in out["results"].values()} == {"ok"}
    for serial in all_serials(farm):
        assert (taps(farm, serial)[-1]["x"], taps(farm, serial)[-1]["y"]) == (432, 876)
    reader.join(timeout=20)
    results = {e["serial"] for e in events if e["event"] == "action_result"}
    assert results == set(all_serials(farm))


def test_node_scope_and_bad_scope(farm):
    out = farm.post("/api/actions", {"scope": "node:rack2", "action": {"type": "tap", "x": 9,
                                                                         "y": 9}})
    assert sorted(out["results"]) == sorted(farm.serials["rack2"])
    req = urllib.request.Request(farm.url + "/api/actions", data=json.dumps(
        {"scope": "phone:all-,x", "action": {"type": "tap", "x": 1, "y": 1}}).encode(),
        headers=auth_headers(farm.url))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400 and "offset" in json.loads(info.value.read())


def test_unplugged_phone_is_paused_then_resumes(farm):
    serial = farm.serials["rack1"][1]
    farm.driver(serial).shell("vphone unplug 3")
    wait(lambda: farm.phones()[serial]["state"] == "paused", 10, "paused")
    out = farm.post("/api/actions", {"scope": f"phone:{serial}",
                                     "action": {"type": "tap", "x": 1, "y": 1}})
    assert out["results"][serial]["status"] == "gone"
    wait(lambda: farm.phones()[serial]["state"] == "online", 30, "resumed")
    out = farm.post("/api/actions", {"scope": f"phone:{serial}",
                                     "action": {"type": "tap", "x": 2, "y": 2}})
    assert out["results"][serial]["status"] == "ok"


def test_kill_9_of_a_node_marks_its_phones_offline_within_5s_and_restart_brings_them_back(farm):
    victim = farm.nodes["rack2"]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = time.monotonic()
    wait(lambda: all(farm.phones()[s]["state"] == "offline" for s in farm.serials["rack2"]),
         10, "rack2 phones offline")
    # the heartbeat rule: a dead node is noticed within 5 s (polling adds at most 0.1 s)
    assert time.monotonic() - killed <= 5.5
    assert all(farm.phones()[s]["state"] == "online" for s in farm.serials["rack1"])
    farm.start_node("rack2")
    wait(lambda: all(farm.phones()[s]["state"] == "online" for s in farm.serials["rack2"]),
         30, "rack2 phones back")
    out = farm.post("/api/actions", {"scope": "node:rack2", "action": {"type": "tap", "x": 7,
                                                                         "y": 7}})
    assert {r["status"] for r in out["results"].values()} == {"ok"}


def test_coordinator_kill_9_and_restart_loses_no_journaled_event(farm):
    farm.coordinator.send_signal(signal.SIGKILL)
    farm.coordinator.wait()
    # While the coordinator is down, the nodes keep journaling: an unplug and its return.
    serial = farm.serials["rack1"][2]
    farm.driver(serial).shell("vphone unplug 1")
    time.sleep(4)
    farm.start_coordinator()
    wait(lambda: len(farm.get("/api/nodes")["nodes"]) == 2
         and all(n["state"] == "up" for n in farm.get("/api/nodes")["nodes"]), 30, "nodes back")
    db = farm.data / "coordinator" / "coordinator.sqlite3"
    for name in ("rack1", "rack2"):
        journal = sqlite3.connect(farm.data / name / f"journal-{name}.sqlite3")
        assigned = journal.execute(
            "SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()[0]
        journal.close()

        def stored() -> list[int]:
            con = sqlite3.connect(db)
            try:
                return [s for (s,) in con.execute(
                    "SELECT seq FROM node_events WHERE node=? ORDER BY seq", (name,))]
            finally:
                con.close()

        def complete() -> bool:
            # Replayed and new events may land out of order for a moment; none may be lost.
            seqs = stored()
            return bool(seqs) and seqs[-1] >= assigned and seqs == list(range(1, seqs[-1] + 1))

        wait(complete, 30, f"{name} events replayed, every seq from 1 on, none twice")
    con = sqlite3.connect(db)
    during = [e for (e,) in con.execute(
        "SELECT event FROM node_events WHERE serial=? AND event IN ('phone_paused', "
        "'phone_resumed') ORDER BY seq", (serial,))]
    con.close()
    assert during[-2:] == ["phone_paused", "phone_resumed"]
    assert farm.phones()[serial]["state"] == "online"


def start_slow_taps(farm, serial: str, *, taps: int, x0: int, sleep_s: float,
                    recorded: int) -> str:
    """Run taps at (x0 + i, 2000), each followed by a sleep, on ``serial``; return the run id
    once ``recorded`` steps are recorded as successful (so a kill lands mid-run)."""
    # A coordinator restarted by the test before may not have heard of the phone again yet.
    wait(lambda: (farm.phones().get(serial) or {}).get("state") == "online", 60,
         f"{serial} online")
    steps = []
    for i in range(taps):
        steps += [{"type": "tap", "x": x0 + i, "y": 2000}, {"type": "sleep", "seconds": sleep_s}]
    started = farm.post("/api/runs", {"scope": f"phone:{serial}",
                                      "sequence": {"name": "slow_taps", "steps": steps}})
    execution_id = started["executions"][serial]["execution_id"]
    wait(lambda: sum(s["status"] == "success" for s in
                     (farm.get(f"/api/executions/{execution_id}") or {}).get("steps", [])) >= recorded,
         20, f"{recorded} step(s) recorded")
    return started["run_id"]


def test_coordinator_kill_9_mid_run_the_run_completes_with_every_step_recorded_once(farm):
    """The node plays on while the coordinator is gone; its journaled step events reach the
    restarted coordinator, whose records end complete, each step once (spec 12.3.1)."""
    serial = farm.serials["rack1"][1]
    taps_before = len(taps(farm, serial))
    run_id = start_slow_taps(farm, serial, taps=6, x0=100, sleep_s=0.4, recorded=1)
    farm.coordinator.send_signal(signal.SIGKILL)
    farm.coordinator.wait()
    time.sleep(1.5)  # steps go on, journaled on the node
    farm.start_coordinator()
    run = wait(lambda: (r := farm.get(f"/api/runs/{run_id}")) and r["status"] != "running" and r,
               60, "the run to end after the restart")
    assert run["status"] == "completed", run
    (execution,) = run["executions"]
    paths = [s["path"] for s in execution["steps"]]
    assert sorted(paths) == sorted(f"steps[{i}]" for i in range(12)), paths  # each once
    assert all(s["status"] == "success" for s in execution["steps"]), execution["steps"]
    played = [(t["x"], t["y"]) for t in taps(farm, serial)[taps_before:]]
    assert [xy for xy in played if xy[1] == 2000] == [(100 + i, 2000) for i in range(6)]


def test_an_execution_a_coordinator_kill_left_pending_is_played_once_after_the_restart(farm):
    """The 4 x 15 chaos bench's coordinator_kill: a dispatch wrote its execution pending with
    its plan and the coordinator died before the node's answer; the restarted coordinator
    (whose scheduler adopts such an execution) waited on it for good. Now a node's hello
    sends such a record again, marked if_new: it is played once and completes."""
    from protocol.messages import RunSequence
    from sequences.model import TapStep

    serial = farm.serials["rack1"][3]
    wait(lambda: (farm.phones().get(serial) or {}).get("state") == "online", 60, "online")
    taps_before = len(taps(farm, serial))
    farm.coordinator.send_signal(signal.SIGKILL)
    farm.coordinator.wait()
    plan = RunSequence(execution_id="ex-cut-off", run_id="run-cut-off", sequence="cut_off",
                       steps=[TapStep(x=555, y=2055)])
    con = sqlite3.connect(farm.data / "coordinator" / "farm.sqlite3")
    with con:  # what RunManager.start_one writes before the send the kill cut off
        con.execute("INSERT INTO executions (execution_key, run_id, serial, sequence, status, "
                    "plan, start_time) VALUES (?, ?, ?, ?, 'pending', ?, "
                    "strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))",
                    ("ex-cut-off", "run-cut-off", serial, "cut_off",
                     msgspec.json.encode(plan).decode()))
    con.close()
    farm.start_coordinator()
    run = wait(lambda: (r := farm.get("/api/runs/run-cut-off")) and r["status"] != "running"
               and r, 60, "the pending execution to end after the restart")
    assert run["status"] == "completed", run
    played = [(t["x"], t["y"]) for t in taps(farm, serial)[taps_before:]]
    assert played.count((555, 2055)) == 1, played


def test_node_kill_9_mid_run_resumes_from_the_last_step_when_it_returns(farm):
    """Spec 12.3.1 for a rack computer that crashes: its phone's execution resumes from the
    step after the last successful one, once the phone shows the screen that step left, and
    no tap is played twice."""
    node = "rack2"
    serial = farm.serials[node][2]
    taps_before = len(taps(farm, serial))
    run_id = start_slow_taps(farm, serial, taps=8, x0=300, sleep_s=0.5, recorded=3)
    farm.nodes[node].send_signal(signal.SIGKILL)
    farm.nodes[node].wait()
    time.sleep(1.0)
    farm.start_node(node)
    run = wait(lambda: (r := farm.get(f"/api/runs/{run_id}")) and r["status"] != "running" and r,
               90, "the run to end after the node came back")
    assert run["status"] == "completed", run
    (execution,) = run["executions"]
    done = {s["path"] for s in execution["steps"] if s["status"] == "success"}
    assert done >= {f"steps[{i}]" for i in range(16)}, sorted(done)
    played = [t["x"] for t in taps(farm, serial)[taps_before:] if t["y"] == 2000]
    assert sorted(set(played)) == list(range(300, 308)), played   # every tap arrived
    # At most the tap in flight at the kill may have been played twice; none other.
    assert len(played) - len(set(played)) <= 1, played
