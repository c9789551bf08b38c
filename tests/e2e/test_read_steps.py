"""Issue 21's reading steps played by the node on virtual phones running ClipShare (real adb
server, hub and node, the demo registry): read_text / read_number off registry regions and
boxes, ${read.NAME} filled at play time, record_metric / record_post / read_messages events,
the post-failed event, and the health signals (a challenge stops the run, a login screen
met mid-run is one relogin signal)."""

from __future__ import annotations

import asyncio

import pytest

from actors.coordinator.hub import Hub
from protocol.messages import RetryPolicy
from sequences.model import (GoToStep, IfScreenStep, SleepStep, LaunchAppStep, ReadMessagesStep,
                             ReadNumberStep, ReadTextStep, RecordMetricStep, RecordPostStep,
                             TapStep, TypeStep, WaitForScreenStep)
from sequences.numbers import parse_count
from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver
from protocol.errors import ValidationError
from registry.load import DEMO_REGISTRY, load_registry
from tests.e2e.test_playback import (events, login_steps, make_run,  # noqa: F401
                                     post_steps, stack)
from tests.e2e.test_screen_identification import vphone

DATA_EVENTS = ("metric_recorded", "post_recorded", "health_signal", "messages_read")
ONCE = RetryPolicy(immediate=0, short=0)


class DataEvents:
    """Issue 21's node events from the hub's status stream, by execution id."""

    def __init__(self, hub: Hub) -> None:
        self.q = hub.subscribe()
        self.seen: list[dict] = []
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            ev = await self.q.get()
            if ev["event"] in DATA_EVENTS:
                self.seen.append({"event": ev["event"], **ev["data"]})

    def of(self, execution_id: str, event: str | None = None) -> list[dict]:
        return [e for e in self.seen if str(e["execution_id"]) == execution_id
                and (event is None or e["event"] == event)]


@pytest.fixture()
async def data(stack):
    d = DataEvents(stack[0])
    yield d
    d.task.cancel()


def logged_in(username: str = "clip_creator") -> list:
    """From a stopped ClipShare to its feed, logged in as ``username``."""
    return [LaunchAppStep(app="clipshare"),
            IfScreenStep(screen="clipshare/login", then=login_steps(username, clear=12)[1:]),
            GoToStep(screen="clipshare/feed", timeout_s=20)]


async def play(hub, events, serial: str, steps: list, **kw) -> tuple[str, dict]:
    run = make_run(steps, **kw)
    answer = await hub.send_run(serial, run)
    assert answer["status"] == "ok", answer
    return run.execution_id, await events.finished(run.execution_id)


def screen_counts(adb_server, serial: str, regions: dict[str, tuple]) -> dict[str, int]:
    """What the phone's views say in each region (``uiautomator dump``: the oracle OCR is
    checked against), parsed as counts."""
    nodes = DeviceDriver(serial, AdbServer(port=adb_server.port)).ui_dump() or []
    out = {}
    for name, (x1, y1, x2, y2) in regions.items():
        for node in nodes:
            cx, cy = (node.bounds[0] + node.bounds[2]) / 2, (node.bounds[1] + node.bounds[3]) / 2
            if x1 <= cx < x2 and y1 <= cy < y2 and node.text:
                try:
                    out[name] = parse_count(node.text, "en")
                    break
                except ValidationError:
                    continue
    return out


def region_boxes(screen: str, names: list[str]) -> dict[str, tuple]:
    app = load_registry(DEMO_REGISTRY).apps["clipshare"]
    return {n: app.states[screen].read_region(n).coordinates for n in names}


async def test_counts_read_recorded_post_and_messages(stack, events, data, farm, adb_server):
    hub, node = stack
    serial = farm.serials[0]
    counts = ["followers", "following", "posts"]
    steps = logged_in() + [
        ReadTextStep(into="title", region="feed.title"),
        ReadTextStep(into="boxed", box=(8, 88, 1072, 232)),           # the same, by box
        TapStep(action="feed.go_to_profile"),
        WaitForScreenStep(screen="clipshare/profile", timeout_s=5),
        *[ReadNumberStep(into=n, region=f"profile.{n}") for n in counts],
        *[RecordMetricStep(metric=n, value=f"${{read.{n}}}") for n in counts],
    ]
    before = screen_counts(adb_server, serial, {})  # (the phone is not on its profile yet)
    eid, done = await play(hub, events, serial, steps, execution_id="ex-101",
                           account="clipshare.clip_creator")
    assert done["status"] == "completed", done
    after = screen_counts(adb_server, serial, region_boxes("profile", counts))
    metrics = {e["metric"]: e for e in data.of(eid, "metric_recorded")}
    assert set(metrics) == set(counts)
    for name, e in metrics.items():
        # Counts move once a minute: the run's read and the dump just after may straddle one.
        assert e["value"] == after[name] or abs(e["value"] - after[name]) <= 10, (name, e, after)
        assert e["post"] is None and e["execution_id"] == "ex-101" and e["serial"] == serial
        assert e["account"] == "clipshare.clip_creator" and e["app"] == "clipshare"
        assert isinstance(e["at"], float)
    seqs = [e["seq"] for e in data.of(eid)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert not data.of(eid, "health_signal")  # its login was its own, not a forced one
    del before

    # A post: the caption typed (with a read variable filled on the node), recorded, then the
    # new post's views read and recorded against "latest"; then a conversation read.
    steps = logged_in() + [
        ReadTextStep(into="title", region="feed.title"),
        *post_steps("Sunset at ${read.title} #beach #sunset")[1:5],
        TypeStep(text="Sunset at ${read.title} #beach #sunset", label="caption"),
        TapStep(action="upload.post"),
        WaitForScreenStep(screen="clipshare/profile", timeout_s=5),
        RecordPostStep(caption_step="caption", media="clip_1.mp4"),
        TapStep(action="profile.open_latest_post"),
        WaitForScreenStep(screen="clipshare/post", timeout_s=5),
        ReadNumberStep(into="views", region="post.views"),
        RecordMetricStep(metric="views", value="${read.views}", post="latest"),
        TapStep(action="post.back"),
        TapStep(action="profile.open_messages"),
        WaitForScreenStep(screen="clipshare/inbox", timeout_s=5),
        TapStep(action="inbox.open_conversation_0"),
        WaitForScreenStep(screen="clipshare/conversation", timeout_s=5),
        ReadMessagesStep(partner_region="conversation.partner", body_region="conversation.body"),
    ]
    eid, done = await play(hub, events, serial, steps, execution_id="ex-102",
                           account="clipshare.clip_creator")
    assert done["status"] == "completed", done
    (post,) = data.of(eid, "post_recorded")
    assert post["status"] == "posted" and post["reason"] is None
    assert post["caption"].startswith("Sunset at ") and "${" not in post["caption"]
    assert post["caption"].endswith("#beach #sunset") and post["hashtags"] == ["#beach", "#sunset"]
    # (the coordinator stores them without '#': tests/unit/test_content_data.py)
    assert post["media"] == "clip_1.mp4" and post["platform_post_id"] is None
    (views,) = data.of(eid, "metric_recorded")
    assert views["metric"] == "views" and views["post"] == "latest" and views["value"] >= 0
    (chat,) = data.of(eid, "messages_read")
    assert chat["partner"] and chat["messages"]
    assert {m["sender"] for m in chat["messages"]} == {"them", "us"}
    assert all(m["text"] for m in chat["messages"])


async def test_failures_health_signals_and_the_failed_post(stack, events, data, farm,
                                                           adb_server):
    hub, node = stack
    serial = farm.serials[1]
    # A number that is none, and a read variable nobody set: the step fails, named.
    eid, done = await play(hub, events, serial, logged_in() + [
        ReadNumberStep(into="n", region="feed.title")], retry=ONCE)
    assert done["status"] == "failed" and done["reason"] == "not_a_number", done
    failed = [e["data"] for e in events.of(eid, "step_finished") if e["data"]["status"] != "ok"]
    assert failed[-1]["reason"] == "not_a_number" and failed[-1]["screenshot_png_b64"]
    eid, done = await play(hub, events, serial, logged_in() + [
        RecordMetricStep(metric="followers", value="${read.nobody}")], retry=ONCE)
    assert done["reason"] == "unknown_read_variable" and "nobody" in done["error"], done

    # Logged out mid-run by something else (here: the run itself, through settings): the
    # login screen is a forced re-login, signalled once; the run goes on.
    eid, done = await play(hub, events, serial, [
        LaunchAppStep(app="clipshare"),
        TapStep(action="feed.go_to_profile"), WaitForScreenStep(screen="clipshare/profile"),
        TapStep(action="profile.open_settings"), WaitForScreenStep(screen="clipshare/settings"),
        TapStep(action="settings.log_out"),
        IfScreenStep(screen="clipshare/feed", then=[TapStep(action="feed.go_to_profile")]),
        SleepStep(seconds=0.2),
        IfScreenStep(screen="clipshare/feed", then=[TapStep(action="feed.go_to_profile")])])
    assert done["status"] == "completed", done
    (signal,) = data.of(eid, "health_signal")
    assert signal["kind"] == "relogin" and signal["screen"] == "clipshare/login"

    # A failure AI recovery may take (the lock held for it) is no failed post: the run may
    # still post once recovered; the coordinator records it if the execution ends failed.
    steps = logged_in() + [
        TapStep(action="feed.go_to_upload"),
        WaitForScreenStep(screen="clipshare/upload", timeout_s=5),
        TypeStep(text="held #x", label="caption"),
        WaitForScreenStep(screen="clipshare/post", timeout_s=1),
        RecordPostStep(caption_step="caption")]
    eid, done = await play(hub, events, serial, steps, execution_id="ex-held",
                           recovery_prompt="get to the post", retry=ONCE)
    assert done["status"] == "failed" and done["reason"] == "timeout", done
    assert done["lock_held"] is True
    await asyncio.sleep(0.2)  # (the data stream's reader has seen what came before the end)
    assert data.of("ex-held", "post_recorded") == []
    assert (await hub.device_action(serial, {"type": "release", "execution_id": "ex-held"},
                                    "ex-held"))["status"] == "ok"

    # A challenge met mid-run stops it at once, screenshot kept, lock released, no AI
    # recovery; the sequence was to record a post: post_recorded "failed".
    steps = logged_in() + [
        TapStep(action="feed.go_to_upload"),
        WaitForScreenStep(screen="clipshare/upload", timeout_s=5),
        TypeStep(text="never posted #x", label="caption"),
        WaitForScreenStep(screen="clipshare/feed", timeout_s=30),
        RecordPostStep(caption_step="caption")]
    run = make_run(steps, execution_id="ex-201", recovery_prompt="get to the feed")
    assert (await hub.send_run(serial, run))["status"] == "ok"
    typed = f"steps[{len(steps) - 3}]"  # the caption's type step
    await events.wait("ex-201", "step_finished", where=lambda d: d["path"] == typed)
    vphone(adb_server, serial, "popup verify_identity")
    done = await events.finished("ex-201")
    assert done["status"] == "failed" and done["reason"] == "challenge_screen", done
    assert done["lock_held"] is False
    assert done["screen"] == "clipshare/interrupt:verify_identity"
    failed = [e["data"] for e in events.of("ex-201", "step_finished")
              if e["data"]["status"] != "ok"]
    assert failed[-1]["reason"] == "challenge_screen" and failed[-1]["screenshot_png_b64"]
    assert failed[-1]["attempts"] == 1
    (signal,) = data.of("ex-201", "health_signal")
    assert signal["kind"] == "challenge" and signal["screen"] == "clipshare/interrupt:verify_identity"
    (post,) = data.of("ex-201", "post_recorded")
    assert post["status"] == "failed" and post["caption"] == "never posted #x"
    assert post["reason"].startswith("challenge_screen")
    # Never cleared: the phone still shows it (no handler tapped it away).
    await asyncio.sleep(1.0)
    out = await hub.run_action(serial, {"type": "screenshot"})
    assert hub.phone_rows[serial]["last_screen"] == "clipshare/interrupt:verify_identity", out
