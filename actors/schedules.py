"""The coordinator's schedule service: the pure scheduler core (actors.scheduler) wired to the
hub, the runs and the farm database.

Owns: the one `Scheduler` of a coordinator, on the real UTC clock; its loop (a tick about
once a second, woken early when an execution finishes); dispatching a job as ONE execution
(``RunManager.start_one``) on its (phone, account); the job id -> execution id map, and
telling the core when a job's execution record reaches a final status (the records are what
the node events keep up to date, so polling them also catches executions that ended while
the coordinator was down); saving the core's state to the farm DB after every change and
appending its events to ``schedule_events``, and loading that state back on start, so
schedules and queued jobs survive a coordinator restart (misfires after the downtime are
the core's rule). Its `actors.workflows.WorkflowRunner` (``workflows``) runs workflows as
schedules of this core, and schedules may target a workflow. And the operations the control API offers: add, list, pause, resume,
cancel, events.

Does not own: when things fire, queueing, per-phone exclusivity, node stagger, retries and
dependencies (all actors.scheduler), scope resolution and execution records (actors.runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import msgspec

from actors.scheduler import Event, Job, Schedule, Scheduler, SchedulerState
from actors.workflows import WorkflowRunner
from protocol.errors import FarmError, ScopeError, ValidationError

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Execution statuses that end a job, and what the core calls them.
_FINAL = {"completed": "completed", "failed": "failed", "cancelled": "cancelled",
          "stopped": "cancelled", "locked": "failed"}


class ScheduleNotFound(FarmError):
    """No schedule has that id."""


class ScheduleHub(Protocol):
    """What the service reads from the hub: where each phone is and whether it can run."""

    phone_rows: dict[str, dict]
    node_rows: dict[str, dict]


class ServiceState(msgspec.Struct):
    """What is saved in ``scheduler_state``: the core's state and which execution each
    started job became."""

    scheduler: SchedulerState = msgspec.field(default_factory=SchedulerState)
    executions: dict[str, str] = msgspec.field(default_factory=dict)  # job id -> execution id


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def run_id_of(job: Job) -> str:
    """The run an occurrence's executions share, so ``GET /api/runs/{id}`` shows it whole."""
    return f"{job.schedule_id}@{job.occurrence.strftime('%Y%m%dT%H%M%SZ')}"


class ScheduleService:
    """Runs the coordinator's scheduler: ``await start()`` loads the saved state and starts
    the tick loop, ``await close()`` stops it. ``step()`` is one round of the loop (tests
    call it directly on a fake clock instead of starting the loop).

    A job whose phone is offline or whose node is down waits (the core sees ``locked``) up
    to ``offline_wait_s`` after it was queued, because right after a coordinator restart no
    node has reconnected yet; after that it fails (and the schedule's retry policy applies).
    """

    def __init__(self, hub: ScheduleHub, runs: Any, db: Any, *,
                 clock: Callable[[], datetime] = utc_now, tick_s: float = 1.0,
                 stagger_s: float = 1.0, offline_wait_s: float = 300.0) -> None:
        self.hub = hub
        self.runs = runs
        self.db = db
        self.clock = clock
        self.tick_s = tick_s
        self.stagger_s = stagger_s
        self.offline_wait_s = offline_wait_s
        self.scheduler: Scheduler | None = None
        self.executions: dict[str, str] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        # The tick awaits dispatches; API changes wait for it so the state is never half-way.
        self._lock = asyncio.Lock()
        self.workflows = WorkflowRunner(self, db)

    # --- life ------------------------------------------------------------------------------
    async def load(self) -> None:
        """Build the scheduler from the saved state (or empty)."""
        saved = ServiceState()
        text = await self.db.load_scheduler_state()
        if text:
            saved = msgspec.json.decode(text, type=ServiceState)
            log.info("scheduler state loaded: %d schedules, %d jobs",
                     len(saved.scheduler.schedules), len(saved.scheduler.jobs))
        self.executions = saved.executions
        self.scheduler = Scheduler(clock=self.clock, resolve_targets=self._resolve,
                                   node_of=self._node_of, dispatch=self._dispatch,
                                   stagger_s=self.stagger_s, state=saved.scheduler,
                                   fire_workflow=self._fire_workflow)

    async def start(self) -> "ScheduleService":
        if self.scheduler is None:
            await self.load()
        await self.workflows.recover()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Tick soon (an execution finished: its phone may take the next job)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad tick must not stop the schedules
                log.exception("scheduler tick failed")
            timeout = self.tick_s
            slot = self.scheduler.next_slot() if self.scheduler is not None else None
            if slot is not None:  # a node's stagger gap ends before the next tick
                timeout = max(0.0, min(timeout, (slot - self.clock()).total_seconds()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def step(self) -> list[Event]:
        """One round: report ended executions to the core, tick, save if anything changed.
        Returns the tick's events."""
        async with self._lock:
            sched = self._core()
            finished = await self._reconcile(sched)
            events = await sched.tick()
            self._forget_dropped(sched)
            await self._save(force=finished)
        return events

    # --- the core's callbacks ----------------------------------------------------------------
    async def _resolve(self, target: str) -> list[tuple[str, str | None]]:
        try:
            return await self.runs.targets(target)
        except (ScopeError, ValidationError) as exc:
            # Validated when added; a scope can still go bad (a client renamed): no phones.
            log.warning("schedule target %r resolves to nothing: %s", target, exc)
            return []

    async def _fire_workflow(self, schedule: Schedule, occurrence: datetime) -> None:
        try:
            await self.workflows.start(schedule.workflow or "", schedule.target, at=occurrence,
                                       schedule_type=schedule.type, in_tick=True)
        except (FarmError, ValidationError) as exc:
            log.error("schedule=%s: workflow %s not started: %s", schedule.id,
                      schedule.workflow, exc)

    def _node_of(self, serial: str) -> str:
        return str(self.hub.phone_rows.get(serial, {}).get("node") or "?")

    def _available(self, serial: str) -> bool:
        row = self.hub.phone_rows.get(serial)
        if row is None or row.get("state") != "online":
            return False
        return self.hub.node_rows.get(row["node"], {}).get("state") == "up"

    async def _dispatch(self, job: Job) -> str:
        row = self.hub.phone_rows.get(job.serial) or {}
        if not self._available(job.serial):
            waited = (self.clock() - job.queued_at).total_seconds()
            if waited < self.offline_wait_s:
                return "locked"
            return f"failed: phone {job.serial} not online (state {row.get('state')})"
        if row.get("lock_holder"):
            return "locked"  # held (a manual run, a recording): no execution record for it
        out = await self.runs.start_one(job.sequence, job.serial, job.account,
                                        run_id=run_id_of(job))
        self.executions[job.id] = out["execution_id"]
        status = out.get("status")
        if status == "pending":
            log.info("job=%s execution=%s started", job.id, out["execution_id"])
            return "started"
        if status == "locked":
            return "locked"
        return f"failed: {out.get('error') or status}"

    async def _reconcile(self, sched: Scheduler) -> bool:
        """Tell the core about running jobs whose execution ended; True if any did."""
        any_ended = False
        running = list(sched.state.running.values())
        # One query for every running job's record, not two per job on every tick.
        statuses = await self.db.execution_statuses(
            [self.executions[j] for j in running if j in self.executions])
        for job_id in running:
            found = statuses.get(self.executions.get(job_id, ""))
            if found is None:
                sched.job_finished(job_id, "failed", "execution record missing")
                any_ended = True
                continue
            status, error = found
            if status in _FINAL:
                sched.job_finished(job_id, _FINAL[status], error)
                any_ended = True
        return any_ended

    def _forget_dropped(self, sched: Scheduler) -> None:
        """The core dropped some finished jobs: their executions go too, else this map grows
        with every job ever run (the saved events keep the execution ids)."""
        jobs = sched.state.jobs
        for job_id in [j for j in self.executions if j not in jobs]:
            del self.executions[job_id]

    # --- persistence -------------------------------------------------------------------------
    async def _save(self, force: bool = False) -> None:
        sched = self._core()
        events = sched.take_events()
        if not events and not force:
            return
        state = ServiceState(scheduler=sched.state, executions=self.executions)
        await self.db.save_scheduler_state(msgspec.json.encode(state).decode())
        await self.db.add_schedule_events([_event_row(e, self.executions.get(e.job_id or ""))
                                           for e in events])
        await self.workflows.sync()

    # --- operations (the control API) --------------------------------------------------------
    def _core(self) -> Scheduler:
        if self.scheduler is None:
            raise FarmError("the scheduler is not started")
        return self.scheduler

    async def add(self, schedule: Schedule) -> dict:
        """Register a schedule (id generated when empty); ValidationError names the field."""
        sched = self._core()
        if not schedule.id:
            schedule.id = f"sch-{uuid.uuid4().hex[:10]}"
        if not _ID.fullmatch(schedule.id):
            raise ValidationError("$.id", f"{schedule.id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if not schedule.target.lstrip().startswith("group:"):
            from sequences.scopes import parse_scope

            try:
                parse_scope(schedule.target)
            except ScopeError as exc:
                raise ValidationError("$.target", str(exc)) from None
        if schedule.workflow is not None:
            if schedule.sequence:
                raise ValidationError("$.sequence", "give a sequence or a workflow, not both")
            if await self.db.workflow_definition(schedule.workflow) is None:
                raise ValidationError("$.workflow", f"{schedule.workflow!r}: no such workflow")
        elif not schedule.sequence:
            raise ValidationError("$.sequence", "give a sequence or a workflow")
        for dep in schedule.depends_on:
            if dep not in sched.state.schedules and dep not in sched.state.jobs:
                raise ValidationError("$.depends_on", f"{dep!r}: no such schedule or job")
        schedule.status = "pending"
        async with self._lock:
            try:
                sched.add(schedule)
            except ValueError as exc:
                raise ValidationError(_field_of(str(exc)), str(exc)) from None
            await self._save(force=True)
        log.info("schedule=%s added: %s %s on %s", schedule.id, schedule.type,
                 schedule.sequence, schedule.target)
        self.wake()
        return self.view(schedule.id)

    def schedules(self) -> list[dict]:
        """Every schedule (`view`), by id."""
        return [self.view(sid) for sid in sorted(self._core().state.schedules)]

    def view(self, schedule_id: str) -> dict:
        """A schedule with its status, next fire time, fired count and its jobs by status."""
        state = self._core().state
        if schedule_id not in state.schedules:
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        st = state.states[schedule_id]
        # Finished jobs the core dropped are counted there; the rest are still in the state.
        jobs: dict[str, int] = dict(st.dropped)
        for job in state.jobs.values():
            if job.schedule_id == schedule_id:
                jobs[job.status] = jobs.get(job.status, 0) + 1
        schedule = state.schedules[schedule_id]
        # to_builtins leaves out defaults; the status is always shown.
        return {**msgspec.to_builtins(schedule), "status": schedule.status,
                "next_fire": st.next_due.isoformat() if st.next_due else None,
                "last_occurrence": st.last_occurrence.isoformat() if st.last_occurrence else None,
                "fired": st.fired, "jobs": jobs}

    async def control(self, schedule_id: str, action: str) -> dict:
        """``pause``, ``resume`` or ``cancel`` a schedule."""
        sched = self._core()
        if schedule_id not in sched.state.schedules:
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        if action not in ("pause", "resume", "cancel"):
            raise ValidationError("action", f"{action!r}: expected pause, resume or cancel")
        async with self._lock:
            status = sched.state.schedules[schedule_id].status
            if status in ("cancelled", "completed") and action != "cancel":
                raise ValidationError(f"schedule {schedule_id}", f"is {status}")
            getattr(sched, action)(schedule_id)
            await self._save(force=True)
        log.info("schedule=%s %s", schedule_id, action)
        self.wake()
        return self.view(schedule_id)

    async def events(self, schedule_id: str, limit: int = 500) -> list[dict]:
        if schedule_id not in self._core().state.schedules:
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        rows = await self.db.schedule_events(schedule_id, limit)
        for row in rows:
            # The map forgets jobs the core dropped; the row kept the id it had when saved.
            execution_id = (self.executions.get(row.get("job_id") or "")
                            or row["detail"].get("execution_id"))
            if execution_id:
                row["execution_id"] = execution_id
        return rows


def _event_row(event: Event, execution_id: str | None = None) -> dict:
    detail = msgspec.to_builtins(event.detail)
    if execution_id:
        detail["execution_id"] = execution_id
    reason = next((str(detail[k]) for k in ("reason", "error", "answer", "action")
                   if detail.get(k)), None)
    return {"at": event.at, "schedule_id": event.schedule_id, "job_id": event.job_id,
            "serial": event.serial, "kind": event.kind, "reason": reason, "detail": detail}


def _field_of(message: str) -> str:
    """The request field a core validation message is about (``needs at`` -> ``$.at``)."""
    for name in ("window_start", "window_end", "recurrence", "cron", "until", "count",
                 "min_gap_s", "at"):
        if re.search(rf"\b{name}\b", message):
            return f"$.{name}"
    if "window" in message:
        return "$.count"
    if "recurring" in message:
        return "$.cron"
    return "$"
