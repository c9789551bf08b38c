"""The control endpoint's screen registry and discovery routes.

Owns ``/api/registry`` (the registry's apps and version, one app's JSON, its reference files,
saving and deleting one screen through the coordinator's `actors.coordinator.registry_store`) and
``/api/discovery`` (proposals for unknown screens from `actors.coordinator.ai.discovery`: list, edit,
approve into the registry, discard), their request types and their OpenAPI paths. A bad body
is a 400 naming the JSON path of the field; an unknown app, screen, file or proposal a 404.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from actors.control.auth import principal_of
from actors.control.http import error_response, hub_of, json_response
from actors.control.schemas import IntParam, RequestError, decode_request
from actors.coordinator.ai.discovery import ApproveRequest, ProposalEdit, ProposalNotFound, ProposalResolved
from actors.coordinator.registry_store import FrameRef, RegistryNotFound, ScreenEdit, frame_from_b64
from protocol.errors import FarmError, PhoneNotFound, ValidationError, ValidationErrors

log = logging.getLogger(__name__)

PROPOSAL_ID = IntParam("id", description="proposal id")



def _actor(request: web.Request) -> str:
    """Who the audit trail names for a change made by ``request`` (its caller)."""
    return principal_of(request).actor


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/registry", get_registry)
    r.add_get("/api/registry/apps/{app}", get_app)
    r.add_get("/api/registry/apps/{app}/files/{path:.+}", get_file)
    r.add_put("/api/registry/apps/{app}/screens/{screen}", put_screen)
    r.add_delete("/api/registry/apps/{app}/screens/{screen}", delete_screen)
    r.add_get("/api/discovery", get_discovery)
    r.add_put("/api/discovery/{id}", put_proposal)
    r.add_post("/api/discovery/{id}/approve", post_approve)
    r.add_post("/api/discovery/{id}/discard", post_discard)


def _problems(exc: ValidationErrors) -> web.Response:
    first = exc.problems[0]
    return error_response(400, str(first) if len(exc.problems) == 1 else
                  f"{len(exc.problems)} problems; first: {first}", field=first.where,
                  problems=[{"where": p.where, "reason": p.reason} for p in exc.problems])


def _store(request: web.Request) -> Any:
    store = getattr(hub_of(request), "registry_store", None)
    if store is None:
        raise web.HTTPConflict(reason="this coordinator has no registry store")
    return store


def _discovery(request: web.Request) -> Any:
    service = getattr(hub_of(request), "discovery", None)
    if service is None:
        raise web.HTTPConflict(reason="this coordinator has no screen discovery")
    return service


async def frame_png(hub: Any, frame: FrameRef | None) -> bytes | None:
    """The PNG a FrameRef names; ValidationError naming the field when it is unusable."""
    if frame is None:
        return None
    given = [k for k in ("serial", "unknown_screen", "png_b64") if getattr(frame, k) is not None]
    if len(given) != 1:
        raise ValidationError("$.frame", "give exactly one of serial, unknown_screen, png_b64 "
                                         f"(got {', '.join(given) or 'none'})")
    if frame.serial is not None:
        try:
            png, _ = await hub.screen(frame.serial)
        except PhoneNotFound as exc:
            raise ValidationError("$.frame.serial", str(exc)) from None
        except FarmError as exc:
            raise ValidationError("$.frame.serial", f"no frame: {exc}") from None
        return png
    if frame.unknown_screen is not None:
        try:
            return hub.unknown_screen_image(frame.unknown_screen)
        except (FarmError, OSError) as exc:
            raise ValidationError("$.frame.unknown_screen", str(exc)) from None
    return frame_from_b64(frame.png_b64)


# --- registry -------------------------------------------------------------------------------


async def get_registry(request: web.Request) -> web.Response:
    return json_response(_store(request).summary())


async def get_app(request: web.Request) -> web.Response:
    app = request.match_info["app"]
    try:
        return json_response(_store(request).app_json(app))
    except RegistryNotFound as exc:
        return error_response(404, str(exc), app=app)


async def get_file(request: web.Request) -> web.Response:
    app, path = request.match_info["app"], request.match_info["path"]
    try:
        data = _store(request).file(app, path)
    except RegistryNotFound as exc:
        return error_response(404, str(exc), app=app, path=path)
    return web.Response(body=data, content_type="image/png",
                        headers={"Cache-Control": "no-cache"})


async def put_screen(request: web.Request) -> web.Response:
    """Create or replace one screen: crops cut from the frame, the app validated, saved
    atomically, audited, pushed to every node. 200 (replaced) or 201 (created)."""
    app, screen = request.match_info["app"], request.match_info["screen"]
    store = _store(request)
    try:
        edit = decode_request(await request.read(), ScreenEdit,
                              "a JSON object with kind, regions, actions and frame")
        png = await frame_png(hub_of(request), edit.frame)
        out = await store.save_screen(app, screen, edit, png, actor=_actor(request))
    except FarmError as exc:
        return _failure(exc, app=app, screen=screen)
    discovery = getattr(hub_of(request), "discovery", None)
    if discovery is not None and edit.frame is not None and edit.frame.unknown_screen:
        await discovery.registered(edit.frame.unknown_screen, out, actor=_actor(request))
    return json_response(out, 201 if out["action"] == "create" else 200)


async def delete_screen(request: web.Request) -> web.Response:
    app, screen = request.match_info["app"], request.match_info["screen"]
    try:
        return json_response(await _store(request).delete_screen(
            app, screen, actor=_actor(request), reason=request.query.get("reason", "")))
    except FarmError as exc:  # e.g. a state another screen's action links to: 400
        return _failure(exc, app=app, screen=screen)


# --- discovery ------------------------------------------------------------------------------


async def get_discovery(request: web.Request) -> web.Response:
    status = request.query.get("status")
    return json_response({"proposals": await _discovery(request).proposals(status)})


async def put_proposal(request: web.Request) -> web.Response:
    proposal_id = str(PROPOSAL_ID.parse(request))
    try:
        edit = decode_request(await request.read(), ProposalEdit, "a JSON object")
        return json_response(await _discovery(request).update(proposal_id, edit, actor=_actor(request)))
    except FarmError as exc:
        return _failure(exc, id=proposal_id)


async def post_approve(request: web.Request) -> web.Response:
    """Write the proposal (or the edited screen of the body) into the registry."""
    proposal_id = str(PROPOSAL_ID.parse(request))
    raw = await request.read()
    try:
        body = decode_request(raw, ApproveRequest, "a JSON object") if raw.strip() else None
        png = await frame_png(hub_of(request), body.frame) if body is not None else None
        return json_response(await _discovery(request).approve(proposal_id, body, png, actor=_actor(request)))
    except FarmError as exc:
        return _failure(exc, id=proposal_id)


async def post_discard(request: web.Request) -> web.Response:
    proposal_id = str(PROPOSAL_ID.parse(request))
    try:
        return json_response(await _discovery(request).discard(
            proposal_id, actor=_actor(request), reason=request.query.get("reason", "")))
    except FarmError as exc:
        return _failure(exc, id=proposal_id)


def _failure(exc: FarmError, **ids: str) -> web.Response:
    """The answer to an edit that failed: 400 naming the field (every problem listed), 404
    for an unknown app, screen, file or proposal, 409 for a resolved proposal."""
    if isinstance(exc, RequestError):
        return json_response(exc.body, 400)
    if isinstance(exc, ValidationErrors):
        return _problems(exc)
    if isinstance(exc, ValidationError):
        return error_response(400, str(exc), field=exc.where)
    if isinstance(exc, (RegistryNotFound, ProposalNotFound)):
        return error_response(404, str(exc), **ids)
    if isinstance(exc, ProposalResolved):
        return error_response(409, str(exc), **ids)
    raise exc  # anything else is a bug: the middleware answers 500 and logs it


# --- OpenAPI --------------------------------------------------------------------------------


def request_types() -> list[type]:
    return [ScreenEdit, ProposalEdit, ApproveRequest]


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    png = {"description": "PNG image", "content": {"image/png": {
        "schema": {"type": "string", "format": "binary"}}}}
    unauthorized = error("missing or wrong bearer token (only when a token is configured)")
    missing = error("no such app, screen, file or proposal")
    bad = error("bad body: `field` is the JSON path, `problems` lists every problem")
    conflict = error("no registry store / discovery on this coordinator, or already resolved")

    def param(name: str, description: str) -> dict:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
                "description": description}

    def body(name: str, required: bool = True) -> dict:
        return {"required": required, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{name}"}}}}

    app, screen = param("app", "app key, e.g. clipshare"), param("screen", "screen key")
    pid = PROPOSAL_ID.openapi()
    reason = {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}}
    return {
        "/api/registry": {"get": {
            "operationId": "getRegistry", "summary": "Registry version and apps (states, interrupts)",
            "responses": {"200": obj, "401": unauthorized, "409": conflict}}},
        "/api/registry/apps/{app}": {"get": {
            "operationId": "getRegistryApp", "summary": "One app's JSON (registry/model.py App)",
            "parameters": [app],
            "responses": {"200": obj, "401": unauthorized, "404": missing}}},
        "/api/registry/apps/{app}/files/{path}": {"get": {
            "operationId": "getRegistryFile",
            "summary": "A reference crop or screenshot the app's JSON names (path as written there)",
            "parameters": [app, param("path", "e.g. clipshare/feed.title.png")],
            "responses": {"200": png, "401": unauthorized, "404": missing}}},
        "/api/registry/apps/{app}/screens/{screen}": {
            "put": {"operationId": "saveScreen",
                    "summary": "Create or replace a screen: crops cut from the frame, validated, "
                               "saved atomically, audited, pushed to nodes",
                    "parameters": [app, screen], "requestBody": body("ScreenEdit"),
                    "responses": {"200": obj, "201": obj, "400": bad, "401": unauthorized,
                                  "404": missing, "409": conflict}},
            "delete": {"operationId": "deleteScreen", "summary": "Remove a screen (audited)",
                       "parameters": [app, screen, reason],
                       "responses": {"200": obj, "400": bad, "401": unauthorized,
                                     "404": missing}}},
        "/api/discovery": {"get": {
            "operationId": "listProposals",
            "summary": "Proposals for unknown screens (id, unknown_screen, status, name, "
                       "description, kind, app, regions, actions, image URL)",
            "parameters": [{"name": "status", "in": "query", "required": False,
                            "schema": {"enum": ["proposed", "approved", "discarded", "failed"]}}],
            "responses": {"200": obj, "401": unauthorized, "409": conflict}}},
        "/api/discovery/{id}": {"put": {
            "operationId": "editProposal", "summary": "Edit a proposal before approving it",
            "parameters": [pid], "requestBody": body("ProposalEdit"),
            "responses": {"200": obj, "400": bad, "401": unauthorized, "404": missing,
                          "409": conflict}}},
        "/api/discovery/{id}/approve": {"post": {
            "operationId": "approveProposal",
            "summary": "Write the proposal (or the body's edited screen) into the registry",
            "parameters": [pid], "requestBody": body("ApproveRequest", required=False),
            "responses": {"200": obj, "400": bad, "401": unauthorized, "404": missing,
                          "409": conflict}}},
        "/api/discovery/{id}/discard": {"post": {
            "operationId": "discardProposal", "summary": "Drop a proposal",
            "parameters": [pid, reason],
            "responses": {"200": obj, "400": bad, "401": unauthorized, "404": missing,
                          "409": conflict}}},
    }
