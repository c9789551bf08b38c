"""The PostgreSQL engine of a backup (``--db postgresql://...``): ``pg_dump -Fc`` and
``pg_restore`` of the farm's database (farm tables and the event store's ``node_events``).

Owns dumping the database into ``farm.pgdump`` under a snapshot exported from a read-only
repeatable-read transaction (the manifest's counts are read in that same snapshot, so they
describe exactly what was dumped), checking whether a database is in use or holds tables,
keeping a dump of a database a forced restore replaces, loading a dump in one transaction,
and marking the executions that were in flight. Row-level security (schema v14) binds the
farm's role: every session here says ``phonefarm.clients=*`` (the farm's own work) and the
tools run with row security on, so they see and write every client's rows.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from actors.store.backup.engines import FACT_TABLES, IN_FLIGHT, mark_restored
from actors.store.backup.manifest import FILE_MODE, BackupError
from actors.store.caller_scope import ALL_CLIENTS
from actors.store.db_target import DbTarget

DUMP = "farm.pgdump"


def pg_tool(name: str) -> str:
    """The newest installed ``pg_dump`` / ``pg_restore`` (Debian keeps them per major version
    under /usr/lib/postgresql; a dump is read by a pg_restore at least as new)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    tool = found[-1] if found else shutil.which(name)
    if not tool:
        raise BackupError(f"{name} not found: install PostgreSQL's client programs "
                          f"(apt-get install postgresql-client)")
    return tool


class PostgresEngine:
    """A farm whose database is on a PostgreSQL server (``target``: a libpq URL without
    password, and the password from --db-password-file, else PGPASSWORD / ~/.pgpass)."""

    name = "postgresql"
    DATABASES = (DUMP,)

    def __init__(self, target: DbTarget) -> None:
        self.target = target
        self._dumped: dict[str, Any] | None = None

    # --- connections and tools ------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {**os.environ, "PGOPTIONS": f"-c phonefarm.clients={ALL_CLIENTS}",
               "PGAPPNAME": "phonefarm-backup"}
        if self.target.password is not None:
            env["PGPASSWORD"] = self.target.password
        return env

    def _connect(self, autocommit: bool = True) -> Any:
        import psycopg

        from actors.store.pg import connect_kwargs

        kwargs = {**connect_kwargs(self.target.url, self.target.password),  # type: ignore[arg-type]
                  "autocommit": autocommit, "application_name": "phonefarm-backup"}
        try:
            return psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise BackupError(f"{self.target.describe()}: cannot connect: "
                              f"{str(exc).strip().splitlines()[0]}") from None

    def _tool(self, *args: str) -> None:
        done = subprocess.run(list(args), env=self._env(), capture_output=True, text=True)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines()
            errors = [line for line in lines if "error:" in line] or lines
            raise BackupError(f"{Path(args[0]).name} {self.target.describe()}: "
                              f"{errors[0] if errors else f'exit status {done.returncode}'}")

    # --- taking a backup ------------------------------------------------------------------
    def size_hint(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])

    def dump(self, out: Path, on_bytes: Callable[[int], None]) -> list[str]:
        path = out / DUMP
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        with self._connect(autocommit=False) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            self._dumped = _facts(conn)
            # pg_dump reads the same snapshot while this transaction holds it open.
            self._tool(pg_tool("pg_dump"), "--format=custom", "--no-owner",
                       "--enable-row-security", f"--snapshot={snapshot}", f"--file={path}",
                       f"--dbname={self.target.url}")
            conn.rollback()
        on_bytes(path.stat().st_size)
        return [DUMP]

    def facts(self, out: Path) -> dict[str, Any]:
        if self._dumped is None:
            raise BackupError("facts before dump")
        return self._dumped

    # --- restoring ------------------------------------------------------------------------
    def is_in_use(self) -> str | None:
        with self._connect() as conn:
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()").fetchone()[0]
        if others:
            return (f"{self.target.describe()} has {others} other connection(s) (a running "
                    f"coordinator?): stop it first")
        return None

    def present(self) -> list[str]:
        """The tables the target database already holds (empty: none)."""
        with self._connect() as conn:
            return [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " ORDER BY tablename").fetchall()]

    def keep_aside(self, path: Path) -> None:
        """A dump of the database a forced restore is about to replace, at ``path``."""
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        self._tool(pg_tool("pg_dump"), "--format=custom", "--no-owner",
                   "--enable-row-security", f"--file={path}", f"--dbname={self.target.url}")

    def load(self, staged: Path, replace: bool) -> None:
        """Restore the dump in ``staged`` into the target database in one transaction (an
        error leaves the database as it was); ``replace`` drops what is there first. The
        dump file leaves the staged data folder afterwards."""
        args = [pg_tool("pg_restore"), "--single-transaction", "--exit-on-error",
                "--no-owner", "--enable-row-security", f"--dbname={self.target.url}"]
        if replace:
            args += ["--clean", "--if-exists"]
        self._tool(*args, str(staged / DUMP))
        (staged / DUMP).unlink()

    def mark_in_flight(self, staged: Path, note: str) -> list[str]:
        """As `SqliteEngine.mark_in_flight`, in the restored database."""
        from actors.store.pg import connect_sync

        conn = connect_sync(self.target.url, self.target.password)
        try:
            conn.execute("BEGIN")
            keys = mark_restored(conn, note)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return keys


def _facts(conn: Any) -> dict[str, Any]:
    from actors.store.migrations import PG_VERSION_TABLE

    def exists(table: str) -> bool:
        return conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None

    facts = {key: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
             for key, table in FACT_TABLES.items() if exists(table)}
    if exists("executions"):
        facts["executions_in_flight"] = conn.execute(
            "SELECT count(*) FROM executions WHERE status = ANY(%s)",
            (list(IN_FLIGHT),)).fetchone()[0]
    version = (conn.execute(f"SELECT version FROM {PG_VERSION_TABLE}").fetchone()[0]
               if exists(PG_VERSION_TABLE) else 0)
    return {"facts": facts, "schema_version": version}
