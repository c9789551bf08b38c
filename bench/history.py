"""Execution-history figures, printed, never asserted (issue 18: history queries over 1 M rows
p95 < 100 ms on both engines, and the backup time and size of that database).

For each ``--db`` engine in turn: a real FarmDB (and EventStore) in a temp data folder, or
on a PostgreSQL database, seeded with ``--rows`` executions (default 1,000,000) through the
farm's own single writer in batches of ``--batch`` (one writer job, one transaction, each;
SQLite executemany, PostgreSQL one INSERT ... SELECT FROM unnest(arrays) per batch, as
COPY is refused on a table with forced row-level security): spread over ``--phones`` phones
(10 clients), 20 sequences, runs of 10 executions, the statuses of a real farm (mostly
completed; the newest 1,000 still pending/running/paused) and a year of start times, in
id order as a farm writes them. Seeding time is printed. PostgreSQL is then ANALYZEd
(autovacuum would do so minutes after a bulk insert); SQLite is not (the farm never does).

Then ``GET /api/executions`` is timed through a real aiohttp server (make_app over a Hub over
that FarmDB, with the farm's access control: a super token, and a tenant's API token for
the tenant kinds), ``--requests`` requests per filter kind, one at a time, keep-alive:
p50/p95/p99 per kind and the rows per page, then ``p95 < 100 ms: MET/MISSED`` per engine
(on the worst kind). Last, a backup of the database is timed with the farm's backup engines
(actors/store/backup: SQLite's online backup API of farm.sqlite3 and coordinator.sqlite3
with its quick_check; PostgreSQL's pg_dump -Fc with row security on, phonefarm.clients=*)
and its size printed.

Run: python bench/history.py [--db sqlite] [--db postgresql://USER@HOST/DB
         --db-password-file FILE] [--db pgtemp] [--rows 1000000] [--requests 100]
``pgtemp`` starts a throwaway PostgreSQL cluster (tests/pg_cluster.py) for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engines import DB_HELP, db_targets, label  # noqa: E402

TARGET_P95_MS = 100.0
SUPER_TOKEN = "bench-super-token"
CLIENTS = 10
SEQUENCES = [f"bench/seq{n:02d}" for n in range(20)]
RUN_SIZE = 10
ACTIVE_TAIL = 1000  # the newest rows: still pending, running or paused
FINAL = (("completed", 80), ("failed", 12), ("cancelled", 5), ("stopped", 1), ("locked", 2))
ACTIVE = ("pending", "running", "paused")
COLUMNS = ("execution_key", "run_id", "serial", "sequence", "status", "phone_id",
           "start_time", "end_time", "error_message", "error_reason", "current_step")
PG_TYPES = ("text", "text", "text", "text", "text", "bigint", "timestamptz", "timestamptz",
            "text", "text", "bigint")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def serial(n: int) -> str:
    return f"bench-{n:04d}"


def key(n: int) -> str:
    return f"bx-{n:07d}"


# --- seeding ---------------------------------------------------------------------------------

def make_rows(first: int, count: int, total: int, phone_ids: dict[str, int],
              phones: int, start: datetime) -> list[tuple]:
    """Rows ``first``..``first+count-1`` of ``total`` (deterministic per row number)."""
    rng = random.Random(first)
    statuses = [s for s, w in FINAL for _ in range(w)]
    step = timedelta(days=365) / total
    out = []
    for n in range(first, first + count):
        s = serial(rng.randrange(phones))
        status = rng.choice(ACTIVE) if n >= total - ACTIVE_TAIL else rng.choice(statuses)
        began = start + step * n
        ended = None if status in ACTIVE else began + timedelta(seconds=rng.randint(5, 300))
        error = (f"step {rng.randint(0, 9)}: screen not found" if status == "failed" else None)
        out.append((key(n), f"run-{n // RUN_SIZE:07d}", s, SEQUENCES[rng.randrange(20)], status,
                    phone_ids[s], began.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    ended.strftime("%Y-%m-%d %H:%M:%S.%f") if ended else None, error,
                    "step_failed" if error else None, rng.randint(0, 9)))
    return out


def insert_job(rows: list[tuple], postgresql: bool) -> Callable[[Any], None]:
    """A writer job inserting ``rows`` in one statement (PostgreSQL) or executemany."""
    if postgresql:
        arrays = [list(col) for col in zip(*rows)]
        sql = (f"INSERT INTO executions ({', '.join(COLUMNS)}) SELECT * FROM unnest("
               + ", ".join(f"CAST(? AS {t}[])" for t in PG_TYPES) + ")")
        return lambda conn: conn.execute(sql, arrays) and None
    sql = (f"INSERT INTO executions ({', '.join(COLUMNS)}) VALUES "
           f"({', '.join('?' for _ in COLUMNS)})")
    return lambda conn: conn.executemany(sql, rows) and None


async def seed(db, target, args) -> tuple[datetime, datetime]:
    """Clients, phones and ``args.rows`` executions; the first and last start time."""
    for c in range(CLIENTS):
        await db.upsert_client(f"client-{c:02d}")
    await asyncio.gather(*(db.upsert_phone(serial(p), client=f"client-{p % CLIENTS:02d}")
                           for p in range(args.phones)))
    phone_ids = {r["serial"]: r["phone_id"] for r in await db.phone_rows()}
    start = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=365)
    t0 = time.perf_counter()
    done = 0
    while done < args.rows:
        count = min(args.batch, args.rows - done)
        rows = make_rows(done, count, args.rows, phone_ids, args.phones, start)
        await db._atomic(insert_job(rows, target.is_postgresql))
        done += count
        print(f"\r  seeding {done:,}/{args.rows:,} ({time.perf_counter() - t0:.0f} s)",
              end="", flush=True)
    took = time.perf_counter() - t0
    print(f"\r  seeded {args.rows:,} executions on {args.phones} phones in {took:.1f} s "
          f"({args.rows / took:,.0f} rows/s, writer jobs of {args.batch:,} rows)")
    if target.is_postgresql:
        t = time.perf_counter()
        await db._write("ANALYZE executions")
        print(f"  ANALYZE executions: {time.perf_counter() - t:.1f} s")
    return start, start + timedelta(days=365)


# --- the queries -----------------------------------------------------------------------------

def query_kinds(args, start: datetime) -> list[tuple[str, bool, Callable[[random.Random], dict]]]:
    """(name, as the tenant, random query of that kind)."""
    def week(rng: random.Random) -> tuple[str, str]:
        since = start + timedelta(days=rng.uniform(0, 358))
        return (since.isoformat() + "Z", (since + timedelta(days=7)).isoformat() + "Z")

    def window(rng: random.Random) -> dict:
        since, until = week(rng)
        return {"since": since, "until": until}

    rows = args.rows
    return [
        ("newest page", False, lambda rng: {}),
        ("status=failed", False, lambda rng: {"status": "failed"}),
        ("status=cancelled,stopped", False, lambda rng: {"status": "cancelled,stopped"}),
        ("status=running (newest only)", False, lambda rng: {"status": "running"}),
        ("serial", False, lambda rng: {"serial": serial(rng.randrange(args.phones))}),
        ("sequence", False, lambda rng: {"sequence": rng.choice(SEQUENCES)}),
        ("run_id", False, lambda rng: {"run_id": f"run-{rng.randrange(rows // RUN_SIZE):07d}"}),
        ("since+until (a week)", False, window),
        ("serial+status=failed", False,
         lambda rng: {"serial": serial(rng.randrange(args.phones)), "status": "failed"}),
        ("sequence+status+week", False,
         lambda rng: {"sequence": rng.choice(SEQUENCES), "status": "failed,cancelled",
                      **window(rng)}),
        ("deep page (before)", False, lambda rng: {"before": key(rng.randrange(rows))}),
        ("tenant: newest page", True, lambda rng: {}),
        ("tenant: status=failed", True, lambda rng: {"status": "failed"}),
        ("tenant: since+until", True, window),
    ]


async def tenant_token(db) -> str:
    """An API token of an admin of client-03 (a tenant: a tenth of the phones)."""
    from actors.access.principal import SUPER_LOCAL
    from actors.access.tokens import TokenStore
    from actors.access.users import UserStore

    user = await UserStore(db).add_user(SUPER_LOCAL, "bench-tenant", "bench-tenant-password",
                                        "admin", clients=["client-03"])
    token, _ = await TokenStore(db).issue(user["user_id"], "api", name="bench")
    return token


async def time_queries(hub, db, args, start: datetime, engine: str) -> float:
    """Each kind's figures; the worst kind's p95 in ms."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from actors.access.service import Access
    from actors.control.app import make_app

    tenant = await tenant_token(db)
    app = make_app(hub, access=Access.over(db, legacy_token=SUPER_TOKEN))
    worst = 0.0
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        print(f"  GET /api/executions, {args.requests} requests per kind, limit "
              f"{args.limit}, one at a time ({engine}):")
        print(f"    {'kind':32} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'rows/page':>10}")
        for name, as_tenant, make in query_kinds(args, start):
            rng = random.Random(name)
            headers = {"Authorization": f"Bearer {tenant if as_tenant else SUPER_TOKEN}"}
            times, rows = [], []
            for _ in range(args.requests):
                params = {"limit": str(args.limit), **make(rng)}
                t = time.perf_counter()
                async with session.get(server.make_url("/api/executions"), params=params,
                                       headers=headers) as resp:
                    body = await resp.json()
                times.append((time.perf_counter() - t) * 1000)
                if resp.status != 200:
                    raise SystemExit(f"{engine} {name} {params}: {resp.status} {body}")
                rows.append(len(body["executions"]))
            p95 = pct(times, 95)
            worst = max(worst, p95)
            print(f"    {name:32} {pct(times, 50):8.1f} {p95:8.1f} {pct(times, 99):8.1f} "
                  f"{sum(rows) / len(rows):10.1f}")
    return worst


# --- backup ----------------------------------------------------------------------------------

def time_backup(data: Path, target, out_root: Path) -> tuple[float, int, list[str]]:
    """Seconds, bytes and files of one backup of the databases (the farm's backup engines)."""
    from actors.store.backup.engines import SqliteEngine
    from actors.store.backup.postgres import PostgresEngine

    engine = PostgresEngine(target) if target.is_postgresql else SqliteEngine(data)
    out = out_root / f"backup-{engine.name}"
    out.mkdir()
    t = time.perf_counter()
    files = engine.dump(out, lambda n: None)
    took = time.perf_counter() - t
    return took, sum((out / f).stat().st_size for f in files), files


# --- one engine ------------------------------------------------------------------------------

async def run_engine(target, args) -> dict:
    from actors.coordinator.hub import Hub
    from actors.store.event_store import EventStore
    from actors.store.farm_db import FarmDB

    engine = label(target)
    print(f"== {engine} ({target.describe()})")
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        db = await FarmDB.open(data / "farm.sqlite3", target=target)
        store = await EventStore(data / "coordinator.sqlite3", target).open()
        try:
            start, _ = await seed(db, target, args)
            hub = Hub("tcp://127.0.0.1:1", "bench-secret", store, db=db, data_dir=data)
            await hub.owners.load()
            worst = await time_queries(hub, db, args, start, engine)
            met = "MET" if worst < TARGET_P95_MS else "MISSED"
            print(f"  {engine}: p95 < {TARGET_P95_MS:.0f} ms: {met} (worst kind's p95 "
                  f"{worst:.1f} ms, {args.rows:,} rows)")
            took, size, files = await asyncio.to_thread(time_backup, data, target, Path(tmp))
            print(f"  {engine}: backup {took:.1f} s, {size / 2**20:,.1f} MiB "
                  f"({', '.join(files)})")
        finally:
            await store.close()
            await db.close()
    return {"engine": engine, "p95": worst, "backup_s": took, "backup_bytes": size}


async def main_async(args) -> None:
    logging.basicConfig(level=logging.ERROR)
    results = []
    with db_targets(args.db, args.db_password_file) as targets:
        for target in targets:
            results.append(await run_engine(target, args))
    if len(results) > 1:
        print("== comparison")
        for r in results:
            print(f"  {r['engine']:10} worst p95 {r['p95']:7.1f} ms  backup "
                  f"{r['backup_s']:6.1f} s {r['backup_bytes'] / 2**20:8.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", action="append", help=DB_HELP)
    ap.add_argument("--db-password-file", help="the PostgreSQL password (first line)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="executions seeded")
    ap.add_argument("--phones", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50_000, help="rows per writer job")
    ap.add_argument("--requests", type=int, default=100, help="requests per filter kind")
    ap.add_argument("--limit", type=int, default=50, help="rows per page")
    args = ap.parse_args()
    if args.rows < ACTIVE_TAIL * 2 or args.phones < CLIENTS:
        ap.error(f"--rows at least {ACTIVE_TAIL * 2}, --phones at least {CLIENTS}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
