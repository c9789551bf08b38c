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

``account-sel`` is the account scope of `sequences.scopes`; conditions are those of
`sequences.conditions` (values compare as text, case-insensitively; a missing or null field
equals nothing, so ``!=`` holds).
"""

from __future__ import annotations

import random
import re
from typing import Callable, NoReturn

from protocol.errors import ScopeError
from sequences.conditions import holds, parse_conditions
from sequences.scopes import AccountScope, AccountTarget, parse_scope_span

Handler = Callable[[str, int, int, list[dict], list[dict], random.Random], "str | int | list[str]"]

_KEYWORD = re.compile(r"\s+(\S+)(?:\s+|$)")


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
    conditions = parse_conditions(text, start, end, phones)
    return [p["serial"] for p in phones
            if all(holds(p, path, op, value) for path, op, value in conditions)]


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


def _names_hint() -> str:
    return ", ".join(f"'{name} {keyword}'" for name, (keyword, _) in FUNCTIONS.items())


def _fail(text: str, offset: int, reason: str) -> NoReturn:
    raise ScopeError(text, offset, reason)
