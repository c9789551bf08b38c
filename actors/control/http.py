"""What every control-endpoint route module shares: the app key of the hub, JSON answers and
errors (``{"error": ...}`` plus fields naming what was wrong), and the OpenAPI pieces for a
request body and a path parameter.

Owns `HubAPI`, what the endpoint needs from the coordinator's hub, so `app`, `stream` and the
route modules all take it from here. This module imports no other control module but `auth`: `app`
assembles the route modules, and a route module importing `app` would be an import circle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import orjson
from aiohttp import web

from actors.access.scoped import ScopedHub
from actors.control.auth import principal_of
from actors.coordinator.scheduling.scheduler import Schedule

log = logging.getLogger(__name__)


class HubAPI(Protocol):
    """What the control endpoint needs from the coordinator's hub (actors/coordinator/hub.py)."""

    def phones(self) -> list[dict]:
        """Every known phone: serial, node, state, lock_holder, active_app, active_account,
        last_screen, tags, screen_ts."""

    def nodes(self) -> list[dict]:
        """Every known node: name, state, last_heartbeat, phones."""

    async def run_action(self, serial: str, action: dict, execution_id: str | None = None) -> dict:
        """Run one action; ``{"status": ok|locked|error|gone, "error": str|None, ...}``.
        Raises PhoneNotFound for an unknown serial, nothing for device problems."""

    def start_recording(self, name: str, app: str | None, serials: list[str]) -> dict:
        """Record actions sent to ``serials[0]``: {"recording_id", "lead", "phones"};
        ValidationError for a bad name or a phone already recorded."""

    async def start_run(self, sequence: str | dict, scope: str,
                        variables: dict[str, str] | None = None) -> dict:
        """Start a sequence on every target of ``scope``: {"run_id", "sequence",
        "executions": {serial: {"execution_id", "status", "account", "error"}}}. Raises
        ValidationErrors (bad sequence), ScopeError, actors.coordinator.runs.UnknownSequence."""

    async def get_run(self, run_id: str) -> dict:
        """{"run_id", "sequence", "status", "executions": [...]}; actors.coordinator.runs.RunNotFound."""

    async def get_execution(self, execution_id: str) -> dict:
        """One execution with its steps; actors.coordinator.runs.RunNotFound."""

    async def execution_screenshot(self, execution_id: str, path: str) -> tuple[bytes, str]:
        """The image of a failed step and its content type (PNG, or JPEG/WebP once
        retention compressed it); actors.coordinator.runs.RunNotFound."""

    async def list_executions(self, limit: int = 50) -> list[dict]:
        """The latest executions, newest first, without steps."""

    async def execution_history(self, query: Any) -> dict:
        """The page of executions an actors.store.execution_history.ExecutionQuery selects:
        {"executions": [...] newest first without steps, "next_before": str | None};
        ValidationError naming ``before`` for an unknown execution."""

    async def add_schedule(self, schedule: Schedule) -> dict:
        """Register a schedule (id generated when empty): its view (id, status, next_fire,
        fired, jobs, ...). ValidationError names the bad field."""

    def list_schedules(self, clients: frozenset[int] | None = None) -> list[dict]:
        """Every schedule's view (only those of ``clients`` when given: a tenant's)."""

    async def control_schedule(self, schedule_id: str, action: str,
                               clients: frozenset[int] | None = None) -> dict:
        """pause | resume | cancel; the schedule's view. actors.coordinator.scheduling.schedules.ScheduleNotFound
        (also for another client's), ValidationError (e.g. resuming a cancelled schedule)."""

    async def schedule_events(self, schedule_id: str,
                              clients: frozenset[int] | None = None) -> list[dict]:
        """The schedule's recorded events, oldest first; ScheduleNotFound."""

    def stop_recording(self, recording_id: str) -> dict:
        """Write the recording: {"path", "sequence"}; FarmError if no such recording."""

    def unknown_screens(self) -> list[dict]:
        """The unknown-screens queue: id, serial(s), node, app, previous_screen, last_action,
        seen, status, phash."""

    def unknown_screen_image(self, entry_id: str) -> bytes:
        """The PNG of one queued unknown screen; FarmError if there is no such entry."""

    async def screen(self, serial: str, width: int | None = None) -> tuple[bytes, str]:
        """(image bytes, content type): PNG when width is None, else a JPEG that wide.
        Raises PhoneNotFound."""

    def subscribe(self) -> "asyncio.Queue[dict]":
        """A queue receiving every hub event from now on."""

    def unsubscribe(self, queue: "asyncio.Queue[dict]") -> None:
        """Stop delivering to ``queue``."""

    def farm_db(self) -> Any:
        """The farm database (actors.store.farm_db.FarmDB) behind the CRUD routes of
        `registry`; FarmError when the hub has none."""

    # The `screens` routes read these attributes; None (or absent) answers 409.
    registry_store: Any  # actors.coordinator.registry_store.RegistryStore: /api/registry
    discovery: Any  # actors.coordinator.ai.discovery.DiscoveryService: /api/discovery

    def tag_phone(self, serial: str, tag: str, add: bool = True) -> list[str]:
        """Add (or remove) a custom tag of a phone; its tags afterwards. PhoneNotFound,
        ValidationError (bad tag), FarmError (no tag store)."""


HUB: "web.AppKey[HubAPI]" = web.AppKey("hub")
# The coordinator's actors.access.service.Access; None in an app built without access control.
ACCESS: "web.AppKey[Any]" = web.AppKey("access", object)


def hub_of(request: web.Request) -> "HubAPI":
    """The hub as the caller sees it: all of it for a super user; for anyone else a
    `ScopedHub` (their clients' phones and data only, anything else refused)."""
    principal = principal_of(request)
    if principal.is_super:
        return request.app[HUB]
    return ScopedHub(request.app[HUB], principal)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=str), status=status,
                        content_type="application/json", headers=headers)


def error_response(status: int, error: str, **extra: Any) -> web.Response:
    return json_response({"error": error, **extra}, status=status)


def super_users_only(request: web.Request, what: str) -> web.Response | None:
    """403 (logged) unless the caller is a super user; None when it is. For routes over the
    whole farm (``what``: "backups", "node keys") that a route policy entry cannot narrow."""
    principal = principal_of(request)
    if principal.is_super:
        return None
    log.warning("%s refused %s %s for %s: super users only", what, request.method,
                request.path, principal.actor)
    return error_response(403, f"{what} are for super users only")


def openapi_body(schema: str, required: bool = True) -> dict[str, Any]:
    """An OpenAPI requestBody of the document's component ``schema``."""
    return {"required": required, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def openapi_path_param(name: str, description: str = "") -> dict[str, Any]:
    """A string path parameter (an integer one is `schemas.IntParam`, which also parses it)."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": description}
