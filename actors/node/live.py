"""The node's live frames: what a console page watching a phone sees at video rate.

The coordinator says which phones some page watches (`protocol.messages.LiveWatch`: width,
rate, lease); `LiveFrames` keeps one sender thread per watched phone. On the agent path it
takes the newest decoded frame from the phone's `FrameStore` (only a frame newer than the
last one sent), at most ``fps`` a second; on the shell path a screencap every
`SHELL_INTERVAL_S`. A frame showing the same picture as the last one sent is not sent (the
video stream repeats a static screen's frame), except once `SETTLED_S` after a change (the
settled picture; it also replaces a frame the link dropped): a static screen sends nothing. Frames
are scaled to the width asked, JPEG-encoded in that thread (never on the event loop) and
sent as `LiveFrame` on the live path (not journaled; a lost frame is replaced by the next).
Sending waits for the link: while it lags, the frames that arrive meanwhile are skipped,
nothing queues. A watch ends when its lease runs out without renewal, on width 0, or on
`stop_all`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import cv2
import numpy as np

from actors.node.phone import encode_thumbnail
from protocol.errors import DeviceError
from protocol.messages import LiveFrame, LiveWatch

log = logging.getLogger(__name__)

SHELL_INTERVAL_S = 1.0  # screencap is a full-frame transfer: the shell path's live rate
WAIT_SLICE_S = 0.5      # a sender looks at its watch (stopped? renewed?) at least this often
RETRY_S = 0.5           # after a failed send or a phone without a driver
MAX_FPS = 60.0
SETTLED_S = 0.3  # a screen unchanged this long after a send is sent once more, then no more
NOISE_LEVELS = 24  # per channel, 0..255: more is a change of the screen, not codec noise


def scaled(frame: np.ndarray, width: int) -> np.ndarray:
    h, w = frame.shape[:2]
    return cv2.resize(frame, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """The same screen, up to codec noise: no pixel moved by more than `NOISE_LEVELS`.
    (A repeated H.264 frame decodes a little differently each time; a caret, a toast or a
    scrolled line changes pixels by far more.)"""
    if a.shape != b.shape:
        return False
    return not (cv2.absdiff(a, b) > NOISE_LEVELS).any()


class _Watch:
    """One watched phone: what the coordinator asked for, and the thread that sends."""

    def __init__(self, serial: str, width: int, fps: float, expires: float) -> None:
        self.serial = serial
        self.width = width
        self.fps = fps
        self.expires = expires
        self.stopped = threading.Event()
        self.sent = 0
        self.thread: threading.Thread | None = None


class LiveFrames:
    """Owns the node's watched phones and their sender threads.

    ``driver_of(serial)`` gives the phone's `DeviceDriver` (or None); ``send(frame)`` sends a
    `LiveFrame` and returns once it is out (raises when it could not be sent)."""

    def __init__(self, driver_of: Callable[[str], object | None],
                 send: Callable[[LiveFrame], None],
                 clock: Callable[[], float] = time.monotonic,
                 shell_interval_s: float = SHELL_INTERVAL_S) -> None:
        self._driver_of = driver_of
        self._send = send
        self._clock = clock
        self.shell_interval_s = shell_interval_s
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}

    def watching(self) -> dict[str, tuple[int, float]]:
        """serial -> (width, fps) of every live watch."""
        with self._lock:
            return {s: (w.width, w.fps) for s, w in self._watches.items()
                    if not w.stopped.is_set()}

    def watch(self, msg: LiveWatch) -> None:
        """Start, change, renew or (width 0) stop the watch of ``msg.serial``."""
        with self._lock:
            current = self._watches.get(msg.serial)
            if msg.width <= 0:
                if current is not None:
                    current.stopped.set()
                    del self._watches[msg.serial]
                    log.info("phone=%s live frames stopped (%d sent)", msg.serial, current.sent)
                return
            fps = min(max(msg.fps, 0.1), MAX_FPS)
            expires = self._clock() + max(msg.lease_s, 1.0)
            if current is not None and not current.stopped.is_set():
                current.width, current.fps, current.expires = msg.width, fps, expires
                return
            watch = _Watch(msg.serial, msg.width, fps, expires)
            self._watches[msg.serial] = watch
            watch.thread = threading.Thread(target=self._run, args=(watch,), daemon=True,
                                            name=f"live-{msg.serial}")
        log.info("phone=%s live frames at %d px, %.0f/s", msg.serial, msg.width, fps)
        watch.thread.start()

    def stop_all(self) -> None:
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for watch in watches:
            watch.stopped.set()

    def _run(self, watch: _Watch) -> None:
        last_at = float("-inf")
        last_small: np.ndarray | None = None
        sent_at, settled = float("-inf"), False
        next_due = 0.0
        try:
            while not watch.stopped.is_set():
                if self._clock() > watch.expires:
                    log.info("phone=%s live frames: lease ran out", watch.serial)
                    return
                pause = next_due - self._clock()
                if pause > 0 and watch.stopped.wait(min(pause, WAIT_SLICE_S)):
                    return
                if pause > WAIT_SLICE_S:
                    continue
                got = self._next_frame(watch, last_at)
                if got is None:
                    continue
                frame, at, agent = got
                last_at = at
                small = scaled(frame, min(watch.width, frame.shape[1]))
                if last_small is not None and same_picture(small, last_small) and (
                        settled or self._clock() - sent_at < SETTLED_S):
                    # A static screen: the video stream repeats its frame (re-encoded: a few
                    # levels of codec noise), screencap shows the same: nothing new to send.
                    next_due = self._clock() + (1.0 / watch.fps if agent
                                                else self.shell_interval_s)
                    continue
                # A changed screen, or the one that just stopped changing sent once more: the
                # codec's sharper picture, and a frame the link dropped (Pair1 drops a message
                # when its queue is full) is not the last word on the screen.
                settled = last_small is not None and same_picture(small, last_small)
                jpeg = encode_thumbnail(small, small.shape[1])
                h, w = frame.shape[:2]
                epoch = time.time() - (self._clock() - at)
                try:
                    self._send(LiveFrame(serial=watch.serial, jpeg=jpeg, ts=epoch,
                                         width=w, height=h))
                    watch.sent += 1
                    last_small, sent_at = small, self._clock()
                except Exception as exc:  # link down or slow: the next frame replaces it
                    log.info("phone=%s live frame not sent: %r", watch.serial, exc)
                    last_at = float("-inf")  # the current frame again, even if it stays
                    watch.stopped.wait(RETRY_S)
                interval = 1.0 / watch.fps if agent else max(1.0 / watch.fps,
                                                              self.shell_interval_s)
                next_due = self._clock() + interval
        finally:
            with self._lock:
                if self._watches.get(watch.serial) is watch:
                    del self._watches[watch.serial]

    def _next_frame(self, watch: _Watch, after: float
                    ) -> tuple[np.ndarray, float, bool] | None:
        """The phone's next frame newer than ``after`` (agent: from its video stream, waiting
        `WAIT_SLICE_S` at most; shell: a screencap now), with its arrival time and whether it
        came from the agent; None when there is none yet."""
        driver = self._driver_of(watch.serial)
        if driver is None or getattr(driver, "closed", False):
            watch.stopped.wait(RETRY_S)
            return None
        agent = driver.agent
        if agent is not None:
            got = agent.frames.wait_newer(after, WAIT_SLICE_S)
            return None if got is None else (got[0], got[1], True)
        try:
            frame = driver.screenshot()
        except DeviceError as exc:
            log.debug("phone=%s live screencap failed: %s", watch.serial, exc)
            watch.stopped.wait(RETRY_S)
            return None
        return frame, self._clock(), False
