"""Who is making a request, and what they may see and change."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("super", "admin", "client", "viewer")
# A role may grant only roles at or below its own rank.
ROLE_RANK = {"viewer": 0, "client": 1, "admin": 2, "super": 3}


@dataclass(frozen=True)
class Principal:
    """Owns the caller's identity for one request: the user (or node), its role, and the
    client ids it reaches (None: every client, for `super`). Built once by the auth
    middleware; every scope check reads it, nothing else decides visibility."""

    user_id: int | None
    name: str
    role: str
    client_ids: frozenset[int] | None = None
    organization_id: int | None = None
    token_id: int | None = None
    # The token's scope (schema v16): None is the user's full role; "metrics" may call
    # GET /metrics only (actors.access.policy).
    scope: str | None = None

    @property
    def is_super(self) -> bool:
        return self.role == "super"

    def can_write(self) -> bool:
        return self.role != "viewer"

    def sees_client(self, client_id: int | None) -> bool:
        """A row of ``client_id`` is visible; a row with no client only to super users."""
        if self.client_ids is None:
            return True
        return client_id is not None and client_id in self.client_ids

    def may_grant(self, role: str) -> bool:
        return ROLE_RANK.get(role, 99) <= ROLE_RANK.get(self.role, -1)

    @property
    def actor(self) -> str:
        """How the audit log names this caller: ``user:<id>:<name>``."""
        if self.user_id is None:
            return self.name
        return f"user:{self.user_id}:{self.name}"


# The caller when an app is built with no access control at all (unit tests only; the
# coordinator always builds its app with access control).
SUPER_LOCAL = Principal(user_id=None, name="local", role="super")
# The caller holding the legacy shared --token (kept one release).
SUPER_TOKEN = Principal(user_id=None, name="token", role="super")
# The caller of an open path (/, /static, /api/login, /api/health): sees nothing.
ANONYMOUS = Principal(user_id=None, name="anonymous", role="viewer", client_ids=frozenset())
