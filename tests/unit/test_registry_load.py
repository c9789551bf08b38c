"""registry.load: both on-disk forms, every problem reported at once (file:line + JSON path),
the content-hash version, and save_app's atomic, validate-first writes."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest

from protocol.errors import ValidationErrors
from registry.load import encode_app, load_registry, registry_version, resolve_path, save_app
from registry.model import App, Region, Screen

W, H = 100, 200  # the test apps' screen_size


def png(w: int, h: int, value: int = 128) -> bytes:
    image = np.full((h, w, 3), value, np.uint8)
    image[: h // 2, : w // 2] = 255 - value  # some texture
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def clipshare() -> dict:
    return {
        "package": "com.example.clipshare",
        "screen_size": [W, H],
        "states": {
            "login": {
                "name": "login",
                "validation_regions": [
                    {"name": "logo", "coordinates": [10, 10, 60, 40],
                     "reference": "clipshare/login.logo.png"},
                    {"name": "title", "coordinates": [0, 50, 100, 70], "ocr_enabled": True,
                     "expected_text": "Log in"},
                ],
                "actions": [{"name": "submit", "coordinates": [10, 150, 90, 170],
                             "linked_state": "feed"}],
                "reference_screenshot": "clipshare/login.png",
            },
            "feed": {
                "name": "feed",
                "validation_regions": [{"name": "nav", "coordinates": [0, 180, 100, 200],
                                        "reference": "clipshare/feed.nav.png", "threshold": 0.9}],
            },
        },
        "interrupts": {
            "rate_us": {
                "name": "rate_us",
                "validation_regions": [{"name": "stars", "coordinates": [20, 80, 80, 100],
                                        "reference": "clipshare/rate_us.stars.png"}],
                "actions": [{"name": "later", "coordinates": [20, 110, 80, 130]}],
                "handler": "later",
            },
        },
    }


def global_app() -> dict:
    return {
        "screen_size": [W, H],
        "interrupts": {
            "battery_low": {
                "name": "battery_low",
                "validation_regions": [{"name": "text", "coordinates": [0, 90, 100, 110],
                                        "ocr_enabled": True, "expected_text": "Battery low"}],
                "actions": [{"name": "dismiss", "coordinates": [30, 120, 70, 140]}],
            },
        },
    }


def write_files(root: Path) -> None:
    for rel, (w, h) in {"clipshare/login.logo.png": (50, 30), "clipshare/feed.nav.png": (100, 20),
                        "clipshare/rate_us.stars.png": (60, 20), "clipshare/login.png": (W, H)}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png(w, h))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "reg"
    write_files(root)
    (root / "clipshare.json").write_text(json.dumps(clipshare(), indent=2))
    (root / "global.json").write_text(json.dumps(global_app(), indent=2))
    return root


def problems(path: Path) -> list[str]:
    with pytest.raises(ValidationErrors) as caught:
        load_registry(path)
    return [str(p) for p in caught.value.problems]


def has(messages: list[str], *parts: str) -> bool:
    return any(all(part in m for part in parts) for m in messages)


# --- loading a valid registry ---------------------------------------------------------------


def test_folder_form_loads(folder: Path) -> None:
    registry = load_registry(folder)
    assert set(registry.apps) == {"clipshare", "global"}
    assert registry.root == str(folder.resolve())
    assert registry.apps["clipshare"].screen_size == (W, H)
    assert registry.apps["clipshare"].states["login"].actions[0].linked_state == "feed"
    assert registry.app_for_package("com.example.clipshare") == "clipshare"
    assert len(registry.version) == 64 and int(registry.version, 16) >= 0
    assert resolve_path(registry, "clipshare/login.png") == folder.resolve() / "clipshare/login.png"


def test_single_file_form_loads_the_same_registry(folder: Path) -> None:
    single = folder / "registry.json"
    single.write_text(json.dumps({"apps": {"clipshare": clipshare(), "global": global_app()}}))
    from_file = load_registry(single)
    (folder / "registry.json").unlink()
    from_folder = load_registry(folder)
    assert from_file.apps == from_folder.apps
    assert from_file.root == from_folder.root


def test_version_is_stable_and_follows_every_byte(folder: Path, tmp_path: Path) -> None:
    version = load_registry(folder).version
    assert load_registry(folder).version == version == registry_version(folder)
    # Same content elsewhere (another machine): same version.
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(folder, copy)
    assert load_registry(copy).version == version

    crop = folder / "clipshare/login.logo.png"
    crop.write_bytes(png(50, 30, value=100))  # same size, other pixels: still valid
    changed = load_registry(folder).version
    assert changed != version
    data = bytearray(crop.read_bytes())
    data[-5] ^= 1  # one byte of the file, whatever it breaks
    crop.write_bytes(bytes(data))
    assert registry_version(folder) not in (version, changed)


def test_a_crop_changed_on_disk_is_checked_again_by_the_next_load(folder: Path) -> None:
    # Crops' decoded sizes are remembered by content within a process: a changed file's
    # new bytes are decoded (and refused) at the next load, not taken for the old ones.
    assert load_registry(folder).apps["clipshare"].states["login"]
    crop = folder / "clipshare" / "login.logo.png"
    crop.write_bytes(png(20, 10))
    assert has(problems(folder), "login.logo.png is 20x10")
    crop.write_bytes(b"\x89PNG\r\n\x1a\n" + png(50, 30)[8:40])  # cut short
    assert has(problems(folder), "login.logo.png: not readable as an image")
    crop.write_bytes(png(50, 30))
    assert load_registry(folder).apps["clipshare"].states["login"]


def test_stale_temp_files_are_ignored_and_cleaned(folder: Path) -> None:
    stale = folder / ".clipshare.json.x1.tmp"
    young = folder / "clipshare" / ".login.png.x2.tmp"
    stale.write_text("{ half a file")
    young.write_bytes(b"\x89PNG half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    version = load_registry(folder).version
    assert not stale.exists()
    assert young.exists()  # may be a write in progress elsewhere
    assert load_registry(folder).version == version


# --- every problem at once ------------------------------------------------------------------


def broken_clipshare_text() -> str:
    # Written by hand so line numbers are known; each problem sits on its own line.
    return """{
  "package": "com.example.clipshare",
  "screen_size": [100, 200],
  "states": {
    "login": {
      "name": "login",
      "validation_regions": [
        {"name": "logo", "coordinates": [10, 10, 60, 40], "reference": "clipshare/login.logo.png"},
        {"name": "logo", "coordinates": [0, 0, 20, 20], "reference": "clipshare/small.png"},
        {"name": "banner", "coordinates": [0, 150, 100, 250], "reference": "clipshare/missing.png"},
        {"name": "wide", "coordinates": [0, 0, 40, 30], "reference": "clipshare/login.logo.png"}
      ],
      "actions": [
        {"name": "submit", "coordinates": [10, 150, 90, 170], "linked_state": "home"}
      ]
    },
    "feed": {"name": "feed", "validation_regions": [
      {"name": "nav", "coordinates": [0, 180, 100, 200], "reference": "clipshare/feed.nav.png"}]},
    "login": {"name": "login again"}
  }
}
"""


def test_broken_registry_reports_every_problem_with_file_line_and_path(folder: Path) -> None:
    (folder / "clipshare" / "small.png").write_bytes(png(20, 20))
    (folder / "clipshare.json").write_text(broken_clipshare_text())
    (folder / "global.json").write_text('{\n  "interrupts": {\n    "x": {"name": "x",}\n  }\n}\n')
    messages = problems(folder)
    app = str(folder / "clipshare.json")
    # Duplicate region name, region outside the screen, missing crop, crop size mismatch,
    # unknown linked_state, duplicate key, bad JSON syntax: all of them, in one report.
    assert has(messages, f"{app}:9: $.states.login.validation_regions[1].name",
               "duplicate region name 'logo'")
    assert has(messages, f"{app}:10: $.states.login.validation_regions[2].coordinates",
               "outside the 100x200 screen")
    assert has(messages, f"{app}:10: $.states.login.validation_regions[2].reference",
               "clipshare/missing.png", "not found")
    assert has(messages, f"{app}:11: $.states.login.validation_regions[3].reference",
               "clipshare/login.logo.png is 50x30", "40x30")
    assert has(messages, f"{app}:14: $.states.login.actions[0].linked_state",
               "'home' is not a state of app 'clipshare'")
    assert has(messages, f"{app}:19: $.states.login", "duplicate key 'login'", "first at line 5")
    assert has(messages, f"{folder / 'global.json'}:3:23", "invalid JSON")
    assert len(messages) == 7, "\n".join(messages)


def test_meaning_problems(folder: Path) -> None:
    app = clipshare()
    login = app["states"]["login"]
    login["validation_regions"] += [
        {"name": "a", "coordinates": [50, 10, 40, 20], "reference": "clipshare/login.logo.png"},
        {"name": "b", "coordinates": [0, 0, 10, 10]},
        {"name": "c", "coordinates": [0, 0, 10, 10], "ocr_enabled": True},
        {"name": "d", "coordinates": [0, 0, 10, 10], "expected_text": "Hi"},
        {"name": "e", "coordinates": [0, 0, 10, 10], "ocr_enabled": True, "expected_text": "Hi",
         "threshold": 1.5},
    ]
    login["actions"].append({"name": "submit", "coordinates": [0, 0, 5, 5]})
    login["reference_screenshot"] = "clipshare/feed.nav.png"
    app["interrupts"]["rate_us"]["handler"] = "close"
    (folder / "clipshare.json").write_text(json.dumps(app, indent=2))
    glob = global_app()
    glob["package"] = "com.example.clipshare"
    glob["states"] = {"home": {"name": "home"}}
    (folder / "global.json").write_text(json.dumps(glob, indent=2))
    other = clipshare()
    other["screen_size"] = [0, 200]
    other["states"]["login"]["validation_regions"][0]["reference"] = "../outside.png"
    (folder / "Other-App.json").write_text(json.dumps(other, indent=2))
    (folder / "clipshare" / "notes.png").write_text("not an image")
    login["reference_screenshot"] = "clipshare/notes.png"
    (folder / "third.json").write_text(json.dumps(
        {"package": "com.third", "screen_size": [W, H], "states": {"login": login}}, indent=2))

    messages = problems(folder)
    text = "\n".join(messages)
    regions = "$.states.login.validation_regions"
    assert has(messages, f"{regions}[2].coordinates", "is empty"), text
    assert has(messages, f"{regions}[3]:", "checks nothing"), text
    assert has(messages, f"{regions}[4]:", "ocr_enabled without expected_text"), text
    assert has(messages, f"{regions}[5].expected_text", "without ocr_enabled"), text
    assert has(messages, f"{regions}[6].threshold", "[0, 1]", "1.5"), text
    assert has(messages, "$.states.login.actions[1].name", "duplicate action name 'submit'"), text
    assert has(messages, "clipshare.json", "$.states.login.reference_screenshot",
               "100x20", "screen_size is 100x200"), text
    assert has(messages, "$.interrupts.rate_us.handler", "'close' is not an action"), text
    assert has(messages, "global.json", "$.states", "interrupts only"), text
    assert has(messages, "global.json", "$.package", "no package"), text
    assert has(messages, "Other-App.json:", "'Other-App' is not a valid app key"), text
    assert has(messages, "Other-App.json", "$.screen_size", "must be positive"), text
    assert has(messages, "Other-App.json", "'../outside.png' must be a relative path"), text
    assert has(messages, "package 'com.example.clipshare' is also app"), text
    assert has(messages, "third.json", "reference_screenshot", "clipshare/notes.png",
               "not readable as an image"), text


def test_schema_problems_name_the_json_path(folder: Path) -> None:
    app = clipshare()
    app["states"]["login"]["validation_regions"][0]["coordinates"] = [1, 2, 3]
    app["states"]["feed"]["name"] = 7
    app["states"]["feed"]["colour"] = "red"
    app["interrupts"]["rate_us"]["actions"][0]["action_type"] = "wiggle"
    (folder / "clipshare.json").write_text(json.dumps(app, indent=2))
    messages = problems(folder)
    assert has(messages, "$.states.login.validation_regions[0].coordinates", "length 4")
    assert has(messages, "$.states.feed.name", "Expected `str`, got `int`")
    assert has(messages, "$.states.feed.colour", "unknown field 'colour'")
    assert has(messages, "$.interrupts.rate_us.actions[0].action_type", "wiggle")
    assert all(f"{folder / 'clipshare.json'}:" in m for m in messages)
    # login was dropped (bad region), yet feed is still checked, and linking to login is fine.
    app["states"]["login"]["validation_regions"].insert(0, {"name": "x", "coordinates": [0, 0, 0, 0]})
    app["states"]["feed"] = {"name": "feed", "actions": [
        {"name": "back", "coordinates": [0, 0, 500, 5], "linked_state": "login"}]}
    (folder / "clipshare.json").write_text(json.dumps(app, indent=2))
    messages = problems(folder)
    assert has(messages, "$.states.login.validation_regions[1].coordinates", "length 4")
    assert has(messages, "$.states.feed.actions[0].coordinates", "outside the 100x200 screen")
    assert not has(messages, "linked_state")
    assert not has(messages, "validation_regions[0]")


def test_missing_path_is_one_clear_problem(tmp_path: Path) -> None:
    assert has(problems(tmp_path / "nope"), "nope", "no such registry folder or file")
    with pytest.raises(ValidationErrors, match="no such registry folder"):
        registry_version(tmp_path / "nope")


# --- save_app -------------------------------------------------------------------------------


def login_app(logo_ref: str = "clipshare/login.logo.png") -> App:
    return App(package="com.example.clipshare", screen_size=(W, H), states={
        "login": Screen(name="login", validation_regions=[
            Region(name="logo", coordinates=(10, 10, 60, 40), reference=logo_ref)]),
    })


def test_save_app_writes_files_then_json_and_returns_the_version(tmp_path: Path) -> None:
    root = tmp_path / "new"
    version = save_app(root, "clipshare", login_app(), {"clipshare/login.logo.png": png(50, 30)})
    registry = load_registry(root)
    assert version == registry.version
    assert registry.apps["clipshare"] == login_app()
    text = (root / "clipshare.json").read_text()
    assert text == encode_app(login_app()).decode()
    assert text.startswith('{\n  "package": "com.example.clipshare",\n  "screen_size"')
    assert list(json.loads(text)) == ["package", "screen_size", "states"]  # the model's order
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_save_app_that_would_break_the_registry_touches_nothing(folder: Path) -> None:
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    bad = login_app()
    bad.states["login"].validation_regions[0].coordinates = (10, 10, 60, 400)  # outside
    with pytest.raises(ValidationErrors) as caught:
        save_app(folder, "clipshare", bad, {"clipshare/login.logo.png": png(50, 30, value=3)})
    assert "outside the 100x200 screen" in str(caught.value)
    # A crop of the wrong size is caught before it is written, too.
    with pytest.raises(ValidationErrors, match="is 20x20"):
        save_app(folder, "clipshare", login_app(), {"clipshare/login.logo.png": png(20, 20)})
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_save_app_killed_mid_way_leaves_the_old_json(folder: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    old_json = (folder / "clipshare.json").read_bytes()
    real_replace = os.replace
    calls = []

    def replace_then_crash(src, dst):
        calls.append(dst)
        if str(dst).endswith(".json"):
            raise OSError("killed")  # the crop went in; the JSON never does
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_crash)
    new_crop = png(50, 30, value=7)
    with pytest.raises(OSError, match="killed"):
        save_app(folder, "clipshare", login_app(), {"clipshare/login.logo.png": new_crop})
    monkeypatch.undo()
    assert [Path(c).name for c in calls] == ["login.logo.png", "clipshare.json"]
    assert (folder / "clipshare.json").read_bytes() == old_json
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    # The registry on disk is still the old one, whole and valid.
    assert load_registry(folder).apps["clipshare"] == msgspec.convert(clipshare(), App)


def test_save_app_rejects_bad_keys_and_paths(folder: Path) -> None:
    with pytest.raises(ValidationErrors, match="not a valid app key"):
        save_app(folder, "Clip-Share", login_app())
    with pytest.raises(ValidationErrors, match="inside the registry folder"):
        save_app(folder, "clipshare", login_app(), {"../escape.png": png(50, 30)})
    assert not (folder.parent / "escape.png").exists()


# --- issue 21: health tags and read regions -------------------------------------------------


def test_health_tags_and_read_regions_load(folder: Path) -> None:
    app = clipshare()
    app["states"]["login"]["health"] = "login"
    app["states"]["feed"]["read_regions"] = [{"name": "followers", "coordinates": [0, 100, 50, 120]}]
    app["interrupts"]["rate_us"]["health"] = "challenge"
    (folder / "clipshare.json").write_text(json.dumps(app, indent=2))
    registry = load_registry(folder)
    cs = registry.apps["clipshare"]
    assert cs.states["login"].health == "login" and cs.interrupts["rate_us"].health == "challenge"
    assert cs.states["feed"].health is None
    assert cs.states["feed"].read_region("followers").coordinates == (0, 100, 50, 120)
    assert cs.states["login"].read_region("title").name == "title"  # a validation region
    assert cs.states["feed"].read_region("nope") is None


def test_health_and_read_region_problems(folder: Path) -> None:
    app = clipshare()
    app["states"]["login"]["health"] = "captcha"
    app["states"]["feed"]["read_regions"] = [
        {"name": "nav", "coordinates": [0, 100, 50, 120]},        # a validation region's name
        {"name": "big", "coordinates": [0, 100, 500, 120]}]
    app["interrupts"]["rate_us"]["health"] = 3  # a type problem: the screen is not checked on
    app["interrupts"]["rate_us"]["read_regions"] = [{"name": "odd", "coordinates": [0, 1, 5, 9],
                                                     "ocr": True}]
    (folder / "clipshare.json").write_text(json.dumps(app, indent=2))
    messages = problems(folder)
    text = "\n".join(messages)
    assert has(messages, "clipshare.json:", "$.states.login.health", "unknown health tag 'captcha'",
               "login, challenge"), text
    assert has(messages, "$.states.feed.read_regions[0].name", "duplicate region name 'nav'"), text
    assert has(messages, "$.states.feed.read_regions[1].coordinates", "outside"), text
    assert has(messages, "$.interrupts.rate_us.read_regions[0].ocr", "unknown field 'ocr'"), text
    assert has(messages, "$.interrupts.rate_us.health", "str"), text
