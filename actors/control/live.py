"""The live wall's WebSocket, ``GET /api/live``: phone frames at video rate to a console page.

The page sends JSON text messages ``{"watch": {serial: width | {"width": w, "fps": f}}}``
(its whole watch set each time: the phones it shows and how wide; an empty object watches
nothing) and receives one binary message per frame: a 4-byte big-endian length, that many
bytes of JSON ``{"serial", "ts", "width", "height"}`` (the full frame's size, for scaling
taps), then the JPEG. Each watch message is answered ``{"watching": {serial: width}}``; a
bad one ``{"error": ..., "field": "$.watch.<serial>"}``, and nothing of it is applied.

Access: browsers cannot put an Authorization header on a WebSocket, so with an access token
the upgrade passes the HTTP check and the first message must carry ``"token"`` (or the
upgrade request the header); anything else closes the socket with code 4401.
The hub (`actors.coordinator.live.LiveWatchers`) tells the nodes what is watched; frames
a slow page has not taken yet are replaced by newer ones, never queued.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from actors.access.policy import refusal
from actors.access.principal import SUPER_LOCAL, Principal
from actors.access.scope import visible_phones
from actors.access.users import LoginFailed
from actors.control.auth import AUTHENTICATE, LIVE_PATH, bearer_credential
from actors.control.http import HUB, error_response
from actors.coordinator.live import Frame, LiveClient, LiveWatchers

log = logging.getLogger(__name__)

MIN_WIDTH, MAX_WIDTH = 16, 2000
MIN_FPS, MAX_FPS, DEFAULT_FPS = 0.2, 60.0, 10.0
MAX_WATCHED = 1000
MAX_MESSAGE_BYTES = 256 * 1024
HEADER = struct.Struct(">I")
CLOSE_UNAUTHORIZED = 4401


class WatchError(ValueError):
    """A watch message that cannot be applied, and the field at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def parse_watch(message: Any, known: set[str]) -> dict[str, tuple[int, float]]:
    """The watch set of one page message; WatchError naming the field for bad input."""
    if not isinstance(message, dict):
        raise WatchError("a live message is a JSON object", "$")
    watch = message.get("watch")
    if not isinstance(watch, dict):
        raise WatchError("'watch' must be an object {serial: width}", "$.watch")
    if len(watch) > MAX_WATCHED:
        raise WatchError(f"at most {MAX_WATCHED} phones", "$.watch")
    out: dict[str, tuple[int, float]] = {}
    for serial, want in watch.items():
        field = f"$.watch.{serial}"
        if serial not in known:
            raise WatchError(f"no phone {serial!r}", field)
        width, fps = (want, DEFAULT_FPS) if not isinstance(want, dict) else (
            want.get("width"), want.get("fps", DEFAULT_FPS))
        if isinstance(width, bool) or not isinstance(width, int) \
                or not MIN_WIDTH <= width <= MAX_WIDTH:
            raise WatchError(f"width must be an integer {MIN_WIDTH}..{MAX_WIDTH}",
                             field + (".width" if isinstance(want, dict) else ""))
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) \
                or not MIN_FPS <= fps <= MAX_FPS:
            raise WatchError(f"fps must be a number {MIN_FPS}..{MAX_FPS}", field + ".fps")
        out[serial] = (width, float(fps))
    return out


def pack_frame(frame: Frame) -> bytes:
    header = orjson.dumps({"serial": frame.serial, "ts": frame.ts, "width": frame.width,
                           "height": frame.height})
    return HEADER.pack(len(header)) + header + frame.jpeg


async def live_socket(request: web.Request) -> web.StreamResponse:
    """``GET /api/live``: the WebSocket of the live wall (see the module docstring)."""
    hub = request.app[HUB]
    live: LiveWatchers | None = getattr(hub, "live", None)
    if live is None:
        return error_response(404, "this coordinator has no live frames")
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_MESSAGE_BYTES)
    if not ws.can_prepare(request).ok:
        return error_response(400, "GET /api/live is a WebSocket: send an Upgrade request",
                              field="$headers.Upgrade")
    await ws.prepare(request)
    authenticate = request.app.get(AUTHENTICATE)
    principal = await _caller(authenticate, bearer_credential(request))
    client = live.add()
    writer = asyncio.get_running_loop().create_task(_write_frames(ws, client))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    await ws.send_json({"error": "send JSON text messages", "field": "$"})
                continue
            try:
                data = orjson.loads(msg.data)
            except orjson.JSONDecodeError as exc:
                await ws.send_json({"error": f"not JSON: {exc}", "field": "$"})
                continue
            if principal is None:
                principal = await _caller(authenticate, data.get("token")
                                          if isinstance(data, dict) else None)
                if principal is None:
                    log.warning("live socket rejected peer=%s: missing or wrong token",
                                request.remote)
                    await ws.close(code=CLOSE_UNAUTHORIZED, message=b"missing or wrong token")
                    break
            if isinstance(data, dict) and set(data) == {"token"}:
                continue
            try:
                watch = parse_watch(data, {p["serial"] for p in visible_phones(principal, hub)})
            except WatchError as exc:
                await ws.send_json({"error": str(exc), "field": exc.field})
                continue
            live.set_watch(client, watch)
            await ws.send_json({"watching": {s: w for s, (w, _) in watch.items()}})
    finally:
        live.remove(client)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    return ws


async def _write_frames(ws: web.WebSocketResponse, client: LiveClient) -> None:
    """Send the page its frames; each send waits for the socket (a slow page skips frames)."""
    while not ws.closed and not client.closed:
        for frame in await client.next():
            if frame.serial in client.watch and not ws.closed:
                await ws.send_bytes(pack_frame(frame))


async def _caller(authenticate: Any, credential: Any) -> Principal | None:
    """The socket's caller, or None while no valid token has come."""
    if authenticate is None:
        return SUPER_LOCAL
    if not isinstance(credential, str):
        return None
    try:
        principal = await authenticate(credential)
    except LoginFailed:
        return None
    # A limited token (a metrics token) may not watch phones: as if none had come.
    return principal if refusal(principal, "GET", LIVE_PATH) is None else None


def add_routes(app: web.Application) -> None:
    app.router.add_get(LIVE_PATH, live_socket)
