"""The control endpoint: the operator's HTTP API over the hub, and the `farm` CLI client.

Modules: `app` (aiohttp application factory `make_app(hub, token)`), `http` (the `HubAPI`
the coordinator's hub implements, JSON answers; a leaf every route module imports), `schemas` (request/response types, validated with msgspec),
`stream` (the Server-Sent Events status stream), `openapi` (the OpenAPI 3.1 document),
`auth` (bearer-token middleware, `check_bind`), `cli/` (`farm`, a client over HTTP: one
module per command group).

Nothing is imported here, so the CLI starts without loading aiohttp.
"""
