"""The coordinator's content data: ingest of the node's read events, account health, and the
daily rollups (issue 21.2/21.3).

`ContentDataService` is a hub event observer (`Hub.event_observers`: told every emitted
event, none dropped): ``metric_recorded``, ``post_recorded`` and ``health_signal`` are
queued without waiting (the observer runs inside the hub's emit) and one writer task stores
them in order through `ContentDataStore.ingest`, one writer job each; a replayed event (the node
re-sends what was not acked before a crash) finds its rows and changes nothing. A transient
database error (locked, connection lost) is retried with backoff (up to ``RETRY_FOR_S``)
before the event is given up; an event the database refuses (a data error) is dropped and
logged at once.

A post sequence's failure kept for AI recovery (``execution_finished`` with ``lock_held``) is
not its end: the node sends no failed post for it. Its end is known here: the recovery failed
(``recovery_failed``) or no recovery took it (``execution_finished`` held but not
``recovering``); then, when the run's plan has a ``record_post`` step and the execution has
posted nothing, a failed post is recorded (`ContentDataStore.end_failed`), with the caption the
plan's labelled type step resolved to. A recovery that succeeds resends the plan and the
node's next playback posts, or ends failed and says so itself. Every day
at ``ROLLUP_AT`` (UTC) it rolls the previous day up into ``client_daily_metrics`` and
``platform_daily_metrics``; at start it rolls up the last due day again (a stop over
midnight loses nothing; a rollup recomputes its day whole).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterable

from actors.coordinator.content_data.health import WINDOW_S, Health, assess
from actors.coordinator.content_data.store import ContentDataStore
from actors.coordinator.backups import next_due
from actors.coordinator.reports.service import due_day

log = logging.getLogger(__name__)

CONTENT_EVENTS = frozenset({"metric_recorded", "post_recorded", "health_signal"})
# The ends of an execution whose failure was held for AI recovery (see the module).
END_EVENTS = frozenset({"execution_finished", "recovery_failed"})
RETRY_FOR_S = 300.0  # how long a transient database error is retried before giving up
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 30.0  # backoff: doubling from the first, capped
ROLLUP_AT = time(0, 10)  # UTC: the day before is rolled up 10 minutes after midnight
SERIES_S = 30 * 86400.0  # the followers series GET /api/accounts gives: 30 days


class ContentDataService:
    """Owns the intake queue of content events, the daily rollup loop and health reads."""

    def __init__(self, hub: Any, db: Any, *, at: time | None = ROLLUP_AT,
                 now: Callable[[], datetime] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.hub = hub
        self.store = ContentDataStore(db)
        self.at = at
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._sleep = sleep
        self._queue: deque[tuple[str, str | None, dict]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task] = set()
        # What became of the events since start, by outcome (stored, replayed, dropped).
        self.outcomes: dict[str, int] = {}

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> "ContentDataService":
        self.hub.event_observers.append(self._take)
        self._spawn(self._write())
        # What the last run stored but may not have written (its queue is memory only).
        if getattr(self.hub, "store", None) is not None:
            replayed = await self.hub.replay_stored(CONTENT_EVENTS | END_EVENTS, self._take)
            log.info("content: %d recent stored event(s) replayed at start", replayed)
        return self

    async def close(self) -> None:
        if self._take in self.hub.event_observers:
            self.hub.event_observers.remove(self._take)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- intake ----------------------------------------------------------------------------
    def _take(self, item: dict) -> None:
        """One emitted event; never awaits (called inside the hub's emit)."""
        event, data = item.get("event"), item.get("data")
        if not isinstance(data, dict):
            return
        if event in CONTENT_EVENTS or (event in END_EVENTS and held_end(event, data)):
            self._queue.append((event, item.get("serial"), data))
            self._idle.clear()
            self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                event, serial, data = self._queue[0]
                outcome = await self._stored(event, serial, data)
                self._queue.popleft()
                kind = outcome.split(":", 1)[0]
                self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
                if kind == "dropped":
                    log.warning("content: %s of execution %s %s", event,
                                data.get("execution_id"), outcome)
            self._idle.set()

    async def _stored(self, event: str, serial: str | None, data: dict) -> str:
        """Store one event: a transient database error is tried again (backoff, up to
        ``RETRY_FOR_S``); any other error drops the event (logged)."""
        waited, pause = 0.0, RETRY_FIRST_S
        while True:
            try:
                if event in END_EVENTS:
                    return await self.store.end_failed(serial, data, event)
                return await self.store.ingest(event, serial, data)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the intake
                if not transient(exc) or waited >= RETRY_FOR_S:
                    log.exception("content: %s of execution %s not stored", event,
                                  data.get("execution_id"))
                    return "dropped: error"
                log.warning("content: %s of execution %s: %s; trying again in %.1fs", event,
                            data.get("execution_id"), exc, pause)
            await self._sleep(pause)
            waited += pause
            pause = min(pause * 2, RETRY_MAX_S)

    async def drain(self) -> None:
        """Wait until every event taken so far is stored (tests, and a clean stop)."""
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    # --- health ----------------------------------------------------------------------------
    async def health(self, account_ids: Iterable[int], clients: frozenset[int] | None = None
                     ) -> tuple[dict[int, Health], dict[int, list]]:
        """({account_id: Health}, {account_id: followers series [[at, value], ...] of the last
        30 days}) of the accounts."""
        ids = sorted(set(account_ids))
        now = self._now().timestamp()
        if not ids:
            return {}, {}
        events = await self.store.health_events(ids, now - WINDOW_S, clients)
        week = await self.store.account_samples(ids, "followers", now - WINDOW_S, clients)
        month = await self.store.account_samples(ids, "followers", now - SERIES_S, clients)
        by_account: dict[int, list[dict]] = {}
        for e in events:
            by_account.setdefault(e["account_id"], []).append(e)
        health = {a: assess(by_account.get(a, []), week.get(a, []), now) for a in ids}
        series = {a: [p for p in month.get(a, []) if p[0] >= now - SERIES_S] for a in ids}
        return health, series

    async def account_risk(self, serial: str, account: str | None) -> Health | None:
        """The health of ``account`` (``platform.number``) on phone ``serial`` (the
        scheduler's skip_at_risk); None when there is no such account."""
        if not account or "." not in account:
            return None
        platform, number = account.split(".", 1)
        row = await self.store.db._one(
            "SELECT a.account_id FROM accounts a JOIN phones ph ON ph.phone_id = a.phone_id"
            " WHERE a.platform = ? AND a.account_number = ? AND ph.serial_number = ?",
            (platform, number, serial))
        if row is None:
            return None
        health, _ = await self.health([row[0]])
        return health[row[0]]

    # --- daily rollups ---------------------------------------------------------------------
    async def rollup(self, day: date) -> dict[str, Any]:
        made = await self.store.rollup(day)
        log.info("content: rolled up %s (%d client rows, %d platform rows)", made["date"],
                 made["clients"], made["platforms"])
        return made

    async def loop(self) -> None:
        """Roll up the last due day now, then every day at ``at`` (UTC) the day before."""
        if self.at is None:
            return
        await self._logged(self.rollup(due_day(self._now(), self.at)))
        while True:
            due = next_due(self._now(), self.at)
            while (left := (due - self._now()).total_seconds()) > 0:
                await self._sleep(min(left, 60.0))
            await self._logged(self.rollup(due.date() - timedelta(days=1)))

    async def _logged(self, work: Awaitable[Any]) -> None:
        try:
            await work
        except Exception:  # noqa: BLE001 - the loop must outlive one bad day
            log.exception("content: daily rollup failed")


def held_end(event: str, data: dict) -> bool:
    """Whether an end event is the final end of a failure held for AI recovery."""
    if event == "recovery_failed":
        return True
    return (event == "execution_finished" and data.get("status") == "failed"
            and bool(data.get("lock_held")) and not data.get("recovering"))


def transient(exc: BaseException) -> bool:
    """Whether a database error may pass if tried again: SQLite's locked or busy file, a
    PostgreSQL connection or server-side operational error, a broken connection."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import psycopg
    except ImportError:  # a farm on SQLite only
        return False
    return isinstance(exc, psycopg.OperationalError)
