"""One in-process farm for run tests: a farm database seeded with the demo accounts, a hub
and one node over the module's real adb server and its four virtual phones, with short
playback timings; everything closed on exit."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from actors.coordinator.hub import Hub
from actors.node.node import Node
from actors.store.farm_db import FarmDB, seed_demo
from actors.node.playback import PlaybackOptions
from tests.e2e.test_farm_inprocess import shutdown, start_farm


@asynccontextmanager
async def run_stack(farm: Any, adb_server: Any, tmp_path: Path, *, data_dir: Path | None = None,
                    hub_options: dict[str, Any] | None = None,
                    node_options: dict[str, Any] | None = None) -> AsyncIterator[tuple[Hub, FarmDB, Node]]:
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    try:
        await seed_demo(db, farm.serials)
        store, hub, node = await start_farm(adb_server, tmp_path, node_options=node_options,
                                            hub_options={"db": db, "data_dir": data_dir or tmp_path / "data",
                                                         **(hub_options or {})})
        node.playback_options = PlaybackOptions(settle_s=0.05, poll_s=0.2, unknown_confirm_s=0.3)
        try:
            yield hub, db, node
        finally:
            await shutdown(node, hub, store)
    finally:
        await db.close()
