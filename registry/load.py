"""Loading, validating, versioning and saving the screen registry on disk.

Owns the registry's files: which files make a registry, what makes one valid, its version
(a content hash) and how an app's file is replaced. Two forms load:

- a folder ``D`` with one ``D/<app>.json`` per app (the file is an ``App``; the app key is
  the file name) and ``D/global.json`` (interrupts only);
- spec 3.2's single file ``{"apps": {"tiktok": {...}, "global": {...}}}``.

Reference files (crops, screenshots) are paths relative to the folder holding the JSON,
conventionally ``D/<app>/<screen>.<region>.png`` and ``D/<app>/<screen>.png``.

``load_registry`` collects every problem before raising one ``ValidationErrors``; each
problem's ``where`` is ``<file>:<line>: <JSON path>`` (``<file>:<line>:<column>`` for a
syntax error). ``DEMO_REGISTRY`` is the one place that names the demo registry's folder.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import typing
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import msgspec
import numpy as np

from protocol.errors import ValidationError, ValidationErrors, split_msgspec_error
from protocol.files import confined, is_temp_name, remove_stale_temps, write_atomic
from registry.model import GLOBAL_APP, HEALTH_TAGS, App, Registry, RegistryFile, Screen

log = logging.getLogger(__name__)

DEMO_REGISTRY = Path(__file__).resolve().parent / "apps"

_APP_KEY = re.compile(r"[a-z0-9_]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The last component of a JSON path: `.name`, `[3]` or `["odd key"]`.
_LAST_COMPONENT = re.compile(r'(\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])$')
_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SCALAR = re.compile(r"[^,\]}\s]+")


# Marks a value that failed to decode (its problem is recorded); None is a valid value.
_BAD: Any = object()


def _is_struct(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, msgspec.Struct)


def key_path(path: str, key: str) -> str:
    """JSON path of ``key`` inside the object at ``path``: ``$.states.login`` or ``$.states["a b"]``."""
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"


# --- JSON with lines ------------------------------------------------------------------------


class _JsonIndex:
    """The line of every JSON path's value in one valid JSON text, and every duplicate key
    (which ``json.loads`` and msgspec would both silently collapse to the last one)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.lines: dict[str, int] = {}
        self.duplicates: list[tuple[str, str, int, int]] = []  # object path, key, line, first line
        self._value(_WS.match(text, 0).end(), "$")

    def line_of(self, pos: int) -> int:
        return bisect.bisect_right(self._line_starts, pos)

    def line(self, path: str) -> int | None:
        """Line of ``path``, or of its closest enclosing value that exists in the text."""
        while True:
            if path in self.lines:
                return self.lines[path]
            m = _LAST_COMPONENT.search(path)
            if not m:
                return None
            path = path[: m.start()]

    def _skip(self, pos: int) -> int:
        return _WS.match(self.text, pos).end()

    def _value(self, pos: int, path: str) -> int:
        self.lines.setdefault(path, self.line_of(pos))  # a duplicate key's first value counts
        text = self.text
        if text[pos] == "{":
            seen: dict[str, int] = {}
            pos = self._skip(pos + 1)
            while text[pos] != "}":
                m = _STRING.match(text, pos)
                key = json.loads(m.group())
                line = self.line_of(pos)
                if key in seen:
                    self.duplicates.append((path, key, line, seen[key]))
                else:
                    seen[key] = line
                pos = self._skip(m.end())  # at ':'
                pos = self._value(self._skip(pos + 1), key_path(path, key))
                pos = self._skip(pos)
                if text[pos] == ",":
                    pos = self._skip(pos + 1)
            return pos + 1
        if text[pos] == "[":
            index = 0
            pos = self._skip(pos + 1)
            while text[pos] != "]":
                pos = self._skip(self._value(pos, f"{path}[{index}]"))
                index += 1
                if text[pos] == ",":
                    pos = self._skip(pos + 1)
            return pos + 1
        if text[pos] == '"':
            return _STRING.match(text, pos).end()
        return _SCALAR.match(text, pos).end()


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A duplicate key is reported; checking the first value (whose lines the index keeps)
    # reports its problems too, where msgspec's last-wins would hide them.
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


# Registry and sequence files nest a handful of levels (a sequence's if_screen two per level);
# the bound keeps json.loads, the line index and the checkers, which recurse per level, far
# from the interpreter's recursion limit.
MAX_JSON_DEPTH = 64
# Python's int() (so json.loads) refuses longer integer literals with a bare ValueError.
_MAX_INT_DIGITS = 4300
# Tokens outside strings: brackets, and the scalars json.loads may refuse to convert.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(?P<open>[\[{])|(?P<close>[\]}])'
                    r"|-?Infinity|NaN|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", re.S)
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotJson(ValueError):
    """A literal json.loads reads but our files may not hold: NaN, Infinity, a number too
    large for a float or too long for int()."""

    def __init__(self, literal: str, reason: str) -> None:
        self.literal = literal
        super().__init__(reason)


def _reject_constant(name: str) -> Any:
    raise _NotJson(name, f"{name} is not a JSON number")


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > _MAX_INT_DIGITS:
        raise _NotJson(literal, f"an integer of more than {_MAX_INT_DIGITS} digits")
    return int(literal)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # 1e400: an infinite timeout or sleep would never end
        raise _NotJson(literal, f"{literal[:20]} is too large for a number")
    return value


def _first_token(text: str, literal: str) -> int:
    """Offset of the first token outside strings that is ``literal``."""
    return next((m.start() for m in _TOKEN.finditer(text) if m.group() == literal), 0)


def _too_deep(text: str) -> int | None:
    """Offset of the first bracket opening level ``MAX_JSON_DEPTH + 1``, if any."""
    depth = 0
    for m in _TOKEN.finditer(text):
        if m["open"]:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return m.start()
        elif m["close"]:
            depth -= 1
    return None


def _line_col(text: str, offset: int) -> str:
    """``line:column`` (both from 1) of ``offset``, as json's own errors count them."""
    line = text.count("\n", 0, offset) + 1
    return f"{line}:{offset - text.rfind(chr(10), 0, offset)}"


def value_problems(value: Any, path: str = "$", depth: int = 0) -> list[tuple[str, str]]:
    """(JSON path, reason) for what no JSON file of ours may hold even when it parsed: nesting
    deeper than ``MAX_JSON_DEPTH`` and strings (keys too) with a lone surrogate such as
    ``"\\ud800"``, which is not Unicode text (msgspec, UTF-8 and SQLite all refuse it later).
    Also for an already parsed object (an API request's sequence)."""
    if isinstance(value, str):
        return [(path, _surrogate_reason(value))] if _SURROGATE.search(value) else []
    if not isinstance(value, (dict, list)):
        return []
    if depth >= MAX_JSON_DEPTH:
        return [(path, f"nested deeper than {MAX_JSON_DEPTH} levels")]
    problems: list[tuple[str, str]] = []
    items = (value.items() if isinstance(value, dict)
             else ((None, item) for item in value))
    for i, (key, item) in enumerate(items):
        if key is None:
            problems += value_problems(item, f"{path}[{i}]", depth + 1)
            continue
        if not isinstance(key, str):
            problems.append((path, f"key {key!r} is not a string"))
            continue
        item_path = key_path(path, key)
        if _SURROGATE.search(key):
            problems.append((item_path, "key: " + _surrogate_reason(key)))
        problems += value_problems(item, item_path, depth + 1)
    return problems


def _surrogate_reason(text: str) -> str:
    m = _SURROGATE.search(text)
    assert m is not None
    return (f"lone surrogate \\u{ord(m.group()):04x} at character {m.start()}: not Unicode "
            "text (write the character itself, or a valid \\u pair)")


def parse_json(text: str, shown: str) -> tuple[Any, _JsonIndex]:
    """``text`` (a file named ``shown`` in messages) as JSON, with its line index.

    Raises ``ValidationErrors`` whose every problem has a position: ``shown:line:column``
    for a syntax error, a NaN/Infinity, an integer too long for Python, or nesting deeper
    than ``MAX_JSON_DEPTH``; ``shown:line: $.path`` for a string that is not Unicode text.
    Duplicate keys are the caller's to report (``index.duplicates``): they do not stop it.
    """
    def fail(offset: int, reason: str) -> ValidationErrors:
        return ValidationErrors([ValidationError(f"{shown}:{_line_col(text, offset)}",
                                                 f"invalid JSON: {reason}")])

    deep = _too_deep(text)
    if deep is not None:
        raise fail(deep, f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int,
                           parse_float=_parse_float, object_pairs_hook=_first_wins)
    except json.JSONDecodeError as exc:
        raise ValidationErrors([ValidationError(f"{shown}:{exc.lineno}:{exc.colno}",
                                                f"invalid JSON: {exc.msg}")]) from None
    except _NotJson as exc:
        raise fail(_first_token(text, exc.literal), str(exc)) from None
    index = _JsonIndex(text)
    problems = value_problems(value)
    if problems:
        raise ValidationErrors([ValidationError(f"{shown}:{index.line(path)}: {path}", reason)
                                for path, reason in problems])
    return value, index


# --- loading --------------------------------------------------------------------------------


@dataclass
class _Source:
    """One JSON file being loaded: its name for messages and its line index."""

    shown: str
    index: _JsonIndex | None = None

    def where(self, path: str) -> str:
        line = self.index.line(path) if self.index else None
        return f"{self.shown}:{line}: {path}" if line else f"{self.shown}: {path}"


@dataclass
class _Reference:
    """One use of a reference file: who names it and the image size it must have."""

    rel: str
    where: str
    size: tuple[int, int] | None  # (w, h) expected; None when the box itself is broken
    what: str  # "crop" | "screenshot"


@dataclass
class _Loader:
    """One load of a registry, from disk plus optional in-memory overrides (``save_app``
    validates its candidate this way before it touches a file)."""

    path: Path
    overrides: dict[str, bytes] = field(default_factory=dict)
    problems: list[ValidationError] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes, hashed

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(ValidationError(where, reason))

    def sorted_problems(self, shown_files: list[str]) -> list[ValidationError]:
        """Problems in file order, then line order (checks run in phases, readers read files)."""
        def key(problem: ValidationError) -> tuple[int, int]:
            for order, shown in enumerate(shown_files):
                if problem.where.startswith(shown):
                    m = re.match(r":(\d+)", problem.where[len(shown):])
                    return order, int(m.group(1)) if m else 0
            return len(shown_files), 0
        return sorted(self.problems, key=key)

    # --- files ---
    def locate(self) -> tuple[Path, list[str], bool]:
        """(root folder, JSON files relative to it, single-file form?)."""
        if self.path.is_file():
            return self.path.parent, [self.path.name], True
        if self.path.is_dir():
            names = {e.name for e in os.scandir(self.path)
                     if e.name.endswith(".json") and not e.name.startswith(".") and e.is_file()}
            names |= {rel for rel in self.overrides if rel.endswith(".json") and "/" not in rel}
            return self.path, sorted(names), False
        raise ValidationErrors([ValidationError(str(self.path), "no such registry folder or file")])

    def read(self, root: Path, rel: str) -> bytes:
        if rel in self.overrides:
            return self.overrides[rel]
        return (root / rel).read_bytes()

    # --- JSON ---
    def parse(self, root: Path, rel: str, source: _Source) -> Any:
        try:
            raw = self.read(root, rel)
        except OSError as exc:
            self.problem(source.shown, f"cannot read: {exc.strerror or exc}")
            return None
        self.files[rel] = raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problem(source.shown, f"not UTF-8 text (byte {exc.start})")
            return None
        try:
            value, source.index = parse_json(text, source.shown)
        except ValidationErrors as exc:
            self.problems += exc.problems
            return None
        for path, key, line, first in source.index.duplicates:
            self.problem(f"{source.shown}:{line}: {key_path(path, key)}",
                         f"duplicate key {key!r} (first at line {first}): JSON readers silently "
                         "keep just one of them; rename or remove one")
        return value

    def convert(self, value: Any, type_: Any, source: _Source, path: str) -> Any:
        """msgspec's type check of one value, its error path made absolute; _BAD on error."""
        try:
            return msgspec.convert(value, type_)
        except msgspec.ValidationError as exc:
            where, message = split_msgspec_error(str(exc))
            path = path + where[1:]
            self.problem(source.where(path), message)
            return _BAD

    def decode(self, value: Any, type_: type, source: _Source, path: str) -> Any:
        """A Struct decoded field by field, and lists/dicts of Structs item by item, so one bad
        field does not hide the others' problems (msgspec stops at the first). A bad value in
        a dict is left out (its siblings are still checked for meaning); a bad list item or a
        bad field makes this whole Struct _BAD (list indices in later messages must stay true)."""
        if not isinstance(value, dict):
            return self.convert(value, type_, source, path)  # reports the type mismatch
        fields = _struct_fields(type_)
        kwargs: dict[str, Any] = {}
        ok = True
        for key, item in value.items():
            item_path = key_path(path, key)
            info = fields.get(key)
            if info is None:
                self.problem(source.where(item_path), f"unknown field {key!r}")
                ok = False
                continue
            origin, args = typing.get_origin(info.type), typing.get_args(info.type)
            if origin is list and _is_struct(args[0]) and isinstance(item, list):
                decoded = [self.decode(x, args[0], source, f"{item_path}[{i}]")
                           for i, x in enumerate(item)]
                kwargs[info.name] = decoded
                ok &= all(x is not _BAD for x in decoded)
            elif origin is dict and _is_struct(args[1]) and isinstance(item, dict):
                decoded = {k: self.decode(x, args[1], source, key_path(item_path, k))
                           for k, x in item.items()}
                kwargs[info.name] = {k: x for k, x in decoded.items() if x is not _BAD}
            else:
                kwargs[info.name] = self.convert(item, info.type, source, item_path)
                ok &= kwargs[info.name] is not _BAD
        for info in fields.values():
            if info.required and info.encode_name not in value:
                self.problem(source.where(path), f"missing required field {info.encode_name!r}")
                ok = False
        return type_(**kwargs) if ok else _BAD

    # --- meaning ---
    def check_app(self, key: str, app: App, source: _Source, path: str, state_keys: set[str],
                  references: list[_Reference]) -> None:
        width, height = app.screen_size
        if width <= 0 or height <= 0:
            self.problem(source.where(key_path(path, "screen_size")),
                         f"screen_size must be positive, got {width}x{height}")
        if key == GLOBAL_APP:
            if app.states:
                self.problem(source.where(key_path(path, "states")),
                             "the global section holds interrupts only; states belong to an app")
            if app.package is not None:
                self.problem(source.where(key_path(path, "package")),
                             "the global section has no package (it applies to every app)")
        for kind, screens in (("states", app.states), ("interrupts", app.interrupts)):
            for screen_key, screen in screens.items():
                screen_path = key_path(key_path(path, kind), screen_key)
                self.check_screen(key, app, screen, source, screen_path, state_keys, references)

    def check_box(self, box: tuple[int, int, int, int], app: App, source: _Source,
                  path: str) -> bool:
        x1, y1, x2, y2 = box
        width, height = app.screen_size
        where = source.where(path)
        if x1 >= x2 or y1 >= y2:
            self.problem(where, f"box {list(box)} is empty: needs x1 < x2 and y1 < y2")
            return False
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            self.problem(where, f"box {list(box)} reaches outside the {width}x{height} screen")
            return False
        return True

    def check_screen(self, app_key: str, app: App, screen: Screen, source: _Source, path: str,
                     state_keys: set[str], references: list[_Reference]) -> None:
        regions_path = key_path(path, "validation_regions")
        first_seen: dict[str, int] = {}
        for i, region in enumerate(screen.validation_regions):
            rpath = f"{regions_path}[{i}]"
            if region.name in first_seen:
                self.problem(source.where(key_path(rpath, "name")),
                             f"duplicate region name {region.name!r} "
                             f"(also validation_regions[{first_seen[region.name]}])")
            else:
                first_seen[region.name] = i
            box_ok = self.check_box(region.coordinates, app, source, key_path(rpath, "coordinates"))
            if region.expected_text is not None and not region.ocr_enabled:
                self.problem(source.where(key_path(rpath, "expected_text")),
                             "expected_text without ocr_enabled: the text would never be read")
            elif region.reference is None:
                if region.ocr_enabled and not region.expected_text:
                    self.problem(source.where(rpath), "ocr_enabled without expected_text or a "
                                 "reference crop: nothing to compare the text with")
                elif not region.ocr_enabled:
                    self.problem(source.where(rpath), "region checks nothing: give it a "
                                 "reference crop, or ocr_enabled with expected_text")
            if region.threshold is not None and not (0.0 <= region.threshold <= 1.0):
                self.problem(source.where(key_path(rpath, "threshold")),
                             f"threshold must be within [0, 1], got {region.threshold}")
            if region.reference is not None:
                x1, y1, x2, y2 = region.coordinates
                references.append(_Reference(region.reference,
                                             source.where(key_path(rpath, "reference")),
                                             (x2 - x1, y2 - y1) if box_ok else None, "crop"))
        for i, read in enumerate(screen.read_regions):
            rpath = f"{key_path(path, 'read_regions')}[{i}]"
            if read.name in first_seen:
                self.problem(source.where(key_path(rpath, "name")),
                             f"duplicate region name {read.name!r} (also a validation or read "
                             "region of this screen)")
            else:
                first_seen[read.name] = i
            self.check_box(read.coordinates, app, source, key_path(rpath, "coordinates"))
        if screen.health is not None and screen.health not in HEALTH_TAGS:
            self.problem(source.where(key_path(path, "health")),
                         f"unknown health tag {screen.health!r} (expected one of "
                         f"{', '.join(HEALTH_TAGS)}, or no health field)")
        actions_path = key_path(path, "actions")
        first_seen = {}
        for i, action in enumerate(screen.actions):
            apath = f"{actions_path}[{i}]"
            if action.name in first_seen:
                self.problem(source.where(key_path(apath, "name")),
                             f"duplicate action name {action.name!r} "
                             f"(also actions[{first_seen[action.name]}])")
            else:
                first_seen[action.name] = i
            self.check_box(action.coordinates, app, source, key_path(apath, "coordinates"))
            if action.linked_state is not None and action.linked_state not in state_keys:
                known = ", ".join(sorted(state_keys)) or "none"
                self.problem(source.where(key_path(apath, "linked_state")),
                             f"linked_state {action.linked_state!r} is not a state of app "
                             f"{app_key!r} (its states: {known})")
        if screen.handler is not None and screen.handler not in first_seen:
            known = ", ".join(first_seen) or "none"
            self.problem(source.where(key_path(path, "handler")),
                         f"handler {screen.handler!r} is not an action of this screen "
                         f"(its actions: {known})")
        if screen.reference_screenshot is not None:
            references.append(_Reference(screen.reference_screenshot,
                                         source.where(key_path(path, "reference_screenshot")),
                                         tuple(app.screen_size), "screenshot"))

    def check_references(self, root: Path, references: list[_Reference]) -> None:
        sizes: dict[str, tuple[int, int] | str] = {}  # rel -> (w, h) or why it is unusable
        for ref in references:
            rel = _relative(ref.rel)
            if rel is None:
                self.problem(ref.where, f"{ref.rel!r} must be a relative path inside the "
                                        "registry folder (no '..', not absolute, no NUL)")
                continue
            if rel not in sizes:
                sizes[rel] = self.read_image(root, rel, ref.what)
            size = sizes[rel]
            if isinstance(size, str):
                self.problem(ref.where, size)
            elif ref.size is not None and size != ref.size:
                expected = "its region's box" if ref.what == "crop" else "the app's screen_size"
                self.problem(ref.where, f"{rel} is {size[0]}x{size[1]} but {expected} is "
                                        f"{ref.size[0]}x{ref.size[1]}")

    def read_image(self, root: Path, rel: str, what: str) -> tuple[int, int] | str:
        try:
            raw = self.read(root, rel)
        except FileNotFoundError:
            return f"{rel}: file not found (in {root})"
        except OSError as exc:
            return f"{rel}: cannot read: {exc.strerror or exc}"
        self.files[rel] = raw
        size = _image_size(raw, full_decode=(what == "crop"))
        return size if size is not None else f"{rel}: not readable as an image"

    # --- the whole registry ---
    def load(self) -> Registry:
        root, json_files, single = self.locate()
        apps: dict[str, App] = {}
        origins: dict[str, tuple[_Source, str]] = {}  # app key -> (file, JSON path of the app)
        references: list[_Reference] = []
        shown_files: list[str] = []
        for rel in json_files:
            source = _Source(str(self.path) if single else str(self.path / rel))
            shown_files.append(source.shown)
            value = self.parse(root, rel, source)
            if value is None:
                continue
            if single:
                registry_file = self.decode(value, RegistryFile, source, "$")
                entries = ([] if registry_file is _BAD else
                           [(key, app, key_path("$.apps", key))
                            for key, app in registry_file.apps.items()])
                raw_apps = value.get("apps") if isinstance(value, dict) else None
            else:
                app = self.decode(value, App, source, "$")
                entries = [] if app is _BAD else [(rel[: -len(".json")], app, "$")]
                raw_apps = {rel[: -len(".json")]: value}
            for key, app, path in entries:
                if not _APP_KEY.fullmatch(key):
                    where = source.where(path) if single else source.shown
                    self.problem(where, f"{key!r} is not a valid app key "
                                        "(lower-case letters, digits and _ only)")
                # States that failed to decode still count as existing for linked_state.
                raw_states = raw_apps.get(key, {}).get("states") if isinstance(raw_apps, dict) else None
                state_keys = set(raw_states) if isinstance(raw_states, dict) else set(app.states)
                self.check_app(key, app, source, path, state_keys, references)
                apps[key] = app
                origins[key] = (source, path)
        by_package: dict[str, str] = {}
        for key, app in apps.items():
            if app.package is None:
                continue
            if app.package in by_package:
                source, path = origins[key]
                self.problem(source.where(key_path(path, "package")),
                             f"package {app.package!r} is also app {by_package[app.package]!r}'s")
            else:
                by_package[app.package] = key
        self.check_references(root, references)
        if not single:
            _clean_temps(root, references)
        if self.problems:
            raise ValidationErrors(self.sorted_problems(shown_files))
        return Registry(apps=apps, root=str(root.resolve()), version=_hash(self.files))


@functools.lru_cache(maxsize=None)
def _struct_fields(type_: type) -> dict[str, msgspec.structs.FieldInfo]:
    """A Struct's fields by their JSON name. Cached: msgspec resolves the (string)
    annotations again at every call, a sixth of a registry load before."""
    return {f.encode_name: f for f in msgspec.structs.fields(type_)}


def _relative(ref: str) -> str | None:
    """``ref`` normalised to a POSIX path relative to the registry folder; None if it escapes
    or cannot name a file (a NUL byte: open() raises ValueError, not OSError)."""
    path = PurePosixPath(ref)
    if not ref or path.is_absolute() or ".." in path.parts or "\\" in ref or "\0" in ref:
        return None
    rel = path.as_posix()
    return None if rel in ("", ".") else rel


# Crops' decoded sizes by content digest: a process loads the same registry again and again
# (each node push, each save and revert checks the whole candidate registry), and decoding
# every crop was most of a load (39 demo crops, ~70 of ~100 ms). Bounded; a size is
# only ever a function of the bytes, so a hit is exactly what decoding would give.
_DECODED_SIZES: OrderedDict[bytes, tuple[int, int] | None] = OrderedDict()
_DECODED_SIZES_MAX = 4096
_DECODED_SIZES_LOCK = threading.Lock()


def _decoded_size(raw: bytes) -> tuple[int, int] | None:
    """(w, h) of ``raw`` decoded in full with OpenCV, as the matcher will; None if it is not
    an image OpenCV decodes."""
    digest = hashlib.blake2b(raw, digest_size=20).digest()
    with _DECODED_SIZES_LOCK:
        if digest in _DECODED_SIZES:
            _DECODED_SIZES.move_to_end(digest)
            return _DECODED_SIZES[digest]
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    size = None if image is None else (image.shape[1], image.shape[0])
    with _DECODED_SIZES_LOCK:
        _DECODED_SIZES[digest] = size
        while len(_DECODED_SIZES) > _DECODED_SIZES_MAX:
            _DECODED_SIZES.popitem(last=False)
    return size


def _image_size(raw: bytes, full_decode: bool) -> tuple[int, int] | None:
    """(w, h) of an image file's bytes, None if unreadable. Crops are small and decoded in
    full (`_decoded_size`); full screenshots (~40 ms each to decode) only have their header
    and checksums verified, so every node start does not pay that."""
    if full_decode:
        return _decoded_size(raw)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as image:
            size = image.size
            image.verify()
        return size
    except Exception:  # Pillow raises many unrelated types for a bad file
        return None


def _hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        name = rel.encode()
        data = files[rel]
        # Lengths first, so no two different file sets hash the same byte stream.
        digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _clean_temps(root: Path, references: list[_Reference]) -> None:
    folders = {root} | {(root / rel).parent for ref in references
                        if (rel := _relative(ref.rel)) is not None}
    for folder in folders:
        remove_stale_temps(folder)


# --- public API -----------------------------------------------------------------------------


def load_registry(path: str | os.PathLike) -> Registry:
    """Load and validate the registry at ``path`` (a folder or a spec 3.2 single file).

    Raises ``ValidationErrors`` listing every problem found, each naming file, line and
    JSON path. ``root`` of the result is the absolute folder, ``version`` its content hash.
    """
    registry = _Loader(Path(path)).load()
    log.debug("registry loaded path=%s apps=%d version=%s", path, len(registry.apps),
              registry.version[:16])
    return registry


def resolve_path(registry: Registry, relative: str) -> Path:
    """The file a registry-relative path (a ``reference`` or ``reference_screenshot``) names;
    ValidationError if it is not inside the registry folder (a symlink out included)."""
    rel = _relative(relative)
    if rel is None or confined(registry.root, Path(registry.root) / rel) is None:
        raise ValidationError(relative, "must be a relative path inside the registry folder")
    return Path(registry.root) / rel


def registry_version(root: str | os.PathLike) -> str:
    """Content hash (sha256 hex) of the registry at ``root``: every JSON file and every file
    they reference, by path relative to the registry folder, so it is the same on every
    machine. Works on an invalid registry too (missing files are left out); a path that is
    neither a folder nor a file raises ``ValidationErrors``."""
    loader = _Loader(Path(root))
    loader.locate()
    try:
        return loader.load().version
    except ValidationErrors:
        return _hash(loader.files)


def encode_app(app: App) -> bytes:
    """An app's JSON file: fields in the model's order, defaults left out, 2-space indent."""
    return msgspec.json.format(msgspec.json.encode(app), indent=2) + b"\n"


def _file_overrides(files: dict[str, bytes]) -> dict[str, bytes]:
    """``files`` by their normalised registry-relative paths; ValidationErrors for a path
    outside the folder, a JSON file or a temp file name."""
    overrides: dict[str, bytes] = {}
    for relative, data in files.items():
        rel = _relative(relative)
        if rel is None or rel.endswith(".json") or any(is_temp_name(p) for p in rel.split("/")):
            raise ValidationErrors([ValidationError(
                relative, "must be a relative path inside the registry folder, "
                          "not a JSON or temp file name")])
        overrides[rel] = bytes(data)
    return overrides


def candidate_registry(root: str | os.PathLike, apps: dict[str, App],
                       files: dict[str, bytes]) -> Registry:
    """The registry at ``root`` as it would be with ``apps`` replaced and ``files`` added,
    validated from memory: nothing is written. ``ValidationErrors`` names every problem."""
    overrides = _file_overrides(files)
    for app_key, app in apps.items():
        overrides[f"{app_key}.json"] = encode_app(app)
    return _Loader(Path(root), overrides).load()


def save_app(root: str | os.PathLike, app_key: str, app: App | bytes,
             files: dict[str, bytes] | None = None) -> str:
    """Write ``files`` (registry-relative path -> bytes, e.g. new reference crops) and then
    ``<root>/<app_key>.json``; returns the registry's new version. ``app`` is an ``App`` or
    its JSON file's exact bytes (a node writes what the coordinator sent byte for byte, so
    both registries hash to the same version).

    The registry as it would be afterwards is validated first, from memory: if it would be
    invalid, ``ValidationErrors`` is raised and no file is touched. Every file is replaced
    atomically (``protocol.files.write_atomic``), so a reader or a crash never sees a
    half-written file. The JSON goes last: a crash in between leaves new reference files
    next to the old JSON, never a JSON naming files that are not there yet.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValidationErrors([ValidationError(str(root), "save_app needs a registry folder")])
    root.mkdir(parents=True, exist_ok=True)  # the first app saved creates the registry
    if not _APP_KEY.fullmatch(app_key):
        raise ValidationErrors([ValidationError(
            str(root / f"{app_key}.json"),
            f"{app_key!r} is not a valid app key (lower-case letters, digits and _ only)")])
    overrides = _file_overrides(files or {})
    app_file = f"{app_key}.json"
    overrides[app_file] = bytes(app) if isinstance(app, (bytes, bytearray)) else encode_app(app)
    candidate = _Loader(root, overrides).load()  # raises before anything is written
    for rel, data in overrides.items():
        if rel != app_file:
            write_atomic(root / rel, data)
    write_atomic(root / app_file, overrides[app_file])
    log.info("registry app saved root=%s app=%s files=%d version=%s", root, app_key,
             len(overrides) - 1, candidate.version[:16])
    return candidate.version
