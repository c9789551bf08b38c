"""Screen discovery (actors.coordinator.ai.discovery) over a real FarmDB, registry store and unknown-screens
queue in tmp_path, with the text detector injected (its lines are given: the real detector is
exercised by tests/e2e/test_registry_discovery.py) and the AI model played by the scripted
OpenAI-compatible server through the real client. Also the /api/discovery and /api/registry
routes over a fake hub, and `farm registry apps`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.coordinator.ai.client import AIClient, AIConfig  # noqa: E402
from actors.control.app import make_app  # noqa: E402
from actors.control.cli import main  # noqa: E402
from actors.coordinator.ai.discovery import DiscoveryService, ProposalResolved, stable_lines  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from actors.coordinator.registry_store import RegistryStore  # noqa: E402
from actors.coordinator.unknown_screens import UnknownScreenQueue  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from registry.ocr import TextLine  # noqa: E402
from virtual.model_server import ScriptedModel, reply_error, reply_tool  # noqa: E402

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

CLIPSHARE = "com.phonefarm.clipshare"
# What the detector found on the demo's feed screen (measured once; see the e2e test).
FEED_LINES = [TextLine((30, 16, 142, 64), "09:41", 0.99), TextLine((890, 20, 976, 64), "85%", 0.99),
              TextLine((32, 132, 300, 198), "Clipshare", 0.99),
              TextLine((150, 1018, 930, 1092), "Video #1 by @dancequeen", 0.99),
              TextLine((272, 1888, 810, 1936), "Swipeupfor thenext video", 0.95),
              TextLine((824, 2272, 980, 2330), "Profile", 0.99),
              TextLine((102, 2274, 258, 2332), "Home", 0.99),
              TextLine((434, 2276, 652, 2330), "+ Upload", 0.99)]
POPUP_LINES = [TextLine((120, 900, 960, 990), "Update available", 0.99),
               TextLine((120, 1010, 960, 1060), "Version 3.2 is ready", 0.97),
               TextLine((700, 1300, 900, 1370), "Later", 0.99)]


def test_stable_lines_prefer_bars_and_skip_content():
    chosen = [line.text for line in stable_lines(FEED_LINES, 2400)]
    assert chosen == ["Clipshare", "Profile", "Home"]


def popup_png() -> bytes:
    frame = np.full((2400, 1080, 3), 40, np.uint8)
    cv2.rectangle(frame, (80, 850), (1000, 1450), (250, 250, 250), -1)
    cv2.putText(frame, "Update available", (130, 975), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (0, 0, 0), 4)
    cv2.putText(frame, "Version 3.2 is ready", (130, 1050), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (60, 60, 60), 2)
    cv2.putText(frame, "Later", (710, 1355), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (200, 80, 0), 4)
    return cv2.imencode(".png", frame)[1].tobytes()


class Detector:
    """The text detector's stand-in: the lines it would find, and how often it was asked."""

    def __init__(self, lines: list[TextLine]) -> None:
        self.lines, self.calls = lines, 0

    def detect(self, frame_rgb):
        assert frame_rgb.shape == (2400, 1080, 3)
        self.calls += 1
        return list(self.lines)

    def read(self, crop_rgb):
        """The recognizer: reads nothing here, so the detected text stands."""
        return "", 0.0


@pytest.fixture
async def parts(tmp_path: Path):
    db = await FarmDB.open(tmp_path / "farm.db")
    store = RegistryStore.open(tmp_path / "registry", db)
    queue = UnknownScreenQueue(tmp_path / "unknown")
    queue.add("rack-1", popup_png(), {"serial": "S1", "app": CLIPSHARE, "at": 1.0,
                                      "previous_screen": "clipshare/feed"})
    events: list[tuple[str, dict]] = []
    yield db, store, queue, events
    await db.close()


def service(parts, detector, ai=None) -> DiscoveryService:
    db, store, queue, events = parts
    return DiscoveryService(store, db, queue, ai=lambda: ai, reader=detector,
                            emit=lambda event, node, serial, data: events.append((event, data)))


async def test_ai_proposal_located_by_ocr_approved_into_the_registry(parts):
    db, store, queue, events = parts
    model = ScriptedModel([{**reply_tool("propose_screen"), "arguments": json.dumps({
        "name": "Update Popup", "description": "Asks to update the app", "kind": "interrupt",
        "elements": ["Update available", "Version 3.2 is ready", "Not on screen"],
        "actions": [{"name": "dismiss", "element": "Later"}]})}])
    ai = AIClient(AIConfig(base_url=await model.start(), model="scripted"))
    try:
        discovery = service(parts, Detector(POPUP_LINES), ai)
        proposal = await discovery.propose("rack-1")
    finally:
        await ai.close()
        await model.stop()
    assert proposal["source"] == "ai" and proposal["status"] == "proposed"
    assert proposal["name"] == "update_popup" and proposal["kind"] == "interrupt"
    assert proposal["app"] == "clipshare" and not proposal["new_app"]
    assert [r["expected_text"] for r in proposal["regions"]] == ["Update available",
                                                                 "Version 3.2 is ready"]
    assert proposal["regions"][0]["coordinates"] == [108, 888, 972, 1002]  # padded line box
    assert proposal["actions"] == [{"name": "dismiss", "coordinates": [688, 1288, 912, 1382],
                                    "action_type": "tap", "linked_state": None}]
    assert proposal["handler"] == "dismiss" and proposal["not_found"] == ["Not on screen"]
    assert proposal["ai_usage"]["attempts"] == 1
    assert events[0][0] == "discovery_proposed" and events[0][1]["id"] == proposal["id"]
    assert await discovery.propose("rack-1") == {**proposal}  # made once

    out = await discovery.approve(str(proposal["id"]), None, None, actor="ops")
    screen = store.registry.apps["clipshare"].interrupts["update_popup"]
    assert screen.handler == "dismiss" and len(screen.validation_regions) == 2
    assert out["version"] == store.version and out["proposal"]["status"] == "approved"
    assert events[-1] == ("discovery_resolved", {
        "id": proposal["id"], "status": "approved", "app": "clipshare", "screen": "update_popup",
        "version": out["version"], "unknown_screen": "rack-1"})
    assert queue.entries()[0]["status"] == "registered"
    trail = await db.audit_trail("registry_screen", "clipshare/update_popup")
    assert trail[0]["actor"] == "ops" and "discovery proposal" in trail[0]["reason"]
    with pytest.raises(ProposalResolved):
        await discovery.discard(str(proposal["id"]))


async def test_without_ai_ocr_regions_and_a_failed_model_falls_back_to_them(parts):
    db, store, queue, events = parts
    detector = Detector(POPUP_LINES)
    proposal = await service(parts, detector).propose("rack-1")
    assert proposal["source"] == "ocr" and proposal["name"] == "unknown_rack_1"
    assert [r["expected_text"] for r in proposal["regions"]] == [
        "Update available", "Version 3.2 is ready", "Later"]
    assert proposal["detect_ms"] >= 0 and detector.calls == 1

    queue.add("rack-2", cv2.imencode(".png", np.zeros((2400, 1080, 3), np.uint8))[1].tobytes(),
              {"serial": "S2", "app": "com.other.app", "at": 2.0})
    model = ScriptedModel([reply_error(500)])
    ai = AIClient(AIConfig(base_url=await model.start(), model="scripted", max_retries=1),
                  sleep=lambda s: asyncio.sleep(0))
    try:
        failed = await service(parts, Detector([]), ai).propose("rack-2")
    finally:
        await ai.close()
        await model.stop()
    # The model failing leaves the operator the text on the screen (none on this black one).
    assert failed["status"] == "proposed" and failed["source"] == "ocr"
    assert "http 500" in failed["ai_error"] and failed["regions"] == []
    assert failed["app"] == "app" and failed["package"] == "com.other.app"


async def test_discovery_and_registry_routes(parts, capsys):
    db, store, queue, events = parts
    hub = FakeHub()
    hub.registry_store = store
    hub.discovery = service(parts, Detector(POPUP_LINES))
    hub.unknown_screen_image = queue.image
    await hub.discovery.propose("rack-1")
    async with TestClient(TestServer(make_app(hub))) as http:
        listed = (await (await http.get("/api/discovery")).json())["proposals"]
        assert len(listed) == 1 and listed[0]["image"] == "/api/unknown-screens/rack-1/image"
        pid = listed[0]["id"]
        assert (await (await http.get("/api/discovery?status=approved")).json())["proposals"] == []
        r = await http.put(f"/api/discovery/{pid}", json={"kind": "popup"})
        assert r.status == 400 and (await r.json())["field"] == "$.kind"
        r = await http.put(f"/api/discovery/{pid}", json={
            "name": "update_available_2", "kind": "interrupt",
            "actions": [{"name": "dismiss", "coordinates": [688, 1288, 912, 1382]}]})
        assert r.status == 200 and (await r.json())["actions"][0]["name"] == "dismiss"
        r = await http.post(f"/api/discovery/{pid}/approve", json={
            "kind": "interrupt", "regions": [{"name": "t", "coordinates": [0, 0, 5000, 10]}]})
        assert r.status == 400 and (await r.json())["field"] == "$.regions[0].coordinates"
        r = await http.post(f"/api/discovery/{pid}/approve")
        assert r.status == 200, await r.text()
        assert "update_available_2" in store.registry.apps["clipshare"].interrupts
        assert (await http.post(f"/api/discovery/{pid}/discard")).status == 409
        assert (await http.post("/api/discovery/77/discard")).status == 404
        r = await http.put("/api/registry/apps/clipshare/screens/feed", json={"kind": "state"})
        assert r.status == 400 and (await r.json())["field"] == "$.regions"
        assert (await http.delete("/api/registry/apps/clipshare/screens/nosuch")).status == 404
        r = await http.get("/api/registry/apps/clipshare/files/clipshare/nosuch.png")
        assert r.status == 404
        r = await http.get("/api/registry/apps/clipshare/files/clipshare/feed.title.png")
        assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
        url = str(http.make_url("")).rstrip("/")
        assert await asyncio.to_thread(main, ["--url", url, "registry", "apps"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"registry version {store.version[:16]}"
    clipshare = next(line for line in out if line.startswith("clipshare"))
    assert CLIPSHARE in clipshare and "update_available_2" in clipshare


# What the detector found on the demo's 'Update available' popup over the feed.
UPDATE_LINES = [TextLine((886, 12, 976, 66), "85%", 0.99), TextLine((30, 16, 142, 64), "09:41", 0.99),
                TextLine((32, 130, 300, 198), "Clipshare", 0.97),
                TextLine((144, 946, 592, 1008), "Updateavailable", 0.99),
                TextLine((134, 1158, 878, 1212), "A newversionofClipshareisreadyto", 0.97),
                TextLine((132, 1222, 268, 1270), "install.", 0.99),
                TextLine((230, 1428, 418, 1500), "Update", 0.99),
                TextLine((666, 1434, 852, 1490), "Dismiss", 0.99),
                TextLine((274, 1890, 808, 1934), "Swipeupforthenextvideo", 0.99),
                TextLine((102, 2272, 258, 2334), "Home", 0.99),
                TextLine((824, 2272, 980, 2330), "Profile", 0.99),
                TextLine((434, 2276, 648, 2330), "+ Upload", 0.94)]


async def test_without_ai_a_popup_over_a_known_screen_is_an_interrupt_of_its_own_text(
        parts, tmp_path):
    from registry.load import DEMO_REGISTRY

    db, store, _, events = parts
    await store.delete_screen("clipshare", "update_available")  # now nobody registered it
    queue = UnknownScreenQueue(tmp_path / "unknown-2")  # (the other popup's hash is close)
    queue.add("rack-9", (DEMO_REGISTRY / "clipshare/update_available.png").read_bytes(),
              {"serial": "S1", "app": CLIPSHARE, "at": 3.0})
    proposal = await DiscoveryService(store, db, queue, reader=Detector(UPDATE_LINES)
                                      ).propose("rack-9")
    # The feed's bars show (dimmed) under it: they tell nothing apart, the popup's text does.
    assert proposal["kind"] == "interrupt"
    assert [r["expected_text"] for r in proposal["regions"]] == [
        "Updateavailable", "A newversionofClipshareisreadyto", "install."]


async def test_a_queued_screen_saved_in_edit_mode_resolves_its_proposal(parts):
    db, store, queue, events = parts
    hub = FakeHub()
    hub.registry_store = store
    hub.discovery = service(parts, Detector(POPUP_LINES))
    hub.unknown_screen_image = queue.image
    proposal = await hub.discovery.propose("rack-1")
    async with TestClient(TestServer(make_app(hub))) as http:
        r = await http.put("/api/registry/apps/clipshare/screens/update_v3", json={
            "kind": "interrupt", "frame": {"unknown_screen": "rack-1"}, "reason": "by hand",
            "regions": [{"name": "title", "coordinates": [80, 850, 1000, 1000]}]})
        assert r.status == 201, await r.text()
    row = await db.proposal_row(proposal["id"])
    assert row["status"] == "approved" and row["name"] == "update_v3"
    assert queue.entries()[0]["status"] == "registered"
    assert events[-1][0] == "discovery_resolved" and events[-1][1]["screen"] == "update_v3"
