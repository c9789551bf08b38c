"""One virtual phone: what a USB phone is to the adb server, on a loopback TCP port.

Owns the phone's identity (serial, properties, screen size), its UI (``PhoneUI``), its
filesystem, the input log, and its listener with every live adb connection. Faults
(`vphone unplug`, `vphone slow`) are applied here; its cost profile (virtual.profile) by the
shell it starts and the connections it serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from virtual.adbd import AdbConnection, AdbStream, ServiceHandler
from virtual.commands import IME_PACKAGE, PhoneCommands
from virtual.fs import VirtualFS
from virtual.packages import DEFAULT_ABILIST, PackageManager
from virtual.profile import INSTANT, PhoneProfile, UsbBus
from virtual.scrcpy_server import ScrcpyAgents
from virtual.shell import ShellInterpreter, shell_service
from virtual.sync import serve_sync
from virtual.touch import Touchscreen
from virtual.ui import LONG_PRESS_MS, TOUCH_SLOP_PX, PhoneUI, load_apps

log = logging.getLogger(__name__)

FEATURES = "shell_v2,cmd,stat_v2"
# The log is for tests and operators; bound it so a soak run cannot eat memory.
MAX_LOG_ENTRIES = 100_000

AdbNotifier = Callable[[str], "asyncio.Future | None"]


class VirtualPhone:
    """A phone that speaks the device side of ADB on 127.0.0.1:PORT."""

    def __init__(self, *, apps: tuple[str, ...] = ("demo",), port: int = 0,
                 host: str = "127.0.0.1", width: int = 1080, height: int = 2400,
                 density: int = 420, seed: int = 0, model: str = "VirtualPhone",
                 clock: Callable[[], float] = time.time,
                 on_plug: Callable[["VirtualPhone", bool], None] | None = None,
                 profile: PhoneProfile = INSTANT, usb_bus: UsbBus | None = None) -> None:
        self.host = host
        self.port = port
        self.width, self.height, self.density = width, height, density
        self.seed = seed
        self.model = model
        self.clock = clock
        self.on_plug = on_plug
        self.profile = profile
        # The bus this phone's bytes to the adb server cross; a farm shares one among all.
        self.bus = usb_bus or UsbBus(profile.usb_bytes_per_s)
        self.ui = PhoneUI(load_apps(list(apps)), width=width, height=height, density=density,
                          seed=seed, clock=clock)
        self.ui.install_package(IME_PACKAGE, "ADB Keyboard")
        # A popup the phone brings up by itself goes into the input log too: it explains why
        # the inputs after it did something else.
        self.ui.on_popup = lambda name, cause: self.log_input("popup", name=name, **{cause: True})
        self.uiautomator = True  # `vphone uiautomator off`: answers like a phone without it
        self.fs = VirtualFS(clock)
        self.gallery: list[str] = []  # what the media scanner indexed (`am broadcast`), newest last
        self.commands = PhoneCommands(self)
        self.input_log: list[dict] = []
        self.touch = Touchscreen(clock, TOUCH_SLOP_PX, LONG_PRESS_MS)  # input motionevent
        self.props: dict[str, str] = {}
        # `pm`: installed packages with versions and install sessions; the UI follows.
        self.packages = PackageManager(self.props, 1000 + seed % 1000,
                                       on_install=self.ui.install_package,
                                       on_uninstall=self.ui.uninstall_package)
        for package in self.ui.packages():
            self.packages.preset(package, system=self.ui.is_system(package))
        self.size_override: tuple[int, int] | None = None
        self.clipboard = ""
        self.agents = ScrcpyAgents(self)  # the scrcpy servers `app_process` starts
        self.slow_ms = 0
        self.settings: dict[str, dict[str, str]] = {
            "system": {"screen_brightness": "102", "screen_off_timeout": "600000",
                       "font_scale": "1.0"},
            "global": {"adb_enabled": "1", "airplane_mode_on": "0", "wifi_on": "1",
                       "stay_on_while_plugged_in": "7"},
            "secure": {"default_input_method": "com.android.inputmethod.latin/.LatinIME",
                       "android_id": f"{seed:016x}"},
        }
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[AdbConnection] = set()
        self._tasks: set[asyncio.Task] = set()
        self.plugged = False

    @property
    def serial(self) -> str:
        return f"{self.host}:{self.port}"

    def _fill_props(self) -> None:
        self.props.update({
            "ro.product.model": self.model, "ro.product.name": "vphone",
            "ro.product.device": "vphone", "ro.product.brand": "phonefarm",
            "ro.product.manufacturer": "phonefarm", "ro.product.cpu.abi": DEFAULT_ABILIST.split(",")[0],
            "ro.product.cpu.abilist": DEFAULT_ABILIST,
            "ro.serialno": f"VPHONE{self.port:05d}", "ro.build.version.sdk": "30",
            "ro.build.version.release": "11", "ro.build.type": "user",
            "ro.build.fingerprint": "phonefarm/vphone/vphone:11/RVP1/1:user/release-keys",
            "ro.sf.lcd_density": str(self.density), "sys.boot_completed": "1",
            "persist.sys.timezone": "UTC", "persist.sys.locale": "en-US",
        })

    # --- ServiceHost -----------------------------------------------------------------------
    def banner(self) -> bytes:
        return (f"device::ro.product.name=vphone;ro.product.model={self.model};"
                f"ro.product.device=vphone;features={FEATURES}").encode()

    def open_service(self, service: str) -> ServiceHandler | None:
        if service.startswith("localabstract:"):  # ServiceRefused unless a server listens
            return self.agents.connect(service[len("localabstract:"):])
        if service.startswith("sync:"):
            async def sync_handler(stream: AdbStream) -> None:
                await serve_sync(stream, self.fs, self.serial)
            return sync_handler
        return shell_service(service, self._new_shell)

    def _new_shell(self) -> ShellInterpreter:
        return ShellInterpreter(self.commands.lookup, self.fs,
                                start_cost=self.profile.start_cost)

    async def reply_delay(self) -> None:
        if self.slow_ms:
            await asyncio.sleep(self.slow_ms / 1000)

    # --- input log -------------------------------------------------------------------------
    def log_input(self, kind: str, **fields) -> None:
        entry = {"ts": round(self.clock(), 6), "kind": kind, **fields}
        self.input_log.append(entry)
        if len(self.input_log) > MAX_LOG_ENTRIES:
            del self.input_log[: len(self.input_log) - MAX_LOG_ENTRIES]

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._fill_props()
        self.plugged = True
        log.info("phone=%s listening", self.serial)

    async def stop(self) -> None:
        self.agents.kill_all()
        for task in list(self._tasks):
            task.cancel()
        await self._unlisten()
        self.plugged = False

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            conn.abort()
        self._connections.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = AdbConnection(self, reader, writer)
        self._connections.add(conn)
        try:
            await conn.serve()
        finally:
            self._connections.discard(conn)

    def schedule_unplug(self, seconds: float) -> None:
        """Pull the cable shortly after the current reply is delivered, for ``seconds``."""
        task = asyncio.get_running_loop().create_task(self._unplug(seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unplug(self, seconds: float) -> None:
        await asyncio.sleep(0.2)
        log.info("phone=%s unplugged for %.1fs", self.serial, seconds)
        self.plugged = False
        self.log_input("unplug", seconds=seconds)
        self.agents.kill_all()  # the server's sockets go with the cable
        await self._unlisten()
        if self.on_plug:
            self.on_plug(self, False)
        await asyncio.sleep(seconds)
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.plugged = True
        log.info("phone=%s plugged in again", self.serial)
        if self.on_plug:
            self.on_plug(self, True)
