"""Password hashing: argon2id through argon2-cffi, with its default (RFC 9106 low-memory)
parameters; a hash made with older parameters is re-hashed at the next good login.

``PHONEFARM_PASSWORD_HASHING=cheapest`` (argon2-cffi's ``CHEAPEST`` profile, which it
offers for tests) is for test runs only: the suite starts hundreds of farms that each hash
and verify a few passwords, at ~0.2 s of CPU and 64 MiB each with the default. A farm
started with it warns (`hashing_warning`); a password hashed so is re-hashed with the
default at its next good login once the variable is gone."""

from __future__ import annotations

import os
from functools import cache

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from protocol.errors import ValidationError

HASHING_VARIABLE = "PHONEFARM_PASSWORD_HASHING"
_PROFILES = {"default": profiles.RFC_9106_LOW_MEMORY, "cheapest": profiles.CHEAPEST}


@cache
def _hasher() -> PasswordHasher:
    name = os.environ.get(HASHING_VARIABLE, "").strip() or "default"
    if name not in _PROFILES:
        raise ValidationError(HASHING_VARIABLE, f"{name!r} is not one of {sorted(_PROFILES)}")
    return PasswordHasher.from_parameters(_PROFILES[name])


def hashing_warning() -> str | None:
    """What a process should log at start when passwords are hashed for tests, else None;
    ValidationError naming the variable for a value it does not know."""
    if _hasher().memory_cost >= profiles.RFC_9106_LOW_MEMORY.memory_cost:
        return None
    return (f"{HASHING_VARIABLE} makes password hashes cheap to guess: it is for test runs "
            f"only, never for a farm people log in to")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a wrong name costs as long as a
    wrong password and the answer's timing does not tell whether a name exists. Made at
    the first such login, not at import: a hash costs every process start ~0.2 s of CPU."""
    return _hasher().hash("not a password of anyone")


def check_new_password(password: str, field: str = "password") -> None:
    """Refuse a password too short, too long or with control characters."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(field, f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(field, f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if any(ord(c) < 32 for c in password):
        raise ValidationError(field, "a password may not contain control characters")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; None (no such user) still spends the
    time of one verification."""
    try:
        return _hasher().verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    try:
        return _hasher().check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
