"""Posts and their performance over the control endpoint (issue 21.2).

Owns ``GET /api/posts`` (``?account=platform.number&since=&limit=``: the posts the phones
recorded, newest first, each with its latest metrics) and ``GET /api/posts/{post_id}/metrics``
(the post, every metric sample, and its daily rows). Scoped: a caller other than a super user
sees the posts of the accounts the scoped account list shows it (its clients' phones); another
client's post answers like a missing one. The rows come from `ContentDataService`
(actors.coordinator.content_data), put in the app under `CONTENT`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from actors.control.accounts import CONTENT
from actors.control.auth import caller_clients, principal_of
from actors.control.audit import parse_since
from actors.control.http import hub_of, json_response
from actors.control.registry import _handled
from actors.control.schemas import IntParam, RequestError
from actors.coordinator.content_data.service import ContentDataService
from actors.store.farm_db import account_ref
from protocol.errors import FarmError, ValidationError

POST_ID = IntParam("post_id", description="the post's id (content_posts)")
POSTS_LIMIT = IntParam("limit", "query", 1, 1000, default=100,
                       description="posts listed, newest first (default 100)")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/posts", get_posts)
    app.router.add_get("/api/posts/{post_id}/metrics", get_post_metrics)


def content_service(request: web.Request) -> ContentDataService:
    service = request.app.get(CONTENT)
    if service is None:
        raise FarmError("this endpoint keeps no content data (no coordinator farm database)")
    return service


async def account_list(request: web.Request) -> list[dict[str, Any]]:
    """The accounts the caller sees (retired ones too: their posts are history), through
    the scoped account list every account read uses."""
    db = hub_of(request).farm_db()
    if db is None:
        raise FarmError("this endpoint has no farm database")
    return await db.account_rows(include_retired=True)


async def visible_accounts(request: web.Request, ref: str | None = None,
                           field: str = "account") -> set[int] | None:
    """The account ids the caller may read (None: every account, a super user's), narrowed
    to the accounts named ``ref`` (``platform.number``; on several phones: each of them);
    a ref the caller does not see is a 400 naming ``field``, like one that does not exist."""
    if ref is None and principal_of(request).is_super:
        return None
    rows = await account_list(request)
    if ref is None:
        return {r["account_id"] for r in rows}
    found = {r["account_id"] for r in rows if account_ref(r) == ref}
    if not found:
        raise RequestError(f"query parameter {field}",
                           f"no such account: {ref[:128]!r} (expected platform.number, "
                           "as GET /api/accounts names it)", field=field)
    return found


def since_param(request: web.Request) -> str | None:
    text = request.query.get("since")
    if text is None:
        return None
    try:
        return parse_since(text)
    except ValidationError as exc:
        raise RequestError("query parameter since", exc.reason,
                           field="since") from None


@_handled
async def get_posts(request: web.Request) -> web.Response:
    service = content_service(request)
    limit = POSTS_LIMIT.parse(request)
    since = since_param(request)
    accounts = await visible_accounts(request, request.query.get("account"))
    posts = await service.store.posts(accounts=accounts, since=since, limit=limit,
                                      clients=caller_clients(request))
    return json_response({"posts": posts})


@_handled
async def get_post_metrics(request: web.Request) -> web.Response:
    post_id = POST_ID.parse(request)
    service = content_service(request)
    clients = caller_clients(request)
    accounts = await visible_accounts(request)
    found = await service.store.posts(accounts=accounts, post_id=post_id, limit=1,
                                      clients=clients)
    if not found:
        raise LookupError(f"no such post: {post_id}")
    samples, daily = await service.store.post_samples(post_id, clients)
    return json_response({"post": found[0], "samples": samples, "daily": daily})


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    unauthorized = error("missing or wrong bearer token")

    def query(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False,
                "schema": {"type": "string"}, "description": description}

    return {
        "/api/posts": {"get": {
            "operationId": "listPosts", "summary":
            "The posts the phones recorded (post_recorded: posted or failed), newest first, "
            "of the caller's accounts: account, time, caption, hashtags, media, status, the "
            "execution, and each metric's latest value",
            "parameters": [query("account", "only this account (platform.number)"),
                           query("since", "posted at or after: a duration back from now "
                                          "(7d) or an ISO time"),
                           POSTS_LIMIT.openapi()],
            "responses": {"200": obj, "400": error("bad account, since or limit (`field`)"),
                          "401": unauthorized,
                          "409": error("no content data (no farm database)")}}},
        "/api/posts/{post_id}/metrics": {"get": {
            "operationId": "getPostMetrics", "summary":
            "One post, every metric reading (at, metric, value) and its daily rows (each "
            "day's latest views, likes, comments, shares, saves)",
            "parameters": [POST_ID.openapi()],
            "responses": {"200": obj, "400": error("bad post_id"), "401": unauthorized,
                          "404": error("no such post (or not the caller's)")}}},
    }
