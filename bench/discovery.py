"""Registry edit and discovery figures, on the demo registry's reference screenshots.

- text detection (registry.ocr.TextReader.detect, frame scaled to 540 px wide): first call
  (model load) and warm p50/max per screen;
- an OCR-only discovery proposal (actors.coordinator.ai.discovery), end to end (PNG decode, detection,
  region choice, farm DB row), for ClipShare's popups after removing them from a copy of the
  registry (so they are unknown, as on a farm whose registry lacks them);
- a registry store save of one screen (crops cut, whole registry validated in memory, atomic
  write, audit row, reload) and a node-side reload of the matcher (what a push costs a node).

    python3 bench/discovery.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from actors.coordinator.ai.discovery import DiscoveryService  # noqa: E402
from actors.node.matcher import MatcherActor  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from actors.coordinator.registry_store import RegistryStore, ScreenEdit  # noqa: E402
from actors.coordinator.unknown_screens import UnknownScreenQueue  # noqa: E402
from registry.load import DEMO_REGISTRY  # noqa: E402
from registry.ocr import TextReader  # noqa: E402

SCREENS = ["clipshare/feed.png", "clipshare/login.png", "clipshare/update_available.png",
           "clipshare/settings.png", "launcher/home.png"]
POPUPS = ["update_available", "rate_us", "video_options", "login_failed"]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f} ms"


async def main(runs: int) -> None:
    reader = TextReader()
    frames = {name: (DEMO_REGISTRY / name).read_bytes() for name in SCREENS}
    rgb = {name: cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR),
                              cv2.COLOR_BGR2RGB) for name, png in frames.items()}
    t0 = time.perf_counter()
    reader.detect(rgb[SCREENS[0]])
    print(f"text detection, first call (loads the model): {ms(time.perf_counter() - t0)}")
    print("text detection, warm (540 px wide):")
    for name, frame in rgb.items():
        times, lines = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            lines = reader.detect(frame)
            times.append(time.perf_counter() - t0)
        print(f"  {name:34s} p50 {ms(statistics.median(times))}  max {ms(max(times))}  "
              f"{len(lines)} lines")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        db = await FarmDB.open(tmp_path / "farm.db")
        store = RegistryStore.open(tmp_path / "registry", db)
        queue = UnknownScreenQueue(tmp_path / "unknown")
        discovery = DiscoveryService(store, db, queue, reader=reader)
        print("OCR-only proposal, end to end, for popups missing from the registry:")
        for popup in POPUPS:
            await store.delete_screen("clipshare", popup, reason="bench")
        for i, popup in enumerate(POPUPS):
            name = f"clipshare/{popup}.png"
            png = (DEMO_REGISTRY / name).read_bytes()
            entry = queue.add(f"bench-{i}", png, {"serial": "S", "app": "com.phonefarm.clipshare",
                                                  "at": i})["id"]
            if entry != f"bench-{i}":  # the queue's perceptual hash took it for another
                print(f"  {name:34s} deduplicated by the unknown-screens queue with {entry}")
                continue
            t0 = time.perf_counter()
            proposal = await discovery.propose(entry)
            print(f"  {name:34s} {ms(time.perf_counter() - t0)}  (detection "
                  f"{proposal['detect_ms']:.0f} ms) regions: "
                  f"{[r['expected_text'] for r in proposal['regions']]}")
        edit = msgspec.convert({"kind": "state", "description": "bench", "reason": "bench",
                                "regions": [{"name": "title", "coordinates": [0, 100, 1080, 240]}]},
                               ScreenEdit)
        saves = []
        for i in range(runs):
            t0 = time.perf_counter()
            await store.save_screen("clipshare", f"bench_{i}", edit, frames[SCREENS[0]])
            saves.append(time.perf_counter() - t0)
        print(f"registry store save of one screen: p50 {ms(statistics.median(saves))}  "
              f"max {ms(max(saves))}")
        matcher = MatcherActor.start(store.root)
        try:
            reloads = []
            for _ in range(runs):
                t0 = time.perf_counter()
                matcher.proxy().load(store.root).get(timeout=60)
                reloads.append(time.perf_counter() - t0)
        finally:
            matcher.stop()
        print(f"node matcher reload (load_registry + Matcher): p50 "
              f"{ms(statistics.median(reloads))}  max {ms(max(reloads))}")
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
