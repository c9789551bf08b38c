"""Taking a backup of a coordinator's data folder while the coordinator runs.

Owns `take_backup`: the databases through their engine (a consistent snapshot), then the
data folder's own files (the editable registry, recordings, phone tags, media, failed-step
and recovery screenshots, unknown screens), each hashed as it is copied, then the manifest,
all into ``phonefarm-backup-<time>.partial`` renamed to ``phonefarm-backup-<time>`` when
whole. Left out on purpose: ``admin.token`` (a live super-user token; the coordinator
writes a new one), the nodes' journals and registry copies (local to nodes), the demo
node's key and placeholder jar, older backups, and the master key unless asked for.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from actors.store.backup.choose import engine_for
from actors.store.backup.engines import DatabaseEngine
from actors.store.backup.manifest import (FILE_MODE, FORMAT, FORMAT_VERSION, MASTER_KEY_ABSENT,
                                          MASTER_KEY_FILE, MASTER_KEY_PRESENT, PARTIAL_SUFFIX,
                                          BackupError, backup_name, copy_hashed, file_hash,
                                          private_dir, remove_partials, utc_iso,
                                          write_manifest)
from actors.store.migrations import SCHEMA_VERSION
from protocol.files import fsync_dir, is_temp_name

log = logging.getLogger(__name__)

# The data folder's own state, as (name in the backup, name in DATA). The registry may live
# elsewhere (--registry); it is stored as registry/ either way.
FOLDERS = ("registry", "sequences", "media", "executions", "recovery", "unknown-screens")
FILES = ("phone-tags.json",)
EXCLUDED = ["admin.token (a new one is written at start)",
            "journal-*.sqlite3 and registry-*/ (each node's own)", "demo-node.key",
            "the backups folder"]

# progress(done_files, total_files, done_bytes, total_bytes)
Progress = Callable[[int, int, int, int], None]


def take_backup(data: str | os.PathLike, dest: str | os.PathLike, *,
                registry: str | os.PathLike | None = None, master_key: bytes | None = None,
                include_master_key: bool = False, progress: Progress | None = None,
                scheduled: bool = False, now: datetime | None = None,
                database: Any = None) -> tuple[Path, dict[str, Any]]:
    """Back up data folder ``data`` into a new folder in ``dest``; (its path, its manifest).
    ``master_key`` (the farm's, raw 32 bytes) is written as ``secret.key`` only with
    ``include_master_key``. ``database`` is the farm's ``--db`` (text or a DbTarget;
    default: the SQLite databases in ``data``). BackupError says why nothing usable was written."""
    data, dest = Path(data), Path(dest)
    if not data.is_dir():
        raise BackupError(f"{data}: no such data folder")
    if include_master_key and master_key is None:
        raise BackupError("include_master_key: this process does not hold the master key")
    engine = engine_for(data, database)
    private_dir(dest)
    for stale in remove_partials(dest):
        log.warning("removed an unfinished backup %s (a backup was interrupted)", stale)
    when = now or datetime.now(timezone.utc)
    name = _free_name(dest, backup_name(when))
    partial = dest / (name + PARTIAL_SUFFIX)
    private_dir(partial)
    try:
        manifest = _fill(partial, data, dest, engine, Path(registry) if registry else None,
                         master_key if include_master_key else None, progress, when)
        manifest["scheduled"] = scheduled
        manifest["name"] = name
        write_manifest(partial, manifest)
        final = dest / name
        os.rename(partial, final)
        fsync_dir(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("backup %s: %d files, %d bytes, master key %s", final, len(manifest["files"]),
             manifest["total_bytes"], "included" if include_master_key else "not included")
    return final, manifest


def _free_name(dest: Path, name: str) -> str:
    candidate, n = name, 1
    while (dest / candidate).exists() or (dest / (candidate + PARTIAL_SUFFIX)).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _plan(data: Path, dest: Path, registry: Path | None) -> list[tuple[str, Path]]:
    """(name in the backup, source file) of every data-folder file to copy; no symlinks,
    no temp files of a write in progress, nothing inside the backups folder."""
    sources = {name: data / name for name in FOLDERS}
    if registry is not None:
        sources["registry"] = registry
    dest_real = dest.resolve()
    plan: list[tuple[str, Path]] = []
    for name, root in sources.items():
        if not root.is_dir() or root.is_symlink():
            continue
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink()
                             and (here / d).resolve() != dest_real)
            for file in sorted(files):
                path = here / file
                if is_temp_name(file) or path.is_symlink() or not path.is_file():
                    continue
                plan.append(((Path(name) / path.relative_to(root)).as_posix(), path))
    for name in FILES:
        path = data / name
        if path.is_file() and not path.is_symlink():
            plan.append((name, path))
    return plan


def _fill(out: Path, data: Path, dest: Path, engine: DatabaseEngine, registry: Path | None,
          master_key: bytes | None, progress: Progress | None,
          when: datetime) -> dict[str, Any]:
    plan = _plan(data, dest, registry)
    total_files = len(engine.DATABASES) + len(plan)
    total_bytes = engine.size_hint() + sum(_size(p) for _, p in plan)
    state = {"files": 0, "bytes": 0, "at": 0.0}

    def tick(nbytes: int = 0, file_done: bool = False, force: bool = False) -> None:
        state["bytes"] += nbytes
        state["files"] += int(file_done)
        now = time.monotonic()
        if progress is not None and (force or now - state["at"] >= 0.5):
            state["at"] = now
            progress(state["files"], total_files, state["bytes"],
                     max(total_bytes, state["bytes"]))

    tick(force=True)
    files: list[dict[str, Any]] = []
    for name in engine.dump(out, lambda n: tick(n, True)):
        size, digest = file_hash(out / name)
        files.append({"path": name, "size": size, "sha256": digest})
    dumped = engine.facts(out)
    vanished = 0
    for name, src in plan:
        try:
            size, digest = copy_hashed(src, out / name, tick)
        except FileNotFoundError:  # deleted meanwhile (retention, a discarded screen)
            vanished += 1
            continue
        files.append({"path": name, "size": size, "sha256": digest})
        tick(file_done=True)
    if master_key is not None:
        path = out / MASTER_KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(base64.urlsafe_b64encode(master_key).decode("ascii") + "\n")
        size, digest = file_hash(path)
        files.append({"path": MASTER_KEY_FILE, "size": size, "sha256": digest})
    tick(force=True)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": utc_iso(when),
        "engine": engine.name, "source": str(data.resolve()),
        "program": {"farm_schema_version": SCHEMA_VERSION},
        "databases": {"farm": {"schema_version": dumped["schema_version"]}},
        "facts": dumped["facts"],
        "included": [*engine.DATABASES,
                     *(f"{n}/" for n in FOLDERS if any(p.startswith(n + "/")
                                                        for p, _ in plan)),
                     *(n for n in FILES if any(p == n for p, _ in plan)),
                     *([MASTER_KEY_FILE] if master_key is not None else [])],
        "excluded": EXCLUDED + ([] if master_key is not None else ["secret.key"]),
        "master_key_included": master_key is not None,
        "master_key": MASTER_KEY_PRESENT if master_key is not None else MASTER_KEY_ABSENT,
        "vanished_during_backup": vanished,
        "files": files, "total_bytes": sum(f["size"] for f in files),
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
