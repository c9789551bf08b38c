"""Secrets at rest (spec 16.4.1, issue 17.5): the farm master key and sealing under it.

Owns the farm master key (``load_master_key``: PHONEFARM_SECRET_KEY, else ``--secret-key-file``,
else DATA/secret.key generated once with mode 0600; never in the database, never logged) and
`SecretBox`: Fernet under a key derived per organization from the master key with HKDF
(spec 16.4.1's "a separate encryption key for each organization"). One box per kind of
secret (``purpose``: ``api_keys`` for AI endpoint keys, ``passwords`` for account and
profile passwords), so a ciphertext of one kind never opens as another.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Mapping

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import FarmError, ValidationError

log = logging.getLogger(__name__)

MASTER_KEY_FILE = "secret.key"
MASTER_KEY_ENV = "PHONEFARM_SECRET_KEY"


class SecretDecryptError(FarmError):
    """A stored secret cannot be opened with this farm's master key (a wrong or replaced
    PHONEFARM_SECRET_KEY / secret.key); names the secret (``what``), never shows it."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what}: cannot be decrypted with this farm's master key "
                         f"(wrong {MASTER_KEY_ENV} / --secret-key-file / secret.key?); "
                         f"store it again or start with the master key it was saved under")


def load_master_key(data_dir: str | Path, key_file: str | Path | None = None,
                    env: Mapping[str, str] = os.environ) -> bytes:
    """The farm master key (32 bytes): from ``PHONEFARM_SECRET_KEY`` (urlsafe base64), else
    from ``key_file``, else ``DATA/secret.key``, created on first use with mode 0600.
    ValidationError names the source of a malformed key."""
    text = env.get(MASTER_KEY_ENV, "").strip()
    if text:
        return _decode_master(text, MASTER_KEY_ENV)
    if key_file:
        path = Path(key_file)
        try:
            return _decode_master(path.read_text().strip(), str(path))
        except OSError as exc:
            raise ValidationError(str(path), f"master key file unreadable: {exc.strerror}")
    path = Path(data_dir) / MASTER_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL + mode 0600 at creation: never readable by others, not even for a moment,
            # and two coordinators starting at once cannot both write one.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(Fernet.generate_key().decode("ascii") + "\n")
            log.info("master key generated in %s (mode 0600; keep it with backups of the "
                     "farm database: stored AI keys and passwords need it)", path)
    return _decode_master(path.read_text().strip(), str(path))


def _decode_master(text: str, where: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 32:
        raise ValidationError(where, "the master key must be 32 bytes in urlsafe base64 "
                                     "(e.g. the output of Fernet.generate_key())")
    return raw


class SecretBox:
    """Seals and opens one kind of secret (``purpose``) under the master key, one derived
    key per organization (secrets of no organization share one derived key of their own).
    The organization a secret was sealed for is needed to open it: store it beside it."""

    def __init__(self, master: bytes, purpose: str) -> None:
        self._master = master
        self.purpose = purpose
        self._fernets: dict[int | None, Fernet] = {}

    def _fernet(self, organization_id: int | None) -> Fernet:
        found = self._fernets.get(organization_id)
        if found is None:
            # The info string of the AI keys' derivation, unchanged since they were first
            # stored: "phonefarm api_keys organization N".
            info = f"phonefarm {self.purpose} organization {organization_id or 'none'}".encode()
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                           info=info).derive(self._master)
            found = self._fernets[organization_id] = Fernet(base64.urlsafe_b64encode(derived))
        return found

    def seal(self, secret: str, organization_id: int | None) -> str:
        """The ciphertext (ASCII) of ``secret`` under ``organization_id``'s derived key."""
        return self._fernet(organization_id).encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, token: str, organization_id: int | None, what: str) -> str:
        """The secret sealed in ``token``; SecretDecryptError names ``what`` when this
        master key (or this organization's key) does not open it."""
        try:
            return self._fernet(organization_id).decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError, UnicodeError):
            raise SecretDecryptError(what) from None
