"""What a virtual phone's work costs in time: `instant` (the test suite) or `real` (hardware).

Owns the cost figures of a real phone on a USB 2.0 hub (``REAL``: each a named constant with
its source), which shell programs pay which start-up cost (``PhoneProfile.start_cost``), and
the USB bus one farm's phones share (``UsbBus``, a token bucket). The shell applies the start
costs (virtual.shell), the ADB transport the bus (virtual.adbd); every wait is an asyncio
sleep, since all phones of a farm share one event loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

# `adb shell input tap` on real hardware: 226 ms, almost all of it starting a Java VM for
# the `input` program (mobile-next/mobilecli PR #412: 226 ms -> 5.6 ms once input went
# through a resident on-device server; Genymobile/scrcpy issue #231: "almost 1 second" on
# an older phone; quamotion/madb issue #56: 300-400 ms).
INPUT_JVM_START_S = 0.230
# `screencap` capturing a raw frame: ~250 ms (Genymobile/scrcpy issues #112, #3345).
SCREENCAP_RAW_S = 0.250
# `screencap -p` (or a FILE.png) encodes that frame as PNG on the phone's CPU: 1.5-2 s
# more (Genymobile/scrcpy issues #112, #469).
SCREENCAP_PNG_ENCODE_S = 1.5
# Starting any `app_process` Java program: ~800 ms (Genymobile/scrcpy issue #112).
APP_PROCESS_START_S = 0.800
# One USB 2.0 bus (480 Mbit/s signalling) moves ~35 MB/s of adb bulk data in practice; every
# phone on one hub shares it: sixty phones get ~3 raw 10 MB frames per second between them.
USB2_BUS_BYTES_PER_S = 35_000_000
# What the bus lets through at once after being idle: one adb packet of the largest size
# (the hub and the host controller buffer about that much, no more).
USB_BURST_BYTES = 1024 * 1024
# The longest one transfer waits for its turn; a backlog beyond this is forgotten, so a
# phone never stalls for minutes behind a burst no real adb set-up could queue up.
USB_MAX_WAIT_S = 30.0

# Java programs started through app_process on a real phone (`input` has its own measured
# figure above; `am` and `pm` go through `cmd`, a binder call without a VM, since Android 7).
APP_PROCESS_PROGRAMS = frozenset({"app_process", "app_process32", "app_process64",
                                  "uiautomator", "monkey"})


@dataclass(frozen=True)
class PhoneProfile:
    """The time costs a virtual phone adds to what it does (all zero: ``INSTANT``)."""

    name: str
    input_s: float = 0.0
    screencap_raw_s: float = 0.0
    screencap_png_extra_s: float = 0.0
    app_process_s: float = 0.0
    # Bytes per second of the USB bus all of one farm's phones share; None: no limit.
    usb_bytes_per_s: float | None = None

    def start_cost(self, argv: list[str]) -> float:
        """Seconds the program ``argv`` takes before it does anything, as on this phone."""
        if not argv:
            return 0.0
        name, args = argv[0].rsplit("/", 1)[-1], argv[1:]
        if name == "input":
            return self.input_s
        if name == "screencap":
            # Same rule as the screencap command: `-p`, or a file named *.png, is a PNG.
            png = "-p" in args or any(a.endswith(".png") for a in args if not a.startswith("-"))
            return self.screencap_raw_s + (self.screencap_png_extra_s if png else 0.0)
        if name in APP_PROCESS_PROGRAMS:
            return self.app_process_s
        return 0.0

    def describe(self) -> dict[str, object]:
        """The profile as `vphone profile` prints it (milliseconds, MB/s)."""
        return {"profile": self.name,
                "input_ms": round(self.input_s * 1000),
                "screencap_raw_ms": round(self.screencap_raw_s * 1000),
                "screencap_png_ms": round((self.screencap_raw_s
                                           + self.screencap_png_extra_s) * 1000),
                "app_process_ms": round(self.app_process_s * 1000),
                "usb_mb_per_s": (None if self.usb_bytes_per_s is None
                                 else round(self.usb_bytes_per_s / 1e6, 3))}


INSTANT = PhoneProfile("instant")
REAL = PhoneProfile("real", input_s=INPUT_JVM_START_S, screencap_raw_s=SCREENCAP_RAW_S,
                    screencap_png_extra_s=SCREENCAP_PNG_ENCODE_S,
                    app_process_s=APP_PROCESS_START_S, usb_bytes_per_s=USB2_BUS_BYTES_PER_S)
PROFILES: dict[str, PhoneProfile] = {p.name: p for p in (INSTANT, REAL)}


class UsbBus:
    """One USB bus shared by every phone of a farm: a token bucket of bytes.

    A transfer reserves its bytes at once and sleeps until the bus has carried them and
    everything reserved before (tokens may go negative: that debt is the queue), so
    concurrent senders are served in arrival order at the bus rate between them. With
    ``bytes_per_s`` None the bus is unlimited and nothing ever waits."""

    def __init__(self, bytes_per_s: float | None, *, burst: int = USB_BURST_BYTES,
                 max_wait_s: float = USB_MAX_WAIT_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError(f"bytes_per_s must be positive, got {bytes_per_s}")
        self.bytes_per_s = bytes_per_s
        self.burst = burst
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self.bytes_total = 0  # every byte carried, limited or not (`vphone bus`)

    def charge(self, n: int) -> float:
        """Put ``n`` bytes on the bus without waiting (small control packets written from
        synchronous code); returns the seconds until the bus has carried them."""
        rate = self.bytes_per_s
        if n <= 0:
            return 0.0
        self.bytes_total += n
        if rate is None:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * rate) - n
        self._last = now
        # A bounded queue: never owe more than max_wait_s of bus time.
        self._tokens = max(self._tokens, -self.max_wait_s * rate)
        return max(0.0, -self._tokens / rate)

    def describe(self) -> dict[str, object]:
        """The bus as `vphone bus` prints it: bytes carried so far and the budget (MB/s)."""
        return {"bytes_total": self.bytes_total,
                "budget_mb_per_s": (None if self.bytes_per_s is None
                                    else round(self.bytes_per_s / 1e6, 3))}

    async def transfer(self, n: int) -> float:
        """Wait until ``n`` bytes have crossed the bus behind everything queued before them;
        returns the seconds waited."""
        wait = self.charge(n)
        if wait > 0:
            await self._sleep(wait)
        return wait
