"""A node's copy of the screen registry, kept at the coordinator's version.

Owns the folder the node's matcher loads: the ``--registry`` folder as given until the
coordinator pushes an app, then ``DATA/registry-<node>`` (a copy of it, so a packaged or
shared registry is never written), which later starts keep using while its ``.synced-from``
marker names the same ``--registry``. A push (``protocol.messages.RegistryPush``) is written
with ``registry.load.save_app``: validated first, every file replaced atomically, the JSON
last and byte for byte as the coordinator has it, so both hash to the same version.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from protocol.files import copy_tree, fsync_dir, write_atomic
from protocol.messages import RegistryPush
from registry.load import save_app

log = logging.getLogger(__name__)

MARKER = ".synced-from"


class NodeRegistry:
    """Owns which registry folder the node uses and writes the coordinator's pushes there."""

    def __init__(self, source: Path, data_dir: Path, node: str) -> None:
        self.source = Path(source).resolve()
        self.synced = Path(data_dir) / f"registry-{node}"
        marker = self.synced / MARKER
        same = marker.is_file() and marker.read_text().strip() == str(self.source)
        self.path = self.synced if same else self.source

    def apply(self, push: RegistryPush) -> Path:
        """Write one pushed app (blocking: run it in a worker thread); returns the folder to
        (re)load. ValidationErrors when the app would make the registry invalid (nothing of
        it is written then)."""
        if self.path != self.synced:
            self._copy_source()
        for stale in self.synced.glob("*.json"):
            # The coordinator's registry has no such app (any more): drop it so both hash alike.
            if stale.stem not in push.apps and stale.stem != push.app:
                stale.unlink()
        save_app(self.synced, push.app, push.app_json, push.files)
        log.info("registry app %s from the coordinator written to %s (%d files)", push.app,
                 self.synced, len(push.files))
        return self.synced

    def _copy_source(self) -> None:
        """``synced`` := a fresh copy of ``source`` (built beside it, renamed into place)."""
        self.synced.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.synced.name}.", dir=self.synced.parent))
        try:
            copy_tree(self.source, tmp)
            write_atomic(tmp / MARKER, str(self.source).encode())
            if self.synced.exists():
                shutil.rmtree(self.synced)
            os.rename(tmp, self.synced)
            fsync_dir(self.synced.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = self.synced
