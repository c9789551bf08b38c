"""A scripted OpenAI-compatible chat server for tests and benches (no network, no model).

Owns: an aiohttp server on 127.0.0.1 answering ``POST /v1/chat/completions`` and
``GET /v1/models`` the way OpenAI does, with replies decided by a script: either a callable
``(request_json) -> directive`` or a list of queued directives (the last one repeats). A
directive is a dict built by ``reply_tool`` / ``reply_text`` / ``reply_error`` /
``reply_malformed_tool``; the server turns it into a ``chat.completion`` body with
``tool_calls`` and ``usage``, an HTTP error, or a tool call whose arguments are not JSON.
Every request body received is kept in ``requests``, its Authorization header in
``authorizations``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any, Callable

from aiohttp import web

Directive = dict[str, Any]
Script = Callable[[dict], Directive] | list[Directive]


def reply_tool(name: str, **arguments: Any) -> Directive:
    """The model calls tool ``name`` with ``arguments``."""
    return {"kind": "tool", "name": name, "arguments": json.dumps(arguments)}


def reply_text(text: str) -> Directive:
    """The model answers plain text."""
    return {"kind": "text", "text": text}


def reply_error(status: int, message: str = "scripted failure") -> Directive:
    """The server fails the request with HTTP ``status``."""
    return {"kind": "error", "status": status, "message": message}


def reply_malformed_tool(name: str) -> Directive:
    """The model calls tool ``name`` with arguments that are not valid JSON."""
    return {"kind": "tool", "name": name, "arguments": '{"x": 12, "y": '}


class ScriptedModel:
    """An OpenAI-compatible server whose answers come from ``script``."""

    def __init__(self, script: Script | None = None, *, model: str = "scripted",
                 prompt_tokens: int = 100, completion_tokens: int = 20) -> None:
        self.script: Script = script if script is not None else [reply_text("ok")]
        self.model = model
        self.delay_s = 0.0  # each answer waits this long (to see how many overlap)
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.requests: list[dict] = []
        # The Authorization header of each request (which API key the client used).
        self.authorizations: list[str] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _next(self, body: dict) -> Directive:
        if callable(self.script):
            return self.script(body)
        if not self.script:
            return reply_text("ok")
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "phonefarm"}]})

    async def _completions(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        self.requests.append(body)
        self.authorizations.append(request.headers.get("Authorization", ""))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)  # a slow model: requests overlap
        finally:
            self.in_flight -= 1
        directive = self._next(body)
        if directive["kind"] == "error":
            return web.json_response({"error": {"message": directive["message"],
                                                "type": "server_error"}},
                                     status=directive["status"])
        n = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "stop"
        if directive["kind"] == "tool":
            message["tool_calls"] = [{"id": f"call_{n}", "type": "function",
                                      "function": {"name": directive["name"],
                                                   "arguments": directive["arguments"]}}]
            finish = "tool_calls"
        else:
            message["content"] = directive["text"]
        return web.json_response({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": self.prompt_tokens,
                      "completion_tokens": self.completion_tokens,
                      "total_tokens": self.prompt_tokens + self.completion_tokens},
        })
