"""The farm's history over the control endpoint (issue 19.2; the series the dashboard draws).

Owns ``GET /api/stats`` (series of the one-minute rollups at a coarser step: ``from``,
``to``: an ISO 8601 time with a zone or a duration back from now like ``24h``, ``7d``;
default the last 24 hours; ``step``: 1m, 5m, 15m, 1h or 1d, default the smallest giving at
most 500 points; ``by``: farm, client, sequence or node) and ``GET /api/stats/top-failures``
(``since``, default 24h; ``limit``), checking every parameter before a read (a 400 names
it), and their OpenAPI paths. The buckets are aligned to the step in UTC: the answer's
``from`` and ``to`` are the range it covers (``from`` rounded down, ``to`` up, to the step).

Scoped: a caller other than a super user reads its clients' rows only (ScopedFarmDB's
``stats_series`` / ``top_failures``); by=farm and by=node then add up its clients' rows.
How a coarser step is made of minutes: actors.store.stats.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from actors.control.http import hub_of, json_response
from actors.control.registry import _handled
from actors.control.schemas import IntParam, RequestError
from actors.store.execution_records import utc_text
from actors.store.retention import parse_duration
from actors.store.stats import BYS, STEPS, FailureQuery, StatsQuery, iso
from protocol.errors import ValidationError

DEFAULT_SPAN = "24h"
MAX_DEFAULT_POINTS = 500  # the default step is the smallest giving at most this many
MAX_POINTS = 5000  # per series: a finer step over a longer range is refused
LATEST_S = 16725225600  # 2500-01-01T00:00:00Z
_DURATION = re.compile(r"\d{1,9}(\.\d{1,6})?[smhdwy]")
FAILURES_LIMIT = IntParam("limit", "query", 1, 100, default=10,
                          description="sequences and screens listed (default 10)")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/stats", get_stats)
    app.router.add_get("/api/stats/top-failures", get_top_failures)


def parse_time(name: str, text: str, now: datetime) -> datetime:
    """An ISO 8601 time with a zone, or a duration back from ``now``; RequestError naming
    the query parameter ``name`` otherwise."""
    expected = (f"expected a duration back from now like 24h or 7d, or an ISO 8601 time "
                f"with a zone like 2026-12-07T01:00:00Z, got {text[:64]!r}")
    try:
        if _DURATION.fullmatch(text):
            return now - parse_duration(text, name)
        when = datetime.fromisoformat(text)
    except (ValueError, OverflowError, ValidationError):
        raise RequestError(f"query parameter {name}", expected, field=name) from None
    if when.tzinfo is None:
        raise RequestError(f"query parameter {name}", f"{expected} (this one has no zone)",
                           field=name)
    return when.astimezone(timezone.utc)


def _in_range(name: str, when: datetime) -> float:
    """Unix seconds of ``when``, which must lie between 1970 and 2500 (rollups are of
    minutes the farm lived; a bucket past year 9999 could not even be written)."""
    seconds = when.timestamp()
    if not 0 <= seconds < LATEST_S:
        raise RequestError(f"query parameter {name}", "expected a time between 1970 and "
                           f"2500, got {when.isoformat()}", field=name)
    return seconds


def _points(start: float, end: float, step_s: int) -> int:
    return math.ceil(end / step_s) - math.floor(start / step_s)


def parse_stats_query(query: Any, now: datetime | None = None) -> StatsQuery:
    """The series a request asks for (every parameter checked; the first bad one raises
    RequestError naming it). ``clients`` is left to the scoped view."""
    now = now or datetime.now(timezone.utc)
    start = _in_range("from", parse_time("from", query.get("from", DEFAULT_SPAN), now))
    end = _in_range("to", parse_time("to", query["to"], now) if "to" in query else now)
    if start >= end:
        raise RequestError("query parameter from", f"must be before to ({iso(int(end))})",
                           field="from")
    step = query.get("step")
    if step is None:
        step_s = next((s for s in STEPS.values()
                       if _points(start, end, s) <= MAX_DEFAULT_POINTS), max(STEPS.values()))
        if (n := _points(start, end, step_s)) > MAX_POINTS:
            raise RequestError("query parameter from", f"this range is {n} days, at most "
                               f"{MAX_POINTS}: choose a shorter range", field="from")
    elif step in STEPS:
        step_s = STEPS[step]
        if (n := _points(start, end, step_s)) > MAX_POINTS:
            raise RequestError("query parameter step", f"{step} over this range is {n} "
                               f"points, at most {MAX_POINTS}: choose a coarser step or a "
                               "shorter range", field="step")
    else:
        raise RequestError("query parameter step", f"expected one of {', '.join(STEPS)}, "
                           f"got {step[:32]!r}", field="step")
    by = query.get("by", "farm")
    if by not in BYS:
        raise RequestError("query parameter by", f"expected one of {', '.join(BYS)}, got "
                           f"{by[:32]!r}", field="by")
    return StatsQuery(start=math.floor(start / step_s) * step_s,
                      end=math.ceil(end / step_s) * step_s, step_s=step_s, by=by)


@_handled
async def get_stats(request: web.Request) -> web.Response:
    query = parse_stats_query(request.query)
    answer = await hub_of(request).farm_db().stats_series(query)
    return json_response({"from": iso(query.start), "to": iso(query.end),
                          "step_s": query.step_s, "by": query.by, **answer})


@_handled
async def get_top_failures(request: web.Request) -> web.Response:
    since = parse_time("since", request.query.get("since", DEFAULT_SPAN),
                       datetime.now(timezone.utc))
    _in_range("since", since)
    limit = FAILURES_LIMIT.parse(request)
    answer = await hub_of(request).farm_db().top_failures(
        FailureQuery(since=utc_text(since), limit=limit))
    return json_response(answer)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    def query(name: str, description: str, enum: list[str] | None = None) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if enum:
            schema["enum"] = enum
        return {"name": name, "in": "query", "required": False, "schema": schema,
                "description": description}

    def nullable_number() -> dict[str, Any]:
        return {"type": ["number", "null"]}

    counts = lambda *names: {"type": "object", "properties": {  # noqa: E731
        n: {"type": "integer"} for n in names}}
    point = {"type": "object", "properties": {
        "t": {"type": "string", "format": "date-time"},
        "phones": {"type": ["object", "null"], "description": "average phones in each state "
                   "over the step (null: by=sequence, or no phone samples in the step)",
                   "properties": {s: {"type": "number"}
                                  for s in ("busy", "idle", "offline", "paused")}},
        "executions": counts("started", "completed", "failed"),
        "recovery": counts("attempts", "succeeded"),
        "step_ms": {"type": "object", "description": "p50: the minute p50s weighted by "
                    "their step counts; p95: the largest minute p95 (an upper bound)",
                    "properties": {"p50": nullable_number(), "p95": nullable_number()}}}}
    stats_schema = {"type": "object", "properties": {
        "from": {"type": "string"}, "to": {"type": "string"}, "step_s": {"type": "integer"},
        "by": {"type": "string", "enum": list(BYS)},
        "series": {"type": "array", "items": {"type": "object", "properties": {
            "key": {"type": "string"}, "points": {"type": "array", "items": point}}}}}}
    last = {"type": ["object", "null"], "properties": {
        "execution_id": {"type": "string"}, "serial": {"type": ["string", "null"]},
        "step": {"type": ["string", "null"]}, "screen": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]}, "at": {"type": ["string", "null"]},
        "screenshot": {"type": ["string", "null"]}}}
    failures_schema = {"type": "object", "properties": {
        "sequences": {"type": "array", "items": {"type": "object", "properties": {
            "sequence": {"type": "string"}, "failures": {"type": "integer"},
            "executions": {"type": "integer"}, "last": last}}},
        "screens": {"type": "array", "items": {"type": "object", "properties": {
            "screen": {"type": "string"}, "failures": {"type": "integer"}, "last": last}}}}}
    time_help = "an ISO 8601 time with a zone, or a duration back from now (24h, 7d)"
    return {
        "/api/stats": {"get": {
            "operationId": "getStats",
            "summary": "The farm's history from the one-minute rollups: phones by state, "
                       "executions started/completed/failed, recovery attempts/succeeded and "
                       "step time percentiles per step, one series per farm, client, "
                       "sequence or node (a tenant: its clients' rows only)",
            "parameters": [
                query("from", f"{time_help}; default 24h"),
                query("to", f"{time_help}; default now"),
                query("step", "bucket size; default the smallest giving at most 500 points",
                      list(STEPS)),
                query("by", "one series per ...; default farm", list(BYS))],
            "responses": {
                "200": {"description": "the series", "content": {
                    "application/json": {"schema": stats_schema}}},
                "400": error("bad parameter (`field` names it)"),
                "401": error("not logged in"),
                "409": error("the coordinator has no farm database")}}},
        "/api/stats/top-failures": {"get": {
            "operationId": "getTopFailures",
            "summary": "The sequences and screens that failed most since, each with its "
                       "latest failure and that step's screenshot (a tenant: its phones' only)",
            "parameters": [query("since", f"{time_help}; default 24h"),
                           FAILURES_LIMIT.openapi()],
            "responses": {
                "200": {"description": "`sequences` and `screens`", "content": {
                    "application/json": {"schema": failures_schema}}},
                "400": error("bad parameter (`field` names it)"),
                "401": error("not logged in"),
                "409": error("the coordinator has no farm database")}}},
    }
