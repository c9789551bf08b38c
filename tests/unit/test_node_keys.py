"""Nodes are principals (issue 17.6): the link's mutual proof, node keys in the farm
database, and the hub refusing a node's reports about another node's phones and executions.
Real FarmDB and EventStore in a tmp dir; no sockets (tests/e2e/test_node_key_link.py has those)."""

from __future__ import annotations

import logging
import os

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from actors.access.principal import Principal
from actors.access.secrets_box import SecretBox
from actors.control.app import make_app
from actors.control.auth import PRINCIPAL_KEY
from actors.coordinator.hub import Hub
from actors.coordinator.node_keys import NodeKeyExists, NodeKeyring, ensure_node_key
from actors.store.event_store import EventStore
from actors.store.farm_db import FarmDB
from protocol.codec import (COORDINATOR_TO_NODE, NODE_TO_COORDINATOR, check_link_proof,
                            link_proof, new_nonce)
from protocol.errors import ValidationError
from protocol.messages import Event, Hello, PhoneInfo
from protocol.transport import _RepeatLog

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

KEY = "k" * 43
MASTER = os.urandom(32)


# --- the proof -------------------------------------------------------------------------------

def test_the_right_key_proves_both_ways() -> None:
    cn, nn = new_nonce(), new_nonce()
    to_coordinator = link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack1")
    to_node = link_proof(KEY, COORDINATOR_TO_NODE, cn, nn, "rack1")
    assert check_link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack1", to_coordinator)
    assert check_link_proof(KEY, COORDINATOR_TO_NODE, cn, nn, "rack1", to_node)


def test_a_wrong_key_proves_nothing() -> None:
    cn, nn = new_nonce(), new_nonce()
    forged = link_proof("guessed-key-guessed-key", NODE_TO_COORDINATOR, cn, nn, "rack1")
    assert not check_link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack1", forged)
    forged_back = link_proof("guessed-key-guessed-key", COORDINATOR_TO_NODE, cn, nn, "rack1")
    assert not check_link_proof(KEY, COORDINATOR_TO_NODE, cn, nn, "rack1", forged_back)


def test_a_replayed_proof_fails_on_new_nonces() -> None:
    """A proof recorded on one connection is worth nothing on the next: the coordinator's
    nonce is new (a replayed Hello), or the node's is (a replayed Welcome)."""
    cn, nn = new_nonce(), new_nonce()
    hello = link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack1")
    welcome = link_proof(KEY, COORDINATOR_TO_NODE, cn, nn, "rack1")
    assert not check_link_proof(KEY, NODE_TO_COORDINATOR, new_nonce(), nn, "rack1", hello)
    assert not check_link_proof(KEY, COORDINATOR_TO_NODE, cn, new_nonce(), "rack1", welcome)


def test_one_direction_cannot_stand_for_the_other() -> None:
    """A fake coordinator that echoes the node's own proof back in its Welcome fails."""
    cn, nn = new_nonce(), new_nonce()
    hello = link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack1")
    assert not check_link_proof(KEY, COORDINATOR_TO_NODE, cn, nn, "rack1", hello)
    welcome = link_proof(KEY, COORDINATOR_TO_NODE, cn, nn, "rack1")
    assert not check_link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack1", welcome)


def test_another_nodes_name_or_a_garbage_proof_fails() -> None:
    cn, nn = new_nonce(), new_nonce()
    proof = link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack1")
    assert not check_link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack2", proof)
    for garbage in (None, "", "é" * 64, proof.upper()):
        assert not check_link_proof(KEY, NODE_TO_COORDINATOR, cn, nn, "rack1", garbage)
    with pytest.raises(ValueError):
        link_proof(KEY, "sideways", cn, nn, "rack1")


def test_a_repeated_refusal_is_logged_a_few_times_then_counted() -> None:
    """A refused peer redials every fraction of a second: its refusal is logged a few
    times a minute, the rest counted."""
    repeat = _RepeatLog(burst=3, period_s=60.0)
    assert [repeat("r") for _ in range(5)] == [0, 0, 0, None, None]
    assert repeat("other") == 0
    repeat._seen["r"][0] -= 61  # a minute later: written again, saying how many were held
    assert repeat("r") == 2


# --- node keys in the farm database ----------------------------------------------------------

@pytest.fixture
async def db(tmp_path):
    farm = await FarmDB.open(tmp_path / "farm.sqlite3")
    yield farm
    await farm.close()


async def test_a_key_is_issued_once_stored_sealed_and_listed_without_it(db, tmp_path) -> None:
    keyring = NodeKeyring(db, MASTER)
    view, key = await keyring.add("rack1")
    assert len(key) >= 40 and view["node"] == "rack1" and view["status"] == "active"
    assert keyring.lookup("rack1").key == key and keyring.lookup("rack2") is None
    listed = await keyring.list()
    assert listed == [view] and key not in repr(listed) and view["key_last4"] == key[-4:]
    raw = (await db._one("SELECT encrypted_key FROM node_keys"))[0]
    assert key not in raw
    assert SecretBox(MASTER, "node_keys").open(raw, None, "k") == key
    with pytest.raises(NodeKeyExists):
        await keyring.add("rack1")
    assert keyring.lookup("rack1").key == key  # unchanged
    with pytest.raises(ValidationError):
        await keyring.add("../etc")


async def test_a_revoked_key_refuses_the_node_and_a_new_one_replaces_it(db) -> None:
    keyring = NodeKeyring(db, MASTER)
    told = []
    keyring.on_revoked = lambda node, reason: told.append((node, reason))
    _, old = await keyring.add("rack1")
    before, after = await keyring.revoke("rack1")
    assert before["status"] == "active" and after["status"] == "revoked"
    credential = keyring.lookup("rack1")
    assert credential.key is None and "revoked" in credential.refusal
    assert told and told[0][0] == "rack1" and "revoked" in told[0][1]
    reloaded = NodeKeyring(db, MASTER)  # a coordinator restart sees the same
    await reloaded.load()
    assert reloaded.lookup("rack1").key is None and "revoked" in reloaded.lookup("rack1").refusal
    with pytest.raises(Exception, match="revoked already"):
        await keyring.revoke("rack1")
    with pytest.raises(LookupError):
        await keyring.revoke("rack9")
    _, new = await keyring.add("rack1")
    assert new != old and keyring.lookup("rack1").key == new


async def test_a_key_under_another_master_key_is_refused_with_the_reason(db, caplog) -> None:
    _, key = await NodeKeyring(db, MASTER).add("rack1")
    other = NodeKeyring(db, os.urandom(32))
    errors = await other.load()
    assert errors and "cannot be decrypted" in errors[0] and key not in errors[0]
    assert other.lookup("rack1").key is None


async def test_the_demo_keeps_its_node_key_file_in_step(db, tmp_path) -> None:
    keyring = NodeKeyring(db, MASTER)
    path = tmp_path / "demo-node.key"
    await ensure_node_key(keyring, "demo-node", path)
    key = path.read_text().strip()
    assert keyring.lookup("demo-node").key == key and path.stat().st_mode & 0o777 == 0o600
    await ensure_node_key(keyring, "demo-node", path)  # the same key on a second start
    assert path.read_text().strip() == key
    path.write_text("lost")
    await ensure_node_key(keyring, "demo-node", path)  # a lost file: a new key replaces it
    assert path.read_text().strip() not in (key, "lost")
    assert keyring.lookup("demo-node").key == path.read_text().strip()


# --- the HTTP routes -------------------------------------------------------------------------

class _KeyHub:
    """Only what the node key routes read: the keyring (the routes never touch the rest)."""

    def __init__(self, keyring: NodeKeyring) -> None:
        self.node_keys = keyring


async def test_routes_issue_list_and_revoke_keys_audited(db) -> None:
    keyring = NodeKeyring(db, MASTER)
    async with TestClient(TestServer(make_app(_KeyHub(keyring)))) as client:
        resp = await client.post("/api/nodes/keys", json={"node": "rack1"})
        assert resp.status == 201
        issued = await resp.json()
        assert issued["key"] == keyring.lookup("rack1").key
        again = await client.post("/api/nodes/keys", json={"node": "rack1"})
        assert again.status == 409 and (await again.json())["field"] == "$.node"
        bad = await client.post("/api/nodes/keys", json={"node": "rack 1"})
        assert bad.status == 400 and (await bad.json())["field"] == "$.node"
        listed = await (await client.get("/api/nodes/keys")).json()
        assert [k["node"] for k in listed["keys"]] == ["rack1"]
        assert issued["key"] not in str(listed)
        gone = await client.delete("/api/nodes/keys/rack1")
        assert gone.status == 200 and (await gone.json())["status"] == "revoked"
        assert (await client.delete("/api/nodes/keys/rack2")).status == 404
        assert (await client.delete("/api/nodes/keys/rack1")).status == 409
    trail = await db.audit_trail("node_key")
    assert [(e["action"], e["entity_id"]) for e in trail] == [("update", "rack1"),
                                                              ("create", "rack1")]
    assert all(issued["key"] not in str(e) for e in trail)
    assert trail[0]["reason"] == "revoked" and trail[0]["actor"]


async def test_routes_are_for_super_users_only(db) -> None:
    keyring = NodeKeyring(db, MASTER)
    app = make_app(_KeyHub(keyring))
    admin = Principal(user_id=7, name="ann", role="admin", client_ids=frozenset({1}))

    @web.middleware
    async def admin_caller(request, handler):  # the caller the auth middleware would set
        request[PRINCIPAL_KEY] = admin
        return await handler(request)

    app.middlewares.append(admin_caller)  # runs after the auth middleware: overrides it
    async with TestClient(TestServer(app)) as client:
        for method, path, body in (("post", "/api/nodes/keys", {"node": "rack1"}),
                                   ("get", "/api/nodes/keys", None),
                                   ("delete", "/api/nodes/keys/rack1", None)):
            resp = await getattr(client, method)(path, json=body)
            assert resp.status == 403, (method, path)
    assert keyring.lookup("rack1") is None and await db.node_key_rows() == []


# --- a node reports on its own phones and executions only ------------------------------------

@pytest.fixture
async def hub(tmp_path, db):
    store = await EventStore(tmp_path / "events.sqlite3").open()
    h = Hub("tcp://127.0.0.1:0", None, store, db=db, data_dir=tmp_path)
    h._node_up("rackA", Hello(node="rackA", proof="-", phones=[PhoneInfo(serial="SA",
                                                                         state="online")]))
    h._node_up("rackB", Hello(node="rackB", proof="-", phones=[PhoneInfo(serial="SB",
                                                                         state="online")]))
    yield h
    for task in list(h._tasks):
        task.cancel()
    await store.close()


async def test_events_about_another_nodes_phone_or_execution_are_refused(hub, db, caplog):
    caplog.set_level(logging.WARNING)
    await db.create_execution("ex-a", run_id="r1", serial="SA", sequence="s")
    await hub.handle_batch("rackB", [
        Event(seq=1, event="step_started", serial="SB",
              data={"execution_id": "ex-a", "path": "steps[0]", "index": 0, "type": "tap"}),
        Event(seq=2, event="screen_changed", serial="SA", data={"screen": "evil/home"}),
        Event(seq=3, event="screen_changed", serial="SB", data={"screen": "app/home"}),
    ])
    stored = {e["seq"]: e for e in await hub.store.events("rackB")}
    assert [stored[s]["event"] for s in (1, 2, 3)] == ["event_refused", "event_refused",
                                                        "screen_changed"]
    assert stored[1]["data"]["event"] == "step_started" and "ex-a" in stored[1]["data"]["reason"]
    assert "rackA" in stored[2]["data"]["reason"] and "evil/home" not in str(stored[2])
    assert hub.phone_rows["SA"]["node"] == "rackA" and hub.phone_rows["SA"]["last_screen"] is None
    assert hub.phone_rows["SB"]["last_screen"] == "app/home"
    assert (await db.get_execution("ex-a"))["steps"] == []
    assert hub.store.last_seq("rackB") == 3  # the seqs are taken: the node's stream goes on
    refusals = [r.getMessage() for r in caplog.records if "event refused" in r.getMessage()]
    assert len(refusals) == 2 and all("node=rackB" in m for m in refusals)
    # The owner's own report about it still counts.
    await hub.handle_batch("rackA", [Event(seq=1, event="step_started", serial="SA", data={
        "execution_id": "ex-a", "path": "steps[0]", "index": 0, "type": "tap"})])
    assert len((await db.get_execution("ex-a"))["steps"]) == 1


async def test_a_phone_offline_on_its_node_may_turn_up_on_another(hub) -> None:
    hub._node_down("rackA", "test")
    await hub.handle_batch("rackB", [Event(seq=1, event="phone_up", serial="SA", data={})])
    assert hub.phone_rows["SA"]["node"] == "rackB"
    assert [e["event"] for e in await hub.store.events("rackB")] == ["phone_up"]


# --- the shared secret: one release more, warned ----------------------------------------------

def test_the_shared_secret_still_works_with_a_warning_on_both_sides(tmp_path, caplog,
                                                                     monkeypatch) -> None:
    import argparse

    from actors.coordinator.main import farm_secret
    from actors.node.node import read_secret
    from actors.process import StartupError

    monkeypatch.delenv("PHONEFARM_SECRET", raising=False)
    caplog.set_level(logging.WARNING)
    args = argparse.Namespace(secret="s3cret", secret_file=None, demo=False)
    assert farm_secret(args, tmp_path) == "s3cret"
    assert read_secret("s3cret", None) == "s3cret"
    warned = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warned) == 2 and all("shared farm secret" in m for m in warned)
    assert all("s3cret" not in m for m in warned)
    caplog.clear()
    # Keys only: no secret is no error on the coordinator, and a node with its key file
    # proves the key (a shared secret given as well is not used), without a warning.
    assert farm_secret(argparse.Namespace(secret=None, secret_file=None, demo=False),
                       tmp_path) is None
    key_file = tmp_path / "rack1.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    assert read_secret("s3cret", None, str(key_file)) == KEY
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(StartupError, match="--key-file"):
        read_secret(None, None)
    key_file.write_text("short\n")
    with pytest.raises(StartupError, match="no node key"):
        read_secret(None, None, str(key_file))
