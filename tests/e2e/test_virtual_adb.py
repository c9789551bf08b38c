"""Virtual phones as the real `adb` command and adbutils see them."""

from __future__ import annotations

import socket
import struct
import threading
import time

import adbutils
import cv2
import numpy as np
import orjson
import pytest

from tests.conftest import run_adb
from virtual.apk import build_apk
from virtual.adbd import (A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_WRTE, HEADER, VERSION_CHECKSUMMED,
                          checksum)


def vphone_log(server, serial: str) -> list[dict]:
    out = run_adb(server, "-s", serial, "shell", "vphone log").stdout
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def test_adb_devices_lists_every_phone_with_its_model(adb_server, farm):
    out = run_adb(adb_server, "devices", "-l").stdout.decode()
    for serial in farm.serials:
        line = next(l for l in out.splitlines() if l.startswith(serial))
        assert " device " in line and "model:VirtualPhone" in line


def test_shell_keeps_exit_status_and_reports_unknown_commands(adb_server, farm):
    s = farm.serials[0]
    r = run_adb(adb_server, "-s", s, "shell", "echo hi; false; echo $?")
    assert r.returncode == 0 and r.stdout == b"hi\n1\n"
    r = run_adb(adb_server, "-s", s, "shell", "frobnicate --now")
    assert r.returncode == 127
    assert b"frobnicate: inaccessible or not found" in r.stderr
    r = run_adb(adb_server, "-s", s, "shell", "getprop ro.build.version.sdk && wm size")
    assert r.stdout.splitlines() == [b"30", b"Physical size: 1080x2400"]


def test_legacy_shell_through_adbutils(adb_server, farm):
    d = adbutils.AdbClient(port=adb_server.port).device(farm.serials[0])
    assert d.shell("echo 'a  b' \"c\"") == "a  b c"
    assert d.shell2("false").returncode == 1  # legacy shell + adbutils' X4EXIT marker
    assert d.window_size() == (1080, 2400)
    assert d.app_current().package  # parses our dumpsys window


def test_exec_out_screencap_png_is_a_valid_full_frame(adb_server, farm):
    r = run_adb(adb_server, "-s", farm.serials[0], "exec-out", "screencap", "-p")
    img = cv2.imdecode(np.frombuffer(r.stdout, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape[:2] == (2400, 1080)


def test_raw_screencap_has_android_header(adb_server, farm):
    r = run_adb(adb_server, "-s", farm.serials[0], "exec-out", "screencap")
    w, h, fmt, space = struct.unpack_from("<IIII", r.stdout)
    assert (w, h, fmt) == (1080, 2400, 1) and len(r.stdout) == 16 + w * h * 4


def test_push_pull_5mb_round_trip_is_byte_exact(adb_server, farm, tmp_path):
    blob = np.random.default_rng(7).integers(0, 256, 5 * 1024 * 1024, dtype=np.uint8).tobytes()
    src, back = tmp_path / "big.bin", tmp_path / "back.bin"
    src.write_bytes(blob)
    s = farm.serials[1]
    assert run_adb(adb_server, "-s", s, "push", str(src), "/sdcard/Download/big.bin").returncode == 0
    assert run_adb(adb_server, "-s", s, "pull", "/sdcard/Download/big.bin", str(back)).returncode == 0
    assert back.read_bytes() == blob
    ls = run_adb(adb_server, "-s", s, "shell", "ls -l /sdcard/Download").stdout
    assert b"5242880" in ls and b"big.bin" in ls
    assert run_adb(adb_server, "-s", s, "shell", "rm /sdcard/Download/big.bin").returncode == 0
    assert run_adb(adb_server, "-s", s, "shell", "cat /sdcard/Download/big.bin").returncode == 1


def test_install_and_install_multiple_of_a_split_set(adb_server, farm, tmp_path):
    s = farm.serials[1]
    (tmp_path / "one.apk").write_bytes(build_apk("com.example.one"))
    (tmp_path / "base.apk").write_bytes(build_apk("com.example.split", label="Split"))
    (tmp_path / "hdpi.apk").write_bytes(build_apk("com.example.split", split="config.xxhdpi"))
    r = run_adb(adb_server, "-s", s, "install", str(tmp_path / "one.apk"))
    assert r.returncode == 0 and b"Success" in r.stdout
    r = run_adb(adb_server, "-s", s, "install-multiple", str(tmp_path / "base.apk"),
                str(tmp_path / "hdpi.apk"))
    assert r.returncode == 0 and b"Success" in r.stdout, r
    paths = run_adb(adb_server, "-s", s, "shell", "pm path com.example.split").stdout
    assert b"base.apk" in paths and b"split_config.xxhdpi.apk" in paths
    pkgs = run_adb(adb_server, "-s", s, "shell", "pm list packages").stdout
    assert b"package:com.example.one" in pkgs and b"package:com.example.split" in pkgs
    (tmp_path / "bad.apk").write_bytes(b"not a zip")
    r = run_adb(adb_server, "-s", s, "install", str(tmp_path / "bad.apk"))
    assert r.returncode != 0 and b"INSTALL_PARSE_FAILED_NOT_APK" in r.stdout + r.stderr


def test_vphone_log_records_inputs_as_json_lines(adb_server, farm):
    s = farm.serials[2]
    run_adb(adb_server, "-s", s, "shell", "vphone log --clear")
    run_adb(adb_server, "-s", s, "shell", "input tap 100 200 && input swipe 10 20 30 900 250 "
            "&& input swipe 50 60 50 60 900 && input keyevent KEYCODE_BACK")
    kinds = [(e["kind"], e.get("x"), e.get("duration_ms")) for e in vphone_log(adb_server, s)]
    assert kinds == [("tap", 100, None), ("swipe", None, 250), ("long_press", 50, 900),
                     ("key", None, None)]


def test_motionevent_chain_is_one_swipe_along_its_path(adb_server, farm):
    """`input motionevent` as Android 10+ has it: DOWN, MOVEs and UP (here in one shell line,
    as the driver sends them) log one swipe with the path; CANCEL drops the touch."""
    s = farm.serials[2]
    run_adb(adb_server, "-s", s, "shell", "vphone log --clear")
    r = run_adb(adb_server, "-s", s, "shell",
                "input motionevent DOWN 540 1800; input motionevent MOVE 700 1500; sleep 0.05; "
                "input motionevent MOVE 600 1100; input motionevent UP 540 700")
    assert r.returncode == 0, r
    run_adb(adb_server, "-s", s, "shell",
            "input motionevent DOWN 10 10; input motionevent MOVE 300 300; input motionevent CANCEL")
    run_adb(adb_server, "-s", s, "shell", "input motionevent DOWN 100 200 && input motionevent UP 105 200")
    log = vphone_log(adb_server, s)
    assert [e["kind"] for e in log] == ["swipe", "tap"]
    swipe = log[0]
    assert swipe["path"] == [[540, 1800], [700, 1500], [600, 1100], [540, 700]]
    assert (swipe["x1"], swipe["y1"], swipe["x2"], swipe["y2"]) == (540, 1800, 540, 700)
    assert swipe["duration_ms"] >= 50 and swipe["via"] == "motionevent"
    assert (log[1]["x"], log[1]["y"]) == (100, 200)
    r = run_adb(adb_server, "-s", s, "shell", "input motionevent HOVER 1 2")
    assert r.returncode != 0 and b"Unknown action: HOVER" in r.stdout + r.stderr


def test_unplug_is_seen_by_track_devices_and_replug_too(adb_server, farm):
    s = farm.serials[3]
    client = adbutils.AdbClient(port=adb_server.port)
    events: list[tuple[str, bool, str]] = []
    stop = threading.Event()

    def track():
        for ev in client.track_devices():
            if ev.serial == s:
                events.append((ev.serial, ev.present, ev.status))
            if stop.is_set():
                return

    threading.Thread(target=track, daemon=True).start()
    time.sleep(0.3)
    assert b"unplugging" in run_adb(adb_server, "-s", s, "shell", "vphone unplug 1.5").stdout
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (s, False, "absent") in events and events[-1] == (s, True, "device"):
            break
        time.sleep(0.1)
    stop.set()
    assert (s, False, "absent") in events, events
    assert events[-1] == (s, True, "device"), events
    assert run_adb(adb_server, "-s", s, "shell", "echo back").stdout == b"back\n"


# --- the wire itself: a device-protocol client straight to the phone's port --------------

class RawHost:
    """Speaks the host side of the ADB transport directly, for malformed-input tests."""

    def __init__(self, serial: str, version: int = VERSION_CHECKSUMMED) -> None:
        host, port = serial.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.version = version
        self.send(A_CNXN, version, 4096, b"host::features=shell_v2\0")
        cmd, arg0, _, data = self.recv()
        assert cmd == A_CNXN and arg0 == version and data.startswith(b"device::")

    def send(self, cmd: int, a0: int, a1: int, data: bytes = b"", magic: int | None = None,
             check: int | None = None) -> None:
        self.sock.sendall(HEADER.pack(cmd, a0, a1, len(data), checksum(data) if check is None
                                      else check, cmd ^ 0xFFFFFFFF if magic is None else magic) + data)

    def recv(self) -> tuple[int, int, int, bytes]:
        head = self._exact(24)
        cmd, a0, a1, n, chk, magic = HEADER.unpack(head)
        data = self._exact(n)
        if self.version == VERSION_CHECKSUMMED:
            assert chk == checksum(data)
        return cmd, a0, a1, data

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def run(self, local_id: int, service: bytes) -> bytes:
        self.send(A_OPEN, local_id, 0, service + b"\0")
        cmd, remote, _, _ = self.recv()
        assert cmd == A_OKAY
        out = b""
        while True:
            cmd, a0, a1, data = self.recv()
            if cmd == A_WRTE:
                out += data
                self.send(A_OKAY, local_id, a0)
            elif cmd == A_CLSE:
                return out


def test_protocol_version_with_checksums_works(farm):
    host = RawHost(farm.serials[0], VERSION_CHECKSUMMED)
    assert host.run(1, b"shell:echo checked") == b"checked\n"


def test_unknown_service_is_refused_and_the_phone_keeps_serving(farm, caplog):
    host = RawHost(farm.serials[0])
    host.send(A_OPEN, 5, 0, b"frobnicate:now\0")
    cmd, a0, a1, _ = host.recv()
    assert (cmd, a0, a1) == (A_CLSE, 0, 5)
    assert host.run(6, b"shell:echo still") == b"still\n"
    assert "unknown service 'frobnicate:now'" in caplog.text


def test_stream_opened_twice_is_refused_and_the_first_stays_open(farm, caplog):
    host = RawHost(farm.serials[0])
    host.send(A_OPEN, 9, 0, b"shell:\0")  # interactive: stays open
    cmd, local, _, _ = host.recv()
    assert cmd == A_OKAY
    cmd, _, _, prompt = host.recv()
    assert cmd == A_WRTE and prompt.endswith(b"$ ")
    host.send(A_OKAY, 9, local)
    host.send(A_OPEN, 9, 0, b"shell:echo dup\0")
    cmd, a0, a1, _ = host.recv()
    assert (cmd, a0, a1) == (A_CLSE, 0, 9)
    assert "reuses open stream id 9" in caplog.text
    host.send(A_WRTE, 9, local, b"echo first\n")
    seen = b""
    while b"first" not in seen:
        cmd, _, _, data = host.recv()
        if cmd == A_WRTE:
            seen += data
            host.send(A_OKAY, 9, local)


def test_malformed_packets_are_logged_and_other_connections_keep_working(adb_server, farm, caplog):
    bad = RawHost(farm.serials[1])
    bad.send(A_OPEN, 3, 0, b"shell:echo x\0", check=12345)  # bad checksum: ignored
    assert bad.run(4, b"shell:echo after-bad-checksum") == b"after-bad-checksum\n"
    bad.send(A_WRTE, 3, 0, b"x", magic=0xDEADBEEF)  # broken frame: connection dropped
    with pytest.raises((ConnectionError, socket.timeout, OSError)):
        bad.recv()
    assert "bad checksum" in caplog.text and "bad packet magic" in caplog.text
    r = run_adb(adb_server, "-s", farm.serials[1], "shell", "echo alive")
    assert r.stdout == b"alive\n"


def test_vphone_popup_forces_an_interrupt_and_unknown_names_are_refused(adb_server, farm):
    s = farm.serials[2]
    r = run_adb(adb_server, "-s", s, "shell", "vphone popup update_available && vphone state")
    assert r.returncode == 0 and orjson.loads(r.stdout)["popup"] == "update_available"
    r = run_adb(adb_server, "-s", s, "shell", "vphone popup no_such_popup")
    assert r.returncode == 2 and b"no_such_popup" in r.stderr
    run_adb(adb_server, "-s", s, "shell", "input keyevent HOME")


def test_vphone_slow_delays_every_reply(adb_server, farm):
    s = farm.serials[2]
    assert run_adb(adb_server, "-s", s, "shell", "vphone slow 400").returncode == 0
    try:
        start = time.monotonic()
        assert run_adb(adb_server, "-s", s, "shell", "echo late").stdout == b"late\n"
        # a functional check that the delay is applied at all, not a speed figure
        assert time.monotonic() - start >= 0.4
    finally:
        run_adb(adb_server, "-s", s, "shell", "vphone slow 0")
