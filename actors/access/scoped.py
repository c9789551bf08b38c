"""The hub and the farm database as one caller sees them.

`hub_of(request)` hands every route a `ScopedHub` for a caller that is not a super user;
its `farm_db()` is a `ScopedFarmDB`. Both fail closed: a method not written out here is
refused (AccessDenied, 403), so a new hub or database method cannot leak another client's
rows before someone decides how it is scoped. Another client's phone, execution, account,
profile, client, schedule, workflow execution, group or definition is answered exactly like
one that does not exist.

The reads marked ``@_as_caller`` also run with the caller's clients in the database
(actors.store.caller_scope): on PostgreSQL its row-level security then hides every other
client's rows from them, a second guard behind the filters written here."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, Awaitable, Callable, TypeVar

from actors.access.principal import Principal
from actors.access.scope import require_phone, sees_phone, visible_phones, visible_rows
from actors.access.scoped_work import ScopedSchedules, SequenceLoader
from actors.access.users import AccessDenied
from actors.coordinator.runs import RunNotFound
from actors.store.caller_scope import as_clients
from actors.store.execution_history import ExecutionQuery
from protocol.errors import FarmError, PhoneNotFound, ValidationError

R = TypeVar("R")


def _as_caller(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Run a read with the caller's clients set for the database (row-level security)."""
    @functools.wraps(method)
    async def scoped(self: Any, *args: Any, **kwargs: Any) -> R:
        with as_clients(self.principal.client_ids):
            return await method(self, *args, **kwargs)
    return scoped


class ScopedHub:
    """Owns nothing: the coordinator's hub seen by one non-super caller (its clients'
    phones, their executions, runs, screens and unknown screens)."""

    def __init__(self, hub: Any, principal: Principal) -> None:
        self._hub = hub
        self.principal = principal

    def __getattr__(self, name: str) -> Any:
        raise AccessDenied(f"not available to a {self.principal.role} user ({name})")

    # -- phones --------------------------------------------------------------------------

    def visible(self, serial: str) -> bool:
        return sees_phone(self.principal, self._hub, serial)

    def phones(self) -> list[dict]:
        return visible_phones(self.principal, self._hub)

    def nodes(self) -> list[dict]:
        """The nodes holding the caller's phones, counting only those phones."""
        mine: dict[str, int] = {}
        for phone in self.phones():
            if phone["state"] != "offline":
                mine[phone["node"]] = mine.get(phone["node"], 0) + 1
            else:
                mine.setdefault(phone["node"], 0)
        return [{**n, "phones": mine[n["name"]]} for n in self._hub.nodes() if n["name"] in mine]

    async def run_action(self, serial: str, action: dict, execution_id: str | None = None) -> dict:
        require_phone(self.principal, self._hub, serial)
        return await self._hub.run_action(serial, action, execution_id)

    async def screen(self, serial: str, width: int | None = None) -> tuple[bytes, str]:
        require_phone(self.principal, self._hub, serial)
        return await self._hub.screen(serial, width)

    def tag_phone(self, serial: str, tag: str, add: bool = True) -> list[str]:
        require_phone(self.principal, self._hub, serial)
        return self._hub.tag_phone(serial, tag, add)

    async def resume_phone(self, serial: str, actor: str | None = None,
                           reason: str | None = None) -> dict:
        require_phone(self.principal, self._hub, serial)
        return await self._hub.resume_phone(serial, actor=actor, reason=reason)

    def start_recording(self, name: str, app: str | None, serials: list[str]) -> dict:
        for serial in serials:
            require_phone(self.principal, self._hub, serial)
        return self._hub.start_recording(name, app, serials)

    def stop_recording(self, recording_id: str) -> dict:
        return self._hub.stop_recording(recording_id)

    # -- runs and executions -------------------------------------------------------------

    async def start_run(self, sequence: str | dict, scope: str,
                        variables: dict[str, str] | None = None) -> dict:
        return await self._hub.start_run(sequence, scope, variables, visible=self.visible,
                                         clients=self._clients)

    @_as_caller
    async def get_run(self, run_id: str) -> dict:
        run = await self._hub.get_run(run_id)
        executions = [e for e in run.get("executions", []) if self.visible(e.get("serial"))]
        if not executions:
            raise RunNotFound(f"run {run_id}: no such run")
        return {**run, "executions": executions}

    @_as_caller
    async def get_execution(self, execution_id: str) -> dict:
        execution = await self._hub.get_execution(execution_id)
        if not self.visible(execution.get("serial")):
            raise RunNotFound(f"execution {execution_id}: no such execution")
        return execution

    @_as_caller
    async def list_executions(self, limit: int = 50) -> list[dict]:
        return (await self.execution_history(ExecutionQuery(limit=limit)))["executions"]

    @_as_caller
    async def execution_history(self, query: ExecutionQuery) -> dict:
        # The caller's clients go into the query itself: the database keeps only their
        # phones' executions, so every page is full (filtering a page afterwards left it
        # short, or empty, when other clients' executions came first).
        return await self._hub.execution_history(replace(query, clients=self._clients))

    async def execution_screenshot(self, execution_id: str, path: str) -> tuple[bytes, str]:
        await self.get_execution(execution_id)
        return await self._hub.execution_screenshot(execution_id, path)

    # -- schedules and workflow runs: the caller's clients' own ---------------------------

    @property
    def _clients(self) -> frozenset[int]:
        return self.principal.client_ids or frozenset()

    async def add_schedule(self, schedule: Any) -> dict:
        # It belongs to the caller's clients whatever the request said: its target is
        # resolved among their phones, now and at every occurrence.
        schedule.clients = sorted(self._clients)
        return await self._hub.add_schedule(schedule)

    def list_schedules(self) -> list[dict]:
        return self._hub.list_schedules(clients=self._clients)

    async def control_schedule(self, schedule_id: str, action: str) -> dict:
        return await self._hub.control_schedule(schedule_id, action, clients=self._clients)

    async def schedule_events(self, schedule_id: str) -> list[dict]:
        return await self._hub.schedule_events(schedule_id, clients=self._clients)

    @property
    def schedules(self) -> ScopedSchedules | None:
        service = getattr(self._hub, "schedules", None)
        return ScopedSchedules(service, self._clients) if service is not None else None

    @property
    def runs(self) -> SequenceLoader | None:
        runs = getattr(self._hub, "runs", None)
        return SequenceLoader(runs) if callable(getattr(runs, "sequence", None)) else None

    # -- unknown screens and the stream --------------------------------------------------

    def unknown_screens(self) -> list[dict]:
        return [e for e in self._hub.unknown_screens() if self._entry_visible(e)]

    def unknown_screen_image(self, entry_id: str) -> bytes:
        entry = next((e for e in self._hub.unknown_screens() if e.get("id") == entry_id), None)
        if entry is None or not self._entry_visible(entry):
            raise FarmError(f"unknown screen {entry_id!r}: no such entry")
        return self._hub.unknown_screen_image(entry_id)

    def _entry_visible(self, entry: dict) -> bool:
        serials = entry.get("serials") or ([entry["serial"]] if entry.get("serial") else [])
        return bool(serials) and all(self.visible(s) for s in serials)

    def subscribe(self):
        return self._hub.subscribe()

    def unsubscribe(self, queue) -> None:
        self._hub.unsubscribe(queue)

    @property
    def live(self) -> Any:
        return self._hub.live

    @property
    def registry_store(self) -> Any:
        # The screen registry is the farm's, shared by every client; the route policy
        # (actors.access.policy) lets only super users change it.
        return self._hub.registry_store

    @property
    def ai_keys(self) -> Any:
        return ScopedKeyring(self._hub.ai_keys, self.principal) \
            if getattr(self._hub, "ai_keys", None) is not None else None

    def farm_db(self) -> "ScopedFarmDB":
        return ScopedFarmDB(self._hub.farm_db(), self.principal, self.visible)


class ScopedFarmDB:
    """Owns nothing: the farm database's rows of one non-super caller's clients."""

    def __init__(self, db: Any, principal: Principal, visible: Callable[[str], bool]) -> None:
        self._db = db
        self.principal = principal
        self._visible = visible
        # Clients this request created: the principal's client set was read before them.
        self._created: set[int] = set()

    def _sees(self, client_id: int | None) -> bool:
        return self.principal.sees_client(client_id) or client_id in self._created

    def __getattr__(self, name: str) -> Any:
        raise AccessDenied(f"not available to a {self.principal.role} user ({name})")

    async def audit(self, *args: Any, **kwargs: Any) -> int:
        return await self._db.audit(*args, **kwargs)

    @_as_caller
    async def phone_rows(self) -> list[dict]:
        return visible_rows(self.principal, await self._db.phone_rows())

    @_as_caller
    async def account_rows(self, serial: str | None = None, **kwargs: Any) -> list[dict]:
        rows = await self._db.account_rows(serial, **kwargs)
        return [r for r in rows if self._visible(r.get("serial"))]

    @_as_caller
    async def client_rows(self) -> list[dict]:
        return visible_rows(self.principal, await self._db.client_rows())

    async def client_row(self, name: str) -> dict | None:
        row = await self._db.client_row(name)
        return row if row is not None and self._sees(row["client_id"]) else None

    @_as_caller
    async def profile_rows(self) -> list[dict]:
        return visible_rows(self.principal, await self._db.profile_rows())

    @_as_caller
    async def profile_row(self, profile_id: int) -> dict | None:
        row = await self._db.profile_row(profile_id)
        return row if row is not None and self.principal.sees_client(row.get("client_id")) \
            else None

    async def upsert_profile(self, profile_id: int | None = None, *, client: str | None = None,
                             **fields: Any) -> int:
        if profile_id is None and client is None:
            # A new profile with no client would be visible to super users only.
            raise ValidationError("$.client", "name the client the profile belongs to")
        if client is not None and await self.client_row(client) is None:
            raise ValidationError("$.client", f"no such client: {client!r}")
        return await self._db.upsert_profile(profile_id, client=client, **fields)

    async def upsert_account(self, serial: str, *args: Any, **kwargs: Any) -> int:
        if not self._visible(serial):
            raise PhoneNotFound(serial)
        profile_id = kwargs.get("profile_id")
        if profile_id is not None and await self.profile_row(profile_id) is None:
            raise ValidationError("$.profile_id", f"no such profile: {profile_id}")
        return await self._db.upsert_account(serial, *args, **kwargs)

    async def upsert_client(self, name: str, **kwargs: Any) -> int:
        """An admin creates clients in its organization and changes those it reaches."""
        if self.principal.role != "admin":
            raise AccessDenied(f"a {self.principal.role} user may not create or change clients")
        row = await self._db.client_row(name)
        if row is not None and not self.principal.sees_client(row["client_id"]):
            raise AccessDenied(f"client {name!r} is outside your organization")
        if row is None and self.principal.organization_id is None:
            raise AccessDenied("an admin without an organization may not create clients")
        client_id = await self._db.upsert_client(name, **kwargs)
        if row is None:
            await self._db.set_client_organization(client_id, self.principal.organization_id)
            self._created.add(client_id)
        return client_id

    async def variable_context(self, serial: str, *args: Any, **kwargs: Any) -> Any:
        if not self._visible(serial):
            raise ValidationError(f"phone {serial!r}", "not in the farm database")
        # ${group...} and the farm-wide counts: the phone's client's groups and phones only.
        return await self._db.variable_context(serial, *args, client_world=True, **kwargs)

    @_as_caller
    async def recovery_attempts(self, **kwargs: Any) -> list[dict]:
        rows = await self._db.recovery_attempts(**kwargs)
        return [r for r in rows if self._visible(r.get("serial"))]

    async def audit_trail(self, *args: Any, client_ids: Any = None, **kwargs: Any) -> list[dict]:
        # The caller's clients, whatever the route asked for.
        return await self._db.audit_trail(*args, client_ids=self.principal.client_ids,
                                          **kwargs)

    # -- the farm's history (issue 19.2): the caller's clients' rollups and phones only ----

    @_as_caller
    async def stats_series(self, query: Any) -> dict:
        return await self._db.stats_series(replace(query, clients=self._clients()))

    @_as_caller
    async def top_failures(self, query: Any) -> dict:
        return await self._db.top_failures(replace(query, clients=self._clients()))

    # -- sequence and workflow definitions -------------------------------------------------
    # Definitions with no client are the farm's shared library: readable by everyone,
    # changed by super users only. A name is unique within a client: lookups take the
    # caller's clients (or fewer, ``clients``), their own definition before a shared one.

    def _clients(self, clients: Any = None) -> frozenset[int]:
        mine = self.principal.client_ids or frozenset()
        return mine if clients is None else frozenset(clients) & mine

    def _shared_or_mine(self, row: dict | None) -> bool:
        return row is not None and (row.get("client_id") is None
                                    or self.principal.sees_client(row["client_id"]))

    @_as_caller
    async def sequence_definitions(self, include_retired: bool = False,
                                   clients: Any = None) -> list[dict]:
        return [r for r in await self._db.sequence_definitions(
            include_retired, clients=self._clients(clients)) if self._shared_or_mine(r)]

    @_as_caller
    async def workflow_definitions(self, include_retired: bool = False,
                                   clients: Any = None) -> list[dict]:
        return [r for r in await self._db.workflow_definitions(
            include_retired, clients=self._clients(clients)) if self._shared_or_mine(r)]

    @_as_caller
    async def sequence_definition(self, name: str, clients: Any = None) -> dict | None:
        row = await self._db.sequence_definition(name, self._clients(clients))
        return row if self._shared_or_mine(row) else None

    @_as_caller
    async def workflow_definition(self, name: str, clients: Any = None) -> dict | None:
        row = await self._db.workflow_definition(name, self._clients(clients))
        return row if self._shared_or_mine(row) else None

    async def _own_client(self, client: Any) -> int:
        """The id of ``client`` (a name), which must be one the caller reaches: a tenant's
        definitions and groups always belong to one of its clients."""
        row = await self.client_row(client) if isinstance(client, str) else None
        if row is None:
            raise ValidationError("$.client", f"no such client: {client!r}")
        return row["client_id"]

    def _own_row(self, row: dict | None, what: str) -> None:
        if row is not None and row.get("client_id") is None:
            raise AccessDenied(f"{what} is in the farm's shared library: only a super user "
                               "may change it")

    async def save_sequence_definition(self, name: str, *, client: Any = None,
                                       **fields: Any) -> dict:
        client_id = await self._own_client(client)
        self._own_row(await self.sequence_definition(name, [client_id]),
                            f"sequence definition {name!r}")
        return await self._db.save_sequence_definition(name, client=client_id,
                                                       clients=[client_id], **fields)

    async def save_workflow_definition(self, name: str, sequences: list[dict], *,
                                       client: Any = None, **fields: Any) -> dict:
        client_id = await self._own_client(client)
        self._own_row(await self.workflow_definition(name, [client_id]),
                            f"workflow {name!r}")
        return await self._db.save_workflow_definition(name, sequences, client=client_id,
                                                       clients=[client_id], **fields)

    async def retire_sequence_definition(self, name: str, clients: Any = None) -> dict | None:
        row = await self.sequence_definition(name, clients)
        self._own_row(row, f"sequence definition {name!r}")
        return None if row is None else await self._db.retire_sequence_definition(
            name, [row["client_id"]])

    async def retire_workflow_definition(self, name: str, clients: Any = None) -> dict | None:
        row = await self.workflow_definition(name, clients)
        self._own_row(row, f"workflow {name!r}")
        return None if row is None else await self._db.retire_workflow_definition(
            name, [row["client_id"]])

    # -- groups: one book per client ------------------------------------------------------

    def _own_book(self, client_id: int | None) -> int:
        # The handlers pick a client the caller reaches; anything else (the shared book,
        # another client's) is refused here too.
        if client_id is None or not self._sees(client_id):
            raise AccessDenied("only a super user may change the farm's shared groups"
                               if client_id is None else "not your client's groups")
        return client_id

    async def group_book(self, client_id: int | None = None) -> Any:
        return await self._db.group_book(self._own_book(client_id))

    async def save_group_book(self, book: Any, client_id: int | None = None) -> None:
        await self._db.save_group_book(book, self._own_book(client_id))


class ScopedKeyring:
    """Owns nothing: the AI keys of the caller's clients (and, for an admin, its
    organization's)."""

    def __init__(self, keyring: Any, principal: Principal) -> None:
        self._keyring = keyring
        self.principal = principal
        self.db = keyring.db

    async def list(self, include_retired: bool = False) -> list[dict]:
        clients = {r["name"]: r["client_id"] for r in await self._keyring.db.client_rows()}

        def mine(view: dict) -> bool:
            if view.get("client") is not None:
                return self.principal.sees_client(clients.get(view["client"]))
            return (self.principal.role == "admin" and view.get("organization_id") is not None
                    and view["organization_id"] == self.principal.organization_id)

        return [v for v in await self._keyring.list(include_retired=include_retired)
                if mine(v)]

    async def add(self, *, client: str | None = None, organization: Any = None,
                  **kwargs: Any) -> dict:
        if client is not None:
            row = await self._keyring.db.client_row(client)
            if row is None or not self.principal.sees_client(row["client_id"]):
                raise ValidationError("$.client", f"no such client: {client!r}")
        elif organization is not None:
            org = await self._keyring.db.organization_row(organization)
            if self.principal.role != "admin" or org is None \
                    or org["organization_id"] != self.principal.organization_id:
                raise ValidationError("$.organization", f"no such organization: {organization!r}")
        return await self._keyring.add(client=client, organization=organization, **kwargs)

    async def retire(self, key_id: int) -> tuple[dict, dict]:
        if not any(v["id"] == key_id for v in await self.list(include_retired=True)):
            raise LookupError(f"no such AI key: {key_id}")
        return await self._keyring.retire(key_id)
