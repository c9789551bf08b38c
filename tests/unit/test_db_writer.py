"""The farm database's single writer (actors.store.db_writer) under a real FarmDB file: concurrent
writes are committed in batches, a failing atomic job is undone alone while the rest of its
batch commits, a failing statement reaches its caller, and a read on the reader connection
sees every write whose call returned, without waiting for an open write transaction."""

from __future__ import annotations

import asyncio
import threading

import pytest

from actors.store.farm_db import FarmDB
from actors.store.db_writer import SingleWriter
from tests.engine_checks import INTEGRITY_ERRORS

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")


async def test_concurrent_writes_commit_in_few_batches(db: FarmDB) -> None:
    writer: SingleWriter = db._writer  # type: ignore[assignment]
    before = writer.batches
    values = await asyncio.gather(*(db.next_counter("c") for _ in range(200)))
    assert sorted(values) == list(range(1, 201))  # each caller its own value
    assert writer.batches - before < 50  # not one commit per write
    assert (await db._one("SELECT value FROM counters WHERE name = 'c'"))[0] == 200


async def test_a_failing_atomic_job_is_undone_alone(db: FarmDB) -> None:
    await db.upsert_client("Keep")

    def half_then_fail(conn) -> None:
        conn.execute("INSERT INTO clients (name) VALUES ('Half')")
        raise RuntimeError("boom")

    results = await asyncio.gather(db._atomic(half_then_fail), db.upsert_client("Also"),
                                   return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], int)
    names = [r["name"] for r in await db.client_rows()]
    assert names == ["Also", "Keep"]


async def test_a_failing_statement_reaches_its_caller(db: FarmDB) -> None:
    with pytest.raises(INTEGRITY_ERRORS):
        await db._write("INSERT INTO phones (serial_number, client_id) VALUES ('x', 42)")
    assert await db.next_counter("after") == 1  # the writer goes on


async def test_reads_do_not_wait_for_an_open_write_transaction(db: FarmDB) -> None:
    await db.upsert_client("Before")
    gate, entered = threading.Event(), threading.Event()

    def slow(conn) -> None:
        conn.execute("INSERT INTO clients (name) VALUES ('During')")
        entered.set()
        gate.wait(10)

    job = asyncio.ensure_future(db._atomic(slow))
    assert await asyncio.to_thread(entered.wait, 10)
    # The writer holds its transaction open; a read answers at once, from the last commit.
    rows = await asyncio.wait_for(db.client_rows(), timeout=5)
    assert [r["name"] for r in rows] == ["Before"]
    gate.set()
    await job
    assert [r["name"] for r in await db.client_rows()] == ["Before", "During"]


async def test_memory_is_refused_with_a_clear_error(engine) -> None:
    from protocol.errors import FarmError

    if engine == "postgresql":
        pytest.skip(":memory: is a SQLite file name; a PostgreSQL farm's path is only its folder")

    with pytest.raises(FarmError, match="needs a file"):
        await FarmDB.open(":memory:")


async def test_close_finishes_queued_writes(tmp_path) -> None:
    farm = await FarmDB.open(tmp_path / "f.sqlite3")
    pending = [asyncio.ensure_future(farm.next_counter("n")) for _ in range(20)]
    await asyncio.sleep(0)
    await farm.close()
    assert sorted(await asyncio.gather(*pending)) == list(range(1, 21))
    farm = await FarmDB.open(tmp_path / "f.sqlite3")  # what the database holds now
    try:
        assert (await farm._one("SELECT value FROM counters WHERE name = 'n'"))[0] == 20
    finally:
        await farm.close()
