"""Bearer tokens for people and scripts: random, stored as SHA-256 only, expiring and
revocable."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from actors.access.users import LoginFailed
from actors.store.execution_records import utc_text
from protocol.errors import ValidationError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "pf_"
SESSION_TTL = timedelta(hours=12)
LOGIN_LINK_TTL = timedelta(minutes=15)
API_TOKEN_DEFAULT_TTL = timedelta(days=90)
MAX_TTL = timedelta(days=3650)
# last_used_at is written at most this often per token: a busy script must not turn
# every read into a write.
TOUCH_EVERY = timedelta(minutes=1)
DURATION = re.compile(r"(\d{1,5})([mhd])")
KINDS = ("session", "api", "login_link")
# What a token may be limited to (None: its user's full role). "metrics": GET /metrics only.
SCOPES = ("metrics",)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def same_token(presented: str | None, expected: str) -> bool:
    """``presented`` is ``expected`` (the deprecated shared token), compared in constant
    time over digests, so neither value's length shows."""
    if presented is None:
        return False
    return hmac.compare_digest(token_hash(presented.strip()), token_hash(expected))


def parse_duration(text: str, field: str = "expires") -> timedelta:
    """``30d``, ``12h``, ``45m`` -> a timedelta; ValidationError naming ``field``."""
    match = DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(field, f"expected a duration like 30d, 12h or 45m, got {text!r}")
    amount, unit = int(match[1]), match[2]
    delta = {"m": timedelta(minutes=amount), "h": timedelta(hours=amount),
             "d": timedelta(days=amount)}[unit]
    if delta <= timedelta(0) or delta > MAX_TTL:
        raise ValidationError(field, "a duration between 1 minute and 10 years")
    return delta


class TokenStore:
    """Owns the auth_tokens table: issuing a token (the plain value is returned once and
    never stored), resolving a presented token to its live row, listing and revoking."""

    def __init__(self, db: Any) -> None:
        self.db = db  # actors.store.farm_db.FarmDB

    async def issue(self, user_id: int, kind: str, *, name: str | None = None,
                    ttl: timedelta | None = None, scope: str | None = None) -> tuple[str, dict]:
        if kind not in KINDS:
            raise ValidationError("kind", f"unknown token kind {kind!r}")
        if scope is not None and scope not in SCOPES:
            raise ValidationError("scope", f"unknown token scope {scope!r} (known: "
                                           f"{', '.join(SCOPES)})")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(timezone.utc)
        expires = None if ttl is None else utc_text(now + ttl)
        row = await self.db._write(
            "INSERT INTO auth_tokens (user_id, kind, name, token_hash, created_at, expires_at,"
            " scope) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (user_id, kind, name, token_hash(token), utc_text(now), expires, scope))
        return token, _view(dict(row))

    async def resolve(self, token: str) -> tuple[dict, dict]:
        """(token row, user row) for a live token of an active user; LoginFailed naming why
        (unknown, revoked, expired, user disabled or deleted)."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            raise LoginFailed("unknown access token")
        row = await self.db._one("SELECT * FROM auth_tokens WHERE token_hash = ?",
                                 (token_hash(token),))
        if row is None:
            raise LoginFailed("unknown access token")
        row = dict(row)
        if row["revoked_at"] is not None:
            raise LoginFailed("this access token was revoked")
        now = datetime.now(timezone.utc)
        if row["expires_at"] is not None and row["expires_at"] <= utc_text(now):
            raise LoginFailed("this access token has expired")
        user = await self.db._one("SELECT * FROM users WHERE user_id = ?", (row["user_id"],))
        if user is None:
            raise LoginFailed("the user of this access token no longer exists")
        user = dict(user)
        if (user.get("status") or "active") != "active":
            raise LoginFailed("the user of this access token is disabled")
        if row["last_used_at"] is None or row["last_used_at"] <= utc_text(now - TOUCH_EVERY):
            await self.db._write("UPDATE auth_tokens SET last_used_at = ? WHERE token_id = ?",
                                 (utc_text(now), row["token_id"]))
        return row, user

    async def redeem_login_link(self, token: str) -> dict:
        """A one-time login link's user; the link is revoked by using it."""
        row, user = await self.resolve(token)
        if row["kind"] != "login_link":
            raise LoginFailed("not a login link")
        changed = await self.db._write(
            "UPDATE auth_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL"
            " RETURNING token_id", (utc_text(), row["token_id"]))
        if changed is None:  # two tabs racing for one link: only the first wins
            raise LoginFailed("this login link was already used")
        return user

    async def list(self, user_id: int | None = None) -> list[dict]:
        sql = ("SELECT t.*, u.username FROM auth_tokens t JOIN users u USING (user_id)"
               " WHERE t.kind != 'login_link'")
        args: tuple = ()
        if user_id is not None:
            sql += " AND t.user_id = ?"
            args = (user_id,)
        return [_view(dict(r)) for r in await self.db._all(sql + " ORDER BY token_id", args)]

    async def row(self, token_id: int) -> dict | None:
        row = await self.db._one("SELECT t.*, u.username FROM auth_tokens t"
                                 " JOIN users u USING (user_id) WHERE token_id = ?", (token_id,))
        return None if row is None else _view(dict(row))

    async def revoke(self, token_id: int) -> bool:
        changed = await self.db._write(
            "UPDATE auth_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL"
            " RETURNING token_id", (utc_text(), token_id))
        return changed is not None

    async def revoke_user(self, user_id: int) -> None:
        await self.db._write("UPDATE auth_tokens SET revoked_at = ? WHERE user_id = ?"
                             " AND revoked_at IS NULL", (utc_text(), user_id))


def _view(row: dict) -> dict:
    """A token as listed: never its hash."""
    row.pop("token_hash", None)
    now = utc_text()
    row["state"] = ("revoked" if row.get("revoked_at") else
                    "expired" if row.get("expires_at") and row["expires_at"] <= now else "live")
    if "username" in row:
        row["user"] = row.pop("username")
    return row
