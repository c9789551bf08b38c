"""The APK library over the control endpoint (issue 20.1).

Owns ``POST /api/apks`` (the file as the request body, ``application/octet-stream``, or as
the one file part of a ``multipart/form-data`` body; streamed to disk in chunks, never read
whole into memory; ``?name=`` the file's name, for messages only: what the file is comes
from its manifest), ``GET /api/apks[?app=]`` and ``DELETE /api/apks/{id}``, with their
OpenAPI paths. The library is farm-wide: every logged-in user reads it, super users change
it (actors.access.policy SHARED). The work is `ApkLibrary` (actors.apps.library), put in the
app under `APKS`.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from actors.apps.apk_info import ApkError
from actors.apps.library import ApkInUse, ApkLibrary, UploadTooLarge, UploadTruncated
from actors.control.auth import principal_of
from actors.control.http import HUB, error_response, json_response
from actors.control.registry import _handled
from actors.control.schemas import IntParam, RequestError
from protocol.errors import FarmError

log = logging.getLogger(__name__)

APKS = web.AppKey("apks", ApkLibrary)
APK_ID = IntParam("id", description="the file's apk_id (GET /api/apks)")
_CHUNK = 256 * 1024
_MAX_NAME = 200


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/apks", post_apk)
    app.router.add_get("/api/apks", get_apks)
    app.router.add_delete("/api/apks/{id}", delete_apk)


def _library(request: web.Request) -> ApkLibrary:
    library = request.app.get(APKS)
    if library is None:
        raise FarmError("this endpoint keeps no APK library (no coordinator data folder)")
    return library


def _registry_app(request: web.Request):
    """package -> the screen registry's app for it (clipshare), or None."""
    store = getattr(request.app[HUB], "registry_store", None)

    def name_for(package: str) -> str | None:
        registry = getattr(store, "registry", None)
        return registry.app_for_package(package) if registry is not None else None
    return name_for


async def _body_chunks(request: web.Request) -> tuple[AsyncIterator[bytes], int | None, str]:
    """The uploaded file's chunks, its length if known, and its name for messages."""
    name = request.query.get("name", "")[:_MAX_NAME] or "upload"
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        part = await reader.next()
        while part is not None and getattr(part, "filename", None) is None:
            part = await reader.next()
        if part is None:
            raise RequestError("body", "multipart body has no file part (a part with a "
                               "filename)", field="file")
        name = (part.filename or name)[:_MAX_NAME]

        async def parts() -> AsyncIterator[bytes]:
            while chunk := await part.read_chunk(_CHUNK):
                yield chunk
        return parts(), None, name

    async def raw() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(_CHUNK):
            yield chunk
    return raw(), request.content_length, name


@_handled
async def post_apk(request: web.Request) -> web.Response:
    if request.content_type not in ("application/octet-stream", "multipart/form-data"):
        raise RequestError("Content-Type", "send the file as application/octet-stream (or "
                           f"multipart/form-data), not {request.content_type!r}",
                           field="Content-Type")
    library = _library(request)
    try:
        chunks, expected, name = await _body_chunks(request)
        upload = await library.receive(chunks, expected=expected)
    except UploadTooLarge as exc:
        return error_response(413, str(exc), limit=exc.limit)
    except UploadTruncated as exc:
        return error_response(400, str(exc), field="body")
    except (HttpProcessingError, ConnectionError, ValueError, AssertionError) as exc:
        # The client stopped sending, or a multipart body is malformed (no boundary, a part
        # cut off; aiohttp's reader asserts on some): nothing is kept.
        return error_response(400, f"upload unreadable or broken off: {exc or type(exc)}; "
                              "nothing was kept", field="body")
    try:
        result = await library.add_upload(upload, label=name, app_name=_registry_app(request),
                                          actor=principal_of(request).actor)
    except ApkError as exc:
        return error_response(400, str(exc), field="body", where=exc.where)
    return json_response(result.to_json(), 201 if result.added else 200)


@_handled
async def get_apks(request: web.Request) -> web.Response:
    app = request.query.get("app") or None
    return json_response({"apks": await _library(request).list(app)})


@_handled
async def delete_apk(request: web.Request) -> web.Response:
    apk_id = APK_ID.parse(request)
    try:
        removed = await _library(request).remove(apk_id, actor=principal_of(request).actor)
    except ApkInUse as exc:
        return error_response(409, str(exc))
    return json_response({"removed": removed.to_json()})


# --- OpenAPI --------------------------------------------------------------------------------


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    unauthorized = error("missing or wrong bearer token")
    no_library = error("this endpoint keeps no APK library")
    return {
        "/api/apks": {
            "post": {
                "operationId": "uploadApk", "summary":
                "Add an app version to the farm's APK library (super users): a plain .apk, "
                "or an .xapk/.apkm/.apks bundle (a zip of a base APK, config splits and OBB "
                "files). Package, version code/name, SDKs, ABIs and densities come from the "
                "binary manifest; each file is stored once by its sha256. 201 when something "
                "was added, 200 when the library had it all already",
                "parameters": [{"name": "name", "in": "query", "required": False,
                                "schema": {"type": "string", "maxLength": _MAX_NAME},
                                "description": "the file's name, used in messages only"}],
                "requestBody": {"required": True, "content": {
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}},
                    "multipart/form-data": {"schema": {
                        "type": "object", "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}}}}}},
                "responses": {
                    "200": obj, "201": obj,
                    "400": error("not an APK or bundle (`where` names the file or entry: "
                                 "not a zip, no manifest, no package, a path-traversal "
                                 "entry), a conflicting version, or a truncated upload"),
                    "401": unauthorized, "403": error("only super users change the library"),
                    "409": no_library,
                    "413": error("larger than the coordinator's --apk-max-mb")}},
            "get": {
                "operationId": "listApks", "summary":
                "The library's files (every logged-in user): apk_id, app, package, version "
                "name and code, kind (apk, obb), name, split, ABIs, densities, SDKs, sha256, "
                "size, uploaded_at/_by; newest version first",
                "parameters": [{"name": "app", "in": "query", "required": False,
                                "schema": {"type": "string"},
                                "description": "one app's (registry name or package)"}],
                "responses": {"200": obj, "401": unauthorized, "409": no_library}}},
        "/api/apks/{id}": {"delete": {
            "operationId": "deleteApk", "summary":
            "Remove one file of the library (super users); the stored file goes when no "
            "other row names its hash. Refused while a pin names its version",
            "parameters": [APK_ID.openapi()],
            "responses": {"200": obj, "400": error("bad id (`field` names it)"),
                          "401": unauthorized, "403": error("only super users"),
                          "404": error("no such file"),
                          "409": error("a pin names its version, or no APK library")}}},
    }
