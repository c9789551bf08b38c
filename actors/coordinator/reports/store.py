"""Stored reports (schema v19, table ``reports``): write once, read by id or by client.

Owns the SQL of the ``reports`` table over the farm database's single writer and readers
(as actors.access.tokens does for its table): `ReportStore.add` stores a report whole in
one statement, a scheduled one at most once per client and day (``schedule_key`` is
unique: the second `add` finds the first and stores nothing); `mark_sent` records that the
notifier took it. Reads made for a caller run with its clients set (actors.store.caller_scope)
and filter by them too: on PostgreSQL row-level security is the second guard.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

import orjson

from actors.store.caller_scope import as_clients
from actors.store.execution_records import utc_text

DAILY, MANUAL = "daily", "manual"
# Columns of a listing (no bodies: a page of reports stays small).
_HEAD = ("r.report_id, r.client_id, c.name AS client, r.kind, r.day, r.period_start,"
         " r.period_end, r.created_at, r.created_by, r.title, r.sent_at, r.send_error")


def schedule_key(client_id: int, day: str) -> str:
    """The key that makes a scheduled report once per client and day."""
    return f"daily:{client_id}:{day}"


def _in_list(ids: Iterable[int]) -> tuple[str, tuple[int, ...]]:
    ids = tuple(sorted(ids))
    if not ids:  # PostgreSQL has no IN (): a list that matches nothing
        return "(NULL)", ()
    return "(" + ", ".join("?" * len(ids)) + ")", ids


def _row(row: Any, bodies: bool = False) -> dict[str, Any]:
    out = dict(row)
    if bodies and isinstance(out.get("summary"), str):
        out["summary"] = orjson.loads(out["summary"])
    return out


class ReportStore:
    """Owns the rows of table ``reports`` (through ``db``, the farm's FarmDB)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def add(self, *, client_id: int, kind: str, day: str, period_start: datetime,
                  period_end: datetime, title: str, text: str, html: str,
                  summary: dict[str, Any], created_by: str | None = None,
                  created_at: datetime | None = None) -> tuple[int, bool]:
        """Store one report; (its id, True) when stored now. A daily report of a client
        and day that exists already is not stored again: (that one's id, False)."""
        key = schedule_key(client_id, day) if kind == DAILY else None
        row = await self.db._write(
            "INSERT INTO reports (client_id, kind, day, period_start, period_end,"
            " schedule_key, created_at, created_by, title, text, html, summary)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (schedule_key) DO NOTHING RETURNING report_id",
            (client_id, kind, day, utc_text(period_start), utc_text(period_end), key,
             utc_text(created_at), created_by, title, text, html,
             orjson.dumps(summary).decode()))
        if row is not None:
            return row[0], True
        found = await self.db._one("SELECT report_id FROM reports WHERE schedule_key = ?",
                                   (key,))
        return found[0], False

    async def daily_id(self, client_id: int, day: str) -> int | None:
        """The id of the client's daily report of ``day``, None if none was made."""
        row = await self.db._one("SELECT report_id FROM reports WHERE schedule_key = ?",
                                 (schedule_key(client_id, day),))
        return None if row is None else row[0]

    async def mark_sent(self, report_id: int, error: str | None = None) -> None:
        """The notifier took the report (``error``: it could not, and why)."""
        if error is None:
            await self.db._write("UPDATE reports SET sent_at = ?, send_error = NULL"
                                 " WHERE report_id = ?", (utc_text(), report_id))
        else:
            await self.db._write("UPDATE reports SET send_error = ? WHERE report_id = ?",
                                 (error, report_id))

    async def unsent_daily(self, since_day: str) -> list[dict[str, Any]]:
        """Daily reports of ``since_day`` or later the notifier has not taken yet, oldest
        first, with their bodies (a coordinator stopped between storing and sending)."""
        rows = await self.db._all(
            f"SELECT {_HEAD}, r.text, r.html, r.summary FROM reports r"
            " LEFT JOIN clients c ON c.client_id = r.client_id"
            " WHERE r.sent_at IS NULL AND r.kind = ? AND r.day >= ? ORDER BY r.report_id",
            (DAILY, since_day))
        return [_row(r, bodies=True) for r in rows]

    async def get(self, report_id: int,
                  clients: frozenset[int] | None = None) -> dict[str, Any] | None:
        """One report with its text, HTML and summary; None when there is none, or it is
        not of ``clients`` (None: any client)."""
        where, args = "r.report_id = ?", (report_id,)
        if clients is not None:
            in_list, ids = _in_list(clients)
            where, args = f"{where} AND r.client_id IN {in_list}", (*args, *ids)
        with as_clients(clients):
            row = await self.db._one(
                f"SELECT {_HEAD}, r.text, r.html, r.summary FROM reports r"
                f" LEFT JOIN clients c ON c.client_id = r.client_id WHERE {where}", args)
        return None if row is None else _row(row, bodies=True)

    async def list(self, clients: frozenset[int] | None = None, *,
                   client_id: int | None = None, day: str | None = None,
                   before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Reports newest first (by id), without bodies: of ``clients`` (None: every
        client), optionally one client's, one day's, and ids below ``before``."""
        where, args = ["1 = 1"], []
        if clients is not None:
            in_list, ids = _in_list(clients)
            where.append(f"r.client_id IN {in_list}")
            args += ids
        for clause, value in (("r.client_id = ?", client_id), ("r.day = ?", day),
                              ("r.report_id < ?", before)):
            if value is not None:
                where.append(clause)
                args.append(value)
        with as_clients(clients):
            rows = await self.db._all(
                f"SELECT {_HEAD} FROM reports r LEFT JOIN clients c"
                f" ON c.client_id = r.client_id WHERE {' AND '.join(where)}"
                " ORDER BY r.report_id DESC LIMIT ?", (*args, limit))
        return [_row(r) for r in rows]
