"""The virtual phone's touchscreen for `input motionevent`: one pointer that goes DOWN, MOVEs
and goes UP (or is CANCELled) across separate commands, as on Android, where every
`input motionevent` is its own injected event and the gesture lives in the input system.

Owns the pointer's state between commands and the rule that turns a finished DOWN..UP chain
into what `input swipe` would have been: a tap, a long press or a swipe along the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

MOTION_ACTIONS = ("DOWN", "MOVE", "UP", "CANCEL")


@dataclass(frozen=True)
class Touch:
    """A finished DOWN..UP chain: ``kind`` is what Android's gesture detection makes of it."""

    kind: Literal["tap", "long_press", "swipe"]
    path: list[tuple[int, int]]
    duration_ms: int


class Touchscreen:
    """One pointer; ``clock`` in seconds (the phone's), ``slop_px`` and ``long_press_ms`` as
    the UI uses them for `input swipe`."""

    def __init__(self, clock: Callable[[], float], slop_px: int, long_press_ms: int) -> None:
        self.clock = clock
        self.slop_px = slop_px
        self.long_press_ms = long_press_ms
        self._path: list[tuple[int, int]] | None = None
        self._down_at = 0.0

    @property
    def down(self) -> bool:
        return self._path is not None

    def event(self, action: str, x: int, y: int) -> Touch | None:
        """Feed one motion event; returns the touch when this event ends one. A MOVE or UP with
        no DOWN before it is dropped (Android's dispatcher drops an inconsistent stream too);
        a second DOWN starts over."""
        action = action.upper()
        if action not in MOTION_ACTIONS:
            raise ValueError(f"Unknown action: {action}")
        if action == "DOWN":
            self._path, self._down_at = [(x, y)], self.clock()
            return None
        if self._path is None:
            return None
        if action == "CANCEL":
            self._path = None
            return None
        self._path.append((x, y))
        if action == "MOVE":
            return None
        path, self._path = self._path, None
        duration_ms = max(0, round((self.clock() - self._down_at) * 1000))
        return Touch(self.classify(path, duration_ms), path, duration_ms)

    def classify(self, path: list[tuple[int, int]], duration_ms: int) -> str:
        """Never beyond the touch slop from where it went down: a tap, or a long press when
        held long enough; else a swipe (even one that comes back to where it started)."""
        x0, y0 = path[0]
        if all(abs(x - x0) <= self.slop_px and abs(y - y0) <= self.slop_px for x, y in path):
            return "long_press" if duration_ms >= self.long_press_ms else "tap"
        return "swipe"
