"""Loading and validating sequence files, and the sequence library.

Owns what makes a sequence valid and where its problems are reported. A sequence is read
from a file (``load_sequence``), from the library folder (``load_library``, names such as
``clipshare/post_clip`` for ``library/clipshare/post_clip.json``) or from an already
parsed object sent to the API (``parse_sequence(data, where="request")``).

Every problem is collected before one ``ValidationErrors`` is raised; each problem's
``where`` is ``<file>:<line>: <JSON path>`` (``<file>:<line>:<column>`` for a JSON syntax
error; ``request: <JSON path>`` for an API object), e.g.
``post_clip.json:14: $.steps[3].action: no action 'feed.go_to_profil' in app 'clipshare'``.

Checks beyond the types of ``sequences.model``: a tap names (x and y) xor a registry action
that exists; screens are registry labels that exist (``clipshare/feed``,
``clipshare/interrupt:rate_us``, ``global/interrupt:low_battery``; a go_to's is a state); a
sleep is ``seconds`` xor ``min_s <= max_s``; timeouts and durations are positive; accounts read
``platform.account_number``; keys are Android key names or codes; texts parse as variable
templates (``sequences.variables``, when present). Reading steps (issue 21): a read_text /
read_number names a registry region (``screen.region``: a read region or validation region
of a state) xor a box; ``into`` is a read variable name; each ``${read.NAME}`` is set by an
earlier read step (file order); a record_metric's metric is an account's one (no ``post``) or
a post's; a record_post's ``caption_step`` is the label of an earlier type step; locales are
those of ``sequences.numbers``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import typing
from pathlib import Path
from typing import Any, Callable

import msgspec

from protocol.errors import FarmError, ValidationError, ValidationErrors, split_msgspec_error
from protocol.messages import MAX_KEY_REPEAT, MAX_SWIPE_POINTS
from registry.load import DEMO_REGISTRY, load_registry
# The registry loader's JSON line index (path -> line, duplicate keys) serves sequence files
# just as well; one implementation of "which line holds $.steps[3].x".
from registry.load import _JsonIndex, key_path, parse_json, value_problems
from registry.model import GLOBAL_APP, Registry
from sequences.model import (ACCOUNT_METRICS, POST_METRICS, STEP_TYPES, IfScreenStep,
                             RetryPolicy, Sequence, Step)
from sequences.numbers import check_locale
from sequences.variables import READ_NAME, read_variables

log = logging.getLogger(__name__)

LIBRARY = Path(__file__).resolve().parent / "library"

# Upper bounds of a sequence's numbers (the lower ones are checked with each field): past them
# a value is a mistake, and past 2^64 it cannot even travel to the node (msgpack).
MAX_PIXEL = 100_000          # as the control API's Coordinate
MAX_DURATION_MS = 600_000
MAX_WAIT_S = 86_400.0        # sleeps and wait_for_screen timeouts: a day
MAX_RETRIES = 20             # per retry tier
MAX_RETRY_DELAY_S = 3_600.0

_ACCOUNT = re.compile(r"[a-z0-9_]+\.[A-Za-z0-9_]+")
_PLATFORM = re.compile(r"[a-z0-9_]+")
_SCREEN = re.compile(r"(?P<app>[a-z0-9_]+)/(?:(?P<interrupt>interrupt:)?(?P<key>[A-Za-z0-9_]+))")
_ACTION = re.compile(r"(?:(?P<app>[a-z0-9_]+)/)?(?P<screen>[A-Za-z0-9_]+)\.(?P<action>[A-Za-z0-9_]+)")
_STEP_CLASSES: dict[str, type] = {cls.__struct_config__.tag: cls for cls in typing.get_args(Step)}
_BAD: Any = object()  # a value that failed to decode (its problem is recorded)


@functools.cache
def _registry_at(path: str) -> Registry:
    return load_registry(path)


def default_registry() -> Registry:
    """The registry sequences are checked against when none is given: $PHONEFARM_REGISTRY or
    the demo registry (loaded once per process)."""
    return _registry_at(os.environ.get("PHONEFARM_REGISTRY") or str(DEMO_REGISTRY))


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a valid variable/spintax template (``offset N: reason``), or None.

    The one place that knows how templates are checked: ``sequences.variables.check_template``
    when it offers one (it may also know variable names), else the syntax of
    ``sequences.spintax``.
    """
    try:
        from sequences.variables import check_template  # type: ignore[attr-defined]
    except ImportError:
        from sequences.spintax import parse as check_template
    try:
        check_template(text)
    except FarmError as exc:
        return _variable_reason(exc)
    return None


def _variable_reason(exc: Exception) -> str:
    offset = getattr(exc, "offset", None)
    reason = getattr(exc, "reason", None) or str(exc)
    return f"offset {offset}: {reason}" if offset is not None else str(reason)


# --- the checker ------------------------------------------------------------------------------


class _Checker:
    """One validation of one sequence: decodes field by field and step by step so that one
    bad field never hides another's problem, then checks meaning against the registry."""

    def __init__(self, shown: str, registry: Registry | None, index: _JsonIndex | None) -> None:
        self.shown = shown
        self.registry = registry
        self.index = index
        self.problems: list[ValidationError] = []
        self.app: str | None = None
        # In file order: read variables set so far, labels of type steps so far.
        self.reads: set[str] = set()
        self.type_labels: set[str] = set()

    def where(self, path: str) -> str:
        line = self.index.line(path) if self.index else None
        return f"{self.shown}:{line}: {path}" if line else f"{self.shown}: {path}"

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(ValidationError(self.where(path), reason))

    def convert(self, value: Any, type_: Any, path: str) -> Any:
        try:
            return msgspec.convert(value, type_)
        except msgspec.ValidationError as exc:
            where, message = split_msgspec_error(str(exc))
            path = path + where[1:]
            self.problem(path, message)
            return _BAD

    # --- types ---
    def sequence(self, data: Any) -> Sequence | None:
        if not isinstance(data, dict):
            self.problem("$", f"expected a JSON object (a sequence), got {type(data).__name__}")
            return None
        fields = {f.encode_name: f for f in msgspec.structs.fields(Sequence)}
        kwargs: dict[str, Any] = {}
        ok = True
        for key, value in data.items():
            path = key_path("$", key)
            info = fields.get(key)
            if info is None:
                self.problem(path, f"unknown field {key!r} (expected one of {', '.join(fields)})")
                ok = False
                continue
            if key == "steps":
                kwargs["steps"] = self.steps(value, path)
                ok &= kwargs["steps"] is not _BAD
            else:
                kwargs[info.name] = self.convert(value, info.type, path)
                ok &= kwargs[info.name] is not _BAD
        for info in fields.values():
            if info.required and info.encode_name not in data:
                self.problem("$", f"missing required field {info.encode_name!r}")
                ok = False
        if isinstance(kwargs.get("app"), str):
            self.app = kwargs["app"]
        self.meaning_top(kwargs)
        if isinstance(kwargs.get("steps"), list) or kwargs.get("steps") is _BAD:
            self.meaning_steps(data.get("steps"), "$.steps")
        return Sequence(**kwargs) if ok else None

    def steps(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            return self.convert(value, list[Step], path)
        decoded = [self.step(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return _BAD if any(s is _BAD for s in decoded) else decoded

    def step(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            self.problem(path, f"expected a step object, got {type(value).__name__}")
            return _BAD
        kind = value.get("type")
        cls = _STEP_CLASSES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            reason = ("missing field 'type'" if "type" not in value
                      else f"unknown step type {kind!r}")
            self.problem(key_path(path, "type") if "type" in value else path,
                         f"{reason} (expected one of {', '.join(STEP_TYPES)})")
            return _BAD
        fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
        kwargs: dict[str, Any] = {}
        ok = True
        for key, item in value.items():
            if key == "type":
                continue
            item_path = key_path(path, key)
            info = fields.get(key)
            if info is None:
                self.problem(item_path, f"unknown field {key!r} for a {kind} step (expected "
                                        f"{', '.join(['type', *fields])})")
                ok = False
            elif cls is IfScreenStep and key in ("then", "otherwise"):
                kwargs[key] = self.steps(item, item_path)
                ok &= kwargs[key] is not _BAD
            else:
                kwargs[info.name] = self.convert(item, info.type, item_path)
                ok &= kwargs[info.name] is not _BAD
        return cls(**kwargs) if ok else _BAD

    # --- meaning ---
    def meaning_top(self, fields: dict[str, Any]) -> None:
        name = fields.get("name")
        if isinstance(name, str) and not name.strip():
            self.problem("$.name", "empty name")
        if isinstance(fields.get("app"), str):
            self.check_app(fields["app"], "$.app", allow_global=False)
        account = fields.get("account")
        if isinstance(account, str):
            self.check_account(account, "$.account", selector=True)
        retry = fields.get("retry")
        if isinstance(retry, RetryPolicy):
            for attr in ("immediate", "short"):
                if getattr(retry, attr) < 0:
                    self.problem(f"$.retry.{attr}", f"must be >= 0, got {getattr(retry, attr)}")
                self.at_most(f"$.retry.{attr}", getattr(retry, attr), MAX_RETRIES)
            for attr in ("immediate_delay_s", "short_delay_s"):
                if getattr(retry, attr) < 0:
                    self.problem(f"$.retry.{attr}", f"must be >= 0, got {getattr(retry, attr)}")
                self.at_most(f"$.retry.{attr}", getattr(retry, attr), MAX_RETRY_DELAY_S)
        steps = fields.get("steps")
        if isinstance(steps, list) and not steps:
            self.problem("$.steps", "a sequence needs at least one step")

    def meaning_steps(self, raw: Any, path: str) -> None:
        """Meaning checks on the raw step dicts (so a step with a type problem in one field is
        still checked in its other fields)."""
        if not isinstance(raw, list):
            return
        for i, step in enumerate(raw):
            if isinstance(step, dict) and isinstance(step.get("type"), str):
                self.meaning_step(step, f"{path}[{i}]")

    def meaning_step(self, s: dict, path: str) -> None:
        kind = s["type"]
        at = functools.partial(key_path, path)

        def number(key: str) -> float | None:
            v = s.get(key)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        if kind in ("tap", "long_tap"):
            has_xy = "x" in s or "y" in s
            if "action" in s and has_xy:
                self.problem(path, f"a {kind} names coordinates (x, y) or an action, not both")
            elif "action" not in s and not ("x" in s and "y" in s):
                missing = "y" if "x" in s else "x" if "y" in s else "x and y, or action"
                self.problem(path, f"a {kind} needs x and y, or a registry action: missing {missing}")
            for key in ("x", "y"):
                if (v := number(key)) is not None and v < 0:
                    self.problem(at(key), f"must be >= 0, got {v}")
                self.at_most(at(key), number(key), MAX_PIXEL)
            if isinstance(s.get("action"), str):
                self.check_action(s["action"], at("action"))
            if kind == "long_tap" and (v := number("duration_ms")) is not None and v <= 0:
                self.problem(at("duration_ms"), f"must be > 0, got {v}")
            self.at_most(at("duration_ms"), number("duration_ms"), MAX_DURATION_MS)
        elif kind == "swipe":
            for key in ("x1", "y1", "x2", "y2"):
                if (v := number(key)) is not None and v < 0:
                    self.problem(at(key), f"must be >= 0, got {v}")
                self.at_most(at(key), number(key), MAX_PIXEL)
            if not all(k in s for k in ("x1", "y1", "x2", "y2")):
                missing = [k for k in ("x1", "y1", "x2", "y2") if k not in s]
                self.problem(path, f"a swipe needs x1, y1, x2, y2: missing {', '.join(missing)}")
            if (v := number("duration_ms")) is not None and v <= 0:
                self.problem(at("duration_ms"), f"must be > 0, got {v}")
            self.at_most(at("duration_ms"), number("duration_ms"), MAX_DURATION_MS)
            if isinstance(s.get("path"), list):
                self.check_swipe_path(s, at("path"))
        elif kind == "type":
            text = s.get("text")
            if "text" not in s or text == "":
                self.problem(at("text") if "text" in s else path, "a type step needs a non-empty text")
            elif isinstance(text, str) and (reason := template_problem(text)):
                self.problem(at("text"), reason)
            elif isinstance(text, str):
                self.check_template_reads(text, at("text"))
            self.check_clear_field(s, at("field"))
            if isinstance(s.get("label"), str):
                self.type_labels.add(s["label"])
        elif kind == "key":
            key = s.get("key")
            if isinstance(key, str):
                self.check_key(key, at("key"))
            elif "key" not in s:
                self.problem(path, "a key step needs a key (HOME, BACK, ENTER or a code)")
            repeat = s.get("repeat", 1)
            if isinstance(repeat, int) and not 1 <= repeat <= MAX_KEY_REPEAT:
                self.problem(at("repeat"), f"must be 1..{MAX_KEY_REPEAT}, got {repeat}")
        elif kind == "go_to":
            if "screen" not in s:
                self.problem(path, "a go_to step needs a screen (a state, e.g. clipshare/feed)")
            elif isinstance(s["screen"], str):
                if (m := _SCREEN.fullmatch(s["screen"])) and m["interrupt"]:
                    self.problem(at("screen"), "a go_to leads to a state, not an interrupt "
                                               "(interrupts show up on their own)")
                else:
                    self.check_screen(s["screen"], at("screen"))
            if (v := number("timeout_s")) is not None and v <= 0:
                self.problem(at("timeout_s"), f"must be > 0, got {v}")
            self.at_most(at("timeout_s"), number("timeout_s"), MAX_WAIT_S)
        elif kind in ("wait_for_screen", "expect_screen", "if_screen"):
            if "screen" not in s:
                self.problem(path, f"a {kind} step needs a screen (e.g. clipshare/feed)")
            elif isinstance(s["screen"], str):
                self.check_screen(s["screen"], at("screen"))
            if kind == "wait_for_screen" and (v := number("timeout_s")) is not None and v <= 0:
                self.problem(at("timeout_s"), f"must be > 0, got {v}")
            self.at_most(at("timeout_s"), number("timeout_s"), MAX_WAIT_S)
            if kind == "if_screen":
                if not s.get("then") and not s.get("otherwise"):
                    self.problem(path, "an if_screen needs steps in then or otherwise")
                self.meaning_steps(s.get("then"), at("then"))
                self.meaning_steps(s.get("otherwise"), at("otherwise"))
        elif kind == "launch_app":
            app, package = s.get("app"), s.get("package")
            if (app is None) == (package is None):
                self.problem(path, "a launch_app names an app (registry key) or a package, "
                                   "exactly one")
            if isinstance(app, str):
                self.check_app(app, at("app"), allow_global=False)
            if isinstance(package, str) and not re.fullmatch(
                    r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+", package):
                self.problem(at("package"), f"not an Android package name: {package!r}")
        elif kind == "switch_account":
            if "account" not in s:
                self.problem(path, "a switch_account step needs an account "
                                   "(platform.account_number)")
            elif isinstance(s["account"], str):
                self.check_account(s["account"], at("account"), selector=False)
        elif kind == "ensure_app":
            for key in ("app", "version"):
                if not (isinstance(s.get(key), str) and s[key].strip()):
                    self.problem(at(key) if key in s else path,
                                 f"an ensure_app step needs a non-empty {key}")
            if ".then[" in path or ".otherwise[" in path:
                self.problem(path, "ensure_app is played before the run starts: a top-level "
                                   "step only, not inside if_screen")
        elif kind in ("read_text", "read_number"):
            self.check_read_place(s, path, kind)
            self.check_locale(s, at("locale"))
            into = s.get("into")
            if not (isinstance(into, str) and into):
                self.problem(at("into") if "into" in s else path,
                             f"a {kind} step needs into: the read variable's name "
                             "(${read.NAME} in later steps)")
            elif not READ_NAME.fullmatch(into):
                self.problem(at("into"), f"{into!r} is not a read variable name "
                                         "([a-z][a-z0-9_]{0,31}, e.g. followers)")
            else:
                self.reads.add(into)
        elif kind == "read_messages":
            for key in ("partner_region", "body_region"):
                if not (isinstance(s.get(key), str) and s[key]):
                    self.problem(at(key) if key in s else path,
                                 f"a read_messages step needs {key} (screen.region)")
                else:
                    self.check_region(s[key], at(key))
            self.check_locale(s, at("locale"))
        elif kind == "record_metric":
            post, metric = s.get("post"), s.get("metric")
            known = POST_METRICS if post is not None else ACCOUNT_METRICS
            whose = "a post's" if post is not None else "an account's (no post)"
            if not (isinstance(metric, str) and metric):
                self.problem(at("metric") if "metric" in s else path,
                             f"a record_metric step needs a metric ({whose}: {', '.join(known)})")
            elif metric not in known:
                other = ACCOUNT_METRICS if post is not None else POST_METRICS
                hint = (" (that one is " + ("an account's: remove post" if post is not None
                                           else "a post's: add post") + ")"
                        if metric in other else "")
                self.problem(at("metric"), f"unknown metric {metric!r} for {whose}: expected "
                                           f"one of {', '.join(known)}{hint}")
            if not (isinstance(s.get("value"), str) and s["value"].strip()):
                self.problem(at("value") if "value" in s else path,
                             "a record_metric step needs a value (e.g. \"${read.followers}\")")
            else:
                self.check_template_reads(s["value"], at("value"))
            if isinstance(post, str):
                if not post.strip():
                    self.problem(at("post"), "post is \"latest\" or the app's post id (a "
                                             "template), not empty")
                elif post != "latest":
                    self.check_template_reads(post, at("post"))
        elif kind == "record_post":
            caption = s.get("caption_step")
            if not (isinstance(caption, str) and caption):
                self.problem(at("caption_step") if "caption_step" in s else path,
                             "a record_post step needs caption_step: the label of the earlier "
                             "type step that typed the caption")
            elif caption not in self.type_labels:
                known = ", ".join(sorted(self.type_labels)) or "none"
                self.problem(at("caption_step"), f"caption_step {caption!r} names no earlier type "
                                                 f"step's label (labelled type steps before it: "
                                                 f"{known})")
            for key in ("media", "platform_post_id"):
                if isinstance(s.get(key), str):
                    if not s[key].strip():
                        self.problem(at(key), f"{key} must not be empty (leave it out instead)")
                    else:
                        self.check_template_reads(s[key], at(key))
        elif kind == "sleep":
            seconds, lo, hi = number("seconds"), number("min_s"), number("max_s")
            has_range = "min_s" in s or "max_s" in s
            if "seconds" in s and has_range:
                self.problem(path, "a sleep is seconds, or a range min_s..max_s, not both")
            elif "seconds" not in s and not ("min_s" in s and "max_s" in s):
                missing = ("max_s" if "min_s" in s else "min_s" if "max_s" in s
                           else "seconds, or min_s and max_s")
                self.problem(path, f"a sleep needs {missing}")
            for key, v in (("seconds", seconds), ("min_s", lo), ("max_s", hi)):
                if v is not None and v < 0:
                    self.problem(at(key), f"must be >= 0, got {v}")
                self.at_most(at(key), v, MAX_WAIT_S)
            if lo is not None and hi is not None and lo > hi:
                self.problem(at("min_s"), f"min_s {lo} is above max_s {hi}")

    # --- reading the screen (issue 21) ---
    def check_template_reads(self, text: str, path: str) -> None:
        """``text`` parses as a template and each ``${read.NAME}`` in it was set by an earlier
        read step (in file order)."""
        if (reason := template_problem(text)):
            self.problem(path, reason)
            return
        try:
            names = read_variables(text)
        except FarmError as exc:
            self.problem(path, _variable_reason(exc))
            return
        for name, offset in names:
            if name not in self.reads:
                known = ", ".join(sorted(self.reads)) or "none"
                self.problem(path, f"offset {offset}: ${{read.{name}}} is used before any read "
                                   f"step sets {name!r} (set so far: {known})")

    def check_read_place(self, s: dict, path: str, kind: str) -> None:
        """A read step names a registry region xor a box."""
        has_region, has_box = s.get("region") is not None, s.get("box") is not None
        if has_region == has_box:
            self.problem(path, f"a {kind} names a region (screen.region) or a box "
                               "[x1, y1, x2, y2], exactly one")
        if isinstance(s.get("region"), str):
            self.check_region(s["region"], key_path(path, "region"))
        box = s.get("box")
        if isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in box):
            x1, y1, x2, y2 = box
            if min(box) < 0 or max(box) > MAX_PIXEL:
                self.problem(key_path(path, "box"), f"coordinates must be in 0..{MAX_PIXEL}, "
                                                    f"got {box}")
            elif x1 >= x2 or y1 >= y2:
                self.problem(key_path(path, "box"), f"box {box} is empty: needs x1 < x2 and "
                                                    "y1 < y2")

    def _screen_of(self, ref: str, path: str, kind: str, example: str,
                   interrupts: bool) -> tuple[str, Any, str] | None:
        """The registry screen ``ref`` (``screen.NAME`` of the sequence's app, or
        ``app/screen.NAME``) names, with its app key and NAME; None after reporting why not
        (also None, silently, without a registry to check against)."""
        m = _ACTION.fullmatch(ref)
        if not m:
            self.problem(path, f"not a registry {kind}: {ref!r} (expected screen.{kind} or "
                               f"app/screen.{kind}, e.g. {example})")
            return None
        app_key = m["app"] or self.app
        if app_key is None:
            self.problem(path, f"{kind} {ref!r} without an app: name it app/screen.{kind} or "
                               "give the sequence an app")
            return None
        if self.registry is None:
            return None
        app = self.registry.apps.get(app_key)
        if app is None:
            self.problem(path, f"{kind} {ref!r}: unknown app {app_key!r}")
            return None
        screens = [*app.states, *app.interrupts] if interrupts else list(app.states)
        screen = app.states.get(m["screen"]) or (app.interrupts.get(m["screen"])
                                                 if interrupts else None)
        if screen is None:
            what = "screen" if interrupts else "state"
            self.problem(path, f"{kind} {ref!r}: app {app_key!r} has no {what} {m['screen']!r} "
                               f"({what}s: {', '.join(screens) or 'none'})")
            return None
        return f"{app_key}/{m['screen']}", screen, m["action"]

    def check_region(self, ref: str, path: str) -> None:
        """``screen.region`` (of the sequence's app) or ``app/screen.region``: a read region
        or validation region of a registry state."""
        found = self._screen_of(ref, path, "region", "profile.followers", interrupts=False)
        if found is None:
            return
        where, screen, name = found
        if screen.read_region(name) is None:
            names = [r.name for r in [*screen.read_regions, *screen.validation_regions]]
            self.problem(path, f"region {ref!r}: state {where} has no region "
                               f"{name!r} (regions: {', '.join(names) or 'none'})")

    def check_locale(self, s: dict, path: str) -> None:
        locale = s.get("locale")
        if isinstance(locale, str):
            try:
                check_locale(locale)
            except ValidationError as exc:
                self.problem(path, exc.reason)

    def at_most(self, path: str, value: float | None, limit: float) -> None:
        """A problem when ``value`` (None: absent or not a number) is above ``limit``."""
        if value is not None and value > limit:
            self.problem(path, f"must be <= {limit:g}, got {value:g}")

    def check_app(self, app: str, path: str, *, allow_global: bool) -> None:
        if self.registry is None:
            return
        if app not in self.registry.apps or (app == GLOBAL_APP and not allow_global):
            apps = [k for k in self.registry.apps if k != GLOBAL_APP]
            self.problem(path, f"unknown app {app!r} (registry apps: {', '.join(apps)})")

    def check_screen(self, label: str, path: str) -> None:
        m = _SCREEN.fullmatch(label)
        if not m:
            self.problem(path, f"not a screen label: {label!r} (expected app/state or "
                               "app/interrupt:name, e.g. clipshare/feed)")
            return
        if self.registry is None:
            return
        app = self.registry.apps.get(m["app"])
        if app is None:
            self.problem(path, f"screen {label!r}: unknown app {m['app']!r}")
            return
        screens = app.interrupts if m["interrupt"] else app.states
        if m["key"] not in screens:
            kind = "interrupt" if m["interrupt"] else "state"
            self.problem(path, f"screen {label!r}: app {m['app']!r} has no {kind} {m['key']!r} "
                               f"({kind}s: {', '.join(screens) or 'none'})")

    def check_swipe_path(self, step: dict, path: str) -> None:
        """2..MAX_SWIPE_POINTS points [x, y] in 0..MAX_PIXEL whose ends are the step's x1..y2."""
        points = step["path"]
        if not 2 <= len(points) <= MAX_SWIPE_POINTS:
            self.problem(path, f"needs 2..{MAX_SWIPE_POINTS} points, got {len(points)}")
            return
        for i, point in enumerate(points):
            if not (isinstance(point, list) and len(point) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool)
                            and 0 <= v <= MAX_PIXEL for v in point)):
                self.problem(f"{path}[{i}]", f"a point is [x, y] with x, y in 0..{MAX_PIXEL}, "
                                             f"got {point!r}")
                return
        ends = dict(zip(("x1", "y1", "x2", "y2"), (*points[0], *points[-1])))
        for key, value in ends.items():
            if key in step and step[key] != value:
                self.problem(path, f"its ends must be (x1, y1) and (x2, y2): {key} is "
                                   f"{step[key]}, the path has {value}")
                return

    def check_action(self, action: str, path: str) -> None:
        found = self._screen_of(action, path, "action", "feed.go_to_profile", interrupts=True)
        if found is None:
            return
        where, screen, name = found
        if all(a.name != name for a in screen.actions):
            self.problem(path, f"action {action!r}: screen {where} has no action "
                               f"{name!r} (actions: "
                               f"{', '.join(a.name for a in screen.actions) or 'none'})")

    def check_clear_field(self, step: dict, path: str) -> None:
        """A type step's ``clear`` needs ``field``: the registry action on the text field, whose
        box is where the field is read back; ``field`` means nothing without ``clear``."""
        field = step.get("field")
        if step.get("clear") is True and field is None:
            self.problem(path, "clear needs field: the registry action on the text field to "
                               "clear (e.g. login.username_field)")
        elif field is not None and step.get("clear", False) is False:  # a non-bool: its own problem
            self.problem(path, "field names the text field that clear empties: add "
                               "\"clear\": true, or remove field")
        if isinstance(field, str):
            self.check_action(field, path)

    def check_account(self, account: str, path: str, *, selector: bool) -> None:
        if "${" in account:
            if (reason := template_problem(account)):
                self.problem(path, reason)
            return
        platform = account.split(".", 1)[0]
        if selector and _PLATFORM.fullmatch(account):
            pass  # "clipshare": any account of the platform, chosen per target
        elif not _ACCOUNT.fullmatch(account):
            hint = " or a platform (clipshare)" if selector else ""
            self.problem(path, f"not an account: {account!r} (expected platform.account_number, "
                               f"e.g. clipshare.account1{hint})")
            return
        if self.registry is not None and platform not in self.registry.apps:
            self.problem(path, f"account {account!r}: unknown platform {platform!r} "
                               f"(registry apps: {', '.join(self.registry.apps)})")

    def check_key(self, key: str, path: str) -> None:
        from actors.node.device.keycodes import key_code

        try:
            key_code(int(key) if key.isdigit() else key)
        except ValueError as exc:
            self.problem(path, str(exc))


# --- entry points -----------------------------------------------------------------------------


def _registry(registry: Registry | None) -> Registry:
    return default_registry() if registry is None else registry


def _order(problem: ValidationError) -> list:
    """Problems in file order: by line, then by JSON path with list indices as numbers."""
    m = re.match(r"[^:]*(?::(\d+))?(?::\d+)?: (.*)$", problem.where)
    line = int(m.group(1)) if m and m.group(1) else 0
    path = m.group(2) if m else problem.where
    # A run of digits orders as a number: by length, then digit by digit (int() would refuse
    # a key of over 4300 digits).
    return [line, *((0, len(t), t) if t.isdigit() else (1, t)
                    for t in re.findall(r"\d+|[^\d\[\].]+", path))]


def _raise(checker: _Checker) -> None:
    if checker.problems:
        raise ValidationErrors(sorted(checker.problems, key=_order))


def parse_sequence(data: Any, where: str = "request", registry: Registry | None = None) -> Sequence:
    """Validate an already parsed sequence object (an API request's ``sequence``); problems
    are reported as ``<where>: $.steps[3].x``."""
    checker = _Checker(where, _registry(registry), None)
    for path, reason in value_problems(data):
        checker.problem(path, reason)
    _raise(checker)  # the checks below recurse per level and hand strings to msgspec
    sequence = checker.sequence(data)
    _raise(checker)
    assert sequence is not None
    return sequence


def parse_sequence_text(raw: bytes | str, shown: str, registry: Registry | None = None) -> Sequence:
    """Validate a sequence file's text; ``shown`` names it in every problem."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ValidationErrors([ValidationError(shown, f"not UTF-8 text (byte {exc.start})")]) from None
    data, index = parse_json(text, shown)
    checker = _Checker(shown, _registry(registry), index)
    for path, key, line, first in index.duplicates:
        checker.problems.append(ValidationError(
            f"{shown}:{line}: {key_path(path, key)}",
            f"duplicate key {key!r} (first at line {first}); remove one"))
    sequence = checker.sequence(data)
    _raise(checker)
    assert sequence is not None
    return sequence


def load_sequence(path: str | os.PathLike, registry: Registry | None = None) -> Sequence:
    """Read and validate one sequence file; `ValidationErrors` lists every problem."""
    target = Path(path)
    try:
        raw = target.read_bytes()
    except OSError as exc:
        raise ValidationErrors([ValidationError(str(target), f"cannot read: {exc.strerror or exc}")]) from None
    return parse_sequence_text(raw, str(target), registry)


def library_names(root: str | os.PathLike = LIBRARY) -> dict[str, Path]:
    """Library names (``app/name``) and their files, without reading them."""
    base = Path(root)
    if not base.is_dir():
        return {}
    return {f"{p.parent.name}/{p.stem}": p for p in sorted(base.glob("*/*.json"))
            if not p.name.startswith(".")}


def load_library(root: str | os.PathLike = LIBRARY,
                 registry: Registry | None = None) -> dict[str, Sequence]:
    """Every sequence of the library folder by name (``clipshare/post_clip``); the problems of
    every file are reported together. A sequence's ``name`` must be its file's stem and its
    ``app`` (if any) its folder, so a name always finds its file."""
    registry = _registry(registry)
    out: dict[str, Sequence] = {}
    problems: list[ValidationError] = []
    for name, path in library_names(root).items():
        try:
            sequence = load_sequence(path, registry)
        except ValidationErrors as exc:
            problems += exc.problems
            continue
        if sequence.name != path.stem:
            problems.append(ValidationError(f"{path}: $.name", f"name {sequence.name!r} differs "
                                            f"from the file name {path.stem!r}"))
        if sequence.app is not None and sequence.app != path.parent.name:
            problems.append(ValidationError(f"{path}: $.app", f"app {sequence.app!r} differs "
                                            f"from the folder {path.parent.name!r}"))
        out[name] = sequence
    if problems:
        raise ValidationErrors(problems)
    return out


def load_named(name: str, root: str | os.PathLike = LIBRARY,
               registry: Registry | None = None) -> Sequence:
    """One library sequence by name (``clipshare/post_clip``); KeyError if there is none."""
    path = library_names(root).get(name)
    if path is None:
        raise KeyError(name)
    return load_sequence(path, registry)


def walk_steps(steps: list[Step], path: str = "steps") -> typing.Iterator[tuple[str, Step]]:
    """Every step with its path (``steps[3]``, ``steps[5].then[0]``), depth first."""
    for i, step in enumerate(steps):
        here = f"{path}[{i}]"
        yield here, step
        if isinstance(step, IfScreenStep):
            yield from walk_steps(step.then, f"{here}.then")
            yield from walk_steps(step.otherwise, f"{here}.otherwise")


# The fields of record_metric / record_post that are templates.
_TEMPLATE_FIELDS = ("value", "post", "media", "platform_post_id")


def map_texts(steps: list[Step], resolve: Callable[[str, str], str],
              path: str = "steps") -> list[Step]:
    """A copy of ``steps`` with every type step's text (switch_account's account, record_metric's
    and record_post's templates) replaced by ``resolve(text, path)``: how the coordinator
    resolves variables per phone."""
    out: list[Step] = []
    for i, step in enumerate(steps):
        here = f"{path}[{i}]"
        if step.__struct_config__.tag == "type":
            step = msgspec.structs.replace(step, text=resolve(step.text, here))
        elif step.__struct_config__.tag == "switch_account" and "${" in step.account:
            step = msgspec.structs.replace(step, account=resolve(step.account, here))
        elif step.__struct_config__.tag in ("record_metric", "record_post"):
            # Their templates too (a ${read.NAME} comes back as written: the node fills it).
            changes = {key: resolve(value, here) for key in _TEMPLATE_FIELDS
                       if isinstance(value := getattr(step, key, None), str) and "${" in value}
            if changes:
                step = msgspec.structs.replace(step, **changes)
        elif isinstance(step, IfScreenStep):
            step = msgspec.structs.replace(step, then=map_texts(step.then, resolve, f"{here}.then"),
                                           otherwise=map_texts(step.otherwise, resolve,
                                                               f"{here}.otherwise"))
        out.append(step)
    return out
