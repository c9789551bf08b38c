"""A rack of virtual phones in one process, plugged into a real adb server.

Owns the phones' life cycle as a USB hub would: start them, `adb connect` each (the
equivalent of plugging in), re-connect a phone when its `vphone unplug` time is over, and
disconnect them all on stop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from dataclasses import dataclass, field

from actors.node.device.adb_server import AdbServer, AdbServerError
from virtual.phone import VirtualPhone
from virtual.profile import INSTANT, PhoneProfile, UsbBus

log = logging.getLogger(__name__)


# A transport still "offline" this long after `adb connect` is dead, not mid-handshake.
OFFLINE_DEAD_S = 1.0


@dataclass
class FarmSpec:
    """How many phones of what kind, and where to plug them in."""

    phones: int = 4
    apps: tuple[str, ...] = ("demo",)
    # Phone i listens on base_port + i (its serial is 127.0.0.1:PORT); 0: random ports.
    base_port: int = 0
    # A taken port among them: random ports for all (one warning) instead of an OSError.
    random_ports_if_taken: bool = False
    seed: int = 0
    width: int = 1080
    height: int = 2400
    adb: AdbServer = field(default_factory=AdbServer)
    # What the phones' work costs in time: INSTANT for tests, REAL to predict hardware.
    profile: PhoneProfile = INSTANT


class VirtualFarm:
    """Starts, plugs in, re-plugs and stops a set of virtual phones."""

    def __init__(self, spec: FarmSpec) -> None:
        self.spec = spec
        self.phones: list[VirtualPhone] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._adb_calls = asyncio.Lock()
        # One bus for all: the farm's phones hang on one hub, as a rack's do.
        self.usb_bus = UsbBus(spec.profile.usb_bytes_per_s)

    @property
    def serials(self) -> list[str]:
        return [p.serial for p in self.phones]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        spec = self.spec
        try:
            await self._start_phones(spec.base_port)
        except OSError as exc:
            if not (spec.random_ports_if_taken and exc.errno == errno.EADDRINUSE):
                raise
            log.warning("ports %d-%d are not all free (%s): the phones get random ports",
                        spec.base_port, spec.base_port + spec.phones - 1, exc.strerror)
            await self._start_phones(0)
        await asyncio.gather(*(self.plug_in(p) for p in self.phones))

    async def _start_phones(self, base_port: int) -> None:
        """Start every phone listening, on base_port + i (0: random ports); on an error the
        phones started so far are stopped again, so none holds its port."""
        spec = self.spec
        try:
            for i in range(spec.phones):
                phone = VirtualPhone(apps=spec.apps, port=base_port + i if base_port else 0,
                                     width=spec.width, height=spec.height, seed=spec.seed + i,
                                     on_plug=self._on_plug, profile=spec.profile,
                                     usb_bus=self.usb_bus)
                await phone.start()
                self.phones.append(phone)
        except BaseException:
            for phone in self.phones:
                await phone.stop()
            self.phones = []
            raise

    async def plug_in(self, phone: VirtualPhone, timeout: float = 15.0) -> None:
        """`adb connect` the phone and wait until the adb server calls it a device."""
        adb = self.spec.adb
        deadline = time.monotonic() + timeout
        offline_since: float | None = None
        while True:
            # One connect or disconnect at a time per farm: adb 29 aborts ("failed to
            # unregister fd ... with epoll") when a transport is dropped while others are
            # being set up, which concurrent plug-ins into a fresh server did.
            async with self._adb_calls:
                try:
                    reply = await asyncio.to_thread(adb.connect_device, phone.serial)
                except AdbServerError as exc:
                    reply = str(exc)
            state = await asyncio.to_thread(adb.device_state, phone.serial)
            if state == "device":
                log.info("phone=%s plugged into adb %s:%d", phone.serial, adb.host, adb.port)
                return
            if time.monotonic() > deadline:
                raise AdbServerError(f"phone {phone.serial} not online after {timeout}s "
                                     f"(last adb reply {reply!r}, state {state})")
            if state == "offline":
                # "offline" is also every new transport's state until its handshake is done:
                # only one that stays offline is dead (adb keeps those a while; dropping it is
                # faster than waiting).
                now = time.monotonic()
                offline_since = offline_since or now
                if now - offline_since >= OFFLINE_DEAD_S:
                    async with self._adb_calls:
                        await asyncio.to_thread(adb.disconnect_device, phone.serial)
                    offline_since = None
            else:
                offline_since = None
            await asyncio.sleep(0.1)

    def _on_plug(self, phone: VirtualPhone, plugged: bool) -> None:
        adb = self.spec.adb

        async def follow() -> None:
            try:
                if plugged:
                    await self.plug_in(phone)
                else:
                    # A pulled USB cable makes the device vanish from the adb server.
                    await asyncio.to_thread(adb.disconnect_device, phone.serial)
            except Exception as exc:  # the hub keeps serving the other phones
                log.error("phone=%s re-plug failed: %s", phone.serial, exc)

        asyncio.get_running_loop().create_task(follow())

    async def stop(self) -> None:
        adb = self.spec.adb
        for phone in self.phones:
            try:
                await asyncio.to_thread(adb.disconnect_device, phone.serial)
            except (AdbServerError, OSError) as exc:
                log.warning("phone=%s disconnect failed: %s", phone.serial, exc)
            await phone.stop()

    # --- for synchronous callers (tests, benches) -------------------------------------------
    def start_in_thread(self) -> "VirtualFarm":
        """Run the farm on its own event loop thread; returns once every phone is online."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="virtual-farm", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def call(self, func, *args):
        """Run ``func(*args)`` on the farm's loop (coroutine functions are awaited)."""
        async def wrapper():
            result = func(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout=60)

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
