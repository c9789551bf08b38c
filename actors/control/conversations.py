"""Conversations over the control endpoint (issue 21.6, spec 7.5.6).

Owns ``GET /api/conversations`` (``?account=`` an id or platform.number, ``?limit=``: the
caller's accounts' conversations, the latest message first, each with its partner, message
count and last message) and ``GET /api/conversations/{id}/messages`` (``?limit=``: the
conversation and its newest messages, oldest first). The rows come from the phones'
``messages_read`` events (actors.coordinator.engagement.ingest). A caller other than a
super user sees its own clients' accounts' conversations only; another client's
conversation answers like a missing one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from actors.control.http import json_response
from actors.control.auth import caller_clients
from actors.control.links import _db, query_accounts
from actors.control.registry import _handled
from actors.control.schemas import IntParam
from actors.coordinator.engagement.conversations import ConversationStore

CONVERSATION_ID = IntParam("id", description="the conversation's id")
LIMIT = IntParam("limit", "query", 1, 500, default=100,
                 description="conversations listed, the latest message first (default 100)")
MESSAGES = IntParam("limit", "query", 1, 1000, default=200,
                    description="the newest messages given, oldest first (default 200)")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/conversations", get_conversations)
    app.router.add_get("/api/conversations/{id}/messages", get_messages)


@_handled
async def get_conversations(request: web.Request) -> web.Response:
    limit = LIMIT.parse(request)
    accounts = await query_accounts(request)
    rows = await ConversationStore(_db(request)).list(caller_clients(request),
                                                      account_ids=accounts, limit=limit)
    return json_response({"conversations": rows})


@_handled
async def get_messages(request: web.Request) -> web.Response:
    conversation_id = CONVERSATION_ID.parse(request)
    limit = MESSAGES.parse(request)
    found = await ConversationStore(_db(request)).get(conversation_id, caller_clients(request),
                                                      limit=limit)
    if found is None:
        raise LookupError(f"no such conversation: {conversation_id}")
    return json_response(found)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    unauthorized = error("missing or wrong bearer token")
    no_db = error("this endpoint has no farm database")
    return {
        "/api/conversations": {"get": {
            "operationId": "listConversations", "summary":
            "Conversations the phones read (read_messages steps) of the caller's accounts, "
            "the latest message first: conversation_id, account_id, account, serial, "
            "platform, partner, started_at, last_message_at, message_count, last_message",
            "parameters": [{"name": "account", "in": "query", "required": False,
                            "schema": {"type": "string"},
                            "description": "one account's: its id, or platform.number"},
                           LIMIT.openapi()],
            "responses": {"200": obj, "400": error("bad parameter (`field` names it)"),
                          "401": unauthorized, "409": no_db}}},
        "/api/conversations/{id}/messages": {"get": {
            "operationId": "getConversationMessages", "summary":
            "One conversation and its newest messages, oldest first: message_id, sender "
            "(them | us), text, sent_at (when a phone first read it)",
            "parameters": [CONVERSATION_ID.openapi(), MESSAGES.openapi()],
            "responses": {"200": obj, "400": error("bad parameter (`field` names it)"),
                          "401": unauthorized,
                          "404": error("no such conversation (or another client's)"),
                          "409": no_db}}},
    }
