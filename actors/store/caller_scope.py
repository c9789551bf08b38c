"""Whose rows a database call may touch: the caller's clients, carried in a context variable
from the scoped views (actors.access.scoped) down to the database's transactions.

On PostgreSQL every transaction sets ``phonefarm.clients`` from it, and the row-level
security policies of the schema show a caller only its clients' rows (and the farm's
shared ones), even to a query that forgot its filter. SQLite has no such policies: there
the scoped views' own filters are the only guard.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterable, Iterator

# None: the whole farm (super users, and the coordinator's own work).
caller_clients: contextvars.ContextVar[frozenset[int] | None] = contextvars.ContextVar(
    "caller_clients", default=None)
ALL_CLIENTS = "*"


def clients_setting(clients: frozenset[int] | None) -> str:
    """The ``phonefarm.clients`` value of a client set: ``*`` for the farm, else the ids."""
    return ALL_CLIENTS if clients is None else ",".join(str(c) for c in sorted(clients))


@contextlib.contextmanager
def as_clients(clients: Iterable[int] | None) -> Iterator[None]:
    """Run the database calls inside with the rows of ``clients`` only (None: all)."""
    token = caller_clients.set(None if clients is None else frozenset(clients))
    try:
        yield
    finally:
        caller_clients.reset(token)
