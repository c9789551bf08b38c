"""Restoring a backup into a data folder, with the coordinator stopped.

Owns `restore_backup`: check the backup whole first (manifest, every file's size and
SHA-256, the schema version against this program's; nothing is written when any fails),
refuse a data folder in use by a running coordinator, and a non-empty one without
``force``; copy into ``DATA.restoring-<time>`` beside the target, mark the executions that
were in flight when the backup was taken, then rename it into place. With ``force`` the old
folder is moved aside to ``DATA.replaced-<time>``, never deleted. A PostgreSQL backup goes
into the ``--db`` database with ``pg_restore`` in one transaction; a forced restore keeps the
database it replaces as ``database-before-restore-<time>.pgdump`` in that folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from actors.store.backup.choose import engine_for
from actors.store.backup.manifest import (MASTER_KEY_FILE, BackupError, copy_hashed,
                                          private_dir, read_manifest, verify)
from actors.store.migrations import SCHEMA_VERSION
from protocol.files import fsync_dir

log = logging.getLogger(__name__)

NO_KEY_WARNING = ("the master key is NOT in this backup: put the farm's key at "
                  "DATA/secret.key (or give PHONEFARM_SECRET_KEY / --secret-key-file) before "
                  "starting the coordinator; with a new key, sealed passwords, AI keys and "
                  "node keys cannot be opened")


@dataclass
class RestoreReport:
    """What a restore did, for the operator."""

    target: Path
    backup: Path
    files: int
    bytes: int
    master_key: str
    replaced: Path | None = None
    in_flight: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"restored {self.backup} into {self.target}: {self.files} files, "
               f"{self.bytes} bytes"]
        if self.replaced is not None:
            out.append(f"the previous contents of {self.target} were moved to {self.replaced}")
        out.append(f"master key: {self.master_key}")
        if self.in_flight:
            out.append(f"{len(self.in_flight)} execution(s) in flight when the backup was "
                       f"taken are marked failed (reason restored): {', '.join(self.in_flight[:10])}"
                       + (" ..." if len(self.in_flight) > 10 else ""))
        return out


def restore_backup(backup: str | os.PathLike, data: str | os.PathLike, *,
                   force: bool = False, now: datetime | None = None,
                   database: Any = None) -> RestoreReport:
    """Restore backup folder ``backup`` into data folder ``data`` and, for a PostgreSQL
    backup, into ``database`` (``--db``: text or a DbTarget). Nothing is written unless the
    backup checks whole and the target may be replaced."""
    backup, data = Path(backup), Path(data)
    if not backup.is_dir():
        raise BackupError(f"{backup}: no such backup folder")
    manifest = verify(backup)
    data_abs = data.absolute()
    engine = engine_for(data_abs, database)
    if manifest.get("engine") != engine.name:
        raise BackupError(f"{backup}: a {manifest.get('engine')} backup cannot be restored "
                          f"into a {engine.name} farm" + (
                              " (give --db postgresql://USER@HOST/DATABASE, an empty database)"
                              if manifest.get("engine") == "postgresql" else ""))
    version = (manifest.get("databases") or {}).get("farm", {}).get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise BackupError(f"{backup}: the farm database has schema version {version}, newer "
                          f"than this program's {SCHEMA_VERSION}: restore it with the "
                          f"phonefarm version that took it")
    if data_abs.resolve().is_relative_to(backup.resolve()):
        raise BackupError(f"{data}: inside the backup folder {backup}")
    in_use = engine.is_in_use() if data_abs.is_dir() or engine.name != "sqlite" else None
    if in_use:
        raise BackupError(in_use)
    present = sorted(p.name for p in data_abs.iterdir()) if data_abs.is_dir() else []
    tables = engine.present()
    if (present or tables) and not force:
        where = f"{data} is not empty ({_shown(present)})" if present else ""
        if tables:
            where += ("; " if where else "") + (f"{engine.target.describe()} is not empty "
                                                f"({_shown(tables)})")
        raise BackupError(f"{where}: restore into an empty one, or give --force to move the "
                          f"contents aside")
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    staged = data_abs.with_name(f"{data_abs.name}.restoring-{stamp}")
    replaced = data_abs.with_name(f"{data_abs.name}.replaced-{stamp}")
    if staged.exists() or replaced.exists():
        raise BackupError(f"{staged} or {replaced} exists (another restore?): remove it first")
    data_abs.parent.mkdir(parents=True, exist_ok=True)
    private_dir(staged)
    loaded = False  # a server's database replaced already (not undone by removing staged)
    try:
        copied = 0
        for entry in manifest["files"]:
            size, digest = copy_hashed(backup / entry["path"], staged / entry["path"])
            if size != entry["size"] or digest != entry["sha256"]:
                raise BackupError(f"{backup / entry['path']}: changed while being restored")
            copied += size
        key_note = _master_key(manifest, staged, data_abs if present else None)
        if tables:  # the database a forced restore replaces is kept as a dump
            aside = data_abs if present else replaced
            private_dir(aside)
            engine.keep_aside(aside / f"database-before-restore-{stamp}.pgdump")
        engine.load(staged, replace=bool(tables))
        loaded = engine.name != "sqlite"
        note = (f"restored from backup {backup.name} (taken {manifest.get('created_at')}): "
                f"in flight then; what it did afterwards is not in this copy (a node still "
                f"playing it reports its real end, which replaces this)")
        in_flight = engine.mark_in_flight(staged, note)
        if present:
            os.rename(data_abs, replaced)
        elif data_abs.is_dir():
            data_abs.rmdir()  # empty: the staged folder takes its place
        os.rename(staged, data_abs)
        fsync_dir(data_abs.parent)
    except BaseException as exc:
        shutil.rmtree(staged, ignore_errors=True)
        if loaded:
            # The server's database is the backup's now, the data folder still the old
            # one: say so, and how to finish, rather than leave the two silently apart.
            raise BackupError(
                f"{engine.target.describe()} already holds the backup's database, but the "
                f"restore stopped after loading it ({type(exc).__name__}: {exc}); the data "
                f"folder {data} is as it was and in-flight executions may not be marked. "
                f"Do not start the coordinator: run the same farm restore again with "
                f"--force to finish") from exc
        raise
    report = RestoreReport(data_abs, backup, len(manifest["files"]), copied, key_note,
                           replaced if present or tables else None, in_flight)
    for line in report.lines():
        log.warning("%s", line) if "NOT" in line else log.info("%s", line)
    return report


def _shown(names: list[str]) -> str:
    return ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")


def _master_key(manifest: dict, staged: Path, old: Path | None) -> str:
    """Where the restored folder's master key comes from, as one line for the operator."""
    if manifest.get("master_key_included"):
        return "restored from the backup (secret.key)"
    if old is not None and (old / MASTER_KEY_FILE).is_file():
        copy_hashed(old / MASTER_KEY_FILE, staged / MASTER_KEY_FILE)
        return ("not in the backup; the replaced folder's secret.key was kept (it must be "
                "the key the backup's secrets were sealed under)")
    return NO_KEY_WARNING
