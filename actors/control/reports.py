"""The clients' reports over the control endpoint (spec 12.4, issue 19.5).

Owns ``GET /api/reports`` (newest first, without bodies; ``?client=`` a client name,
``?day=YYYY-MM-DD``, ``?before=`` an id, ``?limit=``), ``GET /api/reports/{id}`` (JSON with
the text and the summary; ``?format=html`` or ``text`` for the rendering alone),
``GET /api/reports/{id}.html`` (the HTML page) and ``POST /api/reports`` (make a client's
report of a day now; super users and the admins of that client), with the request type and
OpenAPI paths. A caller other than a super user sees only its clients' reports; another
client's report is answered like a missing one. The work is the coordinator's
`ReportService` (actors.coordinator.reports.service), put in the app under `REPORTS`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta

from actors.access.users import AccessDenied
from actors.control.auth import principal_of
from actors.control.http import json_response, openapi_body
from actors.control.registry import _Body, _handled
from actors.control.schemas import IntParam, RequestError, decode_request
from actors.coordinator.reports.service import ReportService, parse_day, view
from protocol.errors import FarmError, ValidationError

log = logging.getLogger(__name__)

REPORTS = web.AppKey("reports", ReportService)
REPORT_ID = IntParam("id", description="the report's id")
LIMIT = IntParam("limit", "query", 1, 500, default=50,
                 description="reports returned, newest first (default 50)")
BEFORE = IntParam("before", "query", description="only reports with a smaller id (paging)")
FORMATS = ("json", "html", "text")
# The HTML page loads nothing but its screenshots; it runs nothing.
HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src *; base-uri 'none'"


class ReportRequest(_Body):
    client: Annotated[str, Meta(min_length=1, max_length=128, description=(
        "the client (name) the report is for"))]
    day: Annotated[str, Meta(min_length=1, max_length=32, description=(
        "the UTC day it covers, YYYY-MM-DD (default yesterday; today gives the day so "
        "far)"))] | None = None
    send: Annotated[bool, Meta(description=(
        "also send it through the alert channels that take reports (default false: only "
        "kept)"))] = False


REQUEST_TYPES = [ReportRequest]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/reports", get_reports)
    app.router.add_post("/api/reports", post_report)
    # The .html route first: /api/reports/{id} would take "5.html" as an id.
    app.router.add_get("/api/reports/{id}.html", get_report_html)
    app.router.add_get("/api/reports/{id}", get_report)


def _service(request: web.Request) -> ReportService:
    service = request.app.get(REPORTS)
    if service is None:
        raise FarmError("this endpoint keeps no reports (no coordinator farm database)")
    return service


async def _visible_client(service: ReportService, request: web.Request, name: str,
                          field: str) -> dict[str, Any]:
    """The client called ``name`` if the caller reaches it; else the error names ``field``
    (another tenant's client is answered like a missing one)."""
    try:
        client = await service.client(name)
    except ValidationError:
        client = None
    if client is None or not principal_of(request).sees_client(client["client_id"]):
        raise RequestError(field, f"no such client: {name!r}", field=field)
    return client


@_handled
async def get_reports(request: web.Request) -> web.Response:
    query = request.query
    limit = LIMIT.parse(request)
    before = BEFORE.parse(request) if "before" in query else None
    day = None
    if "day" in query:
        day = parse_day(query["day"], "day").isoformat()
    service = _service(request)
    client_id = None
    if "client" in query:
        client_id = (await _visible_client(service, request, query["client"],
                                           "client"))["client_id"]
    rows = await service.store.list(principal_of(request).client_ids, client_id=client_id,
                                    day=day, before=before, limit=limit)
    return json_response({"reports": [view(r) for r in rows]})


async def _report(request: web.Request) -> dict[str, Any]:
    report_id = REPORT_ID.parse(request)
    row = await _service(request).store.get(report_id, principal_of(request).client_ids)
    if row is None:
        raise LookupError(f"no such report: {report_id}")
    return row


def _html(row: dict[str, Any]) -> web.Response:
    return web.Response(text=row["html"], content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": HTML_POLICY,
                                 "X-Content-Type-Options": "nosniff"})


@_handled
async def get_report(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        raise RequestError("query parameter format", f"expected one of {', '.join(FORMATS)}, "
                           f"got {fmt[:32]!r}", field="format")
    row = await _report(request)
    if fmt == "html":
        return _html(row)
    if fmt == "text":
        return web.Response(text=row["text"], content_type="text/plain", charset="utf-8")
    return json_response(view(row, bodies=True))


@_handled
async def get_report_html(request: web.Request) -> web.Response:
    return _html(await _report(request))


@_handled
async def post_report(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), ReportRequest,
                          "a JSON object with client, optional day and send")
    service = _service(request)
    day = parse_day(body.day) if body.day is not None else service.yesterday()
    service.check_day(day)
    client = await _visible_client(service, request, body.client, "$.client")
    principal = principal_of(request)
    if not (principal.is_super or principal.role == "admin"):
        raise AccessDenied(f"a {principal.role} user may not make reports: ask an admin of "
                           f"{client['name']}")
    row, _ = await service.make(client, day, actor=principal.actor, send=body.send)
    await service.db.audit("report", row["report_id"], "create", None,
                           {"client": client["name"], "day": row["day"], "send": body.send},
                           actor=principal.actor)
    return json_response(view(row, bodies=True), 201)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    html = {"description": "the report as one HTML page", "content": {"text/html": {
        "schema": {"type": "string"}}}}

    def query(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
                "description": description}

    unauthorized = error("missing or wrong bearer token")
    missing = error("no such report (or another client's)")
    no_store = error("this endpoint keeps no reports")
    return {
        "/api/reports": {
            "get": {"operationId": "listReports", "summary":
                    "Reports, newest first, without their bodies: id, client, kind (daily: "
                    "the --report-at schedule; manual), day, period, created_at/_by, title, "
                    "sent_at, send_error, url, html_url. Only the caller's clients' reports",
                    "parameters": [query("client", "one client's (name)"),
                                   query("day", "one UTC day's, YYYY-MM-DD"),
                                   BEFORE.openapi(), LIMIT.openapi()],
                    "responses": {"200": obj, "400": error("bad parameter (`field` names it)"),
                                  "401": unauthorized, "409": no_store}},
            "post": {"operationId": "makeReport", "summary":
                     "Make a client's report of a UTC day now (runs, executions, success "
                     "rate, failures by reason with screenshots, recovery figures, phones "
                     "that needed a human, recommendations), kept and, with send, sent "
                     "through the alert channels that take reports. Super users and admins "
                     "of the client; the status stream hears report_started, report_ready",
                     "requestBody": openapi_body("ReportRequest"),
                     "responses": {"201": obj, "400": error(
                         "bad body (`field` names it): unknown client, a day not as "
                         "YYYY-MM-DD or not begun yet"), "401": unauthorized,
                         "403": error("not an admin of the client"), "409": no_store}}},
        "/api/reports/{id}": {"get": {
            "operationId": "getReport", "summary":
            "One report: its fields, text and summary (the figures as JSON); format=html "
            "answers the HTML page, format=text the plain text",
            "parameters": [REPORT_ID.openapi(), query("format", "json (default), html, text")],
            "responses": {"200": {**obj, "content": {**obj["content"], **html["content"],
                                                     "text/plain": {"schema": {
                                                         "type": "string"}}}},
                          "400": error("bad id or format (`field` names it)"),
                          "401": unauthorized, "404": missing, "409": no_store}}},
        "/api/reports/{id}.html": {"get": {
            "operationId": "getReportHtml", "summary":
            "One report as its HTML page (everything from the database escaped; screenshots "
            "are images by URL)",
            "parameters": [REPORT_ID.openapi()],
            "responses": {"200": html, "400": error("bad id (`field` names it)"),
                          "401": unauthorized, "404": missing, "409": no_store}}},
    }
