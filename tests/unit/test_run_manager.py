"""actors.coordinator.runs.RunManager against a real FarmDB and a stub hub: per-phone resolved texts and
switch steps in the RunSequence sent, locked phones, node events into execution records, the
failed step's screenshot on disk and out of the event data."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3

import pytest

from actors.store.farm_db import FarmDB, seed_demo
from actors.coordinator.runs import RunManager, UnknownSequence, run_status
from protocol.errors import ScopeError, ValidationErrors
from protocol.messages import RunSequence
from actors.store.execution_history import ExecutionQuery
from sequences.load import LIBRARY, walk_steps

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

SERIALS = ["s1", "s2", "s3"]


class StubHub:
    def __init__(self) -> None:
        self.sent: list[tuple[str, RunSequence]] = []
        self.answers: dict[str, dict] = {}

    def phones(self) -> list[dict]:
        return [{"serial": s, "node": "n1", "tags": [f"phone{i + 1}"]} for i, s in enumerate(SERIALS)]

    async def send_run(self, serial: str, run: RunSequence) -> dict:
        self.sent.append((serial, run))
        return self.answers.get(serial, {"status": "ok", "error": None, "started": True})


@pytest.fixture
async def manager(tmp_path):
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    await seed_demo(db, SERIALS)
    hub = StubHub()
    yield RunManager(hub, db, tmp_path / "data"), hub
    await db.close()


def _texts(run: RunSequence, steps=None) -> list[str]:
    return [s.text for _, s in walk_steps(run.steps if steps is None else steps)
            if s.__struct_config__.tag == "type"]


async def test_start_resolves_texts_per_phone_and_adds_switch_steps(manager) -> None:
    runs, hub = manager
    hub.answers["s3"] = {"status": "locked", "error": "phone s3: locked by execution ex-9"}
    started = await runs.start("clipshare/post_clip", "phone:all")
    # Sent concurrently: the order is the database's (PostgreSQL reads in parallel)
    assert sorted(s for s, _ in hub.sent) == SERIALS
    assert {s: e["status"] for s, e in started["executions"].items()} == {
        "s1": "pending", "s2": "pending", "s3": "locked"}
    captions = []
    for serial, run in hub.sent:
        assert run.account == "clipshare.account1" and run.account_username == "clip_creator"
        assert run.package == "com.phonefarm.clipshare" and run.run_id == started["run_id"]
        (caption,) = _texts(run)
        assert "${" not in caption and "{" not in caption and "@clip_creator" in caption
        captions.append(caption)
        switch_texts = _texts(run, run.switch_steps)
        assert "clip_creator" in switch_texts and "hunter2" in switch_texts
    assert len(set(captions)) == 3  # each phone's profile name makes its caption its own
    locked = await runs.get_execution(started["executions"]["s3"]["execution_id"])
    assert locked["status"] == "locked" and "locked" in locked["error"]
    run = await runs.get_run(started["run_id"])
    assert run["status"] == "running" and run["executions"][0]["account"] == "clipshare.account1"


async def test_account_scope_and_request_variables(manager) -> None:
    runs, hub = manager
    seq = {"name": "hello", "app": "clipshare", "steps": [
        {"type": "type", "text": "${custom.greeting} from ${account.username}"}]}
    started = await runs.start(seq, "account:clipshare.account2@phone2", {"greeting": "hi"})
    assert list(started["executions"]) == ["s2"]
    (_, run) = hub.sent[0]
    assert _texts(run) == ["hi from dance_daily"] and run.account == "clipshare.account2"
    assert run.sequence == "inline/hello"


async def test_group_scopes_and_group_variables(manager) -> None:
    runs, hub = manager
    book = await runs.db.group_book()
    book.create("creators", "account")
    book.add_member("creators", "clipshare.account3@s1")
    book.add_member("creators", "clipshare.account1@s2")
    await runs.db.save_group_book(book)
    seq = {"name": "hello", "app": "clipshare", "steps": [
        {"type": "type", "text": "${account.username} of ${group.creators.count}"}]}
    started = await runs.start(seq, "group:creators")
    assert sorted(started["executions"]) == ["s1", "s2"]
    texts = {serial: _texts(run) for serial, run in hub.sent}
    assert texts == {"s1": ["chef_mia of 2"], "s2": ["clip_creator of 2"]}


async def test_bad_input_raises_before_anything_starts(manager) -> None:
    runs, hub = manager
    with pytest.raises(UnknownSequence):
        await runs.start("clipshare/nope", "phone:all")
    with pytest.raises(ScopeError):
        await runs.start("clipshare/login", "phone:zzz")
    with pytest.raises(ValidationErrors):
        await runs.start({"name": "x", "steps": [{"type": "tap"}]}, "phone:all")
    assert hub.sent == []


async def test_unresolvable_text_fails_that_execution(manager) -> None:
    runs, hub = manager
    started = await runs.start({"name": "x", "steps": [{"type": "type", "text": "${custom.nope}"}]},
                               "phone:s1")
    out = started["executions"]["s1"]
    assert out["status"] == "failed" and "nope" in out["error"] and hub.sent == []


async def test_events_update_records_and_keep_the_screenshot_out_of_the_event(manager, tmp_path) -> None:
    runs, hub = manager
    started = await runs.start("clipshare/login", "phone:s1")
    ex = started["executions"]["s1"]["execution_id"]
    base = {"execution_id": ex, "run_id": started["run_id"]}

    async def event(name: str, **data) -> dict:
        data = await runs.take_screenshot(name, {**base, **data})
        await runs.apply(name, "s1", data)
        return data

    await event("execution_started", sequence="clipshare/login", account=None)
    await event("step_started", index=0, path="steps[0]", type="launch_app")
    await event("step_finished", index=0, path="steps[0]", type="launch_app", status="ok",
                screen="clipshare/feed", attempts=1, error=None, reason=None)
    await event("step_started", index=2, path="steps[2]", type="wait_for_screen")
    png = b"\x89PNG\r\n\x1a\nfake"
    stored = await event("step_finished", index=2, path="steps[2]", type="wait_for_screen",
                         status="failed", screen="clipshare/login", attempts=3, error="timeout",
                         reason="screen", screenshot_png_b64=base64.b64encode(png).decode())
    assert "screenshot_png_b64" not in stored
    assert (tmp_path / "data" / "executions" / ex / "steps[2].png").read_bytes() == png
    await event("execution_finished", status="failed", error="timeout", reason="screen",
                failed_step="steps[2]", last_ok_step="steps[0]")
    view = await runs.get_execution(ex)
    assert view["status"] == "failed" and view["error"] == "timeout" and view["reason"] == "screen"
    assert [(s["path"], s["status"], s["screen"]) for s in view["steps"]] == [
        ("steps[0]", "success", "clipshare/feed"), ("steps[2]", "failed", "clipshare/login")]
    assert view["steps"][1]["screenshot"] == f"/api/executions/{ex}/steps/steps[2]/screenshot"
    assert await runs.step_screenshot(ex, "steps[2]") == png
    assert (await runs.get_run(started["run_id"]))["status"] == "failed"


async def test_a_batch_of_events_applies_in_order_and_skips_only_what_it_cannot_record(manager) -> None:
    """One writer job for a node's burst: a step started and finished in the same batch is
    one row, and an event for an execution this coordinator never made is skipped (logged)
    while the rest of the batch is recorded."""
    runs, _ = manager
    started = await runs.start("clipshare/login", "phone:s1,s2")
    ex1, ex2 = (started["executions"][s]["execution_id"] for s in ("s1", "s2"))
    step = {"index": 0, "path": "steps[0]", "type": "launch_app"}
    batch = [
        ("execution_started", "s1", {"execution_id": ex1}),
        ("step_started", "s1", {"execution_id": ex1, **step}),
        ("step_started", "s9", {"execution_id": "ex-nobody-made", **step}),
        ("execution_started", "s2", {"execution_id": ex2}),
        ("step_finished", "s1", {"execution_id": ex1, **step, "status": "ok", "screen": "clipshare/feed"}),
        ("execution_finished", "s1", {"execution_id": ex1, "status": "completed"}),
    ]
    await runs.apply_many(batch)
    one, two = await runs.get_execution(ex1), await runs.get_execution(ex2)
    assert one["status"] == "completed" and two["status"] == "running"
    assert [(s["path"], s["status"], s["screen"]) for s in one["steps"]] == [
        ("steps[0]", "success", "clipshare/feed")]


async def test_a_paused_then_completed_execution_keeps_no_pause_reason(manager) -> None:
    runs, _ = manager
    started = await runs.start("clipshare/login", "phone:s1")
    ex = started["executions"]["s1"]["execution_id"]
    await runs.apply_many([
        ("execution_started", "s1", {"execution_id": ex}),
        ("execution_paused", "s1", {"execution_id": ex, "reason": "phone s1 is paused"}),
    ])
    assert (await runs.get_execution(ex))["reason"] == "phone s1 is paused"
    await runs.apply_many([
        ("execution_resumed", "s1", {"execution_id": ex}),
        ("execution_finished", "s1", {"execution_id": ex, "status": "completed"}),
    ])
    view = await runs.get_execution(ex)
    assert view["status"] == "completed" and view["reason"] is None, view


def test_run_status() -> None:
    assert run_status(["completed", "running"]) == "running"
    assert run_status(["completed", "completed"]) == "completed"
    assert run_status(["completed", "locked"]) == "failed"


async def test_screenshot_found_after_retention_changed_its_suffix(manager, tmp_path) -> None:
    from actors.coordinator.runs import RunNotFound, screenshot_type

    runs, _ = manager
    started = await runs.start("clipshare/login", "phone:s1")
    ex = started["executions"]["s1"]["execution_id"]
    base = {"execution_id": ex, "run_id": started["run_id"]}
    await runs.apply("execution_started", "s1", await runs.take_screenshot(
        "execution_started", {**base, "sequence": "clipshare/login", "account": None}))
    await runs.apply("step_started", "s1", {**base, "index": 2, "path": "steps[2]",
                                            "type": "wait_for_screen"})
    data = await runs.take_screenshot("step_finished", {
        **base, "index": 2, "path": "steps[2]", "type": "wait_for_screen", "status": "failed",
        "screen": None, "attempts": 1, "error": "timeout", "reason": "screen",
        "screenshot_png_b64": base64.b64encode(b"\x89PNGfake").decode()})
    await runs.apply("step_finished", "s1", data)
    png = tmp_path / "data" / "executions" / ex / "steps[2].png"
    found = await runs.step_screenshot_file(ex, "steps[2]")
    assert found == png and screenshot_type(found) == "image/png"
    # The row still names the .png; the file on disk is now the compressed copy.
    for suffix, content_type in ((".jpg", "image/jpeg"), (".webp", "image/webp")):
        current = await runs.step_screenshot_file(ex, "steps[2]")
        current.rename(png.with_suffix(suffix))
        found = await runs.step_screenshot_file(ex, "steps[2]")
        assert found == png.with_suffix(suffix) and screenshot_type(found) == content_type
        assert await runs.step_screenshot(ex, "steps[2]") == b"\x89PNGfake"
    png.with_suffix(".webp").unlink()
    with pytest.raises(RunNotFound, match="gone"):
        await runs.step_screenshot_file(ex, "steps[2]")


def test_recorded_sequence_is_parsed_once_per_file_version(tmp_path) -> None:
    import json
    import os

    recorded = tmp_path / "recorded"
    (recorded / "mine").mkdir(parents=True)
    path = recorded / "mine" / "taps.json"
    path.write_text(json.dumps({"name": "taps", "steps": [{"type": "sleep", "seconds": 1}]}))
    runs = RunManager(None, None, tmp_path / "data", recorded=recorded)
    first = runs.sequence("mine/taps")[1]
    assert runs.sequence("mine/taps")[1] is first  # cached
    path.write_text(json.dumps({"name": "taps", "steps": [{"type": "sleep", "seconds": 2},
                                                          {"type": "sleep", "seconds": 3}]}))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert len(runs.sequence("mine/taps")[1].steps) == 2  # the file changed: parsed again
    path.unlink()
    assert runs.sequence("clipshare/post_clip")[0] == "clipshare/post_clip"  # the library
    with pytest.raises(UnknownSequence):
        runs.sequence("mine/taps")


async def test_resume_fails_an_execution_whose_ai_recovery_a_restart_interrupted(manager) -> None:
    runs, hub = manager
    released: list[tuple[str, dict]] = []

    async def device_action(serial: str, action: dict, execution_id=None) -> dict:
        released.append((serial, action))
        return {"status": "ok", "released": True}

    hub.device_action = device_action
    started = await runs.start("clipshare/post_clip", "phone:s1")
    execution_id = started["executions"]["s1"]["execution_id"]
    await runs.apply("execution_finished", "s1", {
        "execution_id": execution_id, "status": "failed", "reason": "unknown_screen",
        "error": "unknown screen", "failed_step": "steps[3]", "recovering": True})
    assert (await runs.get_execution(execution_id))["status"] == "running"
    # While a recovery of this coordinator works on it, a reconnecting node changes nothing.
    hub.recovery = type("R", (), {"active": {execution_id}})()
    assert await runs.resume(["s1"], {"s1": execution_id}) == []
    assert (await runs.get_execution(execution_id))["status"] == "running" and released == []
    # After a restart nobody recovers it: it fails, and the kept lock is given back.
    hub.recovery.active = set()
    sent_before = len(hub.sent)
    assert await runs.resume(["s1"], {"s1": execution_id}) == []
    view = await runs.get_execution(execution_id)
    assert view["status"] == "failed" and view["reason"] == "recovery_interrupted"
    assert "unknown screen" in view["error"] and len(hub.sent) == sent_before
    assert released == [("s1", {"type": "release", "execution_id": execution_id})]
    # A replayed 'recovering' event does not reopen it.
    await runs.apply("execution_finished", "s1", {
        "execution_id": execution_id, "status": "failed", "reason": "unknown_screen",
        "recovering": True})
    assert (await runs.get_execution(execution_id))["status"] == "failed"


class _FullDisk:
    """Makes the farm database's next ``times`` calls of ``names`` fail the way SQLite does
    on a full disk; every other call goes to the real FarmDB."""

    def __init__(self, db, names: set[str], times: int) -> None:
        self.db, self.names, self.left = db, names, times

    def __getattr__(self, name: str):
        real = getattr(self.db, name)
        if name not in self.names:
            return real

        async def failing(*args, **kwargs):
            if self.left > 0:
                self.left -= 1
                raise sqlite3.OperationalError("database or disk is full")
            return await real(*args, **kwargs)
        return failing


async def test_a_refused_start_whose_outcome_the_full_disk_refused_is_written_later(manager) -> None:
    # The 4 x 15 chaos bench's disk_full fault: the node refused a start (its phone locked),
    # writing that outcome failed, and the record stayed 'pending' with its plan for good.
    runs, hub = manager
    real_db = runs.db
    hub.answers["s2"] = {"status": "locked", "error": "phone s2: locked by execution ex-9"}
    runs.db = runs._outcomes.db = _FullDisk(real_db, {"update_execution", "write_records"}, 3)
    runs._outcomes.first_delay = 0.01
    started = await runs.start("clipshare/login", "phone:s2")
    out = started["executions"]["s2"]
    assert out["status"] == "locked" and "locked by execution ex-9" in out["error"]
    # Refused once by update_execution, then twice more by the retries, then taken.
    for _ in range(200):
        if not runs._outcomes.waiting:
            break
        await asyncio.sleep(0.01)
    view = await runs.get_execution(out["execution_id"])
    assert view["status"] == "locked" and "ex-9" in view["error"]
    assert runs._outcomes.db.left == 0


async def test_a_retried_outcome_leaves_a_record_its_node_already_ended(manager) -> None:
    runs, hub = manager
    hub.answers["s1"] = {"status": "error", "error": "send timed out"}
    real_db = runs.db
    runs.db = _FullDisk(real_db, {"update_execution"}, 1)
    runs._outcomes.db = _FullDisk(real_db, {"write_records"}, 1)
    runs._outcomes.first_delay = 0.05
    started = await runs.start("clipshare/login", "phone:s1")
    execution_id = started["executions"]["s1"]["execution_id"]
    # The run arrived after all: the node's events end it before the retry writes.
    for event in ("execution_started", "execution_finished"):
        await runs.apply(event, "s1", {"execution_id": execution_id, "status": "completed"})
    for _ in range(200):
        if not runs._outcomes.waiting:
            break
        await asyncio.sleep(0.01)
    assert not runs._outcomes.waiting
    assert (await runs.get_execution(execution_id))["status"] == "completed"


async def test_a_refusal_before_the_send_is_one_write_and_a_failed_write_hides_no_other_target(
        manager) -> None:
    runs, hub = manager
    # ${custom.nope} fails every target before the send: its record is written failed at once.
    started = await runs.start({"name": "x", "steps": [{"type": "type", "text": "${custom.nope}"}]},
                               "phone:s1")
    view = await runs.get_execution(started["executions"]["s1"]["execution_id"])
    assert view["status"] == "failed" and view["reason"] == "prepare" and view["end_time"]
    # The database refuses one target's record: that target says so, the others started.
    runs.db = _FullDisk(runs.db, {"create_execution"}, 1)
    started = await runs.start("clipshare/login", "phone:all")
    outs = started["executions"]
    refused = [s for s, o in outs.items() if o["execution_id"] is None]
    assert len(refused) == 1 and "database or disk is full" in outs[refused[0]]["error"]
    assert sorted(s for s, _ in hub.sent) == sorted(set(SERIALS) - set(refused))
    for serial in set(SERIALS) - set(refused):
        assert outs[serial]["status"] == "pending"


async def test_resume_ends_an_unfinished_record_that_has_no_plan(manager) -> None:
    runs, hub = manager
    await runs.db.create_execution("ex-half", run_id="run-x", serial="s3", sequence="x")
    assert await runs.resume(["s3"], {}) == []
    view = await runs.get_execution("ex-half")
    assert view["status"] == "failed" and view["reason"] == "not_started" and hub.sent == []


async def test_an_end_delivered_again_keeps_its_end_time(manager) -> None:
    # The 4 x 15 chaos bench: a node stopped before the coordinator's ack reached it re-sent
    # its executions' ends after its restart, and each record's end time moved to then.
    runs, hub = manager
    started = await runs.start("clipshare/login", "phone:s1")
    execution_id = started["executions"]["s1"]["execution_id"]
    cancelled = {"execution_id": execution_id, "status": "cancelled", "reason": "cancelled"}
    await runs.apply("execution_started", "s1", {"execution_id": execution_id})
    await runs.apply("execution_finished", "s1", cancelled)
    first = await runs.get_execution(execution_id)
    await asyncio.sleep(0.05)
    await runs.apply("execution_finished", "s1", cancelled)
    again = await runs.get_execution(execution_id)
    assert again["status"] == "cancelled" and again["end_time"] == first["end_time"]
    # A different end still replaces it (a node's real end over a coordinator's mark).
    await runs.apply("execution_finished", "s1", {"execution_id": execution_id,
                                                  "status": "failed", "reason": "timeout",
                                                  "error": "late"})
    assert (await runs.get_execution(execution_id))["reason"] == "timeout"


async def test_a_record_left_pending_by_a_crash_mid_send_is_sent_again_at_the_hello(
        manager) -> None:
    # The 4 x 15 chaos bench's coordinator_kill: the scheduler wrote an execution pending with
    # its plan and the coordinator died before the node's answer. Nothing ever moved the
    # record on (the scheduler adopted it after the restart and waited for good).
    runs, hub = manager
    started = await runs.start("clipshare/login", "phone:s1,s2,s3")
    ids = {s: e["execution_id"] for s, e in started["executions"].items()}
    hub.sent.clear()
    # s1: the node plays it; s2: the phone is locked now; s3: its node plays it already.
    hub.answers["s2"] = {"status": "locked", "error": "phone s2: locked by execution ex-7"}
    runs._sending.add(ids["s3"])  # and a first send still awaiting its answer is left alone
    taken = await runs.send_pending(SERIALS, {"s1": None, "s2": "ex-7", "s3": None})
    assert taken == [ids["s1"]]
    assert sorted((serial, run.execution_id, run.if_new) for serial, run in hub.sent) == [
        ("s1", ids["s1"], True), ("s2", ids["s2"], True)]
    assert (await runs.get_execution(ids["s1"]))["status"] == "pending"  # its events move it
    locked = await runs.get_execution(ids["s2"])
    assert locked["status"] == "locked" and "ex-7" in locked["error"]
    runs._sending.clear()
    # A record that is running, or whose phone the node says it holds, is not sent.
    await runs.apply("execution_started", "s1", {"execution_id": ids["s1"]})
    hub.sent.clear()
    assert await runs.send_pending(SERIALS, {"s3": ids["s3"]}) == [] and hub.sent == []


async def test_each_execution_records_the_version_of_the_sequence_file_it_ran(manager,
                                                                             tmp_path) -> None:
    runs, hub = manager
    runs.recorded = tmp_path / "recorded"
    copy = runs.recorded / "clipshare" / "check_stats.json"
    copy.parent.mkdir(parents=True)
    content = json.loads((LIBRARY / "clipshare" / "check_stats.json").read_text())
    copy.write_text(json.dumps(content))
    first = await runs.start("clipshare/check_stats", "phone:s1")
    again = await runs.start("clipshare/check_stats", "phone:s1")
    content["description"] = "a changed file"
    copy.write_text(json.dumps(content, indent=1))
    changed = await runs.start("clipshare/check_stats", "phone:s1")
    versions = [(await runs.get_execution(started["executions"]["s1"]["execution_id"]))[
        "sequence_version"] for started in (first, again, changed)]
    assert versions == [1, 1, 2]
    page = await runs.execution_history(ExecutionQuery(limit=10))
    assert sorted(e["sequence_version"] for e in page["executions"]) == [1, 1, 2]


async def test_a_finished_step_s_start_delivered_again_adds_no_row(manager) -> None:
    """A coordinator stopped after writing a batch's records but before storing its events
    gets the batch again: the start of a step finished since is known by its journal seq
    and adds no row; the same step played again (a node restart: a new seq) is a row."""
    runs, _ = manager
    started = await runs.start("clipshare/login", "phone:s1")
    ex = started["executions"]["s1"]["execution_id"]
    step = {"execution_id": ex, "index": 0, "path": "steps[0]", "type": "launch_app"}
    batch = [("execution_started", "s1", {"execution_id": ex}, 7),
             ("step_started", "s1", step, 8),
             ("step_finished", "s1", {**step, "status": "ok", "screen": "clipshare/feed"}, 9)]
    await runs.apply_many(batch)
    await runs.apply_many(batch)
    steps = (await runs.get_execution(ex))["steps"]
    assert [(s["path"], s["status"]) for s in steps] == [("steps[0]", "success")]
    await runs.apply_many([("step_started", "s1", step, 15)])
    steps = (await runs.get_execution(ex))["steps"]
    assert [(s["path"], s["status"]) for s in steps] == [("steps[0]", "success"),
                                                         ("steps[0]", "running")]
