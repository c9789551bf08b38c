"""The scrcpy 3.3.4 wire format: server command line, video socket, control and device messages.

Pure (no I/O): callers feed bytes in and write the bytes out themselves. The node's agent
driver uses the client side (`ServerParams`, `VideoStreamParser`, control messages'
``serialize()``, `DeviceMessageParser`); a virtual phone speaking scrcpy uses the server side
(`DeviceMeta`/`CodecMeta`/`VideoPacket` ``serialize()``, `ControlMessageParser`, device
messages' ``serialize()``).

What is pinned
==============
One release, 3.3.4 (`SCRCPY_VERSION`), read at upstream tag v3.3.4, commit
fb6381f5b9bb96f3fa823d899f4c32de2ec84ab3 of github.com/Genymobile/scrcpy. The server refuses
a client whose version argument differs from its own ("The server version (X) does not match
the client (Y)"), and 4.0 changed the video framing (bit 63 became a SESSION flag, CONFIG moved
to bit 62, KEY_FRAME to 61, the codec meta lost width and height) and added control types
18-22: never mix releases. Paths below are inside that repository; ``server/...`` abbreviates
``server/src/main/java/com/genymobile/scrcpy/...``.

All integers are big-endian.

Starting the server [app/src/server.c ``execute_server``; server/.../Options.java ``parse``]
    ``adb shell CLASSPATH=/data/local/tmp/scrcpy-server.jar app_process /
    com.genymobile.scrcpy.Server 3.3.4 scid=%08x log_level=info ... tunnel_forward=true``:
    the version, then ``key=value`` parameters (`SERVER_OPTIONS` lists the ones 3.3.4
    knows; the server only warns "Unknown server option" for another key, so the builder
    refuses one). The scid is 31 random bits (app/src/scrcpy.c ``scrcpy_generate_scid``);
    the server listens on the abstract unix socket
    ``scrcpy_%08x`` (server/.../device/DesktopConnection.java ``getSocketName``), which the adb
    service ``localabstract:scrcpy_%08x`` reaches. Parameter values must not contain shell
    characters (server.c ``validate_string``). The server's defaults that matter here:
    video=true, audio=true (so we pass audio=false), control=true, video_codec=h264.

Sockets [server/.../device/DesktopConnection.java ``open``, ``sendDeviceMeta``]
    With tunnel_forward=true the server accepts, in order: video (if video), audio (if audio),
    control (if control). The first accepted socket gets one dummy byte 0x00, then the device
    meta: the device name in UTF-8, cut at 63 bytes on a character boundary, NUL-padded to
    64 bytes (`DeviceMeta`).

Video stream [server/.../device/Streamer.java; app/src/demuxer.c]
    Codec meta, 12 bytes: codec id u32 (the ASCII name: `CODEC_H264` "h264", `CODEC_H265`
    "h265", `CODEC_AV1` "\\0av1", server/.../video/VideoCodec.java), width u32, height u32
    (`CodecMeta`). A codec id 0 (stream disabled) or 1 (configuration error) comes alone, 4
    bytes (``writeDisableStream``). Then packets: a 12-byte header, ``pts_and_flags`` u64
    (bit 63 `PACKET_FLAG_CONFIG`: codec config, written as the flag alone; bit 62
    `PACKET_FLAG_KEY_FRAME`; the low 62 bits the pts in microseconds) and ``size`` u32, then
    ``size`` payload bytes (`VideoPacket`; H.264/H.265 payloads are Annex-B, and the client
    prepends a config packet to the next media packet before decoding).

Control messages, client -> server [app/src/control_msg.c ``sc_control_msg_serialize``;
server/.../control/ControlMessageReader.java]
    One type byte, then the fields (see each class). Strings are a u32 length (a u8 length for
    UHID names and START_APP) and UTF-8 without a NUL. INJECT_TEXT carries at most 300 bytes,
    SET_CLIPBOARD at most 2^18 - 14 (one message is at most 2^18 bytes); upstream's client cuts
    longer text silently, these classes refuse it instead (`inject_text_messages` splits). The
    touch pressure is u16 fixed point (0xffff = 1.0), scroll amounts i16 fixed point over
    [-16, 16] (app/src/util/binary.h ``sc_float_to_u16fp``, ``sc_float_to_i16fp``). An
    unknown type makes the server's control loop end and the server exit.

Device messages, server -> client, on the control socket [server/.../control/
DeviceMessageWriter.java; app/src/device_msg.c ``sc_device_msg_deserialize``]
    CLIPBOARD (u32 length + UTF-8, at most 2^18 - 5 bytes: the client's receive buffer is
    2^18), ACK_CLIPBOARD (sequence u64, sent for a SET_CLIPBOARD whose sequence is not 0),
    UHID_OUTPUT (id u16, size u16, data). An unknown type is an unrecoverable error.

The byte layouts are checked against upstream's own test vectors (app/tests/
test_control_msg_serialize.c, app/tests/test_device_msg_deserialize.c,
server/src/test/.../control/*Test.java) in tests/unit/test_scrcpy_protocol.py.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Union

from protocol.errors import ProtocolError, ValidationError

SCRCPY_VERSION = "3.3.4"
"""The one scrcpy release this module speaks; the server must be exactly this version."""

UPSTREAM_COMMIT = "fb6381f5b9bb96f3fa823d899f4c32de2ec84ab3"
"""Commit of upstream's tag v3.3.4 the layouts were read from."""

DEVICE_SERVER_PATH = "/data/local/tmp/scrcpy-server.jar"
SERVER_CLASS = "com.genymobile.scrcpy.Server"
SOCKET_NAME_PREFIX = "scrcpy"

DUMMY_BYTE = b"\x00"
DEVICE_NAME_FIELD_LENGTH = 64
CODEC_META_SIZE = 12
PACKET_HEADER_SIZE = 12
PACKET_FLAG_CONFIG = 1 << 63
PACKET_FLAG_KEY_FRAME = 1 << 62
PACKET_PTS_MASK = PACKET_FLAG_KEY_FRAME - 1

CODEC_H264 = 0x68323634  # "h264"
CODEC_H265 = 0x68323635  # "h265"
CODEC_AV1 = 0x00617631  # "\0av1"
VIDEO_CODECS = {"h264": CODEC_H264, "h265": CODEC_H265, "av1": CODEC_AV1}
CODEC_DISABLED = 0  # the device disabled the stream
CODEC_CONFIG_ERROR = 1  # the stream's configuration failed on the device

MAX_VIDEO_PACKET_SIZE = 16 * 1024 * 1024
"""Default bound on one video packet: a 4K key frame at a high bit rate is a few MiB, so a size
beyond this means the stream is out of step (or another protocol is talking)."""

CONTROL_MSG_MAX_SIZE = 1 << 18
INJECT_TEXT_MAX_LENGTH = 300
CLIPBOARD_TEXT_MAX_LENGTH = CONTROL_MSG_MAX_SIZE - 14  # type 1, sequence 8, paste 1, length 4
UHID_NAME_MAX_LENGTH = 127
START_APP_NAME_MAX_LENGTH = 255
DEVICE_MSG_MAX_SIZE = 1 << 18
DEVICE_MSG_TEXT_MAX_LENGTH = DEVICE_MSG_MAX_SIZE - 5  # type 1, length 4

COPY_KEY_NONE, COPY_KEY_COPY, COPY_KEY_CUT = 0, 1, 2
SEQUENCE_INVALID = 0
"""A SET_CLIPBOARD sequence that asks for no ACK_CLIPBOARD."""

POINTER_ID_MOUSE = (1 << 64) - 1
POINTER_ID_GENERIC_FINGER = (1 << 64) - 2
POINTER_ID_VIRTUAL_FINGER = (1 << 64) - 3

U8, U16, U32, U64 = (1 << 8) - 1, (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1

SERVER_OPTIONS = frozenset({
    "scid", "log_level", "video", "audio", "video_codec", "audio_codec", "video_source",
    "audio_source", "audio_dup", "max_size", "video_bit_rate", "audio_bit_rate", "max_fps",
    "angle", "tunnel_forward", "crop", "control", "display_id", "show_touches", "stay_awake",
    "screen_off_timeout", "video_codec_options", "audio_codec_options", "video_encoder",
    "audio_encoder", "power_off_on_close", "clipboard_autosync", "downsize_on_error",
    "cleanup", "power_on", "list_encoders", "list_displays", "list_cameras",
    "list_camera_sizes", "list_apps", "camera_id", "camera_size", "camera_facing",
    "camera_ar", "camera_fps", "camera_high_speed", "new_display", "vd_destroy_content",
    "vd_system_decorations", "capture_orientation", "display_ime_policy", "send_device_meta",
    "send_frame_meta", "send_dummy_byte", "send_codec_meta", "raw_stream",
})
"""Every ``key`` Options.java of 3.3.4 accepts."""

# Options that change the framing VideoStreamParser reads, or that ServerParams sets itself.
_FRAMING_OPTIONS = frozenset({"send_device_meta", "send_frame_meta", "send_dummy_byte",
                              "send_codec_meta", "raw_stream"})
_OWN_OPTIONS = frozenset({"scid", "log_level", "video", "audio", "control", "video_codec",
                          "max_size", "max_fps", "video_bit_rate", "tunnel_forward"})
_SHELL_CHARS = frozenset(" ;'\"*$?&`#\\|<>[]{}()!~\r\n")  # server.c validate_string
LOG_LEVELS = ("verbose", "debug", "info", "warn", "error")


# --- field checks and fixed-point numbers -----------------------------------------------------


def _check_int(where: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(where, f"{value!r} is not an integer in [{low}, {high}]")


def _check_number(where: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValidationError(where, f"{value!r} is not a number in [{low}, {high}]")


def _check_bytes(where: str, value: Any, max_len: int) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) > max_len:
        raise ValidationError(where, f"expected at most {max_len} bytes, got {value!r:.60}")


def _utf8(where: str, text: Any, max_len: int) -> bytes:
    if not isinstance(text, str):
        raise ValidationError(where, f"expected a string, got {type(text).__name__}")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValidationError(where, f"not encodable as UTF-8: {e.reason}") from None
    if len(raw) > max_len:
        raise ValidationError(where, f"{len(raw)} bytes of UTF-8, at most {max_len} fit")
    return raw


def _utf8_cut(raw: bytes, max_len: int) -> int:
    """Length of the longest prefix of ``raw`` within ``max_len`` bytes that does not split a
    character (upstream's ``sc_str_utf8_truncation_index``/``getUtf8TruncationIndex``)."""
    if len(raw) <= max_len:
        return len(raw)
    cut = max_len
    while cut > 0 and raw[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


def _f32(value: float) -> float:
    # Upstream computes in C float: round to float32 first so the truncation matches bit
    # for bit (the scaling by a power of two is then exact in either precision).
    return struct.unpack(">f", struct.pack(">f", value))[0]


def _u16_fixed(value: float) -> int:
    """sc_float_to_u16fp: [0, 1] -> u16, 1.0 -> 0xffff."""
    return min(int(_f32(value) * 65536.0), 0xFFFF)


def _i16_fixed(value: float) -> int:
    """sc_float_to_i16fp: [-1, 1] -> i16, 1.0 -> 0x7fff."""
    return min(int(_f32(value) * 32768.0), 0x7FFF)


def _u16_fixed_to_float(raw: int) -> float:
    """Binary.u16FixedPointToFloat."""
    return 1.0 if raw == 0xFFFF else raw / 65536.0


def _i16_fixed_to_float(raw: int) -> float:
    """Binary.i16FixedPointToFloat."""
    return 1.0 if raw == 0x7FFF else raw / 32768.0


# --- incremental parsing ------------------------------------------------------------------------


class _Incomplete(Exception):
    """Not enough bytes yet for the whole item: wait for more."""


class _Bad(Exception):
    """The bytes break the layout; the message is the reason."""


class _Reader:
    """Reads fields from ``buf`` at ``pos``; raises `_Incomplete` past the end."""

    def __init__(self, buf: bytearray, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def _unpack(self, fmt: str, size: int) -> Any:
        if self.pos + size > len(self.buf):
            raise _Incomplete
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u8(self) -> int:
        return self._unpack(">B", 1)

    def u16(self) -> int:
        return self._unpack(">H", 2)

    def i16(self) -> int:
        return self._unpack(">h", 2)

    def u32(self) -> int:
        return self._unpack(">I", 4)

    def i32(self) -> int:
        return self._unpack(">i", 4)

    def u64(self) -> int:
        return self._unpack(">Q", 8)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _Incomplete
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def text(self, length_bytes: int, max_len: int, what: str) -> str:
        n = {1: self.u8, 2: self.u16, 4: self.u32}[length_bytes]()
        if n > max_len:
            # Checked before waiting for the bytes, so a garbage length fails at once
            # instead of buffering up to 4 GiB.
            raise _Bad(f"{what} length {n} is above {max_len}")
        # Java's new String(bytes, UTF_8) replaces malformed input the same way.
        return self.take(n).decode("utf-8", errors="replace")


class _StreamParser:
    """Buffers chunks and cuts whole items off the front; subclasses read one item."""

    _context: ClassVar[str] = "scrcpy stream"

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._buf = bytearray()
        self._offset = 0  # stream offset of self._buf[0], for error messages

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a whole item."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """Stream offset of the first pending byte (= bytes consumed so far)."""
        return self._offset

    def feed(self, data: bytes) -> list[Any]:
        """Add a chunk of any size; return the items it completed, in stream order.

        Raises `ProtocolError` naming the peer and the item's stream offset when the bytes
        break the layout; the stream cannot be resynchronized after that."""
        self._buf += data
        items: list[Any] = []
        pos = 0
        while pos < len(self._buf):
            reader = _Reader(self._buf, pos)
            try:
                item = self._read_one(reader)
            except _Incomplete:
                break
            except _Bad as e:
                raise self._error(self._offset + pos, str(e)) from None
            pos = reader.pos
            if item is not None:
                items.append(item)
        del self._buf[:pos]
        self._offset += pos
        return items

    def finish(self) -> None:
        """The stream ended: raise `ProtocolError` if it stopped inside an item."""
        if self._buf:
            raise self._error(self._offset, f"the stream ended inside an item (truncated: "
                                            f"{len(self._buf)} bytes pending)")

    def _error(self, offset: int, reason: str) -> ProtocolError:
        return ProtocolError(self.peer, f"{self._context} at offset {offset}: {reason}")

    def _read_one(self, reader: _Reader) -> Any:
        raise NotImplementedError


# --- the video socket ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMeta:
    """The 64-byte device meta: the device name, NUL-padded UTF-8."""

    name: str

    def serialize(self) -> bytes:
        raw = _utf8("DeviceMeta.name", self.name, 1 << 20)
        return raw[:_utf8_cut(raw, DEVICE_NAME_FIELD_LENGTH - 1)].ljust(
            DEVICE_NAME_FIELD_LENGTH, b"\0")

    @classmethod
    def parse(cls, field: bytes) -> DeviceMeta:
        """The name in a 64-byte field (the last byte is forced to NUL, as the client does)."""
        raw = bytes(field[:DEVICE_NAME_FIELD_LENGTH - 1]).split(b"\0", 1)[0]
        return cls(raw.decode("utf-8", errors="replace"))


@dataclass(frozen=True)
class CodecMeta:
    """The video stream's 12-byte codec meta: codec id (see `VIDEO_CODECS`) and size."""

    codec_id: int
    width: int
    height: int

    @property
    def codec_name(self) -> str:
        """"h264", "h265", "av1", or the id in hex when it is none of them."""
        names = {cid: name for name, cid in VIDEO_CODECS.items()}
        return names.get(self.codec_id, f"0x{self.codec_id:08x}")

    def serialize(self) -> bytes:
        return struct.pack(">III", self.codec_id, self.width, self.height)


class VideoPacket(NamedTuple):
    """One packet of the video stream. ``pts`` (microseconds) is None for a config packet."""

    pts: int | None
    config: bool
    key_frame: bool
    data: bytes

    def serialize(self) -> bytes:
        """Header + payload, as Streamer.writeFrameMeta writes them."""
        if self.config:
            flags = PACKET_FLAG_CONFIG
        else:
            _check_int("VideoPacket.pts", self.pts, 0, PACKET_PTS_MASK)
            flags = self.pts | (PACKET_FLAG_KEY_FRAME if self.key_frame else 0)
        return struct.pack(">QI", flags, len(self.data)) + self.data


VideoItem = Union[DeviceMeta, CodecMeta, VideoPacket]


class VideoStreamParser(_StreamParser):
    """The video socket, incrementally: `feed` returns `DeviceMeta`, `CodecMeta`, then
    `VideoPacket` items. ``dummy_byte`` and ``device_meta`` say whether the socket starts with
    them (it does when it is the first socket the server accepted through a forward tunnel)."""

    _context = "scrcpy video stream"

    def __init__(self, peer: str = "scrcpy server", *, dummy_byte: bool = True,
                 device_meta: bool = True,
                 max_packet_size: int = MAX_VIDEO_PACKET_SIZE) -> None:
        super().__init__(peer)
        self._want_dummy = dummy_byte
        self._want_device_meta = device_meta
        self._codec: CodecMeta | None = None
        self.max_packet_size = max_packet_size

    @property
    def codec(self) -> CodecMeta | None:
        """The codec meta once read."""
        return self._codec

    def _read_one(self, reader: _Reader) -> VideoItem | None:
        if self._want_dummy:
            byte = reader.u8()
            if byte != 0:
                raise _Bad(f"dummy byte 0x{byte:02x}, expected 0x00")
            self._want_dummy = False
            return None
        if self._want_device_meta:
            meta = DeviceMeta.parse(reader.take(DEVICE_NAME_FIELD_LENGTH))
            self._want_device_meta = False
            return meta
        if self._codec is None:
            self._codec = self._read_codec_meta(reader)
            return self._codec
        return self._read_packet(reader)

    @staticmethod
    def _read_codec_meta(reader: _Reader) -> CodecMeta:
        codec_id = reader.u32()
        if codec_id == CODEC_DISABLED:
            raise _Bad("the device disabled the stream (codec id 0)")
        if codec_id == CODEC_CONFIG_ERROR:
            raise _Bad("stream configuration error on the device (codec id 1); see its log")
        if codec_id not in VIDEO_CODECS.values():
            name = codec_id.to_bytes(4, "big").decode("latin-1")
            raise _Bad(f"unknown codec id 0x{codec_id:08x} ({name!r}), expected one of "
                       f"{sorted(VIDEO_CODECS)}")
        return CodecMeta(codec_id, reader.u32(), reader.u32())

    def _read_packet(self, reader: _Reader) -> VideoPacket:
        pts_and_flags = reader.u64()
        size = reader.u32()
        config = bool(pts_and_flags & PACKET_FLAG_CONFIG)
        if size == 0:
            raise _Bad("packet size 0 (the server never sends an empty packet)")
        if size > self.max_packet_size:
            raise _Bad(f"packet size {size} is above {self.max_packet_size} (max_packet_size)")
        if config and pts_and_flags != PACKET_FLAG_CONFIG:
            # Streamer writes a config packet's header as the flag alone.
            raise _Bad(f"a config packet with pts or key-frame bits set "
                       f"(pts_and_flags 0x{pts_and_flags:016x})")
        return VideoPacket(pts=None if config else pts_and_flags & PACKET_PTS_MASK,
                           config=config,
                           key_frame=bool(pts_and_flags & PACKET_FLAG_KEY_FRAME),
                           data=reader.take(size))


# --- control messages, client -> server ---------------------------------------------------------


class ControlMessage:
    """Base of the messages the client sends on the control socket."""

    TYPE: ClassVar[int]

    def serialize(self) -> bytes:
        """The message's bytes on the control socket."""
        return bytes([self.TYPE]) + self._body()

    def _body(self) -> bytes:
        return b""

    @classmethod
    def _read(cls, reader: _Reader) -> ControlMessage:
        return cls()


@dataclass(frozen=True)
class InjectKeycode(ControlMessage):
    """Type 0: a key event (action 0 down, 1 up; Android keycode and meta state)."""

    TYPE: ClassVar[int] = 0
    action: int
    keycode: int
    repeat: int = 0
    metastate: int = 0

    def __post_init__(self) -> None:
        _check_int("InjectKeycode.action", self.action, 0, U8)
        _check_int("InjectKeycode.keycode", self.keycode, 0, U32)
        _check_int("InjectKeycode.repeat", self.repeat, 0, U32)
        _check_int("InjectKeycode.metastate", self.metastate, 0, U32)

    def _body(self) -> bytes:
        return struct.pack(">BIII", self.action, self.keycode, self.repeat, self.metastate)

    @classmethod
    def _read(cls, reader: _Reader) -> InjectKeycode:
        return cls(reader.u8(), reader.u32(), reader.u32(), reader.u32())


@dataclass(frozen=True)
class InjectText(ControlMessage):
    """Type 1: text typed through key events, at most 300 bytes of UTF-8. Characters the
    device's key map lacks are not typed; use `SetClipboard` with paste for those."""

    TYPE: ClassVar[int] = 1
    text: str

    def __post_init__(self) -> None:
        _utf8("InjectText.text", self.text, INJECT_TEXT_MAX_LENGTH)

    def _body(self) -> bytes:
        raw = self.text.encode("utf-8")
        return struct.pack(">I", len(raw)) + raw

    @classmethod
    def _read(cls, reader: _Reader) -> InjectText:
        # The server reads any u32 length; the 300-byte bound is the client's.
        return cls(reader.text(4, INJECT_TEXT_MAX_LENGTH, "inject text"))


def inject_text_messages(text: str) -> list[InjectText]:
    """``text`` as `InjectText` messages of at most 300 bytes each, split between
    characters."""
    raw = _utf8("InjectText.text", text, 1 << 30)
    parts = []
    while raw:
        cut = _utf8_cut(raw, INJECT_TEXT_MAX_LENGTH)
        parts.append(InjectText(raw[:cut].decode("utf-8")))
        raw = raw[cut:]
    return parts


def _check_position(owner: str, x: int, y: int, width: int, height: int) -> None:
    _check_int(f"{owner}.x", x, I32_MIN, I32_MAX)
    _check_int(f"{owner}.y", y, I32_MIN, I32_MAX)
    _check_int(f"{owner}.width", width, 0, U16)
    _check_int(f"{owner}.height", height, 0, U16)


@dataclass(frozen=True)
class InjectTouchEvent(ControlMessage):
    """Type 2, 32 bytes: a touch (action 0 down, 1 up, 2 move, ...). ``width``/``height``
    must equal the current video size or the server drops the event; x/y are video pixels.
    ``pressure`` is in [0, 1]."""

    TYPE: ClassVar[int] = 2
    action: int
    pointer_id: int
    x: int
    y: int
    width: int
    height: int
    pressure: float = 1.0
    action_button: int = 0
    buttons: int = 0

    def __post_init__(self) -> None:
        _check_int("InjectTouchEvent.action", self.action, 0, U8)
        _check_int("InjectTouchEvent.pointer_id", self.pointer_id, 0, U64)
        _check_position("InjectTouchEvent", self.x, self.y, self.width, self.height)
        _check_number("InjectTouchEvent.pressure", self.pressure, 0.0, 1.0)
        _check_int("InjectTouchEvent.action_button", self.action_button, 0, U32)
        _check_int("InjectTouchEvent.buttons", self.buttons, 0, U32)

    def _body(self) -> bytes:
        return struct.pack(">BQiiHHHII", self.action, self.pointer_id, self.x, self.y,
                           self.width, self.height, _u16_fixed(self.pressure),
                           self.action_button, self.buttons)

    @classmethod
    def _read(cls, reader: _Reader) -> InjectTouchEvent:
        return cls(action=reader.u8(), pointer_id=reader.u64(), x=reader.i32(),
                   y=reader.i32(), width=reader.u16(), height=reader.u16(),
                   pressure=_u16_fixed_to_float(reader.u16()), action_button=reader.u32(),
                   buttons=reader.u32())


@dataclass(frozen=True)
class InjectScrollEvent(ControlMessage):
    """Type 3: a scroll at a position; ``hscroll``/``vscroll`` in [-16, 16] (upstream's
    client clamps, this class refuses values outside)."""

    TYPE: ClassVar[int] = 3
    x: int
    y: int
    width: int
    height: int
    hscroll: float
    vscroll: float
    buttons: int = 0

    def __post_init__(self) -> None:
        _check_position("InjectScrollEvent", self.x, self.y, self.width, self.height)
        _check_number("InjectScrollEvent.hscroll", self.hscroll, -16.0, 16.0)
        _check_number("InjectScrollEvent.vscroll", self.vscroll, -16.0, 16.0)
        _check_int("InjectScrollEvent.buttons", self.buttons, 0, U32)

    def _body(self) -> bytes:
        # Upstream divides by 16 to use the [-1, 1] fixed point (exact: a power of two).
        hscroll = _i16_fixed(_f32(self.hscroll) / 16)
        vscroll = _i16_fixed(_f32(self.vscroll) / 16)
        return struct.pack(">iiHHhhI", self.x, self.y, self.width, self.height, hscroll,
                           vscroll, self.buttons)

    @classmethod
    def _read(cls, reader: _Reader) -> InjectScrollEvent:
        return cls(x=reader.i32(), y=reader.i32(), width=reader.u16(), height=reader.u16(),
                   hscroll=_i16_fixed_to_float(reader.i16()) * 16,
                   vscroll=_i16_fixed_to_float(reader.i16()) * 16, buttons=reader.u32())


@dataclass(frozen=True)
class BackOrScreenOn(ControlMessage):
    """Type 4: BACK, or power the screen on when it is off (only on action 0, down)."""

    TYPE: ClassVar[int] = 4
    action: int

    def __post_init__(self) -> None:
        _check_int("BackOrScreenOn.action", self.action, 0, U8)

    def _body(self) -> bytes:
        return bytes([self.action])

    @classmethod
    def _read(cls, reader: _Reader) -> BackOrScreenOn:
        return cls(reader.u8())


@dataclass(frozen=True)
class ExpandNotificationPanel(ControlMessage):
    """Type 5, no fields."""

    TYPE: ClassVar[int] = 5


@dataclass(frozen=True)
class ExpandSettingsPanel(ControlMessage):
    """Type 6, no fields."""

    TYPE: ClassVar[int] = 6


@dataclass(frozen=True)
class CollapsePanels(ControlMessage):
    """Type 7, no fields."""

    TYPE: ClassVar[int] = 7


@dataclass(frozen=True)
class GetClipboard(ControlMessage):
    """Type 8: ask for the device clipboard (answered by `Clipboard`), after pressing COPY
    or CUT when ``copy_key`` says so."""

    TYPE: ClassVar[int] = 8
    copy_key: int = COPY_KEY_NONE

    def __post_init__(self) -> None:
        _check_int("GetClipboard.copy_key", self.copy_key, 0, U8)

    def _body(self) -> bytes:
        return bytes([self.copy_key])

    @classmethod
    def _read(cls, reader: _Reader) -> GetClipboard:
        return cls(reader.u8())


@dataclass(frozen=True)
class SetClipboard(ControlMessage):
    """Type 9: set the device clipboard, and paste it when ``paste``. A ``sequence`` other
    than 0 asks for an `AckClipboard` carrying it."""

    TYPE: ClassVar[int] = 9
    sequence: int
    text: str
    paste: bool = False

    def __post_init__(self) -> None:
        _check_int("SetClipboard.sequence", self.sequence, 0, U64)
        _utf8("SetClipboard.text", self.text, CLIPBOARD_TEXT_MAX_LENGTH)
        if not isinstance(self.paste, bool):
            raise ValidationError("SetClipboard.paste", f"expected a bool, got {self.paste!r}")

    def _body(self) -> bytes:
        raw = self.text.encode("utf-8")
        return struct.pack(">QBI", self.sequence, self.paste, len(raw)) + raw

    @classmethod
    def _read(cls, reader: _Reader) -> SetClipboard:
        sequence, paste = reader.u64(), reader.u8() != 0
        return cls(sequence, reader.text(4, CLIPBOARD_TEXT_MAX_LENGTH, "clipboard"), paste)


@dataclass(frozen=True)
class SetDisplayPower(ControlMessage):
    """Type 10: turn the physical display on or off (mirroring goes on)."""

    TYPE: ClassVar[int] = 10
    on: bool

    def __post_init__(self) -> None:
        if not isinstance(self.on, bool):
            raise ValidationError("SetDisplayPower.on", f"expected a bool, got {self.on!r}")

    def _body(self) -> bytes:
        return bytes([self.on])

    @classmethod
    def _read(cls, reader: _Reader) -> SetDisplayPower:
        return cls(reader.u8() != 0)


@dataclass(frozen=True)
class RotateDevice(ControlMessage):
    """Type 11, no fields."""

    TYPE: ClassVar[int] = 11


@dataclass(frozen=True)
class UhidCreate(ControlMessage):
    """Type 12: create a virtual HID device (``name`` at most 127 bytes)."""

    TYPE: ClassVar[int] = 12
    id: int
    vendor_id: int
    product_id: int
    name: str
    report_desc: bytes

    def __post_init__(self) -> None:
        _check_int("UhidCreate.id", self.id, 0, U16)
        _check_int("UhidCreate.vendor_id", self.vendor_id, 0, U16)
        _check_int("UhidCreate.product_id", self.product_id, 0, U16)
        _utf8("UhidCreate.name", self.name, UHID_NAME_MAX_LENGTH)
        _check_bytes("UhidCreate.report_desc", self.report_desc, U16)

    def _body(self) -> bytes:
        name = self.name.encode("utf-8")
        return (struct.pack(">HHHB", self.id, self.vendor_id, self.product_id, len(name))
                + name + struct.pack(">H", len(self.report_desc)) + bytes(self.report_desc))

    @classmethod
    def _read(cls, reader: _Reader) -> UhidCreate:
        id_, vendor_id, product_id = reader.u16(), reader.u16(), reader.u16()
        name = reader.text(1, UHID_NAME_MAX_LENGTH, "UHID name")
        return cls(id_, vendor_id, product_id, name, reader.take(reader.u16()))


@dataclass(frozen=True)
class UhidInput(ControlMessage):
    """Type 13: an input report for the HID device ``id``."""

    TYPE: ClassVar[int] = 13
    id: int
    data: bytes

    def __post_init__(self) -> None:
        _check_int("UhidInput.id", self.id, 0, U16)
        _check_bytes("UhidInput.data", self.data, U16)

    def _body(self) -> bytes:
        return struct.pack(">HH", self.id, len(self.data)) + bytes(self.data)

    @classmethod
    def _read(cls, reader: _Reader) -> UhidInput:
        id_ = reader.u16()
        return cls(id_, reader.take(reader.u16()))


@dataclass(frozen=True)
class UhidDestroy(ControlMessage):
    """Type 14: remove the HID device ``id``."""

    TYPE: ClassVar[int] = 14
    id: int

    def __post_init__(self) -> None:
        _check_int("UhidDestroy.id", self.id, 0, U16)

    def _body(self) -> bytes:
        return struct.pack(">H", self.id)

    @classmethod
    def _read(cls, reader: _Reader) -> UhidDestroy:
        return cls(reader.u16())


@dataclass(frozen=True)
class OpenHardKeyboardSettings(ControlMessage):
    """Type 15, no fields."""

    TYPE: ClassVar[int] = 15


@dataclass(frozen=True)
class StartApp(ControlMessage):
    """Type 16: start an app by package name (at most 255 bytes). The server reads a leading
    ``+`` as "force-stop first" and ``?`` as "find by app label" (Controller.startApp)."""

    TYPE: ClassVar[int] = 16
    name: str

    def __post_init__(self) -> None:
        _utf8("StartApp.name", self.name, START_APP_NAME_MAX_LENGTH)

    def _body(self) -> bytes:
        raw = self.name.encode("utf-8")
        return bytes([len(raw)]) + raw

    @classmethod
    def _read(cls, reader: _Reader) -> StartApp:
        return cls(reader.text(1, START_APP_NAME_MAX_LENGTH, "app name"))


@dataclass(frozen=True)
class ResetVideo(ControlMessage):
    """Type 17: restart the encoder (a new config packet and key frame follow)."""

    TYPE: ClassVar[int] = 17


CONTROL_MESSAGE_TYPES: dict[int, type[ControlMessage]] = {cls.TYPE: cls for cls in (
    InjectKeycode, InjectText, InjectTouchEvent, InjectScrollEvent, BackOrScreenOn,
    ExpandNotificationPanel, ExpandSettingsPanel, CollapsePanels, GetClipboard, SetClipboard,
    SetDisplayPower, RotateDevice, UhidCreate, UhidInput, UhidDestroy,
    OpenHardKeyboardSettings, StartApp, ResetVideo)}


class ControlMessageParser(_StreamParser):
    """The server side of the control socket: bytes in, `ControlMessage` items out (what
    ControlMessageReader.java reads). An unknown type is a `ProtocolError`, as it ends the
    real server."""

    _context = "scrcpy control stream"

    def __init__(self, peer: str = "scrcpy client") -> None:
        super().__init__(peer)

    def _read_one(self, reader: _Reader) -> ControlMessage:
        kind = reader.u8()
        cls = CONTROL_MESSAGE_TYPES.get(kind)
        if cls is None:
            raise _Bad(f"unknown control message type {kind} (scrcpy {SCRCPY_VERSION} has "
                       f"0-{max(CONTROL_MESSAGE_TYPES)})")
        try:
            return cls._read(reader)
        except ValidationError as e:
            raise _Bad(str(e)) from None


# --- device messages, server -> client ----------------------------------------------------------


class DeviceMessage:
    """Base of the messages the server sends on the control socket."""

    TYPE: ClassVar[int]

    def serialize(self) -> bytes:
        """The message's bytes, as DeviceMessageWriter.java writes them."""
        return bytes([self.TYPE]) + self._body()

    def _body(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True)
class Clipboard(DeviceMessage):
    """Type 0: the device clipboard's text (answer to `GetClipboard`, or a change when
    clipboard_autosync is on)."""

    TYPE: ClassVar[int] = 0
    text: str

    def _body(self) -> bytes:
        raw = _utf8("Clipboard.text", self.text, DEVICE_MSG_TEXT_MAX_LENGTH)
        return struct.pack(">I", len(raw)) + raw


@dataclass(frozen=True)
class AckClipboard(DeviceMessage):
    """Type 1: the `SetClipboard` with this sequence was applied."""

    TYPE: ClassVar[int] = 1
    sequence: int

    def _body(self) -> bytes:
        _check_int("AckClipboard.sequence", self.sequence, 0, U64)
        return struct.pack(">Q", self.sequence)


@dataclass(frozen=True)
class UhidOutput(DeviceMessage):
    """Type 2: an output report of the HID device ``id``."""

    TYPE: ClassVar[int] = 2
    id: int
    data: bytes

    def _body(self) -> bytes:
        _check_int("UhidOutput.id", self.id, 0, U16)
        _check_bytes("UhidOutput.data", self.data, U16)
        return struct.pack(">HH", self.id, len(self.data)) + bytes(self.data)


class DeviceMessageParser(_StreamParser):
    """The client side of the control socket: bytes in, `Clipboard`, `AckClipboard` and
    `UhidOutput` items out (sc_device_msg_deserialize, incrementally)."""

    _context = "scrcpy device stream"

    def __init__(self, peer: str = "scrcpy server") -> None:
        super().__init__(peer)

    def _read_one(self, reader: _Reader) -> DeviceMessage:
        kind = reader.u8()
        if kind == Clipboard.TYPE:
            return Clipboard(reader.text(4, DEVICE_MSG_TEXT_MAX_LENGTH, "clipboard"))
        if kind == AckClipboard.TYPE:
            return AckClipboard(reader.u64())
        if kind == UhidOutput.TYPE:
            id_ = reader.u16()
            return UhidOutput(id_, reader.take(reader.u16()))
        raise _Bad(f"unknown device message type {kind} (scrcpy {SCRCPY_VERSION} has 0-2)")


# --- starting the server ------------------------------------------------------------------------


def new_scid() -> int:
    """A random session id: 31 bits, so it stays positive in the server's Java int."""
    return secrets.randbits(31)


def socket_name(scid: int) -> str:
    """The abstract unix socket the server listens on for ``scid``."""
    return f"{SOCKET_NAME_PREFIX}_{scid:08x}"


def _check_value(where: str, value: str) -> None:
    bad = sorted(set(value) & _SHELL_CHARS)
    if bad or not value:
        raise ValidationError(where, f"{value!r}: empty or has shell characters {bad}")


@dataclass(frozen=True)
class ServerParams:
    """The server's start command for one session. ``extra`` adds other 3.3.4 options as
    (key, value) pairs; options that change the framing this module parses are refused."""

    scid: int
    log_level: str = "info"
    video: bool = True
    audio: bool = False
    control: bool = True
    video_codec: str = "h264"
    max_size: int = 0  # 0: the device's size
    max_fps: float = 0  # 0: no limit
    video_bit_rate: int = 0  # 0: the server's default (8 Mbps)
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_int("ServerParams.scid", self.scid, 0, 0x7FFFFFFF)
        if self.log_level not in LOG_LEVELS:
            raise ValidationError("ServerParams.log_level",
                                  f"{self.log_level!r} is not one of {list(LOG_LEVELS)}")
        if self.video_codec not in VIDEO_CODECS:
            raise ValidationError("ServerParams.video_codec",
                                  f"{self.video_codec!r} is not one of {sorted(VIDEO_CODECS)}")
        _check_int("ServerParams.max_size", self.max_size, 0, U16)
        _check_number("ServerParams.max_fps", self.max_fps, 0, 1000)
        _check_int("ServerParams.video_bit_rate", self.video_bit_rate, 0, I32_MAX)
        for key, value in self.extra:
            self._check_extra(key, value)

    @staticmethod
    def _check_extra(key: str, value: str) -> None:
        where = f"ServerParams.extra[{key!r}]"
        if key not in SERVER_OPTIONS:
            raise ValidationError(where, f"scrcpy {SCRCPY_VERSION} has no option {key!r}")
        if key in _OWN_OPTIONS:
            raise ValidationError(where, "set through its own field of ServerParams")
        if key in _FRAMING_OPTIONS:
            raise ValidationError(where, "changes the stream framing this module parses")
        _check_value(where, str(value))

    @property
    def socket_name(self) -> str:
        return socket_name(self.scid)

    @property
    def service(self) -> str:
        """The adb device service that connects to the server's socket."""
        return f"localabstract:{self.socket_name}"

    def args(self) -> list[str]:
        """The ``adb shell`` arguments, in upstream's order (server.c ``execute_server``)."""
        args = [f"CLASSPATH={DEVICE_SERVER_PATH}", "app_process", "/", SERVER_CLASS,
                SCRCPY_VERSION, f"scid={self.scid:08x}", f"log_level={self.log_level}"]
        if not self.video:
            args.append("video=false")
        if self.video_bit_rate:
            args.append(f"video_bit_rate={self.video_bit_rate}")
        if not self.audio:
            args.append("audio=false")
        if self.video_codec != "h264":
            args.append(f"video_codec={self.video_codec}")
        if self.max_size:
            args.append(f"max_size={self.max_size}")
        if self.max_fps:
            args.append(f"max_fps={self.max_fps:g}")
        args.append("tunnel_forward=true")
        if not self.control:
            args.append("control=false")
        args.extend(f"{key}={value}" for key, value in self.extra)
        return args

    def shell_command(self) -> str:
        """The one shell command line (the values hold no shell characters)."""
        return " ".join(self.args())
