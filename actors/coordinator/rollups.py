"""The coordinator's one-minute stats rollups (issue 19.2): the history GET /api/stats draws.

`RollupService` samples the phones' states from the hub every few seconds and closes each
minute once, shortly after it ends, into the farm database's v17 tables
(actors.store.stats: phones per client and node averaged over the minute's samples;
executions, recovery and step times per client, sequence and node from the execution
records), through the FarmDB's single writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from actors.store import stats
from actors.store.stats import MINUTE_S, PhoneKey, floor_minute

log = logging.getLogger(__name__)

# A phone's state as the hub shows it -> the rollup's state (a phone the rack gave up on,
# "failed", is as unusable as an offline one).
_STATE = {"paused": "paused", "offline": "offline", "failed": "offline"}


def phone_state(phone: dict) -> str:
    """busy (online and running an execution: its lock is held), idle, offline or paused."""
    state = _STATE.get(phone.get("state") or "offline")
    if state is not None:
        return state
    if phone.get("state") != "online":
        return "offline"  # unauthorized and other states a node may report: not usable
    return "busy" if phone.get("lock_holder") else "idle"


class RollupService:
    """Owns the rollup job: the phone-state samples of the minutes not yet closed and the
    first minute not yet closed (``closed_upto``).

    Each minute is closed once, ``grace_s`` after it ends (execution records are written
    when their events arrive, stamped with the coordinator's clock, so a few seconds cover
    the writer's queue), in one writer job that replaces its rows: closing a minute again
    (a restart between the write and the next minute) rewrites the same numbers, never adds.

    After a restart, ``start`` catches up the minutes missed while the coordinator was down
    (at most ``catch_up_s`` back; a first start fills that much history, from the first
    execution in it) from the execution records: executions, recovery and step times are
    all there. Phone states are not: they live only in the hub's memory, so those minutes
    have no phone rows and count as not sampled (their steps show ``phones: null``); the
    minute the coordinator stopped in loses its samples the same way. Step times come from
    ``execution_steps``, which retention keeps 30 days: a catch-up never reaches further
    back than that. Records that arrive later than ``grace_s`` after their minute closed
    (a coordinator whose writer fell that far behind) are not counted in it.
    """

    # A catch-up is read and written this many seconds at a time (one writer job each).
    # Half an hour: a long catch-up (a week after an upgrade) holds at most 30 minutes of
    # step durations in memory at once, and each writer job stays short.
    CHUNK_S = 30 * 60

    def __init__(self, db: Any, phones: Callable[[], list[dict]], *,
                 client_of: Callable[[str], int | None] | None = None,
                 node_of: Callable[[str], str | None] | None = None,
                 sample_s: float = 5.0, grace_s: float = 5.0, catch_up_s: float = 7 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db  # actors.store.farm_db.FarmDB
        self.phones = phones  # the hub's phone views: serial, node, state, lock_holder
        self.client_of = client_of or (lambda serial: None)
        self._node_of = node_of
        self.sample_s, self.grace_s, self.catch_up_s = sample_s, grace_s, catch_up_s
        self.clock = clock
        self.closed_upto: int | None = None
        # minute -> (samples taken, (client, node) -> summed busy/idle/offline/paused)
        self._samples: dict[int, tuple[int, dict[tuple[int, str], list[float]]]] = {}


    async def start(self) -> int:
        """Find where the last run stopped and close every minute since (catch-up); the
        number of minutes closed."""
        now = self.clock()
        last = await stats.last_closed_minute(self.db)
        floor = floor_minute(now - self.catch_up_s)
        if last is None:
            # A first start fills history from the first execution in the window (a new
            # farm has none: nothing to write for a week of empty minutes).
            first = await stats.first_execution_minute(self.db, floor)
            self.closed_upto = floor_minute(now) if first is None else max(first, floor)
        else:
            self.closed_upto = max(last + MINUTE_S, floor)
            if last + MINUTE_S < floor:
                log.warning("stats rollups: minutes from %s to %s were missed and are older "
                            "than the catch-up window: they stay empty", stats.iso(last + 60),
                            stats.iso(floor))
        closed = await self.close_due(now)
        if closed:
            log.info("stats rollups caught up %d minutes (phone states of those minutes "
                     "are unknown)", closed)
        return closed

    def sample(self, now: float | None = None) -> None:
        """Count the phones by client, node and state into the current minute."""
        now = self.clock() if now is None else now
        minute = floor_minute(now)
        if self.closed_upto is not None and minute < self.closed_upto:
            return  # that minute is closed already (a clock stepped back)
        count, sums = self._samples.get(minute, (0, {}))
        for phone in self.phones():
            serial = phone.get("serial") or ""
            key = (self.client_of(serial) or 0, phone.get("node") or "")
            row = sums.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            row[stats.PHONE_STATES.index(phone_state(phone))] += 1
        self._samples[minute] = (count + 1, sums)

    async def close_due(self, now: float | None = None) -> int:
        """Close every minute that ended ``grace_s`` ago or earlier and is not closed yet;
        how many were closed."""
        now = self.clock() if now is None else now
        if self.closed_upto is None:
            await self.start()
            return 0
        due = floor_minute(now - self.grace_s)
        closed = 0
        while self.closed_upto < due:
            start = self.closed_upto
            end = min(due, start + self.CHUNK_S)
            await self._close(start, end)
            closed += (end - start) // MINUTE_S
            self.closed_upto = end
        for minute in [m for m in self._samples if m < self.closed_upto]:
            del self._samples[minute]
        return closed

    async def _close(self, start: int, end: int) -> None:
        # An execution's node: its phone's now (one map per close, not a search per row).
        node_of = self._node_of or {p.get("serial"): p.get("node")
                                    for p in self.phones()}.get
        cells = await stats.execution_cells(self.db, start, end, node_of)
        phones: dict[PhoneKey, tuple[float, float, float, float]] = {}
        samples: dict[int, int] = {}
        for minute, (count, sums) in self._samples.items():
            if start <= minute < end and count:
                samples[minute] = count
                for (client, node), (busy, idle, offline, paused) in sums.items():
                    phones[(minute, client, node)] = (busy / count, idle / count,
                                                      offline / count, paused / count)
        await stats.save_minutes(self.db, start, end, cells, phones, samples)

    async def loop(self, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        """Forever: sample every ``sample_s`` (on the clock's multiples, so each minute gets
        the same number of samples) and close what is due. A failing close is logged and
        tried again at the next tick (nothing is lost: the records stay). Stops when
        cancelled."""
        while True:
            try:
                if self.closed_upto is None:
                    await self.start()
                self.sample()
                await self.close_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the job must outlive one bad minute
                log.exception("stats rollup failed")
            await sleep(self.sample_s - (self.clock() % self.sample_s) or self.sample_s)
