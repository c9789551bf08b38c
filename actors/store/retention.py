"""Data retention (spec 7.6): what a coordinator's data folder keeps, compresses and forgets.

Owns the retention policy (``RetentionPolicy``, defaults from spec 7.6, loadable from TOML),
the decision of what to do to a data folder at a given instant (``plan``, read-only: it
looks at files and databases and changes nothing), carrying that decision out (``apply``),
and the daily trigger time (``next_run``). It does not own any of the data it prunes; the
layout it knows is the coordinator's ``--data`` folder:

- ``unknown-screens/<id>.png`` + ``<id>.json``   (actors/coordinator/unknown_screens.py) kept 60 days
  after the entry was last touched (the JSON is rewritten each time the screen is seen again);
  JSON and PNG always go together.
- ``executions/<execution_id>/<path>.png``        failed-step screenshots (actors/coordinator/runs.py):
  compressed after 24 h, deleted after 30 days.
- ``screenshots/<serial>/<epoch>.png|jpg|webp``   regular screenshots (not written by the
  coordinator yet): all kept 7 days, then the first one of each UTC hour for 7 more, then none.
- ``farm.sqlite3`` (actors/store/farm_db.py): ``execution_steps`` rows (step details) deleted
  after 30 days, their ``executions`` summary row kept for 1 year.
- ``coordinator.sqlite3`` (actors/store/event_store.py): ``node_events`` deleted after 30 days.
- ``farm.sqlite3``: the stats rollups (actors/store/stats.py: ``stats_minutes``,
  ``stats_phone_minutes``, ``stats_execution_minutes`` and their hourly twins) deleted after
  400 days.
- ``farm.sqlite3``: the clients' reports (actors/coordinator/reports: ``reports``) deleted a
  year after they were made.
- ``farm.sqlite3``: alerts (actors/coordinator/alerts: ``alerts``) deleted 90 days after
  they resolved (a firing one stays), the console's notifications (``notifications`` and
  their ``notification_reads``) 90 days after they were made.

With the farm database on PostgreSQL (a ``DbTarget``, the coordinator's ``--db``) the row
rules run on that database instead, where ``node_events`` lives beside the farm tables; the
files stay in the data folder. The statements are the same for both engines (``?``
placeholders, which `actors.store.pg.PgConnection` translates): only connecting, finding a
table and opening a transaction differ (`_connect`, `_has_table`, `_transaction`).

Time is always passed in (``now``, an aware UTC datetime): nothing here reads the clock, so a
test decides what "30 days ago" means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping
from urllib.parse import unquote, urlsplit

import psycopg

from actors.store.db_target import DbTarget
from actors.store.farm_db import utc_text
from actors.store.pg import PgConnection, connect_sync
from protocol.errors import FarmError, ValidationError
from protocol.files import write_atomic

log = logging.getLogger(__name__)

FARM_DB_NAME = "farm.sqlite3"
EVENT_DB_NAME = "coordinator.sqlite3"
UNKNOWN_DIR = "unknown-screens"
EXECUTIONS_DIR = "executions"
SCREENSHOTS_DIR = "screenshots"

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
# Only executions in these states are pruned: an unfinished one may still be resumed after a
# crash, and resuming reads its step rows (actors/coordinator/runs.py).
FINAL_STATUSES = ("completed", "failed", "cancelled", "stopped")

# What a failing statement raises on either engine.
_DB_ERRORS = (sqlite3.Error, psycopg.Error)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdwy])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_AT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_duration(text: str, where: str) -> timedelta:
    """``"24h"``, ``"30d"``, ``"2w"``, ``"1y"`` (365 days), ``"90m"``, ``"45s"`` as a timedelta;
    ``ValidationError`` naming ``where`` otherwise."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValidationError(where, f"bad duration {text!r}: expected a number and a unit "
                                     "s, m, h, d, w or y, like \"24h\" or \"30d\"")
    return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling of ``delta`` in the units ``parse_duration`` reads."""
    seconds = delta.total_seconds()
    for unit in ("d", "h", "m"):
        # A day reads better as "24h"; from two days on, days.
        if unit == "d" and seconds < 2 * _UNIT_S["d"]:
            continue
        if seconds and seconds % _UNIT_S[unit] == 0:
            return f"{int(seconds // _UNIT_S[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of data is kept (defaults: spec 7.6) and when the daily job runs."""

    compress_after: timedelta = timedelta(hours=24)
    compress_format: Literal["jpeg", "webp"] = "jpeg"
    compress_quality: int = 80
    # Unknown screens are training data and the queue serves ``<id>.png`` by name, so they
    # stay lossless PNG unless someone opts in (and teaches the queue the new suffix).
    compress_unknown: bool = False
    error_screenshots: timedelta = timedelta(days=30)
    unknown_screens: timedelta = timedelta(days=60)
    regular_full: timedelta = timedelta(days=7)
    regular_hourly: timedelta = timedelta(days=7)
    step_details: timedelta = timedelta(days=30)
    summaries: timedelta = timedelta(days=365)
    node_events: timedelta = timedelta(days=30)
    stats_rollups: timedelta = timedelta(days=400)
    reports: timedelta = timedelta(days=365)
    alerts: timedelta = timedelta(days=90)
    notifications: timedelta = timedelta(days=90)
    run_at: str = "03:30"

    def __post_init__(self) -> None:
        if self.compress_format not in ("jpeg", "webp"):
            raise ValidationError("retention.compress_format",
                                  f"{self.compress_format!r}: expected \"jpeg\" or \"webp\"")
        if not 1 <= self.compress_quality <= 100:
            raise ValidationError("retention.compress_quality",
                                  f"{self.compress_quality!r}: expected 1..100")
        if not _AT.match(self.run_at):
            raise ValidationError("retention.run_at", f"{self.run_at!r}: expected HH:MM (UTC)")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, timedelta) and value <= timedelta(0):
                raise ValidationError(f"retention.{f.name}", "must be longer than 0")

    @property
    def compressed_suffix(self) -> str:
        return ".webp" if self.compress_format == "webp" else ".jpg"


_DURATION_FIELDS = frozenset(f.name for f in fields(RetentionPolicy)
                             if f.type in ("timedelta", timedelta))


def policy_with(policy: RetentionPolicy, overrides: Mapping[str, Any],
                where: str = "retention") -> RetentionPolicy:
    """``policy`` with the fields named in ``overrides`` replaced; durations may be given as
    text (``"30d"``). Errors name ``where.FIELD``."""
    known = {f.name for f in fields(RetentionPolicy)}
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        at = f"{where}.{name}"
        if name not in known:
            raise ValidationError(at, f"unknown setting (known: {', '.join(sorted(known))})")
        if name in _DURATION_FIELDS:
            value = value if isinstance(value, timedelta) else parse_duration(value, at)
        elif name == "compress_quality":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValidationError(at, f"{value!r}: expected an integer 1..100")
        elif name == "compress_unknown":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                value = value.lower() in ("true", "1")
            if not isinstance(value, bool):
                raise ValidationError(at, f"{value!r}: expected true or false")
        elif not isinstance(value, str):
            raise ValidationError(at, f"{value!r}: expected a string")
        changes[name] = value
    try:
        return replace(policy, **changes)
    except ValidationError as exc:  # re-anchor the field check at the caller's file
        raise ValidationError(exc.where.replace("retention", where, 1), exc.reason) from None


def load_policy(path: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> RetentionPolicy:
    """The defaults, overridden by the ``[retention]`` table of the TOML file at ``path`` (if
    given), overridden by ``PHONEFARM_RETENTION_<FIELD>`` variables of ``environ`` (if given)."""
    policy = RetentionPolicy()
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(str(path), f"not valid TOML: {exc}") from None
        except OSError as exc:
            raise ValidationError(str(path), f"unreadable: {exc.strerror or exc}") from None
        table = doc.get("retention", {})
        if not isinstance(table, dict):
            raise ValidationError(f"{path}: retention", "expected a [retention] table")
        policy = policy_with(policy, table, f"{path}: retention")
    if environ is not None:
        prefix = "PHONEFARM_RETENTION_"
        env = {k[len(prefix):].lower(): v for k, v in environ.items() if k.startswith(prefix)}
        if env:
            policy = policy_with(policy, env, "$PHONEFARM_RETENTION")
    return policy


def next_run(now: datetime, at: str = "03:30") -> datetime:
    """The first instant strictly after ``now`` whose UTC wall clock reads ``at`` (HH:MM)."""
    m = _AT.match(at)
    if m is None:
        raise ValidationError("retention.run_at", f"{at!r}: expected HH:MM (UTC)")
    now = _utc(now)
    candidate = datetime.combine(now.date(), time(int(m.group(1)), int(m.group(2))),
                                 tzinfo=timezone.utc)
    return candidate if candidate > now else candidate + timedelta(days=1)


# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileAction:
    """One file operation: ``compress`` (write ``target`` beside ``path``, then drop ``path``),
    ``delete`` (``path`` and its ``companions``) or ``thin`` (a delete by the hourly rule)."""

    action: Literal["compress", "delete", "thin"]
    path: Path
    reason: str
    kind: Literal["error", "unknown", "regular"]
    bytes: int = 0
    target: Path | None = None
    companions: tuple[Path, ...] = ()
    mtime: float = 0.0

    def line(self) -> str:
        paths = " + ".join(str(p) for p in (*self.companions, self.path))
        extra = f" -> {self.target.name}" if self.target is not None else ""
        return f"{self.action} {paths}{extra}  ({self.reason})"


@dataclass(frozen=True)
class Database:
    """One database retention reads and prunes: a SQLite file (``path``) or the farm's
    PostgreSQL database (``target``; its repr never shows the password)."""

    path: Path | None = None
    target: DbTarget | None = field(default=None, repr=False)

    @classmethod
    def of(cls, target: DbTarget | None, path: Path) -> "Database":
        """The PostgreSQL database of ``target`` if it names one, else the file ``path``."""
        if target is not None and target.is_postgresql:
            return cls(target=target)
        return cls(path=path)

    @property
    def name(self) -> str:
        """How plan lines name it: the file's name, or the PostgreSQL database's."""
        if self.target is not None:
            return unquote(urlsplit(self.target.url or "").path.strip("/"))
        assert self.path is not None
        return self.path.name

    def exists(self) -> bool:
        """A SQLite file is skipped while it does not exist; a server's database always is
        (a missing table is skipped instead)."""
        return self.target is not None or (self.path is not None and self.path.exists())

    def __str__(self) -> str:
        return self.target.describe() if self.target is not None else str(self.path)


@dataclass(frozen=True)
class RowAction:
    """Delete the rows of ``table`` in database ``db`` that match ``where``/``params``
    (``rows`` of them when planned)."""

    db: Database
    table: str
    where: str
    params: tuple
    rows: int
    reason: str

    def line(self) -> str:
        return f"delete {self.rows} rows {self.db.name}:{self.table}  ({self.reason})"


@dataclass
class RetentionPlan:
    """What a retention run would do to one data folder at ``now``, each item with its reason."""

    data_dir: Path
    now: datetime
    policy: RetentionPolicy
    files: list[FileAction] = field(default_factory=list)
    rows: list[RowAction] = field(default_factory=list)
    # The database whose execution_steps name the error screenshots (compression repoints them).
    farm_db: Database | None = None

    def count(self, action: str) -> int:
        return sum(1 for f in self.files if f.action == action)

    def lines(self) -> list[str]:
        """One line per action, files first (sorted by path), then database rows."""
        return [f.line() for f in self.files] + [r.line() for r in self.rows]

    def summary(self) -> str:
        freed = sum(f.bytes + sum(_size(c) for c in f.companions)
                    for f in self.files if f.action != "compress")
        rows = sum(r.rows for r in self.rows)
        return (f"retention at {self.now.isoformat(timespec='seconds')}: "
                f"{self.count('compress')} to compress, {self.count('delete')} to delete, "
                f"{self.count('thin')} to thin ({_mib(freed)} freed), {rows} database rows "
                "to delete")


def plan(data_dir: str | os.PathLike, now: datetime, policy: RetentionPolicy | None = None,
         farm_db: str | os.PathLike | None = None,
         event_db: str | os.PathLike | None = None,
         target: DbTarget | None = None) -> RetentionPlan:
    """Decide, without changing anything, what retention does to ``data_dir`` at ``now``.
    The databases default to the coordinator's files in ``data_dir`` (``farm_db`` and
    ``event_db`` name others); a missing one is skipped. With a PostgreSQL ``target`` both
    the farm's rows and the node events are that database's. File ages come from mtimes
    (compression keeps them), or for regular screenshots from the epoch in the name."""
    policy = policy or RetentionPolicy()
    now = _utc(now)
    data = Path(data_dir)
    result = RetentionPlan(data, now, policy)
    _plan_error_screenshots(result, data / EXECUTIONS_DIR)
    _plan_unknown_screens(result, data / UNKNOWN_DIR)
    _plan_regular_screenshots(result, data / SCREENSHOTS_DIR)
    result.files.sort(key=lambda f: str(f.path))
    farm = Database.of(target, Path(farm_db) if farm_db is not None else data / FARM_DB_NAME)
    events = Database.of(target,
                         Path(event_db) if event_db is not None else data / EVENT_DB_NAME)
    result.farm_db = farm
    if farm.exists():
        _plan_farm_rows(result, farm)
    if events.exists():
        _plan_event_rows(result, events)
    if farm.exists():
        _plan_rollup_rows(result, farm)
        _plan_report_rows(result, farm)
        _plan_alert_rows(result, farm)
    return result


def _plan_error_screenshots(result: RetentionPlan, folder: Path) -> None:
    p = result.policy
    for execution in _subdirs(folder):
        for path, st in _images(execution):
            age = _age(result.now, st.st_mtime)
            if age > p.error_screenshots:
                result.files.append(FileAction(
                    "delete", path, f"error screenshot, {_ago(age)} old > "
                                    f"{format_duration(p.error_screenshots)}", "error",
                    st.st_size, mtime=st.st_mtime))
            elif path.suffix == ".png" and age > p.compress_after:
                result.files.append(_compress(path, st, age, p, "error"))


def _plan_unknown_screens(result: RetentionPlan, folder: Path) -> None:
    p = result.policy
    entries: dict[str, dict[str, tuple[Path, os.stat_result]]] = {}
    for path, st in _files(folder):
        if path.suffix == ".json" or path.suffix.lower() in IMAGE_SUFFIXES:
            entries.setdefault(path.stem, {})[path.suffix] = (path, st)
    for stem, parts in sorted(entries.items()):
        # Last touched = the newest of the entry's files: the JSON is rewritten on every sighting.
        mtime = max(st.st_mtime for _, st in parts.values())
        age = _age(result.now, mtime)
        images = [parts[s] for s in sorted(parts) if s != ".json"]
        if age > p.unknown_screens:
            # The JSON goes first: the queue ignores a lone image, so a crash between the two
            # never leaves an entry whose image is gone.
            meta = (parts[".json"][0],) if ".json" in parts else ()
            main_path, main_st = images[-1] if images else parts[".json"]
            others = tuple(path for path, _ in images if path != main_path)
            result.files.append(FileAction(
                "delete", main_path, f"unknown screen, last seen {_ago(age)} ago > "
                                     f"{format_duration(p.unknown_screens)}", "unknown",
                main_st.st_size, companions=(*meta, *others) if main_path not in meta else others,
                mtime=mtime))
        elif p.compress_unknown and ".png" in parts and age > p.compress_after:
            result.files.append(_compress(*parts[".png"], age, p, "unknown"))


def _plan_regular_screenshots(result: RetentionPlan, folder: Path) -> None:
    p = result.policy
    full, gone = p.regular_full, p.regular_full + p.regular_hourly
    for serial in _subdirs(folder):
        shots = sorted(((_shot_time(path, st), str(path), path, st) for path, st in _images(serial)))
        kept_hours: set[int] = set()
        for taken, _, path, st in shots:
            age = _age(result.now, taken)
            hour = int(taken // 3600)
            # The first shot of an hour is the one kept: it is also the oldest, so it is the
            # first to cross into the hourly window and the choice never changes later.
            first_of_hour = hour not in kept_hours
            kept_hours.add(hour)
            if age > gone:
                result.files.append(FileAction(
                    "delete", path, f"regular screenshot, {_ago(age)} old > "
                                    f"{format_duration(gone)}", "regular", st.st_size,
                    mtime=st.st_mtime))
            elif age > full and not first_of_hour:
                result.files.append(FileAction(
                    "thin", path, f"regular screenshot, {_ago(age)} old > {format_duration(full)}"
                                  f", not the first of hour {_hour_text(hour)}", "regular",
                    st.st_size, mtime=st.st_mtime))
            elif path.suffix == ".png" and age > p.compress_after:
                result.files.append(_compress(path, st, age, p, "regular"))


def _plan_farm_rows(result: RetentionPlan, db: Database) -> None:
    p = result.policy
    final = ", ".join("?" * len(FINAL_STATUSES))
    step_cutoff = utc_text(result.now - p.step_details)
    summary_cutoff = utc_text(result.now - p.summaries)
    with _connect(db, readonly=True) as conn:
        if not _has_table(conn, "executions") or not _has_table(conn, "execution_steps"):
            return
        # A step's age is its end (or start) time; rows of unfinished executions stay.
        steps_where = (f"COALESCE(end_time, start_time) < ? AND execution_id IN "
                       f"(SELECT execution_id FROM executions WHERE status IN ({final}))")
        steps_params = (step_cutoff, *FINAL_STATUSES)
        n = _count(conn, "execution_steps", steps_where, steps_params)
        if n:
            result.rows.append(RowAction(
                db, "execution_steps", steps_where, steps_params, n,
                f"step details ended before {step_cutoff[:19]} UTC, > "
                f"{format_duration(p.step_details)}; execution summaries kept"))
        exec_where = f"COALESCE(end_time, start_time) < ? AND status IN ({final})"
        exec_params = (summary_cutoff, *FINAL_STATUSES)
        n = _count(conn, "executions", exec_where, exec_params)
        if n:
            # Their steps go first in the same transaction (foreign key), whatever their age.
            # (Only those the step rule above does not already take, so counts add up.)
            orphan_where = (f"execution_id IN (SELECT execution_id FROM executions WHERE "
                            f"{exec_where}) AND NOT ({steps_where})")
            orphan_params = (*exec_params, *steps_params)
            extra = _count(conn, "execution_steps", orphan_where, orphan_params)
            if extra:
                result.rows.append(RowAction(
                    db, "execution_steps", orphan_where, orphan_params, extra,
                    "steps of execution summaries being deleted"))
            result.rows.append(RowAction(
                db, "executions", exec_where, exec_params, n,
                f"execution summaries ended before {summary_cutoff[:19]} UTC, > "
                f"{format_duration(p.summaries)}"))


# The stats rollup tables (schema v17) and the column of each holding its minute or hour
# (Unix seconds of its start).
ROLLUP_TABLES = {"stats_execution_minutes": "minute", "stats_phone_minutes": "minute",
                 "stats_minutes": "minute", "stats_execution_hours": "hour",
                 "stats_phone_hours": "hour", "stats_hours": "hour"}


def _plan_rollup_rows(result: RetentionPlan, db: Database) -> None:
    p = result.policy
    cutoff = int((result.now - p.stats_rollups).timestamp())
    since = utc_text(datetime.fromtimestamp(cutoff, timezone.utc))[:19]
    with _connect(db, readonly=True) as conn:
        for table, column in ROLLUP_TABLES.items():
            if not _has_table(conn, table):
                continue
            # An hour is dropped once it began before the cutoff (its newest minutes with it).
            where = f"{column} < ?"
            n = _count(conn, table, where, (cutoff,))
            if n:
                result.rows.append(RowAction(
                    db, table, where, (cutoff,), n,
                    f"stats rollups of minutes before {since} UTC, > "
                    f"{format_duration(p.stats_rollups)}"))


def _plan_report_rows(result: RetentionPlan, db: Database) -> None:
    p = result.policy
    cutoff = utc_text(result.now - p.reports)
    with _connect(db, readonly=True) as conn:
        if not _has_table(conn, "reports"):
            return
        n = _count(conn, "reports", "created_at < ?", (cutoff,))
        if n:
            result.rows.append(RowAction(
                db, "reports", "created_at < ?", (cutoff,), n,
                f"reports made before {cutoff[:19]} UTC, > {format_duration(p.reports)}"))


def _plan_alert_rows(result: RetentionPlan, db: Database) -> None:
    """Resolved alerts and old notifications (times are Unix seconds in these tables). A
    notification's read marks go first, in their own statement: the retention connection
    does not rely on SQLite's foreign-key cascade."""
    p = result.policy
    alerts_cutoff = (result.now - p.alerts).timestamp()
    notes_cutoff = (result.now - p.notifications).timestamp()
    with _connect(db, readonly=True) as conn:
        if _has_table(conn, "alerts"):
            where = "state = 'resolved' AND resolved_at < ?"
            n = _count(conn, "alerts", where, (alerts_cutoff,))
            if n:
                result.rows.append(RowAction(
                    db, "alerts", where, (alerts_cutoff,), n,
                    f"alerts resolved before {_iso(alerts_cutoff)} UTC, > "
                    f"{format_duration(p.alerts)}"))
        if not _has_table(conn, "notifications"):
            return
        old = "SELECT notification_id FROM notifications WHERE created_at < ?"
        if _has_table(conn, "notification_reads"):
            where = f"notification_id IN ({old})"
            n = _count(conn, "notification_reads", where, (notes_cutoff,))
            if n:
                result.rows.append(RowAction(
                    db, "notification_reads", where, (notes_cutoff,), n,
                    f"read marks of notifications made before {_iso(notes_cutoff)} UTC"))
        n = _count(conn, "notifications", "created_at < ?", (notes_cutoff,))
        if n:
            result.rows.append(RowAction(
                db, "notifications", "created_at < ?", (notes_cutoff,), n,
                f"notifications made before {_iso(notes_cutoff)} UTC, > "
                f"{format_duration(p.notifications)}"))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")[:19]


def _plan_event_rows(result: RetentionPlan, db: Database) -> None:
    p = result.policy
    cutoff = (result.now - p.node_events).timestamp()
    with _connect(db, readonly=True) as conn:
        if not _has_table(conn, "node_events"):
            return
        # Each node's newest event stays whatever its age: after a restart the event store
        # tells the node its last seq from these rows, and 0 would misstate what it holds.
        where = ("received_at < ? AND seq < (SELECT MAX(seq) FROM node_events AS newest "
                 "WHERE newest.node = node_events.node)")
        n = _count(conn, "node_events", where, (cutoff,))
        if n:
            result.rows.append(RowAction(
                db, "node_events", where, (cutoff,), n,
                f"node events received before "
                f"{datetime.fromtimestamp(cutoff, timezone.utc).isoformat(timespec='seconds')}, > "
                f"{format_duration(p.node_events)}; each node's newest kept"))


def _compress(path: Path, st: os.stat_result, age: timedelta, policy: RetentionPolicy,
              kind: Literal["error", "unknown", "regular"]) -> FileAction:
    return FileAction(
        "compress", path, f"{kind} screenshot PNG, {_ago(age)} old > "
                          f"{format_duration(policy.compress_after)}: {policy.compress_format} "
                          f"q{policy.compress_quality}", kind, st.st_size,
        target=path.with_suffix(policy.compressed_suffix), mtime=st.st_mtime)


# --- carrying it out ------------------------------------------------------------------------


@dataclass
class ApplyResult:
    """What ``apply`` did: counts, bytes saved and the actions that failed (with why)."""

    compressed: int = 0
    deleted: int = 0
    thinned: int = 0
    rows_deleted: int = 0
    bytes_saved: int = 0
    step_refs_updated: int = 0
    errors: list[str] = field(default_factory=list)
    # Ids (file stems) of the unknown-screen entries whose files are gone, for the queue.
    unknown_deleted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"compressed {self.compressed}, deleted {self.deleted}, thinned {self.thinned} "
                f"({_mib(self.bytes_saved)} saved), {self.rows_deleted} database rows deleted")
        return text + (f", {len(self.errors)} errors" if self.errors else "")


def apply(retention_plan: RetentionPlan) -> ApplyResult:
    """Carry out ``retention_plan``. A failing file is logged and reported, the rest goes on;
    each table's deletions are one transaction. Compression writes the new file atomically
    with the old mtime, points step rows at it, and only then removes the PNG, so every
    stored reference always names a file that exists."""
    out = ApplyResult()
    done: list[FileAction] = []
    for action in retention_plan.files:
        if action.action == "compress":
            try:
                saved = _write_compressed(action, retention_plan.policy)
            except (OSError, ValueError) as exc:
                out.errors.append(f"compress {action.path}: {exc}")
                log.error("retention compress failed path=%s error=%s", action.path, exc)
                continue
            out.bytes_saved += saved
            done.append(action)
    compressed_errors = [a for a in done if a.kind == "error"]
    farm_db = retention_plan.farm_db or Database(retention_plan.data_dir / FARM_DB_NAME)
    if compressed_errors and farm_db.exists():
        try:
            out.step_refs_updated = _repoint_steps(farm_db, compressed_errors)
        except (*_DB_ERRORS, FarmError) as exc:
            # The PNGs stay: the rows still name them, and the next run tries again.
            out.errors.append(f"update {farm_db}:execution_steps.screenshot: {exc}")
            log.error("retention repoint failed db=%s error=%s", farm_db, exc)
            done = [a for a in done if a.kind != "error"]
    for action in done:
        _unlink(action.path, out)
        out.compressed += 1

    for action in retention_plan.files:
        if action.action == "compress":
            continue
        freed = 0
        ok = True
        for path in (*action.companions, action.path):
            size = _size(path)
            if _unlink(path, out):
                freed += size
            else:
                ok = False
                break  # the JSON stayed: keep its PNG too, or the entry would lose its image
        out.bytes_saved += freed
        if ok:
            if action.action == "thin":
                out.thinned += 1
            else:
                out.deleted += 1
            if action.kind == "error":
                _remove_if_empty(action.path.parent)
            elif action.kind == "unknown":
                out.unknown_deleted.append(action.path.stem)

    by_db: dict[Database, list[RowAction]] = {}
    for row in retention_plan.rows:
        by_db.setdefault(row.db, []).append(row)
    for db, rows in by_db.items():
        out.rows_deleted += _delete_rows(db, rows, out)
    log.info("retention applied %s", out.summary())
    return out


class RetentionJob:
    """The coordinator's daily retention run: ``run_once(now)`` plans and applies retention
    to the data folder and makes the unknown-screens queue forget what was deleted;
    ``loop(clock, sleep)`` waits for ``policy.run_at`` each day and runs it in a worker
    thread. Both the clock and the sleep are passed in, so tests never really wait."""

    # A long wait is slept in slices, re-reading the clock after each, so a suspended
    # machine or a clock step does not push the run a whole slice late.
    MAX_SLEEP_S = 600.0

    def __init__(self, data_dir: str | os.PathLike, policy: RetentionPolicy | None = None, *,
                 unknown: Any = None, farm_db: str | os.PathLike | None = None,
                 event_db: str | os.PathLike | None = None,
                 target: DbTarget | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.policy = policy or RetentionPolicy()
        self.unknown = unknown  # an UnknownScreenQueue (anything with ``forget(ids)``) or None
        self.farm_db, self.event_db = farm_db, event_db
        self.target = target  # the farm database (None or sqlite: the data folder's files)

    def run_once(self, now: datetime) -> ApplyResult:
        """One retention run at ``now`` (blocking: files, the database, OpenCV)."""
        result = apply(plan(self.data_dir, now, self.policy, farm_db=self.farm_db,
                            event_db=self.event_db, target=self.target))
        if self.unknown is not None and result.unknown_deleted:
            self.unknown.forget(result.unknown_deleted)
        log.info("retention run at %s: %s", _utc(now).isoformat(timespec="seconds"),
                 result.summary())
        for error in result.errors:
            log.error("retention run error: %s", error)
        return result

    async def loop(self, clock: Any = None, sleep: Any = asyncio.sleep) -> None:
        """Forever: sleep until the next ``policy.run_at`` (UTC) after ``clock()``, then
        ``run_once`` in a worker thread. A failing run is logged; the next day runs again.
        Stops when cancelled."""
        clock = clock or (lambda: datetime.now(timezone.utc))
        while True:
            due = next_run(clock(), self.policy.run_at)
            log.info("retention next run at %s", due.isoformat(timespec="seconds"))
            while (left := (due - _utc(clock())).total_seconds()) > 0:
                await sleep(min(left, self.MAX_SLEEP_S))
            try:
                await asyncio.to_thread(self.run_once, clock())
            except Exception:  # noqa: BLE001 - one bad run must not end the daily job
                log.exception("retention run failed")


def dry_run(data_dir: str | os.PathLike, now: datetime, policy: RetentionPolicy | None = None,
            **db_paths: Any) -> RetentionPlan:
    """``plan`` and log each line; nothing is changed. The CLI prints the same lines."""
    result = plan(data_dir, now, policy, **db_paths)
    for line in result.lines():
        log.info("retention dry-run %s", line)
    log.info("%s", result.summary())
    return result


def _write_compressed(action: FileAction, policy: RetentionPolicy) -> int:
    import cv2  # only a run that compresses pays for importing OpenCV

    raw = action.path.read_bytes()
    import numpy as np

    frame = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError("not a decodable image")
    if policy.compress_format == "webp":
        ok, encoded = cv2.imencode(".webp", frame, [cv2.IMWRITE_WEBP_QUALITY, policy.compress_quality])
    else:
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, policy.compress_quality])
    if not ok:
        raise ValueError(f"{policy.compress_format} encoding failed")
    data = encoded.tobytes()
    assert action.target is not None
    write_atomic(action.target, data)
    # Ages are read from mtimes: the compressed copy must not look newer than the original.
    os.utime(action.target, (action.mtime, action.mtime))
    return max(0, len(raw) - len(data))


def _repoint_steps(db: Database, actions: list[FileAction]) -> int:
    """Point ``execution_steps.screenshot`` at the compressed files, in one transaction. The
    stored text is whatever data path the coordinator had (maybe relative), so rows are
    matched on the last three parts ``executions/<id>/<name>`` and only the suffix changes."""
    targets = {tuple(a.path.parts[-3:]): a.target.suffix for a in actions if a.target}
    updated = 0
    with _connect(db) as conn:
        if not _has_table(conn, "execution_steps"):
            return 0
        rows = conn.execute("SELECT step_id, screenshot FROM execution_steps "
                            "WHERE screenshot LIKE '%.png'").fetchall()
        changes = []
        for step_id, stored in rows:
            suffix = targets.get(tuple(Path(stored).parts[-3:]))
            if suffix is not None:
                changes.append((str(Path(stored).with_suffix(suffix)), step_id))
        with _transaction(conn):
            conn.executemany("UPDATE execution_steps SET screenshot = ? WHERE step_id = ?", changes)
        updated = len(changes)
    return updated


def _delete_rows(db: Database, rows: list[RowAction], out: ApplyResult) -> int:
    """Each table's deletions in one transaction, in plan order (steps before executions)."""
    deleted = 0
    try:
        opened = _connect(db)
    except FarmError as exc:
        out.errors.append(f"delete {db.name}: {exc}")
        log.error("retention delete failed db=%s error=%s", db, exc)
        return 0
    with opened as conn:
        groups: dict[str, list[RowAction]] = {}
        for row in rows:
            groups.setdefault(row.table, []).append(row)
        for table, actions in groups.items():
            try:
                with _transaction(conn):
                    n = sum(conn.execute(f"DELETE FROM {table} WHERE {a.where}", a.params).rowcount
                            for a in actions)
            except _DB_ERRORS as exc:
                out.errors.append(f"delete {db.name}:{table}: {exc}")
                log.error("retention delete failed db=%s table=%s error=%s", db, table, exc)
                continue
            deleted += n
            log.info("retention deleted db=%s table=%s rows=%d", db.name, table, n)
    return deleted


def _unlink(path: Path, out: ApplyResult) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return True  # someone else removed it: the goal is met
    except OSError as exc:
        out.errors.append(f"delete {path}: {exc}")
        log.error("retention delete failed path=%s error=%s", path, exc)
        return False
    return True


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (or gone): nothing to tidy


# --- helpers --------------------------------------------------------------------------------


# Either engine's connection: both take ``execute``/``executemany`` with ``?`` placeholders.
_Connection = sqlite3.Connection | PgConnection


class _Closing:
    """A connection as a context manager that closes (sqlite3's own only commits)."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def __enter__(self) -> _Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _connect(db: Database, readonly: bool = False) -> _Closing:
    """A connection to ``db``; ``readonly`` refuses any write (planning changes nothing).
    A PostgreSQL server that cannot be reached is a ``FarmError`` naming it."""
    if db.target is not None:
        target = db.target
        try:
            pg = connect_sync(target.url, target.password)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            # libpq's message runs over lines (a hint on the next): one line for a log or CLI.
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise FarmError(f"farm database {target.describe()}: {reason}") from None
        try:
            # Retention is the farm's own work: connect_sync's session already sees every
            # client's rows (row-level security).
            if readonly:
                pg.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        except BaseException:
            pg.close()
            raise
        return _Closing(pg)
    assert db.path is not None
    if readonly:
        conn = sqlite3.connect(f"{db.path.resolve().as_uri()}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(db.path)
    # The coordinator writes these files too; wait for its transaction instead of failing.
    conn.execute("PRAGMA busy_timeout=5000")
    if not readonly:
        # Off by default in SQLite; a PostgreSQL database always checks them.
        conn.execute("PRAGMA foreign_keys=ON")
    return _Closing(conn)


def _has_table(conn: _Connection, table: str) -> bool:
    if isinstance(conn, PgConnection):
        return conn.execute("SELECT to_regclass(?)", (table,)).fetchone()[0] is not None
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (table,)).fetchone() is not None


@contextlib.contextmanager
def _transaction(conn: _Connection) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    if isinstance(conn, PgConnection):
        with conn.raw.transaction():
            yield
    else:
        with conn:
            yield


def _count(conn: _Connection, table: str, where: str, params: tuple) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", params).fetchone()[0]


def _files(folder: Path) -> Iterable[tuple[Path, os.stat_result]]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    out = []
    for entry in entries:
        # Temp files of an atomic write in progress are not data yet.
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                out.append((Path(entry.path), entry.stat(follow_symlinks=False)))
        except OSError:
            pass  # vanished while listing
    return out


def _images(folder: Path) -> list[tuple[Path, os.stat_result]]:
    return sorted((p, st) for p, st in _files(folder) if p.suffix.lower() in IMAGE_SUFFIXES)


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder)
                      if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except OSError:
        return []


def _shot_time(path: Path, st: os.stat_result) -> float:
    """When a regular screenshot was taken: the epoch in its name, else its mtime."""
    try:
        return float(path.stem)
    except ValueError:
        return st.st_mtime


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("retention needs an aware UTC datetime for now")
    return when.astimezone(timezone.utc)


def _age(now: datetime, epoch: float) -> timedelta:
    return timedelta(seconds=now.timestamp() - epoch)


def _ago(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f}d" if hours >= 48 else f"{hours:.1f}h"


def _hour_text(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, timezone.utc).strftime("%Y-%m-%d %H:00Z")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def run_command(data_dir: str | os.PathLike, *, dry_run: bool, config: str | None,
                now: datetime, environ: Mapping[str, str] | None = None,
                echo: Any = print, target: DbTarget | None = None) -> int:
    """`farm retention`: one line per action, then a summary; 0 done, 1 if some action
    failed (each failure printed). Bad config raises ``ValidationError`` naming the field.
    ``target``: the farm database (None or sqlite: the data folder's files)."""
    policy = load_policy(config, environ)
    data = Path(data_dir)
    if not data.is_dir():
        raise ValidationError(str(data), "no such data folder (the coordinator's --data)")
    result = plan(data, now, policy, target=target)
    for line in result.lines():
        echo(line)
    if dry_run:
        echo(f"{result.summary()}; dry run: nothing changed")
        return 0
    done = apply(result)
    for error in done.errors:
        echo(f"error {error}")
    echo(f"retention done: {done.summary()}")
    return 1 if done.errors else 0
