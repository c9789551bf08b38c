"""Row conditions: ``FIELD=VALUE and FIELD!=VALUE ...`` over phone or account rows, as
``filter.phones where ...`` (sequences.scope_functions) and smart groups' filters
(sequences.groups) write them.

Owns parsing a condition list out of a span of text (errors are `ScopeError`s with offsets
into that text) and testing a row against one condition. A leaf: imports nothing of
`sequences`, so both users take it from here.

Grammar (EBNF)::

    conditions = condition , { "and" , condition } ;
    condition  = field , ( "=" | "==" | "!=" ) , value ;
    field      = key , { "." , key } ;     (* a row key, dotted into nested dicts *)
    value      = bare-text | '"' , text , '"' | "'" , text , "'" ;

Values compare as text, case-insensitively (``profile.gender=male`` matches "Male"); a list
field matches if any element does (``tags=phone1``); a missing or null field equals nothing,
so ``!=`` holds.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from protocol.errors import ScopeError

# (field path, "=" or "!=", wanted value)
Condition = tuple[list[str], str, str]

_AND = re.compile(r"\s+and(?:\s+|$)")
_CONDITION = re.compile(r"(?P<field>[^\s=!]*)\s*(?P<op>!=|==|=)\s*(?P<value>.*?)\s*$", re.S)
# What `lookup` returns for a field the row does not have (None is a value a field can hold).
MISSING = object()


def parse_conditions(text: str, start: int, end: int, phones: list[dict]) -> list[Condition]:
    """The conditions in ``text[start:end]``. With ``phones``, a field none of them has is a
    ScopeError (a typo such as profile.gendr, not a filter that matches nothing)."""
    parsed: list[Condition] = []
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
        if phones and all(lookup(p, path) is MISSING for p in phones):
            _fail(text, pos, f"no phone has field {field!r}")
        value = match.group("value")
        if not value:
            _fail(text, match.start("value"), f"missing value after {match.group('op')!r} "
                                              f"(quote it for an empty value: '\"\"')")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        parsed.append((path, "!=" if match.group("op") == "!=" else "=", value))
    return parsed


def lookup(row: Any, path: list[str]) -> Any:
    """The value at ``path`` in ``row`` (dotted into nested dicts), or `MISSING`."""
    for key in path:
        if not isinstance(row, dict) or key not in row:
            return MISSING
        row = row[key]
    return row


def holds(row: dict, path: list[str], op: str, wanted: str) -> bool:
    """Whether ``row`` meets the condition ``path op wanted``."""
    matched = _equals(lookup(row, path), wanted)
    return matched if op == "=" else not matched


def _equals(value: Any, wanted: str) -> bool:
    if value is MISSING or value is None:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_equals(v, wanted) for v in value)
    return str(value).casefold() == wanted.casefold()


def _fail(text: str, offset: int, reason: str) -> NoReturn:
    raise ScopeError(text, offset, reason)
