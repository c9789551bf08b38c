"""A backup folder's manifest and files: names, hashes, reading, checking, listing, pruning.

Owns what makes a folder a phonefarm backup: ``phonefarm-backup-<UTC time>/`` holding
``manifest.json`` (format version, when, which program schema, which engine, what was and
was not included, farm facts, and every file with its size and SHA-256). A folder being
written is ``phonefarm-backup-<time>.partial`` and is renamed only when whole, so a crash
leaves a ``.partial`` folder that no listing, restore or pruning takes for a backup.
Everything written here is owner-only (folders 0700, files 0600), like the data folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from protocol.errors import FarmError
from protocol.files import fsync_dir

FORMAT = "phonefarm-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PREFIX = "phonefarm-backup-"
PARTIAL_SUFFIX = ".partial"
NAME_RE = re.compile(r"phonefarm-backup-\d{8}T\d{6}Z(-\d+)?")
DIR_MODE, FILE_MODE = 0o700, 0o600
CHUNK = 1 << 20
MASTER_KEY_FILE = "secret.key"
MASTER_KEY_ABSENT = ("not included: keep DATA/secret.key (or PHONEFARM_SECRET_KEY) safely "
                     "apart; without it sealed passwords, AI keys, node keys and in-flight "
                     "run plans cannot be opened")
MASTER_KEY_PRESENT = ("included (secret.key): this backup opens every sealed secret of the "
                      "farm; keep it as safe as the key itself")


class BackupError(FarmError):
    """A backup cannot be taken, read or restored; the message names the file or folder."""


class BackupBusy(BackupError):
    """Another backup of this farm is being taken."""


def backup_name(when: datetime) -> str:
    return PREFIX + when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def utc_iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents owner-only, whatever the process umask (an
    existing folder is left as it is)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(folder, DIR_MODE)


def copy_hashed(src: Path, dst: Path, on_bytes: Callable[[int], None] | None = None
                ) -> tuple[int, str]:
    """Copy ``src`` to a new owner-only file ``dst``; (size, sha256 hex) of what was copied."""
    digest, size = hashlib.sha256(), 0
    private_dir(dst.parent)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        fout.flush()
        os.fsync(fout.fileno())
    return size, digest.hexdigest()


def file_hash(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    path = folder / MANIFEST
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(folder)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of backup ``folder``; BackupError naming the problem otherwise."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{folder}: not a phonefarm backup (no {MANIFEST}; a "
                          f"'{PARTIAL_SUFFIX}' folder is an unfinished one)") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: not a phonefarm backup manifest (format is not {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupError(f"{path}: backup format version {version!r} is newer than this "
                          f"program's {FORMAT_VERSION}: restore it with a newer phonefarm")
    files = manifest.get("files")
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str)
            and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str)
            for f in files):
        raise BackupError(f"{path}: $.files must be a list of {{path, size, sha256}}")
    for entry in files:
        _check_relative(path, entry["path"])
    return manifest


def _check_relative(manifest: Path, name: str) -> None:
    """A manifest names files inside its folder only: never absolute, never ``..``."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts or name != Path(name).as_posix():
        raise BackupError(f"{manifest}: file path {name!r} leaves the backup folder")


def verify(folder: Path, manifest: dict[str, Any] | None = None,
           on_file: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Check every file the manifest lists (present, same size, same SHA-256) before anything
    is written anywhere; the manifest. BackupError names the first file that differs."""
    manifest = manifest or read_manifest(folder)
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if path.is_symlink() or not path.is_file():
            raise BackupError(f"{path}: missing from the backup (the manifest lists it): "
                              f"the backup is incomplete")
        size, digest = file_hash(path)
        if size != entry["size"] or digest != entry["sha256"]:
            raise BackupError(f"{path}: damaged: {size} bytes with SHA-256 {digest[:12]}..., "
                              f"the manifest says {entry['size']} bytes, {entry['sha256'][:12]}...")
        if on_file is not None:
            on_file(entry["path"], size)
    return manifest


def summary(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a listing shows of one backup."""
    return {"name": folder.name, "path": str(folder), "created_at": manifest.get("created_at"),
            "engine": manifest.get("engine"), "size": manifest.get("total_bytes"),
            "files": len(manifest.get("files") or []),
            "master_key_included": bool(manifest.get("master_key_included")),
            "master_key": manifest.get("master_key"), "facts": manifest.get("facts") or {},
            "scheduled": bool(manifest.get("scheduled"))}


def list_backups(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The backups in ``root`` with a readable manifest, oldest first (by created_at, then
    name). Partial folders and anything else are left out."""
    found = []
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if not NAME_RE.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            found.append((entry, read_manifest(entry)))
        except BackupError:
            continue
    return sorted(found, key=lambda item: (str(item[1].get("created_at")), item[0].name))


def remove_partials(root: Path) -> list[Path]:
    """Delete the ``phonefarm-backup-*.partial`` folders an interrupted backup left."""
    removed = []
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if (entry.name.startswith(PREFIX) and entry.name.endswith(PARTIAL_SUFFIX)
                and entry.is_dir() and not entry.is_symlink()):
            shutil.rmtree(entry)
            removed.append(entry)
    return removed


def prune(root: Path, keep: int, source: str | None = None) -> list[Path]:
    """Delete the oldest backups in ``root`` beyond the newest ``keep``: only folders with a
    valid manifest (of farm ``source`` when given), never anything else. The deleted paths."""
    if keep < 1:
        raise BackupError(f"keep must be at least 1, not {keep}")
    ours = [(path, m) for path, m in list_backups(root)
            if source is None or m.get("source") == source]
    doomed = [path for path, _ in ours[:-keep]] if len(ours) > keep else []
    for path in doomed:
        shutil.rmtree(path)
    return doomed
