"""The web console's files (issue 7): ``/`` is the console page, ``/static/...`` its modules.

Owns only the serving of `actors/control/static` (plain HTML, CSS and ES modules, no build
step). The console talks to the public REST API and the status stream like any client; these
routes sit outside ``/api``, so the page loads without a token and asks for one when the API
answers 401.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
# Modules change with the code: the browser must revalidate, never run a stale copy.
NO_CACHE = {"Cache-Control": "no-cache"}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", get_console)
    app.router.add_static("/static", STATIC, append_version=False)
    app.on_response_prepare.append(_no_cache_static)


async def get_console(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=NO_CACHE)


async def _no_cache_static(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/static/"):
        response.headers.update(NO_CACHE)
