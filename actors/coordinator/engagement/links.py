"""Links in bio and their clicks (schema v5's ``link_in_bio`` and ``link_clicks``, v24's
``code``).

Owns the SQL of both tables and the rules of their values: a link is an account's http(s)
URL with a title and a short unguessable ``code`` (8 URL-safe characters from
`secrets`; its public address is ``/l/{code}``); removing one sets ``active_to`` (its row
and clicks stay for the rollups; its code leads nowhere any more). Clicks are counted per
link, UTC day and source (one row each, upserted): the redirect's, batched by
actors.coordinator.engagement.clicks, at most `MAX_SOURCES` sources a day (then `OTHER`);
an import adds its count to the source it names.
"""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime, timezone
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from actors.coordinator.engagement.accounts import (ACCOUNT_JOINS, account_name, client_filter,
                                                    in_list)
from actors.coordinator.engagement.clicks import MAX_SOURCES, OTHER
from actors.coordinator.engagement.conversations import iso
from actors.store.caller_scope import as_clients
from actors.store.execution_records import utc_text
from protocol.errors import ValidationError

CODE_BYTES = 6                       # secrets.token_urlsafe(6): 8 characters, 48 bits
CODE = re.compile(r"[A-Za-z0-9_-]{4,64}")
SOURCE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
DIRECT = "direct"
MAX_URL = 2048
MAX_TITLE = 200
MAX_IMPORT = 1_000_000               # clicks one import may add to one row


def new_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


def check_url(url: str, where: str = "$.url") -> str:
    """``url`` when it is an absolute http(s) URL with a host (no user name or password, no
    whitespace or control characters, at most `MAX_URL` characters), else ValidationError."""
    if len(url) > MAX_URL:
        raise ValidationError(where, f"at most {MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValidationError(where, "no spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise ValidationError(where, f"not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError(where, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValidationError(where, "the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(where, "no user name or password in the URL")
    return url


def check_source(source: str, where: str = "$.source") -> str:
    """A click source: lowercase letters, digits, ``.``, ``_``, ``-``; 1-64 characters."""
    if not SOURCE.fullmatch(source):
        raise ValidationError(where, "1-64 lowercase letters, digits, '.', '_' or '-', "
                                     f"starting with a letter or digit; got {source[:70]!r}")
    return source


def click_source(src: str | None, referer: str | None) -> str:
    """Where a click came from: ``?src=`` when it is a source (lowercased), else the
    Referer's host, else `DIRECT`."""
    if src:
        candidate = src.strip().lower()
        if SOURCE.fullmatch(candidate):
            return candidate
    if referer:
        try:
            host = (urlsplit(referer).hostname or "").lower()
        except ValueError:
            host = ""
        if SOURCE.fullmatch(host):
            return host
    return DIRECT


def check_day(text: str, where: str = "$.date", today: date | None = None) -> str:
    """A UTC day ``YYYY-MM-DD`` not after today."""
    try:
        day = date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
    except ValueError:
        day = None
    if day is None:
        raise ValidationError(where, f"expected a day YYYY-MM-DD, got {text[:40]!r}")
    if day > (today or datetime.now(timezone.utc).date()):
        raise ValidationError(where, f"{text} has not begun yet (UTC)")
    return day.isoformat()


def _view(row: Any, sources: dict[str, int]) -> dict[str, Any]:
    return {"link_id": row["link_id"], "account_id": row["account_id"],
            "account": account_name(row), "serial": row["serial"], "url": row["url"],
            "title": row["title"], "code": row["code"], "path": f"/l/{row['code']}",
            "created_at": iso(row["created_at"]), "active_from": iso(row["active_from"]),
            "removed_at": iso(row["active_to"]), "clicks": int(row["clicks"] or 0),
            "clicks_by_source": sources}


_ADD_CLICKS = (
    "INSERT INTO link_clicks (link_id, click_date, click_count, source, created_at,"
    " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (link_id, click_date, source)"
    " DO UPDATE SET click_count = link_clicks.click_count + excluded.click_count,"
    " updated_at = excluded.updated_at")

_LINKS = ("SELECT l.link_id, l.account_id, l.url, l.title, l.code, l.created_at,"
          " l.active_from, l.active_to, a.platform, a.account_number,"
          " ph.serial_number AS serial,"
          " (SELECT SUM(k.click_count) FROM link_clicks k WHERE k.link_id = l.link_id)"
          " AS clicks"
          f" FROM link_in_bio l JOIN accounts a ON a.account_id = l.account_id{ACCOUNT_JOINS}")


class LinkStore:
    """Owns the rows of ``link_in_bio`` and ``link_clicks`` (through ``db``, the FarmDB)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def add(self, account_id: int, url: str, title: str | None) -> int:
        """A new link of the account (``url`` checked by the caller); its id. A code that
        happens to be taken already is drawn again."""
        now = utc_text()
        for _ in range(8):
            row = await self.db._write(
                "INSERT INTO link_in_bio (account_id, url, title, active_from, created_at,"
                " code) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (code) DO NOTHING"
                " RETURNING link_id", (account_id, url, title, now, now, new_code()))
            if row is not None:
                return row[0]
        raise RuntimeError("no free link code after 8 draws")

    async def list(self, clients: frozenset[int] | None = None, *,
                   account_ids: Sequence[int] | None = None, link_id: int | None = None,
                   removed: bool = False) -> list[dict[str, Any]]:
        """Links of ``clients``' accounts (None: every client's), newest first, with their
        click totals; removed ones only with ``removed``."""
        where, args = client_filter(clients)
        if account_ids is not None:
            ids_sql, ids = in_list(account_ids)
            where, args = f"{where} AND l.account_id IN {ids_sql}", (*args, *ids)
        if link_id is not None:
            where, args = f"{where} AND l.link_id = ?", (*args, link_id)
        if not removed:
            where += " AND l.active_to IS NULL"
        with as_clients(clients):
            rows = await self.db._all(f"{_LINKS} WHERE {where} ORDER BY l.link_id DESC", args)
            sources: dict[int, dict[str, int]] = {}
            if rows:
                ids_sql, ids = in_list(r["link_id"] for r in rows)
                for r in await self.db._all(
                        "SELECT link_id, source, SUM(click_count) AS n FROM link_clicks"
                        f" WHERE link_id IN {ids_sql} GROUP BY link_id, source"
                        " ORDER BY link_id, source", ids):
                    sources.setdefault(r["link_id"], {})[r["source"]] = int(r["n"] or 0)
        return [_view(r, sources.get(r["link_id"], {})) for r in rows]

    async def get(self, link_id: int, clients: frozenset[int] | None = None,
                  removed: bool = False) -> dict[str, Any] | None:
        found = await self.list(clients, link_id=link_id, removed=removed)
        return found[0] if found else None

    async def remove(self, link_id: int) -> bool:
        """End a link now (its code leads nowhere); False when it was not active."""
        row = await self.db._write(
            "UPDATE link_in_bio SET active_to = ? WHERE link_id = ? AND active_to IS NULL"
            " RETURNING link_id", (utc_text(), link_id))
        return row is not None

    async def by_code(self, code: str, clients: frozenset[int] | None = None
                      ) -> dict[str, Any] | None:
        """The active link whose code is ``code`` (of ``clients``' accounts; None: any)."""
        if not CODE.fullmatch(code):
            return None
        where, args = client_filter(clients)
        with as_clients(clients):
            row = await self.db._one(
                "SELECT l.link_id, l.url, l.account_id FROM link_in_bio l JOIN accounts a"
                f" ON a.account_id = l.account_id{ACCOUNT_JOINS} WHERE {where} AND l.code = ?"
                " AND l.active_to IS NULL", (*args, code))
        return None if row is None else dict(row)

    async def count(self, link_id: int, day: str, source: str, clicks: int = 1) -> None:
        """Add ``clicks`` to the link's row of ``day`` and ``source`` (made if missing): an
        import's, named by a user (no cap on its sources)."""
        await self.db._write(_ADD_CLICKS, (link_id, day, clicks, source, utc_text(), utc_text()))

    async def add_clicks(self, batch: Mapping[tuple[int, str], Mapping[str, int]]) -> None:
        """Add the public redirect's clicks, ``{(link_id, day): {source: clicks}}``, in one
        writer job. A link keeps at most `MAX_SOURCES` sources of its own a day: a source
        new to that day once it has them counts under `OTHER` (the busiest new sources
        take the free places first)."""
        now = utc_text()

        def job(conn: Any) -> None:
            ids_sql, ids = in_list({link_id for link_id, _ in batch})
            # A link gone meanwhile (never, today: links are only ended) must not fail the
            # batch for ever.
            present = {r[0] for r in conn.execute(
                f"SELECT link_id FROM link_in_bio WHERE link_id IN {ids_sql}", ids).fetchall()}
            rows = []
            for (link_id, day), by_source in batch.items():
                if link_id not in present:
                    continue
                known = {r[0] for r in conn.execute(
                    "SELECT source FROM link_clicks WHERE link_id = ? AND click_date = ?",
                    (link_id, day)).fetchall()} - {OTHER}
                merged: dict[str, int] = {}
                for source, clicks in sorted(by_source.items(), key=lambda s: (-s[1], s[0])):
                    if source != OTHER and source not in known:
                        if len(known) >= MAX_SOURCES:
                            source = OTHER
                        else:
                            known.add(source)
                    merged[source] = merged.get(source, 0) + clicks
                rows += [(link_id, day, clicks, source, now, now)
                         for source, clicks in merged.items()]
            if rows:
                conn.executemany(_ADD_CLICKS, rows)

        await self.db._atomic(job)
