"""A real webhook receiver for alert tests and bench/alerts.py: an aiohttp server on its own
loop in a thread (the callers are synchronous: they drive a coordinator process), keeping
every JSON body it was POSTed with the time it arrived; ``fail`` answers 503 that often."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from aiohttp import web


class HookServer:
    """Owns one receiving server on 127.0.0.1 (port 0: a free one) and what it received."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.received: list[tuple[float, str, dict]] = []  # (arrival, path, body)
        self.fail = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> "HookServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        at = time.time()
        with self._lock:
            if self.fail > 0:
                self.fail -= 1
                return web.Response(status=503, text="busy")
            self.received.append((at, request.path, body))
        return web.Response(text="ok")

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, match=lambda body: True) -> list[tuple[float, dict]]:
        with self._lock:
            return [(at, body) for at, _, body in self.received if match(body)]

    def wait_for(self, match, count: int = 1, timeout: float = 30.0) -> list[tuple[float, dict]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.bodies(match)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def stop(self) -> None:
        async def down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def matching(**fields: Any):
    """A body matcher: every given field equal (``title_has``: a word in the title)."""
    title_has = fields.pop("title_has", None)
    return lambda body: all(body.get(k) == v for k, v in fields.items()) and (
        title_has is None or title_has in body.get("title", ""))


def alerts_toml(hook_url: str) -> str:
    """An alerts config whose channel is the hook at ``hook_url``: a phone offline at once
    (no repeat) and every finished run (tests/e2e/test_alerts_farm.py, bench/alerts.py)."""
    return f"""
[[channel]]
name = "hook"
type = "webhook"
url = "{hook_url}"

[[rule]]
name = "unplugged"
kind = "phone_offline"
minutes = 0
repeat = "never"

[[rule]]
name = "runs-done"
kind = "run_finished"
"""
