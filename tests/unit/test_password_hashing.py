"""PHONEFARM_PASSWORD_HASHING: the default argon2 parameters, the test profile the suite
runs with (tests/conftest.py) and its warning, and an unknown value refused at start."""

from __future__ import annotations

import contextlib

import pytest

from actors.access import passwords
from actors.coordinator.main import parse_args, start
from actors.node.device.adb_server import free_port
from actors.process import StartupError


@pytest.fixture
def hashing(monkeypatch):
    """Sets the variable (None: unset) for one case; the hasher is made again after it."""
    def use(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(passwords.HASHING_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(passwords.HASHING_VARIABLE, value)
        passwords._hasher.cache_clear()
    yield use
    monkeypatch.undo()
    passwords._hasher.cache_clear()


def test_the_default_is_rfc_9106_low_memory_and_says_nothing(hashing) -> None:
    hashing(None)
    made = passwords.hash_password("a good password")
    assert made.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.verify_password(made, "a good password")
    assert passwords.hashing_warning() is None


def test_the_test_profile_warns_and_its_hashes_are_rehashed_without_it(hashing) -> None:
    hashing("cheapest")
    cheap = passwords.hash_password("a good password")
    assert "m=65536" not in cheap and passwords.verify_password(cheap, "a good password")
    assert "test runs only" in passwords.hashing_warning()
    hashing(None)
    assert passwords.verify_password(cheap, "a good password")  # still logs in
    assert passwords.needs_rehash(cheap)                          # and is hashed anew


async def test_an_unknown_value_stops_the_coordinator_naming_the_variable(hashing, tmp_path) -> None:
    hashing("fast")
    args = parse_args(["--http", f"127.0.0.1:{free_port()}",
                       "--listen", f"tcp://127.0.0.1:{free_port()}",
                       "--data", str(tmp_path / "data"), "--retention", "off"])
    with pytest.raises(StartupError, match="PHONEFARM_PASSWORD_HASHING.*'fast'"):
        async with contextlib.AsyncExitStack() as stack:
            await start(args, stack)
    assert not (tmp_path / "data" / "farm.sqlite3").exists()  # nothing opened
