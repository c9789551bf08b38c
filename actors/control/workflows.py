"""Sequence and workflow definitions (spec 12.2) and workflow runs through the control
endpoint.

Owns these routes, their request types (strict msgspec Structs: a bad body is a 400 naming
the JSON path of the field) and their OpenAPI paths:

- ``/api/sequences``: create (POST), list; ``/api/sequences/{name}``: get, update (PUT, the
  version goes up), soft delete (DELETE: status retired). A definition names a sequence of
  the library or of the operator's recordings (it must load: 400 ``$.name`` otherwise).
- ``/api/workflows``: create, list; ``/api/workflows/{name}``: get, update, soft delete;
  ``POST /api/workflows/{name}/run`` ``{"scope"}`` starts a workflow execution.
- ``/api/workflow-executions`` (newest first) and ``/api/workflow-executions/{id}``.

Every definition change is recorded in the audit trail (``FarmDB.audit``) with its before
and after state and the request's ``reason`` (DELETE: ``?reason=``). Running and recording
workflow executions is actors.coordinator.scheduling.workflows'.

Tenants (issue 17.4): admin and client users read the shared library (no client) and their
clients' definitions, and create, update and retire definitions of their own clients only
(``client`` names one; a caller reaching one client may leave it out); a name is unique
within a client, so another client's definition of that name is not seen. Shared
definitions are changed by super users only (403). A workflow run or execution of theirs
belongs to their clients (actors.access.scoped_work).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from actors.control.auth import principal_of
from actors.control.http import HUB, error_response, hub_of, json_response
from actors.control.registry import _db, _handled, only_client
from actors.control.schemas import IntParam, decode_request
from protocol.errors import FarmError, ValidationError, ValidationErrors
from protocol.names import check_printable, printable, whole

log = logging.getLogger(__name__)

SequenceName = Annotated[str, Meta(pattern=whole(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*"),
                                   max_length=200, description="library name, e.g. demo/login")]
WorkflowName = Annotated[str, Meta(pattern=whole("[A-Za-z0-9_.-]{1,64}"))]
Text = Annotated[str, Meta(max_length=4096)]
Reason = Annotated[str, Meta(max_length=1024, description="why (kept in the audit trail)")]


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    pass


class SequenceBody(_Body):
    name: SequenceName | None = None
    description: Text | None = None
    json_path: Annotated[str, Meta(max_length=1024)] | None = None
    recovery_prompt: Text | None = None
    client: printable(128, 1) | None = None
    reason: Reason | None = None


class RetryBody(_Body):
    attempts: Annotated[int, Meta(ge=0, le=20)] = 0
    delay_s: Annotated[float, Meta(ge=0, le=86_400)] = 60.0


class WorkflowSequenceBody(_Body):
    sequence: SequenceName
    depends_on: list[Annotated[int, Meta(ge=0)] | SequenceName] = []
    retry: RetryBody = msgspec.field(default_factory=RetryBody)


class WorkflowBody(_Body):
    sequences: Annotated[list[WorkflowSequenceBody], Meta(min_length=1, max_length=100)]
    name: WorkflowName | None = None
    description: Text | None = None
    is_template: bool = False
    client: printable(128, 1) | None = None
    reason: Reason | None = None


class WorkflowRunBody(_Body):
    scope: Annotated[str, Meta(min_length=1, max_length=4096,
                               description="scope or group:NAME, resolved now")]


REQUEST_TYPES = [SequenceBody, RetryBody, WorkflowSequenceBody, WorkflowBody, WorkflowRunBody]


def add_routes(app: web.Application) -> None:
    r = app.router
    for kind, one in ((SEQUENCES, "/api/sequences/{name:.+}"),
                      (WORKFLOWS, "/api/workflows/{name}")):
        h = _handlers(kind)
        r.add_get(f"/api/{kind.key}", h["list"])
        r.add_post(f"/api/{kind.key}", h["post"])
        if kind is WORKFLOWS:  # before the catch-all {name} routes
            r.add_post("/api/workflows/{name}/run", post_workflow_run)
        r.add_get(one, h["get"])
        r.add_put(one, h["put"])
        r.add_delete(one, h["delete"])
    r.add_get("/api/workflow-executions", get_workflow_executions)
    r.add_get("/api/workflow-executions/{id}", get_workflow_execution)


def _runner(request: web.Request):
    schedules = getattr(hub_of(request), "schedules", None)
    if schedules is None:
        raise FarmError("workflows need the farm database and the scheduler: this hub has none")
    return schedules.workflows


async def _audit(request: web.Request, db: Any, entity_type: str, entity_id: Any,
                 action: str, before: Any, after: Any, reason: str | None) -> None:
    await db.audit(entity_type, entity_id, action, before, after,
                   actor=principal_of(request).actor, reason=reason)


def _name(body_name: str | None, request: web.Request, creating: bool) -> str:
    path_name = request.match_info.get("name")
    if creating:
        if not body_name:
            raise ValidationError("$.name", "required")
        return body_name
    check_printable(path_name, "$.name")  # the URL's name is not checked by the body's type
    if body_name is not None and body_name != path_name:
        raise ValidationError("$.name", f"{body_name!r} differs from the URL's {path_name!r} "
                                        "(definitions are not renamed)")
    return path_name


# --- definitions: one set of handlers for both kinds -----------------------------------------


class _Kind(msgspec.Struct, frozen=True):
    """How the handlers treat one kind of definition."""

    what: str            # in messages: "sequence definition", "workflow"
    entity: str          # audit entity type
    id_field: str        # the row's id column
    body: type           # the request Struct
    lookup: str          # FarmDB method: active definition by name
    retire: str          # FarmDB method: soft delete by name
    listing: str         # FarmDB method: every definition
    key: str             # the listing's key in the answer


SEQUENCES = _Kind("sequence definition", "sequence_definition", "sequence_def_id",
                  SequenceBody, "sequence_definition", "retire_sequence_definition",
                  "sequence_definitions", "sequences")
WORKFLOWS = _Kind("workflow", "workflow_definition", "workflow_def_id", WorkflowBody,
                  "workflow_definition", "retire_workflow_definition", "workflow_definitions",
                  "workflows")


async def _found(db: Any, kind: _Kind, name: str) -> dict:
    found = await getattr(db, kind.lookup)(name)
    if found is None:
        raise LookupError(f"no such {kind.what}: {name!r}")
    return found


async def _list(request: web.Request, kind: _Kind) -> web.Response:
    retired = request.query.get("retired") == "1"
    return json_response({kind.key: await getattr(_db(request), kind.listing)(retired)})


async def _get(request: web.Request, kind: _Kind) -> web.Response:
    return json_response(await _found(_db(request), kind, request.match_info["name"]))


async def _owner(request: web.Request, db: Any, named: str | None,
                 before: dict | None) -> str | None:
    """The client a definition is saved for. A super user's choice (none named: the one it
    belongs to, a new one the shared library's); a tenant's definition is always one of its
    clients': the one named, else the one it belongs to, else the caller's only client
    (400 ``$.client`` if several)."""
    had = before.get("client") if before is not None else None
    if principal_of(request).is_super:
        return named if named is not None or before is None else had
    if named is not None and await db.client_row(named) is None:  # another's reads as none
        raise ValidationError("$.client", f"no such client: {named!r}")
    if named is not None and had is not None and named != had:
        raise ValidationError("$.client", f"the definition belongs to {had!r}: definitions "
                                          "do not move between clients")
    return named or had or await only_client(db)


async def _save(request: web.Request, kind: _Kind, creating: bool) -> web.Response:
    body = decode_request(await request.read(), kind.body, "a JSON object with name")
    name = _name(body.name, request, creating)
    db = _db(request)
    before = await getattr(db, kind.lookup)(name)
    if body.client is not None and principal_of(request).is_super:
        # A super user saves the named client's definition, not another's of that name.
        named = await db.client_row(body.client)
        before = None if named is None else await getattr(db, kind.lookup)(
            name, [named["client_id"]])
        if before is not None and before.get("client") != body.client:
            before = None
    if creating and before is not None:
        return error_response(409, f"{kind.what} {name!r} exists (PUT to update it)", field="$.name")
    if not creating and before is None:
        raise LookupError(f"no such {kind.what}: {name!r}")
    after = await save_definition(request, kind, name, body, before)
    return json_response(after, 201 if creating else 200)


async def save_definition(request: web.Request, kind: _Kind, name: str, body: Any,
                          before: dict | None) -> dict:
    """Validate and save a definition for the caller (``before``: the one it replaces),
    audited; a workflow also as a new version in its history. Returns the stored form."""
    db = _db(request)
    client = await _owner(request, db, body.client, before)
    if kind is SEQUENCES:
        _check_sequence(request, name)
        after = await db.save_sequence_definition(
            name, description=body.description, json_path=body.json_path,
            recovery_prompt=body.recovery_prompt, client=client)
    else:
        from actors.coordinator.scheduling.workflows import check_sequences

        if principal_of(request).is_super:
            rows = await db.sequence_definitions()
        else:  # the shared library and the owning client's own, its own first
            owner = await db.client_row(client)
            if owner is None:
                raise ValidationError("$.client", f"no such client: {client!r}")
            rows = await db.sequence_definitions(clients=[owner["client_id"]])
        known = {d["name"]: d for d in sorted(rows, key=lambda d: d.get("client_id") is not None)}
        entries = check_sequences(msgspec.to_builtins(body.sequences), known)
        after = await db.save_workflow_definition(name, entries, description=body.description,
                                                  is_template=body.is_template, client=client)
    await _audit(request, db, kind.entity, after[kind.id_field],
                 "create" if before is None else "update", before, after, body.reason)
    if kind is WORKFLOWS:
        from actors.coordinator.definitions.history import workflow_content
        from actors.coordinator.definitions.versions import VersionStore

        # The farm's own FarmDB: a tenant's ScopedFarmDB has no writer of its own.
        await VersionStore(request.app[HUB].farm_db()).record_save(
            "workflow", name, after["client_id"],
            None if before is None else workflow_content(before), workflow_content(after),
            author=principal_of(request).actor, reason=body.reason)
    return after


async def _delete(request: web.Request, kind: _Kind) -> web.Response:
    name = request.match_info["name"]
    db = _db(request)
    before = await _found(db, kind, name)
    if kind is SEQUENCES:
        users = [w["name"] for w in await db.workflow_definitions() if any(
            s["sequence_def_id"] == before["sequence_def_id"] for s in w["sequences"])]
        if users:
            return error_response(409, f"sequence definition {name!r} is used by workflow(s) "
                               f"{', '.join(users)}: change or delete those first",
                          workflows=users)
    after = await getattr(db, kind.retire)(name)
    await _audit(request, db, kind.entity, before[kind.id_field], "delete", before, after,
                 request.query.get("reason") or "soft delete (status retired)")
    return json_response(after)


def _check_sequence(request: web.Request, name: str) -> None:
    """The sequence must load from the library or the recordings (when the hub runs any)."""
    from actors.coordinator.runs import UnknownSequence

    load = getattr(getattr(hub_of(request), "runs", None), "sequence", None)
    if not callable(load):
        return  # a hub that runs no sequences (the tests' fake hub)
    try:
        load(name)
    except UnknownSequence as exc:
        raise ValidationError("$.name", str(exc)) from None
    except ValidationErrors as exc:
        raise ValidationError("$.name", f"sequence {name!r} does not load: {exc}") from None


def _handlers(kind: _Kind) -> dict[str, Any]:
    def bind(fn, *args):
        async def handler(request: web.Request) -> web.Response:
            return await fn(request, kind, *args)
        handler.__name__ = f"{fn.__name__.strip('_')}_{kind.key}"
        return _handled(handler)

    return {"list": bind(_list), "get": bind(_get), "post": bind(_save, True),
            "put": bind(_save, False), "delete": bind(_delete)}


@_handled
async def post_workflow_run(request: web.Request) -> web.Response:
    from actors.coordinator.scheduling.workflows import WorkflowNotFound

    body = decode_request(await request.read(), WorkflowRunBody, "a JSON object with scope")
    name = request.match_info["name"]
    try:
        started = await _runner(request).start(name, body.scope)
    except WorkflowNotFound as exc:
        raise LookupError(str(exc)) from None
    return json_response(started, 201)


RECENT_LIMIT = IntParam("limit", "query", 1, 1000, default=50)
WORKFLOW_EXECUTION_ID = IntParam("id", description="workflow execution id")


@_handled
async def get_workflow_executions(request: web.Request) -> web.Response:
    limit = RECENT_LIMIT.parse(request)
    return json_response({"workflow_executions": await _runner(request).recent(limit)})


@_handled
async def get_workflow_execution(request: web.Request) -> web.Response:
    from actors.coordinator.scheduling.workflows import WorkflowNotFound

    execution_id = WORKFLOW_EXECUTION_ID.parse(request)
    try:
        return json_response(await _runner(request).view(execution_id))
    except WorkflowNotFound as exc:
        raise LookupError(str(exc)) from None


# --- OpenAPI --------------------------------------------------------------------------------


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}

    def op(op_id: str, summary: str, *, request: str | None = None, params=(),
           created: bool = False, found: bool = False, query=()) -> dict:
        responses: dict[str, Any] = {"201" if created else "200": obj,
                                     "401": error("missing or wrong bearer token"),
                                     "409": error("exists already, in use, or no farm database")}
        if request or params or query:
            responses["400"] = error("bad body or parameter (`field` names it)")
        if found:
            responses["404"] = error("no such definition or execution")
        out: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
        if request:
            out["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}}
        parameters = [p.openapi() if isinstance(p, IntParam) else
                      {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                      for p in params]
        parameters += [q.openapi() if isinstance(q, IntParam) else
                       {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                       for q in query]
        if parameters:
            out["parameters"] = parameters
        return out

    return {
        "/api/sequences": {
            "get": op("listSequenceDefinitions", "Active sequence definitions (?retired=1: all)",
                      query=["retired"]),
            "post": op("createSequenceDefinition", "Define a library sequence (audited)",
                       request="SequenceBody", created=True)},
        "/api/sequences/{name}": {
            "get": op("getSequenceDefinition", "One sequence definition", params=["name"],
                      found=True),
            "put": op("updateSequenceDefinition", "Update (version + 1, audited)",
                      request="SequenceBody", params=["name"], found=True),
            "delete": op("retireSequenceDefinition", "Soft delete (status retired, audited)",
                         params=["name"], query=["reason"], found=True)},
        "/api/workflows": {
            "get": op("listWorkflows", "Active workflows with their sequences", query=["retired"]),
            "post": op("createWorkflow", "Define a workflow: ordered sequences, depends_on, "
                       "retry per sequence (audited)", request="WorkflowBody", created=True)},
        "/api/workflows/{name}": {
            "get": op("getWorkflow", "One workflow", params=["name"], found=True),
            "put": op("updateWorkflow", "Replace a workflow's definition (audited)",
                      request="WorkflowBody", params=["name"], found=True),
            "delete": op("retireWorkflow", "Soft delete (status retired, audited)",
                         params=["name"], query=["reason"], found=True)},
        "/api/workflows/{name}/run": {"post": op(
            "runWorkflow", "Run a workflow on a scope: its sequences in order on each phone",
            request="WorkflowRunBody", params=["name"], created=True, found=True)},
        "/api/workflow-executions": {"get": op(
            "listWorkflowExecutions", "Latest workflow executions, newest first",
            query=[RECENT_LIMIT])},
        "/api/workflow-executions/{id}": {"get": op(
            "getWorkflowExecution", "One workflow execution with its sequence executions",
            params=[WORKFLOW_EXECUTION_ID], found=True)},
    }
