"""Where the `farm` CLI finds its access token, and where `farm login` keeps it.

Secrets never ride on a command line (other users of the machine can read it): a token
comes from ``--token-file``, ``$PHONEFARM_TOKEN``, the file `farm login` wrote
(``~/.config/phonefarm/token``, mode 0600), or, on the coordinator's own machine, the
demo's ``DATA/admin.token``, in that order."""

from __future__ import annotations

import os
from pathlib import Path

from protocol.files import write_atomic

ADMIN_TOKEN_FILE = "admin.token"  # actors.access.bootstrap writes it


def user_token_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "phonefarm" / "token"


def data_dir() -> Path:
    return Path(os.environ.get("PHONEFARM_DATA") or "./farm-data")


def find_token(token_file: str | None) -> str | None:
    """The token to send, or None. An unreadable ``--token-file`` raises OSError; the
    fallbacks are skipped when absent."""
    if token_file:
        return Path(token_file).read_text().strip() or None
    if os.environ.get("PHONEFARM_TOKEN"):
        return os.environ["PHONEFARM_TOKEN"].strip()
    for path in (user_token_path(), data_dir() / ADMIN_TOKEN_FILE):
        try:
            return path.read_text().strip() or None
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
    return None


def save_user_token(token: str) -> Path:
    """Keep ``token`` for later commands, readable by this user only."""
    path = user_token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, (token + "\n").encode())  # a temp file made 0600, then renamed
    path.chmod(0o600)
    return path


def forget_user_token() -> None:
    try:
        user_token_path().unlink()
    except FileNotFoundError:
        pass
