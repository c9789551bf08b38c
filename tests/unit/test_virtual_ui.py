"""Virtual phone UI: app JSON validation, screen state machine, rendering and caching."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from protocol.errors import ValidationErrors
from virtual.appmodel import APPS_DIR, load_app
from virtual.ui import KEYCODE_BACK, KEYCODE_DEL, KEYCODE_ENTER, KEYCODE_HOME, PhoneUI, load_apps

CLIP = "com.phonefarm.clipshare"
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def apps():
    return load_apps(["demo"])


def make_ui(apps, **kw) -> PhoneUI:
    kw.setdefault("random_popups", False)
    kw.setdefault("clock", FakeClock())
    return PhoneUI(apps, **kw)


def login(ui: PhoneUI, user: str = "clip_creator", password: str = "hunter2") -> None:
    ui.start_app(CLIP)
    assert ui.describe()["screen"] == "login"
    ui.tap(540, 875)  # username field
    ui.text(user)
    ui.tap(540, 1075)  # password field
    ui.text(password)
    ui.tap(540, 1330)  # Log in


# ---------------------------------------------------------------- loading / validation


def test_bundled_apps_load():
    for path in sorted(APPS_DIR.glob("*.json")):
        spec = load_app(path)
        assert spec.package
    specs = load_apps(["demo"])
    assert [s.package for s in specs][:2] == ["com.android.launcher3", CLIP]
    demo = next(s for s in specs if s.package == CLIP)
    assert {"login", "feed", "profile", "account_switcher", "upload", "settings"} <= set(demo.screens)
    assert {"update_available", "rate_us"} <= set(demo.popups)


def test_load_apps_accepts_path(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"package": "com.example.other", "label": "Other", "launch_screen": "main",
                                "screens": {"main": {"elements": []}}}))
    specs = load_apps(["demo", str(path)])
    assert "com.example.other" in [s.package for s in specs]


def test_validation_reports_every_problem_with_paths(tmp_path):
    bad = {
        "package": "com.example.bad",
        "label": "Bad",
        "launch_screen": "home",
        "screens": {
            "home": {
                "background": "blue",
                "elements": [
                    {"kind": "button", "x": 0, "y": 0, "w": 100, "h": 100, "text": "ok", "on_tap": {"go": "profil"}},
                    {"kind": "text", "x": 1000, "y": 2300, "w": 200, "h": 200, "text": "{nope}"},
                    {"kind": "slider", "x": 0, "y": 0, "w": 1, "h": 1},
                    {"kind": "text_field", "x": 0, "y": 0, "w": 10, "h": 10},
                ],
            },
        },
        "popups": {"p": {"kind": "app", "title": "T", "buttons": [{"text": "x", "action": {"popup": "q"}}],
                         "on_enter": {"nowhere": 0.5}}},
    }
    path = tmp_path / "bad.json"
    # Duplicate screen key written by hand: json.dumps cannot produce one.
    path.write_text(json.dumps(bad)[:-1] + ', "active_account": "ghost", "label": "Again"}')
    with pytest.raises(ValidationErrors) as info:
        load_app(path)
    text = str(info.value)
    problems = info.value.problems
    assert len(problems) >= 8, text
    assert all("bad.json" in p.where for p in problems)
    for expected in (
        "screens.home.elements[0].on_tap.go: unknown screen 'profil'",
        "screens.home.background: bad colour 'blue'",
        "screens.home.elements[1]: box x=1000 y=2300 w=200 h=200 lies outside",
        "screens.home.elements[1].text: unknown template variable {nope}",
        "screens.home.elements[2].kind: 'slider' is not one of",
        "screens.home.elements[3].name: missing required field",
        "popups.p.buttons[0].action.popup: unknown popup 'q'",
        "popups.p.on_enter.nowhere: unknown screen 'nowhere'",
        "active_account: unknown account 'ghost'",
        "label: duplicate key",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_validation_bad_json_and_missing_fields(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"package": "x.y",\n "label": }')
    with pytest.raises(ValidationErrors, match=r"broken.json:2:\d+: bad JSON"):
        load_app(path)
    path.write_text(json.dumps({"screens": {"a": {"elements": []}}}))
    with pytest.raises(ValidationErrors) as info:
        load_app(path)
    text = str(info.value)
    assert "package: missing required field" in text
    assert "label: missing required field" in text
    assert "launch_screen: missing required field" in text


# ---------------------------------------------------------------- behaviour


def test_launcher_icon_starts_demo_app(apps):
    ui = make_ui(apps)
    assert ui.focus() == ("com.android.launcher3", "com.android.launcher3.Launcher")
    assert CLIP in ui.packages() and "com.android.settings" in ui.packages()
    ui.tap(135, 460)  # first icon: ClipShare
    assert ui.focus() == (CLIP, ".LoginActivity")
    assert ui.describe()["app"] == "ClipShare"


def test_login_flow(apps):
    ui = make_ui(apps)
    ui.start_app(CLIP)
    ui.tap(540, 875)
    ui.text("clip_creator")
    ui.tap(540, 1075)
    ui.text("wrong")
    ui.tap(540, 1330)
    d = ui.describe()
    assert d["screen"] == "login" and d["popup"] == "login_failed" and d["account"] is None
    ui.tap(*ui.find("OK"))
    ui.tap(540, 1075)
    for _ in range(5):
        ui.key(KEYCODE_DEL)
    ui.text("hunter2")
    ui.key(KEYCODE_ENTER)  # password field submits the form
    d = ui.describe()
    assert (d["screen"], d["account"], d["popup"]) == ("feed", "clip_creator", None)
    assert ui.focus() == (CLIP, ".MainActivity")
    # Logged in: a fresh start lands on the feed.
    ui.force_stop(CLIP)
    assert ui.focus()[0] == "com.android.launcher3"
    ui.start_app(CLIP)
    assert ui.describe()["screen"] == "feed"


def test_feed_swipe_changes_frame(apps):
    ui = make_ui(apps)
    login(ui)
    before = ui.frame_rgba()
    ui.swipe(540, 1800, 540, 600, 300)
    assert ui.describe()["feed_index"] == 2
    after = ui.frame_rgba()
    assert not np.array_equal(before, after)
    ui.swipe(540, 600, 540, 1800, 300)
    assert ui.describe()["feed_index"] == 1
    assert np.array_equal(before, ui.frame_rgba())
    # A swipe that does not move is a tap; a long one is a long press.
    ui.swipe(540, 1000, 545, 1005, 800)
    assert ui.describe()["popup"] == "video_options"


def test_upload_then_profile_shows_caption(apps):
    ui = make_ui(apps)
    login(ui)
    ui.tap(540, 2300)  # + Upload
    assert ui.describe()["screen"] == "upload"
    ui.tap(210, 590)  # Clip 1
    ui.tap(540, 1060)  # caption field
    ui.text("My first clip")
    assert ui.describe()["fields"]["caption"] == "My first clip"
    ui.tap(540, 1300)  # Post
    d = ui.describe()
    assert (d["screen"], d["posts"], d["last_post"]) == ("profile", 4, "My first clip")
    ui.key(KEYCODE_BACK)  # Post replaced upload: back goes to the feed
    assert ui.describe()["screen"] == "feed"


def test_account_switch(apps):
    ui = make_ui(apps)
    login(ui)
    ui.tap(900, 2300)  # Profile
    ui.tap(540, 1025)  # Switch account
    assert ui.describe()["screen"] == "account_switcher"
    ui.tap(540, 680)  # @dance_daily
    d = ui.describe()
    assert (d["screen"], d["account"], d["posts"], d["last_post"]) == ("profile", "dance_daily", 0, "")


def test_forced_popup_blocks_taps_until_dismissed(apps):
    ui = make_ui(apps)
    login(ui)
    with pytest.raises(KeyError, match="update_available"):
        ui.force_popup("no_such_popup")
    assert {"update_available", "rate_us", "system_not_responding", "low_battery"} <= set(ui.popup_names())
    ui.force_popup("update_available")
    ui.tap(900, 2300)  # Profile under the dialog: swallowed
    ui.swipe(540, 1800, 540, 600, 300)
    ui.key(KEYCODE_BACK)  # not cancelable
    d = ui.describe()
    assert (d["screen"], d["popup"], d["feed_index"]) == ("feed", "update_available", 1)
    ui.tap(757, 1460)  # Dismiss
    assert ui.describe()["popup"] is None
    ui.tap(900, 2300)
    assert ui.describe()["screen"] == "profile"


def test_system_popup_close_app(apps):
    ui = make_ui(apps)
    login(ui)
    ui.force_popup("system_not_responding")
    assert ui.visible_elements()[0]["text"] == "Close app"
    ui.tap(*ui.find("Close app"))
    assert ui.focus()[0] == "com.android.launcher3" and ui.describe()["popup"] is None


def test_back_and_home_keys(apps):
    ui = make_ui(apps)
    login(ui)
    ui.tap(900, 2300)
    ui.tap(540, 1215)  # Settings
    assert ui.describe()["screen"] == "settings"
    ui.key(KEYCODE_BACK)
    assert ui.describe()["screen"] == "profile"
    ui.key(KEYCODE_BACK)
    assert ui.describe()["screen"] == "feed"
    ui.key(KEYCODE_HOME)
    assert ui.focus()[0] == "com.android.launcher3"
    ui.start_app(CLIP)  # resumes where it was
    assert ui.describe()["screen"] == "feed"
    ui.key(KEYCODE_BACK)  # back on the root finishes the app
    assert ui.focus()[0] == "com.android.launcher3"
    for code in (26, 24, 25):
        ui.key(code)
    assert ui.focus()[0] == "com.android.launcher3"


def test_install_uninstall(apps):
    ui = make_ui(apps)
    ui.install_package("com.example.notes", "Notes")
    assert "com.example.notes" in ui.packages()
    ui.tap(*ui.find("Notes"))
    assert ui.focus() == ("com.example.notes", ".MainActivity")
    assert ui.uninstall_package("com.example.notes")
    assert ui.focus()[0] == "com.android.launcher3"
    assert not ui.uninstall_package("com.example.notes")
    assert not ui.uninstall_package("com.android.settings")
    assert ui.start_app("com.example.notes") is False


def test_random_popups_are_seeded(apps):
    def run(seed: int) -> list:
        ui = PhoneUI(apps, seed=seed, clock=FakeClock())
        login(ui)
        seen = []
        for _ in range(60):
            popup = ui.describe()["popup"]
            if popup:
                seen.append(popup)
                ui.tap(*ui.find({"update_available": "Dismiss", "rate_us": "Not now"}[popup]))
            ui.swipe(540, 1800, 540, 600, 300)
        return seen

    assert run(7) == run(7)
    assert any(run(s) for s in range(3))


# ---------------------------------------------------------------- pixels


def test_determinism(apps):
    frames = []
    for _ in range(2):
        ui = make_ui(apps, seed=3, random_popups=True)
        login(ui)
        ui.swipe(540, 1800, 540, 600, 300)
        frames.append((ui.frame_rgba().tobytes(), ui.describe()))
    assert frames[0] == frames[1]


def test_clock_changes_status_bar_only(apps):
    clock = FakeClock()
    ui = make_ui(apps, clock=clock)
    a = ui.frame_rgba()
    assert ui.frame_rgba() is a  # cached
    clock.t += 120
    b = ui.frame_rgba()
    diff = np.nonzero(np.any(a != b, axis=2))[0]
    assert diff.size and diff.max() < 80


@pytest.mark.parametrize("size", [(1080, 2400), (720, 1600)])
def test_frame_shape_and_png(apps, size):
    w, h = size
    ui = make_ui(apps, width=w, height=h)
    ui.tap(135 * w // 1080, 460 * h // 2400)  # taps scale with the screen
    assert ui.describe()["screen"] == "login"
    frame = ui.frame_rgba()
    assert frame.shape == (h, w, 4) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    assert (frame[..., 3] == 255).all()
    png = ui.frame_png()
    assert png.startswith(b"\x89PNG")
    bgra = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA), frame)
    assert ui.frame_png() is png


def test_popup_text_is_legible_to_ocr(apps):
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    ui = make_ui(apps)
    login(ui)
    ui.force_popup("update_available")
    rgb = np.ascontiguousarray(ui.frame_rgba()[..., 2::-1])  # BGR for rapidocr
    result, _ = rapidocr.RapidOCR()(rgb)
    texts = [r[1] for r in result or []]
    assert any("Update available" in t for t in texts), texts
    assert any("Dismiss" in t for t in texts), texts


def test_a_dismissed_popup_gives_the_field_its_focus_back(apps):
    ui = make_ui(apps)
    ui.start_app(CLIP)
    ui.tap(540, 875)  # username field
    ui.text("clip")
    ui.force_popup("rate_us")
    assert ui.describe()["focused_field"] is None
    ui.text("lost")  # typed at the dialog: nowhere
    ui.key(4)  # BACK closes the cancelable dialog in place
    assert ui.describe()["popup"] is None and ui.describe()["focused_field"] is not None
    ui.text("_creator")
    assert ui.describe()["fields"][ui.describe()["focused_field"]] == "clip_creator"


def test_popup_after_lands_inside_a_del_burst_and_eats_the_rest(apps):
    """`vphone popup-after 3 rate_us`: the dialog comes up right after the 3rd input event,
    takes the focus, and the DELs after it do nothing (the field ends half cleared)."""
    ui = make_ui(apps)
    ui.start_app(CLIP)
    ui.tap(540, 875)
    ui.text("dance_daily")
    shown = []
    ui.on_popup = lambda name, cause: shown.append((name, cause))
    ui.popup_after(3, "rate_us")
    for _ in range(30):
        ui.key(KEYCODE_DEL)
    d = ui.describe()
    assert d["popup"] == "rate_us" and d["fields"]["username"] == "dance_da"
    assert shown == [("rate_us", "scheduled")]
    with pytest.raises(KeyError):
        ui.popup_after(1, "no_such_popup")
    with pytest.raises(ValueError):
        ui.popup_after(0, "rate_us")


def test_random_popups_are_reported_with_their_cause(apps):
    ui = make_ui(apps, random_popups=True, seed=6)
    shown = []
    ui.on_popup = lambda name, cause: shown.append((name, cause))
    ui.start_app(CLIP)
    for _ in range(400):
        ui.key(KEYCODE_DEL)
        if ui.describe()["popup"]:
            break
    assert ui.describe()["popup"] and shown == [(ui.describe()["popup"], "random")]


def _nodes(tree: dict, cls: str) -> list[dict]:
    return [n for n in tree["children"] if n["class"] == cls]


def test_element_tree_shows_fields_with_text_hint_focus_and_bounds(apps):
    ui = make_ui(apps, width=720, height=1600)
    ui.start_app(CLIP)
    tree = ui.element_tree()
    assert tree["package"] == CLIP and tree["bounds"] == [0, 0, 720, 1600]
    user, password = _nodes(tree, "android.widget.EditText")
    # Empty: the hint is the text, as a real phone's accessibility gives it.
    assert (user["text"], user["hint"], user["focused"]) == ("Username", "Username", False)
    assert user["resource_id"] == f"{CLIP}:id/username"
    assert user["bounds"] == [60, 533, 660, 633]  # (90,800)-(990,950) of 1080x2400, scaled
    ui.tap(360, 583)
    ui.text("dance_daily")
    ui.tap(360, 717)
    ui.text("pass123")
    user, password = _nodes(ui.element_tree(), "android.widget.EditText")
    assert (user["text"], user["focused"]) == ("dance_daily", False)
    assert (password["text"], password["password"], password["focused"]) == ("\u2022" * 7, True, True)
    assert "Log in" in [b["text"] for b in _nodes(ui.element_tree(), "android.widget.Button")]


def test_element_tree_lists_only_the_dialog_while_one_is_up(apps):
    ui = make_ui(apps)
    ui.start_app(CLIP)
    ui.force_popup("rate_us")
    tree = ui.element_tree()
    assert not _nodes(tree, "android.widget.EditText")
    assert [b["text"] for b in _nodes(tree, "android.widget.Button")] == ["Rate now", "Not now"]
    assert tree["bounds"] == [80, 860, 1000, 1540]


def test_motionevent_chain_scrolls_the_feed_like_a_swipe():
    """`input motionevent` DOWN..UP, through the phone's own shell, moves the feed as
    `input swipe` does; a chain that goes out and comes back scrolls nothing and taps nothing."""
    import asyncio

    from virtual.phone import VirtualPhone

    phone = VirtualPhone(clock=FakeClock())
    phone.ui.random_popups = False
    login(phone.ui)
    shell = phone._new_shell()

    def run(line: str) -> None:
        result, _ = asyncio.run(shell.run(line, None))
        assert result.status == 0, result

    run("input motionevent DOWN 540 1800; input motionevent MOVE 600 1300; "
        "input motionevent UP 540 600")
    assert phone.ui.describe()["feed_index"] == 2
    run("input motionevent DOWN 540 1000; input motionevent MOVE 540 700; "
        "input motionevent UP 540 1000")
    assert phone.ui.describe()["feed_index"] == 2 and phone.ui.describe()["popup"] is None
    assert [e["kind"] for e in phone.input_log] == ["swipe", "swipe"]
