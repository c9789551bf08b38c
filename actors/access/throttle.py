"""Back-off after wrong passwords, per user name."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

FREE_ATTEMPTS = 5
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 300.0


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginThrottle:
    """Owns the wrong-password counts per user name (kept in memory, for names that exist
    and names that do not alike, so the back-off does not tell which exist). After
    `FREE_ATTEMPTS` wrong passwords in a row, the next attempt must wait 1 s, then 2 s,
    4 s ... at most 5 minutes after the last wrong one; a good password clears the count."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, _Failures] = {}

    def wait_s(self, name: str) -> float:
        """Seconds before ``name`` may try again (0: now)."""
        entry = self._failures.get(_key(name))
        if entry is None or entry.count < FREE_ATTEMPTS:
            return 0.0
        pause = min(FIRST_PAUSE_S * 2 ** (entry.count - FREE_ATTEMPTS), MAX_PAUSE_S)
        return max(0.0, entry.last + pause - self._clock())

    def failed(self, name: str, peer: str | None) -> None:
        entry = self._failures.setdefault(_key(name), _Failures())
        entry.count += 1
        entry.last = self._clock()
        if entry.count >= FREE_ATTEMPTS:
            log.warning("login back-off for user %r: %d wrong passwords in a row (last from %s)",
                        name, entry.count, peer)
        if len(self._failures) > 100_000:  # a name spray must not grow memory forever
            oldest = sorted(self._failures, key=lambda k: self._failures[k].last)[:50_000]
            for key in oldest:
                del self._failures[key]

    def succeeded(self, name: str) -> None:
        self._failures.pop(_key(name), None)


def _key(name: str) -> str:
    return str(name)[:64].lower()
