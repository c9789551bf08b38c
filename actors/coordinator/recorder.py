"""Recording (spec 5.2): the actions an operator sends become a sequence file.

Owns the open recordings of the coordinator. A recording follows one lead phone (the first
of its scope): every action the control endpoint runs on that phone becomes a step, with an
``expect_screen`` of the screen the matcher named just before it (interrupts skipped: they
are cleared on their own at playback too; so are other apps' screens: playback makes the
sequence's app active before its first step), and stopping adds a ``wait_for_screen`` of the
final screen, so playing the file back proves it reached the same place. Unknown screens
met meanwhile are queued by the phone actors as always. ``stop`` writes
``<folder>/<app>/<name>.json`` atomically; nothing is written for a recording never stopped.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgspec

from protocol.errors import FarmError, ValidationError
from protocol.files import write_atomic
from sequences.model import Sequence

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z0-9_]{1,64}")  # fullmatch: `$` lets "name\n" in (a file name)
FINAL_SCREEN_TIMEOUT_S = 15.0


def action_step(action: dict) -> dict | None:
    """The sequence step for a control-endpoint action; None for what is not a step."""
    kind = action.get("type")
    if kind in ("tap", "long_tap"):
        step = {"type": kind, "x": action["x"], "y": action["y"]}
        if kind == "long_tap" and action.get("duration_ms"):
            step["duration_ms"] = action["duration_ms"]
        return step
    if kind == "swipe":
        step = {"type": "swipe", **{k: action[k] for k in ("x1", "y1", "x2", "y2")},
                "duration_ms": action.get("duration_ms", 300)}
        if action.get("path"):
            step["path"] = [list(point) for point in action["path"]]
        return step
    if kind == "text":
        # The operator's template (variables, spintax), not this phone's value of it: the
        # playback resolves it per phone (issue 21.5).
        return {"type": "type", "text": action.get("template") or action["text"]}
    if kind == "key":
        step = {"type": "key", "key": str(action["key"])}
        if action.get("repeat", 1) != 1:
            step["repeat"] = action["repeat"]
        return step
    if kind == "launch_app":
        return {"type": "launch_app", "package": action["package"]}
    return None  # screenshots, stop_app, locks: not part of what a sequence replays


def is_state(screen: str | None) -> bool:
    return bool(screen) and screen != "unknown" and "/interrupt:" not in screen


@dataclass
class Recording:
    """One open recording: its lead phone and the steps so far."""

    recording_id: str
    name: str
    app: str | None
    serials: list[str]
    started_at: float
    steps: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def lead(self) -> str:
        return self.serials[0]


class Recorder:
    """Owns open recordings; ``screen_of(serial)`` is the matcher's latest name for a phone."""

    def __init__(self, folder: str | Path, screen_of: Callable[[str], str | None]) -> None:
        self.folder = Path(folder)
        self.screen_of = screen_of
        self._open: dict[str, Recording] = {}
        self._lock = threading.Lock()

    def start(self, name: str, app: str | None, serials: list[str]) -> Recording:
        if not _NAME.fullmatch(name):
            raise ValidationError("$.name", f"{name!r}: use 1-64 of a-z, 0-9 and _")
        if app is not None and not _NAME.fullmatch(app):
            raise ValidationError("$.app", f"{app!r}: use 1-64 of a-z, 0-9 and _")
        if not serials:
            raise ValidationError("$.scope", "the scope selects no phone")
        with self._lock:
            busy = [r.lead for r in self._open.values() if r.lead == serials[0]]
            if busy:
                raise ValidationError("$.scope", f"phone {busy[0]} is already being recorded")
            rec = Recording(uuid.uuid4().hex[:12], name, app, list(serials), time.time())
            self._open[rec.recording_id] = rec
        log.info("recording %s (%s) started on %s", rec.recording_id, name, rec.lead)
        return rec

    def observe(self, serial: str, action: dict) -> None:
        """An action is about to run on ``serial``: record it if a recording leads there."""
        with self._lock:
            recs = [r for r in self._open.values() if r.lead == serial]
        for rec in recs:
            step = action_step(action)
            if step is None:
                rec.skipped.append(str(action.get("type")))
                continue
            screen = self.screen_of(serial)
            # Another app's screen is no expectation: playback makes the app active first.
            if is_state(screen) and (rec.app is None or screen.split("/")[0] == rec.app):
                rec.steps.append({"type": "expect_screen", "screen": screen})
            rec.steps.append(step)

    def stop(self, recording_id: str) -> tuple[Path, dict]:
        """Write the sequence file; returns its path and content."""
        with self._lock:
            rec = self._open.pop(recording_id, None)
        if rec is None:
            raise FarmError(f"recording {recording_id!r}: no such open recording")
        steps = list(rec.steps)
        final = self.screen_of(rec.lead)
        if is_state(final):
            steps.append({"type": "wait_for_screen", "screen": final,
                          "timeout_s": FINAL_SCREEN_TIMEOUT_S})
        data = {"name": rec.name, "description": f"recorded on {rec.lead}", "app": rec.app,
                "steps": steps}
        if rec.app is None:
            del data["app"]
        # The file must load as a sequence: a recording is never saved half-valid.
        msgspec.convert(data, Sequence)
        path = self.folder / (rec.app or "recorded") / f"{rec.name}.json"
        write_atomic(path, msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")
        log.info("recording %s saved to %s (%d steps, skipped %s)", recording_id, path,
                 len(steps), rec.skipped or "nothing")
        return path, data

    def open_recordings(self) -> list[dict]:
        with self._lock:
            return [{"recording_id": r.recording_id, "name": r.name, "app": r.app,
                     "lead": r.lead, "steps": len(r.steps)} for r in self._open.values()]

