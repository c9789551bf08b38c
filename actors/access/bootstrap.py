"""The first super user and the demo's people, so a new farm is usable at once and locked
from the start."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from actors.access.principal import Principal
from actors.access.service import Access
from actors.access.tokens import LOGIN_LINK_TTL
from actors.access.users import LoginFailed
from protocol.files import write_atomic

log = logging.getLogger(__name__)

ADMIN = "admin"
from actors.control.cli.credentials import ADMIN_TOKEN_FILE  # where the CLI looks
DEMO_ORGANIZATION = "Demo Agency"
DEMO_CLIENTS = ("Demo Farm", "Acme")
# (name, role) of the demo's Acme users; their passwords are made up and printed once.
DEMO_USERS = (("acme", "client"), ("acme-viewer", "viewer"))
SYSTEM = Principal(user_id=None, name="system", role="super")


async def ensure_admin(access: Access, data: Path) -> dict:
    """The super user ``admin`` (created with an unguessable password on a farm with no
    users) and a live token of it in ``DATA/admin.token`` (mode 0600), which the `farm` CLI
    on this machine uses when given nothing else. A token file that still works is kept."""
    user = await access.users.user_row(ADMIN)
    if user is None and await access.users.count_users() == 0:
        await access.users.add_user(SYSTEM, ADMIN, secrets.token_urlsafe(24), "super")
        user = await access.users.user_row(ADMIN)
        log.info("first start: super user %r created; its token is in %s", ADMIN,
                 data / ADMIN_TOKEN_FILE)
    if user is None:
        return {}
    path = data / ADMIN_TOKEN_FILE
    if path.exists():
        try:
            row, owner = await access.tokens.resolve(path.read_text().strip())
            if owner["user_id"] == user["user_id"]:
                return user
        except (LoginFailed, OSError, UnicodeDecodeError):
            pass  # replaced below
    token, _ = await access.tokens.issue(user["user_id"], "api", name="admin.token")
    write_atomic(path, (token + "\n").encode())
    path.chmod(0o600)
    return user


async def login_link(access: Access, user: dict) -> str:
    """A one-time login token for ``user`` (15 minutes)."""
    token, _ = await access.tokens.issue(user["user_id"], "login_link", ttl=LOGIN_LINK_TTL)
    return token


async def seed_demo_people(access: Access) -> list[tuple[str, str, str]]:
    """The demo's organization over its two clients and Acme's client and viewer users;
    [(name, role, password)] of the users created now (an existing one keeps its
    password, which is not known any more)."""
    db = access.users.db
    organization_id = await db.upsert_organization(DEMO_ORGANIZATION)
    for client in DEMO_CLIENTS:
        if await db.client_row(client) is None:
            await db.upsert_client(client, status="active")
        await db.set_client_organization(client, organization_id)
    created = []
    for name, role in DEMO_USERS:
        if await access.users.user_row(name) is None:
            password = secrets.token_urlsafe(9)
            await access.users.add_user(SYSTEM, name, password, role, clients=["Acme"])
            created.append((name, role, password))
    return created
