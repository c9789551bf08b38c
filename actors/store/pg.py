"""PostgreSQL under the farm's SQL: connections that take the SQL written for SQLite and give
rows as SQLite's do.

Owns the psycopg side of the two engines: `connect_sync` (the single writer's connection,
on its thread), `PgReader` (a pool of async connections for reads), `Row` (index and name
access, like ``sqlite3.Row``), and the loaders that give values as the SQLite file stores
them: timestamps as UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``, JSON as text, NUMERIC as
int or float. So `FarmDB`, its writer jobs and `ExecutionRecords` run unchanged on both.

Why psycopg 3 and not asyncpg: the single writer runs plain functions over a connection
on its own thread (``job(conn)``, many statements, no awaits) and psycopg has the same
connection both sync (for that thread) and async (for the readers, with psycopg_pool);
asyncpg is async only, so every writer job would have to become a coroutine.

Tenant isolation (row-level security, schema v14): every connection starts with the
setting ``phonefarm.clients`` = ``*`` (the farm: the coordinator's own work, the single
writer's jobs, which the coordinator checked before queueing them); a read made for a
caller reaching only some clients (actors.store.caller_scope) sets their ids with
``set_config(..., true)`` (``SET LOCAL``: it ends with the read's transaction), and the
policies hide every other client's rows from it.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

import psycopg
from psycopg.adapt import Loader
from psycopg.rows import RowMaker
from psycopg_pool import AsyncConnectionPool

from actors.store.db_writer import SingleWriter
from actors.store.caller_scope import ALL_CLIENTS, caller_clients, clients_setting
from actors.store.sql_dialect import to_postgres

log = logging.getLogger(__name__)

_SET_CLIENTS = "SELECT set_config('phonefarm.clients', %s, true)"


class Row(tuple):
    """A result row read by position (``row[0]``) or column name (``row["name"]``), and
    ``dict(row)``: what ``sqlite3.Row`` gives, so the same code reads both engines."""

    _names: dict[str, int]

    def __new__(cls, values: Iterable[Any], names: dict[str, int]) -> "Row":
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def row_factory(cursor: Any) -> RowMaker[Row]:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


class _TimestampText(Loader):
    """timestamptz/timestamp as UTC text with microseconds (the session's time zone is UTC)."""

    def load(self, data: Any) -> str:
        text = bytes(data).decode()
        if text[-3:] in ("+00", "-00"):
            text = text[:-3]
        whole, _, fraction = text.partition(".")
        return f"{whole}.{fraction.ljust(6, '0')}"


class _Text(Loader):
    def load(self, data: Any) -> str:
        return bytes(data).decode()


class _Number(Loader):
    """NUMERIC (SUM, AVG) as int when whole, else float: what SQLite returns."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        if text.lstrip("-").isdigit():
            return int(text)
        number = float(text)
        return int(number) if number.is_integer() and "." not in text else number


def _adapt(conn: Any) -> None:
    for name in ("timestamptz", "timestamp"):
        conn.adapters.register_loader(name, _TimestampText)
    for name in ("json", "jsonb", "date"):
        conn.adapters.register_loader(name, _Text)
    conn.adapters.register_loader("numeric", _Number)


def connect_kwargs(conninfo: str, password: str | None) -> dict[str, Any]:
    """psycopg.connect's keywords for the farm's database: its session options (UTC, ISO
    dates, every client's rows for the farm's own work), a 5 s connect timeout, the password
    if given."""
    # The farm's own work sees every client's rows (row-level security, schema v14);
    # PgReader narrows a scoped caller's reads with SET LOCAL. Times are read as text in one
    # form (_TimestampText): a server or database set to another DateStyle ('SQL, DMY')
    # would send '08/12/2026 01:02:03 UTC'.
    kwargs: dict[str, Any] = {"conninfo": conninfo,
                              "options": "-c TimeZone=UTC -c DateStyle=ISO,YMD"
                                         f" -c phonefarm.clients={ALL_CLIENTS}",
                              "application_name": "phonefarm",
                              # A server dropping packets fails a connect in 5 s, not the
                              # kernel's two minutes (a URL's own connect_timeout wins).
                              "connect_timeout": 5}
    if password is not None:
        kwargs["password"] = password
    return kwargs


class PgCursor:
    """A psycopg cursor read as a ``sqlite3.Cursor``: fetching from a statement that gives
    no rows (an UPDATE without RETURNING) gives None / [] instead of raising."""

    def __init__(self, cur: psycopg.Cursor) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self) -> Any:
        return self._cur.description

    def fetchone(self) -> Row | None:
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list[Row]:
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self):  # noqa: ANN204
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection with the interface the writer's jobs use on a
    ``sqlite3.Connection``: ``execute``/``executemany`` with ``?`` placeholders,
    ``in_transaction``, ``close``."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.raw = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> PgCursor:
        return PgCursor(self.raw.execute(to_postgres(sql), tuple(args)))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        cur = self.raw.cursor()
        cur.executemany(to_postgres(sql), [tuple(r) for r in rows])
        return PgCursor(cur)

    @property
    def broken(self) -> bool:
        """The server closed the connection (restart, terminated backend)."""
        return self.raw.closed or self.raw.broken

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


def connect_sync(conninfo: str, password: str | None = None) -> PgConnection:
    """A connection in autocommit mode (the writer issues BEGIN/COMMIT itself)."""
    conn = psycopg.connect(autocommit=True, row_factory=row_factory,
                           **connect_kwargs(conninfo, password))
    _adapt(conn)
    return PgConnection(conn)


class PgReader:
    """Owns a small pool of async connections for reads: each read is one statement (its
    own snapshot) or, for a scoped caller, one transaction that first sets the caller's
    clients for row-level security (SET LOCAL)."""

    def __init__(self, conninfo: str, password: str | None = None, *, size: int = 4) -> None:
        kwargs = connect_kwargs(conninfo, password)
        # A prepared statement (psycopg prepares one run five times) gets a generic plan
        # after a few runs, which for a scoped caller applies the row-level security
        # policy to every row the filter reaches before the page is cut (a tenant's week of
        # history: 60-76 ms instead of 12-20); readers always plan with the values.
        kwargs["options"] += " -c plan_cache_mode=force_custom_plan"
        self._pool = AsyncConnectionPool(
            kwargs.pop("conninfo"), min_size=1, max_size=size, open=False,
            kwargs={**kwargs, "row_factory": row_factory, "autocommit": True},
            configure=self._configure, name="phonefarm-readers")

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection) -> None:
        _adapt(conn)

    async def open(self) -> "PgReader":
        await self._pool.open(wait=True, timeout=15)
        return self

    async def close(self) -> None:
        await self._pool.close()

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return await self._fetchall(sql, args)
        except psycopg.OperationalError:
            # A pooled connection the server dropped (restart): the pool discards it; a
            # read is safe to make again, once, on a fresh one.
            log.warning("a farm database read met a dropped connection; reading again")
            return await self._fetchall(sql, args)

    async def _fetchall(self, sql: str, args: Sequence[Any]) -> list[Row]:
        clients = caller_clients.get()
        async with self._pool.connection() as conn:
            if clients is None:  # the session's own '*': one statement, its own snapshot
                cur = await conn.execute(to_postgres(sql), tuple(args))
                return await cur.fetchall() if cur.description else []
            async with conn.transaction():
                await conn.execute(_SET_CLIENTS, (clients_setting(clients),))
                cur = await conn.execute(to_postgres(sql), tuple(args))
                return await cur.fetchall() if cur.description else []


async def start_writer(target: Any) -> SingleWriter:
    """The single writer of a PostgreSQL target (an actors.store.db_target.DbTarget): its
    own connection, opened on its thread (again after the server dropped it)."""
    return await SingleWriter(target.describe(),
                              opener=lambda: connect_sync(target.url, target.password)).start()
