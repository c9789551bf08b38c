"""Templates across clients over HTTP (issue 23.3): ``/api/templates``.

Owns these routes, their request types and OpenAPI paths; the rules are
actors.coordinator.definitions.templates'.

- ``GET /api/templates``: the templates and the copies the caller sees, each copy
  ``behind`` (its template has a newer version) and ``edited`` (changed since);
- ``POST /api/templates`` ``{"kind", "name", "client"}``: make a workflow or sequence
  definition a template; ``DELETE /api/templates/{kind}/{name}?client=``: no longer;
- ``POST /api/templates/copy`` ``{"kind", "name", "from_client", "to_client"}``: copy it into
  another client of the same organization (400 if that client has one of the name; ``kind``
  defaults to workflow, ``from_client`` to the only client with that template);
- ``POST /api/templates/update`` ``{"kind", "name", "client"}``: bring a copy up to its
  template's newest version; 409 with ``diff`` (the template's change) for a copy edited
  since.

Super users, and admins of the organization both clients belong to (403 otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from actors.control.auth import principal_of
from actors.control.definitions import _workflow_saver
from actors.control.http import HUB, error_response, json_response
from actors.control.registry import _handled
from actors.control.schemas import decode_request
from actors.coordinator.definitions.templates import CopyEdited, Templates

Kind = Literal["workflow", "sequence"]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Client = Annotated[str, Meta(min_length=1, max_length=128)]


class TemplateMark(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    kind: Kind = "workflow"
    client: Client | None = None


class TemplateCopy(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    to_client: Client
    kind: Kind = "workflow"
    from_client: Client | None = None  # the only client with that template when left out


class TemplateUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    client: Client
    kind: Kind = "workflow"


REQUEST_TYPES = [TemplateMark, TemplateCopy, TemplateUpdate]


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/templates", get_templates)
    r.add_post("/api/templates", post_template)
    r.add_post("/api/templates/copy", post_copy)
    r.add_post("/api/templates/update", post_update)
    r.add_delete("/api/templates/{kind}/{name:.+}", delete_template)


def _templates(request: web.Request) -> Templates:
    return Templates(request.app[HUB].farm_db())


def _mapped(handler):
    """`_handled` (TemplateNotFound is a LookupError: 404), and an edited copy's 409 with the
    template's diff."""
    async def wrapper(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except CopyEdited as exc:
            return error_response(409, str(exc), diff=exc.diff)
    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return _handled(wrapper)


@_mapped
async def get_templates(request: web.Request) -> web.Response:
    return json_response(await _templates(request).listing(principal_of(request)))


@_mapped
async def post_template(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), TemplateMark, "a JSON object with kind, name")
    return json_response(await _templates(request).mark(principal_of(request), body.kind,
                                                       body.name, body.client))


@_mapped
async def delete_template(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    return json_response(await _templates(request).mark(
        principal_of(request), kind, request.match_info["name"],
        request.query.get("client") or None, template=False))


@_mapped
async def post_copy(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), TemplateCopy,
                          "a JSON object with kind, name, from_client, to_client")
    done = await _templates(request).copy(
        principal_of(request), body.kind, body.name, from_client=body.from_client,
        to_client=body.to_client, save_workflow=_workflow_saver(request))
    return json_response(done, 201)


@_mapped
async def post_update(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), TemplateUpdate,
                          "a JSON object with kind, name, client")
    return json_response(await _templates(request).update(
        principal_of(request), body.kind, body.name, body.client,
        save_workflow=_workflow_saver(request)))


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}

    def op(op_id: str, summary: str, request: str | None = None, params=()) -> dict:
        out: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": {
            "200": obj, "400": error("bad body (`field` names it)"),
            "401": error("missing or wrong bearer token"),
            "403": error("not an admin of both clients' organization"),
            "404": error("no such template, client or copy"),
            "409": error("the copy was edited since (`diff`) or no farm database")}}
        if request:
            out["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}}
        if params:
            out["parameters"] = list(params)
        return out

    path = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in ("kind", "name")]
    client = {"name": "client", "in": "query", "required": False, "schema": {"type": "string"}}
    return {
        "/api/templates": {"get": op("getTemplates", "templates and their copies"),
                           "post": op("markTemplate", "make a definition a template",
                                      "TemplateMark")},
        "/api/templates/copy": {"post": op("copyTemplate", "copy a template into a client",
                                           "TemplateCopy")},
        "/api/templates/update": {"post": op("updateTemplateCopy",
                                             "bring a copy up to its template",
                                             "TemplateUpdate")},
        "/api/templates/{kind}/{name}": {"delete": op("unmarkTemplate",
                                                      "no longer a template",
                                                      params=[*path, client])},
    }
