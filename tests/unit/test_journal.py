"""The node journal: appends are durable, in call order, share commits when they meet, and
only committed rows are ever listed for sending."""

from __future__ import annotations

import asyncio

import pytest

from protocol.errors import FarmError
from protocol.journal import Journal


async def test_concurrent_appends_keep_their_order_and_share_commits(tmp_path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        seqs = await asyncio.gather(*(journal.append("e", f"S{i}", {"i": i}) for i in range(50)))
        assert seqs == list(range(1, 51))
        assert journal.commits < 50 and journal.last_seq == 50
        assert await journal.append("after", None, {}) == 51
    async with Journal(tmp_path / "j.db") as reopened:
        events = await reopened.unacked()
        assert [e.seq for e in events] == list(range(1, 52))
        assert [e.data.get("i") for e in events[:50]] == list(range(50))
        assert events[7].serial == "S7"


async def test_unacked_never_lists_a_row_whose_commit_is_still_open(tmp_path) -> None:
    """The connection shows its own uncommitted rows; the pump must not send them (a
    rollback would hand their seqs to other events)."""
    async with Journal(tmp_path / "j.db") as journal:
        await journal.append("first", None, {})
        await journal.db.execute("INSERT INTO events (event, serial, data, created) "
                                 "VALUES ('open', NULL, '{}', 0)")
        assert [e.event for e in await journal.unacked()] == ["first"]
        await journal.db.rollback()
        assert await journal.append("second", None, {}) == 2


async def test_a_failed_commit_reaches_every_waiting_append(tmp_path) -> None:
    journal = await Journal(tmp_path / "j.db").open()
    await journal.close()
    with pytest.raises(FarmError, match="not open"):
        await asyncio.wait_for(journal.append("e", None, {}), 5)


async def test_seqs_survive_acks_and_reopening(tmp_path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        for i in range(5):
            await journal.append("e", None, {"i": i})
        await journal.ack(5)
        assert await journal.unacked() == []
    async with Journal(tmp_path / "j.db") as reopened:
        assert reopened.acked_upto == 5
        assert await asyncio.gather(*(reopened.append("e", None, {}) for _ in range(3))) == [6, 7, 8]


async def test_append_many_keeps_the_given_order_in_one_commit(tmp_path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        await journal.append("first", None, {})
        commits = journal.commits
        seqs = await journal.append_many([("e", f"S{i}", {"i": i}) for i in range(30)])
        assert seqs == list(range(2, 32)) and journal.commits == commits + 1
        assert [e.data.get("i") for e in await journal.unacked(after_seq=1)] == list(range(30))


async def test_has_started_finds_an_unacked_execution_start_only(tmp_path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        await journal.append("execution_started", "S1", {"execution_id": "ex-1", "run_id": "r"})
        await journal.append("step_done", "S1", {"execution_id": "ex-2"})
        assert await journal.has_started("ex-1")
        assert not await journal.has_started("ex-2")  # a step is not a start
        assert not await journal.has_started("ex-3")
    async with Journal(tmp_path / "j.db") as reopened:  # a restarted node still knows
        assert await reopened.has_started("ex-1")
        await reopened.ack(2)  # acked: the coordinator's record says it started
        assert not await reopened.has_started("ex-1")
