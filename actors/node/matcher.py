"""The node's screen matcher actor: which registered screen a phone's frame shows.

Owns the node's loaded screen registry (one version at a time) and the ``registry.match``
Matcher built from it. Phone actors ask it after every action's screenshot; one actor per
node keeps the registry swap in one place and bounds the CPU that matching takes next to
the adb traffic. Answers are ``Identification``s: plain data with the screen's label and,
for an interrupt, where on *this* frame its handler action is (scaled to the phone's size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pykka

from registry.load import load_registry
from registry.match import Matcher
from registry.model import Registry, ScreenAction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identification:
    """What a frame shows: ``label`` is ``app/state``, ``app/interrupt:name`` or ``unknown``."""

    label: str
    kind: str  # "state" | "interrupt" | "unknown"
    app: str | None = None
    package: str | None = None
    ambiguous: tuple[str, ...] = ()
    # Interrupts: the handler action's name, type and centre in this frame's pixels.
    handler: str | None = None
    handler_type: str | None = None
    handler_xy: tuple[int, int] | None = None
    registry_version: str = ""
    elapsed_ms: float = 0.0
    # The screen's registry health tag ("login", "challenge" or None): a challenge is never
    # cleared by its handler.
    health: str | None = None


UNKNOWN = Identification("unknown", "unknown")


def action_centre(action: ScreenAction, screen_size: tuple[int, int],
                  frame_size: tuple[int, int]) -> tuple[int, int]:
    """Centre of ``action``'s box, from registry space to a frame of ``frame_size`` (w, h)."""
    x1, y1, x2, y2 = action.coordinates
    sx, sy = frame_size[0] / screen_size[0], frame_size[1] / screen_size[1]
    return round((x1 + x2) / 2 * sx), round((y1 + y2) / 2 * sy)


def action_box(action: ScreenAction, screen_size: tuple[int, int],
               frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``action``'s box, from registry space to a frame of ``frame_size`` (w, h)."""
    x1, y1, x2, y2 = action.coordinates
    sx, sy = frame_size[0] / screen_size[0], frame_size[1] / screen_size[1]
    return round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)


class MatcherActor(pykka.ThreadingActor):
    """Owns the node's registry and matcher; identifies frames for the phone actors."""

    use_daemon_thread = True  # see BridgedActor

    def __init__(self, registry: Registry | str | Path) -> None:
        super().__init__()
        self._use(registry if isinstance(registry, Registry) else load_registry(registry))

    def _use(self, registry: Registry) -> None:
        self.registry = registry
        self.matcher = Matcher(registry)
        log.info("screen registry %s loaded: %d apps, %d screens", registry.version[:12],
                 len(registry.apps), len(registry.screens()))

    def load(self, path: str | Path) -> str:
        """Switch to the registry at ``path`` (validated first: a bad one leaves the old)."""
        self._use(load_registry(path))
        return self.registry.version

    def version(self) -> str:
        return self.registry.version

    def identify(self, frame: np.ndarray, package: str | None = None) -> Identification:
        """The screen ``frame`` shows. With ``package`` (the phone's active app) that app's
        screens and the global interrupts are tried first; if none match, every app's are
        (the operator may have left the app)."""
        match = self.matcher.identify(frame, package) if package else None
        if match is None or (match.ref is None and not match.ambiguous):
            match = self.matcher.identify(frame, None)
        ambiguous = tuple(ref.label() for ref in match.ambiguous)
        if match.ref is None:
            return Identification("unknown", "unknown", ambiguous=ambiguous,
                                  registry_version=self.registry.version,
                                  elapsed_ms=match.elapsed_ms)
        ref = match.ref
        app = self.registry.apps[ref.app]
        handler = handler_type = handler_xy = None
        if ref.kind == "interrupt":
            action = self.registry.screen(ref).handler_action()
            if action is not None:
                handler, handler_type = action.name, action.action_type
                handler_xy = action_centre(action, app.screen_size, (frame.shape[1], frame.shape[0]))
        return Identification(ref.label(), ref.kind, ref.app, app.package, ambiguous, handler,
                              handler_type, handler_xy, self.registry.version, match.elapsed_ms,
                              self.registry.screen(ref).health)
