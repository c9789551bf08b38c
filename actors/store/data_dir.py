"""The coordinator's data folder is private (issue 17.3): folders 0700, files 0600.

Owns `secure_data_dir`, called first thing at the coordinator's start: the process umask
becomes 0o077, so every file and folder this process (and the children it starts: the demo's
node writes its journal there) creates afterwards is owner-only from its first byte: the farm
database and its -wal/-shm (SQLite gives those the database's mode), the event store, the
master key, tokens, screenshots, registry crops. Then the folder itself (created 0700 when
new) and everything already in it lose their group and other bits: a folder from an older
version, or one restored from a backup. Symlinks are neither followed nor changed.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def secure_data_dir(data: str | os.PathLike) -> int:
    """Set the umask to 0o077, create ``data`` (0700) if missing and make it and every
    folder and file under it owner-only; how many entries had to change. An entry this user
    cannot change (another owner) is logged, not fatal."""
    os.umask(PRIVATE_UMASK)
    root = Path(data)
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    changed = int(_private(root, DIR_MODE))
    for folder, dirs, files in os.walk(root):  # does not descend into symlinked folders
        for name in dirs:
            changed += _private(Path(folder, name), DIR_MODE)
        for name in files:
            changed += _private(Path(folder, name), FILE_MODE)
    if changed:
        log.info("data folder %s: %d entries were readable by others; now owner-only "
                 "(folders 0700, files 0600)", root, changed)
    return changed


def _private(path: Path, mode: int) -> bool:
    """Folders become exactly 0700; files keep at most their owner's read and write bits
    (a read-only file stays read-only). True when the mode changed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:  # gone since the listing
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    current = stat.S_IMODE(st.st_mode)
    wanted = mode if stat.S_ISDIR(st.st_mode) else current & FILE_MODE
    if current == wanted:
        return False
    try:
        os.chmod(path, wanted)
    except OSError as exc:
        log.warning("data folder: cannot make %s owner-only (mode %o): %s", path, current,
                    exc.strerror)
        return False
    return True
