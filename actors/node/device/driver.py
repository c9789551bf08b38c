"""The device driver: every action the farm performs on one phone, over the real adb server.

Owns the conversation with one serial. The phone actor owns one driver and calls it from its
own thread (all calls block). Hot calls (tap, swipe, text, key, screenshot) open a device
service on a fresh adb-server socket and read to the end without adbutils' close sleeps;
file transfer and installs, which are rare, go through adbutils' sync client or stream
installs. Every failure is a ``DeviceError`` naming the serial and the command; a phone that
is not there any more raises ``DeviceGone``.

Given an ``AgentConfig``, a driver drives its phone through a resident scrcpy server instead
(`actors/node/device/agent.py`): touches, keys and text go over the agent's control socket and
a screenshot is the first decoded video frame newer than the last action plus the settle
time. ``io`` says which path serves now ("agent" or "shell", ``io_reason`` why shell). While
no agent runs (none configured, no jar, Android too old, dead and waiting for its restart)
everything takes the shell path; an action the agent failed before sending any of it is
replayed there, one it failed half way is reported failed with the reason.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shlex
import socket
import stat
import struct
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from actors.node.device.adb_server import (SHELL_V2_HEADER, AdbServer, AdbServerError,
                                           read_until_close, recv_exactly)
from actors.node.device.agent import (AgentConfig, AgentError, AgentKeeper, IoCallback, ScrcpyAgent,
                                      key_steps, straight_path)
from actors.node.device.keycodes import key_code
from protocol.errors import DeviceError, DeviceGone, DeviceTimeout
from protocol.messages import MAX_KEY_REPEAT

log = logging.getLogger(__name__)

V2_HEADER = SHELL_V2_HEADER
RAW_HEADER_V2 = struct.Struct("<IIII")  # Android 9+: width, height, format, colour space
RAW_HEADER_V1 = struct.Struct("<III")
PIXEL_FORMAT_RGBA_8888 = 1
IME_PACKAGE = "com.android.adbkeyboard"
# `pm list packages --show-versioncode` lines and `dumpsys package` version names.
_PACKAGE_LINE = re.compile(r"^package:(\S+?)(?:\s+versionCode:(\d+))?$")
_VERSION_NAME = re.compile(r"^\s*versionName=(.*)$", re.M)
_VERSION_CODE = re.compile(r"^\s*versionCode=(\d+)", re.M)
# An APK streamed into an install session in chunks of this (progress after each).
INSTALL_CHUNK = 1 << 20
# progress(stage, bytes_sent, bytes_total): stage "sending", "committing" or "committed".
InstallProgress = Callable[[str, int, int], None]
_FOCUS = re.compile(r"mCurrentFocus=Window\{.*\s+(?P<package>[^\s]+)/(?P<activity>[^\s]+)\}")
# `input text` turns "%s" into a space, so a space is sent as %s; characters outside this
# set (and a literal "%s") go through the IME fallback.
_INPUT_TEXT_SAFE = re.compile(r"^[\x20-\x7e]*$")


# `input motionevent DOWN|MOVE|UP|CANCEL x y` exists since Android 10 (API 29).
MOTION_EVENT_MIN_SDK = 29
# What one `input motionevent` costs on the phone (Android 11+: `cmd input`, a binder call,
# no JVM start; an estimate, not measured here). Points closer in time than this need no
# `sleep` between them: the command itself takes that long.
MOTION_EVENT_COST_MS = 20


def motion_event_script(path, duration_ms: int, cost_ms: float = MOTION_EVENT_COST_MS) -> str:
    """One shell line that plays ``path`` as a touch: DOWN at the first point, MOVE through
    the middle ones, UP at the last, the points spread evenly over ``duration_ms``. Joined
    by `;` (not `&&`) so an UP always follows a DOWN; one adb round trip for the whole path."""
    points = [(int(x), int(y)) for x, y in path]
    gap_ms = duration_ms / (len(points) - 1) - cost_ms
    pause = f"sleep {gap_ms / 1000:.3f}" if gap_ms >= 1 else None
    parts: list[str] = []
    for i, (x, y) in enumerate(points):
        verb = "DOWN" if i == 0 else "UP" if i == len(points) - 1 else "MOVE"
        if i and pause:
            parts.append(pause)
        parts.append(f"input motionevent {verb} {x} {y}")
    return ";".join(parts)


# `uiautomator dump`: printed to the shell where the phone allows it, else through a file.
UI_DUMP_COMMANDS = ("uiautomator dump /dev/tty",
                    "uiautomator dump /sdcard/window_dump.xml && cat /sdcard/window_dump.xml")
_BOUNDS = re.compile(r"\[(-?\d+),(-?\d+)\]\[(-?\d+),(-?\d+)\]")


@dataclass(frozen=True)
class UiNode:
    """One view of a `uiautomator dump`, bounds in the phone's pixels (x0, y0, x1, y1)."""

    class_name: str
    resource_id: str
    text: str
    hint: str
    focused: bool
    password: bool
    bounds: tuple[int, int, int, int]

    @property
    def is_text_field(self) -> bool:
        return "EditText" in self.class_name or "AutoCompleteTextView" in self.class_name

    @property
    def value(self) -> str:
        """What the field holds: its text, except that a text equal to its hint is the hint
        shown in an empty field (TextView hands accessibility the hint then)."""
        return "" if self.hint and self.text == self.hint else self.text

    def contains(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self.bounds
        return x0 <= x < x1 and y0 <= y < y1


def parse_ui_dump(text: str) -> list[UiNode] | None:
    """The nodes of a `uiautomator dump` answer, depth first; None when it holds no
    hierarchy (an error message, a cut-off answer)."""
    start, end = text.find("<hierarchy"), text.rfind("</hierarchy>")
    if start < 0 or end < 0:
        return None
    try:
        root = ET.fromstring(text[start:end + len("</hierarchy>")])
    except ET.ParseError:
        return None
    nodes = []
    for el in root.iter("node"):
        m = _BOUNDS.fullmatch(el.get("bounds", ""))
        if m is None:
            continue
        nodes.append(UiNode(el.get("class", ""), el.get("resource-id", ""), el.get("text", ""),
                            el.get("hint", ""), el.get("focused") == "true",
                            el.get("password") == "true",
                            (int(m[1]), int(m[2]), int(m[3]), int(m[4]))))
    return nodes


def field_at(nodes: list[UiNode], box: tuple[int, int, int, int]) -> UiNode | None:
    """The text field under the centre of ``box`` (phone pixels), the focused one first;
    None when there is none (a dialog in front lists only its own views)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    fields = [n for n in nodes if n.is_text_field and n.contains(cx, cy)]
    return max(fields, key=lambda n: n.focused, default=None)


def _agent_type(agent: ScrcpyAgent, lines: list[str]) -> None:
    """Type ``lines`` through the agent with ENTER between them; once any of it went out, a
    failure counts as sent (the rest must not be replayed on the shell path)."""
    sent = False
    try:
        for i, line in enumerate(lines):
            if i:
                agent.play("text", key_steps(key_code("ENTER")))
                sent = True
            if line:
                agent.type_text(line)
                sent = True
    except AgentError as exc:
        exc.sent = exc.sent or sent
        raise


class UiDumpUnavailable(DeviceError):
    """The phone cannot dump its views (no uiautomator, or a screen that never settles)."""


@dataclass(frozen=True)
class ShellOutput:
    """What a shell command printed and how it ended."""

    stdout: bytes
    stderr: bytes
    exit_code: int

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class DeviceDriver:
    """Actions on one phone (by serial) through an adb server."""

    def __init__(self, serial: str, adb: AdbServer | None = None,
                 agent: AgentConfig | None = None, on_io: IoCallback | None = None) -> None:
        self.serial = serial
        self.adb = adb or AdbServer()
        # The scrcpy agent (None: shell path only) and when the last input ended
        # (time.monotonic): a screenshot from the stream is a frame that arrived after it.
        self.agent_config = agent
        self._keeper = AgentKeeper(self, agent, on_io) if agent is not None else None
        self._acted_at = float("-inf")
        self._features: set[str] | None = None
        self._size: tuple[int, int] | None = None
        self._has_ime: bool | None = None
        self._sdk: int | None = None
        # Which UI_DUMP_COMMANDS works here: None not asked yet, "" none (no uiautomator).
        self._ui_dump_command: str | None = None
        # Sockets of calls in flight, so that close() can cut them from another thread.
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        self._closed: str | None = None

    def __repr__(self) -> str:
        return f"DeviceDriver({self.serial} via {self.adb.host}:{self.adb.port})"

    # --- plumbing --------------------------------------------------------------------------
    @property
    def features(self) -> set[str]:
        if self._closed is not None:
            raise DeviceError(self.serial, "features", self._closed)
        if self._features is None:
            try:
                self._features = self.adb.features(self.serial)
            except AdbServerError as exc:
                raise DeviceError(self.serial, "features", str(exc)) from exc
        return self._features

    # --- the scrcpy agent -------------------------------------------------------------------
    def start_agent(self) -> None:
        """Start the agent in the background (no-op without an ``AgentConfig``)."""
        if self._keeper is not None:
            self._keeper.start()

    def wake_agent(self) -> None:
        """The phone is back: an agent restart waiting for its back-off runs now."""
        if self._keeper is not None:
            self._keeper.wake()

    @property
    def io(self) -> str:
        """"agent" while the scrcpy agent serves this phone's actions, else "shell"."""
        return self._keeper.io if self._keeper is not None else "shell"

    @property
    def io_reason(self) -> str | None:
        """Why the shell path serves (None on the agent path)."""
        return self._keeper.io_reason if self._keeper is not None else "no scrcpy agent configured"

    @property
    def agent(self) -> ScrcpyAgent | None:
        """The running agent, or None."""
        return self._keeper.current() if self._keeper is not None else None

    def _via_agent(self, label: str, act: Callable[[ScrcpyAgent], None]) -> bool:
        """Run ``act`` on the agent. False: no agent runs, or it failed before any of the
        action reached the phone; the caller takes the shell path. An action the agent
        failed half way raises DeviceError with the reason (replaying it could act twice)."""
        if self._closed is not None:
            raise DeviceError(self.serial, label, self._closed)
        agent = self.agent
        if agent is None:
            return False
        try:
            act(agent)
            done_at = time.monotonic()  # the action's end on the phone: the settle counts from it
            agent.confirm(label)  # a server killed meanwhile would have dropped it unseen
        except AgentError as exc:
            if self._closed is not None:
                raise DeviceError(self.serial, label, f"{self._closed} ({exc.reason})") from None
            if exc.sent:  # an unplugged phone is DeviceGone: its actor pauses it
                raise self._gone_or_error(label, f"{exc.reason}; not retried on the shell "
                                                 "path, part of it may have reached the "
                                                 "phone", sent=True) from None
            log.warning("phone=%s %s not sent through the scrcpy agent (%s): shell path",
                        self.serial, label, exc.reason)
            return False
        self._acted_at = done_at
        return True

    def _acted(self) -> None:
        self._acted_at = time.monotonic()

    # --- closing -------------------------------------------------------------------------
    def close(self, reason: str = "driver closed") -> None:
        """Cut this driver's adb connections now; callable from any thread.

        A call blocked on the phone (a shell that does not return, a screencap the phone
        never finishes: a socket read waits up to the adb timeout per read) ends at once
        with ``DeviceError(reason)``, and every later call fails the same way without
        touching the device. A stopping node uses it so that no actor's stop waits on a
        phone that does not answer. The scrcpy agent is torn down too."""
        with self._live_lock:
            self._closed = reason
            live = list(self._live)
        if self._keeper is not None:
            self._keeper.close(reason)
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in the owner's thread
            except OSError:
                pass  # already closed by its owner

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def _open(self, service: str, label: str) -> socket.socket:
        if self._closed is not None:
            raise DeviceError(self.serial, label, self._closed)
        try:
            sock = self.adb.connect()
        except AdbServerError as exc:
            raise DeviceError(self.serial, label, str(exc)) from exc
        with self._live_lock:
            if self._closed is not None:
                sock.close()
                raise DeviceError(self.serial, label, self._closed)
            self._live.add(sock)  # from here on close() can cut the service's opening too
        try:
            self.adb.open_service_on(sock, self.serial, service, label)
        except BaseException as exc:
            self._release(sock)
            if self._closed is not None:
                raise DeviceError(self.serial, label, self._closed) from exc
            if isinstance(exc, AdbServerError):
                raise DeviceError(self.serial, label, str(exc)) from exc
            if isinstance(exc, OSError):  # the adb server hung up: the phone went meanwhile
                raise self._gone_or_error(
                    label, f"connection lost: {exc}",
                    sent=getattr(exc, "service_requested", False)) from exc
            raise
        return sock

    def _release(self, sock: socket.socket) -> None:
        with self._live_lock:
            self._live.discard(sock)
        sock.close()

    def open_stream(self, service: str, label: str) -> socket.socket:
        """A device service kept open by its caller (the agent's sockets); `close` cuts it
        like any call's. Give it back with `release_stream`."""
        return self._open(service, label)

    def release_stream(self, sock: socket.socket) -> None:
        self._release(sock)

    def _read_all(self, sock: socket.socket, label: str, size_hint: int = 0) -> bytearray:
        """Everything until the phone closes the stream; DeviceError if close() cut it."""
        data = read_until_close(sock, size_hint)
        if self._closed is not None:
            raise DeviceError(self.serial, label, self._closed)  # data may be cut short
        return data

    def _gone_or_error(self, label: str, reason: str, *, sent: bool = False) -> DeviceError:
        """``sent``: the command's service was open on the phone (see `DeviceGone`)."""
        if self._closed is not None:  # cut by close(): the phone may be fine, do not ask
            return DeviceError(self.serial, label, f"{self._closed} ({reason})", sent=sent)
        state = self.adb.device_state(self.serial)
        if state != "device":
            return DeviceGone(self.serial, label, f"{reason} (device state: {state})", sent=sent)
        return DeviceError(self.serial, label, reason, sent=sent)

    def _timed_out(self, command: str, exc: BaseException) -> DeviceError:
        """No answer to a command the phone was sent: gone if adb lost the phone, else a
        DeviceTimeout (the command may still run there)."""
        error = self._gone_or_error(command, f"connection lost: {exc}", sent=True)
        if isinstance(error, DeviceGone):
            return error
        return DeviceTimeout(self.serial, command, f"no answer within {self.adb.timeout:g}s "
                             "(it may still run on the phone)")

    def shell(self, command: str | list[str], check: bool = True) -> ShellOutput:
        """Run a shell command; with ``check`` a non-zero exit raises DeviceError."""
        if isinstance(command, list):
            command = " ".join(shlex.quote(a) for a in command)
        if self._closed is not None:
            raise DeviceError(self.serial, command, self._closed)
        if "shell_v2" in self.features:
            out = self._shell_v2(command)
        else:
            out = self._shell_legacy(command)
        if check and out.exit_code != 0:
            reason = (out.stderr or out.stdout).decode("utf-8", "replace").strip()
            raise DeviceError(self.serial, command, f"exit status {out.exit_code}: {reason}")
        return out

    def _shell_v2(self, command: str) -> ShellOutput:
        sock = self._open(f"shell,v2,raw:{command}", command)
        try:
            data = self._read_all(sock, command)
        except TimeoutError as exc:
            raise self._timed_out(command, exc) from exc
        except OSError as exc:
            raise self._gone_or_error(command, f"connection lost: {exc}", sent=True) from exc
        finally:
            self._release(sock)
        stdout, stderr, exit_code = bytearray(), bytearray(), None
        view, off = memoryview(data), 0
        while off + V2_HEADER.size <= len(data):
            kind, length = V2_HEADER.unpack_from(view, off)
            off += V2_HEADER.size
            chunk = view[off:off + length]
            off += length
            if kind == 1:
                stdout += chunk
            elif kind == 2:
                stderr += chunk
            elif kind == 3 and length:
                exit_code = chunk[0]
        if exit_code is None:
            raise self._gone_or_error(command, "shell ended without an exit status",
                                      sent=True)
        return ShellOutput(bytes(stdout), bytes(stderr), exit_code)

    def _shell_legacy(self, command: str) -> ShellOutput:
        # Legacy shell loses the exit status: carry it in a marker line, as adbutils does.
        marker = "X4EXIT:"
        sock = self._open(f"shell:{command}; echo {marker}$?", command)
        try:
            data = bytes(self._read_all(sock, command))
        except TimeoutError as exc:
            raise self._timed_out(command, exc) from exc
        except OSError as exc:
            raise self._gone_or_error(command, f"connection lost: {exc}", sent=True) from exc
        finally:
            self._release(sock)
        head, sep, tail = data.rpartition(marker.encode())
        if not sep:
            raise self._gone_or_error(command, "shell ended without an exit status",
                                      sent=True)
        return ShellOutput(head, b"", int(tail.strip() or b"0"))

    def exec_out(self, command: str, size_hint: int = 0) -> bytearray:
        """`exec:` a command and return its raw stdout (binary-safe)."""
        sock = self._open(f"exec:{command}", command)
        try:
            return self._read_all(sock, command, size_hint)
        except OSError as exc:
            raise self._gone_or_error(command, f"connection lost: {exc}") from exc
        finally:
            self._release(sock)

    # --- screen ----------------------------------------------------------------------------
    def window_size(self) -> tuple[int, int]:
        if self._size is None:
            text = self.shell("wm size").text
            m = re.search(r"Override size: (\d+)x(\d+)", text) or \
                re.search(r"Physical size: (\d+)x(\d+)", text)
            if m is None:
                raise DeviceError(self.serial, "wm size", f"unexpected output {text!r}")
            self._size = (int(m.group(1)), int(m.group(2)))
        return self._size

    def screenshot(self) -> np.ndarray:
        """The current frame as an (H, W, 4) RGBA uint8 array, in device pixels.

        The phone's one frame source: the phone actor's every frame (matcher, live view,
        unknown screens, execution and AI recovery screenshots, the API's PNG) comes from
        here, and a PNG is encoded from it only where one is needed. On the agent path: the
        first decoded video frame the phone captured ``settle_s`` after the last action ended
        (dated by its pts, not by its arrival; no transfer: it is here already), or raw
        screencap when none comes within ``frame_timeout_s``. Raw screencap: no PNG decode,
        the raw frame is viewed in place (measured: PNG decode of 1080x2400 costs ~37 ms of
        CPU, the raw path only the copy off the socket). A stream downscaled by
        ``AgentConfig.max_size`` is scaled back up to the screen's size, so registry crops
        and taps need no scaling of their own.
        """
        agent = self.agent
        if agent is not None:
            config = self.agent_config
            frame = agent.frame_after(self._acted_at + config.settle_s, config.frame_timeout_s)
            if frame is not None:
                return frame
            log.info("phone=%s no video frame within %.1f s after the last action: screencap",
                     self.serial, config.frame_timeout_s)
        return self._screencap()

    def _screencap(self) -> np.ndarray:
        w, h = self._size or (0, 0)
        data = self.exec_out("screencap", size_hint=w * h * 4 + RAW_HEADER_V2.size)
        if len(data) < RAW_HEADER_V1.size:
            raise self._gone_or_error("screencap", f"short screencap output ({len(data)} bytes)")
        width, height, fmt = RAW_HEADER_V1.unpack_from(data)
        pixels = width * height * 4
        if len(data) == pixels + RAW_HEADER_V2.size:
            offset = RAW_HEADER_V2.size
        elif len(data) == pixels + RAW_HEADER_V1.size:
            offset = RAW_HEADER_V1.size
        else:
            raise DeviceError(self.serial, "screencap",
                              f"{len(data)} bytes do not fit a {width}x{height} frame")
        if fmt != PIXEL_FORMAT_RGBA_8888:
            raise DeviceError(self.serial, "screencap", f"pixel format {fmt} is not RGBA_8888")
        self._size = (width, height)
        return np.frombuffer(data, dtype=np.uint8, count=pixels, offset=offset).reshape(
            height, width, 4)

    # --- views -----------------------------------------------------------------------------
    @property
    def ui_dump_supported(self) -> bool | None:
        """False once the phone was found without uiautomator; None before it was asked."""
        return None if self._ui_dump_command is None else bool(self._ui_dump_command)

    def ui_dump(self) -> list[UiNode] | None:
        """The views of the window in front (`uiautomator dump`); None when the phone cannot
        dump: it has no uiautomator (remembered, not asked again), or not this time (a
        screen that never goes idle, a null root node while windows change)."""
        if self._ui_dump_command == "":
            return None
        commands = (self._ui_dump_command,) if self._ui_dump_command else UI_DUMP_COMMANDS
        for command in commands:
            out = self.shell(command, check=False)
            said = (out.stdout + out.stderr).decode("utf-8", "replace")
            nodes = parse_ui_dump(said)
            if nodes is not None:  # first: a screen may well show the words "not found"
                self._ui_dump_command = command
                return nodes
            if out.exit_code == 127 or "not found" in said:
                log.info("serial=%s has no uiautomator: text fields are read by OCR", self.serial)
                self._ui_dump_command = ""
                return None
            log.info("serial=%s %r gave no hierarchy: %s", self.serial, command, said.strip()[:200])
        return None

    def field_text(self, box: tuple[int, int, int, int]) -> str | None:
        """What the text field under ``box`` (phone pixels) holds ("" when empty); None when
        no field is there (a dialog is in front). ``UiDumpUnavailable`` when the phone cannot
        dump its views: read the field some other way."""
        nodes = self.ui_dump()
        if nodes is None:
            raise UiDumpUnavailable(self.serial, "uiautomator dump", "no view hierarchy")
        node = field_at(nodes, box)
        return None if node is None else node.value

    # --- input -----------------------------------------------------------------------------
    def tap(self, x: int, y: int) -> None:
        if self._via_agent("tap", lambda a: a.touch("tap", [(int(x), int(y))], 0)):
            return
        self.shell(f"input tap {int(x)} {int(y)}")
        self._acted()

    def long_tap(self, x: int, y: int, duration_ms: int = 800) -> None:
        if self._via_agent("long tap", lambda a: a.touch("long tap", [(int(x), int(y))],
                                                         int(duration_ms))):
            return
        # Android has no long-tap command; a stationary swipe is how the platform does it.
        self.shell(f"input swipe {int(x)} {int(y)} {int(x)} {int(y)} {int(duration_ms)}")
        self._acted()

    def swipe(self, x1: int, y1: int, x2: int, y2: int, duration_ms: int = 300,
              path: list[tuple[int, int]] | list[list[int]] | None = None) -> None:
        """Swipe straight from (x1, y1) to (x2, y2), or through every point of ``path``."""
        points = ([(int(x), int(y)) for x, y in path] if path is not None and len(path) > 2
                  else straight_path(int(x1), int(y1), int(x2), int(y2), int(duration_ms)))
        if self._via_agent("swipe", lambda a: a.touch("swipe", points, int(duration_ms))):
            return
        self._shell_swipe(x1, y1, x2, y2, duration_ms, path)
        self._acted()

    def _shell_swipe(self, x1: int, y1: int, x2: int, y2: int, duration_ms: int,
                     path: list[tuple[int, int]] | list[list[int]] | None) -> None:
        if path is None or len(path) <= 2:
            self.shell(f"input swipe {int(x1)} {int(y1)} {int(x2)} {int(y2)} {int(duration_ms)}")
        elif self.sdk_level() < MOTION_EVENT_MIN_SDK:
            log.warning("serial=%s sdk=%s has no `input motionevent`: swiping straight along "
                        "a %d-point path", self.serial, self.sdk_level(), len(path))
            (sx, sy), (ex, ey) = path[0], path[-1]
            self.shell(f"input swipe {int(sx)} {int(sy)} {int(ex)} {int(ey)} {int(duration_ms)}")
        else:
            self.shell(motion_event_script(path, duration_ms))

    def sdk_level(self) -> int:
        """The phone's Android API level (ro.build.version.sdk), asked once."""
        if self._sdk is None:
            text = self.shell("getprop ro.build.version.sdk").text.strip()
            try:
                self._sdk = int(text)
            except ValueError:
                raise DeviceError(self.serial, "getprop ro.build.version.sdk",
                                  f"not an API level: {text!r}") from None
        return self._sdk

    def key(self, key: int | str, repeat: int = 1) -> None:
        """Press ``key`` ``repeat`` times (one `input keyevent` with the code repeated)."""
        try:
            code = key_code(key)
        except ValueError as exc:
            raise DeviceError(self.serial, f"key {key!r}", str(exc)) from exc
        if not 1 <= repeat <= MAX_KEY_REPEAT:
            raise DeviceError(self.serial, f"key {key!r}",
                              f"repeat {repeat} is not in 1..{MAX_KEY_REPEAT}")
        if self._via_agent(f"key {key!r}", lambda a: a.play("key", key_steps(code, repeat))):
            return
        self.shell("input keyevent " + " ".join([str(code)] * repeat))
        self._acted()

    def type_text(self, text: str) -> None:
        """Type ``text`` exactly into the focused field.

        Printable ASCII goes through `input text` (spaces as %s, the rest single-quoted so
        `& ; | $ \\ %` and quotes reach the phone unchanged; newlines as ENTER). Anything
        `input text` cannot carry - non-ASCII, a literal "%s" - goes through the ADB Keyboard
        IME (`am broadcast -a ADB_INPUT_B64`), which must be installed and selected on a
        real phone (virtual phones ship it). On the agent path each line is injected as key
        events, or pasted through the clipboard when it cannot be (non-ASCII, > 300 bytes),
        with ENTER between lines.
        """
        if not text:
            return
        lines = text.split("\n")
        if self._via_agent("type_text", lambda a: _agent_type(a, lines)):
            return
        self._shell_type(text, lines)
        self._acted()

    def _shell_type(self, text: str, lines: list[str]) -> None:
        if all(_INPUT_TEXT_SAFE.match(line) and "%s" not in line for line in lines):
            parts = []
            for i, line in enumerate(lines):
                if i:
                    parts.append("input keyevent 66")
                if line:
                    parts.append("input text " + shlex.quote(line.replace(" ", "%s")))
            self.shell(" && ".join(parts))
            return
        if not self.has_ime():
            raise DeviceError(self.serial, "type_text",
                              f"{text!r} needs the ADB Keyboard IME ({IME_PACKAGE}) for "
                              "characters `input text` cannot type; install and enable it")
        payload = base64.b64encode(text.encode("utf-8")).decode()
        self.shell(f"am broadcast -a ADB_INPUT_B64 --es msg {payload}")

    def has_ime(self) -> bool:
        if self._has_ime is None:
            self._has_ime = IME_PACKAGE in self.list_packages()
        return self._has_ime

    # --- apps ------------------------------------------------------------------------------
    def list_packages(self) -> list[str]:
        return [line[len("package:"):].strip() for line in self.shell("pm list packages").text.splitlines()
                if line.startswith("package:")]

    def launch_app(self, package: str, activity: str | None = None) -> None:
        try:
            self._launch_app(package, activity)
        finally:
            self._acted()

    def _launch_app(self, package: str, activity: str | None) -> None:
        if activity:
            out = self.shell(["am", "start", "-n", f"{package}/{activity}"], check=False)
            if out.exit_code != 0 or b"Error" in out.stderr + out.stdout:
                raise DeviceError(self.serial, f"launch {package}/{activity}",
                                  (out.stderr or out.stdout).decode().strip())
            return
        out = self.shell(["monkey", "-p", package, "-c", "android.intent.category.LAUNCHER", "1"],
                         check=False)
        if out.exit_code != 0 or b"monkey aborted" in out.stdout + out.stderr:
            raise DeviceError(self.serial, f"launch {package}",
                              f"not installed or no launcher activity: "
                              f"{(out.stderr or out.stdout).decode().strip()}")

    def stop_app(self, package: str) -> None:
        self.shell(["am", "force-stop", package])
        self._acted()

    def current_app(self) -> tuple[str, str]:
        """(package, activity) of the window in focus."""
        text = self.shell("dumpsys window windows").text
        m = _FOCUS.search(text)
        if m is None:
            raise DeviceError(self.serial, "current_app", "no focused window in dumpsys output")
        return m.group("package"), m.group("activity")

    def install(self, apks: str | os.PathLike | list[str | os.PathLike], *,
                allow_downgrade: bool = False, progress: InstallProgress | None = None) -> None:
        """Install one APK, or a split set (base + splits), in one install session.

        `pm install-create` / `install-write` (each APK streamed from its file) /
        `install-commit`, as `adb install-multiple` does; ``progress(stage, bytes_sent,
        bytes_total)`` hears "sending" after every chunk and "committing" before the commit.
        ANY failure (a refusal, a phone gone mid-stream, a local file that cannot be read)
        abandons the session before the error is raised; when even the abandon cannot
        reach the phone, the error's ``open_session`` names the session left open (the
        caller abandons it once the phone is back), else it is None."""
        paths = [Path(apks)] if isinstance(apks, (str, os.PathLike)) else [Path(p) for p in apks]
        self.install_named([(f"{i}_{p.stem}", p) for i, p in enumerate(paths)],
                           allow_downgrade=allow_downgrade, progress=progress)

    def install_named(self, apks: list[tuple[str, Path]], *, allow_downgrade: bool = False,
                      progress: InstallProgress | None = None) -> None:
        """`install` with each APK's name in the session given (``[(name, path)]``)."""
        if not apks:
            raise DeviceError(self.serial, "install", "no APK given")
        for _, p in apks:
            if not p.is_file():
                raise DeviceError(self.serial, f"install {p}", "no such file")
        label = "install " + " ".join(p.name for _, p in apks)
        pm = "cmd package" if "cmd" in self.features else "pm"
        sizes = [p.stat().st_size for _, p in apks]
        created = self._stream_in(f"exec:{pm} install-create -r -t"
                                  f"{' -d' if allow_downgrade else ''} -S {sum(sizes)}", b"", label)
        m = re.search(rb"Success: created install session \[(\d+)\]", created)
        if m is None:
            raise DeviceError(self.serial, label, created.decode("utf-8", "replace").strip()
                              or "no answer from the package manager")
        session = m.group(1).decode()
        sent, total = 0, sum(sizes)
        try:
            for (name, p), size in zip(apks, sizes):
                def step(n: int) -> None:
                    nonlocal sent
                    sent += n
                    if progress is not None:
                        progress("sending", sent, total)
                self._expect_success(label, self._stream_file(
                    f"exec:{pm} install-write -S {size} {session} {shlex.quote(name)} -", p,
                    size, label, step))
            if progress is not None:
                progress("committing", sent, total)
            self._expect_success(label, self._stream_in(f"exec:{pm} install-commit {session}",
                                                        b"", label))
        except BaseException as exc:
            # After a refused commit the phone has dropped the session already; abandoning
            # it again is harmless, and it is the one rule that leaves none open.
            open_session = self._abandon(pm, session, label)
            if isinstance(exc, DeviceError):
                exc.open_session = open_session
            raise
        if progress is not None:
            progress("committed", sent, total)

    def _abandon(self, pm: str, session: str, label: str) -> str | None:
        """`pm install-abandon`; the session id if the phone could not be told."""
        try:
            self._stream_in(f"exec:{pm} install-abandon {session}", b"", label)
        except DeviceError as exc:
            log.warning("phone=%s install session %s not abandoned: %s", self.serial, session,
                        exc.reason)
            return session
        return None

    def abandon_session(self, session: str) -> None:
        """Abandon an install session left open earlier (DeviceError if the phone is away;
        a session the phone no longer has is no error)."""
        pm = "cmd package" if "cmd" in self.features else "pm"
        self._stream_in(f"exec:{pm} install-abandon {int(session)}", b"", "install-abandon")

    def _stream_file(self, service: str, path: Path, size: int, label: str,
                     sent: Callable[[int], None]) -> bytes:
        """Open ``service`` and write ``size`` bytes of ``path`` to it in chunks, then read
        the answer."""
        sock = self._open(service, label)
        try:
            with open(path, "rb") as f:
                left = size
                while left > 0:
                    chunk = f.read(min(INSTALL_CHUNK, left))
                    if not chunk:
                        raise DeviceError(self.serial, label, f"{path} ended {left} bytes short")
                    sock.sendall(chunk)
                    left -= len(chunk)
                    sent(len(chunk))
            return bytes(self._read_all(sock, label))
        except OSError as exc:
            raise self._gone_or_error(label, f"connection lost: {exc}") from exc
        finally:
            self._release(sock)

    def uninstall(self, package: str) -> None:
        """`pm uninstall PACKAGE`; DeviceError with the package manager's failure."""
        label = f"uninstall {package}"
        out = self.shell(["pm", "uninstall", package], check=False)
        self._expect_success(label, out.stdout.strip() or out.stderr)

    def package_versions(self) -> dict[str, dict]:
        """Every third-party package with its version: {package: {"version_code": int,
        "version_name": str}} (`pm list packages -3 --show-versioncode`, then `dumpsys
        package NAME` per package for the name)."""
        listed = self.shell("pm list packages -3 --show-versioncode", check=False)
        if listed.exit_code != 0:  # before Android 9 pm has no --show-versioncode
            listed = self.shell("pm list packages -3")
        found: dict[str, dict] = {}
        for line in listed.text.splitlines():
            m = _PACKAGE_LINE.match(line.strip())
            if m:
                found[m.group(1)] = {"version_code": int(m.group(2) or 0), "version_name": ""}
        for package, entry in found.items():
            dump = self.shell(["dumpsys", "package", package], check=False).text
            name = _VERSION_NAME.search(dump)
            entry["version_name"] = name.group(1).strip() if name else ""
            code = _VERSION_CODE.search(dump)
            if not entry["version_code"] and code:
                entry["version_code"] = int(code.group(1))
        return found

    def abi_list(self) -> list[str]:
        """The phone's ABIs, preferred first (`ro.product.cpu.abilist`, else `...cpu.abi`)."""
        text = self.shell("getprop ro.product.cpu.abilist").text.strip() or \
            self.shell("getprop ro.product.cpu.abi").text.strip()
        return [a.strip() for a in text.split(",") if a.strip()]

    def density(self) -> int:
        """The screen's density in dpi (`ro.sf.lcd_density`, else `wm density`)."""
        text = self.shell("getprop ro.sf.lcd_density").text.strip()
        if text.isdigit():
            return int(text)
        m = re.search(r"Physical density: (\d+)", self.shell("wm density").text)
        if m is None:
            raise DeviceError(self.serial, "density", "neither ro.sf.lcd_density nor wm density")
        return int(m.group(1))

    def _stream_in(self, service: str, data: bytes, label: str) -> bytes:
        sock = self._open(service, label)
        try:
            if data:
                sock.sendall(data)
            return bytes(self._read_all(sock, label))
        except OSError as exc:
            raise self._gone_or_error(label, f"connection lost: {exc}") from exc
        finally:
            self._release(sock)

    def _expect_success(self, label: str, reply: bytes) -> None:
        if not reply.startswith(b"Success"):
            raise DeviceError(self.serial, label, reply.decode("utf-8", "replace").strip()
                              or "no answer from the package manager")

    # --- files -----------------------------------------------------------------------------
    def _adbutils_device(self):
        import adbutils

        client = adbutils.AdbClient(host=self.adb.host, port=self.adb.port)
        return client.device(self.serial)

    def push(self, local: str | os.PathLike, remote: str) -> None:
        try:
            self._adbutils_device().sync.push(str(local), remote)
        except Exception as exc:  # adbutils raises several unrelated types
            raise self._gone_or_error(f"push {local} {remote}", str(exc)) from exc

    def pull(self, remote: str, local: str | os.PathLike) -> None:
        """Copy a phone file (or directory) to ``local``; a file lands whole or not at all."""
        label = f"pull {remote}"
        local = Path(local)
        try:
            sync = self._adbutils_device().sync
            info = sync.stat(remote)
            if info.mtime is None:
                raise DeviceError(self.serial, label, "no such file on the phone")
            if stat.S_ISDIR(info.mode):
                sync.pull_dir(remote, local)
                return
            part = local.with_name(local.name + ".part")
            try:
                sync.pull_file(remote, part)
                os.replace(part, local)
            finally:
                part.unlink(missing_ok=True)
        except DeviceError:
            raise
        except Exception as exc:  # adbutils raises several unrelated types
            raise self._gone_or_error(label, str(exc)) from exc
