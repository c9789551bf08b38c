"""The execution history an operator queries (issue 18): `FarmDB.execution_page`'s filters
and keyset pages, ``GET /api/executions`` on a real Hub over a real FarmDB behind a real
aiohttp server (every bad parameter a 400 naming it), a tenant's pages (its clients'
phones only, in SQL: full pages even when other clients' executions came last), and
``farm runs`` with the same filters. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from actors.access.principal import Principal
from actors.access.scoped import ScopedHub
from actors.control.app import make_app
from actors.control.cli import main as farm_main
from actors.coordinator.hub import Hub
from actors.store.event_store import EventStore
from actors.store.execution_history import ExecutionQuery
from actors.store.execution_records import utc_text
from actors.store.farm_db import FarmDB
from protocol.errors import ValidationError
from tests.api_call import call

pytestmark = pytest.mark.usefixtures("engine")

A1, A2, Z1 = "10.0.0.1:5555", "10.0.0.2:5555", "10.0.0.9:5555"  # Acme, Acme, Zeta
STATUSES = ("completed", "failed", "cancelled")
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


@pytest.fixture
async def db(tmp_path: Path):
    """A farm database with 30 executions ex-00..ex-29, one a day from T0: phone
    A1, A2, Z1 in turn, status completed/failed/cancelled every 3rd from the 2nd on,
    sequence s/even or s/odd, run r<n // 10>; then 12 more of Zeta's (z-00..z-11)."""
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    await db.upsert_client("Acme")
    await db.upsert_client("Zeta")
    for serial, client in ((A1, "Acme"), (A2, "Acme"), (Z1, "Zeta")):
        await db.upsert_phone(serial, client=client)
    for n in range(30):
        await db.create_execution(
            f"ex-{n:02d}", run_id=f"r{n // 10}", serial=(A1, A2, Z1)[n % 3],
            sequence=f"s/{'odd' if n % 2 else 'even'}", start_time=day(n),
            status=STATUSES[(n // 3) % 3] if n % 3 != 2 else "completed")
    for n in range(12):
        await db.create_execution(f"z-{n:02d}", serial=Z1, sequence="s/z",
                                  start_time=day(40 + n), status="failed")
    yield db
    await db.close()


def keys(rows: list[dict]) -> list[str]:
    return [r["key"] for r in rows]


async def all_pages(db: FarmDB, query: ExecutionQuery) -> tuple[list[str], int]:
    """Every row of ``query``, page by page; and how many pages."""
    out, pages, before = [], 0, None
    while True:
        rows, before = await db.execution_page(ExecutionQuery(**{**query.__dict__,
                                                                 "before": before}))
        out += keys(rows)
        pages += 1
        assert len(rows) == query.limit or before is None  # only the last page is short
        if before is None:
            return out, pages


async def test_filters_select_newest_first_and_pages_cover_each_row_once(db: FarmDB) -> None:
    everything = [f"z-{n:02d}" for n in range(11, -1, -1)] + [f"ex-{n:02d}"
                                                                for n in range(29, -1, -1)]
    rows, more = await db.execution_page(ExecutionQuery(limit=100))
    assert keys(rows) == everything and more is None
    assert "plan" not in rows[0] and rows[0]["serial"] == Z1
    assert await all_pages(db, ExecutionQuery(limit=4)) == (everything, 11)

    def expect(pred) -> list[str]:
        return [k for k in everything if k.startswith("ex-") and pred(int(k[3:]))]

    failed = ExecutionQuery(statuses=("failed",), limit=100)
    assert keys((await db.execution_page(failed))[0]) == (
        [f"z-{n:02d}" for n in range(11, -1, -1)]
        + expect(lambda n: n % 3 != 2 and STATUSES[(n // 3) % 3] == "failed"))
    cases = {
        ExecutionQuery(serial=A2, limit=3): expect(lambda n: n % 3 == 1),
        ExecutionQuery(sequence="s/odd", statuses=("completed", "cancelled"), limit=3):
            expect(lambda n: n % 2 and (n % 3 == 2 or STATUSES[(n // 3) % 3] != "failed")),
        ExecutionQuery(run_id="r1", serial=A1, limit=2): expect(lambda n: n // 10 == 1
                                                                and n % 3 == 0),
        ExecutionQuery(since=utc_text(day(5)), until=utc_text(day(9)), limit=3):
            expect(lambda n: 5 <= n < 9),
        ExecutionQuery(since=utc_text(day(28)), serial=Z1, limit=5):
            ["z-%02d" % n for n in range(11, -1, -1)] + expect(lambda n: n >= 28 and n % 3 == 2),
    }
    for query, expected in cases.items():
        pages = max(1, -(-len(expected) // query.limit))
        assert await all_pages(db, query) == (expected, pages), query
    assert (await db.execution_page(ExecutionQuery(serial="nobody")))[0] == []
    with pytest.raises(ValidationError) as err:
        await db.execution_page(ExecutionQuery(before="ex-99"))
    assert err.value.where == "before"


async def test_newest_first_is_by_start_time_and_pages_split_ties(tmp_path: Path) -> None:
    db = await FarmDB.open(tmp_path / "order.sqlite3")
    try:
        for n in range(5):  # five started in the same microsecond: by id among them
            await db.create_execution(f"t-{n}", serial=A1, start_time=day(3))
        await db.create_execution("written-last-started-first", serial=A1, start_time=day(1))
        await db.create_execution("new", serial=A1, start_time=day(9))
        expected = ["new", "t-4", "t-3", "t-2", "t-1", "t-0", "written-last-started-first"]
        assert await all_pages(db, ExecutionQuery(limit=2)) == (expected, 4)
        assert await all_pages(db, ExecutionQuery(limit=3, serial=A1,
                                                  until=utc_text(day(5)))) == (expected[1:], 2)
    finally:
        await db.close()


async def test_a_tenant_gets_full_pages_of_its_phones_only(db: FarmDB) -> None:
    acme = (await db.client_row("Acme"))["client_id"]
    zeta = (await db.client_row("Zeta"))["client_id"]
    mine = [f"ex-{n:02d}" for n in range(29, -1, -1) if n % 3 != 2]
    # Zeta's 12 newest executions come first: filtering a read page afterwards missed these.
    assert await all_pages(db, ExecutionQuery(limit=5, clients=frozenset({acme}))) == (mine, 4)
    rows, _ = await db.execution_page(ExecutionQuery(statuses=("failed",), limit=100,
                                                     clients=frozenset({acme})))
    assert rows and {r["serial"] for r in rows} <= {A1, A2}
    assert (await db.execution_page(ExecutionQuery(clients=frozenset())))[0] == []
    both = frozenset({acme, zeta})
    assert len((await db.execution_page(ExecutionQuery(limit=100, clients=both)))[0]) == 42
    with pytest.raises(ValidationError):  # another client's execution is no page mark
        await db.execution_page(ExecutionQuery(before="z-03", clients=frozenset({acme})))


@pytest.fixture
async def hub(db: FarmDB, tmp_path: Path):
    store = await EventStore(tmp_path / "coordinator.sqlite3").open()
    hub = Hub("tcp://127.0.0.1:1", "secret", store, db=db, data_dir=tmp_path / "data")
    await hub.owners.load()
    yield hub
    await store.close()


async def test_route_filters_pages_and_names_every_bad_parameter(hub: Hub) -> None:
    async with TestClient(TestServer(make_app(hub))) as client:
        status, body = await call(client, "GET", "/api/executions?status=failed,cancelled"
                                  f"&serial={A1}&since=2026-03-01T00:00:00%2B00:00&limit=2")
        assert status == 200, body
        first = [e["execution_id"] for e in body["executions"]]
        assert first == ["ex-24", "ex-21"] and body["next_before"] == "ex-21"
        assert set(body["executions"][0]) >= {"execution_id", "run_id", "serial", "sequence",
                                              "status", "start_time", "account"}
        status, body = await call(client, "GET", "/api/executions?status=failed&status="
                                  f"cancelled&serial={A1}&since=2026-03-01T01:00:00%2B01:00"
                                  "&limit=2&before=ex-21")
        assert [e["execution_id"] for e in body["executions"]] == ["ex-15", "ex-12"]
        status, body = await call(client, "GET", "/api/executions?run_id=r2&sequence=s/even"
                                  "&until=2026-03-25T00:00:00Z")
        assert [e["execution_id"] for e in body["executions"]] == ["ex-22", "ex-20"]
        assert body["next_before"] is None
        for query, field in (
                ("status=done", "status"), ("status=failed,", "status"),
                ("serial=", "serial"), (f"serial={'x' * 300}", "serial"),
                ("serial=a&serial=b", "serial"), ("sequence=%07", "sequence"),
                ("run_id=", "run_id"), ("since=yesterday", "since"),
                ("since=2026-03-01T00:00:00", "since"),  # no zone
                ("until=0001-01-01T00:00:00%2B01:00", "until"),
                ("since=2026-03-02T00:00Z&until=2026-03-01T00:00Z", "until"),
                ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"),
                ("limit=5&limit=6", "limit"), ("before=", "before"),
                ("before=ex-99", "before")):
            status, body = await call(client, "GET", f"/api/executions?{query}")
            assert status == 400 and body["field"] == field, (query, body)
            assert field in body["error"], body


async def test_a_scoped_hub_reads_its_clients_executions_in_sql(hub: Hub, db: FarmDB) -> None:
    acme = (await db.client_row("Acme"))["client_id"]
    scoped = ScopedHub(hub, Principal(user_id=2, name="acme", role="admin",
                                      client_ids=frozenset({acme})))
    page = await scoped.execution_history(ExecutionQuery(limit=5))
    assert [e["execution_id"] for e in page["executions"]] == ["ex-28", "ex-27", "ex-25",
                                                               "ex-24", "ex-22"]
    assert page["next_before"] == "ex-22"
    assert [e["execution_id"] for e in await scoped.list_executions(3)] == ["ex-28", "ex-27",
                                                                            "ex-25"]
    page = await scoped.execution_history(ExecutionQuery(serial=Z1))
    assert page == {"executions": [], "next_before": None}


async def test_farm_runs_passes_its_filters(hub: Hub, capsys) -> None:
    async with TestClient(TestServer(make_app(hub))) as client:
        url = str(client.make_url("")).rstrip("/")
        code = await asyncio.to_thread(farm_main, [
            "--url", url, "runs", "--status", "failed", "--status", "cancelled",
            "--phone", A1, "--since", "2026-03-01", "--limit", "2"])
        captured = capsys.readouterr()
        out = captured.out.splitlines()
        assert code == 0 and out[0].split()[:3] == ["EXECUTION", "RUN", "SERIAL"]
        assert [line.split()[0] for line in out[1:]] == ["ex-24", "ex-21"]
        assert captured.err.strip() == "more: --before ex-21"
        code = await asyncio.to_thread(farm_main, ["--url", url, "runs", "--sequence", "s/z",
                                                   "--run", "r0", "--until", "2d"])
        assert code == 0 and capsys.readouterr().out.strip() == "no executions"
        code = await asyncio.to_thread(farm_main, ["--url", url, "runs", "--since", "soon"])
        assert code == 2 and "--since" in capsys.readouterr().err
        code = await asyncio.to_thread(farm_main, ["--url", url, "runs", "--status", "done"])
        assert code == 2 and "status" in capsys.readouterr().err
