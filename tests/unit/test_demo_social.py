"""The demo app's social side (issue 21): counts that move with the clock, the formats they
are written in, the post, inbox and conversation screens, the identity challenge a test
brings up, and that the registry's read regions read what the screens show.

Frames come straight from ``PhoneUI`` (no adb). The recognition part renders each new screen
at the registry's size and a smaller phone's, has the matcher name it, and reads every read
region with the real OCR (``registry.ocr.TextReader``, recognition only, as the node does)
and ``sequences.numbers.parse_count``.
"""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from registry.load import DEMO_REGISTRY, load_registry
from registry.match import Matcher
from registry.model import Registry
from registry.ocr import TextReader
from sequences.numbers import parse_count
from virtual import demo_registry as demo
from virtual.social import (CONVERSATION_SHAPE, CONVERSATIONS, account_counts, conversation, format_count,
                            partner, post_counts)
from virtual.ui import KEYCODE_BACK, PhoneUI, load_apps

T0 = demo.FIXED_TIME
NEW_STATES = ["clipshare/profile", "clipshare/post", "clipshare/inbox", "clipshare/conversation"]
CHALLENGE = "clipshare/interrupt:verify_identity"
ACCOUNTS = ["clip_creator", "dance_daily", "chef_mia"]


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def phone(clock: Clock, *, seed: int = 0, size: tuple[int, int] = (1080, 2400),
          random_popups: bool = False) -> PhoneUI:
    return PhoneUI(load_apps(["demo"]), width=size[0], height=size[1], seed=seed, clock=clock,
                   random_popups=random_popups)


def shown(ui: PhoneUI, element_id: str) -> str:
    """The text an element of the foreground screen shows (what uiautomator would dump)."""
    tree = ui.element_tree()
    node = next(n for n in tree["children"] if n["resource_id"].endswith(f":id/{element_id}"))
    return node["text"] or node["content_desc"]


# --------------------------------------------------------------------------- the numbers


@pytest.mark.parametrize(("n", "style", "text"), [
    (987, "plain", "987"), (1234, "plain", "1234"),
    (987, "grouped", "987"), (1234, "grouped", "1,234"), (1234567, "grouped", "1,234,567"),
    (999, "compact", "999"), (1000, "compact", "1K"), (1299, "compact", "1.2K"), (12_345, "compact", "12.3K"),
    (123_456, "compact", "123.4K"), (1_500_000, "compact", "1.5M"), (2_000_000_000, "compact", "2B"),
    (987, "auto", "987"), (9_999, "auto", "9,999"), (10_000, "auto", "10K"), (48_765, "auto", "48.7K"),
    (0, "compact", "0"),
])
def test_counts_are_written_like_the_apps_do(n: int, style: str, text: str) -> None:
    assert format_count(n, style) == text
    # What a read_number step gets back: exact, or truncated to the shown tenth of its unit.
    size = next((u for u in (10**9, 10**6, 10**3) if n >= u), 1)
    shown_exactly = style in ("plain", "grouped") or n < (10_000 if style == "auto" else 1000)
    assert parse_count(text, "en") == (n if shown_exactly else n * 10 // size * size // 10)


def test_a_bad_style_or_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown count style"):
        format_count(5, "roman")
    with pytest.raises(ValueError, match="never negative"):
        format_count(-1, "plain")


def test_followers_grow_a_few_a_minute_and_only_with_the_minute() -> None:
    start = account_counts(0, "clip_creator", 3, T0, T0)
    assert account_counts(0, "clip_creator", 3, T0, T0 + 59).followers == start.followers
    ten = account_counts(0, "clip_creator", 3, T0, T0 + 600)
    assert 2 * 10 <= ten.followers - start.followers <= 5 * 10
    assert ten.following == start.following + 1  # one more every 10 minutes
    # Deterministic: the same seed, account and clock give the same numbers; another seed
    # gives other ones.
    assert account_counts(0, "clip_creator", 3, T0, T0 + 600) == ten
    assert account_counts(1, "clip_creator", 3, T0, T0 + 600) != ten


def test_a_posts_counts_grow_from_the_minute_it_was_posted() -> None:
    assert post_counts(0, "clip_creator", 4, T0, T0) == post_counts(0, "clip_creator", 4, T0, T0 - 600)
    assert post_counts(0, "clip_creator", 4, T0, T0).views == 0
    hour = post_counts(0, "clip_creator", 4, T0, T0 + 3600)
    assert 20 * 60 <= hour.views <= 60 * 60
    assert 0 < hour.comments < hour.likes < hour.views
    assert post_counts(0, "clip_creator", 4, T0, T0 + 7200).views == 2 * hour.views


def test_profile_shows_the_counts_as_they_change() -> None:
    clock = Clock()
    ui = phone(clock)
    demo.go_to(ui, "clipshare/profile")
    counts = ui.describe()["counts"]
    assert shown(ui, "followers") == format_count(counts["followers"], "auto")
    assert shown(ui, "following") == str(counts["following"]) and shown(ui, "posts") == "3"
    before = counts["followers"]
    clock.t += 30 * 60
    after = ui.describe()["counts"]["followers"]
    assert after > before and shown(ui, "followers") == format_count(after, "auto")


def test_the_demo_accounts_show_the_three_formats() -> None:
    texts = []
    for account in ACCOUNTS:
        ui = phone(Clock())
        demo.go_to(ui, "clipshare/profile", account=account)
        texts.append(shown(ui, "followers"))
    plain, grouped, compact = texts[2], texts[0], texts[1]
    assert plain.isdigit() and len(plain) == 3
    assert "," in grouped and grouped.replace(",", "").isdigit()
    assert compact.endswith("K") and "." in compact


def test_posting_adds_a_post_whose_views_grow() -> None:
    clock = Clock()
    ui = phone(clock)
    demo.go_to(ui, "clipshare/post")
    seeded = ui.describe()["counts"]
    assert seeded["views"] > 0  # the seeded latest post went up 3 hours before
    assert shown(ui, "views") == format_count(seeded["views"], "compact")
    assert shown(ui, "likes") == format_count(seeded["likes"], "grouped")
    assert shown(ui, "comments") == str(seeded["comments"])
    ui.key(KEYCODE_BACK)
    demo.tap_element(ui, "nav_upload")
    demo.tap_element(ui, "clip_1")
    demo.tap_element(ui, "caption")
    ui.text("Fresh clip #demo")
    demo.tap_element(ui, "post")
    d = ui.describe()
    assert (d["screen"], d["posts"], d["last_post"]) == ("profile", 4, "Fresh clip #demo")
    assert shown(ui, "posts") == "4" and shown(ui, "latest_post") == "Latest: Fresh clip #demo"
    demo.tap_element(ui, "latest_post")
    assert shown(ui, "caption") == "Fresh clip #demo"
    assert d["counts"]["views"] == 0 and shown(ui, "views") == "0"
    clock.t += 45 * 60
    later = ui.describe()["counts"]
    assert later["views"] > 0 and shown(ui, "views") == format_count(later["views"], "compact")


def test_vphone_counts_freeze_holds_the_numbers_until_live() -> None:
    """`vphone counts freeze`: a test reads the screen after a run without a minute's turn
    in between changing what it compares; `vphone counts live` lets them move again."""
    from virtual.phone import VirtualPhone

    clock = Clock()
    phone_ = VirtualPhone(clock=clock)
    phone_.ui.random_popups = False
    demo.go_to(phone_.ui, "clipshare/profile")
    shell = phone_._new_shell()

    def run(line: str) -> bytes:
        result, _ = asyncio.run(shell.run(line, None))
        assert result.status == 0, result
        return result.stdout

    before = orjson.loads(run("vphone state"))["counts"]
    run("vphone counts freeze")
    clock.t += 600
    assert orjson.loads(run("vphone state"))["counts"] == before
    assert shown(phone_.ui, "followers") == format_count(before["followers"], "auto")
    run("vphone counts live")
    assert orjson.loads(run("vphone state"))["counts"]["followers"] > before["followers"]
    assert asyncio.run(shell.run("vphone counts", None))[0].status != 0


def test_an_account_without_posts_shows_zeros() -> None:
    ui = phone(Clock())
    demo.go_to(ui, "clipshare/post", account="dance_daily")
    assert [shown(ui, e) for e in ("caption", "views", "likes", "comments")] == ["No posts yet", "0", "0", "0"]


# --------------------------------------------------------------------------- messages


def test_conversations_are_seeded_per_account_and_never_repeat_a_line() -> None:
    for account in ACCOUNTS:
        partners = [partner(0, account, chat) for chat in range(CONVERSATIONS)]
        assert len(set(partners)) == CONVERSATIONS
        for chat in range(CONVERSATIONS):
            lines = conversation(0, account, chat)
            assert [s for s, _ in lines] == list(CONVERSATION_SHAPE)
            assert len({t for _, t in lines}) == len(lines)
            assert lines == conversation(0, account, chat)
    assert [conversation(seed, "clip_creator", 0) for seed in range(4)] != [conversation(0, "clip_creator", 0)] * 4


def test_inbox_and_conversation_screens() -> None:
    ui = phone(Clock(), seed=3)
    demo.go_to(ui, "clipshare/inbox")
    assert [shown(ui, f"chat_{i}") for i in range(3)] == [f"@{partner(3, 'clip_creator', i)}" for i in range(3)]
    demo.tap_element(ui, "chat_1")
    assert ui.describe()["screen"] == "conversation"
    assert shown(ui, "partner") == f"@{partner(3, 'clip_creator', 1)}"
    assert [shown(ui, f"message_{i}") for i in range(5)] == [t for _, t in conversation(3, "clip_creator", 1)]
    ui.key(KEYCODE_BACK)
    assert ui.describe()["screen"] == "inbox"
    # The feed's Inbox button leads there too.
    ui.key(KEYCODE_BACK)
    demo.tap_element(ui, "nav_home")
    demo.tap_element(ui, "inbox")
    assert ui.describe()["screen"] == "inbox"


# --------------------------------------------------------------------------- the challenge


def test_the_challenge_never_shows_by_itself() -> None:
    ui = phone(Clock(), random_popups=True, seed=5)
    demo.go_to(ui, "clipshare/feed")
    seen = set()
    for i in range(600):
        ui.swipe(540, 1800, 540, 600) if i % 2 else ui.tap(540, 1950)
        popup = ui.describe()["popup"]
        if popup:
            seen.add(popup)
            ui.force_stop(demo.CLIPSHARE_PACKAGE)
            ui.start_app(demo.CLIPSHARE_PACKAGE)
    assert seen and "verify_identity" not in seen


def test_the_challenge_shows_when_a_test_says_and_nothing_on_it_clears_it() -> None:
    """`vphone popup verify_identity` through the phone's shell (what `adb shell` runs):
    BACK and its one button leave it up; only stopping the app takes it away."""
    from virtual.phone import VirtualPhone

    phone_ = VirtualPhone(clock=Clock())
    phone_.ui.random_popups = False
    demo.go_to(phone_.ui, "clipshare/feed")
    shell = phone_._new_shell()

    def run(line: str) -> bytes:
        result, _ = asyncio.run(shell.run(line, None))
        assert result.status == 0, result
        return result.stdout

    run("vphone popup verify_identity")
    assert orjson.loads(run("vphone state"))["popup"] == "verify_identity"
    phone_.ui.key(KEYCODE_BACK)
    phone_.ui.tap(*phone_.ui.find("Try again"))
    assert phone_.ui.describe()["popup"] == "verify_identity"
    run("am force-stop com.phonefarm.clipshare")
    assert phone_.ui.describe()["popup"] is None
    # popup-after: it comes up after the next input, as in the middle of a run.
    phone_.ui.start_app(demo.CLIPSHARE_PACKAGE)
    run("vphone popup-after 1 verify_identity")
    phone_.ui.tap(540, 1950)
    assert phone_.ui.describe()["popup"] == "verify_identity"


# --------------------------------------------------------------------------- recognition and reading


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(DEMO_REGISTRY)


@pytest.fixture(scope="module")
def matcher(registry: Registry) -> Matcher:
    return Matcher(registry)


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


def read_region(reader: TextReader, registry: Registry, frame: np.ndarray, label: str) -> str:
    """OCR of a state's read region (``clipshare/profile.followers``), scaled to the frame."""
    screen, name = label.rsplit(".", 1)
    app, state = screen.split("/")
    region = registry.apps[app].states[state].read_region(name)
    assert region is not None, label
    sw, sh = registry.apps[app].screen_size
    sx, sy = frame.shape[1] / sw, frame.shape[0] / sh
    x1, y1, x2, y2 = region.coordinates
    crop = np.ascontiguousarray(frame[round(y1 * sy):round(y2 * sy), round(x1 * sx):round(x2 * sx), :3])
    return reader.read(crop)[0]


def test_new_screens_carry_their_read_regions_and_health(registry: Registry) -> None:
    clip = registry.apps["clipshare"]
    assert [r.name for r in clip.states["profile"].read_regions] == ["followers", "following", "posts"]
    assert [r.name for r in clip.states["post"].read_regions] == ["views", "likes", "comments"]
    assert [r.name for r in clip.states["conversation"].read_regions] == ["partner", "body"]
    assert clip.states["login"].health == "login"
    challenge = clip.interrupts["verify_identity"]
    assert challenge.health == "challenge" and challenge.actions == [] and challenge.handler_action() is None
    assert [ref.label() for ref in registry.screens() if registry.screen(ref).health] == [
        CHALLENGE, "clipshare/login"]


@pytest.mark.parametrize("size", [(1080, 2400), (720, 1600)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("account", ACCOUNTS)
def test_new_screens_are_named_and_their_counts_read(matcher: Matcher, registry: Registry, reader: TextReader,
                                                     account: str, size: tuple[int, int]) -> None:
    clock = Clock()
    ui = phone(clock, size=size)
    demo.go_to(ui, "clipshare/profile", account=account)
    if account == "dance_daily":  # give it a post an hour old, so its post screen has counts
        demo.tap_element(ui, "nav_upload")
        demo.tap_element(ui, "caption")
        ui.text("An hour ago")
        demo.tap_element(ui, "post")
        clock.t += 3600
    assert matcher.identify(ui.frame_rgba(), demo.CLIPSHARE_PACKAGE).label == "clipshare/profile"
    counts = ui.describe()["counts"]
    for name in ("followers", "following", "posts"):
        text = read_region(reader, registry, ui.frame_rgba(), f"clipshare/profile.{name}")
        assert text == shown(ui, name)
        exact = counts[name]
        assert parse_count(text, "en") == (exact if name != "followers" or exact < 10_000
                                           else exact // 100 * 100)  # 43.9K: truncated to the hundred
    demo.tap_element(ui, "latest_post")
    assert matcher.identify(ui.frame_rgba(), demo.CLIPSHARE_PACKAGE).label == "clipshare/post"
    for name in ("views", "likes", "comments"):
        text = read_region(reader, registry, ui.frame_rgba(), f"clipshare/post.{name}")
        assert text == shown(ui, name)
        assert parse_count(text, "en") == parse_count(shown(ui, name), "en")
    assert parse_count(shown(ui, "likes"), "en") == counts["likes"]
    for label, element in (("clipshare/inbox", "messages"), ("clipshare/conversation", "chat_0")):
        if label == "clipshare/inbox":
            ui.key(KEYCODE_BACK)
        demo.tap_element(ui, element)
        assert matcher.identify(ui.frame_rgba(), demo.CLIPSHARE_PACKAGE).label == label
    assert read_region(reader, registry, ui.frame_rgba(), "clipshare/conversation.partner") == \
        f"@{partner(0, account, 0)}"


@pytest.mark.parametrize("over", ["clipshare/feed", "clipshare/profile", "clipshare/post", "clipshare/conversation"])
def test_the_challenge_is_named_over_any_screen(matcher: Matcher, over: str) -> None:
    for size in ((1080, 2400), (720, 1600)):
        ui = phone(Clock(), size=size)
        demo.go_to(ui, over)
        assert matcher.identify(ui.frame_rgba(), demo.CLIPSHARE_PACKAGE).label == over
        ui.force_popup("verify_identity")
        assert matcher.identify(ui.frame_rgba(), demo.CLIPSHARE_PACKAGE).label == CHALLENGE
        assert matcher.identify(ui.frame_rgba()).label == CHALLENGE


def test_the_new_templates_are_checked_where_apps_are_loaded() -> None:
    from protocol.errors import ValidationErrors
    from virtual.appmodel import parse_app

    raw = {"package": "com.example.t", "label": "T", "launch_screen": "main", "screens": {"main": {"elements": [
        {"kind": "text", "x": 0, "y": 300, "w": 500, "h": 100, "text": "{message}"},
        {"kind": "text", "x": 0, "y": 400, "w": 500, "h": 100, "text": "{partner:x}"},
        {"kind": "text", "x": 0, "y": 500, "w": 500, "h": 100, "text": "{followers:1}"},
        {"kind": "text", "x": 0, "y": 600, "w": 500, "h": 100, "text": "{partner} {partner:2} {message:4} {post_views}"},
    ]}}}
    with pytest.raises(ValidationErrors) as err:
        parse_app(raw, "t.json")
    assert [str(p) for p in err.value.problems] == [
        "t.json: screens.main.elements[0].text: template {message:N} needs the message's index N",
        "t.json: screens.main.elements[1].text: template {partner:N} takes a conversation index, got 'x'",
        "t.json: screens.main.elements[2].text: template {followers} takes no argument",
    ]
