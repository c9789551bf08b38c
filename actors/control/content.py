"""Content management over the control endpoint (issue 21.4).

Owns ``/api/content/captions``, ``/api/content/hashtags``, ``/api/content/vars`` and
``/api/content/media`` (list, put or upload, delete) with their OpenAPI paths: what
``${content.caption.NAME}``, ``${content.hashtags.NAME}``, ``${custom.NAME}`` and
``${content.media.next}`` draw from. The rows and files are `ContentStore`'s
(actors.coordinator.content_store), which validates everything before storing anything and
audits every change. A tenant lists its clients' rows and the farm's shared ones and changes
only its clients' (``client`` names one; inferred when it reaches just one); a super user
without ``client`` works on the farm's shared rows. A caption template that does not parse,
or names a caption template or hashtag set its client does not have, is a 400 with
``field: "template"``, the ``offset`` and the ``reason``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, AsyncIterator

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from msgspec import Meta

from actors.control.auth import principal_of
from actors.control.http import HUB, error_response, json_response
from actors.control.registry import _handled
from actors.control.schemas import IntParam, decode_request
from actors.coordinator.content_store import (IMAGE_MAX_BYTES, VIDEO_MAX_BYTES, ContentDenied,
                                              ContentInUse, ContentStore, MediaTooLarge,
                                              TemplateError, check_name)

log = logging.getLogger(__name__)

MEDIA_ID = IntParam("id", description="the media item's id (GET /api/content/media)")
_CHUNK = 256 * 1024
ClientName = Annotated[str, Meta(min_length=1, max_length=128)]


class CaptionBody(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /api/content/captions/{name}: a caption template (spintax and variables)."""

    template: Annotated[str, Meta(max_length=10_000)]
    client: ClientName | None = None
    reason: Annotated[str, Meta(max_length=1024)] | None = None  # kept in its history


class HashtagBody(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /api/content/hashtags/{name}: a hashtag set (with or without the #)."""

    tags: Annotated[list[Annotated[str, Meta(max_length=101)]], Meta(max_length=60)]
    client: ClientName | None = None


class VarBody(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /api/content/vars/{name}: a custom variable of a client, or of an account
    (``account``: its id, or PLATFORM.NUMBER when that names one of the caller's accounts;
    the value ${custom.NAME} gives on that account's runs)."""

    value: Annotated[str, Meta(max_length=10_000)]
    client: ClientName | None = None
    account: Annotated[str, Meta(min_length=1, max_length=200)] | None = None


REQUEST_TYPES = [CaptionBody, HashtagBody, VarBody]


def add_routes(app: web.Application) -> None:
    for kind in ("captions", "hashtags", "vars"):
        app.router.add_get(f"/api/content/{kind}", get_list)
        app.router.add_put(f"/api/content/{kind}/{{name}}", put_named)
        app.router.add_delete(f"/api/content/{kind}/{{name}}", delete_named)
    app.router.add_get("/api/content/media", get_media)
    app.router.add_post("/api/content/media", post_media)
    app.router.add_delete("/api/content/media/{id}", delete_media)


def _store(request: web.Request) -> ContentStore:
    return ContentStore(request.app[HUB].farm_db())


def _kind(request: web.Request) -> str:
    return request.path.split("/")[3]


def _content_errors(handler):
    """The content store's own errors on top of `_handled`'s: a template's offset, 403,
    413."""
    async def wrapper(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except TemplateError as exc:
            return error_response(400, str(exc), field="template", offset=exc.offset,
                                  reason=exc.reason)
        except ContentDenied as exc:
            return error_response(403, str(exc))
        except ContentInUse as exc:
            return error_response(409, str(exc))
        except MediaTooLarge as exc:
            return error_response(413, str(exc), limit=exc.limit)
    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return _handled(wrapper)


@_content_errors
async def get_list(request: web.Request) -> web.Response:
    store, clients, kind = _store(request), principal_of(request).client_ids, _kind(request)
    if kind == "vars":
        return json_response({"vars": await store.list_vars(clients)})
    table = "caption_templates" if kind == "captions" else "hashtag_sets"
    return json_response({kind: await store.list_rows(table, clients)})


@_content_errors
async def put_named(request: web.Request) -> web.Response:
    store, principal, kind = _store(request), principal_of(request), _kind(request)
    name = check_name(request.match_info["name"])
    clients, actor = principal.client_ids, principal.actor
    body_type = {"captions": CaptionBody, "hashtags": HashtagBody, "vars": VarBody}[kind]
    body = decode_request(await request.read(), body_type, f"a JSON object ({kind})")
    if kind == "vars" and body.account is not None:
        account_id, client_id = await store.account_for(body.account, clients)
        if body.client is not None and client_id != await store.client_for(body.client, clients):
            return error_response(400, "the account is not that client's", field="client")
        out = await store.put_var(name, body.value, client_id, account_id, clients, actor)
    else:
        client_id = await store.client_for(body.client, clients)
        if kind == "captions":
            out = await store.put_caption(name, body.template, client_id, clients, actor,
                                          body.reason)
        elif kind == "hashtags":
            out = await store.put_hashtags(name, body.tags, client_id, clients, actor)
        else:
            out = await store.put_var(name, body.value, client_id, None, clients, actor)
    return json_response(out, 201 if out.pop("created") else 200)


@_content_errors
async def delete_named(request: web.Request) -> web.Response:
    store, principal, kind = _store(request), principal_of(request), _kind(request)
    name = check_name(request.match_info["name"])
    clients, actor = principal.client_ids, principal.actor
    account = request.query.get("account")
    if kind == "vars" and account:
        account_id, client_id = await store.account_for(account, clients)
        return json_response({"removed": await store.delete_var(name, client_id, account_id,
                                                                clients, actor)})
    client_id = await store.client_for(request.query.get("client") or None, clients)
    if kind == "vars":
        removed = await store.delete_var(name, client_id, None, clients, actor)
    else:
        table = "caption_templates" if kind == "captions" else "hashtag_sets"
        removed = await store.delete_named(table, name, client_id, clients, actor)
    return json_response({"removed": removed})


@_content_errors
async def get_media(request: web.Request) -> web.Response:
    return json_response({"media": await _store(request).list_media(
        principal_of(request).client_ids)})


@_content_errors
async def post_media(request: web.Request) -> web.Response:
    """The file is the request body (any Content-Type: what it is comes from its bytes),
    streamed to disk; ``?name=`` its name in the library, ``?client=`` whose."""
    store, principal = _store(request), principal_of(request)
    name = check_name(request.query.get("name", ""))
    client_id = await store.client_for(request.query.get("client") or None,
                                       principal.client_ids)

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(_CHUNK):
            yield chunk
    try:
        item = await store.add_media(name, chunks(), client_id, principal.client_ids,
                                     principal.actor, expected=request.content_length)
    except (HttpProcessingError, ConnectionError) as exc:
        return error_response(400, f"upload broken off: {exc or type(exc)}; nothing was kept",
                              field="body")
    log.info("media %s added (%s, %d bytes) by %s", name, item["mime"], item["size"],
             principal.actor)
    return json_response(item, 201)


@_content_errors
async def delete_media(request: web.Request) -> web.Response:
    principal = principal_of(request)
    return json_response({"removed": await _store(request).delete_media(
        MEDIA_ID.parse(request), principal.client_ids, principal.actor)})


# --- OpenAPI --------------------------------------------------------------------------------


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    common = {"401": error("missing or wrong bearer token"),
              "403": error("the farm's shared content (super users change it) or a viewer"),
              "409": error("the coordinator has no farm database")}
    name = {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}
    client_q = {"name": "client", "in": "query", "required": False,
                "schema": {"type": "string"}, "description": "the client's name"}
    account_q = {"name": "account", "in": "query", "required": False,
                 "schema": {"type": "string"}, "description":
                 "the account's id, or PLATFORM.NUMBER when only one of the caller's accounts "
                 "has it (else a 400 asks for the id)"}
    paths: dict[str, Any] = {}
    what = {"captions": ("CaptionBody", "caption templates", "Caption", {
                "template": "{Loving|Enjoying} this ${content.hashtags.daily}"}),
            "hashtags": ("HashtagBody", "hashtag sets", "Hashtags", {
                "tags": ["travel", "#sunset"]}),
            "vars": ("VarBody", "custom variables (a client's or an account's)", "Var", {
                "value": "Berlin", "account": "clipshare.account1"})}
    for kind, (schema, label, op, example) in what.items():
        extra = [client_q, account_q] if kind == "vars" else [client_q]
        paths[f"/api/content/{kind}"] = {"get": {
            "operationId": f"list{op}s", "summary": f"The {label} the caller's clients have "
            "(and the farm's shared ones)", "responses": {"200": obj, **common}}}
        paths[f"/api/content/{kind}/{{name}}"] = {
            "put": {"operationId": f"put{op}", "summary": f"Create or replace one of the {label}"
                    + (" (validated: it must parse and name only caption templates and "
                       "hashtag sets its client has; 400 `field` template, `offset`, `reason`)"
                       if kind == "captions" else ""), "parameters": [name],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": f"#/components/schemas/{schema}"},
                        "example": example}}},
                    "responses": {"200": obj, "201": obj, "400": error(
                        "bad body or name (`field`; for a template also `offset`, `reason`)"),
                        **common}},
            "delete": {"operationId": f"delete{op}", "summary": f"Remove one of the {label}",
                       "parameters": [name, *extra],
                       "responses": {"200": obj, "400": error("bad name or client (`field`)"),
                                     "404": error("no such row"), **common,
                                     "409": error("a caption template names it (or no farm "
                                                  "database)")}}}
    paths["/api/content/media"] = {
        "get": {"operationId": "listMedia", "summary": "The media library (the caller's "
                "clients' items and the farm's shared ones)",
                "responses": {"200": obj, **common}},
        "post": {"operationId": "uploadMedia", "summary":
                 "Add an image (JPEG, PNG, GIF, WebP; at most "
                 f"{IMAGE_MAX_BYTES // 2**20} MiB) or video (MP4, MOV, M4V, WebM; at most "
                 f"{VIDEO_MAX_BYTES // 2**20} MiB) to the media library: the body is the file, "
                 "its type read from its first bytes, stored once per content under "
                 "DATA/media/<sha256>.<ext>, which ${content.media.next} draws from",
                 "parameters": [{"name": "name", "in": "query", "required": True,
                                 "schema": {"type": "string",
                                            "pattern": "^[A-Za-z0-9_-]{1,64}$"}}, client_q],
                 "requestBody": {"required": True, "content": {
                     "application/octet-stream": {"schema": {"type": "string",
                                                             "format": "binary"}}}},
                 "responses": {"201": obj, "400": error("bad name, client or file (`field`)"),
                               "413": error("the file is over its kind's limit"), **common}}}
    paths["/api/content/media/{id}"] = {"delete": {
        "operationId": "deleteMedia", "summary": "Remove a media item (its file goes with the "
        "last item of that content)", "parameters": [MEDIA_ID.openapi()],
        "responses": {"200": obj, "400": error("bad id"), "404": error("no such item"),
                      **common}}}
    return paths
