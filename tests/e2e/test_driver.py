"""The device driver against virtual phones through a real adb server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver, UiDumpUnavailable, field_at, parse_ui_dump
from protocol.errors import DeviceError, DeviceGone
from virtual.apk import build_apk

TRICKY_TEXTS = [
    "hello world",
    "it's \"quoted\" and 'single'",
    "a & b ; c | d $HOME \\ back % pct `tick` *glob* (paren) <in> >out #hash ~ !bang",
    "two  spaces and trailing ",
    "100%s literal percent-s",
    "line one\nline two",
    "héllo wörld ✓ 日本語 😀",
]


@pytest.fixture()
def driver(farm, adb_server) -> DeviceDriver:
    d = DeviceDriver(farm.serials[0], AdbServer(port=adb_server.port))
    d.shell("vphone log --clear")
    return d


def inputs(d: DeviceDriver) -> list[dict]:
    return [orjson.loads(l) for l in d.shell("vphone log").text.splitlines() if l.strip()]


def test_screenshot_is_a_raw_rgba_array_matching_the_png(driver):
    frame = driver.screenshot()
    assert frame.shape == (2400, 1080, 4) and frame.dtype == np.uint8
    import cv2

    png = cv2.imdecode(np.frombuffer(driver.exec_out("screencap -p"), np.uint8),
                       cv2.IMREAD_UNCHANGED)
    # the status bar clock may tick between the two calls: compare below it
    assert np.array_equal(cv2.cvtColor(png, cv2.COLOR_BGRA2RGBA)[200:], frame[200:])


def test_gestures_and_keys_arrive_as_such(driver):
    driver.tap(10, 20)
    driver.long_tap(30, 40, 900)
    driver.swipe(100, 2000, 100, 500, 350)
    driver.key("BACK")
    driver.key(3)
    driver.key("DEL", repeat=3)
    got = [(e["kind"], e.get("x", e.get("x1")), e.get("duration_ms"), e.get("code"))
           for e in inputs(driver)]
    assert got == [("tap", 10, None, None), ("long_press", 30, 900, None),
                   ("swipe", 100, 350, None), ("key", None, None, 4), ("key", None, None, 3)] + \
        [("key", None, None, 67)] * 3


def test_swipe_along_a_path_arrives_as_that_path(driver):
    """A path of points is played as one `input motionevent` chain (one adb round trip) and
    arrives as one swipe through every point; two points stay a plain `input swipe`."""
    curve = [(200, 2000), (350, 1700), (600, 1500), (800, 1200), (700, 900), (540, 600)]
    driver.swipe(200, 2000, 540, 600, 400, path=curve)
    driver.swipe(100, 2000, 100, 500, 350, path=[(100, 2000), (100, 500)])
    swipe, straight = inputs(driver)
    assert swipe["kind"] == "swipe" and swipe["via"] == "motionevent"
    assert swipe["path"] == [list(p) for p in curve]
    assert straight["kind"] == "swipe" and "path" not in straight
    assert straight["duration_ms"] == 350


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_type_text_round_trip_is_exact(driver, text):
    driver.type_text(text)
    typed = []
    for e in inputs(driver):
        if e["kind"] == "text":
            typed.append(e["text"])
        elif e["kind"] == "key" and e["code"] == 66:
            typed.append("\n")
    assert "".join(typed) == text


def test_unknown_key_is_a_clear_error(driver):
    with pytest.raises(DeviceError, match="unknown key 'HOMEE'"):
        driver.key("HOMEE")
    with pytest.raises(DeviceError, match="repeat 0 is not in 1..100"):
        driver.key("DEL", repeat=0)


def test_launch_stop_and_current_app(driver):
    driver.launch_app("com.phonefarm.clipshare")
    assert driver.current_app()[0] == "com.phonefarm.clipshare"
    driver.stop_app("com.phonefarm.clipshare")
    assert driver.current_app()[0] != "com.phonefarm.clipshare"
    with pytest.raises(DeviceError, match="not installed"):
        driver.launch_app("com.example.missing")
    with pytest.raises(DeviceError, match="does not exist"):
        driver.launch_app("com.example.missing", ".Main")


def test_install_single_and_split_set(driver, tmp_path):
    (tmp_path / "solo.apk").write_bytes(build_apk("com.example.solo"))
    (tmp_path / "base.apk").write_bytes(build_apk("com.example.duo"))
    (tmp_path / "split.apk").write_bytes(build_apk("com.example.duo", split="config.arm64"))
    driver.install(tmp_path / "solo.apk")
    driver.install([tmp_path / "base.apk", tmp_path / "split.apk"])
    pkgs = driver.list_packages()
    assert "com.example.solo" in pkgs and "com.example.duo" in pkgs
    (tmp_path / "other.apk").write_bytes(build_apk("com.example.other", split="config.x"))
    with pytest.raises(DeviceError, match="need exactly one base APK"):
        driver.install([tmp_path / "other.apk"])


def test_push_pull(driver, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    driver.push(src, "/sdcard/a.bin")
    driver.pull("/sdcard/a.bin", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == src.read_bytes()
    with pytest.raises(DeviceError):
        driver.pull("/sdcard/missing.bin", tmp_path / "c.bin")


def test_shell_errors_name_serial_and_command(driver):
    with pytest.raises(DeviceError) as info:
        driver.shell("frobnicate 1")
    assert driver.serial in str(info.value) and "frobnicate 1" in str(info.value)
    assert "exit status 127" in str(info.value)


def test_unknown_phone_is_device_gone(adb_server):
    d = DeviceDriver("127.0.0.1:1", AdbServer(port=adb_server.port))
    with pytest.raises(DeviceGone, match="127.0.0.1:1"):
        d.tap(1, 1)


def test_unplugged_phone_raises_device_gone_then_works_again(farm, adb_server):
    import time

    d = DeviceDriver(farm.serials[2], AdbServer(port=adb_server.port))
    d.shell("vphone unplug 1")
    deadline = time.monotonic() + 5
    with pytest.raises(DeviceGone):
        while time.monotonic() < deadline:
            d.tap(1, 1)
            time.sleep(0.05)
    deadline = time.monotonic() + 20
    while True:
        try:
            d.tap(2, 2)
            break
        except DeviceGone:
            assert time.monotonic() < deadline, "phone did not come back"
            time.sleep(0.1)


def test_a_phone_gone_after_the_command_reached_it_says_it_was_sent(farm, adb_server):
    """The 4 x 15 chaos bench: a phone unplugged while its `input tap` ran had played the
    tap, and the playback, told only "gone", tapped again once the phone was back. A
    command whose shell was open on the phone raises DeviceGone with ``sent`` (the phone
    actor answers ``delivered``, and the step's retries only look); one refused before it
    reached the phone does not."""
    import threading
    import time

    serial = farm.serials[3]
    phone = next(p for p in farm.phones if p.serial == serial)
    d = DeviceDriver(serial, AdbServer(port=adb_server.port))
    d.shell("vphone slow 1500")  # the tap's shell is open for 1.5 s before it runs
    raised: list[BaseException] = []

    def tap() -> None:
        try:
            d.tap(3, 3)
        except BaseException as exc:  # noqa: BLE001 - looked at below
            raised.append(exc)
    worker = threading.Thread(target=tap)
    worker.start()
    try:
        farm.call(phone.schedule_unplug, 1.5)  # 0.2 s from now, with the tap's shell open
        worker.join(20)
        assert len(raised) == 1 and isinstance(raised[0], DeviceGone), raised
        assert raised[0].sent is True
        with pytest.raises(DeviceGone) as refused:  # unplugged: nothing reaches the phone
            d.tap(4, 4)
        assert refused.value.sent is False
    finally:
        phone.slow_ms = 0
        worker.join(20)
    deadline = time.monotonic() + 20
    while not phone.plugged:  # back for the module's other tests
        assert time.monotonic() < deadline, "phone did not come back"
        time.sleep(0.1)


def test_eight_phones_at_once(adb_server):
    from virtual.farm import FarmSpec, VirtualFarm

    farm8 = VirtualFarm(FarmSpec(phones=8, seed=100, adb=adb_server)).start_in_thread()
    try:
        drivers = [DeviceDriver(s, AdbServer(port=adb_server.port)) for s in farm8.serials]

        def work(i: int) -> tuple[int, tuple]:
            d = drivers[i]
            d.tap(100 + i, 200 + i)
            return i, d.screenshot().shape

        with ThreadPoolExecutor(8) as pool:
            results = dict(pool.map(work, range(8)))
        assert all(shape == (2400, 1080, 4) for shape in results.values())
        for i, d in enumerate(drivers):
            taps = [e for e in inputs(d) if e["kind"] == "tap"]
            assert taps == [{"ts": taps[0]["ts"], "kind": "tap", "x": 100 + i, "y": 200 + i}]
    finally:
        farm8.stop_thread()


def ui_state(d: DeviceDriver) -> dict:
    return orjson.loads(d.shell("vphone state").text)


def dismiss_popups(d: DeviceDriver) -> None:
    for _ in range(5):
        if not ui_state(d)["popup"]:
            return
        d.tap(757, 1460)  # the right-hand button: Dismiss / Not now / Wait


@pytest.fixture(scope="module")
def caption_phone(farm, adb_server) -> DeviceDriver:
    """Phone 4, logged in to the demo app."""
    d = DeviceDriver(farm.serials[3], AdbServer(port=adb_server.port))
    d.stop_app("com.phonefarm.clipshare")
    d.launch_app("com.phonefarm.clipshare")
    dismiss_popups(d)
    assert ui_state(d)["screen"] == "login"
    d.tap(540, 875)
    d.type_text("clip_creator")
    d.tap(540, 1075)
    d.type_text("hunter2")
    d.tap(540, 1330)
    dismiss_popups(d)
    assert ui_state(d)["account"] == "clip_creator"
    return d


@pytest.mark.parametrize("text", [t for t in TRICKY_TEXTS if "\n" not in t])
def test_typed_text_lands_exactly_in_the_apps_text_field(caption_phone, text):
    d = caption_phone
    d.tap(540, 2300)  # + Upload
    dismiss_popups(d)
    assert ui_state(d)["screen"] == "upload"
    d.tap(540, 1060)  # caption field
    d.type_text(text)
    assert ui_state(d)["fields"]["caption"] == text
    d.tap(540, 1495)  # Cancel
    dismiss_popups(d)


USERNAME_BOX = (90, 800, 990, 950)  # the login screen's username field, phone pixels


@pytest.fixture()
def login_phone(farm, adb_server) -> DeviceDriver:
    """Phone 2 on ClipShare's login screen, no random popups (each step here must land)."""
    d = DeviceDriver(farm.serials[1], AdbServer(port=adb_server.port))
    d.shell("vphone random-popups off")
    d.stop_app("com.phonefarm.clipshare")
    d.launch_app("com.phonefarm.clipshare")
    if ui_state(d)["screen"] == "feed":  # logged in by an earlier test: add an account
        d.tap(900, 2300)
        d.tap(540, 1025)
        d.tap(540, 1115)
    assert ui_state(d)["screen"] == "login"
    yield d
    d.shell("vphone random-popups on")
    d.shell("vphone uiautomator on")


def test_ui_dump_reads_a_field_and_sees_a_dialog_as_no_field(login_phone):
    d = login_phone
    d.tap(540, 875)
    d.key("DEL", repeat=40)
    assert d.field_text(USERNAME_BOX) == ""  # empty: the hint is shown, and read as empty
    d.type_text("dance_daily")
    nodes = d.ui_dump()
    user = next(n for n in nodes if n.resource_id.endswith(":id/username"))
    assert (user.text, user.hint, user.focused, user.bounds) == (
        "dance_daily", "Username", True, USERNAME_BOX)
    assert d.field_text(USERNAME_BOX) == "dance_daily"
    d.key("DEL", repeat=4)
    assert d.field_text(USERNAME_BOX) == "dance_d"
    d.shell("vphone popup rate_us")
    assert d.field_text(USERNAME_BOX) is None  # only the dialog's views: no field there
    assert "Not now" in [n.text for n in d.ui_dump()]
    d.tap(757, 1460)  # Not now
    d.key("DEL", repeat=30)
    assert d.field_text(USERNAME_BOX) == ""
    assert d.ui_dump_supported is True


def test_ui_dump_through_a_file_where_the_tty_gives_none(login_phone):
    out = login_phone.shell("uiautomator dump && cat /sdcard/window_dump.xml")
    assert out.text.startswith("UI hierchary dumped to: /sdcard/window_dump.xml\n<?xml")
    nodes = parse_ui_dump(out.text)
    assert field_at(nodes, USERNAME_BOX).hint == "Username"


def test_a_phone_without_uiautomator_is_remembered_as_such(login_phone):
    d = login_phone
    d.shell("vphone uiautomator off")
    assert d.ui_dump() is None and d.ui_dump_supported is False
    with pytest.raises(UiDumpUnavailable):
        d.field_text(USERNAME_BOX)
    d.shell("vphone uiautomator on")
    assert d.ui_dump() is None  # not asked again
