"""Access control of the control endpoint.

Owns establishing the caller of every request (`access_middleware`, `principal_of`): the
bearer token of a user or script (actors.access), 401 naming why without one; and the
browser rules: a foreign ``Origin`` or ``Host`` gets 403 (cross-site requests, DNS
rebinding). Secrets never ride in cookies, so a cross-site form cannot borrow them.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from actors.access.principal import ANONYMOUS, SUPER_LOCAL, SUPER_TOKEN, Principal
from actors.access.policy import refusal
from actors.access.tokens import same_token
from actors.access.users import LoginFailed
from protocol.addresses import is_loopback

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROTECTED_PREFIX = "/api"
LIVE_PATH = "/api/live"
METRICS_PATH = "/metrics"
# Reachable without a token: logging in, and the health probe of a process supervisor.
OPEN_PATHS = frozenset({"/api/login", "/api/health", "/api/openapi.json"})




def bearer_credential(request: web.Request) -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else None


def _unauthorized(request: web.Request, reason: str) -> web.Response:
    log.warning("auth rejected peer=%s method=%s path=%s reason=%s", request.remote,
                request.method, request.path, reason)
    return web.json_response({"error": reason}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="phonefarm"'})


def _forbidden(request: web.Request, reason: str) -> web.Response:
    log.warning("request refused peer=%s method=%s path=%s reason=%s", request.remote,
                request.method, request.path, reason)
    return web.json_response({"error": reason}, status=403)


def origin_problem(request: web.Request, bound_loopback: bool) -> str | None:
    """Why a browser request must be refused (DNS rebinding, cross-site), or None.

    A page on another site can make the browser send requests here, and a rebound DNS name
    can make it send them with that name as Host: an endpoint on loopback answers only
    loopback Host names, and any request carrying a foreign ``Origin`` is refused."""
    host = request.headers.get("Host", "")
    if bound_loopback and host and not is_loopback(_host_name(host)):
        return f"Host {host!r} is not this endpoint (it listens on loopback only)"
    origin = request.headers.get("Origin")
    if origin == "null":
        return "cross-origin request from an opaque origin refused"
    if origin is not None:
        _, _, rest = origin.partition("://")
        if rest.lower() != host.lower():
            return f"cross-origin request from {origin!r} refused"
    return None


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


Authenticate = Callable[[str | None], Awaitable[Principal]]


def authenticator(access: Any | None, token: str | None = None) -> Authenticate | None:
    """The one check of a presented bearer token -> the caller's Principal (LoginFailed
    naming why not): the users' tokens of ``access`` (an actors.access.service.Access,
    which also honours the deprecated shared token); else only the shared ``token``, as a
    super user; None when there is neither (an open app: unit tests)."""
    if access is not None:
        return access.authenticate
    if not token:
        return None

    async def shared_token(credential: str | None) -> Principal:
        if not same_token(credential, token):
            raise LoginFailed("missing or wrong access token: send "
                              "'Authorization: Bearer <token>'")
        return SUPER_TOKEN

    return shared_token


Refused = Callable[[Principal, str, str], Awaitable[None]]


def access_middleware(authenticate: Authenticate | None, *,
                      bound_loopback: bool = True, on_refused: Refused | None = None) -> Callable:
    """An aiohttp middleware establishing the caller (`principal_of`) of every request.

    With ``authenticate`` (from `authenticator`), every /api request except the open ones
    (`OPEN_PATHS`, the live socket's upgrade) needs ``Authorization: Bearer <token>``: 401
    naming why otherwise; browser requests with a foreign Origin or Host get 403. Without
    it (unit tests), every caller is `SUPER_LOCAL`. ``on_refused(principal, request line,
    reason)`` records a logged-in caller's change the route policy refused (the audit
    trail); reads refused are only logged."""

    @web.middleware
    async def establish_caller(request: web.Request, handler: Handler) -> web.StreamResponse:
        if authenticate is None:
            request[PRINCIPAL_KEY] = SUPER_LOCAL
            return await handler(request)
        problem = origin_problem(request, bound_loopback)
        if problem is not None:
            return _forbidden(request, problem)
        if not _protected(request.path) or request.path in OPEN_PATHS \
                or _live_upgrade(request):
            request[PRINCIPAL_KEY] = ANONYMOUS
            return await handler(request)
        try:
            principal = await authenticate(bearer_credential(request))
        except LoginFailed as exc:
            return _unauthorized(request, str(exc))
        request[PRINCIPAL_KEY] = principal
        route = request.match_info.route.resource
        why = refusal(principal, request.method,
                      route.canonical if route is not None else None)
        if why is not None:
            if on_refused is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
                await on_refused(principal, f"{request.method} {request.path}", why)
            return _forbidden(request, f"{why} ({principal.actor})")
        return await handler(request)

    return establish_caller


PRINCIPAL_KEY: "web.RequestKey[Principal | None]" = web.RequestKey("principal", object)


def caller_clients(request: web.Request) -> frozenset[int] | None:
    """The caller's clients, as reads scoped to them and the database's row security take
    them: None for a super user (the whole farm), else its clients (none: sees nothing)."""
    principal = principal_of(request)
    return None if principal.is_super else frozenset(principal.client_ids or ())


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
    # /metrics sits outside /api (where Prometheus looks) but needs a token all the same.
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/") \
        or path == METRICS_PATH


# The app's `authenticator` (None: an open app), for the live socket's first-message token.
AUTHENTICATE: "web.AppKey[Any]" = web.AppKey("authenticate", object)
