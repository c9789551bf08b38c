"""The farm database's single writer: one asyncio task owns the write connection and commits
the queued writes in batches, one transaction per batch.

Why: every coroutine of the coordinator writes (node events, the scheduler, the API), and
with one shared connection a multi-statement change (BEGIN ... COMMIT) would take in any
statement another coroutine issued meanwhile, and a rollback would drop it. Here each write
is a job (``async fn(conn)``) run by the writer task alone; a batch of jobs is one
transaction, so a burst of writes costs one commit, and readers (their own connection, WAL)
never wait for it. An ``atomic`` job runs under a SAVEPOINT: if it fails, its own changes are
undone and its caller gets the error, the rest of the batch commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Awaitable, Callable, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[aiosqlite.Connection], Awaitable[Any]]


class SingleWriter:
    """Owns the write connection once started: ``await run(job)`` queues a job and returns
    its result after the batch holding it committed (or raises the job's error)."""

    def __init__(self, conn: aiosqlite.Connection, *, max_batch: int = 500) -> None:
        self.conn = conn
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Job, bool, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.batches = 0   # committed transactions
        self.jobs = 0      # jobs run

    def start(self) -> "SingleWriter":
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="farm-db-writer")
        return self

    async def run(self, job: Callable[[aiosqlite.Connection], Awaitable[T]], *,
                  atomic: bool = False) -> T:
        if self._task is None or self._task.done():
            raise RuntimeError("the farm database's writer is not running (closed?)")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, atomic, future))
        return await future

    async def close(self) -> None:
        """Finish the queued writes, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[tuple[Job, bool, asyncio.Future]]) -> None:
        conn = self.conn
        outcomes: list[tuple[bool, Any]] = []   # (ok, result or exception), per job
        try:
            await conn.execute("BEGIN IMMEDIATE")
            for index, (job, atomic, _) in enumerate(batch):
                try:
                    if atomic:
                        await conn.execute("SAVEPOINT job")
                    result = await job(conn)
                    if atomic:
                        await conn.execute("RELEASE job")
                    outcomes.append((True, result))
                except Exception as exc:  # noqa: BLE001 - the job's caller gets it
                    if conn.in_transaction and atomic:
                        await conn.execute("ROLLBACK TO job")
                        await conn.execute("RELEASE job")
                    outcomes.append((False, exc))
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back (e.g. disk full): the
                        # jobs before this one are undone too. Start again for the rest.
                        outcomes = [(False, exc) if ok else (ok, r) for ok, r in outcomes]
                        await conn.execute("BEGIN IMMEDIATE")
            await conn.execute("COMMIT")
            self.batches += 1
            self.jobs += len(batch)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
            log.error("farm database batch of %d writes failed: %s", len(batch), exc)
            error = exc if isinstance(exc, Exception) else RuntimeError(f"writer stopped: {exc!r}")
            outcomes = [(False, error)] * len(batch)
            if not isinstance(exc, Exception):
                self._settle(batch, outcomes)
                raise
        self._settle(batch, outcomes)

    @staticmethod
    def _settle(batch: list[tuple[Job, bool, asyncio.Future]],
                outcomes: list[tuple[bool, Any]]) -> None:
        for (_, _, future), (ok, value) in zip(batch, outcomes):
            if future.done():
                continue  # its caller was cancelled; the write happened all the same
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
