"""One JSON request to a test client of the control endpoint: (status, decoded body), and
an app of some route modules whose every request comes from a given caller."""

from __future__ import annotations

from typing import Any, Iterable

from aiohttp import web
from aiohttp.test_utils import TestClient


async def call(client: TestClient, method: str, path: str, body=None) -> tuple[int, dict]:
    resp = await client.request(method, path, json=body)
    return resp.status, await resp.json()


def app_as(hub: Any, principal: Any, modules: Iterable[Any]) -> web.Application:
    """The routes of ``modules`` (each with ``add_routes``) on ``hub``, with ``principal`` as
    the caller of every request (what the auth middleware establishes from a token)."""
    from actors.control.app import json_errors
    from actors.control.auth import PRINCIPAL_KEY
    from actors.control.http import HUB

    @web.middleware
    async def caller(request: web.Request, handler):
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    app = web.Application(middlewares=[json_errors, caller])
    app[HUB] = hub
    for module in modules:
        module.add_routes(app)
    return app
