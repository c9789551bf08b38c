"""Apps on the phones over the control endpoint (issue 20.2/20.3).

Owns ``POST /api/apps/install`` and ``POST /api/apps/uninstall`` (an app over a phone
scope, like an action: answered 202 with the install's id once it is recorded, the work
goes on and its progress is on the status stream), ``GET /api/apps/installs`` and
``GET /api/apps/installs/{id}`` (each phone's state), ``GET /api/apps/inventory`` (each
phone's packages, the pins and which phones drifted from them), ``GET``/``POST
/api/apps/pins`` and ``DELETE /api/apps/pins/{pin_id}``, and ``POST /api/apps/reconcile``
(super users: install the pinned version where a phone drifted, now). Scoped: a tenant
installs on, and reads, its clients' phones only; another client's install or pin answers
like a missing one. The work is `AppService` (actors.coordinator.apps), put in the app
under `APPS`.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta

from actors.access.users import AccessDenied
from actors.control.auth import principal_of
from actors.control.http import (hub_of, json_response, openapi_body,
                                 openapi_path_param, super_users_only)
from actors.control.registry import _Body, _handled
from actors.control.schemas import IntParam, RequestError, decode_request
from actors.coordinator.apps import AppService
from actors.coordinator.apps_store import client_target, group_target
from protocol.errors import FarmError, ValidationError
from sequences.scopes import ScopeError, parse_phone_scope

log = logging.getLogger(__name__)

APPS = web.AppKey("apps", AppService)
PIN_ID = IntParam("pin_id", description="the pin's id")
PACKAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$")

AppName = Annotated[str, Meta(min_length=1, max_length=256, description=(
    "a registry app's name (e.g. clipshare) or its package name"))]
Version = Annotated[str, Meta(min_length=1, max_length=128, description=(
    "a version name of the library (e.g. 4.2.0) or a version code"))]
Scope = Annotated[str, Meta(min_length=1, max_length=4096, description=(
    "the phones, in the scope grammar of actions (phone:all, phone:S1,S2, node:N, ...)"))]


class InstallRequest(_Body):
    app: AppName
    version: Version
    scope: Scope
    allow_downgrade: Annotated[bool, Meta(description=(
        "install over a newer version on a phone (default false: such a phone fails with "
        "INSTALL_FAILED_VERSION_DOWNGRADE)"))] = False


class UninstallRequest(_Body):
    app: AppName
    scope: Scope


class PinRequest(_Body):
    app: AppName
    version: Version
    client: Annotated[str, Meta(min_length=1, max_length=128, description=(
        "pin for this client's phones; with group, the client whose group book has it"))] \
        | None = None
    group: Annotated[str, Meta(min_length=1, max_length=128, description=(
        "pin for this group's phones (over its clients' pins)"))] | None = None


REQUEST_TYPES = [InstallRequest, UninstallRequest, PinRequest]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/apps/install", post_install)
    app.router.add_post("/api/apps/uninstall", post_uninstall)
    app.router.add_get("/api/apps/installs", get_installs)
    app.router.add_get("/api/apps/installs/{install_id}", get_install)
    app.router.add_get("/api/apps/inventory", get_inventory)
    app.router.add_get("/api/apps/pins", get_pins)
    app.router.add_post("/api/apps/pins", post_pin)
    app.router.add_delete("/api/apps/pins/{pin_id}", delete_pin)
    app.router.add_post("/api/apps/reconcile", post_reconcile)


def _service(request: web.Request) -> AppService:
    service = request.app.get(APPS)
    if service is None:
        raise FarmError("this endpoint installs no apps (no coordinator farm database)")
    return service


def _writer(request: web.Request) -> None:
    principal = principal_of(request)
    if principal.role == "viewer":
        raise AccessDenied("a viewer may not install, uninstall or pin apps")


async def registry_app(service: AppService, name: str, field: str = "$.app",
                       package_ok: bool = False) -> tuple[str, str]:
    """(app name, package) of a library app named by its name or package. With
    ``package_ok`` a package the library does not know stands for itself."""
    row = await service.db._one("SELECT app_name, package_name FROM app_registry"
                                " WHERE app_name = ? OR package_name = ?", (name, name))
    if row is not None:
        return row[0], row[1]
    if package_ok and PACKAGE_RE.match(name):
        return name, name
    raise ValidationError(field, f"no such app in the library: {name!r}")


def _serials(request: web.Request, scope: str) -> list[str]:
    try:
        return parse_phone_scope(scope, why="apps install over a phone scope").resolve(
            hub_of(request).phones())
    except ScopeError as exc:
        raise RequestError("$.scope", str(exc), field="$.scope") from None


def _client_of(service: AppService):
    owners = getattr(service.hub, "owners", None)
    return owners.client_id if owners is not None else (lambda serial: None)


@_handled
async def post_install(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), InstallRequest,
                          "a JSON object with app, version, scope and optional allow_downgrade")
    _writer(request)
    service = _service(request)
    app, _ = await registry_app(service, body.app)
    serials = _serials(request, body.scope)
    install = await service.install(app, body.version, serials,
                                    allow_downgrade=body.allow_downgrade,
                                    actor=principal_of(request).actor,
                                    client_of=_client_of(service))
    await service.db.audit("app_install", install.install_id, "create", None,
                           {"app": app, "version": install.version, "scope": body.scope,
                            "phones": serials, "allow_downgrade": body.allow_downgrade},
                           actor=principal_of(request).actor)
    return json_response({"install_id": install.install_id, "app": app,
                          "package": install.package, "version": install.version,
                          "version_code": install.version_code, "phones": serials}, 202)


@_handled
async def post_uninstall(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), UninstallRequest,
                          "a JSON object with app and scope")
    _writer(request)
    service = _service(request)
    app, package = await registry_app(service, body.app, package_ok=True)
    serials = _serials(request, body.scope)
    install = await service.uninstall(app, package, serials, actor=principal_of(request).actor,
                                      client_of=_client_of(service))
    await service.db.audit("app_install", install.install_id, "delete", None,
                           {"app": app, "package": package, "scope": body.scope,
                            "phones": serials}, actor=principal_of(request).actor)
    return json_response({"install_id": install.install_id, "app": app, "package": package,
                          "phones": serials}, 202)


@_handled
async def get_installs(request: web.Request) -> web.Response:
    rows = await _service(request).store.recent_installs(principal_of(request).client_ids)
    return json_response({"installs": rows})


@_handled
async def get_install(request: web.Request) -> web.Response:
    install_id = request.match_info["install_id"]
    service = _service(request)
    principal = principal_of(request)
    rows = await service.store.install_rows(install_id, principal.client_ids)
    if not rows:
        raise LookupError(f"no such install: {install_id}")
    live = service.view(install_id)
    phones = {}
    for row in rows:
        phone = {"serial": row["serial"], "node": row["node"], "state": row["state"],
                 "reason": row["reason"], "splits": (row["splits"] or "").split(",")
                 if row["splits"] else [], "bytes_sent": 0, "bytes_total": 0,
                 "stage": None}
        if live is not None and row["serial"] in live["phones"]:
            now = live["phones"][row["serial"]]
            phone.update({k: now[k] for k in ("bytes_sent", "bytes_total", "stage")})
            phone["state"], phone["reason"] = now["state"], now["reason"]
        phones[row["serial"]] = phone
    states = [p["state"] for p in phones.values()]
    first = rows[0]
    return json_response({
        "install_id": install_id, "kind": first["kind"], "app": first["app"],
        "package": first["package"], "version": first["version"],
        "version_code": first["version_code"], "created_at": first["created_at"],
        "created_by": first["created_by"],
        "finished": all(s in ("ok", "failed") for s in states),
        # APK bytes this coordinator sent to the nodes for it (None: not since its start).
        "pushed_bytes": live["pushed_bytes"] if live is not None else None,
        "counts": {s: states.count(s) for s in sorted(set(states))}, "phones": phones})


@_handled
async def get_inventory(request: web.Request) -> web.Response:
    """Each visible phone's packages (the library's apps only, unless ``all=1``), the pins
    and the drift; ``outdated=1``: the drift alone."""
    service = _service(request)
    principal = principal_of(request)
    query = request.query
    for name in ("all", "outdated"):
        if query.get(name, "0") not in ("0", "1", "true", "false"):
            raise RequestError(name, "expected 0 or 1", field=name)
    phones = hub_of(request).phones()
    serials = [p["serial"] for p in phones]
    if "serial" in query:
        serials = [s for s in serials if s == query["serial"]]
    apps = [dict(r) for r in await service.db._all(
        "SELECT app_name AS app, package_name AS package FROM app_registry"
        " ORDER BY app_name")]
    packages: list[str] | None = [a["package"] for a in apps]
    if query.get("all") in ("1", "true"):
        packages = None
    if "package" in query:
        packages = [query["package"]]
    drift = await service.drift(serials, principal.client_ids)
    if query.get("outdated") in ("1", "true"):
        return json_response({"drift": drift})
    rows = await service.store.inventory(serials, packages, principal.client_ids) \
        if packages is None or packages else []
    pins = await service.store.pins(principal.client_ids)
    return json_response({"apps": apps, "phones": sorted(serials), "inventory": rows,
                          "pins": pins, "drift": drift})


@_handled
async def get_pins(request: web.Request) -> web.Response:
    return json_response({"pins": await _service(request).store.pins(
        principal_of(request).client_ids)})


async def _pin_target(request: web.Request, service: AppService,
                      body: PinRequest) -> tuple[str, int | None, str | None]:
    """(target, owning client id, group name) of a pin request; a client the caller does
    not reach is answered like one that does not exist."""
    principal = principal_of(request)
    if body.client is None and body.group is None:
        raise RequestError("$.client", "give client, or group (with client for a "
                           "client's group book)", field="$.client")
    client_id = None
    if body.client is not None:
        row = await service.db.client_row(body.client)
        if row is None or not principal.sees_client(row["client_id"]):
            raise RequestError("$.client", f"no such client: {body.client!r}",
                               field="$.client")
        client_id = row["client_id"]
    elif not principal.is_super:
        if principal.client_ids is None or len(principal.client_ids) != 1:
            raise RequestError("$.client", "name the client whose group book has the group",
                               field="$.client")
        client_id = next(iter(principal.client_ids))
    if body.group is None:
        return client_target(client_id), client_id, None
    return group_target(client_id, body.group), client_id, body.group


@_handled
async def post_pin(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), PinRequest,
                          "a JSON object with app, version and client or group")
    _writer(request)
    service = _service(request)
    app, package = await registry_app(service, body.app)
    target, client_id, group = await _pin_target(request, service, body)
    files = await service.files(app, body.version)
    base = next((f for f in files if not f["split"]), files[0])
    pin = await service.store.pin(package=package, app=app,
                                  version=base["version_name"] or body.version,
                                  version_code=int(base["version_code"]), target=target,
                                  client_id=client_id, group_name=group,
                                  actor=principal_of(request).actor)
    await service.db.audit("app_pin", pin["pin_id"], "update", None,
                           {"app": app, "version": pin["version"], "target": target,
                            "client_id": client_id}, actor=principal_of(request).actor)
    return json_response(pin, 201)


@_handled
async def delete_pin(request: web.Request) -> web.Response:
    pin_id = PIN_ID.parse(request)
    _writer(request)
    service = _service(request)
    principal = principal_of(request)
    pin = next((p for p in await service.store.pins(principal.client_ids)
                if p["pin_id"] == pin_id), None)
    if pin is None:
        raise LookupError(f"no such pin: {pin_id}")
    await service.store.unpin(pin["package"], pin["target"])
    await service.db.audit("app_pin", pin_id, "delete", {"app": pin["app"],
                           "version": pin["version"], "target": pin["target"],
                           "client_id": pin["client_id"]}, None, actor=principal.actor)
    return json_response({"deleted": pin_id})


@_handled
async def post_reconcile(request: web.Request) -> web.Response:
    if (refused := super_users_only(request, "reconciles")) is not None:
        return refused
    started = await _service(request).reconcile(actor=principal_of(request).actor)
    return json_response({"installs": started})


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    unauthorized = error("missing or wrong bearer token")
    forbidden = error("a viewer, or a client outside the caller's reach")

    def query(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False,
                "schema": {"type": "string"}, "description": description}

    return {
        "/api/apps/install": {"post": {
            "operationId": "installApp", "summary":
            "Install a library app's version on the phones of a scope: each node gets the "
            "APK files once, each phone the splits matching its ABI and density in one "
            "install session under its lock. Answered 202 with install_id and the phones; "
            "progress on the status stream (app_install_state, app_install_progress, "
            "app_install_finished, app_install_done) and in GET /api/apps/installs/{id}",
            "requestBody": openapi_body("InstallRequest"),
            "responses": {"202": obj, "400": error("bad body, unknown app or version, bad "
                                                   "scope (`field` names it)"),
                          "401": unauthorized, "403": forbidden,
                          "409": error("no APK library or farm database")}}},
        "/api/apps/uninstall": {"post": {
            "operationId": "uninstallApp", "summary":
            "Uninstall an app (a library app or a package name) from the phones of a scope; "
            "answered 202 like an install",
            "requestBody": openapi_body("UninstallRequest"),
            "responses": {"202": obj, "400": error("bad body, unknown app, bad scope"),
                          "401": unauthorized, "403": forbidden,
                          "409": error("no farm database")}}},
        "/api/apps/installs": {"get": {
            "operationId": "listAppInstalls", "summary":
            "The newest installs and uninstalls (phones, ok, failed), of the caller's phones",
            "responses": {"200": obj, "401": unauthorized}}},
        "/api/apps/installs/{install_id}": {"get": {
            "operationId": "getAppInstall", "summary":
            "One install's phones: state (pending, sending, installing, ok, failed), "
            "reason, splits installed, bytes sent of the phone's total",
            "parameters": [openapi_path_param("install_id", "the install's id")],
            "responses": {"200": obj, "401": unauthorized,
                          "404": error("no such install (or none of the caller's phones)")}}},
        "/api/apps/inventory": {"get": {
            "operationId": "appInventory", "summary":
            "The caller's phones' installed versions of the library's apps (as their nodes "
            "report them), the pins and the phones whose version differs from their pin",
            "parameters": [query("package", "one package only"),
                           query("serial", "one phone only"),
                           query("all", "1: every package, not only the library's"),
                           query("outdated", "1: only the drift")],
            "responses": {"200": obj, "400": error("bad parameter"), "401": unauthorized}}},
        "/api/apps/pins": {
            "get": {"operationId": "listAppPins", "summary": "The caller's clients' pins",
                    "responses": {"200": obj, "401": unauthorized}},
            "post": {"operationId": "pinApp", "summary":
                     "Pin an app's version for a client's phones or a group's (replacing "
                     "that target's pin of the app); the library must hold the version",
                     "requestBody": openapi_body("PinRequest"),
                     "responses": {"201": obj, "400": error("bad body, unknown app, version "
                                                            "or client"),
                                   "401": unauthorized, "403": forbidden}}},
        "/api/apps/pins/{pin_id}": {"delete": {
            "operationId": "unpinApp", "summary": "Remove a pin",
            "parameters": [PIN_ID.openapi()],
            "responses": {"200": obj, "400": error("bad pin id"), "401": unauthorized,
                          "403": forbidden, "404": error("no such pin")}}},
        "/api/apps/reconcile": {"post": {
            "operationId": "reconcileApps", "summary":
            "Install the pinned version now on every online phone that drifted from its "
            "pin (downgrades allowed), one install per app and version (super users only)",
            "responses": {"200": obj, "401": unauthorized,
                          "403": error("not a super user")}}},
    }
