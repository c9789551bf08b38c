"""The coordinator's alerting, put together: config, store, notifier, engine, their tasks,
and the operations the API and `farm alerts` call (scoped to the caller's clients).

`AlertService` owns starting and stopping the engine and the outbox's delivery, and the
rules of who may do what: a caller other than a super user sees and changes only its
clients' rules and alerts; farm-wide kinds (node down, disk, scheduler delay) and rules
without a client are super users' only."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from actors.access.principal import Principal
from actors.access.users import AccessDenied
from actors.coordinator.alerts.engine import AlertEngine
from actors.coordinator.alerts.notify import Notifier
from actors.coordinator.alerts.rules import KINDS, AlertsConfig, Rule, parse_rule
from actors.coordinator.alerts.store import AlertStore, iso
from actors.store.retention import parse_duration
from protocol.errors import FarmError, ValidationError

log = logging.getLogger(__name__)
MAX_SILENCE_S = 30 * 86400.0


class RuleConflict(FarmError):
    """A rule of that name exists, or a file rule is changed over the API."""


class AlertService:
    """Owns the alert engine, the notifier and their background tasks for one hub."""

    def __init__(self, hub: Any, db: Any, config: AlertsConfig, *, public_url: str,
                 data_dir: str | Path = ".", tick_s: float | None = None,
                 retry_base_s: float | None = None) -> None:
        self.hub = hub
        self.config = config
        self.store = AlertStore(db)
        extra = {} if retry_base_s is None else {"retry_base_s": retry_base_s}
        self.notifier = Notifier(self.store, config, emit=hub.emit, public_url=public_url,
                                 **extra)
        self.engine = AlertEngine(hub, self.store, self.notifier, data_dir=data_dir,
                                  **({} if tick_s is None else {"tick_s": tick_s}))
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> "AlertService":
        """Load the rules (a file rule naming an unknown client stops start-up), then
        evaluate and deliver in the background."""
        await self.engine.load(self.config)
        self._tasks = [asyncio.create_task(self.engine.run(), name="alert-engine"),
                       asyncio.create_task(self.notifier.run(), name="alert-outbox")]
        log.info("alerts: %d rules (%d from %s), channels: %s", len(self.engine.rules),
                 len(self.config.rules), self.config.path or "no file",
                 ", ".join(c.name for c in self.config.channels) or "console only")
        return self

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # --- rules --------------------------------------------------------------------------
    async def rules(self, principal: Principal) -> list[dict]:
        return [_view(r) for r in await self.store.rules(principal.client_ids)]

    async def add_rule(self, raw: dict, principal: Principal) -> dict:
        """Validate ``raw`` whole (ValidationError naming ``$.field``), check the caller may
        own it, store it; its view."""
        rule = parse_rule(raw, lambda f: f"$.{f}" if f else "$",
                          channels=lambda name: self.config.channel(name) is not None)
        if not principal.is_super:
            if KINDS[rule.kind].farm_only:
                raise AccessDenied(f"kind {rule.kind} is farm-wide: super users only")
            if rule.client is None:
                rows = await self.store.db._all("SELECT name FROM clients WHERE client_id"
                                                f" IN ({','.join('?' * len(principal.client_ids or ()))})"
                                                if principal.client_ids else
                                                "SELECT name FROM clients WHERE 1 = 0",
                                                sorted(principal.client_ids or ()))
                if len(rows) != 1:
                    raise ValidationError("$.client", "name the client the rule is for")
                rule = replace(rule, client=rows[0][0])
        client_id = await self.store.client_id(rule.client, "$.client")
        if client_id is not None and not principal.sees_client(client_id):
            raise ValidationError("$.client", f"no client named {rule.client!r}")
        if not principal.is_super:
            # A tenant's rule may name only channels that take its client's notices (the
            # notifier filters them anyway; this says so up front instead of dropping).
            for name in rule.channels or ():
                channel = self.config.channel(name)
                if channel is not None and channel.clients is not None \
                        and rule.client not in channel.clients:
                    raise ValidationError("$.channels", f"channel {name!r} does not take "
                                                        f"notices of client {rule.client!r}")
        if await self.store.name_taken(rule.name):
            raise RuleConflict(f"a rule named {rule.name!r} exists: delete it first or "
                               "choose another name")
        stored = await self.store.add_rule(replace(rule, client_id=client_id))
        await self.store.db.audit("alert_rule", stored.rule_id, "create", None, stored.view(),
                                  actor=principal.actor)
        await self.engine.reload()
        return _view(stored)

    async def _rule(self, name: str, principal: Principal) -> Rule:
        rule = await self.store.rule(name, principal.client_ids)
        if rule is None:
            raise LookupError(f"no alert rule named {name!r}")
        return rule

    async def delete_rule(self, name: str, principal: Principal) -> dict:
        rule = await self._rule(name, principal)
        if rule.source == "file":
            raise RuleConflict(f"rule {name!r} comes from {self.config.path}: remove it there "
                               "and restart the coordinator")
        await self.store.delete_rule(rule.rule_id)
        await self.store.db.audit("alert_rule", rule.rule_id, "delete", rule.view(), None,
                                  actor=principal.actor)
        await self.engine.reload()
        return {"deleted": name}

    async def silence(self, name: str, duration: str, principal: Principal) -> dict:
        """Silence a rule for ``duration`` ("2h"; "0s" ends a silence): its alerts are
        recorded, nothing is sent until then."""
        seconds = parse_duration(duration, "$.for").total_seconds()
        if seconds > MAX_SILENCE_S:
            raise ValidationError("$.for", "at most 30d")
        rule = await self._rule(name, principal)
        until = time.time() + seconds if seconds > 0 else None
        await self.store.silence(rule.rule_id, until, principal.actor if until else None)
        await self.store.db.audit("alert_rule", rule.rule_id, "update",
                                  {"silenced_until": iso(rule.silenced_until)},
                                  {"silenced_until": iso(until)}, actor=principal.actor,
                                  reason="silenced" if until else "silence ended")
        await self.engine.reload()
        return {"rule": name, "silenced_until": iso(until)}

    # --- alerts -------------------------------------------------------------------------
    async def alerts(self, principal: Principal, state: str | None, limit: int) -> list[dict]:
        return await self.store.alerts(principal.client_ids, state, limit)

    async def ack(self, alert_id: int, principal: Principal) -> dict:
        """Acknowledge an alert: it stops repeating (it still resolves)."""
        alert = await self.store.alert(alert_id, principal.client_ids)
        if alert is None:
            raise LookupError(f"no alert {alert_id}")
        await self.store.ack(alert_id, principal.actor)
        for firing in self.engine.firing.values():
            if firing["alert_id"] == alert_id:
                firing["acked_by"] = principal.actor
        await self.store.db.audit("alert", alert_id, "update", None,
                                  {"acked_by": principal.actor}, actor=principal.actor,
                                  reason="acknowledged")
        return await self.store.alert(alert_id, principal.client_ids)

    # --- notifications ------------------------------------------------------------------
    async def notifications(self, principal: Principal, unread: bool, limit: int) -> dict:
        return await self.store.notifications(principal.user_id or 0, principal.client_ids,
                                              unread, limit)

    async def mark_read(self, principal: Principal, ids: list[int] | None) -> int:
        return await self.store.mark_read(principal.user_id or 0, principal.client_ids, ids)


def _view(rule: Rule) -> dict:
    """A rule as the API shows it (times as ISO 8601 UTC)."""
    return {**rule.view(), "silenced_until": iso(rule.silenced_until)}
