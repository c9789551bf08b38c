"""The public redirect's click counting (``GET /l/{code}``, actors.control.links).

Anyone may request a link's public address, as often as they like, so what one caller can
make the farm store is bounded here, before the database:

- per remote address and link, at most `PER_ADDRESS` clicks are counted in `WINDOW_S`
  seconds (an IPv6 address counts by its /64, what one host usually holds); more are
  redirected and not counted;
- per link and UTC day at most `MAX_SOURCES` sources get a row of their own; a click from
  another source counts under `OTHER` (`LinkStore.add_clicks` applies the same cap to the
  rows already stored);
- clicks are summed in memory and written every `FLUSH_S` seconds (and on close) as one
  writer job, so a burst of clicks costs one write, not one each; the redirect never waits
  for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

FLUSH_S = 2.0            # how often the counted clicks are written
PER_ADDRESS = 10         # clicks counted per address and link in WINDOW_S
WINDOW_S = 60.0
MAX_SOURCES = 20         # sources with a row of their own, per link and UTC day
OTHER = "other"          # where the clicks of further sources are counted
MAX_TRACKED = 100_000    # (address, link) pairs remembered at once; bounds the memory

# (link_id, day) -> {source: clicks}
Pending = dict[tuple[int, str], dict[str, int]]


def click_address(peer: str | None, forwarded_for: str | None) -> str:
    """Whom a click is counted against: the connection's peer address, or, when the peer is
    a loopback address (a reverse proxy on this host), the last entry of its
    ``X-Forwarded-For`` (the address the proxy itself saw; earlier entries are whatever the
    client sent). An IPv6 address counts by its /64."""
    address = peer or ""
    if forwarded_for and _loopback(address):
        last = forwarded_for.rsplit(",", 1)[-1].strip()
        if _ip(last) is not None:
            address = last
    ip = _ip(address)
    if ip is None:
        return address[:64] or "unknown"
    if ip.version == 6:
        mapped = ip.ipv4_mapped  # type: ignore[union-attr]
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _loopback(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


class ClickCounter:
    """Owns the public redirect's clicks between the request and the database: the
    per-address windows (address, link -> start, clicks counted), the clicks not yet
    written (per link, day and source) and the task that writes them every ``flush_s``
    seconds through ``store_of()`` (a LinkStore). See the module docstring for the limits."""

    def __init__(self, store_of: Callable[[], Any], *, flush_s: float = FLUSH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store_of = store_of
        self._flush_s = flush_s
        self._clock = clock
        self._pending: Pending = {}
        self._windows: dict[tuple[str, int], list[float]] = {}  # [start, counted]
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._full_logged = False

    def click(self, link_id: int, day: str, source: str, address: str) -> bool:
        """Count one click of ``address`` on the link (False: over its limit, not counted).
        Never waits: the click is written by the next flush."""
        if not self._admit(address, link_id):
            return False
        by_source = self._pending.setdefault((link_id, day), {})
        if source not in by_source and source != OTHER and len(
                by_source.keys() - {OTHER}) >= MAX_SOURCES:
            source = OTHER
        by_source[source] = by_source.get(source, 0) + 1
        return True

    def _admit(self, address: str, link_id: int) -> bool:
        now = self._clock()
        key = (address, link_id)
        window = self._windows.get(key)
        if window is not None and now - window[0] < WINDOW_S:
            if window[1] >= PER_ADDRESS:
                return False
            window[1] += 1
            return True
        if window is None and len(self._windows) >= MAX_TRACKED:
            self._forget_old(now)
            if len(self._windows) >= MAX_TRACKED:
                # Too many callers at once: count none of the new ones rather than let
                # the table grow without bound (the redirect still answers).
                if not self._full_logged:
                    log.warning("link clicks: %d addresses in the last %.0f s; clicks of "
                                "new ones are not counted", len(self._windows), WINDOW_S)
                    self._full_logged = True
                return False
        self._windows[key] = [now, 1]
        return True

    def _forget_old(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now - w[0] >= WINDOW_S]:
            del self._windows[key]
        if len(self._windows) < MAX_TRACKED:
            self._full_logged = False

    def pending(self) -> int:
        """Clicks counted and not yet written."""
        return sum(sum(by_source.values()) for by_source in self._pending.values())

    async def flush(self) -> None:
        """Write the clicks counted so far as one writer job. When the write fails they are
        kept for the next flush."""
        async with self._lock:
            self._forget_old(self._clock())
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                await self._store_of().add_clicks(batch)
            except asyncio.CancelledError:
                self._merge_back(batch)
                raise
            except Exception:  # noqa: BLE001 - the database may be away; try again later
                log.warning("link clicks: writing %d clicks failed; kept for the next try",
                            sum(sum(s.values()) for s in batch.values()), exc_info=True)
                self._merge_back(batch)

    def _merge_back(self, batch: Pending) -> None:
        for key, by_source in batch.items():
            into = self._pending.setdefault(key, {})
            for source, n in by_source.items():
                into[source] = into.get(source, 0) + n

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="link-clicks")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()

    async def close(self) -> None:
        """Stop the periodic flush and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
