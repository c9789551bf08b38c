"""Which accounts a caller may name, and how an account is named.

An account is named by its id (digits) or by its ``platform.account_number`` reference (as
runs and scopes name it); a reference held by accounts on several phones is ambiguous and
must be given as the id. An account belongs to its profile's client, else its phone's
(as `FarmDB.owner_of` and schema v14's policy on accounts say).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from actors.coordinator.content_data.event_account import resolve_event
from actors.store.caller_scope import as_clients
from actors.store.farm_db import RETIRED

log = logging.getLogger(__name__)

# The accounts with their client (profile's, else phone's) and phone.
ACCOUNT_JOINS = (" LEFT JOIN profiles pr ON pr.profile_id = a.profile_id"
                 " LEFT JOIN phones ph ON ph.phone_id = a.phone_id")
ACCOUNT_FROM = "accounts a" + ACCOUNT_JOINS
ACCOUNT_CLIENT = "COALESCE(pr.client_id, ph.client_id)"
ACCOUNT_COLUMNS = ("a.account_id, a.platform, a.account_number, a.username, a.status,"
                   f" ph.serial_number AS serial, {ACCOUNT_CLIENT} AS client_id")


def in_list(ids: Iterable[Any]) -> tuple[str, tuple[Any, ...]]:
    """``(?, ?, ...)`` and its values; ``(NULL)`` for none (PostgreSQL has no ``IN ()``)."""
    values = tuple(sorted(set(ids)))
    if not values:
        return "(NULL)", ()
    return "(" + ", ".join("?" * len(values)) + ")", values


def client_filter(clients: frozenset[int] | None) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause keeping the accounts of ``clients`` (None: every account)."""
    if clients is None:
        return "1 = 1", ()
    sql, ids = in_list(clients)
    return f"{ACCOUNT_CLIENT} IN {sql}", ids


MAX_ID = 2**63 - 1  # the engines' largest integer key


def is_id(ref: str) -> bool:
    """Whether an account reference is an id (ASCII digits) rather than platform.number."""
    return ref.isascii() and ref.isdigit()


def account_name(row: Any) -> str:
    return f"{row['platform']}.{row['account_number']}"


async def find_accounts(db: Any, ref: str, clients: frozenset[int] | None, *,
                        include_retired: bool = True) -> list[dict[str, Any]]:
    """The accounts ``ref`` (an id or ``platform.number``) names among ``clients``' (None:
    every client's), by id."""
    where, args = client_filter(clients)
    ref = ref.strip()
    if is_id(ref):
        if int(ref) > MAX_ID:
            return []
        where, args = f"{where} AND a.account_id = ?", (*args, int(ref))
    else:
        platform, dot, number = ref.partition(".")
        if not dot or not platform or not number:
            return []
        where = f"{where} AND a.platform = ? AND a.account_number = ?"
        args = (*args, platform, number)
    if not include_retired:
        where += f" AND (a.status IS NULL OR a.status <> '{RETIRED}')"
    with as_clients(clients):
        rows = await db._all(f"SELECT {ACCOUNT_COLUMNS} FROM {ACCOUNT_FROM} WHERE {where}"
                             " ORDER BY a.account_id", args)
    return [dict(r) for r in rows]


async def account_of_event(db: Any, data: dict[str, Any],
                           serial: str | None = None) -> dict[str, Any] | None:
    """The account a node event is about (``account_id``, ``platform``), by the one rule
    every data-event consumer uses (actors.coordinator.content_data.event_account: its
    execution by key, refused when that execution is another phone's, else its ``account``
    on its phone); None when it is not known or refused (logged)."""
    found = await db._atomic(lambda conn: resolve_event(conn, data, serial))
    if found.refused is not None:
        log.warning("node event of execution %s refused: %s", data.get("execution_id"),
                    found.refused)
        return None
    if found.account_id is None:
        return None
    return {"account_id": found.account_id, "platform": found.platform,
            "execution_id": found.execution_id, "phone_id": found.phone_id}
