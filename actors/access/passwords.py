"""Password hashing: argon2id through argon2-cffi, with its default (RFC 9106 low-memory)
parameters; a hash made with older parameters is re-hashed at the next good login."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from protocol.errors import ValidationError

_HASHER = PasswordHasher()
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a wrong name costs as long as a
    wrong password and the answer's timing does not tell whether a name exists. Made at
    the first such login, not at import: a hash costs every process start ~0.2 s of CPU."""
    return _HASHER.hash("not a password of anyone")


def check_new_password(password: str, field: str = "password") -> None:
    """Refuse a password too short, too long or with control characters."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(field, f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(field, f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if any(ord(c) < 32 for c in password):
        raise ValidationError(field, "a password may not contain control characters")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; None (no such user) still spends the
    time of one verification."""
    try:
        return _HASHER.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
