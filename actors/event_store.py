"""The coordinator's record of node events: every event is stored before it is acked.

Owns the `node_events` table of the coordinator's SQLite file. A node deletes an event from
its journal once acked, so the coordinator must have it on disk first; after a coordinator
restart, ``last_seq(node)`` tells the link which events it already holds. (The persistence
issue folds this table into the full schema.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import orjson

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
"""


class EventStore:
    """Durable store of node events, keyed by (node, seq)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._last: dict[str, int] = {}

    async def open(self) -> "EventStore":
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(SCHEMA)
        async with self._db.execute("SELECT node, MAX(seq) FROM node_events GROUP BY node") as cur:
            self._last = {node: seq async for node, seq in cur}
        await self._db.commit()
        return self

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def last_seq(self, node: str) -> int:
        return self._last.get(node, 0)

    async def add(self, node: str, seq: int, event: str, serial: str | None, data: dict,
                  received_at: float) -> bool:
        """Store one event; False if (node, seq) was already stored."""
        try:
            await self._db.execute(
                "INSERT INTO node_events (node, seq, event, serial, data, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (node, seq, event, serial, orjson.dumps(data), received_at))
            await self._db.commit()
        except sqlite3.IntegrityError:
            return False
        self._last[node] = max(seq, self._last.get(node, 0))
        return True

    async def events(self, node: str | None = None) -> list[dict]:
        sql = "SELECT node, seq, event, serial, data, received_at FROM node_events"
        args: tuple = ()
        if node is not None:
            sql += " WHERE node = ?"
            args = (node,)
        async with self._db.execute(sql + " ORDER BY node, seq", args) as cur:
            return [{"node": n, "seq": s, "event": e, "serial": se, "data": orjson.loads(d),
                     "received_at": r} async for n, s, e, se, d, r in cur]
