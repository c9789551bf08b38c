"""Out-of-range input to a real coordinator's control endpoint (`actors.coordinator.main.start`:
event store, farm database, registry store, discovery, AI keyring; no nodes) on an ephemeral
port: integers in paths and queries, integers in bodies, deeply nested JSON and over-long
static paths are 400s (or a clean 404) naming what was wrong, never a 500 or a traceback."""

from __future__ import annotations

import contextlib
import logging

import pytest
import pytest_asyncio
from aiohttp import ClientSession

from actors.control.openapi import openapi_document
from actors.coordinator.main import parse_args, start
from actors.node.device.adb_server import free_port

HUGE = str(2**63)          # one past SQLite's largest INTEGER
HUGER = "9" * 30
SQLITE_MAX = 2**63 - 1


# One coordinator for the module: every request here is refused and stores nothing, and
# starting one per case cost ~0.5-3 s each (300 cases).
pytestmark = pytest.mark.asyncio(loop_scope="module")


class _Tracebacks(logging.Handler):
    """Keeps the log records that carry a traceback (a 500's, a crashed handler's)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def coordinator(tmp_path_factory: pytest.TempPathFactory):
    """(base URL, session, traceback log) of a coordinator started as farm-coordinator
    starts it."""
    data = tmp_path_factory.mktemp("limits") / "data"
    port = free_port()
    args = parse_args(["--http", f"127.0.0.1:{port}", "--listen", f"tcp://127.0.0.1:{free_port()}",
                       "--data", str(data), "--secret", "limits-secret", "--retention", "off"])
    tracebacks = _Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await start(args, stack)
            token = (data / "admin.token").read_text().strip()
            async with ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
                yield f"http://127.0.0.1:{port}", session, tracebacks
    finally:
        logging.getLogger().removeHandler(tracebacks)


@pytest.fixture
def api(coordinator):
    """(base URL, session); the case fails if the coordinator logged a traceback meanwhile."""
    base, session, tracebacks = coordinator
    tracebacks.records.clear()
    yield base, session
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]


async def call(api, method: str, path: str, *, json=None, data: bytes | None = None):
    base, session = api
    headers = {"Content-Type": "application/json"} if data is not None else None
    async with session.request(method, base + path, json=json, data=data, headers=headers) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.read()
        return resp.status, body


# --- integers in paths and queries -------------------------------------------------------

INT_PATHS = [
    ("GET", "/api/workflow-executions/{}", "id"),
    ("PUT", "/api/discovery/{}", "id"),
    ("POST", "/api/discovery/{}/approve", "id"),
    ("POST", "/api/discovery/{}/discard", "id"),
    ("DELETE", "/api/ai-keys/{}", "key_id"),
    ("DELETE", "/api/accounts/{}", "account_id"),
]


@pytest.mark.parametrize("value", [HUGE, HUGER, "-1", "-9223372036854775809", "1.5", "²", "x"])
@pytest.mark.parametrize("method, path, name", INT_PATHS)
async def test_integer_path_parameters_out_of_range_are_400(api, method, path, name, value) -> None:
    status, body = await call(api, method, path.format(value), json={})
    assert status == 400, body
    assert body["field"] == name and value in body["error"], body


@pytest.mark.parametrize("method, path, name", INT_PATHS)
async def test_integer_path_parameters_at_the_bound_are_not_found(api, method, path, name) -> None:
    status, body = await call(api, method, path.format(SQLITE_MAX),
                              json={} if method == "PUT" else None)
    assert status == 404, body


@pytest.mark.parametrize("path, name", [
    ("/api/executions?limit={}", "limit"),
    ("/api/workflow-executions?limit={}", "limit"),
    ("/api/recovery/attempts?limit={}", "limit"),
    ("/api/phones/x/screen?w={}", "w"),
])
@pytest.mark.parametrize("value", [HUGE, HUGER, "-1", "0", "²", "", "1e3"])
async def test_integer_query_parameters_out_of_range_are_400(api, path, name, value) -> None:
    status, body = await call(api, "GET", path.format(value))
    assert status == 400, body
    assert body["field"] == name, body


async def test_openapi_bounds_every_integer_parameter() -> None:
    """The fuzz tests draw from the document: each integer parameter says its range."""
    seen = []
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                if param["schema"].get("type") == "integer":
                    seen.append((method, path, param["name"]))
                    assert "minimum" in param["schema"] and "maximum" in param["schema"], \
                        (method, path, param)
                    assert param["schema"]["maximum"] <= SQLITE_MAX
    names = {(m, p, n) for m, p, n in seen}
    for method, path, name in INT_PATHS:
        template = path.replace("{}", "{" + name + "}")
        assert (method.lower(), template, name) in names, (method, template)
    assert ("get", "/api/workflow-executions", "limit") in names


# --- integers in bodies --------------------------------------------------------------------

@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/api/profiles", {"profile_id": 2**63, "first_name": "A"}, "$.profile_id"),
    ("POST", "/api/accounts", {"serial": "s1", "platform": "clipshare", "account_number": "a1",
                               "profile_id": 2**63}, "$.profile_id"),
    ("POST", "/api/ai-keys", {"organization": 2**63, "base_url": "http://127.0.0.1:1/v1",
                              "model": "m", "key": "k"}, "$.organization"),
])
async def test_integers_in_bodies_out_of_range_are_400(api, method, path, body, field) -> None:
    assert (await call(api, "POST", "/api/phones/registry", json={"serial": "s1"}))[0] in (200, 201)
    status, answer = await call(api, method, path, json=body)
    assert status == 400, answer
    assert answer["field"].startswith(field), answer


# --- nesting --------------------------------------------------------------------------------

DEEP = 50_000


def deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("path, body", [
    ("/api/runs", b'{"scope": "phone:all", "sequence": ' + deep_object(DEEP) + b"}"),
    ("/api/runs", b'{"scope": "phone:all", "sequence": {"steps": ' + deep_array(DEEP) + b"}}"),
    ("/api/schedules", deep_object(DEEP)),
    ("/api/schedules", b'{"sequence": "a/b", "target": "phone:all", "type": "immediate", "x": '
                       + deep_array(DEEP) + b"}"),
    ("/api/schedules", b'{"a":' * DEEP),  # deep and cut short
    ("/api/actions", deep_object(DEEP)),
    ("/api/runs", b'{"scope": "phone:all", "sequence": ' + deep_object(65) + b"}"),
])
async def test_deeply_nested_json_is_400_naming_the_depth(api, path, body) -> None:
    status, answer = await call(api, "POST", path, data=body)
    assert status == 400, answer
    assert "nested" in answer["error"] and "64" in answer["error"], answer


async def test_nesting_within_the_bound_is_decoded() -> None:
    from actors.control.schemas import decode_request
    from typing import Any

    value = decode_request(b'{"k": "[[[{{{\\"", "v": ' + deep_object(60) + b"}", dict[str, Any])
    assert value["k"] == '[[[{{{"'


# --- long static paths ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/static/" + "a" * 8000, "/static/" + "a/" * 3000 + "x",
                                  "/" + "a" * 8000,
                                  "/api/registry/apps/clipshare/files/" + "a" * 8000])
async def test_over_long_static_path_is_a_clean_404(api, path) -> None:
    status, body = await call(api, "GET", path)
    assert status == 404, body


# --- numbers in inline sequences ------------------------------------------------------------

@pytest.mark.parametrize("change, where", [
    ({"steps": [{"type": "tap", "x": 10**30, "y": 1}]}, "$.steps[0].x"),
    ({"steps": [{"type": "tap", "x": 2**63, "y": 1}]}, "$.steps[0].x"),
    ({"steps": [{"type": "long_tap", "x": 1, "y": 1, "duration_ms": 10**9}]},
     "$.steps[0].duration_ms"),
    ({"steps": [{"type": "swipe", "x1": 1, "y1": 1, "x2": 2, "y2": 200_001}]}, "$.steps[0].y2"),
    ({"steps": [{"type": "swipe", "x1": 1, "y1": 1, "x2": 2, "y2": 2,
                 "path": [[1, 1], [10**12, 5], [2, 2]]}]}, "$.steps[0].path[1]"),
    ({"steps": [{"type": "sleep", "seconds": 1e300}]}, "$.steps[0].seconds"),
    ({"steps": [{"type": "sleep", "min_s": 1, "max_s": 1e300}]}, "$.steps[0].max_s"),
    ({"steps": [{"type": "wait_for_screen", "screen": "clipshare/feed", "timeout_s": 1e9}]},
     "$.steps[0].timeout_s"),
    ({"retry": {"immediate": 10**30}}, "$.retry.immediate"),
    ({"retry": {"short_delay_s": 1e12}}, "$.retry.short_delay_s"),
    ({"retry": {"short": -1}}, "$.retry.short"),
])
async def test_inline_sequence_numbers_out_of_range_are_400(api, change, where) -> None:
    sequence = {"name": "bounds", "app": "clipshare", "steps": [{"type": "tap", "x": 1, "y": 1}],
                **change}
    status, body = await call(api, "POST", "/api/runs", json={"sequence": sequence,
                                                              "scope": "phone:all"})
    assert status == 400, body
    assert [p["where"].rsplit(": ", 1)[-1] for p in body["problems"]] == [where], body


async def test_inline_type_step_clear_without_its_field_is_400(api) -> None:
    sequence = {"name": "clear", "app": "clipshare",
                "steps": [{"type": "type", "text": "x", "clear": True}]}
    status, body = await call(api, "POST", "/api/runs", json={"sequence": sequence,
                                                              "scope": "phone:all"})
    assert status == 400, body
    assert [p["where"].rsplit(": ", 1)[-1] for p in body["problems"]] == ["$.steps[0].field"]
