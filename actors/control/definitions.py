"""Definitions' history over HTTP (issue 23.1): ``/api/definitions/{kind}/{name}/...``.

Owns these routes, their request type and OpenAPI paths; the history itself is
actors.coordinator.definitions'. ``kind`` is one of sequence, workflow, schedule, screen,
caption; ``name`` the definition's (``clipshare/post_clip``, ``clipshare/feed`` for a
screen), ``?client=`` the client when several of the caller's have one of that name.

- ``GET .../versions``: every version, newest first (number, author, time, reason, hash);
- ``GET .../versions/{n}``: one, with its content;
- ``GET .../diff?from=N&to=M``: a readable diff (``to`` may be written ``NAME@M``; another
  definition's name is a 400: a diff is within one definition);
- ``POST .../revert`` ``{"version", "reason"}``: version n saved again as a new version,
  through the kind's own save (validated, audited); 404 for a version that does not exist.

Sequences and screens belong to the whole farm: everyone reads their history, super users
revert them. A tenant sees and reverts its clients' workflows and captions and reads the
shared ones'.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from actors.control.auth import principal_of
from actors.control.http import HUB, error_response, hub_of, json_response
from actors.control.registry import _handled
from actors.control.schemas import IntParam, decode_request
from actors.coordinator.definitions.history import DefinitionHistory
from protocol.errors import ValidationError, ValidationErrors

PREFIX = "/api/definitions/{kind}/{name:.+}"
VERSION_NUMBER = IntParam("n", description="version number (1, 2, ...)")


class ImportItem(msgspec.Struct, forbid_unknown_fields=True):
    kind: Annotated[str, Meta(max_length=32)]
    name: Annotated[str, Meta(min_length=1, max_length=300)]
    content: dict[str, Any]
    client: Annotated[str, Meta(max_length=128)] | None = None
    path: Annotated[str, Meta(max_length=1024, description="the file it came from")] | None = None


class ImportBody(msgspec.Struct, forbid_unknown_fields=True):
    definitions: Annotated[list[ImportItem], Meta(max_length=100_000)]
    reason: Annotated[str, Meta(min_length=1, max_length=1024)]


class RevertBody(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, Meta(ge=1)]
    reason: Annotated[str, Meta(min_length=1, max_length=1024,
                                description="why (kept in the history and the audit trail)")]


REQUEST_TYPES = [RevertBody, ImportItem, ImportBody]
# An import carries screens' crops and screenshots: more than the API's usual body limit.
MAX_IMPORT_BYTES = 256 * 1024 * 1024


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/definitions", get_definitions)
    r.add_post("/api/definitions/import", post_import)
    r.add_get(f"{PREFIX}/versions", get_versions)
    r.add_get(f"{PREFIX}/versions/{{n}}", get_version)
    r.add_get(f"{PREFIX}/diff", get_diff)
    r.add_post(f"{PREFIX}/revert", post_revert)


def _history(request: web.Request) -> DefinitionHistory:
    hub = request.app[HUB]  # the sequence files and the registry are the farm's
    return DefinitionHistory(hub_of(request).farm_db(), principal_of(request).client_ids,
                             farm_db=hub.farm_db(), runs=getattr(hub, "runs", None),
                             registry=getattr(hub, "registry_store", None))


def _number(text: str | None, field: str) -> int:
    try:
        number = int(text or "")
    except ValueError:
        raise ValidationError(field, f"{text!r}: a version number") from None
    if number < 1:
        raise ValidationError(field, f"{number}: versions start at 1")
    return number


def _what(request: web.Request) -> tuple[str, str, str | None]:
    return (request.match_info["kind"], request.match_info["name"],
            request.query.get("client") or None)


@_handled  # DefinitionNotFound is a LookupError: 404
async def get_versions(request: web.Request) -> web.Response:
    kind, name, client = _what(request)
    return json_response(await _history(request).versions(kind, name, client))


@_handled  # DefinitionNotFound is a LookupError: 404
async def get_version(request: web.Request) -> web.Response:
    kind, name, client = _what(request)
    number = VERSION_NUMBER.parse(request)
    return json_response(await _history(request).version(kind, name, number, client))


@_handled  # DefinitionNotFound is a LookupError: 404
async def get_diff(request: web.Request) -> web.Response:
    kind, name, client = _what(request)
    if "from" not in request.query or "to" not in request.query:
        raise ValidationError("from" if "from" not in request.query else "to",
                              "give both from and to (version numbers)")
    other, _, to = request.query["to"].rpartition("@")
    return json_response(await _history(request).diff(
        kind, name, _number(request.query["from"], "from"), _number(to, "to"),
        other=other or None, client=client))


def _workflow_saver(request: web.Request):
    """How the history saves a workflow for this caller: through the workflows' own save
    (validated, audited, versioned)."""
    async def save_workflow(wf_name: str, owner: int | None, content: dict,
                            reason: str) -> Any:
        from actors.control.workflows import WORKFLOWS, WorkflowBody, save_definition

        db = hub_of(request).farm_db()
        before = await db.workflow_definition(wf_name, [owner] if owner is not None else [])
        owner_name = None
        if owner is not None:
            owner_name = next((c["name"] for c in await db.client_rows()
                               if c["client_id"] == owner), None)
        body = msgspec.convert({**content, "client": owner_name, "reason": reason},
                               WorkflowBody)
        return await save_definition(request, WORKFLOWS, wf_name, body, before)
    return save_workflow


@_handled  # DefinitionNotFound is a LookupError: 404
async def post_revert(request: web.Request) -> web.Response:
    kind, name, client = _what(request)
    body = decode_request(await request.read(), RevertBody,
                          'a JSON object {"version": N, "reason": "..."}')
    head = await _history(request).revert(kind, name, body.version, reason=body.reason,
                                          author=principal_of(request).actor, client=client,
                                          save_workflow=_workflow_saver(request))
    return json_response(head)


@_handled  # DefinitionNotFound is a LookupError: 404
async def get_definitions(request: web.Request) -> web.Response:
    """The newest version of every definition the caller sees, with content (an export)."""
    return json_response({"definitions": await _history(request).current()})


@_handled  # DefinitionNotFound is a LookupError: 404
async def post_import(request: web.Request) -> web.Response:
    """Definitions read from an export, saved as new versions after every one was checked
    (400 listing each problem as ``path#/pointer``; nothing saved then)."""
    raw = bytearray()
    async for chunk in request.content.iter_chunked(1 << 20):
        raw += chunk
        if len(raw) > MAX_IMPORT_BYTES:
            return error_response(413, f"an import is at most {MAX_IMPORT_BYTES} bytes")
    body = decode_request(bytes(raw), ImportBody,
                          'a JSON object {"definitions": [...], "reason": "..."}')
    try:
        done = await _history(request).import_definitions(
            [msgspec.to_builtins(d) for d in body.definitions],
            author=principal_of(request).actor, reason=body.reason,
            save_workflow=_workflow_saver(request))
    except ValidationErrors as exc:
        return error_response(400, f"{len(exc.problems)} problem(s); nothing was imported",
                              problems=[{"where": p.where, "reason": p.reason}
                                        for p in exc.problems])
    return json_response(done)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    path_params = [{"name": "kind", "in": "path", "required": True, "schema": {
                       "type": "string",
                       "enum": ["sequence", "workflow", "schedule", "screen", "caption"]}},
                   {"name": "name", "in": "path", "required": True,
                    "schema": {"type": "string"}}]
    client = {"name": "client", "in": "query", "required": False,
              "schema": {"type": "string"}}

    def op(op_id: str, summary: str, extra=(), request: str | None = None) -> dict:
        out: dict[str, Any] = {
            "operationId": op_id, "summary": summary,
            "parameters": [*path_params, *extra, client],
            "responses": {"200": obj, "400": error("bad parameter (`field` names it)"),
                          "401": error("missing or wrong bearer token"),
                          "403": error("not yours to change"),
                          "404": error("no such definition or version"),
                          "409": error("this kind is not changed in place")}}
        if request:
            out["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}}
        return out

    base = "/api/definitions/{kind}/{name}"
    number = VERSION_NUMBER.openapi()
    query = [{"name": q, "in": "query", "required": True, "schema": {"type": "string"}}
             for q in ("from", "to")]
    plain = {"responses": {"200": obj, "400": error("bad body (`problems` lists each)"),
                           "401": error("missing or wrong bearer token"),
                           "403": error("super users only"),
                           "413": error("the import is too large")}}
    return {
        "/api/definitions": {"get": {"operationId": "getDefinitions",
                                     "summary": "the newest version of every definition",
                                     "responses": {"200": obj, "401": error("missing or "
                                                                            "wrong token")}}},
        "/api/definitions/import": {"post": {
            "operationId": "importDefinitions", "summary": "load definitions as new versions",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ImportBody"}}}}, **plain}},
        f"{base}/versions": {"get": op("getDefinitionVersions", "a definition's versions")},
        f"{base}/versions/{{n}}": {"get": op("getDefinitionVersion", "one version",
                                              [number])},
        f"{base}/diff": {"get": op("getDefinitionDiff", "what changed between two versions",
                                   query)},
        f"{base}/revert": {"post": op("revertDefinition", "save a past version again",
                                      request="RevertBody")},
    }
