"""Backups of a farm on PostgreSQL (issue 18.3; actors/store/backup/postgres.py) against a real
server of the test run (tests/pg_cluster.py): pg_dump -Fc under one exported snapshot with the
manifest's counts, pg_restore into an empty database, in-flight executions marked, a database
in use or not empty refused, --force keeping the replaced database as a dump. Needs the
row-security functions keeping their search_path (pg_dump runs with an empty one)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from actors.store.backup import BackupError, restore_backup, take_backup
from actors.store.event_store import EventStore
from actors.store.farm_db import FarmDB

MASTER = bytes(range(32))


async def _farm(target, data: Path) -> tuple[FarmDB, EventStore]:
    store = await EventStore(data / "coordinator.sqlite3", target).open()
    db = await FarmDB.open(data / "farm.sqlite3", master_key=MASTER, target=target)
    # Rows written plainly: what is dumped and restored is the engine's concern here.
    await db.write_records(lambda records: records.conn.execute(
        "INSERT INTO phones (phone_id, serial_number) VALUES (1, 'p1')"))
    await db.write_records(lambda records: records.conn.execute(
        "INSERT INTO accounts (platform, account_number, username, phone_id, password_sealed)"
        " VALUES ('clipshare', '1', 'ann', 1, 'sealed-not-clear')"))
    await db.create_execution("ex-done", run_id="r1", serial="p1", status="completed")
    await db.create_execution("ex-live", run_id="r1", serial="p1", status="running")
    return db, store


async def test_dump_and_restore_a_postgresql_farm(pg_cluster, tmp_path: Path) -> None:
    source = pg_cluster.new_database()
    data = tmp_path / "data"
    (data / "registry").mkdir(parents=True)
    (data / "registry" / "app.json").write_text("{}")
    db, store = await _farm(source, data)
    try:
        folder, manifest = await asyncio.to_thread(take_backup, data, tmp_path / "b",
                                                   database=source)
        assert manifest["engine"] == "postgresql"
        assert {f["path"] for f in manifest["files"]} == {"farm.pgdump", "registry/app.json"}
        assert manifest["facts"]["executions"] == 2
        assert manifest["facts"]["executions_in_flight"] == 1
        assert manifest["facts"]["accounts"] == 1
        # The source is open (a running coordinator): refused, nothing written.
        with pytest.raises(BackupError, match="other connection"):
            restore_backup(folder, tmp_path / "x", database=source)
    finally:
        await db.close()
        await store.close()

    empty = pg_cluster.new_database(migrated=False)
    with pytest.raises(BackupError, match="cannot be restored into a sqlite farm"):
        restore_backup(folder, tmp_path / "fresh")
    report = restore_backup(folder, tmp_path / "fresh", database=empty)
    assert report.in_flight == ["ex-live"] and report.replaced is None
    assert not (tmp_path / "fresh" / "farm.pgdump").exists()
    assert (tmp_path / "fresh" / "registry" / "app.json").is_file()
    restored = await FarmDB.open(tmp_path / "fresh" / "farm.sqlite3", master_key=MASTER,
                                 target=empty)
    try:
        assert (await restored.get_execution("ex-done"))["status"] == "completed"
        live = await restored.get_execution("ex-live")
        assert live["status"] == "failed" and live["error_reason"] == "restored"
    finally:
        await restored.close()

    with pg_cluster.admin(empty.url.rsplit("/", 1)[1]) as conn:
        assert conn.execute("SELECT username, password_sealed FROM accounts").fetchall() == [
            ("ann", "sealed-not-clear")]
        assert conn.execute("SELECT count(*) FROM phones").fetchone()[0] == 1

    # The source database is not empty: refused without force, replaced with it (kept as
    # a dump beside the moved-aside data folder).
    with pytest.raises(BackupError, match=r"farm_.* is not empty \(.*\baccounts, "):
        restore_backup(folder, tmp_path / "again", database=source)
    report = restore_backup(folder, tmp_path / "again", database=source, force=True)
    assert report.replaced is not None
    assert list(report.replaced.glob("database-before-restore-*.pgdump"))
    assert report.in_flight == ["ex-live"]

    # farm restore --db (the CLI, as an operator runs it) into another empty database.
    other = pg_cluster.new_database(migrated=False)
    out = subprocess.run(
        [sys.executable, "-m", "actors.control.cli", "restore", str(folder), "--data",
         str(tmp_path / "cli"), "--db", other.url, "--db-password-file",
         str(pg_cluster.password_file(tmp_path))],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1 execution(s) in flight" in out.stdout and "ex-live" in out.stdout

    # A restore stopping after pg_restore loaded the database (here: marking the in-flight
    # executions fails) says the database is the backup's already and the folder is not.
    from actors.store.backup import postgres as pg_backup

    broken = pg_cluster.new_database(migrated=False)

    def lost(self, staged, note):  # noqa: ANN001
        raise OSError("connection lost")

    original = pg_backup.PostgresEngine.mark_in_flight
    pg_backup.PostgresEngine.mark_in_flight = lost
    try:
        with pytest.raises(BackupError, match="already holds the backup's database.*--force"):
            restore_backup(folder, tmp_path / "half", database=broken)
    finally:
        pg_backup.PostgresEngine.mark_in_flight = original
    assert not (tmp_path / "half").exists()
    report = restore_backup(folder, tmp_path / "half", database=broken, force=True)
    assert report.in_flight == ["ex-live"]
