"""Sequence runs on the coordinator: starting a sequence on every phone of a scope, and the
execution records that the nodes' events keep up to date.

Owns, for ``Hub.start_run``: loading the sequence (a library name or an inline object),
resolving the scope to (phone, account) targets, resolving every text per target
(variables from that phone and account, the request's ``variables`` as custom values,
spintax with a per-execution seed), the switch-account steps of the sequence's app for the
target account, the execution record (``executions``, status pending) and the
``RunSequence`` sent to the phone's node. And, for the node events ``execution_*`` and
``step_*``: the records' status and steps, and a failed step's screenshot written under
``DATA/executions/<execution_id>/<path>.png`` (the image never stays in the event store).

Execution statuses: pending, running, paused, completed, failed, cancelled, and ``locked``
(the phone was held by another execution when the run started). A run is ``running`` while
any execution is pending/running/paused, then ``completed`` if all completed, else ``failed``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Protocol

import msgspec
import orjson

from actors.coordinator.media_push import MediaCollector, MediaShipError
from actors.coordinator.media_push import ship as ship_media
from actors.coordinator.outcome_retry import OutcomeRetry
from actors.store.execution_history import ExecutionQuery
from actors.store.execution_records import FINAL_STATUSES, ExecutionRecords
from actors.store.farm_db import account_ref, is_retired
from protocol.errors import FarmError, ValidationError, ValidationErrors
from protocol.files import confined, write_atomic
from protocol.messages import RunSequence
from registry.model import Registry
from sequences.load import LIBRARY, load_named, map_texts, parse_sequence
from sequences.model import EnsureAppStep, Sequence, SleepStep, Step

log = logging.getLogger(__name__)

RUN_EVENTS = frozenset({"execution_started", "step_started", "step_finished", "execution_paused",
                        "execution_resumed", "execution_finished"})
ACTIVE = frozenset({"pending", "running", "paused"})
STEP_STATUS = {"ok": "success", "failed": "failed", "skipped": "skipped"}
AI_RUNS_KEPT = 256                   # runs whose ai.* answers stay cached
SWITCH_SEQUENCE = "switch_account"   # the library's ``<app>/switch_account`` sequence
_TOP_LEVEL = re.compile(r"steps\[\d+\]")
_SAFE_PATH = re.compile(r"[A-Za-z0-9_.\[\]-]+")
# A library name as `sequences.load.library_names` lists them: folder/stem, no dot-files.
_LIBRARY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _not_recorded(serial: str, exc: Exception) -> dict:
    """A target whose start failed before its record was written (the farm database refused
    the write): nothing was stored and nothing sent."""
    log.error("phone=%s: not started, its execution record could not be written",
              serial, exc_info=exc)
    return {"execution_id": None, "status": "failed", "account": None,
            "error": f"not started: the execution record could not be written "
                     f"({type(exc).__name__}: {exc})"}


class RunHub(Protocol):
    """What runs need from the hub: its phone directory and the way actions go out."""

    def phones(self) -> list[dict]: ...

    async def send_run(self, serial: str, run: RunSequence) -> dict: ...


class UnknownSequence(FarmError):
    """No library sequence has that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"sequence {name!r}: not in the library (known: {', '.join(known) or 'none'})")


class RunNotFound(FarmError):
    """No execution belongs to that run (or no such execution)."""


class RunManager:
    """Starts runs and keeps their execution records (``FarmDB``) in step with node events."""

    def __init__(self, hub: RunHub, db: Any, data_dir: str | Path, *,
                 registry: Callable[[], Registry] | None = None, library: str | Path = LIBRARY,
                 recorded: str | Path | None = None) -> None:
        self.hub = hub
        self.db = db
        self.data_dir = Path(data_dir)
        # Where sequences are checked against the registry: the coordinator's registry store as
        # it is at each start (console edits and approved discoveries change it); None: the
        # default registry (sequences.load.default_registry).
        self._registry = registry
        self.library = Path(library)
        # The operator's recorded sequences, looked up before the shipped library.
        self.recorded = Path(recorded) if recorded is not None else None
        # Parsed library sequences: path -> ((mtime_ns, size, registry id), Sequence).
        self._parsed: dict[Path, tuple[tuple, Sequence]] = {}
        # (run_id, AI client) -> its ai.* provider (AIVariables), the latest AI_RUNS_KEPT.
        self._ai_runs: dict[tuple[str, int], Any] = {}
        self._outcomes = OutcomeRetry(db)
        self._sending: set[str] = set()  # first sends awaiting the node's answer
        # A sequence file's version number in definition_versions, by its (mtime_ns, size):
        # looked up once per change of the file, not at every start.
        self._file_versions: dict[Path, tuple[tuple[int, int], int]] = {}

    async def close(self) -> None:
        """Stop writing refused dispatch outcomes again (`OutcomeRetry.close`)."""
        await self._outcomes.close()

    @property
    def registry(self) -> Registry | None:
        return self._registry() if self._registry is not None else None

    # --- starting ----------------------------------------------------------------------------

    def sequence(self, sequence: str | dict) -> tuple[str, Sequence]:
        """(name, validated sequence) of a library name or an inline object; raises
        UnknownSequence or ValidationErrors."""
        if isinstance(sequence, str):
            from sequences.load import library_names

            roots = [root for root in (self.recorded, self.library) if root is not None]
            for root in roots:
                try:
                    return sequence, self._load_named(sequence, root)
                except KeyError:
                    continue
            known = sorted({name for root in roots for name in library_names(root)})
            raise UnknownSequence(sequence, known) from None
        parsed = parse_sequence(sequence, "request: $.sequence", self.registry)
        return f"inline/{parsed.name}", parsed

    def _load_named(self, name: str, root: Path) -> Sequence:
        """`load_named`, parsed once per file version: the scheduler starts the same few
        sequences thousands of times, and globbing the library and validating the file took
        about 1 ms of the event loop per start. KeyError when ``root`` has no such file."""
        if not _LIBRARY_NAME.fullmatch(name):
            return load_named(name, root, self.registry)
        path = root / f"{name}.json"
        try:
            st = path.stat()
        except OSError:
            raise KeyError(name) from None
        version = (st.st_mtime_ns, st.st_size, id(self.registry))
        cached = self._parsed.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        parsed = load_named(name, root, self.registry)
        self._parsed[path] = (version, parsed)
        return parsed

    def sequence_file(self, name: str) -> Path | None:
        """The file a library name loads from (the operator's recordings first), None when
        neither folder has it."""
        if not _LIBRARY_NAME.fullmatch(name):
            return None
        for root in (self.recorded, self.library):
            if root is not None and (root / f"{name}.json").is_file():
                return root / f"{name}.json"
        return None

    async def sequence_version(self, name: str) -> int | None:
        """The number of the version of sequence ``name`` a start now runs: its file's
        content as stored in the definitions' history, a new version (author none: found on
        disk) when the file changed since. None for an inline sequence, or when the history
        cannot be written (the start goes on without it)."""
        path = self.sequence_file(name)
        if path is None or self.db is None:
            return None
        try:
            st = path.stat()
            key = (st.st_mtime_ns, st.st_size)
            cached = self._file_versions.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            from actors.coordinator.definitions.versions import VersionStore

            content = await asyncio.to_thread(lambda: orjson.loads(path.read_bytes()))
            row = await VersionStore(self.db).record_found(
                "sequence", name, None, content, reason="the file as found at a run's start")
        except Exception:  # a full disk or an unreadable file must not stop the start
            log.warning("sequence %s: its version could not be recorded", name, exc_info=True)
            return None
        self._file_versions[path] = (key, row["version"])
        return row["version"]

    def registry_version(self) -> str | None:
        registry = self.registry
        return None if registry is None else registry.version

    async def start(self, sequence: str | dict, scope: str,
                    variables: dict[str, str] | None = None, *,
                    visible: Callable[[str], bool] | None = None,
                    clients: frozenset[int] | None = None) -> dict:
        """Start ``sequence`` on every target of ``scope``: ``{"run_id", "sequence",
        "executions": {serial: {"execution_id", "status", "account", "error"}}}``.

        Raises ValidationErrors (bad sequence), ScopeError (bad scope), UnknownSequence.
        A target whose texts cannot be resolved, whose node is down or whose phone is locked
        gets that status at once; the others are ``pending`` until the node reports.
        ``visible``: the phones the caller may drive (None: every phone); others are not
        there for this scope (`phone:all` means the caller's phones). ``clients``: the
        caller's clients, whose group books ``group:`` scopes use (see `targets`)."""
        name, seq = self.sequence(sequence)
        variables = {str(k): str(v) for k, v in (variables or {}).items()}
        targets = await self._targets(scope, visible, clients)
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        log.info("run=%s sequence=%s scope=%s targets=%d", run_id, name, scope, len(targets))
        outcomes = await asyncio.gather(*(
            self._start_one(run_id, name, seq, serial, account, variables,
                            client_world=clients is not None)
            for serial, account in targets), return_exceptions=True)
        # One target's failed record write must not hide what the others started.
        outcomes = [_not_recorded(serial, out) if isinstance(out, Exception) else out
                    for (serial, _), out in zip(targets, outcomes)]
        return {"run_id": run_id, "sequence": name,
                "executions": {serial: out for (serial, _), out in zip(targets, outcomes)}}

    async def start_one(self, sequence: str | dict, serial: str, account: str | None,
                        variables: dict[str, str] | None = None, *,
                        run_id: str | None = None, client_world: bool = False) -> dict:
        """Start ``sequence`` on one target (the scheduler's jobs): ``{"execution_id",
        "status", "account", "error"}`` with status pending (sent), locked or failed.
        Raises like `start` for a bad or unknown sequence. ``client_world``: a tenant's
        job (see `_context`)."""
        name, seq = self.sequence(sequence)
        variables = {str(k): str(v) for k, v in (variables or {}).items()}
        return await self._start_one(run_id or f"run-{uuid.uuid4().hex[:12]}", name, seq,
                                     serial, account, variables, client_world=client_world)

    async def recent_executions(self, limit: int = 50) -> list[dict]:
        """The latest executions, newest first, without their steps."""
        refs = await self._account_refs()
        return [{k: v for k, v in execution_view(r, refs).items() if k != "steps"}
                for r in await self.db.recent_executions(limit)]

    async def execution_history(self, query: ExecutionQuery) -> dict:
        """One page of the execution history (actors.store.execution_history):
        ``{"executions": [...] newest first, without steps, "next_before": the next page's
        ``before`` or None}``. ValidationError naming ``before`` for an unknown one."""
        rows, next_before = await self.db.execution_page(query)
        refs = await self._account_refs()
        return {"executions": [{k: v for k, v in execution_view(r, refs).items()
                                if k != "steps"} for r in rows],
                "next_before": next_before}

    async def targets(self, scope: str, *, clients: frozenset[int] | None = None
                      ) -> list[tuple[str, str | None]]:
        """The (serial, account or None) targets of ``scope`` now; raises ScopeError.
        ``clients`` (a tenant's schedule or workflow): among those clients' phones only,
        ``group:`` in their group books; None: every phone, the farm's shared groups."""
        return await self._targets(scope, None, clients)

    async def _targets(self, scope: str, visible: Callable[[str], bool] | None = None,
                       clients: frozenset[int] | None = None) -> list[tuple[str, str | None]]:
        if clients is not None and visible is None:
            from actors.access.scope import phone_client

            visible = lambda serial: phone_client(self.hub, serial) in clients  # noqa: E731
        found = await self._resolve_targets(scope, visible, clients)
        if visible is None:
            return found
        # A group's stored member may have gone to another client since it was added.
        return [(serial, account) for serial, account in found if visible(serial)]

    async def _resolve_targets(self, scope: str, visible: Callable[[str], bool] | None,
                               clients: frozenset[int] | None) -> list[tuple[str, str | None]]:
        from sequences.scopes import targets

        phones = self.hub.phones()
        if visible is not None:
            phones = [p for p in phones if visible(p["serial"])]
        accounts: list[dict] = []
        if self.db is not None:
            # The farm database knows each phone's client and profile (phone:client:NAME,
            # filter.phones where profile.…); the hub knows which phones are there now.
            known = {row["serial"]: row for row in await self.db.phone_rows()}
            if visible is not None:
                known = {k: v for k, v in known.items() if visible(k)}
            phones = [{**known.get(p["serial"], {}), **p,
                       "client": known.get(p["serial"], {}).get("client")} for p in phones]
            every = await self.db.account_rows(include_retired=True)
            if visible is not None:
                every = [a for a in every if visible(a.get("serial"))]
            # Retired accounts are never targets; a scope naming one says so.
            return targets(scope, phones, [a for a in every if not is_retired(a)],
                           groups=await self._groups(clients),
                           retired=[a for a in every if is_retired(a)])
        return targets(scope, phones, accounts)

    async def _groups(self, clients: frozenset[int] | None) -> Any:
        """The group book ``group:`` scopes resolve in: the farm's shared one (None), a
        client's own, or several clients' seen together (`ClientGroupBooks`)."""
        if clients is None:
            return await self.db.group_book()
        if len(clients) == 1:
            return await self.db.group_book(next(iter(clients)))
        from actors.access.scope import phone_client
        from sequences.groups import ClientGroupBooks

        return ClientGroupBooks({c: await self.db.group_book(c) for c in sorted(clients)},
                                lambda serial: phone_client(self.hub, serial))

    async def _start_one(self, run_id: str, name: str, seq: Sequence, serial: str,
                         target_account: str | None, variables: dict[str, str], *,
                         client_world: bool = False) -> dict:
        execution_id = f"ex-{uuid.uuid4().hex[:12]}"
        out: dict[str, Any] = {"execution_id": execution_id, "status": "pending",
                               "account": None, "error": None}
        record = {"run_id": run_id, "serial": serial, "sequence": name,
                  "sequence_version": await self.sequence_version(name),
                  "registry_version": self.registry_version()}
        pauses = getattr(self.hub, "pauses", None)
        refusal = pauses.refusal(serial) if pauses is not None else None
        if refusal is not None:  # the coordinator paused the phone: no new work until resumed
            await self._refused(out, record, "phone_paused", refusal)
            return {**out, "status": "paused", "error": refusal}
        failure = await self._ensure_apps(seq, serial)
        if failure is not None:  # an ensure_app step could not put its version on the phone
            return await self._refused(out, record, "ensure_app", failure)
        refusal = await self._app_version_refusal(seq, serial)
        if refusal is not None:  # the phone's app is not the version the sequence was made for
            return await self._refused(out, record, "app_version", refusal)
        try:
            run, account_id = await self._prepare(execution_id, run_id, name, seq, serial,
                                                  target_account, variables, client_world)
        except MediaShipError as exc:  # the phone's node did not get the run's media
            return await self._refused(out, record, "media_push_failed", str(exc))
        except (FarmError, ValidationErrors) as exc:
            return await self._refused(out, record, "prepare", str(exc))
        out["account"] = run.account
        # The record is written once, with its plan, before anything goes to the node (a
        # crash before this line started nothing: no record is needed).
        await self.db.create_execution(execution_id, **record, account_id=account_id,
                                       plan=msgspec.json.encode(run).decode())
        self._sending.add(execution_id)  # its answer settles it: send_pending leaves it
        try:
            result = await self.hub.send_run(serial, run)
        except FarmError as exc:
            return await self._failed_at_start(out, "failed", "send", str(exc))
        finally:
            self._sending.discard(execution_id)
        status = result.get("status")
        if status == "ok":
            return out
        if status == "locked":
            return await self._failed_at_start(out, "locked", "locked",
                                               result.get("error") or "phone locked")
        return await self._failed_at_start(out, "failed", str(status),
                                           result.get("error") or f"node answered {status}")

    async def _refused(self, out: dict, record: dict, reason: str, error: str) -> dict:
        """An execution refused before anything went to its node: recorded failed in one
        write (a write that fails leaves no row, and the caller's error says so)."""
        log.warning("execution=%s not started: %s: %s", out["execution_id"], reason, error)
        await self.db.create_execution(out["execution_id"], **record, status="failed",
                                       error_reason=reason, error_message=error)
        return {**out, "status": "failed", "error": error}

    async def _failed_at_start(self, out: dict, status: str, reason: str, error: str) -> dict:
        """The node refused (or never got) an execution whose record is written ``pending``
        with its plan. If the farm database refuses this outcome now (a full disk), it is
        written later by `OutcomeRetry`: the caller still gets the node's answer, and the
        record does not stay ``pending`` once the database takes writes again."""
        log.warning("execution=%s not started: %s: %s", out["execution_id"], reason, error)
        fields = {"status": status, "error_message": error, "error_reason": reason}
        try:
            await self.db.update_execution(out["execution_id"], **fields)
        except Exception as exc:  # noqa: BLE001 - any database failure: kept and retried
            self._outcomes.defer(out["execution_id"], fields, exc)
        return {**out, "status": status, "error": error}

    async def resume(self, serials: list[str], lock_holders: dict[str, str | None]) -> list[str]:
        """Crash recovery (spec 12.3.1) for phones a node reports after (re)connecting: each
        unfinished execution the node is not playing (its phone's lock is not the
        execution's) is sent again from the step after its last successful top-level step,
        to play only if the phone shows the screen that step left. Returns the ids resent."""
        resent = []
        for record in await self.db.unfinished_executions(serials):
            execution_id, serial = record["execution_key"], record["serial"]
            if record.get("error_reason") == "recovering":
                await self._recovery_interrupted(record)
                continue
            if lock_holders.get(serial) == execution_id:
                continue  # still playing on the node (only the coordinator restarted)
            if not record.get("plan"):
                # Only a start refused before the send is recorded without a plan, and that
                # is one write with its outcome; an older farm's half-written refusal ends so.
                await self.db.update_execution(
                    execution_id, status="failed", error_reason="not_started",
                    error_message="never sent to its phone: its start was refused and the "
                                  "refusal was not recorded")
                continue
            run = msgspec.json.decode(record["plan"], type=RunSequence)
            done = await self.db.get_execution(execution_id)
            top = [s for s in done["steps"] if _TOP_LEVEL.fullmatch(s["path"] or "")
                   and s["status"] == "success"]
            last = max(top, key=lambda s: s["step_number"], default=None)
            resume_from = last["step_number"] + 1 if last is not None else 0
            if resume_from >= len(run.steps):
                await self.db.update_execution(execution_id, status="completed")
                continue
            resume_screen = last["screen_name"] if last is not None else None
            log.warning("execution=%s phone=%s interrupted by a node restart: resending from "
                        "step %d (expects %s)", execution_id, serial, resume_from, resume_screen)
            result = await self.resend(record, resume_from, resume_screen)
            if result.get("status") != "ok":
                await self.db.update_execution(
                    execution_id, status="failed", error_reason="resume",
                    error_message=f"could not resume after a node restart: {result.get('error')}")
                continue
            resent.append(execution_id)
        return resent

    async def send_pending(self, serials: list[str], lock_holders: dict[str, str | None]
                           ) -> list[str]:
        """At a node's hello: each execution on ``serials`` still recorded ``pending`` with
        its plan is sent again, marked ``if_new``. Such a record is written before its first
        send, and only the node's first event moves it on; a coordinator that crashed before
        the node's answer (a 4 x 15 chaos run: the scheduler's dispatch, killed mid-send)
        left it pending with nothing to move it (a first send of this process still awaiting
        its answer is left to that answer). The node plays it if it never started it,
        and answers "already played" otherwise, whose events then bring the record up to
        date. A refusal (the phone locked, the node gone) ends it with the reason. Returns
        the ids the node took."""
        taken = []
        for record in await self.db.unfinished_executions(serials):
            execution_id, serial = record["execution_key"], record["serial"]
            if record["status"] != "pending" or not record.get("plan") \
                    or execution_id in self._sending or lock_holders.get(serial) == execution_id:
                continue
            result = await self.resend(record, 0, None, if_new=True)
            status = result.get("status")
            if status == "ok":
                if not result.get("already_played") and not result.get("already_running"):
                    log.warning("execution=%s phone=%s was still pending at its node's hello "
                                "(its first send unanswered): sent again", execution_id, serial)
                taken.append(execution_id)
                continue
            await self._failed_at_start(
                {"execution_id": execution_id}, "locked" if status == "locked" else "failed",
                "locked" if status == "locked" else "not_started",
                f"sent again at its node's hello (its first send unanswered): "
                f"{result.get('error') or status}")
        return taken

    async def _recovery_interrupted(self, record: dict) -> None:
        """An execution AI recovery had taken over (actors/coordinator/ai/recovery.py): left alone while
        that recovery runs; after a coordinator restart nothing recovers it any more, so it
        fails and the lock the node kept for the recovery is given back."""
        execution_id, serial = record["execution_key"], record["serial"]
        recovery = getattr(self.hub, "recovery", None)
        if recovery is not None and execution_id in recovery.active:
            return
        log.warning("execution=%s phone=%s: AI recovery was interrupted (coordinator restart)",
                    execution_id, serial)
        await self.db.update_execution(
            execution_id, status="failed", error_reason="recovery_interrupted",
            error_message=f"AI recovery was interrupted by a coordinator restart; it had "
                          f"taken over after: {record.get('error_message')}")
        release = getattr(self.hub, "device_action", None)
        if release is not None:
            try:
                await release(serial, {"type": "release", "execution_id": execution_id})
            except FarmError as exc:  # the lease ends it anyway
                log.warning("execution=%s lock not released: %s", execution_id, exc)

    async def resend(self, record: dict, resume_from: int, resume_screen: str | None, *,
                     if_new: bool = False) -> dict:
        """Send the stored plan of execution ``record`` (a row with its ``plan``) again, to
        play from top-level step ``resume_from`` if the phone shows ``resume_screen``: crash
        recovery and AI recovery both resume this way, `send_pending` with ``if_new`` (the
        node plays it only if it never started it). The node's answer (status ok, ...)."""
        run = msgspec.json.decode(record["plan"], type=RunSequence)
        run = msgspec.structs.replace(run, resume_from=resume_from, resume_screen=resume_screen,
                                      if_new=if_new)
        try:
            return await self.hub.send_run(record["serial"], run)
        except FarmError as exc:
            return {"status": "error", "error": str(exc)}

    async def _ensure_apps(self, seq: Sequence, serial: str) -> str | None:
        """The sequence's top-level ``ensure_app`` steps, played here before the run starts
        (actors.coordinator.apps installs the version where the phone has another); why one
        failed, else None."""
        steps = [s for s in seq.steps if isinstance(s, EnsureAppStep)]
        if not steps:
            return None
        apps = getattr(self.hub, "apps", None)
        if apps is None:
            return "ensure_app needs the coordinator's apps service"
        for step in steps:
            failure = await apps.ensure(serial, step.app, step.version)
            if failure is not None:
                return failure
        return None

    async def _app_version_refusal(self, seq: Sequence, serial: str) -> str | None:
        """A sequence's ``requires_app_version`` against the phone's installed version of its
        app (the inventory its node reported: actors.coordinator.apps); None: may start."""
        apps = getattr(self.hub, "apps", None)
        if seq.requires_app_version is None or apps is None:
            return None
        registry = self.registry
        if seq.app is None:
            return "the sequence sets requires_app_version but names no app"
        package = (registry.apps[seq.app].package
                   if registry is not None and seq.app in registry.apps else seq.app)
        return await apps.version_refusal(serial, package, seq.requires_app_version)

    async def _prepare(self, execution_id: str, run_id: str, name: str, seq: Sequence,
                       serial: str, target_account: str | None, variables: dict[str, str],
                       client_world: bool = False) -> tuple[RunSequence, Any]:
        """The plan sent to the node, and the farm DB id of its account (None without one)."""
        every = await self.db.account_rows(serial, include_retired=True)
        accounts = [a for a in every if not is_retired(a)]
        account = self._account_for(seq, serial, target_account, accounts)
        if account is not None and not any(account_ref(a) == account for a in accounts) \
                and any(account_ref(a) == account for a in every):
            raise ValidationError(f"phone {serial}", f"account {account} is retired (deleted)")
        # The account ${account.FIELD} names: the run's, else the phone's first of the app.
        text_account = account or self._first_account(seq.app, accounts)
        rng = random.Random(int(hashlib.sha256(execution_id.encode()).hexdigest()[:16], 16))
        client = await self._ai_client(seq, serial, account, accounts)
        ai = self._ai_for(run_id, client)
        media = MediaCollector()  # ${content.media.*}: the phone's paths, the files kept
        steps = await self._resolve_steps(seq.steps, serial, text_account, variables, rng, ai,
                                          client_world, media)
        # ensure_app was played before the start (_ensure_apps): the node gets a no-op in its
        # place, so the steps' paths stay the sequence's.
        steps = [SleepStep(label=s.label or f"ensure_app {s.app} {s.version}", seconds=0)
                 if isinstance(s, EnsureAppStep) else s for s in steps]
        switch: list[Step] = []
        username = account_id = None
        if account is not None:
            platform = account.split(".", 1)[0]
            row = next((a for a in accounts if account_ref(a) == account),
                       None)
            if row is not None:
                username, account_id = row["username"], row["account_id"]
            try:
                switch_seq = load_named(f"{platform}/{SWITCH_SEQUENCE}", self.library, self.registry)
            except KeyError:
                switch_seq = None  # the app has no switch sequence: the node fails if needed
            if switch_seq is not None:
                switch = await self._resolve_steps(switch_seq.steps, serial, account, variables,
                                                   rng, ai, client_world, media)
        package = None
        if seq.app is not None and self.registry is not None and seq.app in self.registry.apps:
            package = self.registry.apps[seq.app].package
        elif seq.app is not None:
            from sequences.load import default_registry

            app = default_registry().apps.get(seq.app)
            package = app.package if app else None
        # The recovery prompt goes along only when the coordinator can recover (hub.ai set):
        # the node then keeps the lock on a recoverable failure (actors/coordinator/ai/recovery.py).
        recovery_prompt = seq.recovery_prompt or None if client is not None else None
        await ship_media(self.hub, serial, list(media.files.values()))
        return RunSequence(media=media.media_files(), execution_id=execution_id, run_id=run_id, sequence=name, steps=steps,
                           app=seq.app, package=package, account=account,
                           account_username=username, switch_steps=switch, retry=seq.retry,
                           recovery_prompt=recovery_prompt), account_id

    def _account_for(self, seq: Sequence, serial: str, target: str | None,
                     accounts: list[dict]) -> str | None:
        """The account the execution must run as: the scope's, else the sequence's (a fixed
        ``platform.number``, or ``platform`` = the phone's first account of that platform)."""
        if target is not None:
            return target
        wanted = seq.account
        if wanted is None:
            return None
        if "." in wanted:
            return wanted
        first = self._first_account(wanted, accounts)
        if first is None:
            raise ValidationError(f"phone {serial}", f"has no {wanted} account, which sequence "
                                                     f"{seq.name!r} needs")
        return first

    @staticmethod
    def _first_account(platform: str | None, accounts: list[dict]) -> str | None:
        row = next((a for a in accounts if a["platform"] == platform), None)
        return account_ref(row) if row else None

    async def _ai_client(self, seq: Sequence, serial: str, account: str | None,
                         accounts: list[dict]) -> Any:
        """The AI client of this execution (its client's key, else its organization's, else
        the farm's default; None = AI off). A stored key the master key cannot open fails
        the execution only when it needs AI (ai.* texts or a recovery prompt)."""
        ai_for = getattr(self.hub, "ai_for", None)
        if ai_for is None:
            return getattr(self.hub, "ai", None)
        account_id = next((a["account_id"] for a in accounts
                           if account_ref(a) == account), None)
        try:
            return await ai_for(serial, account_id)
        except FarmError as exc:
            if seq.recovery_prompt or b"${ai." in msgspec.json.encode(seq.steps):
                raise
            log.warning("phone=%s AI off for this execution: %s", serial, exc)
            return None

    def _ai_for(self, run_id: str, client: Any) -> Any:
        """The run's ``ai.*`` provider for ``client`` (one per run and client: answers are
        cached for the run), or None without an AI model (``ai.*`` then fails clearly)."""
        if client is None:
            return None
        provider = self._ai_runs.get((run_id, id(client)))
        if provider is None:
            from actors.coordinator.ai.variables import AIVariables

            provider = self._ai_runs[(run_id, id(client))] = AIVariables(
                client, asyncio.get_running_loop())
            while len(self._ai_runs) > AI_RUNS_KEPT:  # oldest run first
                self._ai_runs.pop(next(iter(self._ai_runs)))
        return provider

    async def _resolve_steps(self, steps: list[Step], serial: str, account: str | None,
                             variables: dict[str, str], rng: random.Random,
                             ai: Any = None, client_world: bool = False,
                             media: MediaCollector | None = None) -> list[Step]:
        texts: list[str] = []
        map_texts(steps, lambda text, path: texts.append(text) or text)
        if not texts:
            return steps
        ctx = await self._context(serial, account, variables, ai, client_world)
        if media is not None:
            media.wrap(ctx)
        from sequences.variables import resolve

        def resolve_all() -> list[Step]:
            return map_texts(steps, lambda text, path: resolve(text, ctx, rng))

        # Counters and media call back into the database's loop: resolve off the loop.
        return await asyncio.to_thread(resolve_all)

    async def _context(self, serial: str, account: str | None, variables: dict[str, str],
                       ai: Any = None, client_world: bool = False):
        try:
            # The one place passwords are opened: this text goes to the phone's node to type.
            # A tenant's run (client_world) names only its phone's client's groups and
            # phones; a super user's, the farm's shared groups over every phone.
            return await self.db.variable_context(serial, account, variables, ai=ai,
                                                  secrets=True, client_world=client_world)
        except ValidationError as exc:
            if account is not None:
                raise
            # A phone the database does not know still gets spintax and custom variables.
            log.info("phone=%s variables without database context: %s", serial, exc)
            from sequences.variables import NoAIProvider, VariableContext

            return VariableContext(serial=serial, custom=dict(variables),
                                   ai=ai if ai is not None else NoAIProvider())

    # --- node events ---------------------------------------------------------------------------
    async def take_screenshot(self, event: str, data: dict, node: str | None = None) -> dict:
        """Before the event is stored: a failed step's PNG goes to a file, the event keeps
        its path (idempotent: a replayed event rewrites the same file). The path is only ever
        the one written here: a ``screenshot`` the node put in the event itself is dropped
        (logged with the node), else a node could have any coordinator file served."""
        if "screenshot" in data:
            data = dict(data)
            if (reported := data.pop("screenshot")) is not None:
                log.warning("node=%s execution=%s step %s: screenshot path %r from the node "
                            "refused (only the image is accepted), step kept without it",
                            node, data.get("execution_id"), data.get("path"), reported)
        encoded = data.pop("screenshot_png_b64", None)
        if event != "step_finished" or not encoded:
            return data
        execution_id, path = str(data.get("execution_id")), str(data.get("path") or "step")
        if not _SAFE_PATH.fullmatch(execution_id) or not _SAFE_PATH.fullmatch(path) \
                or ".." in execution_id or ".." in path:
            log.error("node=%s screenshot of %r/%r not kept: unsafe name", node, execution_id, path)
            return data
        target = self.screenshot_path(execution_id, path)
        try:
            png = base64.b64decode(encoded)
            await asyncio.to_thread(write_atomic, target, png)
        except (ValueError, OSError) as exc:
            log.error("execution=%s step %s screenshot not written: %s", execution_id, path, exc)
            return {**data, "screenshot_error": str(exc)}
        return {**data, "screenshot": str(target)}

    def screenshot_path(self, execution_id: str, path: str) -> Path:
        return self.screenshot_folder(execution_id) / f"{path}.png"

    def screenshot_folder(self, execution_id: str) -> Path:
        """Where an execution's step screenshots live; nothing outside it is served."""
        return self.data_dir / "executions" / execution_id

    async def apply(self, event: str, serial: str | None, data: dict) -> None:
        """Update the execution record from one (new, stored) node event."""
        await self.apply_many([(event, serial, data)])

    async def apply_many(self, events: list[tuple]) -> None:
        """Update the execution records from node events (event, serial, data[, seq]), in
        order, in one writer job; ``seq`` is the event's journal seq (the hub's; a step row
        keeps its start's). An event the records cannot take (an execution this coordinator
        never created, say) is logged and skipped; the others still apply."""
        items = [(event, str(data["execution_id"]), data, rest[0] if rest else None)
                 for event, _, data, *rest in events if data.get("execution_id")]
        if not items:
            return

        def job(records: ExecutionRecords) -> None:
            for event, execution_id, data, seq in items:
                try:
                    with records.savepoint():
                        self._apply(records, event, execution_id, data, seq)
                except ValidationError as exc:
                    log.warning("execution=%s event %s not recorded: %s", execution_id, event, exc)

        await self.db.write_records(job)

    @staticmethod
    def _apply(records: ExecutionRecords, event: str, execution_id: str, data: dict,
               seq: int | None = None) -> None:
        if event == "execution_started":
            records.update(execution_id, status="running")
        elif event == "execution_paused":
            records.update(execution_id, status="paused", error_reason=data.get("reason"))
        elif event == "execution_resumed":
            # The pause's reason is over; left in place, a completed execution kept it.
            records.update(execution_id, status="running", error_reason=None)
        elif event == "execution_finished":
            status = data.get("status") or "failed"
            if data.get("recovering"):
                # AI recovery took it over (actors/coordinator/ai/recovery.py): active until it decides. A
                # replayed event must not reopen an execution recovery has ended since.
                if records.status(execution_id) in ACTIVE:
                    records.update(execution_id, status="running", error_reason="recovering",
                                   error_message=data.get("error"))
                return
            fields: dict[str, Any] = {"status": status}
            if data.get("error") or status != "completed":
                fields["error_message"] = data.get("error")
                fields["error_reason"] = data.get("reason")
            if status in FINAL_STATUSES and records.outcome(execution_id) == (
                    status, fields.get("error_reason")):
                # This end, delivered again (a node re-sends what it saw no ack for): its
                # first delivery set the end time, which must not move to now.
                return
            records.update(execution_id, **fields)
        elif event == "step_started":
            path = str(data.get("path"))
            found = records.find_step(execution_id, path)
            # This start delivered again: its row is still running, or (finished since) was
            # started by this very event. A step played again (after a node restart) comes
            # with a seq of its own, and is a row of its own.
            again = found is not None and (found[1] == "running"
                                           or (seq is not None and found[2] == seq))
            if not again:
                records.add_step(execution_id, int(data.get("index") or 0), data.get("type"),
                                 path=path, start_seq=seq)
        elif event == "step_finished":
            path = str(data.get("path"))
            found = records.find_step(execution_id, path)
            # A replayed finish updates the row again; a finish whose start never arrived
            # (stored before a crash, say) gets its row now.
            step_id = found[0] if found is not None else records.add_step(
                execution_id, int(data.get("index") or 0), data.get("type"), path=path)
            status = STEP_STATUS.get(str(data.get("status")), str(data.get("status")))
            records.finish_step(step_id, status, screen_name=data.get("screen"),
                                error=data.get("error"), screenshot=data.get("screenshot"))

    # --- reading -----------------------------------------------------------------------------
    async def get_execution(self, execution_id: str) -> dict:
        record = await self.db.get_execution(execution_id)
        if record is None:
            raise RunNotFound(f"execution {execution_id!r}: no such execution")
        return execution_view(record, await self._account_refs())

    async def _account_refs(self) -> dict[int, str]:
        return {a["account_id"]: account_ref(a)  # past executions: retired accounts too
                for a in await self.db.account_rows(include_retired=True)}

    async def get_run(self, run_id: str) -> dict:
        records = await self.db.list_executions(run_id=run_id)
        if not records:
            raise RunNotFound(f"run {run_id!r}: no such run")
        refs = await self._account_refs()
        executions = [execution_view(await self.db.get_execution(_key(r)), refs)
                      for r in records]
        return {"run_id": run_id, "sequence": executions[0]["sequence"],
                "status": run_status([e["status"] for e in executions]),
                "executions": executions}

    async def step_screenshot(self, execution_id: str, path: str) -> bytes:
        return await asyncio.to_thread((await self.step_screenshot_file(execution_id, path)).read_bytes)

    async def step_screenshot_file(self, execution_id: str, path: str) -> Path:
        """The file of a failed step's screenshot. Retention (actors/store/retention.py) compresses
        ``<path>.png`` to ``.jpg``/``.webp`` and repoints the row, so the stored name is tried
        first, then the same name with each image suffix. RunNotFound when there is none."""
        record = await self.db.get_execution(execution_id)
        if record is None:
            raise RunNotFound(f"execution {execution_id!r}: no such execution")
        for step in record.get("steps", []):
            if step.get("path") == path and step.get("screenshot"):
                return await asyncio.to_thread(self._screenshot_file, record, path,
                                               step["screenshot"])
        raise RunNotFound(f"execution {execution_id!r}: no screenshot for step {path!r}")

    def _screenshot_file(self, record: dict, path: str, stored: str) -> Path:
        """The file of a step row's ``stored`` screenshot, only if it (symlinks followed) is
        inside the execution's folder: a row naming anything else is logged and answered as
        no screenshot."""
        execution_id = _key(record)
        folder = self.screenshot_folder(execution_id)
        inside = confined(folder, stored)
        found = find_screenshot(inside) if inside is not None else None
        served = confined(folder, found) if found is not None else None  # a symlink out?
        if inside is None or (found is not None and served is None):
            log.warning("execution=%s serial=%s step %s: stored screenshot %r is outside %s, "
                        "not served", execution_id, record.get("serial"), path, stored, folder)
            raise RunNotFound(f"execution {execution_id!r}: no screenshot for step {path!r}")
        if served is None:
            raise RunNotFound(f"execution {execution_id!r}: screenshot of step {path!r} "
                              "is gone (retention deletes them after 30 days)")
        return served


SCREENSHOT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                    ".webp": "image/webp"}


def find_screenshot(stored: Path) -> Path | None:
    """``stored`` if it is a file, else the same name with another image suffix (a
    compressed copy), else None."""
    for candidate in (stored, *(stored.with_suffix(s) for s in SCREENSHOT_TYPES)):
        if candidate.is_file():
            return candidate
    return None


def screenshot_type(path: Path) -> str:
    """The content type of a screenshot file, from its suffix."""
    return SCREENSHOT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _key(record: dict) -> str:
    return record.get("key") or record.get("execution_key")


def run_status(statuses: list[str]) -> str:
    """running while any execution is active; completed when all completed; else failed."""
    if any(s in ACTIVE for s in statuses):
        return "running"
    return "completed" if statuses and all(s == "completed" for s in statuses) else "failed"


def execution_view(record: dict, account_refs: dict[int, str] | None = None) -> dict:
    """The API's form of an execution record (``account_refs``: account_id -> its
    ``platform.account_number``)."""
    execution_id = _key(record)
    account = (account_refs or {}).get(record.get("account_id"))
    steps = []
    for s in record.get("steps", []):
        path = s.get("path")
        steps.append({
            "index": s.get("step_number"), "path": path, "type": s.get("action_type"),
            "status": s.get("status"), "screen": s.get("screen_name"),
            "start_time": s.get("start_time"), "end_time": s.get("end_time"),
            "error": s.get("error"),
            "screenshot": (f"/api/executions/{execution_id}/steps/{path}/screenshot"
                           if s.get("screenshot") else None)})
    return {"execution_id": execution_id, "run_id": record.get("run_id"),
            "serial": record.get("serial"), "sequence": record.get("sequence"),
            "sequence_version": record.get("sequence_version"),
            "registry_version": record.get("registry_version"), "account": account, "status": record.get("status"),
            "error": record.get("error_message"), "reason": record.get("error_reason"),
            "current_step": record.get("current_step"), "start_time": record.get("start_time"),
            "end_time": record.get("end_time"), "steps": steps}
