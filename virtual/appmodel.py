"""Virtual apps as data: the JSON schema of a virtual app, its loader and its validator.

A virtual app is one JSON file under ``virtual/apps/`` (package, label, screens, popups,
accounts). This module owns turning such a file into immutable ``AppSpec`` objects and
reporting *every* problem of a file at once (``ValidationErrors``), each naming the file and
the JSON path, e.g. ``virtual/apps/demo.json: screens.feed.elements[2].on_tap.go: unknown
screen 'profil'``. It knows nothing about state or pixels (that is ``ui.py`` / ``render.py``).

Coordinates are in a reference space of ``REF_WIDTH`` x ``REF_HEIGHT`` (1080x2400); the UI
scales them to the phone's real size.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import ValidationError, ValidationErrors

log = logging.getLogger(__name__)

REF_WIDTH = 1080
REF_HEIGHT = 2400
APPS_DIR = Path(__file__).resolve().parent / "apps"
LAUNCHER_PACKAGE = "com.android.launcher3"
SYSTEM_PACKAGE = "android"
# Always loaded by load_apps(), whatever the caller asks for.
BUILTIN_APPS = ("launcher", "system")

ELEMENT_KINDS = ("text", "button", "text_field", "image", "app_grid")
SWIPE_DIRECTIONS = ("up", "down", "left", "right")
POPUP_KINDS = ("app", "system")
SHAPES = ("rect", "rounded", "ellipse")
ALIGNS = ("left", "center", "right")
GRID_SOURCES = ("installed", "recent")
# Template variables usable in any displayed text: {name}, {name:arg}, {name|fallback}.
TEMPLATE_VARS = (
    "account", "display_name", "field", "feed_index", "feed_creator", "last_post",
    "posts", "app_label", "followers", "following", "post_views", "post_likes", "post_comments",
    "partner", "message",
)
# Templates that take an argument: {field:NAME} (required), {message:N} (required: the open
# conversation's N-th message) and {partner:N} (optional: chat N's partner, else the open one's).
_ARG_REQUIRED = ("field", "message")
_ARG_OPTIONAL = ("partner",)
COLOR_TEMPLATES = ("{feed_color}",)

_TEMPLATE_RE = re.compile(r"\{([a-z_]+)(?::([A-Za-z0-9_]+))?(?:\|([^{}]*))?\}")
# Used with fullmatch: `$` with match would also take a trailing newline.
_COLOR_RE = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_PACKAGE_RE = re.compile(r"android|[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

Color = tuple[int, int, int, int]


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class LoginAction:
    """Check two text fields against the app's accounts; on failure show ``on_fail``."""

    username_field: str
    password_field: str
    on_fail: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """What a tap, long press, swipe, submit, BACK or popup button does.

    Steps run in this fixed order: set, login (stops everything on failure),
    switch_account, logout, post, clear_fields, feed, clear_history, then exactly one of the navigation
    steps (go, back, home, open_app, close_app), then popup. ``dismiss`` closes the popup
    the action came from (popup buttons always dismiss).
    """

    set: tuple[tuple[str, str], ...] = ()
    login: LoginAction | None = None
    switch_account: str | None = None
    logout: bool = False
    post: str | None = None  # name of the caption field
    clear_fields: tuple[str, ...] = ()
    feed: int = 0
    clear_history: bool = False  # forget the back stack first (e.g. after logging in)
    replace: bool = False  # ``go`` replaces the current screen instead of stacking on it
    go: str | None = None
    back: bool = False
    home: bool = False
    open_app: str | None = None
    close_app: bool = False
    popup: str | None = None
    dismiss: bool = False


@dataclass(frozen=True, slots=True)
class Element:
    """One thing drawn on a screen, with its box in reference coordinates."""

    kind: str
    x: int
    y: int
    w: int
    h: int
    id: str | None = None
    text: str = ""
    color: str | None = None
    text_color: str | None = None
    font_size: int | None = None
    align: str = "center"
    shape: str = "rect"
    name: str | None = None  # text_field: the field it edits
    placeholder: str = ""
    password: bool = False
    max_length: int = 500
    columns: int = 4  # app_grid
    source: str = "installed"  # app_grid
    on_tap: Action | None = None
    on_long_press: Action | None = None
    on_submit: Action | None = None  # text_field: ENTER while focused

    def contains(self, rx: float, ry: float) -> bool:
        return self.x <= rx < self.x + self.w and self.y <= ry < self.y + self.h


@dataclass(frozen=True, slots=True)
class Screen:
    """One activity state of an app: what is drawn and how it reacts."""

    name: str
    activity: str
    title: str
    background: str
    bar_color: str
    elements: tuple[Element, ...]
    on_swipe: dict[str, Action] = field(default_factory=dict)
    on_back: Action | None = None


@dataclass(frozen=True, slots=True)
class PopupButton:
    text: str
    action: Action


@dataclass(frozen=True, slots=True)
class Popup:
    """An interrupt drawn over the current screen until one of its buttons is tapped."""

    name: str
    kind: str
    title: str
    body: str
    buttons: tuple[PopupButton, ...]
    cancelable: bool = True
    on_enter: dict[str, float] = field(default_factory=dict)  # screen -> probability
    rate: float = 0.0  # probability per input event


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    display_name: str
    password: str
    posts: int = 0
    last_post: str = ""


@dataclass(frozen=True, slots=True)
class StubPackage:
    """A package that exists on the phone without scripted screens (Settings, Play Store)."""

    package: str
    label: str
    launchable: bool = True


@dataclass(frozen=True, slots=True)
class AppSpec:
    """One virtual app as loaded from its JSON file (immutable; state lives in the UI)."""

    package: str
    label: str
    source: str  # file it came from, for messages
    system: bool = False
    activity: str = ".MainActivity"
    launch_screen: str | None = None
    login_screen: str | None = None
    icon_color: str | None = None
    screens: dict[str, Screen] = field(default_factory=dict)
    popups: dict[str, Popup] = field(default_factory=dict)
    accounts: tuple[Account, ...] = ()
    active_account: str | None = None
    feed_creators: tuple[str, ...] = ()
    packages: tuple[StubPackage, ...] = ()

    @property
    def launchable(self) -> bool:
        return self.launch_screen is not None


# --------------------------------------------------------------------------- helpers


def parse_color(value: str) -> Color:
    """``#RRGGBB`` or ``#RRGGBBAA`` to an RGBA tuple (the value is already validated)."""
    r, g, b = int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
    a = int(value[7:9], 16) if len(value) == 9 else 255
    return (r, g, b, a)


def template_refs(text: str) -> list[tuple[str, str | None, str | None]]:
    """The ``(name, arg, fallback)`` of every ``{...}`` template in ``text``."""
    return [(m.group(1), m.group(2), m.group(3)) for m in _TEMPLATE_RE.finditer(text)]


def render_template(text: str, lookup: Any) -> str:
    """Replace every template with ``lookup(name, arg)``; empty results use the fallback."""
    if "{" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        value = lookup(m.group(1), m.group(2))
        return value if value else (m.group(3) or "")

    return _TEMPLATE_RE.sub(sub, text)


class _DupDict(dict):
    """A JSON object that remembers keys given more than once (json keeps only the last)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _DupDict:
    d = _DupDict()
    d.duplicates = []
    for k, v in pairs:
        if k in d:
            d.duplicates.append(k)
        d[k] = v
    return d


def _display_path(path: Path) -> str:
    """Relative to the working directory when inside it (short messages), else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return str(path)
    return str(Path(path).resolve()) if rel.startswith("..") else rel


# --------------------------------------------------------------------------- validator


class _Checker:
    """Walks one raw JSON document, collecting every problem with its JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ValidationError] = []

    def bad(self, path: str, reason: str) -> None:
        where = f"{self.source}: {path}" if path else self.source
        self.problems.append(ValidationError(where, reason))

    # -- generic field access
    def obj(self, value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.bad(path, f"expected an object, got {type(value).__name__}")
            return {}
        for dup in getattr(value, "duplicates", ()):
            self.bad(_join(path, dup), "duplicate key")
        for key in value:
            if key not in allowed:
                self.bad(_join(path, key), f"unknown field (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                self.bad(_join(path, key), "missing required field")
        return value

    def str_(self, d: dict, key: str, path: str, default: str | None = None, *, empty_ok: bool = True) -> str | None:
        if key not in d or d[key] is None and default is None:
            return default
        v = d[key]
        if not isinstance(v, str):
            self.bad(_join(path, key), f"expected a string, got {type(v).__name__}")
            return default
        if not empty_ok and not v:
            self.bad(_join(path, key), "must not be empty")
        return v

    def int_(self, d: dict, key: str, path: str, default: int | None = None, lo: int | None = None,
             hi: int | None = None) -> int | None:
        if key not in d:
            return default
        v = d[key]
        if not isinstance(v, int) or isinstance(v, bool):
            self.bad(_join(path, key), f"expected an integer, got {type(v).__name__}")
            return default
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.bad(_join(path, key), f"{v} out of range [{lo}, {hi}]")
            return default
        return v

    def float_(self, d: dict, key: str, path: str, default: float = 0.0) -> float:
        if key not in d:
            return default
        v = d[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            self.bad(_join(path, key), f"expected a probability between 0 and 1, got {v!r}")
            return default
        return float(v)

    def bool_(self, d: dict, key: str, path: str, default: bool = False) -> bool:
        if key not in d:
            return default
        v = d[key]
        if not isinstance(v, bool):
            self.bad(_join(path, key), f"expected true or false, got {v!r}")
            return default
        return v

    def choice(self, d: dict, key: str, path: str, choices: tuple[str, ...], default: str) -> str:
        v = self.str_(d, key, path, default)
        if v not in choices:
            self.bad(_join(path, key), f"{v!r} is not one of {', '.join(choices)}")
            return default
        return v

    def color(self, d: dict, key: str, path: str, default: str | None, *, templates: bool = False) -> str | None:
        v = self.str_(d, key, path, None)
        if v is None:
            return default
        if _COLOR_RE.fullmatch(v) or (templates and v in COLOR_TEMPLATES):
            return v
        allowed = "#RRGGBB or #RRGGBBAA" + (f" or {', '.join(COLOR_TEMPLATES)}" if templates else "")
        self.bad(_join(path, key), f"bad colour {v!r} (expected {allowed})")
        return default

    def name(self, value: Any, path: str, what: str) -> bool:
        if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
            self.bad(path, f"bad {what} name {value!r} (letters, digits, underscore; starts with a letter)")
            return False
        return True

    def template(self, text: str, path: str, fields: set[str]) -> None:
        for name, arg, _fallback in template_refs(text):
            if name not in TEMPLATE_VARS:
                self.bad(path, f"unknown template variable {{{name}}} (known: {', '.join(TEMPLATE_VARS)})")
            elif name == "field" and arg not in fields:
                self.bad(path, f"unknown text field {arg!r} in {{field:{arg}}}")
            elif name == "message" and (arg is None or not arg.isdigit()):
                self.bad(path, "template {message:N} needs the message's index N")
            elif name == "partner" and arg is not None and not arg.isdigit():
                self.bad(path, f"template {{partner:N}} takes a conversation index, got {arg!r}")
            elif name not in _ARG_REQUIRED + _ARG_OPTIONAL and arg is not None:
                self.bad(path, f"template {{{name}}} takes no argument")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


_ACTION_KEYS = ("set", "login", "switch_account", "logout", "post", "clear_fields", "feed",
                "clear_history", "replace", "go", "back", "home", "open_app", "close_app", "popup", "dismiss")
_NAV_KEYS = ("go", "back", "home", "open_app", "close_app")
_COMMON_ELEMENT_KEYS = ("kind", "id", "x", "y", "w", "h")
_ELEMENT_KEYS = {
    "text": ("text", "color", "font_size", "align"),
    "button": ("text", "color", "text_color", "font_size", "shape", "on_tap", "on_long_press"),
    "text_field": ("name", "placeholder", "password", "max_length", "font_size", "color",
                   "text_color", "on_submit", "on_tap"),
    "image": ("text", "color", "text_color", "font_size", "shape", "on_tap", "on_long_press"),
    "app_grid": ("columns", "source", "text_color"),
}


class _AppParser:
    """Two passes over one app document: collect names, then build and cross-check."""

    def __init__(self, raw: Any, source: str) -> None:
        self.c = _Checker(source)
        self.raw = raw
        self.source = source
        self.screen_names: set[str] = set()
        self.popup_names: set[str] = set()
        self.field_names: set[str] = set()
        self.usernames: set[str] = set()
        # (path, screen) references to check once all screens are known
        self.screen_refs: list[tuple[str, str]] = []
        self.popup_refs: list[tuple[str, str]] = []
        self.field_refs: list[tuple[str, str]] = []
        self.account_refs: list[tuple[str, str]] = []
        self.texts: list[tuple[str, str]] = []

    def parse(self) -> AppSpec | None:
        c = self.c
        top = c.obj(self.raw, "", ("package", "label", "system", "activity", "launch_screen",
                                   "login_screen", "icon_color", "screens", "popups", "accounts",
                                   "active_account", "feed_creators", "packages"),
                    ("package", "label"))
        package = c.str_(top, "package", "", "")
        if package and not _PACKAGE_RE.fullmatch(package):
            c.bad("package", f"bad package name {package!r}")
        label = c.str_(top, "label", "", "", empty_ok=False) or ""
        system = c.bool_(top, "system", "")
        activity = c.str_(top, "activity", "", ".MainActivity", empty_ok=False) or ".MainActivity"
        icon_color = c.color(top, "icon_color", "", None)

        raw_screens = top.get("screens", {})
        raw_screens = c.obj(raw_screens, "screens", tuple(raw_screens) if isinstance(raw_screens, dict) else ())
        # Pass 1: names, so references can point forwards.
        for name, raw_screen in raw_screens.items():
            if c.name(name, _join("screens", name), "screen"):
                self.screen_names.add(name)
            if isinstance(raw_screen, dict) and isinstance(raw_screen.get("elements"), list):
                for el in raw_screen["elements"]:
                    if isinstance(el, dict) and el.get("kind") == "text_field" and isinstance(el.get("name"), str):
                        self.field_names.add(el["name"])
        raw_popups = top.get("popups", {})
        raw_popups = c.obj(raw_popups, "popups", tuple(raw_popups) if isinstance(raw_popups, dict) else ())
        for name in raw_popups:
            if c.name(name, _join("popups", name), "popup"):
                self.popup_names.add(name)

        accounts = self._accounts(top.get("accounts", []))
        active = c.str_(top, "active_account", "", None)
        if active is not None:
            self.account_refs.append(("active_account", active))
        creators = top.get("feed_creators", [])
        if not isinstance(creators, list) or not all(isinstance(x, str) and x for x in creators):
            c.bad("feed_creators", "expected a list of non-empty strings")
            creators = []

        screens = {name: self._screen(name, raw, activity) for name, raw in raw_screens.items()
                   if name in self.screen_names}
        popups = {name: self._popup(name, raw) for name, raw in raw_popups.items() if name in self.popup_names}

        launch = c.str_(top, "launch_screen", "", None)
        login = c.str_(top, "login_screen", "", None)
        if screens and launch is None:
            c.bad("launch_screen", "missing required field (the app has screens)")
        if launch is not None:
            self.screen_refs.append(("launch_screen", launch))
        if login is not None:
            self.screen_refs.append(("login_screen", login))
        stubs = self._stubs(top.get("packages", []))

        self._check_refs()
        if c.problems:
            return None
        return AppSpec(
            package=package or "", label=label, source=self.source, system=system, activity=activity,
            launch_screen=launch, login_screen=login, icon_color=icon_color, screens=screens,
            popups=popups, accounts=tuple(accounts), active_account=active,
            feed_creators=tuple(creators), packages=tuple(stubs),
        )

    def _check_refs(self) -> None:
        c = self.c
        for path, ref in self.screen_refs:
            if ref not in self.screen_names:
                c.bad(path, f"unknown screen {ref!r}")
        for path, ref in self.popup_refs:
            if ref not in self.popup_names:
                c.bad(path, f"unknown popup {ref!r}")
        for path, ref in self.field_refs:
            if ref not in self.field_names:
                c.bad(path, f"unknown text field {ref!r}")
        for path, ref in self.account_refs:
            if ref not in self.usernames:
                c.bad(path, f"unknown account {ref!r}")
        for path, text in self.texts:
            c.template(text, path, self.field_names)

    def _accounts(self, raw: Any) -> list[Account]:
        c = self.c
        if not isinstance(raw, list):
            c.bad("accounts", "expected a list")
            return []
        out = []
        for i, item in enumerate(raw):
            path = _join("accounts", i)
            d = c.obj(item, path, ("username", "display_name", "password", "posts", "last_post"),
                      ("username", "password"))
            username = c.str_(d, "username", path, "", empty_ok=False) or ""
            if username in self.usernames:
                c.bad(_join(path, "username"), f"duplicate account {username!r}")
            self.usernames.add(username)
            out.append(Account(
                username=username,
                display_name=c.str_(d, "display_name", path, username) or username,
                password=c.str_(d, "password", path, "") or "",
                posts=c.int_(d, "posts", path, 0, 0, 10**9) or 0,
                last_post=c.str_(d, "last_post", path, "") or "",
            ))
        return out

    def _stubs(self, raw: Any) -> list[StubPackage]:
        c = self.c
        if not isinstance(raw, list):
            c.bad("packages", "expected a list")
            return []
        out = []
        for i, item in enumerate(raw):
            path = _join("packages", i)
            d = c.obj(item, path, ("package", "label", "launchable"), ("package", "label"))
            pkg = c.str_(d, "package", path, "") or ""
            if pkg and not _PACKAGE_RE.fullmatch(pkg):
                c.bad(_join(path, "package"), f"bad package name {pkg!r}")
            out.append(StubPackage(pkg, c.str_(d, "label", path, pkg) or pkg, c.bool_(d, "launchable", path, True)))
        return out

    def _screen(self, name: str, raw: Any, default_activity: str) -> Screen:
        c = self.c
        path = _join("screens", name)
        d = c.obj(raw, path, ("activity", "title", "background", "bar_color", "elements", "on_swipe", "on_back"),
                  ("elements",))
        title = c.str_(d, "title", path, "") or ""
        self.texts.append((_join(path, "title"), title))
        elements_raw = d.get("elements", [])
        if not isinstance(elements_raw, list):
            c.bad(_join(path, "elements"), "expected a list")
            elements_raw = []
        elements = []
        ids: set[str] = set()
        fields_here: set[str] = set()
        for i, raw_el in enumerate(elements_raw):
            el = self._element(raw_el, _join(_join(path, "elements"), i))
            if el is None:
                continue
            if el.id is not None:
                if el.id in ids:
                    c.bad(_join(_join(path, "elements"), i) + ".id", f"duplicate element id {el.id!r}")
                ids.add(el.id)
            if el.kind == "text_field" and el.name:
                if el.name in fields_here:
                    c.bad(_join(_join(path, "elements"), i) + ".name",
                          f"duplicate text field {el.name!r} on this screen")
                fields_here.add(el.name)
            elements.append(el)
        swipes_raw = d.get("on_swipe", {})
        swipes = {}
        sw = c.obj(swipes_raw, _join(path, "on_swipe"), SWIPE_DIRECTIONS)
        for direction, raw_action in sw.items():
            if direction in SWIPE_DIRECTIONS:
                swipes[direction] = self._action(raw_action, _join(_join(path, "on_swipe"), direction))
        on_back = self._action(d["on_back"], _join(path, "on_back")) if "on_back" in d else None
        return Screen(
            name=name,
            activity=c.str_(d, "activity", path, default_activity, empty_ok=False) or default_activity,
            title=title,
            background=c.color(d, "background", path, "#FFFFFF") or "#FFFFFF",
            bar_color=c.color(d, "bar_color", path, "#202124") or "#202124",
            elements=tuple(elements), on_swipe=swipes, on_back=on_back,
        )

    def _element(self, raw: Any, path: str) -> Element | None:
        c = self.c
        if not isinstance(raw, dict):
            c.bad(path, f"expected an object, got {type(raw).__name__}")
            return None
        kind = raw.get("kind")
        if kind not in ELEMENT_KINDS:
            c.bad(_join(path, "kind"), f"{kind!r} is not one of {', '.join(ELEMENT_KINDS)}"
                  if "kind" in raw else "missing required field")
            return None
        required = ["x", "y", "w", "h"]
        if kind in ("text", "button"):
            required.append("text")
        if kind == "text_field":
            required.append("name")
        d = c.obj(raw, path, _COMMON_ELEMENT_KEYS + _ELEMENT_KEYS[kind], tuple(required))
        x = c.int_(d, "x", path, 0)
        y = c.int_(d, "y", path, 0)
        w = c.int_(d, "w", path, 1)
        h = c.int_(d, "h", path, 1)
        if w <= 0 or h <= 0:
            c.bad(path, f"size {w}x{h} must be positive")
        elif x < 0 or y < 0 or x + w > REF_WIDTH or y + h > REF_HEIGHT:
            c.bad(path, f"box x={x} y={y} w={w} h={h} lies outside the {REF_WIDTH}x{REF_HEIGHT} screen")
        el_id = c.str_(d, "id", path, None)
        if el_id is not None:
            c.name(el_id, _join(path, "id"), "element")
        text = c.str_(d, "text", path, "") or ""
        self.texts.append((_join(path, "text"), text))
        placeholder = c.str_(d, "placeholder", path, "") or ""
        self.texts.append((_join(path, "placeholder"), placeholder))
        name = c.str_(d, "name", path, None)
        if name is not None:
            c.name(name, _join(path, "name"), "field")
        actions = {}
        for key in ("on_tap", "on_long_press", "on_submit"):
            if key in d:
                actions[key] = self._action(d[key], _join(path, key))
        return Element(
            kind=kind, x=x, y=y, w=w, h=h, id=el_id, text=text,
            color=c.color(d, "color", path, None, templates=True),
            text_color=c.color(d, "text_color", path, None),
            font_size=c.int_(d, "font_size", path, None, 16, 200),
            align=c.choice(d, "align", path, ALIGNS, "center"),
            shape=c.choice(d, "shape", path, SHAPES, "rounded" if kind == "button" else "rect"),
            name=name, placeholder=placeholder, password=c.bool_(d, "password", path),
            max_length=c.int_(d, "max_length", path, 500, 1, 10000) or 500,
            columns=c.int_(d, "columns", path, 4, 1, 8) or 4,
            source=c.choice(d, "source", path, GRID_SOURCES, "installed"),
            **actions,
        )

    def _action(self, raw: Any, path: str) -> Action:
        c = self.c
        d = c.obj(raw, path, _ACTION_KEYS)
        if isinstance(raw, dict) and not raw:
            c.bad(path, "empty action (give at least one of: " + ", ".join(_ACTION_KEYS) + ")")
        navs = [k for k in _NAV_KEYS if k in d and d[k] not in (False, None)]
        if len(navs) > 1:
            c.bad(path, f"at most one of {', '.join(navs)} per action")
        sets: list[tuple[str, str]] = []
        if "set" in d:
            s = c.obj(d["set"], _join(path, "set"), tuple(d["set"]) if isinstance(d["set"], dict) else ())
            for k, v in s.items():
                # ``set`` may introduce a value no text field edits (a picked video, a tab).
                if c.name(k, _join(_join(path, "set"), k), "field"):
                    self.field_names.add(k)
                if not isinstance(v, str):
                    c.bad(_join(_join(path, "set"), k), "expected a string value")
                else:
                    sets.append((k, v))
        login = None
        if "login" in d:
            lp = _join(path, "login")
            ld = c.obj(d["login"], lp, ("username_field", "password_field", "on_fail"),
                       ("username_field", "password_field"))
            uf = c.str_(ld, "username_field", lp, "") or ""
            pf = c.str_(ld, "password_field", lp, "") or ""
            of = c.str_(ld, "on_fail", lp, None)
            self.field_refs += [(_join(lp, "username_field"), uf), (_join(lp, "password_field"), pf)]
            if of is not None:
                self.popup_refs.append((_join(lp, "on_fail"), of))
            login = LoginAction(uf, pf, of)
        switch = c.str_(d, "switch_account", path, None)
        if switch is not None:
            self.account_refs.append((_join(path, "switch_account"), switch))
        post = c.str_(d, "post", path, None)
        if post is not None:
            self.field_refs.append((_join(path, "post"), post))
        clear: list[str] = []
        if "clear_fields" in d:
            v = d["clear_fields"]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                c.bad(_join(path, "clear_fields"), "expected a list of field names")
            else:
                clear = v
                self.field_refs += [(_join(path, "clear_fields") + f"[{i}]", x) for i, x in enumerate(v)]
        go = c.str_(d, "go", path, None)
        if go is not None:
            self.screen_refs.append((_join(path, "go"), go))
        popup = c.str_(d, "popup", path, None)
        if popup is not None:
            self.popup_refs.append((_join(path, "popup"), popup))
        open_app = c.str_(d, "open_app", path, None)
        if open_app is not None and not _PACKAGE_RE.fullmatch(open_app):
            c.bad(_join(path, "open_app"), f"bad package name {open_app!r}")
        return Action(
            set=tuple(sets), login=login, switch_account=switch,
            logout=c.bool_(d, "logout", path), post=post, clear_fields=tuple(clear),
            feed=c.int_(d, "feed", path, 0, -1000, 1000) or 0,
            clear_history=c.bool_(d, "clear_history", path), replace=c.bool_(d, "replace", path), go=go,
            back=c.bool_(d, "back", path), home=c.bool_(d, "home", path), open_app=open_app,
            close_app=c.bool_(d, "close_app", path), popup=popup, dismiss=c.bool_(d, "dismiss", path),
        )

    def _popup(self, name: str, raw: Any) -> Popup:
        c = self.c
        path = _join("popups", name)
        d = c.obj(raw, path, ("kind", "title", "body", "buttons", "cancelable", "on_enter", "rate"),
                  ("kind", "title", "buttons"))
        title = c.str_(d, "title", path, "", empty_ok=False) or ""
        body = c.str_(d, "body", path, "") or ""
        self.texts += [(_join(path, "title"), title), (_join(path, "body"), body)]
        buttons = []
        raw_buttons = d.get("buttons", [])
        if not isinstance(raw_buttons, list) or not 1 <= len(raw_buttons) <= 3:
            c.bad(_join(path, "buttons"), "expected a list of 1 to 3 buttons")
            raw_buttons = raw_buttons[:3] if isinstance(raw_buttons, list) else []
        for i, rb in enumerate(raw_buttons):
            bp = _join(_join(path, "buttons"), i)
            bd = c.obj(rb, bp, ("text", "action"), ("text",))
            text = c.str_(bd, "text", bp, "", empty_ok=False) or ""
            self.texts.append((_join(bp, "text"), text))
            action = self._action(bd["action"], _join(bp, "action")) if "action" in bd else Action(dismiss=True)
            buttons.append(PopupButton(text, action))
        on_enter = {}
        if "on_enter" in d:
            ep = _join(path, "on_enter")
            ed = c.obj(d["on_enter"], ep, tuple(d["on_enter"]) if isinstance(d["on_enter"], dict) else ())
            for screen, p in ed.items():
                self.screen_refs.append((_join(ep, screen), screen))
                on_enter[screen] = c.float_(ed, screen, ep)
        return Popup(
            name=name, kind=c.choice(d, "kind", path, POPUP_KINDS, "app"), title=title, body=body,
            buttons=tuple(buttons), cancelable=c.bool_(d, "cancelable", path, True),
            on_enter=on_enter, rate=c.float_(d, "rate", path),
        )


# --------------------------------------------------------------------------- loading


def parse_app(raw: Any, source: str) -> AppSpec:
    """Validate an already-decoded app document; raise ValidationErrors listing every problem."""
    parser = _AppParser(raw, source)
    spec = parser.parse()
    if spec is None:
        raise ValidationErrors(parser.c.problems)
    return spec


def _read_json(path: Path) -> Any:
    source = _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationErrors([ValidationError(source, f"cannot read: {exc.strerror or exc}")]) from exc
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as exc:
        raise ValidationErrors([ValidationError(f"{source}:{exc.lineno}:{exc.colno}", f"bad JSON: {exc.msg}")]) from exc


def load_app(path: str | os.PathLike[str]) -> AppSpec:
    """Load and validate one app file; raise ValidationErrors listing every problem at once."""
    p = Path(path)
    spec = parse_app(_read_json(p), _display_path(p))
    log.debug("app loaded package=%s screens=%d popups=%d source=%s",
              spec.package, len(spec.screens), len(spec.popups), spec.source)
    return spec


def resolve_app_path(name: str) -> Path:
    """A bundled app name (``demo``) or a path to a ``.json`` file."""
    if name.endswith(".json") or os.sep in name or "/" in name:
        return Path(name)
    return APPS_DIR / f"{name}.json"


def load_apps(names: list[str] | tuple[str, ...] = ()) -> list[AppSpec]:
    """Load the launcher, the system popups and the named apps; check them against each other.

    Every problem in every file is collected before raising one ValidationErrors.
    """
    problems: list[ValidationError] = []
    specs: list[AppSpec] = []
    seen_paths: set[Path] = set()
    for name in (*BUILTIN_APPS, *names):
        path = resolve_app_path(name).resolve()
        if path in seen_paths:
            continue
        seen_paths.add(path)
        try:
            specs.append(load_app(path))
        except ValidationErrors as exc:
            problems.extend(exc.problems)
    packages: dict[str, str] = {}
    popups: dict[str, str] = {}
    for spec in specs:
        for pkg in (spec.package, *(s.package for s in spec.packages)):
            if pkg in packages:
                problems.append(ValidationError(spec.source, f"package {pkg!r} already defined in {packages[pkg]}"))
            packages[pkg] = spec.source
        for popup in spec.popups:
            if popup in popups:
                problems.append(ValidationError(f"{spec.source}: popups.{popup}",
                                                f"popup name already used in {popups[popup]}"))
            popups[popup] = spec.source
    if not any(s.package == LAUNCHER_PACKAGE for s in specs) and not problems:
        problems.append(ValidationError(str(APPS_DIR), f"no app defines the launcher {LAUNCHER_PACKAGE}"))
    if problems:
        raise ValidationErrors(problems)
    # Launcher, then the caller's apps, then system: the launcher grid shows apps in this order.
    return sorted(specs, key=lambda s: (s.package != LAUNCHER_PACKAGE, s.package == SYSTEM_PACKAGE))


def blank_app(package: str, label: str, *, system: bool = False) -> AppSpec:
    """An app with one screen showing its label: what ``pm install`` of an unknown APK gives."""
    raw = {
        "package": package, "label": label, "system": system, "activity": ".MainActivity",
        "launch_screen": "main",
        "screens": {"main": {"title": label, "background": "#FFFFFF", "elements": [
            {"kind": "text", "x": 60, "y": 1000, "w": 960, "h": 200, "text": label, "font_size": 96,
             "color": "#202124"},
        ]}},
    }
    return parse_app(raw, f"<installed {package}>")
