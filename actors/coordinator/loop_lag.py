"""How late the event loop runs: a probe for a frozen coordinator.

Everything the coordinator serves (HTTP, the status stream, the node link's callbacks, the
scheduler) shares one asyncio loop, so one piece of work that hogs it stalls them all. The
probe sleeps a short interval in a loop and records how much later than asked it woke up:
that overshoot is the longest any other callback had to wait at that moment.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class LoopLagProbe:
    """Owns one background task on the running loop and the stalls it has measured: the
    largest since start, the largest within the last `window_s`, and a count over
    `stall_ms`."""

    def __init__(self, interval_s: float = 0.02, window_s: float = 60.0,
                 stall_ms: float = 100.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.stall_ms = stall_ms
        self.max_ms = 0.0
        self.stalls = 0
        self.samples = 0
        # (monotonic time, lag ms) of the laggiest sample per second, for the recent maximum
        self._recent: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task | None = None

    def start(self) -> "LoopLagProbe":
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")
        return self

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def record(self, lag_ms: float, now: float) -> None:
        """Count one sample (the probe's own loop calls this; tests may too)."""
        self.samples += 1
        self.max_ms = max(self.max_ms, lag_ms)
        if lag_ms > self.stall_ms:
            self.stalls += 1
        if self._recent and now - self._recent[-1][0] < 1.0:
            if lag_ms > self._recent[-1][1]:
                self._recent[-1] = (self._recent[-1][0], lag_ms)
        else:
            self._recent.append((now, lag_ms))
        while self._recent and now - self._recent[0][0] > self.window_s:
            self._recent.popleft()

    def recent_max_ms(self) -> float:
        return max((lag for _, lag in self._recent), default=0.0)

    def snapshot(self) -> dict[str, float | int]:
        return {"max": round(self.max_ms, 1), "recent_max": round(self.recent_max_ms(), 1),
                "window_s": self.window_s, "stalls": self.stalls, "stall_ms": self.stall_ms}

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            self.record(max(0.0, (now - asked - self.interval_s) * 1000.0), now)
