"""Real-phone figures, agent path against shell path, printed, never asserted (issue 16 pt 5).

Everything runs under the `real` cost profile (virtual/profile.py: input's 230 ms JVM start,
screencap's 250 ms, app_process's 800 ms, one 35 MB/s USB 2.0 bus per farm-virtual). For each
path (`--io agent|shell|both`) it starts its own `farm-coordinator --demo --phone-profile real
--phone-io IO` (bench/latency.py's start_demo) and measures, in one run:
- tap latency: a driver call to the phone's `vphone log` entry for it (the entry's ts is the
  phone's wall clock when the touch ended; the phone and the bench share this machine's clock);
- frame ready: an action sent -> the first frame the node's identify path (MatcherActor.identify
  on the demo's registry) names as the new screen (APP_SWITCH -> launcher/recents, its Home
  button -> launcher/home), driver.screenshot() as the node's phone actor takes it;
- a 20-step sequence (go_to the feed, then Upload/Cancel taps with their waits) through
  POST /api/runs on 1 phone, then on all phones at once: mean time per step from the execution
  records (steps[i] only: the run's account switch before them is not counted);
- the USB bus's MB/s during the all-phones sequence (`vphone bus`: the farm's shared bus);
- the node process's CPU during that sequence (/proc/PID/stat), as % of one core.
- wall frames/s per phone a headless Chromium page receives from GET /api/live (the live
  wall's WebSocket of JPEG frames) with 16, then all phones watched, during that sequence: the
  virtual screens only change when a step acts, so this is bounded by the steps, not the wall.
The bench's own driver is a second client of phone 0 (as the node's is): its agent runs beside
the node's one, which idles meanwhile.

Run: python bench/realphone.py [--phones 60] [--steps 20] [--io both] [--skip-wall]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.node.device.adb_server import AdbServer  # noqa: E402
from actors.node.device.agent import AgentConfig  # noqa: E402
from actors.node.device.driver import DeviceDriver  # noqa: E402
from actors.node.matcher import MatcherActor, action_centre  # noqa: E402
from bench.latency import start_demo  # noqa: E402
from tests.e2e.farm_auth import api_json, token_for  # noqa: E402
from registry.model import ScreenRef  # noqa: E402

KEY_APP_SWITCH = 187
KEY_HOME = 3
TAP_XY = (540, 150)  # the launcher's heading: a tap there changes nothing
JAR = "scrcpy-server-placeholder.jar"  # what the demo writes into its data dir for its node


def api(base: str, path: str, body: dict | None = None) -> dict:
    return api_json(base + path, body)


def wait_phones(base: str, phones: int, io: str, timeout_s: float = 180) -> list[dict]:
    """All phones online, and on the agent path all driven by their agent."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rows = api(base, "/api/phones")["phones"]
        except OSError:
            rows = []
        ready = [p for p in rows if p["state"] == "online" and (io == "shell" or p.get("io") == io)]
        if len(ready) == phones:
            return rows
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(ready)} of {phones} phones online on the {io} path after "
                             f"{timeout_s:.0f} s: {[(p['serial'], p.get('io_reason')) for p in rows][:3]}")
        time.sleep(0.5)


def node_pid(coordinator_pid: int) -> int:
    """The demo's farm-node: the coordinator's child running actors.node."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == coordinator_pid and b"actors.node" in cmd:
            return int(entry.name)
    raise SystemExit("the demo's node process was not found")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bus_bytes(driver: DeviceDriver) -> int:
    return json.loads(driver.shell("vphone bus").text)["bytes_total"]


def tap_latency(driver: DeviceDriver, rounds: int) -> tuple[list[float], int]:
    """Driver call -> the phone's log entry of the tap, in ms, one tap at a time; and how
    many taps the phone never logged (each tap owns the entries up to the next one's call)."""
    driver.shell("vphone log --clear")
    sent = []
    for _ in range(rounds):
        time.sleep(0.05)  # one tap at a time, as a step plays them
        sent.append(time.time())
        driver.tap(*TAP_XY)
    entries = [json.loads(line) for line in driver.shell("vphone log").text.splitlines()]
    logged = [e["ts"] for e in entries if e["kind"] == "tap"]
    out, lost = [], 0
    for t, t_next in zip(sent, sent[1:] + [float("inf")]):
        ts = next((x for x in logged if t <= x < t_next), None)
        if ts is None:
            lost += 1
        else:
            out.append((ts - t) * 1000)
    return out, lost


def frame_ready(driver: DeviceDriver, matcher: MatcherActor, rounds: int,
                raw_stream: bool = False) -> list[float]:
    """Action sent -> the first frame identified as the screen it leads to, in ms."""
    registry = matcher.registry
    app = registry.apps["launcher"]
    home_button = next(a for a in registry.screen(ScreenRef("launcher", "state", "recents")).actions
                       if a.name == "go_home")
    w, h = driver.window_size()
    home_xy = action_centre(home_button, app.screen_size, (w, h))
    driver.key(KEY_HOME)
    until(driver, matcher, "launcher/home", time.perf_counter())
    out = []
    for _ in range(rounds):
        for act, target in ((lambda: driver.key(KEY_APP_SWITCH), "launcher/recents"),
                            (lambda: driver.tap(*home_xy), "launcher/home")):
            time.sleep(0.3)  # from a still screen
            t = time.perf_counter()
            act()
            out.append(until(driver, matcher, target, t, raw_stream))
    return out


def until(driver: DeviceDriver, matcher: MatcherActor, label: str, since: float,
          raw_stream: bool = False) -> float:
    """ms from ``since`` (perf_counter) until a frame identifies as ``label``: frames as
    driver.screenshot() gives them, or (``raw_stream``) every decoded frame of the agent's
    stream as it arrives, without the driver's settle time."""
    deadline = since + 15
    seen, after = None, time.monotonic() - (time.perf_counter() - since)
    while time.perf_counter() < deadline:
        if raw_stream:
            got = driver.agent.frames.wait_newer(after, 1.0)
            if got is None:
                continue
            frame, after = got
        else:
            frame = driver.screenshot()
        seen = matcher.identify(frame).label
        if seen == label:
            return (time.perf_counter() - since) * 1000
    raise SystemExit(f"{label} not identified within 15 s (last frame: {seen})")


def sequence(steps: int) -> dict:
    """``steps`` steps on ClipShare: go_to the feed, then Upload and Cancel with their waits."""
    cycle = [{"type": "tap", "action": "feed.go_to_upload"},
             {"type": "wait_for_screen", "screen": "clipshare/upload", "timeout_s": 30},
             {"type": "tap", "action": "upload.cancel"},
             {"type": "wait_for_screen", "screen": "clipshare/feed", "timeout_s": 30}]
    body = [{"type": "go_to", "screen": "clipshare/feed"}]
    while len(body) < steps:
        body += cycle
    return {"name": "bench_realphone", "app": "clipshare", "account": "clipshare",
            "steps": body[:steps]}


def alive(pid: int) -> bool:
    """Running, not a zombie its parent (the coordinator) has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class NodeDied(Exception):
    """The demo's node process ended under the bench (its exit status, or a signal)."""


def run_sequence(base: str, scope: str, steps: int, node: int) -> tuple[list[float], int]:
    """Mean ms per step of each phone's execution, and how many executions failed."""
    run_id = api(base, "/api/runs", {"sequence": sequence(steps), "scope": scope})["run_id"]
    limit = 60 + steps * 15
    deadline = time.monotonic() + limit
    while True:
        run = api(base, f"/api/runs/{run_id}")
        if run["status"] != "running":
            break
        if not alive(node):
            raise NodeDied(f"the node (pid {node}) died during run {run_id} (dmesg: segfault?)")
        if time.monotonic() > deadline:  # figures of the executions done; the rest failed
            print(f"run {run_id} still running after {limit} s: counted as failed", flush=True)
            break
        time.sleep(0.5)
    per_phone, failed = [], 0
    for ex in run["executions"]:
        if ex["status"] != "completed":
            failed += 1
            continue
        spans = [(iso(s["end_time"]) - iso(s["start_time"])) * 1000 for s in ex["steps"]
                 if (s["path"] or "").startswith("steps[") and s["status"] == "success"
                 and s["start_time"] and s["end_time"]]
        per_phone.append(sum(spans) / len(spans))
    if not per_phone:
        raise NodeDied(f"no execution of run {run_id} completed within {limit} s")
    return per_phone, failed


WALL_JS = """async ([url, token, serials, width, seconds]) => {
  const ws = new WebSocket(url); ws.binaryType = "arraybuffer";
  const counts = Object.fromEntries(serials.map(s => [s, 0]));
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; });
  ws.onmessage = (m) => {
    if (typeof m.data === "string") return;  // the watch set's answer
    const view = new DataView(m.data), n = view.getUint32(0);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(m.data, 4, n)));
    counts[head.serial] += 1;
  };
  const watch = Object.fromEntries(serials.map(s => [s, {width: width, fps: 30}]));
  ws.send(JSON.stringify({token: token, watch: watch}));  // the first message logs in
  await new Promise(r => setTimeout(r, seconds * 1000));
  ws.close();
  return counts;
}"""


def wall_fps(base: str, serials: list[str], sizes: tuple[int, ...], seconds: float) -> dict[int, float]:
    """Per-phone frames/s a headless Chromium page receives from GET /api/live with the first
    ``n`` phones watched, for each n of ``sizes`` in turn (``seconds`` each): the median phone."""
    from playwright.sync_api import sync_playwright
    out = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page()
        page.goto(base + "/api/health")  # the socket's origin: the coordinator's
        for n in sizes:
            width = 240 if n <= 16 else 160  # a tile of a 16- or a 60-phone wall
            counts = page.evaluate(WALL_JS, [base.replace("http", "ws", 1) + "/api/live",
                                             token_for(base), serials[:n], width, seconds])
            out[n] = statistics.median(counts.values()) / seconds
        browser.close()
    return out


def iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure(io: str, args: argparse.Namespace) -> dict:
    """Every figure of one path, on its own demo farm."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as data:
        proc, http_addr, adb_port = start_demo(args.phones, data, "--phone-profile", "real",
                                               "--phone-io", io)
        base = f"http://{http_addr}"
        try:
            phones = wait_phones(base, args.phones, io)
            serials = sorted(p["serial"] for p in phones)
            node = node_pid(proc.pid)
            agent = AgentConfig(mode="agent", jar=Path(data) / JAR) if io == "agent" else None
            driver = DeviceDriver(serials[0], AdbServer(port=adb_port), agent=agent)
            driver.start_agent()
            deadline = time.monotonic() + 30
            while driver.io != io and time.monotonic() < deadline:
                time.sleep(0.1)
            if driver.io != io:
                raise SystemExit(f"the bench's driver stayed on {driver.io}: {driver.io_reason}")
            matcher = MatcherActor(Path(data) / "registry")
            print(f"[{io}] {args.phones} phones online; tap latency ({args.taps} taps)", flush=True)
            out["tap"], out["tap_lost"] = tap_latency(driver, args.taps)
            print(f"[{io}] frame ready ({args.frames} x 2 actions)", flush=True)
            out["frame"] = frame_ready(driver, matcher, args.frames)
            if driver.agent is not None:
                out["frame_stream"] = frame_ready(driver, matcher, args.frames, raw_stream=True)
            driver.close()
            print(f"[{io}] {args.steps}-step sequence on 1 phone", flush=True)
            try:
                out["seq1"], out["seq1_failed"] = run_sequence(
                    base, f"phone:{serials[0]}", args.steps, node)
            except NodeDied as exc:
                out["error"] = str(exc)
                return out
            print(f"[{io}] {args.steps}-step sequence on {args.phones} phones at once", flush=True)
            probe = DeviceDriver(serials[-1], AdbServer(port=adb_port))
            bus0, cpu0, t0 = bus_bytes(probe), cpu_s(node), time.monotonic()
            wall = None
            if not args.skip_wall:  # the screens change while the steps play: watch them
                wall = concurrent.futures.ThreadPoolExecutor(1).submit(
                    wall_fps, base, serials, (16, args.phones), args.wall_s)
            try:
                out["seqN"], out["seqN_failed"] = run_sequence(base, "phone:all", args.steps, node)
            except NodeDied as exc:
                out["error"] = str(exc)
                print(f"[{io}] {exc}", flush=True)
                return out
            if wall is not None:
                out["wall"] = wall.result()
            elapsed = time.monotonic() - t0
            out["bus_mb_s"] = (bus_bytes(probe) - bus0) / elapsed / 1e6
            out["bus_budget"] = json.loads(probe.shell("vphone bus").text)["budget_mb_per_s"]
            out["node_cpu"] = (cpu_s(node) - cpu0) / elapsed * 100
            out["seconds"] = elapsed
        finally:
            proc.terminate()
            proc.wait(timeout=90)
    return out


def p50(ms: list[float]) -> float:
    return statistics.median(ms) if ms else float("nan")


def line(name: str, figures: dict[str, str], target: str, met: bool | None) -> None:
    cells = "".join(f"{figures.get(io, '-'):>16}" for io in ("agent", "shell"))
    verdict = "" if met is None else ("met" if met else "NOT met")
    print(f"  {name:<34}{cells}   {target:<34} {verdict}")


def report(res: dict[str, dict], args: argparse.Namespace) -> None:
    a, s = res.get("agent"), res.get("shell")
    print(f"\nreal-phone figures, --profile real, {args.phones} phones, "
          f"{os.cpu_count()} cores")
    print(f"  {'':<34}{'agent':>16}{'shell':>16}   {'target':<34} verdict")

    def both(fmt, key) -> dict[str, str]:
        return {io: fmt(r) for io, r in res.items() if key in r}

    line("tap latency p50 (ms)", both(lambda r: f"{p50(r['tap']):.1f}", "tap"),
         "agent <= 10, shell >= 230",
         None if not (a and s) else p50(a["tap"]) <= 10 and p50(s["tap"]) >= 230)
    line("  taps the phone never logged", both(lambda r: f"{r['tap_lost']}/{args.taps}", "tap"),
         "", None)
    line("frame ready after action p50 (ms)", both(lambda r: f"{p50(r['frame']):.0f}", "frame"),
         "agent <= 150, screencap >= 500",
         None if not (a and s) else p50(a["frame"]) <= 150 and p50(s["frame"]) >= 500)
    line("  same, stream frames, no settle", both(lambda r: f"{p50(r['frame_stream']):.0f}",
                                                  "frame_stream"), "(driver settle_s left out)", None)
    line("step time, 1 phone (ms)", both(lambda r: f"{p50(r['seq1']):.0f}", "seq1"), "", None)
    line(f"step time, {args.phones} at once (ms, p50)",
         both(lambda r: f"{p50(r['seqN']):.0f}", "seqN"), "", None)
    line(f"  slowest of the {args.phones} (ms)", both(lambda r: f"{max(r['seqN']):.0f}", "seqN"),
         "", None)
    for io, r in res.items():
        if "error" in r:
            print(f"  [{io}] stopped early: {r['error']}")
    res = {io: r for io, r in res.items() if "error" not in r}
    ratio = {io: p50(r["seqN"]) / p50(r["seq1"]) for io, r in res.items()}
    line(f"  ratio {args.phones} vs 1", {io: f"{v:.2f}x" for io, v in ratio.items()},
         "agent <= 1.5x", None if "agent" not in ratio else ratio["agent"] <= 1.5)
    line("  failed executions (1 / N)",
         both(lambda r: f"{r['seq1_failed']} / {r['seqN_failed']}", "seqN"), "", None)
    bus = {io: r["bus_mb_s"] / r["bus_budget"] * 100 for io, r in res.items()}
    line(f"bus MB/s, {args.phones}-phone sequence",
         both(lambda r: f"{r['bus_mb_s']:.2f}", "bus_mb_s"), "", None)
    line("  share of the bus budget", {io: f"{v:.1f}%" for io, v in bus.items()},
         "agent <= 50%", None if "agent" not in bus else bus["agent"] <= 50)
    line("node CPU (% of one core)", both(lambda r: f"{r['node_cpu']:.0f}", "node_cpu"), "", None)
    if args.skip_wall:
        print("  wall: skipped (--skip-wall)")
        return
    for n, floor in dict(((args.phones, 2), (16, 10))).items():  # 16 phones: one row
        got = {io: r["wall"][n] for io, r in res.items() if n in r.get("wall", {})}
        line(f"wall frames/s per phone, {n} on page", {io: f"{v:.1f}" for io, v in got.items()},
             f"agent >= {floor}", None if "agent" not in got else got["agent"] >= floor)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phones", type=int, default=60)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--io", choices=("agent", "shell", "both"), default="both")
    ap.add_argument("--taps", type=int, default=30)
    ap.add_argument("--frames", type=int, default=10, help="rounds of the two screen changes")
    ap.add_argument("--skip-wall", action="store_true")
    ap.add_argument("--wall-s", type=float, default=5.0,
                    help="seconds of each wall measurement (16, then all phones on the page)")
    args = ap.parse_args()
    ios = ("agent", "shell") if args.io == "both" else (args.io,)
    res = {io: measure(io, args) for io in ios}
    report(res, args)


if __name__ == "__main__":
    main()
