"""The one place SQL written for SQLite is turned into PostgreSQL's: statements (placeholders,
literal percent signs) and the schema's migrations (native types).

The farm's SQL is written once, in the common subset both engines run (``ON CONFLICT``,
``RETURNING``, ``COALESCE``), with SQLite's ``?`` placeholders. On PostgreSQL, psycopg takes
``%s`` and reads every ``%`` of a statement as a placeholder's start, so both are rewritten
here, outside quoted text for ``?`` and everywhere for ``%``. Migration scripts get
PostgreSQL's native types: BIGSERIAL keys, BIGINT integers (they hold those keys),
TIMESTAMPTZ, JSONB, DOUBLE PRECISION. A migration that cannot be written in the common
subset has a PostgreSQL twin file (``vN.postgresql.sql``) instead.
"""

from __future__ import annotations

import re
from functools import lru_cache

# (pattern, replacement) applied in order to a migration script for PostgreSQL.
_DDL_TYPES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), replacement) for pattern, replacement in (
        (r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b", "BIGSERIAL PRIMARY KEY"),
        (r"\bINTEGER\b", "BIGINT"),
        (r"\bTIMESTAMP\b", "TIMESTAMPTZ"),
        (r"\bDATETIME\b", "TIMESTAMPTZ"),
        (r"\bJSON\b", "JSONB"),
        (r"\bREAL\b", "DOUBLE PRECISION"),
        (r"\bBLOB\b", "BYTEA"),
        (r"\bIFNULL\s*\(", "COALESCE("),
    ))


@lru_cache(maxsize=4096)
def to_postgres(sql: str) -> str:
    """``sql`` with ``?`` placeholders (outside quotes and comments) as ``%s`` and every
    ``%`` doubled."""
    out: list[str] = []
    quote: str | None = None  # ', " or -- (a comment, to the end of its line)
    for ch in sql:
        if quote is not None:
            if ch == quote or (quote == "--" and ch == "\n"):
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "-" and out and out[-1] == "-":
            quote = "--"
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def ddl_to_postgres(script: str) -> str:
    """A migration script written for SQLite with PostgreSQL's native types."""
    for pattern, replacement in _DDL_TYPES:
        script = pattern.sub(replacement, script)
    return script
