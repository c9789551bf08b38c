"""The device watcher: USB (or TCP) phones appearing and vanishing, from the adb server.

Owns one background thread that follows adbutils' ``track_devices`` and reports every change
as ``on_change(serial, state)`` with state ``device`` (usable), ``offline``/``unauthorized``
(present but not usable) or ``absent`` (gone). When the adb server restarts, the watcher
reconnects with back-off, reports every phone that did not come back as absent and every
phone the new server lists with its state again, even one it already knew in that state: a
phone whose commands failed while no server answered was paused by its actor, and only a
``device`` report resumes it (the watcher never saw it leave if it was back in time).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import adbutils

from actors.node.device.adb_server import AdbServer

log = logging.getLogger(__name__)


class DeviceWatcher:
    """Follows the adb server's device list in a daemon thread."""

    def __init__(self, adb: AdbServer, on_change: Callable[[str, str], None]) -> None:
        self.adb = adb
        self.on_change = on_change
        self.known: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-watcher", daemon=True)

    def start(self) -> "DeviceWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _report(self, serial: str, state: str, *, again: bool = False) -> None:
        """Tell ``on_change`` of a new state; ``again``: also of a state already known."""
        if self._stop.is_set() or (not again and self.known.get(serial, "absent") == state):
            return
        if state == "absent":
            self.known.pop(serial, None)
        else:
            self.known[serial] = state
        try:
            self.on_change(serial, state)
        except Exception:
            log.exception("device watcher callback failed for %s", serial)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._reconcile()
                client = adbutils.AdbClient(host=self.adb.host, port=self.adb.port)
                for event in client.track_devices():
                    if self._stop.is_set():
                        return
                    backoff = 0.2
                    self._report(event.serial, event.status if event.present else "absent")
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("adb server %s:%d lost (%s); watching again in %.1fs",
                            self.adb.host, self.adb.port, exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _reconcile(self) -> None:
        """After a (re)connect: phones we knew that the server no longer lists are gone."""
        listing = self.adb.host_query("host:devices")
        present = {line.split("\t")[0]: line.split("\t")[1]
                   for line in listing.splitlines() if "\t" in line}
        for serial in list(self.known):
            if serial not in present:
                self._report(serial, "absent")
        for serial, state in present.items():
            self._report(serial, state, again=True)

    def reaffirm(self, serials: list[str]) -> None:
        """Report those of ``serials`` the server last listed as usable again: the node
        calls it for phones its actors paused on a failed command (a transient "device not
        found") that the server never listed as gone, so no change would resume them."""
        for serial in serials:
            if self.known.get(serial) == "device":
                self._report(serial, "device", again=True)
