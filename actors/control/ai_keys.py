"""AI endpoint keys per client / organization, and the resume of a paused phone, over the
control endpoint.

Owns ``POST /api/ai-keys`` (store a key, encrypted, for a client or an organization),
``GET /api/ai-keys`` (never the key: its last 4 characters only), ``DELETE /api/ai-keys/{id}``
(soft delete), and ``POST /api/phones/{serial}/resume`` (end the coordinator's pause of a
phone, actors.coordinator.phone_pause), with their request types and OpenAPI paths. Changes are audited
without the secret. The keys live in actors.coordinator.ai.keys (``hub.ai_keys``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta

from actors.control.auth import principal_of
from actors.control.http import hub_of, json_response, openapi_body, openapi_path_param
from actors.control.registry import _Body, _audit, _handled
from actors.control.schemas import IntParam, RowId, decode_request
from protocol.errors import FarmError
from protocol.names import printable, whole

log = logging.getLogger(__name__)

Url = Annotated[str, Meta(pattern=whole(r"https?://[^\s/\x00-\x1f\x7f-\x9f]+(/[^\s\x00-\x1f\x7f-\x9f]*)?"),
                          max_length=1024,
                          description="the OpenAI-compatible endpoint, e.g. http://host:8000/v1")]
Short = printable(128, 1)


class AIKeyBody(_Body):
    """A key for exactly one of ``client`` (name) or ``organization`` (id or name)."""

    base_url: Url
    model: Short
    key: Annotated[str, Meta(min_length=1, max_length=4096)]
    label: printable(128) | None = None
    client: Short | None = None
    organization: Short | RowId | None = None


class ResumeBody(_Body):
    reason: Annotated[str, Meta(max_length=1024)] | None = None


REQUEST_TYPES = [AIKeyBody, ResumeBody]
KEY_ID = IntParam("key_id", description="AI key id")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/ai-keys", get_ai_keys)
    app.router.add_post("/api/ai-keys", post_ai_key)
    app.router.add_delete("/api/ai-keys/{key_id}", delete_ai_key)
    app.router.add_post("/api/phones/{serial}/resume", post_resume)


def _keyring(request: web.Request) -> Any:
    keyring = getattr(hub_of(request), "ai_keys", None)
    if keyring is None:
        raise FarmError("AI keys need the farm database and a master key: this coordinator "
                        "has none")
    return keyring


@_handled
async def get_ai_keys(request: web.Request) -> web.Response:
    retired = request.query.get("retired", "") in ("1", "true", "yes")
    return json_response({"keys": await _keyring(request).list(include_retired=retired)})


@_handled
async def post_ai_key(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), AIKeyBody,
                          "a JSON object with base_url, model, key and client or organization")
    keyring = _keyring(request)
    view = await keyring.add(base_url=body.base_url, model=body.model, key=body.key,
                             label=body.label, client=body.client,
                             organization=body.organization)
    await _audit(request, keyring.db, "ai_key", view["id"], "create", None, view)
    log.info("ai key %d stored for %s", view["id"],
             f"client {view['client']}" if view["client"] else
             f"organization {view['organization_id']}")
    return json_response(view, 201)


@_handled
async def delete_ai_key(request: web.Request) -> web.Response:
    key_id = KEY_ID.parse(request)
    keyring = _keyring(request)
    before, after = await keyring.retire(key_id)
    await _audit(request, keyring.db, "ai_key", str(key_id), "retire", before, after)
    return json_response(after)


@_handled
async def post_resume(request: web.Request) -> web.Response:
    raw = await request.read()
    body = decode_request(raw, ResumeBody) if raw.strip() else ResumeBody()
    serial = request.match_info["serial"]
    try:
        out = await hub_of(request).resume_phone(serial, actor=principal_of(request).actor,
                                                  reason=body.reason)
    except LookupError as exc:  # not paused: nothing to resume
        raise FarmError(str(exc.args[0])) from None
    return json_response(out)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}

    bad = error("bad body or parameter (`field` names it)")
    conflict = error("no farm database / master key, or the phone is not paused")
    unauthorized = error("missing or wrong bearer token (only when a token is configured)")
    return {
        "/api/ai-keys": {
            "get": {"operationId": "listAIKeys", "summary":
                    "Stored AI endpoint keys (never the key: key_last4 only); ?retired=1 "
                    "includes soft-deleted ones",
                    "responses": {"200": obj, "401": unauthorized, "409": conflict}},
            "post": {"operationId": "addAIKey", "summary":
                     "Store an OpenAI-compatible endpoint key for a client or an organization "
                     "(encrypted under the farm master key; audited without the key). An "
                     "execution's recovery and ai.* variables use its client's key, else its "
                     "organization's, else the coordinator's --ai-* config",
                     "requestBody": openapi_body("AIKeyBody"),
                     "responses": {"201": obj, "400": bad, "401": unauthorized,
                                   "409": conflict}}},
        "/api/ai-keys/{key_id}": {"delete": {
            "operationId": "retireAIKey", "summary": "Soft delete: status becomes retired",
            "parameters": [KEY_ID.openapi()],
            "responses": {"200": obj, "400": bad, "401": unauthorized,
                          "404": error("no such key"), "409": conflict}}},
        "/api/phones/{serial}/resume": {"post": {
            "operationId": "resumePhone", "summary":
                "Resume a phone the coordinator paused (state paused, e.g. reason "
                "recovery_failures): new work is accepted again; audited",
            "parameters": [openapi_path_param("serial", "device serial, URL-encoded")],
            "requestBody": openapi_body("ResumeBody", required=False),
            "responses": {"200": obj, "400": bad, "401": unauthorized, "409": conflict}}},
    }
