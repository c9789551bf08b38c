"""Node keys over the control endpoint (issue 17.6): each node proves its own key.

Owns ``POST /api/nodes/keys`` (issue a node's key: the answer is the only place the key is
ever shown), ``GET /api/nodes/keys`` (never the key: its last 4 characters) and
``DELETE /api/nodes/keys/{name}`` (revoke: the node is disconnected and refused from then
on), with their request types and OpenAPI paths. Super users only (403 otherwise); every
change is audited under the caller's name, without the key. The keys live in
actors.coordinator.node_keys (``hub.node_keys``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta

from actors.control.auth import principal_of
from actors.control.http import (error_response, hub_of, json_response, openapi_body,
                                 openapi_path_param, super_users_only)
from actors.control.registry import _Body, _handled
from actors.control.schemas import decode_request
from actors.coordinator.node_keys import NODE_NAME, NodeKeyExists, check_node_name
from protocol.errors import FarmError
from protocol.names import whole

log = logging.getLogger(__name__)

NodeName = Annotated[str, Meta(pattern=whole(NODE_NAME), min_length=1, max_length=64,
                               description="the node's --name")]


class NodeKeyBody(_Body):
    node: NodeName


REQUEST_TYPES = [NodeKeyBody]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/nodes/keys", get_node_keys)
    app.router.add_post("/api/nodes/keys", post_node_key)
    app.router.add_delete("/api/nodes/keys/{name}", delete_node_key)


def _keyring(request: web.Request) -> Any:
    keyring = getattr(hub_of(request), "node_keys", None)
    if keyring is None:
        raise FarmError("node keys need the farm database and a master key: this coordinator "
                        "has none")
    return keyring


async def _audit(request: web.Request, keyring: Any, node: str, action: str,
                 before: Any, after: Any, reason: str | None = None) -> None:
    audit = getattr(keyring.db, "audit", None)
    if audit is not None:
        await audit("node_key", node, action, before, after,
                    actor=principal_of(request).actor, reason=reason)


@_handled
async def get_node_keys(request: web.Request) -> web.Response:
    if (refused := super_users_only(request, "node keys")) is not None:
        return refused
    return json_response({"keys": await _keyring(request).list()})


@_handled
async def post_node_key(request: web.Request) -> web.Response:
    if (refused := super_users_only(request, "node keys")) is not None:
        return refused
    body = decode_request(await request.read(), NodeKeyBody, "a JSON object with node")
    keyring = _keyring(request)
    try:
        view, key = await keyring.add(body.node)
    except NodeKeyExists as exc:
        return error_response(409, str(exc), field="$.node")
    await _audit(request, keyring, body.node, "create", None, view)
    log.info("node key for node=%s issued by %s", body.node, principal_of(request).actor)
    return json_response({**view, "key": key}, 201)


@_handled
async def delete_node_key(request: web.Request) -> web.Response:
    if (refused := super_users_only(request, "node keys")) is not None:
        return refused
    name = check_node_name(request.match_info["name"], "name")
    keyring = _keyring(request)
    before, after = await keyring.revoke(name)
    await _audit(request, keyring, name, "update", before, after, reason="revoked")
    log.warning("node key of node=%s revoked by %s", name, principal_of(request).actor)
    return json_response(after)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    bad = error("bad body or parameter (`field` names it)")
    unauthorized = error("missing or wrong bearer token")
    forbidden = error("not a super user")
    return {
        "/api/nodes/keys": {
            "get": {"operationId": "listNodeKeys", "summary":
                    "Every node's key: node, key_last4, status (active | revoked), "
                    "created_at, revoked_at, last_seen_at; never the key (super users only)",
                    "responses": {"200": obj, "401": unauthorized, "403": forbidden,
                                  "409": error("no farm database / master key")}},
            "post": {"operationId": "addNodeKey", "summary":
                     "Issue a node's own key for the node link (`farm-node --key-file`). "
                     "The answer's `key` is the only time the key is shown; it is stored "
                     "sealed under the farm master key. A revoked key is replaced; audited "
                     "without the key (super users only)",
                     "requestBody": openapi_body("NodeKeyBody"),
                     "responses": {"201": obj, "400": bad, "401": unauthorized,
                                   "403": forbidden,
                                   "409": error("the node has a key already (revoke it "
                                                "first), or no farm database")}}},
        "/api/nodes/keys/{name}": {"delete": {
            "operationId": "revokeNodeKey", "summary":
                "Revoke a node's key: the node is disconnected now and refused at every "
                "hello until it gets a new key; audited (super users only)",
            "parameters": [openapi_path_param("name", "the node's name")],
            "responses": {"200": obj, "400": bad, "401": unauthorized, "403": forbidden,
                          "404": error("the node has no key"),
                          "409": error("the key is revoked already, or no farm database")}}},
    }
