"""registry.match and registry.ocr on synthetic screens drawn with OpenCV.

Every frame is 1080x2400 RGBA, like a phone's raw screencap; reference crops are cut from
clean renders and written as PNGs into a temporary registry folder.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from protocol.errors import FarmError
from registry.match import Matcher, RegionScore, ScreenMatch, load_image
from registry.model import App, Region, Registry, Screen, ScreenRef
from registry.ocr import TextReader, normalize_text, shared_reader, text_similarity

W, H = 1080, 2400
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLUE = (40, 90, 200)
RED = (220, 40, 40)
GREY = (128, 128, 128)

TITLE = (20, 95, 700, 215)
BUTTON = (240, 2150, 840, 2290)
POPUP_TITLE = (160, 960, 920, 1080)
POPUP_BUTTON = (300, 1200, 780, 1320)


def draw_screen(title: str, *, seed: int = 0, header: tuple[int, int, int] = BLUE,
                clock: str = "12:30", button: tuple[str, tuple[int, int, int]] | None = None
                ) -> np.ndarray:
    """A phone screen: status bar with a clock, a coloured header with a title, list items."""
    rng = random.Random(seed)
    img = np.full((H, W, 3), 245, np.uint8)
    cv2.rectangle(img, (0, 0), (W, 80), (20, 20, 20), -1)
    cv2.putText(img, clock, (30, 60), FONT, 1.5, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.rectangle(img, (0, 80), (W, 230), header, -1)
    cv2.putText(img, title, (40, 185), FONT, 2.4, (255, 255, 255), 5, cv2.LINE_AA)
    for i in range(6):
        y = 300 + i * 300
        cv2.rectangle(img, (40, y), (1040, y + 250), (rng.randint(160, 230),) * 3, -1)
        cv2.putText(img, f"item {rng.randint(0, 999)}", (80, y + 140), FONT, 2, (30, 30, 30), 4,
                    cv2.LINE_AA)
    if button:
        text, colour = button
        draw_button(img, BUTTON, text, colour)
    return cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)


def draw_button(img: np.ndarray, box: tuple[int, int, int, int], text: str,
                colour: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
    cv2.putText(img, text, (x1 + 60, y2 - 45), FONT, 2.2, (255, 255, 255), 5, cv2.LINE_AA)


def draw_popup(frame: np.ndarray, title: str, button: str) -> np.ndarray:
    """``frame`` dimmed, with a white dialog on top (what an interrupt looks like)."""
    img = cv2.cvtColor(frame, cv2.COLOR_RGBA2RGB)
    img = (img * 0.4).astype(np.uint8)
    cv2.rectangle(img, (120, 900), (960, 1400), (255, 255, 255), -1)
    cv2.putText(img, title, (200, 1045), FONT, 2.2, (20, 20, 20), 5, cv2.LINE_AA)
    draw_button(img, POPUP_BUTTON, button, (30, 120, 60))
    return cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)


def write_crop(frame: np.ndarray, box: tuple[int, int, int, int], path: Path) -> str:
    x1, y1, x2, y2 = box
    cv2.imwrite(str(path), cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_RGBA2BGRA))
    return path.name


def region(root: Path, frame: np.ndarray, name: str, box: tuple[int, int, int, int],
           stem: str, **extra) -> Region:
    """A region whose reference is ``box`` cut from ``frame``."""
    return Region(name=name, coordinates=box, reference=write_crop(frame, box, root / f"{stem}.png"),
                  **extra)


def jpeg(frame: np.ndarray, quality: int = 70) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGBA2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGBA)


def shifted(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(frame, m, (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def raw_view(frame: np.ndarray) -> np.ndarray:
    """``frame`` as the driver hands it over: a read-only view of a bigger byte buffer."""
    buf = np.zeros(16 + frame.size, np.uint8)
    buf[16:] = frame.ravel()
    view = buf[16:].reshape(frame.shape)
    view.setflags(write=False)
    return view


# ---------------------------------------------------------------- the demo registry

STATES = {"feed": "Feed", "profile": "Profile", "settings": "Settings", "inbox": "Inbox"}


class Demo:
    """clipshare (4 states, a login state with a red button, a rate_us interrupt) plus a
    global low_battery interrupt; ``frames`` are the clean renders the references came from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.frames: dict[str, np.ndarray] = {}
        states: dict[str, Screen] = {}
        for i, (key, title) in enumerate(STATES.items()):
            frame = draw_screen(title, seed=i)
            self.frames[key] = frame
            states[key] = Screen(name=title, validation_regions=[
                region(root, frame, "title", TITLE, key)])
        login = draw_screen("Welcome", seed=9, button=("Log in", RED))
        self.frames["login"] = login
        states["login"] = Screen(name="login", validation_regions=[
            region(root, login, "title", TITLE, "login_title"),
            region(root, login, "login_button", BUTTON, "login_button")])
        rate = draw_popup(self.frames["feed"], "Rate us", "Later")
        self.frames["rate_us"] = rate
        interrupts = {"rate_us": Screen(name="rate_us", validation_regions=[
            region(root, rate, "dialog_title", POPUP_TITLE, "rate_title"),
            region(root, rate, "later", POPUP_BUTTON, "rate_later")])}
        battery = draw_popup(self.frames["profile"], "Battery low", "OK")
        self.frames["low_battery"] = battery
        global_interrupts = {"low_battery": Screen(name="low_battery", validation_regions=[
            region(root, battery, "dialog_title", POPUP_TITLE, "battery_title"),
            region(root, battery, "ok", POPUP_BUTTON, "battery_ok")])}
        self.registry = Registry(apps={
            "clipshare": App(package="com.clipshare.app", states=states, interrupts=interrupts),
            "global": App(interrupts=global_interrupts),
        }, root=str(root))
        self.matcher = Matcher(self.registry)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return Demo(tmp_path_factory.mktemp("registry"))


# ---------------------------------------------------------------- identification

@pytest.mark.parametrize("key", [*STATES, "login"])
def test_each_state_is_identified_exactly(demo: Demo, key: str) -> None:
    frame = raw_view(demo.frames[key])
    for app in ("clipshare", "com.clipshare.app", None):
        match = demo.matcher.identify(frame, app)
        assert match.label == f"clipshare/{key}", app
        assert match.ref == ScreenRef("clipshare", "state", key)
        assert match.ambiguous == () and match.scores == ()
        assert match.elapsed_ms > 0
    assert demo.matcher.matches(frame) == [ScreenRef("clipshare", "state", key)]


def test_a_popup_over_a_state_is_the_interrupt(demo: Demo) -> None:
    assert demo.matcher.identify(demo.frames["rate_us"], "clipshare").label == \
        "clipshare/interrupt:rate_us"
    # The same dialog over another state: the interrupt, whatever is beneath it.
    over_settings = draw_popup(demo.frames["settings"], "Rate us", "Later")
    assert demo.matcher.identify(over_settings, "clipshare").label == "clipshare/interrupt:rate_us"
    # Global interrupts are checked with the app's, and with no app at all.
    for app in ("clipshare", None, "com.unregistered.launcher"):
        assert demo.matcher.identify(demo.frames["low_battery"], app).label == \
            "global/interrupt:low_battery"


def test_an_unregistered_screen_is_unknown(demo: Demo) -> None:
    for frame in (draw_screen("Messages", seed=3), draw_screen("Feed", seed=0, header=(30, 150, 60)),
                  np.zeros((H, W, 4), np.uint8)):
        match = demo.matcher.identify(frame, "clipshare")
        assert (match.ref, match.ambiguous, match.label) == (None, (), "unknown")
    # An unregistered app's package: only the global section is tried.
    assert demo.matcher.identify(demo.frames["feed"], "com.other.app").label == "unknown"


def test_two_matching_screens_are_ambiguous_and_named(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    frame = draw_screen("Feed")
    header = (0, 80, W, 230)
    states = {"feed": Screen(name="feed", validation_regions=[region(tmp_path, frame, "t", TITLE, "a")]),
              "feed_copy": Screen(name="copy", validation_regions=[
                  region(tmp_path, frame, "header", header, "b")]),
              "other": Screen(name="other", validation_regions=[
                  region(tmp_path, draw_screen("Inbox"), "t", TITLE, "c")])}
    matcher = Matcher(Registry(apps={"clipshare": App(states=states)}, root=str(tmp_path)))
    with caplog.at_level(logging.ERROR, logger="registry.match"):
        match = matcher.identify(frame, "clipshare")
    assert match.ref is None and match.label == "unknown"
    assert set(match.ambiguous) == {ScreenRef("clipshare", "state", "feed"),
                                    ScreenRef("clipshare", "state", "feed_copy")}
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert "clipshare/feed" in message and "clipshare/feed_copy" in message
    assert set(matcher.matches(frame)) == set(match.ambiguous)


@pytest.mark.parametrize("change", ["jpeg70", "shift+2", "shift-2", "clock", "all"])
def test_robust_to_compression_shift_and_status_bar(demo: Demo, change: str) -> None:
    for key in ("feed", "settings", "login", "rate_us"):
        frame = demo.frames[key]
        if change == "jpeg70":
            frame = jpeg(frame)
        elif change == "shift+2":
            frame = shifted(frame, 2, 2)
        elif change == "shift-2":
            frame = shifted(frame, -2, -1)
        elif change == "clock":
            frame = frame.copy()
            cv2.putText(frame, "23:59", (30, 60), FONT, 1.5, (255, 255, 255, 255), 3)
        else:
            frame = jpeg(shifted(frame, 2, -2))
        expected = "clipshare/interrupt:rate_us" if key == "rate_us" else f"clipshare/{key}"
        assert demo.matcher.identify(frame, "clipshare").label == expected, key


def test_a_1080p_registry_identifies_a_720p_frame(demo: Demo) -> None:
    for key, expected in (("inbox", "clipshare/inbox"), ("login", "clipshare/login"),
                          ("rate_us", "clipshare/interrupt:rate_us")):
        small = cv2.resize(demo.frames[key], (720, 1600), interpolation=cv2.INTER_AREA)
        assert demo.matcher.identify(raw_view(small), "clipshare").label == expected
        assert demo.matcher.identify(jpeg(shifted(small, 1, 1)), "clipshare").label == expected


def test_rgb_frames_work_like_rgba(demo: Demo) -> None:
    rgb = np.ascontiguousarray(demo.frames["profile"][:, :, :3])
    assert demo.matcher.identify(rgb).label == "clipshare/profile"


def test_the_same_label_on_a_grey_button_is_not_the_red_button(demo: Demo) -> None:
    grey = draw_screen("Welcome", seed=9, button=("Log in", GREY))
    match = demo.matcher.identify(grey, "clipshare", explain=True)
    assert match.label == "unknown"
    button = [s for s in match.scores if s.region == "login_button"]
    assert button and not button[0].passed and button[0].score < 0.5


def test_a_plain_reference_wants_the_same_plain_colour(tmp_path: Path) -> None:
    bar = (0, 240, W, 290)  # a plain strip below the header
    base = draw_screen("Feed")
    base[240:290] = (200, 200, 200, 255)
    matcher = Matcher(Registry(apps={"a": App(states={"s": Screen(name="s", validation_regions=[
        region(tmp_path, base, "strip", bar, "strip")])})}, root=str(tmp_path)))
    assert matcher.identify(jpeg(base)).label == "a/s"
    assert matcher.identify(shifted(base, 0, 2)).label == "a/s"
    darker = base.copy()
    darker[240:290] = (170, 170, 170, 255)
    assert matcher.identify(darker).label == "unknown"
    with_text = base.copy()
    cv2.putText(with_text, "New posts available", (300, 282), FONT, 1.3, (30, 30, 30, 255), 3)
    assert matcher.identify(with_text).label == "unknown"


def test_tiny_thin_and_edge_boxes(tmp_path: Path) -> None:
    frame = draw_screen("Feed", seed=1)
    cv2.rectangle(frame, (1000, 2330), (1079, 2399), (255, 0, 0, 255), -1)
    boxes = {"corner_icon": (1000, 2330, 1080, 2400), "status_bar": (0, 0, 200, 80),
             "tiny": (45, 120, 53, 128), "pixel": (500, 500, 501, 501),
             "column": (1070, 300, 1080, 2300)}
    screens = {k: Screen(name=k, validation_regions=[region(tmp_path, frame, k, b, k)])
               for k, b in boxes.items()}
    matcher = Matcher(Registry(apps={"a": App(states=screens)}, root=str(tmp_path)))
    for f in (frame, cv2.resize(frame, (720, 1600), interpolation=cv2.INTER_AREA)):
        assert set(matcher.matches(f)) == {ScreenRef("a", "state", k) for k in boxes}
    scores = matcher.identify(frame, explain=True).scores
    assert [s.score for s in scores] == [1.0] * len(boxes)
    assert ScreenRef("a", "state", "corner_icon") not in matcher.matches(draw_screen("Feed", seed=1))


def test_explain_reports_the_region_scores(demo: Demo) -> None:
    match = demo.matcher.identify(demo.frames["login"], "clipshare", explain=True)
    assert isinstance(match, ScreenMatch) and match.label == "clipshare/login"
    assert all(isinstance(s, RegionScore) for s in match.scores)
    mine = [s for s in match.scores if s.screen == ScreenRef("clipshare", "state", "login")]
    # Cheapest first: the title box is smaller than the button's.
    assert [(s.region, s.kind, s.passed) for s in mine] == \
        [("title", "pixel", True), ("login_button", "pixel", True)]
    assert all(s.score >= s.threshold == 0.85 and s.text is None for s in mine)
    others = [s for s in match.scores if s.screen != mine[0].screen]
    assert others and all(0.0 <= s.score <= 1.0 for s in others)
    # Interrupts were checked (and failed) before the states.
    assert match.scores[0].screen.kind == "interrupt" and not match.scores[0].passed


def test_region_threshold_overrides_the_default(tmp_path: Path) -> None:
    frame = draw_screen("Feed")
    strict = Region(name="t", coordinates=TITLE, threshold=0.999,
                    reference=write_crop(frame, TITLE, tmp_path / "t.png"))
    matcher = Matcher(Registry(apps={"a": App(states={"s": Screen(name="s", validation_regions=[
        strict])})}, root=str(tmp_path)))
    assert matcher.identify(frame).label == "a/s"
    match = matcher.identify(jpeg(frame, 40), explain=True)
    assert match.label == "unknown" and match.scores[0].threshold == 0.999


def test_concurrent_identification_from_many_threads(demo: Demo) -> None:
    keys = [*STATES, "login", "rate_us", "low_battery"] * 4
    expected = {k: demo.matcher.identify(demo.frames[k]).label for k in keys}
    with ThreadPoolExecutor(max_workers=6) as pool:
        labels = list(pool.map(lambda k: (k, demo.matcher.identify(demo.frames[k]).label), keys))
    assert all(label == expected[k] for k, label in labels)


def test_bad_frames_and_missing_references_are_farm_errors(demo: Demo, tmp_path: Path) -> None:
    with pytest.raises(FarmError, match="RGBA or RGB"):
        demo.matcher.identify(np.zeros((H, W), np.uint8))
    with pytest.raises(FarmError, match="RGBA or RGB"):
        demo.matcher.identify(np.zeros((H, W, 4), np.float32))
    broken = Registry(apps={"a": App(states={"s": Screen(name="s", validation_regions=[
        Region(name="t", coordinates=TITLE, reference="missing.png")])})}, root=str(tmp_path))
    with pytest.raises(FarmError, match=r"a/s region t: .*missing\.png"):
        Matcher(broken)


# ---------------------------------------------------------------- load_image

def test_load_image_gives_rgba_from_png_and_jpeg(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :, 0] = 200  # red
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 6), 77, np.uint8))
    for name in ("a.png", "a.jpg"):
        img = load_image(tmp_path / name)
        assert img.shape == (20, 30, 4) and img.dtype == np.uint8
        assert abs(int(img[10, 10, 0]) - 200) <= 3 and img[10, 10, 2] <= 3 and img[10, 10, 3] == 255
    assert load_image(tmp_path / "g.png")[0, 0].tolist() == [77, 77, 77, 255]
    (tmp_path / "junk.png").write_bytes(b"not an image")
    for bad in ("junk.png", "absent.png"):
        with pytest.raises(FarmError, match=bad.replace(".", r"\.")):
            load_image(tmp_path / bad)


# ---------------------------------------------------------------- OCR

def text_crop(text: str) -> np.ndarray:
    img = np.full((90, 620, 3), 255, np.uint8)
    cv2.putText(img, text, (15, 62), FONT, 1.6, (20, 20, 20), 3, cv2.LINE_AA)
    return img


def test_text_similarity_normalizes_case_space_and_punctuation() -> None:
    assert normalize_text("  Update   AVAILABLE!! ") == "update available"
    assert text_similarity("update available", "Update available.") == 1.0
    assert text_similarity("update available", "Update avaiable") > 0.9
    assert text_similarity("Rate us", "Update available") < 0.5
    assert text_similarity("", "") == 1.0 and text_similarity("x", "") == 0.0


class CountingEngine:
    """Stands in for RapidOCR: answers a fixed text, counts the calls."""

    def __init__(self, text: str = "Update available") -> None:
        self.calls = 0
        self.text = text
        self.lock = threading.Lock()

    def __call__(self, img, use_det=None, use_cls=None, use_rec=None):
        assert (use_det, use_cls, use_rec) == (False, False, True)
        with self.lock:
            self.calls += 1
        return [[self.text, 0.97]], [0.01]


def test_text_reader_caches_by_crop_content() -> None:
    engine = CountingEngine()
    reader = TextReader(engine_factory=lambda: engine, cache_size=2)
    crop = text_crop("Update available")
    assert reader.read(crop) == ("Update available", 0.97)
    assert reader.read(crop.copy()) == ("Update available", 0.97)
    assert engine.calls == 1
    reader.read(text_crop("Rate us"))
    reader.read(text_crop("Later"))  # evicts the first (LRU of 2)
    assert engine.calls == 3
    reader.read(crop)
    assert engine.calls == 4


def ocr_registry(root: Path, expected: dict[str, str]) -> Registry:
    screens = {key: Screen(name=key, validation_regions=[
        Region(name="msg", coordinates=(200, 1000, 820, 1090), ocr_enabled=True, expected_text=text)])
        for key, text in expected.items()}
    return Registry(apps={"a": App(interrupts=screens)}, root=str(root))


def ocr_frame(text: str) -> np.ndarray:
    frame = np.full((H, W, 4), 255, np.uint8)
    frame[1000:1090, 200:820, :3] = text_crop(text)
    return frame


def test_ocr_region_with_real_rapidocr(tmp_path: Path) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    text, confidence = shared_reader().read(text_crop("Update available"))
    assert text_similarity("update available", text) >= 0.8 and confidence > 0.5
    matcher = Matcher(ocr_registry(tmp_path, {"update": "update available", "rate": "Rate us"}))
    match = matcher.identify(ocr_frame("Update available"), explain=True)
    assert match.label == "a/interrupt:update"
    by_screen = {s.screen.key: s for s in match.scores}
    assert by_screen["update"].kind == "ocr" and by_screen["update"].passed
    assert not by_screen["rate"].passed and by_screen["rate"].score < 0.5
    assert "update" in (by_screen["rate"].text or "").lower()


def test_ocr_runs_only_after_the_pixel_check_passed(tmp_path: Path) -> None:
    frame = ocr_frame("Update available")
    box = (200, 1000, 820, 1090)
    screens = {"s": Screen(name="s", validation_regions=[
        Region(name="msg", coordinates=box, ocr_enabled=True, expected_text="Update available",
               reference=write_crop(frame, box, tmp_path / "msg.png"))])}
    engine = CountingEngine()
    matcher = Matcher(Registry(apps={"a": App(states=screens)}, root=str(tmp_path)),
                      reader=TextReader(engine_factory=lambda: engine))
    assert matcher.identify(frame, explain=True).label == "a/s"
    assert engine.calls == 1
    assert matcher.identify(ocr_frame("Rate us")).label == "unknown"
    assert engine.calls == 1  # the pixel check failed first


def test_ocr_unavailable_fails_only_when_an_ocr_region_is_checked(
        demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import now fails
    assert Matcher(demo.registry, reader=TextReader()).identify(demo.frames["feed"]).label == \
        "clipshare/feed"
    matcher = Matcher(ocr_registry(tmp_path, {"update": "Update available"}), reader=TextReader())
    with pytest.raises(FarmError, match="rapidocr"):
        matcher.identify(ocr_frame("Update available"))


def test_a_text_field_showing_only_its_cursor_is_blank() -> None:
    """The virtual login field, cut inside its outline: the recognizer reads a lone cursor
    as "1", so emptiness is told by the ink: nothing, or one thin upright bar."""
    from registry.ocr import field_is_blank
    from virtual.ui import PhoneUI, load_apps

    ui = PhoneUI(load_apps(["demo"]), random_popups=False)
    ui.start_app("com.phonefarm.clipshare")

    def blank() -> bool:
        return field_is_blank(ui.frame_rgba()[818:932, 108:972, :3])

    assert not blank()  # unfocused and empty: its placeholder shows
    ui.tap(540, 875)
    assert blank()  # focused and empty: the cursor only
    for text in ("dance_d", "l", "1", "."):
        ui.text(text)
        assert not blank(), text
        for _ in text:
            ui.key(67)
    assert blank()
    assert field_is_blank(np.full((40, 200, 3), 241, np.uint8))
