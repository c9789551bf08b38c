"""Alert latency figures, printed, never asserted (issue 19, figures: < 2 s p99).

Starts `farm-coordinator --demo --phones N` with an alerts config whose only channel is a
real webhook server of this process (tests/e2e/alert_hook.py), follows the status stream,
and measures, for `--alerts` alerts:

1. phone offline (a rule `phone_offline` with minutes = 0): a phone is unplugged with the
   real adb (`adb disconnect`), the alert is received by the webhook, the phone is plugged
   back (`adb connect`) and the `resolved` notice received. Two latencies: from the
   coordinator's event (the stream event that made the phone unreachable, its `ts`) to the
   webhook's receipt, and from the `adb disconnect` command to the receipt (the node's
   detection of the unplugged phone included). Resolved notices likewise, from `adb connect`.
2. run finished (a rule `run_finished`): `--runs` one-step runs, each from its
   `execution_finished` stream event to the webhook's receipt of the run's notice.

Every figure is one machine's clock (coordinator, node and webhook on this machine).
Run: python bench/alerts.py [--phones 4] [--alerts 50] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.latency import start_demo  # noqa: E402
from tests.e2e.alert_hook import HookServer, alerts_toml  # noqa: E402
from tests.e2e.farm_auth import api_json, auth_headers  # noqa: E402

RUN = {"name": "alert_bench", "steps": [{"type": "key", "key": "HOME"}]}
UNREACHABLE = {"phone_paused", "phone_down"}


class Stream:
    """The status stream in a thread: every event with the time it was emitted (its ts)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.events: list[dict] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        request = urllib.request.Request(self.base + "/api/stream", headers=auth_headers(self.base))
        with urllib.request.urlopen(request, timeout=3600) as r:
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    with self.lock:
                        self.events.append(event)

    def find(self, match, after: float, timeout: float = 30.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for event in self.events:
                    if event.get("ts", 0) >= after and match(event):
                        return event
            time.sleep(0.01)
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(label: str, values_s: list[float]) -> None:
    if not values_s:
        print(f"  {label}: no samples")
        return
    ms = [v * 1000 for v in values_s]
    print(f"  {label}: n={len(ms)} p50 {statistics.median(ms):.0f} ms, p99 {pct(ms, 0.99):.0f} ms,"
          f" max {max(ms):.0f} ms (target p99 < 2000 ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phones", type=int, default=4)
    ap.add_argument("--alerts", type=int, default=50)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    hook = HookServer().start()
    with tempfile.TemporaryDirectory() as tmp:
        alerts_toml_file = Path(tmp) / "alerts.toml"
        alerts_toml_file.write_text(alerts_toml(hook.url()))
        proc, http, adb_port = start_demo(args.phones, str(Path(tmp) / "data"),
                                          "--alerts-config", str(alerts_toml_file),
                                          "--retention", "off")
        base = f"http://{http}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                phones = api_json(base + "/api/phones")["phones"]
                if sum(p["state"] == "online" for p in phones) == args.phones:
                    break
                time.sleep(0.2)
            serials = sorted(p["serial"] for p in phones)
            stream = Stream(base)
            time.sleep(0.5)
            adb = lambda *a: subprocess.run(["adb", "-P", str(adb_port), *a],  # noqa: E731
                                            capture_output=True, timeout=30, check=True)
            from_event, from_unplug, resolved = [], [], []
            print(f"phone offline: {args.alerts} alerts over {len(serials)} phones "
                  f"(adb disconnect, then connect)")
            for i in range(args.alerts):
                serial = serials[i % len(serials)]
                fired_before = len(hook.bodies(lambda b: b.get("kind") == "alert"))
                t0 = time.time()
                adb("disconnect", serial)
                got = hook.wait_for(lambda b: b.get("kind") == "alert", fired_before + 1)
                if len(got) <= fired_before:
                    print(f"  alert {i}: no webhook for {serial} in 30 s")
                    continue
                at = got[-1][0]
                event = stream.find(lambda e: e["event"] in UNREACHABLE
                                    and e.get("serial") == serial, t0 - 0.01)
                from_unplug.append(at - t0)
                if event is not None:
                    from_event.append(at - event["ts"])
                done_before = len(hook.bodies(lambda b: b.get("kind") == "resolved"))
                t1 = time.time()
                adb("connect", serial)
                got = hook.wait_for(lambda b: b.get("kind") == "resolved", done_before + 1)
                if len(got) > done_before:
                    resolved.append(got[-1][0] - t1)
                back = time.monotonic() + 30
                while time.monotonic() < back and not any(
                        p["serial"] == serial and p["state"] == "online"
                        for p in api_json(base + "/api/phones")["phones"]):
                    time.sleep(0.05)
            line("coordinator event -> webhook (alert)", from_event)
            line("adb disconnect -> webhook (alert, node detection included)", from_unplug)
            line("adb connect -> webhook (resolved, node detection included)", resolved)

            print(f"run finished: {args.runs} runs of one step")
            finished = []
            for i in range(args.runs):
                serial = serials[i % len(serials)]
                t0 = time.time()
                run = api_json(base + "/api/runs", {"sequence": RUN, "scope": f"phone:{serial}"})
                run_id = run["run_id"]
                got = hook.wait_for(lambda b: b.get("kind") == "run_finished"
                                    and run_id in b.get("text", ""))
                event = stream.find(lambda e: e["event"] == "execution_finished"
                                    and (e.get("data") or {}).get("run_id") == run_id, t0 - 0.01)
                if got and event is not None:
                    finished.append(got[0][0] - event["ts"])
            line("execution_finished event -> webhook (run finished)", finished)
            channels = api_json(base + "/api/alerts/channels")["channels"]
            print(f"outbox: {channels[0]['delivered']} delivered, {channels[0]['pending']} "
                  f"pending, last error {channels[0]['last_error']}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            hook.stop()


if __name__ == "__main__":
    main()
