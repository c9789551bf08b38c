"""An in-memory stand-in for the coordinator's hub (actors.control.app.HubAPI), for tests of
the control endpoint and the `farm` CLI: fixed phones and nodes, scripted action results,
synthetic screen frames, and event fan-out to subscribers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import cv2
import numpy as np

from protocol.errors import DeviceError, FarmError, PhoneLocked, PhoneNotFound


def default_phones() -> list[dict]:
    def phone(serial: str, node: str, state: str, tags: list[str], **extra: Any) -> dict:
        return {"serial": serial, "node": node, "state": state, "lock_holder": None,
                "active_app": None, "active_account": {}, "last_screen": None, "tags": tags,
                "screen_ts": None} | extra

    return [
        phone("127.0.0.1:40123", "rack1", "online", ["phone1"], lock_holder="exec-7",
              active_app="com.example.demo", last_screen="demo.home", screen_ts=1700000000.0,
              active_account={"demo": "alice"}),
        phone("127.0.0.1:40124", "rack1", "online", ["phone2"]),
        phone("R58M123ABC", "rack2", "paused", ["phone3"]),
    ]


class FakeHub:
    """Owns a fake farm's state for tests; records every run_action call."""

    def __init__(self, phones: list[dict] | None = None) -> None:
        self._phones = default_phones() if phones is None else phones
        self._nodes = [
            {"name": "rack1", "state": "up", "last_heartbeat": 1700000000.5, "phones": 2},
            {"name": "rack2", "state": "down", "last_heartbeat": 1699999990.0, "phones": 1},
        ]
        self.calls: list[tuple[str, dict, str | None]] = []
        self.run_calls: list[tuple[str, str, dict | None]] = []
        self.runs: dict[str, dict] = {}
        self.results: dict[str, dict | BaseException] = {}
        self.no_frame: set[str] = set()
        self.locked_by: dict[str, str] = {}  # serial -> execution holding the lock
        self.vanished: set[str] = set()   # listed in phones() but gone by run_action time
        self.action_delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.subscribers: list[asyncio.Queue] = []
        self.frame = np.zeros((240, 108, 3), np.uint8)
        self.frame[:120] = (0, 0, 255)

    def phones(self) -> list[dict]:
        return [dict(p) for p in self._phones]

    def farm_db(self):
        """A test's FarmDB (set ``self.db``); like a hub without one when unset."""
        if getattr(self, "db", None) is None:
            raise FarmError("this hub has no farm database")
        return self.db

    def nodes(self) -> list[dict]:
        return [dict(n) for n in self._nodes]

    def tag_phone(self, serial: str, tag: str, add: bool = True) -> list[str]:
        from actors.coordinator.phone_tags import check_tag
        from protocol.errors import PhoneNotFound

        phone = next((p for p in self._phones if p["serial"] == serial), None)
        if phone is None:
            raise PhoneNotFound(serial)
        check_tag(tag)
        tags = set(phone.get("tags") or ())
        tags = tags | {tag} if add else tags - {tag}
        phone["tags"] = sorted(tags)
        return phone["tags"]

    def start_recording(self, name: str, app: str | None, serials: list[str]) -> dict:
        from protocol.errors import ValidationError
        if not name.isidentifier():
            raise ValidationError("$.name", f"{name!r}: use 1-64 of a-z, 0-9 and _")
        self.recording = {"recording_id": "rec1", "lead": serials[0], "phones": serials}
        return self.recording

    async def start_run(self, sequence: str | dict, scope: str,
                        variables: dict[str, str] | None = None) -> dict:
        """Validates like the hub (library name or inline object, phone scope), starts
        nothing: every phone's execution is pending, its run answers from `self.runs`."""
        from actors.coordinator.runs import UnknownSequence
        from sequences.load import library_names, load_named, parse_sequence
        from sequences.scopes import parse_phone_scope

        if isinstance(sequence, str):
            try:
                load_named(sequence)
            except KeyError:
                raise UnknownSequence(sequence, sorted(library_names())) from None
            name = sequence
        else:
            name = "inline/" + parse_sequence(sequence, "request: $.sequence").name
        serials = parse_phone_scope(scope).resolve(self.phones())
        self.run_calls.append((name, scope, variables))
        run_id = f"run-{len(self.run_calls)}"
        executions = {s: {"execution_id": f"ex-{len(self.run_calls)}-{i}", "status": "pending",
                          "account": None, "error": None} for i, s in enumerate(serials)}
        self.runs[run_id] = {"run_id": run_id, "sequence": name, "status": "running",
                             "executions": [self._execution(e, s, run_id, name)
                                            for s, e in executions.items()]}
        return {"run_id": run_id, "sequence": name, "executions": executions}

    @staticmethod
    def _execution(start: dict, serial: str, run_id: str, name: str) -> dict:
        return {"execution_id": start["execution_id"], "run_id": run_id, "serial": serial,
                "sequence": name, "account": None, "status": start["status"], "error": None,
                "reason": None, "current_step": None, "start_time": None, "end_time": None,
                "steps": []}

    async def get_run(self, run_id: str) -> dict:
        from actors.coordinator.runs import RunNotFound
        if run_id not in self.runs:
            raise RunNotFound(f"run {run_id!r}: no such run")
        return self.runs[run_id]

    async def get_execution(self, execution_id: str) -> dict:
        from actors.coordinator.runs import RunNotFound
        for run in self.runs.values():
            for execution in run["executions"]:
                if execution["execution_id"] == execution_id:
                    return execution
        raise RunNotFound(f"execution {execution_id!r}: no such execution")

    async def execution_screenshot(self, execution_id: str, path: str) -> tuple[bytes, str]:
        from pathlib import Path

        from actors.coordinator.runs import RunNotFound, screenshot_type
        execution = await self.get_execution(execution_id)
        stored = next((s["screenshot"] for s in execution["steps"]
                       if s["path"] == path and s.get("screenshot")), None)
        if stored is None:
            raise RunNotFound(f"execution {execution_id!r}: no screenshot for step {path!r}")
        suffix = Path(stored).suffix
        return cv2.imencode(suffix, self.frame)[1].tobytes(), screenshot_type(Path(stored))

    async def list_executions(self, limit: int = 50) -> list[dict]:
        out = [{k: v for k, v in e.items() if k != "steps"}
               for run in self.runs.values() for e in run["executions"]]
        return out[::-1][:limit]

    async def execution_history(self, query) -> dict:
        """The filters this fake's executions carry (no times: start_time is None);
        the real query is tested on FarmDB (tests/unit/test_execution_history.py)."""
        out = [e for e in await self.list_executions(10**6)
               if (not query.statuses or e["status"] in query.statuses)
               and all(getattr(query, k) in (None, e[k]) for k in ("serial", "sequence", "run_id"))]
        return {"executions": out[:query.limit],
                "next_before": out[query.limit - 1]["execution_id"] if len(out) > query.limit else None}

    async def _schedule_service(self):
        """A real actors.coordinator.scheduling.schedules.ScheduleService over an in-memory store, never ticked:
        the endpoint's validation and views are the real ones."""
        if getattr(self, "schedule_service", None) is None:
            from actors.coordinator.scheduling.schedules import ScheduleService

            self.schedule_service = ScheduleService(self, _MemoryRuns(self), _MemoryScheduleDB())
            await self.schedule_service.load()
        return self.schedule_service

    @property
    def phone_rows(self) -> dict[str, dict]:
        return {p["serial"]: p for p in self._phones}

    @property
    def node_rows(self) -> dict[str, dict]:
        return {n["name"]: n for n in self._nodes}

    async def add_schedule(self, schedule) -> dict:
        return await (await self._schedule_service()).add(schedule)

    def list_schedules(self, clients=None) -> list[dict]:
        service = getattr(self, "schedule_service", None)
        return service.schedules(clients) if service is not None else []

    async def control_schedule(self, schedule_id: str, action: str, clients=None) -> dict:
        return await (await self._schedule_service()).control(schedule_id, action, clients)

    async def schedule_events(self, schedule_id: str, clients=None) -> list[dict]:
        return await (await self._schedule_service()).events(schedule_id, clients=clients)

    def stop_recording(self, recording_id: str) -> dict:
        if recording_id != "rec1":
            raise FarmError(f"recording {recording_id!r}: no such open recording")
        return {"path": "/data/sequences/demo/x.json", "sequence": {"name": "x", "steps": []}}

    def unknown_screens(self) -> list[dict]:
        return [{"id": "rack1-7", "node": "rack1", "serials": ["127.0.0.1:40124"], "seen": 2,
                 "status": "queued", "phash": "00ff" * 16, "app": "com.example.demo",
                 "previous_screen": "demo/home", "last_action": {"type": "tap", "x": 1, "y": 2},
                 "registry_version": "abc", "width": 108, "height": 240}]

    def unknown_screen_image(self, entry_id: str) -> bytes:
        if entry_id != "rack1-7":
            raise FarmError(f"unknown screen {entry_id!r}: no such entry")
        return cv2.imencode(".png", self.frame)[1].tobytes()

    def _known(self, serial: str) -> None:
        if serial in self.vanished or all(p["serial"] != serial for p in self._phones):
            raise PhoneNotFound(serial)

    async def run_action(self, serial: str, action: dict, execution_id: str | None = None) -> dict:
        self.calls.append((serial, action, execution_id))
        self._known(serial)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.action_delay)
        finally:
            self.in_flight -= 1
        result = self.results.get(serial, {"status": "ok", "error": None})
        if isinstance(result, BaseException):
            raise result
        return dict(result)

    async def screen(self, serial: str, width: int | None = None) -> tuple[bytes, str]:
        self._known(serial)
        if serial in self.no_frame:
            raise DeviceError(serial, "screenshot", "no frame yet")
        if serial in self.locked_by:
            raise PhoneLocked(serial, self.locked_by[serial], 0.0)
        if width is None:
            return cv2.imencode(".png", self.frame)[1].tobytes(), "image/png"
        h, w = self.frame.shape[:2]
        thumb = cv2.resize(self.frame, (width, max(1, round(h * width / w))))
        return cv2.imencode(".jpg", thumb)[1].tobytes(), "image/jpeg"

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self.subscribers.remove(queue)

    def publish(self, event: str, serial: str | None = None, node: str | None = None,
                ts: float | None = None, **data: Any) -> dict:
        message = {"event": event, "ts": time.time() if ts is None else ts, "node": node,
                   "serial": serial, "data": data}
        for queue in self.subscribers:
            queue.put_nowait(message)
        return message


class _MemoryRuns:
    """Phone scopes over the fake hub's phones; nothing is ever started."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub

    async def targets(self, scope: str) -> list[tuple[str, str | None]]:
        from sequences.scopes import targets

        return targets(scope, self.hub.phones(), [])


class _MemoryScheduleDB:
    """The farm-DB methods the schedule service uses, in memory."""

    def __init__(self) -> None:
        self.state: str | None = None
        self.rows: dict[str, str] = {}
        self.workflows: dict[str, dict] = {}  # workflow definitions by name
        self.events: list[dict] = []

    async def load_scheduler_state(self) -> str | None:
        return self.state

    async def save_scheduler_state(self, state: str) -> None:
        self.state = state

    async def workflow_definition(self, name: str) -> dict | None:
        return self.workflows.get(name)

    async def load_scheduler_rows(self) -> dict[str, str]:
        return dict(self.rows)

    async def save_scheduler_rows(self, rows: dict[str, str], deletes: list[str],
                                  events: list[dict], *, drop_whole_state: bool = False) -> None:
        self.rows.update(rows)
        for key in deletes:
            self.rows.pop(key, None)
        await self.add_schedule_events(events)

    async def add_schedule_events(self, events: list[dict]) -> None:
        for e in events:
            self.events.append({**e, "id": len(self.events) + 1, "at": e["at"].isoformat()})

    async def schedule_events(self, schedule_id: str | None = None, limit: int = 500) -> list[dict]:
        return [dict(e) for e in self.events
                if schedule_id is None or e["schedule_id"] == schedule_id][-limit:]

    async def get_execution(self, key: str) -> dict | None:
        return None

    async def execution_statuses(self, keys: list[str]) -> dict:
        return {}


__all__ = ["FakeHub", "FarmError", "default_phones"]
