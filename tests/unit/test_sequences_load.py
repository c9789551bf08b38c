"""sequences.load: every problem of a sequence at once (file, line, step path, field), the
library's files valid, and the helpers the coordinator resolves texts with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.errors import ValidationErrors
from sequences.load import (LIBRARY, load_library, load_named, load_sequence, map_texts,
                            parse_sequence, walk_steps)
from sequences.model import IfScreenStep, TapStep, TypeStep

BAD = """{
  "name": "broken",
  "app": "clipshare",
  "account": "clip share",
  "colour": "red",
  "steps": [
    {"type": "tap", "x": 10},
    {"type": "tap", "action": "feed.go_to_profil"},
    {"type": "tap", "x": 1, "y": 2, "action": "feed.go_to_profile"},
    {"type": "wait_for_screen", "screen": "clipshare/fed", "timeout_s": 0},
    {"type": "expect_screen", "screen": "clipshare/interrupt:rate_me"},
    {"type": "sleep", "min_s": 3, "max_s": 1},
    {"type": "sleep"},
    {"type": "type", "text": "Hi {there|you ${account.username"},
    {"type": "switch_account", "account": "clipshare"},
    {"type": "launch_app", "app": "tiktok"},
    {"type": "key", "key": "HOMEE"},
    {"type": "if_screen", "screen": "global/interrupt:low_battery", "then": [
      {"type": "tap", "action": "low_battery.ok"},
      {"type": "tapp"},
      {"type": "swipe", "x1": 1, "y1": "a", "x2": 3, "y2": 4}
    ]},
    {"type": "tap", "x": -5, "y": 3}
  ]
}
"""


def _problems(exc: pytest.ExceptionInfo) -> list[str]:
    return [str(p) for p in exc.value.problems]


def test_every_problem_at_once_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(BAD)
    with pytest.raises(ValidationErrors) as exc:
        load_sequence(path)
    problems = _problems(exc)
    expected = [
        (4, "$.account", "not an account"),
        (5, "$.colour", "unknown field 'colour'"),
        (7, "$.steps[0]", "missing y"),
        (8, "$.steps[1].action", "no action 'go_to_profil'"),
        (9, "$.steps[2]", "not both"),
        (10, "$.steps[3].screen", "no state 'fed'"),
        (10, "$.steps[3].timeout_s", "must be > 0"),
        (11, "$.steps[4].screen", "no interrupt 'rate_me'"),
        (12, "$.steps[5].min_s", "above max_s"),
        (13, "$.steps[6]", "a sleep needs"),
        (14, "$.steps[7].text", "offset "),
        (15, "$.steps[8].account", "not an account"),
        (16, "$.steps[9].app", "unknown app 'tiktok'"),
        (17, "$.steps[10].key", "unknown key 'HOMEE'"),
        (19, "$.steps[11].then[0].action", "app 'clipshare' has no screen 'low_battery'"),
        (20, "$.steps[11].then[1].type", "unknown step type 'tapp'"),
        (21, "$.steps[11].then[2].y1", "Expected `int`"),
        (23, "$.steps[12].x", "must be >= 0"),
    ]
    for line, field, reason in expected:
        hits = [p for p in problems if p.startswith(f"{path}:{line}: {field}: ") and reason in p]
        assert hits, f"no problem at line {line} {field} ({reason}) in:\n" + "\n".join(problems)
    assert len(problems) == len(expected), "\n".join(problems)
    # in file order
    lines = [int(p[len(str(path)) + 1:].split(":")[0]) for p in problems]
    assert lines == sorted(lines)


def test_template_error_names_its_offset() -> None:
    with pytest.raises(ValidationErrors) as exc:
        parse_sequence({"name": "t", "steps": [{"type": "key", "key": "HOME"},
                                               {"type": "sleep", "seconds": 1},
                                               {"type": "type", "text": "Hello {a|b"}]})
    assert _problems(exc) == ["request: $.steps[2].text: offset 6: unterminated spintax: "
                              "missing '}'"] or "request: $.steps[2].text: offset 6" in _problems(exc)[0]


def test_json_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{\n  "name": "s",\n  "steps": [\n    {"type": "tap" "x": 1}\n  ]\n}\n')
    with pytest.raises(ValidationErrors) as exc:
        load_sequence(path)
    (problem,) = _problems(exc)
    assert problem.startswith(f"{path}:4:20: invalid JSON")


def test_request_object_problems_name_the_request() -> None:
    with pytest.raises(ValidationErrors) as exc:
        parse_sequence({"steps": [], "app": "global"})
    problems = _problems(exc)
    assert "request: $: missing required field 'name'" in problems
    assert any(p.startswith("request: $.app: unknown app 'global'") for p in problems)
    assert "request: $.steps: a sequence needs at least one step" in problems
    with pytest.raises(ValidationErrors) as exc:
        parse_sequence(["not", "an", "object"])
    assert _problems(exc)[0].startswith("request: $: expected a JSON object")


def test_screens_and_actions_by_label_and_app_prefix() -> None:
    seq = parse_sequence({"name": "ok", "app": "clipshare", "account": "clipshare.account1",
                          "steps": [
                              {"type": "tap", "action": "feed.go_to_profile"},
                              {"type": "tap", "action": "global/low_battery.ok"},
                              {"type": "long_tap", "x": 5, "y": 6},
                              {"type": "wait_for_screen", "screen": "clipshare/interrupt:rate_us"},
                              {"type": "expect_screen", "screen": "launcher/home"},
                              {"type": "switch_account", "account": "clipshare.account2"},
                              {"type": "sleep", "seconds": 0.5},
                              {"type": "sleep", "min_s": 0.5, "max_s": 0.5},
                              {"type": "launch_app", "package": "com.phonefarm.clipshare"},
                              {"type": "key", "key": "4"}]})
    assert isinstance(seq.steps[0], TapStep) and seq.steps[0].action == "feed.go_to_profile"
    with pytest.raises(ValidationErrors) as exc:  # no app: a bare screen.action has none to live in
        parse_sequence({"name": "x", "steps": [{"type": "tap", "action": "feed.go_to_profile"}]})
    assert "without an app" in _problems(exc)[0]


def test_library_is_valid_and_named_by_folder_and_file() -> None:
    library = load_library()
    assert {"clipshare/login", "clipshare/post_clip", "clipshare/switch_account"} <= set(library)
    assert library["clipshare/post_clip"].account == "clipshare"
    assert load_named("clipshare/login") == library["clipshare/login"]
    with pytest.raises(KeyError):
        load_named("clipshare/nope")
    for name in library:
        app, stem = name.split("/")
        data = json.loads((LIBRARY / app / f"{stem}.json").read_text())
        assert data["name"] == stem


def test_library_reports_a_misnamed_file(tmp_path: Path) -> None:
    (tmp_path / "clipshare").mkdir()
    (tmp_path / "clipshare" / "a.json").write_text(json.dumps(
        {"name": "b", "app": "clipshare", "steps": [{"type": "key", "key": "HOME"}]}))
    with pytest.raises(ValidationErrors) as exc:
        load_library(tmp_path)
    assert "name 'b' differs from the file name 'a'" in _problems(exc)[0]


def test_walk_and_map_texts_reach_nested_steps() -> None:
    # The shape switch_account had before go_to: the login form typed in both branches.
    form = [{"type": "type", "text": "${account.username}", "clear": True,
             "field": "login.username_field"},
            {"type": "tap", "action": "login.password_field"},
            {"type": "type", "text": "${account.password}"}]
    seq = parse_sequence({"name": "nested", "app": "clipshare", "steps": [
        {"type": "if_screen", "screen": "clipshare/login", "then": form, "otherwise": [
            {"type": "if_screen", "screen": "clipshare/feed", "then": [
                {"type": "tap", "action": "feed.go_to_profile"}]},
            *form]},
        {"type": "wait_for_screen", "screen": "clipshare/feed"}]})
    walked = list(walk_steps(seq.steps))
    paths = [p for p, _ in walked]
    assert any(".then[" in p for p in paths) and any(".otherwise[" in p and ".then[" in p
                                                     for p in paths)
    # Its type steps sit in both branches of an if_screen (logged out / logged in).
    typed = [p for p, step in walked if isinstance(step, TypeStep)]
    assert any(".then[" in p for p in typed) and any(".otherwise[" in p for p in typed)
    seen: list[str] = []
    out = map_texts(seq.steps, lambda text, path: seen.append(path) or text.upper())
    assert seen == typed
    for (path, before), (_, after) in zip(walked, walk_steps(out)):
        if isinstance(before, TypeStep):
            assert after.text == before.text.upper(), path
            assert (after.clear, after.field) == (before.clear, before.field)
    first = next(step for p, step in walked if p == typed[0])
    assert first.text == "${account.username}"  # the original is untouched


def test_type_step_clear_needs_a_field_that_exists() -> None:
    from sequences.load import parse_sequence

    def problems(step: dict) -> list[str]:
        with pytest.raises(ValidationErrors) as exc:
            parse_sequence({"name": "x", "app": "clipshare", "steps": [
                {"type": "key", "key": "HOME"}, step]})
        return _problems(exc)

    seq = parse_sequence({"name": "x", "app": "clipshare", "steps": [
        {"type": "type", "text": "${account.username}", "clear": True,
         "field": "login.username_field"}]})
    assert (seq.steps[0].clear, seq.steps[0].field) == (True, "login.username_field")
    assert parse_sequence({"name": "x", "steps": [{"type": "type", "text": "a"}]}).steps[0].clear is False
    [p] = problems({"type": "type", "text": "a", "clear": True})
    assert p.startswith("request: $.steps[1].field: clear needs field")
    [p] = problems({"type": "type", "text": "a", "clear": True, "field": "login.usernme_field"})
    assert p.startswith("request: $.steps[1].field: action 'login.usernme_field': screen "
                        "clipshare/login has no action 'usernme_field'")
    [p] = problems({"type": "type", "text": "a", "clear": True, "field": "nowhere"})
    assert p.startswith("request: $.steps[1].field: not a registry action")
    [p] = problems({"type": "type", "text": "a", "field": "login.username_field"})
    assert p.startswith("request: $.steps[1].field: field names the text field that clear empties")
    [p] = problems({"type": "type", "text": "a", "clear": "yes", "field": "login.username_field"})
    assert p.startswith("request: $.steps[1].clear: Expected `bool`")


def test_key_repeat_is_bounded(tmp_path) -> None:
    from sequences.load import parse_sequence

    seq = parse_sequence({"name": "x", "steps": [{"type": "key", "key": "DEL", "repeat": 30}]})
    assert seq.steps[0].repeat == 30
    with pytest.raises(ValidationErrors, match=r"steps\[0\].repeat: must be 1..100, got 0"):
        parse_sequence({"name": "x", "steps": [{"type": "key", "key": "DEL", "repeat": 0}]})


def test_swipe_along_a_path_is_checked_and_kept() -> None:
    """A recorded console drag: a swipe through points whose ends are x1..y2."""
    seq = parse_sequence({"name": "curve", "steps": [
        {"type": "swipe", "x1": 10, "y1": 900, "x2": 10, "y2": 100, "duration_ms": 400,
         "path": [[10, 900], [300, 500], [10, 100]]}]})
    assert seq.steps[0].path == [(10, 900), (300, 500), (10, 100)]
    with pytest.raises(ValidationErrors) as exc:
        parse_sequence({"name": "bad", "steps": [
            {"type": "swipe", "x1": 10, "y1": 900, "x2": 10, "y2": 100,
             "path": [[10, 900], [300, -5], [10, 100]]},
            {"type": "swipe", "x1": 10, "y1": 900, "x2": 10, "y2": 100, "path": [[10, 900], [10, 101]]},
            {"type": "swipe", "x1": 0, "y1": 0, "x2": 0, "y2": 0, "path": [[0, 0]]}]})
    problems = _problems(exc)
    assert any(p.startswith("request: $.steps[0].path[1]: a point is [x, y]") for p in problems), problems
    assert any(p.startswith("request: $.steps[1].path: its ends must be") and "y2 is 100" in p
               for p in problems), problems
    assert any(p.startswith("request: $.steps[2].path: needs 2..64 points") for p in problems), problems


def test_go_to_names_a_state_the_registry_has() -> None:
    from sequences.model import GoToStep

    seq = parse_sequence({"name": "x", "app": "clipshare", "steps": [
        {"type": "go_to", "screen": "clipshare/login"},
        {"type": "go_to", "screen": "launcher/home", "timeout_s": 5}]})
    assert seq.steps[0] == GoToStep(screen="clipshare/login", timeout_s=60.0)
    assert seq.steps[1].timeout_s == 5

    def problems(step: dict) -> list[str]:
        with pytest.raises(ValidationErrors) as exc:
            parse_sequence({"name": "x", "app": "clipshare", "steps": [
                {"type": "key", "key": "HOME"}, step]})
        return _problems(exc)

    [p] = problems({"type": "go_to", "screen": "clipshare/logn"})
    assert p.startswith("request: $.steps[1].screen: screen 'clipshare/logn': app 'clipshare' "
                        "has no state 'logn'")
    [p] = problems({"type": "go_to", "screen": "clipshare/interrupt:rate_us"})
    assert p.startswith("request: $.steps[1].screen: a go_to leads to a state, not an "
                        "interrupt")
    [p] = problems({"type": "go_to", "screen": "login"})
    assert p.startswith("request: $.steps[1].screen: not a screen label")
    [p] = problems({"type": "go_to"})
    assert p.startswith("request: $.steps[1]: a go_to step needs a screen")
    [p] = problems({"type": "go_to", "screen": "clipshare/login", "timeout_s": 0})
    assert p.startswith("request: $.steps[1].timeout_s: must be > 0")
    [p] = problems({"type": "go_to", "screen": "clipshare/login", "timeout_s": 1e9})
    assert p.startswith("request: $.steps[1].timeout_s: must be <= 86400")
    [p] = problems({"type": "go_to", "screen": "clipshare/login", "then": []})
    assert p.startswith("request: $.steps[1].then: unknown field 'then' for a go_to step")


def test_library_login_switch_account_and_post_clip_start_with_a_go_to() -> None:
    """Each starts from any ClipShare screen: its first step after launching walks there."""
    library = load_library()
    firsts = {name: next(s for s in library[name].steps if s.__struct_config__.tag != "launch_app")
              for name in ("clipshare/login", "clipshare/switch_account", "clipshare/post_clip")}
    assert {name: (step.__struct_config__.tag, step.screen) for name, step in firsts.items()} == {
        "clipshare/login": ("go_to", "clipshare/login"),
        "clipshare/switch_account": ("go_to", "clipshare/login"),
        "clipshare/post_clip": ("go_to", "clipshare/feed")}


def test_ensure_app_is_a_top_level_step_with_app_and_version() -> None:
    from sequences.load import parse_sequence
    from sequences.model import EnsureAppStep

    seq = parse_sequence({"name": "x", "steps": [
        {"type": "ensure_app", "app": "clipshare", "version": "4.1.0"}]}, "x.json")
    assert seq.steps[0] == EnsureAppStep(app="clipshare", version="4.1.0")
    with pytest.raises(ValidationErrors) as info:
        parse_sequence({"name": "x", "steps": [
            {"type": "ensure_app", "app": "clipshare", "version": " "},
            {"type": "if_screen", "screen": "clipshare/home", "then": [
                {"type": "ensure_app", "app": "clipshare", "version": "4.1.0"}]}]}, "x.json")
    text = str(info.value)
    assert "$.steps[0].version: an ensure_app step needs a non-empty version" in text
    assert "$.steps[1].then[0]: ensure_app is played before the run starts" in text
