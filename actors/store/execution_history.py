"""The execution history an operator queries (``GET /api/executions``): which executions a
filter selects, newest first, one page at a time, as one SQL statement both engines run.

Owns `ExecutionQuery` (the filters, already checked by the caller: actors.control.
execution_query parses them from a request) and `history_sql`, which `FarmDB.
recent_executions` runs. Pages are keyset pages: ``before`` is the execution id (our string
key) of the last row of the previous page, and the next page is the rows with a smaller
``execution_id`` (the table's integer key, which grows with each new execution), so a page
deep in a million rows costs what the first one does and rows written meanwhile neither
shift nor repeat a page. A tenant's query carries its client ids: the same statement then
keeps only executions of those clients' phones, in SQL, so every page is full.

The indexes that keep each filter fast on a large table are schema v15's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Every status an execution record takes (actors.coordinator.runs writes them; stopped is
# an older name of cancelled, kept by rows written before it).
EXECUTION_STATUSES = ("pending", "running", "paused", "completed", "failed", "cancelled",
                      "stopped", "locked")
# The executions columns a history row shows: all but the plan (large, sealed, and only
# crash recovery reads it).
HISTORY_COLUMNS = ("execution_id", "task_id", "phone_id", "account_id", "start_time",
                   "end_time", "status", "error_message", "execution_key", "run_id",
                   "serial", "sequence", "error_reason", "current_step")


@dataclass(frozen=True)
class ExecutionQuery:
    """One page of the history: executions matching every filter given, newest first.

    ``statuses``: any of them (empty: every status). ``since``/``until``: UTC text as the
    database stores start times (actors.store.execution_records.utc_text), since inclusive,
    until exclusive. ``before``: an execution key; only older executions. ``clients``: a
    tenant's client ids (None: the whole farm), whose phones' executions alone are read."""

    statuses: tuple[str, ...] = ()
    serial: str | None = None
    sequence: str | None = None
    run_id: str | None = None
    since: str | None = None
    until: str | None = None
    before: str | None = None
    limit: int = 50
    clients: frozenset[int] | None = None


def _tenant_phones(clients: frozenset[int]) -> tuple[str, list[Any]]:
    """The condition "on a phone of ``clients``" (the phones table is what the hub's
    phone owners are loaded from: actors.coordinator.phone_owners)."""
    ids = sorted(clients)
    if not ids:
        return "1 = 0", []
    return (f"serial IN (SELECT serial_number FROM phones WHERE client_id IN"
            f" ({', '.join('?' for _ in ids)}))", list(ids))


def before_sql(query: ExecutionQuery) -> tuple[str, list[Any]]:
    """The statement finding the integer id of ``query.before`` (no row: no such execution,
    or one the tenant does not see, which it is told alike)."""
    sql, args = "SELECT execution_id FROM executions WHERE execution_key = ?", [query.before]
    if query.clients is not None:
        cond, more = _tenant_phones(query.clients)
        sql += f" AND {cond}"
        args += more
    return sql, args


def history_sql(query: ExecutionQuery, before_id: int | None = None) -> tuple[str, list[Any]]:
    """The statement and arguments of ``query``'s page: ``limit + 1`` rows (the extra one
    says another page exists), ``before_id`` the integer id `before_sql` found."""
    where: list[str] = []
    args: list[Any] = []
    if query.statuses:
        where.append(f"status IN ({', '.join('?' for _ in query.statuses)})")
        args += list(query.statuses)
    for column in ("serial", "sequence", "run_id"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if query.since is not None:
        where.append("start_time >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("start_time < ?")
        args.append(query.until)
    if before_id is not None:
        where.append("execution_id < ?")
        args.append(before_id)
    if query.clients is not None:
        cond, more = _tenant_phones(query.clients)
        where.append(cond)
        args += more
    sql = f"SELECT {', '.join(HISTORY_COLUMNS)} FROM executions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY execution_id DESC LIMIT ?"
    args.append(query.limit + 1)
    return sql, args
