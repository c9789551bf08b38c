"""The virtual phone's screen: which app and screen are in front, and how input changes that.

``PhoneUI`` is the state machine behind a virtual phone's display. The ADB shell calls it for
``input tap/swipe/text/keyevent``, ``am start``, ``am force-stop``, ``pm``, ``screencap`` and
``dumpsys window``. Apps are data (``appmodel.py``); pixels are ``render.py``'s job. This
module owns per-app state (screen, back stack, text fields, feed position), accounts, popups
and their seeded triggers, and the layout that both drawing and hit-testing use, so what is
drawn is exactly what a tap hits. The social numbers and conversations it shows come from
``virtual/social.py`` (seed, account, clock); its layout is rebuilt when the minute changes.
"""

from __future__ import annotations

import colorsys
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from virtual.appmodel import (
    LAUNCHER_PACKAGE,
    REF_HEIGHT,
    REF_WIDTH,
    SYSTEM_PACKAGE,
    Action,
    AppSpec,
    Element,
    Popup,
    blank_app,
    load_apps,
    parse_color,
    render_template,
)
from virtual.render import STATUS_BAR_HEIGHT, FrameRenderer, Op, shared_renderer
from virtual.social import account_counts, conversation, format_count, minute, partner, post_counts

__all__ = ["PhoneUI", "load_apps", "KEYCODE_HOME", "KEYCODE_BACK", "KEYCODE_ENTER", "KEYCODE_DEL",
           "KEYCODE_APP_SWITCH"]

log = logging.getLogger(__name__)

KEYCODE_HOME = 3
KEYCODE_BACK = 4
KEYCODE_ENTER = 66
KEYCODE_DEL = 67
KEYCODE_APP_SWITCH = 187

# Android: a swipe that moves less than this (device px) is a tap or, if long, a long press.
TOUCH_SLOP_PX = 20
LONG_PRESS_MS = 500
MAX_HISTORY = 50

APP_BAR = (0, STATUS_BAR_HEIGHT, REF_WIDTH, 240)
# Popup dialog geometry, reference space; fixed so scripts can rely on button positions.
DIALOG_BOX = (80, 860, 1000, 1540)
DIALOG_BUTTONS_Y = (1400, 1520)
DIALOG_BUTTONS_X = (120, 960)
DIALOG_BUTTON_GAP = 30
GRID_TOP = 300
GRID_CELL_H = 320
_SEEDED_POST_AGE_S = 3 * 3600

_WHITE = (255, 255, 255)
_INK = (32, 33, 36)
_GREY = (128, 134, 139)
_ACCENT = (26, 115, 232)

Box = tuple[int, int, int, int]


# Count templates: which count each shows and how the app writes it (virtual/social.py).
_COUNT_FORMATS = {"followers": ("followers", "auto"), "following": ("following", "plain"),
                  "post_views": ("views", "compact"), "post_likes": ("likes", "grouped"),
                  "post_comments": ("comments", "plain")}


def _rgb(color: str) -> tuple[int, int, int]:
    r, g, b, _a = parse_color(color)
    return (r, g, b)


def _feed_color(index: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per feed position (golden-ratio hue steps)."""
    h = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.75)
    return (round(r * 255), round(g * 255), round(b * 255))


def _icon_color(spec: AppSpec) -> tuple[int, int, int]:
    if spec.icon_color:
        return _rgb(spec.icon_color)
    # Stable per package, across runs and processes (unlike hash()).
    return _feed_color(zlib.crc32(spec.package.encode()) % 1000)


def _readable_on(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return _INK if luminance > 160 else _WHITE


@dataclass
class _AppState:
    """Per running app: what a force-stop throws away."""

    screen: str
    history: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    focused: str | None = None
    feed_index: int = 1


@dataclass
class _AccountState:
    """Per installed app: survives force-stop (it stands for server-side data)."""

    active: str | None
    posts: dict[str, int]
    last_post: dict[str, str]
    # When each account's latest post went up (its views count from then).
    posted_at: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Hit:
    """A tappable area of the current layout."""

    box: Box
    text: str
    target: tuple[Any, ...]  # ("element", pkg, Element) | ("app", pkg) | ("popup", owner, PopupButton)

    def contains(self, rx: float, ry: float) -> bool:
        return self.box[0] <= rx < self.box[2] and self.box[1] <= ry < self.box[3]


@dataclass(frozen=True)
class _Layout:
    ops: tuple[Op, ...]
    hits: tuple[_Hit, ...]
    status_bg: tuple[int, int, int]
    status_fg: tuple[int, int, int]


class PhoneUI:
    """Owns one virtual phone's UI state: foreground app, screens, fields, accounts, popups.

    All methods are safe to call from several threads (one re-entrant lock); rendering runs
    outside the lock so a screenshot in a worker thread does not stall input handling.
    """

    def __init__(self, apps: list[AppSpec], width: int = 1080, height: int = 2400, density: int = 420,
                 seed: int = 0, clock: Callable[[], float] = time.time, *, random_popups: bool = True,
                 renderer: FrameRenderer | None = None) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"bad screen size {width}x{height}")
        self.width = width
        self.height = height
        self.density = density
        self.seed = seed
        self.clock = clock
        # False: popups appear only through force_popup()/actions, never at random.
        self.random_popups = random_popups
        self.battery_level = 85
        # Followers count from here (virtual/social.py); seeded posts went up 3 hours before.
        self.started = clock()
        # Set (`vphone counts freeze`): the counts stay as they were at this time, so a test
        # can compare what a run read with what the screen shows across a minute's turn.
        self.counts_frozen_at: float | None = None
        self._renderer = renderer or shared_renderer
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._apps: dict[str, AppSpec] = {}
        self._system: set[str] = set()
        # Apps uninstalled by `pm uninstall`: installing the package again brings its model
        # back (the demo app's screens), as a real reinstall brings the same app back.
        self._uninstalled: dict[str, AppSpec] = {}
        self._launchable: set[str] = set()
        self._accounts: dict[str, _AccountState] = {}
        for spec in apps:
            self._add_app(spec)
            for stub in spec.packages:
                self._add_app(blank_app(stub.package, stub.label, system=True) if stub.launchable else
                              AppSpec(package=stub.package, label=stub.label, source=spec.source, system=True))
        if LAUNCHER_PACKAGE not in self._apps:
            raise ValueError(f"no launcher app ({LAUNCHER_PACKAGE}) among the loaded apps")
        self._states: dict[str, _AppState] = {}
        self._popup: tuple[str, str] | None = None  # (owner package, popup name)
        # `vphone popup-after N NAME`: [input events still to come, owner, name].
        self._scheduled_popup: list | None = None
        # Told of every popup the phone brings up by itself: on_popup(name, cause), cause
        # "random" (a rolled chance) or "scheduled" (popup_after), so the input log shows it.
        self.on_popup: Callable[[str, str], None] | None = None
        self._focus_under_popup: tuple[str, str, str | None] | None = None
        self._recents: list[str] = []  # most recent first, launcher excluded
        self._foreground = LAUNCHER_PACKAGE
        self._states[LAUNCHER_PACKAGE] = _AppState(screen=self._launch_screen(self._apps[LAUNCHER_PACKAGE]))
        self._version = 0  # bumped by every input; keys the layout and frame fast paths
        self._layout_cache: tuple[tuple[int, int], _Layout] | None = None
        self._frame_cache: tuple[Any, np.ndarray] | None = None
        self._png_cache: tuple[Any, bytes] | None = None

    # ------------------------------------------------------------------ packages

    def _add_app(self, spec: AppSpec) -> None:
        self._apps[spec.package] = spec
        if spec.system:
            self._system.add(spec.package)
        if spec.launchable and spec.package != LAUNCHER_PACKAGE:
            self._launchable.add(spec.package)
        self._accounts[spec.package] = _AccountState(
            active=spec.active_account,
            posts={a.username: a.posts for a in spec.accounts},
            last_post={a.username: a.last_post for a in spec.accounts},
            posted_at={a.username: self.started - _SEEDED_POST_AGE_S for a in spec.accounts if a.posts},
        )

    def packages(self) -> list[str]:
        with self._lock:
            return list(self._apps)

    def launcher_apps(self) -> list[str]:
        """Packages shown as launcher icons, in grid order."""
        with self._lock:
            return [p for p in self._apps if p in self._launchable]

    def is_system(self, package: str) -> bool:
        with self._lock:
            return package in self._system

    def install_package(self, package: str, label: str | None = None) -> None:
        with self._lock:
            self._version += 1
            existing = self._apps.get(package)
            if existing is None and package in self._uninstalled:
                self._add_app(self._uninstalled.pop(package))
                log.info("package installed again package=%s", package)
                return
            # Re-installing keeps the app; only a blank app we installed may be relabelled.
            if existing is not None and (label is None or not existing.source.startswith("<installed")):
                log.info("package already installed package=%s", package)
                return
            label = label or package.rsplit(".", 1)[-1].replace("_", " ").title()
            self._add_app(blank_app(package, label))
            log.info("package installed package=%s label=%s", package, label)

    def uninstall_package(self, package: str) -> bool:
        with self._lock:
            if package not in self._apps or package in self._system:
                return False
            self._version += 1
            self._force_stop(package)
            self._uninstalled[package] = self._apps.pop(package)
            self._accounts.pop(package, None)
            self._launchable.discard(package)
            log.info("package uninstalled package=%s", package)
            return True

    # ------------------------------------------------------------------ app lifecycle

    def _launch_screen(self, spec: AppSpec) -> str:
        assert spec.launch_screen is not None
        if spec.login_screen and self._accounts[spec.package].active is None:
            return spec.login_screen
        return spec.launch_screen

    def _full_activity(self, package: str, activity: str) -> str:
        return package + activity if activity.startswith(".") else activity

    def start_app(self, package: str, activity: str | None = None) -> bool:
        with self._lock:
            self._version += 1
            return self._start(package, activity)

    def _start(self, package: str, activity: str | None = None) -> bool:
        spec = self._apps.get(package)
        if spec is None or not spec.launchable:
            log.info("start refused package=%s reason=%s", package, "not installed" if spec is None else "no activity")
            return False
        target: str | None = None
        if activity is not None:
            wanted = self._full_activity(package, activity)
            matches = [s.name for s in spec.screens.values() if self._full_activity(package, s.activity) == wanted]
            if not matches:
                log.info("start refused package=%s activity=%s reason=unknown activity", package, activity)
                return False
            target = matches[0]
        self._leave_foreground()
        self._foreground = package
        if package != LAUNCHER_PACKAGE:
            if package in self._recents:
                self._recents.remove(package)
            self._recents.insert(0, package)
        state = self._states.get(package)
        if state is None:
            state = _AppState(screen=self._launch_screen(spec))
            self._states[package] = state
            log.info("app started package=%s screen=%s", package, state.screen)
            if target is None or target == state.screen:
                self._entered(package, state.screen)
                return True
        if target is not None and spec.screens[target].activity != spec.screens[state.screen].activity:
            self._go(package, target)
        return True

    def _leave_foreground(self) -> None:
        """Backgrounding an app closes its own dialogs; system dialogs stay up."""
        if self._popup is not None:
            owner, name = self._popup
            if self._apps[owner].popups[name].kind == "app":
                self._popup = None
        state = self._states.get(self._foreground)
        if state is not None:
            state.focused = None

    def force_stop(self, package: str) -> None:
        with self._lock:
            self._version += 1
            self._force_stop(package)

    def _force_stop(self, package: str) -> None:
        if package == LAUNCHER_PACKAGE:
            return
        self._states.pop(package, None)
        if package in self._recents:
            self._recents.remove(package)
        if self._popup is not None and self._popup[0] == package:
            self._popup = None
        if self._foreground == package:
            self._foreground = LAUNCHER_PACKAGE
            self._states[LAUNCHER_PACKAGE].screen = "home"
            self._states[LAUNCHER_PACKAGE].history.clear()
        log.info("app stopped package=%s", package)

    def _go_home(self) -> None:
        self._start(LAUNCHER_PACKAGE)
        launcher = self._states[LAUNCHER_PACKAGE]
        launcher.screen = self._apps[LAUNCHER_PACKAGE].launch_screen or launcher.screen
        launcher.history.clear()

    def _go(self, package: str, screen: str, *, replace: bool = False) -> None:
        """Navigate within an app; returning to a screen on the back stack pops back to it."""
        if package != self._foreground:
            self._start(package)
        state = self._states[package]
        if screen == state.screen:
            return
        if screen in state.history:
            del state.history[state.history.index(screen):]
        elif not replace:
            state.history.append(state.screen)
            del state.history[:-MAX_HISTORY]
        state.screen = screen
        state.focused = None
        self._entered(package, screen)

    def _back(self) -> None:
        package = self._foreground
        spec = self._apps[package]
        state = self._states[package]
        screen = spec.screens[state.screen]
        if screen.on_back is not None:
            self._run(package, screen.on_back)
        elif state.history:
            state.screen = state.history.pop()
            state.focused = None
            self._entered(package, state.screen)
        elif package != LAUNCHER_PACKAGE:
            # BACK on an app's root finishes it; the next start begins at its launch screen.
            self._states.pop(package, None)
            self._go_home()

    # ------------------------------------------------------------------ popups

    def popup_names(self) -> list[str]:
        with self._lock:
            return [name for spec in self._apps.values() for name in spec.popups]

    def _find_popup(self, name: str) -> str | None:
        for spec in self._apps.values():
            if name in spec.popups:
                return spec.package
        return None

    def force_popup(self, name: str) -> None:
        with self._lock:
            owner = self._find_popup(name)
            if owner is None:
                raise KeyError(f"unknown popup {name!r}; known: {', '.join(self.popup_names())}")
            self._version += 1
            self._show_popup(owner, name)

    def popup_after(self, count: int, name: str) -> None:
        """Show popup ``name`` right after the ``count``-th next input event (a test hook: a
        popup at a known point of a key burst, where a random one lands only sometimes).
        Each key of a multi-key `input keyevent` is one event. If another popup is up then,
        it shows after the first event with none up."""
        with self._lock:
            owner = self._find_popup(name)
            if owner is None:
                raise KeyError(f"unknown popup {name!r}; known: {', '.join(self.popup_names())}")
            if count < 1:
                raise ValueError(f"popup-after needs a count of 1 or more, got {count}")
            self._scheduled_popup = [count, owner, name]

    def _show_popup(self, owner: str, name: str, cause: str | None = None) -> None:
        self._popup = (owner, name)
        state = self._states.get(self._foreground)
        self._focus_under_popup = None
        if state is not None:
            # A dialog takes input focus from the field; Android gives it back on close.
            self._focus_under_popup = (self._foreground, state.screen, state.focused)
            state.focused = None
        log.info("popup shown popup=%s owner=%s", name, owner)
        if cause is not None and self.on_popup is not None:
            self.on_popup(name, cause)

    def _close_popup(self) -> None:
        """The dialog closes in place: the field under it gets its focus back."""
        self._popup = None
        under, self._focus_under_popup = self._focus_under_popup, None
        state = self._states.get(self._foreground)
        if under is not None and state is not None and under[:2] == (self._foreground, state.screen):
            state.focused = under[2]

    def _entered(self, package: str, screen: str) -> None:
        """on_enter popup triggers of the app whose screen was just entered."""
        if not self.random_popups or self._popup is not None:
            return
        for name, popup in self._apps[package].popups.items():
            p = popup.on_enter.get(screen)
            if p and self._rng.random() < p:
                self._show_popup(package, name, "random")
                return

    def _after_input(self) -> None:
        """Per-event popups: a scheduled one (popup_after), else random ones of the foreground
        app and of the system."""
        self._version += 1
        scheduled = self._scheduled_popup
        if scheduled is not None:
            scheduled[0] -= 1
            if scheduled[0] <= 0 and self._popup is None:
                self._scheduled_popup = None
                self._show_popup(scheduled[1], scheduled[2], "scheduled")
                return
        if not self.random_popups or self._popup is not None:
            return
        for package in (self._foreground, SYSTEM_PACKAGE):
            spec = self._apps.get(package)
            if spec is None:
                continue
            for name, popup in spec.popups.items():
                if popup.rate and self._rng.random() < popup.rate:
                    self._show_popup(package, name, "random")
                    return

    def _current_popup(self) -> tuple[str, Popup] | None:
        if self._popup is None:
            return None
        owner, name = self._popup
        return owner, self._apps[owner].popups[name]

    # ------------------------------------------------------------------ actions

    def _run(self, package: str, action: Action, *, from_popup: bool = False) -> None:
        spec = self._apps[package]
        state = self._states.get(package)
        if state is None and spec.launchable:
            # A forced popup of a background app acts on that app: bring it up first.
            self._start(package)
            state = self._states[package]
        fields = state.fields if state is not None else {}
        accounts = self._accounts[package]
        if from_popup or action.dismiss:
            self._close_popup()
        for name, value in action.set:
            fields[name] = value
        if action.login is not None:
            user = fields.get(action.login.username_field, "").strip().lstrip("@")
            password = fields.get(action.login.password_field, "")
            if not any(a.username == user and a.password == password for a in spec.accounts):
                log.info("login failed package=%s username=%s", package, user)
                if action.login.on_fail:
                    self._show_popup(package, action.login.on_fail)
                return
            accounts.active = user
            log.info("login package=%s username=%s", package, user)
        if action.switch_account is not None:
            accounts.active = action.switch_account
            log.info("account switched package=%s username=%s", package, action.switch_account)
        if action.logout:
            accounts.active = None
        if action.post is not None:
            user = accounts.active or ""
            accounts.posts[user] = accounts.posts.get(user, 0) + 1
            accounts.last_post[user] = fields.get(action.post, "")
            accounts.posted_at[user] = self.clock()
            log.info("posted package=%s username=%s", package, user)
        for name in action.clear_fields:
            fields[name] = ""
        if action.feed and state is not None:
            state.feed_index = max(1, state.feed_index + action.feed)
        if action.clear_history and state is not None:
            state.history.clear()
        if action.go is not None:
            # After clearing the stack the current screen must not be pushed back onto it.
            self._go(package, action.go, replace=action.replace or action.clear_history)
        elif action.back:
            self._back()
        elif action.home:
            self._go_home()
        elif action.open_app is not None:
            if not self._start(action.open_app):
                log.warning("open_app target not installed package=%s", action.open_app)
        elif action.close_app:
            self._force_stop(self._foreground)
        if action.popup is not None:
            self._show_popup(package, action.popup)

    # ------------------------------------------------------------------ input

    def _to_ref(self, x: float, y: float) -> tuple[float, float]:
        return x * REF_WIDTH / self.width, y * REF_HEIGHT / self.height

    def _hit(self, x: float, y: float) -> _Hit | None:
        rx, ry = self._to_ref(x, y)
        for hit in reversed(self._layout().hits):
            if hit.contains(rx, ry):
                return hit
        return None

    def tap(self, x: int, y: int) -> None:
        with self._lock:
            self._press(x, y, long=False)
            self._after_input()

    def long_press(self, x: int, y: int, duration_ms: int = 1000) -> None:
        with self._lock:
            self._press(x, y, long=True)
            self._after_input()

    def _press(self, x: float, y: float, *, long: bool) -> None:
        hit = self._hit(x, y)
        log.debug("press x=%s y=%s long=%s hit=%s", x, y, long, hit.text if hit else None)
        if hit is None:
            return
        kind = hit.target[0]
        if kind == "popup":
            self._run(hit.target[1], hit.target[2].action, from_popup=True)
        elif kind == "app":
            if not long:  # a long press on an icon opens its shortcut menu, not the app
                self._start(hit.target[1])
        else:
            package, el = hit.target[1], hit.target[2]
            if el.kind == "text_field":
                self._states[package].focused = el.name
            # Android performs a click on release when nothing handles the long press.
            action = el.on_long_press if long and el.on_long_press is not None else el.on_tap
            if action is not None:
                self._run(package, action)

    def swipe(self, x1: int, y1: int, x2: int, y2: int, duration_ms: int = 300,
              path: list[tuple[int, int]] | None = None) -> None:
        """A straight swipe, or (``path``, from `input motionevent`) one through those points:
        it scrolls the way its ends point; one that never left the touch slop is a press."""
        with self._lock:
            dx, dy = x2 - x1, y2 - y1
            stayed = all(abs(x - x1) <= TOUCH_SLOP_PX and abs(y - y1) <= TOUCH_SLOP_PX
                         for x, y in (path or [(x2, y2)]))
            if stayed:
                self._press(x1, y1, long=duration_ms >= LONG_PRESS_MS)
            elif abs(dx) <= TOUCH_SLOP_PX and abs(dy) <= TOUCH_SLOP_PX:
                pass  # went out and came back: no press, and no direction to scroll
            elif self._popup is None:
                direction = ("down" if dy > 0 else "up") if abs(dy) >= abs(dx) else ("right" if dx > 0 else "left")
                package = self._foreground
                screen = self._apps[package].screens[self._states[package].screen]
                action = screen.on_swipe.get(direction)
                log.debug("swipe direction=%s handled=%s", direction, action is not None)
                if action is not None:
                    self._run(package, action)
            self._after_input()

    def drag(self, x1: int, y1: int, x2: int, y2: int, duration_ms: int = 300) -> None:
        self.swipe(x1, y1, x2, y2, duration_ms)

    def text(self, s: str) -> None:
        with self._lock:
            state = self._states.get(self._foreground)
            if state is not None and state.focused is not None and self._popup is None:
                el = self._focused_element()
                limit = el.max_length if el is not None else 500
                state.fields[state.focused] = (state.fields.get(state.focused, "") + s)[:limit]
            self._after_input()

    def _focused_element(self) -> Element | None:
        state = self._states[self._foreground]
        screen = self._apps[self._foreground].screens[state.screen]
        for el in screen.elements:
            if el.kind == "text_field" and el.name == state.focused:
                return el
        return None

    def key(self, code: int) -> None:
        with self._lock:
            state = self._states.get(self._foreground)
            popup = self._current_popup()
            if code == KEYCODE_HOME:
                self._go_home()
            elif code == KEYCODE_BACK:
                if popup is not None:
                    if popup[1].cancelable:
                        self._close_popup()
                else:
                    self._back()
            elif code == KEYCODE_APP_SWITCH:
                on_recents = self._foreground == LAUNCHER_PACKAGE and state is not None and state.screen == "recents"
                if on_recents and self._recents:
                    self._start(self._recents[0])
                elif not on_recents:
                    self._start(LAUNCHER_PACKAGE)
                    self._go(LAUNCHER_PACKAGE, "recents")
            elif popup is None and state is not None and state.focused is not None:
                if code == KEYCODE_DEL:
                    state.fields[state.focused] = state.fields.get(state.focused, "")[:-1]
                elif code == KEYCODE_ENTER:
                    el = self._focused_element()
                    if el is not None and el.on_submit is not None:
                        self._run(self._foreground, el.on_submit)
            # POWER, volume and anything else: no visible effect on this phone.
            self._after_input()

    # ------------------------------------------------------------------ introspection

    def focus(self) -> tuple[str, str]:
        with self._lock:
            spec = self._apps[self._foreground]
            return spec.package, spec.screens[self._states[self._foreground].screen].activity

    def describe(self) -> dict[str, Any]:
        with self._lock:
            package = self._foreground
            spec = self._apps[package]
            state = self._states[package]
            accounts = self._accounts[package]
            user = accounts.active
            return {
                "package": package,
                "activity": spec.screens[state.screen].activity,
                "app": spec.label,
                "screen": state.screen,
                "popup": self._popup[1] if self._popup else None,
                "account": user,
                "focused_field": state.focused,
                "fields": dict(state.fields),
                "feed_index": state.feed_index,
                "posts": accounts.posts.get(user or "", 0),
                "last_post": accounts.last_post.get(user or "", ""),
                "counts": self._counts(package, self.counts_now()),
            }

    def counts_now(self) -> float:
        """The time the counts on screen are computed for: the clock, unless frozen."""
        frozen = self.counts_frozen_at
        return self.clock() if frozen is None else frozen

    def freeze_counts(self, frozen: bool) -> None:
        """Hold the counts where they are now (True) or let them follow the clock again."""
        with self._lock:
            self.counts_frozen_at = self.clock() if frozen else None
            self._version += 1

    def _counts(self, package: str, now: float) -> dict[str, int] | None:
        """The signed-in account's profile and latest-post counts at ``now`` (what its
        profile and post screens show, as numbers), or None with no one signed in."""
        accounts = self._accounts.get(package)
        user = accounts.active if accounts is not None else None
        if accounts is None or user is None:
            return None
        posts = accounts.posts.get(user, 0)
        profile = account_counts(self.seed, user, posts, self.started, now)
        post = post_counts(self.seed, user, posts, accounts.posted_at.get(user, now), now)
        return {"followers": profile.followers, "following": profile.following, "posts": posts,
                "views": post.views, "likes": post.likes, "comments": post.comments}

    def visible_elements(self) -> list[dict[str, Any]]:
        """Tappable things on screen with text and device-pixel bounds (for uiautomator dump)."""
        with self._lock:
            sx, sy = self.width / REF_WIDTH, self.height / REF_HEIGHT
            out = []
            for hit in self._layout().hits:
                x0, y0, x1, y1 = hit.box
                out.append({"text": hit.text, "kind": hit.target[0],
                            "bounds": [round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)]})
            return out

    def element_tree(self) -> dict[str, Any]:
        """What `uiautomator dump` sees: the top window's views, bounds in device pixels.

        ``{"package", "bounds", "children": [node, ...]}``; a node has ``class`` (Android's:
        TextView, Button, ImageView, EditText), ``resource_id`` (``pkg:id/<element id>``),
        ``text``, ``hint``, ``content_desc``, ``clickable``, ``focusable``, ``focused``,
        ``password`` and ``bounds`` [x0, y0, x1, y1]. While a dialog is up only the dialog
        is listed: uiautomator dumps the window in front, and the dialog is a window of its
        own. An empty text field's ``text`` is its hint, as on a real phone (TextView gives
        accessibility the hint when it has no text); a password's is one bullet a character.
        """
        with self._lock:
            popup = self._current_popup()
            if popup is not None:
                return self._dialog_tree(popup[0], popup[1])
            package = self._foreground
            state = self._states[package]
            screen = self._apps[package].screens[state.screen]
            lookup = self._lookup(package)
            nodes: list[dict[str, Any]] = []
            if screen.title:
                nodes.append(self._node("android.widget.TextView", f"{package}:id/title",
                                        APP_BAR, text=render_template(screen.title, lookup)))
            for el in screen.elements:
                nodes += self._element_nodes(package, el, state, lookup)
            return {"package": package, "bounds": self._device_box((0, 0, REF_WIDTH, REF_HEIGHT)),
                    "children": nodes}

    def _element_nodes(self, package: str, el: Element, state: _AppState, lookup: Any) -> list[dict[str, Any]]:
        box = (el.x, el.y, el.x + el.w, el.y + el.h)
        rid = f"{package}:id/{el.id}" if el.id else ""
        text = render_template(el.text, lookup)
        clickable = el.on_tap is not None or el.on_long_press is not None
        if el.kind == "text":
            return [self._node("android.widget.TextView", rid, box, text=text)]
        if el.kind == "button":
            return [self._node("android.widget.Button", rid, box, text=text, clickable=clickable)]
        if el.kind == "image":
            return [self._node("android.widget.ImageView", rid, box, content_desc=text, clickable=clickable)]
        if el.kind == "text_field":
            value = state.fields.get(el.name or "", "")
            hint = render_template(el.placeholder, lookup)
            shown = "\u2022" * len(value) if el.password else value
            return [self._node("android.widget.EditText", rid, box, text=shown or hint, hint=hint,
                               clickable=True, focusable=True, focused=state.focused == el.name,
                               password=el.password)]
        if el.kind == "app_grid":
            return [self._node("android.widget.TextView", f"{hit.target[1]}:id/icon", hit.box, text=hit.text,
                               clickable=True)
                    for hit in self._layout().hits if hit.target[0] == "app"]
        return []

    def _dialog_tree(self, owner: str, popup: Popup) -> dict[str, Any]:
        lookup = self._lookup(owner)
        x0, y0, x1, _y1 = DIALOG_BOX
        package = "android" if popup.kind == "system" else owner
        nodes = [self._node("android.widget.TextView", "android:id/alertTitle", (x0 + 50, y0 + 50, x1 - 50, y0 + 180),
                            text=render_template(popup.title, lookup)),
                 self._node("android.widget.TextView", "android:id/message",
                            (x0 + 50, y0 + 200, x1 - 50, DIALOG_BUTTONS_Y[0] - 30),
                            text=render_template(popup.body, lookup))]
        for i, (box, button) in enumerate(zip(self.popup_button_boxes(len(popup.buttons)), popup.buttons)):
            nodes.append(self._node("android.widget.Button", f"android:id/button{i + 1}", box,
                                    text=render_template(button.text, lookup), clickable=True))
        return {"package": package, "bounds": self._device_box(DIALOG_BOX), "children": nodes}

    def _device_box(self, box: Box) -> list[int]:
        sx, sy = self.width / REF_WIDTH, self.height / REF_HEIGHT
        return [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]

    def _node(self, cls: str, resource_id: str, box: Box, *, text: str = "", hint: str = "", content_desc: str = "",
              clickable: bool = False, focusable: bool = False, focused: bool = False,
              password: bool = False) -> dict[str, Any]:
        return {"class": cls, "resource_id": resource_id, "text": text, "hint": hint, "content_desc": content_desc,
                "clickable": clickable, "focusable": focusable or clickable, "focused": focused,
                "password": password, "bounds": self._device_box(box)}

    def find(self, text: str) -> tuple[int, int]:
        """Device-pixel centre of the tappable thing showing ``text`` (tests, scripts)."""
        for item in self.visible_elements():
            if item["text"] == text:
                x0, y0, x1, y1 = item["bounds"]
                return (x0 + x1) // 2, (y0 + y1) // 2
        raise KeyError(f"nothing tappable shows {text!r}")

    # ------------------------------------------------------------------ layout

    def _lookup(self, package: str) -> Callable[[str, str | None], str]:
        state = self._states.get(package)
        accounts = self._accounts[package]
        spec = self._apps[package]
        user = accounts.active
        fg_label = self._apps[self._foreground].label
        # Counts as of the minute the layout is built for (see _layout).
        now = minute(self.counts_now()) * 60.0

        def lookup(name: str, arg: str | None) -> str:
            if name == "account":
                return user or ""
            if name == "display_name":
                return next((a.display_name for a in spec.accounts if a.username == user), "")
            if name == "field":
                return state.fields.get(arg or "", "") if state else ""
            if name == "feed_index":
                return str(state.feed_index) if state else "1"
            if name == "feed_creator":
                creators = spec.feed_creators or ("creator",)
                index = state.feed_index if state else 1
                return creators[(index - 1) % len(creators)]
            if name == "posts":
                return str(accounts.posts.get(user or "", 0))
            if name == "last_post":
                return accounts.last_post.get(user or "", "")
            if name == "app_label":
                return fg_label
            if name in _COUNT_FORMATS:
                counts = self._counts(package, now)
                return format_count(counts[_COUNT_FORMATS[name][0]], _COUNT_FORMATS[name][1]) if counts else "0"
            # The open conversation is the inbox's "chat" field (set by the tapped row).
            open_chat = state.fields.get("chat", "0") if state else "0"
            open_chat = open_chat if open_chat.isdigit() else "0"
            if name == "partner":  # {partner:N} names chat N's partner, {partner} the open one's
                return partner(self.seed, user or "", int(arg if arg is not None else open_chat))
            if name == "message":  # {message:N}: the open conversation's N-th line
                lines = conversation(self.seed, user or "", int(open_chat))
                index = int(arg or 0)
                return lines[index][1] if index < len(lines) else ""
            return ""

        return lookup

    def _layout(self) -> _Layout:
        # Counts shown on screen change with the minute, so the minute keys the layout too.
        key = (self._version, minute(self.counts_now()))
        cached = self._layout_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        layout = self._build_layout()
        self._layout_cache = (key, layout)
        return layout

    def _build_layout(self) -> _Layout:
        package = self._foreground
        spec = self._apps[package]
        state = self._states[package]
        screen = spec.screens[state.screen]
        lookup = self._lookup(package)
        ops: list[Op] = []
        hits: list[_Hit] = []
        bg = _rgb(screen.background)
        bar = _rgb(screen.bar_color)
        ops.append(("box", (0, 0, REF_WIDTH, REF_HEIGHT), "rect", bg, None, 0))
        if screen.title:
            ops.append(("box", APP_BAR, "rect", bar, None, 0))
            ops.append(("text", (24, APP_BAR[1], 1056, APP_BAR[3]), render_template(screen.title, lookup), 60,
                        _readable_on(bar), "left"))
        for el in screen.elements:
            self._layout_element(package, el, state, lookup, ops, hits)
        popup = self._current_popup()
        if popup is not None:
            hits = self._layout_popup(popup[0], popup[1], ops)  # modal: only its buttons are live
        return _Layout(tuple(ops), tuple(hits), bar, _readable_on(bar))

    def _layout_element(self, package: str, el: Element, state: _AppState, lookup: Any, ops: list[Op],
                        hits: list[_Hit]) -> None:
        box = (el.x, el.y, el.x + el.w, el.y + el.h)
        text = render_template(el.text, lookup)
        if el.kind == "text":
            color = _rgb(el.color) if el.color else _INK
            ops.append(("text", box, text, el.font_size or 48, color, el.align))
        elif el.kind in ("button", "image"):
            if el.color == "{feed_color}":
                fill = _feed_color(state.feed_index)
            else:
                fill = _rgb(el.color) if el.color else (_ACCENT if el.kind == "button" else (95, 99, 104))
            ops.append(("box", box, el.shape, fill, None, 0))
            tc = _rgb(el.text_color) if el.text_color else _readable_on(fill)
            ops.append(("text", box, text, el.font_size or (52 if el.kind == "button" else 64), tc, "center"))
            if el.on_tap is not None or el.on_long_press is not None:
                hits.append(_Hit(box, text, ("element", package, el)))
        elif el.kind == "text_field":
            focused = state.focused == el.name
            fill = _rgb(el.color) if el.color else (241, 243, 244)
            ops.append(("box", box, "rounded", fill, _ACCENT if focused else (154, 160, 166), 6 if focused else 3))
            value = state.fields.get(el.name or "", "")
            shown = "\u2022" * len(value) if el.password else value
            if focused:
                shown += "|"  # caret; never blinks, so frames stay deterministic
            if value or focused:
                color = _rgb(el.text_color) if el.text_color else _INK
            else:
                shown, color = render_template(el.placeholder, lookup), _GREY
            inner = (el.x + 24, el.y, el.x + el.w - 24, el.y + el.h)  # padding inside the outline
            ops.append(("text", inner, shown, el.font_size or 48, color, "left"))
            hits.append(_Hit(box, el.placeholder or el.name or "", ("element", package, el)))
        elif el.kind == "app_grid":
            tc = _rgb(el.text_color) if el.text_color else _WHITE
            pkgs = self.launcher_apps() if el.source == "installed" else list(self._recents)
            if not pkgs:
                ops.append(("text", box, "No recent apps" if el.source == "recent" else "No apps", 48, tc, "center"))
            cell_w = el.w // el.columns
            for i, pkg in enumerate(pkgs):
                col, row = i % el.columns, i // el.columns
                x0, y0 = el.x + col * cell_w, el.y + row * GRID_CELL_H
                if y0 + GRID_CELL_H > el.y + el.h:
                    break
                cx = x0 + cell_w // 2
                app = self._apps[pkg]
                ops.append(("box", (cx - 90, y0 + 20, cx + 90, y0 + 200), "ellipse", _icon_color(app), None, 0))
                ops.append(("text", (cx - 90, y0 + 20, cx + 90, y0 + 200), app.label[:1].upper(), 96, _WHITE,
                            "center"))
                ops.append(("text", (x0 + 5, y0 + 205, x0 + cell_w - 5, y0 + 305), app.label, 40, tc, "center"))
                hits.append(_Hit((x0, y0, x0 + cell_w, y0 + GRID_CELL_H), app.label, ("app", pkg)))

    def _layout_popup(self, owner: str, popup: Popup, ops: list[Op]) -> list[_Hit]:
        lookup = self._lookup(owner)
        system = popup.kind == "system"
        panel = (48, 49, 52) if system else _WHITE
        ink = _WHITE if system else _INK
        ops.append(("dim",))
        ops.append(("box", DIALOG_BOX, "rounded", panel, None, 0))
        x0, y0, x1, _y1 = DIALOG_BOX
        ops.append(("text", (x0 + 50, y0 + 50, x1 - 50, y0 + 180), render_template(popup.title, lookup), 60, ink,
                    "left"))
        ops.append(("text", (x0 + 50, y0 + 200, x1 - 50, DIALOG_BUTTONS_Y[0] - 30),
                    render_template(popup.body, lookup), 44, ink, "left"))
        hits = []
        for box, button in zip(self.popup_button_boxes(len(popup.buttons)), popup.buttons):
            fill = (138, 180, 248) if system else (232, 240, 254)
            ops.append(("box", box, "rounded", fill, None, 0))
            text = render_template(button.text, lookup)
            ops.append(("text", box, text, 52, (24, 46, 90) if system else _ACCENT, "center"))
            hits.append(_Hit(box, text, ("popup", owner, button)))
        return hits

    @staticmethod
    def popup_button_boxes(count: int) -> list[Box]:
        """Reference-space boxes of a dialog's buttons, left to right, in JSON order."""
        left, right = DIALOG_BUTTONS_X
        width = (right - left - DIALOG_BUTTON_GAP * (count - 1)) // count
        return [(left + i * (width + DIALOG_BUTTON_GAP), DIALOG_BUTTONS_Y[0],
                 left + i * (width + DIALOG_BUTTON_GAP) + width, DIALOG_BUTTONS_Y[1]) for i in range(count)]

    # ------------------------------------------------------------------ pixels

    def _frame_key(self) -> tuple[_Layout, tuple[Any, ...], Any]:
        """Snapshot under the lock: layout, status bar, and a cheap identity for the fast path."""
        with self._lock:
            layout = self._layout()
            now = time.gmtime(self.clock())
            status = (layout.status_bg, layout.status_fg, f"{now.tm_hour:02d}:{now.tm_min:02d}", self.battery_level)
            return layout, status, (self._version, id(layout), status)

    def frame_rgba(self) -> np.ndarray:
        layout, status, fast = self._frame_key()
        cached = self._frame_cache
        if cached is not None and cached[0] == fast:
            return cached[1]
        frame = self._renderer.frame(self.width, self.height, layout.ops, status)
        self._frame_cache = (fast, frame)
        return frame

    def frame_png(self) -> bytes:
        layout, status, fast = self._frame_key()
        cached = self._png_cache
        if cached is not None and cached[0] == fast:
            return cached[1]
        png = self._renderer.png(self.width, self.height, layout.ops, status)
        self._png_cache = (fast, png)
        return png
