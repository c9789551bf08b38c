"""Names that become keys or paths (sequences, recordings, groups, tags, schedules, workflows,
registry screens, clients, accounts, variables): the one way they are checked.

Two traps this module closes. ``re.match(r"^name$")`` and msgspec's ``Meta(pattern=...)``
(which searches, as ``re.search``) both accept ``"name\\n"``: ``$`` also matches right before a
trailing newline, so the newline lands in a file name or a database key. And a free-form
name (a client, an account number) must still not carry NUL or other control characters.
Python code uses ``re.fullmatch``; msgspec patterns are written with `whole`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from msgspec import Meta

from protocol.errors import ValidationError

# Printable text: no NUL, newline, tab or other C0/C1 control character.
PRINTABLE = r"[^\x00-\x1f\x7f-\x9f]*"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def whole(pattern: str) -> str:
    """``pattern`` (without anchors) as a msgspec ``Meta(pattern=...)`` the whole string must
    match: ``(?!\\n)`` after ``$`` refuses the trailing newline ``$`` lets through, and is
    also valid ECMAScript (the published JSON Schema keeps working in browsers)."""
    return f"^(?:{pattern})$(?!\\n)"


def printable(max_length: int, min_length: int = 0, description: str | None = None) -> Any:
    """The msgspec type of a free-form name: ``min_length``..``max_length`` characters of
    printable text (a client, an account number, a serial, a label)."""
    return Annotated[str, Meta(min_length=min_length, max_length=max_length,
                               pattern=whole(PRINTABLE), description=description)]


def check_printable(value: str, where: str) -> str:
    """``value`` if it has no control character; else ValidationError naming ``where``."""
    found = _CONTROL.search(value)
    if found is not None:
        raise ValidationError(where, f"control character {found.group()!r} at offset "
                                     f"{found.start()} (names are printable text)")
    return value
