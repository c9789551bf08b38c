"""The variable browser of the control endpoint (spec 5.1's text dialog, spec 15.1).

Owns ``GET /api/variables`` (what ``${...}`` can name for a phone, by category, with each
variable's text ready to insert), ``POST /api/variables/preview`` (a text resolved for one or
more phones without side effects: counters and media are not moved, AI variables are shown
as placeholders) and ``POST /api/variables/resolve`` (the same for text about to be typed:
counters and media move and ``${ai.*}`` asks the farm's model, as in a run). Resolution is
`sequences.variables.resolve` over the farm database's `FarmDB.variable_context`; a bad text
is a 400 with the offset. Passwords are write-only (issue 17.5): a preview shows them as
``SECRET_MASK``, and ``resolve`` (whose answer goes back to the caller, not to a phone) refuses
a text that uses one, before anything moves: only a run types them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from actors.control.http import error_response, hub_of, json_response
from actors.control.schemas import RequestError, decode_request
from actors.store.farm_db import SECRET_MASK
from protocol.errors import FarmError, ValidationError, VariableError
from protocol.names import whole
from sequences.variables import (ACCOUNT_FIELDS, CATEGORIES, CLIENT_FIELDS, PROFILE_FIELDS,
                                 MemoryCounters, resolve)

log = logging.getLogger(__name__)

MAX_SERIALS = 1000
CATEGORY_HELP = {
    "client": "the phone's client",
    "profile": "the profile of the phone's accounts",
    "account": "an account on the phone (or the current one: ${account.FIELD})",
    "content": "hashtag sets, caption templates, media files",
    "dynamic": "dates, times, random numbers and choices, counters",
    "custom": "custom variables (farm-wide or the client's)",
    "ai": "text written by the AI model when the text is used",
    "group": "groups of phones or accounts",
    "read": "a value a read_text/read_number step read earlier in the same run",
}


class VariableText(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/variables/preview and /resolve: a text resolved for each phone."""

    text: Annotated[str, Meta(min_length=1, max_length=10_000)]
    serials: Annotated[list[Annotated[str, Meta(min_length=1, max_length=128)]],
                       Meta(min_length=1, max_length=MAX_SERIALS)]
    account: Annotated[str, Meta(pattern=whole(r"[A-Za-z0-9_]+\.[A-Za-z0-9_]+"),
                                 description="PLATFORM.ACCOUNT_NUMBER")] | None = None
    seed: int | None = None


REQUEST_TYPES = [VariableText]


class _PreviewMedia:
    """Media for a preview: names the variable instead of taking (and using up) a file."""

    def next(self) -> str:
        return "[next media file]"

    def folder(self, path: str) -> str:
        return f"[next media file in {path}]"


class _PreviewAI:
    """AI variables in a preview: a placeholder, no model call (it costs money and time)."""

    def caption(self, prompt: str) -> str:
        return f"[AI caption: {prompt}]"

    def response(self, context: str) -> str:
        return f"[AI response: {context}]"

    def hashtags(self, topic: str, count: int) -> str:
        return f"[{count} AI hashtags: {topic}]"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/variables", get_variables)
    app.router.add_post("/api/variables/preview", post_preview)
    app.router.add_post("/api/variables/resolve", post_resolve)


def _db(request: web.Request) -> Any:
    return hub_of(request).farm_db()


def _handled(handler):
    async def wrapper(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except RequestError as exc:
            return json_response(exc.body, status=400)
        except VariableError as exc:
            return error_response(400, str(exc), field="$.text", offset=exc.offset,
                                  reason=exc.reason)
        except ValidationError as exc:
            return error_response(400, str(exc), field=exc.where)
        except FarmError as exc:
            return error_response(409, str(exc))
    wrapper.__name__ = handler.__name__
    return wrapper


def _fields(prefix: str, names: tuple[str, ...]) -> list[str]:
    return [f"${{{prefix}.{name}}}" for name in names]


@_handled
async def get_variables(request: web.Request) -> web.Response:
    """The categories and, for ``?serial=``, every variable that phone can name."""
    serial = request.query.get("serial")
    found: dict[str, list[str]] = {
        "client": _fields("client", tuple(f.replace("contact_", "contact.")
                                          for f in CLIENT_FIELDS)),
        "profile": _fields("profile", PROFILE_FIELDS),
        "account": _fields("account", ACCOUNT_FIELDS),
        "content": ["${content.media.next}", "${content.media.folder(path)}"],
        "dynamic": ["${dynamic.date}", "${dynamic.date.format(%d.%m.%Y)}", "${dynamic.time}",
                    "${dynamic.random.number(1-10)}", "${dynamic.random.choice(a,b,c)}",
                    "${dynamic.counter(name,1,1)}"],
        "custom": [],
        "ai": ["${ai.caption(prompt)}", "${ai.response(context)}",
               "${ai.hashtags(topic,5)}"],
        "group": ["${group.NAME.count}", "${group.NAME.random}", "${group.NAME.members}"],
        "read": ["${read.NAME}"],
    }
    if serial:
        ctx = await _db(request).variable_context(serial)
        found["account"] = [f"${{account.{a['platform']}.{a['account_number']}.{f}}}"
                            for a in ctx.accounts for f in ACCOUNT_FIELDS] or found["account"]
        found["content"] = ([f"${{content.hashtags.{n}}}" for n in sorted(ctx.hashtag_sets)]
                            + [f"${{content.caption.{n}}}" for n in sorted(ctx.caption_templates)]
                            + found["content"])
        found["custom"] = [f"${{custom.{n}}}" for n in sorted(ctx.custom)]
        if ctx.groups is not None:
            found["group"] = [f"${{group.{n}.{what}}}" for n in sorted(ctx.groups.groups)
                              for what in ("count", "random")]
    return json_response({"serial": serial, "categories": [
        {"name": name, "description": CATEGORY_HELP[name], "variables": found[name]}
        for name in CATEGORIES]})


async def _resolve_all(request: web.Request, dry_run: bool) -> dict[str, Any]:
    body = decode_request(await request.read(), VariableText,
                          "a JSON object with text and serials")
    db = _db(request)
    # One seed for the password check and the resolution: both make the same choices.
    seed = body.seed if body.seed is not None else random.getrandbits(64)
    rng = random.Random(seed)
    # Text about to be typed asks the farm's AI model for ${ai.*} (one cache for all the
    # phones of this request, as a run does); a preview never calls it.
    hub = hub_of(request)
    providers: dict[int, Any] = {}  # one cache per AI client (a phone's client's key)
    texts: dict[str, str] = {}
    if not dry_run:
        await _refuse_passwords(db, body, random.Random(seed))
    for serial in body.serials:
        ai = None
        if not dry_run:
            ai_for = getattr(hub, "ai_for", None)
            client = await ai_for(serial) if ai_for is not None else getattr(hub, "ai", None)
            if client is not None and id(client) not in providers:
                from actors.coordinator.ai.variables import AIVariables

                providers[id(client)] = AIVariables(client, asyncio.get_running_loop())
            ai = providers.get(id(client)) if client is not None else None
        ctx = await db.variable_context(serial, body.account, ai=ai)
        if dry_run:
            # A preview must not use anything up (and shows passwords masked).
            texts[serial] = resolve(body.text, _preview_context(ctx), rng)
        else:
            # Counters and media touch the database from the worker thread (FarmDB._threaded).
            texts[serial] = await asyncio.to_thread(resolve, body.text, ctx, rng)
    return {"text": body.text, "texts": texts, "dry_run": dry_run}


def _preview_context(ctx: Any) -> Any:
    """``ctx`` for a preview: counters start afresh, no media file or AI model is used."""
    return dataclasses.replace(ctx, counters=MemoryCounters(), media=_PreviewMedia(),
                               ai=_PreviewAI())


async def _refuse_passwords(db: Any, body: VariableText, rng: random.Random) -> None:
    """400 (nothing used up) when ``body.text`` resolves to a password on some phone: the
    answer of /resolve goes to the caller, and passwords leave the coordinator only for a
    node to type them in a run."""
    for serial in body.serials:
        ctx = await db.variable_context(serial, body.account)
        if SECRET_MASK in resolve(body.text, _preview_context(ctx), rng) \
                and SECRET_MASK not in body.text:
            raise RequestError("$.text", "uses a password (${account.password} or "
                               "${profile.profile_password}): passwords are write-only and "
                               "only a run types them (a sequence's type step)",
                               field="$.text")


@_handled
async def post_preview(request: web.Request) -> web.Response:
    return json_response(await _resolve_all(request, dry_run=True))


@_handled
async def post_resolve(request: web.Request) -> web.Response:
    out = await _resolve_all(request, dry_run=False)
    log.info("variables resolved for %d phone(s)", len(out["texts"]))
    return json_response(out)


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    body = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/VariableText"},
        "example": {"text": "{Hi|Hello} ${profile.first_name}", "serials": ["R58M123ABC"]}}}}
    common = {"400": error("bad body (`field`), or a text that does not resolve (`offset`, "
                           "`reason`)"),
              "401": error("missing or wrong bearer token (only when a token is configured)"),
              "409": error("the coordinator has no farm database")}
    return {
        "/api/variables": {"get": {
            "operationId": "listVariables",
            "summary": "Variable categories and, with ?serial=, every variable of that phone",
            "parameters": [{"name": "serial", "in": "query", "required": False,
                            "schema": {"type": "string"}}],
            "responses": {"200": obj, **common}}},
        "/api/variables/preview": {"post": {
            "operationId": "previewVariables",
            "summary": "A text resolved for each phone, without side effects (counters and "
                       "media not moved, AI variables as placeholders, passwords masked)",
            "requestBody": body, "responses": {"200": obj, **common}}},
        "/api/variables/resolve": {"post": {
            "operationId": "resolveVariables",
            "summary": "A text resolved for each phone for use (counters and media move); "
                       "a text using a password is refused (400 `$.text`): only runs type "
                       "passwords",
            "requestBody": body, "responses": {"200": obj, **common}}},
    }
