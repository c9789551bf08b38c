"""Which engine backs up and restores a farm: chosen by the farm's database (``--db``)."""

from __future__ import annotations

import os
from pathlib import Path

from actors.store.backup.engines import SqliteEngine
from actors.store.backup.manifest import BackupError
from actors.store.backup.postgres import PostgresEngine
from actors.store.db_target import DbTarget, parse_db


def engine_for(data: str | os.PathLike, database: DbTarget | str | None = None
               ) -> SqliteEngine | PostgresEngine:
    """The engine of the farm with data folder ``data`` whose database is ``database``: a
    `DbTarget`, or the ``--db`` text (None or ``sqlite``: the SQLite files in ``data``;
    ``postgresql://...``: that server's database, password from libpq's own sources)."""
    if not isinstance(database, DbTarget):
        try:
            database = parse_db(database)
        except Exception as exc:  # FarmError naming the value
            raise BackupError(str(exc)) from None
    if database.is_postgresql:
        return PostgresEngine(database)
    return SqliteEngine(Path(data))
