"""Dispatch outcomes the farm database refused, written again until it takes them.

When a node refuses an execution (its phone is locked) or the send fails, the execution's
record is already written ``pending`` with its plan. If the database refuses the outcome at
that moment (a full disk, a PostgreSQL server going away), nothing else would ever end the
record: no node plays it, so no node event comes. `OutcomeRetry` keeps such outcomes in
memory and writes each again, backing off from 2 s to 60 s, until the database takes it.

A retried outcome is written only while the record is still ``pending``: if the node did
get the run after all (a send that timed out but arrived), its own events own the record.
A coordinator that stops with outcomes unwritten leaves those records ``pending`` with their
plan; the crash recovery at the node's reconnect (`RunManager.resume`) sends them again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

FIRST_DELAY_S = 2.0
LONGEST_DELAY_S = 60.0


class OutcomeRetry:
    """Owns the unwritten dispatch outcomes (execution key -> fields) and the one task that
    writes them once the farm database takes writes again."""

    def __init__(self, db: Any, *, first_delay: float = FIRST_DELAY_S,
                 longest_delay: float = LONGEST_DELAY_S) -> None:
        self.db = db
        self.first_delay = first_delay
        self.longest_delay = longest_delay
        self.waiting: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task | None = None

    def defer(self, execution_key: str, fields: dict[str, Any], error: BaseException) -> None:
        """Keep ``fields`` (status, error_reason, error_message) for ``execution_key``, whose
        write just failed with ``error``, and make sure the retry task runs."""
        log.error("execution=%s: the farm database refused its outcome (%s: %s); writing it "
                  "again until it is taken", execution_key, type(error).__name__, error)
        self.waiting[execution_key] = dict(fields)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write_until_taken())

    async def _write_until_taken(self) -> None:
        delay = self.first_delay
        while self.waiting:
            await asyncio.sleep(delay)
            batch = dict(self.waiting)
            try:
                await self.db.write_records(lambda records: _write(records, batch))
            except Exception as exc:  # noqa: BLE001 - still refused: wait longer
                log.warning("%d dispatch outcome(s) still not written: %s",
                            len(self.waiting), exc)
                delay = min(delay * 2, self.longest_delay)
                continue
            for key in batch:  # forgotten only once the one all-or-none job committed
                self.waiting.pop(key, None)
            delay = self.first_delay

    async def close(self) -> None:
        """Stop retrying (the coordinator is stopping); the records left ``pending`` are
        resent at their node's reconnect."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.waiting:
            log.warning("stopping with %d dispatch outcome(s) unwritten: %s",
                        len(self.waiting), sorted(self.waiting))


def _write(records: Any, batch: dict[str, dict[str, Any]]) -> None:
    for key, fields in batch.items():
        if records.status(key) == "pending":
            records.update(key, **fields)
        else:
            log.info("execution=%s: its node's events ended it; its refused outcome is dropped",
                     key)
