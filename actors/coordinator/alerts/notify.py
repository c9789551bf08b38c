"""Notices and their delivery: `Notice`, `Notifier.send` (what any part of the coordinator
calls to tell people something: alerts, reports) and the outbox's delivery loop.

`Notifier` owns getting a notice to people: the console's own list always gets it
(notifications table); every channel that takes it gets one outbox row (table
alert_outbox), delivered by `Notifier.run` with retry and back-off (5 s doubling to 10 min
by default) until delivered or expired (24 h by default). The rows are in the farm
database, so a channel that is down loses nothing and a coordinator restart delivers what
is left. A failed attempt is on the status stream (``alert_channel_failed``) and in
``GET /api/alerts/channels`` (last error, pending count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from actors.coordinator.alerts.channels import DeliveryFailed, deliver
from actors.coordinator.alerts.rules import AlertsConfig, Channel
from actors.coordinator.alerts.store import AlertStore, iso

log = logging.getLogger(__name__)

RETRY_BASE_S = 5.0
RETRY_MAX_S = 600.0
EXPIRE_S = 24 * 3600.0
CONSOLE = "console"  # the console's own list: always sent, never an outbox row
IDLE_WAKE_S = 30.0  # the loop looks at the outbox at least this often
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Notice:
    """One thing to tell people (an alert, its resolution, a report, a finished run)."""

    kind: str                 # "alert", "resolved", "report", "run_finished", ...
    client_id: int | None     # None: farm-wide (only super users see it)
    title: str
    text: str                 # plain text body
    html: str | None = None
    links: dict[str, str] = field(default_factory=dict)   # label -> absolute URL
    key: str = ""             # dedupe key (same key + kind within the outbox = one notice)


class Notifier:
    """Owns the outbox and the console list: `send` stores a notice, `run` (a task of the
    coordinator) delivers it to the configured channels."""

    def __init__(self, store: AlertStore, config: AlertsConfig, *,
                 emit: Callable[[str, str | None, str | None, dict], None] | None = None,
                 public_url: str = "", retry_base_s: float = RETRY_BASE_S,
                 retry_max_s: float = RETRY_MAX_S, expire_s: float = EXPIRE_S) -> None:
        self.store = store
        self.config = config
        self.emit = emit
        self.public_url = public_url.rstrip("/")
        self.retry_base_s, self.retry_max_s, self.expire_s = retry_base_s, retry_max_s, expire_s
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._failing: set[str] = set()  # channels whose last attempt failed

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self.config.channels

    async def _client_name(self, client_id: int | None) -> str | None:
        if client_id is None:
            return None
        row = await self.store.db._one("SELECT name FROM clients WHERE client_id = ?",
                                       (client_id,))
        return row[0] if row is not None else None

    async def send(self, notice: Notice, channels: list[str] | None = None) -> list[int]:
        """Store ``notice`` for the console and one outbox row per channel that takes it
        (its kinds and clients): ``None``, every configured one; else those named (names of
        channels not configured are skipped with a warning). A named channel is filtered
        too, so a rule cannot send one client's notice to a channel of another client.
        The outbox rows' ids."""
        client = await self._client_name(notice.client_id)
        body = {"kind": notice.kind, "client": client, "client_id": notice.client_id,
                "title": notice.title, "text": notice.text, "html": notice.html,
                "links": dict(notice.links), "key": notice.key, "created_at": iso(time.time())}
        key = notice.key or None
        notification = await self.store.add_notification(body, notice.kind, key,
                                                         notice.client_id)
        if channels is None:
            names = [c.name for c in self.channels if c.takes(notice.kind, client)]
        else:
            names = []
            for name in channels:
                if name == CONSOLE:
                    continue
                channel = self.config.channel(name)
                if channel is None:
                    log.warning("notice %r: no channel named %r (skipped)", notice.title, name)
                elif not channel.takes(notice.kind, client):
                    log.warning("notice %r: channel %r does not take %s notices of client %s"
                                " (skipped)", notice.title, name, notice.kind, client)
                elif name not in names:
                    names.append(name)
        body["id"] = notification
        ids = await self.store.enqueue(body, notice.kind, key, notice.client_id, names,
                                       time.time() + self.expire_s) if names else []
        if self.emit is not None:
            # With client_id: that client's users hear it too (actors.access.scope).
            self.emit("notification", None, None, {"id": notification, "kind": notice.kind,
                                                   "client": client,
                                                   "client_id": notice.client_id,
                                                   "title": notice.title, "channels": names})
        self._wake.set()
        return ids

    # --- delivery -----------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver due outbox rows until cancelled (rows left by a previous run too)."""
        self._session = aiohttp.ClientSession()
        last_prune = 0.0
        try:
            while True:
                self._wake.clear()
                try:
                    await self.deliver_due()
                    now = time.time()
                    if now - last_prune > PRUNE_EVERY_S:
                        await self.store.prune(now)
                        last_prune = now
                    following = await self.store.next_due()
                except Exception:  # a database hiccup must not end delivery for good
                    log.exception("alert outbox: delivery round failed")
                    following = None
                wait = IDLE_WAKE_S if following is None else min(
                    IDLE_WAKE_S, max(0.0, following - time.time()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
        finally:
            await self._session.close()
            self._session = None

    async def deliver_due(self) -> int:
        """One round: every due row, channels in parallel, each channel's rows in order;
        after a channel's first failure its other rows wait for the same retry time."""
        due = await self.store.due(time.time(), limit=500)
        by_channel: dict[str, list[dict]] = {}
        for row in due:
            by_channel.setdefault(row["channel"], []).append(row)
        done = await asyncio.gather(*(self._deliver_channel(name, rows)
                                      for name, rows in by_channel.items()))
        return sum(done)

    async def _deliver_channel(self, name: str, rows: list[dict]) -> int:
        channel = self.config.channel(name)
        delivered = 0
        failure: tuple[str, float] | None = None
        for row in rows:
            now = time.time()
            if channel is None:  # removed from the config: kept until it expires
                await self.store.failed(row["outbox_id"], now, f"no channel named {name!r} "
                                        "in the alerts config", now + self.retry_max_s)
                continue
            if failure is not None:
                await self.store.failed(row["outbox_id"], now, failure[0], failure[1])
                continue
            try:
                await deliver(channel, row["notice"], self._http())
            except DeliveryFailed as exc:
                backoff = min(self.retry_max_s, self.retry_base_s * 2 ** row["attempts"])
                failure = (str(exc), now + backoff)
                await self.store.failed(row["outbox_id"], now, str(exc), now + backoff)
                log.warning("alert channel %s: notice %d not delivered (attempt %d): %s; "
                            "next try in %.0f s", name, row["outbox_id"], row["attempts"] + 1,
                            exc, backoff)
                self._failing.add(name)
                if self.emit is not None:
                    self.emit("alert_channel_failed", None, None, {
                        "channel": name, "error": str(exc), "attempts": row["attempts"] + 1,
                        "next_attempt_at": iso(now + backoff)})
                continue
            await self.store.delivered(row["outbox_id"], time.time())
            delivered += 1
            if name in self._failing:
                self._failing.discard(name)
                log.info("alert channel %s delivers again", name)
                if self.emit is not None:
                    self.emit("alert_channel_ok", None, None, {"channel": name})
        return delivered

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def channel_views(self) -> list[dict]:
        """Every configured channel with its outbox figures (GET /api/alerts/channels)."""
        stats = await self.store.channel_stats(time.time())
        empty = {"pending": 0, "delivered": 0, "expired": 0, "last_delivered_at": None,
                 "last_attempt_at": None, "last_error": None}
        out = []
        for channel in self.channels:
            s = {**empty, **stats.get(channel.name, {})}
            out.append({**channel.view(), **s,
                        "last_delivered_at": iso(s["last_delivered_at"]),
                        "last_attempt_at": iso(s["last_attempt_at"]),
                        "failing": s["pending"] > 0 and s["last_error"] is not None})
        return out
