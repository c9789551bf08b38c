"""The audit trail over the control endpoint (spec 16.3.1, issue 17.5).

Owns ``GET /api/audit`` (newest first; ``?entity=`` a type such as ``sequence``,
``workflow``, ``account``, ``?entity_id=``, ``?since=`` a duration back from now like ``2d``
or ``12h``, or a UTC time, ``?limit=``) with its OpenAPI path, and `actor_of`: how every
change made through the API names its caller in the trail (the principal's
``user:<id>:<name>``). A super user sees every entry; anyone else only entries about an entity
of a client it reaches (the entity's client now: a client, phone, profile, account, sequence
or workflow definition, AI key or user, `FarmDB.audit_trail`); entries about farm-wide
things (groups, the screen registry) are for super users only. Passwords never appear: the
trail keeps only whether one was set (`FarmDB.audit`).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from actors.control.auth import principal_of
from actors.control.http import hub_of, json_response
from actors.control.registry import _handled
from actors.control.schemas import IntParam, RequestError
from actors.store.execution_records import utc_text
from actors.store.retention import parse_duration
from protocol.errors import ValidationError

# Short names for the entity types the trail stores (the stored names work too).
ENTITY_ALIASES = {"sequence": "sequence_definition", "workflow": "workflow_definition",
                  "screen": "registry_screen"}
_ENTITY = re.compile(r"[a-z_]{1,64}")
_DURATION = re.compile(r"\d{1,9}(\.\d{1,6})?[smhdwy]")
AUDIT_LIMIT = IntParam("limit", "query", 1, 1000, default=100,
                       description="entries returned, newest first (default 100)")


def actor_of(request: web.Request) -> str:
    """Who made the change ``request`` carries, as the audit trail names it."""
    return principal_of(request).actor


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/audit", get_audit)


def parse_since(text: str, now: datetime | None = None) -> str:
    """``2d``, ``12h``, ``30m``, ``45s``, ``1w`` back from ``now``, or an ISO date or time
    (UTC unless it says otherwise), as the trail's UTC text. ValidationError names ``since``."""
    now = now or datetime.now(timezone.utc)
    try:
        if _DURATION.fullmatch(text):
            return utc_text(now - parse_duration(text, "since"))
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return utc_text(when)
    except (ValueError, OverflowError):  # not a time, or one before year 1
        raise ValidationError("since", f"expected a duration like 2d or 12h, or an ISO time "
                                       f"like 2024-05-01T12:00, got {text[:64]!r}") from None


@_handled
async def get_audit(request: web.Request) -> web.Response:
    query = request.query
    limit = AUDIT_LIMIT.parse(request)
    entity = query.get("entity")
    if entity is not None and not _ENTITY.fullmatch(entity):
        raise RequestError("query parameter entity", f"expected an entity type such as "
                           f"sequence or account (a-z and _), got {entity!r}", field="entity")
    entity_id = query.get("entity_id")
    if entity_id is not None and not 1 <= len(entity_id) <= 256:
        raise RequestError("query parameter entity_id", "expected 1..256 characters",
                           field="entity_id")
    since = query.get("since")
    try:
        since_text = parse_since(since) if since is not None else None
    except ValidationError as exc:
        raise RequestError("query parameter since", exc.reason, field="since") from None
    principal = principal_of(request)
    entries = await hub_of(request).farm_db().audit_trail(
        ENTITY_ALIASES.get(entity, entity) if entity else None, entity_id, limit,
        since=since_text, client_ids=principal.client_ids)
    return json_response({"entries": entries})


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    def query(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
                "description": description}

    return {"/api/audit": {"get": {
        "operationId": "listAudit",
        "summary": "The audit trail, newest first: who (actor user:<id>:<name>), when, what "
                   "(entity_type, entity_id, action), before/after (passwords only as "
                   "*_set) and why. Super users see every entry, others those about their "
                   "clients' entities",
        "parameters": [
            query("entity", "entity type, e.g. sequence, workflow, account, profile, phone, "
                            "client, ai_key, user, group, screen"),
            query("entity_id", "one entity's id (as text)"),
            query("since", "a duration back from now (2d, 12h, 30m) or an ISO UTC time"),
            AUDIT_LIMIT.openapi()],
        "responses": {
            "200": {"description": "`entries`: audit entries", "content": {
                "application/json": {"schema": {"type": "object"}}}},
            "400": error("bad parameter (`field` names it)"),
            "401": error("not logged in"),
            "409": error("the coordinator has no farm database")}}}}
