"""Keeping every node's screen registry at the coordinator's version.

Owns which registry version each node reported (its Hello, then each ``RegistryApplied``)
and the pushes: after a save, the changed app goes to every connected node; a node that
(re)connects with another version gets every app (one ``RegistryPush`` per app, so a message
stays under the link's size limit). Pushes to one node are serialized and read the app's
files when they are sent, so the last push a node gets is always the newest content. A node
still not at the coordinator's version ``VERIFY_AFTER_S`` after a push (a message lost on a
live connection) is sent every app again, at most ``MAX_RESYNCS`` times in a row.
Emits ``registry_changed`` (after a save), ``registry_applied`` and ``registry_push_failed``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from protocol.errors import DeliveryError, ProtocolError
from protocol.messages import RegistryApplied, RegistryPush

log = logging.getLogger(__name__)

VERIFY_AFTER_S = 10.0
MAX_RESYNCS = 3


class RegistrySync:
    """Owns the push of the coordinator's registry (``store``) to the hub's nodes."""

    def __init__(self, hub: Any, store: Any) -> None:
        self.hub = hub
        self.store = store
        self.versions: dict[str, str | None] = {}  # node -> last version it reported
        self._locks: dict[str, asyncio.Lock] = {}
        self._verifying: set[str] = set()
        self._resyncs: dict[str, int] = {}
        self.verify_after_s = VERIFY_AFTER_S
        store.on_change = self.changed

    def changed(self, change: dict) -> None:
        """A save happened (``{"version", "app", "screen", "action"}``): tell the stream,
        push the app to every connected node."""
        self.hub.emit("registry_changed", None, None, change)
        for node in list(self.hub.link.nodes):
            self.hub._background(self.push(node, [change["app"]]))

    def node_up(self, node: str, version: str | None) -> None:
        self.versions[node] = version
        self._resyncs.pop(node, None)
        if version != self.store.version:
            log.info("node=%s registry %s, coordinator's %s: sending every app", node,
                     (version or "none")[:12], self.store.version[:12])
            self.hub._background(self.push(node, None))

    def applied(self, node: str, body: RegistryApplied) -> None:
        self.versions[node] = body.version
        if body.version == self.store.version:
            self._resyncs.pop(node, None)
        if node in self.hub.node_rows:
            self.hub.node_rows[node]["registry_version"] = body.version
        if body.error:
            log.error("node=%s could not apply registry app %s: %s", node, body.app, body.error)
        self.hub.emit("registry_applied", node, None,
                      {"app": body.app, "version": body.version, "error": body.error,
                       "current": body.version == self.store.version})

    async def push(self, node: str, apps: list[str] | None) -> int:
        """Send ``apps`` (None: all) to ``node``; returns how many were sent."""
        lock = self._locks.setdefault(node, asyncio.Lock())
        sent = 0
        async with lock:
            keys = sorted(self.store.registry.apps) if apps is None else apps
            for app in keys:
                if app not in self.store.registry.apps:
                    continue
                try:
                    raw, files = await asyncio.to_thread(self.store.app_payload, app)
                    await self.hub.link.send(node, RegistryPush(
                        version=self.store.version, app=app, app_json=raw, files=files,
                        apps=sorted(self.store.registry.apps)))
                    sent += 1
                except (DeliveryError, ProtocolError, OSError) as exc:
                    # ProtocolError: over the message size limit (names the sizes); a node
                    # that missed it is brought up to date when it reconnects.
                    log.error("node=%s registry app %s not pushed: %s", node, app, exc)
                    self.hub.emit("registry_push_failed", node, None,
                                  {"app": app, "error": str(exc)})
        if sent and node not in self._verifying:
            self._verifying.add(node)
            self.hub._background(self._verify(node))
        return sent

    async def _verify(self, node: str) -> None:
        """Resend everything to a connected node that did not reach our version in time."""
        try:
            await asyncio.sleep(self.verify_after_s)
        finally:
            self._verifying.discard(node)
        if node not in self.hub.link.nodes or self.versions.get(node) == self.store.version:
            return
        tries = self._resyncs[node] = self._resyncs.get(node, 0) + 1
        if tries > MAX_RESYNCS:
            log.error("node=%s still at registry %s after %d full pushes; waiting for its "
                      "next hello", node, (self.versions.get(node) or "none")[:12], MAX_RESYNCS)
            return
        log.warning("node=%s registry %s, expected %s: sending every app again", node,
                    (self.versions.get(node) or "none")[:12], self.store.version[:12])
        await self.push(node, None)
