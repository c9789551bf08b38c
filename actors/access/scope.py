"""The one place that decides which rows a caller sees.

Every route that lists or names phones, accounts, profiles, clients, runs or executions
filters through these functions; a row of another client is treated as absent (the same
answer as for a row that does not exist: no existence leak)."""

from __future__ import annotations

from typing import Any, Iterable

from actors.access.principal import Principal
from protocol.errors import PhoneNotFound


def phone_client(hub: Any, serial: str) -> int | None:
    owners = getattr(hub, "owners", None)
    return owners.client_id(serial) if owners is not None else None


def sees_phone(principal: Principal, hub: Any, serial: str) -> bool:
    return principal.client_ids is None or principal.sees_client(phone_client(hub, serial))


def visible_phones(principal: Principal, hub: Any) -> list[dict]:
    """The hub's phone views the caller may see."""
    phones = hub.phones()
    if principal.client_ids is None:
        return phones
    return [p for p in phones if principal.sees_client(phone_client(hub, p["serial"]))]


def require_phone(principal: Principal, hub: Any, serial: str) -> None:
    """PhoneNotFound for a phone the caller may not see, as for one that does not exist."""
    if not sees_phone(principal, hub, serial):
        raise PhoneNotFound(serial)


def visible_rows(principal: Principal, rows: Iterable[dict],
                 key: str = "client_id") -> list[dict]:
    """Rows (accounts, profiles, clients, groups ...) whose ``key`` column is a client the
    caller reaches; a row with no client only for super users."""
    if principal.client_ids is None:
        return list(rows)
    return [r for r in rows if principal.sees_client(r.get(key))]


def owned_by(owners: Iterable[int] | None, clients: frozenset[int] | None) -> bool:
    """Whether work belonging to ``owners`` (a schedule's or a workflow execution's client
    ids, taken from the caller who started it; None: a super user's) is visible to a caller
    reaching ``clients`` (None: every client). It must belong to some clients, every one of
    them the caller's: an admin's schedule over clients A and B is not shown to A's users,
    whose view would then hold B's phones."""
    if clients is None:
        return True
    return owners is not None and bool(set(owners)) and set(owners) <= clients


# Farm-wide events a tenant may see: which nodes are up says nothing about another
# client's phones, accounts or work.
SHARED_EVENTS = frozenset({"node_up", "node_down", "overflow"})
# Events about one client's work, named by ``data.client_id`` (actors.coordinator.reports).
CLIENT_EVENTS = frozenset({"report_started", "report_ready", "report_failed",
                           "notification"})  # a notice for that client (alerts.notify)


def event_visible(principal: Principal, hub: Any, event: dict) -> bool:
    """A status-stream event is shown when it is about one of the caller's phones or
    (`CLIENT_EVENTS`) one of its clients; an event about no phone only when it is one of
    the farm-wide `SHARED_EVENTS`."""
    if principal.client_ids is None:
        return True
    serial = event.get("serial")
    if serial:
        return sees_phone(principal, hub, serial)
    if event.get("event") in CLIENT_EVENTS:
        client_id = (event.get("data") or {}).get("client_id")
        return isinstance(client_id, int) and principal.sees_client(client_id)
    return event.get("event") in SHARED_EVENTS
