"""The registry store, its push to nodes and screen discovery in a running farm: hub (with a
real FarmDB and registry store) + node over real nng on loopback + phone actors over a real
adb server and virtual phones, driven through the control endpoint over real HTTP.

- Edit mode: a screen saved with PUT /api/registry/... from a phone's live frame is pushed to
  the node, whose matcher names the phone's screen with it at the next frame; a node that
  was down during a save is brought up to date when it reconnects.
- Discovery: the Chrome stub (a screen nobody registered) becomes a proposal (OCR only, or
  with the scripted model); approving it writes the registry and the node recognises it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from actors.coordinator.ai.client import AIClient, AIConfig
from actors.access.principal import SUPER_LOCAL
from actors.control.app import make_app
from actors.node.device.adb_server import AdbServer, free_port
from actors.store.event_store import EventStore
from actors.coordinator.hub import Hub
from actors.node.node import Node
from actors.store.farm_db import FarmDB
from actors.coordinator.registry_store import RegistryStore
from actors.coordinator.unknown_screens import UnknownScreenQueue
from tests.e2e.test_farm_inprocess import SECRET, wait_for
from tests.e2e.test_screen_identification import next_event
from virtual.model_server import ScriptedModel, reply_tool

log = logging.getLogger(__name__)
CHROME = "com.android.chrome"


class Stack:
    def __init__(self, tmp_path, adb_server) -> None:
        self.tmp, self.adb = tmp_path, adb_server

    async def start(self) -> "Stack":
        self.events = await EventStore(self.tmp / "coordinator.sqlite3").open()
        self.db = await FarmDB.open(self.tmp / "farm.sqlite3")
        self.store = RegistryStore.open(self.tmp / "registry", self.db)
        self.hub = await Hub(f"tcp://127.0.0.1:{free_port()}", SECRET, self.events,
                             unknown=UnknownScreenQueue(self.tmp / "unknown-screens"),
                             db=self.db, data_dir=self.tmp / "coordinator",
                             registry_store=self.store).start()
        self.q = self.hub.subscribe()
        self.node = await self.start_node()
        self.http = TestClient(TestServer(make_app(self.hub)))
        await self.http.start_server()
        return self

    async def start_node(self) -> Node:
        node = await Node("rack-a", self.hub.link.address, SECRET,
                          AdbServer(port=self.adb.port), self.tmp / "node").start()
        await wait_for(lambda: len([p for p in self.hub.phones() if p["state"] == "online"]) == 4,
                       what="4 phones online")
        return node

    async def close(self) -> None:
        await self.http.close()
        await self.node.stop()
        await self.hub.close()
        await self.events.close()
        await self.db.close()

    async def next(self, name: str, timeout: float = 20.0, where=lambda data: True) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name} event within {timeout}s")
            ev = await asyncio.wait_for(self.q.get(), left)
            if ev["event"] == name and where(ev["data"]):
                return ev


@pytest.fixture()
async def stack(farm, adb_server, tmp_path):
    s = await Stack(tmp_path, adb_server).start()
    yield s
    await s.close()


async def show_chrome(stack: Stack, serial: str) -> None:
    await stack.hub.run_action(serial, {"type": "key", "key": "HOME"})
    await wait_for(lambda: stack.hub.phone_rows[serial]["last_screen"] == "launcher/home",
                   what="launcher/home")
    await stack.hub.run_action(serial, {"type": "launch_app", "package": CHROME})


async def test_edit_mode_save_is_pushed_and_a_reconnecting_node_catches_up(stack, farm):
    hub, http, serial = stack.hub, stack.http, farm.serials[3]
    assert stack.node.registry_version == stack.store.version  # both start from the demo
    await show_chrome(stack, serial)
    await wait_for(lambda: hub.phone_rows[serial]["last_screen"] == "unknown", what="unknown")

    # Bad requests: the field is named, nothing is written.
    version = stack.store.version
    body = {"kind": "state", "description": "Chrome's start page", "package": CHROME,
            "frame": {"serial": serial}, "reason": "e2e",
            "regions": [{"name": "title", "coordinates": [0, 0, 1080, 200]}], "actions": []}
    bad = [({**body, "kind": "page"}, "$.kind"),
           ({**body, "regions": [{"name": "t", "coordinates": [0, 0, 1200, 200]}]},
            "$.regions[0].coordinates"),
           ({**body, "frame": {"serial": "no-such-phone"}}, "$.frame.serial"),
           ({**body, "frame": {"png_b64": "not base64!"}}, "$.frame.png_b64"),
           ({**body, "frame": {}}, "$.frame")]
    for request, field in bad:
        r = await http.put("/api/registry/apps/chrome/screens/start", json=request)
        assert r.status == 400, await r.text()
        assert (await r.json())["field"] == field
    r = await http.put("/api/registry/apps/chrome/screens/start",
                       json={k: v for k, v in body.items() if k != "package"})
    assert r.status == 404  # an unknown app needs its package
    assert (await http.get("/api/registry/apps/nosuch")).status == 404
    assert stack.store.version == version

    # Saved from the phone's live frame: pushed, and the next frame is named by it.
    t0 = time.perf_counter()
    r = await http.put("/api/registry/apps/chrome/screens/start", json=body)
    assert r.status == 201, await r.text()
    saved = await r.json()
    changed = await stack.next("registry_changed")
    assert changed["data"] == {**saved, "action": "create"}
    applied = await stack.next("registry_applied", where=lambda d: d["current"])
    log.info("save -> node applied: %.0f ms", (time.perf_counter() - t0) * 1000)
    assert applied["data"]["version"] == saved["version"] == stack.node.registry_version
    await hub.run_action(serial, {"type": "key", "key": "VOLUME_UP"})
    await wait_for(lambda: hub.phone_rows[serial]["last_screen"] == "chrome/start",
                   what="chrome/start named by the node")
    summary = await (await http.get("/api/registry")).json()
    assert summary["version"] == saved["version"]
    assert next(a for a in summary["apps"] if a["name"] == "chrome")["states"] == ["start"]
    app = await (await http.get("/api/registry/apps/chrome")).json()
    crop = app["states"]["start"]["validation_regions"][0]["reference"]
    r = await http.get(f"/api/registry/apps/chrome/files/{crop}")
    assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
    trail = await stack.db.audit_trail("registry_screen", "chrome/start")
    assert trail[0]["actor"] == SUPER_LOCAL.actor and trail[0]["reason"] == "e2e"

    # The node is down while the screen is deleted; it catches up when it reconnects.
    await stack.node.stop()
    r = await http.delete("/api/registry/apps/chrome/screens/start?reason=retired")
    assert r.status == 200
    deleted = await r.json()
    assert deleted["version"] != saved["version"]
    stack.node = await stack.start_node()
    assert stack.node.registry_version == saved["version"]  # its synced copy, pre-delete
    await stack.next("registry_applied", where=lambda d: d["current"])
    assert stack.node.registry_version == deleted["version"] == stack.store.version
    await hub.run_action(serial, {"type": "key", "key": "VOLUME_DOWN"})
    await wait_for(lambda: hub.phone_rows[serial]["last_screen"] == "unknown",
                   what="chrome/start forgotten by the node")


async def approve_and_recognise(stack: Stack, serial: str, proposal: dict, body=None) -> str:
    r = await stack.http.post(f"/api/discovery/{proposal['id']}/approve", json=body)
    assert r.status == 200, await r.text()
    out = await r.json()
    resolved = await stack.next("discovery_resolved")
    assert resolved["data"]["status"] == "approved"
    await stack.next("registry_applied", where=lambda d: d["version"] == out["version"])
    label = f"{out['app']}/{out['screen']}"
    await stack.hub.run_action(serial, {"type": "key", "key": "VOLUME_UP"})
    await wait_for(lambda: stack.hub.phone_rows[serial]["last_screen"] == label,
                   what=f"{label} recognised right away")
    again = await stack.http.post(f"/api/discovery/{proposal['id']}/approve")
    assert again.status == 409
    return label


async def test_discovery_without_ai_proposes_ocr_regions_and_approval_registers(stack, farm):
    serial = farm.serials[1]
    t0 = time.perf_counter()
    await show_chrome(stack, serial)
    proposed = await stack.next("discovery_proposed", timeout=60)
    proposal = proposed["data"]
    log.info("unknown screen -> proposal: %.0f ms (proposal %.0f ms, text detection %.0f ms)",
             (time.perf_counter() - t0) * 1000, proposal["elapsed_ms"], proposal["detect_ms"])
    print(f"\nOCR-only proposal: {proposal['elapsed_ms']:.0f} ms, "
          f"text detection {proposal['detect_ms']:.0f} ms")
    assert proposal["source"] == "ocr" and proposal["status"] == "proposed"
    assert proposal["app"] == "chrome" and proposal["new_app"] and proposal["package"] == CHROME
    assert proposal["regions"] and all(r["ocr_enabled"] and r["expected_text"]
                                       for r in proposal["regions"])
    assert any("chrome" in r["expected_text"].lower() for r in proposal["regions"])
    listed = (await (await stack.http.get("/api/discovery")).json())["proposals"]
    assert [p["id"] for p in listed] == [proposal["id"]]
    assert (await stack.http.get(listed[0]["image"])).status == 200

    # Edited (a real name), then approved as it stands.
    r = await stack.http.put(f"/api/discovery/{proposal['id']}", json={"name": "chrome_home",
                                                                       "description": "Start"})
    assert r.status == 200 and (await r.json())["name"] == "chrome_home"
    r = await stack.http.put(f"/api/discovery/{proposal['id']}", json={"name": "Bad Name"})
    assert r.status == 400 and (await r.json())["field"] == "$.name"
    assert (await stack.http.post("/api/discovery/999/approve")).status == 404
    label = await approve_and_recognise(stack, serial, proposal)
    assert label == "chrome/chrome_home"
    trail = await stack.db.audit_trail("registry_screen", "chrome/chrome_home")
    assert trail and "discovery proposal" in trail[0]["reason"]


async def test_discovery_with_the_scripted_model(stack, farm):
    # reply_tool(name, **arguments) cannot take the tool's own "name" argument: the
    # directive (virtual/model_server.py) is written out instead.
    model = ScriptedModel([{**reply_tool("propose_screen"), "arguments": json.dumps({
        "name": "chrome_start", "description": "Chrome's start page", "kind": "state",
        "elements": ["Chrome"], "actions": []})}])
    base_url = await model.start()
    stack.hub.ai = AIClient(AIConfig(base_url=base_url, model="scripted"))
    try:
        serial = farm.serials[2]
        await show_chrome(stack, serial)
        proposal = (await stack.next("discovery_proposed", timeout=60))["data"]
        print(f"\nAI proposal: {proposal['elapsed_ms']:.0f} ms, "
              f"text detection {proposal['detect_ms']:.0f} ms")
        assert proposal["source"] == "ai" and proposal["name"] == "chrome_start"
        assert [r["expected_text"].lower() for r in proposal["regions"]][0].startswith("chrome")
        assert proposal["ai_usage"]["attempts"] == 1
        request = model.requests[0]
        assert request["tools"][0]["function"]["name"] == "propose_screen"
        assert any(part.get("type") == "image_url" for part in request["messages"][1]["content"])
        # Approved with the operator's edit in the body (another name, the same regions).
        body = {"kind": "state", "description": "edited", "name": "start_page",
                "regions": [{k: r[k] for k in ("name", "coordinates", "ocr_enabled",
                                               "expected_text")} for r in proposal["regions"]]}
        assert await approve_and_recognise(stack, serial, proposal, body) == "chrome/start_page"
    finally:
        await stack.hub.ai.close()
        stack.hub.ai = None
        await model.stop()
