"""Recovery's pure parts: where a failed sequence can resume, and tool calls as device actions."""

from __future__ import annotations

import msgspec
import pytest

from actors.coordinator.ai.client import ToolCall
from actors.coordinator.ai.recovery import ANY_KNOWN, resume_points, tool_action
from protocol.messages import RunSequence
from sequences.load import default_registry
from sequences.model import Step

STEPS = [
    {"type": "if_screen", "screen": "clipshare/profile",
     "then": [{"type": "tap", "action": "profile.go_to_feed"}]},
    {"type": "wait_for_screen", "screen": "clipshare/feed", "timeout_s": 15},
    {"type": "tap", "action": "feed.go_to_upload"},
    {"type": "wait_for_screen", "screen": "clipshare/upload", "timeout_s": 10},
    {"type": "tap", "action": "upload.pick_clip_1"},
    {"type": "type", "text": "hi"},
    {"type": "tap", "action": "upload.post"},
    {"type": "wait_for_screen", "screen": "clipshare/profile", "timeout_s": 15},
]


def run() -> RunSequence:
    return RunSequence(execution_id="ex-1", run_id="run-1", sequence="clipshare/post_clip",
                       steps=msgspec.convert(STEPS, list[Step]), app="clipshare")


def points(path: str) -> list[tuple[str, int]]:
    return [(p.screen, p.index) for p in resume_points(run(), path, default_registry())]


def test_a_wait_step_resumes_itself_and_later_steps_give_their_screens() -> None:
    assert points("steps[1]") == [("clipshare/feed", 1), ("clipshare/upload", 3),
                                  ("clipshare/profile", 7)]


def test_a_tap_that_happened_resumes_after_it_on_its_linked_screen() -> None:
    # feed.go_to_upload leads to upload: the next step, never the tap again.
    assert points("steps[2]") == [("clipshare/upload", 3), ("clipshare/profile", 7)]
    assert ("clipshare/feed", 2) not in points("steps[2]")


def test_if_screen_resumes_on_any_state_and_nested_failures_only_go_forward() -> None:
    assert points("steps[0]")[0] == (ANY_KNOWN, 0)
    assert points("steps[0].then[0]")[0] == ("clipshare/feed", 1)


def test_descriptions_come_from_the_registry_and_other_paths_have_none() -> None:
    (feed, *_) = resume_points(run(), "steps[1]", default_registry())
    assert "feed" in feed.description.lower()
    assert resume_points(run(), "switch[0]", default_registry()) == []
    assert resume_points(run(), "launch_app", default_registry()) == []


def test_tool_calls_become_device_actions_or_name_the_bad_argument() -> None:
    def package(app: str) -> str | None:
        return {"clipshare": "com.phonefarm.clipshare"}.get(app)

    def act(name: str, **args):
        return tool_action(ToolCall("c1", name, args), package)

    assert act("tap", x=10.0, y=20) == {"type": "tap", "x": 10, "y": 20}
    assert act("key", key="BACK") == {"type": "key", "key": "KEYCODE_BACK"}
    assert act("launch_app", app="clipshare")["package"] == "com.phonefarm.clipshare"
    assert act("launch_app", app="com.example.x")["package"] == "com.example.x"
    assert act("type_text", text="hello") == {"type": "text", "text": "hello"}
    assert act("swipe", x1=1, y1=2, x2=3, y2=4)["type"] == "swipe"
    with pytest.raises(ValueError, match=r"tap\.y"):
        act("tap", x=1, y="two")
    with pytest.raises(ValueError, match="key.key"):
        act("key", key="power")
    with pytest.raises(ValueError, match="launch_app.app"):
        act("launch_app", app="nothing")
    with pytest.raises(ValueError, match="unknown tool"):
        act("reboot")


def test_a_go_to_resumes_itself_from_any_state_and_a_later_one_gives_its_target() -> None:
    steps = [{"type": "go_to", "screen": "clipshare/feed"},
             {"type": "tap", "action": "feed.go_to_upload"},
             {"type": "go_to", "screen": "clipshare/settings"},
             {"type": "wait_for_screen", "screen": "clipshare/login"}]
    walk = msgspec.structs.replace(run(), steps=msgspec.convert(steps, list[Step]))

    def at(path: str) -> list[tuple[str, int]]:
        return [(p.screen, p.index) for p in resume_points(walk, path, default_registry())]

    # A go_to walks from wherever the recovery leaves the phone, as long as it is a state.
    assert at("steps[0]") == [(ANY_KNOWN, 0), ("clipshare/feed", 1),
                              ("clipshare/settings", 2), ("clipshare/login", 3)]
    assert at("steps[1]") == [("clipshare/upload", 2), ("clipshare/settings", 2),
                              ("clipshare/login", 3)]


def test_a_challenge_screen_is_known_by_its_health_tag() -> None:
    """Recovery stops on a screen tagged challenge (issue 21): it never acts on one."""
    from registry.model import App, Registry, Screen

    from actors.coordinator.ai.recovery import screen_health

    registry = Registry(apps={"clipshare": App(
        states={"login": Screen(name="login", health="login"), "feed": Screen(name="feed")},
        interrupts={"verify": Screen(name="verify", health="challenge")})})
    assert screen_health(registry, "clipshare/interrupt:verify") == "challenge"
    assert screen_health(registry, "clipshare/login") == "login"
    assert screen_health(registry, "clipshare/feed") is None
    assert screen_health(registry, "unknown") is None and screen_health(None, "a/b") is None
    assert screen_health(registry, "other/interrupt:verify") is None
