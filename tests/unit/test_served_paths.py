"""Files the coordinator serves stay inside their own folders: a path a node reported, or one
a database row or a queue entry holds, that points outside (``../..``, absolute, a symlink
out) is refused with a 404 and a warning, never read. Real Hub, FarmDB, EventStore and
aiohttp server; the "secret" is a file next to the data folder."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from actors.control.app import make_app
from actors.store.event_store import EventStore
from actors.coordinator.hub import Hub
from actors.store.farm_db import FarmDB
from actors.coordinator.registry_store import RegistryStore
from actors.coordinator.unknown_screens import UnknownScreenQueue
from protocol.errors import ValidationErrors
from protocol.messages import Event

SECRET = b"MASTER-KEY-BYTES-do-not-serve"
PNG = b"\x89PNG\r\n\x1a\nstep"


@pytest.fixture
async def farm(tmp_path: Path):
    """(client, hub, db, data dir, secret file) of a coordinator that was never started: its
    HTTP API and its node-event intake are the real ones."""
    secret = tmp_path / "secret.key"
    secret.write_bytes(SECRET)
    data = tmp_path / "data"
    data.mkdir()
    store = await EventStore(data / "coordinator.sqlite3").open()
    db = await FarmDB.open(data / "farm.sqlite3")
    registry = RegistryStore.open(data / "registry", db=db)
    hub = Hub("tcp://127.0.0.1:0", "s3cret", store, db=db, data_dir=data,
              unknown=UnknownScreenQueue(data / "unknown-screens"), registry_store=registry)
    client = TestClient(TestServer(make_app(hub)))
    await client.start_server()
    try:
        yield client, hub, db, data, secret
    finally:
        await client.close()
        await db.close()
        await store.close()


async def _execution(db: FarmDB, key: str = "ex-1") -> str:
    await db.create_execution(key, run_id="run-1", serial="s1", sequence="clipshare/login",
                              status="running")
    return key


async def _served(client: TestClient, execution_id: str, step: str):
    resp = await client.get(f"/api/executions/{execution_id}/steps/{quote(step)}/screenshot")
    return resp.status, await resp.read()


@pytest.mark.parametrize("stored", ["../secret.key", "ABSOLUTE", "executions/ex-1/../../../secret.key"])
async def test_a_stored_step_screenshot_outside_the_executions_folder_is_not_served(
        farm, stored: str, caplog) -> None:
    client, _, db, data, secret = farm
    ex = await _execution(db)
    step_id = await db.add_step(ex, 0, "tap", path="steps[0]")
    value = str(secret) if stored == "ABSOLUTE" else str(data / stored)
    await db.finish_step(step_id, "failed", error="x", screenshot=value)
    assert Path(value).resolve().read_bytes() == SECRET  # the row does name the secret
    with caplog.at_level(logging.WARNING):
        status, body = await _served(client, ex, "steps[0]")
    assert status == 404 and SECRET not in body
    assert any("ex-1" in r.getMessage() and "outside" in r.getMessage() for r in caplog.records)


async def test_a_symlink_out_of_the_executions_folder_is_not_followed(farm) -> None:
    client, _, db, data, secret = farm
    ex = await _execution(db)
    link = data / "executions" / ex / "steps[0].png"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    step_id = await db.add_step(ex, 0, "tap", path="steps[0]")
    await db.finish_step(step_id, "failed", screenshot=str(link))
    status, body = await _served(client, ex, "steps[0]")
    assert status == 404 and SECRET not in body


async def test_a_screenshot_path_reported_by_a_node_is_never_stored(farm, caplog) -> None:
    """A node sends its own ``screenshot`` path instead of the image: the step is recorded
    without a screenshot, the warning names the node, and nothing is served."""
    client, hub, db, _, secret = farm
    ex = await _execution(db)
    events = [Event(1, "step_started", "s1", {"execution_id": ex, "index": 0,
                                              "path": "steps[0]", "type": "tap"}),
              Event(2, "step_finished", "s1", {"execution_id": ex, "index": 0, "path": "steps[0]",
                                               "type": "tap", "status": "failed", "error": "boom",
                                               "screenshot": str(secret)})]
    with caplog.at_level(logging.WARNING):
        await hub.handle_batch("rack-evil", events)
    record = await db.get_execution(ex)
    assert [(s["status"], s["screenshot"]) for s in record["steps"]] == [("failed", None)]
    assert any("rack-evil" in r.getMessage() and ex in r.getMessage() for r in caplog.records)
    status, body = await _served(client, ex, "steps[0]")
    assert status == 404 and SECRET not in body
    view = await (await client.get(f"/api/executions/{ex}")).json()
    assert view["steps"][0]["screenshot"] is None


async def test_a_node_screenshot_image_is_still_stored_and_served(farm) -> None:
    client, hub, db, data, _ = farm
    ex = await _execution(db)
    await hub.handle_batch("rack-a", [Event(1, "step_finished", "s1", {
        "execution_id": ex, "index": 0, "path": "steps[0]", "type": "tap", "status": "failed",
        "screenshot_png_b64": base64.b64encode(PNG).decode()})])
    status, body = await _served(client, ex, "steps[0]")
    assert status == 200 and body == PNG
    assert (data / "executions" / ex / "steps[0].png").read_bytes() == PNG


async def test_an_unknown_screen_entry_naming_a_file_outside_is_not_served(farm) -> None:
    """An entry JSON in the queue folder whose id climbs out (a hand-edited or planted file)
    is not loaded, and an entry whose PNG is a symlink out is not served."""
    client, hub, _, data, secret = farm
    folder = data / "unknown-screens"
    (folder / "evil.json").write_bytes(orjson.dumps({"id": "../secret", "phash": "0" * 64,
                                                     "seen": 1, "serials": []}))
    (data / "secret.png").write_bytes(SECRET)
    (folder / "n1-7.json").write_bytes(orjson.dumps({"id": "n1-7", "phash": "0" * 64,
                                                     "seen": 1, "serials": []}))
    (folder / "n1-7.png").symlink_to(secret)
    hub.unknown = UnknownScreenQueue(folder)
    assert [e["id"] for e in hub.unknown.entries()] == ["n1-7"]
    for entry_id in ("../secret", "n1-7"):
        resp = await client.get(f"/api/unknown-screens/{quote(entry_id, safe='')}/image")
        assert resp.status in (400, 404), entry_id
        assert SECRET not in await resp.read()


async def test_registry_file_through_a_symlink_out_is_not_served(farm) -> None:
    client, _, _, data, secret = farm
    registry = data / "registry"
    app_json = next(p for p in registry.glob("*.json") if p.name != "global.json")
    app = orjson.loads(app_json.read_bytes())
    app_key = app_json.stem
    crop = next(iter(_refs(app)))
    target = registry / crop
    target.unlink()
    target.symlink_to(secret)
    resp = await client.get(f"/api/registry/apps/{app_key}/files/{crop}")
    assert resp.status == 404 and SECRET not in await resp.read()


def _refs(node) -> list[str]:
    """Every ``reference``/``reference_screenshot`` value in an app's JSON."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("reference", "reference_screenshot") and isinstance(v, str):
                out.append(v)
            else:
                out += _refs(v)
    elif isinstance(node, list):
        for v in node:
            out += _refs(v)
    return out


async def test_static_files_do_not_climb_out(farm) -> None:
    client, *_ = farm
    for path in ("/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/app.py",
                 "/static/..%2f..%2fapp.py"):
        resp = await client.get(path)
        assert resp.status in (400, 403, 404), path
        assert b"root:" not in await resp.read() and b"make_app" not in await resp.read()


async def test_runs_check_sequences_against_the_registry_the_coordinator_serves(farm) -> None:
    """An interrupt screen deleted through the registry store is gone for sequences too (they
    were checked against the packaged demo registry, whatever the console had edited)."""
    _, hub, db, data, _ = farm
    sequence = {"name": "probe", "app": "clipshare",
                "steps": [{"type": "tap", "action": "clipshare/video_options.save"}]}
    hub.runs.sequence(sequence)  # the demo copy has it
    await hub.registry_store.delete_screen("clipshare", "video_options")
    with pytest.raises(ValidationErrors, match="has no screen 'video_options'"):
        hub.runs.sequence(sequence)
