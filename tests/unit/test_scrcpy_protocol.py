"""scrcpy 3.3.4 wire format: every control and device message against upstream's own test
vectors, the video socket parser (chunked input, flags, truncation, bad headers) and the
server command line.

The byte arrays below are copied from upstream at tag v3.3.4 (commit fb6381f5): the client's
app/tests/test_control_msg_serialize.c and app/tests/test_device_msg_deserialize.c, and the
server's server/src/test/java/com/genymobile/scrcpy/control/*Test.java. Each test names the
upstream test it mirrors.
"""

from __future__ import annotations

import struct

import pytest

from protocol.errors import ProtocolError, ValidationError
from protocol.scrcpy import (
    CLIPBOARD_TEXT_MAX_LENGTH,
    CODEC_AV1,
    CODEC_H264,
    CODEC_H265,
    CONTROL_MSG_MAX_SIZE,
    COPY_KEY_COPY,
    DEVICE_MSG_MAX_SIZE,
    DEVICE_MSG_TEXT_MAX_LENGTH,
    INJECT_TEXT_MAX_LENGTH,
    PACKET_FLAG_CONFIG,
    PACKET_FLAG_KEY_FRAME,
    SCRCPY_VERSION,
    AckClipboard,
    BackOrScreenOn,
    Clipboard,
    CodecMeta,
    CollapsePanels,
    ControlMessageParser,
    DeviceMessageParser,
    DeviceMeta,
    ExpandNotificationPanel,
    ExpandSettingsPanel,
    GetClipboard,
    InjectKeycode,
    InjectScrollEvent,
    InjectText,
    InjectTouchEvent,
    OpenHardKeyboardSettings,
    ResetVideo,
    RotateDevice,
    ServerParams,
    SetClipboard,
    SetDisplayPower,
    StartApp,
    UhidCreate,
    UhidDestroy,
    UhidInput,
    UhidOutput,
    VideoPacket,
    VideoStreamParser,
    inject_text_messages,
    new_scid,
    socket_name,
)

# Android constants the upstream tests use (android/keycodes.h, android/input.h).
AKEY_EVENT_ACTION_UP = 1
AKEYCODE_ENTER = 66
AMETA_SHIFT_ON = 0x01
AMETA_SHIFT_LEFT_ON = 0x40
AMOTION_EVENT_ACTION_DOWN = 0
AMOTION_EVENT_BUTTON_PRIMARY = 1


def roundtrip(message: object) -> None:
    """The server-side reader gives back the same message from its bytes."""
    parser = ControlMessageParser()
    assert parser.feed(message.serialize()) == [message]
    assert parser.pending == 0


# --- control messages, client -> device: app/tests/test_control_msg_serialize.c ----------


def test_inject_keycode() -> None:
    """upstream: test_serialize_inject_keycode"""
    msg = InjectKeycode(action=AKEY_EVENT_ACTION_UP, keycode=AKEYCODE_ENTER, repeat=5,
                        metastate=AMETA_SHIFT_ON | AMETA_SHIFT_LEFT_ON)
    assert msg.serialize() == bytes([
        0x00,  # SC_CONTROL_MSG_TYPE_INJECT_KEYCODE
        0x01,  # AKEY_EVENT_ACTION_UP
        0x00, 0x00, 0x00, 0x42,  # AKEYCODE_ENTER
        0x00, 0x00, 0x00, 0x05,  # repeat
        0x00, 0x00, 0x00, 0x41,  # AMETA_SHIFT_ON | AMETA_SHIFT_LEFT_ON
    ])
    roundtrip(msg)


def test_inject_text() -> None:
    """upstream: test_serialize_inject_text"""
    msg = InjectText("hello, world!")
    assert msg.serialize() == bytes([
        0x01,  # SC_CONTROL_MSG_TYPE_INJECT_TEXT
        0x00, 0x00, 0x00, 0x0d,  # text length
    ]) + b"hello, world!"
    roundtrip(msg)


def test_inject_text_long() -> None:
    """upstream: test_serialize_inject_text_long (exactly the 300-byte maximum)."""
    msg = InjectText("a" * INJECT_TEXT_MAX_LENGTH)
    assert INJECT_TEXT_MAX_LENGTH == 300
    assert msg.serialize() == bytes([0x01, 0x00, 0x00, 0x01, 0x2c]) + b"a" * 300
    roundtrip(msg)


def test_inject_text_over_the_limit_is_refused_and_splits_on_character_boundaries() -> None:
    # upstream's client truncates silently; a lost tail would go unnoticed in a workflow.
    with pytest.raises(ValidationError, match=r"InjectText\.text.*301 bytes.*300"):
        InjectText("a" * 301)
    text = "é" * 200  # 400 bytes, 2 per character: no split may cut one in half
    parts = inject_text_messages(text)
    assert [len(p.text.encode()) for p in parts] == [300, 100]
    assert "".join(p.text for p in parts) == text
    assert inject_text_messages("") == []


def test_inject_text_non_ascii_as_the_server_reads_it() -> None:
    """upstream: ControlMessageReaderTest.testParseTextEvent ("testé" in UTF-8)."""
    data = bytes([0x01, 0, 0, 0, 6]) + "testé".encode()
    assert ControlMessageParser().feed(data) == [InjectText("testé")]


def test_inject_touch_event() -> None:
    """upstream: test_serialize_inject_touch_event"""
    msg = InjectTouchEvent(action=AMOTION_EVENT_ACTION_DOWN, pointer_id=0x1234567887654321,
                           x=100, y=200, width=1080, height=1920, pressure=1.0,
                           action_button=AMOTION_EVENT_BUTTON_PRIMARY,
                           buttons=AMOTION_EVENT_BUTTON_PRIMARY)
    assert msg.serialize() == bytes([
        0x02,  # SC_CONTROL_MSG_TYPE_INJECT_TOUCH_EVENT
        0x00,  # AKEY_EVENT_ACTION_DOWN
        0x12, 0x34, 0x56, 0x78, 0x87, 0x65, 0x43, 0x21,  # pointer id
        0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0xc8,  # 100 200
        0x04, 0x38, 0x07, 0x80,  # 1080 1920
        0xff, 0xff,  # pressure
        0x00, 0x00, 0x00, 0x01,  # AMOTION_EVENT_BUTTON_PRIMARY (action button)
        0x00, 0x00, 0x00, 0x01,  # AMOTION_EVENT_BUTTON_PRIMARY (buttons)
    ])
    assert len(msg.serialize()) == 32
    roundtrip(msg)


def test_inject_touch_event_fields_are_checked() -> None:
    with pytest.raises(ValidationError, match=r"InjectTouchEvent\.pressure"):
        InjectTouchEvent(action=0, pointer_id=0, x=1, y=1, width=10, height=10, pressure=1.5)
    with pytest.raises(ValidationError, match=r"InjectTouchEvent\.width"):
        InjectTouchEvent(action=0, pointer_id=0, x=1, y=1, width=70000, height=10)
    # Half pressure is 0x8000 in u16 fixed point, as sc_float_to_u16fp computes it.
    half = InjectTouchEvent(action=0, pointer_id=0, x=0, y=0, width=1, height=1, pressure=0.5)
    assert half.serialize()[22:24] == b"\x80\x00"


def test_inject_scroll_event() -> None:
    """upstream: test_serialize_inject_scroll_event"""
    msg = InjectScrollEvent(x=260, y=1026, width=1080, height=1920, hscroll=16, vscroll=-16,
                            buttons=1)
    assert msg.serialize() == bytes([
        0x03,  # SC_CONTROL_MSG_TYPE_INJECT_SCROLL_EVENT
        0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x04, 0x02,  # 260 1026
        0x04, 0x38, 0x07, 0x80,  # 1080 1920
        0x7F, 0xFF,  # 16 (float encoded as i16 in the range [-16, 16])
        0x80, 0x00,  # -16 (float encoded as i16 in the range [-16, 16])
        0x00, 0x00, 0x00, 0x01,  # 1
    ])
    roundtrip(msg)
    with pytest.raises(ValidationError, match=r"InjectScrollEvent\.vscroll"):
        InjectScrollEvent(x=0, y=0, width=1, height=1, hscroll=0, vscroll=17)


def test_inject_scroll_event_as_the_server_reads_it() -> None:
    """upstream: ControlMessageReaderTest.testParseScrollEvent (0 and 0x8000 = -16)."""
    data = (bytes([0x03]) + struct.pack(">iiHH", 260, 1026, 1080, 1920)
            + bytes([0x00, 0x00, 0x80, 0x00]) + struct.pack(">I", 1))
    assert ControlMessageParser().feed(data) == [
        InjectScrollEvent(x=260, y=1026, width=1080, height=1920, hscroll=0.0, vscroll=-16.0,
                          buttons=1)]


def test_back_or_screen_on() -> None:
    """upstream: test_serialize_back_or_screen_on"""
    msg = BackOrScreenOn(action=AKEY_EVENT_ACTION_UP)
    assert msg.serialize() == bytes([0x04, 0x01])
    roundtrip(msg)


def test_expand_notification_panel() -> None:
    """upstream: test_serialize_expand_notification_panel"""
    assert ExpandNotificationPanel().serialize() == bytes([0x05])
    roundtrip(ExpandNotificationPanel())


def test_expand_settings_panel() -> None:
    """upstream: test_serialize_expand_settings_panel"""
    assert ExpandSettingsPanel().serialize() == bytes([0x06])
    roundtrip(ExpandSettingsPanel())


def test_collapse_panels() -> None:
    """upstream: test_serialize_collapse_panels"""
    assert CollapsePanels().serialize() == bytes([0x07])
    roundtrip(CollapsePanels())


def test_get_clipboard() -> None:
    """upstream: test_serialize_get_clipboard"""
    msg = GetClipboard(copy_key=COPY_KEY_COPY)
    assert msg.serialize() == bytes([0x08, 0x01])
    roundtrip(msg)


def test_set_clipboard() -> None:
    """upstream: test_serialize_set_clipboard"""
    msg = SetClipboard(sequence=0x0102030405060708, text="hello, world!", paste=True)
    assert msg.serialize() == bytes([
        0x09,  # SC_CONTROL_MSG_TYPE_SET_CLIPBOARD
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  # sequence
        1,  # paste
        0x00, 0x00, 0x00, 0x0d,  # text length
    ]) + b"hello, world!"
    assert len(msg.serialize()) == 27
    roundtrip(msg)


def test_set_clipboard_long() -> None:
    """upstream: test_serialize_set_clipboard_long (the text fills a whole 256 KiB message)."""
    assert CLIPBOARD_TEXT_MAX_LENGTH == CONTROL_MSG_MAX_SIZE - 14 == (1 << 18) - 14
    msg = SetClipboard(sequence=0x0102030405060708, text="a" * CLIPBOARD_TEXT_MAX_LENGTH,
                       paste=True)
    data = msg.serialize()
    assert len(data) == CONTROL_MSG_MAX_SIZE
    assert data == (bytes([0x09, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 1])
                    + struct.pack(">I", CLIPBOARD_TEXT_MAX_LENGTH)
                    + b"a" * CLIPBOARD_TEXT_MAX_LENGTH)
    with pytest.raises(ValidationError, match=r"SetClipboard\.text"):
        SetClipboard(sequence=1, text="a" * (CLIPBOARD_TEXT_MAX_LENGTH + 1))


def test_set_display_power() -> None:
    """upstream: test_serialize_set_display_power"""
    msg = SetDisplayPower(on=True)
    assert msg.serialize() == bytes([0x0a, 0x01])
    roundtrip(msg)


def test_rotate_device() -> None:
    """upstream: test_serialize_rotate_device"""
    assert RotateDevice().serialize() == bytes([0x0b])
    roundtrip(RotateDevice())


def test_uhid_create() -> None:
    """upstream: test_serialize_uhid_create"""
    msg = UhidCreate(id=42, vendor_id=0x1234, product_id=0x5678, name="ABC",
                     report_desc=bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]))
    assert msg.serialize() == bytes([
        0x0c,  # SC_CONTROL_MSG_TYPE_UHID_CREATE
        0, 42,  # id
        0x12, 0x34,  # vendor id
        0x56, 0x78,  # product id
        3,  # name size
        65, 66, 67,  # "ABC"
        0, 11,  # report desc size
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
    ])
    assert len(msg.serialize()) == 24
    roundtrip(msg)


def test_uhid_input() -> None:
    """upstream: test_serialize_uhid_input"""
    msg = UhidInput(id=42, data=bytes([1, 2, 3, 4, 5]))
    assert msg.serialize() == bytes([
        0x0d,  # SC_CONTROL_MSG_TYPE_UHID_INPUT
        0, 42,  # id
        0, 5,  # size
        1, 2, 3, 4, 5,
    ])
    roundtrip(msg)


def test_uhid_destroy() -> None:
    """upstream: test_serialize_uhid_destroy"""
    msg = UhidDestroy(id=42)
    assert msg.serialize() == bytes([0x0e, 0, 42])
    roundtrip(msg)


def test_open_hard_keyboard_settings() -> None:
    """upstream: test_serialize_open_hard_keyboard"""
    assert OpenHardKeyboardSettings().serialize() == bytes([0x0f])
    roundtrip(OpenHardKeyboardSettings())


def test_start_app() -> None:
    """upstream: test_serialize_start_app"""
    msg = StartApp(name="firefox")
    assert msg.serialize() == bytes([0x10, 7]) + b"firefox"
    assert len(msg.serialize()) == 9
    roundtrip(msg)
    with pytest.raises(ValidationError, match=r"StartApp\.name"):
        StartApp(name="x" * 256)


def test_reset_video() -> None:
    """upstream: test_serialize_reset_video"""
    assert ResetVideo().serialize() == bytes([0x11])
    roundtrip(ResetVideo())


def test_control_parser_takes_chunks_and_names_the_offset_of_an_unknown_type() -> None:
    stream = (InjectKeycode(0, 3).serialize() + SetClipboard(7, "hé", paste=True).serialize()
              + ResetVideo().serialize())
    parser = ControlMessageParser(peer="test")
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i:i + 1])
    assert got == [InjectKeycode(0, 3), SetClipboard(7, "hé", paste=True), ResetVideo()]
    # 18 is CAMERA_SET_TORCH in 4.x: a 4.x client talking to this 3.3.4 layout.
    with pytest.raises(ProtocolError, match=r"offset %d.*unknown control message type 18"
                       % len(stream)):
        parser.feed(bytes([18]))


# --- device messages, device -> client: app/tests/test_device_msg_deserialize.c ----------


def test_clipboard() -> None:
    """upstream: test_deserialize_clipboard"""
    data = bytes([
        0x00,  # DEVICE_MSG_TYPE_CLIPBOARD
        0x00, 0x00, 0x00, 0x03,  # text length
        0x41, 0x42, 0x43,  # "ABC"
    ])
    parser = DeviceMessageParser()
    assert parser.feed(data) == [Clipboard("ABC")]
    assert parser.pending == 0
    assert Clipboard("ABC").serialize() == data


def test_clipboard_big() -> None:
    """upstream: test_deserialize_clipboard_big (a text filling the 256 KiB buffer)."""
    assert DEVICE_MSG_TEXT_MAX_LENGTH == DEVICE_MSG_MAX_SIZE - 5 == (1 << 18) - 5
    data = (bytes([0x00]) + struct.pack(">I", DEVICE_MSG_TEXT_MAX_LENGTH)
            + b"a" * DEVICE_MSG_TEXT_MAX_LENGTH)
    assert len(data) == DEVICE_MSG_MAX_SIZE
    [msg] = DeviceMessageParser().feed(data)
    assert msg == Clipboard("a" * DEVICE_MSG_TEXT_MAX_LENGTH)


def test_clipboard_non_ascii() -> None:
    """upstream: DeviceMessageWriterTest.testSerializeClipboard ("aéûoç")."""
    raw = "aéûoç".encode()
    data = bytes([0x00]) + struct.pack(">I", len(raw)) + raw
    assert Clipboard("aéûoç").serialize() == data
    assert DeviceMessageParser().feed(data) == [Clipboard("aéûoç")]


def test_ack_clipboard() -> None:
    """upstream: test_deserialize_ack_set_clipboard"""
    data = bytes([
        0x01,  # DEVICE_MSG_TYPE_ACK_CLIPBOARD
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  # sequence
    ])
    assert DeviceMessageParser().feed(data) == [AckClipboard(0x0102030405060708)]
    assert AckClipboard(0x0102030405060708).serialize() == data


def test_uhid_output() -> None:
    """upstream: test_deserialize_uhid_output"""
    data = bytes([
        0x02,  # DEVICE_MSG_TYPE_UHID_OUTPUT
        0, 42,  # id
        0, 5,  # size
        0x01, 0x02, 0x03, 0x04, 0x05,  # data
    ])
    assert DeviceMessageParser().feed(data) == [UhidOutput(42, bytes([1, 2, 3, 4, 5]))]
    assert UhidOutput(42, bytes([1, 2, 3, 4, 5])).serialize() == data


def test_device_parser_waits_for_whole_messages_byte_by_byte() -> None:
    # v3.3.3's client got this wrong for UHID output (it took a short message as complete);
    # v3.3.4 fixed the check, and so must we.
    stream = (Clipboard("hé").serialize() + UhidOutput(1, b"\x01\x02\x03").serialize()
              + AckClipboard(9).serialize())
    parser = DeviceMessageParser()
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i:i + 1])
        if i < len(stream) - 1:
            assert AckClipboard(9) not in got
    assert got == [Clipboard("hé"), UhidOutput(1, b"\x01\x02\x03"), AckClipboard(9)]


def test_device_parser_rejects_an_unknown_type_and_an_oversized_clipboard() -> None:
    parser = DeviceMessageParser(peer="phone-1")
    parser.feed(AckClipboard(1).serialize())
    with pytest.raises(ProtocolError, match=r"phone-1.*offset 9.*unknown device message type 3"):
        parser.feed(bytes([3]))
    too_long = bytes([0]) + struct.pack(">I", DEVICE_MSG_TEXT_MAX_LENGTH + 1)
    with pytest.raises(ProtocolError, match=r"offset 0.*clipboard length 262140"):
        DeviceMessageParser().feed(too_long)


# --- video socket: Streamer.java, DesktopConnection.java, app/src/demuxer.c ---------------


def header(pts_and_flags: int, size: int) -> bytes:
    return struct.pack(">QI", pts_and_flags, size)


def video_socket_bytes() -> bytes:
    name = "Pixel 7".encode().ljust(64, b"\0")
    return (b"\x00" + name + struct.pack(">III", CODEC_H264, 1080, 2400)
            + header(PACKET_FLAG_CONFIG, 4) + b"\0\0\0\1"
            + header(PACKET_FLAG_KEY_FRAME | 1_000, 3) + b"key"
            + header(34_333, 5) + b"delta")


EXPECTED = [
    DeviceMeta("Pixel 7"),
    CodecMeta(CODEC_H264, 1080, 2400),
    VideoPacket(pts=None, config=True, key_frame=False, data=b"\0\0\0\1"),
    VideoPacket(pts=1_000, config=False, key_frame=True, data=b"key"),
    VideoPacket(pts=34_333, config=False, key_frame=False, data=b"delta"),
]


def test_codec_ids_are_the_ascii_names() -> None:
    assert PACKET_FLAG_CONFIG == 1 << 63 and PACKET_FLAG_KEY_FRAME == 1 << 62
    assert CODEC_H264.to_bytes(4, "big") == b"h264"
    assert CODEC_H265.to_bytes(4, "big") == b"h265"
    assert CODEC_AV1.to_bytes(4, "big") == b"\0av1"  # VideoCodec.AV1(0x00_61_76_31)
    assert CodecMeta(CODEC_H264, 1080, 2400).codec_name == "h264"


@pytest.mark.parametrize("step", [1, 5, 13, 64, 1000])
def test_video_parser_takes_arbitrary_chunks(step: int) -> None:
    data = video_socket_bytes()
    parser = VideoStreamParser()
    got = []
    for i in range(0, len(data), step):
        got += parser.feed(data[i:i + step])
    assert got == EXPECTED
    assert parser.pending == 0
    parser.finish()


def test_video_parser_truncated_packet_waits_for_more() -> None:
    data = video_socket_bytes()
    parser = VideoStreamParser()
    assert parser.feed(data[:-2]) == EXPECTED[:-1]
    assert parser.pending == 12 + 3
    with pytest.raises(ProtocolError, match=r"offset %d.*truncated" % (len(data) - 17)):
        parser.finish()
    assert parser.feed(data[-2:]) == EXPECTED[-1:]


def test_video_parser_without_dummy_byte_and_device_meta() -> None:
    # The audio or control socket comes first when video is off; a reverse tunnel has no
    # dummy byte.
    data = video_socket_bytes()[65:]
    assert VideoStreamParser(dummy_byte=False, device_meta=False).feed(data) == EXPECTED[1:]


def test_video_parser_bad_headers_name_the_offset() -> None:
    prefix = video_socket_bytes()[:65 + 12]
    with pytest.raises(ProtocolError, match=r"offset 77.*size 4294967295.*above"):
        VideoStreamParser().feed(prefix + header(0, 0xFFFFFFFF))
    with pytest.raises(ProtocolError, match=r"offset 77.*size 0"):
        VideoStreamParser().feed(prefix + header(0, 0))
    with pytest.raises(ProtocolError, match=r"offset 77.*config packet.*pts"):
        VideoStreamParser().feed(prefix + header(PACKET_FLAG_CONFIG | 5, 1))
    with pytest.raises(ProtocolError, match=r"offset 65.*unknown codec id 0x6f707573"):
        VideoStreamParser().feed(video_socket_bytes()[:65] + b"opus" + bytes(8))
    with pytest.raises(ProtocolError, match=r"offset 0.*dummy byte 0x41"):
        VideoStreamParser().feed(b"A")
    bound = VideoStreamParser(max_packet_size=10)
    with pytest.raises(ProtocolError, match=r"size 11.*above 10"):
        bound.feed(prefix + header(0, 11))


def test_video_parser_reports_a_disabled_stream_without_waiting_for_a_size() -> None:
    # writeDisableStream sends the 4-byte code only, no width and height.
    head = video_socket_bytes()[:65]
    with pytest.raises(ProtocolError, match=r"offset 65.*disabled the stream"):
        VideoStreamParser().feed(head + bytes(4))
    with pytest.raises(ProtocolError, match=r"offset 65.*configuration error"):
        VideoStreamParser().feed(head + b"\0\0\0\1")


def test_device_meta_is_nul_padded_utf8() -> None:
    assert DeviceMeta("Pixel 7").serialize() == b"Pixel 7" + bytes(57)
    assert len(DeviceMeta("é" * 40).serialize()) == 64  # cut at 63 bytes, whole characters
    assert DeviceMeta.parse(DeviceMeta("é" * 40).serialize()) == DeviceMeta("é" * 31)


def test_video_packet_header_serializes_as_streamer_writes_it() -> None:
    assert VideoPacket(None, True, False, b"abc").serialize() == header(1 << 63, 3) + b"abc"
    assert VideoPacket(7, False, True, b"x").serialize() == header((1 << 62) | 7, 1) + b"x"


# --- starting the server: app/src/server.c, Options.java, DesktopConnection.java ---------


def test_server_command_line() -> None:
    assert SCRCPY_VERSION == "3.3.4"
    params = ServerParams(scid=0x1234abcd, max_size=1024, max_fps=30, video_bit_rate=4_000_000)
    assert params.args() == [
        "CLASSPATH=/data/local/tmp/scrcpy-server.jar", "app_process", "/",
        "com.genymobile.scrcpy.Server", "3.3.4", "scid=1234abcd", "log_level=info",
        "video_bit_rate=4000000", "audio=false", "max_size=1024", "max_fps=30",
        "tunnel_forward=true",
    ]
    assert params.shell_command() == " ".join(params.args())
    assert params.socket_name == "scrcpy_1234abcd"
    assert params.service == "localabstract:scrcpy_1234abcd"
    assert socket_name(5) == "scrcpy_00000005"


def test_server_command_options_are_checked() -> None:
    with pytest.raises(ValidationError, match=r"ServerParams\.scid"):
        ServerParams(scid=0x80000000)
    with pytest.raises(ValidationError, match=r"ServerParams\.video_codec"):
        ServerParams(scid=1, video_codec="vp9")
    with pytest.raises(ValidationError, match=r"ServerParams\.extra.*no_such_option"):
        ServerParams(scid=1, extra=(("no_such_option", "1"),))
    with pytest.raises(ValidationError, match=r"ServerParams\.extra.*crop"):
        ServerParams(scid=1, extra=(("crop", "1:2; reboot"),))
    params = ServerParams(scid=1, video_codec="h265", control=False,
                          extra=(("stay_awake", "true"),))
    assert params.args()[5:] == ["scid=00000001", "log_level=info", "audio=false",
                                 "video_codec=h265", "tunnel_forward=true", "control=false",
                                 "stay_awake=true"]


def test_new_scid_is_31_bits() -> None:
    for _ in range(100):
        assert 0 <= new_scid() <= 0x7FFFFFFF
