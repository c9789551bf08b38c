"""The farm database's single writer: one thread owns the write connection and commits the
queued writes in batches, one transaction per batch.

Why: every coroutine of the coordinator writes (node events, the scheduler, the API), and
with one shared connection a multi-statement change (BEGIN ... COMMIT) would take in any
statement another coroutine issued meanwhile, and a rollback would drop it. Here each write
is a job, a plain function ``job(conn)`` over a ``sqlite3.Connection``, run by the writer
thread alone; the jobs queued while a batch ran form the next batch, which is one
transaction run in one go on the thread (one commit and one hand-over to the event loop per
batch, not per statement). Readers use their own connection (WAL), so they never wait for
the writer. An ``atomic`` job runs under a SAVEPOINT: if it fails, its own changes are undone
and its caller gets the error; the rest of the batch commits.

The same writer serves PostgreSQL (``opener`` gives an `actors.store.pg.PgConnection`, which
takes the same jobs). There every statement is a round trip to the server and a failed one
spoils the whole transaction, so a batch runs without savepoints (two round trips fewer per
job) and, when a job fails, is rolled back and run again one job per transaction: the
failing job fails alone, all or none, and the others commit. Jobs are plain functions of
the database, so running one again after a rollback is safe.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
_STOP = object()


class SingleWriter:
    """Owns the write connection (opened on its thread): ``await run(job)`` queues a job and
    returns its result once the batch holding it committed, or raises the job's error."""

    def __init__(self, path: str, *, max_batch: int = 500, busy_timeout_ms: int = 5000,
                 opener: Callable[[], Any] | None = None) -> None:
        self.path = path  # for SQLite; a PostgreSQL writer's connection comes from ``opener``
        self._opener = opener
        self._begin = "BEGIN IMMEDIATE" if opener is None else "BEGIN"
        self.max_batch = max_batch
        self.busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost: Exception | None = None  # why the database cannot be reached now
        self.batches = 0   # committed transactions
        self.jobs = 0      # jobs run
        # Timing hooks (actors.metrics: database write latency), seconds: a job as its caller
        # waits for it (on the loop), and a batch's transaction (on the writer thread).
        self.on_write: Callable[[float], None] | None = None
        self.on_commit: Callable[[float], None] | None = None

    async def start(self) -> "SingleWriter":
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, args=(opened,),
                                        name="farm-db-writer", daemon=True)
        self._thread.start()
        await opened  # the connection's error, if it cannot open
        return self

    async def run(self, job: Callable[[sqlite3.Connection], T], *, atomic: bool = False) -> T:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the farm database's writer is not running (closed?)")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self._queue.put((job, atomic, future))
        try:
            return await future
        finally:
            if self.on_write is not None:
                self.on_write(time.perf_counter() - started)

    async def close(self) -> None:
        """Finish the queued writes, then stop and close the connection."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # --- the writer thread ----------------------------------------------------------------------
    def _main(self, opened: asyncio.Future) -> None:
        try:
            conn = self._open()
        except Exception as exc:  # noqa: BLE001 - handed to the opener
            self._call(opened.set_exception, exc)
            return
        self._call(opened.set_result, None)
        try:
            while True:
                item = self._queue.get()
                stop = item is _STOP
                batch = [] if stop else [item]
                while not stop and len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        batch.append(item)
                if batch:
                    if conn is None or getattr(conn, "broken", False):
                        conn = self._reopen(conn)
                    if conn is None:
                        self._settle(batch, [(False, self._lost)] * len(batch))
                    else:
                        started = time.perf_counter()
                        outcomes = self._commit(conn, batch)
                        if self.on_commit is not None:
                            self.on_commit(time.perf_counter() - started)
                        self._settle(batch, outcomes)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _reopen(self, conn: Any) -> Any:
        """A database server restarted or dropped the connection (PostgreSQL): the batch
        that met it failed (whether its COMMIT arrived is unknown, so it is not replayed);
        open a new one for this batch. None (and the reason in ``_lost``) while the server
        cannot be reached: each batch meanwhile fails at once, naming why."""
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass
        try:
            fresh = self._open()
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it
            self._lost = exc
            log.error("farm database %s: cannot reconnect: %s", self.path, exc)
            return None
        log.warning("farm database %s: connection lost, reconnected", self.path)
        return fresh

    def _open(self) -> Any:
        if self._opener is not None:
            return self._opener()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _commit_each(self, conn: Any, batch: list) -> list[tuple[bool, Any]]:
        """PostgreSQL: the whole batch in one transaction; if a job fails, the batch again
        with one transaction per job."""
        try:
            conn.execute(self._begin)
            results = [job(conn) for job, _, _ in batch]
            conn.execute("COMMIT")
            self.batches += 1
            self.jobs += len(batch)
            return [(True, r) for r in results]
        except Exception as exc:  # noqa: BLE001 - some job failed: find which, alone
            if conn.broken:
                log.error("farm database batch of %d writes failed: %s", len(batch), exc)
                return [(False, exc)] * len(batch)
            self._rollback(conn)
        outcomes: list[tuple[bool, Any]] = []
        for job, _, _ in batch:
            try:
                conn.execute(self._begin)
                result = job(conn)
                conn.execute("COMMIT")
                self.batches += 1
                self.jobs += 1
                outcomes.append((True, result))
            except Exception as exc:  # noqa: BLE001 - the job's caller gets it
                self._rollback(conn)
                outcomes.append((False, exc))
        return outcomes

    @staticmethod
    def _rollback(conn: Any) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the connection is broken: the batch failed
                pass

    def _commit(self, conn: Any, batch: list) -> list[tuple[bool, Any]]:
        if self._opener is not None:
            return self._commit_each(conn, batch)
        outcomes: list[tuple[bool, Any]] = []   # (ok, result or exception), per job
        try:
            conn.execute(self._begin)
            for job, atomic, _ in batch:
                try:
                    if atomic:
                        conn.execute("SAVEPOINT job")
                    result = job(conn)
                    if atomic:
                        conn.execute("RELEASE job")
                    outcomes.append((True, result))
                except Exception as exc:  # noqa: BLE001 - the job's caller gets it
                    if conn.in_transaction and atomic:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    outcomes.append((False, exc))
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back (e.g. disk full): the jobs
                        # before this one are undone too. Start again for the rest.
                        outcomes = [(False, exc) if ok else (ok, r) for ok, r in outcomes]
                        conn.execute(self._begin)
            conn.execute("COMMIT")
            self.batches += 1
            self.jobs += len(batch)
            return outcomes
        except Exception as exc:  # noqa: BLE001 - BEGIN/COMMIT failed: nothing was written
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the connection is broken: the batch failed
                    pass
            log.error("farm database batch of %d writes failed: %s", len(batch), exc)
            return [(False, exc)] * len(batch)

    def _settle(self, batch: list, outcomes: list[tuple[bool, Any]]) -> None:
        def settle() -> None:
            for (_, _, future), (ok, value) in zip(batch, outcomes):
                if future.done():
                    continue  # its caller was cancelled; the write happened all the same
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        self._call(settle)

    def _call(self, fn: Callable, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)  # type: ignore[union-attr]
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more
