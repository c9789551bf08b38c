"""Durable file writes shared by every component: a file is either the old one or the new one.

Owns the one way the project replaces a file on disk (registry JSON, reference crops,
unknown-screen captures): write a hidden temp file in the same folder, flush and fsync it,
``os.replace`` it over the target, fsync the folder. A crash at any point leaves no
half-written target; a leftover ``.NAME.*.tmp`` is only ever a temp file. Also the one check
that a file about to be served stays inside its folder (``confined``), and copying a folder
with the modes of new files (``copy_tree``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
# A write takes milliseconds; a temp file older than this belongs to a writer that died.
STALE_TEMP_S = 300.0


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (parents are created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy folder ``src``'s files into ``dst`` (created, or merged into), symlinks
    followed. Unlike ``shutil.copytree`` the copies get the modes of new files under the
    process umask, not ``src``'s: a copy of the installed package's world-readable registry
    in a private data folder is private too (actors.store.data_dir)."""
    for folder, _, files in os.walk(src, followlinks=True):
        target = Path(dst, os.path.relpath(folder, src))
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(Path(folder, name), target / name)


def confined(base: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """``path`` resolved (symlinks followed, ``..`` folded) if it stays inside ``base``
    (resolved too), else None. The one check before serving a file whose name came from a
    node, a request or a database row: a symlink pointing out counts as out."""
    root = Path(base).resolve()
    target = Path(path).resolve()
    return target if target.is_relative_to(root) else None


def is_temp_name(name: str) -> bool:
    """True for the name of a temp file ``write_atomic`` makes (``.NAME.*.tmp``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_stale_temps(folder: str | os.PathLike, older_than_s: float = STALE_TEMP_S) -> int:
    """Delete temp files a killed writer left in ``folder`` (not recursive); returns how many.
    Young ones are kept: they may belong to a write in progress in another process."""
    cutoff = time.time() - older_than_s
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not is_temp_name(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
                log.info("removed stale temp file path=%s", entry.path)
        except OSError:
            pass  # already gone, or not ours to delete: harmless either way
    return removed
