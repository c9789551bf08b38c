"""The database engines a bench runs on, from its repeatable ``--db`` option.

Owns turning ``--db`` values into DbTargets and, for ``--db pgtemp``, a throwaway PostgreSQL
cluster of the bench's own (tests/pg_cluster.py: initdb in a temp dir, the farm's role with
a password, a fresh migrated database), stopped when the bench ends. Values:
``sqlite`` (files in the bench's temp dir), ``postgresql://USER@HOST[:PORT]/DB`` (an existing
server; password from ``--db-password-file``, PGPASSWORD or ~/.pgpass), ``pgtemp``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.store.db_target import DbTarget, parse_db  # noqa: E402

PGTEMP = "pgtemp"
DB_HELP = ("database engine to run on, repeatable (each in turn): sqlite (default), "
           "postgresql://USER@HOST[:PORT]/DB (password: --db-password-file, PGPASSWORD or "
           "~/.pgpass), or pgtemp (a throwaway PostgreSQL cluster started for the bench: "
           "needs PostgreSQL's server programs, apt-get install postgresql)")


def label(target: DbTarget) -> str:
    """How figure lines name the engine."""
    return "PostgreSQL" if target.is_postgresql else "SQLite"


@contextlib.contextmanager
def db_targets(values: list[str] | None, password_file: str | None
               ) -> Iterator[list[DbTarget]]:
    """The targets of ``values`` (None or empty: sqlite), in order; a ``pgtemp`` cluster
    runs until the block ends."""
    cluster = None
    out: list[DbTarget] = []
    try:
        for value in values or ["sqlite"]:
            if value == PGTEMP:
                if cluster is None:
                    from tests.pg_cluster import PgCluster

                    cluster = PgCluster().start()
                out.append(cluster.new_database())
            else:
                out.append(parse_db(value, password_file if value != "sqlite" else None))
        yield out
    finally:
        if cluster is not None:
            cluster.stop()
