"""The coordinator's access control as one object the HTTP layer holds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from actors.access.principal import SUPER_TOKEN, Principal
from actors.access.throttle import LoginThrottle
from actors.access.tokens import TokenStore, same_token
from actors.access.users import LoginFailed, UserStore


@dataclass
class Access:
    """Owns who may call the control endpoint: the user and token stores, the login
    back-off, and the deprecated shared token (``--token``, acting as a super user for
    one more release). `authenticate` turns a presented bearer token into a Principal."""

    users: UserStore
    tokens: TokenStore
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    legacy_token: str | None = None

    @classmethod
    def over(cls, db: Any, legacy_token: str | None = None) -> "Access":
        return cls(UserStore(db), TokenStore(db), legacy_token=legacy_token or None)

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of a bearer token; LoginFailed naming why not."""
        if not token:
            raise LoginFailed("missing access token: send 'Authorization: Bearer <token>'")
        token = token.strip()
        if self.legacy_token and same_token(token, self.legacy_token):
            return SUPER_TOKEN
        row, user = await self.tokens.resolve(token)
        principal = await self.users.principal_for(user, token_id=row["token_id"])
        if row.get("scope"):  # a limited token (schema v16): actors.access.policy decides
            principal = replace(principal, scope=row["scope"])
        return principal

    async def audit_refusal(self, principal: Principal, request_line: str, reason: str) -> None:
        """A change the caller's role may not make, in the audit trail (nothing else was
        written)."""
        await self.users.db.audit("refused", request_line, "update", None, None,
                                  actor=principal.actor, reason=reason)
