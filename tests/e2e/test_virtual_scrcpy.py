"""The virtual phones' scrcpy 3.3.4 server, through the real adb server, seen by a small
client built from protocol/scrcpy.py over adbutils: push the jar, start the exact command
line on a shell stream kept open, connect `localabstract:scrcpy_<scid>` twice (video, then
control), decode the H.264 stream with PyAV and drive the phone through the control socket."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import adbutils
import av
import numpy as np
import orjson
import pytest

from actors.node.device.adb_server import AdbServer
from protocol.scrcpy import (CODEC_H264, DEVICE_SERVER_PATH, SCRCPY_VERSION, AckClipboard,
                             BackOrScreenOn, Clipboard, CodecMeta, DeviceMessageParser,
                             DeviceMeta, GetClipboard, InjectKeycode, InjectText,
                             InjectTouchEvent, ServerParams, SetClipboard, VideoPacket,
                             VideoStreamParser, new_scid)
from tests.conftest import run_adb
from virtual.farm import FarmSpec, VirtualFarm
from virtual.profile import APP_PROCESS_START_S, REAL

CONNECT_ATTEMPTS, CONNECT_DELAY_S = 100, 0.1  # upstream's client (app/src/server.c)


def vphone_log(server: AdbServer, serial: str) -> list[dict]:
    out = run_adb(server, "-s", serial, "shell", "vphone log").stdout
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def without_ts(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "ts"}


def screencap_rgb(server: AdbServer, serial: str) -> np.ndarray:
    raw = run_adb(server, "-s", serial, "exec-out", "screencap").stdout
    w, h = int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little")
    return np.frombuffer(raw[16:16 + w * h * 4], np.uint8).reshape(h, w, 4)[:, :, :3]


@dataclass
class Received:
    """What the video reader thread got, with the monotonic time each packet arrived."""

    meta: DeviceMeta | None = None
    codec: CodecMeta | None = None
    packets: list[tuple[float, VideoPacket]] = field(default_factory=list)
    eof: bool = False
    error: Exception | None = None


class ScrcpyTestClient:
    """The client side, as the node's agent driver does it: nothing of virtual/ is used."""

    def __init__(self, device: adbutils.AdbDevice, params: ServerParams) -> None:
        self.device = device
        self.params = params
        self.shell: adbutils.AdbConnection | None = None
        self.video: socket.socket | None = None
        self.control: socket.socket | None = None
        self.received = Received()
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    def push_jar(self, tmp_path: Path) -> None:
        jar = tmp_path / "scrcpy-server.jar"
        jar.write_bytes(b"PK\x03\x04 a stand-in for scrcpy-server v3.3.4")
        self.device.sync.push(str(jar), DEVICE_SERVER_PATH)

    def start(self) -> None:
        self.shell = self.device.shell(self.params.shell_command(), stream=True)

    def connect_once(self) -> socket.socket:
        return self.device.create_connection(adbutils.Network.LOCAL_ABSTRACT,
                                             self.params.socket_name)

    def connect(self) -> socket.socket:
        """Connect with upstream's retries: the server needs time to start."""
        for _ in range(CONNECT_ATTEMPTS):
            try:
                return self.connect_once()
            except adbutils.AdbError:
                time.sleep(CONNECT_DELAY_S)
        raise AssertionError(f"no server on {self.params.service} after "
                             f"{CONNECT_ATTEMPTS} attempts")

    def open(self) -> None:
        """Video (its dummy byte read at once, as upstream does), then control; then a
        thread reads device meta, codec meta and packets off the video socket."""
        self.video = self.connect()
        self.video.settimeout(10)
        assert self.video.recv(1) == b"\x00"
        self.control = self.connect()
        self.control.settimeout(10)
        self._reader = threading.Thread(target=self._read_video, daemon=True)
        self._reader.start()

    def _read_video(self) -> None:
        parser = VideoStreamParser(dummy_byte=False)
        try:
            while chunk := self.video.recv(65536):
                now = time.monotonic()
                for item in parser.feed(chunk):
                    with self._lock:
                        if isinstance(item, DeviceMeta):
                            self.received.meta = item
                        elif isinstance(item, CodecMeta):
                            self.received.codec = item
                        else:
                            self.received.packets.append((now, item))
        except OSError as exc:
            self.received.error = exc
        self.received.eof = True

    def packets(self) -> list[tuple[float, VideoPacket]]:
        with self._lock:
            return list(self.received.packets)

    def wait_packets(self, n: int, timeout: float = 15) -> list[tuple[float, VideoPacket]]:
        deadline = time.monotonic() + timeout
        while len(self.packets()) < n:
            assert time.monotonic() < deadline, f"only {len(self.packets())} of {n} packets"
            time.sleep(0.02)
        return self.packets()

    def send(self, *messages) -> None:
        self.control.sendall(b"".join(m.serialize() for m in messages))

    def tap(self, x: int, y: int, size: tuple[int, int]) -> None:
        w, h = size
        self.send(InjectTouchEvent(0, 0, x, y, w, h), InjectTouchEvent(1, 0, x, y, w, h, 0.0))

    def close(self) -> None:
        for conn in (self.video, self.control):
            if conn is not None:
                conn.close()
        if self.shell is not None:
            self.shell.close()


def decode_latest(packets: list[VideoPacket]) -> np.ndarray:
    """Decode the stream (config prepended to the next packet, as upstream's demuxer does);
    the last picture as RGB."""
    decoder = av.CodecContext.create("h264", "r")
    pending, last = b"", None
    for packet in packets:
        if packet.config:
            pending = packet.data
            continue
        for frame in decoder.decode(av.Packet(pending + packet.data)):
            last = frame
        pending = b""
    for frame in decoder.decode(None):
        last = frame
    assert last is not None, "no picture decoded"
    return last.to_ndarray(format="rgb24")


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture
def client_factory(adb_server, farm, tmp_path):
    """Makes started clients for phone i; closes them (and so their servers) afterwards."""
    clients: list[ScrcpyTestClient] = []

    def make(index: int, **params) -> ScrcpyTestClient:
        serial = farm.serials[index]
        run_adb(adb_server, "-s", serial, "shell", "vphone random-popups off")
        device = adbutils.AdbClient(port=adb_server.port).device(serial)
        client = ScrcpyTestClient(device, ServerParams(scid=new_scid(), **params))
        clients.append(client)
        client.push_jar(tmp_path)
        client.start()
        client.open()
        return client

    yield make
    for client in clients:
        client.close()


def go_home(server: AdbServer, serial: str) -> None:
    run_adb(server, "-s", serial, "shell", "input keyevent HOME; vphone log --clear")


# --- the video socket ---------------------------------------------------------------------------


def test_video_socket_sends_meta_config_then_frames_that_decode_to_the_screen(
        adb_server, farm, client_factory):
    serial = farm.serials[0]
    go_home(adb_server, serial)
    client = client_factory(0)
    packets = [p for _, p in client.wait_packets(3)]
    assert client.received.meta == DeviceMeta("VirtualPhone")
    assert client.received.codec == CodecMeta(CODEC_H264, 1080, 2400)
    assert packets[0].config and packets[0].pts is None  # SPS/PPS first, CONFIG flag
    assert packets[0].data.startswith(b"\x00\x00\x00\x01")  # Annex-B
    assert packets[1].key_frame and not packets[1].config  # an IDR to start from
    assert all(not p.config for p in packets[1:])
    pts = [p.pts for p in packets[1:]]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    picture = decode_latest(packets)
    assert picture.shape == (2400, 1080, 3)
    assert mean_abs_diff(picture, screencap_rgb(adb_server, serial)) < 4.0


def test_max_size_scales_the_video_and_the_touches(adb_server, farm, client_factory):
    serial = farm.serials[1]
    go_home(adb_server, serial)
    client = client_factory(1, max_size=800)
    packets = [p for _, p in client.wait_packets(2)]
    # Upstream: the longer side to max_size, the other in proportion, both multiples of 8.
    assert client.received.codec == CodecMeta(CODEC_H264, 360, 800)
    picture = decode_latest(packets)
    assert picture.shape == (800, 360, 3)
    import cv2
    small = cv2.resize(screencap_rgb(adb_server, serial), (360, 800),
                       interpolation=cv2.INTER_AREA)
    assert mean_abs_diff(picture, small) < 6.0
    client.tap(20, 750, (360, 800))  # video pixels -> phone pixels (x3)
    # An event for another video size is dropped, as upstream's PositionMapper does.
    client.tap(20, 750, (1080, 2400))
    wait_for_log(adb_server, serial, 1)
    time.sleep(0.3)
    taps = [without_ts(e) for e in vphone_log(adb_server, serial) if e["kind"] == "tap"]
    assert taps == [{"kind": "tap", "x": 60, "y": 2250, "via": "agent"}]


def wait_for_log(server: AdbServer, serial: str, n: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        entries = vphone_log(server, serial)
        if len(entries) >= n or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def test_a_static_screen_sends_only_the_100_ms_repeats(adb_server, farm, client_factory):
    serial = farm.serials[2]
    go_home(adb_server, serial)
    client = client_factory(2)
    client.wait_packets(3)
    time.sleep(0.3)
    start = len(client.packets())
    time.sleep(1.5)
    static = [p for _, p in client.packets()[start:]]
    gaps = [(b.pts - a.pts) / 1e6 for a, b in zip(static, static[1:])]
    # A repeat every 100 ms (MediaCodec's KEY_REPEAT_PREVIOUS_FRAME_AFTER), nothing between;
    # one shorter gap is allowed for the status bar's clock turning over a minute.
    assert 5 <= len(static) <= 17, gaps
    assert sum(g < 0.09 for g in gaps) <= 1, gaps
    assert all(not p.key_frame for p in static)  # repeats are tiny P frames
    # A change is sent at once, not at the next repeat.
    before = len(client.packets())
    run_adb(adb_server, "-s", serial, "shell", "am start -n com.phonefarm.clipshare/.MainActivity")
    client.wait_packets(before + 1)


def test_max_fps_bounds_the_frame_rate_repeats_included(adb_server, farm, client_factory):
    client = client_factory(0, max_fps=4)
    client.wait_packets(3)
    start = len(client.packets())
    time.sleep(1.2)
    static = [p for _, p in client.packets()[start:]]
    gaps = [(b.pts - a.pts) / 1e6 for a, b in zip(static, static[1:])]
    assert static and all(g >= 0.24 for g in gaps), gaps


def test_with_audio_on_the_sockets_are_video_audio_control(adb_server, farm, tmp_path):
    """Upstream's default audio=true: a third socket between video and control; this phone
    has no sound, so its stream is disabled (codec id 0) and stays open."""
    serial = farm.serials[1]
    run_adb(adb_server, "-s", serial, "shell", "vphone log --clear")
    device = adbutils.AdbClient(port=adb_server.port).device(serial)
    client = ScrcpyTestClient(device, ServerParams(scid=new_scid(), audio=True))
    client.push_jar(tmp_path)
    client.start()
    try:
        video = client.connect()
        assert video.recv(1) == b"\x00"
        audio = client.connect()
        control = client.connect()
        audio.settimeout(10)
        assert audio.recv(4) == b"\x00\x00\x00\x00"
        video.settimeout(10)
        parser, items = VideoStreamParser(dummy_byte=False), []
        while len(items) < 3:
            items += parser.feed(video.recv(65536))
        assert items[0] == DeviceMeta("VirtualPhone")
        control.sendall(InjectKeycode(0, 3).serialize() + InjectKeycode(1, 3).serialize())
        assert [without_ts(e) for e in wait_for_log(adb_server, serial, 1)] == [
            {"kind": "key", "code": 3, "name": "KEYCODE_HOME", "longpress": False,
             "via": "agent"}]  # the third socket is the control socket
        for sock in (video, audio, control):
            sock.close()
    finally:
        client.close()


# --- the control socket -------------------------------------------------------------------------


def test_touch_key_and_text_log_what_input_logs_plus_via_agent(adb_server, farm,
                                                              client_factory):
    serial = farm.serials[3]
    run_adb(adb_server, "-s", serial, "shell", "am force-stop com.phonefarm.clipshare")
    run_adb(adb_server, "-s", serial, "shell",
            "am start -n com.phonefarm.clipshare/.LoginActivity; vphone log --clear")
    client = client_factory(3)
    client.wait_packets(2)
    # What `input` logs, for comparison.
    run_adb(adb_server, "-s", serial, "shell", "input tap 540 875; input text abc; "
            "input keyevent 67")
    by_input = [without_ts(e) for e in vphone_log(adb_server, serial)]
    run_adb(adb_server, "-s", serial, "shell", "vphone log --clear")

    client.tap(540, 875, (1080, 2400))
    client.send(InjectText("abc"), InjectKeycode(0, 67), InjectKeycode(1, 67))
    by_agent = [without_ts(e) for e in wait_for_log(adb_server, serial, 3)]
    assert by_agent == [dict(e, via="agent") for e in by_input]
    state = orjson.loads(run_adb(adb_server, "-s", serial, "shell", "vphone state").stdout)
    assert state["fields"]["username"] == "abab"  # both rounds typed, one DEL each

    # BACK_OR_SCREEN_ON with the screen on is BACK, logged as `input keyevent 4` logs it.
    run_adb(adb_server, "-s", serial, "shell", "vphone log --clear")
    client.send(BackOrScreenOn(0), BackOrScreenOn(1))
    assert [without_ts(e) for e in wait_for_log(adb_server, serial, 1)] == [
        {"kind": "key", "code": 4, "name": "KEYCODE_BACK", "longpress": False, "via": "agent"}]


def test_clipboard_paste_types_what_input_text_cannot(adb_server, farm, client_factory):
    serial = farm.serials[3]
    run_adb(adb_server, "-s", serial, "shell", "am force-stop com.phonefarm.clipshare")
    run_adb(adb_server, "-s", serial, "shell",
            "am start -n com.phonefarm.clipshare/.LoginActivity; input tap 540 875; "
            "vphone log --clear")
    # clipboard_autosync=false: only then does upstream answer GET_CLIPBOARD.
    client = client_factory(3, extra=(("clipboard_autosync", "false"),))
    client.wait_packets(2)
    assert run_adb(adb_server, "-s", serial, "shell", "input text 'héllo'").returncode != 0
    client.send(SetClipboard(sequence=7, text="héllo ✓", paste=True), GetClipboard())
    parser = DeviceMessageParser()
    got: list = []
    while len(got) < 2:
        got += parser.feed(client.control.recv(4096))
    assert got == [AckClipboard(7), Clipboard("héllo ✓")]
    entries = [without_ts(e) for e in wait_for_log(adb_server, serial, 1)]
    # Pasting is pressing KEYCODE_PASTE, as upstream does; its entry says what it pasted.
    assert entries == [{"kind": "key", "code": 279, "name": "KEYCODE_PASTE",
                        "longpress": False, "text": "héllo ✓", "via": "agent"}]
    state = orjson.loads(run_adb(adb_server, "-s", serial, "shell", "vphone state").stdout)
    assert state["fields"]["username"] == "héllo ✓"
    # Text injection skips characters without a key, as upstream's injectText does.
    run_adb(adb_server, "-s", serial, "shell", "vphone log --clear")
    client.send(InjectText("né"))
    assert [without_ts(e) for e in wait_for_log(adb_server, serial, 1)] == [
        {"kind": "text", "text": "n", "via": "agent"}]


# --- life cycle and faults ----------------------------------------------------------------------


def wait_eof(sock: socket.socket, timeout: float = 10) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (socket.timeout, TimeoutError):
        return False
    except OSError:
        return True
    return True


def test_agent_kill_drops_the_sockets_and_the_server(adb_server, farm, client_factory):
    serial = farm.serials[0]
    client = client_factory(0)
    client.wait_packets(2)
    out = run_adb(adb_server, "-s", serial, "shell", "vphone agent-kill")
    assert out.returncode == 0
    assert f"scid={client.params.scid:08x}".encode() in out.stdout
    assert wait_eof(client.control)
    deadline = time.monotonic() + 10
    while not client.received.eof:
        assert time.monotonic() < deadline, "the video socket stayed open"
        time.sleep(0.05)
    with pytest.raises(adbutils.AdbError):
        client.connect_once()
    assert run_adb(adb_server, "-s", serial, "shell", "vphone agent-kill").returncode == 1


def test_agent_kill_ends_the_shell_command_as_a_sigkill_does(adb_server, farm, tmp_path):
    serial = farm.serials[2]
    device = adbutils.AdbClient(port=adb_server.port).device(serial)
    client = ScrcpyTestClient(device, ServerParams(scid=new_scid()))
    client.push_jar(tmp_path)
    # The real adb client, shell protocol v2; its stdin ends at once (CLOSE_STDIN), which
    # must not stop the server.
    proc = subprocess.Popen(["adb", "-P", str(adb_server.port), "-s", serial, "shell",
                             client.params.shell_command()], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        client.open()
        client.wait_packets(2)
        run_adb(adb_server, "-s", serial, "shell", "vphone agent-kill")
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
        client.close()
    assert proc.returncode == 137  # 128 + SIGKILL
    assert out.startswith(b"[server] INFO: Device: ")


def test_a_control_socket_closed_mid_message_ends_the_server(adb_server, farm,
                                                            client_factory):
    serial = farm.serials[3]
    run_adb(adb_server, "-s", serial, "shell", "vphone log --clear")
    client = client_factory(3)
    client.wait_packets(1)
    client.control.sendall(InjectTouchEvent(0, 0, 10, 10, 1080, 2400).serialize()[:17])
    client.control.close()
    assert wait_eof(client.shell.conn)
    assert vphone_log(adb_server, serial) == []


def test_an_unknown_control_message_ends_the_server_saying_why(adb_server, farm,
                                                               client_factory):
    client = client_factory(3)
    client.wait_packets(1)
    client.control.sendall(bytes([200]))
    client.shell.conn.settimeout(10)
    output = b""
    while chunk := client.shell.conn.recv(4096):
        output += chunk
    assert b"[server] ERROR: Controller error: " in output
    assert b"unknown control message type 200" in output


def test_closing_the_shell_stream_stops_the_server(adb_server, farm, client_factory):
    client = client_factory(1)
    client.wait_packets(2)
    client.shell.close()
    assert wait_eof(client.control)
    with pytest.raises(adbutils.AdbError):
        client.connect_once()


def test_no_server_no_socket_and_one_session_per_server(adb_server, farm, client_factory,
                                                        tmp_path):
    device = adbutils.AdbClient(port=adb_server.port).device(farm.serials[2])
    with pytest.raises(adbutils.AdbError):
        device.create_connection(adbutils.Network.LOCAL_ABSTRACT, "scrcpy_0badc0de")
    client = client_factory(2)
    client.wait_packets(1)
    # The server stops listening once it has its video and control sockets.
    with pytest.raises(adbutils.AdbError):
        client.connect_once()


def test_the_server_log_comes_on_the_shell_stream_and_it_exits_when_the_client_leaves(
        adb_server, farm, client_factory):
    client = client_factory(2)
    client.wait_packets(1)
    client.shell.conn.settimeout(10)
    first = client.shell.conn.recv(4096)
    assert first.startswith(b"[server] INFO: Device: [phonefarm] phonefarm VirtualPhone "
                            b"(Android 11)")
    client.control.close()  # upstream: the control loop ends, so does the server
    assert wait_eof(client.shell.conn)


def test_unplug_kills_the_server(adb_server, farm, client_factory):
    serial = farm.serials[1]
    client = client_factory(1)
    client.wait_packets(1)
    run_adb(adb_server, "-s", serial, "shell", "vphone unplug 0.5")
    assert wait_eof(client.control)
    deadline = time.monotonic() + 20
    while run_adb(adb_server, "-s", serial, "shell", "echo up").stdout != b"up\n":
        assert time.monotonic() < deadline, "the phone did not come back"
        time.sleep(0.2)
    with pytest.raises(adbutils.AdbError):
        client.connect_once()


# --- refused start commands ---------------------------------------------------------------------


def start_command(**changes) -> str:
    return ServerParams(scid=new_scid()).shell_command().replace(
        f" {SCRCPY_VERSION} ", f" {changes.get('version', SCRCPY_VERSION)} ")


def test_another_version_is_refused_with_upstreams_error(adb_server, farm, tmp_path):
    serial = farm.serials[0]
    device = adbutils.AdbClient(port=adb_server.port).device(serial)
    ScrcpyTestClient(device, ServerParams(scid=1)).push_jar(tmp_path)
    r = run_adb(adb_server, "-s", serial, "shell", start_command(version="3.3.3"), timeout=20)
    assert r.returncode == 1
    assert r.stderr.startswith(b"[server] ERROR: The server version (3.3.4) does not match "
                               b"the client (3.3.3)\njava.lang.IllegalArgumentException: ")


@pytest.mark.parametrize("jar", [None, b""], ids=["missing", "empty"])
def test_a_missing_or_empty_jar_fails_as_app_process_does(adb_server, farm, tmp_path, jar):
    serial = farm.serials[0]
    run_adb(adb_server, "-s", serial, "shell", f"rm -f {DEVICE_SERVER_PATH}")
    if jar is not None:
        run_adb(adb_server, "-s", serial, "shell", f"touch {DEVICE_SERVER_PATH}")
    r = run_adb(adb_server, "-s", serial, "shell", start_command(), timeout=20)
    assert r.returncode == 134  # SIGABRT: the runtime aborts on the pending exception
    assert (b'java.lang.ClassNotFoundException: Didn\'t find class '
            b'"com.genymobile.scrcpy.Server"') in r.stderr
    assert r.stderr.endswith(b"Aborted\n")


def test_a_plain_shell_command_with_an_assignment_runs_the_command(adb_server, farm):
    r = run_adb(adb_server, "-s", farm.serials[0], "shell", "FOO=bar echo hi")
    assert r.returncode == 0 and r.stdout == b"hi\n"


# --- the cost profile ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_farm(adb_server: AdbServer) -> VirtualFarm:
    f = VirtualFarm(FarmSpec(phones=1, adb=adb_server, profile=REAL)).start_in_thread()
    yield f
    f.stop_thread()


def test_under_real_the_server_listens_only_after_app_process_started(adb_server, real_farm,
                                                                      tmp_path):
    device = adbutils.AdbClient(port=adb_server.port).device(real_farm.serials[0])
    client = ScrcpyTestClient(device, ServerParams(scid=new_scid()))
    client.push_jar(tmp_path)
    try:
        started = time.monotonic()
        client.start()
        client.open()
        assert time.monotonic() - started >= APP_PROCESS_START_S
        client.wait_packets(2)
    finally:
        client.close()
