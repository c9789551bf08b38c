"""The scrcpy agent's pieces that need no phone: the restart back-off, the latest-frame store
and its "first frame newer than T" wait, the H.264 decoding of a real encoded stream as it
comes off the video socket (config packets, corrupt packets), and the control steps of
touches, keys and text."""

from __future__ import annotations

import random
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from actors.node.device.agent import (AgentConfig, AgentError, Backoff, DecodeError, FrameStore,
                                      H264Decoder, ScrcpyAgent, injectable, key_steps,
                                      rgba_frame, straight_path, touch_steps)
from protocol.scrcpy import (CODEC_H264, POINTER_ID_GENERIC_FINGER, AckClipboard, CodecMeta,
                             ControlMessageParser, DeviceMeta, InjectKeycode, InjectTouchEvent,
                             ResetVideo, SetClipboard, VideoPacket, VideoStreamParser)

# --- back-off ------------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_up_to_a_minute_and_starts_over_on_reset() -> None:
    backoff = Backoff(1.0, 60.0)
    assert [backoff.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    backoff.reset()
    assert [backoff.next_delay() for _ in range(3)] == [1, 2, 4]


def test_agent_config_names_why_a_node_stays_on_the_shell_path() -> None:
    assert "--phone-io shell" in AgentConfig(mode="shell", jar=Path("x.jar")).shell_reason()
    assert "--scrcpy-server" in AgentConfig(mode="agent", jar=None).shell_reason()
    assert AgentConfig(mode="agent", jar=Path("x.jar")).shell_reason() is None


# --- frames --------------------------------------------------------------------------------------


def _store() -> tuple[FrameStore, list]:
    converted: list = []

    def convert(source):
        converted.append(source)
        return np.full((2, 2, 4), source, np.uint8)

    return FrameStore(convert), converted


def test_frame_store_keeps_the_latest_frame_with_its_arrival_and_converts_it_once() -> None:
    store, converted = _store()
    assert store.latest() is None and store.arrived_at is None
    store.put(1, at=10.0)
    store.put(2, at=11.0)
    image, at = store.latest()
    assert at == 11.0 and image[0, 0, 0] == 2
    assert store.wait_newer(10.5, timeout=0.01)[1] == 11.0  # here already: no wait
    store.latest()
    assert converted == [2]  # only frames someone asked for, each once


def test_wait_newer_waits_for_a_frame_after_the_given_time() -> None:
    store, _ = _store()
    store.put(1)
    before = time.monotonic()
    assert store.wait_newer(before, timeout=0.05) is None  # nothing newer came
    threading.Timer(0.05, store.put, (7,)).start()
    image, at = store.wait_newer(time.monotonic(), timeout=5)
    assert image[0, 0, 0] == 7 and at > before


def test_wait_newer_with_a_time_in_the_future_skips_frames_before_it() -> None:
    """The settle time: "newer than the action plus 0.1 s" ignores a frame at +0.05 s."""
    store, _ = _store()
    after = time.monotonic() + 0.1
    threading.Timer(0.02, store.put, (1,)).start()  # during the settle time: not it
    threading.Timer(0.2, store.put, (2,)).start()
    image, at = store.wait_newer(after, timeout=5)
    assert image[0, 0, 0] == 2 and at > after


def test_closing_the_store_wakes_a_waiter_at_once() -> None:
    store, _ = _store()
    threading.Timer(0.05, store.close, ("agent died",)).start()
    t0 = time.monotonic()
    assert store.wait_newer(time.monotonic(), timeout=30) is None
    assert time.monotonic() - t0 < 10  # woken, not timed out


def test_rgba_frame_scales_a_video_frame_to_the_screen_size() -> None:
    frame = av.VideoFrame.from_ndarray(np.full((64, 32, 3), 200, np.uint8), format="rgb24")
    assert rgba_frame(frame).shape == (64, 32, 4)
    assert rgba_frame(frame, (30, 60)).shape == (60, 30, 4)
    assert rgba_frame(np.zeros((64, 32, 4), np.uint8), (30, 60)).shape == (60, 30, 4)


# --- decoding a real H.264 stream ----------------------------------------------------------------

COLOURS = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (240, 240, 240), (10, 10, 10)]


def _encode(colours, width=64, height=128) -> tuple[bytes, list[VideoPacket]]:
    """Frames of one colour each, encoded by libx264 as an Android encoder would send them:
    SPS/PPS apart (the config packet), then Annex-B frames."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, 1_000_000)
    enc.flags |= 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER: SPS/PPS in extradata, as a config packet
    enc.gop_size = 3  # a key frame every third frame
    enc.options = {"tune": "zerolatency", "preset": "ultrafast"}
    packets = []
    for i, colour in enumerate(colours):
        frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), colour, np.uint8),
                                           format="rgb24")
        frame.pts = i * 100_000
        for p in enc.encode(frame):
            packets.append(VideoPacket(pts=i * 100_000, config=False, key_frame=p.is_keyframe,
                                       data=bytes(p)))
    for p in enc.encode(None):
        packets.append(VideoPacket(pts=0, config=False, key_frame=p.is_keyframe, data=bytes(p)))
    return bytes(enc.extradata), packets


def _colour(frame) -> tuple[int, int, int]:
    rgba = rgba_frame(frame)
    return tuple(int(v) for v in rgba[rgba.shape[0] // 2, rgba.shape[1] // 2, :3])


def _close(a, b, tolerance=24) -> bool:
    return all(abs(int(x) - int(y)) <= tolerance for x, y in zip(a, b))


def test_the_video_socket_bytes_decode_to_the_frames_sent_in_any_chunking() -> None:
    config, packets = _encode(COLOURS)
    stream = (b"\x00" + DeviceMeta("Pixel 7").serialize() + CodecMeta(CODEC_H264, 64, 128).serialize()
              + VideoPacket(None, True, False, config).serialize()
              + b"".join(p.serialize() for p in packets))
    rng = random.Random(5)
    parser, decoder, frames, metas = VideoStreamParser("test"), H264Decoder(), [], []
    pos = 0
    while pos < len(stream):
        n = rng.randint(1, 700)
        for item in parser.feed(stream[pos:pos + n]):
            if isinstance(item, VideoPacket):
                frames += decoder.decode(item)
            else:
                metas.append(item)
        pos += n
    parser.finish()
    assert metas == [DeviceMeta("Pixel 7"), CodecMeta(CODEC_H264, 64, 128)]
    assert len(frames) == len(COLOURS)
    for frame, colour in zip(frames, COLOURS):
        assert (frame.width, frame.height) == (64, 128)
        assert _close(_colour(frame), colour), (_colour(frame), colour)


def _corrupt(packet: VideoPacket, seed: int) -> VideoPacket:
    """``packet`` with its slice data garbled behind an intact start code and slice header:
    FFmpeg's decoder conceals such a packet into a plausible frame unless told to refuse it
    (random bits can form a valid slice now and then: these seeds do not, on this stream)."""
    rng = random.Random(seed)
    return packet._replace(data=packet.data[:8] + bytes(rng.randrange(256)
                                                        for _ in range(len(packet.data) - 8)))


def test_a_media_packet_without_its_config_does_not_decode() -> None:
    _, packets = _encode(COLOURS[:1])
    with pytest.raises(DecodeError):
        H264Decoder().decode(packets[0])


def test_a_corrupt_packet_is_refused_and_frames_wait_for_the_next_key_frame() -> None:
    config, packets = _encode(COLOURS * 2)
    decoder = H264Decoder()
    decoder.decode(VideoPacket(None, True, False, config))
    assert decoder.decode(packets[0])  # key frame
    bad = packets[1]
    assert not bad.key_frame
    with pytest.raises(DecodeError, match="pts="):
        decoder.decode(_corrupt(bad, 1))
    assert decoder.broken
    # The frames built on the broken one are dropped, not shown...
    following = [p for p in packets[2:] if not p.key_frame]
    assert following and decoder.decode(following[0]) == []
    # ...until a key frame, which decodes again.
    key = next(p for p in packets[2:] if p.key_frame)
    assert decoder.decode(key) and not decoder.broken


# --- control steps -------------------------------------------------------------------------------


def test_a_tap_is_a_down_and_an_up_at_one_point_in_video_pixels() -> None:
    down, up = touch_steps([(100, 200)], 0, (1080, 2400))
    assert down == InjectTouchEvent(0, POINTER_ID_GENERIC_FINGER, 100, 200, 1080, 2400, 1.0)
    assert up == InjectTouchEvent(1, POINTER_ID_GENERIC_FINGER, 100, 200, 1080, 2400, 0.0)


def test_a_long_tap_holds_for_its_duration() -> None:
    steps = touch_steps([(5, 6)], 800, (1080, 2400))
    assert [type(s).__name__ for s in steps] == ["InjectTouchEvent", "float", "InjectTouchEvent"]
    assert steps[1] == pytest.approx(0.8)


def test_a_path_goes_down_moves_through_its_points_and_up_spread_over_the_duration() -> None:
    path = [(10, 10), (20, 30), (40, 50), (60, 70)]
    steps = touch_steps(path, 300, (1080, 2400))
    touches = [s for s in steps if isinstance(s, InjectTouchEvent)]
    assert [t.action for t in touches] == [0, 2, 2, 1]
    assert [(t.x, t.y) for t in touches] == path
    assert sum(s for s in steps if isinstance(s, float)) == pytest.approx(0.3)


def test_a_straight_swipe_is_cut_into_moves_ending_exactly_at_its_end() -> None:
    points = straight_path(540, 1800, 540, 600, 300)
    assert points[0] == (540, 1800) and points[-1] == (540, 600)
    assert len(points) >= 10  # the finger moves along, it does not jump
    assert straight_path(1, 2, 3, 4, 0) == [(1, 2), (3, 4)]


def test_keys_are_pressed_and_released_repeat_times() -> None:
    assert key_steps(67, 2) == [InjectKeycode(0, 67), InjectKeycode(1, 67)] * 2


def test_only_short_printable_ascii_is_injected_as_text() -> None:
    assert injectable("hello world & 100% $HOME")
    assert injectable("x" * 300)
    assert not injectable("x" * 301)
    assert not injectable("café")
    assert not injectable("tab\there")


# --- one agent's sockets: faults on the wire -----------------------------------------------------
# The agent's reader threads and control writer over socket pairs that carry the scrcpy bytes
# themselves (the adb layer is not in the picture here: tests/e2e/test_agent.py drives the
# agent through the real adb server and virtual phones).


class _Sockets:
    """What an agent needs of its driver to run on already-open sockets."""

    serial = "PAIR1"
    features = {"shell_v2"}

    def release_stream(self, sock: socket.socket) -> None:
        sock.close()


class _Phone:
    """The server side of one agent's socket pairs."""

    def __init__(self) -> None:
        self.deaths: list[str] = []
        video_here, self.video = socket.socketpair()
        control_here, self.control = socket.socketpair()
        self.agent = ScrcpyAgent(_Sockets(), Path("unused.jar"), AgentConfig(),
                                 lambda agent, reason: self.deaths.append(reason))
        self.agent.attach(video_here, control_here)
        self.config, self.packets = _encode(COLOURS * 2, 64, 128)
        self.video.sendall(DeviceMeta("pair").serialize()
                           + CodecMeta(CODEC_H264, 64, 128).serialize()
                           + VideoPacket(None, True, False, self.config).serialize())

    def send(self, *packets: VideoPacket) -> None:
        self.video.sendall(b"".join(p.serialize() for p in packets))

    def control_messages(self, timeout: float = 5.0) -> list:
        self.control.settimeout(timeout)
        return ControlMessageParser().feed(self.control.recv(1 << 16))

    def wait_death(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.deaths and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.deaths, "the agent did not die"
        return self.deaths[0]

    def close(self) -> None:
        self.agent.close("test over")
        self.video.close()
        self.control.close()


@pytest.fixture
def phone():
    p = _Phone()
    yield p
    p.close()


def _frames(agent: ScrcpyAgent, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while agent.frames.count < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent.frames.count >= count


def test_frames_from_the_socket_are_the_latest_frame_with_the_sender_s_colour(phone) -> None:
    phone.send(*phone.packets[:2])
    _frames(phone.agent, 2)
    image = phone.agent.frame_after(float("-inf"), 5)
    assert image.shape == (128, 64, 4) and _close(tuple(image[64, 32, :3]), COLOURS[1])
    assert phone.agent.video_size == (64, 128) and phone.agent.alive


def test_a_corrupt_packet_asks_for_a_key_frame_and_shows_no_broken_frame(phone) -> None:
    first, bad, *rest = phone.packets
    phone.send(first)
    _frames(phone.agent, 1)
    after_good = time.monotonic()
    phone.send(_corrupt(bad, 2), *[p for p in rest if not p.key_frame][:1])
    assert [type(m) for m in phone.control_messages()] == [ResetVideo]  # a new key frame, please
    assert phone.agent.frame_after(after_good, 0.3) is None  # nothing built on the broken one
    key = next(p for p in rest if p.key_frame)
    phone.send(VideoPacket(None, True, False, phone.config), key)  # what RESET_VIDEO brings
    image = phone.agent.frame_after(after_good, 5)
    assert image is not None and phone.agent.alive and phone.agent.decode_errors == 1


def test_a_truncated_packet_at_the_end_of_the_stream_kills_the_agent_saying_so(phone) -> None:
    phone.send(phone.packets[0])
    _frames(phone.agent, 1)
    cut = phone.packets[1].serialize()
    phone.video.sendall(cut[:len(cut) // 2])
    phone.video.shutdown(socket.SHUT_WR)
    reason = phone.wait_death()
    assert "truncated" in reason and not phone.agent.alive
    assert phone.agent.frame_after(time.monotonic(), 30) is None  # a waiter is not left hanging
    assert len(phone.deaths) == 1


def test_a_packet_header_out_of_step_kills_the_agent_saying_so(phone) -> None:
    phone.video.sendall(b"\xff" * 12)  # a size of 4 GiB
    assert "bad video stream" in phone.wait_death()


def test_a_control_socket_closed_mid_message_fails_the_paste_waiting_on_it(phone) -> None:
    phone.send(phone.packets[0])
    _frames(phone.agent, 1)
    result: list = []

    def paste() -> None:
        try:
            phone.agent.type_text("café")  # not injectable: clipboard + paste, acknowledged
        except AgentError as exc:
            result.append(exc)

    worker = threading.Thread(target=paste)
    worker.start()
    (message,) = phone.control_messages()
    assert isinstance(message, SetClipboard) and message.paste and message.text == "café"
    phone.control.sendall(AckClipboard(message.sequence).serialize()[:5])  # half an ACK...
    phone.control.shutdown(socket.SHUT_WR)  # ...and the socket closes
    worker.join(10)
    assert not worker.is_alive()
    (error,) = result
    assert error.sent and "truncated" in error.reason
    assert "truncated" in phone.wait_death()


def test_an_action_on_a_dead_agent_is_refused_as_not_sent(phone) -> None:
    phone.agent.close("gone")
    with pytest.raises(AgentError) as refused:
        phone.agent.play("tap", key_steps(4))
    assert refused.value.sent is False and "gone" in refused.value.reason


def test_a_gesture_cut_by_the_agent_s_death_counts_as_sent(phone) -> None:
    phone.send(phone.packets[0])
    _frames(phone.agent, 1)
    threading.Timer(0.2, phone.agent.close, ("killed",)).start()
    t0 = time.monotonic()
    with pytest.raises(AgentError) as cut:
        phone.agent.touch("long tap", [(10, 10)], 30_000)
    assert cut.value.sent is True and "killed" in cut.value.reason
    assert time.monotonic() - t0 < 20  # ended by the death, not by the 30 s hold
    assert [m.action for m in phone.control_messages()] == [0]  # the DOWN went, no UP


# --- a downscaled stream (max_size) ----------------------------------------------------------------


def test_a_downscaled_stream_gives_frames_and_takes_touches_in_device_pixels() -> None:
    """max_size 1600 on a 1080x2400 phone: the server sends 720x1600. The registry's crops and
    every tap are in device pixels, so the agent scales frames up to 1080x2400 and touches
    down to the video's size (the server scales them back)."""
    from virtual.scrcpy_server import H264Encoder, video_size

    config = AgentConfig(max_size=1600)
    size = video_size(1080, 2400, config.max_size)
    assert size == (720, 1600)
    screen = np.full((2400, 1080, 4), 255, np.uint8)
    screen[1200:1400, 540:740, :3] = 0  # a black box at known device pixels
    encoder = H264Encoder(size, config.video_bit_rate)
    packets = [encoder.config()] + encoder.encode(screen, 0, key=True)
    video_here, video = socket.socketpair()
    control_here, control = socket.socketpair()
    agent = ScrcpyAgent(_Sockets(), Path("unused.jar"), config, lambda agent, reason: None)
    try:
        assert agent.params.max_size == 1600 and "max_size=1600" in agent.params.shell_command()
        agent.screen_size = (1080, 2400)  # what `wm size` said at the start
        agent.attach(video_here, control_here)
        video.sendall(DeviceMeta("downscaled").serialize()
                      + CodecMeta(CODEC_H264, *size).serialize() + b"".join(p.serialize() for p in packets))
        image = agent.frame_after(float("-inf"), 10)
        assert image is not None and image.shape == (2400, 1080, 4)
        dark = np.argwhere(image[:, :, :3].mean(axis=2) < 128)
        (y0, x0), (y1, x1) = dark.min(axis=0), dark.max(axis=0)
        assert abs(y0 - 1200) <= 3 and abs(x0 - 540) <= 3, (y0, x0)
        assert abs(y1 - 1399) <= 3 and abs(x1 - 739) <= 3, (y1, x1)
        agent.touch("tap", [(900, 2000)], 0)
        control.settimeout(5)
        down, up = ControlMessageParser().feed(control.recv(1 << 16))
        assert (down.x, down.y, down.width, down.height) == (600, 1333, 720, 1600)
        assert (up.x, up.y) == (600, 1333)
    finally:
        agent.close("test over")
        video.close()
        control.close()


def test_a_frame_captured_before_an_action_is_not_after_it_however_late_it_arrives(phone) -> None:
    """Under load a frame encoded before an action can arrive after the action + settle time:
    it still shows the old screen. Its pts (the phone's capture clock) places it: a frame is
    dated when it was captured (the lowest delay seen gives the clock offset), not when it
    arrived."""
    phone.send(phone.packets[0])  # pts 0
    _frames(phone.agent, 1)
    first = phone.agent.frames.arrived_at
    time.sleep(0.5)
    phone.send(phone.packets[1])  # captured 0.1 s after the first one, here 0.5 s later
    _frames(phone.agent, 2)
    assert abs(phone.agent.frames.arrived_at - (first + 0.1)) < 0.05
    assert phone.agent.frame_after(first + 0.3, 0.2) is None  # not a frame of after first + 0.3


# --- an action is taken once the server is seen running past it ---------------------------------


def test_a_tap_is_confirmed_by_a_frame_captured_after_it(phone) -> None:
    phone.send(phone.packets[0])  # pts 0: the clock offset
    _frames(phone.agent, 1)
    phone.agent.touch("tap", [(10, 10)], 0)
    assert phone.agent.frames.wait_dated_after(phone.agent._written_at, 0) is None
    # Captured 0.1 s after the first frame (the tap went out a few ms after it).
    threading.Timer(0.1, phone.send, phone.packets[1:2]).start()
    phone.agent.confirm("tap")
    assert phone.agent.frames.count == 2 and phone.agent.alive
    phone.agent.confirm("tap")  # nothing new written: at once
    assert [m.action for m in phone.control_messages()] == [0, 1]


def test_a_tap_written_as_the_server_dies_fails_naming_the_death(phone) -> None:
    """The bytes went into the socket (to the adb server, on a phone), so the write succeeded;
    the server died before anything showed it ran past them: the tap may be lost."""
    phone.send(phone.packets[0])
    _frames(phone.agent, 1)
    phone.agent.touch("tap", [(10, 10)], 0)
    phone.video.shutdown(socket.SHUT_WR)  # the server is killed: its sockets close
    with pytest.raises(AgentError) as lost:
        phone.agent.confirm("tap")
    assert lost.value.sent is True
    assert "died before the phone was seen to take the tap" in lost.value.reason
    assert "video stream ended" in lost.value.reason


def test_a_tap_on_a_live_server_sending_no_frame_counts_as_taken_after_the_frame_timeout(
        phone) -> None:
    """An encoder that does not repeat a still screen sends nothing: a dead server would have
    closed its sockets within the frame timeout, so a live one took the tap."""
    phone.send(phone.packets[0])
    _frames(phone.agent, 1)
    phone.agent.touch("tap", [(10, 10)], 0)
    t0 = time.monotonic()
    phone.agent.confirm("tap")
    assert time.monotonic() - t0 >= phone.agent.config.frame_timeout_s - 0.05
    assert phone.agent.alive


def test_farm_node_s_max_size_reaches_the_agent_config_and_a_bad_one_stops_the_start(
        tmp_path: Path) -> None:
    from actors.node.node import agent_config
    from actors.process import StartupError

    jar = tmp_path / "scrcpy-server.jar"
    jar.write_bytes(b"jar")
    assert agent_config("agent", str(jar)).max_size == 0
    assert agent_config("agent", str(jar), max_size=1600).max_size == 1600
    for bad in (-1, 100, 70_000):
        with pytest.raises(StartupError, match="--scrcpy-max-size"):
            agent_config("agent", str(jar), max_size=bad)


def test_the_virtual_encoder_repeats_a_picture_and_then_shows_the_next_one() -> None:
    """A repeat (the same picture again, as the encoder thread sends every 100 ms without a
    change) reuses the converted copy: it decodes to that picture, and a new picture after
    it decodes to the new one, not to the copy kept."""
    from virtual.scrcpy_server import H264Encoder

    size = (320, 640)
    first = np.full((640, 320, 4), 255, np.uint8)
    second = first.copy()
    second[100:300, 50:250, :3] = 0
    encoder = H264Encoder(size, 2_000_000)
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = encoder.config().data

    def shown(picture: np.ndarray, pts: int, key: bool) -> float:
        frames = [f for p in encoder.encode(picture, pts, key)
                  for f in decoder.decode(av.Packet(p.data))]
        assert len(frames) == 1
        return float(frames[0].to_ndarray(format="gray")[100:300, 50:250].mean())

    assert shown(first, 0, True) > 200
    assert shown(first, 100_000, False) > 200   # the repeat
    assert shown(second, 200_000, False) < 60   # the change
    assert shown(second, 300_000, False) < 60
    encoder.close()
