"""One in-process farm for run tests: a farm database seeded with the demo accounts, a hub
and one node over the module's real adb server and its four virtual phones, with short
playback timings; everything closed on exit."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from actors.device.adb_server import AdbServer, free_port
from actors.event_store import EventStore
from actors.hub import Hub
from actors.node import Node
from actors.persistence import FarmDB, seed_demo
from actors.playback import PlaybackOptions
from tests.e2e.test_farm_inprocess import SECRET, shutdown, wait_for


@asynccontextmanager
async def run_stack(farm: Any, adb_server: Any, tmp_path: Path, *, data_dir: Path | None = None,
                    hub_options: dict[str, Any] | None = None,
                    node_options: dict[str, Any] | None = None) -> AsyncIterator[tuple[Hub, FarmDB, Node]]:
    store = await EventStore(tmp_path / "coordinator.sqlite3").open()
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    await seed_demo(db, farm.serials)
    hub = await Hub(f"tcp://127.0.0.1:{free_port()}", SECRET, store, db=db,
                    data_dir=data_dir or tmp_path / "data", **(hub_options or {})).start()
    node = await Node("rack-a", hub.link.address, SECRET, AdbServer(port=adb_server.port),
                      tmp_path / "node", **(node_options or {})).start()
    node.playback_options = PlaybackOptions(settle_s=0.05, poll_s=0.2, unknown_confirm_s=0.3)
    try:
        await wait_for(lambda: len([p for p in hub.phones() if p["state"] == "online"]) == 4,
                       what="4 phones online")
        yield hub, db, node
    finally:
        await shutdown(node, hub, store)
        await db.close()
