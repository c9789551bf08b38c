"""The rack actor: supervisor of every phone actor on one node.

Owns the set of phone actors and their ``PhoneRecord``s. Device watcher reports become
start / pause / resume; a crashed phone actor is restarted with exponential back-off and an
intensity limit (``max_restarts`` within ``window_s``, as OTP supervisors do), after which the
phone is marked failed and reported. A ``PhoneDirectory`` gives the node's event loop
lock-free reads of which actor serves which serial.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import pykka

from actors.node.bridge import BridgedActor, Call, tell_quietly
from actors.node.capture import CaptureScheduler
from actors.node.device.adb_server import AdbServer
from actors.node.device.agent import AgentConfig
from actors.node.device.driver import DeviceDriver
from actors.node.phone import PhoneActor, PhoneRecord, Publish

log = logging.getLogger(__name__)


# A stopping rack waits this long, in all, for its phone actors (which it stops together).
PHONE_STOP_S = 5.0


class PhoneDirectory:
    """serial -> running phone actor (and its device driver), readable from any thread."""

    def __init__(self) -> None:
        self._refs: dict[str, pykka.ActorRef] = {}
        self._records: dict[str, PhoneRecord] = {}
        self._drivers: dict[str, DeviceDriver] = {}
        self._devices_closed: str | None = None
        self._lock = threading.Lock()

    def get(self, serial: str) -> pykka.ActorRef | None:
        """The live actor for ``serial``; None while it is dead or being restarted."""
        ref = self._refs.get(serial)
        return ref if ref is not None and ref.is_alive() else None

    def record(self, serial: str) -> PhoneRecord | None:
        return self._records.get(serial)

    def driver(self, serial: str) -> DeviceDriver | None:
        """The device driver last registered for ``serial`` (its actor may be dead)."""
        return self._drivers.get(serial)

    def serials(self) -> list[str]:
        return sorted(self._records)

    def views(self) -> list[dict]:
        with self._lock:
            return [self._records[s].view() for s in sorted(self._records)]

    def put(self, serial: str, ref: pykka.ActorRef | None, record: PhoneRecord,
            driver: DeviceDriver | None = None) -> None:
        closed = None
        with self._lock:
            self._records[serial] = record
            if ref is None:
                self._refs.pop(serial, None)
            else:
                self._refs[serial] = ref
            if driver is not None:
                self._drivers[serial] = driver
                closed = self._devices_closed
        if closed is not None:
            driver.close(closed)  # an actor (re)started while the node stops: no device work

    def close_devices(self, reason: str) -> None:
        """Cut every phone's adb connections (thread-safe): a phone actor blocked in a
        device call is freed at once and its queued device work fails fast, so stopping it
        (and the playbacks waiting on it) never waits on a phone that does not answer."""
        with self._lock:
            self._devices_closed = reason
            drivers = list(self._drivers.values())
        for driver in drivers:
            driver.close(reason)


class RackActor(BridgedActor):
    """Starts, pauses, resumes and restarts the phone actors of one node."""

    def __init__(self, adb: AdbServer, publish: Publish, directory: PhoneDirectory,
                 max_restarts: int = 5, window_s: float = 60.0, backoff_s: float = 0.2,
                 debug_actions: bool = False, clock: Callable[[], float] = time.time,
                 matcher: pykka.ActorRef | None = None, agent: AgentConfig | None = None) -> None:
        super().__init__()
        self.matcher = matcher
        self.agent = agent  # how phones are driven: scrcpy agent or shell (None: shell)
        self.adb = adb
        self.publish = publish
        self.directory = directory
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.debug_actions = debug_actions
        self.clock = clock
        self.restarts: dict[str, collections.deque[float]] = {}
        self.captures = CaptureScheduler(slots=2)

    def _event(self, event: str, serial: str, data: dict | None = None) -> None:
        try:
            self.publish(event, serial, data or {}, True)
        except Exception:
            log.exception("rack could not publish %s for %s", event, serial)

    def _start_actor(self, record: PhoneRecord) -> None:
        me = self.actor_ref

        def on_crash(serial: str, exc: BaseException) -> None:
            try:
                me.tell(Call("phone_crashed", (serial, repr(exc))))
            except pykka.ActorDeadError:
                pass

        old = self.directory.driver(record.serial)
        if old is not None:  # its actor is gone; its scrcpy agent must not outlive it
            old.close("phone actor restarted")
        driver = DeviceDriver(record.serial, self.adb, agent=self.agent,
                              on_io=lambda io, reason: self._io_changed(record, io, reason))
        ref = PhoneActor.start(record, driver, self.publish,
                               debug_actions=self.debug_actions, on_crash=on_crash,
                               captures=self.captures, matcher=self.matcher)
        self.directory.put(record.serial, ref, record, driver)
        driver.start_agent()

    def _io_changed(self, record: PhoneRecord, io: str, reason: str | None) -> None:
        """From any thread (the agent's): the phone's actions now take ``io``'s path."""
        record.io, record.io_reason = io, reason
        self._event("phone_io", record.serial, {"io": io, "io_reason": reason})

    # --- watcher events --------------------------------------------------------------------
    def device_changed(self, serial: str, state: str) -> None:
        record = self.directory.record(serial)
        ref = self.directory.get(serial)
        if state == "device":
            if record is None:
                record = PhoneRecord(serial)
                self._start_actor(record)
                self._event("phone_up", serial, record.view())
            elif record.state == "failed":
                # Re-plugging a failed phone is the operator's way to give it another chance.
                self.restarts.pop(serial, None)
                record.state = "online"
                self._start_actor(record)
                self._event("phone_up", serial, record.view())
            elif ref is not None:
                ref.tell(Call("resume"))
            else:
                record.state = "online"
                self._start_actor(record)
                self._event("phone_resumed", serial, {})
        elif record is not None and ref is not None:
            ref.tell(Call("pause", (f"device {state}",)))
        elif record is not None and record.state == "online":
            record.state = "paused"
            self._event("phone_paused", serial, {"reason": f"device {state}"})

    # --- supervision -----------------------------------------------------------------------
    def phone_crashed(self, serial: str, reason: str) -> None:
        record = self.directory.record(serial)
        if record is None:
            return
        self.directory.put(serial, None, record)
        now = self.clock()
        history = self.restarts.setdefault(serial, collections.deque())
        while history and now - history[0] > self.window_s:
            history.popleft()
        if len(history) >= self.max_restarts:
            record.state = "failed"
            log.error("phone=%s crashed %d times within %.0fs: marked failed (%s)", serial,
                      len(history) + 1, self.window_s, reason)
            self._event("phone_failed", serial, {"reason": reason, "crashes": len(history) + 1})
            return
        history.append(now)
        delay = min(self.backoff_s * (2 ** (len(history) - 1)), 10.0)
        log.warning("phone=%s actor crashed (%s); restart %d in %.1fs", serial, reason,
                    len(history), delay)
        self._event("phone_crashed", serial, {"reason": reason, "restart_in_s": delay})
        me = self.actor_ref
        timer = threading.Timer(delay, lambda: tell_quietly(me, Call("restart_phone", (serial,))))
        timer.daemon = True
        timer.start()

    def restart_phone(self, serial: str) -> None:
        record = self.directory.record(serial)
        if record is None or record.state == "failed" or self.directory.get(serial) is not None:
            return
        self._start_actor(record)
        self._event("phone_restarted", serial, record.view())

    def on_stop(self) -> None:
        super().on_stop()
        self.captures.stop()
        # Device work still queued in the phone actors is of no use any more, and a phone
        # that does not answer would hold its actor's stop (pykka runs every message queued
        # before the stop first): cut the devices, then stop all phones together.
        self.directory.close_devices("node stopping")
        stopping: dict[str, pykka.Future] = {}
        for serial in self.directory.serials():
            ref = self.directory.get(serial)
            if ref is not None:
                stopping[serial] = ref.stop(block=False)
        deadline = time.monotonic() + PHONE_STOP_S
        for serial, future in stopping.items():
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.ActorDeadError:
                pass
            except pykka.Timeout:
                log.error("phone=%s actor did not stop within %.0fs; left behind", serial,
                          PHONE_STOP_S)

