"""Backups over the control endpoint (issue 18.3).

Owns ``POST /api/backups`` (take a backup now, answered when it is whole; progress on the
status stream) and ``GET /api/backups`` (the backups in the coordinator's backup folder),
with their request type and OpenAPI paths. Super users only: the routes are left out of
actors.access.policy's ROUTES, and checked here again. The work is the coordinator's
`BackupService` (actors.coordinator.backups), put in the app under `BACKUPS` by ``start``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta

from actors.control.auth import principal_of
from actors.control.http import error_response, json_response, openapi_body, super_users_only
from actors.control.registry import _Body, _handled
from actors.control.schemas import decode_request
from actors.coordinator.backups import BackupService
from actors.store.backup import BackupBusy
from protocol.errors import FarmError, ValidationError

log = logging.getLogger(__name__)

BACKUPS = web.AppKey("backups", BackupService)


class BackupRequest(_Body):
    to: Annotated[str, Meta(min_length=1, max_length=4096, description=(
        "an existing absolute folder on the coordinator's machine to write the backup "
        "into (default the coordinator's --backup-dir)"))] | None = None
    include_master_key: Annotated[bool, Meta(description=(
        "also copy the master key into the backup (default false: keep it apart)"))] = False


REQUEST_TYPES = [BackupRequest]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/backups", get_backups)
    app.router.add_post("/api/backups", post_backup)


def _service(request: web.Request) -> BackupService:
    service = request.app.get(BACKUPS)
    if service is None:
        raise FarmError("this endpoint keeps no backups (no coordinator data folder)")
    return service


def _folder(value: str) -> Path:
    """``to``: an existing absolute folder, never created here (a request must not make the
    coordinator write wherever a path points)."""
    path = Path(value)
    if "\x00" in value or not path.is_absolute():
        raise ValidationError("$.to", "an absolute folder path is expected")
    if not path.is_dir():
        raise ValidationError("$.to", f"{value}: no such folder on the coordinator's machine")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValidationError("$.to", f"{value}: not writable by the coordinator")
    return path


@_handled
async def get_backups(request: web.Request) -> web.Response:
    if (refused := super_users_only(request, "backups")) is not None:
        return refused
    service = _service(request)
    return json_response({"backup_dir": str(service.backup_dir), "backups": service.list()})


@_handled
async def post_backup(request: web.Request) -> web.Response:
    if (refused := super_users_only(request, "backups")) is not None:
        return refused
    body = decode_request(await request.read() or b"{}", BackupRequest,
                          "a JSON object with optional to and include_master_key")
    to = _folder(body.to) if body.to is not None else None
    service = _service(request)
    actor = principal_of(request).actor
    try:
        result = await service.backup(to, include_master_key=body.include_master_key,
                                      actor=actor)
    except BackupBusy as exc:
        return error_response(409, str(exc))
    log.info("backup %s taken for %s (master key %s)", result["path"], actor,
             "included" if body.include_master_key else "not included")
    return json_response(result, 201)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    unauthorized = error("missing or wrong bearer token")
    forbidden = error("not a super user")
    return {"/api/backups": {
        "get": {"operationId": "listBackups", "summary":
                "The backups in the coordinator's backup folder, newest first: name, path, "
                "created_at, size, files, master_key_included, facts (super users only)",
                "responses": {"200": obj, "401": unauthorized, "403": forbidden,
                              "409": error("this endpoint keeps no backups")}},
        "post": {"operationId": "takeBackup", "summary":
                 "Take a backup now (a consistent copy of the databases while the farm runs, "
                 "the registry, recordings, tags, media, screenshots; the master key only "
                 "with include_master_key), answered when it is whole; progress is on the "
                 "status stream (backup_started, backup_progress, backup_finished, "
                 "backup_failed). One at a time (super users only)",
                 "requestBody": openapi_body("BackupRequest", required=False),
                 "responses": {"201": obj, "400": error("bad body (`field` names it): `to` "
                                                        "is not an existing absolute folder"),
                               "401": unauthorized, "403": forbidden,
                               "409": error("a backup is being taken already, this "
                                            "endpoint keeps no backups, or the backup "
                                            "failed (the reason)")}}},
    }
