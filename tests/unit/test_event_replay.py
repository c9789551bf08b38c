"""A coordinator stopped between writing a batch's execution records and storing its events
(records first: actors/coordinator/hub.py `_handle_batch`) gets the batch again from the node
and applies it again: the records must come out as if applied once. Real Hub, event stores
and farm database; the stop is two hubs over one database, the second with an event store
that never got the events."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.coordinator.hub import Hub
from actors.store.event_store import EventStore
from actors.store.farm_db import FarmDB
from protocol.messages import Event

pytestmark = pytest.mark.usefixtures("engine")


async def test_a_batch_applied_again_after_a_stop_doubles_no_step(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = await FarmDB.open(data / "farm.sqlite3")
    await db.create_execution("ex-1", run_id="run-1", serial="s1",
                              sequence="clipshare/login", status="pending")
    step = {"execution_id": "ex-1", "index": 0, "path": "steps[0]", "type": "launch_app"}
    batch = [Event(1, "execution_started", "s1", {"execution_id": "ex-1"}),
             Event(2, "step_started", "s1", step),
             Event(3, "step_finished", "s1", {**step, "status": "ok", "screen": "clipshare/feed"}),
             Event(4, "step_started", "s1", {**step, "index": 1, "path": "steps[1]"})]
    stores = []
    try:
        for name in ("before-the-stop", "after-the-stop"):
            store = await EventStore(data / f"{name}.sqlite3").open()
            stores.append(store)
            hub = Hub("tcp://127.0.0.1:0", "s3cret", store, db=db, data_dir=data)
            await hub.handle_batch("rack-a", batch)
        record = await db.get_execution("ex-1")
        assert [(s["path"], s["status"]) for s in record["steps"]] == [
            ("steps[0]", "success"), ("steps[1]", "running")]
    finally:
        for store in stores:
            await store.close()
        await db.close()
