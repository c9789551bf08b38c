"""The node's capture scheduler: who takes the screenshot that follows an action, and when.

Owns the node-wide limit on post-action screenshots in flight. Sixty phones pulling a 10 MB
frame at once would make every next action wait behind the transfers, and polling for a
free slot from sixty actor threads would starve the event loop of the GIL. So actors only
*request* a capture (coalesced per phone); one scheduler thread hands out slots in request
order by telling the actor ``capture_now``; the actor gives the slot back when done.
Captures also wait for the node to be quiet: while actions keep starting (a broadcast
fanning out to sixty phones) no frame is pulled, so every phone gets its tap before any
phone's frame competes with it; a capture waits ``max_delay_s`` at most. A real phone
needs that moment anyway: a frame taken right after a tap shows the old screen.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class CaptureScheduler:
    """Hands out ``slots`` capture permits to phones in the order they asked."""

    def __init__(self, slots: int = 2, settle_s: float = 0.03, max_delay_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._last_action = float("-inf")
        self._slots = threading.Semaphore(slots)
        self._queue: collections.OrderedDict[str, tuple[Callable[[], None], float]] = \
            collections.OrderedDict()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="capture-scheduler", daemon=True)
        self._thread.start()

    def request(self, serial: str, grant: Callable[[], None]) -> None:
        """Ask for a slot; ``grant()`` is called (from the scheduler thread) when it is free.
        A phone already waiting keeps its place: one capture covers all its actions."""
        with self._cond:
            if serial not in self._queue:
                self._queue[serial] = (grant, self._clock())
                self._cond.notify()

    def action_started(self) -> None:
        """A phone on this node starts an action: frames wait until actions pause."""
        self._last_action = self._clock()

    def release(self) -> None:
        self._slots.release()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            self._slots.acquire()
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                while not self._stopped:
                    now = self._clock()
                    quiet_for = now - self._last_action
                    oldest = next(iter(self._queue.values()))[1]
                    wait = min(self.settle_s - quiet_for, oldest + self.max_delay_s - now)
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, (grant, _) = self._queue.popitem(last=False)
            try:
                grant()
            except Exception:  # the actor is gone: its slot comes back here
                self._slots.release()
