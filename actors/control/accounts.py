"""Account health on ``GET /api/accounts`` (issue 21.3).

The route is the registry's (actors.control.registry: every account the caller sees, with
its profile); this module adds to each row what the content data knows: ``account`` (its
``platform.number``), ``client_id``, ``phone`` (serial), ``health`` (state ok / watch /
at_risk, the reasons, the last seven days' re-logins, challenges and failed posts, the
followers now and their change over the week), ``followers_series`` (``[[epoch, value],
...]``, 30 days) and ``last_posts`` (up to three, as ``GET /api/posts`` gives them).
``?health=at_risk`` (or ``watch``, ``ok``; several comma-separated) keeps those states only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from actors.control.auth import caller_clients
from actors.control.schemas import RequestError
from actors.coordinator.content_data.health import AT_RISK, OK, WATCH
from actors.coordinator.content_data.service import ContentDataService
from actors.store.farm_db import account_ref

STATES = (OK, WATCH, AT_RISK)
# The coordinator's content data service (posts, metrics, health, rollups), set by main.
CONTENT = web.AppKey("content_data", ContentDataService)


def health_filter(request: web.Request) -> set[str] | None:
    text = request.query.get("health")
    if text is None:
        return None
    states = {s.strip() for s in text.split(",") if s.strip()}
    if not states or states - set(STATES):
        raise RequestError("query parameter health", f"expected one or more of "
                           f"{', '.join(STATES)} (comma-separated), got {text[:64]!r}",
                           field="health")
    return states


async def with_health(request: web.Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (the registry's account rows the caller sees) with the content data's fields;
    filtered by ``?health=`` when given."""
    wanted = health_filter(request)
    service = request.app.get(CONTENT)
    for row in rows:
        row.setdefault("account", account_ref(row))
        row.setdefault("phone", row.get("serial"))
    if service is None or not rows:
        return rows if wanted is None else []
    clients = caller_clients(request)
    ids = [r["account_id"] for r in rows]
    owners = {a["account_id"]: a["client_id"]
              for a in await service.store.accounts(ids, clients)}
    health, series = await service.health(ids, clients)
    posts = await service.store.last_posts(ids, 3, clients)
    out = []
    for row in rows:
        h = health[row["account_id"]]
        if wanted is not None and h.state not in wanted:
            continue
        row.update({"client_id": owners.get(row["account_id"]), "health": h.view(),
                    "followers_series": series.get(row["account_id"], []),
                    "last_posts": posts.get(row["account_id"], [])})
        out.append(row)
    return out
