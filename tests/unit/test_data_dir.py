"""The data folder is private (issue 17.3, actors.store.data_dir): after `secure_data_dir`
the folder and everything in it are owner-only (folders 0700, files 0600 or less), files
created afterwards are too (umask 0o077: the farm database with its -wal/-shm, the event
store), and a symlink neither has its target changed nor is followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from actors.store.data_dir import secure_data_dir
from actors.store.event_store import EventStore
from actors.store.farm_db import FarmDB


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def restore_umask():
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)  # the umask is the whole test process's


async def test_existing_entries_are_made_private_and_new_files_are_born_private(
        tmp_path: Path, restore_umask) -> None:
    os.umask(0o022)  # as a default login shell leaves it
    data = tmp_path / "farm-data"
    (data / "executions" / "ex-1").mkdir(parents=True)
    (data / "executions" / "ex-1" / "1.png").write_bytes(b"png")
    (data / "phone-tags.json").write_text("{}")
    (data / "read-only").write_text("x")
    (data / "read-only").chmod(0o444)
    (data / "script").write_text("x")
    (data / "script").chmod(0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    (data / "link").symlink_to(outside)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (data / "linked-dir").symlink_to(shared)
    assert mode(data / "executions") == 0o755 and mode(data / "phone-tags.json") == 0o644

    assert secure_data_dir(data) == 7  # data, executions, ex-1, and four files
    assert mode(data) == mode(data / "executions") == mode(data / "executions" / "ex-1") == 0o700
    assert mode(data / "executions" / "ex-1" / "1.png") == mode(data / "phone-tags.json") == 0o600
    assert mode(data / "read-only") == 0o400  # never widened
    assert mode(data / "script") == 0o600
    assert mode(outside) == 0o644 and mode(shared) == 0o755  # links: not followed
    assert secure_data_dir(data) == 0  # nothing left to do

    db = await FarmDB.open(data / "farm.sqlite3")
    await db.upsert_client("Acme")
    store = await EventStore(data / "coordinator.sqlite3").open()
    (data / "unknown-screens").mkdir()
    try:
        created = [p for p in data.rglob("*") if not p.is_symlink()]
        assert {p.name for p in created} >= {"farm.sqlite3", "farm.sqlite3-wal",
                                             "farm.sqlite3-shm", "coordinator.sqlite3"}
        assert all(mode(p) & 0o077 == 0 for p in created), {str(p): oct(mode(p))
                                                             for p in created}
    finally:
        await store.close()
        await db.close()


def test_a_new_data_folder_is_created_0700(tmp_path: Path, restore_umask) -> None:
    os.umask(0o022)
    secure_data_dir(tmp_path / "new" / "farm-data")
    assert mode(tmp_path / "new" / "farm-data") == 0o700
