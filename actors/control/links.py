"""Links in bio over the control endpoint (issue 21.6, spec 7.5.7).

Owns ``GET /api/links`` (``?account=``, ``?removed=1``: the caller's accounts' links with
their click totals), ``POST /api/links`` (``{"account", "url", "title"}``: a new link with
its code), ``DELETE /api/links/{id}`` (ends it: its code leads nowhere, its clicks stay),
``POST /api/link-clicks`` (``{"code", "date", "count", "source"}``: clicks counted
elsewhere, added to that day and source) and the public ``GET /l/{code}`` (outside /api,
so no token: what a bio links to), which redirects to the link's URL at once and, for a
GET (never a HEAD), counts one click (source ``?src=``, else the Referer's host, else
``direct``) in the app's `ClickCounter` (actors.coordinator.engagement.clicks: per-address
and per-source limits, written in batches). A caller other than a
super user sees and changes its own clients' accounts' links only; another client's link
answers like a missing one. The rows are `LinkStore`'s (actors.coordinator.engagement.links).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta

from actors.control.auth import caller_clients, principal_of
from actors.control.http import HUB, error_response, json_response, openapi_body
from actors.control.registry import _Body, _handled
from actors.control.schemas import IntParam, RequestError, decode_request
from actors.coordinator.engagement.accounts import find_accounts
from actors.coordinator.engagement.clicks import (FLUSH_S, MAX_SOURCES, OTHER, PER_ADDRESS,
                                                  WINDOW_S, ClickCounter, click_address)
from actors.coordinator.engagement.links import (MAX_IMPORT, MAX_TITLE, MAX_URL, LinkStore,
                                                 check_day, check_source, check_url,
                                                 click_source)
from protocol.errors import FarmError

LINK_ID = IntParam("id", description="the link's id")
PUBLIC_PATH = "/l/{code}"
CLICKS = web.AppKey("link_clicks", ClickCounter)


class LinkRequest(_Body):
    account: Annotated[int | str, Meta(description=(
        "the account: its id, or platform.number when one account of the caller's has it"))]
    url: Annotated[str, Meta(min_length=1, max_length=MAX_URL, description=(
        "where the link leads: an http:// or https:// URL with a host"))]
    title: Annotated[str, Meta(max_length=MAX_TITLE, description="shown in lists")] | None = None


class ClickImport(_Body):
    code: Annotated[str, Meta(min_length=1, max_length=64, description="the link's code")]
    date: Annotated[str, Meta(min_length=1, max_length=32, description=(
        "the UTC day the clicks were made, YYYY-MM-DD (not after today)"))]
    count: Annotated[int, Meta(ge=1, le=MAX_IMPORT, description="clicks to add")]
    source: Annotated[str, Meta(min_length=1, max_length=64, description=(
        "where they came from: lowercase letters, digits, '.', '_', '-'"))] = "import"


REQUEST_TYPES = [LinkRequest, ClickImport]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/links", get_links)
    app.router.add_post("/api/links", post_link)
    app.router.add_delete("/api/links/{id}", delete_link)
    app.router.add_post("/api/link-clicks", post_link_clicks)
    app.router.add_get(PUBLIC_PATH, follow_link)  # HEAD too (aiohttp): redirects, counts not
    app[CLICKS] = ClickCounter(lambda: LinkStore(app[HUB].farm_db()))
    app.on_startup.append(_start_clicks)
    app.on_cleanup.append(_close_clicks)  # before the coordinator closes the database


async def _start_clicks(app: web.Application) -> None:
    app[CLICKS].start()


async def _close_clicks(app: web.Application) -> None:
    await app[CLICKS].close()


def _db(request: web.Request) -> Any:
    return request.app[HUB].farm_db()  # FarmError (409) without a farm database


async def query_accounts(request: web.Request) -> list[int] | None:
    """The account ids ``?account=`` names among the caller's (None: no such filter); an
    account the caller does not see is the same 400 as one that does not exist."""
    ref = request.query.get("account")
    if ref is None:
        return None
    found = await find_accounts(_db(request), ref, caller_clients(request))
    if not found:
        raise RequestError("query parameter account", "no such account (an account id, "
                           "or platform.number)", field="account")
    return [a["account_id"] for a in found]


@_handled
async def get_links(request: web.Request) -> web.Response:
    accounts = await query_accounts(request)
    removed = request.query.get("removed", "0")
    if removed not in ("0", "1"):
        raise RequestError("query parameter removed", "expected 0 or 1", field="removed")
    rows = await LinkStore(_db(request)).list(caller_clients(request), account_ids=accounts,
                                              removed=removed == "1")
    return json_response({"links": rows})


@_handled
async def post_link(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), LinkRequest,
                          "a JSON object with account, url and an optional title")
    url = check_url(body.url)
    db = _db(request)
    ref = str(body.account)
    found = await find_accounts(db, ref, caller_clients(request), include_retired=False)
    if not found:
        raise RequestError("$.account", "no such account (an account id, or "
                           "platform.number)", field="$.account")
    if len(found) > 1:
        raise RequestError("$.account", f"{ref!r} names {len(found)} accounts (one per "
                           "phone): give the account id, one of "
                           f"{[a['account_id'] for a in found]}", field="$.account")
    account = found[0]
    store = LinkStore(db)
    link_id = await store.add(account["account_id"], url, body.title)
    view = await store.get(link_id)
    await db.audit("link", link_id, "create", None,
                   {"account_id": account["account_id"], "url": url, "title": body.title,
                    "code": view["code"]}, actor=principal_of(request).actor)
    return json_response(view, 201)


@_handled
async def delete_link(request: web.Request) -> web.Response:
    link_id = LINK_ID.parse(request)
    db = _db(request)
    store = LinkStore(db)
    view = await store.get(link_id, caller_clients(request))
    if view is None or not await store.remove(link_id):
        raise LookupError(f"no such link: {link_id}")
    await db.audit("link", link_id, "delete", {"url": view["url"], "code": view["code"]}, None,
                   actor=principal_of(request).actor)
    return json_response({"removed": (await store.get(link_id, removed=True))})


@_handled
async def post_link_clicks(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), ClickImport,
                          "a JSON object with code, date, count and source")
    day = check_day(body.date)
    source = check_source(body.source)
    db = _db(request)
    store = LinkStore(db)
    link = await store.by_code(body.code, caller_clients(request))
    if link is None:
        raise RequestError("$.code", "no such link", field="$.code")
    await store.count(link["link_id"], day, source, body.count)
    await db.audit("link_clicks", link["link_id"], "update", None,
                   {"date": day, "source": source, "count": body.count},
                   actor=principal_of(request).actor)
    return json_response(await store.get(link["link_id"]))


async def follow_link(request: web.Request) -> web.Response:
    """The public redirect: no token (it is outside /api). A GET's click is handed to the
    counter (which may not count it, see its limits); the 302 never waits for a write."""
    try:
        store = LinkStore(_db(request))
    except FarmError:  # an endpoint without a farm database has no links
        return error_response(404, "no such link")
    link = await store.by_code(request.match_info["code"])
    if link is None:
        return error_response(404, "no such link")
    if request.method == "GET":  # a HEAD (link previews, checkers) is not a click
        source = click_source(request.query.get("src"), request.headers.get("Referer"))
        day = datetime.now(timezone.utc).date().isoformat()
        request.app[CLICKS].click(link["link_id"], day, source, click_address(
            request.remote, request.headers.get("X-Forwarded-For")))
    return web.Response(status=302, headers={"Location": link["url"],
                                             "Cache-Control": "no-store",
                                             "Referrer-Policy": "no-referrer"})


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    unauthorized = error("missing or wrong bearer token")
    no_db = error("this endpoint has no farm database")
    account = {"name": "account", "in": "query", "required": False,
               "schema": {"type": "string"},
               "description": "one account's: its id, or platform.number (on several "
                              "phones: each of them)"}
    return {
        "/api/links": {
            "get": {"operationId": "listLinks", "summary":
                    "Links in bio of the caller's accounts, newest first: link_id, account_id, "
                    "account, serial, url, title, code, path (/l/{code}), created_at, "
                    "removed_at, clicks (total) and clicks_by_source",
                    "parameters": [account, {
                        "name": "removed", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": ["0", "1"]},
                        "description": "1: removed links too"}],
                    "responses": {"200": obj, "400": error("bad parameter (`field` names it)"),
                                  "401": unauthorized, "409": no_db}},
            "post": {"operationId": "addLink", "summary":
                     "A new link in bio of an account; answered with its code, whose public "
                     "address /l/{code} counts clicks and redirects to url",
                     "requestBody": openapi_body("LinkRequest"),
                     "responses": {"201": obj, "400": error(
                         "bad body (`field` names it): no such account, several accounts "
                         "of that name, not an http(s) URL"), "401": unauthorized,
                         "403": error("a viewer may not change anything"), "409": no_db}}},
        "/api/links/{id}": {"delete": {
            "operationId": "removeLink", "summary":
            "End a link: its code leads nowhere any more; its clicks are kept",
            "parameters": [LINK_ID.openapi()],
            "responses": {"200": obj, "400": error("bad id (`field` names it)"),
                          "401": unauthorized, "403": error("a viewer may not change anything"),
                          "404": error("no such link (or another client's, or removed)"),
                          "409": no_db}}},
        "/api/link-clicks": {"post": {
            "operationId": "importLinkClicks", "summary":
            "Add clicks counted elsewhere to a link's day and source; answered with the link",
            "requestBody": openapi_body("ClickImport"),
            "responses": {"200": obj, "400": error(
                "bad body (`field` names it): no such link, a day not as YYYY-MM-DD or not "
                "begun yet, a bad source or count"), "401": unauthorized,
                "403": error("a viewer may not change anything"), "409": no_db}}},
        PUBLIC_PATH: {"get": {
            "operationId": "followLink", "security": [], "summary":
            "Public (no token): a link in bio's address. Redirects to the link's URL and "
            "counts one click (source: ?src=, else the Referer's host, else direct; at "
            f"most {MAX_SOURCES} sources a link a UTC day, then '{OTHER}'; at most "
            f"{PER_ADDRESS} clicks counted per address and link in {WINDOW_S:.0f} s; "
            f"written every {FLUSH_S:g} s). A HEAD redirects and counts nothing",
            "parameters": [{"name": "code", "in": "path", "required": True,
                            "schema": {"type": "string"}, "description": "the link's code"},
                           {"name": "src", "in": "query", "required": False,
                            "schema": {"type": "string"},
                            "description": "where the click came from"}],
            "responses": {"302": {"description": "to the link's URL (Location)"},
                          "404": error("no such link (or removed)")}}},
    }
