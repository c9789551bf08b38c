"""Issue 21's reading steps in sequences.load / sequences.model / sequences.variables:
read_text, read_number, record_metric, record_post, read_messages and ${read.NAME}."""

from __future__ import annotations

import random

import pytest

from protocol.errors import ValidationErrors, VariableError
from registry.model import App, ReadRegion, Region, Registry, Screen, ScreenAction
from sequences.load import map_texts, parse_sequence
from sequences.model import (ReadMessagesStep, ReadNumberStep, ReadTextStep, RecordMetricStep,
                             RecordPostStep, TypeStep)
from sequences.variables import (VariableContext, read_variables, resolve,
                                 substitute_reads)


def registry() -> Registry:
    profile = Screen(name="profile", validation_regions=[
        Region(name="title", coordinates=(0, 0, 100, 20), ocr_enabled=True, expected_text="Me")],
        read_regions=[ReadRegion(name="followers", coordinates=(0, 30, 50, 40))])
    conversation = Screen(name="conversation", read_regions=[
        ReadRegion(name="partner", coordinates=(0, 0, 100, 20)),
        ReadRegion(name="body", coordinates=(0, 20, 100, 180))])
    upload = Screen(name="upload", actions=[ScreenAction(name="post", coordinates=(0, 0, 9, 9))])
    app = App(package="com.x", screen_size=(100, 200),
              states={"profile": profile, "conversation": conversation, "upload": upload},
              interrupts={"verify": Screen(name="verify", health="challenge")})
    return Registry(apps={"clipshare": app, "global": App()})


def seq(*steps: dict) -> dict:
    return {"name": "s", "app": "clipshare", "steps": list(steps)}


def problems(data: dict) -> list[str]:
    with pytest.raises(ValidationErrors) as exc:
        parse_sequence(data, registry=registry())
    return [str(p) for p in exc.value.problems]


def has(messages: list[str], *parts: str) -> bool:
    return any(all(p in m for p in parts) for m in messages)


def test_a_valid_stats_and_post_sequence() -> None:
    parsed = parse_sequence(seq(
        {"type": "read_number", "into": "followers", "region": "profile.followers"},
        {"type": "read_text", "into": "title", "region": "clipshare/profile.title", "locale": "fr"},
        {"type": "read_number", "into": "raw", "box": [0, 30, 50, 40], "locale": "de"},
        {"type": "record_metric", "metric": "followers", "value": "${read.followers}"},
        {"type": "record_metric", "metric": "views", "value": "${read.raw}", "post": "latest"},
        {"type": "record_metric", "metric": "likes", "value": "${read.raw}",
         "post": "${read.title}"},
        {"type": "type", "text": "{Hi|Hello} ${read.title}", "label": "caption"},
        {"type": "record_post", "caption_step": "caption", "media": "clip.mp4"},
        {"type": "read_messages", "partner_region": "conversation.partner",
         "body_region": "conversation.body"},
    ), registry=registry())
    kinds = [type(s) for s in parsed.steps]
    assert kinds == [ReadNumberStep, ReadTextStep, ReadNumberStep, RecordMetricStep,
                     RecordMetricStep, RecordMetricStep, TypeStep, RecordPostStep,
                     ReadMessagesStep]
    assert parsed.steps[2].box == (0, 30, 50, 40) and parsed.steps[0].locale == "en"


def test_every_read_problem_with_its_step_path_and_field() -> None:
    messages = problems(seq(
        {"type": "read_text", "into": "a", "region": "profile.followers", "box": [0, 0, 5, 5]},
        {"type": "read_text", "into": "b"},
        {"type": "read_number", "into": "Bad-Name", "region": "profile.nope"},
        {"type": "read_number", "region": "feed.followers", "locale": "xx"},
        {"type": "read_text", "into": "c", "box": [5, 0, 5, 9]},
        {"type": "read_text", "into": "d", "region": "verify.title"},
        {"type": "record_metric", "metric": "followerz", "value": "${read.a}"},
        {"type": "record_metric", "metric": "views", "value": "${read.a}"},
        {"type": "record_metric", "metric": "followers", "value": "${read.a}", "post": "latest"},
        {"type": "record_metric", "metric": "posts", "value": "${read.later}"},
        {"type": "record_metric", "metric": "posts"},
        {"type": "type", "text": "x", "label": "later_caption"},
        {"type": "record_post", "caption_step": "caption"},
        {"type": "type", "text": "y", "label": "caption"},
        {"type": "read_number", "into": "later", "region": "profile.followers"},
        {"type": "read_messages", "partner_region": "conversation.partner"},
        {"type": "record_metric", "metric": "posts", "value": "${read.later(1)}"},
    ))
    text = "\n".join(messages)
    assert has(messages, "request: $.steps[0]:", "region (screen.region) or a box", "exactly one"), text
    assert has(messages, "$.steps[1]:", "exactly one"), text
    assert has(messages, "$.steps[2].into", "'Bad-Name' is not a read variable name"), text
    assert has(messages, "$.steps[2].region", "no region 'nope'", "followers"), text
    assert has(messages, "$.steps[3]:", "needs into"), text
    assert has(messages, "$.steps[3].region", "no state 'feed'"), text
    assert has(messages, "$.steps[3].locale", "unknown locale 'xx'"), text
    assert has(messages, "$.steps[4].box", "is empty"), text
    assert has(messages, "$.steps[5].region", "no state 'verify'"), text  # an interrupt
    assert has(messages, "$.steps[6].metric", "unknown metric 'followerz'", "followers, following"), text
    assert has(messages, "$.steps[7].metric", "'views'", "a post's: add post"), text
    assert has(messages, "$.steps[8].metric", "'followers'", "an account's: remove post"), text
    assert has(messages, "$.steps[9].value", "${read.later} is used before any read step sets "
                                            "'later'", "set so far: a"), text
    assert has(messages, "$.steps[10]:", "needs a value"), text
    assert has(messages, "$.steps[12].caption_step", "'caption' names no earlier type step's "
                                                    "label", "later_caption"), text
    assert has(messages, "$.steps[15]:", "needs body_region"), text
    assert has(messages, "$.steps[16].value", "takes no arguments"), text
    assert not has(messages, "$.steps[14]"), text


def test_read_steps_are_typed_and_read_inside_if_screen() -> None:
    messages = problems(seq(
        {"type": "read_text", "into": "a", "box": [0, 0, "x", 5]},
        {"type": "if_screen", "screen": "clipshare/profile", "then": [
            {"type": "read_number", "into": "n", "region": "profile.followers", "extra": 1}]},
        {"type": "record_metric", "metric": "followers", "value": 5},
    ))
    text = "\n".join(messages)
    assert has(messages, "$.steps[0].box[2]", "Expected `int`"), text
    assert has(messages, "$.steps[1].then[0].extra", "unknown field 'extra'"), text
    assert has(messages, "$.steps[2].value", "Expected `str`"), text


def test_coordinator_leaves_read_variables_and_the_node_fills_them() -> None:
    ctx = VariableContext(custom={"who": "Ann"})
    rng = random.Random(3)
    assert resolve("${custom.who}: ${read.followers}", ctx, rng) == "Ann: ${read.followers}"
    assert read_variables("{a ${read.x}|${dynamic.random.choice(${read.y},b)}}") == [
        ("x", 3), ("y", 37)]
    parsed = parse_sequence(seq(
        {"type": "read_number", "into": "n", "region": "profile.followers"},
        {"type": "type", "text": "${custom.who} has ${read.n}", "label": "caption"},
        {"type": "record_metric", "metric": "followers", "value": "${read.n}"},
        {"type": "record_post", "caption_step": "caption", "media": "${custom.who}.mp4"},
    ), registry=registry())
    steps = map_texts(parsed.steps, lambda text, path: resolve(text, ctx, rng))
    assert steps[1].text == "Ann has ${read.n}"
    assert steps[2].value == "${read.n}" and steps[3].media == "Ann.mp4"
    assert substitute_reads(steps[1].text, {"n": "1200"}) == "Ann has 1200"
    with pytest.raises(VariableError) as info:
        substitute_reads("${read.m}", {"n": "1"})
    assert "no read step of this execution set 'm' (set: n)" in str(info.value)
    with pytest.raises(VariableError):
        resolve("${read.Followers}", ctx, rng)
