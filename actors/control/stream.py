"""The live status stream: every hub event to an HTTP client as Server-Sent Events.

Owns one SSE connection's life: subscribe to the hub, relay each event as
``event: <name>\\ndata: <json>\\n\\n``, send a comment heartbeat on a fixed cadence, and
unsubscribe when the client goes or the server shuts down.

A slow client must never hold up the hub: a pump task drains the hub's queue at once into
this client's own bounded backlog (`ClientBacklog`); when the backlog is full the oldest
events are dropped, and the client gets a single ``event: overflow`` (``{"dropped": n}``)
before the events that follow the gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import orjson
from aiohttp import web

from actors.access.scope import event_visible
from actors.control.auth import principal_of

if TYPE_CHECKING:
    from actors.control.http import HubAPI

log = logging.getLogger(__name__)

HEARTBEAT = b": heartbeat\n\n"


class ClientBacklog:
    """Owns one client's pending events: at most ``limit``, oldest dropped first, the number
    dropped since the last `take` counted; and the wake-up of the writer."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("backlog limit must be at least 1")
        self.limit = limit
        self._events: deque[dict[str, Any]] = deque()
        self._dropped = 0
        self._wake = asyncio.Event()
        self.closed = False

    def push(self, event: dict[str, Any]) -> None:
        if len(self._events) >= self.limit:
            self._events.popleft()
            self._dropped += 1
        self._events.append(event)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until events are pending or the backlog is closed; False on timeout."""
        if self._events or self.closed:
            return True
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), max(timeout, 0))
        except TimeoutError:
            return False
        return True

    def take(self) -> tuple[list[dict[str, Any]], int]:
        """All pending events and how many were dropped before them; resets both."""
        events, dropped = list(self._events), self._dropped
        self._events.clear()
        self._dropped = 0
        return events, dropped


def format_event(name: str, payload: Any) -> bytes:
    """One SSE message. The JSON is one line, so one ``data:`` line suffices."""
    clean = "".join(c for c in str(name) if c not in "\r\n") or "message"
    return b"event: " + clean.encode() + b"\ndata: " + orjson.dumps(payload, default=str) + b"\n\n"


class EventStreamer:
    """Owns the set of open SSE connections of one application, so shutdown can end them."""

    def __init__(self, hub: "HubAPI", heartbeat_s: float = 15.0, backlog: int = 1000) -> None:
        self.hub = hub
        self.heartbeat_s = heartbeat_s
        self.backlog = backlog
        self._open: set[ClientBacklog] = set()

    @property
    def clients(self) -> int:
        return len(self._open)

    async def close_all(self, _app: web.Application | None = None) -> None:
        """End every open stream (aiohttp on_shutdown hook)."""
        for backlog in list(self._open):
            backlog.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /api/stream."""
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        await response.prepare(request)
        backlog = ClientBacklog(self.backlog)
        queue = self.hub.subscribe()
        self._open.add(backlog)
        principal = principal_of(request)
        shown = None if principal.is_super else (
            lambda event: event_visible(principal, self.hub, event))
        pump = asyncio.create_task(self._pump(queue, backlog, shown), name="sse-pump")
        peer = request.remote
        log.info("stream opened peer=%s clients=%d", peer, len(self._open))
        try:
            await response.write(b"retry: 2000\n: connected\n\n")
            await self._relay(request, response, backlog)
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away mid-write
        finally:
            pump.cancel()
            self._open.discard(backlog)
            self.hub.unsubscribe(queue)
            log.info("stream closed peer=%s clients=%d", peer, len(self._open))
        return response

    @staticmethod
    async def _pump(queue: "asyncio.Queue[dict]", backlog: ClientBacklog,
                    shown: Callable[[dict], bool] | None) -> None:
        while True:
            event = await queue.get()
            if shown is None or shown(event):
                backlog.push(event)

    async def _relay(self, request: web.Request, response: web.StreamResponse,
                     backlog: ClientBacklog) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat_s
        while not backlog.closed:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            ready = await backlog.wait(next_beat - loop.time())
            if backlog.closed:
                return
            chunks: list[bytes] = []
            if ready:
                events, dropped = backlog.take()
                if dropped:
                    log.warning("stream overflow peer=%s dropped=%d", request.remote, dropped)
                    chunks.append(format_event("overflow", {
                        "event": "overflow", "ts": time.time(), "node": None, "serial": None,
                        "data": {"dropped": dropped}}))
                chunks.extend(format_event(e.get("event", "message"), e) for e in events)
            if loop.time() >= next_beat:
                chunks.append(HEARTBEAT)
                next_beat = loop.time() + self.heartbeat_s
            if chunks:
                await response.write(b"".join(chunks))
