"""The scrcpy agent: one phone driven through a resident scrcpy server (release 3.3.4).

The wire format is `protocol.scrcpy` (pinned to scrcpy 3.3.4, `SCRCPY_VERSION`; the server
refuses any other client version). The driver (`actors/node/device/driver.py`) pushes the
server jar to `DEVICE_SERVER_PATH`, starts it once per phone with `app_process` on a shell
stream it keeps open, and opens the server's two sockets through the adb server
(``localabstract:scrcpy_<scid>``, no `adb forward`):

- video: the device meta, the codec meta, then H.264 packets, decoded here with PyAV
  (FFmpeg's h264 decoder). `FrameStore` keeps the latest decoded frame with its arrival
  time, so a screenshot after an action is "the first frame newer than the action plus the
  settle time": no 10 MB transfer, no PNG. Frames stay YUV until someone asks for pixels.
- control: touches (down / move / up), key events, text (`InjectText`) and, for text that
  cannot be injected (non-ASCII, more than 300 bytes), the clipboard with paste.

`AgentKeeper` keeps one phone's agent running: the first start in the background, a
restart with back-off (1 s, 2 s, 4 s ... 60 s, `Backoff`) after every death, each one
logged, and the phone's ``io`` ("agent" or "shell", with the reason when shell) reported
through a callback. Actions fall back to the shell path while no agent runs.
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Union

import av
import numpy as np

from actors.node.device.adb_server import SHELL_V2_HEADER as _SHELL_V2_HEADER
from protocol.errors import DeviceError, DeviceGone, ProtocolError
from protocol.scrcpy import (DEVICE_SERVER_PATH, DUMMY_BYTE, INJECT_TEXT_MAX_LENGTH,
                             POINTER_ID_GENERIC_FINGER, SCRCPY_VERSION, AckClipboard, CodecMeta,
                             ControlMessage, DeviceMessageParser, DeviceMeta, InjectKeycode,
                             InjectText, InjectTouchEvent, ResetVideo, ServerParams, SetClipboard,
                             VideoPacket, VideoStreamParser, new_scid)

log = logging.getLogger(__name__)

# scrcpy 3.x runs on Android 5.0 (API 21) and later (upstream README, "Requirements").
AGENT_MIN_SDK = 21
# The server needs a moment to start (a JVM): upstream's client tries the tunnel this often.
CONNECT_ATTEMPTS = 100
CONNECT_INTERVAL_S = 0.1
DUMMY_BYTE_TIMEOUT_S = 2.0
# A started server sends a frame at once; one that has not within this is not working.
FIRST_FRAME_TIMEOUT_S = 10.0
# A control write that cannot go out within this fails the action (the server stopped reading).
CONTROL_WRITE_TIMEOUT_S = 5.0
CLIPBOARD_ACK_TIMEOUT_S = 5.0
# A control message written to the socket has only reached the adb server: a server killed
# meanwhile drops it unseen, and no scrcpy message but SET_CLIPBOARD is acknowledged. An
# action counts as taken once a frame the phone captured this long after its last message
# came in (the server ran past that message's arrival; the margin covers the two socket
# paths' transit); see ScrcpyAgent.confirm.
DELIVERY_MARGIN_S = 0.05
# A touch path's points are this far apart in time at most (a straight swipe is cut in steps).
TOUCH_MOVE_INTERVAL_MS = 16
SERVER_LOG_LINES = 20
# The back-off starts over after an agent that ran this long.
STABLE_RUN_S = 60.0
# FFmpeg's AV_CODEC_FLAG_LOW_DELAY: a frame out as soon as its packet is in (as upstream's client).
_AV_CODEC_FLAG_LOW_DELAY = 1 << 19
# How fast the phone-to-node clock offset may grow (s per s): far above any clock drift,
# far below a delay spike's effect (see ScrcpyAgent._captured_at).
PTS_OFFSET_CREEP = 0.001
_STACK_MORE = re.compile(r"\.\.\. \d+ more$")  # "... 12 more" closing a Java stack trace
IoCallback = Callable[[str, Union[str, None]], None]


class AgentDevice(Protocol):
    """What an agent needs of its phone's driver (actors.node.device.driver.DeviceDriver)."""

    serial: str

    @property
    def features(self) -> set[str]: ...

    def sdk_level(self) -> int: ...

    def window_size(self) -> tuple[int, int]: ...

    def push(self, local: str | Path, remote: str) -> None: ...

    def open_stream(self, service: str, label: str) -> socket.socket:
        """A device service socket that the driver's close() cuts."""

    def release_stream(self, sock: socket.socket) -> None: ...


@dataclass(frozen=True)
class AgentConfig:
    """How a node drives its phones: ``mode`` "agent" (the scrcpy server ``jar``, falling back
    to the shell path where it cannot run) or "shell" (forced: `input`, `screencap`)."""

    mode: str = "agent"
    jar: Path | None = None
    settle_s: float = 0.1       # a post-action frame is one that arrived this long after it
    frame_timeout_s: float = 1.0  # no such frame within this: screencap instead
    max_fps: float = 15         # bounds the node's decoding work (60 phones on 2 cores)
    video_bit_rate: int = 4_000_000  # 60 phones share one USB 2.0 bus (~35 MB/s)
    # The video's longer side at most (scrcpy's max_size; 0: the screen's size). Frames are
    # scaled back up to the screen's size and touches down to the video's, so the registry's
    # crops and every coordinate the farm computes stay in device pixels.
    max_size: int = 0
    backoff_first_s: float = 1.0
    backoff_max_s: float = 60.0

    def shell_reason(self) -> str | None:
        """Why every phone of this node stays on the shell path; None: try the agent."""
        if self.mode == "shell":
            return "shell forced (--phone-io shell)"
        if self.jar is None:
            return (f"no scrcpy {SCRCPY_VERSION} server jar given "
                    "(farm-node --scrcpy-server PATH)")
        return None


class AgentError(Exception):
    """The agent failed an action. ``sent``: a whole control message of the action reached the
    server, so the action may have (partly) happened and must not be replayed elsewhere."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class AgentStartError(Exception):
    """The agent did not start. ``permanent``: retrying cannot help (no jar, Android too old)."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class DecodeError(Exception):
    """The decoder refused a packet (a corrupt frame)."""


# --- pieces that need no device ------------------------------------------------------------------


class Backoff:
    """Delays between restarts: ``first_s``, doubling, at most ``max_s``; `reset` starts over."""

    def __init__(self, first_s: float = 1.0, max_s: float = 60.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


class FrameStore:
    """The latest frame of one phone with its arrival time, and waiters for "a frame that
    arrived after T". Frames are kept as decoded (``source``); ``convert`` makes the pixels
    only when someone asks, once per frame."""

    def __init__(self, convert: Callable[[Any], np.ndarray],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._convert = convert
        self._clock = clock
        self._cond = threading.Condition()
        self._source: Any = None
        self._at = float("-inf")
        self._converted: tuple[float, np.ndarray] | None = None
        # One conversion at a time: PyAV's frame reformatting is not thread-safe (the phone
        # actor and the live-wall sender converting one frame at once crashed the node).
        self._convert_lock = threading.Lock()
        self._closed: str | None = None
        self.count = 0

    @property
    def arrived_at(self) -> float | None:
        """Time (``clock``) of the latest frame: as ``put`` dated it (the agent: when the
        phone captured it), else its arrival; None before the first."""
        return None if self._source is None else self._at

    def put(self, source: Any, at: float | None = None) -> None:
        with self._cond:
            self._source = source
            self._at = self._clock() if at is None else at
            self.count += 1
            self._cond.notify_all()

    def close(self, reason: str) -> None:
        """No more frames will come: waiters return at once."""
        with self._cond:
            self._closed = reason
            self._cond.notify_all()

    def latest(self) -> tuple[np.ndarray, float] | None:
        with self._cond:
            if self._source is None:
                return None
            source, at = self._source, self._at
        return self._pixels(source, at), at

    def wait_newer(self, after: float, timeout: float) -> tuple[np.ndarray, float] | None:
        """The first frame that arrived after ``after`` (it may be one already here), waiting
        until ``after`` + ``timeout`` at most (``after`` may lie in the future: the settle
        time); None when none came (or the store was closed)."""
        got = self._wait(after, timeout)
        return None if got is None else (self._pixels(*got), got[1])

    def wait_dated_after(self, after: float, timeout: float) -> float | None:
        """As `wait_newer`, but only the frame's time: nothing is converted."""
        got = self._wait(after, timeout)
        return None if got is None else got[1]

    def _wait(self, after: float, timeout: float) -> tuple[Any, float] | None:
        deadline = max(after, self._clock()) + timeout
        with self._cond:
            while self._at <= after and self._closed is None:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._at <= after:
                return None
            return self._source, self._at

    def _pixels(self, source: Any, at: float) -> np.ndarray:
        # Outside the frames' lock: the reader thread never waits on a conversion.
        with self._convert_lock:
            cached = self._converted
            if cached is not None and cached[0] == at:
                return cached[1]
            image = self._convert(source)
            self._converted = (at, image)
            return image


class H264Decoder:
    """Video packets (`protocol.scrcpy.VideoPacket`) in, decoded `av.VideoFrame`s out. A
    config packet is kept and put before the next media packet (as upstream's client does).
    A packet the decoder refuses raises `DecodeError`; the frames after it are dropped until
    the next key frame, since they would be built on the broken one."""

    def __init__(self, codec: str = "h264") -> None:
        self._ctx = av.CodecContext.create(codec, "r")
        self._ctx.thread_count = 1  # one phone, one thread: sixty of them share the cores
        self._ctx.flags |= _AV_CODEC_FLAG_LOW_DELAY
        # Refuse a damaged packet instead of concealing it: a concealed frame looks like
        # the screen, and a screenshot of garbage would be named as some screen.
        self._ctx.options = {"err_detect": "explode"}
        self._config = b""
        self._config_pending = False
        self.broken = False

    def decode(self, packet: VideoPacket) -> list[av.VideoFrame]:
        if packet.config:
            self._config, self._config_pending = packet.data, True
            return []
        if self.broken and not packet.key_frame:
            return []
        data = packet.data
        if self._config_pending:
            data, self._config_pending = self._config + data, False
        av_packet = av.Packet(data)
        av_packet.pts = packet.pts  # the frame keeps it: when the phone captured it
        try:
            frames = self._ctx.decode(av_packet)
        except av.FFmpegError as exc:
            self.broken = True
            raise DecodeError(f"packet pts={packet.pts} ({len(packet.data)} bytes): {exc}") from None
        if packet.key_frame:
            self.broken = False
        return list(frames)


def rgba_frame(frame: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """An (H, W, 4) RGBA uint8 array (what `DeviceDriver.screenshot` returns), scaled to
    ``size`` (width, height) when the video's size differs from the screen's."""
    if isinstance(frame, np.ndarray):
        image = frame
    else:
        width, height = size if size is not None else (frame.width, frame.height)
        return frame.to_ndarray(format="rgba", width=width, height=height)
    if size is not None and (image.shape[1], image.shape[0]) != size:
        import cv2

        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


Step = Union[ControlMessage, float]
"""One step of an action played on the control socket: a message, or a pause in seconds."""


def _touch(action: int, x: int, y: int, size: tuple[int, int]) -> InjectTouchEvent:
    # Upstream's client sends pressure 0 with the UP.
    return InjectTouchEvent(action=action, pointer_id=POINTER_ID_GENERIC_FINGER, x=x, y=y,
                            width=size[0], height=size[1], pressure=0.0 if action == 1 else 1.0)


def touch_steps(points: list[tuple[int, int]], duration_ms: float,
                size: tuple[int, int]) -> list[Step]:
    """DOWN at the first point, MOVE through the others, UP at the last, spread evenly over
    ``duration_ms`` (video pixels; ``size`` is the video's). One point: DOWN, pause, UP."""
    if len(points) == 1:
        points = points * 2
    gap_s = max(0.0, duration_ms / 1000 / (len(points) - 1))
    steps: list[Step] = [_touch(0, *points[0], size)]
    for i, point in enumerate(points[1:], start=1):
        if gap_s:
            steps.append(gap_s)
        steps.append(_touch(1 if i == len(points) - 1 else 2, *point, size))
    return steps


def straight_path(x1: int, y1: int, x2: int, y2: int, duration_ms: int,
                  interval_ms: int = TOUCH_MOVE_INTERVAL_MS) -> list[tuple[int, int]]:
    """The points of a straight swipe, one every ``interval_ms`` at most (as `input swipe`
    moves the finger along)."""
    n = max(1, round(duration_ms / interval_ms))
    return [(round(x1 + (x2 - x1) * i / n), round(y1 + (y2 - y1) * i / n)) for i in range(n + 1)]


def key_steps(code: int, repeat: int = 1) -> list[Step]:
    """``repeat`` presses (DOWN, UP) of ``code``."""
    return [InjectKeycode(action, code) for _ in range(repeat) for action in (0, 1)]


def injectable(text: str) -> bool:
    """Whether ``text`` can go as `InjectText` (key events of the device's key map): printable
    ASCII of at most 300 bytes. Anything else is pasted through the clipboard."""
    return len(text) <= INJECT_TEXT_MAX_LENGTH and all(" " <= c <= "~" for c in text)


# --- one agent ---------------------------------------------------------------------------------


class ScrcpyAgent:
    """One phone's running scrcpy server: its shell stream (the server process and its log),
    the video socket (read and decoded by a thread into `frames`) and the control socket
    (written under a lock by whoever acts; a thread reads the device's answers). The first
    failure of any part kills the whole agent (``death``) and calls ``on_death`` once."""

    def __init__(self, driver: "AgentDevice", jar: Path, config: AgentConfig,
                 on_death: Callable[["ScrcpyAgent", str], None]) -> None:
        self.driver = driver
        self.serial = driver.serial
        self.jar = jar
        self.config = config
        self.on_death = on_death
        self.params = ServerParams(scid=new_scid(), max_fps=config.max_fps,
                                   video_bit_rate=config.video_bit_rate, max_size=config.max_size)
        self.screen_size: tuple[int, int] | None = None  # the phone's, in the video's orientation
        self.frames = FrameStore(self._pixels)
        self.device_name: str | None = None
        self.codec: CodecMeta | None = None
        self.started_at: float | None = None
        self.death: str | None = None
        self._dead = threading.Event()
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._server: socket.socket | None = None
        self._video: socket.socket | None = None
        self._control: socket.socket | None = None
        self._server_log: collections.deque[str] = collections.deque(maxlen=SERVER_LOG_LINES)
        self._server_exit: int | None = None
        self._server_ended = threading.Event()
        self._acks: dict[int, threading.Event] = {}
        self._sequence = itertools.count(1)
        self.last_message: str | None = None  # the last control message sent, for the log
        # When (time.monotonic) the last whole control message went into the socket, and the
        # latest such time known to have been taken by the server (see confirm).
        self._written_at = float("-inf")
        self._confirmed_at = float("-inf")
        self.decode_errors = 0
        self._video_size: tuple[int, int] | None = None
        # The phone's capture clock (pts, s) -> ours: the lowest arrival - pts seen.
        self._pts_offset = float("inf")
        self._pts_offset_at = 0.0

    def __repr__(self) -> str:
        return f"ScrcpyAgent({self.serial} {self.params.socket_name})"

    @property
    def alive(self) -> bool:
        return not self._dead.is_set()

    @property
    def video_size(self) -> tuple[int, int] | None:
        """The size of the frames the server sends now (touch coordinates are in it)."""
        return self._video_size

    # --- starting ----------------------------------------------------------------------------
    def start(self) -> None:
        """Push the jar, start the server, open video and control, wait for the first frame.
        Raises `AgentStartError` (everything started is torn down again)."""
        try:
            self._check_device()
            self.driver.push(self.jar, DEVICE_SERVER_PATH)
            self._start_server()
            video = self._connect_video()
            self.attach(video, self._open("scrcpy control"))
            if self.frames.wait_newer(float("-inf"), FIRST_FRAME_TIMEOUT_S) is None:
                raise AgentStartError(self.death or f"no video frame within "
                                      f"{FIRST_FRAME_TIMEOUT_S:.0f} s{self._log_tail()}")
            self.started_at = time.monotonic()
        except AgentStartError as exc:
            self.close(f"start failed: {exc.reason}")
            raise
        except DeviceError as exc:
            self.close(f"start failed: {exc}")
            raise AgentStartError(str(exc), permanent=False) from exc

    def attach(self, video: socket.socket, control: socket.socket) -> None:
        """Serve the server's two sockets: ``video`` past its dummy byte, ``control``. Reader
        threads start; the device meta, codec meta and frames follow on ``video``."""
        self._video, self._control = video, control
        video.settimeout(None)
        control.settimeout(CONTROL_WRITE_TIMEOUT_S)
        for name, target in (("video", self._read_video), ("control", self._read_control)):
            threading.Thread(target=target, name=f"scrcpy-{name}-{self.serial}",
                             daemon=True).start()

    def _check_device(self) -> None:
        sdk = self.driver.sdk_level()
        if sdk < AGENT_MIN_SDK:
            raise AgentStartError(f"Android API {sdk} is older than scrcpy {SCRCPY_VERSION} "
                                  f"runs on (API {AGENT_MIN_SDK}+)", permanent=True)
        width, height = self.driver.window_size()
        self.screen_size = (width, height)

    def _open(self, label: str) -> socket.socket:
        return self.driver.open_stream(self.params.service, label)

    def _start_server(self) -> None:
        command = self.params.shell_command()
        service = ("shell,v2,raw:" if "shell_v2" in self.driver.features else "shell:") + command
        self._server = self.driver.open_stream(service, "scrcpy server")
        self._server.settimeout(None)
        # Read from the start: a server that exits at once (a version mismatch, a bad
        # option) says why there, and the connect loop stops on it.
        threading.Thread(target=self._read_server, name=f"scrcpy-server-{self.serial}",
                         daemon=True).start()

    def _connect_video(self) -> socket.socket:
        """The first socket the server accepts is the video one; it starts with a dummy byte,
        the sign that the server (not just adbd) took the connection."""
        why = "not tried"
        for _ in range(CONNECT_ATTEMPTS):
            if self._server_ended.is_set():
                raise AgentStartError(f"the scrcpy server exited{self._exit_text()}"
                                      f"{self._log_tail()}")
            if self._dead.is_set():
                raise AgentStartError(self.death or "closed")
            try:
                sock = self._open("scrcpy video")
            except DeviceGone as exc:
                raise AgentStartError(str(exc)) from exc
            except DeviceError as exc:
                why = exc.reason
            else:
                try:
                    sock.settimeout(DUMMY_BYTE_TIMEOUT_S)
                    first = sock.recv(1)
                    why = "closed before the dummy byte"
                except OSError as exc:
                    first, why = b"", f"no dummy byte: {exc}"
                if first == DUMMY_BYTE:
                    return sock
                self.driver.release_stream(sock)
                if first:
                    raise AgentStartError(f"the video socket began with {first!r}, not the "
                                          "dummy byte: another program holds the socket?")
            time.sleep(CONNECT_INTERVAL_S)
        raise AgentStartError(f"could not connect to {self.params.socket_name} after "
                              f"{CONNECT_ATTEMPTS} attempts ({why}){self._log_tail()}")

    # --- the reader threads ------------------------------------------------------------------
    def _read_video(self) -> None:
        parser = VideoStreamParser(f"scrcpy server on {self.serial}", dummy_byte=False)
        decoder = H264Decoder()
        sock = self._video
        try:
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    parser.finish()  # a stream cut inside a packet says so
                    self._fail(f"the video stream ended{self._log_tail()}")
                    return
                for item in parser.feed(chunk):
                    self._on_video_item(item, decoder)
        except ProtocolError as exc:
            self._fail(f"bad video stream: {exc.reason}")
        except OSError as exc:
            self._fail(f"video socket: {exc}")
        except Exception as exc:  # a bug here must kill the agent, not leave it half alive
            log.exception("phone=%s scrcpy video reader crashed", self.serial)
            self._fail(f"video reader crashed: {exc!r}")

    def _on_video_item(self, item: Any, decoder: H264Decoder) -> None:
        if isinstance(item, DeviceMeta):
            self.device_name = item.name
        elif isinstance(item, CodecMeta):
            if item.codec_name != "h264":
                raise ProtocolError(f"scrcpy server on {self.serial}",
                                    f"codec {item.codec_name}, asked for h264")
            self.codec = item
        else:
            try:
                frames = decoder.decode(item)
            except DecodeError as exc:
                self._decode_failed(exc)
                return
            for frame in frames:
                self._video_size = (frame.width, frame.height)
                self.frames.put(frame, self._captured_at(frame.pts))

    def _decode_failed(self, exc: DecodeError) -> None:
        """A corrupt packet: frames stop until the next key frame, which RESET_VIDEO asks for
        now (a new config and key frame follow); screenshots meanwhile wait or use screencap."""
        self.decode_errors += 1
        log.warning("phone=%s scrcpy video: corrupt packet (%s); asking the server for a new "
                    "key frame", self.serial, exc)
        try:
            self._write(ResetVideo(), "reset video", sent=False)
        except AgentError:
            pass  # the agent is dead already; its death says why

    def _read_control(self) -> None:
        parser = DeviceMessageParser(f"scrcpy server on {self.serial}")
        sock = self._control
        try:
            while not self._dead.is_set():
                try:
                    chunk = sock.recv(1 << 16)
                except (TimeoutError, socket.timeout):
                    continue  # the timeout bounds writes; reading just waits on
                if not chunk:
                    parser.finish()
                    self._fail(f"the control socket was closed{self._log_tail()}")
                    return
                for message in parser.feed(chunk):
                    if isinstance(message, AckClipboard):
                        event = self._acks.get(message.sequence)
                        if event is not None:
                            event.set()
        except ProtocolError as exc:
            self._fail(f"bad control stream: {exc.reason}")
        except OSError as exc:
            self._fail(f"control socket: {exc}")

    def _read_server(self) -> None:
        """The server's shell stream: its log lines, and its end (the server exited)."""
        sock = self._server
        v2 = "shell_v2" in self.driver.features
        buf = bytearray()
        pending = b""
        try:
            while True:
                chunk = sock.recv(1 << 14)
                if not chunk:
                    break
                if not v2:
                    pending = self._log_lines(pending + chunk)
                    continue
                buf += chunk
                while len(buf) >= _SHELL_V2_HEADER.size:
                    kind, length = _SHELL_V2_HEADER.unpack_from(buf)
                    if len(buf) < _SHELL_V2_HEADER.size + length:
                        break
                    payload = bytes(buf[_SHELL_V2_HEADER.size:_SHELL_V2_HEADER.size + length])
                    del buf[:_SHELL_V2_HEADER.size + length]
                    if kind in (1, 2):
                        pending = self._log_lines(pending + payload)
                    elif kind == 3 and payload:
                        self._server_exit = payload[0]
        except OSError:
            pass
        if pending:
            self._server_log.append(pending.decode("utf-8", "replace"))
        self._server_ended.set()
        self._fail(f"the scrcpy server exited{self._exit_text()}{self._log_tail()}")

    def _log_lines(self, data: bytes) -> bytes:
        *lines, rest = data.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._server_log.append(text)
                log.debug("phone=%s scrcpy: %s", self.serial, text)
        return rest

    def _exit_text(self) -> str:
        return "" if self._server_exit is None else f" (status {self._server_exit})"

    def _log_tail(self, lines: int = 3) -> str:
        # A Java stack trace's frames say where, not what: the lines around them do.
        said = [line.strip() for line in self._server_log
                if not line.strip().startswith("at ") and not _STACK_MORE.match(line.strip())]
        tail = said[-lines:]
        return f"; server said: {' | '.join(tail)}" if tail else ""

    # --- dying -----------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        """The first failure wins: ``on_death`` hears it once, then everything is torn down.
        The death is heard first so that the phone's ``io`` says shell, with the reason, by
        the time the action in flight fails on it (its caller may look at once)."""
        with self._state_lock:
            if self.death is not None:
                return
            self.death = reason
        told = f"{reason} (last control message: {self.last_message})" if self.last_message \
            else reason
        try:
            self.on_death(self, told)
        except Exception:
            log.exception("phone=%s agent death handler failed", self.serial)
        self._dead.set()
        self.frames.close(reason)
        for event in list(self._acks.values()):
            event.set()
        for sock in (self._video, self._control, self._server):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.driver.release_stream(sock)

    def close(self, reason: str = "closed") -> None:
        self._fail(reason)

    # --- acting ------------------------------------------------------------------------------
    def _write(self, message: ControlMessage, label: str, sent: bool) -> None:
        if self._dead.is_set():
            raise AgentError(f"scrcpy agent is dead: {self.death}", sent)
        data = message.serialize()
        with self._write_lock:
            try:
                self._control.sendall(data)
            except OSError as exc:
                # A message cut short is ignored by the server: only whole ones count as sent.
                self._fail(f"control write failed during {label}: {exc}")
                raise AgentError(f"scrcpy control socket failed: {exc}", sent) from exc
            self._written_at = time.monotonic()
        self.last_message = type(message).__name__

    def play(self, label: str, steps: Iterable[Step]) -> None:
        """Write ``steps`` in order (pauses wait, and end early if the agent dies). Pauses count
        from the first step, so a gesture lasts what it should however long the writes take."""
        sent = False
        start, planned = time.monotonic(), 0.0
        for step in steps:
            if isinstance(step, (int, float)):
                planned += step
                if self._dead.wait(max(0.0, start + planned - time.monotonic())):
                    raise AgentError(f"scrcpy agent died during {label}: {self.death}", sent)
                continue
            self._write(step, label, sent)
            sent = True

    def to_video(self, x: int, y: int) -> tuple[int, int]:
        """Screen pixels -> video pixels (the server rounds the video size to multiples of 8)."""
        video, screen = self._video_size, self._oriented_screen()
        if video is None or screen is None or video == screen:
            return int(x), int(y)
        return round(x * video[0] / screen[0]), round(y * video[1] / screen[1])

    def touch(self, label: str, points: list[tuple[int, int]], duration_ms: float) -> None:
        size = self._video_size
        if size is None:
            raise AgentError("no video frame yet: the touch size is unknown", False)
        self.play(label, touch_steps([self.to_video(x, y) for x, y in points], duration_ms, size))

    def type_text(self, text: str) -> None:
        """One line of text: injected as key events when it can be, else pasted."""
        if injectable(text):
            self.play("text", [InjectText(text)])
            return
        sequence = next(self._sequence)
        acked = self._acks[sequence] = threading.Event()
        try:
            self._write(SetClipboard(sequence, text, paste=True), "paste", sent=False)
            written = self._written_at
            if not acked.wait(CLIPBOARD_ACK_TIMEOUT_S) or self._dead.is_set():
                raise AgentError(self.death or f"the clipboard paste was not acknowledged "
                                 f"within {CLIPBOARD_ACK_TIMEOUT_S:.0f} s", True)
            # The server takes messages in order: the ack says it took everything up to here.
            self._confirmed_at = max(self._confirmed_at, written)
        finally:
            self._acks.pop(sequence, None)

    def confirm(self, label: str) -> None:
        """Return once the server is known to have taken the messages written so far: a
        frame it captured `DELIVERY_MARGIN_S` after the last one (it was running when that
        message came in; a still screen's frame is repeated every 100 ms), or none within
        ``frame_timeout_s`` while the agent lives on (an encoder that does not repeat: a dead
        server would have closed its sockets by then). Raises `AgentError` (sent) when the
        agent dies first: a server killed just before the messages arrived dropped them, and
        the written bytes looked sent all the same."""
        written = self._written_at
        if written <= self._confirmed_at:
            return
        if self.frames.wait_dated_after(written + DELIVERY_MARGIN_S,
                                        self.config.frame_timeout_s) is not None:
            self._confirmed_at = max(self._confirmed_at, written)
            return
        if self._dead.is_set():
            raise AgentError(f"scrcpy agent died before the phone was seen to take the "
                             f"{label}: {self.death}", True)

    # --- frames ------------------------------------------------------------------------------
    def _oriented_screen(self) -> tuple[int, int] | None:
        screen, video = self.screen_size, self._video_size
        if screen is None or video is None:
            return screen
        if (video[0] > video[1]) != (screen[0] > screen[1]):
            return screen[1], screen[0]  # rotated: wm size stays in the natural orientation
        return screen

    def _captured_at(self, pts_us: int | None) -> float:
        """When a frame was captured, on time.monotonic: its pts plus the clock offset (the
        lowest arrival - pts seen, i.e. the least delayed frame's). Dating frames by arrival
        would take a frame encoded before an action but delayed past the settle time (a busy
        node, a slow encoder) for a frame of after it: the old screen. The offset may creep
        up by 1 ms/s so clocks drifting apart do not age every frame."""
        now = time.monotonic()
        if pts_us is None:
            return now
        pts = pts_us / 1e6
        allowed = self._pts_offset + (now - self._pts_offset_at) * PTS_OFFSET_CREEP
        self._pts_offset, self._pts_offset_at = min(now - pts, allowed), now
        return pts + self._pts_offset

    def _pixels(self, frame: Any) -> np.ndarray:
        screen = self._oriented_screen()
        return rgba_frame(frame, screen)

    def frame_after(self, after: float, timeout: float) -> np.ndarray | None:
        """The first frame that arrived after ``after`` (time.monotonic), or None."""
        got = self.frames.wait_newer(after, timeout)
        return None if got is None else got[0]


# --- keeping it running --------------------------------------------------------------------------


class AgentKeeper:
    """Keeps one phone's agent running and says which path its actions take.

    ``io`` is "agent" while an agent runs, else "shell" with ``io_reason``. The first start
    and every restart run in a timer thread (never in the phone actor's); a death schedules
    a restart after the `Backoff` delay, and each is logged."""

    def __init__(self, driver: "AgentDevice", config: AgentConfig,
                 on_io: IoCallback | None = None) -> None:
        self.driver = driver
        self.serial = driver.serial
        self.config = config
        self.on_io = on_io
        self.backoff = Backoff(config.backoff_first_s, config.backoff_max_s)
        self.restarts = 0
        self._lock = threading.Lock()
        self._agent: ScrcpyAgent | None = None
        self._timer: threading.Timer | None = None
        self._closed: str | None = None
        self._starting = False
        self._io: tuple[str, str | None] = ("shell", "not started")

    @property
    def io(self) -> str:
        return self._io[0]

    @property
    def io_reason(self) -> str | None:
        return self._io[1]

    def _set_io(self, io: str, reason: str | None) -> None:
        if self._io == (io, reason):
            return
        self._io = (io, reason)
        if self.on_io is not None:
            try:
                self.on_io(io, reason)
            except Exception:
                log.exception("phone=%s io report failed", self.serial)

    def start(self) -> None:
        """Begin: a node-wide reason keeps the shell path (said once); else start in the
        background (the shell path serves until the agent is up)."""
        reason = self.config.shell_reason()
        if reason is not None:
            log.info("phone=%s on the shell path: %s", self.serial, reason)
            self._set_io("shell", reason)
            return
        self._set_io("shell", "scrcpy agent starting")
        self._schedule(0.0)

    def current(self) -> ScrcpyAgent | None:
        """The running agent, or None (the shell path serves)."""
        agent = self._agent
        return agent if agent is not None and agent.alive else None

    def wake(self) -> None:
        """The phone is back (plugged in again): a restart waiting for its back-off runs now."""
        with self._lock:
            waiting = self._timer is not None and self._closed is None
        if waiting:
            self.backoff.reset()
            self._schedule(0.0)

    def close(self, reason: str) -> None:
        with self._lock:
            self._closed = reason
            agent, self._agent = self._agent, None
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if agent is not None:
            agent.close(reason)

    def _schedule(self, delay: float) -> None:
        with self._lock:
            if self._closed is not None:
                return
            if self._timer is not None:
                self._timer.cancel()
            timer = self._timer = threading.Timer(delay, self._attempt)
            timer.name = f"scrcpy-start-{self.serial}"
            timer.daemon = True
        timer.start()

    def _attempt(self) -> None:
        with self._lock:
            if self._closed is not None or self._agent is not None or self._starting:
                return
            self._timer = None  # running: a wake() now has nothing to bring forward
            self._starting = True
        try:
            self._start_one()
        finally:
            with self._lock:
                self._starting = False

    def _start_one(self) -> None:
        agent = ScrcpyAgent(self.driver, self.config.jar, self.config, self._died)
        try:
            agent.start()
        except AgentStartError as exc:
            if exc.permanent:
                log.warning("phone=%s on the shell path: %s", self.serial, exc.reason)
                self._set_io("shell", exc.reason)
                return
            self._restart_later(f"scrcpy agent did not start: {exc.reason}")
            return
        with self._lock:
            if self._closed is not None:
                closed = self._closed
            else:
                closed = None
                self._agent = agent
        if closed is not None:
            agent.close(closed)
            return
        if agent.alive:
            if self.restarts:
                log.warning("phone=%s scrcpy agent restarted (restart %d): agent path",
                            self.serial, self.restarts)
            else:
                log.info("phone=%s scrcpy agent %s running (%s): agent path", self.serial,
                         SCRCPY_VERSION, agent.params.socket_name)
            self._set_io("agent", None)

    def _died(self, agent: ScrcpyAgent, reason: str) -> None:
        with self._lock:
            if agent is not self._agent or self._closed is not None:
                return  # a start that failed (it reports itself) or a closing keeper
            self._agent = None
        if agent.started_at is not None and time.monotonic() - agent.started_at >= STABLE_RUN_S:
            self.backoff.reset()
        self._restart_later(f"scrcpy agent died: {reason}")

    def _restart_later(self, why: str) -> None:
        if self._closed is not None:
            return
        delay = self.backoff.next_delay()
        self.restarts += 1
        log.warning("phone=%s %s; shell path, agent restart %d in %g s", self.serial, why,
                    self.restarts, delay)
        self._set_io("shell", f"{why}; restart {self.restarts} in {delay:g} s")
        self._schedule(delay)
