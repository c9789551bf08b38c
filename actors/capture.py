"""The node's capture scheduler: who takes the screenshot that follows an action, and when.

Owns the node-wide limit on post-action screenshots in flight. Sixty phones pulling a 10 MB
frame at once would make every next action wait behind the transfers, and polling for a
free slot from sixty actor threads would starve the event loop of the GIL. So actors only
*request* a capture (coalesced per phone); one scheduler thread hands out slots in request
order by telling the actor ``capture_now``; the actor gives the slot back when done.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class CaptureScheduler:
    """Hands out ``slots`` capture permits to phones in the order they asked."""

    def __init__(self, slots: int = 2) -> None:
        self._slots = threading.Semaphore(slots)
        self._queue: collections.OrderedDict[str, Callable[[], None]] = collections.OrderedDict()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="capture-scheduler", daemon=True)
        self._thread.start()

    def request(self, serial: str, grant: Callable[[], None]) -> None:
        """Ask for a slot; ``grant()`` is called (from the scheduler thread) when it is free.
        A phone already waiting keeps its place: one capture covers all its actions."""
        with self._cond:
            if serial not in self._queue:
                self._queue[serial] = grant
                self._cond.notify()

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
                if self._stopped:
                    return
                _, grant = self._queue.popitem(last=False)
            try:
                grant()
            except Exception:  # the actor is gone: its slot comes back here
                self._slots.release()
