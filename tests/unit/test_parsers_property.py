"""Property tests for the project's text and JSON parsers (hypothesis).

The rule under test: for any input, a parser returns a result or raises the module's own
error type carrying a position (an offset into the text, or a file line / JSON path), never
another exception (IndexError, KeyError, RecursionError, TypeError, ValueError from int(),
UnicodeEncodeError, ...) and never hangs. Inputs are random text, text built from each
grammar's tokens (so the parsers get past their first character), and structurally plausible
JSON: the known field names with values of the right and of wrong types, huge and negative
numbers, NaN/inf, deep nesting, NUL bytes, lone surrogates and very long strings.

Each failure hypothesis found is kept as an explicit ``@example`` next to its property.
Runs are derandomized (the same examples every run, no example database in the tree) and
bounded in size, so the file is quick and CI never meets a new example by chance.
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from actors.store.farm_db import FarmDB, seed_demo
from protocol.errors import ScopeError, ValidationError, ValidationErrors, VariableError
from registry.load import DEMO_REGISTRY, load_registry, parse_json
from sequences.groups import GroupBook
from sequences.load import parse_sequence, parse_sequence_text
from sequences.model import STEP_TYPES
from sequences.scopes import AccountScope, parse_phone_scope, parse_scope
from sequences.spintax import Spin, Var, parse, spin
from sequences.variables import MemoryCounters, MemoryMedia, VariableContext, resolve

PROPERTY = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEWER = settings(PROPERTY, max_examples=150)

# --- shared strategies ---------------------------------------------------------------------

# Strings that broke, or could break, something: NUL, a lone surrogate (not encodable as
# UTF-8), unicode digits and spaces, path tricks, numbers past int()'s 4300-digit limit.
NASTY_STRINGS = ["", " ", "\x00", "a\x00b", "\ud800", "\u3000", "\u00a0", "\u0663", "\u00b2",
                 "..", "../x", "/etc/passwd", "a\\b", "x" * 5000, "9" * 5000, "-" + "9" * 5000,
                 "1e400", "NaN", "${", "{", "}", "|", "@", ",", ":", ".", "%", "\n"]
NASTY_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(NASTY_STRINGS))
NUMBERS = st.one_of(st.integers(-10, 3000), st.integers(),
                    st.sampled_from([2**70, -2**70, 2**63, 2**63 - 1, -2**63 - 1, -1, 0]),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 1e-320, 1e308, 0.5]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, NASTY_TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(NASTY_TEXT, inner, max_size=4)),
    max_leaves=12)


def tokens(*words: str, max_size: int = 30) -> st.SearchStrategy[str]:
    """Text made of a grammar's tokens mixed with random characters."""
    part = st.one_of(st.sampled_from(words), st.sampled_from(NASTY_STRINGS[:10]),
                     st.characters())
    return st.lists(part, max_size=max_size).map("".join)


def nested(opener: str, closer: str = "") -> st.SearchStrategy[str]:
    """``opener`` repeated up to 3000 times (then ``closer`` as often): deep nesting."""
    return st.integers(1, 3000).map(lambda n: opener * n + closer * n)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = JSON_VALUES
           ) -> st.SearchStrategy[Any]:
    """Mostly a good value, so a document gets past its first bad field."""
    return st.integers(0, 7).flatmap(lambda i: bad if i == 3 else good)


def fields(spec: dict[str, st.SearchStrategy[Any]], extra: bool = True
           ) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with some of the known fields, each mostly a plausible value, else any JSON
    value, and sometimes an unknown field."""
    optional = {k: mostly(v) for k, v in spec.items()}
    if extra:
        optional["colour"] = JSON_VALUES
    return st.fixed_dictionaries({}, optional=optional)


def text_offsets(error: ScopeError | VariableError, text: str) -> None:
    """The error names ``text`` and an offset inside it (the end counts: 'missing }')."""
    assert isinstance(error.offset, int) and not isinstance(error.offset, bool)
    assert 0 <= error.offset <= len(text), (error.offset, len(text), str(error))
    assert error.reason


# --- scopes --------------------------------------------------------------------------------

PHONES = [
    {"serial": "127.0.0.1:40123", "node": "rack1", "tags": ["phone1"], "client": "Acme"},
    {"serial": "R58M123ABC", "node": "rack2", "tags": ["phone2", "front"]},
    {"serial": "emu", "node": "rack2", "tags": [], "client": None},
]
ACCOUNTS = [
    {"serial": "127.0.0.1:40123", "platform": "tiktok", "account_number": "account1"},
    {"serial": "R58M123ABC", "platform": "TikTok", "account_number": "account2"},
    {"serial": "emu", "platform": "clipshare", "account_number": "a.b"},
]
SCOPE_TEXT = st.one_of(
    st.text(max_size=40),
    tokens("phone:", "node:", "account:", "group:", "all", "all-", ",", "@", ".", ":",
           "client:", "Acme", " ", "\t", "tiktok", "tiktok.all", "account1", "rack1",
           "127.0.0.1:40123", "phone1", "emu", "front"))


@PROPERTY
@given(SCOPE_TEXT)
@example("phone:all")
@example("account:tiktok.account1,clipshare.all@phone:client:Acme")
def test_scope_parses_and_resolves_or_raises_scope_error_with_offset(text: str) -> None:
    try:
        scope = parse_scope(text)
        if isinstance(scope, AccountScope):
            assert 0 <= scope.offset <= len(text)
            scope.resolve(PHONES, ACCOUNTS)
        else:
            scope.resolve(PHONES)
    except ScopeError as e:
        text_offsets(e, text)


@PROPERTY
@given(SCOPE_TEXT)
def test_phone_scope_parses_or_raises_scope_error_with_offset(text: str) -> None:
    try:
        parse_phone_scope(text).resolve(PHONES)
    except ScopeError as e:
        text_offsets(e, text)


# --- spintax -------------------------------------------------------------------------------

TEMPLATE_TOKENS = ("{", "}", "|", "${", "\\", "(", ")", ",", ".", " ", "$", "a", "x_1", "-",
                   "random.account", "count.accounts", "filter.phones", "dynamic", "custom")
TEMPLATE_TEXT = st.one_of(st.text(max_size=40), tokens(*TEMPLATE_TOKENS),
                          nested("{", "}"), nested("{"), nested("${a("), nested("${a(", ")}"),
                          nested("{a|"), nested("${dynamic.random.choice({"))


def _spans_inside(nodes: tuple, text: str) -> None:
    for node in nodes:
        assert 0 <= node.offset <= len(text)
        if isinstance(node, Spin):
            for option in node.options:
                _spans_inside(option, text)
        elif isinstance(node, Var):
            assert node.offset < node.end <= len(text)
            for arg in node.args or ():
                _spans_inside(arg, text)


@PROPERTY
@given(TEMPLATE_TEXT)
@example("{" * 1000)  # RecursionError: one parser frame per level, no bound
@example("{" * 1000 + "}" * 1000)
@example("${dynamic.random.choice({" * 200)
def test_spintax_parses_or_raises_variable_error_with_offset(text: str) -> None:
    try:
        nodes = parse(text)
    except VariableError as e:
        text_offsets(e, text)
        assert e.text == text
        return
    _spans_inside(nodes, text)


def test_nesting_is_bounded_and_the_error_is_at_the_first_level_too_deep() -> None:
    from sequences.spintax import MAX_NESTING

    assert spin("{" * MAX_NESTING + "a" + "}" * MAX_NESTING, random.Random(0)) == "a"
    with pytest.raises(VariableError) as e:
        parse("x" + "{" * 1000)
    assert e.value.offset == 1 + MAX_NESTING and "nest deeper" in e.value.reason


@PROPERTY
@given(TEMPLATE_TEXT, st.integers(0, 2**32))
@example("{a|" * 1000 + "}" * 1000, 0)  # RecursionError, as above
def test_spin_returns_text_or_raises_variable_error_with_offset(text: str, seed: int) -> None:
    try:
        assert isinstance(spin(text, random.Random(seed)), str)
    except VariableError as e:
        text_offsets(e, text)


# --- variables -----------------------------------------------------------------------------

CLOCK = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def make_ctx() -> VariableContext:
    """A full context, as tests/unit/test_variables.py builds one, with the farm's rows for
    the scope-aware functions and the default groups for ``${group...}``."""
    return VariableContext(
        serial="emu",
        client={"name": "Acme", "status": "active", "contact_email": "ops@acme.test"},
        profile={"first_name": "Ava", "birth_year": 1999, "profile_password": "pw"},
        accounts=[{"platform": "tiktok", "account_number": "account1", "username": "ava",
                   "password": None, "bio": ""}],
        account=("tiktok", "account1"),
        hashtag_sets={"demo": ["fun", "#daily"]},
        caption_templates={"daily": "{Hi|Hello} ${profile.first_name}",
                           "loop": "x ${content.caption.loop}",
                           "deep": "${content.caption.deep2}", "deep2": "${content.caption.deep}",
                           "broken": "ok ${profile.nope"},
        media=MemoryMedia({"clips": ["a.jpg"], "": ["default.jpg"]}),
        custom={"shop": "Acme Shop", "promo.code": "SAVE10"},
        counters=MemoryCounters(),
        clock=lambda: CLOCK,
        phones=PHONES,
        farm_accounts=ACCOUNTS,
        groups=GroupBook.with_defaults(),
    )


VARIABLE_TEXT = st.one_of(
    TEMPLATE_TEXT,
    tokens("${", "}", "(", ")", ",", "-", " ", "{", "|", ".", "%", "%Y", "\x00", "\ud800",
           "${dynamic.random.number(", "${dynamic.counter(", "${dynamic.date.format(",
           "${dynamic.time.format(", "${dynamic.random.choice(", "${content.caption.",
           "${content.hashtags.", "${content.media.folder(", "${content.media.next}",
           "${account.", "${account.tiktok.account1.", "${profile.", "${client.",
           "${custom.", "${ai.hashtags(", "${ai.caption(", "${group.", "${group.active.",
           "${count.accounts in ", "${random.account from ", "${filter.phones where ",
           "account:tiktok.all@all", "phone:all", "daily", "loop", "deep", "broken", "shop",
           "1", "-1", "10", "9" * 4400, "username", "password", "name"))


@PROPERTY
@given(VARIABLE_TEXT, st.integers(0, 2**32))
@example("${dynamic.random.number(1-" + "9" * 5000 + ")}", 0)  # ValueError from int()
@example("${dynamic.date.format(\ud800)}", 0)  # UnicodeEncodeError from strftime
def test_resolve_returns_text_or_raises_variable_error_with_offset(text: str, seed: int) -> None:
    try:
        assert isinstance(resolve(text, make_ctx(), random.Random(seed)), str)
    except VariableError as e:
        text_offsets(e, text)
        assert e.text == text


async def test_a_counter_beyond_64_bits_is_a_variable_error_not_a_database_overflow(
        tmp_path: Path) -> None:
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    try:
        await seed_demo(db, ["emu-1"])
        for text in ("${dynamic.counter(c," + str(2**70) + ")}",
                     "${dynamic.counter(c,1,-" + str(2**63 + 1) + ")}"):
            with pytest.raises(VariableError) as e:
                await db.resolve_text(text, "emu-1")  # was OverflowError from sqlite3
            assert e.value.offset == 0 and "64-bit" in e.value.reason
        top = str(2**63 - 1)
        assert await db.resolve_text("${dynamic.counter(d," + top + ")}", "emu-1") == top
    finally:
        await db.close()


async def test_a_lone_surrogate_in_template_text_is_a_variable_error_at_its_offset(
        tmp_path: Path) -> None:
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    try:
        await seed_demo(db, ["emu-1"])
        with pytest.raises(VariableError) as e:  # was UnicodeEncodeError from sqlite3
            await db.resolve_text("ok ${dynamic.counter(a\ud800)}", "emu-1")
        assert e.value.offset == 22 and "surrogate" in e.value.reason
    finally:
        await db.close()


# --- sequence JSON -------------------------------------------------------------------------

DEMO = load_registry(DEMO_REGISTRY)
COORD = st.one_of(st.integers(-5, 3000), NUMBERS)
SCREEN = st.sampled_from(["clipshare/feed", "clipshare/interrupt:rate_us", "global/x", "a/b/c",
                          "clipshare/", "/feed", "clipshare/interrupt:"])
ACTION = st.sampled_from(["feed.go_to_profile", "clipshare/feed.go_to_profile", "x.y", "a/b.c",
                          ".", "feed."])


def step_fields(kind: str, steps: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    common: dict[str, st.SearchStrategy[Any]] = {"label": NASTY_TEXT}
    per_kind: dict[str, dict[str, st.SearchStrategy[Any]]] = {
        "tap": {"x": COORD, "y": COORD, "action": ACTION},
        "long_tap": {"x": COORD, "y": COORD, "action": ACTION, "duration_ms": COORD},
        "swipe": {"x1": COORD, "y1": COORD, "x2": COORD, "y2": COORD, "duration_ms": COORD,
                  "path": st.lists(st.one_of(st.lists(COORD, max_size=3), JSON_VALUES),
                                   max_size=5)},
        "type": {"text": VARIABLE_TEXT},
        "key": {"key": st.one_of(st.sampled_from(["HOME", "back", "KEYCODE_3", "3", "\u00b2",
                                                  "\u0663", "9" * 5000, "-1", " 4 "]),
                                 NASTY_TEXT),
                "repeat": COORD},
        "wait_for_screen": {"screen": SCREEN, "timeout_s": NUMBERS},
        "expect_screen": {"screen": SCREEN},
        "go_to": {"screen": SCREEN, "timeout_s": NUMBERS},
        "launch_app": {"app": st.sampled_from(["clipshare", "global", "nope"]),
                       "package": st.sampled_from(["com.x.y", "x", "1.a"])},
        "switch_account": {"account": st.one_of(st.sampled_from(
            ["clipshare.account1", "clipshare", "${account.platform}", "${", "a.b.c"]),
            VARIABLE_TEXT)},
        "sleep": {"seconds": NUMBERS, "min_s": NUMBERS, "max_s": NUMBERS},
        "ensure_app": {"app": st.one_of(st.sampled_from(["clipshare", "com.x.y", ""]),
                                        NASTY_TEXT),
                       "version": st.one_of(st.sampled_from(["4.1.0", "410", ""]), NASTY_TEXT)},
        "read_text": {"into": st.one_of(st.sampled_from(["followers", "Bad", ""]), NASTY_TEXT),
                      "region": st.one_of(ACTION, st.just("profile.followers")),
                      "box": st.lists(COORD, max_size=5), "locale": st.sampled_from(
                          ["en", "fr", "de-DE", "xx", ""])},
        "read_number": {"into": st.sampled_from(["n", "9x", ""]),
                        "region": st.one_of(ACTION, st.just("clipshare/profile.posts")),
                        "box": st.lists(COORD, max_size=5), "locale": NASTY_TEXT},
        "record_metric": {"metric": st.sampled_from(["followers", "views", "nope", ""]),
                          "value": st.one_of(VARIABLE_TEXT, st.just("${read.n}")),
                          "post": st.one_of(st.just("latest"), VARIABLE_TEXT)},
        "record_post": {"caption_step": st.one_of(st.just("caption"), NASTY_TEXT),
                        "media": VARIABLE_TEXT, "platform_post_id": VARIABLE_TEXT},
        "read_messages": {"partner_region": ACTION, "body_region": ACTION,
                          "locale": st.sampled_from(["en", "zh", "??"])},
        "if_screen": {"screen": SCREEN, "then": st.lists(steps, max_size=3),
                      "otherwise": st.lists(steps, max_size=3)},
    }
    return st.fixed_dictionaries(
        {"type": mostly(st.just(kind))},
        optional={k: mostly(v)
                  for k, v in {**common, **per_kind[kind], "colour": JSON_VALUES}.items()})


# if_screen nests steps; st.recursive bounds the tree (st.deferred let hypothesis itself
# recurse too deep). Deep nesting has its own examples (deep_if_screen).
STEPS: st.SearchStrategy[dict[str, Any]] = st.recursive(
    st.one_of(*(step_fields(kind, st.nothing()) for kind in STEP_TYPES if kind != "if_screen")),
    lambda inner: st.one_of(inner, step_fields("if_screen", inner)), max_leaves=8)
SEQUENCES = fields({
    "name": st.one_of(st.just("post"), NASTY_TEXT),
    "steps": st.lists(STEPS, max_size=4),
    "description": NASTY_TEXT,
    "app": st.sampled_from(["clipshare", "global", "nope"]),
    "account": st.sampled_from(["clipshare.account1", "clipshare", "clip share", "${account",
                                "${dynamic.counter(a)}"]),
    "recovery_prompt": NASTY_TEXT,
    "retry": fields({"immediate": COORD, "immediate_delay_s": NUMBERS, "short": COORD,
                     "short_delay_s": NUMBERS}),
    "version": COORD,
})


def deep_if_screen(depth: int) -> dict[str, Any]:
    step: dict[str, Any] = {"type": "tap", "x": 1, "y": 1}
    for _ in range(depth):
        step = {"type": "if_screen", "screen": "clipshare/feed", "then": [step]}
    return {"name": "deep", "steps": [step]}


_WHERE_TAIL = re.compile(r"(?::(?P<line>\d+)(?::(?P<col>\d+))?)?(?:: (?P<path>\$.*))?", re.S)


def positioned(problem: ValidationError, shown: str, text: str | None = None) -> None:
    """``problem.where`` is ``shown`` followed by a line (and column) and/or a JSON path;
    or the reason names a byte offset (text that is not UTF-8). A line is one of ``text``'s."""
    assert isinstance(problem, ValidationError), problem
    assert problem.where.startswith(shown), (problem.where, shown)
    m = _WHERE_TAIL.fullmatch(problem.where[len(shown):])
    assert m, problem.where
    has_position = bool(m["line"] or m["path"]) or re.search(r"\bbyte \d+", problem.reason)
    assert has_position, f"no position in {problem}"
    if m["line"] and text is not None:
        assert 1 <= int(m["line"]) <= text.count("\n") + 1, str(problem)
    if m["col"] and text is not None:
        assert 1 <= int(m["col"]) <= len(text) + 1, str(problem)


def check_sequence_text(raw: str | bytes) -> None:
    try:
        parse_sequence_text(raw, "seq.json", DEMO)
    except ValidationErrors as e:
        assert e.problems
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        for problem in e.problems:
            positioned(problem, "seq.json", text)


JSON_TEXT = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60),
    tokens("{", "}", "[", "]", ",", ":", '"', "\\", '"type"', '"steps"', '"name"', '"x"',
           '"tap"', '"if_screen"', '"then"', "1", "-", "1e400", "NaN", "Infinity",
           "-Infinity", "true", "null", " ", "\n", "\t", "\r"),
    nested("["), nested("[", "]"), nested('{"a":', "}"),
    st.integers(1, 400).map(lambda n: json.dumps(deep_if_screen(n))),
)


@PROPERTY
@given(JSON_TEXT)
@example("[" * 2000)  # RecursionError in json.loads, reported without a position
@example('{"name": "x", "steps": [], "colour": Infinity}')  # no position
@example("[1" + "2" * 4400 + "]")  # ValueError from int() in json.loads, no position
@example('{"name": "x", "steps": ["\\ud800"]}')  # UnicodeEncodeError from msgspec
@example('{"' + "9" * 5000 + '": null}')  # ValueError from int() sorting the problems
def test_sequence_text_loads_or_every_problem_has_a_position(raw: str | bytes) -> None:
    check_sequence_text(raw)


@PROPERTY
@given(st.one_of(SEQUENCES, JSON_VALUES), st.booleans())
def test_sequence_json_loads_or_every_problem_has_a_position(data: Any, indent: bool) -> None:
    check_sequence_text(json.dumps(data, indent=2 if indent else None))


@PROPERTY
@given(st.one_of(SEQUENCES, JSON_VALUES, st.integers(1, 100).map(deep_if_screen)))
@example({"9" * 5000: None})  # ValueError from int() sorting the problems
@example({"name": "x", "steps": ["\ud800"]})  # UnicodeEncodeError from msgspec
@example(deep_if_screen(100))  # (deeper ones overflow hypothesis's own printer)
def test_sequence_object_parses_or_every_problem_has_a_path(data: Any) -> None:
    try:
        parse_sequence(data, "request", DEMO)
    except ValidationErrors as e:
        assert e.problems
        for problem in e.problems:
            positioned(problem, "request")


@pytest.mark.parametrize("text, where, reason", [
    ('{"a": [1,\n  NaN]}', "f.json:2:3", "NaN is not a JSON number"),
    ('{"a": "Infinity", "b": -Infinity}', "f.json:1:24", "-Infinity is not a JSON number"),
    ('[1, 2e400]', "f.json:1:5", "2e400 is too large"),
    ('["12", 1' + "0" * 4400 + "]", "f.json:1:8", "more than 4300 digits"),
    ("[" * 64 + "]" * 64 + "\n [" + "{" * 64, "f.json:2:66", "nested deeper than 64"),
    ('{"a": ["x", "\\udc00"]}', "f.json:1: $.a[1]", "lone surrogate \\udc00"),
])
def test_json_that_python_reads_but_our_files_may_not_hold_is_named_with_its_place(
        text: str, where: str, reason: str) -> None:
    with pytest.raises(ValidationErrors) as e:
        parse_json(text, "f.json")
    [problem] = e.value.problems
    assert problem.where == where and reason in problem.reason, str(problem)


# --- registry JSON -------------------------------------------------------------------------

BOX = st.one_of(st.lists(COORD, min_size=4, max_size=4), st.lists(COORD, max_size=6))
REFERENCE = st.sampled_from(["ok.png", "missing.png", "sub", "../x.png", "/etc/passwd", "",
                             ".", "a\x00b.png", "\ud800.png", "a\\b.png", "x" * 300,
                             "sub/" + "y" * 5000])
NAME = st.one_of(st.sampled_from(["feed", "login", "dismiss", "later"]), NASTY_TEXT)
REGIONS = fields({"name": NAME, "coordinates": BOX, "ocr_enabled": st.booleans(),
                  "reference": REFERENCE, "expected_text": NASTY_TEXT, "threshold": NUMBERS})
ACTIONS = fields({"name": NAME, "coordinates": BOX,
                  "action_type": st.sampled_from(["tap", "swipe_up", "fly"]),
                  "linked_state": NAME})
SCREENS = fields({"name": NAME, "description": NASTY_TEXT,
                  "validation_regions": st.lists(REGIONS, max_size=3),
                  "actions": st.lists(ACTIONS, max_size=3), "handler": NAME,
                  "reference_screenshot": REFERENCE})
APPS = fields({"package": st.sampled_from(["com.example.clipshare", "", "x"]),
               "screen_size": st.one_of(st.lists(COORD, min_size=2, max_size=2),
                                        st.lists(COORD, max_size=3)),
               "states": st.dictionaries(NAME, SCREENS, max_size=3),
               "interrupts": st.dictionaries(NAME, SCREENS, max_size=2)})


# Apps that are valid but for a few fields, so the later checks (boxes, handlers, linked
# states, reference files) run too. ``ok.png`` is 10x10: the box [0, 0, 10, 10] matches it.
GOOD_BOX = st.one_of(st.just([0, 0, 10, 10]),
                     st.tuples(st.integers(-1, 50), st.integers(-1, 50), st.integers(40, 101),
                               st.integers(40, 101)).map(list))
GOOD_NAME = st.sampled_from(["feed", "login", "dismiss", "later"])
GOOD_REGIONS = st.fixed_dictionaries(
    {"name": mostly(GOOD_NAME), "coordinates": mostly(GOOD_BOX)},
    optional={"ocr_enabled": mostly(st.booleans()), "reference": mostly(REFERENCE),
              "expected_text": mostly(NASTY_TEXT), "threshold": mostly(NUMBERS)})
GOOD_ACTIONS = st.fixed_dictionaries(
    {"name": mostly(GOOD_NAME), "coordinates": mostly(GOOD_BOX)},
    optional={"action_type": mostly(st.sampled_from(["tap", "swipe_up"])),
              "linked_state": mostly(GOOD_NAME)})
GOOD_SCREENS = st.fixed_dictionaries(
    {"name": mostly(GOOD_NAME),
     "validation_regions": mostly(st.lists(GOOD_REGIONS, min_size=1, max_size=3))},
    optional={"actions": mostly(st.lists(GOOD_ACTIONS, max_size=3)),
              "handler": mostly(GOOD_NAME), "reference_screenshot": mostly(REFERENCE)})
GOOD_APPS = st.fixed_dictionaries(
    {"screen_size": mostly(st.just([100, 100])),
     "states": mostly(st.dictionaries(GOOD_NAME, GOOD_SCREENS, min_size=1, max_size=3))},
    optional={"package": mostly(st.sampled_from(["com.example.clipshare", "com.x"])),
              "interrupts": mostly(st.dictionaries(GOOD_NAME, GOOD_SCREENS, max_size=2))})
APPS = st.one_of(APPS, GOOD_APPS, GOOD_APPS)
APP_KEYS = st.one_of(st.sampled_from(["clipshare", "global", "Bad Key", ""]), NASTY_TEXT)
REGISTRY_FILES = fields({"apps": st.dictionaries(APP_KEYS, st.one_of(APPS, JSON_VALUES),
                                                 max_size=3)})


@pytest.fixture(scope="module")
def registry_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder-form registry (``folder/clipshare.json``) and a single-file one
    (``single/registry.json``), each with a real 10x10 PNG ``ok.png`` and a folder ``sub``."""
    base = tmp_path_factory.mktemp("registry")
    ok, image = cv2.imencode(".png", np.full((10, 10, 3), 128, np.uint8))
    assert ok
    for name in ("folder", "single"):
        (base / name / "sub").mkdir(parents=True)
        (base / name / "ok.png").write_bytes(image.tobytes())
    return base / "folder", base / "single"


def check_registry(folder: Path, single: Path, app: bytes, registry_file: bytes) -> None:
    """Load ``app`` as ``folder/clipshare.json`` and ``registry_file`` as
    ``single/registry.json``: each loads, or raises with every problem positioned."""
    for path, shown, data in ((folder, folder / "clipshare.json", app),
                              (single / "registry.json", single / "registry.json",
                               registry_file)):
        shown.write_bytes(data)
        try:
            load_registry(path)
        except ValidationErrors as e:
            assert e.problems
            text = data.decode("utf-8", "replace")
            for problem in e.problems:
                positioned(problem, str(shown), text)


def dumps(value: Any) -> bytes:
    return json.dumps(value, indent=1).encode()


@FEWER
@given(st.one_of(APPS, JSON_VALUES), st.one_of(REGISTRY_FILES, JSON_VALUES))
@example({"screen_size": [1080, float("inf")]}, {"apps": {}})  # Infinity: no position
@example({"screen_size": ["\ud800", 1]}, {"apps": {"a": {"package": 1e400}}})  # msgspec
@example({"screen_size": [100, 100],  # ValueError from open(): embedded null byte
          "states": {"feed": {"name": "feed", "reference_screenshot": "a\x00b.png"}}}, {})
def test_registry_json_loads_or_every_problem_has_a_position(
        registry_dirs: tuple[Path, Path], app: Any, registry_file: Any) -> None:
    check_registry(*registry_dirs, dumps(app), dumps(registry_file))


@FEWER
@given(JSON_TEXT)
@example("[" * 2000)  # RecursionError in json.loads, reported without a position
def test_registry_text_loads_or_every_problem_has_a_position(
        registry_dirs: tuple[Path, Path], raw: str | bytes) -> None:
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    check_registry(*registry_dirs, data, data)
