"""Nodes are principals (issue 17.6), with real processes: a `farm-coordinator` with no shared
secret, keys issued by the real `farm` CLI, `farm-node --key-file` driving virtual phones
(`farm-virtual` on its own adb server), a node with a wrong key, a node (the real NodeLink in
this process) reporting on another node's execution, a fake coordinator on the real one's
address, and a revoked key. Every verdict is read from the processes' own logs, the HTTP
API and the phones themselves (`vphone log`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pynng
import pytest

from actors.node.device.adb_server import (AdbServer, free_port, kill_adb_server,
                                           start_private_adb_server)
from actors.node.device.driver import DeviceDriver
from protocol.codec import decode, encode, hello_proof, make_command, make_envelope
from protocol.messages import Challenge, Hello, PhoneInfo, Refused, Tap, Welcome
from protocol.transport import CoordinatorLink, NodeCredential, NodeLink

ROOT = Path(__file__).resolve().parents[2]
ROGUE_SERIAL = "rogue-phone-1"


class KeyFarm:
    """One coordinator (no shared secret), rack1 (a node with its key and 2 virtual phones),
    each process stopped by its own PID."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.http, self.nng = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        self.address = f"tcp://127.0.0.1:{self.nng}"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PHONEFARM_SECRET", "PHONEFARM_TOKEN")}
        self.env["PHONEFARM_LOG_LEVEL"] = "INFO"
        self.coordinator: subprocess.Popen | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.adb: AdbServer | None = None
        self.serials: list[str] = []

    def log(self, name: str) -> str:
        path = self.data / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _spawn(self, *args: str, log_name: str, **kw) -> subprocess.Popen:
        log = open(self.data / f"{log_name}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=self.env,
                                stderr=log, **kw)

    def start_coordinator(self) -> None:
        self.coordinator = self._spawn(
            "actors.coordinator.main", "--http", f"127.0.0.1:{self.http}", "--listen",
            self.address, "--data", str(self.data / "coordinator"), "--retention", "off",
            log_name="coordinator", stdout=subprocess.DEVNULL)
        wait(lambda: self.get("/api/nodes") is not None, 30, "coordinator HTTP")

    def stop_coordinator(self) -> None:
        self.coordinator.send_signal(signal.SIGTERM)
        self.coordinator.wait(timeout=30)

    def token(self) -> str | None:
        """The coordinator's own super-user token, when it writes one (issue 17.3)."""
        path = self.data / "coordinator" / "admin.token"
        return path.read_text().strip() if path.exists() else None

    def _request(self, path: str, body: dict | None = None, method: str | None = None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        if self.token():
            req.add_header("Authorization", f"Bearer {self.token()}")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def get(self, path: str):
        try:
            return self._request(path)
        except OSError:
            return None

    def post(self, path: str, body: dict) -> dict:
        return self._request(path, body)

    def farm(self, *args: str) -> subprocess.CompletedProcess:
        """The real `farm` CLI against this coordinator."""
        env = dict(self.env)
        if self.token():
            env["PHONEFARM_TOKEN"] = self.token()
        return subprocess.run([sys.executable, "-m", "actors.control.cli", "--url", self.url,
                               *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)

    def start_rack1(self) -> None:
        self.adb = start_private_adb_server()
        virtual = self._spawn("virtual.cli", "--phones", "2", "--adb-port", str(self.adb.port),
                              "--base-port", "0", log_name="virtual", stdout=subprocess.PIPE,
                              text=True)
        self.procs["virtual"] = virtual
        self.serials = [virtual.stdout.readline().strip() for _ in range(2)]
        self.start_node("rack1", self.data / "rack1.key", self.adb.port)

    def start_node(self, name: str, key_file: Path, adb_port: int, *extra: str) -> None:
        self.procs[name] = self._spawn(
            "actors.node", "--name", name, "--coordinator", self.address, "--adb-port",
            str(adb_port), "--data", str(self.data / name), "--key-file", str(key_file),
            *extra, log_name=name)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def phones(self) -> dict[str, dict]:
        return {p["serial"]: p for p in (self.get("/api/phones") or {"phones": []})["phones"]}

    def nodes(self) -> dict[str, dict]:
        return {n["name"]: n for n in (self.get("/api/nodes") or {"nodes": []})["nodes"]}

    def taps(self, serial: str) -> list[tuple[int, int]]:
        out = DeviceDriver(serial, self.adb).shell("vphone log").text
        return [(e["x"], e["y"]) for e in map(orjson.loads, out.splitlines())
                if e["kind"] == "tap"]

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        if self.coordinator is not None and self.coordinator.poll() is None:
            self.coordinator.send_signal(signal.SIGTERM)
            try:
                self.coordinator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.coordinator.kill()
                self.coordinator.wait()
        if self.adb is not None:
            kill_adb_server(self.adb.port)


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
def farm(tmp_path_factory) -> KeyFarm:
    f = KeyFarm(tmp_path_factory.mktemp("keys"))
    try:
        f.start_coordinator()
        out = f.farm("nodes", "add", "rack1", "--key-file", str(f.data / "rack1.key"))
        assert out.returncode == 0, out.stderr
        f.start_rack1()
        wait(lambda: sum(p["state"] == "online" for p in f.phones().values()) == 2, 60,
             "rack1's 2 phones online")
        yield f
    finally:
        f.close()


def test_a_node_with_its_key_connects_and_drives_its_phones(farm: KeyFarm) -> None:
    key_file = farm.data / "rack1.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    serial = farm.serials[0]
    result = farm.post("/api/actions", {"scope": f"phone:{serial}",
                                        "action": {"type": "tap", "x": 11, "y": 22}})
    assert result["results"][serial]["status"] == "ok", result
    assert (11, 22) in farm.taps(serial)
    listing = farm.farm("nodes", "keys")
    assert listing.returncode == 0 and "rack1" in listing.stdout and "active" in listing.stdout
    assert key not in listing.stdout and key[-4:] in listing.stdout
    keys = farm.get("/api/nodes/keys")["keys"]
    assert keys[0]["node"] == "rack1" and keys[0]["last_seen_at"] and key not in str(keys)
    coordinator = farm.log("coordinator")
    assert "shared farm secret" not in coordinator  # no secret anywhere: keys only
    assert "shared farm secret" not in farm.log("rack1")
    assert key not in coordinator and key not in farm.log("rack1")  # never logged


def test_a_node_with_a_wrong_key_is_refused_with_the_reason(farm: KeyFarm) -> None:
    out = farm.farm("nodes", "add", "rack2", "--key-file", str(farm.data / "rack2.key"))
    assert out.returncode == 0, out.stderr
    wrong = farm.data / "wrong.key"
    wrong.write_text("this-is-not-the-key-of-rack2-at-all\n")
    wrong.chmod(0o600)
    farm.start_node("rack2", wrong, free_port(), "--registry", "none")
    try:
        wait(lambda: "bad proof for node 'rack2' (wrong node key?)" in farm.log("coordinator"),
             30, "the coordinator to log the refusal")
        wait(lambda: "refused by coordinator" in farm.log("rack2"), 30,
             "the node to log the refusal")
        assert farm.nodes().get("rack2", {}).get("state") != "up"
    finally:
        farm.stop("rack2")
    # A name that has no key at all, with no shared secret on this farm: refused too.
    farm.start_node("intruder", wrong, free_port(), "--registry", "none")
    try:
        wait(lambda: "no key for node 'intruder'" in farm.log("coordinator"), 30,
             "the refusal of a node without a key")
        assert "intruder" not in farm.nodes()
    finally:
        farm.stop("intruder")


def test_an_event_about_another_nodes_execution_is_refused(farm: KeyFarm, tmp_path) -> None:
    """rack2, with its right key (the real NodeLink, in this process), reports a step of an
    execution running on rack1's phone, and a screen of that phone: both refused, logged
    naming rack2, nothing recorded; its own phone's event is stored."""
    serial = farm.serials[1]
    started = farm.post("/api/runs", {"scope": f"phone:{serial}", "sequence": {
        "name": "one_tap", "steps": [{"type": "tap", "x": 5, "y": 6}]}})
    execution_id = started["executions"][serial]["execution_id"]
    wait(lambda: (farm.get(f"/api/executions/{execution_id}") or {}).get("status")
         not in (None, "pending", "running"), 30, "the run on rack1's phone to end")
    key = (farm.data / "rack2.key").read_text().strip()

    async def rogue() -> None:
        link = NodeLink(farm.address, key, "rack2",
                        lambda: [PhoneInfo(serial=ROGUE_SERIAL, state="online")],
                        journal=tmp_path / "journal-rack2.sqlite3")
        await link.start()
        try:
            await link.wait_connected(15)
            await link.send_events([
                ("step_started", ROGUE_SERIAL, {"execution_id": execution_id,
                                                "path": "steps[42]", "index": 42,
                                                "type": "tap"}),
                ("screen_changed", serial, {"screen": "forged/screen"}),
                ("screen_changed", ROGUE_SERIAL, {"screen": "clipshare/home"}),
            ])
            deadline = time.monotonic() + 15
            while link.journal.acked_upto < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert link.journal.acked_upto >= 3  # refused events are acked, not re-sent
        finally:
            await link.close()

    asyncio.run(rogue())
    coordinator = farm.log("coordinator")
    refusals = [line for line in coordinator.splitlines() if "event refused" in line]
    assert len(refusals) == 2 and all("node=rack2" in line for line in refusals), refusals
    assert any(execution_id in line for line in refusals)
    assert any("attached to node rack1" in line for line in refusals)
    steps = farm.get(f"/api/executions/{execution_id}")["steps"]
    assert "steps[42]" not in [s["path"] for s in steps]
    phones = farm.phones()
    assert phones[serial]["node"] == "rack1" and phones[serial]["last_screen"] != "forged/screen"
    assert phones[ROGUE_SERIAL]["last_screen"] == "clipshare/home"  # its own phone: stored


def test_a_fake_coordinator_on_the_address_cannot_drive_the_node(farm: KeyFarm) -> None:
    """The coordinator stops; a process without rack1's key listens on its address. rack1
    dials it, refuses its commands (with a bad proof, and with no welcome at all) and logs
    why; no tap reaches the phone. The real coordinator back: rack1 works again."""
    serial = farm.serials[0]
    farm.stop_coordinator()
    sock = pynng.Pair1(polyamorous=True, recv_timeout=5000)
    used: set[int] = set()
    try:
        sock.listen(farm.address)
        for welcome in (Welcome(coordinator="coordinator", proof="00" * 32), None):
            pipe = wait(lambda: [p for p in sock.pipes if p.id not in used],
                        30, "rack1 to dial the fake coordinator")[0]
            used.add(pipe.id)
            pipe.send(encode(make_envelope(Challenge(nonce="ab" * 16), "coordinator", "rack1")))
            deadline = time.monotonic() + 15
            hello = None
            while hello is None and time.monotonic() < deadline:
                msg = sock.recv_msg()
                body = decode(msg.bytes, "rack1").body
                hello = body if isinstance(body, Hello) else None
            assert hello is not None and hello.nonce  # a node that asks the coordinator back
            if welcome is not None:
                pipe.send(encode(make_envelope(welcome, "coordinator", "rack1")))
            command = make_command(serial, Tap(x=77, y=77))
            try:
                pipe.send(encode(make_envelope(command, "coordinator", "rack1")))
            except pynng.NNGException:
                pass  # rack1 already hung up on the bad proof
        wait(lambda: "coordinator failed its proof" in farm.log("rack1"), 15,
             "rack1 to log the failed proof")
        wait(lambda: "command from an unproved coordinator refused" in farm.log("rack1"), 15,
             "rack1 to log the refused command")
        time.sleep(1.0)  # a tap that was taken would have been played by now
    finally:
        sock.close()
    assert (77, 77) not in farm.taps(serial)
    farm.start_coordinator()
    wait(lambda: farm.nodes().get("rack1", {}).get("state") == "up", 30, "rack1 back")
    wait(lambda: farm.phones().get(serial, {}).get("state") == "online", 30, "phone back")
    result = farm.post("/api/actions", {"scope": f"phone:{serial}",
                                        "action": {"type": "tap", "x": 33, "y": 44}})
    assert result["results"][serial]["status"] == "ok", result
    assert (33, 44) in farm.taps(serial) and (77, 77) not in farm.taps(serial)


def test_revoking_a_key_disconnects_and_refuses_the_node(farm: KeyFarm) -> None:
    out = farm.farm("nodes", "revoke", "rack1")
    assert out.returncode == 0 and "revoked" in out.stdout, out.stderr
    wait(lambda: farm.nodes().get("rack1", {}).get("state") == "down", 15, "rack1 down")
    wait(lambda: farm.log("rack1").count("was revoked at") >= 2, 30,
         "rack1 told at once and refused again at its next hello")
    assert "the key of node 'rack1' was revoked" in farm.log("coordinator")
    time.sleep(1.0)
    assert farm.nodes()["rack1"]["state"] == "down"
    keys = {k["node"]: k for k in farm.get("/api/nodes/keys")["keys"]}
    assert keys["rack1"]["status"] == "revoked" and keys["rack1"]["revoked_at"]
    again = farm.farm("nodes", "revoke", "rack1")
    assert again.returncode != 0 and "revoked already" in again.stderr


# --- the link alone, in this process (real nng on loopback) ----------------------------------

async def _refusal_of(node: NodeLink, caplog, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in caplog.records:
            if "refused by coordinator" in record.getMessage():
                return record.getMessage()
        await asyncio.sleep(0.05)
    raise AssertionError("the node was not refused")


@pytest.mark.parametrize("credential,expected", [
    (NodeCredential(key="the-node-key-of-rack1-0123456789"), "bad proof for node 'rack1'"),
    (NodeCredential(refusal="the key of node 'rack1' was revoked at T"), "was revoked at T"),
])
async def test_a_node_with_a_key_cannot_come_in_on_the_shared_secret(tmp_path, caplog,
                                                                     credential, expected):
    """Once a name has a key (or had one, revoked), the shared farm secret no longer opens
    the link for it: revoking cannot be side-stepped."""
    caplog.set_level(logging.INFO)
    coordinator = CoordinatorLink("tcp://127.0.0.1:0", "shared-secret",
                                  node_keys={"rack1": credential}.get)
    await coordinator.start()
    node = NodeLink(coordinator.address, "shared-secret", "rack1", journal=None,
                    reconnect_min=0.05, reconnect_max=0.2)
    await node.start()
    try:
        assert expected in await _refusal_of(node, caplog)
        assert not coordinator.is_up("rack1") and not node.connected
    finally:
        await node.close()
        await coordinator.close()


async def test_an_old_one_way_hello_is_refused_for_a_node_with_a_key(caplog):
    caplog.set_level(logging.INFO)
    coordinator = CoordinatorLink("tcp://127.0.0.1:0", "shared-secret", node_keys={
        "rack1": NodeCredential(key="the-node-key-of-rack1-0123456789")}.get)
    await coordinator.start()
    sock = pynng.Pair1(recv_timeout=5000)
    try:
        sock.dial(coordinator.address, block=True)
        challenge = decode(await sock.arecv(), "coordinator").body
        assert isinstance(challenge, Challenge)
        hello = Hello(node="rack1", proof=hello_proof("the-node-key-of-rack1-0123456789",
                                                      challenge.nonce, "rack1"))
        await sock.asend(encode(make_envelope(hello, "rack1", "coordinator")))
        refused = decode(await sock.arecv(), "coordinator").body
        assert isinstance(refused, Refused) and "sent no nonce" in refused.reason
    finally:
        sock.close()
        await coordinator.close()
