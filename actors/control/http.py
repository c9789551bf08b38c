"""What every control-endpoint route module shares: the app key of the hub, JSON answers and
errors (``{"error": ...}`` plus fields naming what was wrong), and the OpenAPI pieces for a
request body and a path parameter.

Route modules import this, not `actors.control.app`: `app` assembles the route modules, so
they could only reach it through imports inside functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from actors.control.app import HubAPI

HUB: "web.AppKey[HubAPI]" = web.AppKey("hub")


def hub_of(request: web.Request) -> "HubAPI":
    return request.app[HUB]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=str), status=status,
                        content_type="application/json", headers=headers)


def error_response(status: int, error: str, **extra: Any) -> web.Response:
    return json_response({"error": error, **extra}, status=status)


def openapi_body(schema: str, required: bool = True) -> dict[str, Any]:
    """An OpenAPI requestBody of the document's component ``schema``."""
    return {"required": required, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def openapi_path_param(name: str, description: str = "") -> dict[str, Any]:
    """A string path parameter (an integer one is `schemas.IntParam`, which also parses it)."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": description}
