"""The coordinator's backups over HTTP and on schedule (issue 18.3): POST/GET /api/backups on
a real data folder, progress on the stream, one at a time (409), `to` checked, the daily
time and keep-N flags, the scheduled run pruning only this farm's backups."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from actors.control.app import make_app
from actors.control.backups import BACKUPS
from actors.coordinator.backups import (BackupService, next_due, parse_backup_at,
                                        parse_backup_keep)
from actors.store.backup import BackupBusy, list_backups
from actors.store.event_store import EventStore
from actors.store.farm_db import FarmDB
from tests.unit.fake_hub import FakeHub


@pytest.fixture
async def farm(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    store = await EventStore(data / "coordinator.sqlite3").open()
    db = await FarmDB.open(data / "farm.sqlite3", master_key=bytes(32))
    (data / "registry").mkdir()
    (data / "registry" / "app.json").write_text("{}")
    events: list[tuple[str, dict]] = []
    service = BackupService(data, data / "backups", lambda e, n, s, d: events.append((e, d)),
                            master_key=bytes(32), keep=2)
    try:
        yield service, events
    finally:
        await db.close()
        await store.close()


@pytest.fixture
async def client(farm):
    app = make_app(FakeHub())
    app[BACKUPS] = farm[0]
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_post_takes_a_backup_and_reports_on_the_stream(client, farm) -> None:
    service, events = farm
    resp = await client.post("/api/backups", json={})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["name"].startswith("phonefarm-backup-") and body["files"] == 3
    assert body["master_key_included"] is False and "not included" in body["master_key"]
    assert Path(body["path"]).parent == service.backup_dir
    names = [e for e, _ in events]
    assert names[0] == "backup_started" and names[-1] == "backup_finished"
    assert "backup_progress" in names
    listed = await (await client.get("/api/backups")).json()
    assert [b["name"] for b in listed["backups"]] == [body["name"]]


async def test_post_without_a_body_and_with_the_key(client, farm, tmp_path: Path) -> None:
    resp = await client.post("/api/backups")
    assert resp.status == 201
    other = tmp_path / "elsewhere"
    other.mkdir()
    resp = await client.post("/api/backups", json={"to": str(other),
                                                   "include_master_key": True})
    body = await resp.json()
    assert resp.status == 201 and body["master_key_included"] is True
    assert (Path(body["path"]) / "secret.key").is_file()
    assert Path(body["path"]).parent == other


@pytest.mark.parametrize("to", ["relative/dir", "/no/such/folder/at/all", ""])
async def test_to_must_be_an_existing_absolute_folder(client, farm, to: str) -> None:
    resp = await client.post("/api/backups", json={"to": to})
    assert resp.status == 400
    assert (await resp.json())["field"] == "$.to"
    assert not farm[0].backup_dir.exists()


async def test_unknown_field_is_400(client) -> None:
    resp = await client.post("/api/backups", json={"into": "/tmp"})
    assert resp.status == 400


async def test_one_backup_at_a_time(client, farm) -> None:
    service, _ = farm
    service.running = "user:1:other"
    resp = await client.post("/api/backups", json={})
    assert resp.status == 409 and "already" in (await resp.json())["error"]
    with pytest.raises(BackupBusy):
        await service.backup()


async def test_failure_is_on_the_stream(farm, tmp_path: Path) -> None:
    service, events = farm
    (service.data / "farm.sqlite3").rename(tmp_path / "moved.sqlite3")
    with pytest.raises(Exception, match="backup failed: .*farm.sqlite3: no such database"):
        await service.backup()
    assert events[-1][0] == "backup_failed" and "farm.sqlite3" in events[-1][1]["reason"]
    assert service.running is None
    assert list_backups(service.backup_dir) == []


async def test_scheduled_backup_prunes_this_farms_beyond_keep(farm) -> None:
    service, events = farm
    foreign = service.backup_dir / "phonefarm-backup-20000101T000000Z"
    for _ in range(3):
        await service.scheduled_once()
        await asyncio.sleep(1.01)  # distinct names by the second
    if not foreign.exists():
        foreign.mkdir(parents=True)
        oldest = list_backups(service.backup_dir)[0]
        (foreign / "manifest.json").write_text(json.dumps(
            {**oldest[1], "source": "/another/farm", "created_at": "2000-01-01T00:00:00Z"}))
    await service.scheduled_once()
    ours = [p for p, m in list_backups(service.backup_dir) if m["source"] == service.source]
    assert len(ours) == 2 and foreign.exists()
    assert all(m["scheduled"] for _, m in list_backups(service.backup_dir))
    assert any(e == "backup_pruned" for e, _ in events)


def test_flags() -> None:
    assert parse_backup_at("02:00") == time(2, 0) and parse_backup_at(None) is None
    assert parse_backup_at("7:05") == time(7, 5)
    for bad in ("24:00", "2", "02:0", "ab:cd", "02:00:00", "-1:30"):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_backup_at(bad)
    assert parse_backup_keep("30") == 30
    for bad in ("0", "-3", "x"):
        with pytest.raises(ValueError, match="at least 1"):
            parse_backup_keep(bad)
    now = datetime(2026, 12, 6, 1, 30).astimezone()
    assert next_due(now, time(2, 0)) == now.replace(hour=2, minute=0)
    assert next_due(now, time(1, 30)).day == 7
