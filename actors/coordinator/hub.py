"""The coordinator's hub: the farm as the coordinator sees it, and the way commands go out.

Owns the node directory (nodes, their phones, last sign of life), the phone directory
(state, lock holder, app, account, screen, tags, which node holds it), the latest thumbnail
of every phone, the live subscribers of the status stream, and the routing of an action to
the node that holds the serial. It is the link's ``EventSink``: each node event is stored
(``EventStore``) before the link acks it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import msgspec
import numpy as np

from actors.coordinator.ai.client import AIClient
from actors.coordinator.ai.keys import AIKeyring
from actors.store.event_store import EventStore
from actors.coordinator.live import Frame, LiveWatchers
from actors.coordinator.node_keys import NodeKeyring
from actors.coordinator.node_scope import ReportScope, refused_row
from actors.coordinator.phone_owners import PhoneOwners
from actors.coordinator.phone_pause import PhonePauses
from actors.coordinator.phone_tags import PhoneTags
from actors.coordinator.recorder import Recorder
from actors.coordinator.ai.discovery import DiscoveryService
from actors.coordinator.registry_store import RegistryStore
from actors.coordinator.registry_sync import RegistrySync
from actors.coordinator.ai.recovery import RecoveryManager
from actors.coordinator.runs import RUN_EVENTS, RunManager
from actors.coordinator.scheduling.schedules import ScheduleService
from actors.coordinator.unknown_screens import UnknownScreenQueue
from actors.metrics.health import HEALTH_EVENT, health_row
from protocol.errors import FarmError, PhoneLocked, PhoneNotFound, ValidationError
from protocol.messages import (Action, Command, Event, Hello, LiveEvent, LiveFrame, LiveWatch,
                               RegistryApplied, RunSequence)
from protocol.transport import CoordinatorLink, DeliveryError

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 1000
THUMB_WIDTH = 270
CLOSE_TASKS_S = 5.0  # close waits this long for cancelled background work
# A service that queues events in memory replays, at start, those received this long before
# the coordinator's last stored event: the ones it may have lost in a crash.
REPLAY_S = 600.0
# A node's live watch lasts LIVE_LEASE_S unless renewed; the hub renews every LIVE_RENEW_S,
# so a lost stop (or a coordinator gone) ends a phone's frames within the lease.
LIVE_LEASE_S = 10.0
LIVE_RENEW_S = 3.0
# Events that change a phone's row in the directory, and how.
PHONE_STATE = {"phone_up": "online", "phone_resumed": "online", "phone_restarted": "online",
               "phone_paused": "paused", "phone_failed": "failed", "phone_down": "offline"}


class Hub:
    """Owns the coordinator's live view of the farm and routes actions to nodes."""

    def __init__(self, listen: str, secret: str, store: EventStore, *,
                 heartbeat_interval: float = 1.0, dead_after: float = 3.0,
                 command_deadline: float = 30.0, unknown: UnknownScreenQueue | None = None,
                 recordings: Path | None = None, db: Any = None,
                 data_dir: str | Path | None = None, ai: AIClient | None = None,
                 registry_store: RegistryStore | None = None,
                 node_stagger_s: float = 1.0, ai_keys: AIKeyring | None = None,
                 node_keys: NodeKeyring | None = None) -> None:
        self.store = store
        self.unknown = unknown
        # The editable screen registry, its push to nodes, and discovery of unknown screens.
        self.registry_store = registry_store
        self.registry_sync = (RegistrySync(self, registry_store)
                              if registry_store is not None else None)
        self.discovery: DiscoveryService | None = (
            DiscoveryService(registry_store, db, unknown, ai=lambda: self.ai, emit=self.emit)
            if registry_store is not None and db is not None and unknown is not None else None)
        # The farm's AI model (recovery, discovery, ai.* variables); None = AI is off.
        self.ai = ai
        # Per-client / per-organization AI keys (actors.coordinator.ai.keys); None = hub.ai for all.
        self.ai_keys = ai_keys
        # Phones the coordinator paused (e.g. after repeated failed recoveries).
        self.pauses: PhonePauses | None = PhonePauses(self, db) if db is not None else None
        # Which client owns each phone: every scoped request reads it (actors.access.scope).
        self.owners: PhoneOwners | None = PhoneOwners(db) if db is not None else None
        self._tasks: set[asyncio.Task] = set()
        if recordings is None and data_dir is not None:
            recordings = Path(data_dir) / "sequences"
        self.recorder = Recorder(recordings, lambda serial: self.phone_rows.get(serial, {}).get(
            "last_screen")) if recordings is not None else None
        self.command_deadline = command_deadline
        self.node_rows: dict[str, dict] = {}
        self.phone_rows: dict[str, dict] = {}
        self.thumbs: dict[str, tuple[bytes, float]] = {}
        # The operator's custom tags (spec 4.3), merged into every phone row.
        self.tags: PhoneTags | None = (PhoneTags(Path(data_dir) / "phone-tags.json")
                                       if data_dir is not None else None)
        self.subscribers: set[asyncio.Queue] = set()
        # The live wall: which pages watch which phones (actors.coordinator.live).
        self.live = LiveWatchers(self._tell_live)
        # Sequence runs need the farm database (FarmDB) for records, accounts and variables.
        # Sequences are checked against the registry the coordinator serves, as it is now.
        current_registry = ((lambda: registry_store.registry) if registry_store is not None
                            else None)
        self.runs: RunManager | None = (RunManager(self, db, data_dir or ".", recorded=recordings,
                                                   registry=current_registry)
                                        if db is not None else None)
        # Schedules need the runs (and the farm database, where their state is saved).
        # node_stagger_s: the minimum gap between two scheduled starts on one node.
        self.schedules: ScheduleService | None = (
            ScheduleService(self, self.runs, db, stagger_s=node_stagger_s)
            if self.runs is not None else None)
        # AI recovery of executions stuck on unexpected screens (acts only while self.ai is set).
        self.recovery: RecoveryManager | None = (RecoveryManager(self, self.runs)
                                                 if self.runs is not None else None)
        # Each node's own key (actors.coordinator.node_keys); ``secret`` is the deprecated
        # shared one (None: node keys only). A node reports on its own phones only.
        self.node_keys = node_keys
        self.report_scope = ReportScope(self, db)
        self.link = CoordinatorLink(listen, secret, sink=self, on_node_up=self._node_up,
                                    on_node_down=self._node_down, on_message=self._on_message,
                                    heartbeat_interval=heartbeat_interval, dead_after=dead_after,
                                    node_keys=node_keys.lookup if node_keys is not None else None)
        if node_keys is not None:
            node_keys.on_revoked = self._node_key_revoked
        # The metrics' observer (actors.metrics.coordinator): told every emitted event.
        self.metrics: Any = None
        # Told every emitted event in order, none dropped (unlike a subscriber's queue): the
        # alert engine's. Each must be cheap and do no I/O (it runs inside emit).
        self.event_observers: list[Callable[[dict], None]] = []

    async def start(self) -> "Hub":
        if self.pauses is not None:
            await self.pauses.load()
        if self.owners is not None:
            await self.owners.load()
        await self.link.start()
        if self.schedules is not None:
            await self.schedules.start()
        if self.discovery is not None:
            self.discovery.start()
        self._background(self._renew_live())
        return self

    async def close(self) -> None:
        if self.schedules is not None:
            await self.schedules.close()
        if self.discovery is not None:
            await self.discovery.close()
        if self.runs is not None:
            await self.runs.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a task that swallows its cancellation must not hang the stop
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_TASKS_S)
            for task in stuck:
                log.warning("hub background task still running at close: %s", task.get_name())
        await self.link.close()
        if self.ai_keys is not None:
            await self.ai_keys.close()
        if self.ai is not None:
            await self.ai.close()

    # --- the status stream -----------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self.subscribers.add(q)
        return q

    async def replay_stored(self, kinds: Iterable[str], observe: Callable[[dict], None],
                            seconds: float = REPLAY_S) -> int:
        """Hand ``observe`` again, as emitted items, the stored events of ``kinds`` received
        in the ``seconds`` before the newest one (`EventStore.last_before_stop`). For event
        observers that write idempotently: an event is stored before it is emitted, so one
        stored just before a crash may never have reached their write. The count replayed."""
        events = await self.store.last_before_stop(kinds, seconds)
        for event in events:
            observe({"event": event["event"], "ts": event["received_at"], "node": event["node"],
                     "serial": event["serial"], "data": event["data"]})
        return len(events)

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self.subscribers.discard(queue)

    def emit(self, event: str, node: str | None, serial: str | None, data: dict) -> None:
        item = {"event": event, "ts": time.time(), "node": node, "serial": serial, "data": data}
        if self.metrics is not None:
            self.metrics.observe(item)
        for observe in self.event_observers:
            observe(item)
        for q in list(self.subscribers):
            if q.full():
                try:  # a slow reader loses its oldest events, never blocks the hub
                    q.get_nowait()
                except asyncio.QueueEmpty:
                    pass
            q.put_nowait(item)

    # --- node directory --------------------------------------------------------------------
    def _row(self, serial: str, node: str) -> dict:
        row = self.phone_rows.get(serial)
        if row is None:
            row = self.phone_rows[serial] = {
                "serial": serial, "node": node, "state": "online", "lock_holder": None,
                "active_app": None, "active_account": {}, "last_screen": None, "tags": [],
                "screen_ts": None, "screen_size": None, "state_at": 0.0,
                "io": None, "io_reason": None}
        row["node"] = node
        return row

    def _node_up(self, name: str, hello: Hello) -> None:
        now = time.time()
        # The node's last health report stays until its next (it says when it was taken).
        health = self.node_rows.get(name, {}).get("health")
        self.node_rows[name] = {"name": name, "state": "up", "last_heartbeat": now,
                            "registry_version": hello.registry_version, "health": health}
        if self.registry_sync is not None:
            self.registry_sync.node_up(name, hello.registry_version)
        self.report_scope.node_up(name)
        if self.node_keys is not None:
            self._background(self.node_keys.seen(name))
        seen = set()
        for info in hello.phones:
            if not self.report_scope.hello_phone_allowed(name, info.serial):
                continue
            seen.add(info.serial)
            row = self._row(info.serial, name)
            detail = dict(info.detail or {})
            for key in ("lock_holder", "active_app", "active_account", "last_screen", "tags",
                        "screen_ts", "io", "io_reason"):
                if key in detail:
                    row[key] = detail[key]
            row["state"] = detail.get("state", info.state)
            row["state_at"] = now
            if self.pauses is not None and self.pauses.lock_changed(info.serial, "hello", row):
                self._background(self.pauses.hold(info.serial))
        for serial, row in self.phone_rows.items():
            if row["node"] == name and serial not in seen:
                row["state"] = "offline"
        self.live.renew(seen)  # a reconnected node forgot what was watched
        if self.runs is not None and seen:
            self._background(self.runs.send_pending(
                sorted(seen), {s: self.phone_rows[s].get("lock_holder") for s in seen}))
        log.info("node=%s up with %d phones", name, len(hello.phones))
        self.emit("node_up", name, None, {"phones": sorted(seen)})

    def _node_key_revoked(self, name: str, reason: str) -> None:
        """A node's key was revoked: its connection goes now (its next hello is refused)."""
        if self.link.disconnect(name, reason):
            log.warning("node=%s disconnected: %s", name, reason)

    def _node_down(self, name: str, reason: str) -> None:
        if name in self.node_rows:
            self.node_rows[name]["state"] = "down"
        log.warning("node=%s down: %s", name, reason)
        self.emit("node_down", name, None, {"reason": reason})
        for serial, row in self.phone_rows.items():
            if row["node"] == name and row["state"] != "offline":
                row["state"] = "offline"
                row["state_at"] = time.time()
                self.emit("phone_down", name, serial, {"reason": f"node {name} down"})

    # --- EventSink -------------------------------------------------------------------------
    def last_seq(self, node: str) -> int:
        return self.store.last_seq(node)

    async def handle(self, node: str, event: Event) -> None:
        await self.handle_batch(node, [event])

    async def handle_batch(self, node: str, events: list[Event]) -> None:
        """`_handle_batch`, finished even if the caller is cancelled: a node going down
        cancels its link worker, maybe while the events are being stored. Stored but not yet
        emitted, they would never reach the status stream: the node re-sends them, and an
        event already stored is not emitted again (the 4 x 15 chaos bench: a stopping node's
        last seven execution ends)."""
        await asyncio.shield(self._handle_batch(node, events))

    async def _handle_batch(self, node: str, events: list[Event]) -> None:
        """Node events in seq order: records first (one writer job for the batch), then the
        events stored (one transaction), then the phone rows and the status stream.
        Records first, idempotently: a crash after storing an event but before its record
        would lose the record (a stored event is never applied again)."""
        # An event about another node's phone or execution takes no effect at all: only an
        # event_refused row keeps its seq (actors.coordinator.node_scope).
        refused = await self.report_scope.refusals(node, events)
        prepared = [(event, await self._prepare(node, event)) for event in events
                    if event.seq not in refused]
        if self.runs is not None:
            run_events = [(e.event, e.serial, data, e.seq) for e, data in prepared
                          if e.event in RUN_EVENTS]
            if run_events:
                await self.runs.apply_many(run_events)
        rows = [(e.seq, e.event, e.serial, data) for e, data in prepared]
        rows += [refused_row(e, refused[e.seq]) for e in events if e.seq in refused]
        added = await self.store.add_many(node, sorted(rows, key=lambda r: r[0]), time.time())
        if added and node in self.node_rows:
            self.node_rows[node]["last_heartbeat"] = time.time()
        for event, data in prepared:
            if event.seq in added:
                self._after_stored(node, event, data)
        for event in events:
            if event.seq in refused and event.seq in added:
                _, name, serial, data = refused_row(event, refused[event.seq])
                self.emit(name, node, serial, data)

    async def _prepare(self, node: str, event: Event) -> dict:
        """The event's data as stored: frames moved out to files, recovery's claim marked."""
        data = dict(event.data)
        if event.event == "unknown_screen":
            data = await self._queue_unknown(node, event.seq, event.serial, data)
        if event.event == "execution_finished" and self.recovery is not None \
                and self.recovery.wants(data):
            data["recovering"] = True  # AI recovery takes it over: the record stays active
        if event.event in RUN_EVENTS and self.runs is not None:
            data = await self.runs.take_screenshot(event.event, data, node)
        return data

    def _after_stored(self, node: str, event: Event, data: dict) -> None:
        self._apply(node, event.event, event.serial, data)
        if event.event == "execution_finished":
            if self.schedules is not None:
                self.schedules.wake()  # its phone may take its next scheduled job now
            if data.get("recovering") and event.serial:
                self._background(self.recovery.recover(event.serial, data))
        if event.event == "phone_up" and event.serial and self.runs is not None:
            # A phone (re)appearing on a node: an execution the node no longer plays (it was
            # restarted) resumes. Its older events came first (the journal is in order), so
            # the records already hold every step it finished. Not awaited here: resuming
            # sends a command to the node whose event this is.
            self._background(self.runs.resume([event.serial],
                                              {event.serial: data.get("lock_holder")}))

    def _background(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub background work failed: %r", task.exception())

    async def _queue_unknown(self, node: str, seq: int, serial: str | None, data: dict) -> dict:
        """Put the frame in the unknown-screens queue; the stored event keeps a reference,
        not the image (idempotent: a replayed event finds its entry)."""
        encoded = data.pop("png_b64", None)
        if self.unknown is None or not encoded:
            return data
        try:
            png = base64.b64decode(encoded)
            entry = await asyncio.to_thread(
                self.unknown.add, f"{node}-{seq}", png,
                {**data, "node": node, "serial": serial})
        except (ValueError, FarmError, OSError) as exc:
            log.error("node=%s unknown screen from %s not queued: %s", node, serial, exc)
            return {**data, "error": str(exc)}
        if self.discovery is not None and entry["id"] == f"{node}-{seq}" and entry["seen"] == 1:
            self.discovery.submit(entry["id"])  # a new screen: propose how to register it
        return {**data, "id": entry["id"], "seen": entry["seen"],
                "url": f"/api/unknown-screens/{entry['id']}/image"}

    def _apply(self, node: str, event: str, serial: str | None, data: dict) -> None:
        if serial is not None:
            row = self._row(serial, node)
            at = data.get("at", time.time())
            if event in PHONE_STATE:
                # A replayed old event must not overwrite what the node's hello said since.
                if at >= row["state_at"]:
                    row["state"], row["state_at"] = PHONE_STATE[event], at
                    if "io" in data:  # phone_up / phone_restarted carry the phone's view
                        row["io"], row["io_reason"] = data.get("io"), data.get("io_reason")
            elif event == "phone_io":
                # Which path the phone's actions take (a node before the scrcpy agent never
                # sends it: io stays None, unknown).
                row["io"], row["io_reason"] = data.get("io"), data.get("io_reason")
            elif event == "lock_taken":
                row["lock_holder"] = data.get("execution_id")
            elif event == "lock_freed":
                if row["lock_holder"] == data.get("execution_id"):
                    row["lock_holder"] = None
                if self.pauses is not None and self.pauses.lock_changed(serial, event, data):
                    self._background(self.pauses.hold(serial))
            elif event == "app_changed":
                row["active_app"] = data.get("app")
            elif event == "account_changed":
                row["active_account"][data.get("platform")] = data.get("account")
            elif event == "screen_changed":
                row["last_screen"] = data.get("screen")
        self.emit(event, node, serial, data)

    def _on_message(self, node: str, envelope) -> None:
        body = envelope.body
        if isinstance(body, RegistryApplied) and self.registry_sync is not None:
            self.registry_sync.applied(node, body)
            return
        if isinstance(body, LiveFrame):
            if self.report_scope.live_allowed(node, body.serial, "live frame"):
                self.live.frame(Frame(body.serial, body.jpeg, body.ts, body.width, body.height))
            return
        if not isinstance(body, LiveEvent):
            log.warning("node=%s unexpected %s ignored", node, envelope.kind)
            return
        if body.serial and not self.report_scope.live_allowed(node, body.serial, body.event):
            return
        if body.event == HEALTH_EVENT and body.serial is None:
            health = health_row(body.data)  # GET /api/nodes rows show the latest
            if health is None:
                log.warning("node=%s sent a malformed health report: ignored", node)
                return
            if node in self.node_rows:
                self.node_rows[node]["health"] = health
            self.emit(HEALTH_EVENT, node, None, health)
            return
        if body.event == "thumbnail" and body.serial:
            try:
                jpeg = base64.b64decode(body.data["jpeg"])
            except (KeyError, ValueError, TypeError):
                log.error("node=%s thumbnail for %s without a valid jpeg", node, body.serial)
                return
            ts = float(body.data.get("ts") or time.time())
            self.thumbs[body.serial] = (jpeg, ts)
            row = self._row(body.serial, node)
            row["screen_ts"] = ts
            if body.data.get("width") and body.data.get("height"):
                row["screen_size"] = [int(body.data["width"]), int(body.data["height"])]
            self.emit("thumbnail", node, body.serial,
                      {"url": f"/api/phones/{body.serial}/screen?w={THUMB_WIDTH}&t={ts:.3f}",
                       "ts": ts})
        else:
            self.emit(body.event, node, body.serial, dict(body.data))

    # --- the live wall ---------------------------------------------------------------------
    def _tell_live(self, serial: str, width: int, fps: float) -> None:
        """Tell the node holding ``serial`` to send (width 0: stop sending) its live frames."""
        row = self.phone_rows.get(serial)
        if row is None or self.node_rows.get(row["node"], {}).get("state") != "up":
            return  # renewed when the node (re)connects
        message = LiveWatch(serial=serial, width=width, fps=fps, lease_s=LIVE_LEASE_S)
        self._background(self._send_live_watch(row["node"], message))

    async def _send_live_watch(self, node: str, message: LiveWatch) -> None:
        try:
            await self.link.send(node, message)
        except DeliveryError as exc:  # the next renewal tries again
            log.debug("node=%s live_watch for %s not sent: %s", node, message.serial, exc)

    async def _renew_live(self) -> None:
        while True:
            await asyncio.sleep(LIVE_RENEW_S)
            self.live.renew()

    # --- the HubAPI of the control endpoint ------------------------------------------------
    def phones(self) -> list[dict]:
        return [self._phone_view(row) for _, row in sorted(self.phone_rows.items())]

    def _phone_view(self, row: dict) -> dict:
        view = {k: v for k, v in row.items() if k != "state_at"}
        pause = self.pauses.of(row["serial"]) if self.pauses is not None else None
        view["paused"] = pause
        if pause is not None and view["state"] in ("online", "paused"):
            # The coordinator's pause is what the operator must act on (offline says more).
            view["state"] = "paused"
        if self.tags is not None:
            view["tags"] = sorted(set(row.get("tags") or ()) | set(self.tags.of(row["serial"])))
        if self.owners is not None:
            view["client"] = self.owners.client_name(row["serial"])
        return view

    def tag_phone(self, serial: str, tag: str, add: bool = True) -> list[str]:
        """Add (or remove) a custom tag; the phone's tags afterwards (a ``phone_tags``
        event tells the stream). PhoneNotFound, ValidationError for a bad tag."""
        if serial not in self.phone_rows:
            raise PhoneNotFound(serial)
        if self.tags is None:
            raise FarmError("custom tags need a data folder: this hub has none")
        if add:
            self.tags.add(serial, tag)
        else:
            self.tags.remove(serial, tag)
        tags = self._phone_view(self.phone_rows[serial])["tags"]
        self.emit("phone_tags", self.phone_rows[serial]["node"], serial, {"tags": tags})
        return tags

    async def resume_phone(self, serial: str, actor: str | None = None,
                           reason: str | None = None) -> dict:
        """End the coordinator's pause of serial (actors.coordinator.phone_pause); LookupError when
        it is not paused."""
        if self.pauses is None:
            raise FarmError("phone pauses need the farm database: this hub has none")
        return await self.pauses.resume(serial, actor, reason)

    async def ai_for(self, serial: str, account_id: int | None = None) -> AIClient | None:
        """The AI client for work on serial (as account account_id): the key of its
        client, else of its organization, else the farm's default (None = AI off)."""
        if self.ai_keys is None:
            return self.ai
        return await self.ai_keys.client_for(serial, account_id)

    def nodes(self) -> list[dict]:
        """Every node's row; ``phones`` counts its phones attached now (not offline), as
        phone_up/phone_down events and hellos leave them (a hello's count goes stale)."""
        attached: dict[str, int] = {}
        for row in self.phone_rows.values():
            if row["state"] != "offline":
                attached[row["node"]] = attached.get(row["node"], 0) + 1
        return [{**n, "phones": attached.get(name, 0)}
                for name, n in sorted(self.node_rows.items())]

    def start_recording(self, name: str, app: str | None, serials: list[str]) -> dict:
        if self.recorder is None:
            raise FarmError("recording is not enabled on this coordinator (no data folder)")
        rec = self.recorder.start(name, app, serials)
        return {"recording_id": rec.recording_id, "lead": rec.lead, "phones": rec.serials}

    def stop_recording(self, recording_id: str) -> dict:
        if self.recorder is None:
            raise FarmError("recording is not enabled on this coordinator (no data folder)")
        path, sequence = self.recorder.stop(recording_id)
        return {"path": str(path), "sequence": sequence}

    def unknown_screens(self) -> list[dict]:
        return self.unknown.entries() if self.unknown is not None else []

    def unknown_screen_image(self, entry_id: str) -> bytes:
        if self.unknown is None:
            raise FarmError(f"unknown screen {entry_id!r}: no queue on this coordinator")
        return self.unknown.image(entry_id)

    def _runs(self) -> RunManager:
        if self.runs is None:
            raise FarmError("sequence runs need the farm database: this hub has none")
        return self.runs

    async def start_run(self, sequence: str | dict, scope: str,
                        variables: dict[str, str] | None = None, *,
                        visible: Callable[[str], bool] | None = None,
                        clients: frozenset[int] | None = None) -> dict:
        """Start a sequence (library name or inline object) on every target of ``scope``:
        ``{"run_id", "sequence", "executions": {serial: {"execution_id", "status", ...}}}``
        (actors.coordinator.runs.RunManager.start). ``visible``: the phones the caller may
        drive (None: all); the scope is resolved among those only, ``group:`` in the group
        books of ``clients`` (None: the farm's shared groups)."""
        return await self._runs().start(sequence, scope, variables, visible=visible,
                                        clients=clients)

    async def get_run(self, run_id: str) -> dict:
        return await self._runs().get_run(run_id)

    async def list_executions(self, limit: int = 50) -> list[dict]:
        return await self._runs().recent_executions(limit)

    async def execution_history(self, query) -> dict:
        """One page of executions an actors.store.execution_history.ExecutionQuery selects
        (actors.coordinator.runs.RunManager.execution_history)."""
        return await self._runs().execution_history(query)

    def _schedules(self) -> ScheduleService:
        if self.schedules is None:
            raise FarmError("schedules need the farm database: this hub has none")
        return self.schedules

    async def add_schedule(self, schedule) -> dict:
        """Register an actors.coordinator.scheduling.scheduler.Schedule (actors.coordinator.scheduling.schedules.ScheduleService.add)."""
        return await self._schedules().add(schedule)

    # ``clients``: a tenant's (actors.access.scoped.ScopedHub): its schedules only.
    def list_schedules(self, clients: frozenset[int] | None = None) -> list[dict]:
        return self._schedules().schedules(clients)

    async def control_schedule(self, schedule_id: str, action: str,
                               clients: frozenset[int] | None = None) -> dict:
        return await self._schedules().control(schedule_id, action, clients)

    async def schedule_events(self, schedule_id: str,
                              clients: frozenset[int] | None = None) -> list[dict]:
        return await self._schedules().events(schedule_id, clients=clients)

    async def get_execution(self, execution_id: str) -> dict:
        return await self._runs().get_execution(execution_id)

    def farm_db(self):
        """The farm database (FarmDB) for the control endpoint's CRUD routes."""
        if self.runs is None:
            raise FarmError("this hub has no farm database")
        return self.runs.db

    async def execution_screenshot(self, execution_id: str, path: str) -> tuple[bytes, str]:
        from actors.coordinator.runs import screenshot_type

        found = await self._runs().step_screenshot_file(execution_id, path)
        return await asyncio.to_thread(found.read_bytes), screenshot_type(found)

    async def run_action(self, serial: str, action: dict, execution_id: str | None = None) -> dict:
        """Run one action on one phone; a screenshot's frame is referred to, not inlined
        (a broadcast screenshot would otherwise carry every frame in one answer)."""
        if self.recorder is not None:
            self.recorder.observe(serial, action)
        out = await self._send_action(serial, action, execution_id)
        if out.pop("png", None) is not None:
            out["screen"] = f"/api/phones/{serial}/screen"
        return out

    async def _send_action(self, serial: str, action: dict | Action,
                           execution_id: str | None = None) -> dict:
        row = self.phone_rows.get(serial)
        if row is None:
            raise PhoneNotFound(serial)
        node = row["node"]
        if self.node_rows.get(node, {}).get("state") != "up":
            return {"status": "gone", "error": f"node {node} of phone {serial} is down"}
        try:
            typed = msgspec.convert(action, Action) if isinstance(action, dict) else action
        except msgspec.ValidationError as exc:
            raise ValidationError("action", str(exc)) from None
        command = Command(command_id=uuid.uuid4().hex, serial=serial, action=typed,
                          execution_id=execution_id)
        try:
            result = await self.link.send_command(node, command, deadline=self.command_deadline)
        except DeliveryError as exc:
            return {"status": "error", "error": str(exc)}
        out: dict[str, Any] = {"status": result.status, "error": result.error}
        out.update({k: v for k, v in result.data.items() if k != "png"})
        if "png" in result.data:
            out["png"] = result.data["png"]
        return out

    async def device_action(self, serial: str, action: dict | Action,
                            execution_id: str | None = None) -> dict:
        """One action on one phone as its node answers it (a frame inline as base64 PNG), for
        coordinator-side actors such as recovery; operators go through ``run_action``."""
        return await self._send_action(serial, action, execution_id)

    async def send_run(self, serial: str, run: RunSequence) -> dict:
        """Start ``run`` on the phone's node (the node answers at once: started, locked, or
        why not; progress comes as execution events)."""
        return await self._send_action(serial, run, run.execution_id)

    async def screen(self, serial: str, width: int | None = None) -> tuple[bytes, str]:
        if serial not in self.phone_rows:
            raise PhoneNotFound(serial)
        if width == THUMB_WIDTH and serial in self.thumbs:
            return self.thumbs[serial][0], "image/jpeg"
        result = await self._send_action(serial, {"type": "screenshot"})
        if result["status"] == "locked":
            raise PhoneLocked(serial, result.get("holder") or "?", 0.0)
        if result["status"] != "ok":
            raise FarmError(f"phone {serial}: screenshot {result['status']}: {result.get('error')}")
        png = base64.b64decode(result["png"])
        # The PNG's header holds its size: the console scales taps by it (IHDR width, height).
        if png[12:16] == b"IHDR":
            self.phone_rows[serial]["screen_size"] = [int.from_bytes(png[16:20], "big"),
                                                      int.from_bytes(png[20:24], "big")]
        if width is None:
            return png, "image/png"
        frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        h, w = frame.shape[:2]
        small = cv2.resize(frame, (width, max(1, round(h * width / w))),
                           interpolation=cv2.INTER_AREA)
        jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()
        if width == THUMB_WIDTH and serial not in self.thumbs:
            # A phone no action touched yet has no thumbnail: keep this one, or every wall
            # refresh of an idle phone costs a screenshot (the next thumbnail event replaces it).
            self.thumbs[serial] = (jpeg, time.time())
        return jpeg, "image/jpeg"
