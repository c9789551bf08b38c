"""The scrcpy 3.3.4 server of a virtual phone: what `app_process / com.genymobile.scrcpy.Server`
does on a real one, speaking the wire format of protocol/scrcpy.py.

Owns, per phone, the running servers (``ScrcpyAgents``: the `app_process` command that starts
one, the `localabstract:scrcpy_<scid>` sockets that reach it, `vphone agent-kill` and
`vphone agent-fault`) and, per server (``ScrcpyServer``), its sockets in upstream's accept order
(video, audio, control; the dummy byte and device meta on the first), the H.264 encoder thread,
the control reader and the faults armed on it.

Followed from upstream (github.com/Genymobile/scrcpy, tag v3.3.4, server/src/main/java/com/
genymobile/scrcpy/): Options.parse (version check and messages, ``max_size & ~7``, unknown
keys only warned about), Server.main (an exception is ``[server] ERROR: msg`` plus its stack
trace on stderr, exit status 1), DesktopConnection.open (the listening socket closes once
every socket is accepted), ScreenCapture (video size = display size ``limit(max_size)``
then ``round8()``), SurfaceEncoder (a key frame every 10 s, the last frame repeated after
100 ms without a new one, pts from 0 in microseconds), PositionMapper (a touch for another
video size is dropped), Controller (key, text, touch, clipboard and BACK_OR_SCREEN_ON
handling, its log lines). Input goes through the phone's own `input` code path
(virtual.commands) with ``"via": "agent"`` in the input log.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

import av
import cv2
import numpy as np

from protocol.errors import ProtocolError
from protocol.scrcpy import (CODEC_CONFIG_ERROR, CODEC_DISABLED, CODEC_H264, COPY_KEY_COPY,
                             COPY_KEY_NONE, DEVICE_SERVER_PATH, DUMMY_BYTE, PACKET_FLAG_CONFIG,
                             PACKET_FLAG_KEY_FRAME, SCRCPY_VERSION,
                             SERVER_CLASS, SERVER_OPTIONS, SOCKET_NAME_PREFIX, AckClipboard,
                             BackOrScreenOn, Clipboard, CodecMeta, ControlMessage,
                             ControlMessageParser, DeviceMeta, GetClipboard, InjectKeycode,
                             InjectText, InjectTouchEvent, ResetVideo, SetClipboard, StartApp,
                             VideoPacket, socket_name)
from virtual.adbd import AdbStream, ServiceHandler, ServiceRefused, StreamClosed
from virtual.commands import KEYCODE_PASTE, PhoneCommands, typable
from virtual.fs import VirtualFS
from virtual.shell import CommandResult, ShellSession, Stdin, command_env, current_session
from virtual.ui import PhoneUI

log = logging.getLogger(__name__)

REPEAT_FRAME_AFTER_S = 0.100  # SurfaceEncoder.REPEAT_FRAME_DELAY_US
KEY_FRAME_INTERVAL_S = 10.0  # SurfaceEncoder.DEFAULT_I_FRAME_INTERVAL
ENCODER_FRAME_RATE = 60  # SurfaceEncoder: KEY_FRAME_RATE, what the rate control plans for
POLL_S = 1 / ENCODER_FRAME_RATE  # how often the encoder thread looks for a new frame
MAX_FRAMES_IN_FLIGHT = 3  # encoded, not yet written: beyond this the encoder waits
KEYCODE_BACK, KEYCODE_COPY, KEYCODE_CUT = 4, 278, 277
ACTION_DOWN, ACTION_UP = 0, 1
MOTION_ACTIONS = {0: "DOWN", 1: "UP", 2: "MOVE", 3: "CANCEL"}
LOG_LEVELS = ("VERBOSE", "DEBUG", "INFO", "WARN", "ERROR")
STATUS_KILLED = 128 + 9  # what the shell reports for a program killed by SIGKILL
STATUS_ABORTED = 128 + 6  # SIGABRT: the runtime aborts on a class it cannot find
# app_process's class path as Android 11 prints it in a ClassNotFoundException.
NATIVE_LIBRARY_DIRS = "nativeLibraryDirectories=[/system/lib64, /system_ext/lib64]"
# `vphone agent-fault FAULT`: what a running server can be made to do wrong, once
# (ScrcpyServer.inject). The video faults take the next media packet (not a config packet).
AGENT_FAULTS = ("corrupt", "truncate", "header", "control-close")
# A packet header no server writes: a config packet with a pts and the key-frame bit, 4 GiB
# long (what a reader finds when it has lost its place in the stream).
BAD_PACKET_HEADER = struct.pack(">QI", PACKET_FLAG_CONFIG | PACKET_FLAG_KEY_FRAME | 0x1234,
                                0xFFFFFFFF)


class AgentPhone(Protocol):
    """What a scrcpy server reads and drives of its phone (virtual.phone.VirtualPhone)."""

    serial: str
    props: dict[str, str]
    fs: VirtualFS
    ui: PhoneUI
    commands: PhoneCommands  # the `input` code path, shared with the agent
    clipboard: str

    def log_input(self, kind: str, **fields: Any) -> None:
        """Append one entry to the input log."""


# --- the start command -------------------------------------------------------------------------


class JavaException(Exception):
    """An exception the Java side throws: its class and message, printed as Java does."""

    def __init__(self, java_class: str, message: str, frames: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.java_class = java_class
        self.message = message
        self.frames = frames

    def stack_trace(self) -> str:
        return "".join([f"{self.java_class}: {self.message}\n"]
                       + [f"\tat {frame}\n" for frame in self.frames])


_PARSE_FRAMES = ("com.genymobile.scrcpy.Options.parse(Options.java:299)",
                 "com.genymobile.scrcpy.Server.internalMain(Server.java:238)",
                 "com.genymobile.scrcpy.Server.main(Server.java:215)",
                 "com.android.internal.os.RuntimeInit.nativeFinishInit(Native Method)",
                 "com.android.internal.os.RuntimeInit.main(RuntimeInit.java:355)")


def _illegal(message: str) -> JavaException:
    return JavaException("java.lang.IllegalArgumentException", message, _PARSE_FRAMES)


def _java_int(value: str, radix: int = 10) -> int:
    """Integer.parseInt: a signed 32-bit integer or NumberFormatException."""
    try:
        number = int(value, radix)
    except ValueError:
        number = None
    if number is None or not -(1 << 31) <= number < (1 << 31) or value.strip() != value:
        suffix = f" under radix {radix}" if radix != 10 else ""
        raise JavaException("java.lang.NumberFormatException",
                            f'For input string: "{value}"{suffix}', _PARSE_FRAMES)
    return number


def _java_bool(value: str) -> bool:
    """Boolean.parseBoolean: "true" in any case, everything else is false."""
    return value.lower() == "true"


@dataclass(frozen=True)
class ServerOptions:
    """The server's options as Options.java parses them (defaults are upstream's)."""

    scid: int = -1
    log_level: str = "INFO"
    video: bool = True
    audio: bool = True
    control: bool = True
    video_codec: str = "h264"
    max_size: int = 0
    max_fps: float = 0.0
    video_bit_rate: int = 8_000_000
    tunnel_forward: bool = False
    clipboard_autosync: bool = True
    send_device_meta: bool = True
    send_frame_meta: bool = True
    send_dummy_byte: bool = True
    send_codec_meta: bool = True
    warnings: tuple[str, ...] = ()  # Ln.w lines the parse printed (unknown options)

    @property
    def socket_name(self) -> str:
        """DesktopConnection.getSocketName: ``scrcpy`` alone without a scid."""
        return SOCKET_NAME_PREFIX if self.scid == -1 else socket_name(self.scid)


def parse_options(args: list[str]) -> ServerOptions:
    """Options.parse: the client version first, then ``key=value`` pairs; raises
    `JavaException` with upstream's message for what upstream refuses."""
    if not args:
        raise _illegal("Missing client version")
    if args[0] != SCRCPY_VERSION:
        raise _illegal(f"The server version ({SCRCPY_VERSION}) does not match the client "
                       f"({args[0]})")
    fields: dict[str, Any] = {}
    warnings: list[str] = []
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep:
            raise _illegal(f'Invalid key=value pair: "{arg}"')
        if key not in SERVER_OPTIONS:
            warnings.append(f"Unknown server option: {key}")
            continue
        fields.update(_parse_option(key, value))
    return replace(ServerOptions(**fields), warnings=tuple(warnings))


def _parse_option(key: str, value: str) -> dict[str, Any]:
    """One known option; options with no effect on a virtual phone are accepted as is."""
    if key == "scid":
        scid = _java_int(value, 16)
        if scid < -1:
            raise _illegal(f"scid may not be negative (except -1 for 'none'): {scid}")
        return {"scid": scid}
    if key == "log_level":
        level = value.upper()
        if level not in LOG_LEVELS:
            raise _illegal(f"No enum constant com.genymobile.scrcpy.util.Ln.Level.{level}")
        return {"log_level": level}
    if key in ("video", "audio", "control", "tunnel_forward", "clipboard_autosync",
               "send_device_meta", "send_frame_meta", "send_dummy_byte", "send_codec_meta"):
        return {key: _java_bool(value)}
    if key == "raw_stream":
        raw = _java_bool(value)
        return {k: False for k in ("send_device_meta", "send_frame_meta", "send_dummy_byte",
                                   "send_codec_meta")} if raw else {}
    if key == "video_codec":
        if value not in ("h264", "h265", "av1"):
            raise _illegal(f"Video codec {value} not supported")
        return {"video_codec": value}
    if key == "max_size":
        return {"max_size": _java_int(value) & ~7}  # a multiple of 8
    if key == "video_bit_rate":
        return {"video_bit_rate": _java_int(value)}
    if key == "max_fps":
        try:
            return {"max_fps": float(value)}
        except ValueError:
            raise _illegal(f'Invalid float value for max_fps: "{value}"') from None
    return {}


def video_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """ScreenCapture's video size: Size.limit(max_size) then Size.round8()."""
    portrait = height > width
    major, minor = (height, width) if portrait else (width, height)
    if max_size and major > max_size:
        major, minor = max_size, max_size * minor // major
    if major % 8 or minor % 8:
        major &= ~7  # down, to stay within the screen
        minor = min((minor + 4) & ~7, major)  # nearest, to keep the aspect ratio
    return (minor, major) if portrait else (major, minor)


# --- output of the shell command ----------------------------------------------------------------


class ServerLog:
    """Ln: ``[server] LEVEL: message`` lines, VERBOSE..INFO on stdout and WARN/ERROR on
    stderr, written to the shell stream as they happen (or collected when the command runs
    where nothing streams, e.g. in a pipe)."""

    def __init__(self, session: ShellSession | None, threshold: str = "INFO") -> None:
        self.threshold = threshold
        self._session = session
        self._out, self._err = bytearray(), bytearray()
        self._queue: asyncio.Queue[tuple[bool, bytes]] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        if session is not None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all(session))

    def enabled(self, level: str) -> bool:
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(self.threshold)

    def line(self, level: str, message: str, error: JavaException | None = None) -> None:
        if not self.enabled(level):
            return
        text = f"[server] {level}: {message}\n" + (error.stack_trace() if error else "")
        self.raw(text, stderr=level in ("WARN", "ERROR"))

    def raw(self, text: str, *, stderr: bool) -> None:
        """Output not from Ln (the runtime's own)."""
        data = text.encode()
        if self._session is None:
            (self._err if stderr else self._out).extend(data)
        else:
            self._queue.put_nowait((stderr, data))

    async def _write_all(self, session: ShellSession) -> None:
        while True:
            stderr, data = await self._queue.get()
            try:
                await (session.write_err if stderr else session.write_out)(data)
            except (StreamClosed, ConnectionError):
                pass  # the caller hung up: the server is stopping
            finally:
                self._queue.task_done()

    async def close(self) -> None:
        """Write what is queued, then stop writing."""
        if self._writer is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout=5)
        except asyncio.TimeoutError:
            pass
        self._writer.cancel()

    def result(self, status: int) -> CommandResult:
        return CommandResult(bytes(self._out), bytes(self._err), status)


# --- faults -------------------------------------------------------------------------------------


def fault_named(name: str) -> str | None:
    """The fault `vphone agent-fault NAME` arms (None for "clear"); ValueError names the
    choices."""
    if name == "clear":
        return None
    if name not in AGENT_FAULTS:
        raise ValueError(f"unknown agent fault {name!r}: expected one of "
                         f"{', '.join(AGENT_FAULTS)} or clear")
    return name


def garbled(data: bytes) -> bytes:
    """``data`` (an Annex-B H.264 packet) with its picture turned to garbage of the same length
    that every H.264 decoder must refuse: what comes before the first slice NAL unit (an SEI)
    and that unit's start code and header byte stay, then its slice header begins with
    first_mb_in_slice = 65534 (past the last macroblock of any phone screen) and the rest is
    filler with no start code in it. Random bytes would not do: now and then they form valid
    slice data, which no decoder can tell from a picture."""
    keep, at = 0, data.find(b"\x00\x00\x01")
    while 0 <= at < len(data) - 3:
        if data[at + 3] & 0x1F in (1, 5):  # a coded slice (5: of an IDR picture)
            keep = at + 4
            break
        at = data.find(b"\x00\x00\x01", at + 3)
    # ue(v) with 15 leading zeros then fifteen 1 bits: 2**15 - 1 + 0x7fff.
    body = b"\x00\x01\xff\xff" + bytes(((i * 37) & 0xFF) | 0x01 for i in range(len(data)))
    return data[:keep] + body[:max(0, len(data) - keep)]


# --- the video encoder --------------------------------------------------------------------------


class H264Encoder:
    """PyAV's libx264 set up as scrcpy's MediaCodec is: H.264 (baseline), ultrafast and
    zerolatency (one packet out per frame in), SPS/PPS as a separate config packet. Shared
    with bench/matcher.py --stream, which measures the matcher on what this encoder sends."""

    def __init__(self, size: tuple[int, int], bit_rate: int) -> None:
        self.size = size
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = size
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(1, 1_000_000)
        # Without a frame rate the rate control assumes a million frames per second (the
        # time base) and starves every frame: the picture decodes as flat grey.
        ctx.framerate = fractions.Fraction(ENCODER_FRAME_RATE, 1)
        ctx.bit_rate = bit_rate
        ctx.gop_size = 1 << 20  # key frames come when asked for (every 10 s), not by count
        # One thread per phone's encoder: a farm's phones already encode in parallel, and
        # x264's own threads (1.5 per core each) cost more than they win at this size.
        ctx.thread_count = 1
        ctx.flags |= av.codec.context.Flags.global_header  # SPS/PPS in extradata
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}
        ctx.open()
        self._ctx = ctx
        # The last picture as converted for x264: a repeat of an unchanged screen (every
        # 100 ms, most of a farm's frames) skips the resize and the colour conversion.
        self._last: tuple[np.ndarray, av.VideoFrame] | None = None

    def config(self) -> VideoPacket:
        return VideoPacket(None, True, False, bytes(self._ctx.extradata))

    def encode(self, rgba: np.ndarray, pts_us: int, key: bool) -> list[VideoPacket]:
        if self._last is not None and self._last[0] is rgba:
            frame = self._last[1]
        else:
            width, height = self.size
            source = rgba
            if rgba.shape[1] != width or rgba.shape[0] != height:
                rgba = cv2.resize(rgba, (width, height), interpolation=cv2.INTER_AREA)
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgba, cv2.COLOR_RGBA2YUV_I420),
                                               format="yuv420p")
            self._last = (source, frame)
        frame.pts = pts_us
        frame.pict_type = (av.video.frame.PictureType.I if key
                           else av.video.frame.PictureType.NONE)
        return [VideoPacket(p.pts, False, bool(p.is_keyframe), bytes(p))
                for p in self._ctx.encode(frame)]

    def close(self) -> None:
        """Free x264's state now rather than at the next garbage collection."""
        self._ctx = None
        self._last = None


@dataclass
class _EncoderThread:
    """The encoder loop, in a thread of its own so no phone's event loop waits for x264:
    looks at the screen every 1/60 s (or 1/max_fps), encodes a frame when it changed and
    repeats the last one after 100 ms without a change. Packets go to ``deliver`` (called in
    this thread); at most `MAX_FRAMES_IN_FLIGHT` frames wait to be written (``written()``
    frees one), beyond that screen changes are not looked at, as a blocked MediaCodec drops
    its input surface's frames."""

    frame: Callable[[], np.ndarray]
    size: tuple[int, int]
    bit_rate: int
    max_fps: float
    deliver: Callable[[list[VideoPacket] | None], None]  # None: the encoder failed
    name: str
    _stop: threading.Event = field(default_factory=threading.Event)
    _reset: threading.Event = field(default_factory=threading.Event)
    _slots: threading.Semaphore = field(
        default_factory=lambda: threading.Semaphore(MAX_FRAMES_IN_FLIGHT))
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"scrcpy-encoder {self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def reset(self) -> None:
        """RESET_VIDEO: a new config packet and key frame."""
        self._reset.set()

    def written(self) -> None:
        self._slots.release()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("encoder %s failed", self.name)
            self.deliver(None)

    def _loop(self) -> None:
        interval = max(POLL_S, 1 / self.max_fps) if self.max_fps > 0 else POLL_S
        encoder: H264Encoder | None = None
        start = time.monotonic()
        last: np.ndarray | None = None
        sent_at = key_at = 0.0
        try:
            while not self._stop.is_set():
                if encoder is None or self._reset.is_set():
                    self._reset.clear()
                    if encoder is not None:
                        encoder.close()
                    encoder, last = H264Encoder(self.size, self.bit_rate), None
                frame = self.frame()
                now = time.monotonic()
                changed = last is None or (frame is not last and not np.array_equal(frame, last))
                if (changed or now - sent_at >= REPEAT_FRAME_AFTER_S) \
                        and self._slots.acquire(timeout=interval):
                    key = last is None or now - key_at >= KEY_FRAME_INTERVAL_S
                    if not changed:
                        frame = last  # equal pixels: the encoder's converted copy serves
                    packets = encoder.encode(frame, round((now - start) * 1e6), key)
                    if last is None:
                        packets.insert(0, encoder.config())
                    if key:
                        key_at = now
                    last, sent_at = frame, now
                    self.deliver(packets)
                self._stop.wait(interval)
        finally:
            if encoder is not None:
                encoder.close()


# --- one server ---------------------------------------------------------------------------------


class ScrcpyServer:
    """One running scrcpy server: its options, its sockets in accept order, the encoder and
    the control reader. Ends when a socket's peer leaves, when stopped (the shell stream
    closed) or when killed (``vphone agent-kill``, the cable pulled)."""

    def __init__(self, phone: AgentPhone, options: ServerOptions, out: ServerLog) -> None:
        self.phone = phone
        self.options = options
        self.out = out
        self.socket_name = options.socket_name
        # Armed by `vphone agent-fault` (inject): a video fault waits for the next media
        # packet; control-close happens as soon as the control socket is served.
        self._video_fault: str | None = None
        self._cut_control = asyncio.Event()
        # DesktopConnection.open accepts in this order, on one listening socket.
        self._slots = [kind for kind, on in (("video", options.video), ("audio", options.audio),
                                             ("control", options.control)) if on]
        self.streams: dict[str, AdbStream] = {}
        self.video_size: tuple[int, int] | None = None
        self.killed = False
        self._ended = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._encoder: _EncoderThread | None = None
        self._session_started = False
        self._keys_down: dict[int, bool] = {}  # keycode -> repeated (a long press)
        self._pointer: int | None = None  # the one pointer the touchscreen follows

    def describe(self) -> str:
        return f"scrcpy server scid={self.options.scid & 0xFFFFFFFF:08x}"

    @property
    def listening(self) -> bool:
        return not self._ended.is_set() and len(self.streams) < len(self._slots)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait(self) -> None:
        await self._ended.wait()

    def start(self) -> None:
        if not self._slots:  # nothing to accept, nothing to do
            self.stop()

    def stop(self) -> None:
        """End the server: sockets close (after their last write), the encoder stops."""
        self._ended.set()
        if self._encoder is not None:
            self._encoder.stop()
        for task in list(self._tasks):
            task.cancel()

    def kill(self) -> None:
        """As `kill -9`: everything stops where it is."""
        self.killed = True
        self.stop()

    def inject(self, fault: str | None) -> None:
        """`vphone agent-fault`: arm one of `AGENT_FAULTS` (None: disarm what has not happened).
        corrupt: the next media packet's payload is garbage (`garbled`); the stream goes on.
        truncate: the next media packet is cut in half and the video socket closes. header:
        `BAD_PACKET_HEADER` instead of the next packet, then nothing more on the video socket.
        control-close: the control socket closes. After a fault that breaks a socket the rest
        of the server runs on until the client hangs up, so the client's first sign of
        trouble is the fault itself, not the server's exit."""
        if fault is None:
            self._video_fault = None
            self._cut_control.clear()
        elif fault == "control-close":
            self._cut_control.set()
        else:
            self._video_fault = fault

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve_socket(self, stream: AdbStream) -> None:
        """One accepted connection: the next socket in accept order, held open until the
        server ends (its service coroutine returning closes the stream)."""
        if not self.listening:
            return
        first = not self.streams
        self.streams[self._slots[len(self.streams)]] = stream
        if first and self.options.send_dummy_byte:
            # So the client may read() to detect a connection error (DesktopConnection).
            await stream.write(DUMMY_BYTE)
        if len(self.streams) == len(self._slots) and not self._session_started:
            self._session_started = True
            self._spawn(self._session())
        await self._ended.wait()

    async def _session(self) -> None:
        """Every socket is accepted: device meta, then the video, audio and control jobs;
        the first one to end ends the server (Server.Completion with a fatal error)."""
        try:
            if self.options.send_device_meta:
                name = self.phone.props.get("ro.product.model", "")
                await self.streams[self._slots[0]].write(DeviceMeta(name).serialize())
            jobs = []
            if "video" in self.streams:
                jobs.append(self._video(self.streams["video"]))
            if "audio" in self.streams:
                jobs.append(self._audio(self.streams["audio"]))
            if "control" in self.streams:
                jobs.append(self._control(self.streams["control"]))
            await _first_of(*jobs)
        except (StreamClosed, ConnectionError):
            pass
        finally:
            self.stop()

    # --- video ------------------------------------------------------------------------------
    async def _video(self, stream: AdbStream) -> None:
        ui = self.phone.ui
        self.video_size = video_size(ui.width, ui.height, self.options.max_size)
        if self.options.video_codec != "h264":
            # SurfaceEncoder: no encoder for the codec is a configuration error.
            self.out.line("ERROR", f"Could not find video encoder for "
                                   f"{self.options.video_codec}")
            await stream.write(CODEC_CONFIG_ERROR.to_bytes(4, "big"))
            return
        if self.options.send_codec_meta:
            await stream.write(CodecMeta(CODEC_H264, *self.video_size).serialize())
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[VideoPacket] | None] = asyncio.Queue()

        def deliver(packets: list[VideoPacket] | None) -> None:  # in the encoder thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, packets)
            except RuntimeError:
                pass  # the loop is closed: the farm stopped under the encoder

        encoder = _EncoderThread(ui.frame_rgba, self.video_size, self.options.video_bit_rate,
                                 self.options.max_fps, deliver,
                                 f"{self.phone.serial} {self.socket_name}")
        self._encoder = encoder
        encoder.start()
        try:
            while (packets := await queue.get()) is not None:
                try:
                    for packet in packets:
                        if not await self._write_packet(stream, packet):
                            encoder.stop()
                            await asyncio.Event().wait()  # until the client hangs up
                finally:
                    encoder.written()
            self.out.line("ERROR", "Encoding error")
        finally:
            encoder.stop()

    async def _write_packet(self, stream: AdbStream, packet: VideoPacket) -> bool:
        """Write one packet, or what an armed video fault makes of it; False: the fault ended
        the video stream."""
        fault = None if packet.config else self._video_fault
        data = packet.serialize() if self.options.send_frame_meta else packet.data
        if fault is None:
            await stream.write(data)
            return True
        self._video_fault = None
        log.info("phone=%s %s: agent fault %s on the packet pts=%s", self.phone.serial,
                 self.describe(), fault, packet.pts)
        if fault == "corrupt":
            bad = packet._replace(data=garbled(packet.data))
            await stream.write(bad.serialize() if self.options.send_frame_meta else bad.data)
            return True
        if fault == "truncate":
            await stream.write(data[:len(data) // 2])
            await stream.close()
            return False
        await stream.write(BAD_PACKET_HEADER)  # header
        return False

    async def _audio(self, stream: AdbStream) -> None:
        """The virtual phone has no sound: the stream is disabled (Streamer
        .writeDisableStream), and the socket stays open as upstream's does."""
        self.out.line("WARN", "Audio disabled: the virtual phone has no audio output")
        if self.options.send_codec_meta:
            await stream.write(CODEC_DISABLED.to_bytes(4, "big"))
        await asyncio.Event().wait()

    # --- control ----------------------------------------------------------------------------
    async def _control(self, stream: AdbStream) -> None:
        """Controller.control (`_read_control`) until the client closes the socket, or until
        `vphone agent-fault control-close` closes it from this side."""
        reading = asyncio.ensure_future(self._read_control(stream))
        cut = asyncio.ensure_future(self._cut_control.wait())
        try:
            done, _ = await asyncio.wait({reading, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reading.cancel()
            cut.cancel()
        if reading in done:
            reading.result()  # StreamClosed and the like end the server as before
            return
        log.info("phone=%s %s: agent fault control-close", self.phone.serial, self.describe())
        await stream.close()
        await asyncio.Event().wait()  # the rest runs on until the client hangs up

    async def _read_control(self, stream: AdbStream) -> None:
        """Messages until the client closes the socket; a message that breaks the layout
        ends it, as it ends upstream's control loop."""
        parser = ControlMessageParser(f"scrcpy client of {self.phone.serial}")
        while chunk := await stream.read_some():
            try:
                messages = parser.feed(chunk)
            except ProtocolError as exc:
                self.out.line("ERROR", f"Controller error: {exc}")
                return
            for message in messages:
                for reply in self.apply(message):
                    await stream.write(reply)

    def apply(self, msg: ControlMessage) -> list[bytes]:
        """Apply one control message as Controller.handleEvent does; returns the device
        messages to send back."""
        if isinstance(msg, InjectKeycode):
            self._key(msg.action, msg.keycode, msg.repeat)
        elif isinstance(msg, InjectText):
            self._text(msg.text)
        elif isinstance(msg, InjectTouchEvent):
            self._touch(msg)
        elif isinstance(msg, BackOrScreenOn):
            self._key(msg.action, KEYCODE_BACK, 0)  # the screen is always on
        elif isinstance(msg, GetClipboard):
            return self._get_clipboard(msg.copy_key)
        elif isinstance(msg, SetClipboard):
            return self._set_clipboard(msg)
        elif isinstance(msg, StartApp):
            self._start_app(msg.name)
        elif isinstance(msg, ResetVideo):
            if self._encoder is not None:
                self.out.line("INFO", "Video capture reset")
                self._encoder.reset()
        # Scrolls, panels, display power, rotation, UHID: nothing on this phone reacts.
        return []

    def _key(self, action: int, code: int, repeat: int) -> None:
        """A DOWN..UP pair is one key press, logged and applied as `input keyevent` does
        (a repeated DOWN makes it a long press); an UP without its DOWN is dropped."""
        if action == ACTION_DOWN:
            self._keys_down[code] = self._keys_down.get(code, False) or repeat > 0
        elif action == ACTION_UP and code in self._keys_down:
            longpress = self._keys_down.pop(code)
            self.phone.commands.press_key(code, longpress=longpress, via="agent")

    def _text(self, text: str) -> None:
        """Controller.injectText: characters without a key are skipped, with a warning."""
        typed = []
        for ch in text:
            if typable(ch):
                typed.append(ch)
            else:
                self.out.line("WARN", f"Could not inject char u+{ord(ch):04x}")
        if typed:
            self.phone.commands.type_text("".join(typed), via="agent")

    def _touch(self, msg: InjectTouchEvent) -> None:
        """Controller.injectTouch through PositionMapper: video pixels to screen pixels;
        the touchscreen follows one pointer (the first one down)."""
        action = MOTION_ACTIONS.get(msg.action)
        if action is None:
            return  # hover and button events: no finger on the screen
        point = self._map(msg.x, msg.y, msg.width, msg.height)
        if point is None:
            return
        if action == "DOWN" and self._pointer is None:
            self._pointer = msg.pointer_id
        if msg.pointer_id != self._pointer:
            self.out.line("VERBOSE", "Ignore touch event of a second pointer")
            return
        if action in ("UP", "CANCEL"):
            self._pointer = None
        self.phone.commands.motion_event(action, *point, via="agent")

    def _map(self, x: int, y: int, width: int, height: int) -> tuple[int, int] | None:
        if self.video_size is None:  # no video: the coordinates are the screen's
            return x, y
        if (width, height) != self.video_size:
            self.out.line("VERBOSE", f"Ignore positional event generated for size "
                                     f"{width}x{height} (current size is "
                                     f"{self.video_size[0]}x{self.video_size[1]})")
            return None
        ui = self.phone.ui
        return int(x * ui.width / width), int(y * ui.height / height)

    def _get_clipboard(self, copy_key: int) -> list[bytes]:
        if copy_key != COPY_KEY_NONE:
            code = KEYCODE_COPY if copy_key == COPY_KEY_COPY else KEYCODE_CUT
            self.phone.commands.press_key(code, via="agent")
        if self.options.clipboard_autosync:
            return []  # upstream sends the clipboard only through autosync then
        return [Clipboard(self.phone.clipboard).serialize()]

    def _set_clipboard(self, msg: SetClipboard) -> list[bytes]:
        self.phone.clipboard = msg.text
        self.out.line("INFO", "Device clipboard set")
        if msg.paste:
            self.phone.commands.press_key(KEYCODE_PASTE, via="agent")
        return [AckClipboard(msg.sequence).serialize()] if msg.sequence else []

    def _start_app(self, name: str) -> None:
        force_stop = name.startswith("+")
        package = name[1:] if force_stop else name
        ui = self.phone.ui
        if package.startswith("?") or package not in ui.packages():
            what = "name" if package.startswith("?") else "package"
            self.out.line("WARN", f'No app found for {what} "{package.lstrip("?")}"')
            return
        self.out.line("INFO", f'Starting app [{package}] on display 0...')
        if force_stop:
            self.phone.log_input("app_stop", package=package, via="agent")
            ui.force_stop(package)
        self.phone.log_input("app_start", package=package, activity=None, via="agent")
        ui.start_app(package)


# --- the phone's agents -------------------------------------------------------------------------


class ScrcpyAgents:
    """The scrcpy servers one phone runs, by socket name: `app_process` starts one for the
    exact command line upstream's client sends, `localabstract:` reaches a listening one,
    `kill_all` drops them (``vphone agent-kill``, an unplug)."""

    def __init__(self, phone: AgentPhone) -> None:
        self.phone = phone
        self.servers: dict[str, ScrcpyServer] = {}

    def connect(self, name: str) -> ServiceHandler:
        """The `localabstract:NAME` service; `ServiceRefused` (connection refused) unless a
        server listens there, so the client retries as upstream's does."""
        server = self.servers.get(name)
        if server is None or not server.listening:
            raise ServiceRefused(f"no server listens on {name}")
        return server.serve_socket

    def kill_all(self) -> list[str]:
        killed = [server.describe() for server in self.servers.values() if not server.ended]
        for server in list(self.servers.values()):
            server.kill()
        return killed

    def inject_fault(self, fault: str) -> list[str]:
        """`vphone agent-fault FAULT`: arm one of `AGENT_FAULTS` on every running server
        ("clear" disarms); their descriptions. ValueError names an unknown fault and arms
        nothing."""
        armed = fault_named(fault)
        running = [server for server in self.servers.values() if not server.ended]
        for server in running:
            server.inject(armed)
        return [server.describe() for server in running]

    async def app_process(self, args: list[str], stdin: Stdin) -> CommandResult:
        """`app_process [vm-options] CMD-DIR CLASS ARGS...` with the class from CLASSPATH."""
        session = current_session()
        out = ServerLog(session)
        try:
            status = await self._app_process(args, out, session)
        finally:
            await out.close()
        return out.result(status)

    async def _app_process(self, args: list[str], out: ServerLog,
                           session: ShellSession | None) -> int:
        rest = [a for a in args if not a.startswith("-")]
        if len(rest) < 2:
            out.raw("Error: no class name or --zygote supplied.\n"
                    "Usage: app_process [java-options] cmd-dir start-class-name [options]\n"
                    "Aborted\n", stderr=True)
            return STATUS_ABORTED
        class_name, main_args = rest[1], args[args.index(rest[1]) + 1:]
        if not self._class_found(class_name):
            out.raw(self._class_not_found(class_name), stderr=True)
            return STATUS_ABORTED
        try:
            options = parse_options(main_args)
        except JavaException as exc:
            out.line("ERROR", exc.message, exc)
            return 1
        for warning in options.warnings:
            out.line("WARN", warning)
        out.threshold = options.log_level
        props = self.phone.props
        out.line("INFO", f"Device: [{props.get('ro.product.manufacturer', '')}] "
                         f"{props.get('ro.product.brand', '')} "
                         f"{props.get('ro.product.model', '')} "
                         f"(Android {props.get('ro.build.version.release', '')})")
        if not options.tunnel_forward:
            # The server would connect to the client's `adb reverse` socket: none here.
            error = JavaException("java.io.IOException", "Connection refused",
                                  ("android.net.LocalSocketImpl.connectLocal(Native Method)",))
            out.line("ERROR", error.message, error)
            return 1
        live = self.servers.get(options.socket_name)
        if live is not None and not live.ended:
            error = JavaException("java.io.IOException", "Address already in use",
                                  ("android.net.LocalSocketImpl.bindLocal(Native Method)",))
            out.line("ERROR", error.message, error)
            return 1
        server = ScrcpyServer(self.phone, options, out)
        self.servers[options.socket_name] = server
        try:
            server.start()
            await _first_of(server.wait(), *([session.hung_up()] if session else []))
        finally:
            server.stop()
            if self.servers.get(options.socket_name) is server:
                del self.servers[options.socket_name]
        return STATUS_KILLED if server.killed else 0

    def _class_found(self, class_name: str) -> bool:
        """Only the scrcpy server exists, and only in the pushed, non-empty jar."""
        classpath = command_env().get("CLASSPATH", "").split(":")
        node = self.phone.fs.stat(DEVICE_SERVER_PATH)
        return (class_name == SERVER_CLASS and DEVICE_SERVER_PATH in classpath
                and node is not None and not node.is_dir and node.size > 0)

    @staticmethod
    def _class_not_found(class_name: str) -> str:
        """What a real phone's shell shows: the runtime aborts on the pending exception."""
        return (f'java.lang.ClassNotFoundException: Didn\'t find class "{class_name}" on '
                f"path: DexPathList[[],{NATIVE_LIBRARY_DIRS}]\n"
                "\tat dalvik.system.BaseDexClassLoader.findClass(BaseDexClassLoader.java:207)\n"
                "\tat java.lang.ClassLoader.loadClass(ClassLoader.java:379)\n"
                "\tat java.lang.ClassLoader.loadClass(ClassLoader.java:312)\n"
                "Aborted\n")


async def _first_of(*aws) -> None:
    """Run ``aws`` until the first one ends, then cancel the others; a peer leaving
    (StreamClosed, ConnectionError) is how jobs normally end, anything else is logged."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        exc = task.exception()
        if exc is not None and not isinstance(exc, (StreamClosed, ConnectionError)):
            log.error("scrcpy server job failed", exc_info=exc)
