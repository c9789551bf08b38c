"""The coordinator's Prometheus metrics over the control endpoint (issue 19).

Owns ``GET /metrics`` (the text format, outside /api where Prometheus looks) and its
OpenAPI path. Who may call it is the route policy's (actors.access.policy: a token with the
``metrics`` scope, or a super user; a metrics token may call nothing else). The registry is
the coordinator's `CoordinatorMetrics` (actors.metrics.coordinator), put in the app under
`METRICS` by ``start``; ``--metrics-listen`` serves the same registry on a loopback port
without a token (actors.metrics.serve).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from actors.control.http import error_response
from actors.metrics.serve import METRICS_PATH, metrics_response

METRICS = web.AppKey("metrics", CollectorRegistry)


def add_routes(app: web.Application) -> None:
    app.router.add_get(METRICS_PATH, get_metrics)


async def get_metrics(request: web.Request) -> web.Response:
    registry = request.app.get(METRICS)
    if registry is None:
        return error_response(404, "this endpoint has no metrics")
    return metrics_response(registry)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    text = {"description": "the metrics in the Prometheus text format (version 0.0.4)",
            "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {METRICS_PATH: {"get": {
        "operationId": "metrics", "summary":
            "Prometheus metrics of the farm: phones by state per node and client, actions "
            "and their latency by type, executions by sequence, step failures by reason, "
            "recovery, scheduler queue and dispatch delay, event-link lag and re-sends, "
            "database write latency, node CPU/memory/disk and adb health. Needs a token "
            "with the metrics scope (farm tokens add --scope metrics) or a super user's",
        "responses": {"200": text, "401": error("missing or wrong bearer token"),
                      "403": error("a token without the metrics scope (not a super user)"),
                      "404": error("this endpoint has no metrics")}}}}
