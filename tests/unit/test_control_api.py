"""The control endpoint over a fake hub, through a real aiohttp server on an ephemeral port:
every route, every error case, the SSE stream, bearer auth and check_bind."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from urllib.parse import quote

import cv2
import msgspec
import numpy as np
import openapi_spec_validator
import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.control.app import STREAMER, make_app  # noqa: E402
from actors.control.auth import is_loopback  # noqa: E402
from actors.control.openapi import openapi_document  # noqa: E402
from actors.control.schemas import MAX_BODY_BYTES, ControlAction  # noqa: E402
from actors.control.stream import ClientBacklog  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from protocol.errors import DeviceError, FarmError, PhoneNotFound  # noqa: E402
from protocol.messages import Action as ProtocolAction  # noqa: E402

ALL = ["127.0.0.1:40123", "127.0.0.1:40124", "R58M123ABC"]
TOKEN = "s3cret-token"


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
async def client(hub: FakeHub):
    async with TestClient(TestServer(make_app(hub, heartbeat_s=0.05, stream_backlog=3))) as c:
        yield c


@pytest.fixture
async def auth_client(hub: FakeHub):
    async with TestClient(TestServer(make_app(hub, token=TOKEN, heartbeat_s=0.05))) as c:
        yield c


async def post_action(client: TestClient, action: dict, scope: str = "phone:all", **extra):
    return await client.post("/api/actions", json={"scope": scope, "action": action, **extra})


# --- simple reads -----------------------------------------------------------------------


async def test_health(client: TestClient) -> None:
    resp = await client.get("/api/health")
    body = await resp.json()
    assert resp.status == 200 and body["ok"] is True
    assert set(body["loop_lag_ms"]) == {"max", "recent_max", "window_s", "stalls", "stall_ms"}


async def test_phones_are_the_hubs_dicts(client: TestClient, hub: FakeHub) -> None:
    resp = await client.get("/api/phones")
    assert resp.status == 200
    assert await resp.json() == {"phones": hub.phones()}


async def test_nodes(client: TestClient, hub: FakeHub) -> None:
    resp = await client.get("/api/nodes")
    assert await resp.json() == {"nodes": hub.nodes()}


# --- screen -------------------------------------------------------------------------------


def decode_image(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


async def test_screen_full_png(client: TestClient, hub: FakeHub) -> None:
    resp = await client.get(f"/api/phones/{quote('127.0.0.1:40123', safe='')}/screen")
    assert resp.status == 200 and resp.content_type == "image/png"
    assert resp.headers["Cache-Control"] == "no-store"
    data = await resp.read()
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(decode_image(data), hub.frame)


async def test_screen_unencoded_colon_in_path(client: TestClient) -> None:
    resp = await client.get("/api/phones/127.0.0.1:40123/screen")
    assert resp.status == 200


async def test_screen_of_a_locked_phone_is_409_naming_the_holder(client: TestClient, hub: FakeHub) -> None:
    hub.locked_by["R58M123ABC"] = "ex-1"
    resp = await client.get("/api/phones/R58M123ABC/screen?w=54")
    body = await resp.json()
    assert resp.status == 409 and body["holder"] == "ex-1" and body["serial"] == "R58M123ABC"


async def test_screen_thumbnail_jpeg(client: TestClient) -> None:
    resp = await client.get("/api/phones/R58M123ABC/screen?w=54")
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    assert decode_image(await resp.read()).shape == (120, 54, 3)


@pytest.mark.parametrize("w", ["15", "2001", "abc", "", "-5", "54.5"])
async def test_screen_bad_width(client: TestClient, w: str) -> None:
    resp = await client.get(f"/api/phones/R58M123ABC/screen?w={w}")
    assert resp.status == 400
    body = await resp.json()
    assert body["field"] == "w" and "16..2000" in body["error"]


@pytest.mark.parametrize("w", ["16", "2000"])
async def test_screen_width_bounds_accepted(client: TestClient, w: str) -> None:
    assert (await client.get(f"/api/phones/R58M123ABC/screen?w={w}")).status == 200


async def test_screen_unknown_serial_404(client: TestClient) -> None:
    resp = await client.get("/api/phones/10.0.0.9:5555/screen")
    assert resp.status == 404 and resp.content_type == "application/json"
    body = await resp.json()
    assert body["serial"] == "10.0.0.9:5555" and "10.0.0.9:5555" in body["error"]


async def test_screen_device_error_is_503(client: TestClient, hub: FakeHub) -> None:
    hub.no_frame.add("R58M123ABC")
    resp = await client.get("/api/phones/R58M123ABC/screen")
    assert resp.status == 503
    assert "no frame yet" in (await resp.json())["error"]


# --- actions ------------------------------------------------------------------------------


async def test_tap_on_all_phones(client: TestClient, hub: FakeHub) -> None:
    resp = await post_action(client, {"type": "tap", "x": 540, "y": 1200})
    assert resp.status == 200
    body = await resp.json()
    assert list(body["results"]) == ALL
    assert all(r == {"status": "ok", "error": None} for r in body["results"].values())
    assert sorted(c[0] for c in hub.calls) == sorted(ALL)
    assert all(c[1] == {"type": "tap", "x": 540, "y": 1200} and c[2] is None for c in hub.calls)


async def test_actions_run_concurrently(client: TestClient, hub: FakeHub) -> None:
    hub.action_delay = 0.05
    resp = await post_action(client, {"type": "screenshot"})
    assert resp.status == 200 and hub.max_in_flight == 3


async def test_defaults_filled_and_execution_id_passed(client: TestClient, hub: FakeHub) -> None:
    resp = await post_action(client, {"type": "long_tap", "x": 1, "y": 2}, scope="phone:phone2",
                             execution_id="exec-42")
    assert resp.status == 200
    assert hub.calls == [("127.0.0.1:40124",
                          {"type": "long_tap", "x": 1, "y": 2, "duration_ms": 800}, "exec-42")]


async def test_each_phone_gets_its_own_action_dict(client: TestClient, hub: FakeHub) -> None:
    await post_action(client, {"type": "tap", "x": 1, "y": 2})
    assert len({id(c[1]) for c in hub.calls}) == 3


async def test_mixed_results(client: TestClient, hub: FakeHub) -> None:
    hub.results["127.0.0.1:40123"] = {"status": "locked", "error": "held by exec-7", "holder": "exec-7"}
    hub.results["127.0.0.1:40124"] = DeviceError("127.0.0.1:40124", "input tap", "boom")
    hub.results["R58M123ABC"] = RuntimeError("hub bug")
    body = await (await post_action(client, {"type": "tap", "x": 1, "y": 2})).json()
    results = body["results"]
    assert results["127.0.0.1:40123"] == {"status": "locked", "error": "held by exec-7", "holder": "exec-7"}
    assert results["127.0.0.1:40124"]["status"] == "error" and "boom" in results["127.0.0.1:40124"]["error"]
    assert results["R58M123ABC"]["status"] == "error" and "hub bug" in results["R58M123ABC"]["error"]


async def test_phone_vanishing_after_resolution_is_gone(client: TestClient, hub: FakeHub) -> None:
    hub.vanished.add("R58M123ABC")
    results = (await (await post_action(client, {"type": "key", "key": "HOME"})).json())["results"]
    assert results["R58M123ABC"]["status"] == "gone"
    assert "R58M123ABC" in results["R58M123ABC"]["error"]
    assert results["127.0.0.1:40123"]["status"] == "ok"


@pytest.mark.parametrize("action, sent", [
    ({"type": "tap", "x": 0, "y": 0}, None),
    ({"type": "long_tap", "x": 5, "y": 6, "duration_ms": 2000}, None),
    ({"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": 4},
     {"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": 4, "duration_ms": 300}),
    # A path alone: its ends become x1..y2 (so a node too old for paths still swipes).
    ({"type": "swipe", "path": [[10, 20], [40, 25], [90, 60]], "duration_ms": 500},
     {"type": "swipe", "x1": 10, "y1": 20, "x2": 90, "y2": 60, "duration_ms": 500,
      "path": [(10, 20), (40, 25), (90, 60)]}),
    ({"type": "swipe", "x1": 10, "y1": 20, "x2": 90, "y2": 60, "path": [[10, 20], [90, 60]]},
     {"type": "swipe", "x1": 10, "y1": 20, "x2": 90, "y2": 60, "duration_ms": 300,
      "path": [(10, 20), (90, 60)]}),
    ({"type": "text", "text": "héllo & 'world'\n"}, None),
    ({"type": "key", "key": 4}, {"type": "key", "key": 4, "repeat": 1}),
    ({"type": "key", "key": "KEYCODE_BACK", "repeat": 30}, None),
    ({"type": "launch_app", "package": "com.example.demo"},
     {"type": "launch_app", "package": "com.example.demo", "activity": None}),
    ({"type": "launch_app", "package": "com.example.demo", "activity": ".MainActivity"}, None),
    ({"type": "stop_app", "package": "com.example.demo"}, None),
    ({"type": "screenshot"}, None),
])
async def test_every_action_type(client: TestClient, hub: FakeHub, action: dict, sent: dict | None) -> None:
    resp = await post_action(client, action, scope="phone:R58M123ABC")
    assert resp.status == 200, await resp.text()
    assert hub.calls == [("R58M123ABC", sent or action, None)]


async def test_node_scope(client: TestClient, hub: FakeHub) -> None:
    body = await (await post_action(client, {"type": "screenshot"}, scope="node:rack1")).json()
    assert list(body["results"]) == ALL[:2]


async def test_scope_resolving_to_nothing(client: TestClient, hub: FakeHub) -> None:
    body = await (await post_action(client, {"type": "screenshot"},
                                    scope="phone:all-phone1,phone2,phone3")).json()
    assert body == {"results": {}} and hub.calls == []


async def test_bad_json_names_line_and_column(client: TestClient, hub: FakeHub) -> None:
    resp = await client.post("/api/actions", data=b'{"scope": "phone:all",\n  "action": {"type": "tap",, }}',
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    body = await resp.json()
    assert (body["line"], body["column"]) == (2, 28)  # the second comma
    assert "line 2 column 28" in body["error"]
    assert hub.calls == []


async def test_empty_body(client: TestClient) -> None:
    resp = await client.post("/api/actions", data=b"")
    assert resp.status == 400 and "empty" in (await resp.json())["error"]


@pytest.mark.parametrize("action, field, words", [
    ({"type": "tap", "x": "540", "y": 1}, "$.action.x", "Expected `int`"),
    ({"type": "tap", "x": 1}, "$.action", "missing required field `y`"),
    ({"type": "tap", "x": -1, "y": 1}, "$.action.x", ">= 0"),
    ({"type": "tap", "x": 1, "y": 1, "z": 3}, "$.action", "unknown field `z`"),
    ({"type": "teleport"}, "$.action.type", "teleport"),
    ({"x": 1, "y": 1}, "$.action", "`type`"),
    ({"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": 4, "duration_ms": 0}, "$.action.duration_ms", ">= 1"),
    ({"type": "swipe", "path": [[1, 2], [3, 4], [5, 6], [7, 8, 9]]}, "$.action.path[3]", "length 2"),
    ({"type": "swipe", "path": [[1, 2], [3, -4]]}, "$.action.path[1][1]", ">= 0"),
    ({"type": "swipe", "path": [[1, 2]]}, "$.action.path", ">= 2"),
    ({"type": "swipe", "path": [[i, i] for i in range(65)]}, "$.action.path", "<= 64"),
    ({"type": "swipe", "x1": 1, "y1": 2, "x2": 3}, "$.action.y2", "required"),
    ({"type": "swipe", "x1": 5, "path": [[1, 2], [3, 4]]}, "$.action.x1", "path's end"),
    ({"type": "text", "text": ""}, "$.action.text", "length"),
    ({"type": "key", "key": "NOT_A_KEY"}, "$.action.key", "unknown key"),
    ({"type": "key", "key": 1.5}, "$.action.key", "Expected"),
    ({"type": "launch_app", "package": "com.x; reboot"}, "$.action.package", "regex"),
    ({"type": "launch_app", "package": "com.x", "activity": "a b"}, "$.action.activity", "regex"),
    ({"type": "acquire", "execution_id": "e", "lease_s": 5}, "$.action.type", "acquire"),
])
async def test_bad_action_names_the_field(client: TestClient, hub: FakeHub, action: dict,
                                          field: str, words: str) -> None:
    resp = await post_action(client, action)
    assert resp.status == 400
    body = await resp.json()
    assert body["field"] == field and body["error"].startswith(field)
    assert words in body["error"]
    assert hub.calls == []


async def test_bad_request_fields(client: TestClient) -> None:
    resp = await client.post("/api/actions", json={"action": {"type": "screenshot"}})
    assert (await resp.json())["field"] == "$"
    resp = await client.post("/api/actions", json={"scope": "phone:all", "action": {"type": "screenshot"},
                                                   "execution_id": ""})
    assert (await resp.json())["field"] == "$.execution_id"
    resp = await client.post("/api/actions", json=[1])
    assert resp.status == 400 and (await resp.json())["field"] == "$"


async def test_bad_scope_has_offset(client: TestClient, hub: FakeHub) -> None:
    resp = await post_action(client, {"type": "screenshot"}, scope="phone:a,,b")
    assert resp.status == 400
    body = await resp.json()
    assert body["offset"] == 8 and body["scope"] == "phone:a,,b"
    assert body["error"] == "scope 'phone:a,,b': offset 8: empty phone name"


async def test_unknown_serial_in_scope(client: TestClient, hub: FakeHub) -> None:
    resp = await post_action(client, {"type": "screenshot"}, scope="phone:phone1,10.1.1.1:5555")
    body = await resp.json()
    assert resp.status == 400 and body["offset"] == 13 and "'10.1.1.1:5555'" in body["error"]
    assert hub.calls == []


async def test_account_scope_is_400_for_actions(client: TestClient, hub: FakeHub) -> None:
    resp = await post_action(client, {"type": "screenshot"}, scope="account:tiktok.all@phone1")
    body = await resp.json()
    assert resp.status == 400 and body["offset"] == 0 and body["field"] == "$.scope"
    assert body["scope"] == "account:tiktok.all@phone1"
    assert body["error"].endswith("account scopes select accounts; actions take a phone scope")
    assert hub.calls == []


async def test_client_scope_and_bad_client_offset(client: TestClient, hub: FakeHub) -> None:
    hub._phones[2]["client"] = "FanVue"
    body = await (await post_action(client, {"type": "screenshot"},
                                    scope="phone:client:fanvue")).json()
    assert list(body["results"]) == ["R58M123ABC"]
    resp = await post_action(client, {"type": "screenshot"}, scope="phone:client:Nope")
    assert resp.status == 400 and (await resp.json())["offset"] == 13


async def test_body_over_1mib_is_413(client: TestClient, hub: FakeHub) -> None:
    big = json.dumps({"scope": "phone:all", "action": {"type": "text", "text": "x" * MAX_BODY_BYTES}})
    resp = await client.post("/api/actions", data=io.BytesIO(big.encode()))
    assert resp.status == 413 and "bytes" in (await resp.json())["error"]
    assert hub.calls == []


async def test_chunked_body_over_1mib_is_413(client: TestClient, hub: FakeHub) -> None:
    async def chunks():
        for _ in range(20):
            yield b"x" * 65536

    resp = await client.post("/api/actions", data=chunks())
    assert resp.status == 413 and resp.content_type == "application/json"
    assert hub.calls == []


async def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    resp = await client.get("/api/nope")
    assert resp.status == 404 and "/api/nope" in (await resp.json())["error"]
    resp = await client.get("/api/actions")
    assert resp.status == 405 and "GET" in (await resp.json())["error"]
    assert "POST" in resp.headers["Allow"]


# --- stream -----------------------------------------------------------------------------


async def read_sse(resp, count: int, timeout: float = 5.0) -> list[tuple[str, dict]]:
    """The next ``count`` events (comments skipped) as (event name, data)."""
    events: list[tuple[str, dict]] = []
    name, data = None, None

    async def run() -> None:
        nonlocal name, data
        while len(events) < count:
            line = (await resp.content.readline()).decode()
            assert line, "stream ended"
            line = line.rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
            elif line == "" and name is not None:
                events.append((name, data))
                name, data = None, None

    await asyncio.wait_for(run(), timeout)
    return events


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_stream_delivers_events(client: TestClient, hub: FakeHub) -> None:
    resp = await client.get("/api/stream")
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    await wait_for(lambda: len(hub.subscribers) == 1)
    sent = hub.publish("lock_taken", serial="R58M123ABC", node="rack2", execution_id="e1")
    hub.publish("thumbnail", serial="R58M123ABC", url="/api/phones/R58M123ABC/screen?w=270")
    events = await read_sse(resp, 2)
    assert events[0] == ("lock_taken", sent)
    assert events[1][0] == "thumbnail" and events[1][1]["data"]["url"].endswith("w=270")
    resp.close()


async def test_stream_heartbeat_comments(client: TestClient, hub: FakeHub) -> None:
    resp = await client.get("/api/stream")

    async def until_heartbeat() -> None:
        while (await resp.content.readline()) != b": heartbeat\n":
            pass

    await asyncio.wait_for(until_heartbeat(), 5)
    resp.close()


async def test_stream_unsubscribes_when_client_goes(client: TestClient, hub: FakeHub) -> None:
    resp = await client.get("/api/stream")
    await wait_for(lambda: len(hub.subscribers) == 1)
    resp.close()
    await wait_for(lambda: not hub.subscribers)
    assert client.app[STREAMER].clients == 0


async def test_stream_slow_client_overflow(client: TestClient, hub: FakeHub) -> None:
    resp = await client.get("/api/stream")
    await wait_for(lambda: len(hub.subscribers) == 1)
    for i in range(10):  # one burst: the pump drains it before the writer runs; backlog is 3
        hub.publish("screen_changed", serial="R58M123ABC", n=i)
    events = await read_sse(resp, 4)
    assert events[0][0] == "overflow" and events[0][1]["data"] == {"dropped": 7}
    assert [e[1]["data"]["n"] for e in events[1:]] == [7, 8, 9]
    hub.publish("phone_up", serial="R58M123ABC")
    assert (await read_sse(resp, 1))[0][0] == "phone_up"  # one overflow only, then normal
    resp.close()


async def test_shutdown_ends_open_streams(client: TestClient, hub: FakeHub) -> None:
    resp = await client.get("/api/stream")
    await wait_for(lambda: len(hub.subscribers) == 1)
    await client.app[STREAMER].close_all()

    async def until_eof() -> None:
        while await resp.content.readline():
            pass

    await asyncio.wait_for(until_eof(), 5)
    await wait_for(lambda: not hub.subscribers)


def test_backlog_drops_oldest() -> None:
    backlog = ClientBacklog(2)
    for i in range(5):
        backlog.push({"n": i})
    assert backlog.take() == ([{"n": 3}, {"n": 4}], 3)
    assert backlog.take() == ([], 0)
    with pytest.raises(ValueError):
        ClientBacklog(0)


async def test_record_start_and_stop(client: TestClient, hub: FakeHub) -> None:
    resp = await client.post("/api/record/start", json={"scope": "phone:all", "name": "x", "app": "demo"})
    assert resp.status == 201
    body = await resp.json()
    assert body["recording_id"] == "rec1" and body["lead"] == hub.phones()[0]["serial"]
    resp = await client.post("/api/record/stop", json={"recording_id": "rec1"})
    assert resp.status == 200 and (await resp.json())["sequence"]["name"] == "x"


async def test_record_bad_requests_name_what_was_wrong(client: TestClient) -> None:
    resp = await client.post("/api/record/start", json={"scope": "phone:all", "name": "no way"})
    assert resp.status == 400 and (await resp.json())["field"] == "$.name"
    resp = await client.post("/api/record/start", json={"scope": "phone:zzz", "name": "x"})
    assert resp.status == 400 and (await resp.json())["offset"] == 6
    resp = await client.post("/api/record/start", json={"name": "x"})
    assert resp.status == 400 and "scope" in (await resp.json())["error"]
    resp = await client.post("/api/record/stop", json={"recording_id": "nope"})
    assert resp.status == 404 and (await resp.json())["recording_id"] == "nope"


async def test_unknown_screens_listed_with_image_urls(client: TestClient) -> None:
    resp = await client.get("/api/unknown-screens")
    assert resp.status == 200
    (entry,) = (await resp.json())["unknown_screens"]
    assert entry["id"] == "rack1-7" and entry["seen"] == 2
    assert entry["url"] == "/api/unknown-screens/rack1-7/image"
    image = await client.get(entry["url"])
    assert image.status == 200 and image.content_type == "image/png"
    assert (await image.read()).startswith(b"\x89PNG")


async def test_unknown_screen_image_unknown_id_404(client: TestClient) -> None:
    resp = await client.get("/api/unknown-screens/nope-1/image")
    assert resp.status == 404
    body = await resp.json()
    assert body["id"] == "nope-1" and "no such entry" in body["error"]


# --- OpenAPI --------------------------------------------------------------------------------


async def test_openapi_document(client: TestClient) -> None:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    # The web console's page and files (/, /static) are not API routes; /metrics is.
    routes = {(r.method.lower(), r.resource.canonical) for r in client.app.router.routes()
              if r.method != "HEAD" and (r.resource.canonical.startswith("/api")
                                         or r.resource.canonical == "/metrics"
                                         or r.resource.canonical.startswith("/l/"))}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        assert ref.split("/")[-1] in doc["components"]["schemas"], ref
    mapping = doc["components"]["schemas"]["ActionRequest"]["properties"]["action"]["discriminator"]["mapping"]
    assert set(mapping) == {"tap", "long_tap", "swipe", "text", "key", "launch_app", "stop_app", "screenshot"}


def test_openapi_is_valid_3_1() -> None:
    openapi_spec_validator.validate(openapi_document())


def test_control_actions_are_protocol_actions() -> None:
    """What the endpoint accepts, the node protocol can carry unchanged."""
    samples = [{"type": "tap", "x": 1, "y": 2}, {"type": "long_tap", "x": 1, "y": 2},
               {"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": 4}, {"type": "text", "text": "t"},
               {"type": "swipe", "x1": 1, "y1": 2, "x2": 5, "y2": 6, "path": [[1, 2], [3, 4], [5, 6]]},
               {"type": "key", "key": "HOME"}, {"type": "launch_app", "package": "a.b"},
               {"type": "stop_app", "package": "a.b"}, {"type": "screenshot"}]
    for sample in samples:
        control = msgspec.convert(sample, ControlAction)
        wire = msgspec.to_builtins(control)
        assert msgspec.to_builtins(msgspec.convert(wire, ProtocolAction)) == wire


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/phones", "/api/nodes", "/api/stream",
                                  "/api/phones/R58M123ABC/screen", "/api/nope"])
async def test_token_required_everywhere(auth_client: TestClient, path: str) -> None:
    resp = await auth_client.get(path)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Bearer" in (await resp.json())["error"]


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer", f"Basic {TOKEN}", TOKEN, "Bearer  "])
async def test_wrong_token_rejected(auth_client: TestClient, header: str) -> None:
    resp = await auth_client.get("/api/phones", headers={"Authorization": header})
    assert resp.status == 401


async def test_right_token_accepted(auth_client: TestClient, hub: FakeHub) -> None:
    for scheme in ("Bearer", "bearer"):
        resp = await auth_client.get("/api/phones", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert resp.status == 200
    resp = await auth_client.post("/api/actions", json={"scope": "phone:phone1", "action": {"type": "screenshot"}},
                                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200 and hub.calls


async def test_rejected_action_never_runs(auth_client: TestClient, hub: FakeHub) -> None:
    resp = await auth_client.post("/api/actions", json={"scope": "phone:all", "action": {"type": "screenshot"}})
    assert resp.status == 401 and hub.calls == []


@pytest.mark.parametrize("path", ["/api/health", "/api/openapi.json"])
async def test_health_and_openapi_need_no_token(auth_client: TestClient, path: str) -> None:
    assert (await auth_client.get(path)).status == 200


async def test_no_token_means_open(client: TestClient) -> None:
    assert (await client.get("/api/phones")).status == 200


async def test_empty_token_means_open(hub: FakeHub) -> None:
    async with TestClient(TestServer(make_app(hub, token=""))) as c:
        assert (await c.get("/api/health")).status == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_names(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "farm.example.com", ""])
def test_public_names_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_fake_hub_raises_phone_not_found() -> None:
    with pytest.raises(PhoneNotFound):
        asyncio.run(FakeHub().screen("nope"))


# --- sequence runs ------------------------------------------------------------------------------


async def test_post_run_starts_library_sequence_on_every_phone_of_scope(client, hub) -> None:
    resp = await client.post("/api/runs", json={"sequence": "clipshare/post_clip",
                                                "scope": "phone:all", "variables": {"tag": "x"}})
    assert resp.status == 202
    body = await resp.json()
    assert set(body["executions"]) == {p["serial"] for p in hub.phones()}
    assert all(e["status"] == "pending" and e["execution_id"] for e in body["executions"].values())
    assert hub.run_calls == [("clipshare/post_clip", "phone:all", {"tag": "x"})]
    run = await (await client.get(f"/api/runs/{body['run_id']}")).json()
    assert run["status"] == "running" and len(run["executions"]) == 3
    one = run["executions"][0]["execution_id"]
    resp = await client.get(f"/api/executions/{one}")
    assert resp.status == 200 and (await resp.json())["execution_id"] == one


async def test_post_run_bad_inline_sequence_lists_every_problem(client) -> None:
    resp = await client.post("/api/runs", json={"scope": "phone:all", "sequence": {
        "name": "x", "app": "clipshare",
        "steps": [{"type": "tap", "x": 1}, {"type": "wait_for_screen", "screen": "clipshare/fed"}]}})
    assert resp.status == 400
    body = await resp.json()
    assert body["field"] == "$.sequence"
    wheres = [p["where"] for p in body["problems"]]
    assert wheres == ["request: $.sequence: $.steps[0]", "request: $.sequence: $.steps[1].screen"]


async def test_post_run_unknown_name_bad_scope_and_bad_body(client) -> None:
    resp = await client.post("/api/runs", json={"sequence": "clipshare/nope", "scope": "phone:all"})
    assert resp.status == 404 and (await resp.json())["sequence"] == "clipshare/nope"
    resp = await client.post("/api/runs", json={"sequence": "clipshare/login", "scope": "phone:zzz"})
    body = await resp.json()
    assert resp.status == 400 and body["offset"] == 6 and body["field"] == "$.scope"
    resp = await client.post("/api/runs", json={"sequence": "clipshare/login"})
    assert resp.status == 400 and "scope" in (await resp.json())["error"]


async def test_unknown_run_execution_and_screenshot_are_404(client) -> None:
    for path in ("/api/runs/run-x", "/api/executions/ex-x",
                 "/api/executions/ex-x/steps/steps%5B1%5D/screenshot"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "error" in await resp.json()


async def test_failed_step_screenshot_served(client, hub) -> None:
    body = await (await client.post("/api/runs", json={"sequence": "clipshare/login",
                                                       "scope": "phone:phone2"})).json()
    execution = hub.runs[body["run_id"]]["executions"][0]
    execution["steps"].append({"path": "steps[2]", "screenshot": "/x.png"})
    resp = await client.get(f"/api/executions/{execution['execution_id']}/steps/"
                            f"{quote('steps[2]')}/screenshot")
    assert resp.status == 200 and resp.content_type == "image/png"


async def test_compressed_step_screenshot_served_with_its_type(client, hub) -> None:
    body = await (await client.post("/api/runs", json={"sequence": "clipshare/login",
                                                       "scope": "phone:phone2"})).json()
    execution = hub.runs[body["run_id"]]["executions"][0]
    execution["steps"].append({"path": "steps[2]", "screenshot": "/x.jpg"})
    execution["steps"].append({"path": "steps[3]", "screenshot": "/y.webp"})
    for step, content_type, magic in (("steps[2]", "image/jpeg", b"\xff\xd8"),
                                      ("steps[3]", "image/webp", b"RIFF")):
        resp = await client.get(f"/api/executions/{execution['execution_id']}/steps/"
                                f"{quote(step)}/screenshot")
        assert resp.status == 200 and resp.content_type == content_type
        assert (await resp.read()).startswith(magic)


# --- schedules ------------------------------------------------------------------------------


async def test_schedule_add_list_control_and_events(client: TestClient) -> None:
    resp = await client.post("/api/schedules", json={
        "sequence": "clipshare/post_clip", "target": "phone:all", "type": "scheduled",
        "at": "2030-01-01T09:00:00Z", "misfire": {"grace_s": 600}, "status": "cancelled"})
    assert resp.status == 201, await resp.text()
    added = await resp.json()
    sid = added["id"]
    assert sid.startswith("sch-") and added["status"] == "pending"
    assert added["next_fire"] == "2030-01-01T09:00:00+00:00"
    resp = await client.post("/api/schedules", json={
        "id": "daily", "sequence": "clipshare/post_clip", "target": "phone:127.0.0.1:40124",
        "type": "recurring", "cron": "0 9 * * *", "depends_on": [sid]})
    assert resp.status == 201, await resp.text()
    listed = (await (await client.get("/api/schedules")).json())["schedules"]
    assert [(s["id"], s["status"]) for s in listed] == sorted([(sid, "pending"),
                                                               ("daily", "pending")])
    assert all(s["next_fire"] for s in listed)
    resp = await client.post("/api/schedules/daily/pause")
    assert resp.status == 200 and (await resp.json())["status"] == "paused"
    resp = await client.post("/api/schedules/daily/resume")
    assert (await resp.json())["status"] == "pending"
    resp = await client.post(f"/api/schedules/{sid}/cancel")
    assert (await resp.json())["status"] == "cancelled"
    resp = await client.post(f"/api/schedules/{sid}/resume")
    assert resp.status == 409 and "cancelled" in (await resp.json())["error"]
    resp = await client.get(f"/api/schedules/{sid}/events")
    assert resp.status == 200
    assert [e["kind"] for e in (await resp.json())["events"]] == []  # nothing was queued


@pytest.mark.parametrize("body, field", [
    ({"sequence": "x", "target": "phone:all", "type": "sometimes"}, "$.type"),
    ({"sequence": "x", "target": "phone:all", "type": "scheduled"}, "$.at"),
    ({"sequence": "x", "target": "phone:all", "type": "scheduled", "at": "soon"}, "$.at"),
    ({"sequence": "x", "target": "phone:all", "type": "recurring", "cron": "99 * * * *"},
     "$.cron"),
    ({"sequence": "x", "target": "phone:all", "type": "window", "count": 3,
      "window_start": "2030-01-01T09:00:00Z", "window_end": "2030-01-01T09:01:00Z"}, "$.count"),
    ({"sequence": "x", "target": "phone:", "type": "immediate"}, "$.target"),
    ({"sequence": "x", "target": "phone:all", "type": "immediate", "misfire": {"grace": 1}},
     "$.misfire"),  # msgspec names the object; its message names `grace`
    ({"sequence": "x", "target": "phone:all", "type": "immediate", "depends_on": ["nope"]},
     "$.depends_on"),
    ({"target": "phone:all", "type": "immediate"}, "$"),
])
async def test_schedule_bad_fields_are_400_naming_the_field(client: TestClient, body: dict,
                                                            field: str) -> None:
    resp = await client.post("/api/schedules", json=body)
    assert resp.status == 400
    error = await resp.json()
    assert error["field"] == field, error


async def test_unknown_schedule_is_404_and_executions_listed(client: TestClient) -> None:
    for path in ("/api/schedules/ghost/pause", "/api/schedules/ghost/cancel"):
        resp = await client.post(path)
        assert resp.status == 404 and (await resp.json())["schedule_id"] == "ghost"
    assert (await client.get("/api/schedules/ghost/events")).status == 404
    await client.post("/api/runs", json={"sequence": "clipshare/post_clip", "scope": "phone:all"})
    resp = await client.get("/api/executions?limit=2")
    executions = (await resp.json())["executions"]
    assert len(executions) == 2 and executions[0]["execution_id"] == "ex-1-2"
    assert (await client.get("/api/executions?limit=0")).status == 400
