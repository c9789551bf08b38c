"""Access control of the control endpoint.

Owns the bearer-token check on every ``/api`` request (constant-time compare; 401 with a
JSON error otherwise) and `check_bind`, the rule that the endpoint listens on loopback
unless an access token is configured. An empty token counts as no token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from typing import Awaitable, Callable

from aiohttp import web

from actors.access.principal import SUPER_LOCAL, SUPER_TOKEN, Principal
from protocol.errors import ValidationError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROTECTED_PREFIX = "/api"
LIVE_PATH = "/api/live"


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8, ``::1`` (also bracketed, or IPv4-mapped)."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False  # any other host name may resolve to a public address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_bind(host: str, token: str | None) -> None:
    """Refuse (`ValidationError`, a FarmError) to listen on a non-loopback ``host`` without
    an access token: the HTTP endpoint binds 127.0.0.1 unless told otherwise."""
    if is_loopback(host) or token:
        return
    raise ValidationError(
        f"bind address {host!r}",
        "refusing to listen on a non-loopback address without an access token; "
        "configure a token (--token or PHONEFARM_TOKEN) or bind 127.0.0.1")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def bearer_auth_middleware(token: str | None) -> Callable:
    """An aiohttp middleware requiring ``Authorization: Bearer <token>`` on /api requests;
    a no-op when ``token`` is empty or None."""
    expected = _digest(token) if token else None

    @web.middleware
    async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[PRINCIPAL_KEY] = SUPER_LOCAL if expected is None else None
        if expected is None or not _protected(request.path) or _live_upgrade(request):
            return await handler(request)
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        # Compare digests: constant time and independent of the token's length.
        ok = scheme.lower() == "bearer" and hmac.compare_digest(_digest(credential.strip()), expected)
        if not ok:
            log.warning("auth rejected peer=%s method=%s path=%s reason=%s", request.remote,
                        request.method, request.path,
                        "no bearer token" if scheme.lower() != "bearer" else "wrong token")
            return web.json_response(
                {"error": "missing or wrong access token: send 'Authorization: Bearer <token>'"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="phonefarm"'})
        request[PRINCIPAL_KEY] = SUPER_TOKEN
        return await handler(request)

    return bearer_auth


PRINCIPAL_KEY = "principal"


def principal_of(request: web.Request) -> Principal:
    """The caller of ``request`` as the auth middleware established it. Every handler that
    reads or changes client data asks this, never the headers."""
    principal = request.get(PRINCIPAL_KEY)
    if principal is None:
        # Set on every request by the auth middleware; missing means a route was mounted
        # outside make_app: fail closed rather than guess.
        raise RuntimeError(f"no principal on {request.method} {request.path}")
    return principal


def _live_upgrade(request: web.Request) -> bool:
    """The live wall's WebSocket upgrade: a browser cannot add the header there, so the
    token comes in its first message and `actors.control.live` checks it."""
    return (request.path == LIVE_PATH and request.method == "GET"
            and request.headers.get("Upgrade", "").lower() == "websocket")


def _protected(path: str) -> bool:
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
