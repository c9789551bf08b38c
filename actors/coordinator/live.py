"""The coordinator's side of the live wall: who watches which phone, and their frames.

Each console page (a `LiveClient`, one per WebSocket of ``/api/live``) says which phones it
shows and how wide; `LiveWatchers` keeps, per phone, the widest width and the highest rate
any page wants, and tells the phone's node (``tell(serial, width, fps)``, width 0: nobody
watches any more) whenever that changes. Frames from the nodes go to every page watching
the phone; a page keeps only the newest frame per phone until its socket takes it, so a slow
browser skips frames and never makes anything queue.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Callable

Want = tuple[int, float]  # (width in pixels, frames a second)


@dataclass(frozen=True)
class Frame:
    """One live frame of a phone: a JPEG with the full frame's size and its time (epoch)."""

    serial: str
    jpeg: bytes
    ts: float
    width: int
    height: int


class LiveClient:
    """One watching page: what it watches and the newest frame of each, until sent."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.watch: dict[str, Want] = {}
        self._pending: dict[str, Frame] = {}
        self._wake = asyncio.Event()
        self.skipped = 0
        self.closed = False

    def offer(self, frame: Frame) -> None:
        if frame.serial in self._pending:
            self.skipped += 1  # the page has not taken the last one yet: it gets this one
        self._pending[frame.serial] = frame
        self._wake.set()

    async def next(self, timeout: float | None = None) -> list[Frame]:
        """The newest frame of every phone that has one waiting ([] on timeout or close)."""
        if not self._pending and not self.closed:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return []
        frames = list(self._pending.values())
        self._pending.clear()
        return frames

    def close(self) -> None:
        self.closed = True
        self._wake.set()


class LiveWatchers:
    """Owns every page's watch set, the per-phone aggregate the nodes are told, and the
    fan-out of frames to the pages."""

    def __init__(self, tell: Callable[[str, int, float], None]) -> None:
        self._tell = tell
        self.clients: dict[int, LiveClient] = {}
        self._wanted: dict[str, Want] = {}

    def add(self) -> LiveClient:
        client = LiveClient()
        self.clients[client.id] = client
        return client

    def set_watch(self, client: LiveClient, watch: dict[str, Want]) -> None:
        """Replace what ``client`` watches; the nodes hear about every phone whose wanted
        width or rate changed (a phone nobody watches any more: width 0)."""
        before = set(client.watch)
        client.watch = dict(watch)
        for serial in before - set(watch):
            client._pending.pop(serial, None)
        self._update(before | set(watch))

    def remove(self, client: LiveClient) -> None:
        if self.clients.pop(client.id, None) is None:
            return
        client.close()
        serials = set(client.watch)
        client.watch = {}
        self._update(serials)

    def wanted(self) -> dict[str, Want]:
        """serial -> (widest width, highest rate) of every watched phone."""
        return dict(self._wanted)

    def watchers(self, serial: str) -> int:
        return sum(serial in c.watch for c in self.clients.values())

    def renew(self, serials: set[str] | None = None) -> None:
        """Tell the nodes again what is watched (their watches have a lease; a node that
        reconnected forgot them)."""
        for serial, (width, fps) in self._wanted.items():
            if serials is None or serial in serials:
                self._tell(serial, width, fps)

    def frame(self, frame: Frame) -> None:
        for client in self.clients.values():
            if frame.serial in client.watch:
                client.offer(frame)

    def _update(self, serials: set[str]) -> None:
        for serial in sorted(serials):
            wants = [c.watch[serial] for c in self.clients.values() if serial in c.watch]
            new: Want | None = ((max(w for w, _ in wants), max(f for _, f in wants))
                                if wants else None)
            if new == self._wanted.get(serial):
                continue
            if new is None:
                del self._wanted[serial]
                self._tell(serial, 0, 0.0)
            else:
                self._wanted[serial] = new
                self._tell(serial, *new)
