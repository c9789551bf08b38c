"""Backups (issue 18.3) of a real data folder whose databases are open and written meanwhile:
what is in and out, the hashes, damaged and incomplete backups, restore refusals, --force
moving the old folder aside, the master key in or out, partial folders, keep-N pruning."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from actors.store.backup import (BackupError, list_backups, prune, read_manifest,
                                 restore_backup, take_backup)
from actors.store.backup.engines import SqliteEngine
from actors.store.event_store import EventStore
from actors.store.farm_db import SCHEMA_VERSION, FarmDB

MASTER = bytes(range(32))
T0 = datetime(2026, 12, 6, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
async def live(tmp_path: Path):
    """A coordinator's data folder with both databases open (as a running coordinator
    holds them): one completed and one running execution, an account, files of each kind,
    and the things a backup must leave out."""
    data = tmp_path / "data"
    data.mkdir()
    store = await EventStore(data / "coordinator.sqlite3").open()
    db = await FarmDB.open(data / "farm.sqlite3", master_key=MASTER)
    await db.upsert_phone("p1")
    await db.upsert_account("p1", "clipshare", "1", username="ann", password="s3cret-pass")
    await db.create_execution("ex-done", run_id="r1", serial="p1", sequence="s",
                              status="completed")
    await db.create_execution("ex-live", run_id="r1", serial="p1", sequence="s",
                              status="running")
    files = {"registry/clipshare.json": b"{}", "registry/clipshare/a.1234.png": b"png",
             "sequences/clipshare/rec.json": b'{"name": "rec"}', "phone-tags.json": b"{}",
             "media/a.jpg": b"jpg", "executions/ex-done/0.png": b"shot",
             "recovery/ex-done/1-before.png": b"r", "unknown-screens/n-1.png": b"u",
             # left out:
             "admin.token": b"pf_token", "secret.key": base64.urlsafe_b64encode(MASTER),
             "journal-n.sqlite3": b"journal", "registry-n/x.json": b"{}",
             "demo-node.key": b"k", "backups/old/manifest.json": b"{}",
             "registry/.clipshare.json.abc.tmp": b"half"}
    for name, content in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    try:
        yield data, db
    finally:
        await db.close()
        await store.close()


def names(backup: Path) -> set[str]:
    return {p.relative_to(backup).as_posix() for p in backup.rglob("*") if p.is_file()}


async def test_backup_has_the_farm_and_not_the_secrets(live, tmp_path: Path) -> None:
    data, db = live
    seen = []
    folder, manifest = await asyncio.to_thread(
        take_backup, data, data / "backups", progress=lambda *a: seen.append(a), now=T0)
    assert folder == data / "backups" / "phonefarm-backup-20261206T020000Z"
    assert names(folder) == {
        "manifest.json", "farm.sqlite3", "coordinator.sqlite3", "registry/clipshare.json",
        "registry/clipshare/a.1234.png", "sequences/clipshare/rec.json", "phone-tags.json",
        "media/a.jpg", "executions/ex-done/0.png", "recovery/ex-done/1-before.png",
        "unknown-screens/n-1.png"}
    assert {f["path"] for f in manifest["files"]} == names(folder) - {"manifest.json"}
    assert manifest["master_key_included"] is False
    assert "not included" in manifest["master_key"] and "secret.key" in manifest["master_key"]
    assert manifest["facts"]["executions"] == 2 and manifest["facts"]["accounts"] == 1
    assert manifest["facts"]["executions_in_flight"] == 1
    assert manifest["program"]["farm_schema_version"] == SCHEMA_VERSION
    assert manifest["engine"] == "sqlite"
    assert seen[-1][0] == seen[-1][1] and seen[-1][2] > 0  # every file done
    # Owner-only, and nothing of the sealed password in clear.
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    for path in folder.rglob("*"):
        if path.is_file():
            assert b"s3cret-pass" not in path.read_bytes(), path
    # The copy is a whole database, readable on its own.
    conn = sqlite3.connect(folder / "farm.sqlite3")
    assert conn.execute("SELECT count(*) FROM executions").fetchone()[0] == 2
    conn.close()
    assert [p.name for p, _ in list_backups(data / "backups")] == [folder.name]


async def test_backup_is_consistent_while_the_database_is_written(live) -> None:
    data, db = live

    async def writer() -> None:
        for i in range(200):
            await db.create_execution(f"ex-w{i}", run_id="r2", serial="p1", status="completed")

    task = asyncio.create_task(writer())
    folder, manifest = await asyncio.to_thread(take_backup, data, data / "backups")
    await task
    conn = sqlite3.connect(folder / "farm.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM executions").fetchone()[0] == \
        manifest["facts"]["executions"]
    conn.close()


async def test_master_key_only_when_asked(live) -> None:
    data, _ = live
    folder, manifest = await asyncio.to_thread(
        take_backup, data, data / "backups", master_key=MASTER, include_master_key=True)
    assert manifest["master_key_included"] is True
    assert base64.urlsafe_b64decode((folder / "secret.key").read_text().strip()) == MASTER
    with pytest.raises(BackupError, match="master key"):
        take_backup(data, data / "backups", include_master_key=True)


async def test_restore_into_an_empty_folder_marks_in_flight(live, tmp_path: Path) -> None:
    data, _ = live
    folder, _ = await asyncio.to_thread(take_backup, data, tmp_path / "b", master_key=MASTER,
                                        include_master_key=True)
    target = tmp_path / "fresh"
    report = restore_backup(folder, target)
    assert report.in_flight == ["ex-live"] and report.replaced is None
    assert "from the backup" in report.master_key
    assert names(target) >= {"farm.sqlite3", "coordinator.sqlite3", "secret.key",
                             "registry/clipshare.json", "phone-tags.json"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    db = await FarmDB.open(target / "farm.sqlite3", master_key=MASTER)
    try:
        done = await db.get_execution("ex-done")
        live_one = await db.get_execution("ex-live")
        assert done["status"] == "completed"
        assert live_one["status"] == "failed" and live_one["error_reason"] == "restored"
        assert folder.name in live_one["error_message"]
        assert await db.unfinished_executions(["p1"]) == []
    finally:
        await db.close()
    assert not list(tmp_path.glob("fresh.restoring-*"))


async def test_restore_says_loudly_when_the_key_is_missing(live, tmp_path: Path) -> None:
    data, _ = live
    folder, _ = await asyncio.to_thread(take_backup, data, tmp_path / "b")
    report = restore_backup(folder, tmp_path / "fresh")
    assert "NOT in this backup" in report.master_key
    assert any("NOT in this backup" in line for line in report.lines())
    assert not (tmp_path / "fresh" / "secret.key").exists()


async def test_damaged_or_incomplete_backup_writes_nothing(live, tmp_path: Path) -> None:
    data, _ = live
    folder, _ = await asyncio.to_thread(take_backup, data, tmp_path / "b")
    target = tmp_path / "fresh"
    shot = folder / "executions" / "ex-done" / "0.png"
    shot.write_bytes(b"SHOT")  # same size, other bytes
    with pytest.raises(BackupError, match=r"executions/ex-done/0\.png: damaged"):
        restore_backup(folder, target)
    shot.unlink()
    with pytest.raises(BackupError, match=r"0\.png: missing from the backup"):
        restore_backup(folder, target)
    (folder / "manifest.json").unlink()
    with pytest.raises(BackupError, match="no manifest.json"):
        restore_backup(folder, target)
    assert not target.exists() and not list(tmp_path.glob("fresh.*"))


async def test_a_newer_schema_or_format_is_refused(live, tmp_path: Path) -> None:
    data, _ = live
    folder, manifest = await asyncio.to_thread(take_backup, data, tmp_path / "b")
    path = folder / "manifest.json"
    newer = dict(manifest, databases={"farm": {"schema_version": SCHEMA_VERSION + 1}})
    path.write_text(json.dumps(newer))
    with pytest.raises(BackupError, match="newer than this program"):
        restore_backup(folder, tmp_path / "fresh")
    path.write_text(json.dumps(dict(manifest, format_version=99)))
    with pytest.raises(BackupError, match="format version 99"):
        restore_backup(folder, tmp_path / "fresh")
    path.write_text(json.dumps(dict(manifest, files=[{"path": "../x", "size": 0,
                                                      "sha256": ""}])))
    with pytest.raises(BackupError, match="leaves the backup folder"):
        restore_backup(folder, tmp_path / "fresh")


async def test_non_empty_refused_in_use_refused_force_moves_aside(live, tmp_path: Path) -> None:
    data, db = live
    folder, _ = await asyncio.to_thread(take_backup, data, tmp_path / "b")
    # The databases are open (a running coordinator): refused even with force.
    with pytest.raises(BackupError, match="open in another process"):
        await asyncio.to_thread(_restore_elsewhere, folder, data, True)
    target = tmp_path / "other"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (target / "secret.key").write_text(base64.urlsafe_b64encode(MASTER).decode())
    with pytest.raises(BackupError, match=r"not empty \(notes.txt, secret.key\).*--force"):
        restore_backup(folder, target)
    assert (target / "notes.txt").read_text() == "mine"
    report = restore_backup(folder, target, force=True, now=T0)
    assert report.replaced == tmp_path / "other.replaced-20261206T020000Z"
    assert (report.replaced / "notes.txt").read_text() == "mine"
    assert not (target / "notes.txt").exists() and (target / "farm.sqlite3").is_file()
    assert "kept" in report.master_key and (target / "secret.key").is_file()
    assert any(str(report.replaced) in line for line in report.lines())


def _restore_elsewhere(folder: Path, data: Path, force: bool) -> None:
    """Restore from another process, as `farm restore` does (SQLite's locks are per
    process: this process's own open databases do not count as another's)."""
    import subprocess
    import sys

    code = ("import sys; from actors.store.backup import restore_backup, BackupError\n"
            "try:\n restore_backup(sys.argv[1], sys.argv[2], force=True)\n"
            "except BackupError as e:\n print(e); sys.exit(3)")
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(data)],
                         capture_output=True, text=True, cwd=Path(__file__).parents[2])
    if out.returncode == 3:
        raise BackupError(out.stdout.strip())
    assert out.returncode == 0, out.stderr


def test_in_use_probe_on_a_closed_database(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "farm.sqlite3")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    (tmp_path / "coordinator.sqlite3").touch()
    conn.close()
    assert SqliteEngine(tmp_path).is_in_use() is None


async def test_partial_folder_is_removed_and_never_listed(live, tmp_path: Path) -> None:
    data, _ = live
    dest = tmp_path / "b"
    partial = dest / "phonefarm-backup-20261206T010000Z.partial"
    partial.mkdir(parents=True)
    (partial / "farm.sqlite3").write_bytes(b"half")
    assert list_backups(dest) == []
    with pytest.raises(BackupError, match="unfinished"):
        read_manifest(partial)
    await asyncio.to_thread(take_backup, data, dest)
    assert not partial.exists()


async def test_keep_n_prunes_only_this_farms_backups(live, tmp_path: Path) -> None:
    data, _ = live
    dest = tmp_path / "b"
    made = []
    for hour in range(4):
        folder, _ = await asyncio.to_thread(take_backup, data, dest,
                                            now=T0.replace(hour=hour))
        made.append(folder)
    foreign = dest / "phonefarm-backup-20200101T000000Z"  # another farm's, oldest of all
    foreign.mkdir()
    manifest = read_manifest(made[0])
    (foreign / "manifest.json").write_text(json.dumps(dict(manifest, source="/elsewhere",
                                                           created_at="2020-01-01T00:00:00Z")))
    junk = dest / "phonefarm-backup-20000101T000000Z"  # no manifest: not a backup
    junk.mkdir()
    other = dest / "photos"
    other.mkdir()
    deleted = prune(dest, 2, source=manifest["source"])
    assert deleted == made[:2]
    assert all(p.exists() for p in (*made[2:], foreign, junk, other))
    with pytest.raises(BackupError, match="at least 1"):
        prune(dest, 0)


async def test_same_second_backups_get_distinct_names(live, tmp_path: Path) -> None:
    data, _ = live
    a, _ = await asyncio.to_thread(take_backup, data, tmp_path / "b", now=T0)
    b, _ = await asyncio.to_thread(take_backup, data, tmp_path / "b", now=T0)
    assert a != b and b.name == a.name + "-2"
    assert [p for p, _ in list_backups(tmp_path / "b")] == [a, b]
