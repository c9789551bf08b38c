"""A retired (deleted) account is never chosen again: not as a run's account, not from a scope,
not for ``${account.*}`` or a phone's profile, not in group counts; naming it is an error that
says it is retired. Its past executions still show which account they ran as. A real SQLite
farm database seeded with the demo accounts (clipshare account1..3 on every phone)."""

from __future__ import annotations

import random

import pytest

from actors.store.farm_db import FarmDB, seed_demo
from actors.coordinator.runs import RunManager
from protocol.errors import ScopeError, ValidationError
from protocol.messages import RunSequence
from sequences.variables import resolve

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

SERIALS = ["s1", "s2", "s3"]


class StubHub:
    """The hub as runs see it: three phones, and every run accepted by its node."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, RunSequence]] = []

    def phones(self) -> list[dict]:
        return [{"serial": s, "node": "n1", "tags": [f"phone{i + 1}"]} for i, s in enumerate(SERIALS)]

    async def send_run(self, serial: str, run: RunSequence) -> dict:
        self.sent.append((serial, run))
        return {"status": "ok", "error": None, "started": True}


@pytest.fixture
async def farm(tmp_path):
    """(db, runs, hub) with account1 retired on s1 the way DELETE /api/accounts/{id} does."""
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    await seed_demo(db, SERIALS)
    await db.upsert_account("s1", "clipshare", "account1", status="retired")
    hub = StubHub()
    try:
        yield db, RunManager(hub, db, tmp_path / "data"), hub
    finally:
        await db.close()


async def test_the_platform_account_of_a_sequence_skips_a_retired_first_account(farm) -> None:
    """post_clip says ``"account": "clipshare"``: the phone's first clipshare account, which
    on s1 is account1 no more."""
    db, runs, hub = farm
    started = await runs.start("clipshare/post_clip", "phone:s1,s2")
    assert {s: e["status"] for s, e in started["executions"].items()} == {
        "s1": "pending", "s2": "pending"}
    assert {serial: run.account for serial, run in hub.sent} == {
        "s1": "clipshare.account2", "s2": "clipshare.account1"}
    (s1,) = [run for serial, run in hub.sent if serial == "s1"]
    assert s1.account_username == "dance_daily"


async def test_only_retired_accounts_of_the_platform_fail_the_execution(farm) -> None:
    db, runs, hub = farm
    for number in ("account2", "account3"):
        await db.upsert_account("s1", "clipshare", number, status="retired")
    started = await runs.start("clipshare/post_clip", "phone:s1")
    out = started["executions"]["s1"]
    assert out["status"] == "failed" and "has no clipshare account" in out["error"]
    assert hub.sent == []


async def test_a_retired_account_named_in_a_scope_is_a_clear_error(farm) -> None:
    _, runs, hub = farm
    with pytest.raises(ScopeError) as info:
        await runs.start("clipshare/login", "account:clipshare.account1@s1")
    assert "clipshare.account1" in str(info.value) and "retired" in str(info.value)
    with pytest.raises(ScopeError) as info:
        await runs.targets("account:clipshare.account1@phone:s1,s2")
    assert "retired" in str(info.value) and "s1" in str(info.value)
    # A set of phones: the phones where it is live.
    assert await runs.targets("account:clipshare.account1@all") == [
        ("s2", "clipshare.account1"), ("s3", "clipshare.account1")]
    for serial in ("s2", "s3"):
        await runs.db.upsert_account(serial, "clipshare", "account1", status="retired")
    with pytest.raises(ScopeError) as info:
        await runs.targets("account:clipshare.account1@all")
    assert "clipshare.account1 is retired" in str(info.value)
    assert hub.sent == []


async def test_account_scopes_select_only_live_accounts(farm) -> None:
    _, runs, _ = farm
    targets = await runs.targets("account:clipshare.all@all")
    assert ("s1", "clipshare.account1") not in targets
    assert len(targets) == 8 and ("s2", "clipshare.account1") in targets
    assert ("s1", "clipshare.account1") not in await runs.targets("account:all@s1")
    assert await runs.targets("account:all-clipshare.account2@s1") == [("s1", "clipshare.account3")]


async def test_a_sequence_naming_a_retired_account_fails_that_execution(farm) -> None:
    _, runs, hub = farm
    seq = {"name": "hello", "app": "clipshare", "account": "clipshare.account1",
           "steps": [{"type": "type", "text": "hi ${account.username}"}]}
    started = await runs.start(seq, "phone:s1,s2")
    assert started["executions"]["s1"]["status"] == "failed"
    assert "clipshare.account1" in started["executions"]["s1"]["error"]
    assert "retired" in started["executions"]["s1"]["error"]
    assert [serial for serial, _ in hub.sent] == ["s2"]


async def test_variables_do_not_see_a_retired_account(farm) -> None:
    db, _, _ = farm
    with pytest.raises(ValidationError) as info:
        await db.variable_context("s1", "clipshare.account1")
    assert "clipshare.account1" in str(info.value)
    ctx = await db.variable_context("s1")
    text = await db.resolve_text("${count.accounts in account:clipshare.all@all}", "s1")
    assert text == "8"
    assert all(a["account_number"] != "account1" for a in ctx.accounts)
    picks = {resolve("${random.account from account:all@s1}", ctx, random.Random(seed))
             for seed in range(20)}
    assert picks == {"clipshare.account2@s1", "clipshare.account3@s1"}


async def test_a_phone_takes_its_profile_from_a_live_account(tmp_path) -> None:
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    try:
        await db.upsert_phone("p1")
        old = await db.upsert_profile(first_name="Old")
        new = await db.upsert_profile(first_name="New")
        # The lowest-numbered account's profile is the phone's: here a retired one.
        await db.upsert_account("p1", "clipshare", "a0", profile_id=old, status="retired")
        await db.upsert_account("p1", "clipshare", "a1", profile_id=new, status="active")
        (phone,) = await db.phone_rows()
        assert phone["profile"]["first_name"] == "New"
        assert (await db.variable_context("p1")).profile["first_name"] == "New"
    finally:
        await db.close()


async def test_the_demo_seed_does_not_bring_a_retired_account_back(farm) -> None:
    db, runs, _ = farm
    await seed_demo(db, SERIALS)  # every --demo start runs it again
    assert ("s1", "clipshare.account1") not in await runs.targets("account:clipshare.all@all")


async def test_past_executions_still_name_their_retired_account(farm) -> None:
    db, runs, _ = farm
    started = await runs.start("clipshare/login", "account:clipshare.account1@s2")
    execution_id = started["executions"]["s2"]["execution_id"]
    await db.upsert_account("s2", "clipshare", "account1", status="retired")
    assert (await runs.get_execution(execution_id))["account"] == "clipshare.account1"
