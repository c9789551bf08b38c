"""Which database a coordinator keeps its farm in: the SQLite files of its data folder (the
default) or a PostgreSQL server (``--db postgresql://USER@HOST[:PORT]/DB``).

Owns parsing and checking the ``--db`` value and finding the PostgreSQL password. A password
never comes from the command line (other users see it in the process list): a URL that
carries one is refused; it comes from ``--db-password-file``, else libpq's own
``PGPASSWORD`` or ``~/.pgpass`` (read by libpq itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from protocol.errors import FarmError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_PG_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class DbTarget:
    """Where the farm database is: ``engine`` sqlite with the data folder's files, or
    postgresql with a libpq URL (without password) and the password, if one was read from a
    file (else libpq finds it)."""

    engine: str
    url: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def is_postgresql(self) -> bool:
        return self.engine == POSTGRESQL

    def describe(self) -> str:
        """The target as logs and messages name it (never the password; no parameters)."""
        if not self.is_postgresql:
            return "SQLite files in the data folder"
        return (self.url or "").split("?", 1)[0]


def parse_db(value: str | None, password_file: str | None = None) -> DbTarget:
    """The target named by ``--db`` (None or ``sqlite``: the data folder's SQLite files)."""
    if value is None or value.strip() in ("", SQLITE):
        if password_file:
            raise FarmError("--db-password-file: only for --db postgresql://...")
        return DbTarget(SQLITE)
    parts = urlsplit(value)
    if parts.scheme not in _PG_SCHEMES:
        raise FarmError(f"--db {value!r}: expected postgresql://USER@HOST[:PORT]/DATABASE "
                        "or sqlite (the default)")
    if parts.password is not None:
        raise FarmError("--db: the URL carries a password, which every user of this machine "
                        "can read in the process list; put it in --db-password-file, "
                        "PGPASSWORD or ~/.pgpass instead")
    params = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if params & {"password", "sslpassword"}:
        raise FarmError("--db: the URL carries a password parameter, which every user of this "
                        "machine can read in the process list; put it in --db-password-file, "
                        "PGPASSWORD or ~/.pgpass instead")
    if "options" in params:
        # The farm sets its own session options (time zone, phonefarm.clients for row-level
        # security); a URL's options would override them in pg_dump and drop every
        # client's rows from a backup.
        raise FarmError("--db: the URL's options parameter is not supported (the farm sets "
                        "its own session options); set server-side defaults with ALTER ROLE "
                        "... SET instead")
    if not parts.path.strip("/"):
        raise FarmError(f"--db {value!r}: no database name (postgresql://USER@HOST/DATABASE)")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError as exc:
        raise FarmError(f"--db {value!r}: {exc}") from None
    password = None
    if password_file:
        path = Path(password_file)
        try:
            password = path.read_text().strip("\r\n")
        except OSError as exc:
            raise FarmError(f"--db-password-file {path}: {exc.strerror or exc}") from None
        if not password:
            raise FarmError(f"--db-password-file {path}: the file is empty")
    return DbTarget(POSTGRESQL, value, password)


def add_db_options(parser: Any, what: str = "the farm database") -> None:
    """``--db`` and ``--db-password-file`` (defaults PHONEFARM_DB, PHONEFARM_DB_PASSWORD_FILE)
    on an argparse parser: the coordinator's and every local `farm` command's."""
    parser.add_argument("--db", metavar="URL", default=os.environ.get("PHONEFARM_DB"),
                        help=f"{what}: postgresql://USER@HOST[:PORT]/DATABASE, or sqlite (the "
                             "default: SQLite files in the data folder); env PHONEFARM_DB. The "
                             "password comes from --db-password-file, PGPASSWORD or ~/.pgpass, "
                             "never the URL")
    parser.add_argument("--db-password-file", metavar="FILE",
                        default=os.environ.get("PHONEFARM_DB_PASSWORD_FILE"),
                        help="file holding the PostgreSQL password (mode 0600; env "
                             "PHONEFARM_DB_PASSWORD_FILE)")


def db_from_env() -> DbTarget:
    """The target of ``PHONEFARM_DB`` / ``PHONEFARM_DB_PASSWORD_FILE`` (tools and tests)."""
    return parse_db(os.environ.get("PHONEFARM_DB"), os.environ.get("PHONEFARM_DB_PASSWORD_FILE"))
