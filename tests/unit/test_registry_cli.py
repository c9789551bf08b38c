"""registry.check and `farm registry check / identify` on a tiny synthetic registry: frames
made of coloured blocks, crops cut from them, saved with save_app (no OCR regions, so no
model is loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from actors.control.cli import main
from registry.check import check_registry
from registry.load import save_app
from registry.model import App, Region, Screen, ScreenAction, ScreenRef

ROOT = Path(__file__).resolve().parents[2]
W, H = 120, 240
BAR = (0, 0, 120, 40)      # top bar: tells screens apart
BODY = (0, 80, 120, 160)   # where the popup sits


def blocks(seed: int, w: int = W, h: int = H) -> np.ndarray:
    """A BGR frame of random 8x8 colour blocks: every crop of it is distinctive."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return image[y1:y2, x1:x2]


def region(name: str, box, ref: str) -> Region:
    return Region(name=name, coordinates=box, reference=ref)


def build(root: Path, *, twin: bool = False, ghost: bool = False) -> dict[str, np.ndarray]:
    """demo: states home, detail (+ home2, a twin of home's bar; + ghost, whose crop matches
    nothing), interrupt popup (drawn over home); global: interrupt battery."""
    home, detail, battery = blocks(1), blocks(2), blocks(3)
    popup = home.copy()
    popup[BODY[1]:BODY[3], BODY[0]:BODY[2]] = blocks(4)[BODY[1]:BODY[3], BODY[0]:BODY[2]]
    frames = {"home": home, "detail": detail, "popup": popup, "battery": battery}
    files = {"demo/home.png": png(home), "demo/home.bar.png": png(crop(home, BAR)),
             "demo/detail.png": png(detail), "demo/detail.bar.png": png(crop(detail, BAR)),
             "demo/popup.png": png(popup), "demo/popup.body.png": png(crop(popup, BODY))}
    states = {
        "home": Screen(name="home", validation_regions=[region("bar", BAR, "demo/home.bar.png")],
                       actions=[ScreenAction(name="open", coordinates=(0, 200, 120, 240),
                                             linked_state="detail")],
                       reference_screenshot="demo/home.png"),
        "detail": Screen(name="detail", validation_regions=[region("bar", BAR, "demo/detail.bar.png")],
                         reference_screenshot="demo/detail.png"),
    }
    if twin:
        states["home2"] = Screen(name="home2", validation_regions=[region("bar", BAR, "demo/home.bar.png")])
    if ghost:
        files["demo/ghost.bar.png"] = png(crop(blocks(9), BAR))
        states["ghost"] = Screen(name="ghost", validation_regions=[region("bar", BAR, "demo/ghost.bar.png")],
                                 reference_screenshot="demo/detail.png")
    demo = App(package="com.example.demo", screen_size=(W, H), states=states, interrupts={
        "popup": Screen(name="popup", validation_regions=[region("body", BODY, "demo/popup.body.png")],
                        actions=[ScreenAction(name="dismiss", coordinates=(40, 140, 80, 160))],
                        reference_screenshot="demo/popup.png")})
    save_app(root, "demo", demo, files)
    save_app(root, "global", App(screen_size=(W, H), interrupts={
        "battery": Screen(name="battery", validation_regions=[region("bar", BAR, "global/battery.bar.png")],
                          reference_screenshot="global/battery.png")}),
             {"global/battery.png": png(battery), "global/battery.bar.png": png(crop(battery, BAR))})
    return frames


@pytest.fixture(autouse=True)
def no_env_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHONEFARM_REGISTRY", raising=False)


def farm(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


# --- registry.check -------------------------------------------------------------------------


def test_clean_registry_checks_clean(tmp_path: Path) -> None:
    build(tmp_path)
    report = check_registry(tmp_path)
    assert report.clean, report.lines()
    assert report.frames_checked == 4
    assert report.conflicts == [] and report.dead == []
    # home --open--> detail, and nothing leads to home: a warning, not a problem.
    assert [u.screen for u in report.unreachable] == [ScreenRef("demo", "state", "home")]
    assert report.lines() == ["warning: unreachable: demo/home: no action's linked_state leads "
                              "to it; a go_to can only start there"]


def test_states_only_non_navigation_actions_reach_are_unreachable_by_go_to(tmp_path: Path) -> None:
    build(tmp_path)
    app = json.loads((tmp_path / "demo.json").read_text())
    app["states"]["home"]["actions"][0]["navigation"] = False
    app["states"]["detail"]["actions"] = [{"name": "back", "coordinates": [0, 200, 120, 240],
                                           "linked_state": "home"}]
    (tmp_path / "demo.json").write_text(json.dumps(app))
    report = check_registry(tmp_path)
    assert report.clean
    assert report.lines() == ["warning: unreachable by go_to: demo/detail: only actions with "
                              "navigation: false lead to it (demo/home --open--> demo/detail)"]


def test_ambiguity_and_dead_screens_are_reported(tmp_path: Path) -> None:
    build(tmp_path, twin=True, ghost=True)
    report = check_registry(tmp_path)
    assert not report.clean
    conflict, wrong = report.conflicts
    assert conflict.frame == "demo/home.png"
    assert conflict.owner == ScreenRef("demo", "state", "home")
    assert set(conflict.matched) == {ScreenRef("demo", "state", "home"),
                                     ScreenRef("demo", "state", "home2")}
    assert conflict.identified == "unknown (ambiguous: demo/home, demo/home2)"
    # ghost's screenshot shows detail: only detail matches it.
    assert (wrong.frame, wrong.owner.key, wrong.matched, wrong.identified) == \
        ("demo/detail.png", "ghost", (ScreenRef("demo", "state", "detail"),), "demo/detail")
    dead = {d.screen.key: d for d in report.dead}
    assert set(dead) == {"home2", "ghost"}
    assert dead["home2"].warning and "no reference screenshot" in dead["home2"].reason
    assert "demo/home.png" in dead["home2"].reason  # it names what does match it
    assert not dead["ghost"].warning
    assert "does not match its own reference screenshot demo/detail.png" in dead["ghost"].reason


# --- farm registry check --------------------------------------------------------------------


def test_cli_check_clean(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build(tmp_path)
    code, lines, _ = farm(capsys, "registry", "check", str(tmp_path))
    assert code == 0
    assert len(lines) == 2 and lines[0].startswith("warning: unreachable: demo/home: ")
    assert lines[1].startswith(f"{tmp_path}: ok: 2 apps, 4 screens, 4 screenshots")


def test_cli_check_problems_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build(tmp_path, twin=True, ghost=True)
    code, lines, _ = farm(capsys, "registry", "check", str(tmp_path))
    assert code == 1
    assert lines[0].startswith("ambiguous: frame demo/home.png (of demo/home) is matched by ")
    assert any(line.startswith("wrong screen: frame demo/detail.png (of demo/ghost) is "
                               "matched by demo/detail; identified as demo/detail") for line in lines)
    assert any(line.startswith("dead: demo/ghost: does not match") for line in lines)
    assert any(line.startswith("warning: demo/home2: no reference screenshot") for line in lines)
    assert "3 problem(s)" in lines[-1]


def test_cli_check_invalid_registry_prints_every_problem(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    build(tmp_path)
    app = json.loads((tmp_path / "demo.json").read_text())
    app["states"]["home"]["validation_regions"][0]["coordinates"] = [0, 0, 500, 40]
    app["states"]["home"]["actions"][0]["linked_state"] = "nowhere"
    (tmp_path / "demo.json").write_text(json.dumps(app, indent=2))
    (tmp_path / "global" / "battery.png").unlink()
    code, lines, _ = farm(capsys, "registry", "check", str(tmp_path))
    assert code == 1
    assert any("$.states.home.validation_regions[0].coordinates" in line
               and "outside the 120x240 screen" in line for line in lines)
    assert any("$.states.home.actions[0].linked_state" in line and "'nowhere'" in line
               for line in lines)
    assert any("global.json" in line and "global/battery.png: file not found" in line
               for line in lines)
    assert lines[-1].endswith("problem(s); screenshots not cross-checked until the registry loads")


# --- farm registry identify -----------------------------------------------------------------


def write_frame(path: Path, image: np.ndarray) -> str:
    cv2.imwrite(str(path), image)
    return str(path)


def test_cli_identify_prints_one_label(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reg = tmp_path / "reg"
    frames = build(reg)
    cases = {"home": "demo/home", "detail": "demo/detail", "popup": "demo/interrupt:popup",
             "battery": "global/interrupt:battery"}
    for name, label in cases.items():
        image = write_frame(tmp_path / f"{name}.png", frames[name])
        assert farm(capsys, "registry", "identify", image, "--registry", str(reg),
                    "--app", "demo")[:2] == (0, [label])
    # A JPEG at another resolution is scaled to the registry's screen_size.
    big = cv2.resize(frames["detail"], (W * 3, H * 3), interpolation=cv2.INTER_NEAREST)
    image = write_frame(tmp_path / "detail.jpg", big)
    assert farm(capsys, "registry", "identify", image, "--registry", str(reg),
                "--app", "com.example.demo")[:2] == (0, ["demo/detail"])
    image = write_frame(tmp_path / "noise.png", blocks(77))
    assert farm(capsys, "registry", "identify", image, "--registry", str(reg))[:2] == (0, ["unknown"])


def test_cli_identify_ambiguous_and_explain(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reg = tmp_path / "reg"
    frames = build(reg, twin=True)
    image = write_frame(tmp_path / "home.png", frames["home"])
    code, lines, _ = farm(capsys, "registry", "identify", image, "--registry", str(reg),
                          "--app", "demo", "--explain")
    assert code == 0
    assert lines[0] == "unknown (ambiguous: demo/home, demo/home2)"
    rows = [line.split() for line in lines[1:]]
    assert rows and all(len(row) == 6 for row in rows)
    by_screen = {(row[0], row[1]): row for row in rows}
    assert by_screen[("demo/home", "bar")][2:3] == ["pixel"]
    assert by_screen[("demo/home", "bar")][5] == "pass"
    assert by_screen[("demo/interrupt:popup", "body")][5] == "fail"
    assert float(by_screen[("demo/home", "bar")][3]) >= float(by_screen[("demo/home", "bar")][4])


def test_cli_identify_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reg = tmp_path / "reg"
    frames = build(reg)
    missing = tmp_path / "missing.png"
    code, lines, err = farm(capsys, "registry", "identify", str(missing), "--registry", str(reg))
    assert code == 2 and lines == [] and str(missing) in err
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    code, lines, err = farm(capsys, "registry", "identify", str(garbage), "--registry", str(reg))
    assert code == 2 and lines == [] and str(garbage) in err and "not a readable image" in err
    image = write_frame(tmp_path / "home.png", frames["home"])
    code, lines, err = farm(capsys, "registry", "identify", image, "--registry", str(reg),
                            "--app", "nope")
    assert code == 2 and "'nope'" in err and "demo" in err
    (reg / "demo.json").write_text("{")
    code, lines, err = farm(capsys, "registry", "identify", image, "--registry", str(reg))
    assert code == 2 and "invalid JSON" in err and "demo.json:1:2" in err


def test_cli_launcher_runs_registry_check(tmp_path: Path) -> None:
    build(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "bin" / "farm"), "registry", "check",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ": ok: " in done.stdout


# --- farm registry path ---------------------------------------------------------------------


def test_cli_path_prints_one_line_per_hop(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, lines, _ = farm(capsys, "registry", "path", "clipshare", "feed", "login")
    assert code == 0
    assert lines == ["clipshare/feed --go_to_profile--> clipshare/profile",
                     "clipshare/profile --switch_account--> clipshare/account_switcher",
                     "clipshare/account_switcher --add_account--> clipshare/login"]
    assert farm(capsys, "registry", "path", "clipshare", "feed", "feed")[:2] == (
        0, ["clipshare/feed: already there"])
    build(tmp_path)
    assert farm(capsys, "registry", "path", "demo", "home", "detail", "--registry",
                str(tmp_path))[:2] == (0, ["demo/home --open--> demo/detail"])


def test_cli_path_without_a_route_exits_1_naming_the_screens(capsys: pytest.CaptureFixture) -> None:
    code, lines, err = farm(capsys, "registry", "path", "clipshare", "login", "feed")
    assert code == 1 and lines == []
    assert err.startswith("farm: no route from clipshare/login to clipshare/feed: ")
    assert "clipshare/login --log_in--> clipshare/feed" in err  # the one it will not take


def test_cli_path_bad_names_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, lines, err = farm(capsys, "registry", "path", "clipshar", "feed", "login")
    assert code == 2 and "'clipshar'" in err and "clipshare" in err
    code, lines, err = farm(capsys, "registry", "path", "clipshare", "fed", "login")
    assert code == 2 and "start screen clipshare/fed" in err and "feed" in err
    code, lines, err = farm(capsys, "registry", "path", "clipshare", "feed", "interrupt:rate_us")
    assert code == 2 and "is an interrupt" in err
    (tmp_path / "demo.json").write_text("{")
    code, lines, err = farm(capsys, "registry", "path", "demo", "a", "b", "--registry",
                            str(tmp_path))
    assert code == 2 and "invalid JSON" in err
