"""The loop-lag probe sees a callback that hogs the event loop, and /api/health reports it."""

from __future__ import annotations

import asyncio
import time

from actors.coordinator.loop_lag import LoopLagProbe


async def test_a_blocked_loop_shows_as_lag() -> None:
    probe = LoopLagProbe(interval_s=0.01).start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # hog the loop, as a long computation on it would
        await asyncio.sleep(0.05)
    finally:
        await probe.close()
    snap = probe.snapshot()
    assert snap["max"] >= 250 and snap["recent_max"] >= 250
    assert snap["stalls"] >= 1 and probe.samples >= 3


def test_recent_max_forgets_samples_older_than_the_window() -> None:
    probe = LoopLagProbe(window_s=10)
    probe.record(500.0, now=100.0)
    probe.record(5.0, now=111.0)
    assert probe.max_ms == 500.0 and probe.recent_max_ms() == 5.0
