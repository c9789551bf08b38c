"""GET /api/stats and /api/stats/top-failures (issue 19.2) and `farm stats`, on a
real FarmDB (both engines) behind a real aiohttp server: the answer's shape, parameters
(every bad one a 400 naming it), a tenant's view (its clients' series only), and the CLI's
table and JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.policy import refusal  # noqa: E402
from actors.access.principal import Principal  # noqa: E402
from actors.control import stats as stats_api  # noqa: E402
from actors.control.app import make_app  # noqa: E402
from actors.control.cli import main as farm_main  # noqa: E402
from actors.control.openapi import openapi_document  # noqa: E402
from actors.control.schemas import RequestError  # noqa: E402
from actors.coordinator.rollups import RollupService  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from tests.api_call import app_as as app_with, call  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine")

A1, Z1 = "10.0.0.1:5555", "10.0.0.9:5555"  # Acme's, Zeta's
NOW = datetime.now(timezone.utc).replace(second=0, microsecond=0)


@pytest.fixture
async def hub(db: FarmDB) -> FakeHub:
    """A fake hub over a real FarmDB whose last 10 minutes are rolled up: an Acme execution
    that failed on app/home and a Zeta one that completed, both 5 minutes ago."""
    acme, zeta = await db.upsert_client("Acme"), await db.upsert_client("Zeta")
    await db.upsert_phone(A1, client=acme)
    await db.upsert_phone(Z1, client=zeta)
    began = NOW - timedelta(minutes=5)
    for key, serial, sequence, status in (("ex-a", A1, "s/login", "failed"),
                                          ("ex-z", Z1, "s/post", "completed")):
        await db.create_execution(key, serial=serial, sequence=sequence, start_time=began,
                                  status="running")
        step = await db.add_step(key, 0, "tap", path="steps[0]", start_time=began)
        await db.finish_step(step, "failed" if status == "failed" else "success",
                             end_time=began + timedelta(seconds=2), screen_name="app/home",
                             screenshot=f"executions/{key}/steps[0].png")
        await db.update_execution(key, status=status, end_time=began + timedelta(seconds=3),
                                  error_reason="no_match" if status == "failed" else None)
    phones = [{"serial": A1, "node": "rack-1", "state": "online", "lock_holder": None},
              {"serial": Z1, "node": "rack-2", "state": "paused", "lock_holder": None}]
    service = RollupService(db, lambda: phones, client_of={A1: acme, Z1: zeta}.get,
                            clock=lambda: NOW.timestamp(), catch_up_s=600)
    service.sample(began.timestamp())
    await service.start()
    hub = FakeHub()
    hub.db = db
    hub.clients = {"Acme": acme, "Zeta": zeta}
    return hub


def app_as(hub: FakeHub, principal: Principal) -> web.Application:
    return app_with(hub, principal, (stats_api,))


async def test_stats_answer_contract_b(hub: FakeHub) -> None:
    async with TestClient(TestServer(make_app(hub))) as client:
        status, body = await call(client, "GET", "/api/stats?from=30m&step=5m&by=client")
        assert status == 200, body
        assert (body["step_s"], body["by"]) == (300, "client")
        assert body["from"].endswith("Z") and body["to"].endswith("Z")
        assert [s["key"] for s in body["series"]] == ["Acme", "Zeta"]
        acme = body["series"][0]["points"]
        assert len(acme) in (6, 7)  # 30 minutes of 5, and the step now is in
        assert set(acme[0]) == {"t", "phones", "executions", "recovery", "step_ms"}
        assert sum(p["executions"]["failed"] for p in acme) == 1
        busy = [p for p in acme if p["executions"]["started"]]
        assert busy[0]["step_ms"] == {"p50": 2000.0, "p95": 2000.0}
        assert busy[0]["phones"] == {"busy": 0.0, "idle": 1.0, "offline": 0.0, "paused": 0.0}
        assert busy[0]["recovery"] == {"attempts": 0, "succeeded": 0}
        # Defaults: the last 24 h, by farm, the smallest step of at most 500 points (5m).
        status, body = await call(client, "GET", "/api/stats")
        assert status == 200 and body["by"] == "farm" and body["step_s"] == 300
        assert [s["key"] for s in body["series"]] == ["farm"]
        assert sum(p["executions"]["started"] for p in body["series"][0]["points"]) == 2
        status, body = await call(client, "GET", "/api/stats?from=7d&by=sequence")
        assert body["step_s"] == 3600 and [s["key"] for s in body["series"]] == [
            "s/login", "s/post"]
        assert {p["phones"] is None for s in body["series"] for p in s["points"]} == {True}
        to = (NOW + timedelta(hours=1)).isoformat()
        status, body = await call(client, "GET", f"/api/stats?from=2h&to={to}&by=node"
                                  .replace("+", "%2B"))
        assert status == 200 and [s["key"] for s in body["series"]] == ["rack-1", "rack-2"]

        status, body = await call(client, "GET", "/api/stats/top-failures?since=1h&limit=5")
        assert status == 200, body
        (seq,) = body["sequences"]
        assert (seq["sequence"], seq["failures"], seq["executions"]) == ("s/login", 1, 1)
        # Percent-encoded like the report's links: "steps[0]" stays one path segment.
        assert seq["last"]["screenshot"] == "/api/executions/ex-a/steps/steps%5B0%5D/screenshot"
        assert [s["screen"] for s in body["screens"]] == ["app/home"]


@pytest.mark.parametrize("query, field", [
    ("from=yesterday", "from"), ("from=2026-12-07T01:00:00", "from"), ("to=soon", "to"),
    ("from=1h&to=2h", "from"), ("step=2m", "step"), ("step=1m&from=30d", "step"),
    ("by=phone", "by"), ("from=99999999999y", "from")])
async def test_bad_parameters_are_400_naming_them(hub: FakeHub, query: str, field: str) -> None:
    async with TestClient(TestServer(make_app(hub))) as client:
        status, body = await call(client, "GET", f"/api/stats?{query}")
        assert status == 400 and body["field"] == field, body
    with pytest.raises(RequestError):
        stats_api.parse_stats_query({"by": "nobody"})


async def test_top_failure_parameters(hub: FakeHub) -> None:
    async with TestClient(TestServer(make_app(hub))) as client:
        for query, field in (("since=later", "since"), ("limit=0", "limit"),
                             ("limit=101", "limit")):
            status, body = await call(client, "GET", f"/api/stats/top-failures?{query}")
            assert status == 400 and body["field"] == field, body


async def test_a_tenant_sees_its_clients_series_only(hub: FakeHub) -> None:
    zeta = hub.clients["Zeta"]
    viewer = Principal(user_id=5, name="zeta-viewer", role="viewer",
                       client_ids=frozenset({zeta}))
    assert refusal(viewer, "GET", "/api/stats") is None
    assert refusal(viewer, "GET", "/api/stats/top-failures") is None
    async with TestClient(TestServer(app_as(hub, viewer))) as client:
        status, body = await call(client, "GET", "/api/stats?from=30m&by=client")
        assert status == 200 and [s["key"] for s in body["series"]] == ["Zeta"]
        status, body = await call(client, "GET", "/api/stats?from=30m&by=node")
        assert [s["key"] for s in body["series"]] == ["rack-2"]
        status, body = await call(client, "GET", "/api/stats?from=30m&by=sequence")
        assert [s["key"] for s in body["series"]] == ["s/post"]
        status, body = await call(client, "GET", "/api/stats?from=30m")
        points = body["series"][0]["points"]
        assert sum(p["executions"]["started"] for p in points) == 1
        assert sum(p["executions"]["failed"] for p in points) == 0
        assert max(p["phones"]["paused"] for p in points if p["phones"]) == 1.0
        assert max(p["phones"]["idle"] for p in points if p["phones"]) == 0.0
        status, body = await call(client, "GET", "/api/stats/top-failures")
        assert status == 200 and body == {"sequences": [], "screens": []}
    nobody = Principal(user_id=6, name="lost", role="client", client_ids=frozenset())
    async with TestClient(TestServer(app_as(hub, nobody))) as client:
        status, body = await call(client, "GET", "/api/stats?from=30m&by=client")
        assert status == 200 and body["series"] == []


def test_the_routes_are_documented() -> None:
    paths = openapi_document()["paths"]
    assert {p["name"] for p in paths["/api/stats"]["get"]["parameters"]} == {
        "from", "to", "step", "by"}
    assert "/api/stats/top-failures" in paths


async def test_farm_stats_prints_a_table_and_json(hub: FakeHub, capsys) -> None:
    async with TestClient(TestServer(make_app(hub))) as client:
        url = str(client.make_url("")).rstrip("/")
        code = await asyncio.to_thread(farm_main, ["--url", url, "stats", "--from", "30m",
                                                   "--step", "15m", "--by", "client"])
        out = capsys.readouterr().out.splitlines()
        assert code == 0, out
        assert out[0].startswith("from ") and "step 900 s, by client" in out[0]
        assert out[1].split()[:5] == ["TIME", "(UTC)", "CLIENT", "STARTED", "DONE"]
        acme = [line.split() for line in out[2:] if "Acme" in line]
        assert sum(int(row[3]) for row in acme) == 1 and sum(int(row[5]) for row in acme) == 1
        assert any(row[6] == "100%" for row in acme)
        code = await asyncio.to_thread(farm_main, ["--url", url, "stats", "--json"])
        body = json.loads(capsys.readouterr().out)
        assert code == 0 and body["by"] == "farm" and body["series"][0]["key"] == "farm"
        code = await asyncio.to_thread(farm_main, ["--url", url, "stats", "--failures"])
        out = capsys.readouterr().out
        assert code == 0 and "s/login" in out and "app/home" in out and "ex-a" in out
        code = await asyncio.to_thread(farm_main, ["--url", url, "stats", "--from", "soon"])
        assert code == 2 and "from" in capsys.readouterr().err
        code = await asyncio.to_thread(farm_main, ["--url", url, "stats", "--from", "30d",
                                                   "--until", "29d"])
        assert code == 0 and "no activity" in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["sqlite"])  # no database: once, not per engine
def test_any_query_is_a_query_or_a_400(engine) -> None:
    """Whatever the query string holds, parsing either gives a range the answer can be
    written for (at most MAX_POINTS points, dates that print) or a RequestError naming one
    of the parameters: never a 500."""
    from hypothesis import given, settings, strategies as st

    text = st.one_of(st.text(max_size=30), st.sampled_from(
        ["24h", "7d", "0s", "1y", "999999999y", "1m", "1d", "1h", "5m", "farm", "node",
         "2026-12-07T01:00:00Z", "2026-12-07T01:00:00", "0001-01-01T00:00:00+00:00",
         "9999-12-31T23:59:59+00:00", "2499-12-31T23:00:00Z", "1970-01-01T00:00:00Z"]))

    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(st.sampled_from(["from", "to", "step", "by"]), text))
    def check(query: dict) -> None:
        try:
            parsed = stats_api.parse_stats_query(query)
        except RequestError as exc:
            assert exc.body["field"] in ("from", "to", "step", "by"), exc.body
            return
        assert parsed.start < parsed.end
        assert (parsed.end - parsed.start) // parsed.step_s <= stats_api.MAX_POINTS
        assert stats_api.iso(parsed.end) and stats_api.iso(parsed.start)

    check()
