"""Daily analytics over the control endpoint (issue 21.2).

Owns ``POST /api/analytics/rollup`` (super users: recompute one UTC day's rows of
``client_daily_metrics`` and ``platform_daily_metrics`` now; idempotent, the day's rows are
replaced whole) and ``GET /api/analytics/daily?since=&until=`` (a tenant: its clients' rows;
a super user: every client's and the platform rows). The coordinator rolls the previous day
up by itself after midnight UTC (actors.coordinator.content_data.service).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta

from actors.control.auth import principal_of
from actors.control.http import json_response, openapi_body, super_users_only
from actors.control.auth import caller_clients
from actors.control.posts import content_service
from actors.control.registry import _Body, _handled
from actors.control.schemas import RequestError, decode_request

DEFAULT_DAYS = 30
MAX_DAYS = 3660  # ten years of days per answer
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class RollupRequest(_Body):
    date: Annotated[str, Meta(min_length=10, max_length=10, description=(
        "the UTC day to roll up, YYYY-MM-DD"))]


REQUEST_TYPES = [RollupRequest]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/analytics/rollup", post_rollup)
    app.router.add_get("/api/analytics/daily", get_daily)


def parse_day(text: str, where: str, field: str) -> date:
    """A YYYY-MM-DD day; RequestError naming ``field`` otherwise."""
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise RequestError(where, f"expected a day YYYY-MM-DD, got {text[:32]!r}",
                           field=field) from None


@_handled
async def post_rollup(request: web.Request) -> web.Response:
    refused = super_users_only(request, "analytics rollup")
    if refused is not None:
        return refused
    body = decode_request(await request.read(), RollupRequest, 'a JSON object {"date": '
                          '"YYYY-MM-DD"}')
    day = parse_day(body.date, "$.date", "$.date")
    if day > datetime.now(timezone.utc).date():
        raise RequestError("$.date", f"{day} has not begun yet (UTC)", field="$.date")
    made = await content_service(request).rollup(day)
    return json_response(made)


@_handled
async def get_daily(request: web.Request) -> web.Response:
    service = content_service(request)
    today = datetime.now(timezone.utc).date()
    query = request.query
    until = parse_day(query["until"], "query parameter until", "until") \
        if "until" in query else today
    since = parse_day(query["since"], "query parameter since", "since") \
        if "since" in query else until - timedelta(days=DEFAULT_DAYS - 1)
    if since > until:
        raise RequestError("query parameter since", f"{since} is after until ({until})",
                           field="since")
    if (until - since).days >= MAX_DAYS:
        raise RequestError("query parameter since", f"at most {MAX_DAYS} days per answer",
                           field="since")
    principal = principal_of(request)
    rows = await service.store.daily(since.isoformat(), until.isoformat(),
                                     clients=caller_clients(request),
                                     platform_rows=principal.is_super)
    return json_response({"since": since.isoformat(), "until": until.isoformat(), **rows})


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    unauthorized = error("missing or wrong bearer token")

    def query(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False,
                "schema": {"type": "string"}, "description": description}

    return {
        "/api/analytics/rollup": {"post": {
            "operationId": "rollupAnalytics", "summary":
            "Super users: recompute one UTC day's client and platform daily metrics (posts, "
            "views, likes, comments, link clicks, follower growth, engagement rate) now; "
            "running it again replaces the day's rows",
            "requestBody": openapi_body("RollupRequest"),
            "responses": {"200": obj, "400": error("bad date (`field`)"),
                          "401": unauthorized, "403": error("not a super user"),
                          "409": error("no content data (no farm database)")}}},
        "/api/analytics/daily": {"get": {
            "operationId": "dailyAnalytics", "summary":
            "Daily metrics per client and platform (a tenant: its clients' rows), and for "
            "super users the platform rows, of days since..until (default the last 30)",
            "parameters": [query("since", "first day, YYYY-MM-DD"),
                           query("until", "last day, YYYY-MM-DD (default today, UTC)")],
            "responses": {"200": obj, "400": error("bad since or until (`field`)"),
                          "401": unauthorized}}},
    }
