"""The coordinator's record of node events: every event is stored before it is acked.

Owns the `node_events` table of the coordinator's SQLite file. A node deletes an event from
its journal once acked, so the coordinator must have it on disk first; after a coordinator
restart, ``last_seq(node)`` tells the link which events it already holds. On PostgreSQL
(``target``) the table lives in the farm's database, beside the farm tables.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Iterable

import aiosqlite
import orjson

from actors.store.db_target import DbTarget
from actors.store.db_writer import SingleWriter
from actors.store.migrations import migrate_postgresql
from actors.store.pg import PgReader, start_writer
from protocol.errors import FarmError

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_events (
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    serial TEXT,
    data BLOB NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX IF NOT EXISTS node_events_serial ON node_events (serial, received_at);
CREATE INDEX IF NOT EXISTS node_events_received ON node_events (received_at);
"""


_ROWS_PER_INSERT = 500  # 3,000 parameters: well under SQLite's 32,766


class EventStore:
    """Durable store of node events, keyed by (node, seq). Writes go through its own
    `SingleWriter` (a burst of events from every node becomes a few transactions); reads
    use an aiosqlite connection of their own (WAL: they never wait for the writer)."""

    def __init__(self, path: Path | str, target: DbTarget | None = None) -> None:
        self.path = str(path)
        self.target = target if target is not None and target.is_postgresql else None
        self._db: aiosqlite.Connection | None = None
        self._pg: PgReader | None = None
        self._writer: SingleWriter | None = None
        self._last: dict[str, int] = {}

    async def open(self) -> "EventStore":
        """Open (creating if needed); a file that is no database raises and leaves nothing
        open (a connection's thread left running would keep the process from exiting)."""
        if self.target is not None:
            return await self._open_postgresql(self.target)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        try:
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.executescript(SCHEMA)
            async with self._db.execute("SELECT node, MAX(seq) FROM node_events GROUP BY node") as cur:
                self._last = {node: seq async for node, seq in cur}
            await self._db.commit()
            self._writer = await SingleWriter(self.path).start()
        except BaseException:
            await self.close()
            raise
        return self

    async def _open_postgresql(self, target: DbTarget) -> "EventStore":
        try:
            # node_events is part of the farm's schema there (v14): the migrations create
            # it, whichever of the two stores opens the database first.
            await asyncio.to_thread(migrate_postgresql, target)
            self._pg = await PgReader(target.url, target.password, size=2).open()  # type: ignore[arg-type]
            self._last = {node: seq for node, seq in await self._pg.fetchall(
                "SELECT node, MAX(seq) FROM node_events GROUP BY node")}
            self._writer = await start_writer(target)
        except BaseException:
            await self.close()
            raise
        self.path = target.describe()
        return self

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._pg is not None:
            await self._pg.close()
            self._pg = None

    def last_seq(self, node: str) -> int:
        return self._last.get(node, 0)

    async def add(self, node: str, seq: int, event: str, serial: str | None, data: dict,
                  received_at: float) -> bool:
        """Store one event; False if (node, seq) was already stored."""
        return bool(await self.add_many(node, [(seq, event, serial, data)], received_at))

    async def add_many(self, node: str, events: list[tuple[int, str, str | None, dict]],
                       received_at: float) -> set[int]:
        """Store (seq, event, serial, data) rows of one node in one transaction; the seqs
        that were new (a seq already stored is left as it was)."""
        rows = [(node, seq, event, serial, orjson.dumps(data), received_at)
                for seq, event, serial, data in events]

        def insert(conn: sqlite3.Connection) -> set[int]:
            # One multi-row statement per 500 events (a round trip each on PostgreSQL);
            # RETURNING names the rows that were new (both engines).
            added = set()
            for i in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[i:i + _ROWS_PER_INSERT]
                values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
                added.update(r[0] for r in conn.execute(
                    "INSERT INTO node_events (node, seq, event, serial, data, received_at)"
                    f" VALUES {values} ON CONFLICT (node, seq) DO NOTHING RETURNING seq",
                    [v for row in chunk for v in row]).fetchall())
            return added

        if self._writer is None:
            raise FarmError(f"event store {self.path}: not open")
        added = await self._writer.run(insert, atomic=True)
        if events:
            self._last[node] = max(self._last.get(node, 0), max(seq for seq, *_ in events))
        return added

    async def last_before_stop(self, kinds: Iterable[str], seconds: float) -> list[dict]:
        """The events of ``kinds`` received in the ``seconds`` before the newest stored event,
        oldest first: what a consumer that queues events in memory may not have written when
        the coordinator last stopped (services replay them at start; their writes are
        idempotent). Measured from the newest event, not from now: a coordinator that was
        down for hours still finds what it received just before it went down."""
        kinds = sorted(set(kinds))
        if not kinds:
            return []
        marks = ", ".join("?" * len(kinds))
        sql = ("SELECT node, seq, event, serial, data, received_at FROM node_events"
               f" WHERE event IN ({marks}) AND received_at >= "
               "(SELECT MAX(received_at) FROM node_events) - ?"
               " ORDER BY received_at, node, seq")
        args = (*kinds, float(seconds))
        if self._pg is not None:
            rows = await self._pg.fetchall(sql, args)
        else:
            rows = await self._db.execute_fetchall(sql, args)
        return [{"node": n, "seq": s, "event": e, "serial": se, "data": orjson.loads(d),
                 "received_at": r} for n, s, e, se, d, r in rows]

    async def events(self, node: str | None = None) -> list[dict]:
        sql = "SELECT node, seq, event, serial, data, received_at FROM node_events"
        args: tuple = ()
        if node is not None:
            sql += " WHERE node = ?"
            args = (node,)
        # One call on the connection's thread: a cursor iterated across awaits would hold
        # its read snapshot open for any other read in between (see FarmDB._one).
        if self._pg is not None:
            rows = await self._pg.fetchall(sql + " ORDER BY node, seq", args)
        else:
            rows = await self._db.execute_fetchall(sql + " ORDER BY node, seq", args)
        return [{"node": n, "seq": s, "event": e, "serial": se, "data": orjson.loads(d),
                 "received_at": r} for n, s, e, se, d, r in rows]
