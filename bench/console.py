"""Web console figures, printed, never asserted (issue 7 section 7).

Starts `farm-coordinator --demo --phones N` and drives the console in headless Debian
chromium (Playwright):
- click to `input tap`: the time from the pointer release on the wall (the page's own
  pointerup timestamp) until the last selected phone logged the tap (`vphone log`, same
  clock), and until the console had every phone's answer;
- frames per second of the wall with all N phones on screen, idle and while every phone is
  tapped in a loop (each action makes the node publish a new thumbnail), total and per phone;
- coordinator CPU (its own process, not the node or the phones) over the same busy window,
  with no page open and with 5 pages watching.

Run: python bench/console.py [--phones 60] [--select 5] [--clicks 10] [--window 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.node.device.adb_server import AdbServer  # noqa: E402
from actors.node.device.driver import DeviceDriver  # noqa: E402
from bench.latency import start_demo  # noqa: E402
from tests.e2e.farm_auth import api_json, sign_in_console  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TICKS = os.sysconf("SC_CLK_TCK")


def api(base: str, path: str, body: dict | None = None):
    return api_json(base + path, body)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Activity:
    """Taps every phone in a loop (a corner of the home screen that opens nothing), so the
    node publishes a thumbnail per phone per round."""

    def __init__(self, base: str) -> None:
        self.base, self.stop_flag, self.rounds = base, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            api(self.base, "/api/actions", {"scope": "phone:all",
                                            "action": {"type": "tap", "x": 1000, "y": 2200}})
            self.rounds += 1
            time.sleep(0.25)

    def __enter__(self) -> "Activity":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        self.thread.join()


def wait_online(base: str, phones: int, timeout: float = 180) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = api(base, "/api/phones")["phones"]
        except OSError:
            rows = []
        if sum(p["state"] == "online" for p in rows) == phones:
            return sorted(p["serial"] for p in rows)
        time.sleep(0.5)
    raise SystemExit(f"only {sum(p['state'] == 'online' for p in rows)} of {phones} phones online")


def frames(page) -> int:
    return page.evaluate("window.__console.framesLoaded")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phones", type=int, default=60)
    p.add_argument("--select", type=int, default=5, help="phones selected for the click figure")
    p.add_argument("--clicks", type=int, default=10)
    p.add_argument("--window", type=float, default=10.0, help="seconds per fps/CPU window")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as data:
        t0 = time.monotonic()
        proc, http_addr, adb_port = start_demo(args.phones, data)
        base = f"http://{http_addr}"
        try:
            serials = wait_online(base, args.phones)
            print(f"demo: {args.phones} phones online in {time.monotonic() - t0:.1f} s")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])
                try:
                    run(args, browser, base, proc.pid, serials, AdbServer(port=adb_port))
                finally:
                    browser.close()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except Exception:  # noqa: BLE001 - a bench must not leave a farm behind
                proc.kill()


def run(args, browser, base: str, pid: int, serials: list[str], adb: AdbServer) -> None:
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    sign_in_console(page, base)
    page.goto(base + "/")
    page.wait_for_function(f"window.__console.framesLoaded >= {len(serials)}", timeout=120000)
    visible = page.evaluate("""[...document.querySelectorAll('#wall .phone')].filter(e => {
        const r = e.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; }).length""")
    tile_w = page.evaluate("document.querySelector('#wall .phone').getBoundingClientRect().width")
    print(f"wall: {visible} of {len(serials)} phones visible, tiles {tile_w:.0f} px wide")

    # --- click to input tap ------------------------------------------------------------
    chosen = serials[: args.select]
    page.check("input[name=mode][value=select]")
    boxes = [page.locator(f'.phone[data-serial="{s}"] .screen').bounding_box() for s in chosen]
    page.mouse.move(boxes[0]["x"] + 5, boxes[0]["y"] + 5)
    page.mouse.down()
    page.mouse.move(boxes[-1]["x"] + 5, boxes[-1]["y"] + 5, steps=5)
    page.mouse.up()
    got = page.eval_on_selector_all("#wall .phone.selected", "els => els.map(e => e.dataset.serial)")
    assert got == chosen, (got, chosen)
    page.check("input[name=mode][value=action]")
    drivers = {s: DeviceDriver(s, adb) for s in chosen}
    to_tap, to_answer = [], []
    for i in range(args.clicks):
        for d in drivers.values():
            d.shell("vphone log --clear")
        box = boxes[i % len(boxes)]
        before = len(page.evaluate("window.__console.actions"))
        page.mouse.click(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.9)
        page.wait_for_function(f"window.__console.actions.length > {before}", timeout=30000)
        released = page.evaluate("window.__console.lastPointerUp") / 1000
        answered = page.evaluate("window.__console.actions.at(-1).ms") / 1000
        taps = []
        for d in drivers.values():
            entries = [json.loads(x) for x in d.shell("vphone log").text.splitlines() if x.strip()]
            taps.append(max(e["ts"] for e in entries if e["kind"] == "tap"))
        to_tap.append((max(taps) - released) * 1000)
        to_answer.append(answered * 1000)
    q = lambda xs: f"p50 {statistics.median(xs):.1f} ms, max {max(xs):.1f} ms"  # noqa: E731
    print(f"click -> input tap on all {len(chosen)} selected phones: {q(to_tap)} ({args.clicks} clicks)")
    print(f"click -> every phone's answer in the console:       {q(to_answer)}")

    # --- frames per second and coordinator CPU ----------------------------------------------
    page.check("input[name=mode][value=select]")

    def window(pages: list, busy: bool) -> tuple[float, float, float]:
        """(coordinator CPU % of one core, frames/s over ``pages``, action rounds/s); the
        first page's thumbnail events/s (new frames announced) go to ``announced``."""
        act = Activity(base) if busy else None
        if act:
            act.__enter__()
            time.sleep(2)
        try:
            f0, r0 = sum(frames(pg) for pg in pages), act.rounds if act else 0
            e0 = pages[0].evaluate("window.__console.thumbnailEvents") if pages else 0
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.window)
            elapsed = time.monotonic() - t0
            if pages:
                announced[0] = (pages[0].evaluate("window.__console.thumbnailEvents") - e0) / elapsed
            return ((cpu_seconds(pid) - c0) / elapsed * 100,
                    (sum(frames(pg) for pg in pages) - f0) / elapsed,
                    ((act.rounds - r0) / elapsed) if act else 0.0)
        finally:
            if act:
                act.__exit__(None, None, None)

    announced = [0.0]
    time.sleep(3)  # the clicks' thumbnails settle
    cpu, fps, _ = window([page], busy=False)
    print(f"wall idle, 1 page: {fps:.1f} frames/s (nothing changes: the 15 s safety refresh), "
          f"coordinator CPU {cpu:.0f}%")
    cpu, fps, rounds = window([page], busy=True)
    print(f"wall busy, 1 page (every phone tapped {rounds:.1f}x/s): {fps:.1f} frames/s total, "
          f"{fps / len(serials):.2f} per phone (cap 4 per phone, 5 requests in flight) for "
          f"{announced[0]:.1f} new frames/s announced on the stream; coordinator CPU {cpu:.0f}%")
    page.close()
    cpu, _, rounds = window([], busy=False)
    print(f"no page, idle: coordinator CPU {cpu:.0f}%")
    cpu, _, rounds = window([], busy=True)
    print(f"no page, busy (tapped {rounds:.1f}x/s): coordinator CPU {cpu:.0f}%")
    pages = [browser.new_page(viewport={"width": 1600, "height": 1000}) for _ in range(5)]
    for pg in pages:
        sign_in_console(pg, base)
        pg.goto(base + "/")
    for pg in pages:
        pg.wait_for_function(f"window.__console.framesLoaded >= {len(serials)}", timeout=120000)
    time.sleep(3)
    cpu, fps, _ = window(pages, busy=False)
    print(f"5 pages watching, idle: coordinator CPU {cpu:.0f}% ({fps:.1f} frames/s together)")
    cpu, fps, rounds = window(pages, busy=True)
    print(f"5 pages watching, busy (tapped {rounds:.1f}x/s): coordinator CPU {cpu:.0f}% "
          f"({fps:.1f} frames/s together, {fps / 5 / len(serials):.2f} per phone per page)")
    for pg in pages:
        pg.close()


if __name__ == "__main__":
    main()
