"""What the content variables draw from (issue 21.4): caption templates, hashtag sets,
custom variables per client and per account, and the media library (schema v23).

Owns the SQL of those rows (over the farm database's single writer and readers), their
validation before anything is stored (a caption template must parse, name only known
variable categories and fields, and the caption templates and hashtag sets it names must
exist for its client; a failure names the field, and for a template the parser's offset)
and the media library's files: an upload is streamed to ``DATA/media/.incoming``, hashed
as it comes, its type taken from its first bytes (real image or video magic, never the
name) and its size capped; its row is inserted (the unique name decides a race) and then
the file moved to ``DATA/media/<sha256>.<ext>``, the folder ``${content.media.next}``
draws from. Every change is audited (`FarmDB.audit`). Callers pass the clients they act
for: None is the whole farm (super users); otherwise rows of those clients only, plus the
farm's shared rows to read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import orjson

from actors.coordinator.engagement.accounts import find_accounts
from actors.store.caller_scope import as_clients
from actors.store.execution_records import utc_text
from protocol.errors import FarmError, ValidationError, VariableError
from sequences.spintax import Node, Spin, Var, parse
from sequences.variables import check_template as check_variables

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # ${content.caption.NAME}: spintax NAME_CHARS
TAG_RE = re.compile(r"#?[^\s#]{1,100}")
MAX_TAGS = 60
MAX_TEMPLATE = 10_000
MAX_VALUE = 10_000
IMAGE_MAX_BYTES = 20 * 1024 * 1024
VIDEO_MAX_BYTES = 200 * 1024 * 1024
_CHUNK = 256 * 1024


class ContentDenied(FarmError):
    """The caller may not change this row (the farm's shared content; HTTP 403)."""


class ContentNotFound(LookupError):
    """No such row among the caller's (HTTP 404)."""


class ContentInUse(FarmError):
    """A caption template or hashtag set another caption template names (HTTP 409)."""


class MediaTooLarge(FarmError):
    """An upload went past its kind's size limit (HTTP 413); nothing was kept."""

    def __init__(self, limit: int, kind: str) -> None:
        self.limit = limit
        super().__init__(f"{kind} upload is larger than the limit of {limit} bytes")


class TemplateError(ValidationError):
    """A caption template that does not parse, or names a set or template that is not
    there: the offset and reason in it (HTTP 400 with field "template")."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__("template", f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason  # the parser's words, without the offset


def media_kind(head: bytes) -> tuple[str, str, str] | None:
    """(kind, mime, extension) of a file from its first bytes, or None when they are no
    image or video format the library takes."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "image/jpeg", ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "image/png", ".png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "image/gif", ".gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "image/webp", ".webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video", "video/quicktime", ".mov"
        if brand in (b"M4V ", b"M4VH", b"M4VP"):
            return "video", "video/x-m4v", ".m4v"
        if brand[:3] in (b"hei", b"mif", b"avi"):  # HEIF/AVIF stills share the box format
            return None
        return "video", "video/mp4", ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "video/webm", ".webm"
    return None


def _walk(nodes: Iterable[Node]) -> Iterable[Var]:
    for node in nodes:
        if isinstance(node, Var):
            yield node
            for arg in node.args or ():
                yield from _walk(arg)
        elif isinstance(node, Spin):
            for option in node.options:
                yield from _walk(option)


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValidationError(field, f"{name!r}: use 1-64 of A-Z, a-z, 0-9, _ and -")
    return name


class ContentStore:
    """Owns v23's content rows and the media library's files under ``media_root``."""

    def __init__(self, db: Any, media_root: str | Path | None = None) -> None:
        self.db = db
        self.media_root = Path(media_root) if media_root is not None \
            else Path(db.path).parent / "media"

    # --- owners -----------------------------------------------------------------------------
    async def client_for(self, client: str | None, clients: frozenset[int] | None,
                         field: str = "client") -> int | None:
        """The client id a change is for: ``client`` (a name the caller reaches), else a
        super user's farm-wide (None) or a tenant's only client."""
        if client is None:
            if clients is None:
                return None
            if len(clients) == 1:
                return next(iter(clients))
            raise ValidationError(field, "name the client (you reach several)")
        row = await self.db._one("SELECT client_id FROM clients WHERE name = ?", (client,))
        if row is None or (clients is not None and row[0] not in clients):
            raise ValidationError(field, f"no such client: {client!r}")
        return row[0]

    async def account_for(self, ref: str, clients: frozenset[int] | None,
                          field: str = "account") -> tuple[int, int | None]:
        """(account_id, client_id) of the account ``ref`` (its id, or "platform.number")
        names among the caller's clients' accounts. A name several of those accounts hold
        (the same account number on several phones) must be given as the id."""
        found = await find_accounts(self.db, ref, clients)
        if not found:
            raise ValidationError(field, f"no such account: {ref!r} (an account id or "
                                         "PLATFORM.NUMBER)")
        if len(found) > 1:
            ids = ", ".join(str(a["account_id"]) for a in found)
            raise ValidationError(field, f"{ref!r} names {len(found)} accounts (ids {ids}, on "
                                         "phones " + ", ".join(str(a["serial"]) for a in found)
                                  + "): give the account's id")
        return found[0]["account_id"], found[0]["client_id"]

    def _visible(self, clients: frozenset[int] | None, column: str = "client_id"
                 ) -> tuple[str, tuple]:
        if clients is None:
            return "1 = 1", ()
        ids = tuple(sorted(clients))
        inside = ", ".join("?" * len(ids)) if ids else "NULL"
        return f"({column} IS NULL OR {column} IN ({inside}))", ids

    async def _client_names(self) -> dict[int, str]:
        return {r[0]: r[1] for r in await self.db._all("SELECT client_id, name FROM clients")}

    @staticmethod
    def _may_change(client_id: int | None, clients: frozenset[int] | None) -> None:
        if clients is not None and client_id not in clients:
            raise ContentDenied("the farm's shared content is changed by super users only")

    # --- caption templates and hashtag sets ---------------------------------------------------
    async def _named(self, table: str, client_id: int | None) -> set[str]:
        rows = await self.db._all(f"SELECT name FROM {table} WHERE client_id IS NULL"
                                  " OR client_id = ?", (client_id,))
        return {r[0] for r in rows}

    async def check_template(self, template: str, client_id: int | None,
                             own_name: str | None = None) -> None:
        """Raise TemplateError when ``template`` does not parse, names a variable no phone
        could resolve (unknown category, field or form) or a caption template or hashtag set
        the client (with the farm's shared ones) does not have."""
        if len(template) > MAX_TEMPLATE:
            raise TemplateError(MAX_TEMPLATE, f"longer than {MAX_TEMPLATE} characters")
        if not template:
            raise TemplateError(0, "empty")
        try:
            # What sequence texts are checked with (sequences.load.template_problem): the
            # syntax, and no unknown category, field or form of variable.
            check_variables(template)
            nodes = parse(template)
        except VariableError as exc:
            raise TemplateError(exc.offset, exc.reason) from None
        captions = hashtags = None
        for var in _walk(nodes):
            if var.path[:1] != ("content",) or len(var.path) != 3:
                continue
            kind, name = var.path[1], var.path[2]
            if kind == "caption":
                captions = captions if captions is not None else await self._named(
                    "caption_templates", client_id)
                if name == own_name:
                    raise TemplateError(var.offset, f"caption template {name!r} names itself")
                if name not in captions:
                    raise TemplateError(var.offset, f"no caption template {name!r}")
            elif kind == "hashtags":
                hashtags = hashtags if hashtags is not None else await self._named(
                    "hashtag_sets", client_id)
                if name not in hashtags:
                    raise TemplateError(var.offset, f"no hashtag set {name!r}")

    async def _templates_naming(self, kind: str, name: str, client_id: int | None) -> set[str]:
        """Caption templates that would break without ``${content.<kind>.<name>}`` of
        ``client_id``: that client's (a shared row: every client's that has none of its own,
        and the farm's)."""
        rows = await self.db._all("SELECT name, client_id, template FROM caption_templates"
                                  + ("" if client_id is None else " WHERE client_id = ?"),
                                  () if client_id is None else (client_id,))
        if client_id is None:  # a client with its own row of that name does not use ours
            table = "caption_templates" if kind == "caption" else "hashtag_sets"
            own = {r[0] for r in await self.db._all(
                f"SELECT client_id FROM {table} WHERE name = ? AND client_id IS NOT NULL",
                (name,))}
            rows = [r for r in rows if r[1] not in own]
        found = set()
        for row in rows:
            try:
                nodes = parse(row[2])
            except VariableError:
                continue
            if any(v.path == ("content", kind, name) for v in _walk(nodes)) and not (
                    kind == "caption" and row[0] == name and row[1] == client_id):
                found.add(row[0])
        return found

    async def list_rows(self, table: str, clients: frozenset[int] | None) -> list[dict]:
        column = "template" if table == "caption_templates" else "tags"
        key = "caption_template_id" if table == "caption_templates" else "hashtag_set_id"
        where, args = self._visible(clients)
        with as_clients(clients):
            rows = await self.db._all(f"SELECT {key}, name, client_id, {column} FROM {table}"
                                      f" WHERE {where} ORDER BY name, client_id", args)
        names = await self._client_names()
        out = []
        for r in rows:
            item = {"id": r[0], "name": r[1], "client_id": r[2], "client": names.get(r[2])}
            item[column] = orjson.loads(r[3]) if column == "tags" else r[3]
            out.append(item)
        return out

    async def _one_row(self, table: str, name: str, client_id: int | None) -> dict | None:
        column = "template" if table == "caption_templates" else "tags"
        key = "caption_template_id" if table == "caption_templates" else "hashtag_set_id"
        row = await self.db._one(f"SELECT {column}, {key} FROM {table} WHERE name = ?"
                                 " AND COALESCE(client_id, 0) = COALESCE(?, 0)",
                                 (name, client_id))
        if row is None:
            return None
        return {"id": row[1], "name": name, "client_id": client_id,
                column: orjson.loads(row[0]) if column == "tags" else row[0]}

    async def put_caption(self, name: str, template: str, client_id: int | None,
                          clients: frozenset[int] | None, actor: str | None,
                          reason: str | None = None) -> dict:
        check_name(name)
        self._may_change(client_id, clients)
        await self.check_template(template, client_id, own_name=name)
        before = await self._one_row("caption_templates", name, client_id)
        await self.db.set_caption_template(name, template, client_id)
        after = await self._one_row("caption_templates", name, client_id)
        # Audited by row id: the audit trail maps it to its client (FarmDB._AUDIT_CLIENT_SQL).
        await self.db.audit("caption_template", after["id"], "update" if before else "create",
                            before, after, actor=actor, reason=reason)
        from actors.coordinator.definitions.versions import VersionStore

        old = None if before is None else {"template": before["template"]}
        await VersionStore(self.db).record_save("caption", name, client_id, old,
                                                {"template": template}, author=actor,
                                                reason=reason)
        return {**after, "created": before is None}

    async def put_hashtags(self, name: str, tags: list[str], client_id: int | None,
                           clients: frozenset[int] | None, actor: str | None) -> dict:
        check_name(name)
        self._may_change(client_id, clients)
        if not isinstance(tags, list) or not tags or len(tags) > MAX_TAGS:
            raise ValidationError("tags", f"give 1-{MAX_TAGS} hashtags")
        for i, tag in enumerate(tags):
            if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
                raise ValidationError(f"tags[{i}]", f"{tag!r}: one word, no spaces or inner #")
        tags = [t.lstrip("#") for t in tags]
        before = await self._one_row("hashtag_sets", name, client_id)
        await self.db.set_hashtag_set(name, tags, client_id)
        after = await self._one_row("hashtag_sets", name, client_id)
        await self.db.audit("hashtag_set", after["id"], "update" if before else "create",
                            before, after, actor=actor)
        return {**after, "created": before is None}

    async def delete_named(self, table: str, name: str, client_id: int | None,
                           clients: frozenset[int] | None, actor: str | None) -> dict:
        self._may_change(client_id, clients)
        before = await self._one_row(table, name, client_id)
        if before is None:
            raise ContentNotFound(f"no {table[:-1].replace('_', ' ')} {name!r}")
        users = await self._templates_naming("caption" if table == "caption_templates"
                                             else "hashtags", name, client_id)
        if users:
            raise ContentInUse(f"{table[:-1].replace('_', ' ')} {name!r} is named by caption "
                               f"template(s) {', '.join(sorted(users))}: change them first")
        await self.db._write(f"DELETE FROM {table} WHERE name = ?"
                             " AND COALESCE(client_id, 0) = COALESCE(?, 0)", (name, client_id))
        await self.db.audit(table[:-1], before["id"], "delete", before, None, actor=actor)
        return before

    # --- custom variables ---------------------------------------------------------------------
    async def list_vars(self, clients: frozenset[int] | None) -> list[dict]:
        where, args = self._visible(clients, "v.client_id")
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT v.custom_variable_id, v.name, v.value, v.client_id, v.account_id,"
                " a.platform, a.account_number FROM custom_variables v"
                " LEFT JOIN accounts a ON a.account_id = v.account_id"
                f" WHERE {where} ORDER BY v.name, v.client_id, v.account_id", args)
        names = await self._client_names()
        return [{"id": r[0], "name": r[1], "value": r[2], "client_id": r[3],
                 "client": names.get(r[3]), "account_id": r[4],
                 "account": f"{r[5]}.{r[6]}" if r[4] is not None else None} for r in rows]

    async def _var(self, name: str, client_id: int | None, account_id: int | None) -> Any:
        return await self.db._one(
            "SELECT custom_variable_id, value FROM custom_variables WHERE name = ?"
            " AND COALESCE(client_id, 0) = COALESCE(?, 0)"
            " AND COALESCE(account_id, 0) = COALESCE(?, 0)", (name, client_id, account_id))

    async def put_var(self, name: str, value: str, client_id: int | None,
                      account_id: int | None, clients: frozenset[int] | None,
                      actor: str | None) -> dict:
        check_name(name)
        self._may_change(client_id, clients)
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise ValidationError("value", f"a text of at most {MAX_VALUE} characters")
        found = await self._var(name, client_id, account_id)
        if found is None:
            var_id = (await self.db._write(
                "INSERT INTO custom_variables (name, value, client_id, account_id)"
                " VALUES (?, ?, ?, ?) RETURNING custom_variable_id",
                (name, value, client_id, account_id)))[0]
        else:
            var_id = found[0]
            await self.db._write("UPDATE custom_variables SET value = ? WHERE"
                                 " custom_variable_id = ?", (value, var_id))
        owner = {"client_id": client_id, "account_id": account_id}
        after = {"name": name, "value": value, **owner}
        await self.db.audit("custom_variable", var_id, "update" if found else "create",
                            None if found is None else {"name": name, "value": found[1],
                                                        **owner}, after, actor=actor)
        return {**after, "created": found is None}

    async def delete_var(self, name: str, client_id: int | None, account_id: int | None,
                         clients: frozenset[int] | None, actor: str | None) -> dict:
        self._may_change(client_id, clients)
        found = await self._var(name, client_id, account_id)
        if found is None:
            raise ContentNotFound(f"no custom variable {name!r} there")
        await self.db._write("DELETE FROM custom_variables WHERE custom_variable_id = ?",
                             (found[0],))
        before = {"name": name, "value": found[1], "client_id": client_id,
                  "account_id": account_id}
        await self.db.audit("custom_variable", found[0], "delete", before, None, actor=actor)
        return before

    # --- media library ------------------------------------------------------------------------
    async def list_media(self, clients: frozenset[int] | None) -> list[dict]:
        where, args = self._visible(clients)
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT media_item_id, name, client_id, sha256, kind, mime, size_bytes,"
                f" file_name, created_at, created_by FROM media_items WHERE {where}"
                " ORDER BY name, client_id", args)
        names = await self._client_names()
        return [{"id": r[0], "name": r[1], "client_id": r[2], "client": names.get(r[2]),
                 "sha256": r[3], "kind": r[4], "mime": r[5], "size": r[6], "file": r[7],
                 "created_at": str(r[8]), "created_by": r[9]} for r in rows]

    async def add_media(self, name: str, chunks: AsyncIterator[bytes], client_id: int | None,
                        clients: frozenset[int] | None, actor: str | None,
                        expected: int | None = None) -> dict:
        """Receive an upload whole and checked, then store its file and row."""
        check_name(name)
        self._may_change(client_id, clients)
        if await self.db._one("SELECT 1 FROM media_items WHERE name = ? AND"
                              " COALESCE(client_id, 0) = COALESCE(?, 0)", (name, client_id)):
            raise ValidationError("name", f"{name!r} is already in the media library")
        if expected is not None and expected > VIDEO_MAX_BYTES:
            raise MediaTooLarge(VIDEO_MAX_BYTES, "media")
        incoming = self.media_root / ".incoming"
        await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
        temp = incoming / f"{secrets.token_hex(8)}.part"
        digest, size, head, kind = hashlib.sha256(), 0, b"", None
        try:
            with temp.open("wb") as out:
                async for chunk in chunks:
                    if kind is None:
                        head += chunk
                        if len(head) >= 16:
                            kind = media_kind(head)
                            if kind is None:
                                raise ValidationError("body", "not an image or video this "
                                                      "library takes (JPEG, PNG, GIF, WebP, "
                                                      "MP4, MOV, M4V, WebM), by its first bytes")
                    size += len(chunk)
                    limit = IMAGE_MAX_BYTES if kind and kind[0] == "image" else VIDEO_MAX_BYTES
                    if size > limit:
                        raise MediaTooLarge(limit, kind[0] if kind else "media")
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
            if kind is None:
                kind = media_kind(head)
                if kind is None:
                    raise ValidationError("body", "empty, or not an image or video this "
                                          "library takes, by its first bytes")
            if expected is not None and size < expected:
                raise ValidationError("body", f"ended after {size} of {expected} bytes")
            sha = digest.hexdigest()
            file_name = sha + kind[2]
            # The row first, then the file: a concurrent upload of the same name that got
            # past the check above loses at the unique index before any file of the
            # library is touched (a file already there may be another row's).
            row = await self.db._write(
                "INSERT INTO media_items (client_id, name, sha256, kind, mime, size_bytes,"
                " file_name, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING media_item_id",
                (client_id, name, sha, kind[0], kind[1], size, file_name, utc_text(), actor))
            if row is None:
                raise ValidationError("name", f"{name!r} is already in the media library")
            try:
                await asyncio.to_thread(os.replace, temp, self.media_root / file_name)
            except BaseException:
                await self.db._write("DELETE FROM media_items WHERE media_item_id = ?",
                                     (row[0],))
                raise
        finally:
            temp.unlink(missing_ok=True)
        item = {"id": row[0], "name": name, "client_id": client_id, "sha256": sha,
                "kind": kind[0], "mime": kind[1], "size": size, "file": file_name}
        await self.db.audit("media", row[0], "create", None, item, actor=actor)
        return item

    async def delete_media(self, media_id: int, clients: frozenset[int] | None,
                           actor: str | None) -> dict:
        where, args = self._visible(clients)
        row = await self.db._one(
            "SELECT media_item_id, name, client_id, sha256, kind, file_name FROM media_items"
            f" WHERE media_item_id = ? AND {where}", (media_id, *args))
        if row is None:
            raise ContentNotFound(f"no media {media_id}")
        self._may_change(row[2], clients)
        await self.db._write("DELETE FROM media_items WHERE media_item_id = ?", (media_id,))
        before = {"id": row[0], "name": row[1], "client_id": row[2], "sha256": row[3],
                  "kind": row[4], "file": row[5]}
        # The file goes with its last row (one copy per content, whoever uploaded it).
        if await self.db._one("SELECT 1 FROM media_items WHERE file_name = ?", (row[5],)) is None:
            await asyncio.to_thread((self.media_root / row[5]).unlink, missing_ok=True)
        await self.db.audit("media", media_id, "delete", before, None, actor=actor)
        return before
