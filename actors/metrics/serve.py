"""The text endpoint: rendering a registry, and a small HTTP server of ``/metrics`` alone.

A small aiohttp server on the process's own event loop rather than prometheus-client's
``start_http_server``: that one serves from its own thread, while our collectors read
state the loop owns (the hub's phone rows, the scheduler's jobs, the rack's directory)
and must not see it half-changed; on the loop a scrape is just another callback.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from protocol.addresses import is_loopback

if TYPE_CHECKING:  # loaded where a server starts: a node without --metrics never needs it
    from aiohttp import web

METRICS_PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (collectors run now, on this thread)."""
    return generate_latest(registry)


def metrics_response(registry: CollectorRegistry) -> web.Response:
    from aiohttp import web

    response = web.Response(body=render(registry))
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def parse_listen(text: str, flag: str, *, loopback_only: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError naming ``flag``.
    ``loopback_only``: a host other than loopback is refused (an endpoint without a token
    must not be reachable from another machine)."""
    host, sep, port_text = (text or "").strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{flag} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9470")
    if loopback_only and not is_loopback(host):
        raise ValueError(f"{flag} {text!r}: this endpoint has no authentication, so it "
                         f"listens on a loopback address only (127.0.0.1, ::1 or localhost); "
                         f"elsewhere scrape the control endpoint's /metrics with a metrics "
                         f"token")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not loopback_only and host.replace("-", "").replace(".", "").isalnum():
                return host, int(port_text)  # a host name (a node's --metrics)
            raise ValueError(f"{flag} {text!r}: {host!r} is not an IP address") from None
    return host, int(port_text)


class MetricsServer:
    """Owns one listening HTTP server answering ``GET /metrics`` from ``registry`` (no
    authentication: a node's ``--metrics``, the coordinator's ``--metrics-listen``)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> "MetricsServer":
        from aiohttp import web

        app = web.Application()
        app.router.add_get(METRICS_PATH, self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the port when 0 was asked
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self

    async def _get(self, request: web.Request) -> web.Response:
        return metrics_response(self.registry)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METRICS_PATH}"

