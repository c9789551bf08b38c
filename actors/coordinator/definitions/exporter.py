"""`GitExporter`: the coordinator's own export of its definitions to a Git repository
(``--export-git DIR --export-every 1h``, issue 23.2): at start and then every interval, the
newest version of every definition is written and each one changed since the last export
committed (`git_export.export_to_git`, in a worker thread). The outcome goes on the status
stream: ``definitions_exported`` (the commits) or ``definitions_export_failed`` (why; the
next round tries again).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from actors.coordinator.definitions.git_export import export_to_git
from actors.coordinator.definitions.history import DefinitionHistory

log = logging.getLogger(__name__)


class GitExporter:
    """Owns the periodic export: its repository folder and interval."""

    def __init__(self, hub: Any, db: Any, folder: str | Path, every: timedelta) -> None:
        self.hub = hub
        self.db = db
        self.folder = Path(folder)
        self.every = every

    async def once(self) -> list[dict]:
        """One export round; returns its commits (raises on failure)."""
        history = DefinitionHistory(self.db, None, runs=self.hub.runs,
                                    registry=self.hub.registry_store)
        definitions = await history.current()
        return await asyncio.to_thread(export_to_git, self.folder, definitions)

    async def loop(self) -> None:
        while True:
            try:
                commits = await self.once()
            except Exception as exc:  # a full disk, a broken repository: try next round
                log.exception("definitions export to %s failed", self.folder)
                self.hub.emit("definitions_export_failed", None, None,
                              {"folder": str(self.folder), "error": f"{type(exc).__name__}: {exc}"})
            else:
                log.info("definitions exported to %s: %d commit(s)", self.folder, len(commits))
                self.hub.emit("definitions_exported", None, None,
                              {"folder": str(self.folder), "commits": commits})
            await asyncio.sleep(self.every.total_seconds())
