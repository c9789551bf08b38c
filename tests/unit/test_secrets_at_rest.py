"""Secrets at rest (issue 17.5): account and profile passwords sealed in the farm database
under a per-organization key derived from the master key (actors.access.secrets_box), never
read back in clear except for a run's typing, and the start-up sealing of plaintext rows of
a database written before v12 (idempotent, all or nothing, no plaintext left in the file)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from actors.access.secrets_box import SecretBox, SecretDecryptError
from actors.coordinator.ai.keys import KeyCipher
from actors.store.farm_db import PASSWORDS, SECRET_MASK, FarmDB
from actors.store.migrations import MIGRATIONS, statements as _statements

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

PLAIN = ("hunter2-plain", "own-secret-77", "profile-secret-42")


def master() -> bytes:
    return os.urandom(32)


def file_bytes(path: Path) -> bytes:
    """The database file and whatever WAL/SHM lies beside it."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


# --- the box ------------------------------------------------------------------------------------


def test_box_round_trip_per_organization_and_purpose() -> None:
    key = master()
    box = SecretBox(key, PASSWORDS)
    token = box.seal("hunter2", 7)
    assert "hunter2" not in token
    assert box.open(token, 7, "account 1 password") == "hunter2"
    assert SecretBox(key, PASSWORDS).open(token, 7, "x") == "hunter2"  # derived, not random
    with pytest.raises(SecretDecryptError) as err:  # another organization's key
        box.open(token, 8, "account 1 password")
    assert err.value.what == "account 1 password" and "hunter2" not in str(err.value)
    with pytest.raises(SecretDecryptError):  # no organization has a key of its own
        box.open(token, None, "x")
    with pytest.raises(SecretDecryptError, match="account 3 password: cannot be decrypted"):
        SecretBox(master(), PASSWORDS).open(token, 7, "account 3 password")
    # One derivation for both kinds, kept apart by purpose: the AI keys' ciphertexts (stored
    # before this module existed) still open, and a password box cannot open them.
    ai_token = KeyCipher(key).encrypt("sk-123", 7)
    assert SecretBox(key, "api_keys").open(ai_token, 7, "AI key 1") == "sk-123"
    with pytest.raises(SecretDecryptError):
        box.open(ai_token, 7, "AI key 1")


# --- sealed on write, write-only on read --------------------------------------------------------


async def farm(path: Path, key: bytes | None) -> FarmDB:
    db = await FarmDB.open(path, master_key=key)
    org = await db.upsert_organization("Agency")
    await db.upsert_client("Acme")
    await db.set_client_organization("Acme", org)
    await db.upsert_phone("p1", client="Acme")
    return db


async def test_passwords_are_sealed_and_only_a_run_opens_them(tmp_path: Path,
                                                             engine: str) -> None:
    key = master()
    path = tmp_path / "farm.sqlite3"
    db = await farm(path, key)
    org = (await db.organization_row("Agency"))["organization_id"]
    profile = await db.upsert_profile(client="Acme", first_name="Ann",
                                      profile_password=PLAIN[2])
    await db.upsert_account("p1", "ig", "a1", username="ann", password=PLAIN[1],
                            profile_id=profile)
    await db.upsert_account("p1", "ig", "a2", username="ann2", profile_id=profile)
    # A run's plan holds the resolved text the node types: stored sealed as well.
    plan = f'{{"steps": [{{"type": "type", "text": "{PLAIN[0]}"}}]}}'
    await db.create_execution("ex-1", serial="p1", status="running", plan=plan)

    rows = await db._all("SELECT password, password_sealed, password_org FROM accounts"
                         " ORDER BY account_id")
    prow = await db._one("SELECT profile_password, profile_password_sealed, password_org"
                         " FROM profiles")
    assert rows[0][0] is None and rows[0][1] and rows[0][2] == org
    assert tuple(rows[1]) == (None, None, None)
    assert prow[0] is None and prow[2] == org
    box = SecretBox(key, PASSWORDS)
    assert box.open(rows[0][1], org, "x") == PLAIN[1]  # under the organization's key
    assert box.open(prow[1], org, "x") == PLAIN[2]
    assert [r["plan"] for r in await db.unfinished_executions(["p1"])] == [plan]
    assert "plan" not in await db.get_execution("ex-1")
    stored = str([tuple(r) for table in ("accounts", "profiles", "executions", "audit_log")
                  for r in await db._all(f"SELECT * FROM {table}")])
    assert not any(p in stored for p in PLAIN)
    await db.close()
    if engine == "sqlite":  # nor in the file's free pages or WAL
        assert not any(p.encode() in file_bytes(path) for p in PLAIN)

    db = await FarmDB.open(path, master_key=key)
    accounts = {a["account_number"]: a for a in await db.account_rows()}
    assert accounts["a1"]["password_set"] and not accounts["a2"]["password_set"]
    assert accounts["a2"]["profile"]["profile_password_set"]
    assert all("password" not in a and "profile_password" not in a["profile"]
               for a in accounts.values())
    assert [p["profile_password_set"] for p in await db.profile_rows()] == [True]
    assert "profile_password" not in (await db.profile_row(profile))
    assert "profile_password" not in (await db.phone_rows())[0]["profile"]

    text = "${account.ig.a1.password}|${account.ig.a2.password}|${profile.profile_password}"
    assert await db.resolve_text(text, "p1") == "|".join([SECRET_MASK] * 3)
    assert await db.resolve_text(text, "p1", secrets=True) == (
        f"{PLAIN[1]}|{PLAIN[2]}|{PLAIN[2]}")  # a2 has none of its own: the profile's

    # None leaves a password, "" removes it (then the profile's is typed).
    await db.upsert_account("p1", "ig", "a1", bio="hi")
    assert await db.resolve_text("${account.ig.a1.password}", "p1", secrets=True) == PLAIN[1]
    await db.upsert_account("p1", "ig", "a1", password="")
    assert await db.resolve_text("${account.ig.a1.password}", "p1", secrets=True) == PLAIN[2]
    await db.upsert_profile(profile, profile_password="")
    assert not (await db.profile_row(profile))["profile_password_set"]

    # Another master key: the run's resolution names the password it cannot open.
    await db.upsert_account("p1", "ig", "a2", password=PLAIN[0])
    await db.close()
    db = await FarmDB.open(path, master_key=master())
    with pytest.raises(SecretDecryptError, match=r"account \d+ password: cannot be decrypted"):
        await db.variable_context("p1", secrets=True)
    assert (await db.variable_context("p1")).accounts  # a preview opens nothing
    await db.close()


async def test_audit_keeps_only_whether_a_password_was_set(db: FarmDB) -> None:
    await db.audit("profile", 1, "update", {"profile_password": "old", "first_name": "A"},
                   {"profile_password": "", "first_name": "B"})
    await db.audit("phone", 1, "update", None, {"profile": {"profile_password": "pw"}})
    trail = await db.audit_trail()
    assert trail[0]["after"] == {"profile": {"profile_password_set": True}}
    assert trail[1]["before"] == {"profile_password_set": True, "first_name": "A"}
    assert trail[1]["after"] == {"profile_password_set": False, "first_name": "B"}


# --- the start-up sealing of a database from before v12 -----------------------------------------


def plaintext_v11(path: Path) -> None:
    """A database as version 11 left it: passwords in clear, one in the audit trail too."""
    with sqlite3.connect(path) as raw:
        for migration in MIGRATIONS[:11]:
            for statement in _statements(migration):
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 11")
        raw.execute("INSERT INTO organizations (name) VALUES ('Agency')")
        raw.execute("INSERT INTO clients (name, status, organization_id) VALUES"
                    " ('Acme', 'active', 1)")
        raw.execute("INSERT INTO phones (serial_number, client_id) VALUES ('p1', 1)")
        raw.execute("INSERT INTO profiles (first_name, profile_password, client_id) VALUES"
                    f" ('Ann', '{PLAIN[2]}', 1)")
        for number, password in (("a1", PLAIN[0]), ("a2", PLAIN[1]), ("a3", "")):
            raw.execute("INSERT INTO accounts (platform, account_number, phone_id, username,"
                        " password, profile_id, status) VALUES ('ig', ?, 1, 'u', ?, 1,"
                        " 'active')", (number, password))
        for key, status, secret in (("ex-live", "running", PLAIN[0]),
                                    ("ex-done", "completed", PLAIN[1])):
            raw.execute("INSERT INTO executions (execution_key, serial, status, plan) VALUES"
                        " (?, 'p1', ?, ?)", (key, status, f'{{"text": "{secret}"}}'))
        raw.execute("INSERT INTO audit_log (at, actor, entity_type, entity_id, action,"
                    " before_state, after_state) VALUES ('2024-01-01', 'control-api',"
                    " 'profile', '1', 'create', NULL, ?)",
                    (f'{{"first_name": "Ann", "profile_password": "{PLAIN[2]}"}}',))
    sqlite3.connect(path).close()


def dump(path: Path) -> list:
    with sqlite3.connect(path) as raw:
        return [raw.execute("SELECT * FROM accounts ORDER BY account_id").fetchall(),
                raw.execute("SELECT * FROM profiles").fetchall(),
                raw.execute("SELECT * FROM audit_log").fetchall()]


PRE_V12 = "SQLite history: a PostgreSQL database starts at the newest version (sealed)"


async def test_plaintext_rows_are_sealed_at_start_once(tmp_path: Path, engine: str) -> None:
    if engine == "postgresql":
        pytest.skip(PRE_V12)
    path = tmp_path / "farm.sqlite3"
    plaintext_v11(path)
    assert all(p.encode() in file_bytes(path) for p in PLAIN)
    key = master()

    # Opened without the coordinator's key (a tool): nothing is sealed, nothing shown.
    db = await FarmDB.open(path)
    assert await db.schema_version() == len(MIGRATIONS)
    assert [a["password_set"] for a in await db.account_rows()] == [True, True, False]
    assert await db.resolve_text("${account.ig.a1.password}", "p1") == SECRET_MASK
    assert await db.resolve_text("${account.ig.a1.password}", "p1", secrets=True) == PLAIN[0]
    await db.close()
    assert (tmp_path / "secret.key").exists() is False  # nothing needed a key

    db = await FarmDB.open(path, master_key=key)
    text = "${account.ig.a1.password}|${account.ig.a2.password}|${account.ig.a3.password}"
    assert await db.resolve_text(text, "p1", secrets=True) == (
        f"{PLAIN[0]}|{PLAIN[1]}|{PLAIN[2]}")
    trail = await db.audit_trail()
    assert trail[0]["after"] == {"first_name": "Ann", "profile_password_set": True}
    assert trail[0]["actor"] == "control-api"  # only the secret changed
    # The unfinished execution can still be resumed; a finished one's plan is gone.
    assert [(r["key"], r["plan"]) for r in await db.unfinished_executions(["p1"])] == [
        ("ex-live", f'{{"text": "{PLAIN[0]}"}}')]
    await db.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT plan FROM executions WHERE execution_key = 'ex-done'"
                           ).fetchone() == (None,)
    after_first = dump(path)
    accounts, profiles, _ = after_first
    assert [r[4] for r in accounts] == [None, None, None]  # accounts.password emptied
    assert not any(p.encode() in file_bytes(path) for p in PLAIN)

    db = await FarmDB.open(path, master_key=key)  # a second start changes nothing
    await db.close()
    assert dump(path) == after_first


async def test_a_failed_sealing_leaves_every_row_as_it_was(tmp_path: Path, monkeypatch,
                                                           engine: str) -> None:
    if engine == "postgresql":
        pytest.skip(PRE_V12)
    path = tmp_path / "farm.sqlite3"
    plaintext_v11(path)
    db = await FarmDB.open(path)  # to v12, rows still in clear
    await db.close()
    before = dump(path)
    calls = []
    real_seal = SecretBox.seal

    def failing_seal(self, secret, organization_id):
        calls.append(secret)
        if len(calls) == 2:  # the second row: the first one is sealed already
            raise OSError("disk gone")
        return real_seal(self, secret, organization_id)

    monkeypatch.setattr(SecretBox, "seal", failing_seal)
    with pytest.raises(OSError, match="disk gone"):
        await FarmDB.open(path, master_key=master())
    assert dump(path) == before  # not one row half done
    monkeypatch.setattr(SecretBox, "seal", real_seal)
    key = master()
    db = await FarmDB.open(path, master_key=key)
    assert await db.resolve_text("${account.ig.a2.password}", "p1", secrets=True) == PLAIN[1]
    await db.close()
