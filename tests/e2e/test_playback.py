"""Sequence playback on the node: hub + node (demo registry) + phone actors over a real adb
server and virtual phones running ClipShare. A RunSequence goes out through the hub; the node
plays it (lock, app, account, steps with screen checks, popups cleared, retry tiers, an
unplugged phone waited for) and reports execution events."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import orjson
import pytest

from actors.coordinator.hub import Hub
from actors.node.playback import PlaybackOptions
from protocol.messages import CancelRun, Command, RunSequence
from sequences.model import (ExpectScreenStep, IfScreenStep, KeyStep, LaunchAppStep, RetryPolicy,
                             SleepStep, TapStep, TypeStep, WaitForScreenStep)
from tests.e2e.test_farm_inprocess import phone_log, shutdown, start_farm, wait_for
from tests.e2e.test_screen_identification import vphone

CLIPSHARE = "com.phonefarm.clipshare"
FAST = RetryPolicy(immediate=2, immediate_delay_s=0.1, short=1, short_delay_s=0.3)
PASSWORDS = {"clip_creator": "hunter2", "dance_daily": "pass123", "chef_mia": "tasty42"}


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path)
    node.playback_options = PlaybackOptions(settle_s=0.05, poll_s=0.2, unknown_confirm_s=0.3)
    for serial in farm.serials:  # every test starts from a stopped ClipShare
        await hub.run_action(serial, {"type": "stop_app", "package": CLIPSHARE})
    yield hub, node
    await shutdown(node, hub, store)


def login_steps(username: str, clear: int = 0) -> list:
    """ClipShare's login; ``clear``: DELs first (the username field keeps the last one
    typed after a log out)."""
    return [WaitForScreenStep(screen="clipshare/login", timeout_s=10),
            TapStep(action="login.username_field")] + [KeyStep(key="KEYCODE_DEL")] * clear + [
            TypeStep(text=username),
            TapStep(action="login.password_field"), TypeStep(text=PASSWORDS[username]),
            TapStep(action="login.log_in"),
            WaitForScreenStep(screen="clipshare/feed", timeout_s=10)]


def switch_steps(username: str) -> list:
    """ClipShare's switch-account steps (the library's are another issue's): from the feed
    through Profile > Switch account > Log in to another account; logged out: the login."""
    to_login = [TapStep(action="feed.go_to_profile"),
                WaitForScreenStep(screen="clipshare/profile", timeout_s=5),
                TapStep(action="profile.switch_account"),
                WaitForScreenStep(screen="clipshare/account_switcher", timeout_s=5),
                TapStep(action="account_switcher.add_account")]
    return [IfScreenStep(screen="clipshare/feed", then=to_login)] + login_steps(username, 12)


def post_steps(caption: str) -> list:
    return [WaitForScreenStep(screen="clipshare/feed", timeout_s=10),
            TapStep(action="feed.go_to_upload"),
            WaitForScreenStep(screen="clipshare/upload", timeout_s=5),
            TapStep(action="upload.pick_clip_1"),
            TapStep(action="upload.caption_field"), TypeStep(text=caption),
            TapStep(action="upload.post"),
            WaitForScreenStep(screen="clipshare/profile", timeout_s=5)]


def make_run(steps: list, account: str | None = None, **kw) -> RunSequence:
    username = account.split(".", 1)[1] if account else None
    return RunSequence(execution_id=kw.pop("execution_id", uuid.uuid4().hex),
                       run_id=kw.pop("run_id", "run-" + uuid.uuid4().hex[:8]),
                       sequence=kw.pop("sequence", "test"), steps=steps, app="clipshare",
                       package=CLIPSHARE, account=account, account_username=username,
                       switch_steps=switch_steps(username) if username else [],
                       retry=kw.pop("retry", FAST), **kw)


class Events:
    """Execution events from the hub's status stream, by execution id."""

    def __init__(self, hub: Hub) -> None:
        self.q = hub.subscribe()
        self.by_execution: dict[str, list[dict]] = {}
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            ev = await self.q.get()
            eid = ev["data"].get("execution_id") if isinstance(ev["data"], dict) else None
            if eid and ev["event"].startswith(("execution_", "step_")):
                self.by_execution.setdefault(eid, []).append(ev)

    def of(self, eid: str, name: str | None = None) -> list[dict]:
        return [e for e in self.by_execution.get(eid, []) if name is None or e["event"] == name]

    async def wait(self, eid: str, name: str, timeout: float = 60.0, where=lambda d: True) -> dict:
        found = await wait_for(lambda: [e for e in self.of(eid, name) if where(e["data"])],
                               timeout=timeout, what=f"{name} of {eid}")
        return found[0]["data"]

    async def finished(self, eid: str, timeout: float = 90.0) -> dict:
        return await self.wait(eid, "execution_finished", timeout)

    def close(self) -> None:
        self.task.cancel()


@pytest.fixture()
async def events(stack):
    ev = Events(stack[0])
    yield ev
    ev.close()


def failed_steps(events: Events, eid: str) -> list[dict]:
    return [e["data"] for e in events.of(eid, "step_finished") if e["data"]["status"] != "ok"]


async def test_login_then_post_on_four_phones_each_with_its_caption(stack, events, farm,
                                                                    adb_server):
    hub, node = stack
    logged_out = [IfScreenStep(screen="clipshare/feed", then=[
        TapStep(action="feed.go_to_profile"), WaitForScreenStep(screen="clipshare/profile"),
        TapStep(action="profile.open_settings"), WaitForScreenStep(screen="clipshare/settings"),
        TapStep(action="settings.log_out")])]
    runs = {}
    for n, serial in enumerate(farm.serials):
        vphone(adb_server, serial, "log --clear")
        caption = f"Caption {n} for {serial} #phonefarm"
        steps = [LaunchAppStep(app="clipshare")] + logged_out + login_steps("clip_creator") \
            + post_steps(caption)
        runs[serial] = (make_run(steps, sequence="login_then_post"), caption)
    t0 = time.monotonic()
    answers = await asyncio.gather(*(hub.send_run(s, r) for s, (r, _) in runs.items()))
    assert [a["status"] for a in answers] == ["ok"] * 4 and all(a["started"] for a in answers)
    done = await asyncio.gather(*(events.finished(r.execution_id) for r, _ in runs.values()))
    elapsed = time.monotonic() - t0
    for (serial, (run, caption)), fin in zip(runs.items(), done):
        assert fin["status"] == "completed", (serial, fin, failed_steps(events, run.execution_id))
        assert fin["last_ok_step"] == len(run.steps) - 1 and fin["failed_step"] is None
        started = events.of(run.execution_id, "execution_started")[0]["data"]
        assert started["sequence"] == "login_then_post" and started["run_id"] == run.run_id
        steps = [e["data"] for e in events.of(run.execution_id, "step_finished")]
        top = [s for s in steps if s["path"].startswith("steps[") and "." not in s["path"]]
        assert [s["index"] for s in top] == list(range(len(run.steps)))
        assert all(s["status"] == "ok" for s in steps)
        assert top[-1]["screen"] == "clipshare/profile"
        texts = [e["text"] for e in phone_log(adb_server, serial) if e["kind"] == "text"]
        assert texts == ["clip_creator", "hunter2", caption]
        state = orjson.loads(vphone(adb_server, serial, "state"))
        assert state["account"] == "clip_creator" and state["last_post"] == caption
        assert state["screen"] == "profile"
    await wait_for(lambda: all(node.directory.record(s).lock_holder is None
                               for s in farm.serials), what="locks released")
    print(f"4 phones login+post in {elapsed:.1f}s")


async def test_popup_forced_mid_run_is_dismissed_and_run_completes(stack, events, farm,
                                                                   adb_server):
    hub, _ = stack
    serial = farm.serials[1]
    steps = [SleepStep(seconds=1.0)] + post_steps("Popup survivor")
    run = make_run(steps, account="clipshare.clip_creator")
    assert (await hub.send_run(serial, run))["status"] == "ok"
    await events.wait(run.execution_id, "step_started", where=lambda d: d["path"] == "steps[0]")
    vphone(adb_server, serial, "popup update_available")
    fin = await events.finished(run.execution_id)
    assert fin["status"] == "completed", failed_steps(events, run.execution_id)
    assert orjson.loads(vphone(adb_server, serial, "state"))["last_post"] == "Popup survivor"
    kinds = [e["kind"] for e in phone_log(adb_server, serial)]
    assert "popup" in kinds


async def test_unplugged_mid_run_pauses_then_completes(stack, events, farm, adb_server):
    hub, node = stack
    serial = farm.serials[2]
    # The case: a cable pulled for 15 s, longer than the immediate tier, under the
    # default retry policy. The pulled cable is seen as "gone" (the watcher pauses the phone,
    # or adb fails with DeviceGone), which goes to the device check at once; the tiers
    # start over after it.
    steps = [SleepStep(seconds=0.5)] + post_steps("Back from the unplug")
    run = make_run(steps, account="clipshare.clip_creator", retry=RetryPolicy())
    assert (await hub.send_run(serial, run))["status"] == "ok"
    await events.wait(run.execution_id, "step_started", where=lambda d: d["path"] == "steps[0]")
    vphone(adb_server, serial, "unplug 15")
    paused = await events.wait(run.execution_id, "execution_paused", timeout=20)
    assert paused["reason"]
    assert node.directory.record(serial).lock_holder == run.execution_id  # kept meanwhile
    await events.wait(run.execution_id, "execution_resumed", timeout=45)
    fin = await events.finished(run.execution_id)
    assert fin["status"] == "completed", failed_steps(events, run.execution_id)
    names = [e["event"] for e in events.of(run.execution_id)]
    assert names.index("execution_paused") < names.index("execution_resumed") \
        < names.index("execution_finished")
    state = orjson.loads(vphone(adb_server, serial, "state"))
    assert state["last_post"] == "Back from the unplug"


async def test_wrong_account_is_switched_first(stack, events, farm, adb_server):
    hub, node = stack
    serial = farm.serials[3]
    first = make_run([], account="clipshare.dance_daily")
    await hub.send_run(serial, first)
    assert (await events.finished(first.execution_id))["status"] == "completed", \
        failed_steps(events, first.execution_id)
    assert node.directory.record(serial).active_accounts["clipshare"] == "clipshare.dance_daily"
    assert orjson.loads(vphone(adb_server, serial, "state"))["account"] == "dance_daily"

    run = make_run(post_steps("Posted as the right one"), account="clipshare.clip_creator")
    await hub.send_run(serial, run)
    fin = await events.finished(run.execution_id)
    assert fin["status"] == "completed", failed_steps(events, run.execution_id)
    paths = [e["data"]["path"] for e in events.of(run.execution_id, "step_finished")]
    first_step = paths.index("steps[0]")
    assert any(p.startswith("switch[") for p in paths[:first_step])
    assert not any(p.startswith("switch[") for p in paths[first_step:])
    state = orjson.loads(vphone(adb_server, serial, "state"))
    assert state["account"] == "clip_creator" and state["last_post"] == "Posted as the right one"
    assert node.directory.record(serial).active_accounts["clipshare"] == "clipshare.clip_creator"
    await wait_for(lambda: hub.phone_rows[serial]["active_account"].get("clipshare")
                   == "clipshare.clip_creator", what="account in the hub's directory")


async def test_step_that_never_succeeds_fails_with_reason_and_screenshot(stack, events, farm):
    hub, node = stack
    serial = farm.serials[0]
    steps = [ExpectScreenStep(screen="clipshare/settings"), TapStep(x=10, y=10)]
    run = make_run(steps, account="clipshare.clip_creator")
    await hub.send_run(serial, run)
    fin = await events.finished(run.execution_id)
    assert fin["status"] == "failed" and fin["reason"] == "wrong_screen"
    assert fin["failed_step"] == "steps[0]" and fin["last_ok_step"] == -1
    assert "clipshare/settings" in fin["error"]
    failed = failed_steps(events, run.execution_id)
    assert len(failed) == 1 and failed[0]["path"] == "steps[0]"
    assert failed[0]["attempts"] == 1 + FAST.immediate + FAST.short
    assert failed[0]["screen"] == "clipshare/feed"
    assert base64.b64decode(failed[0]["screenshot_png_b64"]).startswith(b"\x89PNG")
    assert not events.of(run.execution_id, "step_started")[-1]["data"]["path"] == "steps[1]"
    await wait_for(lambda: node.directory.record(serial).lock_holder is None, what="lock freed")


async def test_a_tap_the_phone_does_not_answer_in_time_is_not_sent_again(stack, events, farm,
                                                                         adb_server):
    """A hung phone plays a queued tap late: a tap sent but unanswered within the adb
    timeout is never sent again by the step's retries (they only look at the screen)."""
    hub, node = stack
    serial = farm.serials[2]
    vphone(adb_server, serial, "log --clear")
    run = make_run([SleepStep(seconds=1.5), TapStep(x=111, y=222)])
    await hub.send_run(serial, run)
    await events.wait(run.execution_id, "step_started", where=lambda d: d["path"] == "steps[0]")
    timeout = node.adb.timeout
    node.adb.timeout = 1.0   # the node's every adb call; the phone answers 1.5 s late
    vphone(adb_server, serial, "slow 1500")
    try:
        fin = await events.finished(run.execution_id)
    finally:
        node.adb.timeout = timeout
        vphone(adb_server, serial, "slow 0")
    assert fin["status"] == "failed" and fin["failed_step"] == "steps[1]", fin
    await asyncio.sleep(2.0)  # whatever the phone still had queued has played by now
    taps = [(e["x"], e["y"]) for e in phone_log(adb_server, serial) if e["kind"] == "tap"]
    assert taps.count((111, 222)) == 1, taps


async def test_a_start_delivered_twice_at_once_plays_the_steps_once(stack, events, farm,
                                                                     adb_server):
    """A re-sent start and the coordinator's resume of one execution arrive together: the
    node plays it once (the same execution takes its own lock again, so only a mark of the
    start in progress tells the second delivery apart)."""
    hub, node = stack
    serial = farm.serials[3]
    vphone(adb_server, serial, "log --clear")
    run = make_run([TapStep(x=131, y=313), SleepStep(seconds=0.3), TapStep(x=132, y=313)])
    answers = await asyncio.gather(*(hub.send_run(serial, run) for _ in range(3)))
    assert [a["status"] for a in answers] == ["ok"] * 3, answers
    fin = await events.finished(run.execution_id)
    assert fin["status"] == "completed", fin
    await asyncio.sleep(0.5)
    taps = [(e["x"], e["y"]) for e in phone_log(adb_server, serial) if e["kind"] == "tap"]
    assert taps == [(131, 313), (132, 313)], taps
    assert len(events.of(run.execution_id, "execution_started")) == 1


async def test_second_run_on_a_locked_phone_is_refused_and_cancel_frees_it(stack, events,
                                                                           farm):
    hub, node = stack
    serial = farm.serials[1]
    run = make_run([SleepStep(seconds=30)])
    assert (await hub.send_run(serial, run))["status"] == "ok"
    await events.wait(run.execution_id, "step_started", where=lambda d: d["path"] == "steps[0]")
    again = await hub.send_run(serial, run)  # a re-sent start: idempotent
    assert again["status"] == "ok" and again.get("already_running")
    other = await hub.send_run(serial, make_run([SleepStep(seconds=0.1)]))
    assert other["status"] == "locked" and other["holder"] == run.execution_id
    result = await hub.link.send_command(
        "rack-a", Command(command_id=uuid.uuid4().hex, serial=serial,
                          action=CancelRun(execution_id=run.execution_id)))
    assert result.status == "ok" and result.data["cancelled"]
    fin = await events.finished(run.execution_id, timeout=10)
    assert fin["status"] == "cancelled"
    await wait_for(lambda: node.directory.record(serial).lock_holder is None, what="lock freed")
    assert not node.playbacks


def library_steps(name: str, username: str) -> list:
    """A library sequence's steps with the account's variables filled in (as the
    coordinator's run manager does)."""
    from sequences.load import load_named, map_texts

    values = {"${account.username}": username, "${account.password}": PASSWORDS[username]}
    return map_texts(load_named(name).steps, lambda text, path: values.get(text, text))


async def to_login_with(hub, events, serial: str, username: str) -> None:
    """ClipShare on its login form, ``username`` left in the username field: logged in as
    it, then Switch account > Log in to another account (which logs out)."""
    first = make_run([], account=f"clipshare.{username}")
    await hub.send_run(serial, first)
    fin = await events.finished(first.execution_id)
    assert fin["status"] == "completed", failed_steps(events, first.execution_id)
    away = make_run([TapStep(action="feed.go_to_profile"),
                     WaitForScreenStep(screen="clipshare/profile", timeout_s=5),
                     TapStep(action="profile.switch_account"),
                     WaitForScreenStep(screen="clipshare/account_switcher", timeout_s=5),
                     TapStep(action="account_switcher.add_account"),
                     WaitForScreenStep(screen="clipshare/login", timeout_s=5)])
    await hub.send_run(serial, away)
    fin = await events.finished(away.execution_id)
    assert fin["status"] == "completed", failed_steps(events, away.execution_id)


@pytest.fixture()
def no_random_popups(farm, adb_server):
    """Only the popups a test schedules: the input log's order is the test's to know."""
    for serial in farm.serials:
        vphone(adb_server, serial, "random-popups off")
    yield
    for serial in farm.serials:
        vphone(adb_server, serial, "random-popups on")
        vphone(adb_server, serial, "uiautomator on")


async def test_a_popup_inside_the_clear_does_not_leave_the_old_name_in_the_field(
        stack, events, farm, adb_server, no_random_popups):
    """The issue's phone: a rate_us dialog came up a few DELs into clearing `dance_daily`,
    took the focus and the rest of the DELs; after it was dismissed `clip_creator` was typed
    after what was left (`dance_dclip_creator`), the login failed and only the wait for the
    feed was retried. Now the field is read back and cleared again until it is empty."""
    hub, node = stack
    serial = farm.serials[0]
    await to_login_with(hub, events, serial, "dance_daily")
    assert orjson.loads(vphone(adb_server, serial, "state"))["fields"]["username"] == "dance_daily"
    vphone(adb_server, serial, "log --clear")
    vphone(adb_server, serial, "popup-after 3 rate_us")
    run = make_run(library_steps("clipshare/switch_account", "clip_creator"),
                   sequence="clipshare/switch_account")
    await hub.send_run(serial, run)
    fin = await events.finished(run.execution_id)
    state = orjson.loads(vphone(adb_server, serial, "state"))
    assert state["fields"]["username"] == "clip_creator", (state, fin)
    assert fin["status"] == "completed", failed_steps(events, run.execution_id)
    assert state["account"] == "clip_creator" and state["screen"] == "feed"
    log = phone_log(adb_server, serial)
    popup = next(i for i, e in enumerate(log) if e["kind"] == "popup")
    assert log[popup] == {**log[popup], "name": "rate_us", "scheduled": True}
    not_now = next(i for i, e in enumerate(log) if i > popup and e["kind"] == "tap")
    assert (log[not_now]["x"], log[not_now]["y"]) == (758, 1460)
    dels_after = [e for e in log[not_now:] if e.get("code") == 67]
    assert len(dels_after) >= len("dance_dail"), "no second DEL burst after the dialog"
    texts = [e["text"] for e in log if e["kind"] == "text"]
    assert texts == ["clip_creator", "hunter2"]


async def test_on_a_phone_without_uiautomator_the_field_is_read_by_ocr(
        stack, events, farm, adb_server, no_random_popups):
    """The same popup inside the clear on a phone that cannot dump its views: the field
    box is read on the frame (a dialog in front reads as no field), and the run ends with
    the field holding only the new name."""
    hub, node = stack
    serial = farm.serials[2]
    await to_login_with(hub, events, serial, "dance_daily")
    vphone(adb_server, serial, "uiautomator off")
    vphone(adb_server, serial, "log --clear")
    vphone(adb_server, serial, "popup-after 3 rate_us")
    run = make_run(library_steps("clipshare/login", "clip_creator"), sequence="clipshare/login")
    await hub.send_run(serial, run)
    fin = await events.finished(run.execution_id)
    state = orjson.loads(vphone(adb_server, serial, "state"))
    assert state["fields"]["username"] == "clip_creator", (state, fin)
    assert fin["status"] == "completed", failed_steps(events, run.execution_id)
    assert state["account"] == "clip_creator"
    assert node.directory._drivers[serial].ui_dump_supported is False  # the OCR path it was
    log = phone_log(adb_server, serial)
    assert [e["name"] for e in log if e["kind"] == "popup"] == ["rate_us"]
    assert [e["text"] for e in log if e["kind"] == "text"] == ["clip_creator", "hunter2"]
