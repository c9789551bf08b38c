"""Metrics figures (issue 19.1), printed, never asserted.

1. Scrape time. A real `farm-coordinator --demo --phones 60 --metrics-listen 127.0.0.1:P`
   (60 virtual phones behind one node; its adb server and `farm-virtual` are the demo's
   child processes), each phone tapped ``--taps`` times by broadcast first (so every action
   series has samples); a metrics token made through POST /api/tokens {"scope": "metrics"}.
   Then ``--scrapes`` GET /metrics one at a time on the control endpoint with that token,
   and on the loopback --metrics-listen port without one: median and p95 ms (the whole
   HTTP round trip from this process), the body's size and series count, and the
   coordinator process's CPU per request (psutil), beside GET /api/health's as a baseline: on
   a loaded machine the wall time grows with the CPU a request needs. Target < 50 ms.
   ``--per-phone`` starts the coordinator with --metrics-per-phone as well.
   (The scrape reads no database: the stats rollups beside it do not change it.)

2. CPU cost under bench/scheduler.py's load. One coordinator in this process (Hub with its
   RunManager, a real FarmDB and EventStore in a temp dir, real nng) and bench/scheduler.py's
   node simulators in a subprocess (``--nodes`` nodes, ``--phones`` phones: each RunSequence
   answered at once with its execution events). ``--concurrency`` callers start one-step
   executions (`RunManager.start_one`, as bench/scheduler.py's direct phase) for
   ``--load-s`` seconds, then the events are drained; rounds alternate metrics off and on
   (``--rounds`` of each, in the same process, off first): on = `attach_metrics` (every hub
   event observed, the writers timed) and the registry rendered every ``--scrape-every-s``
   (default 15 s, Prometheus' default; 1 s for a worst case). Printed: process
   CPU seconds (``time.process_time``: the loop and the writer threads) per 1000
   executions, off and on, and the difference as a share. Target < 5%.

Run: python bench/metrics.py [--phones-demo 60] [--scrapes 200] [--per-phone]
                             [--phones 1000] [--nodes 20] [--load-s 15] [--rounds 2]
                             [--skip-scrape] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from actors.node.device.adb_server import free_port  # noqa: E402
from bench.scheduler import SECRET, SEQUENCE, active_count, serials_of  # noqa: E402

SCRAPE_TARGET_MS = 50.0
CPU_TARGET_PCT = 5.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def http(url: str, token: str | None = None, body: dict | None = None,
         timeout: float = 60) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers),
                                    timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- 1. scrape time ---------------------------------------------------------------------------

def scrape_times(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port, metrics_port = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "actors.coordinator", "--demo", "--phones",
                str(args.phones_demo), "--http", f"127.0.0.1:{port}", "--listen",
                f"tcp://127.0.0.1:{free_port()}", "--data", f"{tmp}/data", "--base-port", "0",
                "--log-level", "WARNING", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
        if args.per_phone:
            argv.append("--metrics-per-phone")
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            token_file = Path(tmp) / "data" / "admin.token"
            t0 = time.monotonic()
            online = 0
            while time.monotonic() - t0 < 300:
                if token_file.exists() and token_file.read_text().strip():
                    status, body = http(f"{base}/api/phones", token_file.read_text().strip())
                    if status == 200:
                        online = sum(p["state"] == "online" for p in json.loads(body)["phones"])
                        if online == args.phones_demo:
                            break
                time.sleep(0.5)
            admin = token_file.read_text().strip()
            coordinator = psutil.Process(proc.pid)  # its CPU, whatever else the machine runs
            print(f"scrape: {online} virtual phones online after {time.monotonic() - t0:.0f} s"
                  f"{' (--metrics-per-phone)' if args.per_phone else ''}", flush=True)
            for i in range(args.taps):
                http(f"{base}/api/actions", admin, {"scope": "phone:all", "action": {
                    "type": "tap", "x": 100 + i, "y": 1500}})
            time.sleep(2)  # the taps' events stored
            status, body = http(f"{base}/api/tokens", admin,
                                {"name": "bench-prometheus", "scope": "metrics"})
            assert status == 201, body
            metrics_token = json.loads(body)["token"]
            # /api/health (no token, a small JSON answer) is the baseline: the same HTTP
            # round trip to the same busy loop, without the metrics.
            for where, url, token in (("control endpoint, metrics token", f"{base}/metrics",
                                       metrics_token),
                                      ("--metrics-listen, no token",
                                       f"http://127.0.0.1:{metrics_port}/metrics", None),
                                      ("baseline GET /api/health", f"{base}/api/health",
                                       None)):
                times, size, text = [], 0, b""
                cpu0 = coordinator.cpu_times()
                for _ in range(args.scrapes):
                    t = time.perf_counter()
                    status, text = http(url, token)
                    times.append((time.perf_counter() - t) * 1000)
                    assert status == 200, text[:200]
                    size = len(text)
                samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
                cpu1 = coordinator.cpu_times()
                cpu_ms = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) \
                    / args.scrapes * 1000
                p50, p95 = statistics.median(times), pct(times, 95)
                verdict = ("" if "baseline" in where else
                           f"; target < {SCRAPE_TARGET_MS:.0f} ms: "
                           f"{'MET' if p95 < SCRAPE_TARGET_MS else 'MISSED'} (p95)")
                print(f"scrape ({where}): {args.scrapes} requests, median {p50:.1f} ms, "
                      f"p95 {p95:.1f} ms, max {max(times):.1f} ms; {size} bytes, "
                      f"{samples} samples{verdict}; coordinator CPU {cpu_ms:.1f} ms per "
                      f"request; load average {os.getloadavg()[0]:.1f} on "
                      f"{os.cpu_count()} CPUs", flush=True)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


# --- 2. CPU cost under load -------------------------------------------------------------------

async def load_round(hub, db, serials: list[str], seconds: float, concurrency: int,
                     scrape_every_s: float | None) -> tuple[int, float, float, float]:
    """(executions, process CPU s, wall s, CPU s spent rendering) of one round."""
    from actors.metrics.serve import render
    cpu0, wall0 = time.process_time(), time.monotonic()
    end = wall0 + seconds
    done = 0
    render_cpu = 0.0

    async def worker(i: int) -> None:
        nonlocal done
        k = i
        while time.monotonic() < end:
            serial = serials[k % len(serials)]
            k += concurrency
            out = await hub.runs.start_one("bench/tiny", serial, None)
            assert out["status"] == "pending", out
            done += 1

    async def scraper() -> None:
        nonlocal render_cpu
        while True:
            await asyncio.sleep(scrape_every_s)
            t = time.process_time()
            render(hub.metrics.registry)
            render_cpu += time.process_time() - t

    scraping = asyncio.create_task(scraper()) if scrape_every_s else None
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    t0 = time.monotonic()
    while await active_count(db) and time.monotonic() - t0 < 120:
        await asyncio.sleep(0.2)
    if scraping is not None:
        scraping.cancel()
        await asyncio.gather(scraping, return_exceptions=True)
    return done, time.process_time() - cpu0, time.monotonic() - wall0, render_cpu


def switch(hub, db, store, metrics, on: bool) -> None:
    """Metrics on (the hooks `attach_metrics` sets, onto one CoordinatorMetrics for every
    round) or off (none of them)."""
    hub.metrics = metrics if on else None
    hub.schedules.on_dispatched = metrics.dispatched if on else None
    for name, writer in (("farm", db._writer), ("events", store._writer)):
        if on:
            metrics.watch_db(name, writer)
        else:
            writer.on_write = writer.on_commit = None


def own_work(metrics, rounds: list, cpu_on: float) -> None:
    """The metrics' own CPU in the on rounds, from what they counted and the cost of each
    hook measured here in isolation: steadier than on-minus-off on a busy machine."""
    from actors.metrics.coordinator import CoordinatorMetrics
    registry = metrics.registry
    events = metrics.observed
    writes = sum(registry.get_sample_value("farm_db_write_seconds_count", {"db": db}) or 0
                 for db in ("farm", "events"))
    commits = sum(registry.get_sample_value("farm_db_commit_seconds_count", {"db": db}) or 0
                  for db in ("farm", "events"))
    probe = CoordinatorMetrics(metrics.hub)
    samples = [{"event": name, "ts": time.time(), "node": "simnode00", "serial": "sim00-000",
                "data": {"execution_id": f"x{i}", "sequence": "bench/tiny", "status": "ok",
                         "path": "steps[0]", "at": time.time()}}
               for i, name in enumerate(("execution_started", "step_started", "step_finished",
                                         "execution_finished") * 2500)]
    t = time.process_time()
    for item in samples:
        probe.observe(item)
    per_event = (time.process_time() - t) / len(samples)
    hook = probe.db_write.labels("farm").observe
    t = time.process_time()
    for _ in range(10_000):
        hook(0.001)
    per_write = (time.process_time() - t) / 10_000
    render_cpu = sum(r for _, _, _, r in rounds)
    own = events * per_event + (writes + commits) * per_write + render_cpu
    print(f"cpu: the metrics' own work in the on rounds: {int(events)} events observed x "
          f"{per_event * 1e6:.1f} us + {int(writes + commits)} writer timings x "
          f"{per_write * 1e6:.1f} us + {render_cpu * 1000:.0f} ms rendering = "
          f"{own * 1000:.0f} ms = {own / cpu_on * 100:.2f}% of those rounds' {cpu_on:.1f} "
          f"CPU s", flush=True)


async def cpu_cost(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    from actors.coordinator.hub import Hub
    from actors.metrics.coordinator import CoordinatorMetrics
    from actors.store.event_store import EventStore
    from actors.store.farm_db import FarmDB

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "data"
        (data / "sequences" / "bench").mkdir(parents=True)
        (data / "sequences" / "bench" / "tiny.json").write_text(json.dumps(SEQUENCE))
        db = await FarmDB.open(tmp_path / "farm.sqlite3")
        serials = [s for n in range(args.nodes) for s in serials_of(n, args.phones // args.nodes)]
        await asyncio.gather(*(db.upsert_phone(s, model="Simulated") for s in serials))
        store = await EventStore(tmp_path / "coordinator.sqlite3").open()
        address = f"tcp://127.0.0.1:{free_port()}"
        hub = Hub(address, SECRET, store, db=db, data_dir=data)
        await hub.start()
        metrics = CoordinatorMetrics(hub)
        metrics.observed = 0
        observe = metrics.observe

        def counted(item: dict) -> None:
            metrics.observed += 1
            observe(item)

        metrics.observe = counted
        (tmp_path / "journals").mkdir()
        sim = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "scheduler.py"), "--sim", address, "0",
             str(args.nodes), str(args.phones // args.nodes), str(tmp_path / "journals")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            t0 = time.monotonic()
            while sum(r["state"] == "online" for r in hub.phone_rows.values()) < len(serials):
                if time.monotonic() - t0 > 60:
                    raise SystemExit("simulated phones not online after 60 s")
                await asyncio.sleep(0.1)
            print(f"cpu: {len(serials)} simulated phones on {args.nodes} simulated nodes; "
                  f"{args.concurrency} callers, {args.load_s:.0f} s per round, rounds off/on "
                  f"x{args.rounds}, render every {args.scrape_every_s} s while on", flush=True)
            await load_round(hub, db, serials, 3, args.concurrency, None)  # warm up
            per: dict[bool, list[tuple[int, float, float, float]]] = {False: [], True: []}
            for i in range(args.rounds):
                # off, on, on, off, ...: the database grows round by round, so a fixed
                # order would charge the growth to whichever side always comes second.
                for on in ((False, True) if i % 2 == 0 else (True, False)):
                    switch(hub, db, store, metrics, on)
                    got = await load_round(hub, db, serials, args.load_s, args.concurrency,
                                           args.scrape_every_s if on else None)
                    per[on].append(got)
                    n, cpu, wall, render_cpu = got
                    renders = int(wall // args.scrape_every_s) if on else 0
                    print(f"cpu: metrics {'on ' if on else 'off'}: {n} executions, {cpu:.2f} "
                          f"CPU s in {wall:.1f} s = {cpu / n * 1000:.3f} CPU s per 1000 "
                          f"executions (rendering: {renders} renders, "
                          f"{render_cpu * 1000:.0f} ms)", flush=True)
            switch(hub, db, store, metrics, False)
            own_work(metrics, per[True], sum(c for _, c, _, _ in per[True]))
            off = sum(c for _, c, _, _ in per[False]) / sum(n for n, _, _, _ in per[False])
            on = sum(c for _, c, _, _ in per[True]) / sum(n for n, _, _, _ in per[True])
            share = (on - off) / off * 100
            print(f"cpu: per 1000 executions {off * 1000:.3f} CPU s off, {on * 1000:.3f} on: "
                  f"metrics cost {share:+.1f}% of the coordinator's CPU; target < "
                  f"{CPU_TARGET_PCT:.0f}%: {'MET' if share < CPU_TARGET_PCT else 'MISSED'} "
                  f"(round to round noise shows in the lines above)", flush=True)
        finally:
            sim.stdin.close()
            try:
                sim.wait(timeout=20)
            except subprocess.TimeoutExpired:
                sim.kill()
            await hub.close()
            await store.close()
            await db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phones-demo", type=int, default=60, help="virtual phones (scrape)")
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--taps", type=int, default=3, help="broadcast taps before scraping")
    ap.add_argument("--per-phone", action="store_true", help="--metrics-per-phone too")
    ap.add_argument("--phones", type=int, default=1000, help="simulated phones (cpu)")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--load-s", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--scrape-every-s", type=float, default=15.0,
                    help="render the registry this often while on (Prometheus' default 15 s)")
    ap.add_argument("--skip-scrape", action="store_true")
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()
    if not args.skip_scrape:
        scrape_times(args)
    if not args.skip_cpu:
        asyncio.run(cpu_cost(args))


if __name__ == "__main__":
    main()
