"""AI recovery figures: success rate and mean steps over 20 perturbed situations of the virtual
ClipShare app (unknown popups, wrong screens, logged out, app closed, another app in front).

One virtual phone on a private adb server, the coordinator's hub with a farm database and an
AIClient, and a node whose registry lacks the 'Video options' and 'Enjoying ClipShare?' dialogs
and the account switcher (so they are unknown screens). For each situation the phone is put
back on the feed, perturbed, and a short sequence (feed -> profile -> feed) is run; its first
step fails, and recovery has to bring it back.

The scripted model is an oracle: for each request it reads the virtual phone's true state
(``vphone state``) and calls the tool that moves it one step toward the feed. With
PHONEFARM_AI_BASE_URL (and _MODEL, _KEY) set, the same situations run against that real
OpenAI-compatible endpoint too.

    python3 bench/recovery.py [--situations N] [--max-steps 8] [--real-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.coordinator.ai.client import AIClient, AIConfig  # noqa: E402
from actors.node.device.adb_server import (AdbServer, free_port, kill_adb_server,  # noqa: E402
                                      start_private_adb_server)
from actors.node.device.driver import DeviceDriver  # noqa: E402
from actors.store.event_store import EventStore  # noqa: E402
from actors.coordinator.hub import Hub  # noqa: E402
from actors.node.node import Node  # noqa: E402
from actors.store.farm_db import FarmDB, seed_demo  # noqa: E402
from actors.node.playback import PlaybackOptions  # noqa: E402
from actors.coordinator.unknown_screens import UnknownScreenQueue  # noqa: E402
from registry.load import DEMO_REGISTRY  # noqa: E402
from virtual.farm import FarmSpec, VirtualFarm  # noqa: E402
from virtual.model_server import ScriptedModel, reply_tool  # noqa: E402

OUT = ROOT / "bench" / "out"
SECRET = "bench-recovery-secret"
CLIPSHARE = "com.phonefarm.clipshare"
USER, PASSWORD = "clip_creator", "hunter2"
UNREGISTERED = {"interrupts": ("video_options", "rate_us"), "states": ("account_switcher",)}

# Centres of the app's buttons (registry boxes, 1080x2400).
SAVE, NOT_NOW, DISMISS, OK_BUTTON = (322, 1460), (757, 1460), (757, 1460), (540, 1460)
USERNAME_FIELD, PASSWORD_FIELD, LOG_IN = (540, 875), (540, 1075), (540, 1330)
SETTINGS_BACK, UPLOAD_CANCEL, PICK_CLIP_1 = (540, 775), (540, 1495), (210, 590)
NAV_FEED, NAV_UPLOAD, NAV_PROFILE = (180, 2300), (540, 2300), (900, 2300)
OPEN_SETTINGS, SWITCH_ACCOUNT, LOG_OUT = (540, 1215), (540, 1025), (540, 575)

SEQUENCE = {
    "name": "bench_recovery",
    "recovery_prompt": "Bring ClipShare to its video feed, signed in: close dialogs, go back, "
                       "reopen the app, or log in.",
    "retry": {"immediate": 0, "short": 0},
    "steps": [
        {"type": "wait_for_screen", "screen": "clipshare/feed", "timeout_s": 2},
        {"type": "tap", "action": "clipshare/feed.go_to_profile"},
        {"type": "wait_for_screen", "screen": "clipshare/profile", "timeout_s": 5},
        {"type": "tap", "action": "clipshare/profile.go_to_feed"},
        {"type": "wait_for_screen", "screen": "clipshare/feed", "timeout_s": 5},
    ]}


def oracle(state: dict) -> tuple[str, dict] | None:
    """The tool call that moves the phone one step toward the signed-in feed (None: there)."""
    if state.get("package") != CLIPSHARE:
        return "launch_app", {"app": "clipshare"}
    popup = state.get("popup")
    buttons = {"video_options": SAVE, "rate_us": NOT_NOW, "update_available": DISMISS,
               "login_failed": OK_BUTTON}
    if popup in buttons:
        x, y = buttons[popup]
        return "tap", {"x": x, "y": y}
    if popup:
        return "key", {"key": "back"}
    screen, fields, focused = state.get("screen"), state.get("fields") or {}, state.get("focused_field")
    if screen == "login":
        if fields.get("username") != USER:
            if focused != "username":
                return "tap", dict(zip("xy", USERNAME_FIELD))
            return "type_text", {"text": USER}
        if fields.get("password") != PASSWORD:
            if focused != "password":
                return "tap", dict(zip("xy", PASSWORD_FIELD))
            return "type_text", {"text": PASSWORD}
        return "tap", dict(zip("xy", LOG_IN))
    if screen == "settings":
        return "tap", dict(zip("xy", SETTINGS_BACK))
    if screen == "upload":
        return "tap", dict(zip("xy", UPLOAD_CANCEL))
    if screen == "profile":
        return "tap", dict(zip("xy", NAV_FEED))
    if screen == "feed":
        return None
    return "key", {"key": "back"}


class Rig:
    """One virtual phone, a hub with AI, a node with the reduced registry."""

    def __init__(self, work: Path, ai_config: Callable[[str], AIConfig | None],
                 max_steps: int) -> None:
        self.work = work
        self.ai_config = ai_config
        self.max_steps = max_steps

    async def __aenter__(self) -> "Rig":
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__()
            raise

    async def _start(self) -> "Rig":
        self.adb = start_private_adb_server()
        self.farm = VirtualFarm(FarmSpec(phones=1, adb=self.adb)).start_in_thread()
        self.serial = self.farm.serials[0]
        self.driver = DeviceDriver(self.serial, AdbServer(port=self.adb.port))
        self.model = ScriptedModel(self._oracle_reply)
        await self.model.start()
        registry = self.work / "registry"
        shutil.copytree(DEMO_REGISTRY, registry)
        app = json.loads((registry / "clipshare.json").read_text())
        for kind, names in UNREGISTERED.items():
            for name in names:
                del app[kind][name]
        for screen in app["states"].values():  # actions leading to a removed screen: unknown
            for action in screen.get("actions", []):
                if action.get("linked_state") in UNREGISTERED["states"]:
                    action.pop("linked_state")
        (registry / "clipshare.json").write_text(json.dumps(app))
        self.store = await EventStore(self.work / "coordinator.sqlite3").open()
        self.db = await FarmDB.open(self.work / "farm.sqlite3")
        await seed_demo(self.db, [self.serial])
        config = self.ai_config(self.model.base_url)
        self.ai = AIClient(config) if config is not None else None
        self.hub = await Hub(f"tcp://127.0.0.1:{free_port()}", SECRET, self.store, db=self.db,
                             data_dir=self.work / "data", ai=self.ai,
                             unknown=UnknownScreenQueue(self.work / "unknown-screens")).start()
        self.hub.recovery.options.settle_s = 0.3
        self.hub.recovery.options.max_steps = self.max_steps
        self.hub.recovery.options.pause_after_failures = 10_000  # measure, don't hold
        self.node = await Node("bench", self.hub.link.address, SECRET,
                               AdbServer(port=self.adb.port), self.work / "node",
                               registry=registry).start()
        self.node.playback_options = PlaybackOptions(settle_s=0.1, poll_s=0.2,
                                                     unknown_confirm_s=0.3)
        deadline = time.monotonic() + 30
        while not any(p["state"] == "online" for p in self.hub.phones()):
            if time.monotonic() > deadline:
                raise RuntimeError("the virtual phone did not come online")
            await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *exc) -> None:
        # Whatever was started, stopped in reverse (a failed start stops its first part).
        for name, stop in (("node", lambda o: o.stop()), ("hub", lambda o: o.close()),
                           ("store", lambda o: o.close()), ("db", lambda o: o.close()),
                           ("model", lambda o: o.stop())):
            if getattr(self, name, None) is not None:
                await stop(getattr(self, name))
        if getattr(self, "farm", None) is not None:
            self.farm.stop_thread()
        if getattr(self, "adb", None) is not None:
            kill_adb_server(self.adb.port)

    # --- the phone's truth ------------------------------------------------------------------
    def state(self) -> dict:
        return orjson.loads(self.driver.shell("vphone state").text)

    def _oracle_reply(self, body: dict) -> dict:
        call = oracle(self.state())
        if call is None:
            return reply_tool("wait", seconds=0.2)
        return reply_tool(call[0], **call[1])

    async def act(self, name: str, **args) -> None:
        actions = {"tap": lambda: {"type": "tap", "x": args["x"], "y": args["y"]},
                   "key": lambda: {"type": "key", "key": "KEYCODE_" + args["key"].upper()},
                   "type_text": lambda: {"type": "text", "text": args["text"]},
                   "launch_app": lambda: {"type": "launch_app", "package": CLIPSHARE}}
        await self.hub.run_action(self.serial, actions[name]())
        await asyncio.sleep(0.15)

    async def tap(self, xy: tuple[int, int]) -> None:
        await self.act("tap", x=xy[0], y=xy[1])

    async def popup(self, name: str) -> None:
        await asyncio.to_thread(self.driver.shell, f"vphone popup {name}")

    async def to_feed(self) -> None:
        """The base state (signed-in feed, no dialog), reached with the oracle's own moves."""
        for _ in range(20):
            call = oracle(await asyncio.to_thread(self.state))
            if call is None:
                return
            await self.act(call[0], **call[1])
        raise RuntimeError(f"could not bring the phone back to the feed: {self.state()}")

    async def run_sequence(self, timeout: float = 180.0) -> dict:
        started = await self.hub.start_run(SEQUENCE, f"phone:{self.serial}")
        run_id = started["run_id"]
        deadline = time.monotonic() + timeout
        while True:
            run = await self.hub.get_run(run_id)
            if run["status"] != "running":
                return run["executions"][0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} did not end: {run}")
            await asyncio.sleep(0.2)


Perturb = Callable[[Rig], Awaitable[None]]


def situations() -> list[tuple[str, str, Perturb]]:
    """(name, kind, perturbation from the feed): 20 of them."""

    async def profile(r: Rig) -> None:
        await r.tap(NAV_PROFILE)

    async def settings(r: Rig) -> None:
        await profile(r)
        await r.tap(OPEN_SETTINGS)

    async def switcher(r: Rig) -> None:
        await profile(r)
        await r.tap(SWITCH_ACCOUNT)

    async def logged_out(r: Rig) -> None:
        await settings(r)
        await r.tap(LOG_OUT)

    async def closed(r: Rig) -> None:
        await r.hub.run_action(r.serial, {"type": "stop_app", "package": CLIPSHARE})
        await r.act("key", key="home")

    async def chrome(r: Rig) -> None:
        await r.hub.run_action(r.serial, {"type": "launch_app", "package": "com.android.chrome"})

    def then_popup(first: Perturb | None, name: str) -> Perturb:
        async def go(r: Rig) -> None:
            if first is not None:
                await first(r)
            await r.popup(name)
        return go

    async def upload_picked(r: Rig) -> None:
        await r.tap(NAV_UPLOAD)
        await r.tap(PICK_CLIP_1)

    async def home_from_profile(r: Rig) -> None:
        await profile(r)
        await r.act("key", key="home")

    async def closed_on_settings(r: Rig) -> None:
        await settings(r)
        await closed(r)

    async def logged_out_closed(r: Rig) -> None:
        await logged_out(r)
        await closed(r)

    async def chrome_then_home(r: Rig) -> None:
        await chrome(r)
        await r.act("key", key="home")

    async def upload(r: Rig) -> None:
        await r.tap(NAV_UPLOAD)

    return [
        ("popup video_options on feed", "popup", then_popup(None, "video_options")),
        ("popup rate_us on feed", "popup", then_popup(None, "rate_us")),
        ("popup video_options on profile", "popup", then_popup(profile, "video_options")),
        ("popup rate_us on profile", "popup", then_popup(profile, "rate_us")),
        ("popup rate_us on settings", "popup", then_popup(settings, "rate_us")),
        ("popup video_options on upload", "popup", then_popup(upload, "video_options")),
        ("wrong screen: settings", "wrong screen", settings),
        ("wrong screen: upload", "wrong screen", upload),
        ("wrong screen: upload, clip picked", "wrong screen", upload_picked),
        ("wrong screen: account switcher (unregistered)", "wrong screen", switcher),
        ("wrong screen: profile", "wrong screen", profile),
        ("wrong screen: switcher + rate_us", "wrong screen", then_popup(switcher, "rate_us")),
        ("logged out", "logged out", logged_out),
        ("logged out + rate_us", "logged out", then_popup(logged_out, "rate_us")),
        ("logged out + login_failed", "logged out", then_popup(logged_out, "login_failed")),
        ("logged out, app closed", "logged out", logged_out_closed),
        ("app closed (launcher)", "app closed", closed),
        ("app closed on settings", "app closed", closed_on_settings),
        ("home pressed on profile", "app closed", home_from_profile),
        ("another app in front (Chrome)", "app closed", chrome),
        ("Chrome, then home", "app closed", chrome_then_home),
    ][:20]


async def measure(label: str, ai_config: Callable[[str], AIConfig | None], count: int,
                  max_steps: int) -> dict:
    work = OUT / f"recovery-{label}-{int(time.time())}"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    async with Rig(work, ai_config, max_steps) as rig:
        for name, kind, perturb in situations()[:count]:
            await rig.to_feed()
            await perturb(rig)
            t0 = time.monotonic()
            ex = await rig.run_sequence()
            attempts = await rig.db.recovery_attempts(execution_key=ex["execution_id"])
            steps = sum(a["steps"] or 0 for a in attempts)
            rows.append({"situation": name, "kind": kind, "status": ex["status"],
                         "recovered": ex["status"] == "completed" and bool(attempts),
                         "attempts": len(attempts), "steps": steps,
                         "seconds": time.monotonic() - t0,
                         "error": ex.get("error")})
            print(f"  {label:8} {name:46} {ex['status']:9} attempts={len(attempts)} "
                  f"steps={steps} {time.monotonic() - t0:5.1f}s"
                  + (f"  ({(ex.get('error') or '')[:100]})" if ex["status"] != "completed" else ""),
                  flush=True)
        usage = rig.ai.totals if rig.ai is not None else None
    ok = [r for r in rows if r["status"] == "completed"]
    return {"label": label, "rows": rows, "success_rate": len(ok) / len(rows) if rows else 0.0,
            "mean_steps": statistics.mean(r["steps"] for r in rows) if rows else 0.0,
            "mean_steps_ok": statistics.mean(r["steps"] for r in ok) if ok else 0.0,
            "tokens": (usage.prompt_tokens + usage.completion_tokens) if usage else 0,
            "cost": usage.cost if usage else 0.0, "work": str(work)}


def report(result: dict) -> None:
    rows = result["rows"]
    print(f"\n{result['label']}: success {sum(r['status'] == 'completed' for r in rows)}/"
          f"{len(rows)} = {result['success_rate']:.0%}, mean AI steps {result['mean_steps']:.2f} "
          f"(successful: {result['mean_steps_ok']:.2f}), tokens {result['tokens']}, "
          f"cost {result['cost']:.4f}")
    kinds: dict[str, list[dict]] = {}
    for r in rows:
        kinds.setdefault(r["kind"], []).append(r)
    for kind, group in kinds.items():
        done = [r for r in group if r["status"] == "completed"]
        print(f"  {kind:13} {len(done)}/{len(group)} recovered, mean steps "
              f"{statistics.mean(r['steps'] for r in group):.2f}")
    print(f"  artefacts: {result['work']}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--situations", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--real-only", action="store_true",
                   help="skip the scripted oracle (needs PHONEFARM_AI_BASE_URL)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    results = []
    if not args.real_only:
        results.append(await measure(
            "scripted", lambda url: AIConfig(base_url=url, model="oracle"),
            args.situations, args.max_steps))
    real = AIConfig.from_env()
    if real is not None:
        results.append(await measure("real", lambda url: real, args.situations, args.max_steps))
    else:
        print("(no PHONEFARM_AI_BASE_URL: the real-endpoint run is skipped)")
    for result in results:
        report(result)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "recovery.json").write_text(json.dumps(
        [{k: v for k, v in r.items()} for r in results], indent=1))


if __name__ == "__main__":
    asyncio.run(main())
