"""The farm database's two engines: choosing one (--db), the SQL translation, schema versions
(`farm db status|migrate`) and refusing a newer schema, on a real SQLite file and a real
PostgreSQL server (tests/pg_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.control.cli import main as farm
from actors.store.db_target import parse_db
from actors.store.farm_db import FarmDB
from actors.store.migrations import SCHEMA_VERSION, schema_status
from actors.store.sql_dialect import ddl_to_postgres, to_postgres
from protocol.errors import FarmError


@pytest.mark.parametrize("value, problem", [
    ("postgresql://farm:hunter2@db/farm", "carries a password"),
    ("postgresql://farm@db/farm?sslmode=require&password=hunter2", "password parameter"),
    ("postgresql://farm@db/farm?options=-c%20search_path%3Dx", "options parameter"),
    ("mysql://farm@db/farm", "expected postgresql://"),
    ("postgresql://farm@db", "no database name"),
    ("postgresql://farm@db:notaport/farm", "--db"),
])
def test_a_bad_db_url_is_refused_naming_the_problem(value: str, problem: str) -> None:
    with pytest.raises(FarmError, match=problem):
        parse_db(value)


def test_the_password_comes_from_a_file_never_the_url(tmp_path: Path) -> None:
    assert parse_db(None).engine == "sqlite"
    assert parse_db("sqlite").engine == "sqlite"
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    target = parse_db("postgresql://farm@db:5433/farm", str(secret))
    assert (target.engine, target.password) == ("postgresql", "s3cret")
    assert "s3cret" not in target.describe() and "s3cret" not in repr(target)
    assert parse_db("postgresql://farm@db/farm?sslmode=require").describe() == (
        "postgresql://farm@db/farm")
    (tmp_path / "empty").write_text("")
    with pytest.raises(FarmError, match="empty"):
        parse_db("postgresql://farm@db/farm", str(tmp_path / "empty"))
    with pytest.raises(FarmError, match="missing"):
        parse_db("postgresql://farm@db/farm", str(tmp_path / "missing"))
    with pytest.raises(FarmError, match="only for --db postgresql"):
        parse_db(None, str(secret))


def test_sql_is_translated_outside_quotes_only() -> None:
    assert to_postgres("SELECT a FROM t WHERE b = ? AND c LIKE '%?%'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE '%%?%%'")
    assert to_postgres('SELECT "we?rd" FROM t WHERE x = ?') == 'SELECT "we?rd" FROM t WHERE x = %s'
    assert to_postgres("SELECT 1 -- it's ?\n, ?") == "SELECT 1 -- it's ?\n, %s"
    ddl = ddl_to_postgres("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, at TIMESTAMP,"
                          " frame_timestamp REAL, doc JSON)")
    assert ddl == ("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, n BIGINT, at TIMESTAMPTZ,"
                   " frame_timestamp DOUBLE PRECISION, doc JSONB)")


def _db_args(engine: str, pg_target) -> list[str]:  # noqa: ANN001
    return [] if engine == "sqlite" else ["--db", pg_target.url]


def test_farm_db_status_and_migrate_on_both_engines(tmp_path: Path, engine: str,
                                                          request, capsys) -> None:
    data = tmp_path / "data"
    if engine == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        target = cluster.new_database(migrated=False)
        args = ["--db", target.url, "--db-password-file", str(cluster.password_file(tmp_path))]
    else:
        target, args = parse_db(None), []
    assert farm(["db", "status", "--data", str(data), *args]) == 0
    assert "not created yet" in capsys.readouterr().out
    assert farm(["db", "migrate", "--data", str(data), *args]) == 0
    assert f"-> {SCHEMA_VERSION}" in capsys.readouterr().out
    assert farm(["db", "status", "--data", str(data), *args]) == 0
    assert "up to date" in capsys.readouterr().out
    assert schema_status(data, target)["version"] == SCHEMA_VERSION


async def test_a_newer_schema_is_refused_on_both_engines(tmp_path: Path, engine: str,
                                                         request) -> None:
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    target = db.target
    await db._write("PRAGMA user_version = 99" if engine == "sqlite"
                    else "UPDATE phonefarm_schema SET version = 99")
    await db.close()
    with pytest.raises(FarmError, match="schema version 99 is newer than this program's"):
        await FarmDB.open(tmp_path / "farm.sqlite3", target=target)
    status = schema_status(tmp_path, target)
    assert status["newer_than_program"] and status["version"] == 99


def test_a_coordinator_refuses_a_password_in_the_url(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "actors.coordinator", "--data", str(tmp_path / "d"),
         "--http", "127.0.0.1:0", "--listen", "tcp://127.0.0.1:0", "--retention", "off",
         "--db", "postgresql://farm:hunter2@127.0.0.1/farm"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2
    assert "carries a password" in done.stderr and "hunter2" not in done.stderr


async def test_a_dropped_postgresql_connection_is_replaced(pg_cluster, tmp_path: Path) -> None:
    """The server restarted or an administrator ended the farm's sessions: the write in
    flight fails naming it (its COMMIT may have landed, so it is not replayed), the next
    write and every read work on fresh connections."""
    target = pg_cluster.new_database()
    db = await FarmDB.open(tmp_path / "farm.sqlite3", target=target)
    try:
        await db.upsert_phone("P1")
        dbname = target.url.rsplit("/", 1)[1]
        with pg_cluster.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        try:
            await db.upsert_phone("P2")
        except Exception as exc:  # noqa: BLE001 - the write that met the dropped connection
            assert "terminat" in str(exc) or "closed" in str(exc) or "connection" in str(exc)
        await db.upsert_phone("P3")
        serials = {p["serial"] for p in await db.phone_rows()}
        assert {"P1", "P3"} <= serials
    finally:
        await db.close()


def test_farm_vars_preview_reads_a_postgresql_farm(pg_cluster, tmp_path: Path, capsys,
                                                    monkeypatch) -> None:
    import asyncio

    target = pg_cluster.new_database()
    monkeypatch.setenv("PHONEFARM_DATA", str(tmp_path))

    async def seed() -> None:
        db = await FarmDB.open(tmp_path / "farm.sqlite3", target=target)
        await db.upsert_client("acme")
        await db.upsert_phone("P1", client="acme")
        await db.close()

    asyncio.run(seed())
    args = ["--db", target.url, "--db-password-file", str(pg_cluster.password_file(tmp_path))]
    assert farm(["vars", "preview", "{Hi|Hi} ${client.name}", "--phone", "P1",
                 *args]) == 0
    assert capsys.readouterr().out.strip() == "Hi acme"


async def test_the_event_store_keeps_each_event_once_on_both_engines(tmp_path: Path,
                                                                     engine: str) -> None:
    from actors.store.event_store import EventStore

    store = await EventStore(tmp_path / "coordinator.sqlite3").open()
    try:
        events = [(seq, "action_result", "P1", {"n": seq}) for seq in range(1, 1201)]
        assert await store.add_many("rack1", events, 1.5) == set(range(1, 1201))
        again = [(seq, "action_result", "P1", {"n": -seq}) for seq in range(1195, 1206)]
        assert await store.add_many("rack1", again, 2.0) == set(range(1201, 1206))
        stored = await store.events("rack1")
        assert [e["seq"] for e in stored] == list(range(1, 1206))
        assert stored[1196]["data"] == {"n": 1197}  # the first delivery kept, not replaced
    finally:
        await store.close()
    reopened = await EventStore(tmp_path / "coordinator.sqlite3").open()
    try:
        assert reopened.last_seq("rack1") == 1205
    finally:
        await reopened.close()


async def test_times_read_the_same_whatever_the_server_s_date_style(pg_cluster,
                                                                     tmp_path: Path) -> None:
    """A server (or database) set to another DateStyle would otherwise send its times as
    '08/12/2026 01:02:03.5 UTC', which the farm reads as text in one form (actors/store/pg.py
    `_TimestampText`): the farm's sessions set ISO themselves, as they set UTC."""
    target = pg_cluster.new_database()
    with pg_cluster.admin() as admin:
        admin.execute(f"ALTER DATABASE {target.url.rsplit('/', 1)[1]}"
                      " SET DateStyle = 'SQL, DMY'")
    db = await FarmDB.open(tmp_path / "farm.sqlite3", target=target)
    try:
        row = await db._one("SELECT TIMESTAMPTZ '2026-12-08 01:02:03.5+00',"
                            " TIMESTAMP '2026-12-08 01:02:03'")
        assert tuple(row) == ("2026-12-08 01:02:03.500000", "2026-12-08 01:02:03.000000")
    finally:
        await db.close()
