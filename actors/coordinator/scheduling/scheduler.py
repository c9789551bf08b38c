"""The coordinator's scheduler core (spec 11.2, 7.5.9, 14.3): pure planning, clock injected.

Owns: the schedule definitions (immediate, scheduled, window, recurring by cron or by the
spec's recurrence JSON), when each fires (``next_fire``, ``plan_window``), and turning a due
occurrence into jobs, one per (occurrence, phone, account) of the target resolved at fire
time (a workflow schedule's occurrence goes to the injected ``fire_workflow`` instead, which
adds one schedule per workflow sequence). Then the jobs' life up to dispatch: a queue per phone (never two jobs running on one
phone), round robin across a phone's accounts, a stagger per node (no two dispatches to one
node within ``stagger_s``), dependencies (a failed prerequisite skips its dependents with the
reason), the per-schedule retry policy, misfires after downtime (run once late within the
grace period, else skip), and a list of events the caller persists.

Does not own: talking to phones (``dispatch`` is injected; it asks the phone actor for its
lock and starts the run), resolving scopes and groups (``resolve_targets``), where a phone
lives (``node_of``), nor storage. All state is plain msgspec data in ``SchedulerState`` so a
later session can store it in the farm DB and hand it back to ``Scheduler(state=...)``.

Nothing here sleeps or reads the wall clock: ``tick()`` is called by the owner (about once
a second in production; tests assign the fake clock and call it).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import inspect
import math
import random
import zlib
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Awaitable, Callable, Literal, Union

import msgspec
from croniter import CroniterBadDateError, croniter
from msgspec import Meta

from protocol.errors import split_msgspec_error
from protocol.names import printable

ScheduleType = Literal["immediate", "scheduled", "window", "recurring"]
ScheduleStatus = Literal["pending", "active", "paused", "completed", "cancelled", "failed"]
JobStatus = Literal["queued", "running", "completed", "failed", "skipped", "cancelled"]

TERMINAL: frozenset[str] = frozenset({"completed", "failed", "skipped", "cancelled"})
# Schedule statuses after which it fires no more (``failed``: firing or planning it raised).
ENDED: frozenset[str] = frozenset({"completed", "cancelled", "failed"})
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

# The bounds of what a schedule takes (published in the OpenAPI document through the types).
# A window's runs: one a minute for a whole day at most. Each run plays a sequence on every
# phone of the target, and a phone plays one sequence at a time, a minute or more each, so a
# phone cannot do more in a day; more runs or a longer span is a recurring (cron) schedule.
# It also bounds the work of drawing a window's times (done once per schedule, cached).
MAX_WINDOW_COUNT = 1440
# Stored and served as JSON: a signed 64-bit integer, what JSON encoders and databases take.
MAX_SEED = 2**63 - 1
DAY_S = 86_400.0
# The same bounds as a workflow sequence's retry (actors.control.workflows.RetryBody).
MAX_RETRY_ATTEMPTS = 20
MAX_RETRY_DELAY_S = DAY_S
# An occurrence more than a week late is history, not a misfire to run.
MAX_GRACE_S = 7 * DAY_S
MAX_IDS = 100  # depends_on / after: a workflow has at most 100 sequences

Time = Annotated[datetime, Meta(tz=True, description="ISO 8601 with a zone (Z or +HH:MM)")]
Name = printable(200)  # a sequence or workflow name: no control characters (protocol.names)
ScheduleRef = printable(200, 1)


class ScheduleInvalid(ValueError):
    """A schedule that cannot be planned; ``field`` is the JSON path of the cause (``$.cron``),
    the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


class Misfire(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What to do with an occurrence found late (the coordinator was down): run it once late
    if it is at most ``grace_s`` late, else skip it (recorded)."""

    grace_s: Annotated[float, Meta(ge=0, le=MAX_GRACE_S,
                                   description="seconds late an occurrence may still run "
                                               "(at most a week)")] = 60.0


class JobRetry(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Retry of a whole sequence run on one phone: up to ``attempts`` more tries after a
    failure, each queued again ``delay_s`` after the failure. (Step retries are the node's,
    ``sequences.model.RetryPolicy``.)"""

    attempts: Annotated[int, Meta(ge=0, le=MAX_RETRY_ATTEMPTS,
                                  description="more tries after a failed run")] = 0
    delay_s: Annotated[float, Meta(ge=0, le=MAX_RETRY_DELAY_S,
                                   description="seconds from a failure to its retry "
                                               "(at most a day)")] = 60.0


class Recurrence(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The spec's recurrence JSON (see ``recurrence_to_cron``): ``every`` unit, at ``at``
    (``HH:MM``; ``every: hour`` uses its minutes, ``":15"``), on ``days`` (weekday names for
    ``week``, default ``["mon"]``; days of the month for ``month``, default ``[1]``), every
    ``interval`` units (minute, hour and day only)."""

    every: Literal["minute", "hour", "day", "week", "month"]
    at: Annotated[str, Meta(pattern=r"^([01]?[0-9]|2[0-3])?:[0-5][0-9]$",
                            description="HH:MM in UTC (\":MM\" for every hour)")] = "00:00"
    days: Annotated[list[Union[Annotated[str, Meta(pattern=r"^[A-Za-z]{3,9}$")],
                               Annotated[int, Meta(ge=1, le=31)]]],
                    Meta(min_length=1, max_length=31,
                         description="week: weekday names (mon, Thursday); month: 1..31")
                    ] | None = None
    interval: Annotated[int, Meta(ge=1, le=59, description="every N minutes (up to 59), "
                                  "hours (23) or days (31)")] = 1


class Schedule(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One scheduled workflow sequence (a row of spec 7.5.9's ``scheduled_workflows``).

    ``target`` is a scope text (``account:tiktok.all@phone1``) or ``group:NAME``, resolved
    when each occurrence fires. By type: ``immediate`` fires on the first tick after it is
    added (``at`` optional); ``scheduled`` at ``at``; ``window`` at ``count`` random times in
    [``window_start``, ``window_end``], at least ``min_gap_s`` apart, drawn from ``seed``
    (default: derived from ``id``, so the plan is stable across restarts); ``recurring`` by
    ``cron`` (5 fields, UTC) or ``recurrence`` (see ``recurrence_to_cron``), optionally bounded
    by ``until``. ``depends_on`` holds schedule ids or job ids (see ``Scheduler``); ``after``
    too, but only orders: a job waits until those prerequisites ended, whatever their outcome
    (a workflow's sequences run in order; only a real dependency skips on failure).
    ``workflow`` names a workflow definition instead of ``sequence`` (leave that empty):
    each occurrence starts a workflow execution on the target (``Scheduler.fire_workflow``).
    ``clients``: the client ids the schedule belongs to, set by the coordinator from the
    caller who added it (never from a request body); its target is resolved among those
    clients' phones only (``resolve_targets(target, clients=...)``). None: a super user's,
    every phone. All datetimes are timezone-aware; they are compared as UTC.
    """

    id: Annotated[str, Meta(max_length=64)]
    sequence: Name
    target: Annotated[str, Meta(max_length=10_000)]
    type: ScheduleType
    at: Time | None = None
    window_start: Time | None = None
    window_end: Time | None = None
    count: Annotated[int, Meta(ge=1, le=MAX_WINDOW_COUNT,
                               description="runs in the window: at most 1,440, one a minute "
                                           "for a day (a phone plays one sequence at a time, "
                                           "a minute or more each); more is a recurring "
                                           "schedule")] = 1
    min_gap_s: Annotated[float, Meta(ge=0, le=DAY_S,
                                     description="seconds at least between two runs of a "
                                                 "window (at least 1 is used)")] = 60.0
    seed: Annotated[int, Meta(ge=0, le=MAX_SEED,
                              description="draws the window's times (default: from the id); "
                                          "0..2^63-1")] | None = None
    cron: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    recurrence: Recurrence | None = None
    until: Time | None = None
    misfire: Misfire = msgspec.field(default_factory=Misfire)
    depends_on: Annotated[list[ScheduleRef], Meta(max_length=MAX_IDS)] = \
        msgspec.field(default_factory=list)
    retry: JobRetry = msgspec.field(default_factory=JobRetry)
    status: ScheduleStatus = "pending"
    after: Annotated[list[ScheduleRef], Meta(max_length=MAX_IDS)] = \
        msgspec.field(default_factory=list)
    workflow: Name | None = None
    # Only checked when added: a time that is already past is refused unless this is set.
    allow_past: Annotated[bool, Meta(description="accept a window, time or until that is "
                                                 "already past (else a 400)")] = False
    clients: Annotated[list[int], Meta(max_length=10_000, description=(
        "read-only: the clients the schedule belongs to (its creator's), whose phones its "
        "target means; absent: a super user's"))] | None = None
    skip_at_risk: Annotated[bool, Meta(description=(
        "skip a job whose account's health is at_risk (GET /api/accounts): the job ends "
        "skipped and the schedule's events name the account and why"))] = False

    def __post_init__(self) -> None:
        # A recurrence given as a dict (Python callers) is checked and typed here.
        if isinstance(self.recurrence, dict):
            self.recurrence = as_recurrence(self.recurrence)


class ScheduleState(msgspec.Struct, omit_defaults=True):
    """Where a schedule stands: the next due occurrence (None: nothing more to fire), the
    last fired occurrence, how many fired, how many of its finished jobs were dropped from
    the state, by status (see ``Scheduler``), and why it failed (status ``failed``)."""

    next_due: datetime | None = None
    last_occurrence: datetime | None = None
    fired: int = 0
    dropped: dict[str, int] = msgspec.field(default_factory=dict)
    error: str | None = None


class Job(msgspec.Struct, omit_defaults=True):
    """One execution to run: a schedule occurrence on one phone as one account (a row of spec
    7.5.9's ``sequence_executions``). ``waits_on`` are bound prerequisite job ids;
    ``pending_deps`` are prerequisite schedules that have not fired yet."""

    id: str
    schedule_id: str
    sequence: str
    occurrence: datetime
    serial: str
    account: str | None
    queued_at: datetime
    status: JobStatus = "queued"
    attempt: int = 1
    not_before: datetime | None = None
    waits_on: list[str] = msgspec.field(default_factory=list)
    pending_deps: list[str] = msgspec.field(default_factory=list)
    # Bound prerequisites (in waits_on) that only order this job (the schedule's ``after``).
    order_only: list[str] = msgspec.field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None


class Event(msgspec.Struct, omit_defaults=True):
    """One thing the scheduler did, for the caller to persist and show. Kinds: ``fired``,
    ``misfire``, ``queued``, ``dispatched``, ``locked``, ``dispatch_failed``, ``finished``,
    ``retry``, ``skipped``, ``cancelled``, ``error`` (firing or planning a schedule raised:
    it is failed, ``reason`` says why)."""

    at: datetime
    kind: str
    schedule_id: str | None = None
    job_id: str | None = None
    serial: str | None = None
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class SchedulerState(msgspec.Struct):
    """Everything the scheduler knows, as plain data (msgspec-encodable as a whole)."""

    schedules: dict[str, Schedule] = msgspec.field(default_factory=dict)
    states: dict[str, ScheduleState] = msgspec.field(default_factory=dict)
    jobs: dict[str, Job] = msgspec.field(default_factory=dict)
    queues: dict[str, list[str]] = msgspec.field(default_factory=dict)   # serial -> job ids
    running: dict[str, str] = msgspec.field(default_factory=dict)        # serial -> job id
    last_account: dict[str, str] = msgspec.field(default_factory=dict)   # serial -> account
    node_last: dict[str, datetime] = msgspec.field(default_factory=dict)  # node -> dispatch


class Changes:
    """What changed in a ``SchedulerState`` since the owner last saved: schedule ids and job
    ids to write again, and those to delete; the phones whose queue, running job or last
    account may have changed."""

    def __init__(self) -> None:
        self.schedules: set[str] = set()
        self.jobs: set[str] = set()
        self.phones: set[str] = set()
        self.gone_schedules: set[str] = set()
        self.gone_jobs: set[str] = set()

    def gone_job(self, job_id: str) -> None:
        self.jobs.discard(job_id)
        self.gone_jobs.add(job_id)

    def gone_schedule(self, schedule_id: str) -> None:
        self.schedules.discard(schedule_id)
        self.gone_schedules.add(schedule_id)

    def __bool__(self) -> bool:
        return bool(self.schedules or self.jobs or self.gone_schedules or self.gone_jobs)


# --- pure time planning -------------------------------------------------------------------

def occurrence_run_id(schedule_id: str, occurrence: datetime) -> str:
    """The run an occurrence's jobs share (their ids start with it): ``<schedule id>@<UTC stamp>``."""
    return f"{schedule_id}@{occurrence.strftime('%Y%m%dT%H%M%SZ')}"


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t.isoformat()}: use timezone-aware UTC")
    return t.astimezone(timezone.utc)


def plan_window(start: datetime, end: datetime, count: int, rng: random.Random,
                min_gap_s: float = 60.0) -> list[datetime]:
    """``count`` random times inside [start, end], sorted, in whole seconds after ``start``.

    Stratified so they do not bunch: the window is cut into ``count`` equal slots and each
    time is drawn in its slot, ``min_gap_s / 2`` away from the slot edges, so neighbours are
    at least ``min_gap_s`` apart (at least 1 s: the times are distinct). Deterministic for a
    seeded ``rng``. Raises ValueError when the window is too short for that many times.
    """
    start, end = _utc(start), _utc(end)
    if count <= 0:
        return []
    if end <= start:
        raise ValueError("window_end must be after window_start")
    gap = max(1.0, float(min_gap_s))
    span = (end - start).total_seconds()
    slot = span / count
    out = []
    for i in range(count):
        lo = math.ceil(i * slot + gap / 2)
        hi = math.floor((i + 1) * slot - gap / 2)
        if lo > hi:
            raise ValueError(f"window of {span:.0f} s cannot hold {count} times "
                             f"{gap:.0f} s apart")
        out.append(start + timedelta(seconds=rng.randint(lo, hi)))
    return out


def _parse_hhmm(text: str) -> tuple[int, int]:
    try:
        hh, mm = text.split(":")
        h, m = int(hh or 0), int(mm)
    except ValueError:
        raise ScheduleInvalid("$.recurrence.at", f"must be HH:MM, got {text!r}") from None
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ScheduleInvalid("$.recurrence.at", f"out of range: {text!r}")
    return h, m


def as_recurrence(rec: Recurrence | dict[str, Any]) -> Recurrence:
    """A recurrence as its type (a dict is checked member by member: ScheduleInvalid names
    the member, ``$.recurrence.at``)."""
    if isinstance(rec, Recurrence):
        return rec
    try:
        return msgspec.convert(rec, Recurrence)
    except msgspec.ValidationError as exc:
        path, reason = split_msgspec_error(str(exc))
        raise ScheduleInvalid("$.recurrence" + path[1:], reason) from None
    except UnicodeEncodeError:  # a key with a lone surrogate: not text msgspec can name
        raise ScheduleInvalid("$.recurrence", "a member name is not valid text") from None


# Largest ``interval`` per unit: a cron step beyond the unit's range would never repeat.
_MAX_INTERVAL = {"minute": 59, "hour": 23, "day": 31}


def recurrence_to_cron(rec: Recurrence | dict[str, Any]) -> str:
    """The spec's recurrence JSON as a 5-field cron (UTC).

    ``{"every": "minute"|"hour"|"day"|"week"|"month", "at": "HH:MM", "days": [...],
    "interval": N}``: ``hour`` uses the minutes of ``at`` (``":15"`` or ``"00:15"``);
    ``week`` takes ``days`` as names (``"mon"``; default ``["mon"]``); ``month`` takes
    ``days`` as days of the month (default ``[1]``); ``interval`` (minute/hour/day only)
    means every N units. Raises ScheduleInvalid (naming the member) for anything else.
    """
    rec = as_recurrence(rec)
    every, n = rec.every, rec.interval
    h, m = _parse_hhmm(rec.at)
    if n != 1 and every not in _MAX_INTERVAL:
        raise ScheduleInvalid("$.recurrence.interval",
                              f"interval is not supported with every={every!r}")
    if n > _MAX_INTERVAL.get(every, 1):
        raise ScheduleInvalid("$.recurrence.interval",
                              f"{n}: every={every!r} takes at most {_MAX_INTERVAL[every]}")
    step = "" if n == 1 else f"/{n}"
    if every == "minute":
        return f"*{step} * * * *"
    if every == "hour":
        return f"{m} *{step} * * *"
    if every == "day":
        return f"{m} {h} *{step} * *"
    if every == "week":
        names = []
        for d in rec.days or ["mon"]:
            key = str(d).lower()[:3]
            if not isinstance(d, str) or key not in _DAYS:
                raise ScheduleInvalid("$.recurrence.days", f"unknown weekday {d!r}")
            names.append(key)
        return f"{m} {h} * * {','.join(names)}"
    days = rec.days or [1]
    if not all(isinstance(d, int) for d in days):
        raise ScheduleInvalid("$.recurrence.days", f"month days must be 1..31, got {days!r}")
    return f"{m} {h} {','.join(str(d) for d in days)} * *"


def cron_of(schedule: Schedule) -> str:
    """The cron expression of a recurring schedule (its own, or its recurrence's)."""
    if schedule.cron:
        expr, field = schedule.cron, "$.cron"
    elif schedule.recurrence is not None:
        expr, field = recurrence_to_cron(schedule.recurrence), "$.recurrence"
    else:
        raise ScheduleInvalid("$.cron", f"schedule {schedule.id}: recurring needs cron or "
                                        "recurrence")
    # croniter also takes a sixth (seconds) field: every second would fire every tick.
    if not croniter.is_valid(expr) or (not expr.startswith("@") and len(expr.split()) != 5):
        raise ScheduleInvalid(field, f"schedule {schedule.id}: invalid cron {expr!r} (5 fields: "
                                     "minute hour day month weekday, UTC)")
    return expr


def window_times(schedule: Schedule) -> tuple[datetime, ...]:
    """The planned times of a window schedule (stable: seeded from ``seed`` or the id),
    drawn once per window and kept (``_planned_window``)."""
    if schedule.window_start is None or schedule.window_end is None:
        field = "$.window_start" if schedule.window_start is None else "$.window_end"
        raise ScheduleInvalid(field, f"schedule {schedule.id}: window needs window_start and "
                                     "window_end")
    seed = schedule.seed if schedule.seed is not None else zlib.crc32(schedule.id.encode())
    try:
        return _planned_window(_utc(schedule.window_start), _utc(schedule.window_end),
                               schedule.count, seed, schedule.min_gap_s)
    except ValueError as exc:
        field = "$.window_end" if schedule.window_end <= schedule.window_start else "$.count"
        raise ScheduleInvalid(field, f"schedule {schedule.id}: {exc}") from None


# Keyed by what draws the times, so each window is drawn once however often the tick asks
# (the misfire search used to draw it again for every missed time: count squared). Bounded:
# at most MAX_WINDOW_COUNT times each, ~20 MB if full of the largest windows.
@functools.lru_cache(maxsize=256)
def _planned_window(start: datetime, end: datetime, count: int, seed: int,
                    min_gap_s: float) -> tuple[datetime, ...]:
    return tuple(plan_window(start, end, count, random.Random(seed), min_gap_s))


def validate(schedule: Schedule) -> None:
    """Raise ScheduleInvalid (naming the field) if the schedule cannot be planned."""
    if bool(schedule.workflow) == bool(schedule.sequence):
        raise ScheduleInvalid("$.sequence", f"schedule {schedule.id}: give a sequence or a "
                                            "workflow (one of them)")
    for name in ("at", "window_start", "window_end", "until"):
        t = getattr(schedule, name)
        if t is not None and t.tzinfo is None:
            raise ScheduleInvalid(f"$.{name}", f"naive datetime {t.isoformat()}: give a zone "
                                               "(Z or +HH:MM)")
        if t is not None:
            try:
                _utc(t)
            except OverflowError:  # 9999-12-31T23:59-05:00 is past year 9999 in UTC
                raise ScheduleInvalid(f"$.{name}", f"{t.isoformat()} is out of range in "
                                                   "UTC") from None
    if schedule.type == "scheduled" and schedule.at is None:
        raise ScheduleInvalid("$.at", f"schedule {schedule.id}: scheduled needs at")
    if schedule.type == "window":
        window_times(schedule)
    if schedule.type == "recurring":
        _check_fires(schedule)


def _check_fires(schedule: Schedule) -> None:
    """A recurring schedule's cron must name a time that exists: croniter takes
    ``0 0 31 2 *`` as valid text and only fails when asked for its next time."""
    expr = cron_of(schedule)
    field = "$.cron" if schedule.cron else "$.recurrence"
    try:
        croniter(expr, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(datetime)
    except (CroniterBadDateError, ValueError) as exc:
        raise ScheduleInvalid(field, f"schedule {schedule.id}: cron {expr!r} never fires "
                                     f"({exc})") from None


def refuse_past(schedule: Schedule, now: datetime) -> None:
    """Raise ScheduleInvalid when the time that ends the schedule is already past (a window's
    end, a scheduled time, a recurring schedule's ``until``): it would never run, or only
    as a misfire; ``allow_past`` accepts it. A scheduled time late by no more than its
    misfire grace is taken (it runs at once, as a misfire would): the sender's clock may be
    a little behind the coordinator's."""
    if schedule.allow_past:
        return
    name = {"window": "window_end", "scheduled": "at", "recurring": "until"}.get(schedule.type)
    t = getattr(schedule, name) if name else None
    grace = timedelta(seconds=schedule.misfire.grace_s if schedule.type == "scheduled" else 0)
    if t is not None and _utc(t) + grace <= _utc(now):
        raise ScheduleInvalid(f"$.{name}", f"{_utc(t).isoformat()} is already past (now "
                                           f"{_utc(now).isoformat()}): set allow_past to add "
                                           "it anyway")


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """The first occurrence of ``schedule`` strictly after ``after``, or None.

    ``immediate`` has an occurrence only at ``at`` if given (the scheduler fires it on the
    tick after it is added); ``scheduled`` at ``at``; ``window`` at its planned times;
    ``recurring`` by its cron, up to ``until``.
    """
    after = _utc(after)
    if schedule.type in ("immediate", "scheduled"):
        at = _utc(schedule.at) if schedule.at is not None else None
        return at if at is not None and at > after else None
    if schedule.type == "window":
        times = window_times(schedule)
        i = bisect.bisect_right(times, after)
        return times[i] if i < len(times) else None
    if schedule.type == "recurring":
        # croniter works in whole seconds: step from the second itself so a fraction past an
        # occurrence never yields that same occurrence again.
        t = croniter(cron_of(schedule), after.replace(microsecond=0)).get_next(datetime)
        t = _utc(t)
        if schedule.until is not None and t > _utc(schedule.until):
            return None
        return t
    raise ValueError(f"unknown schedule type {schedule.type!r}")


def last_fire(schedule: Schedule, upto: datetime) -> datetime | None:
    """The last occurrence of ``schedule`` at or before ``upto``, or None: found directly
    (a bisection, a cron step back), never by stepping through the occurrences before."""
    upto = _utc(upto)
    if schedule.type in ("immediate", "scheduled"):
        at = _utc(schedule.at) if schedule.at is not None else None
        return at if at is not None and at <= upto else None
    if schedule.type == "window":
        times = window_times(schedule)
        i = bisect.bisect_right(times, upto)
        return times[i - 1] if i else None
    if schedule.type == "recurring":
        if schedule.until is not None:
            upto = min(upto, _utc(schedule.until))
        # get_prev is strictly before its start: start a second on (cron times are whole).
        start = upto.replace(microsecond=0) + timedelta(seconds=1)
        return _utc(croniter(cron_of(schedule), start).get_prev(datetime))
    raise ValueError(f"unknown schedule type {schedule.type!r}")


# --- the scheduler ------------------------------------------------------------------------

Clock = Callable[[], datetime]
# Sync or async: the real resolver reads the farm DB.
ResolveTargets = Callable[..., Any]  # (target, clients=frozenset | absent) -> targets


class Scheduler:
    """Fires due schedules into per-phone queues and dispatches them, one job per phone.

    ``clock`` gives the current UTC time; ``resolve_targets(target)`` the (serial, account)
    pairs of a scope or ``group:NAME`` (sync or async), called at fire time, with
    ``clients=frozenset(ids)`` for a schedule that belongs to clients; ``node_of(serial)``
    the node holding a phone; ``dispatch(job)`` asks the phone's actor for its lock and starts
    the run, answering ``"started"``, ``"locked"`` (held by someone else: the job stays queued
    and is tried again on a later tick) or anything else (failed to start: the retry policy
    applies). The owner reports the end of a started job with ``job_finished``.

    Dependencies: an id in ``depends_on`` naming a job binds to that job. One naming a schedule
    binds, when the dependent job is created, to the jobs of that schedule's latest occurrence
    on the same phone and account, else on the same phone, else all its jobs; if the
    prerequisite has not fired yet the job waits for it to fire (skipped if it never will).
    A dependent runs when all bound jobs completed; if one failed (after its retries), was
    skipped or cancelled, or the prerequisite ran on no phone, the dependent is skipped with
    the reason.

    Retention: a finished job leaves ``state.jobs`` at the end of a tick unless it belongs to
    its schedule's latest occurrence (what binding looks up), is bound by an unfinished job,
    or is named by id in a ``depends_on``; only a count per status stays
    (``ScheduleState.dropped``). With ``prune_finished``, a one-shot schedule (immediate,
    scheduled, window) that completed or was cancelled and whose jobs all ended leaves the
    state whole at the end of a tick (``finished`` lists it for the owner), unless an unfinished schedule names it (or
    one of its jobs) as a prerequisite or ``keep(schedule_id)`` says so. The events are the
    history; the state is the live work.

    Changes: the schedules and jobs changed or removed since ``take_changes`` are tracked so
    the owner saves only those (the state is not re-saved whole on every tick).

    Status: a schedule that fired its last occurrence stays ``active`` until none of its jobs
    is queued or running, then it is ``completed``. One whose firing or planning raises is
    ``failed`` (an ``error`` event and ``ScheduleState.error`` say why); the tick goes on
    with the other schedules.

    Node stagger: a token bucket per node, one start per ``stagger_s`` on average and at most
    ``max_node_burst`` starts at once (1: never two starts within ``stagger_s``; the owner
    raises it to tick/stagger so a gap shorter than its tick still gives 1/gap starts a
    second).
    """

    def __init__(self, *, clock: Clock, resolve_targets: ResolveTargets,
                 node_of: Callable[[str], str], dispatch: Callable[[Job], Awaitable[str]],
                 stagger_s: float = 1.0, late_after_s: float = 5.0,
                 state: SchedulerState | None = None,
                 max_concurrent_dispatch: int = 1024,
                 fire_workflow: Callable[[Schedule, datetime], Any] | None = None,
                 prune_finished: bool = False,
                 keep: Callable[[str], bool] | None = None,
                 max_node_burst: int = 1) -> None:
        self.clock = clock
        self.resolve_targets = resolve_targets
        self.node_of = node_of
        self.dispatch = dispatch
        # A workflow schedule's occurrence (sync or async); it adds the sequences' schedules.
        self.fire_workflow = fire_workflow
        self.stagger = timedelta(seconds=stagger_s)
        # Lateness below this is ordinary tick jitter, not worth a misfire event.
        self.late_after_s = late_after_s
        self.state = state or SchedulerState()
        self.events: list[Event] = []
        if max_concurrent_dispatch < 1:
            raise ValueError("max_concurrent_dispatch must be >= 1")
        # The ready jobs of a tick are dispatched concurrently, this many at most at once.
        # High: a phone:all burst batches best with every start in flight (the writer's,
        # the link's and the node journal's batches grow with it: 1,000 phones started in
        # under a second in bench/scheduler.py, 1.5 s with 64); a phone still takes one job
        # at a time, and AI texts have their own cap (AIConfig.max_concurrent).
        self.max_concurrent_dispatch = max_concurrent_dispatch
        # Phones with a dispatch in flight (transient, not state): never picked again meanwhile.
        self._dispatching: set[str] = set()
        self.prune_finished = prune_finished
        # Schedules the owner finishes itself (a workflow's): never pruned here.
        self.keep = keep
        if max_node_burst < 1:
            raise ValueError("max_node_burst must be >= 1")
        self.max_node_burst = max_node_burst
        self.changes = Changes()
        # Pruned finished schedules (with their final ScheduleState) since take_finished().
        self.finished: list[tuple[Schedule, ScheduleState]] = []

    # -- schedules

    def add(self, schedule: Schedule) -> Schedule:
        """Validate and register a schedule; its first occurrence is planned now. Raises
        ScheduleInvalid (naming the field) with nothing stored."""
        validate(schedule)
        if schedule.id in self.state.schedules:
            raise ScheduleInvalid("$.id", f"schedule {schedule.id} exists")
        st = ScheduleState(next_due=self._first_due(schedule, self._now()))
        # Planned: only now is anything stored (a half-stored schedule broke every tick).
        self.state.schedules[schedule.id] = schedule
        self.state.states[schedule.id] = st
        if st.next_due is None:
            schedule.status = "completed"
        self.changes.schedules.add(schedule.id)
        return schedule

    @staticmethod
    def _first_due(schedule: Schedule, now: datetime) -> datetime | None:
        if schedule.type == "immediate":
            return _utc(schedule.at) if schedule.at is not None else now
        if schedule.type == "scheduled":
            return _utc(schedule.at)  # type: ignore[arg-type]
        if schedule.type == "window":
            times = window_times(schedule)
            return times[0] if times else None
        field = "$.cron" if schedule.cron else "$.recurrence"
        try:
            # A new recurring schedule starts from now; earlier occurrences are not misfires.
            return next_fire(schedule, now - timedelta(seconds=1))
        except ScheduleInvalid:
            raise
        except ValueError as exc:  # croniter: a valid cron that never fires (Feb 31)
            raise ScheduleInvalid(field, f"schedule {schedule.id}: never fires: {exc}") from None

    def pause(self, schedule_id: str) -> None:
        """Stop firing (queued jobs stay queued)."""
        self.state.schedules[schedule_id].status = "paused"
        self.changes.schedules.add(schedule_id)

    def resume(self, schedule_id: str) -> None:
        """Fire again; occurrences missed while paused go through the misfire rule."""
        s = self.state.schedules[schedule_id]
        s.status = "active" if self.state.states[schedule_id].fired else "pending"
        self.changes.schedules.add(schedule_id)

    def cancel(self, schedule_id: str) -> None:
        """Stop firing and drop the schedule's queued jobs (running ones run to their end)."""
        s = self.state.schedules[schedule_id]
        s.status = "cancelled"
        self.state.states[schedule_id].next_due = None
        self.changes.schedules.add(schedule_id)
        now = self._now()
        for job in self.state.jobs.values():
            if job.schedule_id == schedule_id and job.status == "queued":
                self._finish(job, "cancelled", now, "schedule cancelled")
                self._event("cancelled", job, now, reason="schedule cancelled")

    # -- jobs

    def job_finished(self, job_id: str, status: str, error: str | None = None) -> None:
        """A started job ended (``completed``, ``failed`` or ``cancelled``): free its phone,
        and on failure queue it again if its schedule's retry policy allows."""
        job = self.state.jobs[job_id]
        now = self._now()
        self.changes.jobs.add(job_id)  # its phone's running job changes, event or not
        self.changes.phones.add(job.serial)
        if self.state.running.get(job.serial) == job_id:
            del self.state.running[job.serial]
        if job.status != "running":
            return
        self._event("finished", job, now, status=status, error=error)
        if status == "failed" and self._retry(job, now, error):
            return
        self._finish(job, status if status in TERMINAL else "failed", now, error)

    def take_events(self) -> list[Event]:
        """The events recorded since the last call (the caller persists them)."""
        out, self.events = self.events, []
        return out

    def next_slot(self) -> datetime | None:
        """The earliest time a node's stagger slot frees for a phone whose ready job waits
        for nothing else (None: no job waits only for its node's stagger). The owner ticks
        then, so a gap shorter than its tick still spaces the starts by the gap rather than
        by the tick."""
        now = self._now()
        best: datetime | None = None
        for serial, queue in self.state.queues.items():
            if not queue or serial in self.state.running or serial in self._dispatching:
                continue
            last = self.state.node_last.get(self.node_of(serial))
            if last is None or now - last >= self.stagger:
                continue
            slot = last + self.stagger
            if (best is None or slot < best) and any(
                    self._ready(self.state.jobs[j], now) for j in queue):
                best = slot
        return best

    def next_due(self) -> datetime | None:
        """The earliest time a schedule falls due or a waiting job's retry delay ends (None:
        nothing is planned). The owner ticks then, so a job starts at its planned time
        rather than up to a tick later."""
        times = [st.next_due for sid, st in self.state.states.items()
                 if st.next_due is not None
                 and self.state.schedules[sid].status in ("pending", "active")]
        times += [job.not_before for job in self.state.jobs.values()
                  if job.not_before is not None and job.status not in TERMINAL]
        return min(times, default=None)

    def queued(self, serial: str) -> list[Job]:
        """The jobs waiting for a phone, in queue order."""
        return [self.state.jobs[j] for j in self.state.queues.get(serial, [])]

    # -- the tick

    async def tick(self) -> list[Event]:
        """Fire what is due, settle dependencies, dispatch what may start. Returns the events
        of this tick (they are also kept in ``events``)."""
        mark = len(self.events)
        now = self._now()
        for sid in sorted(self.state.schedules):
            try:
                await self._fire_due(sid, now)
            except Exception as exc:  # noqa: BLE001 - one bad schedule must not stop the others
                self._fail(sid, now, exc)
        self._settle_dependencies(now)
        await self._dispatch_ready(now)
        self._complete_ended()
        self._prune()
        if self.prune_finished:
            self._prune_schedules()
        return self.events[mark:]

    def _fail(self, sid: str, now: datetime, exc: Exception) -> None:
        """Firing or planning ``sid`` raised: it fires no more (status ``failed``, the reason
        kept and recorded as an ``error`` event); the jobs it queued already stay."""
        s = self.state.schedules[sid]
        st = self.state.states.setdefault(sid, ScheduleState())
        s.status = "failed"
        st.next_due = None
        st.error = f"{type(exc).__name__}: {exc}"
        self._event("error", None, now, schedule_id=sid, reason=st.error)

    def _complete_ended(self) -> None:
        """A schedule that fires no more is completed once none of its jobs is queued or
        running (until then it stays ``active``)."""
        live = {j.schedule_id for j in self.state.jobs.values() if j.status not in TERMINAL}
        for sid, s in self.state.schedules.items():
            if (s.status == "active" and self.state.states[sid].next_due is None
                    and sid not in live):
                s.status = "completed"
                self.changes.schedules.add(sid)

    def take_changes(self) -> "Changes":
        """The schedules and jobs changed or removed since the last call."""
        out, self.changes = self.changes, Changes()
        return out

    def take_finished(self) -> list[tuple[Schedule, ScheduleState]]:
        """The finished schedules pruned since the last call, with their final state."""
        out, self.finished = self.finished, []
        return out

    def forget(self, schedule_id: str) -> None:
        """Remove a schedule and its jobs from the state (its events are the record)."""
        for jid in [j for j, job in self.state.jobs.items() if job.schedule_id == schedule_id]:
            job = self.state.jobs.pop(jid)
            q = self.state.queues.get(job.serial)
            if q and jid in q:
                q.remove(jid)
                self.changes.phones.add(job.serial)
            self.changes.gone_job(jid)
        self.state.schedules.pop(schedule_id, None)
        self.state.states.pop(schedule_id, None)
        self.changes.gone_schedule(schedule_id)

    def _prune_schedules(self) -> None:
        """Drop the finished one-shot schedules nothing live refers to (see the class)."""
        live_jobs = {j.schedule_id for j in self.state.jobs.values() if j.status not in TERMINAL}
        named: set[str] = set()
        for sid, s in self.state.schedules.items():
            if s.status in ENDED and sid not in live_jobs:
                continue
            for dep in (*s.depends_on, *s.after):
                named.add(dep)
                job = self.state.jobs.get(dep)
                if job is not None:
                    named.add(job.schedule_id)
        for sid, s in list(self.state.schedules.items()):
            if (s.type == "recurring" or s.status not in ENDED
                    or sid in live_jobs or sid in named
                    or (self.keep is not None and self.keep(sid))):
                continue
            st = self.state.states[sid]
            dropped = dict(st.dropped)
            for job in self.state.jobs.values():
                if job.schedule_id == sid:
                    dropped[job.status] = dropped.get(job.status, 0) + 1
            self.finished.append((s, ScheduleState(next_due=st.next_due,
                                                   last_occurrence=st.last_occurrence,
                                                   fired=st.fired, dropped=dropped,
                                                   error=st.error)))
            self.forget(sid)

    def _prune(self) -> None:
        """Drop the finished jobs no lookup can reach any more: the state is saved whole on
        every change, so keeping every job ever run makes a weeks-old farm save hundreds of
        MB a tick."""
        keep: set[str] = set()
        for s in self.state.schedules.values():
            keep.update(s.depends_on)  # a job id named here is looked up when s fires
            keep.update(s.after)
        for job in self.state.jobs.values():
            if job.status not in TERMINAL:
                # Bound to an occurrence that may no longer be the latest one.
                keep.update(job.waits_on)
        for jid, job in list(self.state.jobs.items()):
            if job.status not in TERMINAL or jid in keep:
                continue
            st = self.state.states.get(job.schedule_id)
            if st is not None and job.occurrence == st.last_occurrence:
                continue  # a dependent created later binds to these
            del self.state.jobs[jid]
            self.changes.gone_job(jid)
            self.changes.schedules.add(job.schedule_id)
            if st is not None:
                st.dropped[job.status] = st.dropped.get(job.status, 0) + 1

    async def _fire_due(self, sid: str, now: datetime) -> None:
        s, st = self.state.schedules[sid], self.state.states[sid]
        if s.status not in ("pending", "active") or st.next_due is None or st.next_due > now:
            return
        due = st.next_due
        if s.type == "immediate":
            occurrence: datetime | None = due
        else:
            occurrence = self._latest_within_grace(s, due, now)
            late_s = (now - due).total_seconds()
            if occurrence is None:
                self._event("misfire", None, now, schedule_id=sid, action="skipped",
                            first_missed=due.isoformat(), late_s=late_s,
                            grace_s=s.misfire.grace_s)
            elif occurrence != due or (now - occurrence).total_seconds() > self.late_after_s:
                self._event("misfire", None, now, schedule_id=sid, action="run_late",
                            occurrence=occurrence.isoformat(), first_missed=due.isoformat(),
                            late_s=(now - occurrence).total_seconds(),
                            grace_s=s.misfire.grace_s)
        if occurrence is not None:
            await self._fire(s, st, occurrence, now)
        # Never replay the missed occurrences: the next one is after now.
        st.next_due = None if s.type == "immediate" else next_fire(s, now)
        # Fired its last: completed once its jobs ended (`_complete_ended`).
        s.status = "active"

    def _latest_within_grace(self, s: Schedule, due: datetime, now: datetime) -> datetime | None:
        """The latest occurrence in [due, now] no more than the grace period late."""
        best = last_fire(s, now)
        if best is None or best < due or (now - best).total_seconds() > s.misfire.grace_s:
            return None
        return best

    async def _fire(self, s: Schedule, st: ScheduleState, occurrence: datetime,
                    now: datetime) -> None:
        if s.workflow:
            st.last_occurrence = occurrence
            st.fired += 1
            self._event("fired", None, now, schedule_id=s.id, occurrence=occurrence.isoformat(),
                        workflow=s.workflow, late_s=(now - occurrence).total_seconds())
            if self.fire_workflow is None:
                raise ValueError(f"schedule {s.id}: workflow schedules need fire_workflow")
            started = self.fire_workflow(s, occurrence)
            if inspect.isawaitable(started):
                await started
            return
        targets = (self.resolve_targets(s.target) if s.clients is None
                   else self.resolve_targets(s.target, clients=frozenset(s.clients)))
        if inspect.isawaitable(targets):
            targets = await targets
        st.last_occurrence = occurrence
        st.fired += 1
        self._event("fired", None, now, schedule_id=s.id, occurrence=occurrence.isoformat(),
                    targets=len(targets), late_s=(now - occurrence).total_seconds())
        run = occurrence_run_id(s.id, occurrence)
        for serial, account in targets:
            jid = f"{run}/{serial}/{account or '-'}"
            if jid in self.state.jobs:
                continue  # the same pair listed twice by the scope
            job = Job(id=jid, schedule_id=s.id, sequence=s.sequence, occurrence=occurrence,
                      serial=serial, account=account, queued_at=now)
            for dep in dict.fromkeys([*s.depends_on, *s.after]):
                if dep in self.state.jobs:
                    job.waits_on.append(dep)
                    if dep not in s.depends_on:
                        job.order_only.append(dep)
                else:
                    job.pending_deps.append(dep)
            self.state.jobs[jid] = job
            self.state.queues.setdefault(serial, []).append(jid)
            self._event("queued", job, now, account=account)

    def _bind(self, job: Job, dep: str) -> list[str] | None:
        """The job ids of prerequisite schedule ``dep`` for ``job``; None while it has not
        fired; raises LookupError if it never will."""
        s, st = self.state.schedules.get(dep), self.state.states.get(dep)
        if s is None or st is None:
            raise LookupError(f"prerequisite {dep} is unknown")
        if st.last_occurrence is None:
            if st.next_due is None or s.status in ENDED:
                raise LookupError(f"prerequisite {dep} will not run")
            return None
        jobs = [j for j in self.state.jobs.values()
                if j.schedule_id == dep and j.occurrence == st.last_occurrence]
        same = [j for j in jobs if j.serial == job.serial and j.account == job.account]
        phone = [j for j in jobs if j.serial == job.serial]
        return [j.id for j in (same or phone or jobs)]

    def _settle_dependencies(self, now: datetime) -> None:
        # Repeat so a skip cascades down a chain within one tick.
        changed = True
        while changed:
            changed = False
            for job in list(self.state.jobs.values()):
                if job.status != "queued":
                    continue
                reason = self._blocking_failure(job)
                if reason:
                    self._finish(job, "skipped", now, reason)
                    self._event("skipped", job, now, reason=reason)
                    changed = True

    def _blocking_failure(self, job: Job) -> str | None:
        named = self.state.schedules[job.schedule_id].depends_on
        for dep in list(job.pending_deps):
            hard = dep in named  # else only ``after``: nothing to wait for is no failure
            try:
                bound = self._bind(job, dep)
            except LookupError as e:
                if hard:
                    return str(e)
                job.pending_deps.remove(dep)
                self.changes.jobs.add(job.id)
                continue
            if bound is None:
                continue
            if not bound and hard:
                return f"prerequisite {dep} ran on no phone"
            job.pending_deps.remove(dep)
            job.waits_on.extend(bound)
            self.changes.jobs.add(job.id)
            if not hard:
                job.order_only.extend(bound)
        for jid in job.waits_on:
            if jid in job.order_only:
                continue
            pre = self.state.jobs[jid]
            if pre.status in ("failed", "skipped", "cancelled"):
                # Name the prerequisite as the schedule named it: a job id or a schedule id.
                name = jid if jid in named else pre.schedule_id
                return f"prerequisite {name} {pre.status}"
        return None

    def _ready(self, job: Job, now: datetime) -> bool:
        if job.pending_deps:
            return False
        if job.not_before is not None and job.not_before > now:
            return False
        return all(self.state.jobs[j].status == "completed"
                   or (j in job.order_only and self.state.jobs[j].status in TERMINAL)
                   for j in job.waits_on)

    def _pick(self, serial: str, now: datetime) -> Job | None:
        """Round robin across the phone's accounts among its ready jobs (FIFO per account),
        so one account's backlog does not starve the others (spec 14.3)."""
        ready = [self.state.jobs[j] for j in self.state.queues.get(serial, [])
                 if self._ready(self.state.jobs[j], now)]
        if not ready:
            return None
        accounts = sorted({j.account or "" for j in ready})
        last = self.state.last_account.get(serial)
        nxt = accounts[0] if last is None else next((a for a in accounts if a > last),
                                                    accounts[0])
        return next(j for j in ready if (j.account or "") == nxt)

    async def _dispatch_ready(self, now: datetime) -> None:
        """Dispatch the job each free phone may start, concurrently (at most
        ``max_concurrent_dispatch`` in flight).

        Same outcome as trying the phones one by one in serial order: before any await a
        phone is marked dispatching (``_dispatching``, so no second job can be picked for it)
        and takes one of its node's stagger tokens (`_node_tokens`). A "locked" answer gives
        the token back, so after a round the phones whose node has tokens again are tried in
        a further round, as the sequential loop would have tried the next phone of that
        node. Each phone is tried at most once per tick. The events are recorded in serial
        order (as the sequential loop did), whatever order the dispatches end in.
        """
        sem = asyncio.Semaphore(self.max_concurrent_dispatch)
        tried: set[str] = set()
        base: dict[str, datetime] = {}   # node -> the token bucket's time before this tick
        tokens: dict[str, float] = {}    # node -> starts it may still take this tick
        used: dict[str, int] = {}        # node -> starts (or failures): tokens spent
        by_serial: dict[str, list[Event]] = {}

        async def one(job: Job) -> str:
            async with sem:
                try:
                    return await self.dispatch(job)
                except Exception as e:  # a broken dispatch must not stop the other phones
                    return f"failed: {e}"

        while True:
            batch: list[tuple[Job, str]] = []
            for serial in sorted(self.state.queues):
                if (serial in tried or serial in self.state.running
                        or serial in self._dispatching or not self.state.queues[serial]):
                    continue
                job = self._pick(serial, now)
                if job is None:
                    continue
                node = self.node_of(serial)
                if node not in tokens:
                    base[node], tokens[node] = self._node_tokens(node, now)
                if tokens[node] < 1:
                    continue  # this node started its share within the stagger
                tokens[node] -= 1
                self._dispatching.add(serial)
                tried.add(serial)
                batch.append((job, node))
            if not batch:
                break
            try:
                answers = await asyncio.gather(*(one(job) for job, _ in batch))
            finally:
                for job, _ in batch:
                    self._dispatching.discard(job.serial)
            for (job, node), answer in zip(batch, answers):
                mark = len(self.events)
                self._settle_dispatch(job, node, answer, now)
                if answer == "locked":
                    tokens[node] += 1  # nothing started: the token is given back
                else:
                    used[node] = used.get(node, 0) + 1
                by_serial[job.serial] = self.events[mark:]
                del self.events[mark:]
        # Nodes where nothing started keep their bucket: a phone held for long by a manual
        # run must not starve the other phones of its node.
        for node, n in used.items():
            self.state.node_last[node] = (now if self.stagger <= timedelta(0)
                                          else base[node] + n * self.stagger)
        for serial in sorted(by_serial):
            self.events.extend(by_serial[serial])

    def _node_tokens(self, node: str, now: datetime) -> tuple[datetime, float]:
        """(bucket time, starts allowed now) of a node: one start per stagger since the
        bucket time, which is never earlier than ``max_node_burst`` staggers ago (so an idle
        node may start that many at once, never more). ``node_last`` holds the bucket time."""
        if self.stagger <= timedelta(0):
            return now, math.inf
        floor = now - self.max_node_burst * self.stagger
        last = self.state.node_last.get(node)
        at = floor if last is None or last < floor else last
        return at, float(math.floor((now - at) / self.stagger))

    def _settle_dispatch(self, job: Job, node: str, answer: str, now: datetime) -> None:
        serial = job.serial
        if answer == "started":
            self.state.queues[serial].remove(job.id)
            self.state.running[serial] = job.id
            self.state.last_account[serial] = job.account or ""
            job.status, job.started_at = "running", now
            self._event("dispatched", job, now, node=node, attempt=job.attempt)
        elif answer == "locked":
            self._event("locked", job, now, node=node)  # the slot is given back by the caller
        elif answer.startswith("skipped: "):  # the account is at risk (skip_at_risk)
            self.state.queues[serial].remove(job.id)
            reason = answer[len("skipped: "):]
            self._finish(job, "skipped", now, reason)
            self._event("skipped", job, now, node=node, account=job.account, reason=reason)
        else:
            self.state.queues[serial].remove(job.id)
            self._event("dispatch_failed", job, now, node=node, answer=answer)
            if not self._retry(job, now, answer):
                self._finish(job, "failed", now, answer)

    # -- helpers

    def _retry(self, job: Job, now: datetime, error: str | None) -> bool:
        policy = self.state.schedules[job.schedule_id].retry
        if job.attempt > policy.attempts:
            return False
        job.attempt += 1
        job.status = "queued"
        job.started_at = None
        job.not_before = now + timedelta(seconds=policy.delay_s)
        self.state.queues.setdefault(job.serial, []).append(job.id)
        self._event("retry", job, now, attempt=job.attempt, not_before=job.not_before.isoformat(),
                    error=error)
        return True

    def _finish(self, job: Job, status: str, now: datetime, reason: str | None) -> None:
        job.status = status  # type: ignore[assignment]
        job.finished_at = now
        job.reason = reason
        q = self.state.queues.get(job.serial, [])
        if job.id in q:
            q.remove(job.id)

    def _event(self, kind: str, job: Job | None, now: datetime, *,
               schedule_id: str | None = None, **detail: Any) -> None:
        # Every change of a schedule or job records an event: what it names is saved.
        if job is not None:
            self.changes.jobs.add(job.id)
            self.changes.phones.add(job.serial)
        sid = job.schedule_id if job else schedule_id
        if sid is not None:
            self.changes.schedules.add(sid)
        self.events.append(Event(
            at=now, kind=kind, schedule_id=job.schedule_id if job else schedule_id,
            job_id=job.id if job else None, serial=job.serial if job else None,
            detail={k: v for k, v in detail.items() if v is not None}))

    def _now(self) -> datetime:
        return _utc(self.clock())
