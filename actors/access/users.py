"""People and the agency tier: users (argon2id hashes, roles, assigned clients),
organizations, and the `Principal` a user acts as."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Iterable

from actors.access.passwords import (check_new_password, hash_password, needs_rehash,
                                     verify_password)
from actors.access.principal import ROLES, Principal
from actors.store.execution_records import utc_text
from protocol.errors import FarmError, ValidationError

log = logging.getLogger(__name__)

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
ACTIVE, DISABLED = "active", "disabled"


class AccessDenied(FarmError):
    """The caller may not do this (HTTP 403); says why without naming other tenants' data."""


class LoginFailed(FarmError):
    """A login or token was refused (HTTP 401); the reason never tells whether a user
    name exists."""


class UserStore:
    """Owns the users, organizations and client assignments in the farm database, and turns
    a user row into the `Principal` the request acts as. Every change is checked against
    the granting principal first (roles above its own, clients outside its reach), then
    written and audited with the grantor's name."""

    def __init__(self, db: Any) -> None:
        self.db = db  # actors.store.farm_db.FarmDB

    # -- reading -------------------------------------------------------------------------

    async def user_row(self, ref: str | int) -> dict | None:
        if isinstance(ref, int):
            row = await self.db._one("SELECT * FROM users WHERE user_id = ?", (ref,))
        else:
            row = await self.db._one("SELECT * FROM users WHERE username = ?", (ref,))
        return None if row is None else dict(row)

    async def client_ids_of(self, user: dict) -> frozenset[int] | None:
        """The clients a user reaches: None (all) for super; its assigned clients, plus
        for an admin every client of its organization."""
        if user["role"] == "super":
            return None
        rows = await self.db._all("SELECT client_id FROM user_client_access WHERE user_id = ?",
                                  (user["user_id"],))
        ids = {r[0] for r in rows}
        if user.get("client_id") is not None:
            ids.add(user["client_id"])
        if user["role"] == "admin" and user.get("organization_id") is not None:
            rows = await self.db._all("SELECT client_id FROM clients WHERE organization_id = ?",
                                      (user["organization_id"],))
            ids.update(r[0] for r in rows)
        return frozenset(ids)

    async def principal_for(self, user: dict, token_id: int | None = None) -> Principal:
        return Principal(user_id=user["user_id"], name=user["username"], role=user["role"],
                         client_ids=await self.client_ids_of(user),
                         organization_id=user.get("organization_id"), token_id=token_id)

    async def user_view(self, user: dict) -> dict:
        """A user as the API shows it: never the hash."""
        rows = await self.db._all(
            "SELECT c.name FROM user_client_access a JOIN clients c USING (client_id)"
            " WHERE a.user_id = ? ORDER BY c.name", (user["user_id"],))
        organization = None
        if user.get("organization_id") is not None:
            org = await self.db.organization_row(int(user["organization_id"]))
            organization = org["name"] if org else None
        return {"user_id": user["user_id"], "name": user["username"], "role": user["role"],
                "status": user.get("status") or ACTIVE, "clients": [r[0] for r in rows],
                "organization": organization, "email": user.get("email"),
                "created_at": user.get("created_at")}

    async def list_users(self, viewer: Principal) -> list[dict]:
        """Users the viewer may manage: all for super; for an admin, users whose clients
        all lie within its reach (itself included). AccessDenied for anyone else."""
        require_manager(viewer)
        rows = [dict(r) for r in await self.db._all("SELECT * FROM users ORDER BY username")]
        out = []
        for row in rows:
            if viewer.is_super or row["user_id"] == viewer.user_id:
                out.append(await self.user_view(row))
                continue
            reach = await self.client_ids_of(row)
            if row["role"] != "super" and reach and viewer.client_ids is not None \
                    and reach <= viewer.client_ids:
                out.append(await self.user_view(row))
        return out

    async def count_users(self) -> int:
        return (await self.db._one("SELECT COUNT(*) FROM users"))[0]

    # -- logging in ----------------------------------------------------------------------

    async def authenticate(self, name: str, password: str) -> dict:
        """The active user ``name`` whose password is ``password``; LoginFailed otherwise,
        with one reason for a wrong name or password (no existence leak)."""
        user = await self.user_row(name) if isinstance(name, str) else None
        # argon2 spends ~0.1 s of CPU (memory-hard on purpose) and frees the GIL meanwhile:
        # in a thread, so a login does not stall every phone's stream and API request.
        ok = await asyncio.to_thread(verify_password, user["password_hash"] if user else None,
                                     password)
        if not ok:
            raise LoginFailed("wrong user name or password")
        if (user.get("status") or ACTIVE) != ACTIVE:
            raise LoginFailed("this user is disabled")
        if needs_rehash(user["password_hash"]):
            await self._set_hash(user["user_id"], await asyncio.to_thread(hash_password, password))
        return user

    # -- changing ------------------------------------------------------------------------

    async def add_user(self, grantor: Principal, name: str, password: str, role: str, *,
                       clients: Iterable[str] = (), organization: str | None = None,
                       email: str | None = None) -> dict:
        """Create a user; everything is checked before anything is written."""
        if not isinstance(name, str) or not USER_NAME.fullmatch(name):
            raise ValidationError("name", "a user name is 1-64 letters, digits or . _ @ -, "
                                          "starting with a letter or digit")
        if role not in ROLES:
            raise ValidationError("role", f"unknown role {role!r} (expected one of "
                                          f"{', '.join(ROLES)})")
        check_new_password(password)
        require_manager(grantor)
        if not grantor.may_grant(role):
            raise AccessDenied(f"{_a(grantor.role)} may not create {_a(role)} user")
        client_ids = await self._client_ids(grantor, clients)
        organization_id = await self._organization_id(grantor, organization)
        if role in ("client", "viewer") and not client_ids:
            raise ValidationError("clients", f"a {role} user needs at least one client")
        if role == "admin" and not client_ids and organization_id is None:
            raise ValidationError("clients", "an admin needs clients or an organization")
        if not grantor.is_super and role == "admin" and organization_id is not None \
                and organization_id != grantor.organization_id:
            raise AccessDenied("an admin may only create admins of its own organization")
        if await self.user_row(name) is not None:
            raise ValidationError("name", f"user {name!r} already exists")
        password_hash = await asyncio.to_thread(hash_password, password)

        def job(conn) -> int:
            user_id = conn.execute(
                "INSERT INTO users (username, password_hash, role, organization_id, email,"
                " status, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING user_id",
                (name, password_hash, role, organization_id, email, ACTIVE,
                 utc_text())).fetchone()[0]
            conn.executemany("INSERT INTO user_client_access (user_id, client_id, access_level)"
                             " VALUES (?, ?, ?)", [(user_id, c, role) for c in client_ids])
            return user_id

        user_id = await self.db._atomic(job)
        view = await self.user_view(await self.user_row(user_id))
        await self.db.audit("user", user_id, "create", None, view, actor=grantor.actor)
        log.info("user %s (%s) created by %s", name, role, grantor.actor)
        return view

    async def set_status(self, grantor: Principal, name: str, status: str) -> dict:
        if status not in (ACTIVE, DISABLED):
            raise ValidationError("status", f"expected {ACTIVE} or {DISABLED}")
        user = await self._managed(grantor, name)
        if user["user_id"] == grantor.user_id and status == DISABLED:
            raise AccessDenied("you may not disable yourself")
        before = await self.user_view(user)
        await self.db._write("UPDATE users SET status = ?, updated_at = ? WHERE user_id = ?",
                             (status, utc_text(), user["user_id"]))
        after = await self.user_view(await self.user_row(user["user_id"]))
        await self.db.audit("user", user["user_id"], "update", before, after,
                            actor=grantor.actor, reason=f"status {status}")
        return after

    async def set_password(self, grantor: Principal, name: str, password: str) -> dict:
        check_new_password(password)
        user = await self._managed(grantor, name, allow_self=True)
        await self._set_hash(user["user_id"], await asyncio.to_thread(hash_password, password))
        view = await self.user_view(user)
        await self.db.audit("user", user["user_id"], "update", None, None,
                            actor=grantor.actor, reason="password changed")
        return view

    async def ensure_user(self, name: str, password: str, role: str,
                          clients: Iterable[str] = (), organization: str | None = None) -> dict:
        """The demo's users: created with this password if absent, left alone if present."""
        user = await self.user_row(name)
        if user is not None:
            return user
        system = Principal(user_id=None, name="system", role="super")
        await self.add_user(system, name, password, role, clients=clients,
                            organization=organization)
        return await self.user_row(name)

    # -- organizations -------------------------------------------------------------------

    async def add_organization(self, grantor: Principal, name: str) -> dict:
        if not grantor.is_super:
            raise AccessDenied("only a super user may create organizations")
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise ValidationError("name", "an organization name is 1-128 characters")
        if await self.db.organization_row(name) is not None:
            raise ValidationError("name", f"organization {name!r} already exists")
        organization_id = await self.db.upsert_organization(name)
        row = await self.db.organization_row(organization_id)
        await self.db.audit("organization", organization_id, "create", None, row,
                            actor=grantor.actor)
        return row

    async def list_organizations(self, viewer: Principal) -> list[dict]:
        require_manager(viewer)
        rows = [dict(r) for r in await self.db._all(
            "SELECT * FROM organizations ORDER BY name")]
        if viewer.is_super:
            return rows
        return [r for r in rows if r["organization_id"] == viewer.organization_id]

    # -- helpers -------------------------------------------------------------------------

    async def _managed(self, grantor: Principal, name: str, allow_self: bool = False) -> dict:
        user = await self.user_row(name) if isinstance(name, str) else None
        if user is not None and allow_self and user["user_id"] == grantor.user_id:
            return user
        require_manager(grantor)
        if user is None:
            raise LookupError(f"no such user: {name!r}")
        if grantor.is_super:
            return user
        reach = await self.client_ids_of(user)
        if user["role"] == "super" or not reach or grantor.client_ids is None \
                or not reach <= grantor.client_ids:
            raise LookupError(f"no such user: {name!r}")
        return user

    async def _client_ids(self, grantor: Principal, names: Iterable[str]) -> list[int]:
        ids = []
        for name in names:
            row = await self.db.client_row(name) if isinstance(name, str) else None
            if not grantor.is_super and (row is None
                                         or not grantor.sees_client(row["client_id"])):
                # The same answer whether the client exists or not.
                raise AccessDenied(f"client {name!r} is not one of yours")
            if row is None:
                raise ValidationError("clients", f"no such client: {name!r}")
            ids.append(row["client_id"])
        return sorted(set(ids))

    async def _organization_id(self, grantor: Principal, name: str | None) -> int | None:
        if name is None:
            return None
        row = await self.db.organization_row(name) if isinstance(name, str) else None
        if not grantor.is_super and (row is None
                                     or row["organization_id"] != grantor.organization_id):
            raise AccessDenied(f"organization {name!r} is not yours")
        if row is None:
            raise ValidationError("organization", f"no such organization: {name!r}")
        return row["organization_id"]

    async def _set_hash(self, user_id: int, password_hash: str) -> None:
        await self.db._write("UPDATE users SET password_hash = ?, updated_at = ?"
                             " WHERE user_id = ?", (password_hash, utc_text(), user_id))


def require_manager(principal: Principal) -> None:
    """Only super users and admins manage people (and give phones to clients)."""
    if principal.role not in ("super", "admin"):
        raise AccessDenied(f"{_a(principal.role)} user may not manage users")


def _a(role: str) -> str:
    return f"an {role}" if role[:1] in "aeiou" else f"a {role}"
