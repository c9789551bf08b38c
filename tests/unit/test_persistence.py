"""The farm database: migrations, foreign keys, execution records, seeding and reads (real
SQLite files in tmp_path)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from datetime import datetime, timezone

import pytest

from actors.store.farm_db import SCHEMA_VERSION, FarmDB, seed_demo
from protocol.errors import FarmError, ValidationError
from tests.engine_checks import INTEGRITY_ERRORS, columns, foreign_keys, index_leads, tables

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "actors" / "store" / "schema"

pytestmark = pytest.mark.usefixtures("engine")


async def test_migrations_apply_on_a_fresh_file_and_reopen_is_a_no_op(tmp_path, engine):
    path = tmp_path / "sub" / "farm.sqlite3"
    db = await FarmDB.open(path)
    # One migration per vN.sql file, numbered without a gap.
    files = sorted(int(f.name[1:-4]) for f in SCHEMA_DIR.glob("v*.sql")
                   if not f.name.endswith(".postgresql.sql"))
    assert files == list(range(1, len(files) + 1))
    assert await db.schema_version() == SCHEMA_VERSION == len(files)
    await db.upsert_client("Acme")
    assert {"clients", "users", "agents", "phones", "profiles", "accounts", "hashtag_sets",
            "caption_templates", "media_files", "custom_variables", "counters", "tasks",
            "executions", "execution_steps", "scheduler_state", "schedule_events"
            } <= await tables(db)
    assert {"execution_key", "run_id", "serial", "sequence", "error_reason",
            "current_step", "plan"} <= await columns(db, "executions")
    await db.close()
    if engine == "sqlite":
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db = await FarmDB.open(path)
    assert await db.schema_version() == SCHEMA_VERSION
    assert await db.upsert_client("Acme") == 1  # data kept, nothing re-created
    await db.close()


async def test_a_version_1_database_upgrades_without_loss(tmp_path, engine):
    from actors.store.migrations import MIGRATIONS, statements as _statements

    if engine == "postgresql":
        pytest.skip("SQLite history: a PostgreSQL database starts at the newest version")

    path = tmp_path / "farm.sqlite3"
    with sqlite3.connect(path) as raw:  # a database as the first release left it
        for statement in _statements(MIGRATIONS[0]):
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 1")
        raw.execute("INSERT INTO clients (name, status) VALUES ('Old Co', 'active')")
        raw.execute("INSERT INTO executions (execution_key, serial, status) VALUES "
                    "('ex-old', 'p1', 'running')")
    db = await FarmDB.open(path)
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        assert (await db.get_execution("ex-old"))["status"] == "running"
        await db.update_execution("ex-old", plan='{"steps": []}')
        (unfinished,) = await db.unfinished_executions(["p1"])
        assert unfinished["plan"] == '{"steps": []}' and await db.upsert_client("Old Co") == 1
        assert "plan" not in await db.get_execution("ex-old")  # views leave the plan out
    finally:
        await db.close()


async def test_a_newer_schema_is_refused(tmp_path, engine):
    path = tmp_path / "farm.sqlite3"
    if engine == "sqlite":
        with sqlite3.connect(path) as raw:
            raw.execute("PRAGMA user_version = 99")
    else:  # PostgreSQL keeps its version in a table
        db = await FarmDB.open(path)
        await db._write("UPDATE phonefarm_schema SET version = 99")
        await db.close()
    with pytest.raises(FarmError, match="schema version 99"):
        await FarmDB.open(path)


async def test_foreign_keys_are_on(db, engine):
    if engine == "sqlite":  # PostgreSQL always checks them
        assert (await db._one("PRAGMA foreign_keys"))[0] == 1
    with pytest.raises(INTEGRITY_ERRORS):
        await db._write("INSERT INTO phones (serial_number, client_id) VALUES ('x', 42)")


async def test_execution_records(db):
    await db.upsert_phone("emu-1")
    first = await db.create_execution("ex-1", run_id="run-a", serial="emu-1",
                                      sequence="clipshare/login")
    await db.create_execution("ex-2", run_id="run-b", serial="unknown-serial")
    with pytest.raises(INTEGRITY_ERRORS):
        await db.create_execution("ex-1")
    step = await db.add_step("ex-1", 0, "tap", path="$.steps[0]")
    await db.finish_step(step, "success", screen_name="clipshare/feed")
    step2 = await db.add_step("ex-1", 1, "type", path="$.steps[1]")
    await db.finish_step(step2, "failed", error="timeout", screenshot="shots/1.png")
    await db.update_execution("ex-1", status="failed", error_reason="step_failed",
                              error_message="step 1: timeout")

    record = await db.get_execution("ex-1")
    assert record["execution_id"] == first and record["key"] == "ex-1"
    assert record["phone_id"] is not None and record["serial"] == "emu-1"
    assert record["status"] == "failed" and record["end_time"] is not None
    assert record["current_step"] == 1 and record["error_reason"] == "step_failed"
    assert [(s["step_number"], s["status"], s["path"]) for s in record["steps"]] == [
        (0, "success", "$.steps[0]"), (1, "failed", "$.steps[1]")]
    assert record["steps"][0]["screen_name"] == "clipshare/feed"
    assert record["steps"][1]["error"] == "timeout"
    assert record["steps"][1]["screenshot"] == "shots/1.png"
    assert (await db.get_execution("ex-2"))["phone_id"] is None
    assert await db.get_execution("nope") is None

    assert [e["key"] for e in await db.list_executions()] == ["ex-1", "ex-2"]
    assert [e["key"] for e in await db.list_executions(run_id="run-b")] == ["ex-2"]
    with pytest.raises(ValidationError, match="unknown fields"):
        await db.update_execution("ex-1", bogus=1)
    with pytest.raises(ValidationError, match="no such execution"):
        await db.update_execution("nope", status="running")
    with pytest.raises(ValidationError, match="no such execution"):
        await db.add_step("nope", 0)


async def test_explicit_times_are_stored_as_utc_text(db):
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    await db.create_execution("ex", start_time=when)
    await db.update_execution("ex", end_time=when)
    record = await db.get_execution("ex")
    assert record["start_time"] == record["end_time"] == "2026-03-04 05:06:07.000000"


async def test_seed_demo_and_reads(db):
    await seed_demo(db, ["emu-1", "emu-2"])
    await seed_demo(db, ["emu-1", "emu-2"])  # idempotent: no duplicate profiles or accounts
    phones = await db.phone_rows()
    assert [p["serial"] for p in phones] == ["emu-1", "emu-2"]
    assert [p["client"] for p in phones] == ["Demo Farm", "Acme"]  # two tenants
    assert phones[0]["profile"]["first_name"] != phones[1]["profile"]["first_name"]
    assert (await db._one("SELECT COUNT(*) FROM profiles"))[0] == 2
    accounts = await db.account_rows()
    assert len(accounts) == 6
    assert {(a["account_number"], a["username"], a["password_set"]) for a in accounts
            if a["serial"] == "emu-1"} == {("account1", "clip_creator", True),
                                           ("account2", "dance_daily", True),
                                           ("account3", "chef_mia", True)}
    assert all("password" not in a for a in accounts)  # write-only (issue 17.5)
    ctx = await db.variable_context("emu-1", secrets=True)  # what a run types
    assert {(a["account_number"], a["password"]) for a in ctx.accounts} == {
        ("account1", "hunter2"), ("account2", "pass123"), ("account3", "tasty42")}
    assert all(a["platform"] == "clipshare" for a in accounts)


async def test_account_password_falls_back_to_the_profile_password(db):
    await db.upsert_phone("emu-1")
    profile = await db.upsert_profile(first_name="Ada", profile_password="from-profile")
    await db.upsert_account("emu-1", "tiktok", "account1", username="ada", profile_id=profile)
    await db.upsert_account("emu-1", "tiktok", "account2", username="ada2", password="own",
                            profile_id=profile)
    rows = {a["account_number"]: a for a in await db.account_rows("emu-1")}
    assert not rows["account1"]["password_set"] and rows["account2"]["password_set"]
    assert rows["account1"]["profile"]["profile_password_set"]
    ctx = await db.variable_context("emu-1", secrets=True)
    typed = {a["account_number"]: a["password"] for a in ctx.accounts}
    assert typed == {"account1": "from-profile", "account2": "own"}


async def test_upserts_refuse_unknown_references(db):
    with pytest.raises(ValidationError, match="no such client"):
        await db.upsert_phone("emu-1", client="Nobody")
    with pytest.raises(ValidationError, match="not in the farm database"):
        await db.upsert_account("ghost", "tiktok", "account1")


async def test_counters_are_atomic_and_persist(tmp_path):
    path = tmp_path / "farm.sqlite3"
    db = await FarmDB.open(path)
    assert [await db.next_counter("posts", 10, 5) for _ in range(3)] == [10, 15, 20]
    await db.close()
    db = await FarmDB.open(path)
    assert await db.next_counter("posts", 10, 5) == 25
    await db.close()


async def test_media_round_robin_over_a_folder(db, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("b.mp4", "a.jpg", "notes.txt"):
        (folder / name).write_text("x")
    picks = [await db.next_media(str(folder)) for _ in range(4)]
    assert [p.rsplit("/", 1)[1] for p in picks] == ["a.jpg", "b.mp4", "a.jpg", "b.mp4"]
    (folder / "c.png").write_text("x")  # a new file is used before the others repeat
    assert (await db.next_media(str(folder))).endswith("c.png")
    with pytest.raises(ValidationError, match="no media files"):
        await db.next_media(str(tmp_path / "empty-and-missing"))


async def test_groups_are_stored_and_come_back_whole(db):
    book = await db.group_book()  # nothing stored: the spec's built-in set
    assert {"active", "warming"} <= set(book.groups)
    book.create("creators", "account")
    book.create("top", "account", parent="creators")
    book.create("men", "phone", type="smart", filter="filter.phones where profile.gender=male")
    book.add_member("creators", "clipshare.account1@p1")
    book.add_member("creators", "clipshare.account2@p1")
    book.add_member("top", "clipshare.account2@p1")
    book.add_member("active", "clipshare.account1@p1")
    book.excludes("top", "warming")
    await db.save_group_book(book)
    again = await db.group_book()
    assert again.groups == book.groups and sorted(map(str, again.rules)) == sorted(map(str, book.rules))
    # The rules come back too: warming excludes top's member, active/warming stay exclusive.
    with pytest.raises(ValidationError, match="excludes"):
        again.add_member("warming", "clipshare.account2@p1")
    with pytest.raises(ValidationError, match="account_status"):
        again.add_member("warming", "clipshare.account1@p1")


SPEC_TABLES = {
    # 7.5.1 (plus agents, which phones reference)
    "clients", "users", "agents", "phones", "profiles", "accounts",
    # 7.5.2 / 15.5
    "groups", "group_memberships", "group_relationships",
    # 7.5.3
    "tasks", "task_dependencies", "task_targets", "executions", "execution_steps",
    # 7.5.4
    "content_posts", "post_metrics", "post_analytics_sources",
    # 7.5.5
    "content_analysis", "content_tags",
    # 7.5.6
    "conversations", "messages", "message_responses",
    # 7.5.7
    "link_in_bio", "link_clicks",
    # 7.5.8
    "client_daily_metrics", "platform_daily_metrics",
    # 7.5.9
    "scheduled_workflows", "workflow_executions", "sequence_executions", "task_executions",
    "recovery_attempts",
    # 7.5.10
    "organizations", "user_client_access",
    # 7.5.11
    "app_registry", "apk_files", "phone_apps", "active_apps", "active_accounts",
    # 12.2
    "task_definitions", "sequence_definitions", "workflow_definitions", "workflow_sequences",
    # 16.4, 16.3.1
    "api_keys", "audit_log",
}


async def test_every_spec_table_exists_with_foreign_keys_and_indexes(tmp_path, engine):
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    try:
        found = await tables(db)
        assert SPEC_TABLES <= found, sorted(SPEC_TABLES - found)
        if engine == "sqlite":  # PostgreSQL never holds a row whose key is missing
            assert await db._all("PRAGMA foreign_key_check") == []
        # The spec's foreign keys are declared (a few, spot-checked by name) ...
        fks = await foreign_keys(db)
        for fk in [("clients", "organization_id", "organizations", "organization_id"),
                   ("users", "organization_id", "organizations", "organization_id"),
                   ("post_metrics", "post_id", "content_posts", "post_id"),
                   ("messages", "conversation_id", "conversations", "conversation_id"),
                   ("workflow_sequences", "sequence_def_id", "sequence_definitions",
                    "sequence_def_id"),
                   ("task_executions", "sequence_execution_id", "sequence_executions",
                    "sequence_execution_id"),
                   ("active_accounts", "account_id", "accounts", "account_id"),
                   ("api_keys", "organization_id", "organizations", "organization_id")]:
            assert fk in fks, fk
        # ... and every foreign key column of every table leads some index.
        leads = {t: await index_leads(db, t) for t in {t for (t, _, _, _) in fks}}
        unindexed = sorted((t, c) for (t, c, _, _) in fks if c not in leads[t])
        assert unindexed == []
        assert "entity_type" in await index_leads(db, "audit_log")
        # 7.5.10's variant of users, soft-delete status columns, api_keys never plaintext.
        assert {"organization_id", "email", "status", "updated_at"} <= await columns(db, "users")
        for table in ("organizations", "users", "clients", "task_definitions",
                      "sequence_definitions", "workflow_definitions", "api_keys", "apk_files",
                      "phone_apps", "content_posts", "app_registry"):
            assert "status" in await columns(db, table)
        key_columns = await columns(db, "api_keys")
        assert "encrypted_key" in key_columns and not {"key", "api_key", "secret"} & key_columns
    finally:
        await db.close()


async def test_the_previous_version_upgrades_with_its_rows_intact(tmp_path, engine):
    from actors.store.migrations import MIGRATIONS, statements as _statements

    if engine == "postgresql":
        pytest.skip("SQLite history: a PostgreSQL database starts at the newest version")

    path = tmp_path / "farm.sqlite3"
    with sqlite3.connect(path) as raw:  # a database as version 4 left it (v5 reshaped clients)
        for migration in MIGRATIONS[:4]:
            for statement in _statements(migration):
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 4")
        raw.execute("INSERT INTO clients (name, status) VALUES ('Old Co', 'active')")
        raw.execute("INSERT INTO users (username, password_hash, role, client_id) VALUES "
                    "('ann', 'h', 'admin', 1)")
        raw.execute("INSERT INTO tasks (name, client_id, created_by) VALUES ('post', 1, 1)")
        raw.execute("INSERT INTO executions (execution_key, serial, status, task_id) VALUES "
                    "('ex-old', 'p1', 'running', 1)")
        raw.execute("INSERT INTO groups (name, type, member_kind) VALUES "
                    "('warm', 'custom', 'phone')")
        raw.execute("INSERT INTO schedule_events (at, kind) VALUES ('2024-01-01', 'fired')")
    before = _dump(path, ["clients", "users", "tasks", "executions", "groups",
                          "schedule_events"])
    db = await FarmDB.open(path)
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        assert (await db.get_execution("ex-old"))["status"] == "running"
        org = (await db._write("INSERT INTO organizations (name) VALUES ('Org') "
                               "RETURNING organization_id"))[0]
        await db._write("UPDATE clients SET organization_id = ? WHERE name = 'Old Co'", (org,))
        await db._write("INSERT INTO workflow_definitions (name, client_id, created_by) "
                        "VALUES ('daily', 1, 1)")
        with pytest.raises(sqlite3.IntegrityError):  # foreign keys on for the new tables
            await db._write("INSERT INTO workflow_sequences (workflow_def_id, sequence_def_id)"
                            " VALUES (1, 99)")
    finally:
        await db.close()
    after = _dump(path, ["clients", "users", "tasks", "executions", "groups",
                         "schedule_events"])
    for table, rows in before.items():  # every old row and value kept; new columns added
        assert len(after[table]) == len(rows)
        for old, new in zip(rows, after[table]):
            assert {k: new[k] for k in old} == old
    assert after["clients"][0]["organization_id"] == org
    assert {k: after["clients"][0][k] for k in ("name", "status")} == {"name": "Old Co",
                                                                       "status": "active"}
    assert after["users"][0]["status"] == "active" and after["users"][0]["email"] is None


def _dump(path, tables: list[str]) -> dict[str, list[dict]]:
    with sqlite3.connect(path) as raw:
        raw.row_factory = sqlite3.Row
        return {t: [dict(r) for r in raw.execute(f"SELECT * FROM {t} ORDER BY rowid")]
                for t in tables}


async def test_audit_round_trip(db):
    first = await db.audit("workflow_definition", 7, "create", None,
                           {"name": "daily", "steps": [1, 2]}, actor=3, reason="new")
    await db.audit("workflow_definition", 7, "update", {"name": "daily"},
                   {"name": "daily v2"}, actor="ann", reason="rename")
    await db.audit("sequence_definition", "s1", "delete", {"name": "x"}, None)
    trail = await db.audit_trail("workflow_definition", 7)
    assert [e["action"] for e in trail] == ["update", "create"]  # newest first
    update, create = trail
    assert create["audit_id"] == first and create["actor"] == "3"
    assert create["before"] is None and create["after"] == {"name": "daily", "steps": [1, 2]}
    assert update["before"] == {"name": "daily"} and update["after"] == {"name": "daily v2"}
    assert update["reason"] == "rename" and update["entity_id"] == "7"
    assert update["at"] >= create["at"]
    (deleted,) = await db.audit_trail(entity_type="sequence_definition")
    assert deleted["actor"] is None and deleted["reason"] is None and deleted["after"] is None
    assert len(await db.audit_trail()) == 3 and len(await db.audit_trail(limit=1)) == 1
    assert await db.audit_trail(entity_id="s1") == [deleted]
    with pytest.raises(ValidationError):
        await db.audit("workflow_definition", 7, "rename", None, None)
