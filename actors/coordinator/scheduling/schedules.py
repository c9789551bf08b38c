"""The coordinator's schedule service: the pure scheduler core (actors.coordinator.scheduling.scheduler) wired to the
hub, the runs and the farm database.

Owns: the one `Scheduler` of a coordinator, on the real UTC clock; its loop (a tick about
once a second, woken early when an execution finishes); dispatching a job as ONE execution
(``RunManager.start_one``) on its (phone, account); the job id -> execution id map, and
telling the core when a job's execution record reaches a final status (the records are what
the node events keep up to date, so polling them also catches executions that ended while
the coordinator was down); saving what changed in the core's state to the farm DB after
every change (one ``scheduler_rows`` row per schedule, per job, per phone (queue, running
job, last account) and one for node stagger, written with the events in one transaction) and loading it back on start, so
schedules and queued jobs survive a coordinator restart (misfires after the downtime are
the core's rule); a job whose execution had been started before a crash (it came between
dispatch and save) is adopted as started when dispatched again, never started twice; the finished
schedules the core pruned (their last ``FINISHED_KEPT`` views, listed with the rest; their
events stay readable). Its `actors.coordinator.scheduling.workflows.WorkflowRunner` (``workflows``) runs workflows as
schedules of this core, and schedules may target a workflow. And the operations the control API offers: add, list, pause, resume,
cancel, events.

Tenants (issue 17.4): a schedule added for a caller who is not a super user carries that
caller's client ids (``Schedule.clients``); its target is checked when added and resolved at
every occurrence among those clients' phones only (so ``phone:all`` is their phones, now and
later), a workflow it names is looked up among their definitions, and the operations take
the caller's ``clients``: another client's schedule reads as one that does not exist.

Does not own: when things fire, queueing, per-phone exclusivity, node stagger, retries and
dependencies (all actors.coordinator.scheduling.scheduler), scope resolution and execution records (actors.coordinator.runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

import msgspec

from actors.access.scope import owned_by
from actors.store.farm_db import account_ref
from actors.coordinator.scheduling.scheduler import (ENDED, Event, Job, Schedule, ScheduleInvalid, Scheduler,
                              SchedulerState, ScheduleState, occurrence_run_id, refuse_past,
                              validate)
from actors.coordinator.scheduling.workflows import WorkflowRunner, parse_schedule_id
from protocol.errors import FarmError, ScopeError, ValidationError, split_msgspec_error

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


# Finished schedules whose view is kept (listed, ``view``); older ones answer only events.
FINISHED_KEPT = 1000


class ServiceState(msgspec.Struct):
    """The v3 ``scheduler_state`` row (the core's state saved whole, and which execution
    each started job became): read once to move it into ``scheduler_rows``."""

    scheduler: SchedulerState = msgspec.field(default_factory=SchedulerState)
    executions: dict[str, str] = msgspec.field(default_factory=dict)  # job id -> execution id


class ScheduleRow(msgspec.Struct):
    """``s/<id>`` (live) and ``f/<id>`` (finished, pruned) rows: a schedule and its state."""

    schedule: Schedule
    state: ScheduleState


class JobRow(msgspec.Struct, omit_defaults=True):
    """``j/<id>`` rows: a job and the execution it became (if started)."""

    job: Job
    execution: str | None = None


class PhoneRow(msgspec.Struct, omit_defaults=True):
    """``q/<serial>`` rows: a phone's queue (job ids in order), running job and last account,
    written when one of the phone's jobs changed."""

    queue: list[str] = msgspec.field(default_factory=list)
    running: str | None = None
    last_account: str | None = None


class CoreRow(msgspec.Struct, omit_defaults=True):
    """The ``core`` row: each node's stagger bucket time (``node_last``; the other fields
    are read from rows written before the phone rows)."""

    queues: dict[str, list[str]] = msgspec.field(default_factory=dict)
    running: dict[str, str] = msgspec.field(default_factory=dict)
    last_account: dict[str, str] = msgspec.field(default_factory=dict)
    node_last: dict[str, datetime] = msgspec.field(default_factory=dict)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def run_id_of(job: Job) -> str:
    """The run an occurrence's executions share, so ``GET /api/runs/{id}`` shows it whole."""
    return occurrence_run_id(job.schedule_id, job.occurrence)


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
        self._closing = False
        self._wake = asyncio.Event()
        # The tick awaits dispatches; API changes wait for it so the state is never half-way.
        self.lock = asyncio.Lock()
        self.workflows = WorkflowRunner(self, db)
        # (serial, account ref) -> the account's Health or None: a skip_at_risk schedule's
        # job on an at_risk account is skipped (set by the coordinator: content data).
        self.account_health: Callable[[str, str | None], Awaitable[Any]] | None = None
        # Pruned finished schedules, oldest first (at most FINISHED_KEPT).
        self.finished: dict[str, ScheduleRow] = {}
        self._legacy = False  # loaded from the v3 whole-state row: drop it at the first save
        # Crash-safe dispatch (`_started_before_crash`): when the state was loaded, the
        # executions of runs from before then, and the execution ids a schedule's events name.
        self._loaded_at: datetime | None = None
        self._runs_before: dict[str, list[dict]] = {}
        self._named: dict[str, set[str]] = {}
        # Told each started job's delay in seconds from when it was due (actors.metrics).
        self.on_dispatched: Callable[[float], None] | None = None

    # --- life ------------------------------------------------------------------------------
    async def load(self) -> None:
        """Build the scheduler from the saved rows (or the v3 whole state, or empty)."""
        saved = ServiceState()
        rows = await self.db.load_scheduler_rows()
        if rows:
            saved = _from_rows(rows, self.finished)
        else:
            text = await self.db.load_scheduler_state()
            if text:
                saved = msgspec.json.decode(text, type=ServiceState)
                self._legacy = True
        if saved.scheduler.schedules:
            log.info("scheduler state loaded: %d schedules, %d jobs",
                     len(saved.scheduler.schedules), len(saved.scheduler.jobs))
        self.executions = saved.executions
        # A node may start tick/stagger executions per tick, on average one per stagger.
        burst = max(1, int(self.tick_s / self.stagger_s)) if self.stagger_s > 0 else 1
        self.scheduler = Scheduler(clock=self.clock, resolve_targets=self._resolve,
                                   node_of=self._node_of, dispatch=self._dispatch,
                                   stagger_s=self.stagger_s, state=saved.scheduler,
                                   fire_workflow=self._fire_workflow,
                                   prune_finished=True,
                                   keep=lambda sid: parse_schedule_id(sid) is not None,
                                   max_node_burst=burst)
        if self._legacy:  # every row is new
            self.scheduler.changes.schedules.update(saved.scheduler.schedules)
            self.scheduler.changes.jobs.update(saved.scheduler.jobs)
        self._loaded_at = self.clock()

    async def _started_before_crash(self, job: Job) -> str | None:
        """Idempotent dispatch across a crash: the execution a job of an occurrence from
        before this load already became (the record is written before the run is sent, the
        state saved after, so a crash between the two leaves the job queued or not yet
        created): an execution of the job's (run, phone, account) that neither the saved
        state nor the schedule's events name. None if there is none."""
        if self._loaded_at is None or job.occurrence > self._loaded_at:
            return None  # fired after this load: every dispatch of it is in this process
        run_id = run_id_of(job)
        if run_id not in self._runs_before:
            self._runs_before[run_id] = await self.db.list_executions(run_id=run_id)
        known = set(self.executions.values())
        mine = [r for r in self._runs_before[run_id]
                if r["serial"] == job.serial and r["key"] not in known]
        if not mine:
            return None
        if job.schedule_id not in self._named:
            self._named[job.schedule_id] = {
                e["detail"].get("execution_id")
                for e in await self.db.schedule_events(job.schedule_id, limit=10_000_000)}
        mine = [r for r in mine if r["key"] not in self._named[job.schedule_id]]
        if mine and job.account is not None:
            ids = {account_ref(a): a["account_id"]  # the job's account, even retired since
                   for a in await self.db.account_rows(job.serial, include_retired=True)}
            mine = [r for r in mine if r["account_id"] in (None, ids.get(job.account))]
        return mine[-1]["key"] if mine else None

    async def start(self) -> "ScheduleService":
        if self.scheduler is None:
            await self.load()
        await self.workflows.recover()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler")
        return self

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        # Cancel until it ends: Python 3.11's wait_for can swallow a cancellation that meets
        # its inner wait finishing (a wake() at that moment), and the loop then ticked on
        # while close waited for ever (seen once as a hung bench/scheduler.py shutdown).
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()

    def wake(self) -> None:
        """Tick soon (an execution finished: its phone may take the next job)."""
        self._wake.set()

    async def _loop(self) -> None:
        while not self._closing:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad tick must not stop the schedules
                log.exception("scheduler tick failed")
            timeout = self.tick_s
            if self.scheduler is not None:
                # A node's stagger gap or a planned time that comes before the next tick.
                # (A time already past is one the tick just made could not act on: no spin.)
                now = self.clock()
                for at in (self.scheduler.next_slot(), self.scheduler.next_due()):
                    if at is not None and at > now:
                        timeout = min(timeout, (at - now).total_seconds())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def step(self) -> list[Event]:
        """One round: report ended executions to the core, tick, save if anything changed.
        Returns the tick's events."""
        async with self.lock:
            sched = self.core()
            finished = await self._reconcile(sched)
            events = await sched.tick()
            await self.save(force=finished)
            self._forget_dropped(sched)
        for event in events:
            if event.kind == "error":
                log.error("schedule=%s failed: %s", event.schedule_id, event.detail.get("reason"))
        return events

    # --- the core's callbacks ----------------------------------------------------------------
    async def _resolve(self, target: str, clients: frozenset[int] | None = None
                       ) -> list[tuple[str, str | None]]:
        try:
            if clients is None:
                return await self.runs.targets(target)
            return await self.runs.targets(target, clients=clients)
        except (ScopeError, ValidationError) as exc:
            # Validated when added; a scope can still go bad (a client renamed): no phones.
            log.warning("schedule target %r resolves to nothing: %s", target, exc)
            return []

    async def _fire_workflow(self, schedule: Schedule, occurrence: datetime) -> None:
        try:
            await self.workflows.start(schedule.workflow or "", schedule.target, at=occurrence,
                                       schedule_type=schedule.type, in_tick=True,
                                       clients=None if schedule.clients is None
                                       else frozenset(schedule.clients))
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

    async def _at_risk(self, job: Job) -> str | None:
        """Why ``job`` is skipped when its schedule has skip_at_risk and its account is
        at_risk (None: it runs)."""
        schedule = self.core().state.schedules.get(job.schedule_id)
        if schedule is None or not schedule.skip_at_risk or self.account_health is None:
            return None
        account = await self._account_of(job)
        if account is None:
            return None
        health = await self.account_health(job.serial, account)
        if health is None or health.state != "at_risk":
            return None
        job.account = account  # the skipped job and its event name the account
        return f"account {account} is at_risk: {'; '.join(health.reasons)}"

    async def _account_of(self, job: Job) -> str | None:
        """The account ``job`` runs as: its own, else its sequence's (``platform.number``, or
        the phone's first live account of the sequence's platform, as RunManager picks it)."""
        if job.account:
            return job.account
        try:
            _, seq = self.runs.sequence(job.sequence)
        except Exception:  # noqa: BLE001 - an unknown sequence fails at its start, with why
            return None
        wanted = getattr(seq, "account", None)
        if not wanted or "." in wanted:
            return wanted or None
        rows = await self.db.account_rows(job.serial)  # retired accounts left out
        row = next((a for a in rows if a["platform"] == wanted), None)
        return f"{row['platform']}.{row['account_number']}" if row else None

    async def _dispatch(self, job: Job) -> str:
        row = self.hub.phone_rows.get(job.serial) or {}
        pauses = getattr(self.hub, "pauses", None)
        refusal = pauses.refusal(job.serial) if pauses is not None else None
        if refusal is not None:  # paused by the coordinator: refused, with the reason
            return f"failed: {refusal}"
        skip = await self._at_risk(job)
        if skip is not None:
            return f"skipped: {skip}"
        if not self._available(job.serial):
            waited = (self.clock() - job.queued_at).total_seconds()
            if waited < self.offline_wait_s:
                return "locked"
            return f"failed: phone {job.serial} not online (state {row.get('state')})"
        earlier = await self._started_before_crash(job)
        if earlier is not None:
            log.warning("job=%s: execution=%s was started before a coordinator restart: "
                        "adopted, not started again", job.id, earlier)
            self.executions[job.id] = earlier
            return "started"
        if row.get("lock_holder"):
            return "locked"  # held (a manual run, a recording): no execution record for it
        owner = self.core().state.schedules.get(job.schedule_id)
        tenant = {"client_world": True} if owner is not None and owner.clients is not None \
            else {}  # a tenant's job: its texts see its client's groups and phones only
        out = await self.runs.start_one(job.sequence, job.serial, job.account,
                                        run_id=run_id_of(job), **tenant)
        self.executions[job.id] = out["execution_id"]
        status = out.get("status")
        if status == "pending":
            log.info("job=%s execution=%s started", job.id, out["execution_id"])
            if self.on_dispatched is not None:
                due = max(job.queued_at, job.not_before or job.queued_at)
                self.on_dispatched((self.clock() - due).total_seconds())
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
    async def save(self, force: bool = False) -> None:
        """Write what changed since the last save (rows of the changed and gone schedules
        and jobs, the core row, the finished schedules) with the new events, in one
        transaction; then the workflow records."""
        sched = self.core()
        events = sched.take_events()
        changes = sched.take_changes()
        finished = sched.take_finished()
        if not events and not changes and not finished and not force:
            return
        state, enc = sched.state, msgspec.json.encode
        rows: dict[str, str] = {}
        deletes: list[str] = []
        for sid in changes.schedules | changes.gone_schedules:
            if sid in state.schedules:
                rows[f"s/{sid}"] = enc(ScheduleRow(state.schedules[sid],
                                                   state.states[sid])).decode()
            else:
                deletes.append(f"s/{sid}")
        for jid in changes.jobs | changes.gone_jobs:
            if jid in state.jobs:
                rows[f"j/{jid}"] = enc(JobRow(state.jobs[jid], self.executions.get(jid))).decode()
            else:
                deletes.append(f"j/{jid}")
        # A phone's queue, running job and last account change only with one of its jobs.
        phones = set(changes.phones)
        if self._legacy:
            phones |= {*state.queues, *state.running, *state.last_account}
        for serial in phones:
            prow = PhoneRow(queue=state.queues.get(serial) or [],
                            running=state.running.get(serial),
                            last_account=state.last_account.get(serial))
            if prow.queue or prow.running is not None or prow.last_account is not None:
                rows[f"q/{serial}"] = enc(prow).decode()
            else:
                deletes.append(f"q/{serial}")
        for schedule, final in finished:
            self.finished.pop(schedule.id, None)
            self.finished[schedule.id] = ScheduleRow(schedule, final)
            rows[f"f/{schedule.id}"] = enc(self.finished[schedule.id]).decode()
        while len(self.finished) > FINISHED_KEPT:
            old = next(iter(self.finished))
            del self.finished[old]
            rows.pop(f"f/{old}", None)
            deletes.append(f"f/{old}")
        rows["core"] = enc(CoreRow(node_last=state.node_last)).decode()
        await self.db.save_scheduler_rows(
            rows, deletes, [_event_row(e, self.executions.get(e.job_id or "")) for e in events],
            drop_whole_state=self._legacy)
        self._legacy = False
        await self.workflows.sync()

    # --- operations (the control API) --------------------------------------------------------
    def core(self) -> Scheduler:
        if self.scheduler is None:
            raise FarmError("the scheduler is not started")
        return self.scheduler

    def _mine(self, schedule_id: str, clients: frozenset[int] | None) -> bool:
        """Whether a caller reaching ``clients`` (None: a super user) sees the schedule (live
        or kept finished); a schedule it may not see is as absent as one never added."""
        if clients is None:
            return True
        found = self.core().state.schedules.get(schedule_id)
        if found is None and schedule_id in self.finished:
            found = self.finished[schedule_id].schedule
        return found is not None and owned_by(found.clients, clients)

    async def add(self, schedule: Schedule) -> dict:
        """Register a schedule (id generated when empty); ValidationError names the field.
        A schedule with ``clients`` (a tenant's) has its target resolved now among those
        clients' phones (an unknown phone, or another client's, is a 400 on $.target) and
        may depend only on schedules of its own clients."""
        sched = self.core()
        clients = None if schedule.clients is None else frozenset(schedule.clients)
        if clients is not None and not clients:
            raise ValidationError("$.clients", "you reach no client: a schedule of yours "
                                               "would have no phone to run on")
        if not schedule.id:
            schedule.id = f"sch-{uuid.uuid4().hex[:10]}"
        if not _ID.fullmatch(schedule.id):
            raise ValidationError("$.id", f"{schedule.id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if schedule.id in self.finished:
            raise ValidationError("$.id", f"{schedule.id!r}: a finished schedule has that id")
        if not schedule.target.lstrip().startswith("group:"):
            from sequences.scopes import parse_scope

            try:
                parse_scope(schedule.target)
            except ScopeError as exc:
                raise ValidationError("$.target", str(exc)) from None
        if clients is not None:
            # A tenant's target names only its own phones, accounts and groups: resolved
            # now among them, so another client's phone is refused like one never seen.
            try:
                await self.runs.targets(schedule.target, clients=clients)
            except ScopeError as exc:
                raise ValidationError("$.target", str(exc)) from None
        if schedule.workflow is not None:
            if schedule.sequence:
                raise ValidationError("$.sequence", "give a sequence or a workflow, not both")
            found = (await self.db.workflow_definition(schedule.workflow) if clients is None
                     else await self.db.workflow_definition(schedule.workflow, clients))
            if found is None:
                raise ValidationError("$.workflow", f"{schedule.workflow!r}: no such workflow")
        elif not schedule.sequence:
            raise ValidationError("$.sequence", "give a sequence or a workflow")
        for dep in schedule.depends_on:
            job = sched.state.jobs.get(dep)
            if not self._mine(dep if job is None else job.schedule_id, clients):
                raise ValidationError("$.depends_on", f"{dep!r}: no such schedule or job")
            if dep in self.finished:
                raise ValidationError("$.depends_on", f"{dep!r}: that schedule has finished (its "
                                      "outcome is in its events); depend on a live one")
            if dep not in sched.state.schedules and dep not in sched.state.jobs:
                raise ValidationError("$.depends_on", f"{dep!r}: no such schedule or job")
        schedule.status = "pending"
        try:
            # Off the loop: checking draws a window's times (then kept) and steps its cron.
            await asyncio.to_thread(validate, schedule)
            refuse_past(schedule, self.clock())
            async with self.lock:
                sched.add(schedule)
                await self.save(force=True)
        except ScheduleInvalid as exc:
            raise ValidationError(exc.field, str(exc)) from None
        log.info("schedule=%s added: %s %s on %s", schedule.id, schedule.type,
                 schedule.sequence, schedule.target)
        self.wake()
        return self.view(schedule.id)

    def schedules(self, clients: frozenset[int] | None = None) -> list[dict]:
        """Every schedule (`view`), by id: the live ones and the kept finished ones (only
        those of ``clients`` when given)."""
        return [self.view(sid)
                for sid in sorted({*self.core().state.schedules, *self.finished})
                if self._mine(sid, clients)]

    def view(self, schedule_id: str, clients: frozenset[int] | None = None) -> dict:
        """A schedule with its status, next fire time, fired count and its jobs by status."""
        state = self.core().state
        if not self._mine(schedule_id, clients):
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        if schedule_id not in state.schedules:
            if schedule_id in self.finished:
                row = self.finished[schedule_id]
                return _view(row.schedule, row.state, {})
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        st = state.states[schedule_id]
        # Finished jobs the core dropped are counted in st.dropped; the rest are in the state.
        jobs: dict[str, int] = {}
        for job in state.jobs.values():
            if job.schedule_id == schedule_id:
                jobs[job.status] = jobs.get(job.status, 0) + 1
        return _view(state.schedules[schedule_id], st, jobs)

    async def control(self, schedule_id: str, action: str,
                      clients: frozenset[int] | None = None) -> dict:
        """``pause``, ``resume`` or ``cancel`` a schedule (only one of ``clients``' when
        given)."""
        sched = self.core()
        if not self._mine(schedule_id, clients):
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        if schedule_id not in sched.state.schedules:
            if schedule_id in self.finished and action in ("pause", "resume", "cancel"):
                status = self.finished[schedule_id].schedule.status
                raise ValidationError(f"schedule {schedule_id}", f"is {status}")
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        if action not in ("pause", "resume", "cancel"):
            raise ValidationError("action", f"{action!r}: expected pause, resume or cancel")
        async with self.lock:
            status = sched.state.schedules[schedule_id].status
            if status in ENDED and action != "cancel":
                raise ValidationError(f"schedule {schedule_id}", f"is {status}")
            getattr(sched, action)(schedule_id)
            await self.save(force=True)
        log.info("schedule=%s %s", schedule_id, action)
        self.wake()
        return self.view(schedule_id)

    async def events(self, schedule_id: str, limit: int = 500,
                     clients: frozenset[int] | None = None) -> list[dict]:
        """What the scheduler did for a schedule, oldest first; a finished schedule (pruned
        from the live state) answers from its stored events. With ``clients``: only for a
        schedule of theirs still known (live or kept finished)."""
        if not self._mine(schedule_id, clients):
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        rows = await self.db.schedule_events(schedule_id, limit)
        if (not rows and schedule_id not in self.core().state.schedules
                and schedule_id not in self.finished):
            raise ScheduleNotFound(f"schedule {schedule_id!r}: no such schedule")
        for row in rows:
            # The map forgets jobs the core dropped; the row kept the id it had when saved.
            execution_id = (self.executions.get(row.get("job_id") or "")
                            or row["detail"].get("execution_id"))
            if execution_id:
                row["execution_id"] = execution_id
        return rows


def _view(schedule: Schedule, st: ScheduleState, jobs: dict[str, int]) -> dict:
    counts = dict(st.dropped)
    for status, n in jobs.items():
        counts[status] = counts.get(status, 0) + n
    # to_builtins leaves out defaults; the status is always shown.
    return {**msgspec.to_builtins(schedule), "status": schedule.status,
            "next_fire": st.next_due.isoformat() if st.next_due else None,
            "last_occurrence": st.last_occurrence.isoformat() if st.last_occurrence else None,
            "fired": st.fired, "jobs": counts, "error": st.error}


def _from_rows(rows: dict[str, str], finished: dict[str, ScheduleRow]) -> ServiceState:
    """The service state saved as ``scheduler_rows``; fills ``finished`` (oldest first)."""
    dec = msgspec.json.decode
    out = ServiceState()
    core = out.scheduler
    done: list[ScheduleRow] = []
    for key, text in rows.items():
        kind, _, ident = key.partition("/")
        if kind == "s":
            row = _schedule_row(key, text)
            if row is not None:
                core.schedules[ident], core.states[ident] = row.schedule, row.state
        elif kind == "j":
            jrow = dec(text, type=JobRow)
            core.jobs[ident] = jrow.job
            if jrow.execution:
                out.executions[ident] = jrow.execution
        elif kind == "f":
            row = _schedule_row(key, text)
            if row is not None:
                done.append(row)
        elif kind == "q":
            prow = dec(text, type=PhoneRow)
            core.queues[ident] = prow.queue
            if prow.running is not None:
                core.running[ident] = prow.running
            if prow.last_account is not None:
                core.last_account[ident] = prow.last_account
        elif kind == "core":
            c = dec(text, type=CoreRow)
            for serial, queue in c.queues.items():
                core.queues.setdefault(serial, queue)
            for serial, job_id in c.running.items():
                core.running.setdefault(serial, job_id)
            for serial, account in c.last_account.items():
                core.last_account.setdefault(serial, account)
            core.node_last = c.node_last
    # A job lives with its schedule (a row left out above takes its jobs along).
    core.jobs = {k: j for k, j in core.jobs.items() if j.schedule_id in core.schedules}
    # Jobs a crash left out of order are trusted over the core row: queues name live jobs.
    core.queues = {k: [j for j in v if j in core.jobs] for k, v in core.queues.items()}
    core.running = {k: j for k, j in core.running.items() if j in core.jobs}
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    for row in sorted(done, key=lambda r: r.state.last_occurrence or epoch):
        finished[row.schedule.id] = row
    return out


def _schedule_row(key: str, text: str) -> ScheduleRow | None:
    """A saved schedule row. One saved before today's bounds (a 90-bit seed, a negative
    grace) is loaded ``failed``, its bad members reset to their defaults and named in its
    error, so it can be listed and cancelled; one that cannot be read at all is left out.
    Both are logged."""
    try:
        return msgspec.json.decode(text, type=ScheduleRow)
    except msgspec.ValidationError:
        pass
    problems: list[str] = []
    try:
        raw = msgspec.json.decode(text)
        for _ in range(len(text)):  # each round drops a member: this ends
            try:
                row = msgspec.convert(raw, ScheduleRow)
                break
            except msgspec.ValidationError as exc:
                path, reason = split_msgspec_error(str(exc))
                if reason.startswith("Object missing required field") or not _drop(raw, path):
                    raise
                problems.append(f"{path}: {reason}")
    except (msgspec.DecodeError, RecursionError) as exc:
        log.error("scheduler row %s unreadable, left out: %s", key, exc)
        return None
    row.schedule.status = "failed"
    row.state.next_due = None
    row.state.error = f"stored {'; '.join(problems)} (reset to the default)"
    log.error("scheduler row %s: %s", key, row.state.error)
    return row


def _drop(raw: Any, path: str) -> bool:
    """Remove the member a JSON path names (a list item takes its whole list); False if there
    is none."""
    keys = path.split("[", 1)[0].split(".")[1:]
    for name in keys[:-1]:
        raw = raw.get(name) if isinstance(raw, dict) else None
    if not keys or not isinstance(raw, dict) or keys[-1] not in raw:
        return False
    del raw[keys[-1]]
    return True


def _event_row(event: Event, execution_id: str | None = None) -> dict:
    detail = msgspec.to_builtins(event.detail)
    if execution_id:
        detail["execution_id"] = execution_id
    reason = next((str(detail[k]) for k in ("reason", "error", "answer", "action")
                   if detail.get(k)), None)
    return {"at": event.at, "schedule_id": event.schedule_id, "job_id": event.job_id,
            "serial": event.serial, "kind": event.kind, "reason": reason, "detail": detail}
