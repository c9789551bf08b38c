"""The stats rollups in the farm database (schema v17, issue 19.2): what a minute's rows are
made of, writing them, and reading them back at a coarser step for ``GET /api/stats``; and
the top failures of ``GET /api/stats/top-failures``, read from the execution records.

Owns the SQL of the rollup tables (``stats_minutes``, ``stats_phone_minutes``,
``stats_execution_minutes``, and their hourly twins ``stats_hours``, ``stats_phone_hours``,
``stats_execution_hours``, rewritten from the minutes of each hour a close touches, so a
step of whole hours reads 60 times fewer rows) and the aggregation rules;
`actors.coordinator.rollups` decides when a minute is closed and samples the phones. Every
statement is in the subset both engines run; a minute is Unix seconds, so a step's bucket
is ``minute - minute % step``.

Coarser steps from minute rows:
- counts (executions started/completed/failed, recovery attempts/succeeded) are sums;
- phone counts are averages: the sum of the minute averages in the step divided by the
  minutes of the step that had phone samples (a minute nobody sampled, e.g. while the
  coordinator was down, counts neither way; a step with none gives ``phones: null``);
- step time p50 is the mean of the minute p50s weighted by their step counts, and p95 the
  maximum of the minute p95s (an upper bound: the true p95 over the step is never above it).
  Recomputing from ``execution_steps`` would be exact but those rows are kept 30 days and
  the rollups 400, and it would read every step of the range at each request.

A tenant's query (``clients``) reads only those clients' rows, in the statement on both
engines (and, on PostgreSQL, under the row-level security of the caller's read)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from actors.store.execution_history import tenant_serials_sql
from actors.store.execution_records import screenshot_route, utc_text

MINUTE_S = 60
HOUR_S = 3600
# The steps GET /api/stats offers, smallest first.
STEPS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
BYS = ("farm", "client", "sequence", "node")
PHONE_STATES = ("busy", "idle", "offline", "paused")
NO_CLIENT = "(no client)"
UNKNOWN = "(unknown)"
# What a key column's value stands for when it is the "none" of v17 (0 / '').
_KEY_COLUMNS = {"client": "client_id", "sequence": "sequence", "node": "node"}


@dataclass(frozen=True)
class StatsQuery:
    """A series request: buckets of ``step_s`` from ``start`` (aligned to the step) up to
    ``end`` (exclusive), Unix seconds; one series per ``by`` key. ``clients``: a tenant's
    client ids (None: the whole farm)."""

    start: int
    end: int
    step_s: int
    by: str = "farm"
    clients: frozenset[int] | None = None


@dataclass(frozen=True)
class FailureQuery:
    """Top failures since ``since`` (UTC text as stored), ``limit`` of each list."""

    since: str
    limit: int = 10
    clients: frozenset[int] | None = None


@dataclass
class ExecutionCell:
    """One minute's counts for one (client, sequence, node), and its step times (ms)."""

    started: int = 0
    completed: int = 0
    failed: int = 0
    recovery_attempts: int = 0
    recovery_succeeded: int = 0
    step_ms: list[float] = field(default_factory=list)

    def row(self, key: tuple[int, int, str, str]) -> tuple:
        times = sorted(self.step_ms)
        return (*key, self.started, self.completed, self.failed, self.recovery_attempts,
                self.recovery_succeeded, len(times), percentile(times, 0.50),
                percentile(times, 0.95))


ExecutionKey = tuple[int, int, str, str]  # minute, client_id (0: none), sequence, node


def percentile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of an ascending list, linear between the nearest ranks."""
    if not ordered:
        return None
    at = (len(ordered) - 1) * q
    low, high = math.floor(at), math.ceil(at)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def epoch(text: str | None) -> float | None:
    """A stored UTC timestamp (``YYYY-MM-DD HH:MM:SS[.ffffff]``) as Unix seconds."""
    if not text:
        return None
    return datetime.fromisoformat(str(text)).replace(tzinfo=timezone.utc).timestamp()


def floor_minute(seconds: float) -> int:
    return int(seconds // MINUTE_S) * MINUTE_S


def iso(seconds: int) -> str:
    """Unix seconds as ``2026-12-07T01:00:00Z``."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(seconds: int) -> str:
    return utc_text(datetime.fromtimestamp(seconds, timezone.utc))


# --- closing minutes ------------------------------------------------------------------------

_STARTED_SQL = (
    "SELECT e.start_time AS at, e.serial, e.sequence, p.client_id FROM executions e"
    " LEFT JOIN phones p ON p.serial_number = e.serial"
    " WHERE e.start_time >= ? AND e.start_time < ?")
_ENDED_SQL = (
    "SELECT e.end_time AS at, e.status, e.serial, e.sequence, p.client_id FROM executions e"
    " LEFT JOIN phones p ON p.serial_number = e.serial"
    " WHERE e.end_time >= ? AND e.end_time < ? AND e.status IN ('completed', 'failed')")
_RECOVERY_SQL = (
    "SELECT r.start_time, r.end_time, r.status, r.serial, r.sequence, p.client_id"
    " FROM recovery_attempts r LEFT JOIN phones p ON p.serial_number = r.serial"
    " WHERE (r.start_time >= ? AND r.start_time < ?)"
    " OR (r.end_time >= ? AND r.end_time < ? AND r.status = 'succeeded')")
_STEPS_SQL = (
    "SELECT s.start_time, s.end_time, e.serial, e.sequence, p.client_id"
    " FROM execution_steps s JOIN executions e ON e.execution_id = s.execution_id"
    " LEFT JOIN phones p ON p.serial_number = e.serial"
    " WHERE s.end_time >= ? AND s.end_time < ? AND s.status IN ('success', 'failed')")


async def execution_cells(db: Any, start: int, end: int, node_of: Callable[[str], str | None]
                          ) -> dict[ExecutionKey, ExecutionCell]:
    """Each minute's execution counts and step times in [start, end) (Unix seconds, whole
    minutes), from the execution records, by (minute, client, sequence, node). An
    execution's client is its phone's now and its node ``node_of(serial)`` (the phone's
    node now: cheap, and right unless the phone moved racks since)."""
    lo, hi = _text(start), _text(end)
    cells: dict[ExecutionKey, ExecutionCell] = {}

    def cell(at: float | None, row: Any) -> ExecutionCell | None:
        if at is None or not start <= at < end:
            return None
        key = (floor_minute(at), row["client_id"] or 0, row["sequence"] or "",
               (node_of(row["serial"]) if row["serial"] else None) or "")
        found = cells.get(key)
        if found is None:
            found = cells[key] = ExecutionCell()
        return found

    for row in await db._all(_STARTED_SQL, (lo, hi)):
        if (c := cell(epoch(row["at"]), row)) is not None:
            c.started += 1
    for row in await db._all(_ENDED_SQL, (lo, hi)):
        if (c := cell(epoch(row["at"]), row)) is not None:
            if row["status"] == "completed":
                c.completed += 1
            else:
                c.failed += 1
    for row in await db._all(_RECOVERY_SQL, (lo, hi, lo, hi)):
        if (c := cell(epoch(row["start_time"]), row)) is not None:
            c.recovery_attempts += 1
        if row["status"] == "succeeded" and (c := cell(epoch(row["end_time"]), row)):
            c.recovery_succeeded += 1
    for row in await db._all(_STEPS_SQL, (lo, hi)):
        began, ended = epoch(row["start_time"]), epoch(row["end_time"])
        if began is not None and (c := cell(ended, row)) is not None:
            c.step_ms.append(max(0.0, (ended - began) * 1000.0))  # type: ignore[operator]
    return cells


PhoneKey = tuple[int, int, str]  # minute, client_id (0: none), node


async def save_minutes(db: Any, start: int, end: int,
                       executions: dict[ExecutionKey, ExecutionCell],
                       phones: dict[PhoneKey, tuple[float, float, float, float]],
                       samples: dict[int, int]) -> None:
    """Close the minutes [start, end) in one writer job (all or none): their execution rows
    replace whatever those minutes had (a minute closed again after a restart is rewritten,
    never counted twice), phone rows are upserted where there were samples, and every
    minute is marked closed (keeping the phone samples a previous close had when this one
    has none)."""
    # Sorting every step time and taking percentiles is CPU work: off the event loop (and
    # off the single writer's thread, which other writes wait for).
    exec_rows = await asyncio.to_thread(
        lambda: [cell.row(key) for key, cell in sorted(executions.items())])
    phone_rows = [(*key, *values) for key, values in sorted(phones.items())]
    closed = utc_text()
    minute_rows = [(m, samples.get(m, 0), closed) for m in range(start, end, MINUTE_S)]

    def job(conn: Any) -> None:
        conn.execute("DELETE FROM stats_execution_minutes WHERE minute >= ? AND minute < ?",
                     (start, end))
        if exec_rows:
            conn.executemany(
                "INSERT INTO stats_execution_minutes (minute, client_id, sequence, node,"
                " started, completed, failed, recovery_attempts, recovery_succeeded, steps,"
                " step_p50_ms, step_p95_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                exec_rows)
        if phone_rows:
            conn.executemany(
                "INSERT INTO stats_phone_minutes (minute, client_id, node, busy, idle,"
                " offline, paused) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (minute, client_id, node) DO UPDATE SET busy = excluded.busy,"
                " idle = excluded.idle, offline = excluded.offline,"
                " paused = excluded.paused", phone_rows)
        conn.executemany(
            "INSERT INTO stats_minutes (minute, phone_samples, closed_at) VALUES (?, ?, ?)"
            " ON CONFLICT (minute) DO UPDATE SET closed_at = excluded.closed_at,"
            " phone_samples = CASE WHEN excluded.phone_samples > 0"
            " THEN excluded.phone_samples ELSE stats_minutes.phone_samples END", minute_rows)
        # The hours these minutes are in, rewritten whole from their minute rows.
        hours = (start - start % HOUR_S, -(-end // HOUR_S) * HOUR_S)
        for statement in _HOUR_SQL:
            conn.execute(statement, hours)

    await db._atomic(job)


_HOUR = f"(minute - minute % {HOUR_S})"
_HOUR_SQL = (
    "DELETE FROM stats_execution_hours WHERE hour >= ? AND hour < ?",
    f"INSERT INTO stats_execution_hours (hour, client_id, sequence, node, started, completed,"
    f" failed, recovery_attempts, recovery_succeeded, steps, step_p50_ms, step_p95_ms)"
    f" SELECT {_HOUR}, client_id, sequence, node, SUM(started), SUM(completed), SUM(failed),"
    f" SUM(recovery_attempts), SUM(recovery_succeeded), SUM(steps),"
    f" SUM(step_p50_ms * steps) / NULLIF(SUM(steps), 0), MAX(step_p95_ms)"
    f" FROM stats_execution_minutes WHERE minute >= ? AND minute < ?"
    f" GROUP BY {_HOUR}, client_id, sequence, node",
    "DELETE FROM stats_phone_hours WHERE hour >= ? AND hour < ?",
    f"INSERT INTO stats_phone_hours (hour, client_id, node, busy, idle, offline, paused)"
    f" SELECT {_HOUR}, client_id, node, SUM(busy), SUM(idle), SUM(offline), SUM(paused)"
    f" FROM stats_phone_minutes WHERE minute >= ? AND minute < ?"
    f" GROUP BY {_HOUR}, client_id, node",
    "DELETE FROM stats_hours WHERE hour >= ? AND hour < ?",
    f"INSERT INTO stats_hours (hour, sampled_minutes)"
    f" SELECT {_HOUR}, COUNT(*) FILTER (WHERE phone_samples > 0) FROM stats_minutes"
    f" WHERE minute >= ? AND minute < ? GROUP BY {_HOUR}",
)


async def first_execution_minute(db: Any, since: int) -> int | None:
    """The minute of the first execution started at ``since`` or later (None: none)."""
    row = await db._one("SELECT MIN(start_time) FROM executions WHERE start_time >= ?",
                        (_text(since),))
    at = epoch(row[0]) if row is not None else None
    return None if at is None else floor_minute(at)


async def last_closed_minute(db: Any) -> int | None:
    """The newest minute the rollup job closed (None: never)."""
    row = await db._one("SELECT MAX(minute) FROM stats_minutes")
    return None if row is None or row[0] is None else int(row[0])


# --- reading series -------------------------------------------------------------------------


def _client_filter(clients: frozenset[int] | None) -> tuple[str, list[int]]:
    if clients is None:
        return "", []
    if not clients:
        return " AND 1 = 0", []
    ids = sorted(clients)
    return f" AND client_id IN ({', '.join('?' for _ in ids)})", ids


async def series(db: Any, query: StatsQuery) -> dict:
    """``GET /api/stats``'s answer (without ``from``/``to``/``step_s``/``by``, which the route
    adds): ``{"series": [{"key", "points": [...]}]}``, one point per step of the range."""
    step = int(query.step_s)
    # A step of whole hours reads the hour rows (60 times fewer), a finer one the minutes.
    unit, of = ("hour", "hours") if step % HOUR_S == 0 else ("minute", "minutes")
    bucket = f"({unit} - {unit} % {step})"
    scope, scope_args = _client_filter(query.clients)
    window = [query.start, query.end]
    column = _KEY_COLUMNS.get(query.by)
    key_sql = f", {column}" if column else ""
    execs = await db._all(
        f"SELECT {bucket} AS t{key_sql}, SUM(started), SUM(completed), SUM(failed),"
        " SUM(recovery_attempts), SUM(recovery_succeeded), SUM(steps),"
        f" SUM(step_p50_ms * steps), MAX(step_p95_ms) FROM stats_execution_{of}"
        f" WHERE {unit} >= ? AND {unit} < ?{scope} GROUP BY {bucket}{key_sql}",
        (*window, *scope_args))
    phones: list[Any] = []
    sampled: dict[int, int] = {}
    if query.by != "sequence":
        phones = await db._all(
            f"SELECT {bucket} AS t{key_sql}, SUM(busy), SUM(idle), SUM(offline), SUM(paused)"
            f" FROM stats_phone_{of} WHERE {unit} >= ? AND {unit} < ?{scope}"
            f" GROUP BY {bucket}{key_sql}", (*window, *scope_args))
        count = "SUM(sampled_minutes)" if unit == "hour" else (
            "COUNT(*) FILTER (WHERE phone_samples > 0)")
        sampled = {int(r[0]): int(r[1] or 0) for r in await db._all(
            f"SELECT {bucket} AS t, {count} FROM stats_{of} WHERE {unit} >= ?"
            f" AND {unit} < ? GROUP BY {bucket}", window)}

    def values_at(rows: list[Any]) -> dict[tuple[Any, int], tuple]:
        """(series key, bucket) -> the row's sums, after its bucket and key columns."""
        first = 2 if column else 1
        return {(row[1] if column else "farm", int(row[0])): tuple(row[first:])
                for row in rows}

    exec_at, phone_at = values_at(execs), values_at(phones)
    keys = {k for k, _ in exec_at} | {k for k, _ in phone_at}
    if not column:
        keys.add("farm")
    names = await _key_names(db, query.by, keys)
    out = []
    for key in sorted(keys, key=lambda k: names[k]):
        out.append({"key": names[key], "points": [
            _point(t, exec_at.get((key, t)), phone_at.get((key, t)),
                   None if query.by == "sequence" else sampled.get(t, 0))
            for t in range(query.start, query.end, step)]})
    return {"series": out}


def _point(t: int, execs: tuple | None, phones: tuple | None, sampled: int | None) -> dict:
    """One point of ``GET /api/stats`` from a bucket's sums: ``execs`` (started, completed, failed,
    recovery attempts, succeeded, steps, p50 x steps, max p95), ``phones`` (busy, idle,
    offline, paused: sums of minute averages) over ``sampled`` minutes with samples (None:
    by sequence, no phone counts at all)."""
    (started, completed, failed, attempts, succeeded, steps, p50_sum,
     p95) = execs if execs is not None else (0, 0, 0, 0, 0, 0, None, None)
    steps = int(steps or 0)
    return {
        "t": iso(t),
        "phones": None if not sampled else {
            state: round(float(phones[i] or 0) / sampled, 3) if phones is not None else 0.0
            for i, state in enumerate(PHONE_STATES)},
        "executions": {"started": int(started or 0), "completed": int(completed or 0),
                       "failed": int(failed or 0)},
        "recovery": {"attempts": int(attempts or 0), "succeeded": int(succeeded or 0)},
        "step_ms": {"p50": round(float(p50_sum) / steps, 1)
                    if steps and p50_sum is not None else None,
                    "p95": round(float(p95), 1) if p95 is not None else None}}


async def _key_names(db: Any, by: str, keys: Iterable[Any]) -> dict[Any, str]:
    """How each series is named: the client's name, the sequence, the node, or ``farm``."""
    if by == "client":
        ids = sorted(k for k in keys if k)
        known: dict[int, str] = {}
        if ids:
            known = {int(r[0]): r[1] for r in await db._all(
                f"SELECT client_id, name FROM clients WHERE client_id IN"
                f" ({', '.join('?' for _ in ids)})", ids)}
        return {k: known.get(k, f"client {k}") if k else NO_CLIENT for k in keys}
    if by == "farm":
        return {k: "farm" for k in keys}
    return {k: k or UNKNOWN for k in keys}


# --- top failures ---------------------------------------------------------------------------


async def top_failures(db: Any, query: FailureQuery) -> dict:
    """The sequences and the screens that failed most since ``query.since``, each with its
    latest failure (execution, phone, step, screen, reason, when, screenshot URL)."""
    serial_sql, serial_args = "", []
    if query.clients is not None:
        serials = [r[0] for r in await db._all(*tenant_serials_sql(query.clients))]
        if not serials:
            return {"sequences": [], "screens": []}
        serial_sql = f" AND e.serial IN ({', '.join('?' for _ in serials)})"
        serial_args = serials
    sequences = []
    for row in await db._all(
            "SELECT e.sequence, COUNT(*) FILTER (WHERE e.status = 'failed') AS failures,"
            " COUNT(*) AS executions FROM executions e WHERE e.start_time >= ?"
            f" AND e.sequence IS NOT NULL{serial_sql} GROUP BY e.sequence"
            " HAVING COUNT(*) FILTER (WHERE e.status = 'failed') > 0"
            " ORDER BY failures DESC, e.sequence LIMIT ?",
            (query.since, *serial_args, query.limit)):
        last = await db._one(
            f"{_LAST_SQL} WHERE e.status = 'failed' AND e.sequence = ? AND e.start_time >= ?"
            f"{serial_sql} ORDER BY e.start_time DESC, s.step_id DESC LIMIT 1",
            (row[0], query.since, *serial_args))
        sequences.append({"sequence": row[0], "failures": int(row[1]),
                          "executions": int(row[2]), "last": _last(last)})
    screens = []
    for row in await db._all(
            "SELECT s.screen_name, COUNT(*) AS failures FROM execution_steps s"
            " JOIN executions e ON e.execution_id = s.execution_id"
            " WHERE s.status = 'failed' AND s.start_time >= ? AND s.screen_name IS NOT NULL"
            f"{serial_sql} GROUP BY s.screen_name ORDER BY failures DESC, s.screen_name"
            " LIMIT ?", (query.since, *serial_args, query.limit)):
        last = await db._one(
            f"{_LAST_SQL} WHERE s.status = 'failed' AND s.screen_name = ?"
            f" AND s.start_time >= ?{serial_sql} ORDER BY s.start_time DESC, s.step_id DESC"
            " LIMIT 1", (row[0], query.since, *serial_args))
        screens.append({"screen": row[0], "failures": int(row[1]), "last": _last(last)})
    return {"sequences": sequences, "screens": screens}


# The latest failure's details: the execution and its failed step (if its row is kept).
_LAST_SQL = (
    "SELECT e.execution_key, e.serial, e.error_reason, e.error_message,"
    " COALESCE(e.end_time, e.start_time) AS ended, s.path, s.screen_name, s.screenshot,"
    " s.error, s.end_time AS step_end FROM executions e"
    " LEFT JOIN execution_steps s ON s.execution_id = e.execution_id AND s.status = 'failed'")


def _last(row: Any) -> dict | None:
    if row is None:
        return None
    key, path = row["execution_key"], row["path"]
    at = epoch(row["step_end"] or row["ended"])
    return {"execution_id": key, "serial": row["serial"], "step": path,
            "screen": row["screen_name"],
            "reason": row["error_reason"] or row["error"] or row["error_message"],
            "at": iso(int(at)) if at is not None else None,
            # The route of the failed step's screenshot (GET, the caller's scope checked).
            "screenshot": screenshot_route(key, path) if row["screenshot"] and path else None}
