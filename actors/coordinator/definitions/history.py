"""`DefinitionHistory`: the versions of one kind of definition as a caller sees them.

Which definition a name means (a client's own before the shared library's, as the
definitions' own lookups do), catching a file changed on disk up as a new version before it
is read (a sequence file, a registry screen: authors none), the versions, one version, the
diff of two, and a revert: the version's content saved again through the kind's own save
path, so it is validated, audited and versioned (a new version equal to the old one) like
any save.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Awaitable, Callable

import msgspec

from actors.coordinator.definitions.diff import diff_contents
from actors.coordinator.definitions.versions import KINDS, VersionStore, content_hash
from actors.access.users import AccessDenied
from protocol.errors import FarmError, ValidationError, ValidationErrors
from protocol.files import write_atomic
from sequences.load import library_names, parse_sequence

# Kinds kept farm-wide (no client): everyone reads them, super users change them.
FARM_WIDE = ("sequence", "screen")


class DefinitionNotFound(LookupError):
    """No such definition, or no such version of it (an API 404)."""


class DefinitionHistory:
    """Owns the history operations for one caller (``clients``: the client ids it reaches,
    None for a super user) over the farm database ``db`` and the coordinator's ``runs``
    (sequence files) and ``registry`` (the screen registry store)."""

    def __init__(self, db: Any, clients: frozenset[int] | None, *, farm_db: Any = None,
                 runs: Any = None, registry: Any = None) -> None:
        self.db = db  # as the caller sees it (a ScopedFarmDB for a tenant)
        self.clients = clients
        self.runs = runs
        self.registry = registry
        # The farm's own FarmDB: the versions' SQL runs there, filtered by ``clients``.
        self.farm_db = db if farm_db is None else farm_db
        self.store = VersionStore(self.farm_db)

    # --- which definition -------------------------------------------------------------
    async def owner(self, kind: str, name: str, client: str | None = None) -> int | None:
        """The client id of the definition ``kind`` ``name`` (None: farm-wide) after
        catching files up; DefinitionNotFound when there is none to see, ValidationError on
        ``client`` when several clients have one and none was named."""
        if kind not in KINDS:
            raise ValidationError("kind", f"{kind!r}: one of {', '.join(KINDS)}")
        if kind in FARM_WIDE and client is not None:
            raise ValidationError("client", f"a {kind} belongs to the whole farm, no client")
        await self._catch_up(kind, name)
        if kind in FARM_WIDE:
            if not await self.store.versions(kind, name, None):
                raise DefinitionNotFound(f"no {kind} {name!r}")
            return None
        owners = await self.store.owners(kind, name, self.clients)
        if client is not None:
            row = await self.db.client_row(client)  # another client's reads as none
            if row is None:
                raise ValidationError("client", f"no such client: {client!r}")
            owners = [c for c in owners if c == row["client_id"]]
        if not owners:
            raise DefinitionNotFound(f"no {kind} {name!r}" + (f" of client {client!r}"
                                                              if client else ""))
        own = [c for c in owners if c is not None]
        if self.clients is not None and len(own) <= 1:
            return own[0] if own else None  # a tenant's own before the shared one
        if len(owners) > 1:
            raise ValidationError("client", f"several clients have a {kind} {name!r}: "
                                            "name one with client")
        return owners[0]

    async def _catch_up(self, kind: str, name: str) -> None:
        """A sequence file or registry screen changed outside the farm (an edited file, an
        upgraded library), or a workflow or caption saved before the farm kept versions,
        becomes a version before anything is read."""
        if kind == "workflow":
            row = await self.db.workflow_definition(name)
            if row is not None:
                await self.store.record_found(kind, name, row["client_id"],
                                              workflow_content(row))
        elif kind == "caption":
            for row in await self.farm_db._all("SELECT client_id, template FROM caption_templates"
                                               " WHERE name = ?", (name,)):
                if row[0] is None or self.clients is None or row[0] in self.clients:
                    await self.store.record_found(kind, name, row[0], {"template": row[1]})
        elif kind == "sequence" and self.runs is not None:
            await self.runs.sequence_version(name)
        elif kind == "screen" and self.registry is not None:
            app, _, screen = name.partition("/")
            try:
                content = self.registry.screen_content(app, screen)
            except (FarmError, OSError, ValidationError):
                return  # gone from the registry: its versions (if any) stay readable
            await self.store.record_found("screen", name, None, content)

    # --- reads ------------------------------------------------------------------------
    async def versions(self, kind: str, name: str, client: str | None = None) -> dict:
        owner = await self.owner(kind, name, client)
        rows = await self.store.versions(kind, name, owner)
        return {"kind": kind, "name": name, "client_id": owner,
                "client": rows[0]["client"] if rows else None, "versions": rows}

    async def version(self, kind: str, name: str, number: int,
                      client: str | None = None) -> dict:
        owner = await self.owner(kind, name, client)
        return await self._version(kind, name, owner, number, "version")

    async def _version(self, kind: str, name: str, owner: int | None, number: int,
                       field: str) -> dict:
        found = await self.store.version(kind, name, owner, number)
        if found is None:
            heads = await self.store.versions(kind, name, owner)
            raise DefinitionNotFound(
                f"{kind} {name!r} has no version {number} ({field}; it has "
                f"{_span(heads)})")
        return found

    async def diff(self, kind: str, name: str, old: int, new: int, *,
                   other: str | None = None, client: str | None = None) -> dict:
        """What changed from version ``old`` to ``new``; ``other``: the name the caller
        meant ``new`` of, refused unless it is ``name`` (a diff is within one definition)."""
        if other is not None and other != name:
            raise ValidationError("to", f"{kind} {other!r} is another definition than "
                                        f"{name!r}: a diff compares two versions of one")
        owner = await self.owner(kind, name, client)
        a = await self._version(kind, name, owner, old, "from")
        b = await self._version(kind, name, owner, new, "to")
        head = {k: v for k, v in b.items() if k != "content"}
        return {"kind": kind, "name": name, "client_id": owner, "from": old, "to": new,
                "from_version": {k: v for k, v in a.items() if k != "content"},
                "to_version": head, **diff_contents(kind, a["content"], b["content"])}

    # --- revert -----------------------------------------------------------------------
    async def revert(self, kind: str, name: str, number: int, *, reason: str,
                     author: str | None, client: str | None = None,
                     save_workflow: Callable[[str, int | None, dict, str], Awaitable[Any]]
                     | None = None) -> dict:
        """Save version ``number`` again as the newest; returns the new version's head.
        ``save_workflow(name, owner, content, reason)`` saves a workflow for the caller."""
        if not reason.strip():
            raise ValidationError("reason", "say why the definition goes back")
        if kind in FARM_WIDE and self.clients is not None:
            raise AccessDenied(f"a {kind} belongs to the whole farm: super users revert it")
        owner = await self.owner(kind, name, client)
        content = (await self._version(kind, name, owner, number, "version"))["content"]
        why = f"revert to version {number}: {reason}"
        if kind == "sequence":
            await self._write_sequence(name, content, number)
            head = await self.store.record("sequence", name, None, content, author=author,
                                           reason=why)
            await self.runs.sequence_version(name)  # the file's new key, this version
            return head
        if kind == "screen":
            app, _, screen = name.partition("/")
            await self.registry.restore_screen(app, screen, content, actor=author, reason=why)
        elif kind == "workflow":
            if save_workflow is None:
                raise FarmError("workflows cannot be saved here")
            await save_workflow(name, owner, content, why)
        elif kind == "caption":
            from actors.coordinator.content_store import ContentStore

            await ContentStore(self.farm_db).put_caption(name, content["template"], owner,
                                                    self.clients, author, why)
        else:
            raise FarmError(f"a {kind} is not changed in place: cancel it and add version "
                            f"{number}'s content as a new one (GET its version {number})")
        return (await self.store.versions(kind, name, owner))[0]

    async def _write_sequence(self, name: str, content: Any, number: int) -> None:
        """The version as the operator's copy of the sequence (``DATA/sequences``, read
        before the shipped library), validated against the registry first."""
        self._sequence_folder()
        try:
            parse_sequence(content, f"version {number}", self.runs.registry)
        except ValidationErrors as exc:
            raise ValidationError("version", f"version {number} no longer loads against "
                                             f"the registry: {exc}") from None
        await self._save_sequence_file(name, content)

    def _sequence_folder(self) -> Path:
        if self.runs is None or self.runs.recorded is None:
            raise FarmError("this coordinator keeps no sequence files (no data folder)")
        return self.runs.recorded

    async def _save_sequence_file(self, name: str, content: Any) -> None:
        path = self._sequence_folder() / f"{name}.json"
        data = msgspec.json.format(msgspec.json.encode(content), indent=2) + b"\n"
        await asyncio.to_thread(write_atomic, path, data)

    # --- every definition: export and import ----------------------------------------
    async def catch_up_all(self) -> None:
        """Every definition the caller sees has its current state as its newest version:
        what an export writes."""
        if self.runs is not None:
            names = set(library_names(self.runs.library))
            if self.runs.recorded is not None:
                names |= set(library_names(self.runs.recorded))
            for name in sorted(names):
                await self.runs.sequence_version(name)
        if self.registry is not None:
            for app_key, app in sorted(self.registry.registry.apps.items()):
                for screen in sorted([*app.states, *app.interrupts]):
                    await self._catch_up("screen", f"{app_key}/{screen}")
        for row in await self.db.workflow_definitions():
            await self._catch_up("workflow", row["name"])
        for row in await self.farm_db._all("SELECT DISTINCT name FROM caption_templates"):
            await self._catch_up("caption", row[0])

    async def current(self) -> list[dict]:
        """The newest version of every definition the caller sees, with content."""
        await self.catch_up_all()
        return await self.store.current(self.clients)

    async def import_definitions(self, items: list[dict], *, author: str | None,
                                 reason: str, save_workflow: Callable[
                                     [str, int | None, dict, str], Awaitable[Any]]) -> dict:
        """Load ``items`` (each: kind, name, client, content, path: the file it came from)
        as new versions: every item is checked first (a problem's ``where`` is
        ``path#/json/pointer``; ValidationErrors lists them all and nothing is saved), then
        each one that differs from its newest version is saved through its kind's save
        path. Returns ``{"saved": [...], "unchanged": [...]}`` (kind, name, client)."""
        if self.clients is not None:
            raise AccessDenied("importing definitions is for super users")
        from actors.coordinator.content_store import ContentStore

        captions = ContentStore(self.farm_db)
        problems: list[ValidationError] = []
        owners: dict[int, int | None] = {}
        screens = []
        wheres = [item.get("path") or f"definitions[{i}]" for i, item in enumerate(items)]
        for i, item in enumerate(items):
            where, kind = wheres[i], item.get("kind")
            if kind not in ("sequence", "screen", "workflow", "caption"):
                problems.append(ValidationError(f"{where}#", f"kind {kind!r}: sequence, "
                                                "screen, workflow or caption"))
                continue
            if kind in FARM_WIDE:
                if item.get("client") is not None:
                    problems.append(ValidationError(f"{where}#", f"a {kind} has no client"))
                owners[i] = None
            elif item.get("client") is not None:
                row = await self.db.client_row(item["client"])
                if row is None:
                    problems.append(ValidationError(
                        f"{where}#", f"no such client: {item['client']!r}"))
                    continue
                owners[i] = row["client_id"]
            else:
                owners[i] = None
            if kind == "screen":
                app, _, screen = str(item.get("name")).partition("/")
                if app not in self.registry.registry.apps:
                    problems.append(ValidationError(f"{where}#", f"no registry app {app!r}"))
                    continue
                screens.append((app, screen, item["content"], where))
        registry = self.registry.registry if self.registry is not None else None
        if screens:
            try:
                registry = self.registry.check_screens([s[:3] for s in screens])
            except ValidationErrors as exc:
                files = {(app, screen): where for app, screen, _, where in screens}
                problems += [_screen_problem(p, files) for p in exc.problems]
        known = {d["name"]: d for d in await self.db.sequence_definitions()}
        for i, item in enumerate(items):
            where, kind, content = wheres[i], item.get("kind"), item.get("content")
            if i not in owners:
                continue
            try:
                if kind == "sequence":
                    self._sequence_folder()
                    parse_sequence(content, where, registry)
                elif kind == "workflow":
                    _check_workflow(content, known)
                elif kind == "caption":
                    if not isinstance(content.get("template"), str):
                        raise ValidationError("$.template", "required: the template text")
                    await captions.check_template(content["template"], owners[i])
            except ValidationErrors as exc:
                problems += [ValidationError(f"{where}#{_pointer(p.where)}", p.reason)
                             for p in exc.problems]
            except (ValidationError, FarmError) as exc:
                problems.append(ValidationError(f"{where}#{_pointer(getattr(exc, 'where', ''))}",
                                                getattr(exc, "reason", str(exc))))
        if problems:
            raise ValidationErrors(problems)
        why = f"imported from Git: {reason}"
        saved, unchanged = [], []
        for i, item in enumerate(items):
            kind, name, content, owner = item["kind"], item["name"], item["content"], owners[i]
            entry = {"kind": kind, "name": name, "client": item.get("client")}
            latest = await self.store.versions(kind, name, owner)
            if latest and latest[0]["content_hash"] == content_hash(content):
                unchanged.append(entry)
                continue
            if kind == "sequence":
                await self._save_sequence_file(name, content)
                await self.store.record("sequence", name, None, content, author=author,
                                        reason=why)
                await self.runs.sequence_version(name)
            elif kind == "screen":
                app, _, screen = name.partition("/")
                await self.registry.restore_screen(app, screen, content, actor=author,
                                                   reason=why)
            elif kind == "workflow":
                await save_workflow(name, owner, content, why)
            else:
                await captions.put_caption(name, content["template"], owner, None, author,
                                           why)
            saved.append(entry)
        return {"saved": saved, "unchanged": unchanged}


def workflow_content(stored: dict) -> dict:
    """A stored workflow (FarmDB.workflow_definition) as its history keeps it: what a PUT
    of it would send."""
    return {"description": stored.get("description"), "is_template": stored["is_template"],
            "sequences": [{"sequence": s["sequence"], "depends_on": s["depends_on"],
                           "retry": s["retry"]} for s in stored["sequences"]]}


def _check_workflow(content: Any, known: dict[str, dict]) -> None:
    """A workflow's content as an import reads it: its shape, and every sequence a
    defined one (ValidationError naming ``$.sequences[1].sequence``)."""
    from actors.coordinator.scheduling.workflows import check_sequences

    if not isinstance(content.get("sequences"), list):
        raise ValidationError("$.sequences", "required: a list of sequences")
    for j, entry in enumerate(content["sequences"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("sequence"), str):
            raise ValidationError(f"$.sequences[{j}].sequence", "required: a sequence name")
    if not isinstance(content.get("is_template", False), bool):
        raise ValidationError("$.is_template", "true or false")
    check_sequences(content["sequences"], known)


def _screen_problem(problem: ValidationError,
                    files: dict[tuple[str, str], str]) -> ValidationError:
    """A registry problem (``.../clipshare.json:12: $.states.feed.validation_regions[1]``)
    as the imported screen file's (``registry/clipshare/feed.json#/screen/...``)."""
    m = re.search(r"(\w+)\.json(?::\d+)?: \$\.(?:states|interrupts)\.(\w+)(.*)$",
                  problem.where)
    if m is None or (m.group(1), m.group(2)) not in files:
        return problem
    return ValidationError(f"{files[(m.group(1), m.group(2))]}#/screen"
                           f"{_pointer('$' + m.group(3))}", problem.reason)


def _pointer(where: str) -> str:
    """A problem's JSON path (``file: $.steps[3].screen``) as a JSON pointer
    (``/steps/3/screen``)."""
    path = where[where.find("$"):] if "$" in where else ""
    tokens = re.findall(r"\.([^.\[]+)|\[(\d+)\]", path[1:])
    return "".join("/" + (name or index).replace("~", "~0").replace("/", "~1")
                   for name, index in tokens)


def _span(heads: list[dict]) -> str:
    if not heads:
        return "none"
    numbers = sorted(h["version"] for h in heads)
    return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])
