"""Per-client / per-organization AI keys (actors.coordinator.ai.keys, actors.control.ai_keys): the master
key, encryption round trip, a wrong master key, the key never returned, stored or logged in
clear, the choice client > organization > default (two scripted OpenAI-compatible servers,
checked by which server and which key the requests used), and the API's 400s."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.coordinator.ai.client import AIClient, AIConfig  # noqa: E402
from actors.coordinator.ai.keys import (AIKeyring, KeyCipher, KeyDecryptError, MASTER_KEY_ENV,  # noqa: E402
                            load_master_key)
from actors.control.app import make_app  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from protocol.errors import ValidationError  # noqa: E402
from virtual.model_server import ScriptedModel, reply_text  # noqa: E402
from tests.api_call import call  # noqa: E402
from tests.engine_checks import dump_text  # noqa: E402

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

CLIENT_KEY = "sk-client-0123456789abcdefWXYZ"
ORG_KEY = "sk-org-9876543210zyxwvuQRST"
DEFAULT_KEY = "sk-default-key-1111"


async def no_sleep(_: float) -> None:
    return None


def master() -> bytes:
    return os.urandom(32)


# --- the master key ---------------------------------------------------------------------------


def test_master_key_generated_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_master_key(tmp_path / "data", env={})
    path = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32 and load_master_key(tmp_path / "data", env={}) == first


def test_master_key_from_env_or_file_wins_and_bad_ones_are_named(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    from_env = load_master_key(tmp_path, env={MASTER_KEY_ENV: key})
    assert len(from_env) == 32 and not (tmp_path / "secret.key").exists()
    key_file = tmp_path / "farm.key"
    key_file.write_text(key + "\n")
    assert load_master_key(tmp_path, key_file, env={}) == from_env
    with pytest.raises(ValidationError) as err:
        load_master_key(tmp_path, env={MASTER_KEY_ENV: "too-short"})
    assert err.value.where == MASTER_KEY_ENV
    with pytest.raises(ValidationError) as err:
        load_master_key(tmp_path, tmp_path / "missing.key", env={})
    assert "missing.key" in err.value.where


# --- encryption ---------------------------------------------------------------------------------


def test_encryption_round_trip_per_organization_and_wrong_key_names_the_key_id() -> None:
    cipher = KeyCipher(master())
    token = cipher.encrypt(CLIENT_KEY, 7)
    assert CLIENT_KEY not in token and "WXYZ" not in token
    assert cipher.decrypt(token, 7, key_id=3) == CLIENT_KEY
    with pytest.raises(KeyDecryptError) as err:  # another organization's derived key
        cipher.decrypt(token, 8, key_id=3)
    assert err.value.key_id == 3
    with pytest.raises(KeyDecryptError) as err:  # another master key
        KeyCipher(master()).decrypt(token, 7, key_id=12)
    assert "AI key 12" in str(err.value) and "master key" in str(err.value)
    assert CLIENT_KEY not in str(err.value)


# --- selection against two scripted servers -----------------------------------------------------


@pytest.fixture
async def models():
    a, b = ScriptedModel([reply_text("from A")]), ScriptedModel([reply_text("from B")])
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def farm_layout(db: FarmDB) -> None:
    """acme (in org 'agency') owns phone P1; beta (in 'agency') owns P2; gamma (no org) P3."""
    org = await db.upsert_organization("agency")
    for client, serial in (("acme", "P1"), ("beta", "P2"), ("gamma", "P3")):
        await db.upsert_client(client)
        await db.upsert_phone(serial, client=client)
    await db.set_client_organization("acme", org)
    await db.set_client_organization("beta", org)


def factory(config: AIConfig) -> AIClient:
    return AIClient(config, sleep=no_sleep)


async def test_selection_client_then_organization_then_default(db, models, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    a, b = models
    await farm_layout(db)
    default = factory(AIConfig(base_url=a.base_url, model="default-model", api_key=DEFAULT_KEY))
    keyring = AIKeyring(db, master(), default=lambda: default, client_factory=factory)
    org = await keyring.add(organization="agency", base_url=b.base_url, model="org-model",
                            key=ORG_KEY, label="agency key")
    client = await keyring.add(client="acme", base_url=a.base_url, model="client-model",
                               key=CLIENT_KEY)
    assert client["organization_id"] == org["organization_id"]

    for serial in ("P1", "P2", "P3", "UNKNOWN"):
        ai = await keyring.client_for(serial)
        await ai.chat("system", f"hello from {serial}")
    # P1 -> acme's key on A; P2 -> the agency's key on B; P3 and an unknown phone -> default (A).
    assert [r["model"] for r in a.requests] == ["client-model", "default-model", "default-model"]
    assert a.authorizations == [f"Bearer {CLIENT_KEY}", f"Bearer {DEFAULT_KEY}",
                                f"Bearer {DEFAULT_KEY}"]
    assert [r["model"] for r in b.requests] == ["org-model"]
    assert b.authorizations == [f"Bearer {ORG_KEY}"]
    # One client per distinct config, cached.
    assert await keyring.client_for("P1") is await keyring.client_for("P1")
    # The account's profile's client comes before the phone's: an acme account on gamma's P3.
    profile = await db.upsert_profile(client="acme", first_name="Ann")
    await db.upsert_account("P3", "clipshare", "1", profile_id=profile)
    (account,) = await db.account_rows("P3")
    ai = await keyring.client_for("P3", account["account_id"])
    assert ai.config.model == "client-model"
    # A retired client key falls back to the organization's.
    await keyring.retire(client["id"])
    assert (await keyring.client_for("P1")).config.model == "org-model"
    await keyring.close()
    await default.close()
    # The keys never reach the log.
    assert caplog.records and not any(k in caplog.text for k in (CLIENT_KEY, ORG_KEY, DEFAULT_KEY))


async def test_wrong_master_key_is_a_clear_error_naming_the_key(db, models) -> None:
    a, _ = models
    await farm_layout(db)
    first = AIKeyring(db, master(), default=lambda: None)
    older = await first.add(client="acme", base_url=a.base_url, model="m", key=ORG_KEY)
    stored = await first.add(client="acme", base_url=a.base_url, model="m", key=CLIENT_KEY)
    assert await first.check() == []
    other = AIKeyring(db, master(), default=lambda: None, client_factory=factory)
    with pytest.raises(KeyDecryptError) as err:
        await other.client_for("P1")
    assert f"AI key {stored['id']}" in str(err.value) and CLIENT_KEY not in str(err.value)
    errors = await other.check()  # start-up: every stored key is tried, each one named
    assert [f"AI key {older['id']}:" in errors[0], f"AI key {stored['id']}:" in errors[1]] \
        == [True, True]
    assert a.requests == []  # nothing was sent with a garbled key


# --- the API ------------------------------------------------------------------------------------


@pytest.fixture
async def api(db: FarmDB, tmp_path: Path):
    await farm_layout(db)
    hub = FakeHub()
    hub.db = db
    hub.ai_keys = AIKeyring(db, load_master_key(tmp_path / "data", env={}), default=lambda: None)
    async with TestClient(TestServer(make_app(hub))) as c:
        yield c


async def test_api_stores_lists_and_retires_without_ever_returning_the_key(
        api: TestClient, db: FarmDB, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    status, created = await call(api, "POST", "/api/ai-keys", {
        "client": "acme", "base_url": "http://127.0.0.1:9/v1", "model": "m", "key": CLIENT_KEY,
        "label": "acme prod"})
    assert status == 201, created
    assert created["key_last4"] == "WXYZ" and created["client"] == "acme"
    assert CLIENT_KEY not in str(created)
    status, org = await call(api, "POST", "/api/ai-keys", {
        "organization": "agency", "base_url": "https://models.example/v1", "model": "m2",
        "key": ORG_KEY})
    assert status == 201 and org["organization"] == "agency" and org["key_last4"] == "QRST"
    status, listed = await call(api, "GET", "/api/ai-keys")
    assert status == 200 and [k["id"] for k in listed["keys"]] == [created["id"], org["id"]]
    status, retired = await call(api, "DELETE", f"/api/ai-keys/{created['id']}")
    assert status == 200 and retired["status"] == "retired"
    assert [k["id"] for k in (await call(api, "GET", "/api/ai-keys"))[1]["keys"]] == [org["id"]]
    everything = (await call(api, "GET", "/api/ai-keys?retired=1"))[1]["keys"]
    assert len(everything) == 2
    # Nowhere in clear: not in any answer, the database file, the audit trail or the log.
    trail = await db.audit_trail("ai_key")
    assert [t["action"] for t in trail] == ["update", "create", "create"]
    assert trail[0]["reason"] == "soft delete (status retired)"
    dump = await dump_text(db)
    for key in (CLIENT_KEY, ORG_KEY):
        assert key not in str(everything) and key not in str(trail)
        assert key not in dump and key not in caplog.text
    assert "WXYZ" in dump  # the masked form is what is stored for display


@pytest.mark.parametrize("body, field", [
    ({"client": "acme", "base_url": "ftp://x", "model": "m", "key": "k"}, "$.base_url"),
    ({"client": "acme", "base_url": "http://h/v1", "model": "", "key": "k"}, "$.model"),
    ({"client": "acme", "base_url": "http://h/v1", "model": "m", "key": ""}, "$.key"),
    ({"client": "acme", "base_url": "http://h/v1", "model": "m"}, "$"),
    ({"base_url": "http://h/v1", "model": "m", "key": "k"}, "$.client"),
    ({"client": "acme", "organization": "agency", "base_url": "http://h/v1", "model": "m",
      "key": "k"}, "$.client"),
    ({"client": "nobody", "base_url": "http://h/v1", "model": "m", "key": "k"}, "$.client"),
    ({"organization": "nowhere", "base_url": "http://h/v1", "model": "m", "key": "k"},
     "$.organization"),
    ({"client": "acme", "base_url": "http://h/v1", "model": "m", "key": "k", "colour": 1},
     "$"),
])
async def test_api_400_names_the_field(api: TestClient, body: dict, field: str) -> None:
    status, answer = await call(api, "POST", "/api/ai-keys", body)
    assert status == 400 and answer["field"] == field, answer
    assert (await call(api, "GET", "/api/ai-keys"))[1]["keys"] == []


async def test_api_delete_needs_an_integer_id_and_an_existing_key(api: TestClient) -> None:
    status, answer = await call(api, "DELETE", "/api/ai-keys/abc")
    assert status == 400 and answer["field"] == "key_id"
    status, answer = await call(api, "DELETE", "/api/ai-keys/99")
    assert status == 404 and "99" in answer["error"]


# --- runs: each execution's ai.* variables and recovery prompt follow its client's key ----------


class KeyedHub:
    """What RunManager needs of a hub, with per-client AI keys (records what is sent)."""

    def __init__(self, keyring: AIKeyring, default: AIClient | None) -> None:
        self.ai, self.ai_keys, self.sent = default, keyring, {}

    def phones(self) -> list[dict]:
        return [{"serial": s, "node": "n1"} for s in ("P1", "P2", "P3")]

    async def ai_for(self, serial: str, account_id: int | None = None) -> AIClient | None:
        return await self.ai_keys.client_for(serial, account_id)

    async def send_run(self, serial: str, run) -> dict:
        self.sent[serial] = run
        return {"status": "ok"}


async def test_runs_resolve_ai_variables_with_the_phones_client_key(db, models) -> None:
    from actors.coordinator.runs import RunManager
    from sequences.load import walk_steps

    a, b = models
    await farm_layout(db)
    keyring = AIKeyring(db, master(), default=lambda: None, client_factory=factory)
    await keyring.add(client="acme", base_url=b.base_url, model="acme-model", key=CLIENT_KEY)
    hub = KeyedHub(keyring, None)  # no default: only acme's phone has AI
    sequence = {"name": "say", "app": "clipshare", "recovery_prompt": "get to the feed",
                "steps": [{"type": "type", "text": "${ai.caption(hello)}"}]}
    started = await RunManager(hub, db, ".").start(sequence, "phone:P1,P3")
    out = started["executions"]
    assert out["P1"]["status"] == "pending" and out["P3"]["status"] == "failed"
    assert "AI is off" in out["P3"]["error"]
    (step,) = [s for _, s in walk_steps(hub.sent["P1"].steps)]
    assert step.text == "from B" and b.authorizations == [f"Bearer {CLIENT_KEY}"]
    assert hub.sent["P1"].recovery_prompt == "get to the feed" and a.requests == []
    # Without ai.* texts, a phone with no AI model runs, only without a recovery prompt.
    plain = {**sequence, "steps": [{"type": "type", "text": "hi"}]}
    started = await RunManager(hub, db, ".").start(plain, "phone:P3")
    assert started["executions"]["P3"]["status"] == "pending"
    assert hub.sent["P3"].recovery_prompt is None
    await keyring.close()
