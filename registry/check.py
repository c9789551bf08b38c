"""`farm registry check`'s analysis: does every screen's reference screenshot identify as
that screen, and nothing else? Can an action lead to every state?

Owns the cross-check of a valid registry against its own reference screenshots (loading and
per-file validation are ``registry.load``'s). Each screen's ``reference_screenshot`` is run
through the matcher, scoped to the screen's app as on a phone (the app's screens plus the
global section):

- a *conflict*: the frame does not identify as its own screen although screens match it:
  "ambiguous" when two or more match (in one tier the matcher answers unknown; an interrupt
  also matching a state's frame would shadow that state), "wrong screen" when only another
  screen matches. An interrupt matching together with the state it pops up over, on the
  interrupt's own frame, is normal and not reported: the matcher tries interrupts first.
- a *dead screen*: it does not match its own reference screenshot (an error: it will not be
  recognised on a phone either), or it has none (a warning: nothing checks it; the line
  names the other screenshots that match it, if any).
- an *unreachable* state (a warning): no action's ``linked_state`` leads to it, or only
  actions ``go_to`` does not take (``registry.navigation``): a go_to cannot walk there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from registry.load import load_registry, resolve_path
from registry.match import Matcher, ScreenMatch, load_image
from registry.model import Registry, ScreenRef
from registry.navigation import hops_from, screen_names, unreachable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conflict:
    """A reference screenshot that does not identify as its own screen although some
    screens match it: ``matched`` all of them, ``identified`` what the matcher answers."""

    frame: str          # registry-relative path of the screenshot
    owner: ScreenRef    # the screen whose screenshot it is
    matched: tuple[ScreenRef, ...]
    identified: str     # "app/state", "unknown (ambiguous: a, b)", ...

    def line(self) -> str:
        names = ", ".join(r.label() for r in self.matched)
        kind = "ambiguous" if len(self.matched) > 1 else "wrong screen"
        return (f"{kind}: frame {self.frame} (of {self.owner.label()}) is matched by {names}; "
                f"identified as {self.identified}")


@dataclass(frozen=True)
class DeadScreen:
    """A screen its own reference screenshot does not match; ``warning`` when it has none."""

    screen: ScreenRef
    reason: str
    warning: bool = False

    def line(self) -> str:
        return f"{'warning' if self.warning else 'dead'}: {self.screen.label()}: {self.reason}"


@dataclass(frozen=True)
class Unreachable:
    """A state no action leads to; ``through``: the lines of the only actions that do, none
    of which go_to takes (empty: no action at all)."""

    screen: ScreenRef
    through: tuple[str, ...] = ()

    def line(self) -> str:
        if self.through:
            return (f"warning: unreachable by go_to: {self.screen.label()}: only actions with "
                    f"navigation: false lead to it ({', '.join(self.through)})")
        return (f"warning: unreachable: {self.screen.label()}: no action's linked_state leads "
                "to it; a go_to can only start there")


def unreachable_states(registry: Registry) -> list[Unreachable]:
    """Every app's states that no action leads to, then those only non-navigation ones do."""
    out: list[Unreachable] = []
    for app_key, app in registry.apps.items():
        never = unreachable(app)
        out += [Unreachable(ScreenRef(app_key, "state", key)) for key in never]
        for key in unreachable(app, navigation_only=True):
            if key not in never:
                through = tuple(h.line(app_key) for s in screen_names(app)
                                for h in hops_from(app, s, every_action=True) if h.target == key)
                out.append(Unreachable(ScreenRef(app_key, "state", key), through))
    return out


@dataclass
class CheckReport:
    """What ``check_registry`` found; ``clean`` when nothing but warnings."""

    registry: Registry
    frames_checked: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    dead: list[DeadScreen] = field(default_factory=list)
    unreachable: list[Unreachable] = field(default_factory=list)

    @property
    def ambiguities(self) -> list[Conflict]:
        return self.conflicts

    @property
    def clean(self) -> bool:
        return not self.conflicts and all(d.warning for d in self.dead)

    def lines(self) -> list[str]:
        return [c.line() for c in self.conflicts] + [d.line() for d in self.dead] \
            + [u.line() for u in self.unreachable]


def describe(match: ScreenMatch) -> str:
    """A ScreenMatch as one CLI word: its label, or ``unknown (ambiguous: a, b)``."""
    if match.ref is None and match.ambiguous:
        return f"unknown (ambiguous: {', '.join(r.label() for r in match.ambiguous)})"
    return match.label


def check_registry(path: str | os.PathLike, reader=None) -> CheckReport:
    """Load the registry at ``path`` (``ValidationErrors`` propagate) and cross-check every
    screen against every reference screenshot. ``reader`` is the matcher's TextReader (OCR);
    None uses the shared one, loaded only if an OCR region is reached."""
    registry = load_registry(path)
    matcher = Matcher(registry, reader)
    report = CheckReport(registry)
    matched_by: dict[ScreenRef, list[str]] = {ref: [] for ref in registry.screens()}
    for owner in registry.screens():
        shot = registry.screen(owner).reference_screenshot
        if shot is None:
            continue
        frame = load_image(resolve_path(registry, shot))
        report.frames_checked += 1
        hits = matcher.matches(frame, owner.app)
        for ref in hits:
            matched_by[ref].append(shot)
        result = matcher.identify(frame, owner.app)
        if result.ref != owner and hits:
            report.conflicts.append(Conflict(shot, owner, tuple(hits), describe(result)))
        log.debug("checked frame=%s owner=%s matches=%s identified=%s", shot, owner.label(),
                  [r.label() for r in hits], describe(result))
    for ref, frames in matched_by.items():
        shot = registry.screen(ref).reference_screenshot
        others = (f"matched by {', '.join(frames)}" if frames else
                  "no other screen's screenshot matches it either")
        if shot is None:
            report.dead.append(DeadScreen(ref, f"no reference screenshot; {others}", warning=True))
        elif shot not in frames:
            report.dead.append(DeadScreen(
                ref, f"does not match its own reference screenshot {shot}; {others} (`farm "
                     f"registry identify {shot} --app {ref.app} --explain` shows the scores)"))
    report.unreachable = unreachable_states(registry)
    log.info("registry checked root=%s frames=%d conflicts=%d dead=%d", registry.root,
             report.frames_checked, len(report.conflicts),
             sum(not d.warning for d in report.dead))
    return report
