"""The farm database's schema versions: one forward-only list of migrations for both engines.

Owns the list (``actors/store/schema/vN.sql`` moves a database from version N-1 to N),
the per-engine form of each (SQLite runs the file; PostgreSQL runs its ``vN.postgresql.sql``
twin where one exists, else the file with native types, actors.store.sql_dialect), where
each engine keeps its version (SQLite ``PRAGMA user_version``; PostgreSQL the one-row table
``phonefarm_schema``), and `migrate_postgresql`. Never edit an applied file; add one.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from actors.store.db_target import POSTGRESQL, SQLITE, DbTarget
from actors.store.sql_dialect import ddl_to_postgres
from protocol.errors import FarmError

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
_NUMBERED = sorted(int(p.stem[1:]) for p in SCHEMA_DIR.glob("v*.sql") if p.stem[1:].isdigit())
MIGRATIONS: list[str] = [(SCHEMA_DIR / f"v{n}.sql").read_text()
                         for n in range(1, len(_NUMBERED) + 1)]
SCHEMA_VERSION = len(MIGRATIONS)
PG_VERSION_TABLE = "phonefarm_schema"
# Two coordinators started at once on one PostgreSQL database migrate one after the other.
_PG_MIGRATION_LOCK = 0x70686F6E  # "phon"


def check_schema_version(version: int, where: str, known: int | None = None) -> None:
    """Refuse a database written by a newer program (its tables may mean other things)."""
    known = SCHEMA_VERSION if known is None else known
    if version > known:
        raise FarmError(f"farm database {where}: schema version {version} is newer than "
                        f"this program's {known}; run the newer phonefarm, or restore a "
                        "backup taken with this version")


def migration_statements(number: int, engine: str) -> list[str]:
    """The statements of migration ``number`` (1-based) for ``engine``."""
    if engine == POSTGRESQL:
        twin = SCHEMA_DIR / f"v{number}.postgresql.sql"
        script = twin.read_text() if twin.exists() else ddl_to_postgres(MIGRATIONS[number - 1])
        return statements(script)
    if engine != SQLITE:
        raise FarmError(f"unknown database engine {engine!r}")
    return statements(MIGRATIONS[number - 1])


def statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3.complete_statement knows quoting;
    a PostgreSQL function body is one dollar-quoted statement ending in ``$$;``)."""
    out, current, in_body = [], "", False
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        current += line
        if line.count("$$") % 2:
            in_body = not in_body
        if not in_body and sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


def postgresql_version(conn) -> int:  # noqa: ANN001 - an actors.store.pg.PgConnection
    """The schema version of a PostgreSQL database (0: empty)."""
    found = conn.execute("SELECT to_regclass(?)", (PG_VERSION_TABLE,)).fetchone()[0]
    if found is None:
        return 0
    return conn.execute(f"SELECT version FROM {PG_VERSION_TABLE}").fetchone()[0]


def migrate_postgresql(target: DbTarget, upto: int | None = None) -> tuple[int, int]:
    """Bring the PostgreSQL database of ``target`` to ``upto`` (default the newest), each
    migration in one transaction (PostgreSQL's DDL is transactional: a failed one leaves the
    version before). Returns (version before, version after). Blocking: call in a thread."""
    from actors.store.pg import connect_sync

    upto = SCHEMA_VERSION if upto is None else upto
    conn = connect_sync(target.url, target.password)  # type: ignore[arg-type]
    try:
        conn.execute("SELECT pg_advisory_lock(?)", (_PG_MIGRATION_LOCK,))
        before = postgresql_version(conn)
        check_schema_version(before, target.describe())
        for number in range(before, upto):
            conn.execute("BEGIN")
            try:
                if number == 0:
                    conn.execute(f"CREATE TABLE {PG_VERSION_TABLE} (version INTEGER NOT NULL)")
                    conn.execute(f"INSERT INTO {PG_VERSION_TABLE} VALUES (0)")
                for statement in migration_statements(number + 1, POSTGRESQL):
                    conn.raw.execute(statement)  # as written: no placeholders in a script
                conn.execute(f"UPDATE {PG_VERSION_TABLE} SET version = ?", (number + 1,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("farm database %s migrated to schema version %d", target.describe(),
                     number + 1)
        return before, max(before, upto)
    finally:
        conn.close()


def sqlite_version(path: Path) -> int | None:
    """The schema version of the SQLite farm database at ``path`` (None: no file yet)."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def schema_status(data_dir: Path, target: DbTarget) -> dict:
    """What `farm db status` shows: the engine, where the database is, its schema version
    (None: not created yet), this program's, and the migrations pending."""
    if target.is_postgresql:
        from actors.store.pg import connect_sync

        where = target.describe()
        conn = connect_sync(target.url, target.password)  # type: ignore[arg-type]
        try:
            version: int | None = postgresql_version(conn) or None  # 0: an empty database
        finally:
            conn.close()
    else:
        where = str(data_dir / "farm.sqlite3")
        version = sqlite_version(data_dir / "farm.sqlite3")
    current = version or 0
    return {"engine": target.engine, "database": where, "version": version,
            "program_version": SCHEMA_VERSION,
            "pending": max(0, SCHEMA_VERSION - current),
            "newer_than_program": current > SCHEMA_VERSION}
