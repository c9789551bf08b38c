"""The committed demo registry (registry/apps) against the virtual phones it describes.

Frames come straight from ``PhoneUI`` (no adb): every launcher and ClipShare screen must be
identified as itself at the registry's 1080x2400 and on a 720x1600 phone, every popup as its
interrupt over several screens, unregistered screens as unknown, and all of it must survive
what differs between two screenshots of one screen on a real phone (JPEG noise, a 2 px
shift, the clock, the feed's content, the signed-in account). The generator must reproduce
the committed data (JSON byte for byte, images pixel for pixel), so data and generator
never drift apart.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from registry.load import DEMO_REGISTRY, load_registry
from registry.match import Matcher
from registry.model import GLOBAL_APP, Registry
from virtual import demo_registry as demo
from virtual.appmodel import LAUNCHER_PACKAGE, REF_HEIGHT, REF_WIDTH, load_apps

CLIPSHARE = demo.CLIPSHARE_PACKAGE
CHALLENGE = "clipshare/interrupt:verify_identity"
SIZES = [(REF_WIDTH, REF_HEIGHT), (720, 1600)]
STATES = demo.state_labels()
INTERRUPTS = demo.interrupt_labels()
# Screens a popup is shown over: logged out, logged in, dark and light ones. An app's own
# dialogs only ever show over that app (backgrounding it closes them); system ones over any.
APP_BACKDROPS = ["clipshare/login", "clipshare/feed", "clipshare/profile", "clipshare/upload"]
SYSTEM_BACKDROPS = ["launcher/home", "launcher/recents", "clipshare/login", "clipshare/feed", "clipshare/settings"]
ACCOUNTS = [a.username for a in next(s for s in load_apps(["demo"]) if s.package == CLIPSHARE).accounts]
# An unregistered app whose screen looks as much like ClipShare's as possible: same app bar
# colour, same nav bar, same feed-like body; only its title and body text differ.
LOOKALIKE_APP = """{
  "package": "com.example.lookalike", "label": "Lookalike", "activity": ".Main",
  "launch_screen": "inbox",
  "screens": {"inbox": {"title": "Inbox", "background": "#000000", "bar_color": "#111111",
    "elements": [
      {"kind": "text", "id": "hint", "x": 40, "y": 1860, "w": 1000, "h": 100, "text": "No new messages",
       "font_size": 44, "color": "#BDC1C6"},
      {"kind": "button", "id": "nav_home", "x": 0, "y": 2200, "w": 360, "h": 200, "shape": "rect", "text": "Home",
       "color": "#111111", "text_color": "#FFFFFF"},
      {"kind": "button", "id": "nav_upload", "x": 360, "y": 2200, "w": 360, "h": 200, "shape": "rect",
       "text": "+ Upload", "color": "#FE2C55", "text_color": "#FFFFFF"},
      {"kind": "button", "id": "nav_profile", "x": 720, "y": 2200, "w": 360, "h": 200, "shape": "rect",
       "text": "Profile", "color": "#111111", "text_color": "#FFFFFF"}]}},
  "popups": {"saved": {"kind": "app", "title": "Saved to your collection", "body": "You can find it later.",
    "buttons": [{"text": "Close", "action": {"dismiss": true}}]}}
}"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(DEMO_REGISTRY)


@pytest.fixture(scope="module")
def matcher(registry: Registry) -> Matcher:
    return Matcher(registry)


def screen_frame(label: str, size: tuple[int, int] = SIZES[0], *, account: str = demo.DEFAULT_ACCOUNT,
                 clock: Callable[[], float] | None = None, popup: str | None = None) -> np.ndarray:
    """The frame of a fresh phone driven to ``label``, optionally with a popup over it."""
    ui = demo.new_phone(*size, clock=clock)
    demo.go_to(ui, label, account=account)
    if popup is not None:
        ui.force_popup(popup)
    return ui.frame_rgba()


def interrupt_frame(label: str, over: str, size: tuple[int, int] = SIZES[0]) -> np.ndarray:
    return screen_frame(over, size, popup=label.split(":", 1)[1])


def frame_for(label: str) -> np.ndarray:
    """A registered screen's frame: states as themselves, interrupts over the feed."""
    return interrupt_frame(label, "clipshare/feed") if ":" in label else screen_frame(label)


def package_of(label: str) -> str | None:
    return demo.APP_PACKAGES[label.split("/")[0]]


def assert_identified(matcher: Matcher, frame: np.ndarray, label: str, *, foreground: str | None = None) -> None:
    """``label`` with every app's screens in play, and scoped to the foreground app as a phone does."""
    got = matcher.identify(frame, explain=True)
    failing = [f"{s.screen.label()}.{s.region}={s.score:.3f}" for s in got.scores
               if s.screen.label() == label and not s.passed]
    assert got.label == label, f"identified as {got.label} (ambiguous: {got.ambiguous}); failing: {failing}"
    app = foreground or package_of(label)
    if app is not None:
        assert matcher.identify(frame, app).label == label


def jpeg(frame: np.ndarray, quality: int = 70) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGBA2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGBA)


def shifted(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    h, w = frame.shape[:2]
    return cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------- the data


def test_demo_registry_loads_and_covers_every_virtual_screen(registry: Registry) -> None:
    assert set(registry.apps) == {"launcher", "clipshare", GLOBAL_APP}
    assert registry.apps["launcher"].package == LAUNCHER_PACKAGE
    assert registry.apps["clipshare"].package == CLIPSHARE
    specs = {s.package: s for s in load_apps(["demo"])}
    # Every scripted screen and popup of the virtual phone is registered, nothing else.
    assert set(registry.apps["launcher"].states) == set(specs[LAUNCHER_PACKAGE].screens)
    assert set(registry.apps["clipshare"].states) == set(specs[CLIPSHARE].screens)
    assert set(registry.apps["clipshare"].interrupts) == set(specs[CLIPSHARE].popups)
    assert set(registry.apps[GLOBAL_APP].interrupts) == set(specs["android"].popups)
    for ref in registry.screens():
        screen = registry.screen(ref)
        assert screen.description and screen.reference_screenshot, ref.label()
        assert 1 <= len(screen.validation_regions) <= 3, ref.label()
        if ref.label() == CHALLENGE:
            assert screen.actions == [] and screen.handler_action() is None  # nothing clears it
        elif ref.kind == "interrupt":
            assert screen.handler_action() is not None, ref.label()


def test_demo_registry_is_small() -> None:
    total = sum(p.stat().st_size for p in DEMO_REGISTRY.rglob("*") if p.is_file())
    assert total < 1_500_000, f"registry/apps is {total} bytes"


def test_only_one_or_two_ocr_regions(registry: Registry) -> None:
    """OCR costs ~18 ms a crop: the demo shows the feature without leaning on it (read
    regions are read by sequence steps, never by the matcher)."""
    ocr = [(ref.label(), r.name) for ref in registry.screens() for r in registry.screen(ref).validation_regions
           if r.ocr_enabled]
    assert 1 <= len(ocr) <= 2, ocr


def test_generator_reproduces_the_committed_registry(tmp_path: Path, registry: Registry) -> None:
    demo.write(tmp_path)
    hint = "run `PYTHONPATH=. python3 -m virtual.demo_registry` and commit registry/apps"
    for key in registry.apps:
        assert (tmp_path / f"{key}.json").read_bytes() == (DEMO_REGISTRY / f"{key}.json").read_bytes(), \
            f"{key}.json differs: {hint}"
    # Images pixel for pixel, give or take a grey level: PNG bytes (zlib) and glyph
    # anti-aliasing (Pillow's FreeType) may differ between library versions, screens may not.
    committed = sorted(p.relative_to(DEMO_REGISTRY) for p in DEMO_REGISTRY.rglob("*.png"))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png")) == committed
    for rel in committed:
        ours = cv2.imread(str(tmp_path / rel), cv2.IMREAD_UNCHANGED).astype(np.int16)
        theirs = cv2.imread(str(DEMO_REGISTRY / rel), cv2.IMREAD_UNCHANGED).astype(np.int16)
        assert ours.shape == theirs.shape, f"{rel}: {hint}"
        assert np.abs(ours - theirs).mean() < 1.0, f"{rel} differs: {hint}"
    assert load_registry(tmp_path).apps == registry.apps


def test_registry_check_finds_no_ambiguity_and_no_dead_screen() -> None:
    from registry.check import check_registry

    report = check_registry(DEMO_REGISTRY)
    assert report.frames_checked == len(STATES) + len(INTERRUPTS)
    # The recents screen is the APP_SWITCH key's, which no registry action is.
    assert report.lines() == ["warning: unreachable: launcher/recents: no action's linked_state "
                              "leads to it; a go_to can only start there"]
    assert report.clean


# --------------------------------------------------------------------------- identification


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("label", STATES)
def test_every_screen_is_identified_as_itself(matcher: Matcher, label: str, size: tuple[int, int]) -> None:
    assert_identified(matcher, screen_frame(label, size), label)


@pytest.mark.parametrize("label", INTERRUPTS)
def test_every_popup_is_identified_over_any_screen(matcher: Matcher, label: str) -> None:
    for over in SYSTEM_BACKDROPS if label.startswith(GLOBAL_APP) else APP_BACKDROPS:
        # Scoped to the app in front, which is the backdrop's (the launcher for home).
        assert_identified(matcher, interrupt_frame(label, over), label, foreground=package_of(over))


@pytest.mark.parametrize("label", INTERRUPTS)
def test_every_popup_is_identified_on_a_smaller_phone(matcher: Matcher, label: str) -> None:
    assert_identified(matcher, interrupt_frame(label, "clipshare/feed", SIZES[1]), label, foreground=CLIPSHARE)


@pytest.mark.parametrize("package", ["com.android.chrome", "com.android.settings", "com.android.vending"])
def test_blank_stub_apps_are_unknown(matcher: Matcher, package: str) -> None:
    ui = demo.new_phone()
    assert ui.start_app(package)
    frame = ui.frame_rgba()
    assert matcher.identify(frame).label == "unknown"
    assert matcher.identify(frame, package).label == "unknown"  # not registered: global only


def test_an_unregistered_lookalike_screen_and_popup_are_unknown(matcher: Matcher, tmp_path: Path) -> None:
    app = tmp_path / "lookalike.json"
    app.write_text(LOOKALIKE_APP)
    ui = demo.new_phone(apps=("demo", str(app)))
    ui.start_app("com.example.lookalike")
    assert matcher.identify(ui.frame_rgba()).label == "unknown"
    # An unregistered dialog over a registered screen is not that screen: the actor must not
    # act on the feed through a dialog it does not know.
    ui.start_app(CLIPSHARE)
    demo.log_in(ui)
    assert matcher.identify(ui.frame_rgba(), CLIPSHARE).label == "clipshare/feed"
    ui.force_popup("saved")
    assert matcher.identify(ui.frame_rgba(), CLIPSHARE).label == "unknown"


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("label", STATES + INTERRUPTS)
def test_identified_after_jpeg_quality_70(matcher: Matcher, label: str) -> None:
    assert_identified(matcher, jpeg(frame_for(label)), label, foreground=CLIPSHARE if ":" in label else None)


@pytest.mark.parametrize("label", STATES + INTERRUPTS)
def test_identified_after_a_2px_shift(matcher: Matcher, label: str) -> None:
    frame = frame_for(label)
    for dx, dy in [(2, 2), (-2, -2), (2, -2)]:
        assert_identified(matcher, shifted(frame, dx, dy), label, foreground=CLIPSHARE if ":" in label else None)


@pytest.mark.parametrize("label", STATES)
def test_identified_whatever_the_clock_and_battery(matcher: Matcher, label: str) -> None:
    evening = float(calendar.timegm((2026, 6, 30, 23, 58, 0)))
    ui = demo.new_phone(clock=lambda: evening)
    ui.battery_level = 7
    demo.go_to(ui, label)
    assert_identified(matcher, ui.frame_rgba(), label)


def test_feed_identified_whatever_video_is_shown(matcher: Matcher) -> None:
    ui = demo.new_phone()
    demo.go_to(ui, "clipshare/feed")
    for _ in range(6):
        ui.swipe(540, 1800, 540, 600)
        assert ui.describe()["screen"] == "feed"
        assert_identified(matcher, ui.frame_rgba(), "clipshare/feed")
    for popup in ("video_options", "rate_us"):
        ui.force_popup(popup)
        assert_identified(matcher, ui.frame_rgba(), f"clipshare/interrupt:{popup}")
        ui.key(4)  # BACK closes a cancelable dialog
    assert ui.describe()["feed_index"] == 7


@pytest.mark.parametrize("account", ACCOUNTS)
def test_identified_whoever_is_signed_in(matcher: Matcher, account: str) -> None:
    for label in ("clipshare/feed", "clipshare/profile", "clipshare/account_switcher", "clipshare/upload",
                  "clipshare/settings", "clipshare/post", "clipshare/inbox", "clipshare/conversation"):
        assert_identified(matcher, screen_frame(label, account=account), label)


def test_identified_after_posting_and_typing(matcher: Matcher) -> None:
    """Typed text and a new post change the upload and profile screens, not what identifies them."""
    ui = demo.new_phone()
    demo.go_to(ui, "clipshare/upload")
    demo.tap_element(ui, "clip_2")
    demo.tap_element(ui, "caption")
    ui.text("a caption typed by a test")
    assert_identified(matcher, ui.frame_rgba(), "clipshare/upload")
    demo.tap_element(ui, "post")
    assert ui.describe()["screen"] == "profile"
    assert_identified(matcher, ui.frame_rgba(), "clipshare/profile")
    ui.key(3)  # HOME
    ui.start_app(CLIPSHARE)
    demo.tap_element(ui, "nav_profile")
    assert_identified(matcher, ui.frame_rgba(), "clipshare/profile")


def test_login_form_identified_while_typing(matcher: Matcher) -> None:
    ui = demo.new_phone()
    demo.go_to(ui, "clipshare/login")
    demo.tap_element(ui, "username")
    ui.text("someone_else")
    assert_identified(matcher, ui.frame_rgba(), "clipshare/login")
    demo.tap_element(ui, "password")
    ui.text("wrong")
    demo.tap_element(ui, "login")
    assert ui.describe()["popup"] == "login_failed"
    assert_identified(matcher, ui.frame_rgba(), "clipshare/interrupt:login_failed")


def test_recents_identified_with_other_cards(matcher: Matcher) -> None:
    ui = demo.new_phone()
    ui.start_app("com.android.chrome")
    ui.start_app("com.android.settings")
    ui.key(187)  # APP_SWITCH
    assert ui.describe()["screen"] == "recents"
    assert_identified(matcher, ui.frame_rgba(), "launcher/recents")
    ui.force_stop("com.android.chrome")
    ui.force_stop("com.android.settings")
    ui.key(187)
    assert_identified(matcher, ui.frame_rgba(), "launcher/recents")  # "No recent apps"


def test_home_identified_with_more_apps_installed(matcher: Matcher) -> None:
    ui = demo.new_phone()
    for i in range(9):
        ui.install_package(f"com.example.app{i}", f"App {i}")
    assert_identified(matcher, ui.frame_rgba(), "launcher/home")

