"""How each database engine is dumped into a backup and loaded back: the seam between the
engine-neutral backup folder (actors.store.backup.manifest) and where the databases live.

`engine_for` (actors.store.backup.choose) picks the engine from the farm's database (the
coordinator's ``--db``): none or ``sqlite`` is `SqliteEngine` here (the farm database and the
event store are files in the data folder, copied with SQLite's online backup API); a
``postgresql://`` URL is `PostgresEngine` (actors.store.backup.postgres: ``pg_dump -Fc`` into
``farm.pgdump``, ``pg_restore`` into a database). Each engine dumps into a folder, reports the
facts and schema version of what it dumped, says whether the live database is in use or
holds anything, loads a verified dump, and marks the executions that were in flight when the
dump was taken (see `SqliteEngine.mark_in_flight`).
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Protocol

from actors.store.backup.manifest import BackupError, FILE_MODE
from actors.store.execution_records import ExecutionRecords

IN_FLIGHT = ("pending", "running", "paused")  # actors.coordinator.runs.ACTIVE
RESTORED_REASON = "restored"
# Tables counted into a manifest's facts (those missing from an older schema are skipped).
FACT_TABLES = {"executions": "executions", "accounts": "accounts", "users": "users",
               "phones": "phones", "clients": "clients",
               "sequence_definitions": "sequence_definitions",
               "workflow_definitions": "workflow_definitions", "schedules": "scheduler_rows"}


class DatabaseEngine(Protocol):
    """One database engine's side of a backup."""

    name: str
    DATABASES: tuple[str, ...]  # the files its dump is, in the backup folder

    def dump(self, out: Path, on_bytes: Callable[[int], None]) -> list[str]:
        """Write a consistent snapshot of the farm's databases into folder ``out``; the
        file names written (relative to ``out``)."""

    def size_hint(self) -> int:
        """Roughly how many bytes `dump` will write (for progress)."""

    def facts(self, out: Path) -> dict[str, Any]:
        """Counts of what the dump in ``out`` holds and its schema version."""

    def is_in_use(self) -> str | None:
        """Why the live databases are in use by a running coordinator, or None."""

    def present(self) -> list[str]:
        """What the target database holds outside the data folder (names; empty: nothing)."""

    def keep_aside(self, path: Path) -> None:
        """Save what a forced restore replaces outside the data folder, at ``path``."""

    def load(self, staged: Path, replace: bool) -> None:
        """Put the verified dump copied into ``staged`` where the engine keeps it."""

    def mark_in_flight(self, staged: Path, note: str) -> list[str]:
        """Mark the restored executions that were in flight; their ids."""


class SqliteEngine:
    """The SQLite farm: ``farm.sqlite3`` (FarmDB) and ``coordinator.sqlite3`` (EventStore)
    in the data folder, each copied with the online backup API, in one read transaction
    per database, so the copy is consistent while the coordinator writes (WAL mode)."""

    name = "sqlite"
    DATABASES = ("farm.sqlite3", "coordinator.sqlite3")

    def __init__(self, data: Path) -> None:
        self.data = Path(data)

    def size_hint(self) -> int:
        total = 0
        for name in self.DATABASES:
            for suffix in ("", "-wal"):
                try:
                    total += (self.data / (name + suffix)).stat().st_size
                except FileNotFoundError:
                    pass
        return total

    def dump(self, out: Path, on_bytes: Callable[[int], None]) -> list[str]:
        for name in self.DATABASES:
            src_path = self.data / name
            if not src_path.is_file():
                raise BackupError(f"{src_path}: no such database (is {self.data} a "
                                  f"coordinator's data folder?)")
            dst_path = out / name
            fd = os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            os.close(fd)
            src = sqlite3.connect(src_path, timeout=60)
            try:
                dst = sqlite3.connect(dst_path)
                try:
                    # pages=-1: the whole database in one step, one read transaction, so a
                    # concurrent writer neither restarts the copy nor tears it.
                    src.backup(dst, pages=-1)
                    # A self-contained file: no -wal beside it in the backup.
                    dst.execute("PRAGMA journal_mode=DELETE")
                    problem = dst.execute("PRAGMA quick_check").fetchone()[0]
                    if problem != "ok":
                        raise BackupError(f"{src_path}: the copy fails SQLite's check: {problem}")
                finally:
                    dst.close()
            except sqlite3.Error as exc:
                raise BackupError(f"{src_path}: cannot copy: {exc}") from None
            finally:
                src.close()
            on_bytes(dst_path.stat().st_size)
        return list(self.DATABASES)

    def facts(self, out: Path) -> dict[str, Any]:
        conn = sqlite3.connect(f"file:{out / 'farm.sqlite3'}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            facts = {key: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for key, table in FACT_TABLES.items() if table in tables}
            if "executions" in tables:
                facts["executions_in_flight"] = conn.execute(
                    f"SELECT count(*) FROM executions WHERE status IN "
                    f"({','.join('?' * len(IN_FLIGHT))})", IN_FLIGHT).fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
        return {"facts": facts, "schema_version": version}

    def is_in_use(self) -> str | None:
        for name in self.DATABASES:
            if _sqlite_open_elsewhere(self.data / name):
                return (f"{self.data / name} is open in another process (a running "
                        f"coordinator?): stop it first")
        return None

    def present(self) -> list[str]:
        return []  # the databases are files of the data folder, checked with it

    def keep_aside(self, path: Path) -> None:
        pass  # moved aside with the data folder

    def load(self, staged: Path, replace: bool) -> None:
        pass  # the copied files are the databases

    @staticmethod
    def mark_in_flight(staged: Path, note: str) -> list[str]:
        """In the restored copy in ``staged``: every execution that was in flight when the
        backup was taken ends ``failed`` with reason ``restored`` and ``note``. What it did
        after the backup is not in the copy, and crash resume would replay it from stale
        step records; a node still playing it reports its real end, which replaces this
        (execution_finished sets the status). The ids marked."""
        conn = sqlite3.connect(staged / "farm.sqlite3", isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            keys = mark_restored(conn, note)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return keys


def mark_restored(conn: Any, note: str) -> list[str]:
    """Inside the caller's transaction on ``conn`` (either engine's writer-style
    connection): every execution in flight ends ``failed`` with reason ``restored`` and
    ``note``; their keys."""
    keys = [r[0] for r in conn.execute(
        f"SELECT execution_key FROM executions WHERE status IN "
        f"({','.join('?' * len(IN_FLIGHT))}) ORDER BY execution_id", IN_FLIGHT).fetchall()]
    records = ExecutionRecords(conn)
    for key in keys:
        records.update(key, status="failed", error_reason=RESTORED_REASON, error_message=note)
    return keys


def _sqlite_open_elsewhere(db: Path) -> bool:
    """True when another process has SQLite database ``db`` open in WAL mode: each
    connection holds a shared lock on the ``-shm`` file's DMS byte (SQLite's unix VFS,
    offset 128), which a write lock probe then cannot take. No WAL index, no live user."""
    import fcntl

    shm = Path(f"{db}-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        fd = os.open(shm, os.O_RDONLY)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 128)
        return False
    finally:
        os.close(fd)
