"""`Templates`: workflow and sequence definitions shared across the clients of one
organization (issue 23.3, spec 16.5).

A definition marked a template (``is_template``) can be copied into another client of the
same organization; the copy's lineage (``template_copies``, schema v25) records the origin
and the origin's version it was copied at, and the copy's own version that copy made. A
copy whose origin has a newer version is behind; `update` applies the origin's newest
version to a copy nobody edited since (its version is still the one the copy made), and
refuses an edited one with the origin's diff to merge by hand.

Versions: a workflow's are its history's numbers (definition_versions); a sequence
definition's (its description, recovery prompt, file name; the steps are the farm-wide
sequence file) its row's version counter.

Who: super users, and admins whose organization both clients belong to. Every copy and
update is saved through the kind's own save (validated, audited with the lineage in the
reason).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from actors.access.users import AccessDenied
from actors.coordinator.definitions.diff import diff_contents
from actors.coordinator.definitions.history import workflow_content
from actors.coordinator.definitions.versions import VersionStore
from actors.store.execution_records import utc_text
from protocol.errors import FarmError, ValidationError

KINDS = ("workflow", "sequence")
# Each kind's table and key column.
_TABLES = {"workflow": ("workflow_definitions", "workflow_def_id"),
           "sequence": ("sequence_definitions", "sequence_def_id")}
SaveWorkflow = Callable[[str, int | None, dict, str], Awaitable[Any]]


class TemplateNotFound(LookupError):
    """No such template, client or copy."""


class CopyEdited(FarmError):
    """The copy was edited since it was copied: ``diff`` is the origin's change to merge."""

    def __init__(self, message: str, diff: dict) -> None:
        super().__init__(message)
        self.diff = diff


class Templates:
    """Owns marking templates, copying them into clients and keeping copies up to date, over
    the farm's FarmDB ``db`` (lineage rows in ``template_copies``)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.versions = VersionStore(db)

    # --- who ----------------------------------------------------------------------------
    async def _client(self, name: str | None, field: str) -> dict | None:
        if name is None:
            return None
        row = await self.db.client_row(name)
        if row is None:
            raise ValidationError(field, f"no such client: {name!r}")
        return row

    @staticmethod
    def _may(principal: Any, *clients: dict | None) -> None:
        """Super users, or an admin of the organization every named client belongs to (the
        shared library, None, belongs to every organization)."""
        if principal.is_super:
            return
        org = principal.organization_id
        if principal.role != "admin" or org is None:
            raise AccessDenied("templates are copied by super users and organization admins")
        for client in clients:
            if client is not None and (client.get("organization_id") != org or
                                       client["client_id"] not in (principal.client_ids or ())):
                raise AccessDenied(f"client {client['name']!r} is not of your organization")

    # --- marking ------------------------------------------------------------------------
    async def _definition(self, kind: str, name: str, client: dict | None) -> dict:
        if kind not in KINDS:
            raise ValidationError("kind", f"{kind!r}: workflow or sequence")
        row = await self.db.own_definition(_TABLES[kind][0], name,
                                           None if client is None else client["client_id"])
        if row is None:
            owner = f" of client {client['name']!r}" if client else " in the shared library"
            raise TemplateNotFound(f"no {kind} {name!r}{owner}")
        return row

    async def mark(self, principal: Any, kind: str, name: str, client: str | None,
                   template: bool = True) -> dict:
        """Make a definition a template (or no longer one); audited."""
        owner = await self._client(client, "client")
        self._may(principal, owner)
        row = await self._definition(kind, name, owner)
        table, key = _TABLES[kind]
        await self.db._write(f"UPDATE {table} SET is_template = ?, updated_at = ?"
                             f" WHERE {key} = ?", (bool(template), utc_text(), row[key]))
        await self.db.audit(f"{kind}_definition", row[key], "update",
                            {"is_template": bool(row["is_template"])},
                            {"is_template": bool(template)}, actor=principal.actor,
                            reason="template" if template else "no longer a template")
        if kind == "workflow":  # the flag is part of a workflow's content: a version
            stored = await self.db.workflow_definition_by_id(row[key])
            await self.versions.record("workflow", name, row["client_id"],
                                       workflow_content(stored), author=principal.actor,
                                       reason="template" if template else
                                       "no longer a template")
        return {"kind": kind, "name": name, "client": client, "is_template": bool(template)}

    async def listing(self, principal: Any) -> dict:
        """The templates and the copies the caller may see, each copy with its state:
        ``behind`` (the origin has a newer version) and ``edited`` (changed since)."""
        clients = principal.client_ids
        templates = []
        for kind, (table, _) in _TABLES.items():
            for row in await self.db._all(
                    f"SELECT d.name, d.client_id, c.name AS client FROM {table} d"
                    " LEFT JOIN clients c ON c.client_id = d.client_id"
                    " WHERE d.is_template AND d.status = 'active' ORDER BY d.name"):
                if clients is None or row[1] is None or row[1] in clients:
                    templates.append({"kind": kind, "name": row[0], "client": row[2]})
        copies = []
        for row in await self.db._all(
                "SELECT t.*, c.name AS client, o.name AS origin_client FROM template_copies t"
                " JOIN clients c ON c.client_id = t.client_id"
                " LEFT JOIN clients o ON o.client_id = t.origin_client_id"
                " ORDER BY t.kind, t.name, c.name"):
            row = dict(row)
            if clients is not None and row["client_id"] not in clients:
                continue
            origin_now = await self._version(row["kind"], row["name"], row["origin_client_id"])
            copy_now = await self._version(row["kind"], row["name"], row["client_id"])
            copies.append({
                "kind": row["kind"], "name": row["name"], "client": row["client"],
                "origin_client": row["origin_client"], "origin_version": row["origin_version"],
                "origin_latest": origin_now, "copy_version": row["copy_version"],
                "copy_latest": copy_now, "copied_at": row["copied_at"],
                "copied_by": row["copied_by"],
                "behind": origin_now is not None and origin_now > row["origin_version"],
                "edited": copy_now is not None and copy_now != row["copy_version"]})
        return {"templates": templates, "copies": copies}

    async def _version(self, kind: str, name: str, client_id: int | None) -> int | None:
        """A definition's current version number (see the module docstring)."""
        if kind == "workflow":
            heads = await self.versions.versions("workflow", name, client_id)
            return heads[0]["version"] if heads else None
        row = await self.db.own_definition(_TABLES[kind][0], name, client_id)
        return None if row is None else row["version"]

    async def _origin_content(self, kind: str, row: dict) -> tuple[int, dict]:
        """(version, content) of a template as it is now."""
        if kind == "workflow":
            stored = await self.db.workflow_definition_by_id(row["workflow_def_id"])
            content = workflow_content(stored)
            # The newest version is this content (recorded now, or already with its hash).
            head = await self.versions.record_found("workflow", row["name"], row["client_id"],
                                                    content)
            return head["version"], content
        return row["version"], {k: row.get(k) for k in ("description", "json_path",
                                                        "recovery_prompt")}

    # --- copying ------------------------------------------------------------------------
    async def copy(self, principal: Any, kind: str, name: str, *, from_client: str | None,
                   to_client: str, save_workflow: SaveWorkflow) -> dict:
        """Copy template ``name`` of ``from_client`` (None: the shared library) into
        ``to_client``, which must not have one of that name yet."""
        if from_client is None:
            from_client = await self._template_client(principal, kind, name)
        origin = await self._client(from_client, "from_client")
        target = await self._client(to_client, "to_client")
        self._may(principal, origin, target)
        if origin is not None and origin.get("organization_id") != target.get(
                "organization_id"):
            raise ValidationError("to_client", f"{to_client!r} is not of {from_client!r}'s "
                                               "organization: templates stay within one")
        row = await self._definition(kind, name, origin)
        if not row["is_template"]:
            raise ValidationError("name", f"{kind} {name!r} is not a template (farm "
                                          "templates add first)")
        if origin is not None and origin["client_id"] == target["client_id"]:
            raise ValidationError("to_client", "that is the template's own client")
        try:
            await self._definition(kind, name, target)
        except TemplateNotFound:
            pass
        else:
            raise ValidationError("to_client", f"{to_client!r} has a {kind} {name!r} already "
                                               "(farm templates update keeps a copy current)")
        if kind == "workflow" and await self.db.workflow_definition(name, []) is not None:
            raise ValidationError("name", f"the shared library has a workflow {name!r}: a "
                                          "client's copy of that name would hide it")
        origin_version, content = await self._origin_content(kind, row)
        reason = (f"copy of template {kind} {name} ({from_client or 'shared'}) version "
                  f"{origin_version}")
        copy_version = await self._save(kind, name, target, content, reason, principal,
                                        save_workflow, origin)
        await self.db._write(
            "INSERT INTO template_copies (kind, name, client_id, origin_client_id,"
            " origin_version, copy_version, copied_at, copied_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, name, target["client_id"], None if origin is None else origin["client_id"],
             origin_version, copy_version, utc_text(), principal.actor))
        return {"kind": kind, "name": name, "client": to_client,
                "origin_client": from_client, "origin_version": origin_version,
                "copy_version": copy_version}

    async def _template_client(self, principal: Any, kind: str, name: str) -> str:
        """The client whose template ``name`` is, when only one the caller sees has one."""
        owners = sorted({t["client"] for t in (await self.listing(principal))["templates"]
                         if t["kind"] == kind and t["name"] == name and t["client"]})
        if not owners:
            raise TemplateNotFound(f"no client's template {kind} {name!r}")
        if len(owners) > 1:
            raise ValidationError("from_client", f"clients {', '.join(owners)} each have a "
                                                 f"template {kind} {name!r}: name one")
        return owners[0]

    async def _save(self, kind: str, name: str, target: dict, content: dict, reason: str,
                    principal: Any, save_workflow: SaveWorkflow,
                    origin: dict | None) -> int:
        """Save ``content`` as client ``target``'s ``name``; its new version number."""
        if kind == "workflow":
            await self._bring_sequences(content, origin, target, principal)
            # A copy is the client's own workflow, not a template of its own.
            await save_workflow(name, target["client_id"], {**content, "is_template": False},
                                reason)
            return (await self.versions.versions("workflow", name, target["client_id"]))[0][
                "version"]
        before = await self.db.sequence_definition(name, [target["client_id"]])
        if before is not None and before.get("client_id") != target["client_id"]:
            before = None  # the shared one: the client gets its own
        saved = await self._save_sequence(name, content, target["client_id"])
        await self.db.audit("sequence_definition", saved["sequence_def_id"],
                            "update" if before else "create", before, saved,
                            actor=principal.actor, reason=reason)
        return saved["version"]

    async def _save_sequence(self, name: str, content: dict, client_id: int) -> dict:
        """Client ``client_id``'s own sequence definition ``name`` made or replaced with
        ``content`` (its version counter goes up)."""
        return await self.db.save_sequence_definition(
            name, description=content.get("description"), json_path=content.get("json_path"),
            recovery_prompt=content.get("recovery_prompt"), client=client_id)

    async def _bring_sequences(self, content: dict, origin: dict | None, target: dict,
                               principal: Any) -> None:
        """A workflow's sequence definitions the target cannot see yet (the origin client's
        own) are copied with it."""
        for entry in content.get("sequences") or []:
            seq = entry["sequence"]
            if await self.db.sequence_definition(seq, [target["client_id"]]) is not None:
                continue
            if origin is None:
                raise ValidationError("name", f"sequence {seq!r} of the workflow is defined "
                                              "nowhere the target client sees")
            source = await self.db.sequence_definition(seq, [origin["client_id"]])
            if source is None:
                raise ValidationError("name", f"sequence {seq!r} of the workflow is not "
                                              "defined")
            saved = await self._save_sequence(seq, source, target["client_id"])
            await self.db.audit("sequence_definition", saved["sequence_def_id"], "create",
                                None, saved, actor=principal.actor,
                                reason=f"with a copy of a template of {origin['name']!r}")

    async def update(self, principal: Any, kind: str, name: str, client: str,
                     save_workflow: SaveWorkflow) -> dict:
        """Apply the origin's newest version to client ``client``'s copy ``name``.
        CopyEdited (with the origin's diff) when the copy was edited since."""
        target = await self._client(client, "client")
        row = await self.db._one(
            "SELECT * FROM template_copies WHERE kind = ? AND name = ? AND client_id = ?",
            (kind, name, target["client_id"]))
        if row is None:
            raise TemplateNotFound(f"client {client!r} has no copy of a template {kind} "
                                   f"{name!r}")
        row = dict(row)
        origin = None
        if row["origin_client_id"] is not None:
            origin = dict(await self.db._one("SELECT * FROM clients WHERE client_id = ?",
                                             (row["origin_client_id"],)))
        self._may(principal, origin, target)
        template = await self._definition(kind, name, origin)
        origin_version, content = await self._origin_content(kind, template)
        if origin_version <= row["origin_version"]:
            return {"kind": kind, "name": name, "client": client, "updated": False,
                    "origin_version": origin_version, "copy_version": row["copy_version"]}
        now = await self._version(kind, name, target["client_id"])
        if now != row["copy_version"]:
            raise CopyEdited(
                f"{kind} {name!r} of {client!r} was edited since it was copied (version "
                f"{row['copy_version']}, now {now}): merge the template's change by hand",
                await self._origin_diff(kind, name, origin, row["origin_version"],
                                        origin_version, content))
        reason = (f"update from template {kind} {name} ({origin['name'] if origin else 'shared'})"
                  f" version {origin_version}")
        copy_version = await self._save(kind, name, target, content, reason, principal,
                                        save_workflow, origin)
        await self.db._write(
            "UPDATE template_copies SET origin_version = ?, copy_version = ?, copied_at = ?,"
            " copied_by = ? WHERE template_copy_id = ?",
            (origin_version, copy_version, utc_text(), principal.actor,
             row["template_copy_id"]))
        return {"kind": kind, "name": name, "client": client, "updated": True,
                "origin_version": origin_version, "copy_version": copy_version}

    async def _origin_diff(self, kind: str, name: str, origin: dict | None, old: int,
                           new: int, content: dict) -> dict:
        """What the origin changed from the version the copy has to its newest."""
        if kind != "workflow":
            return {"from": old, "to": new, "changes": [], "content": content}
        owner = None if origin is None else origin["client_id"]
        before = await self.versions.version("workflow", name, owner, old)
        return {"from": old, "to": new,
                **diff_contents("workflow", before["content"] if before else None, content)}
