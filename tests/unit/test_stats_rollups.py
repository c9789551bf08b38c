"""The one-minute stats rollups (issue 19.2) on a real FarmDB, on both engines: what a closed
minute holds from known execution records and phone samples, closing again after a restart
(nothing counted twice, missed minutes caught up from the records), coarser steps, a
tenant's series and top failures, and on PostgreSQL a raw query under a tenant's row-level
security seeing nothing of another client's rollups."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from actors.coordinator.rollups import RollupService, phone_state
from actors.store.caller_scope import as_clients
from actors.store.execution_records import utc_text
from actors.store.farm_db import FarmDB
from actors.store.stats import FailureQuery, StatsQuery, percentile

pytestmark = pytest.mark.usefixtures("engine")

A1, A2, Z1 = "10.0.0.1:5555", "10.0.0.2:5555", "10.0.0.9:5555"  # Acme, Acme, Zeta
T0 = datetime(2026, 12, 7, 1, 0, tzinfo=timezone.utc)  # a whole hour
M0 = int(T0.timestamp())
NODES = {A1: "rack-1", A2: "rack-1", Z1: "rack-2"}


def at(minute: int, second: float = 0.0) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


class Phones:
    """The hub's phone views the service samples (state and lock changed by the test)."""

    def __init__(self) -> None:
        self.rows = {s: {"serial": s, "node": n, "state": "online", "lock_holder": None}
                     for s, n in NODES.items()}

    def __call__(self) -> list[dict]:
        return [dict(r) for r in self.rows.values()]


def client_of(db: FarmDB):
    return lambda serial: db.test_clients["Zeta" if serial == Z1 else "Acme"]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def db(tmp_path: Path):
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    acme, zeta = await db.upsert_client("Acme"), await db.upsert_client("Zeta")
    for serial, client in ((A1, acme), (A2, acme), (Z1, zeta)):
        await db.upsert_phone(serial, client=client)
    db.test_clients = {"Acme": acme, "Zeta": zeta}
    yield db
    await db.close()


async def execution(db: FarmDB, key: str, serial: str, sequence: str, start: datetime,
                    end: datetime | None, status: str, steps: list[tuple[float, float, str]]
                    = (), screen: str | None = None) -> None:
    """An execution with steps (start s, end s after its start, status)."""
    await db.create_execution(key, serial=serial, sequence=sequence, start_time=start,
                              status="running")
    for n, (begin, finish, step_status) in enumerate(steps):
        step_id = await db.add_step(key, n, "tap", path=f"steps[{n}]",
                                    start_time=start + timedelta(seconds=begin))
        await db.finish_step(step_id, step_status, end_time=start + timedelta(seconds=finish),
                             screen_name=screen, error="no_match" if step_status == "failed"
                             else None, screenshot=f"executions/{key}/steps[{n}].png"
                             if step_status == "failed" else None)
    if end is not None:
        await db.update_execution(key, status=status, end_time=end,
                                  error_reason="no_match" if status == "failed" else None)


async def seed(db: FarmDB) -> None:
    # Minute 0: two Acme executions of s/login start; one completes in minute 0 (steps of
    # 1 s and 3 s), the other fails in minute 1 (a 2 s step, failed on login/home).
    await execution(db, "a", A1, "s/login", at(0, 5), at(0, 20), "completed",
                    [(0, 1, "success"), (1, 4, "success")])
    await execution(db, "b", A2, "s/login", at(0, 30), at(1, 10), "failed",
                    [(0, 2, "failed")], screen="app/home")
    # Minute 1: Zeta's s/post starts and completes; a skipped step is no step time.
    await execution(db, "z", Z1, "s/post", at(1, 0), at(1, 30), "completed",
                    [(0, 10, "success"), (10, 10, "skipped")])
    # Minute 2: an Acme recovery attempt starts, succeeds in minute 3.
    await db.add_recovery_attempt(serial=A2, sequence="s/login", execution_key="b",
                                  start_time=at(2, 1), end_time=at(3, 2), status="succeeded")


def test_percentile_and_phone_states() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1000.0, 3000.0], 0.5) == 2000.0
    assert percentile([float(n) for n in range(1, 101)], 0.95) == pytest.approx(95.05)
    assert phone_state({"state": "online", "lock_holder": "x"}) == "busy"
    assert phone_state({"state": "online"}) == "idle"
    assert [phone_state({"state": s}) for s in ("paused", "offline", "failed", "weird")] == [
        "paused", "offline", "offline", "offline"]


async def test_a_closed_minute_holds_the_records_and_the_phone_samples(db: FarmDB) -> None:
    await seed(db)
    phones, clock = Phones(), Clock(M0)
    service = RollupService(db, phones, client_of=client_of(db), clock=clock, catch_up_s=0)
    assert await service.start() == 0  # a first start at M0: nothing before it to close
    # Minute 0: 12 samples; A1 busy for the first 6, Z1 paused for the last 3.
    for n in range(12):
        phones.rows[A1]["lock_holder"] = "a" if n < 6 else None
        phones.rows[Z1]["state"] = "paused" if n >= 9 else "online"
        service.sample(M0 + n * 5)
    assert await service.close_due(M0 + 62) == 0  # within the grace
    assert await service.close_due(M0 + 65) == 1
    for t in range(M0 + 60, M0 + 300, 5):  # minutes 1-4, nothing changes
        service.sample(t)
    assert await service.close_due(M0 + 5 * 60 + 5) == 4

    acme, zeta = db.test_clients["Acme"], db.test_clients["Zeta"]
    rows = {(r["minute"] - M0) // 60: dict(r) for r in await db._all(
        "SELECT * FROM stats_phone_minutes WHERE client_id = ? AND minute < ?", (acme, M0 + 60))}
    assert rows[0]["busy"] == 0.5 and rows[0]["idle"] == 1.5 and rows[0]["node"] == "rack-1"
    zrow = await db._one("SELECT * FROM stats_phone_minutes WHERE client_id = ? AND minute = ?",
                         (zeta, M0))
    assert (zrow["idle"], zrow["paused"]) == (0.75, 0.25)
    execs = {((r["minute"] - M0) // 60, r["client_id"], r["sequence"]): dict(r)
             for r in await db._all("SELECT * FROM stats_execution_minutes")}
    m0 = execs[(0, acme, "s/login")]
    assert (m0["started"], m0["completed"], m0["failed"], m0["node"]) == (2, 1, 0, "rack-1")
    # 1 s and 3 s of a, and b's failed 2 s step, which ended at 0:32, in minute 0.
    assert (m0["steps"], m0["step_p50_ms"]) == (3, 2000.0)
    assert m0["step_p95_ms"] == pytest.approx(2900.0)
    m1 = execs[(1, acme, "s/login")]
    assert (m1["started"], m1["failed"], m1["steps"], m1["step_p50_ms"]) == (0, 1, 0, None)
    z1 = execs[(1, zeta, "s/post")]
    assert (z1["started"], z1["completed"], z1["steps"], z1["step_p50_ms"]) == (1, 1, 1, 10000.0)
    assert (execs[(2, acme, "s/login")]["recovery_attempts"],
            execs[(3, acme, "s/login")]["recovery_succeeded"]) == (1, 1)
    assert [r[0] for r in await db._all("SELECT phone_samples FROM stats_minutes"
                                        " ORDER BY minute")] == [12] * 5

    # The API's view: one hour step over the 5 minutes, by farm and by client.
    farm = await db.stats_series(StatsQuery(M0, M0 + 3600, 3600, "farm"))
    (series,) = farm["series"]
    assert series["key"] == "farm" and len(series["points"]) == 1
    point = series["points"][0]
    assert point["t"] == "2026-12-07T01:00:00Z"
    assert point["executions"] == {"started": 3, "completed": 2, "failed": 1}
    assert point["recovery"] == {"attempts": 1, "succeeded": 1}
    # p50: the minute p50s weighted by their step counts; p95: the largest minute p95.
    assert point["step_ms"]["p50"] == pytest.approx((2000.0 * 3 + 10000.0) / 4, abs=0.1)
    assert point["step_ms"]["p95"] == 10000.0
    # Phones: averaged over the 5 sampled minutes (minute 0: A1 half busy, Z1 a quarter
    # paused; then A1 idle and Z1 paused).
    assert point["phones"] == {"busy": 0.1, "idle": round((2.25 + 4 * 2) / 5, 3),
                               "offline": 0.0, "paused": round((0.25 + 4) / 5, 3)}
    by_client = await db.stats_series(StatsQuery(M0, M0 + 300, 60, "client"))
    assert [s["key"] for s in by_client["series"]] == ["Acme", "Zeta"]
    assert [p["executions"]["started"] for p in by_client["series"][0]["points"]] == [
        2, 0, 0, 0, 0]
    by_sequence = await db.stats_series(StatsQuery(M0, M0 + 300, 300, "sequence"))
    assert [(s["key"], s["points"][0]["phones"], s["points"][0]["executions"]["failed"])
            for s in by_sequence["series"]] == [("s/login", None, 1), ("s/post", None, 0)]
    by_node = await db.stats_series(StatsQuery(M0, M0 + 300, 300, "node"))
    assert [(s["key"], s["points"][0]["phones"]["idle"]) for s in by_node["series"]] == [
        ("rack-1", 1.9), ("rack-2", 0.15)]
    # A tenant's series: its clients' rows only, by=farm and by=node alike.
    mine = await db.stats_series(StatsQuery(M0, M0 + 300, 300, "farm", frozenset({zeta})))
    assert mine["series"][0]["points"][0]["executions"]["started"] == 1
    mine = await db.stats_series(StatsQuery(M0, M0 + 300, 300, "node", frozenset({zeta})))
    assert [s["key"] for s in mine["series"]] == ["rack-2"]
    nothing = await db.stats_series(StatsQuery(M0, M0 + 300, 300, "client", frozenset()))
    assert nothing["series"] == []


async def test_a_restart_counts_nothing_twice_and_catches_up_from_the_records(
        db: FarmDB) -> None:
    await seed(db)
    phones, clock = Phones(), Clock(M0)
    first = RollupService(db, phones, clock=clock, catch_up_s=0)
    await first.start()
    for n in range(12):
        first.sample(M0 + n * 5)
    assert await first.close_due(M0 + 65) == 1
    before = [dict(r) for r in await db._all(
        "SELECT * FROM stats_execution_minutes ORDER BY minute, client_id, sequence")]
    phones_before = [dict(r) for r in await db._all("SELECT * FROM stats_phone_minutes")]

    # Down from 1:01 to 1:10; the new process closes minutes 1..9 from the records.
    clock.t = M0 + 10 * 60 + 30
    second = RollupService(db, phones, clock=clock)
    assert await second.start() == 9
    assert second.closed_upto == M0 + 600
    rows = await db._all("SELECT minute, phone_samples FROM stats_minutes ORDER BY minute")
    assert [((r[0] - M0) // 60, r[1]) for r in rows] == [(0, 12)] + [(m, 0) for m in range(1, 10)]
    after = [dict(r) for r in await db._all(
        "SELECT * FROM stats_execution_minutes ORDER BY minute, client_id, sequence")]
    assert [r for r in after if r["minute"] == M0] == [r for r in before if r["minute"] == M0]
    assert sum(r["started"] for r in after) == 3 and sum(r["completed"] for r in after) == 2
    assert sum(r["recovery_succeeded"] for r in after) == 1

    # Closing minute 0 again (a crash before the process noted it) rewrites, not adds,
    # and keeps its phone samples when the new close has none.
    third = RollupService(db, phones, clock=clock)
    third.closed_upto = M0
    await third.close_due(M0 + 65)
    again = [dict(r) for r in await db._all(
        "SELECT * FROM stats_execution_minutes ORDER BY minute, client_id, sequence")]
    assert again == after
    assert [dict(r) for r in await db._all("SELECT * FROM stats_phone_minutes")] == phones_before
    assert (await db._one("SELECT phone_samples FROM stats_minutes WHERE minute = ?",
                          (M0,)))[0] == 12
    # Caught-up minutes have no phone samples: their steps show no phone counts.
    points = (await db.stats_series(StatsQuery(M0 + 60, M0 + 600, 60)))["series"][0]["points"]
    assert {p["phones"] is None for p in points} == {True}


async def test_top_failures_and_a_tenants_view(db: FarmDB) -> None:
    await seed(db)
    since = utc_text(T0 - timedelta(hours=1))
    top = await db.top_failures(FailureQuery(since))
    assert [(s["sequence"], s["failures"], s["executions"]) for s in top["sequences"]] == [
        ("s/login", 1, 2)]
    last = top["sequences"][0]["last"]
    assert last["execution_id"] == "b" and last["serial"] == A2 and last["step"] == "steps[0]"
    assert last["screen"] == "app/home" and last["reason"] == "no_match"
    assert last["screenshot"] == "/api/executions/b/steps/steps%5B0%5D/screenshot"
    assert last["at"] == "2026-12-07T01:00:32Z"
    assert [(s["screen"], s["failures"]) for s in top["screens"]] == [("app/home", 1)]
    zeta = db.test_clients["Zeta"]
    assert await db.top_failures(FailureQuery(since, clients=frozenset({zeta}))) == {
        "sequences": [], "screens": []}
    assert await db.top_failures(FailureQuery(utc_text(at(5)))) == {
        "sequences": [], "screens": []}


async def test_row_security_hides_another_clients_rollups(db: FarmDB, engine: str) -> None:
    if engine != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    await seed(db)
    service = RollupService(db, Phones(), client_of=client_of(db), clock=Clock(M0),
                            catch_up_s=0)
    await service.start()
    service.sample(M0)
    await service.close_due(M0 + 180)
    zeta = db.test_clients["Zeta"]
    everyone = {t: len(await db._all(f"SELECT * FROM {t}"))
                for t in ("stats_phone_minutes", "stats_execution_minutes")}
    assert everyone == {"stats_phone_minutes": 2, "stats_execution_minutes": 3}
    with as_clients({zeta}):
        # A raw query that forgot its filter still sees only Zeta's rows.
        assert {r["client_id"] for r in await db._all(
            "SELECT * FROM stats_phone_minutes")} == {zeta}
        for table in ("stats_execution_minutes", "stats_phone_hours",
                      "stats_execution_hours"):
            assert {r["client_id"] for r in await db._all(f"SELECT * FROM {table}")} == {zeta}
        # The unfiltered farm series (a query without clients) is Zeta's alone too.
        farm = await db.stats_series(StatsQuery(M0, M0 + 180, 180))
        assert farm["series"][0]["points"][0]["executions"]["started"] == 1
    with as_clients(set()):
        assert await db._all("SELECT * FROM stats_execution_minutes") == []


async def test_a_first_start_fills_history_from_the_first_execution(db: FarmDB) -> None:
    clock = Clock(M0 + 10 * 60 + 30)
    # A new farm: nothing to fill (no week of empty minutes written).
    assert await RollupService(db, Phones(), clock=clock).start() == 0
    assert (await db._one("SELECT COUNT(*) FROM stats_minutes"))[0] == 0
    # A farm upgraded with executions in the window: filled from the first one's minute.
    await seed(db)
    service = RollupService(db, Phones(), clock=clock)
    assert await service.start() == 10  # minutes 0..9
    rows = await db.stats_series(StatsQuery(M0, M0 + 600, 600))
    assert rows["series"][0]["points"][0]["executions"]["started"] == 3


async def test_a_long_catch_up_goes_half_an_hour_at_a_time_with_percentiles_off_the_loop(
        db: FarmDB, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from actors.store import stats

    await seed(db)
    closes: list[tuple[int, int]] = []
    save = stats.save_minutes

    async def recorded(db_: object, start: int, end: int, *rest: object) -> None:
        closes.append((start, end))
        await save(db_, start, end, *rest)

    threads: set[int] = set()
    row = stats.ExecutionCell.row

    def row_where(self: stats.ExecutionCell, key: tuple) -> tuple:
        threads.add(threading.get_ident())
        return row(self, key)

    monkeypatch.setattr(stats, "save_minutes", recorded)
    monkeypatch.setattr(stats.ExecutionCell, "row", row_where)
    # Two hours behind: four closes of at most 30 minutes, everything counted once.
    service = RollupService(db, Phones(), clock=Clock(M0 + 2 * 3600 + 30))
    assert await service.start() == 120
    assert [(s - M0, e - M0) for s, e in closes] == [(0, 1800), (1800, 3600), (3600, 5400),
                                                     (5400, 7200)]
    rows = await db.stats_series(StatsQuery(M0, M0 + 7200, 3600))
    assert sum(p["executions"]["started"] for p in rows["series"][0]["points"]) == 3
    # The step-time percentiles were taken on another thread than the event loop's.
    assert threads and threading.get_ident() not in threads
