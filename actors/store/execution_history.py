"""The execution history an operator queries (``GET /api/executions``): which executions a
filter selects, newest first, one page at a time, as one SQL statement both engines run.

Owns `ExecutionQuery` (the filters, already checked by the caller: actors.control.
execution_query parses them from a request) and `history_sql`, which `FarmDB.
execution_page` runs. Newest first is by start time, then by ``execution_id`` (the
table's integer key) among executions started in the same microsecond: the order the time
filters select in, so each filter reads one index in page order (schema v15: start_time
after the filtered column) and stops after a page, where ordering by id alone had to sort
a whole time window first. Every execution has a start time (`FarmDB.create_execution`
sets it). Pages are keyset pages: ``before`` is the execution id (our string key) of the
last row of the previous page, and the next page is the rows after it in that order, so a
page deep in a million rows costs what the first one does and rows written meanwhile
neither shift nor repeat a page. A tenant's query carries its client ids: the same statement then
keeps only executions of those clients' phones, in SQL, so every page is full. Their
phones' serials are read first (`tenant_serials_sql`) and go into the statement as a list:
on PostgreSQL a plain ``serial IN (...)`` is checked before the row-level security policy
(its comparison is leakproof), so the policy runs only on the tenant's own rows of the page,
not on every row scanned (a policy call per row made a tenant's page of a million rows take
seconds; with a subquery the planner read all its phones' rows first).

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
                   "serial", "sequence", "error_reason", "current_step", "sequence_version",
                   "registry_version")


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


def tenant_serials_sql(clients: frozenset[int]) -> tuple[str, list[Any]]:
    """The statement listing the serials of ``clients``' phones (the phones table is what
    the hub's phone owners are loaded from: actors.coordinator.phone_owners)."""
    ids = sorted(clients)
    marks = ", ".join("?" for _ in ids) or "NULL"
    return f"SELECT serial_number FROM phones WHERE client_id IN ({marks})", ids


def _on_phones(serials: list[str]) -> tuple[str, list[Any]]:
    if not serials:
        return "1 = 0", []
    return f"serial IN ({', '.join('?' for _ in serials)})", list(serials)


def before_sql(query: ExecutionQuery, serials: list[str] | None = None
               ) -> tuple[str, list[Any]]:
    """The statement finding where ``query.before`` is in the order: its (start_time,
    execution_id). No row: no such execution, or, on a tenant's ``serials``, one it does
    not see, which it is told alike."""
    sql = "SELECT start_time, execution_id FROM executions WHERE execution_key = ?"
    args: list[Any] = [query.before]
    if serials is not None:
        cond, more = _on_phones(serials)
        sql += f" AND {cond}"
        args += more
    return sql, args


def history_sql(query: ExecutionQuery, before: tuple[str, int] | None = None,
                serials: list[str] | None = None) -> tuple[str, list[Any]]:
    """The statement and arguments of ``query``'s page: ``limit + 1`` rows (the extra one
    says another page exists), after ``before`` (the row `before_sql` found), ``serials``
    a tenant's phones (`tenant_serials_sql`; None: the whole farm)."""
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
    if before is not None:
        # The range on start_time alone is what an index reads; the tie on the same
        # microsecond is a filter on the few rows there.
        where.append("start_time <= ? AND (start_time < ? OR execution_id < ?)")
        args += [before[0], before[0], before[1]]
    if serials is not None:
        cond, more = _on_phones(serials)
        where.append(cond)
        args += more
    sql = f"SELECT {', '.join(HISTORY_COLUMNS)} FROM executions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY start_time DESC, execution_id DESC LIMIT ?"
    args.append(query.limit + 1)
    return sql, args
