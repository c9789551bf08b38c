"""The AI recovery routes of the control endpoint (spec 12.3.4, 12.3.5).

Owns ``GET /api/recovery/attempts`` (attempts newest first, filtered by execution, sequence,
phone or status: prompt, responses, actions, frames) and ``GET /api/recovery/stats`` (success
rate and mean steps grouped by sequence, screen, phone or failure reason), read from the farm
database's ``recovery_attempts`` (written by actors/coordinator/ai/recovery.py).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from actors.control.http import error_response, hub_of, json_response
from actors.control.schemas import IntParam
from protocol.errors import FarmError

MAX_ATTEMPTS = 1000
LIMIT = IntParam("limit", "query", 1, MAX_ATTEMPTS, default=100)
GROUPS = ("sequence", "screen", "serial", "failure_reason")
_JSON_COLUMNS = ("ai_response", "actions_taken")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/recovery/attempts", get_attempts)
    app.router.add_get("/api/recovery/stats", get_stats)


def _db(request: web.Request) -> Any:
    return hub_of(request).farm_db()


def attempt_view(row: dict) -> dict:
    """An attempt as the API shows it: its JSON columns decoded."""
    out = dict(row)
    for name in _JSON_COLUMNS:
        if out.get(name):
            try:
                out[name] = orjson.loads(out[name])
            except orjson.JSONDecodeError:
                pass  # shown as stored
    return out


async def get_attempts(request: web.Request) -> web.Response:
    q = request.query
    limit = LIMIT.parse(request)
    try:
        rows = await _db(request).recovery_attempts(
            execution_key=q.get("execution_id"), sequence=q.get("sequence"),
            serial=q.get("serial"), status=q.get("status"), limit=limit)
    except FarmError as exc:
        return error_response(409, str(exc))
    return json_response({"attempts": [attempt_view(r) for r in rows]})


async def get_stats(request: web.Request) -> web.Response:
    by = request.query.get("by", "sequence")
    if by not in GROUPS:
        return error_response(400, f"by: {by!r} is not one of {', '.join(GROUPS)}", field="by")
    try:
        groups = await _db(request).recovery_stats(by)
    except FarmError as exc:
        return error_response(409, str(exc))
    attempts = sum(g["attempts"] for g in groups)
    succeeded = sum(g["succeeded"] for g in groups)
    return json_response({"by": by, "attempts": attempts, "succeeded": succeeded,
                          "success_rate": succeeded / attempts if attempts else None,
                          "groups": groups})


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    text = {"type": "string"}
    common = {"401": error("missing or wrong bearer token (only when a token is configured)"),
              "409": error("the coordinator has no farm database")}
    return {
        "/api/recovery/attempts": {"get": {
            "operationId": "listRecoveryAttempts",
            "summary": "AI recovery attempts, newest first: execution, phone, sequence, failed "
                       "step, start screen, goal, reached screen, steps, prompt, AI responses, "
                       "actions, before/after frame paths",
            "parameters": [
                {"name": "execution_id", "in": "query", "required": False, "schema": text},
                {"name": "sequence", "in": "query", "required": False, "schema": text},
                {"name": "serial", "in": "query", "required": False, "schema": text},
                {"name": "status", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["running", "succeeded", "failed"]}},
                LIMIT.openapi()],
            "responses": {"200": obj, "400": error("bad `limit`"), **common}}},
        "/api/recovery/stats": {"get": {
            "operationId": "recoveryStats",
            "summary": "Recovery success rate and mean steps, grouped by sequence, screen, "
                       "phone or failure reason (finished attempts)",
            "parameters": [{"name": "by", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": list(GROUPS),
                                       "default": "sequence"}}],
            "responses": {"200": obj, "400": error("bad `by`"), **common}}},
    }
