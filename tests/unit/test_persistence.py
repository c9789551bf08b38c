"""The farm database: migrations, foreign keys, execution records, seeding and reads (real
SQLite files in tmp_path)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from actors.persistence import SCHEMA_VERSION, FarmDB, seed_demo
from protocol.errors import FarmError, ValidationError


@pytest.fixture
async def db(tmp_path):
    farm = await FarmDB.open(tmp_path / "farm.sqlite3")
    yield farm
    await farm.close()


async def test_migrations_apply_on_a_fresh_file_and_reopen_is_a_no_op(tmp_path):
    path = tmp_path / "sub" / "farm.sqlite3"
    db = await FarmDB.open(path)
    assert await db.schema_version() == SCHEMA_VERSION == 5
    await db.upsert_client("Acme")
    await db.close()
    with sqlite3.connect(path) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"clients", "users", "agents", "phones", "profiles", "accounts", "hashtag_sets",
                "caption_templates", "media_files", "custom_variables", "counters", "tasks",
                "executions", "execution_steps", "scheduler_state", "schedule_events"} <= tables
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {r[1] for r in raw.execute("PRAGMA table_info(executions)")}
        assert {"execution_key", "run_id", "serial", "sequence", "error_reason",
                "current_step", "plan"} <= columns
    db = await FarmDB.open(path)
    assert await db.schema_version() == SCHEMA_VERSION
    assert await db.upsert_client("Acme") == 1  # data kept, nothing re-created
    await db.close()


async def test_a_version_1_database_upgrades_without_loss(tmp_path):
    from actors.persistence import MIGRATIONS, _statements

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


async def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "farm.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(FarmError, match="schema version 99"):
        await FarmDB.open(path)


async def test_foreign_keys_are_on(db):
    assert (await db._one("PRAGMA foreign_keys"))[0] == 1
    with pytest.raises(sqlite3.IntegrityError):
        await db._write("INSERT INTO phones (serial_number, client_id) VALUES ('x', 42)")


async def test_execution_records(db):
    await db.upsert_phone("emu-1")
    first = await db.create_execution("ex-1", run_id="run-a", serial="emu-1",
                                      sequence="clipshare/login")
    await db.create_execution("ex-2", run_id="run-b", serial="unknown-serial")
    with pytest.raises(sqlite3.IntegrityError):
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
    assert all(p["client"] == "Demo Farm" for p in phones)
    assert phones[0]["profile"]["first_name"] != phones[1]["profile"]["first_name"]
    assert (await db._one("SELECT COUNT(*) FROM profiles"))[0] == 2
    accounts = await db.account_rows()
    assert len(accounts) == 6
    assert {(a["account_number"], a["username"], a["password"]) for a in accounts
            if a["serial"] == "emu-1"} == {("account1", "clip_creator", "hunter2"),
                                           ("account2", "dance_daily", "pass123"),
                                           ("account3", "chef_mia", "tasty42")}
    assert all(a["platform"] == "clipshare" for a in accounts)


async def test_account_password_falls_back_to_the_profile_password(db):
    await db.upsert_phone("emu-1")
    profile = await db.upsert_profile(first_name="Ada", profile_password="from-profile")
    await db.upsert_account("emu-1", "tiktok", "account1", username="ada", profile_id=profile)
    await db.upsert_account("emu-1", "tiktok", "account2", username="ada2", password="own",
                            profile_id=profile)
    rows = {a["account_number"]: a for a in await db.account_rows("emu-1")}
    assert rows["account1"]["password"] == "from-profile"
    assert rows["account2"]["password"] == "own"


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
