"""Stats figures (issue 19.2), printed, never asserted: GET /api/stats over a week of
one-minute rollups, and the CPU the rollup job costs per minute.

For each ``--db`` engine in turn: a real FarmDB in a temp data folder (or on a PostgreSQL
database) holding ``--days`` (default 7) of one-minute rollups of a farm of ``--phones``
(60) phones on 3 nodes, ``--sequences`` (10) sequences and 3 clients, written through the
farm's own writer (`actors.store.stats.save_minutes`, a day per writer job): per minute
a phone row per client and node, and about one execution row per two phones (started,
completed, failed, recovery, step times) spread over clients, sequences and nodes.

Then ``GET /api/stats?from=7d&by=...`` is timed through a real aiohttp server (make_app over
a Hub over that FarmDB, with the farm's access control and a super user's token, and a
tenant's token for ``tenant farm``), ``--requests`` requests per ``by``, one at a time:
median and p95 ms, the step chosen and the points per answer.

Last, the rollup job: a `RollupService` over ``--phones`` phone views closes ``--minutes``
(10) minutes, each with its 12 phone samples and ``--phones``/2 executions of 10 steps
each in the execution records (written before the minute closes, as the farm would): the
process CPU time (``time.process_time``: the event loop and the writer thread; on
PostgreSQL not the server's) per minute, median and max, as milliseconds and as a share of
one core.

Run: python bench/stats.py [--db sqlite] [--db pgtemp] [--db postgresql://USER@HOST/DB
         --db-password-file FILE] [--days 7] [--requests 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engines import DB_HELP, db_targets, label  # noqa: E402

SUPER_TOKEN = "bench-super-token"
CLIENTS = ("client-a", "client-b", "client-c")
NODES = ("rack-1", "rack-2", "rack-3")
BYS = ("farm", "client", "sequence", "node", "tenant farm")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def serial(n: int) -> str:
    return f"bench-{n:03d}"


async def seed_rollups(db, args, clients: dict[str, int], end: int) -> int:
    """``args.days`` of minute rows ending at ``end``; how many execution rows."""
    from actors.store.stats import ExecutionCell, save_minutes

    rng = random.Random(7)
    sequences = [f"bench/seq{n:02d}" for n in range(args.sequences)]
    ids = list(clients.values())
    rows = 0
    day = 86400
    start = end - args.days * day
    for chunk in range(start, end, day):
        cells: dict = {}
        phones: dict = {}
        samples: dict[int, int] = {}
        for minute in range(chunk, chunk + day, 60):
            samples[minute] = 12
            for c, client in enumerate(ids):
                for node in NODES:
                    share = args.phones / len(ids) / len(NODES)
                    busy = rng.uniform(0, share)
                    phones[(minute, client, node)] = (busy, share - busy, 0.0, 0.0)
            for _ in range(args.phones // 2):
                key = (minute, rng.choice(ids), rng.choice(sequences), rng.choice(NODES))
                cell = cells.setdefault(key, ExecutionCell())
                cell.started += 1
                if rng.random() < 0.9:
                    cell.completed += 1
                else:
                    cell.failed += 1
                    cell.recovery_attempts += 1
                    cell.recovery_succeeded += rng.random() < 0.6
                cell.step_ms.extend(rng.uniform(200, 4000) for _ in range(3))
        rows += len(cells)
        await save_minutes(db, chunk, chunk + day, cells, phones, samples)
    return rows


async def tenant_token(db) -> str:
    from actors.access.principal import SUPER_LOCAL
    from actors.access.tokens import TokenStore
    from actors.access.users import UserStore

    user = await UserStore(db).add_user(SUPER_LOCAL, "bench-tenant", "bench-tenant-password",
                                        "admin", clients=[CLIENTS[1]])
    token, _ = await TokenStore(db).issue(user["user_id"], "api", name="bench")
    return token


async def time_api(hub, db, args, engine: str) -> dict[str, float]:
    import aiohttp
    from aiohttp.test_utils import TestServer

    from actors.access.service import Access
    from actors.control.app import make_app

    tenant = await tenant_token(db)
    app = make_app(hub, access=Access.over(db, legacy_token=SUPER_TOKEN))
    out = {}
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        print(f"  GET /api/stats?from={args.days}d, {args.requests} requests per by, one at a "
              f"time ({engine}):")
        print(f"    {'by':12} {'median ms':>10} {'p95 ms':>8} {'step':>6} {'series':>7} "
              f"{'points':>7}")
        for by in BYS:
            token = tenant if by.startswith("tenant") else SUPER_TOKEN
            params = {"from": f"{args.days}d", "by": by.split()[-1]}
            times = []
            for _ in range(args.requests):
                t = time.perf_counter()
                async with session.get(server.make_url("/api/stats"), params=params,
                                       headers={"Authorization": f"Bearer {token}"}) as resp:
                    body = await resp.json()
                times.append((time.perf_counter() - t) * 1000)
                if resp.status != 200:
                    raise SystemExit(f"{engine} by={by}: {resp.status} {body}")
            points = sum(len(s["points"]) for s in body["series"])
            out[by] = pct(times, 95)
            print(f"    {by:12} {statistics.median(times):10.1f} {out[by]:8.1f} "
                  f"{body['step_s']:>5}s {len(body['series']):7} {points:7}")
    return out


async def time_rollups(db, args, clients: dict[str, int], engine: str) -> tuple[float, float]:
    """CPU ms per closed minute: (median, max)."""
    from actors.coordinator.rollups import RollupService
    from actors.store.execution_records import utc_text

    rng = random.Random(11)
    client_of = {serial(n): list(clients.values())[n % len(clients)]
                 for n in range(args.phones)}
    views = [{"serial": serial(n), "node": NODES[n % len(NODES)],
              "state": "online", "lock_holder": None} for n in range(args.phones)]
    base = (int(time.time()) // 60 + 10) * 60  # future minutes: no seeded rollup there
    clock = {"t": float(base)}
    service = RollupService(db, lambda: views, client_of=client_of.get,
                            clock=lambda: clock["t"], catch_up_s=0)
    await service.start()
    cpu = []
    n = 0
    for m in range(args.minutes):
        minute = base + m * 60
        # The minute's execution records, as the hub writes them while it runs.
        rows, steps = [], []
        for _ in range(args.phones // 2):
            n += 1
            began = datetime.fromtimestamp(minute + rng.uniform(0, 30), timezone.utc)
            ended = began + timedelta(seconds=rng.uniform(5, 25))
            rows.append((f"bench-ex-{n}", serial(rng.randrange(args.phones)),
                         f"bench/seq{rng.randrange(args.sequences):02d}",
                         "completed" if rng.random() < 0.9 else "failed",
                         utc_text(began), utc_text(ended)))
            steps.append((f"bench-ex-{n}", began, ended))

        def job(conn, rows=rows, steps=steps) -> None:
            conn.executemany("INSERT INTO executions (execution_key, serial, sequence, status,"
                             " start_time, end_time) VALUES (?, ?, ?, ?, ?, ?)", rows)
            for key, began, ended in steps:
                eid = conn.execute("SELECT execution_id FROM executions WHERE"
                                   " execution_key = ?", (key,)).fetchone()[0]
                span = (ended - began) / 10
                conn.executemany(
                    "INSERT INTO execution_steps (execution_id, step_number, status,"
                    " start_time, end_time) VALUES (?, ?, 'success', ?, ?)",
                    [(eid, i, utc_text(began + span * i), utc_text(began + span * (i + 1)))
                     for i in range(10)])

        await db._atomic(job)
        t0 = time.process_time()
        for s in range(12):
            clock["t"] = minute + s * 5
            views[s % len(views)]["lock_holder"] = "x" if s % 2 else None
            service.sample()
        clock["t"] = minute + 60 + service.grace_s
        closed = await service.close_due()
        cpu.append((time.process_time() - t0) * 1000)
        assert closed == 1, closed
    med, top = statistics.median(cpu), max(cpu)
    print(f"  rollup job ({engine}): {args.phones} phones, {args.phones // 2} executions of 10 "
          f"steps a minute: CPU {med:.1f} ms per minute median, {top:.1f} ms max "
          f"({med / 600:.3f}% of one core)")
    return med, top


async def run_engine(target, args) -> dict:
    from actors.coordinator.hub import Hub
    from actors.store.event_store import EventStore
    from actors.store.farm_db import FarmDB

    engine = label(target)
    print(f"== {engine} ({target.describe()})")
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        db = await FarmDB.open(data / "farm.sqlite3", target=target)
        store = await EventStore(data / "coordinator.sqlite3", target).open()
        try:
            clients = {name: await db.upsert_client(name) for name in CLIENTS}
            for n in range(args.phones):
                await db.upsert_phone(serial(n), client=CLIENTS[n % len(CLIENTS)])
            end = int(time.time()) // 60 * 60
            t = time.perf_counter()
            rows = await seed_rollups(db, args, clients, end)
            print(f"  seeded {args.days} days of minutes: {rows:,} execution rows, "
                  f"{args.days * 1440 * len(CLIENTS) * len(NODES):,} phone rows in "
                  f"{time.perf_counter() - t:.1f} s")
            if target.is_postgresql:
                await db._atomic(lambda conn: conn.execute("ANALYZE"))
            hub = Hub("tcp://127.0.0.1:1", "bench-secret", store, db=db, data_dir=data)
            await hub.owners.load()
            api = await time_api(hub, db, args, engine)
            cpu = await time_rollups(db, args, clients, engine)
        finally:
            await store.close()
            await db.close()
    return {"engine": engine, "api": api, "cpu": cpu}


async def main_async(args) -> None:
    logging.basicConfig(level=logging.ERROR)
    results = []
    with db_targets(args.db, args.db_password_file) as targets:
        for target in targets:
            results.append(await run_engine(target, args))
    if len(results) > 1:
        print("== comparison (p95 ms per by; rollup CPU ms per minute)")
        for r in results:
            cells = "  ".join(f"{by} {ms:.1f}" for by, ms in r["api"].items())
            print(f"  {r['engine']:10} {cells}  rollup {r['cpu'][0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", action="append", help=DB_HELP)
    ap.add_argument("--db-password-file", help="the PostgreSQL password (first line)")
    ap.add_argument("--days", type=int, default=7, help="days of one-minute rollups")
    ap.add_argument("--phones", type=int, default=60)
    ap.add_argument("--sequences", type=int, default=10)
    ap.add_argument("--requests", type=int, default=30, help="requests per by")
    ap.add_argument("--minutes", type=int, default=10, help="minutes the rollup job closes")
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
