"""People over the control endpoint: logging in and out, users, organizations and tokens.

Owns ``POST /api/login`` (name and password, or a one-time login link, -> a session
token), ``POST /api/logout``, ``GET /api/me``, ``/api/users`` (super and admin),
``/api/organizations`` (super creates; admins see their own) and ``/api/tokens`` (a
user's API tokens for scripts; super sees all), with their request types and OpenAPI
paths. Every change is audited with the caller's name; a token's value is shown once.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from aiohttp import web
from msgspec import Meta

from actors.access.tokens import API_TOKEN_DEFAULT_TTL, SESSION_TTL, parse_duration
from actors.access.users import AccessDenied, LoginFailed, require_manager
from actors.control.auth import principal_of
from actors.access.scope import sees_phone
from actors.control.http import (ACCESS, HUB, error_response, json_response, openapi_body,
                                 openapi_path_param)
from actors.control.registry import _Body, _handled
from actors.control.schemas import IntParam, decode_request
from protocol.errors import FarmError, ValidationError
from protocol.names import printable

log = logging.getLogger(__name__)

Name = printable(64, 1)
Secret = Annotated[str, Meta(min_length=1, max_length=1024)]


class LoginBody(_Body):
    """Either ``user`` and ``password``, or ``link`` (a one-time login link's token)."""

    user: Name | None = None
    password: Secret | None = None
    link: Secret | None = None


class UserCreate(_Body):
    name: Name
    password: Secret
    role: Literal["super", "admin", "client", "viewer"]
    clients: list[printable(128, 1)] = []
    organization: printable(128, 1) | None = None
    email: printable(256) | None = None


class PasswordBody(_Body):
    password: Secret


class OrganizationCreate(_Body):
    name: printable(128, 1)


class PhoneAssign(_Body):
    client: printable(128, 1) | None  # None: no client (visible to super users only)


class TokenCreate(_Body):
    name: Name
    expires: Annotated[str, Meta(max_length=16, description="30d, 12h or 45m")] | None = None
    # "metrics": the token may GET /metrics and nothing else (super users issue it: the
    # metrics show the whole farm).
    scope: Literal["metrics"] | None = None


REQUEST_TYPES = [LoginBody, UserCreate, PasswordBody, OrganizationCreate, TokenCreate,
                 PhoneAssign]
TOKEN_ID = IntParam("token_id", description="token id")
USER_ACTIONS = ("disable", "enable")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/login", post_login)
    r.add_post("/api/logout", post_logout)
    r.add_get("/api/me", get_me)
    r.add_get("/api/users", get_users)
    r.add_post("/api/users", post_user)
    for action in USER_ACTIONS:
        r.add_post(f"/api/users/{{name}}/{action}", post_user_status)
    r.add_post("/api/users/{name}/password", post_user_password)
    r.add_get("/api/organizations", get_organizations)
    r.add_post("/api/organizations", post_organization)
    r.add_get("/api/tokens", get_tokens)
    r.add_post("/api/tokens", post_token)
    r.add_delete("/api/tokens/{token_id}", delete_token)
    r.add_post("/api/phones/{serial}/client", post_phone_client)


def _access(request: web.Request) -> Any:
    access = request.app.get(ACCESS)
    if access is None:
        raise FarmError("this endpoint has no user accounts (built without access control)")
    return access


@_handled
async def post_login(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), LoginBody,
                          'a JSON object {"user", "password"} or {"link"}')
    access = _access(request)
    if body.link is not None:
        user = await access.tokens.redeem_login_link(body.link)
        log.info("login link used by %s from %s", user["username"], request.remote)
    else:
        if body.user is None or body.password is None:
            return error_response(400, "send user and password (or link)", field="$.password")
        wait = access.throttle.wait_s(body.user)
        if wait > 0:
            return error_response(429, f"too many wrong passwords for this user: try again in "
                                       f"{wait:.0f} s", retry_after_s=round(wait, 1))
        try:
            user = await access.users.authenticate(body.user, body.password)
        except LoginFailed as exc:
            access.throttle.failed(body.user, request.remote)
            log.warning("login failed for %r from %s: %s", body.user, request.remote, exc)
            await access.users.db.audit("login", body.user, "update", None, None,
                                        actor=f"peer:{request.remote}",
                                        reason=f"login refused: {exc}")
            raise
        access.throttle.succeeded(body.user)
    token, row = await access.tokens.issue(user["user_id"], "session", ttl=SESSION_TTL)
    view = await access.users.user_view(user)
    log.info("user %s logged in from %s", user["username"], request.remote)
    return json_response({"token": token, "expires_at": row["expires_at"], "user": view})


@_handled
async def post_logout(request: web.Request) -> web.Response:
    principal = principal_of(request)
    if principal.token_id is None:
        raise FarmError("this caller has no session to end (a shared or local token)")
    await _access(request).tokens.revoke(principal.token_id)
    return json_response({"logged_out": True})


@_handled
async def get_me(request: web.Request) -> web.Response:
    principal = principal_of(request)
    access = request.app.get(ACCESS)
    if principal.user_id is None or access is None:
        return json_response({"name": principal.name, "role": principal.role, "clients": None})
    view = await access.users.user_view(await access.users.user_row(principal.user_id))
    return json_response(view)


@_handled
async def get_users(request: web.Request) -> web.Response:
    return json_response({"users": await _access(request).users.list_users(
        principal_of(request))})


@_handled
async def post_user(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), UserCreate,
                          "a JSON object with name, password and role")
    view = await _access(request).users.add_user(
        principal_of(request), body.name, body.password, body.role, clients=body.clients,
        organization=body.organization, email=body.email)
    return json_response(view, 201)


@_handled
async def post_user_status(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    action = request.path.rsplit("/", 1)[1]
    access = _access(request)
    view = await access.users.set_status(principal_of(request), name,
                                         "disabled" if action == "disable" else "active")
    if action == "disable":
        await access.tokens.revoke_user(view["user_id"])
    return json_response(view)


@_handled
async def post_user_password(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), PasswordBody, "a JSON object with password")
    view = await _access(request).users.set_password(principal_of(request),
                                                     request.match_info["name"], body.password)
    return json_response(view)


@_handled
async def get_organizations(request: web.Request) -> web.Response:
    rows = await _access(request).users.list_organizations(principal_of(request))
    return json_response({"organizations": rows})


@_handled
async def post_organization(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), OrganizationCreate, "a JSON object with name")
    row = await _access(request).users.add_organization(principal_of(request), body.name)
    return json_response(row, 201)


@_handled
async def get_tokens(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tokens = _access(request).tokens
    everyone = request.query.get("all") in ("1", "true") and principal.is_super
    if principal.user_id is None and not principal.is_super:
        raise AccessDenied("this caller has no tokens")
    rows = await tokens.list(None if everyone or principal.user_id is None
                             else principal.user_id)
    return json_response({"tokens": rows})


@_handled
async def post_token(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), TokenCreate, "a JSON object with name")
    principal = principal_of(request)
    if principal.user_id is None:
        raise AccessDenied("API tokens belong to a user: log in as one")
    if body.scope == "metrics" and not principal.is_super:
        raise AccessDenied("only a super user may issue a metrics token (the metrics show "
                           "the whole farm)")
    ttl = parse_duration(body.expires) if body.expires else API_TOKEN_DEFAULT_TTL
    access = _access(request)
    token, row = await access.tokens.issue(principal.user_id, "api", name=body.name, ttl=ttl,
                                           scope=body.scope)
    await access.users.db.audit("token", row["token_id"], "create", None, row,
                                actor=principal.actor)
    return json_response({**row, "token": token}, 201)


@_handled
async def delete_token(request: web.Request) -> web.Response:
    token_id = TOKEN_ID.parse(request)
    principal = principal_of(request)
    tokens = _access(request).tokens
    row = await tokens.row(token_id)
    if row is None or not (principal.is_super or row["user_id"] == principal.user_id):
        raise LookupError(f"no such token: {token_id}")
    await tokens.revoke(token_id)
    after = await tokens.row(token_id)
    await tokens.db.audit("token", token_id, "update", row, after, actor=principal.actor,
                          reason="revoked")
    return json_response(after)


@_handled
async def post_phone_client(request: web.Request) -> web.Response:
    """Give a phone to a client: super users any phone to any client (or none); an admin
    moves a phone it reaches to another client it reaches."""
    body = decode_request(await request.read(), PhoneAssign, 'a JSON object {"client"}')
    serial = request.match_info["serial"]
    principal = principal_of(request)
    hub = request.app[HUB]
    owners = getattr(hub, "owners", None)
    if owners is None:
        raise FarmError("phone owners need the farm database: this coordinator has none")
    db = hub.farm_db()
    known = serial in {p["serial"] for p in hub.phones()} or any(
        r["serial"] == serial for r in await db.phone_rows())
    if not known or not sees_phone(principal, hub, serial):
        raise LookupError(f"phone {serial}: not known to the farm")
    require_manager(principal)
    if body.client is None and not principal.is_super:
        raise AccessDenied("only a super user may take a phone from every client")
    if body.client is not None:
        row = await db.client_row(body.client)
        if row is None or not principal.sees_client(row["client_id"]):
            raise ValidationError("$.client", f"no such client: {body.client!r}")
    before = {"serial": serial, "client": owners.client_name(serial)}
    await owners.assign(serial, body.client)
    after = {"serial": serial, "client": owners.client_name(serial)}
    await db.audit("phone_client", serial, "update", before, after, actor=principal.actor)
    log.info("phone %s given to client %s by %s", serial, body.client, principal.actor)
    return json_response(after)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    bad = error("bad body or parameter (`field` names it)")
    unauthorized = error("missing, wrong, expired or revoked bearer token")
    forbidden = error("the caller's role may not do this")
    name = openapi_path_param("name", "user name")

    def op(op_id: str, summary: str, *, body: str | None = None, params=(), ok="200",
           extra=None) -> dict:
        out = {"operationId": op_id, "summary": summary,
               "responses": {ok: obj, "400": bad, "401": unauthorized, "403": forbidden,
                             **(extra or {})}}
        if body:
            out["requestBody"] = openapi_body(body)
        if params:
            out["parameters"] = list(params)
        return out

    return {
        "/api/login": {"post": {
            "operationId": "login", "summary":
                "Log in with user and password (or a one-time login link): a session token "
                "(12 h). Five wrong passwords in a row slow that user's next attempts (429)",
            "requestBody": openapi_body("LoginBody"), "security": [],
            "responses": {"200": obj, "400": bad, "401": unauthorized,
                          "429": error("too many wrong passwords: retry_after_s")}}},
        "/api/logout": {"post": op("logout", "Revoke the caller's session token")},
        "/api/me": {"get": op("me", "Who the caller is: name, role, clients, organization")},
        "/api/users": {
            "get": op("listUsers", "Users the caller manages (super: all; admin: its clients')"),
            "post": op("addUser", "Create a user (super/admin; never a role above the "
                                  "caller's, never clients outside its reach); audited",
                       body="UserCreate", ok="201")},
        **{f"/api/users/{{name}}/{action}": {"post": op(
            f"{action}User", f"{action.capitalize()} a user (disabling revokes its tokens);"
            " audited", params=[name], extra={"404": error("no such user")})}
           for action in USER_ACTIONS},
        "/api/users/{name}/password": {"post": op(
            "setUserPassword", "Set a user's password (its own, or as its manager); audited",
            body="PasswordBody", params=[name], extra={"404": error("no such user")})},
        "/api/organizations": {
            "get": op("listOrganizations", "Organizations (admins: their own)"),
            "post": op("addOrganization", "Create an organization (super only); audited",
                       body="OrganizationCreate", ok="201")},
        "/api/tokens": {
            "get": op("listTokens", "The caller's tokens (never their values); super with "
                                    "?all=1: everyone's"),
            "post": op("addToken", "A new API token for the caller (its value shown once); "
                                   "expires 30d/12h/45m, default 90 days; scope `metrics` "
                                   "(super users): GET /metrics only; audited",
                       body="TokenCreate", ok="201")},
        "/api/phones/{serial}/client": {"post": op(
            "assignPhone", "Give a phone to a client (super: any, or none; admin: between "
                           "its clients); audited", body="PhoneAssign",
            params=[openapi_path_param("serial", "device serial, URL-encoded")],
            extra={"404": error("no such phone")})},
        "/api/tokens/{token_id}": {"delete": op(
            "revokeToken", "Revoke a token (the caller's own; super: any); audited",
            params=[TOKEN_ID.openapi()], extra={"404": error("no such token")})},
    }
