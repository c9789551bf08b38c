"""The control endpoint's OpenAPI 3.1 document.

Owns the published description of every route: paths, parameters, request and response
schemas. Component schemas are generated from the msgspec types in `schemas` (JSON Schema
2020-12, which OpenAPI 3.1 uses), so the document cannot drift from what is validated.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import msgspec

from actors.control.execution_query import openapi_parameters as execution_query_parameters
from actors.control.schemas import (
    MAX_BODY_BYTES,
    THUMB_WIDTH,
    ActionRequest,
    ActionsResponse,
    ErrorBody,
    Health,
    HubEvent,
    NodesResponse,
    PhonesResponse,
    RecordStart,
    RecordStop,
    RunRequest,
    RunStarted,
    RunStatus,
    Execution,
    ExecutionsResponse,
    ScheduleEventsResponse,
    SchedulesResponse,
    ScheduleView,
    UnknownScreensResponse,
)
from actors.control import access_api, ai_keys, recovery, registry, variables
from actors.control import audit as audit_api
from actors.control import definitions as definitions_api
from actors.control import templates as templates_api
from actors.control import workflows as workflow_api
from actors.control import node_keys as node_keys_api
from actors.control import backups as backups_api
from actors.control import reports as reports_api
from actors.control import metrics as metrics_api
from actors.control import stats as stats_api
from actors.control import alerts as alerts_api
from actors.control import apps as apps_api
from actors.control import apks as apks_api
from actors.control import links as links_api
from actors.control import conversations as conversations_api
from actors.control import posts as posts_api
from actors.control import analytics as analytics_api
from actors.control import content as content_api
from actors.control import screens
from actors.coordinator.scheduling.scheduler import Schedule

REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("ErrorBody", description)


_SSE_EVENT = {
    "type": "object", "required": ["data"],
    "properties": {
        "event": {"type": "string", "description": "the HubEvent's event name"},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": _ref("HubEvent")},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}

_UNAUTHORIZED = _error("missing or wrong bearer token (only when a token is configured)")


@functools.cache
def _document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [ActionRequest, ActionsResponse, ErrorBody, Health, HubEvent, NodesResponse, PhonesResponse,
         UnknownScreensResponse, RecordStart, RecordStop, RunRequest, RunStarted, RunStatus,
         Execution, ExecutionsResponse, Schedule, ScheduleView, SchedulesResponse,
         ScheduleEventsResponse, *registry.REQUEST_TYPES, *variables.REQUEST_TYPES,
         *workflow_api.REQUEST_TYPES, *screens.request_types(), *ai_keys.REQUEST_TYPES,
         *access_api.REQUEST_TYPES, *node_keys_api.REQUEST_TYPES,
         *backups_api.REQUEST_TYPES, *reports_api.REQUEST_TYPES, *alerts_api.REQUEST_TYPES,
         *links_api.REQUEST_TYPES, *definitions_api.REQUEST_TYPES, *templates_api.REQUEST_TYPES,
         *apps_api.REQUEST_TYPES, *analytics_api.REQUEST_TYPES, *content_api.REQUEST_TYPES],
        ref_template=REF)
    # A new schedule's id is optional (generated) and its status is ignored.
    request = copy.deepcopy(components["Schedule"])
    # A workflow's schedule leaves sequence out.
    request["required"] = [f for f in request.get("required", []) if f not in ("id", "sequence")]
    # Whose it is comes from the caller (a 400 if a body names it).
    request["properties"] = {k: v for k, v in request["properties"].items() if k != "clients"}
    request["title"] = "ScheduleRequest"
    components["ScheduleRequest"] = request
    schedule_id = {"name": "schedule_id", "in": "path", "required": True,
                   "schema": {"type": "string"}}
    schedule_actions = {
        f"/api/schedules/{{schedule_id}}/{action}": {"post": {
            "operationId": f"{action}Schedule", "summary": summary,
            "parameters": [schedule_id],
            "responses": {"200": _json("ScheduleView", "the schedule now"),
                          "401": _UNAUTHORIZED,
                          "404": _error("no such schedule (`schedule_id`)"),
                          "409": _error("not possible now (e.g. resuming a cancelled schedule)")},
        }} for action, summary in (
            ("pause", "Stop firing a schedule (queued jobs stay queued)"),
            ("resume", "Fire again; occurrences missed while paused follow the misfire rule"),
            ("cancel", "Stop a schedule for good and drop its queued jobs"))}
    serial = {"name": "serial", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "device serial, URL-encoded (e.g. 127.0.0.1%3A40123)"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "phonefarm control API",
            "version": "1.0.0",
            "description": "Operate a fleet of Android phones. When the coordinator has an access "
                           "token, every /api request needs `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "http://127.0.0.1:8470"}],
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/api/health": {"get": {
                "operationId": "health", "summary": "Liveness check",
                "responses": {"200": _json("Health", "the endpoint is up"), "401": _UNAUTHORIZED},
            }},
            "/api/phones": {"get": {
                "operationId": "listPhones", "summary": "Every known phone and its state",
                "responses": {"200": _json("PhonesResponse", "phones"), "401": _UNAUTHORIZED},
            }},
            "/api/nodes": {"get": {
                "operationId": "listNodes", "summary": "Every known node (rack computer)",
                "responses": {"200": _json("NodesResponse", "nodes"), "401": _UNAUTHORIZED},
            }},
            "/api/phones/{serial}/screen": {"get": {
                "operationId": "getScreen",
                "summary": "Latest frame of a phone: full PNG, or a JPEG thumbnail with ?w=",
                "parameters": [serial, THUMB_WIDTH.openapi()],
                "responses": {
                    "200": {"description": "the frame", "content": {
                        "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                        "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}}},
                    "400": _error("bad w"),
                    "401": _UNAUTHORIZED,
                    "404": _error("unknown serial (named in `serial`)"),
                    "409": _error("a run holds the phone's lock (`holder`: its execution)"),
                    "503": _error("no frame available from the phone"),
                },
            }},
            "/api/actions": {"post": {
                "operationId": "runAction",
                "summary": "Run one action on every phone of a scope, concurrently",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("ActionRequest"),
                    "example": {"scope": "phone:all",
                                "action": {"type": "tap", "x": 540, "y": 1200}}}}},
                "responses": {
                    "200": _json("ActionsResponse", "one result per phone, by serial"),
                    "400": _error("invalid JSON (`line`, `column`), an invalid field (`field`, "
                                  "a JSON path such as $.action.x) or a bad scope (`offset`)"),
                    "401": _UNAUTHORIZED,
                    "413": _error(f"body larger than {MAX_BODY_BYTES} bytes"),
                },
            }},
            "/api/record/start": {"post": {
                "operationId": "startRecording",
                "summary": "Record the actions sent to the scope's first phone as a sequence",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("RecordStart"),
                    "example": {"scope": "phone:all", "name": "open_profile", "app": "clipshare"}}}},
                "responses": {
                    "201": {"description": "recording: recording_id, lead, phones",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "400": _error("bad body (`field`), bad scope (`offset`) or bad name"),
                    "401": _UNAUTHORIZED,
                    "409": _error("recording not enabled on this coordinator"),
                },
            }},
            "/api/record/stop": {"post": {
                "operationId": "stopRecording",
                "summary": "Stop a recording and write its sequence file atomically",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("RecordStop")}}},
                "responses": {
                    "200": {"description": "path and sequence written",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "400": _error("bad body, or the recording is not a valid sequence"),
                    "401": _UNAUTHORIZED,
                    "404": _error("no such open recording (named in `recording_id`)"),
                },
            }},
            "/api/runs": {"post": {
                "operationId": "startRun",
                "summary": "Start a sequence on every phone (or account) of a scope",
                "description": "Texts are resolved per phone (variables, spintax) before the "
                               "steps go to the node. Follow progress with GET /api/runs/{run_id} "
                               "or the status stream (execution_* and step_* events).",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("RunRequest"),
                    "example": {"sequence": "clipshare/post_clip", "scope": "phone:all",
                                "variables": {"tag": "summer"}}}}},
                "responses": {
                    "202": _json("RunStarted", "the run id and one execution per target"),
                    "400": _error("invalid JSON, a bad field, a bad scope (`offset`) or an "
                                  "invalid sequence (`problems`: every problem's file/step/field)"),
                    "401": _UNAUTHORIZED,
                    "404": _error("no library sequence of that name (`sequence`)"),
                },
            }},
            "/api/runs/{run_id}": {"get": {
                "operationId": "getRun", "summary": "A run's status and its executions' steps",
                "parameters": [{"name": "run_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json("RunStatus", "the run"), "401": _UNAUTHORIZED,
                              "404": _error("no such run (`run_id`)")},
            }},
            "/api/executions": {"get": {
                "operationId": "listExecutions",
                "summary": "Execution history, newest first, filtered and paged",
                "description": "Every filter given must match. A page holds up to `limit` "
                               "executions; when older ones match too, `next_before` is the "
                               "`before` of the next page. A tenant sees its clients' "
                               "phones' executions only.",
                "parameters": execution_query_parameters(),
                "responses": {"200": _json("ExecutionsResponse", "executions without steps"),
                              "400": _error("a bad parameter (`field`), or `before` names no "
                                            "execution"),
                              "401": _UNAUTHORIZED},
            }},
            "/api/schedules": {
                "post": {
                    "operationId": "addSchedule",
                    "summary": "Schedule a sequence: immediate, scheduled, window or recurring",
                    "description": "Each occurrence runs the sequence once per (phone, account) "
                                   "of `target`, resolved when it fires; a phone runs one "
                                   "scheduled job at a time. Times are ISO 8601 with a zone.",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": _ref("ScheduleRequest"),
                        "example": {"sequence": "clipshare/post_clip", "target": "phone:all",
                                    "type": "recurring", "cron": "0 9 * * *",
                                    "misfire": {"grace_s": 600}}}}},
                    "responses": {
                        "201": _json("ScheduleView", "the schedule and its next fire time"),
                        "400": _error("invalid JSON or a bad field (`field`, e.g. $.at)"),
                        "401": _UNAUTHORIZED,
                        "409": _error("this coordinator has no scheduler (no farm database)"),
                    },
                },
                "get": {
                    "operationId": "listSchedules",
                    "summary": "Every schedule with its status and next fire time",
                    "responses": {"200": _json("SchedulesResponse", "schedules"),
                                  "401": _UNAUTHORIZED},
                },
            },
            **schedule_actions,
            "/api/schedules/{schedule_id}/events": {"get": {
                "operationId": "listScheduleEvents",
                "summary": "What the scheduler did for a schedule, oldest first",
                "parameters": [schedule_id],
                "responses": {"200": _json("ScheduleEventsResponse", "events"),
                              "401": _UNAUTHORIZED,
                              "404": _error("no such schedule (`schedule_id`)")},
            }},
            "/api/executions/{execution_id}": {"get": {
                "operationId": "getExecution", "summary": "One execution and its steps",
                "parameters": [{"name": "execution_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json("Execution", "the execution"), "401": _UNAUTHORIZED,
                              "404": _error("no such execution (`execution_id`)")},
            }},
            "/api/executions/{execution_id}/steps/{path}/screenshot": {"get": {
                "operationId": "getExecutionStepScreenshot",
                "summary": "The screen of a failed step (PNG)",
                "parameters": [{"name": "execution_id", "in": "path", "required": True,
                                "schema": {"type": "string"}},
                               {"name": "path", "in": "path", "required": True,
                                "schema": {"type": "string"},
                                "description": "step path, e.g. steps[3] or steps[5].then[0]"}],
                "responses": {
                    "200": {"description": "the frame", "content": {
                        "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}},
                    "401": _UNAUTHORIZED,
                    "404": _error("no such execution, or no screenshot for that step"),
                },
            }},
            "/api/unknown-screens": {"get": {
                "operationId": "listUnknownScreens",
                "summary": "Frames no registered screen matched, deduplicated, oldest first",
                "responses": {"200": _json("UnknownScreensResponse", "the queue"),
                              "401": _UNAUTHORIZED},
            }},
            "/api/unknown-screens/{id}/image": {"get": {
                "operationId": "getUnknownScreenImage",
                "summary": "The full PNG frame of one queued unknown screen",
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the frame", "content": {
                        "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}},
                    "401": _UNAUTHORIZED,
                    "404": _error("no such entry (named in `id`)"),
                },
            }},
            "/api/stream": {"get": {
                "operationId": "streamEvents",
                "summary": "Live status: every hub event as Server-Sent Events",
                "description": "Each message is `event: <name>` and `data: <HubEvent JSON>`. "
                               "Comment lines (`: heartbeat`) arrive every 15 s. A client too slow "
                               "to keep up loses the oldest events and gets one `overflow` event "
                               "whose data.dropped counts them. Event names: phone_up, phone_down, "
                               "phone_paused, phone_resumed, phone_failed, lock_taken, lock_freed, "
                               "app_changed, account_changed, screen_changed, interrupt_handled, "
                               "interrupt_stuck, unknown_screen, node_up, node_down, "
                               "action_result, thumbnail, execution_started, step_started, "
                               "step_finished, execution_paused, execution_resumed, "
                               "execution_finished, metric_recorded, post_recorded, "
                               "health_signal, messages_read (a run's read steps, issue 21), "
                               "recovery_started, recovery_step, "
                               "recovery_succeeded, recovery_failed, recovery_phone_paused, "
                               "event_refused, backup_started, backup_progress, "
                               "backup_finished, backup_failed, backup_pruned (super users "
                               "only: POST /api/backups, --backup-at), overflow. "
                               "phone_paused / phone_resumed with "
                               "data.by = coordinator are the coordinator's pause (data.reason, "
                               "e.g. recovery_failures) and its end (POST "
                               "/api/phones/{serial}/resume). event_refused: a node reported on "
                               "another node's phone or execution; data.event and data.reason "
                               "say which and why (nothing of it was applied).",
                "responses": {
                    "200": {"description": "an endless event stream", "content": {
                        # One schema per event (how OpenAPI 3.2's itemSchema reads it, and
                        # what schemathesis checks each event against): data is HubEvent JSON.
                        "text/event-stream": {"schema": _SSE_EVENT}}},
                    "401": _UNAUTHORIZED,
                },
            }},
            "/api/live": {"get": {
                "operationId": "liveFrames",
                "summary": "The live wall: frames of the phones a page watches (WebSocket)",
                "description": "A WebSocket (send `Upgrade: websocket`; a plain GET is answered "
                               "400). The page sends JSON text messages `{\"watch\": {serial: "
                               "width | {\"width\": 16..2000, \"fps\": 0.2..60}}}` (its whole "
                               "watch set each time; `{}` watches nothing), answered "
                               "`{\"watching\": {serial: width}}` or `{\"error\", \"field\"}`; "
                               "it receives one binary message per new frame of a watched phone: "
                               "a 4-byte big-endian length, that many bytes of JSON `{serial, ts, "
                               "width, height}` (the full frame's size), then the JPEG. A static "
                               "screen sends nothing; a slow page gets the newest frame of each "
                               "phone, not every frame. With an access token, the header or a "
                               "first message `{\"token\": ...}` (browsers cannot set headers "
                               "on a WebSocket); else the socket closes with code 4401.",
                "responses": {
                    "101": {"description": "switching to the WebSocket"},
                    "400": _error("not a WebSocket upgrade (field `$headers.Upgrade`)"),
                    "401": _UNAUTHORIZED,
                    "404": _error("this coordinator has no live frames"),
                },
            }},
            "/api/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document", "content": {
                    "application/json": {"schema": {"type": "object"}}}},
                    "401": _UNAUTHORIZED},
            }},
            **registry.openapi_paths(_error),
            **variables.openapi_paths(_error),
            **workflow_api.openapi_paths(_error),
            **definitions_api.openapi_paths(_error),
            **templates_api.openapi_paths(_error),
            **screens.openapi_paths(_error),
            **recovery.openapi_paths(_error),
            **ai_keys.openapi_paths(_error),
            **audit_api.openapi_paths(_error),
            **node_keys_api.openapi_paths(_error),
            **access_api.openapi_paths(_error),
            **backups_api.openapi_paths(_error),
            **reports_api.openapi_paths(_error),
            **metrics_api.openapi_paths(_error),
            **stats_api.openapi_paths(_error),
            **alerts_api.openapi_paths(_error),
            **apps_api.openapi_paths(_error),
            **apks_api.openapi_paths(_error),
            **links_api.openapi_paths(_error),
            **conversations_api.openapi_paths(_error),
            **posts_api.openapi_paths(_error),
            **analytics_api.openapi_paths(_error),
            **content_api.openapi_paths(_error),
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the control endpoint (a fresh copy)."""
    return copy.deepcopy(_document())
