"""Workflows (spec 12.1.3, 12.2, 12.4): ordered sequences with dependencies and a retry
policy per sequence, run on a scope, one phone at a time per phone.

Owns: checking a workflow definition (every sequence defined, dependencies on earlier
sequences only); starting a workflow execution (its ``scheduled_workflows`` and
``workflow_executions`` rows, then one schedule per workflow sequence in the schedule
service's core, ids ``wfx-<execution>.<position>``); keeping the ``sequence_executions``
rows and the workflow execution's final status in step with those schedules' jobs; and, after
a coordinator restart, finding the interrupted workflow executions.

How a workflow runs: each workflow sequence is an immediate schedule on the workflow's
target, so its jobs go through everything a scheduled sequence goes through (per-phone queue,
the phone actor's lock, node stagger, the retry policy, executions and their journal, crash
resume from the last successful step). Sequence N+1 runs ``after`` sequence N on the same
phone and account whatever its outcome; a sequence listed in ``depends_on`` must complete, or
its dependents are skipped with the reason. The core's state is saved after every change, so
a restarted coordinator carries on where the workflow stood.

Tenants (issue 17.4): a workflow execution started by a caller who is not a super user
belongs to that caller's clients (``client_ids``, stored with it): the workflow is looked up
among their definitions (and the shared library), the target among their phones, its
sequences' schedules carry the same clients (resolved among those phones when they fire),
and only callers reaching every one of them list or read it.

Does not own: the definitions' SQL (actors.store.farm_db), the HTTP routes
(actors.control.workflows), queueing and dispatch (actors.coordinator.scheduling.scheduler, actors.coordinator.scheduling.schedules).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import msgspec

from actors.access.scope import owned_by
from actors.store.farm_db import account_ref
from actors.coordinator.scheduling.scheduler import (ENDED, TERMINAL, Job, JobRetry, Schedule,
                                                     Scheduler, occurrence_run_id)
from protocol.errors import FarmError, ScopeError, ValidationError

log = logging.getLogger(__name__)

_SCHEDULE_ID = re.compile(r"wfx-(\d+)\.(\d+)")
ACTIVE = ("pending", "running")
# A job's status as a sequence_executions status.
_SEQUENCE_STATUS = {"queued": "queued", "running": "running", "completed": "completed",
                    "failed": "failed", "skipped": "skipped", "cancelled": "cancelled"}


class WorkflowNotFound(FarmError):
    """No active workflow definition (or workflow execution) has that name (id)."""


def schedule_id_of(workflow_execution_id: int, position: int) -> str:
    """The id of the schedule running sequence ``position`` of a workflow execution."""
    return f"wfx-{workflow_execution_id}.{position:03d}"


def parse_schedule_id(schedule_id: str) -> tuple[int, int] | None:
    """(workflow execution id, position) of a workflow sequence's schedule, else None."""
    m = _SCHEDULE_ID.fullmatch(schedule_id)
    return (int(m[1]), int(m[2])) if m else None


def check_sequences(entries: list[dict], known: dict[str, dict]) -> list[dict]:
    """Workflow sequences as stored: [{sequence_def_id, depends_on (positions), retry}].

    ``entries`` are request entries {sequence, depends_on (earlier positions, or names of
    earlier sequences), retry}; ``known`` the active sequence definitions by name. Raises
    ValidationError naming the field (``$.sequences[2].depends_on``)."""
    if not entries:
        raise ValidationError("$.sequences", "a workflow needs at least one sequence")
    out = []
    for i, entry in enumerate(entries):
        name = entry["sequence"]
        if name not in known:
            raise ValidationError(f"$.sequences[{i}].sequence",
                                  f"no sequence definition {name!r} (POST /api/sequences first)")
        deps: list[int] = []
        for dep in entry.get("depends_on") or []:
            if isinstance(dep, int):
                if not 0 <= dep < i:
                    raise ValidationError(f"$.sequences[{i}].depends_on",
                                          f"{dep}: must be the position of an earlier sequence "
                                          f"(0..{i - 1})" if i else f"{dep}: the first sequence "
                                          "can depend on nothing")
                deps.append(dep)
                continue
            earlier = [j for j in range(i) if entries[j]["sequence"] == dep]
            if len(earlier) != 1:
                raise ValidationError(f"$.sequences[{i}].depends_on",
                                      f"{dep!r}: {'no' if not earlier else 'more than one'} "
                                      "earlier sequence has that name (use its position)")
            deps.append(earlier[0])
        retry = entry.get("retry") or {}
        if isinstance(retry, JobRetry):
            retry = msgspec.to_builtins(retry)
        out.append({"sequence_def_id": known[name]["sequence_def_id"],
                    "depends_on": sorted(set(deps)), "retry": retry})
    return out


class WorkflowHost(Protocol):
    """What a `WorkflowRunner` uses of the schedule service that owns it
    (actors.coordinator.scheduling.schedules.ScheduleService). The runner works inside the
    service: it takes the service's lock, saves through it and reads its scheduler core.
    Declared here so that workflows need not import the service that imports it."""

    hub: Any  # its ``emit(event, serial, node, data)``, when it has one
    runs: Any  # its ``targets(scope, clients=...)``: a tenant's target checked when started
    scheduler: Scheduler | None
    executions: dict[str, str]  # job id -> execution id
    clock: Callable[[], datetime]
    lock: asyncio.Lock

    def wake(self) -> None:
        """Run the next tick now."""

    def core(self) -> Scheduler:
        """The started scheduler core; FarmError before start."""

    async def save(self, force: bool = False) -> None:
        """Save what changed in the core's state to the farm DB."""


class WorkflowRunner:
    """Starts workflow executions and keeps their records; owned by the ScheduleService
    (``service.workflows``), whose core runs the sequences."""

    def __init__(self, service: WorkflowHost, db: Any) -> None:
        self.service = service
        self.db = db
        # What each sequence_executions row was last written as: rows change only on news.
        self._written: dict[tuple, tuple] = {}
        self._accounts: dict[str, dict[str, int]] = {}
        # Each running workflow execution's sequence definition ids by position.
        self._sequence_ids: dict[int, dict[int, int]] = {}
        # sync() reads then writes rows: two at once would insert a row twice.
        self._sync_lock = asyncio.Lock()

    # --- starting ----------------------------------------------------------------------------
    async def start(self, name: str, target: str, *, at: datetime | None = None,
                    schedule_type: str = "immediate", in_tick: bool = False,
                    clients: frozenset[int] | None = None) -> dict:
        """Start workflow ``name`` on ``target`` (a scope or ``group:NAME``): its execution
        view. ``in_tick``: called from the core's tick (a workflow schedule fired), which
        holds the service's lock and saves at its end. ``clients``: the caller's (None: a
        super user); the workflow is one of theirs or shared, the target resolves among
        their phones (checked now unless ``in_tick``: the schedule was checked when added).
        Raises WorkflowNotFound, ValidationError (bad target)."""
        definition = (await self.db.workflow_definition(name) if clients is None
                      else await self.db.workflow_definition(name, clients))
        if definition is None:
            raise WorkflowNotFound(f"workflow {name!r}: no such workflow")
        check_target(target)
        if clients is not None and not in_tick:
            try:
                await self.service.runs.targets(target, clients=clients)
            except ScopeError as exc:
                raise ValidationError("$.scope", str(exc)) from None
        when = at or self.service.clock()
        wfx = await self.db.create_workflow_execution(definition["workflow_def_id"], target,
                                                      schedule_type=schedule_type, when=when,
                                                      client_ids=clients)
        schedules = self._schedules(wfx, definition, target, when, clients)
        if in_tick:
            self._add(schedules)
        else:
            async with self.service.lock:
                self._add(schedules)
                await self.service.save(force=True)
        await self.db.update_workflow_execution(wfx, status="running")
        log.info("workflow=%s execution=%d started on %s: %d sequences", name, wfx, target,
                 len(schedules))
        self._emit("workflow_started", {"workflow_execution_id": wfx, "workflow": name,
                                        "target": target})
        self.service.wake()
        return await self.view(wfx)

    def _schedules(self, wfx: int, definition: dict, target: str, when: datetime,
                   clients: frozenset[int] | list[int] | None = None) -> list[Schedule]:
        out = []
        self._sequence_ids[wfx] = {e["position"]: e["sequence_def_id"]
                                   for e in definition["sequences"]}
        for entry in definition["sequences"]:
            pos = entry["position"]
            out.append(Schedule(
                id=schedule_id_of(wfx, pos), sequence=entry["sequence"], target=target,
                type="immediate", at=when,
                depends_on=[schedule_id_of(wfx, d) for d in entry["depends_on"]],
                after=[schedule_id_of(wfx, pos - 1)] if pos else [],
                retry=msgspec.convert(entry["retry"] or {}, JobRetry),
                clients=None if clients is None else sorted(clients)))
        return out

    def _add(self, schedules: list[Schedule]) -> None:
        core = self.service.core()
        for schedule in schedules:
            if schedule.id not in core.state.schedules:
                core.add(schedule)

    # --- after a restart ---------------------------------------------------------------------
    async def recover(self) -> list[int]:
        """The workflow executions a coordinator crash interrupted (pending or running in
        the farm DB): their schedules are added again when the crash came before they were
        saved (else the loaded core state carries on with them). Returns their ids."""
        core = self.service.core()
        found = []
        for row in await self.db.workflow_executions(ACTIVE, limit=100_000):
            wfx = row["workflow_execution_id"]
            found.append(wfx)
            definition = await self.db.workflow_definition_by_id(row["workflow_def_id"])
            if definition is None or not definition["sequences"]:
                await self.db.update_workflow_execution(
                    wfx, status="failed", error_message="workflow definition gone")
                continue
            if not any(parse_schedule_id(s) and parse_schedule_id(s)[0] == wfx
                       for s in core.state.schedules):
                when = _parse_utc(row["start_time"]) or self.service.clock()
                self._add(self._schedules(wfx, definition, row["target"], when,
                                          row.get("client_ids")))
                await self.db.update_workflow_execution(wfx, status="running")
            log.warning("workflow=%s execution=%d interrupted by a coordinator restart: "
                        "carrying on", row["workflow"], wfx)
            self._emit("workflow_recovered", {"workflow_execution_id": wfx,
                                              "workflow": row["workflow"]})
        if found:
            await self.service.save(force=True)
        return found

    # --- records -----------------------------------------------------------------------------
    async def sync(self) -> None:
        """Write the sequence executions of the active workflow executions from their jobs,
        and end a workflow execution whose jobs all ended."""
        async with self._sync_lock:
            await self._sync()

    async def _sync(self) -> None:
        core = self.service.scheduler
        if core is None:
            return
        by_wfx: dict[int, list[str]] = {}
        for sid in core.state.schedules:
            parsed = parse_schedule_id(sid)
            if parsed:
                by_wfx.setdefault(parsed[0], []).append(sid)
        if not by_wfx:
            return
        jobs: dict[str, list[Job]] = {}
        for job in core.state.jobs.values():
            if job.schedule_id in core.state.schedules and parse_schedule_id(job.schedule_id):
                jobs.setdefault(job.schedule_id, []).append(job)
        active = {row["workflow_execution_id"]: row
                  for row in await self.db.workflow_executions(ACTIVE, limit=100_000)}
        for wfx, sids in sorted(by_wfx.items()):
            sids.sort()
            mine = [j for sid in sids for j in jobs.get(sid, [])]
            done = all(core.state.schedules[s].status in ENDED
                       for s in sids) and all(j.status in TERMINAL for j in mine)
            row = active.get(wfx)
            if row is None:
                if done:  # recorded as ended before a crash left its schedules behind
                    self._drop(sids)
                continue
            for job in mine:
                await self._write_job(wfx, job)
            if done:
                # A sequence's schedule that failed (firing it raised) fails the workflow.
                broken = [f"{sid} failed: {core.state.states[sid].error}" for sid in sids
                          if core.state.schedules[sid].status == "failed"]
                await self._finish(row, mine, broken)
                self._drop(sids)

    def _drop(self, sids: list[str]) -> None:
        """Forget an ended workflow execution's schedules and jobs: its rows hold the
        record, and the core's live state must not grow with every workflow ever run."""
        core = self.service.core()
        gone = set(sids)
        for jid in [j for j, job in core.state.jobs.items() if job.schedule_id in gone]:
            self.service.executions.pop(jid, None)
        for sid in sids:
            core.forget(sid)  # recorded as a change: its rows are deleted at the next save

    async def _write_job(self, wfx: int, job: Job) -> None:
        position = parse_schedule_id(job.schedule_id)[1]  # type: ignore[index]
        record = (job.status, job.started_at, job.finished_at, job.reason)
        key = (wfx, position, job.serial, job.account)
        if self._written.get(key) == record:
            return
        account_id = (await self._account_ids(job.serial)).get(job.account or "")
        await self.db.save_sequence_execution(
            wfx, position, (await self._sequence_def_ids(wfx)).get(position), job.serial,
            account_id, status=_SEQUENCE_STATUS.get(job.status, job.status),
            start_time=job.started_at, end_time=job.finished_at, error_message=job.reason)
        self._written[key] = record

    async def _sequence_def_ids(self, wfx: int) -> dict[int, int]:
        """Position -> sequence definition id of a workflow execution's definition (a name
        alone could be another client's definition of the same name)."""
        if wfx not in self._sequence_ids:
            row = await self.db.workflow_execution(wfx)
            definition = (await self.db.workflow_definition_by_id(row["workflow_def_id"])
                          if row is not None and row.get("workflow_def_id") is not None
                          else None)
            self._sequence_ids[wfx] = {e["position"]: e["sequence_def_id"]
                                       for e in (definition or {}).get("sequences", [])}
        return self._sequence_ids[wfx]

    async def _account_ids(self, serial: str) -> dict[str, int]:
        if serial not in self._accounts:
            self._accounts[serial] = {account_ref(a): a["account_id"]  # retired too: history
                                      for a in await self.db.account_rows(
                                          serial, include_retired=True)}
        return self._accounts[serial]

    async def _finish(self, row: dict, jobs: list[Job], broken: list[str] = ()) -> None:
        wfx = row["workflow_execution_id"]
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        if broken:
            status, error = "failed", "; ".join(broken)
        elif not jobs:
            status, error = "failed", f"target {row['target']!r} resolved to no phone"
        elif set(counts) == {"completed"}:
            status, error = "completed", None
        else:
            status = "failed"
            error = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != "completed")
        await self.db.update_workflow_execution(wfx, status=status, error_message=error)
        for key in [k for k in self._written if k[0] == wfx]:
            del self._written[key]
        self._sequence_ids.pop(wfx, None)
        log.info("workflow=%s execution=%d %s%s", row["workflow"], wfx, status,
                 f": {error}" if error else "")
        self._emit("workflow_finished", {"workflow_execution_id": wfx,
                                         "workflow": row["workflow"], "status": status,
                                         "error": error})

    # --- reading -----------------------------------------------------------------------------
    async def view(self, workflow_execution_id: int,
                   clients: frozenset[int] | None = None) -> dict:
        """A workflow execution: id, workflow, target, status, times, error, and its
        ``sequences`` (position, sequence, serial, account, status, times, error,
        execution_ids: the executions each attempt became). The rows are kept up to date
        by `sync` on every change of the scheduler's state. With ``clients``, another
        client's execution reads as one that does not exist."""
        row = await self.db.workflow_execution(workflow_execution_id)
        if row is None or not owned_by(row.get("client_ids"), clients):
            raise WorkflowNotFound(f"workflow execution {workflow_execution_id}: no such "
                                   "workflow execution")
        refs = {a["account_id"]: account_ref(a)
                for a in await self.db.account_rows(include_retired=True)}
        runs = await self._executions_by_target(row)
        return {"workflow_execution_id": workflow_execution_id, "workflow": row["workflow"],
                "target": row["target"], "status": row["status"],
                "clients": row.get("client_ids"),
                "start_time": row["start_time"], "end_time": row["end_time"],
                "error": row["error_message"],
                "sequences": [{
                    "position": s["execution_order"], "sequence": s["sequence"],
                    "serial": s["serial"], "account": refs.get(s["account_id"]),
                    "status": s["status"], "start_time": s["start_time"],
                    "end_time": s["end_time"], "error": s["error_message"],
                    "execution_ids": runs.get((s["execution_order"], s["serial"]), [])}
                    for s in row["sequences"]]}

    async def _executions_by_target(self, row: dict) -> dict[tuple[int, str], list[str]]:
        """(position, serial) -> execution ids: a sequence's schedule fires at the workflow
        execution's start time, so its jobs' run id is ``<schedule id>@<that time>``."""
        out: dict[tuple[int, str], list[str]] = {}
        when = _parse_utc(row["start_time"])
        if when is None:
            return out
        for position in sorted({s["execution_order"] for s in row["sequences"]}):
            sid = schedule_id_of(row["workflow_execution_id"], position)
            for record in await self.db.list_executions(run_id=occurrence_run_id(sid, when)):
                out.setdefault((position, record["serial"]), []).append(record["key"])
        return out

    async def recent(self, limit: int = 50, clients: frozenset[int] | None = None) -> list[dict]:
        """The latest workflow executions, newest first (without their sequences); only
        ``clients``' when given."""
        rows = (await self.db.workflow_executions(limit=limit) if clients is None
                else await self.db.workflow_executions(limit=limit, clients=clients))
        return [{"workflow_execution_id": r["workflow_execution_id"], "workflow": r["workflow"],
                 "target": r["target"], "status": r["status"], "start_time": r["start_time"],
                 "end_time": r["end_time"], "error": r["error_message"],
                 "clients": r.get("client_ids")} for r in rows]

    def _emit(self, event: str, data: dict) -> None:
        emit = getattr(self.service.hub, "emit", None)
        if emit is not None:
            emit(event, None, None, data)


def check_target(target: str) -> None:
    """ValidationError ($.scope) unless ``target`` is a scope or ``group:NAME``."""
    if target.lstrip().startswith("group:"):
        return
    from sequences.scopes import parse_scope

    try:
        parse_scope(target)
    except ScopeError as exc:
        raise ValidationError("$.scope", str(exc)) from None


def _parse_utc(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
