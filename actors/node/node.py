"""One rack computer's `farm-node`: the link to the coordinator, the journal, the rack.

Owns the process's event loop side: commands from the coordinator are routed to phone
actors through the bridge; events from actor threads are journaled (durable ones) and sent;
thumbnails go live-only. The rack actor and the device watcher own the phones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import msgspec
import pykka

from actors.node.apk_cache import ApkCache
from actors.node.bridge import Call, call_actor, tell_quietly
from actors.node.device.adb_server import AdbServer
from actors.node.device.agent import AgentConfig
from actors.node.device.watcher import DeviceWatcher
from actors.node.live import LiveFrames
from actors.metrics.health import HEALTH_EVENT, HEALTH_EVERY_S, HealthProbe
from actors.metrics.node import NodeMetrics
from actors.metrics.serve import MetricsServer, parse_listen
from actors.node.installs import INVENTORY_EVERY_S, AppInstaller
from actors.node.matcher import MatcherActor
from actors.node.registry_copy import NodeRegistry
from actors.node.playback import PlaybackActor, PlaybackOptions
from actors.process import (StartupError, run_main, setup_logging, starting, startup_errors,
                             startup_message, wait_for_stop_signal)
from actors.node.rack import PhoneDirectory, RackActor
from protocol.errors import ActorStopped, FarmError, PhoneLocked, ProtocolError, ValidationErrors
from protocol.messages import (Acquire, ApkHave, ApkPut, CancelRun, Command, CommandResult,
                               Identify, InstallApp, LiveEvent, LiveFrame, LiveWatch, PhoneInfo,
                               RegistryApplied, RegistryPush, Release, RunSequence, UninstallApp)
from protocol.scrcpy import SCRCPY_VERSION
from protocol.transport import NodeLink
from registry.load import DEMO_REGISTRY

log = logging.getLogger(__name__)

# Housekeeping period: lease expiry is noticed within this.
TICK_S = 1.0
REAFFIRM_AFTER_S = 3.0  # a pause the adb server does not explain is looked at again after

# Node.stop's phases, each bounded (seconds); whatever is still stuck at a phase's end is
# logged by name and left behind. In all well under the 30 s a supervisor (or a test) gives.
PLAYBACK_GRACE_S = 2.0   # cancelled playbacks end after their current step...
PLAYBACK_STOP_S = 3.0    # ...or, once the phones' adb connections are cut, at once
STARTED_MEMORY = 10_000  # execution ids a node remembers starting (Node._started)
EVENTS_DRAIN_S = 2.0     # their last events reach the journal
TASKS_STOP_S = 2.0       # the node's own tasks end after their cancellation
RACK_STOP_S = 8.0        # the rack stops its phone actors (rack.PHONE_STOP_S of it)
MATCHER_STOP_S = 3.0
LINK_CLOSE_S = 5.0


class Node:
    """Owns a node process: NodeLink + journal, rack actor, device watcher."""

    def __init__(self, name: str, coordinator: str, secret: str, adb: AdbServer,
                 data_dir: Path, debug_actions: bool = False,
                 heartbeat_interval: float = 1.0, dead_after: float = 3.0,
                 registry: Path | None = DEMO_REGISTRY, agent: AgentConfig | None = None,
                 metrics_listen: tuple[str, int] | None = None,
                 metrics_per_phone: bool = False,
                 inventory_every_s: float = INVENTORY_EVERY_S) -> None:
        self.name = name
        # GET /metrics on ``metrics_listen`` (--metrics; off without it): actors.metrics.node.
        self.metrics_listen = metrics_listen
        self.metrics = (NodeMetrics(self, per_phone=metrics_per_phone)
                        if metrics_listen is not None else None)
        self.metrics_server: MetricsServer | None = None
        # How phones are driven (scrcpy agent, else shell); None: the shell path only.
        self.agent = agent
        self.registry = registry
        self.matcher = None
        # The registry folder in use and the coordinator's pushes into it; its version is
        # told in every Hello so a node that missed a push is sent it on reconnecting.
        self.node_registry: NodeRegistry | None = None
        self.registry_version: str | None = None
        self._registry_lock: asyncio.Lock | None = None
        self.coordinator = coordinator
        self.adb = adb
        self.data_dir = data_dir
        self.directory = PhoneDirectory()
        self.debug_actions = debug_actions
        self._secret = secret
        self._hb = (heartbeat_interval, dead_after)
        self._events: asyncio.Queue[tuple[str, str | None, dict]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self.link: NodeLink | None = None
        self.rack = None
        self.watcher: DeviceWatcher | None = None
        self._starting: set[str] = set()  # execution ids whose start awaits the phone's lock
        # Executions this process started, newest last (a bounded memory): a run sent again
        # ``if_new`` is not played twice though its journaled start was acked meanwhile.
        self._started: OrderedDict[str, None] = OrderedDict()
        # Set as `stop` begins: from then on no new work (its events could no longer be
        # journaled once the event pump is cancelled, so its taps would be in no record).
        self.stopping = False
        # Running executions: execution_id -> (playback actor, its cancel flag, serial).
        self.playbacks: dict[str, tuple[Any, threading.Event, str]] = {}
        self.playback_options = PlaybackOptions()
        # Frames of the phones a console page watches (LiveWatch from the coordinator).
        self.live = LiveFrames(self.directory.driver, self._send_live_frame)
        # APKs by hash (ApkPut/ApkHave) and the installs and inventories of the phones.
        self.apk_cache = ApkCache(data_dir / f"apk-cache-{name}")
        self.installer = AppInstaller(name, self.directory, self.apk_cache, self.publish)
        self.inventory_every_s = inventory_every_s  # apps_inventory of every phone (hourly)

    # --- events from actor threads ---------------------------------------------------------
    def publish(self, event: str, serial: str | None, data: dict, durable: bool = True) -> None:
        """Thread-safe: called by actors. Durable events are journaled in order."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        data = {**data, "at": time.time()}
        if self.metrics is not None:
            self.metrics.observe(event, serial, data)
        try:
            if durable:
                loop.call_soon_threadsafe(self._events.put_nowait, (event, serial, data))
            else:
                loop.call_soon_threadsafe(self._send_live, event, serial, data)
            if event in ("phone_up", "phone_resumed") and serial is not None:
                loop.call_soon_threadsafe(self.installer.phone_back, serial)  # its inventory
        except RuntimeError:
            pass  # loop closing

    def _send_live(self, event: str, serial: str | None, data: dict) -> None:
        link = self.link
        if link is None or not link.connected:
            return  # live-only: nobody to show it to
        if isinstance(data.get("jpeg"), bytes):
            data = {**data, "jpeg": base64.b64encode(data["jpeg"]).decode()}
        task = asyncio.get_running_loop().create_task(
            link.send(LiveEvent(event=event, serial=serial, data=data)))
        task.add_done_callback(_quiet)

    def _send_live_frame(self, frame: LiveFrame) -> None:
        """From a live sender thread: send and wait until it is out (the sender skips the
        frames that arrive meanwhile: a slow link lowers the rate, nothing queues)."""
        loop, link = self._loop, self.link
        if loop is None or loop.is_closed() or link is None or not link.connected:
            raise ConnectionError("not connected")
        asyncio.run_coroutine_threadsafe(link.send(frame), loop).result(timeout=10)

    async def _event_pump(self) -> None:
        """One writer, so journal order is publish order. Everything published meanwhile is
        journaled together: one commit for sixty phones' results, not sixty in a row (each
        waiting for the one before it delayed the last phone's news by the sum)."""
        while True:
            batch = [await self._events.get()]
            while not self._events.empty():
                batch.append(self._events.get_nowait())
            try:
                await self.link.send_events(batch)
            except ProtocolError:  # one can never fit a message: nothing was journaled yet
                for event, serial, data in batch:  # journal the others, log that one
                    try:
                        await self.link.send_event(event, serial, data)
                    except Exception:
                        log.exception("node=%s could not journal event %s", self.name, event)
            except Exception:
                log.exception("node=%s could not journal %d events (%s...)", self.name,
                              len(batch), batch[0][0])

    async def _report_health(self) -> None:
        """Every HEALTH_EVERY_S: measure the node (in a thread: psutil and the adb server
        block) and tell the coordinator (a live event: only the latest matters)."""
        probe = await asyncio.to_thread(HealthProbe, self.data_dir, self.adb)
        while True:
            try:
                report = await asyncio.to_thread(probe.measure)
            except Exception:  # noqa: BLE001 - a probe that fails must not end the reports
                log.exception("node=%s health not measured", self.name)
            else:
                if self.metrics is not None:
                    self.metrics.health(report)
                self._send_live(HEALTH_EVENT, None, report)
            await asyncio.sleep(HEALTH_EVERY_S)

    async def _tick(self) -> None:
        paused_since: dict[str, float] = {}
        while True:
            await asyncio.sleep(TICK_S)
            self._reaffirm_paused(paused_since)
            for serial in self.directory.serials():
                ref = self.directory.get(serial)
                if ref is not None:
                    try:
                        await call_actor(ref, "tick", timeout=30)
                    except FarmError:
                        pass

    def _reaffirm_paused(self, paused_since: dict[str, float]) -> None:
        """A phone paused for REAFFIRM_AFTER_S while the adb server lists it as usable is
        reported to the rack again, which resumes it (its next command pauses it again if
        it really is gone)."""
        if self.watcher is None:
            return
        now = time.monotonic()
        paused = {v["serial"] for v in self.directory.views() if v["state"] == "paused"}
        for serial in set(paused_since) - paused:
            del paused_since[serial]
        stale = [s for s in paused if now - paused_since.setdefault(s, now) >= REAFFIRM_AFTER_S]
        if stale:
            for serial in stale:
                paused_since[serial] = now
            self.watcher.reaffirm(stale)

    def _online_phones(self) -> list[str]:
        return [v["serial"] for v in self.directory.views() if v["state"] == "online"]

    # --- commands --------------------------------------------------------------------------
    def phones(self) -> list[PhoneInfo]:
        return [PhoneInfo(serial=v["serial"], state=v["state"], detail=v)
                for v in self.directory.views()]

    async def on_command(self, command: Command) -> CommandResult:
        def result(status: str, error: str | None = None, data: dict | None = None) -> CommandResult:
            return CommandResult(command_id=command.command_id, serial=command.serial,
                                 status=status, error=error, data=data or {})

        serial = command.serial
        action = command.action
        if self.stopping and not isinstance(action, (CancelRun, Release)):
            return result("error", f"node {self.name} is stopping: nothing new is started "
                                   "on its phones")
        if isinstance(action, (ApkPut, ApkHave)):  # the node's APK cache: no phone
            try:
                if isinstance(action, ApkHave):
                    missing = await asyncio.to_thread(self.apk_cache.missing, action.sha256s)
                    return result("ok", data={"missing": missing})
                return result("ok", data=await asyncio.to_thread(self.apk_cache.put, action))
            except (FarmError, OSError) as exc:
                return result("error", str(exc))
        if isinstance(action, InstallApp):
            return result(*await self.installer.install(serial, action))
        if isinstance(action, UninstallApp):
            return result(*await self.installer.uninstall(serial, action))
        record = self.directory.record(serial)
        ref = self.directory.get(serial)
        if record is None:
            return result("error", f"phone {serial} is not on node {self.name}")
        if isinstance(action, RunSequence):
            return result(*await self._start_playback(serial, record, ref, action))
        if isinstance(action, CancelRun):
            entry = self.playbacks.get(action.execution_id)
            if entry is not None:
                entry[1].set()
            return result("ok", data={"cancelled": entry is not None})
        try:
            if isinstance(action, Acquire):
                grant = await call_actor(ref, "acquire", action.execution_id, action.lease_s) \
                    if ref is not None else None
                if grant is None:
                    return result("gone", f"phone {serial} actor is restarting")
                return result("ok", data=grant)
            if isinstance(action, Release):
                released = await call_actor(ref, "release", action.execution_id) \
                    if ref is not None else False
                return result("ok", data={"released": released})
            # A locked phone answers at once, even while its actor is busy.
            holder = record.lock_holder
            if holder is not None and holder != command.execution_id \
                    and record.lock_expires > time.time():
                return result("locked", None, {"holder": holder})
            if record.state == "paused":
                return result("gone", f"phone {serial} is unplugged (paused)")
            if ref is None:
                why = "marked failed" if record.state == "failed" else "restarting after a crash"
                return result("error", f"phone {serial} is {why}")
            if isinstance(action, Identify):
                out = await call_actor(ref, "identify_now", command.execution_id)
                if action.png and out.get("status") == "ok":
                    out["png"] = await call_actor(ref, "screen")  # the frame just named
            else:
                out: dict[str, Any] = await call_actor(
                    ref, "perform", msgspec.to_builtins(action), command.execution_id)
        except PhoneLocked as exc:
            return result("locked", str(exc), {"holder": exc.holder})
        except ActorStopped as exc:
            return result("error", f"phone {serial} actor stopped: {exc}")
        except FarmError as exc:
            return result("error", str(exc))
        except Exception as exc:  # a crashed actor's bug, reported not raised
            return result("error", f"phone {serial} actor crashed: {exc!r}")
        status, error = out.pop("status"), out.pop("error", None)
        if isinstance(out.get("png"), bytes):
            out["png"] = base64.b64encode(out["png"]).decode()
        return result(status, error, out)

    async def _start_playback(self, serial: str, record, ref, run: RunSequence
                              ) -> tuple[str, str | None, dict]:
        """Start a PlaybackActor for ``run`` and answer at once; a re-sent start of a running
        execution is answered ok again (commands are at-least-once)."""
        running = self.playbacks.get(run.execution_id)
        if (running is not None and running[0].is_alive()) or run.execution_id in self._starting:
            return "ok", None, {"started": True, "already_running": True}
        # Two deliveries of one start (a re-send and the coordinator's resume) can both pass
        # the check above while the first awaits the lock below, which the same execution
        # takes again: without this mark both would play the steps, interleaved.
        self._starting.add(run.execution_id)
        try:
            if run.if_new and (running is not None or run.execution_id in self._started or (
                    self.link is not None
                    and await self.link.journal.has_started(run.execution_id))):
                return "ok", None, {"started": True, "already_played": True}
            answer = await self._start_new_playback(serial, record, ref, run)
            if answer[0] == "ok":
                self._started[run.execution_id] = None
                while len(self._started) > STARTED_MEMORY:
                    self._started.popitem(last=False)
            return answer
        finally:
            self._starting.discard(run.execution_id)

    async def _start_new_playback(self, serial: str, record, ref, run: RunSequence
                                  ) -> tuple[str, str | None, dict]:
        holder = record.lock_holder
        if holder is not None and holder != run.execution_id and record.lock_expires > time.time():
            return "locked", f"phone {serial}: locked by execution {holder}", {"holder": holder}
        if record.state == "failed":
            return "error", f"phone {serial} is marked failed", {}
        if ref is not None:
            # Taken here, in the phone actor's order, so that of two runs started at once
            # exactly one is told "locked"; the playback renews it as its own.
            try:
                await call_actor(ref, "acquire", run.execution_id, run.lease_s)
            except PhoneLocked as exc:
                return "locked", str(exc), {"holder": exc.holder}
            except FarmError as exc:
                return "error", str(exc), {}
            if self.stopping:  # the stop began while this start awaited the lock
                with contextlib.suppress(FarmError):
                    await call_actor(ref, "release", run.execution_id)
                return "error", f"node {self.name} is stopping: not started", {}
        cancel = threading.Event()

        def done(execution_id: str) -> None:
            entry = self.playbacks.get(execution_id)
            if entry is not None and entry[1] is cancel:
                self.playbacks.pop(execution_id, None)

        ref = PlaybackActor.start(run, serial, self.directory, self.publish, self.matcher,
                                  cancel, on_done=done, options=self.playback_options,
                                  media_cache=self.apk_cache)
        self.playbacks[run.execution_id] = (ref, cancel, serial)
        return "ok", None, {"started": True}

    async def _stop_playbacks(self) -> None:
        """Cancel every running playback and wait, bounded, for each to end (it releases its
        lock and reports while the event pump still runs). One blocked in a device call is
        freed by cutting the phones' adb connections; one still running after that is
        logged by execution and phone and left behind."""
        running = dict(self.playbacks)
        for _, cancel, _ in running.values():
            cancel.set()

        def alive() -> dict[str, str]:
            return {eid: serial for eid, (ref, _, serial) in running.items() if ref.is_alive()}

        if not await _until(lambda: not alive(), PLAYBACK_GRACE_S):
            log.warning("node=%s stop: playbacks %s still running %.0fs after cancel; cutting "
                        "their phones' adb connections", self.name, _named(alive()),
                        PLAYBACK_GRACE_S)
            self.directory.close_devices("node stopping")
            if not await _until(lambda: not alive(), PLAYBACK_STOP_S):
                log.error("node=%s stop: playbacks %s did not end; left behind\n%s", self.name,
                          _named(alive()), _actor_stacks())

    # --- registry pushes -------------------------------------------------------------------
    def _on_link_message(self, envelope) -> None:
        if isinstance(envelope.body, LiveWatch):
            self.live.watch(envelope.body)
        elif isinstance(envelope.body, RegistryPush):
            task = asyncio.get_running_loop().create_task(self._apply_registry(envelope.body))
            self._tasks.append(task)
            task.add_done_callback(lambda t: t in self._tasks and self._tasks.remove(t))
        else:
            log.warning("node=%s unexpected %s ignored", self.name, envelope.kind)

    async def _apply_registry(self, push: RegistryPush) -> None:
        """Write the pushed app, reload the matcher (the next frame is matched against the
        new version) and tell the coordinator the version now in use."""
        error = None
        async with self._registry_lock:
            if self.node_registry is None or self.matcher is None:
                error = "screen identification is off on this node (--registry none)"
            else:
                try:
                    path = await asyncio.to_thread(self.node_registry.apply, push)
                    matcher = self.matcher
                    self.registry_version = await asyncio.to_thread(
                        lambda: matcher.proxy().load(path).get(timeout=60))
                except (FarmError, OSError) as exc:
                    error = str(exc)
                    log.error("node=%s registry push of %s not applied: %s", self.name, push.app, exc)
        try:
            await self.link.send(RegistryApplied(app=push.app, version=self.registry_version or "",
                                                 error=error))
        except FarmError as exc:  # the coordinator re-syncs from the next Hello
            log.warning("node=%s registry_applied not sent: %s", self.name, exc)

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> "Node":
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._registry_lock = asyncio.Lock()
        if self.registry is not None:  # first: a bad registry stops the start before the link
            self.node_registry = NodeRegistry(self.registry, self.data_dir, self.name)
            self.matcher = MatcherActor.start(self.node_registry.path)
            self.registry_version = self.matcher.proxy().version().get(timeout=30)
        hb, dead = self._hb
        self.link = NodeLink(self.coordinator, self._secret, self.name, self.phones,
                             journal=self.data_dir / f"journal-{self.name}.sqlite3",
                             on_command=self.on_command, heartbeat_interval=hb, dead_after=dead,
                             on_message=self._on_link_message,
                             registry_version=lambda: self.registry_version)
        await self.link.start()
        self._tasks = [asyncio.create_task(self._event_pump()), asyncio.create_task(self._tick()),
                       asyncio.create_task(self._report_health()),
                       asyncio.create_task(self.installer.hourly(self._online_phones,
                                                                 self.inventory_every_s))]
        if self.metrics is not None:
            self.metrics_server = await MetricsServer(self.metrics.registry,
                                                      *self.metrics_listen).start()
            log.info("node=%s metrics on %s", self.name, self.metrics_server.url)
        self.rack = RackActor.start(self.adb, self.publish, self.directory,
                                    debug_actions=self.debug_actions, matcher=self.matcher,
                                    agent=self.agent)
        rack = self.rack

        def on_change(serial: str, state: str) -> None:
            tell_quietly(rack, Call("device_changed", (serial, state)))

        self.watcher = DeviceWatcher(self.adb, on_change).start()
        log.info("node=%s started (coordinator %s, adb %s:%d)", self.name, self.coordinator,
                 self.adb.host, self.adb.port)
        return self

    async def stop(self) -> None:
        """Stop the node: playbacks, the node's tasks, the rack (and its phone actors), the
        matcher, the link. Every phase is bounded (the ``*_S`` budgets above) and timed; what
        is still stuck at a phase's end is logged by name and left behind, so that one phone
        that does not answer can never hold the node's stop."""
        self.stopping = True
        t0 = time.monotonic()
        phase_t = t0

        def phase(name: str) -> None:
            nonlocal phase_t
            now = time.monotonic()
            log.debug("node=%s stop: %s in %.2fs", self.name, name, now - phase_t)
            phase_t = now

        if self.watcher:
            self.watcher.stop()
        self.live.stop_all()
        # First, while the event pump still runs: they release their locks and report.
        await self._stop_playbacks()
        phase("playbacks")
        if self._events is not None:
            await _until(self._events.empty, EVENTS_DRAIN_S)  # their last events, journaled
        phase("events drained")
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=TASKS_STOP_S)
            if pending:
                log.error("node=%s stop: tasks %s did not end within %.0fs of their "
                          "cancellation; left behind", self.name,
                          ", ".join(sorted(t.get_name() for t in pending)), TASKS_STOP_S)
        self.installer.close()
        phase("tasks")
        if self.rack is not None:
            # Cut here too (no-op if the playbacks' phase did): the rack's stop runs every
            # message queued before it, and device work among them must not wait on a phone.
            self.directory.close_devices("node stopping")
            stopping = self.rack.stop(block=False)
            if not await _until(lambda: _settled(stopping), RACK_STOP_S):
                log.error("node=%s stop: rack actor did not stop within %.0fs; left behind "
                          "(phones %s)\n%s", self.name, RACK_STOP_S,
                          _named({s: "" for s in self.directory.serials()
                                  if self.directory.get(s) is not None}), _actor_stacks())
        phase("rack")
        if self.matcher is not None:
            stopping = self.matcher.stop(block=False)
            if not await _until(lambda: _settled(stopping), MATCHER_STOP_S):
                log.error("node=%s stop: matcher actor did not stop within %.0fs; left "
                          "behind\n%s", self.name, MATCHER_STOP_S, _actor_stacks())
        phase("matcher")
        log.debug("node=%s actors stopped in %.2fs", self.name, time.monotonic() - t0)
        if self.link is not None:
            closing = asyncio.ensure_future(self.link.close())
            done, _ = await asyncio.wait({closing}, timeout=LINK_CLOSE_S)
            if not done:
                log.error("node=%s stop: link did not close within %.0fs; left closing",
                          self.name, LINK_CLOSE_S)
            elif closing.exception() is not None:
                log.error("node=%s stop: link close failed: %r", self.name, closing.exception())
        phase("link")
        if self.metrics_server is not None:
            await self.metrics_server.close()
        log.debug("node=%s stopped in %.2fs", self.name, time.monotonic() - t0)


async def _until(done: Callable[[], bool], timeout: float, poll_s: float = 0.02) -> bool:
    """Poll ``done`` (never blocking the loop) until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


def _settled(future: pykka.Future) -> bool:
    """Whether a pykka future (an actor's stop) has its answer, without waiting for it."""
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except Exception:  # ActorDeadError: stopped already
        pass
    return True


def _named(items: dict[str, str]) -> str:
    return ", ".join(f"{k} (phone {v})" if v else k for k, v in sorted(items.items())) or "-"


def _actor_stacks(frames: int = 4) -> str:
    """Where every actor thread is now (its innermost frames): what a stuck stop waits on."""
    by_id = sys._current_frames()
    lines = []
    for thread in threading.enumerate():
        frame = by_id.get(thread.ident)
        if frame is None or "Actor" not in thread.name:
            continue
        stack = traceback.format_stack(frame)[-frames:]
        lines.append(f"  {thread.name}:\n" + "".join("    " + ln for ln in stack))
    return "\n".join(lines)


def _quiet(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("live event not sent: %s", task.exception())


MIN_KEY_CHARS = 16  # shorter is no key `farm nodes add` issued (43 characters)


def read_secret(value: str | None, path: str | None, key_file: str | None = None) -> str:
    """What the node proves to the coordinator: its own key from ``key_file`` (`farm nodes
    add NAME --key-file`), else the shared farm secret from a flag, a file or
    PHONEFARM_SECRET (deprecated, warned); refuse to run without either."""
    if key_file:
        path_ = Path(key_file)
        key = path_.read_text().strip()
        if len(key) < MIN_KEY_CHARS:
            raise StartupError(f"--key-file {key_file}: holds no node key (expected the "
                               f"output of `farm nodes add NAME`)")
        if path_.stat().st_mode & 0o077:
            log.warning("node key file %s is readable by other users: chmod 600 it", key_file)
        return key
    if path:
        secret = Path(path).read_text().strip()
    else:
        secret = value or os.environ.get("PHONEFARM_SECRET", "")
    if not secret:
        raise StartupError("no node key: pass --key-file (farm nodes add NAME makes one), or "
                           "the deprecated shared secret (--secret-file, --secret, "
                           "PHONEFARM_SECRET)")
    log.warning("this node proves the shared farm secret (--secret-file, --secret, "
                "PHONEFARM_SECRET): deprecated, it goes in the next release; give the node its "
                "own key (farm nodes add NAME, then farm-node --key-file)")
    return secret


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="farm-node", description="Run one rack computer's node.")
    p.add_argument("--coordinator", default=os.environ.get("PHONEFARM_COORDINATOR",
                                                            "tcp://127.0.0.1:8471"))
    p.add_argument("--name", default=os.environ.get("PHONEFARM_NODE", socket.gethostname()))
    p.add_argument("--key-file", default=os.environ.get("PHONEFARM_NODE_KEY_FILE"),
                   metavar="PATH",
                   help="this node's own key (`farm nodes add NAME --key-file PATH` writes "
                        "it); the coordinator must prove the same key back before the node "
                        "takes any command")
    p.add_argument("--secret", help="deprecated: the shared farm secret (prefer --key-file)")
    p.add_argument("--secret-file", help="deprecated: the shared farm secret's file")
    p.add_argument("--adb-port", type=int, default=int(os.environ.get("ANDROID_ADB_SERVER_PORT",
                                                                      "5037")))
    p.add_argument("--data", default=os.environ.get("PHONEFARM_DATA", "./farm-data"))
    p.add_argument("--registry", default=os.environ.get("PHONEFARM_REGISTRY", str(DEMO_REGISTRY)),
                   help="screen registry folder (default: the demo registry); 'none' turns "
                        "screen identification off")
    p.add_argument("--debug-actions", action="store_true",
                   default=os.environ.get("PHONEFARM_DEBUG_ACTIONS") == "1",
                   help="allow test-only actions such as debug_crash")
    p.add_argument("--scrcpy-server", default=os.environ.get("PHONEFARM_SCRCPY_SERVER"),
                   metavar="PATH",
                   help=f"the scrcpy {SCRCPY_VERSION} server jar (scrcpy-server-v{SCRCPY_VERSION} "
                        "of that release): phones are driven through it, resident, instead of "
                        "one `input`/`screencap` program per action; without it every phone "
                        "stays on the shell path")
    p.add_argument("--phone-io", choices=("agent", "shell"),
                   default=os.environ.get("PHONEFARM_PHONE_IO", "agent"),
                   help="agent (default): the scrcpy agent where it can run, the shell path "
                        "elsewhere; shell: the shell path for every phone")
    p.add_argument("--scrcpy-max-size", type=int, metavar="PIXELS",
                   default=int(os.environ.get("PHONEFARM_SCRCPY_MAX_SIZE", "0")),
                   help="the agent's video: longer side at most PIXELS (0, the default: the "
                        "screen's size); frames are scaled back up and taps down, so the "
                        "registry stays in device pixels")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   default=os.environ.get("PHONEFARM_NODE_METRICS"),
                   help="serve GET /metrics (Prometheus, no token) on this address; off by "
                        "default. Bind it to a private address")
    p.add_argument("--metrics-per-phone", action="store_true",
                   help="add per-phone series (a serial label) to the metrics")
    p.add_argument("--log-level", default=os.environ.get("PHONEFARM_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    return run_main("farm-node", lambda: serve(args))


# A smaller --scrcpy-max-size is taken for a typo (bench/matcher.py --stream measured the
# matcher down to 720, as accurate there as at full size).
MIN_MAX_SIZE = 320


def agent_config(phone_io: str, jar: str | None, max_size: int = 0) -> AgentConfig:
    """The node's AgentConfig; a jar that is named but missing or empty stops the start."""
    if phone_io not in ("agent", "shell"):
        raise StartupError(f"--phone-io {phone_io!r}: expected agent or shell")
    if max_size != 0 and not MIN_MAX_SIZE <= max_size <= 0xFFFF:
        raise StartupError(f"--scrcpy-max-size {max_size}: expected 0 (the screen's size) or "
                           f"{MIN_MAX_SIZE}..65535 pixels")
    path = None
    if jar:
        path = Path(jar)
        if not path.is_file() or path.stat().st_size == 0:
            raise StartupError(f"--scrcpy-server {jar}: no such file, or an empty one "
                               f"(expected the scrcpy {SCRCPY_VERSION} server jar)")
    return AgentConfig(mode=phone_io, jar=path, max_size=max_size)


async def serve(args: argparse.Namespace) -> None:
    """Start the node, run until SIGINT/SIGTERM, stop it; a failed start stops what it
    started and raises StartupError naming the cause."""
    with starting("the node key" if args.key_file else "the farm secret"):
        secret = read_secret(args.secret, args.secret_file, args.key_file)
    registry = None if args.registry == "none" else Path(args.registry)
    agent = agent_config(args.phone_io, args.scrcpy_server, args.scrcpy_max_size)
    try:
        metrics = parse_listen(args.metrics, "--metrics") if args.metrics else None
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    node = Node(args.name, args.coordinator, secret, AdbServer(port=args.adb_port),
                Path(args.data), debug_actions=args.debug_actions, registry=registry,
                agent=agent, metrics_listen=metrics,
                metrics_per_phone=args.metrics_per_phone)
    try:
        try:
            await node.start()
        except ValidationErrors as exc:
            raise StartupError(f"the screen registry {args.registry} is invalid: "
                               f"{startup_message(exc)}") from None
        except startup_errors() as exc:
            raise StartupError(startup_message(exc)) from None
        await wait_for_stop_signal()
    finally:
        await node.stop()


if __name__ == "__main__":
    sys.exit(main())
