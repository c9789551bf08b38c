"""Scope-aware functions (spec 15.2.3): ``random.account from SCOPE``, ``count.accounts in
SCOPE``, ``filter.phones where CONDITIONS``.

Owns evaluating one such expression over phone and account rows. It is pure (rows in, value
out; randomness only from the ``rng`` passed in), so the variables module can call it for
``${random.account from ...}`` and a test can seed it. Errors are `ScopeError`s whose offsets
are into the expression text, including errors inside the nested scope.

Grammar (EBNF; the keyword after the function name is fixed per function)::

    function   = "random.account" , "from" , account-sel
               | "count.accounts" , "in" , account-sel
               | "filter.phones" , "where" , condition , { "and" , condition } ;
    condition  = field , ( "=" | "==" | "!=" ) , value ;
    field      = key , { "." , key } ;     (* a phone row key, dotted into nested dicts *)
    value      = bare-text | '"' , text , '"' | "'" , text , "'" ;

``account-sel`` is the account scope of `sequences.scopes`. Values compare as text,
case-insensitively (``profile.gender=male`` matches "Male"); a list field matches if any
element does (``tags=phone1``); a missing or null field equals nothing, so ``!=`` holds.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, NoReturn

from protocol.errors import ScopeError
from sequences.scopes import AccountScope, AccountTarget, parse_scope_span

Handler = Callable[[str, int, int, list[dict], list[dict], random.Random], "str | int | list[str]"]

_KEYWORD = re.compile(r"\s+(\S+)(?:\s+|$)")
_AND = re.compile(r"\s+and(?:\s+|$)")
_CONDITION = re.compile(r"(?P<field>[^\s=!]*)\s*(?P<op>!=|==|=)\s*(?P<value>.*?)\s*$", re.S)
_MISSING = object()


def evaluate_function(text: str, phones: list[dict], accounts: list[dict],
                      rng: random.Random | None = None) -> str | int | list[str]:
    """Evaluate one scope-aware function over ``phones`` and ``accounts`` rows.

    ``random.account from ...`` gives ``"platform.account_number@serial"``,
    ``count.accounts in ...`` an int, ``filter.phones where ...`` a list of serials in
    phone-row order. Raises `ScopeError(text, offset, reason)`.
    """
    if not isinstance(text, str):
        raise ScopeError(repr(text), 0, "a scope function must be a string such as "
                                        "'count.accounts in account:all@all'")
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    if start >= end:
        _fail(text, 0, f"empty function (expected one of {_names_hint()})")
    name_end = start
    while name_end < end and not text[name_end].isspace():
        name_end += 1
    name = text[start:name_end]
    if name not in FUNCTIONS:
        _fail(text, start, f"unknown function {name!r}: expected one of {_names_hint()}")
    keyword, handler = FUNCTIONS[name]
    match = _KEYWORD.match(text, name_end, end)
    if match is None or match.group(1) != keyword:
        _fail(text, match.start(1) if match else name_end,
              f"expected '{keyword}' after {name!r} (e.g. '{name} {keyword} ...')")
    arg_start = min(match.end(), end)
    if arg_start >= end:
        _fail(text, end, f"nothing after '{keyword}'")
    return handler(text, arg_start, end, phones, accounts, rng or random.Random())


def is_scope_function(text: str) -> bool:
    """Whether ``text`` starts with a scope-aware function's name (so a caller such as the
    variables module can route ``${...}`` here rather than to plain variable lookup)."""
    words = text.split(None, 1) if isinstance(text, str) else []
    return bool(words) and words[0] in FUNCTIONS


# --- functions ------------------------------------------------------------------------


def _random_account(text: str, start: int, end: int, phones: list[dict],
                    accounts: list[dict], rng: random.Random) -> str:
    found = _account_targets("random.account", text, start, end, phones, accounts)
    if not found:
        _fail(text, start, "no account matches this scope, so there is none to pick")
    return str(rng.choice(found))


def _count_accounts(text: str, start: int, end: int, phones: list[dict],
                    accounts: list[dict], rng: random.Random) -> int:
    return len(_account_targets("count.accounts", text, start, end, phones, accounts))


def _filter_phones(text: str, start: int, end: int, phones: list[dict],
                   accounts: list[dict], rng: random.Random) -> list[str]:
    conditions = _conditions(text, start, end, phones)
    return [p["serial"] for p in phones
            if all(_holds(p, path, op, value) for path, op, value in conditions)]


FUNCTIONS: dict[str, tuple[str, Handler]] = {
    "random.account": ("from", _random_account),
    "count.accounts": ("in", _count_accounts),
    "filter.phones": ("where", _filter_phones),
}


# --- helpers --------------------------------------------------------------------------


def _account_targets(name: str, text: str, start: int, end: int, phones: list[dict],
                     accounts: list[dict]) -> list[AccountTarget]:
    scope = parse_scope_span(text, start, end)
    if not isinstance(scope, AccountScope):
        # A phone scope has no accounts to pick or count; saying so beats returning 0.
        _fail(text, start, f"{name} takes an account scope (e.g. 'account:tiktok.all@phone:all'),"
                           f" not a phone scope")
    return scope.resolve(phones, accounts)


def _conditions(text: str, start: int, end: int,
                phones: list[dict]) -> list[tuple[list[str], str, str]]:
    parsed: list[tuple[list[str], str, str]] = []
    bounds = [start] + [x for m in _AND.finditer(text, start, end) for x in (m.start(), m.end())]
    bounds.append(end)
    for c_start, c_end in zip(bounds[::2], bounds[1::2]):
        segment = text[c_start:c_end]
        pos = c_start + len(segment) - len(segment.lstrip())
        if not segment.strip():
            _fail(text, pos, "empty condition (expected FIELD=VALUE or FIELD!=VALUE)")
        match = _CONDITION.match(text, pos, c_end)
        if match is None:
            _fail(text, pos, f"expected FIELD=VALUE or FIELD!=VALUE, got {segment.strip()!r}")
        field = match.group("field")
        if not field:
            _fail(text, pos, "missing field name before the operator")
        path = field.split(".")
        if any(not key for key in path):
            _fail(text, pos, f"empty key in field {field!r}")
        # A field no phone has is a typo (profile.gendr), not a filter that matches nothing.
        if phones and all(_lookup(p, path) is _MISSING for p in phones):
            _fail(text, pos, f"no phone has field {field!r}")
        value = match.group("value")
        if not value:
            _fail(text, match.start("value"), f"missing value after {match.group('op')!r} "
                                              f"(quote it for an empty value: '\"\"')")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        parsed.append((path, "!=" if match.group("op") == "!=" else "=", value))
    return parsed


def _lookup(row: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(row, dict) or key not in row:
            return _MISSING
        row = row[key]
    return row


def _equals(value: Any, wanted: str) -> bool:
    if value is _MISSING or value is None:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_equals(v, wanted) for v in value)
    return str(value).casefold() == wanted.casefold()


def _holds(phone: dict, path: list[str], op: str, wanted: str) -> bool:
    matched = _equals(_lookup(phone, path), wanted)
    return matched if op == "=" else not matched


def _names_hint() -> str:
    return ", ".join(f"'{name} {keyword}'" for name, (keyword, _) in FUNCTIONS.items())


def _fail(text: str, offset: int, reason: str) -> NoReturn:
    raise ScopeError(text, offset, reason)
