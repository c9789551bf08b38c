"""The ``definition_versions`` table (schema v25): immutable versions of definitions.

A version is numbered within its (kind, client, name): 1, 2, 3... Rows are only ever
inserted. `VersionStore.record` numbers and writes one in a single writer job, so two saves
at once get two numbers, never the same one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import orjson

from actors.store.caller_scope import as_clients
from actors.store.execution_records import utc_text

KINDS = ("sequence", "workflow", "schedule", "screen", "caption")
FOUND = "as found"  # the reason of a version nobody saved: the definition as it was met
# Listing columns: everything but the content.
_HEAD = ("v.definition_version_id, v.kind, v.name, v.client_id, c.name AS client, v.version,"
         " v.author, v.reason, v.content_hash, v.created_at")


def canonical(content: Any) -> bytes:
    """The bytes a content's hash is taken of: sorted keys, no spaces."""
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def content_hash(content: Any) -> str:
    return hashlib.sha256(canonical(content)).hexdigest()


def _row(row: Any, with_content: bool) -> dict[str, Any]:
    out = dict(row)
    if with_content and isinstance(out.get("content"), (str, bytes)):
        out["content"] = orjson.loads(out["content"])
    return out


class VersionStore:
    """Owns the rows of ``definition_versions`` (through ``db``, the farm's FarmDB)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def record(self, kind: str, name: str, client_id: int | None, content: Any, *,
                     author: str | None, reason: str | None,
                     only_if_changed: bool = False) -> dict[str, Any]:
        """Store ``content`` as the next version of the definition; returns the version's
        head (no content). ``only_if_changed``: when the latest version has the same
        content, store nothing and return that one (a file read again at a run's start)."""
        if kind not in KINDS:
            raise ValueError(f"unknown definition kind {kind!r}")
        digest = content_hash(content)
        body = canonical(content).decode()
        now = utc_text()

        def job(conn: Any) -> int:
            latest = conn.execute(
                "SELECT definition_version_id, version, content_hash FROM definition_versions"
                " WHERE kind = ? AND name = ? AND COALESCE(client_id, 0) = COALESCE(?, 0)"
                " ORDER BY version DESC LIMIT 1", (kind, name, client_id)).fetchone()
            if only_if_changed and latest is not None and latest[2] == digest:
                return latest[0]
            number = 1 if latest is None else latest[1] + 1
            return conn.execute(
                "INSERT INTO definition_versions (kind, name, client_id, version, author,"
                " reason, content_hash, content, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING definition_version_id",
                (kind, name, client_id, number, author, reason, digest, body, now)
            ).fetchone()[0]

        version_id = await self.db._atomic(job)
        found = await self.db._one(
            f"SELECT {_HEAD} FROM definition_versions v LEFT JOIN clients c"
            " ON c.client_id = v.client_id WHERE v.definition_version_id = ?", (version_id,))
        return _row(found, False)

    async def record_found(self, kind: str, name: str, client_id: int | None, content: Any,
                           reason: str = FOUND) -> dict[str, Any]:
        """The definition as it is now, found outside a save (a file changed on disk, a row
        saved before v25), as a version with no author: stored only when it differs from the
        newest."""
        return await self.record(kind, name, client_id, content, author=None, reason=reason,
                                 only_if_changed=True)

    async def record_save(self, kind: str, name: str, client_id: int | None, before: Any,
                          after: Any, *, author: str | None, reason: str | None) -> None:
        """One save: ``before`` (the definition it replaced, None for a new one) caught up
        first, so a definition never versioned keeps its old state, then ``after``."""
        if before is not None:
            await self.record_found(kind, name, client_id, before)
        await self.record(kind, name, client_id, after, author=author, reason=reason)

    async def owners(self, kind: str, name: str,
                     clients: Iterable[int] | None) -> list[int | None]:
        """The clients (None: farm-wide) that have versions of ``kind`` ``name`` among those
        ``clients`` may see (None: all), farm-wide last."""
        where, args = _visible(clients)
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT DISTINCT client_id FROM definition_versions v"
                f" WHERE kind = ? AND name = ? AND {where}", (kind, name, *args))
        return sorted((r[0] for r in rows), key=lambda c: (c is None, c or 0))

    async def versions(self, kind: str, name: str, client_id: int | None) -> list[dict]:
        """Every version of the definition, newest first, without content."""
        with as_clients(None if client_id is None else [client_id]):
            rows = await self.db._all(
                f"SELECT {_HEAD} FROM definition_versions v LEFT JOIN clients c"
                " ON c.client_id = v.client_id WHERE v.kind = ? AND v.name = ?"
                " AND COALESCE(v.client_id, 0) = COALESCE(?, 0) ORDER BY v.version DESC",
                (kind, name, client_id))
        return [_row(r, False) for r in rows]

    async def version(self, kind: str, name: str, client_id: int | None,
                      number: int) -> dict | None:
        """One version with its content; None when there is no such number."""
        with as_clients(None if client_id is None else [client_id]):
            row = await self.db._one(
                f"SELECT {_HEAD}, v.content FROM definition_versions v LEFT JOIN clients c"
                " ON c.client_id = v.client_id WHERE v.kind = ? AND v.name = ?"
                " AND COALESCE(v.client_id, 0) = COALESCE(?, 0) AND v.version = ?",
                (kind, name, client_id, number))
        return None if row is None else _row(row, True)

    async def latest(self, kind: str, name: str, client_id: int | None) -> dict | None:
        """The newest version with its content, None when there is none."""
        heads = await self.versions(kind, name, client_id)
        return None if not heads else await self.version(kind, name, client_id,
                                                         heads[0]["version"])

    async def current(self, clients: Iterable[int] | None = None) -> list[dict]:
        """The newest version of every definition ``clients`` may see (None: all), with
        content, by kind, client and name (what an export writes)."""
        where, args = _visible(clients, "v.")
        with as_clients(clients):
            rows = await self.db._all(
                f"SELECT {_HEAD}, v.content FROM definition_versions v LEFT JOIN clients c"
                " ON c.client_id = v.client_id WHERE v.version = (SELECT MAX(w.version)"
                " FROM definition_versions w WHERE w.kind = v.kind AND w.name = v.name"
                " AND COALESCE(w.client_id, 0) = COALESCE(v.client_id, 0))"
                f" AND {where}"
                " ORDER BY v.kind, c.name, v.name", args)
        return [_row(r, True) for r in rows]


def _visible(clients: Iterable[int] | None, table: str = "") -> tuple[str, tuple]:
    """Farm-wide rows and ``clients``' own (None: every row); ``table``: the columns' prefix
    in the statement (``v.``). Farm-wide rows every caller reads are the shared library,
    the farm's sequence files and registry; not a super user's schedule (a farm schedule,
    which tenants never see)."""
    if clients is None:
        return "1 = 1", ()
    shared = f"({table}client_id IS NULL AND {table}kind <> 'schedule')"
    ids = tuple(sorted({int(c) for c in clients}))
    if not ids:
        return shared, ()
    return f"({shared} OR {table}client_id IN ({', '.join('?' * len(ids))}))", ids
