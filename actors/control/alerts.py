"""Alerts and notifications over the control endpoint (issue 19.3).

Owns ``/api/alerts`` (the alerts, newest first; ``POST /api/alerts/{alert_id}/ack``),
``/api/alerts/rules`` (GET, POST; ``DELETE /api/alerts/rules/{name}``,
``POST /api/alerts/rules/{name}/silence``), ``GET /api/alerts/channels`` (super users:
each channel's pending count and last error) and the console's list
(``GET /api/notifications``, ``POST /api/notifications/read``), with their request types
and OpenAPI paths. The work is the coordinator's `AlertService`
(actors.coordinator.alerts.service), put in the app under `ALERTS` by ``start``; every
operation is scoped to the caller there."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import orjson
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from actors.control.auth import principal_of
from actors.control.http import error_response, json_response, super_users_only
from actors.control.registry import _Body, _handled
from actors.control.schemas import IntParam, RequestError, check_json_depth, decode_request
from actors.coordinator.alerts.rules import KINDS
from actors.coordinator.alerts.service import AlertService, RuleConflict
from protocol.errors import FarmError

ALERTS = web.AppKey("alerts", AlertService)
ALERT_ID = IntParam("alert_id", description="alert id")
LIMIT = IntParam("limit", "query", 1, 1000, default=100)
Number = Annotated[float, Meta(ge=0, le=1e9)]
Text = Annotated[str, Meta(min_length=1, max_length=256)]


class AlertRuleRequest(_Body):
    """A rule: ``name``, ``kind`` and the kind's fields (GET /api/alerts/rules lists the
    kinds with their fields); the rest optional."""

    name: Annotated[str, Meta(min_length=1, max_length=64, description="the rule's name")]
    kind: Annotated[str, Meta(min_length=1, max_length=64, description=", ".join(KINDS))]
    client: Text | None | UnsetType = UNSET
    repeat: Annotated[str, Meta(max_length=32, description=(
        "how often an active alert is sent again (\"1h\", default; \"never\")"))] | None \
        | UnsetType = UNSET
    channels: Annotated[list[Text], Meta(max_length=32)] | None | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    minutes: Number | UnsetType = UNSET
    seconds: Number | UnsetType = UNSET
    percent: Number | UnsetType = UNSET
    min_executions: Annotated[int, Meta(ge=0, le=10**9)] | UnsetType = UNSET
    window_minutes: Number | UnsetType = UNSET
    sequence: Text | UnsetType = UNSET
    workflow: Text | UnsetType = UNSET
    status: Text | UnsetType = UNSET
    path: Annotated[str, Meta(min_length=1, max_length=4096)] | UnsetType = UNSET


class SilenceRequest(_Body):
    for_: Annotated[str, Meta(min_length=1, max_length=32, description=(
        "how long (\"2h\", \"30m\"; \"0s\" ends a silence)"))] = msgspec.field(name="for")


class NotificationsRead(_Body):
    ids: Annotated[list[Annotated[int, Meta(ge=1, le=2**63 - 1)]],
                   Meta(max_length=1000)] | None = None
    all: bool = False


RULE_FIELDS = frozenset(f.encode_name for f in msgspec.structs.fields(AlertRuleRequest))
REQUEST_TYPES = [AlertRuleRequest, SilenceRequest, NotificationsRead]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/alerts", get_alerts)
    app.router.add_post("/api/alerts/{alert_id}/ack", post_ack)
    app.router.add_get("/api/alerts/rules", get_rules)
    app.router.add_post("/api/alerts/rules", post_rule)
    app.router.add_delete("/api/alerts/rules/{name}", delete_rule)
    app.router.add_post("/api/alerts/rules/{name}/silence", post_silence)
    app.router.add_get("/api/alerts/channels", get_channels)
    app.router.add_get("/api/notifications", get_notifications)
    app.router.add_post("/api/notifications/read", post_read)


def _service(request: web.Request) -> AlertService:
    service = request.app.get(ALERTS)
    if service is None:
        raise FarmError("this endpoint has no alerting (no coordinator farm database)")
    return service


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no", ""):
        raise RequestError(f"query parameter {name}", "expected 1 or 0", field=name)
    return value in ("1", "true", "yes")


@_handled
async def get_alerts(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state not in (None, "firing", "resolved"):
        raise RequestError("query parameter state", "expected firing or resolved",
                           field="state")
    alerts = await _service(request).alerts(principal_of(request), state, LIMIT.parse(request))
    return json_response({"alerts": alerts})


@_handled
async def post_ack(request: web.Request) -> web.Response:
    alert_id = ALERT_ID.parse(request)
    return json_response(await _service(request).ack(alert_id, principal_of(request)))


@_handled
async def get_rules(request: web.Request) -> web.Response:
    rules = await _service(request).rules(principal_of(request))
    kinds = {name: {"help": k.help, "farm_only": k.farm_only, "event": k.event,
                    "fields": {f: {"type": p.type, "default": p.default, "help": p.help}
                               for f, p in k.params.items()}} for name, k in KINDS.items()}
    return json_response({"rules": rules, "kinds": kinds})


@_handled
async def post_rule(request: web.Request) -> web.Response:
    raw_body = await request.read()
    _unknown_fields(raw_body)
    body = decode_request(raw_body, AlertRuleRequest,
                          "a JSON object with name, kind and the kind's fields")
    raw = {f: getattr(body, f) for f in body.__struct_fields__
           if getattr(body, f) is not UNSET}
    try:
        rule = await _service(request).add_rule(raw, principal_of(request))
    except RuleConflict as exc:
        return error_response(409, str(exc), field="$.name")
    return json_response(rule, 201)


def _unknown_fields(raw: bytes) -> None:
    """A field no rule kind has is named (``$.field``) before the body's types are checked
    (the decoder would say only ``$``)."""
    try:
        check_json_depth(raw)
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # decode_request names the line and column
    if isinstance(value, dict):
        for key in value:
            if key not in RULE_FIELDS:
                raise RequestError(f"$.{key}", "unknown field (fields: name, kind, client, "
                                   "repeat, channels, enabled and the kind's: GET "
                                   "/api/alerts/rules lists them)", field=f"$.{key}")


@_handled
async def delete_rule(request: web.Request) -> web.Response:
    try:
        out = await _service(request).delete_rule(request.match_info["name"],
                                                  principal_of(request))
    except RuleConflict as exc:
        return error_response(409, str(exc))
    return json_response(out)


@_handled
async def post_silence(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), SilenceRequest, 'a JSON object {"for": "2h"}')
    return json_response(await _service(request).silence(
        request.match_info["name"], body.for_, principal_of(request)))


@_handled
async def get_channels(request: web.Request) -> web.Response:
    if (refused := super_users_only(request, "alert channels")) is not None:
        return refused
    return json_response({"channels": await _service(request).notifier.channel_views()})


@_handled
async def get_notifications(request: web.Request) -> web.Response:
    return json_response(await _service(request).notifications(
        principal_of(request), _flag(request, "unread"), LIMIT.parse(request)))


@_handled
async def post_read(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), NotificationsRead,
                          'a JSON object {"ids": [...]} or {"all": true}')
    if body.ids is None and not body.all:
        raise RequestError("$.ids", "give ids or all: true", field="$.ids")
    marked = await _service(request).mark_read(principal_of(request),
                                               None if body.all else body.ids)
    return json_response({"marked": marked})


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    unauthorized = error("missing or wrong bearer token")
    none = error("this endpoint has no alerting")
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "the rule's name"}

    def body(schema: str) -> dict:
        return {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"}}}}
    return {
        "/api/alerts": {"get": {
            "operationId": "listAlerts", "summary":
            "Alerts, newest first (the caller's clients'; farm-wide ones to super users): "
            "rule, kind, subject, state firing|resolved, since, resolved_at, last notified, "
            "acked_by, title, text, links",
            "parameters": [{"name": "state", "in": "query", "schema": {
                "type": "string", "enum": ["firing", "resolved"]}}, LIMIT.openapi()],
            "responses": {"200": obj, "400": error("bad parameter (`field`)"),
                          "401": unauthorized, "409": none}}},
        "/api/alerts/{alert_id}/ack": {"post": {
            "operationId": "ackAlert", "summary":
            "Acknowledge an alert: it is not sent again while active (it still resolves)",
            "parameters": [ALERT_ID.openapi()],
            "responses": {"200": obj, "400": error("bad id"), "401": unauthorized,
                          "403": error("a viewer"), "404": error("no such alert"),
                          "409": none}}},
        "/api/alerts/rules": {
            "get": {"operationId": "listAlertRules", "summary":
                    "The alert rules (config file's and the API's) and the kinds with their "
                    "fields", "responses": {"200": obj, "401": unauthorized, "409": none}},
            "post": {"operationId": "addAlertRule", "summary":
                     "Add an alert rule, validated whole before it is stored (400 names the "
                     "field); a tenant's rule is for one of its clients, farm-wide kinds are "
                     "super users' only",
                     "requestBody": body("AlertRuleRequest"),
                     "responses": {"201": obj, "400": error("bad rule (`field` names it)"),
                                   "401": unauthorized,
                                   "403": error("a viewer, or a farm-wide kind"),
                                   "409": error("a rule of that name exists")}}},
        "/api/alerts/rules/{name}": {"delete": {
            "operationId": "deleteAlertRule", "summary":
            "Delete an API rule and its alerts (a config file's rule is removed in the file)",
            "parameters": [name],
            "responses": {"200": obj, "401": unauthorized, "403": error("a viewer"),
                          "404": error("no such rule"),
                          "409": error("a rule of the config file")}}},
        "/api/alerts/rules/{name}/silence": {"post": {
            "operationId": "silenceAlertRule", "summary":
            "Silence a rule for a while (its alerts are recorded, nothing is sent); "
            "\"0s\" ends the silence",
            "parameters": [name], "requestBody": body("SilenceRequest"),
            "responses": {"200": obj, "400": error("bad duration (`field`)"),
                          "401": unauthorized, "403": error("a viewer"),
                          "404": error("no such rule"), "409": none}}},
        "/api/alerts/channels": {"get": {
            "operationId": "listAlertChannels", "summary":
            "The notification channels with their outbox: pending, delivered, expired, "
            "last error, last attempt and delivery (super users only)",
            "responses": {"200": obj, "401": unauthorized, "403": error("not a super user"),
                          "409": none}}},
        "/api/notifications": {"get": {
            "operationId": "listNotifications", "summary":
            "The console's notifications (the caller's clients'), newest first, with the "
            "caller's read marks and unread count",
            "parameters": [{"name": "unread", "in": "query", "schema": {
                "type": "string", "enum": ["0", "1"]}}, LIMIT.openapi()],
            "responses": {"200": obj, "400": error("bad parameter (`field`)"),
                          "401": unauthorized, "409": none}}},
        "/api/notifications/read": {"post": {
            "operationId": "markNotificationsRead", "summary":
            "Mark notifications read for the caller (ids, or all: true)",
            "requestBody": body("NotificationsRead"),
            "responses": {"200": obj, "400": error("bad body (`field`)"),
                          "401": unauthorized, "403": error("a viewer"), "409": none}}},
    }
