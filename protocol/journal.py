"""The node-local event journal (SQLite via aiosqlite, WAL, synchronous=FULL).

Owns the node's outgoing events until the coordinator acks them: `append` assigns the next
seq and returns only once the row is durable (appends that meet share a commit); `unacked`
lists what still has to be (re)sent, in seq order; `ack(upto_seq)` deletes everything up to
that seq (acked rows are pruned at once). Seqs keep increasing across restarts of the node process (AUTOINCREMENT:
a seq is never reused, even after its row was pruned).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from protocol.errors import FarmError
from protocol.messages import Event

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL,
    serial TEXT,
    data BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Journal:
    """``async with Journal(path) as j: seq = await j.append("step_done", "SER1", {...})``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._last_seq = 0
        self._acked_upto = 0
        self._lock = asyncio.Lock()  # one write transaction at a time on the shared connection
        self._pending: list[tuple[str, str | None, bytes, float, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task | None = None
        self.commits = 0  # append transactions committed (several appends share one)

    async def open(self) -> "Journal":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.executescript(_SCHEMA)
            await db.commit()
            self._db = db
            self._last_seq = await self._read_last_seq()
            async with db.execute("SELECT value FROM meta WHERE key='acked_upto'") as cur:
                row = await cur.fetchone()
        except BaseException as exc:
            # Nothing left open: the connection's thread would keep the process alive.
            self._db = None
            await db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise type(exc)(f"journal {self.path}: {exc}") from exc
            raise
        self._acked_upto = row[0] if row else 0
        log.info("journal opened path=%s last_seq=%d acked_upto=%d", self.path, self._last_seq, self._acked_upto)
        return self

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> "Journal":
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise FarmError(f"journal {self.path}: not open")
        return self._db

    @property
    def last_seq(self) -> int:
        """Highest seq ever assigned (0 for a new journal)."""
        return self._last_seq

    @property
    def acked_upto(self) -> int:
        return self._acked_upto

    async def _read_last_seq(self) -> int:
        async with self.db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'") as cur:
            row = await cur.fetchone()
        return row[0] if row else 0

    async def append(self, event: str, serial: str | None, data: dict[str, Any]) -> int:
        """Store one event; returns its seq once the row is committed (durable). Appends
        that arrive while a commit is on disk share the next one (group commit): sixty
        phones' results cost a few fsyncs, not sixty. Seqs follow the call order."""
        return await self._enqueue(event, serial, data)

    async def append_many(self, events: list[tuple[str, str | None, dict[str, Any]]]) -> list[int]:
        """Store (event, serial, data) items in this order; their seqs once all are durable."""
        return list(await asyncio.gather(*[self._enqueue(*item) for item in events]))

    def _enqueue(self, event: str, serial: str | None, data: dict[str, Any]) -> asyncio.Future[int]:
        """Queue one append for the next commit (the seq follows the queueing order)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((event, serial, msgspec.json.encode(data), time.time(), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return done

    async def _flush(self) -> None:
        """Commit the waiting appends, in arrival order, one transaction per batch."""
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    # One transaction, nobody else writing (the lock): AUTOINCREMENT gives
                    # the batch consecutive seqs ending at the table's sequence.
                    await self.db.executemany(
                        "INSERT INTO events (event, serial, data, created) VALUES (?, ?, ?, ?)",
                        [(event, serial, blob, created) for event, serial, blob, created, _ in batch])
                    last = await self._read_last_seq()
                    await self.db.commit()
                except Exception as exc:  # noqa: BLE001 - every waiting append must hear of it
                    with contextlib.suppress(Exception):
                        await self.db.rollback()
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                self.commits += 1
                self._last_seq = last
                for seq, (*_, done) in zip(range(last - len(batch) + 1, last + 1), batch):
                    if not done.done():
                        done.set_result(seq)

    async def unacked(self, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """Un-acked committed events with seq > after_seq, oldest first. Rows of a commit
        still in progress are not listed (the connection would show them): a row rolled
        back after being sent would leave the coordinator holding a seq that is then reused."""
        sql = "SELECT seq, event, serial, data FROM events WHERE seq > ? AND seq <= ? ORDER BY seq"
        args: tuple[Any, ...] = (after_seq, self._last_seq)
        if limit is not None:
            sql += " LIMIT ?"
            args += (limit,)
        async with self.db.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [Event(seq=s, event=e, serial=ser, data=msgspec.json.decode(d)) for s, e, ser, d in rows]

    async def has_started(self, execution_id: str) -> bool:
        """Whether an ``execution_started`` of ``execution_id`` is still in the journal (not
        yet acked: an acked one is the coordinator's, whose record then says so)."""
        async with self.db.execute(
                "SELECT 1 FROM events WHERE event = 'execution_started' "
                "AND json_extract(CAST(data AS TEXT), '$.execution_id') = ? LIMIT 1",
                (execution_id,)) as cur:
            return await cur.fetchone() is not None

    async def ack(self, upto_seq: int) -> None:
        """Forget every event with seq <= upto_seq (the coordinator has them)."""
        async with self._lock:
            if upto_seq <= self._acked_upto:
                return
            await self.db.execute("DELETE FROM events WHERE seq <= ?", (upto_seq,))
            await self.db.execute(
                "INSERT INTO meta (key, value) VALUES ('acked_upto', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (upto_seq,),
            )
            await self.db.commit()
            self._acked_upto = upto_seq

    async def rebase(self, floor_seq: int) -> None:
        """Make every seq (pending and future) greater than ``floor_seq``.

        Used when the coordinator already holds seqs above anything this journal ever
        assigned (the journal file was lost or replaced): pending events are renumbered to
        follow ``floor_seq`` so the coordinator does not drop them as duplicates.
        """
        async with self._lock:
            await self._rebase(floor_seq)

    async def _rebase(self, floor_seq: int) -> None:
        if floor_seq <= self._last_seq:
            return
        pending = await self.unacked()
        await self.db.execute("DELETE FROM events")
        new_seq = floor_seq
        for ev in pending:
            new_seq += 1
            await self.db.execute(
                "INSERT INTO events (seq, event, serial, data, created) VALUES (?, ?, ?, ?, ?)",
                (new_seq, ev.event, ev.serial, msgspec.json.encode(ev.data), time.time()),
            )
        await self.db.execute("UPDATE sqlite_sequence SET seq=? WHERE name='events'", (new_seq,))
        await self.db.execute("DELETE FROM meta WHERE key='acked_upto'")
        await self.db.execute("INSERT INTO meta (key, value) VALUES ('acked_upto', ?)", (floor_seq,))
        await self.db.commit()
        log.warning(
            "journal rebased path=%s floor_seq=%d renumbered=%d last_seq=%d",
            self.path, floor_seq, len(pending), new_seq,
        )
        self._last_seq = new_seq
        self._acked_upto = floor_seq
