"""Scheduler throughput figures, printed, never asserted (issue 6, point 8).

One coordinator in this process (Hub with its RunManager and ScheduleService, a real FarmDB
and EventStore in a temp dir, real nng on 127.0.0.1) and N simulated nodes in a subprocess
(`--sim`): each is a real NodeLink (farm secret, node journal on disk) reporting its phones
online; a RunSequence is answered "ok" at once and its execution events are sent at once
(execution_started, step_started/step_finished per step, execution_finished "completed").
The sequence is a one-step `sleep 0` saved as the recorded sequence `bench/tiny`.

Phases (each prints its own figures):
1. direct: `RunManager.start_one` called by `--concurrency` workers for `--direct-s` seconds
   (the dispatch path without the scheduler: execution record, RunSequence round trip);
   then the node events are drained.
2. schedules, one phase per `--phases` entry SHAPE@STAGGER (STAGGER: the ScheduleService's
   per-node stagger, no two dispatches to one node within it; 1 s is the production
   default). `scheduled` schedules planned for `--feed-s` seconds at `--rate` executions/min:
   `burst` = `phone:all` every phones*60/rate s (1,000 jobs with the same planned time);
   `spread` = a rotating slice of rate/60*`--slot-s` phones (`phone:a,b,...`) every
   `--slot-s` (the phones in node order, so a slice lands on about two nodes: the worst
   case for a per-node stagger); `mixed` = the same with the phones taken round robin
   across the nodes (a slice lands on every node, as a farm-wide scope does). Measured until every job was dispatched or `--cutoff-s` after the last
   planned time: executions dispatched per minute, scheduling delay (the moment the
   service's dispatch answered "started" minus the job's planned time; jobs still queued at
   the cutoff count with their delay so far, so the p99 is then a lower bound), the per
   dispatch time (start_one, and its RunSequence round trip), DB rows inserted per second
   (executions, execution_steps, schedule_events; counted after the phase's executions
   finished).
Target line per phase: 10,000 executions/min with p99 delay < 1 s.
Each schedule phase also prints the live scheduler state and the bytes of scheduler rows each
save wrote (only what changed is saved). `--max-dispatch N` sets the dispatches in flight.
`--profile` runs cProfile over the coordinator (this process) during the schedule phases and
prints the top functions by cumulative and own time.

Engines (issue 18): `--db` is repeatable (sqlite, the default; postgresql://USER@HOST/DB with
`--db-password-file`, an empty database; pgtemp, a throwaway cluster from tests/pg_cluster.py)
and every phase runs on each engine in turn, one after the other in this process; every
figure line starts with the engine's name and a last comparison gives, per phase, each
engine's executions/min and p99 beside the first engine's.

Run: python bench/scheduler.py [--phones 1000] [--nodes 20] [--rate 10000] [--feed-s 20]
                               [--phases spread@0,burst@0,spread@1] [--direct-s 15] [--profile]
                               [--db sqlite] [--db postgresql://USER@HOST/DB
                                --db-password-file FILE] [--db pgtemp]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import math
import os
import pstats
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.node.device.adb_server import free_port  # noqa: E402
from bench.engines import DB_HELP, db_targets, label  # noqa: E402
from protocol.messages import CommandResult, PhoneInfo, RunSequence  # noqa: E402
from protocol.transport import NodeLink  # noqa: E402

SECRET = "bench-secret"
SEQUENCE = {"name": "tiny", "steps": [{"type": "sleep", "seconds": 0}]}
TARGET_PER_MIN = 10_000
TARGET_P99_S = 1.0
PARTS: dict[str, list[float]] = {"start_one": [], "send_run": [], "sequence": [],
                                 "create_execution": []}
TABLES = ("executions", "execution_steps", "schedule_events")
SAVES: list[int] = []  # bytes of scheduler rows written by each save of the phase


def serials_of(node: int, phones: int) -> list[str]:
    return [f"sim{node:02d}-{p:03d}" for p in range(phones)]


# --- node simulators (subprocess) --------------------------------------------------------------

async def simulate(address: str, first: int, count: int, phones: int, journal_dir: str) -> None:
    links = []
    for n in range(first, first + count):
        name = f"simnode{n:02d}"
        infos = [PhoneInfo(serial=s, state="online", detail={"state": "online"})
                 for s in serials_of(n, phones)]
        link_box: list[NodeLink] = []

        async def emit(link_box=link_box, serial=None, run=None) -> None:
            link = link_box[0]
            base = {"execution_id": run.execution_id, "run_id": run.run_id}
            await link.send_event("execution_started", serial,
                                  {**base, "sequence": run.sequence, "account": run.account})
            for i, step in enumerate(run.steps):
                path = f"steps[{i}]"
                await link.send_event("step_started", serial,
                                      {**base, "index": i, "path": path, "type": "sleep"})
                await link.send_event("step_finished", serial,
                                      {**base, "index": i, "path": path, "type": "sleep",
                                       "status": "ok", "screen": None, "attempts": 1,
                                       "error": None})
            await link.send_event("execution_finished", serial,
                                  {**base, "status": "completed", "error": None, "reason": None,
                                   "failed_step": None, "last_ok_step": len(run.steps) - 1})

        tasks: set[asyncio.Task] = set()

        async def on_command(cmd, emit=emit, tasks=tasks) -> CommandResult:
            if isinstance(cmd.action, RunSequence):
                t = asyncio.get_running_loop().create_task(emit(serial=cmd.serial, run=cmd.action))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                return CommandResult(command_id=cmd.command_id, serial=cmd.serial, status="ok",
                                     data={"started": True})
            return CommandResult(command_id=cmd.command_id, serial=cmd.serial, status="ok")

        link = NodeLink(address, SECRET, name, lambda infos=infos: infos,
                        journal=Path(journal_dir) / f"{name}.sqlite3", on_command=on_command)
        link_box.append(link)
        links.append(await link.start())
    print("ready", flush=True)
    # Run until the parent closes stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for link in links:
        await link.close()


# --- coordinator side ---------------------------------------------------------------------------

ENGINE = ""  # the engine of the run under way, named in every figure line
# (phase, engine) -> (executions/min, p99 delay s, p99 a lower bound) for the comparison.
RESULTS: dict[tuple[str, str], tuple[float, float, bool]] = {}


def say(line: str) -> None:
    """A figure line, named by the engine it was measured on."""
    print(f"[{ENGINE}] {line}" if ENGINE else line, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def row_counts(db) -> dict[str, int]:
    out = {}
    for t in TABLES:
        out[t] = (await db._one(f"SELECT COUNT(*) FROM {t}"))[0]
    return out


async def active_count(db) -> int:
    return (await db._one("SELECT COUNT(*) FROM executions WHERE status IN "
                          "('pending', 'running', 'paused')"))[0]


async def drain(db, timeout: float) -> float:
    t0 = time.monotonic()
    while await active_count(db) and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


def print_rows(before: dict, after: dict, elapsed: float) -> None:
    diff = {t: after[t] - before[t] for t in TABLES}
    total = sum(diff.values())
    parts = ", ".join(f"{t} {diff[t]}" for t in TABLES)
    say(f"  DB rows inserted: {total} in {elapsed:.1f} s = {total / elapsed:.0f} rows/s ({parts})")


def target_line(phase: str, per_min: float, p99: float, p99_bound: bool = False) -> None:
    RESULTS[(phase, ENGINE)] = (per_min, p99, p99_bound)
    ok_rate = per_min >= TARGET_PER_MIN
    ok_p99 = p99 < TARGET_P99_S and not p99_bound
    say(f"  target {TARGET_PER_MIN:,}/min with p99 < {TARGET_P99_S:.0f} s: "
          f"{'MET' if ok_rate and ok_p99 else 'MISSED'} (rate {per_min:,.0f}/min "
          f"{'ok' if ok_rate else 'short'}, p99 {'>= ' if p99_bound else ''}{p99:.2f} s "
          f"{'ok' if ok_p99 else 'over'})")


async def phase_direct(hub, db, serials: list[str], seconds: float, concurrency: int) -> None:
    say(f"direct: RunManager.start_one, {concurrency} concurrent callers, {seconds:.0f} s")
    before = await row_counts(db)
    lat: list[float] = []
    end = time.monotonic() + seconds
    t0 = time.monotonic()

    async def worker(i: int) -> None:
        k = i
        while time.monotonic() < end:
            serial = serials[k % len(serials)]
            k += concurrency
            t = time.perf_counter()
            out = await hub.runs.start_one("bench/tiny", serial, None)
            lat.append(time.perf_counter() - t)
            assert out["status"] == "pending", out

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    sent_s = time.monotonic() - t0
    drained = await drain(db, 120)
    elapsed = time.monotonic() - t0
    per_min = len(lat) / sent_s * 60
    say(f"  executions dispatched: {len(lat)} in {sent_s:.1f} s = {per_min:,.0f}/min "
          f"(start_one latency p50 {pct(lat, 50) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms)")
    say(f"  node events drained {drained:.1f} s after the last start "
          f"({await active_count(db)} executions still active)")
    print_rows(before, await row_counts(db), elapsed)
    # No planned time here: the delay is the start_one call itself.
    target_line("direct", per_min, pct(lat, 99))


async def phase_schedules(hub, db, serials: list[str], rate: float, feed_s: float,
                          cutoff_s: float, shape: str, slot_s: float, stagger: float, tag: str,
                          dispatched: list) -> None:
    from actors.coordinator.scheduling.scheduler import Schedule

    svc = hub.schedules
    svc.scheduler.stagger = timedelta(seconds=stagger)
    # As the service sets it: a node may start tick/stagger executions per tick.
    svc.scheduler.max_node_burst = max(1, int(svc.tick_s / stagger)) if stagger > 0 else 1
    if shape == "mixed":  # round robin across the nodes (serials_of names them simNN-PPP)
        serials = sorted(serials, key=lambda s: (s.split("-")[1], s))
    phones = len(serials)
    if shape == "burst":  # every phone at one planned time, every phones*60/rate s
        every = phones * 60 / rate
        per_fire = phones
        what = f"on phone:all ({phones} jobs each) every {every:.1f} s"
    else:  # spread: a slice of the phones every slot_s
        every = slot_s
        per_fire = max(1, min(phones, math.ceil(rate / 60 * slot_s)))
        what = f"of {per_fire} phones each (phone:a,b,..., rotating) every {every:g} s"
    fires = max(1, int(feed_s / every))
    say(f"schedules [{shape}, stagger {stagger:g} s]: {fires} scheduled schedules {what} "
          f"= {per_fire * 60 / every:,.0f} planned/min")
    before = await row_counts(db)
    dispatched.clear()
    for v in PARTS.values():
        v.clear()
    SAVES.clear()
    first = datetime.now(timezone.utc) + timedelta(seconds=3)
    planned = []
    for i in range(fires):
        at = first + timedelta(seconds=i * every)
        planned.append(at)
        if shape == "burst":
            target = "phone:all"
        else:
            start = (i * per_fire) % phones
            target = "phone:" + ",".join(serials[(start + k) % phones] for k in range(per_fire))
        await hub.add_schedule(Schedule(id=f"{tag}-{i}", sequence="bench/tiny", target=target,
                                        type="scheduled", at=at))
    phones = per_fire  # jobs per fire, below
    total = fires * phones
    t_first = first.timestamp()
    deadline = planned[-1].timestamp() + cutoff_s
    while len(dispatched) < total and time.time() < deadline:
        await asyncio.sleep(0.2)
    t_stop = time.time()
    delays = [d for d, _ in dispatched]
    n = len(delays)
    last = max((t for _, t in dispatched), default=t_first)
    # At least the planned span (fires x interval): keeping up gives the planned rate.
    span = max(fires * every, (last if n == total else t_stop) - t_first)
    per_min = n / span * 60
    # Jobs not dispatched by the cutoff: their delay so far (a lower bound).
    queued = [t_stop - at.timestamp() for at in planned for _ in range(phones)][n:] \
        if n < total else []
    all_delays = delays + [q for q in queued if q > 0]
    say(f"  executions dispatched: {n} of {total} in {span:.1f} s from the first planned "
          f"time = {per_min:,.0f}/min" + (f" ({total - n} still queued at the cutoff)"
                                           if n < total else ""))
    say(f"  scheduling delay (dispatched - planned): p50 {pct(delays, 50):.2f} s, "
          f"p99 {pct(delays, 99):.2f} s, max {max(delays, default=float('nan')):.2f} s"
          + (f"; with the queued jobs' delay so far: p50 >= {pct(all_delays, 50):.2f} s, "
             f"p99 >= {pct(all_delays, 99):.2f} s" if n < total else ""))
    if PARTS["start_one"]:
        def ms(key: str) -> str:
            v = PARTS[key]
            return f"p50 {pct(v, 50) * 1000:.1f} / p99 {pct(v, 99) * 1000:.1f} ms"

        say(f"  per dispatch: start_one {ms('start_one')}; in it: "
              f"sequence load {ms('sequence')}, create_execution {ms('create_execution')}, "
              f"RunSequence round trip {ms('send_run')}")
    state = hub.schedules.scheduler.state
    say(f"  scheduler state: {len(state.schedules)} schedules and {len(state.jobs)} jobs live "
          f"({len(msgspec.json.encode(state)) / 1e6:.2f} MB whole); {len(SAVES)} saves wrote "
          f"p50 {pct(SAVES, 50) / 1e3:.1f} / p99 {pct(SAVES, 99) / 1e3:.1f} / max "
          f"{max(SAVES, default=0) / 1e3:.1f} kB of rows each")
    # Stop feeding, let what was dispatched finish, then count the rows of this phase.
    for i in range(fires):
        try:
            await hub.control_schedule(f"{tag}-{i}", "cancel")
        except Exception:  # noqa: BLE001 - already completed
            pass
    await drain(db, 60)
    stuck = await db._all("SELECT execution_key, serial, status FROM executions WHERE status IN "
                          "('pending', 'running', 'paused') LIMIT 5")
    if stuck:
        say(f"  still active after 60 s: {await active_count(db)} executions, e.g. "
              f"{[tuple(r) for r in stuck]}")
    print_rows(before, await row_counts(db), time.time() - t_first)
    target_line(f"{shape}@{stagger:g}", per_min, pct(all_delays, 99), p99_bound=n < total)


async def coordinator(args: argparse.Namespace, target) -> None:
    """The phases on one engine (``target``: an actors.store.db_target.DbTarget)."""
    global ENGINE
    ENGINE = label(target)
    logging.basicConfig(level=logging.ERROR)
    from actors.store.event_store import EventStore
    from actors.coordinator.hub import Hub
    from actors.store.farm_db import FarmDB

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "data"
        (data / "sequences" / "bench").mkdir(parents=True)
        (data / "sequences" / "bench" / "tiny.json").write_text(json.dumps(SEQUENCE))
        db = await FarmDB.open(tmp_path / "farm.sqlite3", target=target)
        if (await db._one("SELECT COUNT(*) FROM executions"))[0]:
            await db.close()
            raise SystemExit(f"{target.describe()}: not empty; the bench needs an empty "
                             "database (it leaves its rows there)")
        say(f"farm database: {target.describe()}")
        serials = [s for n in range(args.nodes) for s in serials_of(n, args.phones // args.nodes)]
        # Concurrent upserts: the farm DB's single writer commits them in a few batches.
        await asyncio.gather(*(db.upsert_phone(s, model="Simulated") for s in serials))
        store = await EventStore(tmp_path / "coordinator.sqlite3", target).open()
        address = f"tcp://127.0.0.1:{free_port()}"
        hub = Hub(address, SECRET, store, db=db, data_dir=data)
        dispatched: list[tuple[float, float]] = []
        svc = hub.schedules
        original = svc._dispatch

        async def timed_dispatch(job) -> str:
            answer = await original(job)
            if answer == "started":
                now = time.time()
                dispatched.append((now - job.occurrence.timestamp(), now))
            return answer

        svc._dispatch = timed_dispatch  # before start(): the core is built with it
        # Where a dispatch's time goes: the whole start_one vs. its RunSequence round trip.
        original_start, original_send = hub.runs.start_one, hub.send_run

        async def timed_start(*a, **kw):
            t = time.perf_counter()
            try:
                return await original_start(*a, **kw)
            finally:
                PARTS["start_one"].append(time.perf_counter() - t)

        async def timed_send(*a, **kw):
            t = time.perf_counter()
            try:
                return await original_send(*a, **kw)
            finally:
                PARTS["send_run"].append(time.perf_counter() - t)

        hub.runs.start_one, hub.send_run = timed_start, timed_send
        original_seq, original_create = hub.runs.sequence, db.create_execution

        def timed_seq(*a, **kw):
            t = time.perf_counter()
            try:
                return original_seq(*a, **kw)
            finally:
                PARTS["sequence"].append(time.perf_counter() - t)

        async def timed_create(*a, **kw):
            t = time.perf_counter()
            try:
                return await original_create(*a, **kw)
            finally:
                PARTS["create_execution"].append(time.perf_counter() - t)

        hub.runs.sequence, db.create_execution = timed_seq, timed_create
        original_save = db.save_scheduler_rows

        async def counted_save(rows, deletes, events, **kw):
            SAVES.append(sum(len(v) for v in rows.values()))
            return await original_save(rows, deletes, events, **kw)

        db.save_scheduler_rows = counted_save
        await hub.start()
        if args.max_dispatch:
            hub.schedules.scheduler.max_concurrent_dispatch = args.max_dispatch

        (tmp_path / "journals").mkdir()
        procs = []
        per = -(-args.nodes // args.sim_procs)
        for first in range(0, args.nodes, per):
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--sim", address, str(first),
                 str(min(per, args.nodes - first)), str(args.phones // args.nodes),
                 str(tmp_path / "journals")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT))
        try:
            t0 = time.monotonic()
            while sum(r["state"] == "online" for r in hub.phone_rows.values()) < len(serials):
                if time.monotonic() - t0 > 60:
                    raise SystemExit("simulated phones not online after 60 s")
                await asyncio.sleep(0.1)
            say(f"{len(serials)} simulated phones on {args.nodes} simulated nodes online "
                  f"after {time.monotonic() - t0:.1f} s ({len(procs)} simulator process(es))")
            if args.direct_s > 0:
                await phase_direct(hub, db, serials, args.direct_s, args.concurrency)
            prof = cProfile.Profile() if args.profile else None
            for i, phase in enumerate(args.phases.split(",")):
                shape, _, stagger = phase.partition("@")
                if prof:
                    prof.enable()
                await phase_schedules(hub, db, serials, args.rate, args.feed_s, args.cutoff_s,
                                      shape, args.slot_s, float(stagger or 1), f"b{i}",
                                      dispatched)
                if prof:
                    prof.disable()
            if prof:
                # cumulative: the farm's own functions (where the loop's time goes); own
                # time: everything (what is hot underneath).
                for key, only in (("cumulative", "actors|protocol"), ("tottime", "")):
                    out = io.StringIO()
                    pstats.Stats(prof, stream=out).sort_stats(key).print_stats(only, 40)
                    say(f"--- coordinator profile (schedule phases), by {key} ---")
                    print("\n".join(out.getvalue().splitlines()[6:50]))
        finally:
            for p in procs:
                p.stdin.close()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            try:
                await asyncio.wait_for(hub.close(), 60)
            except asyncio.TimeoutError:  # name what is stuck rather than hang the bench
                say("hub.close did not finish within 60 s; tasks still running:", flush=True)
                for task in asyncio.all_tasks():
                    task.print_stack(file=sys.stdout)
                raise
            await store.close()
            await db.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--sim":
        logging.basicConfig(level=logging.ERROR)
        address, first, count, phones, journals = sys.argv[2:7]
        run = lambda: asyncio.run(simulate(address, int(first), int(count), int(phones), journals))
        if os.environ.get("BENCH_SIM_PROFILE"):  # where a simulator spends its time
            cProfile.runctx("run()", globals(), {"run": run}, os.environ["BENCH_SIM_PROFILE"])
        else:
            run()
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--phones", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--sim-procs", type=int, default=1, help="simulator subprocesses")
    ap.add_argument("--rate", type=float, default=TARGET_PER_MIN,
                    help="planned executions per minute fed through schedules")
    ap.add_argument("--feed-s", type=float, default=20.0, help="seconds of planned fire times")
    ap.add_argument("--cutoff-s", type=float, default=15.0,
                    help="stop measuring this long after the last planned time")
    ap.add_argument("--phases", default="spread@0,burst@0,spread@1",
                    help="comma list of SHAPE@STAGGER schedule phases: SHAPE burst (phone:all "
                         "at one time), spread (a slice every --slot-s, node by node) or "
                         "mixed (a slice across all nodes); STAGGER the "
                         "ScheduleService's per-node stagger in s (production: 1)")
    ap.add_argument("--slot-s", type=float, default=0.5, help="spread: seconds between fires")
    ap.add_argument("--direct-s", type=float, default=15.0, help="0 skips the direct phase")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--max-dispatch", type=int, default=0,
                    help="dispatches in flight at once (default: the scheduler's)")
    ap.add_argument("--db", action="append", help=DB_HELP)
    ap.add_argument("--db-password-file", help="the PostgreSQL password (first line)")
    args = ap.parse_args()
    with db_targets(args.db, args.db_password_file) as targets:
        for target in targets:
            asyncio.run(coordinator(args, target))
    compare()


def compare() -> None:
    """Per phase: each engine's rate and p99 beside SQLite's (the first engine's)."""
    engines = list(dict.fromkeys(engine for _, engine in RESULTS))
    if len(engines) < 2:
        return
    print("comparison (executions/min and p99 scheduling delay, each engine vs "
          f"{engines[0]}):")
    for phase in dict.fromkeys(phase for phase, _ in RESULTS):
        base = RESULTS.get((phase, engines[0]))
        for engine in engines[1:]:
            got = RESULTS.get((phase, engine))
            if base is None or got is None:
                print(f"  {phase}: {engine} {'missing' if got is None else 'ran'}, "
                      f"{engines[0]} {'missing' if base is None else 'ran'}")
                continue
            print(f"  {phase}: {engine} {got[0]:,.0f}/min p99 {'>= ' * got[2]}{got[1]:.2f} s"
                  f" vs {engines[0]} {base[0]:,.0f}/min p99 {'>= ' * base[2]}{base[1]:.2f} s"
                  f" (rate x{got[0] / base[0]:.2f}; target {TARGET_PER_MIN:,}/min with p99 < "
                  f"{TARGET_P99_S:.0f} s: {engine} "
                  f"{'MET' if got[0] >= TARGET_PER_MIN and got[1] < TARGET_P99_S and not got[2] else 'MISSED'})")


if __name__ == "__main__":
    main()
