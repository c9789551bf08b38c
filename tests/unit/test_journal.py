"""The node journal: appends are durable, in call order, and share commits when they meet."""

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


async def test_a_failed_commit_reaches_every_waiting_append(tmp_path) -> None:
    journal = await Journal(tmp_path / "j.db").open()
    await journal.close()
    with pytest.raises(FarmError, match="not open"):
        await asyncio.wait_for(journal.append("e", None, {}), 5)
