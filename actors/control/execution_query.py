"""``GET /api/executions``'s query parameters: the execution history's filters, checked
completely before anything is read, and their OpenAPI description (one definition of both).

Owns parsing a request's query into an actors.store.execution_history.ExecutionQuery:
``status`` (repeatable or a comma list), ``serial``, ``sequence``, ``run_id``,
``since``/``until`` (ISO 8601 with a zone, on the start time), ``limit`` and ``before`` (an
execution id: the next page, older rows). A bad one is a RequestError naming it (400), as
schemas.IntParam does for ``limit``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from actors.control.schemas import EXECUTIONS_LIMIT, RequestError
from actors.store.execution_history import EXECUTION_STATUSES, ExecutionQuery
from actors.store.execution_records import utc_text
from protocol.errors import ValidationError
from protocol.names import check_printable

if TYPE_CHECKING:
    from aiohttp import web

MAX_TEXT = 256  # a serial, sequence name, run or execution id: longer matches nothing
_TEXT_PARAMS = {
    "serial": "only the executions on this phone (its serial)",
    "sequence": "only the executions of this sequence (its library name)",
    "run_id": "only the executions of this run",
    "before": "an execution_id: only executions older than it (the next page: the "
              "previous answer's next_before)",
}
_TIME_PARAMS = {
    "since": "only executions started at or after this time (ISO 8601 with a zone, "
             "e.g. 2026-05-01T00:00:00Z)",
    "until": "only executions started before this time (ISO 8601 with a zone)",
}


def _fail(name: str, reason: str) -> RequestError:
    return RequestError(f"query parameter {name}", reason, field=name)


def _single(request: "web.Request", name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _fail(name, "given more than once")
    return values[0] if values else None


def _text(request: "web.Request", name: str) -> str | None:
    value = _single(request, name)
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_TEXT:
        raise _fail(name, f"expected 1..{MAX_TEXT} characters, got {len(value)}")
    try:
        check_printable(value, name)
    except ValidationError as exc:
        raise _fail(name, exc.reason) from None
    return value


def _time(request: "web.Request", name: str) -> str | None:
    value = _single(request, name)
    if value is None:
        return None
    expected = "expected an ISO 8601 time with a zone, e.g. 2026-05-01T00:00:00Z"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(name, f"{expected}, got {value[:64]!r}") from None
    if when.tzinfo is None:
        raise _fail(name, f"{expected} (this one has no zone), got {value[:64]!r}")
    try:
        return utc_text(when.astimezone(timezone.utc))
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise _fail(name, f"{value[:64]!r} is out of range in UTC") from None


def _statuses(request: "web.Request") -> tuple[str, ...]:
    out: list[str] = []
    for value in request.query.getall("status", []):
        for status in value.split(","):
            if status not in EXECUTION_STATUSES:
                raise _fail("status", f"expected one of {', '.join(EXECUTION_STATUSES)} "
                                      f"(repeated or comma-separated), got {status[:64]!r}")
            if status not in out:
                out.append(status)
    return tuple(out)


def parse_execution_query(request: "web.Request") -> ExecutionQuery:
    """The filters of a ``GET /api/executions`` request; RequestError names the first bad
    parameter (``field``)."""
    statuses = _statuses(request)
    texts = {name: _text(request, name) for name in _TEXT_PARAMS}
    since, until = _time(request, "since"), _time(request, "until")
    if since is not None and until is not None and until <= since:
        raise _fail("until", "must be later than since")
    if len(request.query.getall("limit", [])) > 1:
        raise _fail("limit", "given more than once")
    return ExecutionQuery(statuses=statuses, since=since, until=until,
                          limit=EXECUTIONS_LIMIT.parse(request), **texts)


def openapi_parameters() -> list[dict[str, Any]]:
    """The OpenAPI parameter objects of ``GET /api/executions``."""
    text = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
    params: list[dict[str, Any]] = [
        {"name": "status", "in": "query", "required": False, "style": "form",
         "explode": True, "description": "only executions in these statuses (repeat the "
         "parameter or separate them with commas)",
         "schema": {"type": "array", "items": {"type": "string",
                                               "enum": list(EXECUTION_STATUSES)}}}]
    params += [{"name": name, "in": "query", "required": False, "description": description,
                "schema": text} for name, description in _TEXT_PARAMS.items()]
    params += [{"name": name, "in": "query", "required": False, "description": description,
                "schema": {"type": "string", "format": "date-time"}}
               for name, description in _TIME_PARAMS.items()]
    return params + [EXECUTIONS_LIMIT.openapi()]
