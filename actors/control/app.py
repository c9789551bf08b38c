"""The control endpoint's aiohttp application.

Owns the HTTP routes over the hub (`HubAPI`, defined in `http`): phone and node lists, screen
frames, actions on a scope of phones, the live status stream, the OpenAPI document and a
health check; and the rule that every error is a JSON ``{"error": ...}`` naming what was
wrong and where. Request types live in `schemas`, the SSE relay in `stream`, access control
in `auth`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from datetime import datetime, timezone
from typing import Any

import msgspec
from aiohttp import web

from actors.control import access_api, ai_keys, console, live, recovery, registry, variables
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
from actors.control import screens
from actors.control import apks as apks_api
from actors.control import links as links_api
from actors.control import conversations as conversations_api
from actors.control import posts as posts_api
from actors.control import analytics as analytics_api
from actors.control import content as content_api
from actors.access.service import Access
from actors.control.auth import AUTHENTICATE, access_middleware, authenticator, principal_of
from actors.control.http import ACCESS, HUB, HubAPI, error_response, hub_of, json_response  # noqa: F401 - re-exported
from actors.control.execution_query import parse_execution_query
from actors.control.openapi import openapi_document
from actors.control.schemas import (
    MAX_BODY_BYTES,
    THUMB_WIDTH,
    RecordStart,
    RecordStop,
    RequestError,
    RunRequest,
    decode_action_request,
    decode_request,
)
from actors.control.stream import EventStreamer
from actors.coordinator.loop_lag import LoopLagProbe
from actors.coordinator.runs import RunNotFound, UnknownSequence
from actors.coordinator.scheduling.scheduler import Schedule
from actors.coordinator.scheduling.schedules import ScheduleNotFound
from protocol.errors import (
    FarmError,
    PhoneLocked,
    PhoneNotFound,
    ScopeError,
    ValidationError,
    ValidationErrors,
    split_msgspec_error,
)
from sequences.scopes import parse_phone_scope

log = logging.getLogger(__name__)

SCHEDULE_ACTIONS = ("pause", "resume", "cancel")


STREAMER = web.AppKey("streamer", EventStreamer)
LOOP_LAG = web.AppKey("loop_lag", LoopLagProbe)


def make_app(hub: HubAPI, token: str | None = None, *, access: Access | None = None,
             bound_loopback: bool = True, heartbeat_s: float = 15.0,
             stream_backlog: int = 1000) -> web.Application:
    """The control endpoint over ``hub``. With ``access`` (the coordinator always passes
    it), every /api request needs a user's or script's bearer token and sees what that
    caller may; ``token`` alone is one shared super-user token; with neither (unit tests)
    every caller is a super user. ``heartbeat_s`` and ``stream_backlog`` tune the status
    stream (comment heartbeat cadence, events kept per slow client)."""
    if access is not None and token:
        access.legacy_token = token
    authenticate = authenticator(access, token)
    app = web.Application(
        middlewares=[json_errors, access_middleware(
            authenticate, bound_loopback=bound_loopback,
            on_refused=access.audit_refusal if access is not None else None)],
        client_max_size=MAX_BODY_BYTES)
    app[ACCESS] = access
    app[AUTHENTICATE] = authenticate
    app[HUB] = hub
    streamer = EventStreamer(hub, heartbeat_s=heartbeat_s, backlog=stream_backlog)
    app[STREAMER] = streamer
    app.on_shutdown.append(streamer.close_all)
    app[LOOP_LAG] = LoopLagProbe()
    app.on_startup.append(_start_loop_lag)
    app.on_cleanup.append(_stop_loop_lag)
    app.router.add_get("/api/health", get_health)
    app.router.add_get("/api/phones", get_phones)
    app.router.add_get("/api/nodes", get_nodes)
    app.router.add_get("/api/phones/{serial}/screen", get_screen)
    app.router.add_post("/api/actions", post_actions)
    app.router.add_post("/api/record/start", post_record_start)
    app.router.add_post("/api/record/stop", post_record_stop)
    app.router.add_post("/api/runs", post_runs)
    app.router.add_get("/api/runs/{run_id}", get_run)
    app.router.add_get("/api/executions", get_executions)
    app.router.add_get("/api/executions/{execution_id}", get_execution)
    app.router.add_post("/api/schedules", post_schedules)
    app.router.add_get("/api/schedules", get_schedules)
    for action in SCHEDULE_ACTIONS:
        app.router.add_post(f"/api/schedules/{{schedule_id}}/{action}", post_schedule_action)
    app.router.add_get("/api/schedules/{schedule_id}/events", get_schedule_events)
    app.router.add_get("/api/executions/{execution_id}/steps/{path}/screenshot",
                       get_execution_screenshot)
    app.router.add_get("/api/unknown-screens", get_unknown_screens)
    app.router.add_get("/api/unknown-screens/{id}/image", get_unknown_screen_image)
    app.router.add_get("/api/stream", streamer.handle)
    live.add_routes(app)  # the live wall's WebSocket (frames of watched phones)
    app.router.add_get("/api/openapi.json", get_openapi)
    registry.add_routes(app)  # groups, clients, profiles, phone registry, accounts
    workflow_api.add_routes(app)  # sequence/workflow definitions, workflow runs
    definitions_api.add_routes(app)  # definitions' versions, diffs and reverts
    templates_api.add_routes(app)  # templates across clients
    variables.add_routes(app)  # the text dialog's variable browser and preview
    screens.add_routes(app)  # the screen registry (edit mode) and discovery proposals
    recovery.add_routes(app)  # AI recovery attempts and success rates
    ai_keys.add_routes(app)  # per-client AI keys, resuming a paused phone
    audit_api.add_routes(app)  # the audit trail (GET /api/audit)
    node_keys_api.add_routes(app)  # each node's own key for the node link
    backups_api.add_routes(app)  # taking and listing backups (super users)
    reports_api.add_routes(app)  # the clients' daily reports (GET/POST /api/reports)
    metrics_api.add_routes(app)  # GET /metrics (Prometheus; a metrics-scoped token)
    stats_api.add_routes(app)  # the farm's history: GET /api/stats, /api/stats/top-failures
    alerts_api.add_routes(app)  # alerts, their rules and channels; the console's notifications
    apps_api.add_routes(app)  # installing apps, the inventory and pins (/api/apps/...)
    apks_api.add_routes(app)  # the APK library (/api/apks: upload, list, remove)
    links_api.add_routes(app)  # links in bio, their clicks and the public /l/{code}
    conversations_api.add_routes(app)  # conversations the phones read (/api/conversations)
    posts_api.add_routes(app)  # posts and their metrics (/api/posts)
    analytics_api.add_routes(app)  # daily rollups (/api/analytics/...)
    content_api.add_routes(app)  # captions, hashtag sets, custom variables, media library
    access_api.add_routes(app)  # login, logout, users, organizations, tokens
    console.add_routes(app)  # the web console: / and /static
    return app


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Turn aiohttp's HTTP errors (404 route, 405, 413, ...) and crashes into JSON errors."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason
        if exc.status == 404:
            reason = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405:
            reason = f"method {request.method} not allowed on {request.path}"
        elif exc.status == 413:
            reason = f"request body larger than {MAX_BODY_BYTES} bytes"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return json_response({"error": reason}, status=exc.status, headers=headers)
    except RequestError as exc:  # a parameter's check (schemas.IntParam) before any try
        return json_response(exc.body, status=400)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        # A path too long for the file system (static files, registry files) names no file.
        return error_response(404, f"no such file: {request.method} {request.path[:120]}... "
                                   "(name too long)")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the endpoint must answer, and log the cause
        log.exception("request failed method=%s path=%s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


async def _start_loop_lag(app: web.Application) -> None:
    app[LOOP_LAG].start()


async def _stop_loop_lag(app: web.Application) -> None:
    await app[LOOP_LAG].close()


async def get_health(request: web.Request) -> web.Response:
    return json_response({"ok": True, "loop_lag_ms": request.app[LOOP_LAG].snapshot()})


async def get_phones(request: web.Request) -> web.Response:
    return json_response({"phones": hub_of(request).phones()})


async def get_nodes(request: web.Request) -> web.Response:
    return json_response({"nodes": hub_of(request).nodes()})


async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


async def get_screen(request: web.Request) -> web.Response:
    serial = request.match_info["serial"]
    width = THUMB_WIDTH.parse(request) if THUMB_WIDTH.name in request.query else None
    try:
        image, content_type = await hub_of(request).screen(serial, width)
    except PhoneNotFound as exc:
        return error_response(404, str(exc), serial=serial)
    except PhoneLocked as exc:  # a run holds the phone: its frames come with the run's events
        return error_response(409, str(exc), serial=serial, holder=exc.holder)
    except FarmError as exc:
        return error_response(503, str(exc), serial=serial)
    return web.Response(body=image, content_type=content_type, headers={"Cache-Control": "no-store"})


async def post_record_start(request: web.Request) -> web.Response:
    """Start recording what is sent to the scope's first phone (spec 5.2)."""
    try:
        start = decode_request(await request.read(), RecordStart, "a JSON object with scope and name")
    except RequestError as exc:
        return json_response(exc.body, status=400)
    hub = hub_of(request)
    try:
        serials = parse_phone_scope(start.scope).resolve(hub.phones())
    except ScopeError as exc:
        return error_response(400, str(exc), offset=exc.offset, scope=exc.text, field="$.scope")
    try:
        return json_response(hub.start_recording(start.name, start.app, serials), status=201)
    except ValidationError as exc:
        return error_response(400, str(exc), field=exc.where)
    except FarmError as exc:
        return error_response(409, str(exc))


async def post_record_stop(request: web.Request) -> web.Response:
    """Stop a recording: its sequence file is written (atomically) and returned."""
    try:
        stop = decode_request(await request.read(), RecordStop, "a JSON object with recording_id")
    except RequestError as exc:
        return json_response(exc.body, status=400)
    try:
        stopped = hub_of(request).stop_recording(stop.recording_id)
    except ValidationError as exc:
        return error_response(400, f"the recording is not a valid sequence: {exc}")
    except FarmError as exc:
        return error_response(404, str(exc), recording_id=stop.recording_id)
    sequence = stopped["sequence"]
    await _record_version(request, "sequence",
                          f"{sequence.get('app') or 'recorded'}/{sequence['name']}", sequence,
                          None, reason="recorded")
    return json_response(stopped)


def schedule_content(schedule: Any) -> dict:
    """A schedule as its history keeps it: what was asked, not its state."""
    return {k: v for k, v in msgspec.to_builtins(schedule).items()
            if k not in ("status", "clients")}


def _single_client(clients: Any) -> int | None:
    """The client a tenant's schedule is kept under in the history (one it belongs to)."""
    return min(clients) if clients else None


async def _record_version(request: web.Request, kind: str, name: str, content: Any,
                          client_id: int | None, reason: str | None = None) -> None:
    """A saved definition's new version in its history (none without a farm database)."""
    from actors.coordinator.definitions.versions import VersionStore

    farm_db = getattr(request.app[HUB], "farm_db", None)  # a test's hub may have none
    try:
        db = farm_db() if farm_db is not None else None
    except FarmError:
        return
    if db is None:
        return
    await VersionStore(db).record(kind, name, client_id, content,
                                  author=principal_of(request).actor, reason=reason)


async def post_runs(request: web.Request) -> web.Response:
    """Start a sequence on every target of a scope: 202 with the run id and one execution
    per target; a bad sequence is a 400 listing every problem (file/step/field)."""
    try:
        run = decode_request(await request.read(), RunRequest,
                             "a JSON object with sequence and scope")
    except RequestError as exc:
        return json_response(exc.body, status=400)
    try:
        started = await hub_of(request).start_run(run.sequence, run.scope, run.variables)
    except ScopeError as exc:
        return error_response(400, str(exc), offset=exc.offset, scope=exc.text, field="$.scope")
    except ValidationErrors as exc:
        return error_response(400, f"invalid sequence: {len(exc.problems)} problem(s)",
                              field="$.sequence",
                              problems=[{"where": p.where, "reason": p.reason}
                                        for p in exc.problems])
    except UnknownSequence as exc:
        return error_response(404, str(exc), field="$.sequence", sequence=exc.name)
    except ValidationError as exc:
        return error_response(400, str(exc), field=exc.where)
    log.info("run=%s sequence=%s scope=%s executions=%d", started["run_id"],
             started.get("sequence"), run.scope, len(started["executions"]))
    return json_response(started, status=202)


async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    try:
        return json_response(await hub_of(request).get_run(run_id))
    except RunNotFound as exc:
        return error_response(404, str(exc), run_id=run_id)


async def get_execution(request: web.Request) -> web.Response:
    execution_id = request.match_info["execution_id"]
    try:
        return json_response(await hub_of(request).get_execution(execution_id))
    except RunNotFound as exc:
        return error_response(404, str(exc), execution_id=execution_id)


@registry._handled
async def get_executions(request: web.Request) -> web.Response:
    """The execution history, newest first, filtered and paged (actors.control.
    execution_query); 400 naming a bad parameter, 409 without a farm database."""
    query = parse_execution_query(request)
    return json_response(await hub_of(request).execution_history(query))


def decode_schedule(body: bytes) -> Schedule:
    """A POST /api/schedules body as a Schedule: ``id`` may be left out (generated) and
    ``status`` is ignored (a new schedule is pending). A schedule of a ``workflow`` has no
    ``sequence``. RequestError names the field."""
    raw = decode_request(body, dict[str, Any], "a JSON object with sequence, target and type")
    if "clients" in raw:
        # Whose a schedule is comes from who added it (ScopedHub.add_schedule), never a body.
        raise RequestError("$.clients", "read-only: a schedule belongs to the clients of "
                                        "the user who adds it", field="$.clients")
    raw.setdefault("id", "")
    if raw.get("workflow") is not None:
        raw.setdefault("sequence", "")
    raw.pop("status", None)
    for name in SCHEDULE_TIMES:
        raw[name] = _iso_time(name, raw.get(name))
    try:
        return msgspec.convert(raw, Schedule)
    except msgspec.ValidationError as exc:
        path, reason = split_msgspec_error(str(exc))
        raise RequestError(path, reason, field=path) from None


# A schedule's times: ISO 8601 with a zone; minutes only (2026-12-01T09:00Z) too, which the
# RFC 3339 decoder refuses for lacking seconds.
SCHEDULE_TIMES = ("at", "window_start", "window_end", "until")


def _iso_time(name: str, value: Any) -> Any:
    """A text ISO 8601 time as a datetime, in UTC when it has a zone (the type refuses one
    without); anything else as it was, for the type check to name."""
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            return value
        try:
            return t.astimezone(timezone.utc) if t.tzinfo is not None else t
        except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            where = f"$.{name}"
            raise RequestError(where, f"{value!r} is out of range in UTC", field=where) from None
    return value


async def post_schedules(request: web.Request) -> web.Response:
    """Add a schedule: 201 with its view (status, next_fire); 400 naming the bad field."""
    try:
        schedule = decode_schedule(await request.read())
        added = await hub_of(request).add_schedule(schedule)
        await _record_version(request, "schedule", added["id"],
                              schedule_content(schedule), _single_client(schedule.clients))
    except RequestError as exc:
        return json_response(exc.body, status=400)
    except ValidationError as exc:
        return error_response(400, str(exc), field=exc.where)
    except FarmError as exc:
        return error_response(409, str(exc))
    return json_response(added, status=201)


async def get_schedules(request: web.Request) -> web.Response:
    try:
        return json_response({"schedules": hub_of(request).list_schedules()})
    except FarmError as exc:
        return error_response(409, str(exc))


async def post_schedule_action(request: web.Request) -> web.Response:
    schedule_id = request.match_info["schedule_id"]
    action = request.path.rstrip("/").rsplit("/", 1)[-1]
    try:
        return json_response(await hub_of(request).control_schedule(schedule_id, action))
    except ScheduleNotFound as exc:
        return error_response(404, str(exc), schedule_id=schedule_id)
    except ValidationError as exc:
        return error_response(409, str(exc), schedule_id=schedule_id)
    except FarmError as exc:
        return error_response(409, str(exc))


async def get_schedule_events(request: web.Request) -> web.Response:
    schedule_id = request.match_info["schedule_id"]
    try:
        return json_response({"events": await hub_of(request).schedule_events(schedule_id)})
    except ScheduleNotFound as exc:
        return error_response(404, str(exc), schedule_id=schedule_id)
    except FarmError as exc:
        return error_response(409, str(exc))


async def get_execution_screenshot(request: web.Request) -> web.Response:
    execution_id, path = request.match_info["execution_id"], request.match_info["path"]
    try:
        image, content_type = await hub_of(request).execution_screenshot(execution_id, path)
    except (RunNotFound, OSError) as exc:
        return error_response(404, str(exc), execution_id=execution_id, path=path)
    return web.Response(body=image, content_type=content_type)


async def get_unknown_screens(request: web.Request) -> web.Response:
    hub = hub_of(request)
    return json_response({"unknown_screens": [
        {**entry, "url": f"/api/unknown-screens/{entry['id']}/image"}
        for entry in hub.unknown_screens()]})


async def get_unknown_screen_image(request: web.Request) -> web.Response:
    entry_id = request.match_info["id"]
    try:
        png = hub_of(request).unknown_screen_image(entry_id)
    except (FarmError, OSError) as exc:
        return error_response(404, str(exc), id=entry_id)
    return web.Response(body=png, content_type="image/png")


async def post_actions(request: web.Request) -> web.Response:
    """Validate the request, resolve its scope, run the action on every phone concurrently."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return error_response(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    body = await request.read()  # over the limit without Content-Length: 413 via json_errors
    try:
        action_request = decode_action_request(body)
    except RequestError as exc:
        return json_response(exc.body, status=400)
    hub = hub_of(request)
    try:
        serials = parse_phone_scope(action_request.scope,
                                    why="actions take a phone scope").resolve(hub.phones())
    except ScopeError as exc:
        return error_response(400, str(exc), offset=exc.offset, scope=exc.text, field="$.scope")
    action = msgspec.to_builtins(action_request.action)
    log.info("actions scope=%s type=%s phones=%d execution_id=%s", action_request.scope,
             action["type"], len(serials), action_request.execution_id)
    outcomes = await asyncio.gather(*(
        _run_one(hub, serial, dict(action), action_request.execution_id) for serial in serials))
    return json_response({"results": dict(zip(serials, outcomes))})


async def _run_one(hub: HubAPI, serial: str, action: dict, execution_id: str | None) -> dict:
    """One phone's result; a phone that vanished or a failing hub is that phone's result,
    never the whole request's."""
    try:
        return await hub.run_action(serial, action, execution_id)
    except PhoneNotFound as exc:
        return {"status": "gone", "error": str(exc)}
    except FarmError as exc:
        return {"status": "error", "error": str(exc)}
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hub bug must not hide the other phones' results
        log.exception("run_action crashed serial=%s type=%s", serial, action.get("type"))
        return {"status": "error", "error": f"internal error: {type(exc).__name__}: {exc}"}
