"""Taps sent back to back from a thread while a test breaks the agent under them."""

from __future__ import annotations

import threading
import time
from typing import Any

from protocol.errors import DeviceError


class TapBurst:
    """Owns one thread tapping (x, 2300) with x = 1, 2, 3 ... on a driver until the `with`
    block ends: `done` holds (x, the path io said when it was sent) of every tap answered ok,
    `failed` (x, reason) of every tap that failed. ``pause_s`` between taps."""

    def __init__(self, driver: Any, pause_s: float = 0.0) -> None:
        self.driver = driver
        self.pause_s = pause_s
        self.done: list[tuple[int, str]] = []
        self.failed: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tap_on, name="taps")

    def _tap_on(self) -> None:
        x = 0
        while not self._stop.is_set():
            x += 1
            io = self.driver.io
            try:
                self.driver.tap(x, 2300)
                self.done.append((x, io))
            except DeviceError as exc:
                self.failed.append((x, exc.reason))
            if self.pause_s:
                time.sleep(self.pause_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> "TapBurst":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(30)
