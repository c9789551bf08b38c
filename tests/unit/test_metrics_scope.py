"""The metrics scope of access tokens (issue 19, schema v16), on a real FarmDB (both
engines) behind a real aiohttp server with access control on: a metrics token may GET
/metrics and nothing else (not even the live socket), /metrics refuses a token without the
scope unless its user is a super user, and only a super user issues a metrics token."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.bootstrap import ensure_admin  # noqa: E402
from actors.access.service import Access  # noqa: E402
from actors.control.app import make_app  # noqa: E402
from actors.control.auth import AUTHENTICATE  # noqa: E402
from actors.control.cli import main as farm_main  # noqa: E402
from actors.control.live import _caller as live_caller  # noqa: E402
from actors.control.metrics import METRICS  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine")
PASSWORD = "correct horse battery"


@pytest.fixture
async def farm(db: FarmDB, tmp_path: Path):
    access = Access.over(db)
    await ensure_admin(access, tmp_path)
    admin = (tmp_path / "admin.token").read_text().strip()
    await db.upsert_client("Acme")
    registry = CollectorRegistry()
    Counter("farm_test_things", "a counter for the test", registry=registry).inc()
    app = make_app(FakeHub(), access=access)
    app[METRICS] = registry
    async with TestClient(TestServer(app)) as client:
        yield client, admin


async def call(client, method: str, path: str, token: str | None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.request(method, path, json=body, headers=headers)
    return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def token(client, owner: str, name: str, **extra) -> tuple[int, dict]:
    resp = await client.post("/api/tokens", json={"name": name, **extra},
                             headers={"Authorization": f"Bearer {owner}"})
    return resp.status, await resp.json()


async def test_a_metrics_token_reads_the_metrics_and_nothing_else(farm) -> None:
    client, admin = farm
    status, made = await token(client, admin, "prometheus", scope="metrics")
    assert status == 201 and made["scope"] == "metrics", made
    metrics = made["token"]
    status, body, kind = await call(client, "GET", "/metrics", metrics)
    assert status == 200 and kind.startswith("text/plain")
    assert b"farm_test_things_total 1.0" in body
    for method, path in (("GET", "/api/phones"), ("GET", "/api/me"), ("GET", "/api/tokens"),
                         ("POST", "/api/tokens"), ("GET", "/api/stream"),
                         ("GET", "/api/nodes"), ("GET", "/api/no-such-route")):
        status, body, _ = await call(client, method, path, metrics, {"name": "x"})
        assert status == 403, (method, path, status, body)
        assert b"metrics token may only GET /metrics" in body
    # The live wall's socket takes its token in its first message: refused like a bad one.
    authenticate = client.app[AUTHENTICATE]
    assert await live_caller(authenticate, metrics) is None
    assert (await live_caller(authenticate, admin)).is_super
    # Listed with its scope, never its value.
    status, listed, _ = await call(client, "GET", "/api/tokens", admin)
    assert b'"scope":"metrics"' in listed.replace(b" ", b"") and metrics.encode() not in listed


async def test_metrics_need_the_scope_unless_super(farm) -> None:
    client, admin = farm
    assert (await call(client, "GET", "/metrics", admin))[0] == 200  # super, no scope
    assert (await call(client, "GET", "/metrics", None))[0] == 401
    resp = await client.post("/api/users", json={"name": "vera", "password": PASSWORD,
                                                 "role": "viewer", "clients": ["Acme"]},
                             headers={"Authorization": f"Bearer {admin}"})
    assert resp.status == 201, await resp.text()
    resp = await client.post("/api/login", json={"user": "vera", "password": PASSWORD})
    viewer = (await resp.json())["token"]
    status, body, _ = await call(client, "GET", "/metrics", viewer)
    assert status == 403 and b"metrics scope" in body
    # A tenant may not issue itself one (the metrics show the whole farm) ...
    status, body = await token(client, viewer, "mine", scope="metrics")
    assert status == 403 and "super user" in body["error"], body
    # ... an unknown scope is a 400 naming the field, and nothing was stored.
    status, body = await token(client, admin, "odd", scope="everything")
    assert status == 400 and body["field"] == "$.scope", body
    status, listed, _ = await call(client, "GET", "/api/tokens", admin)
    assert b'"odd"' not in listed


async def test_farm_tokens_add_name_scope_metrics(farm, tmp_path: Path, monkeypatch,
                                                  capsys) -> None:
    client, admin = farm
    url = str(client.make_url("")).rstrip("/")
    monkeypatch.setenv("PHONEFARM_TOKEN", admin)
    out = tmp_path / "prometheus.token"
    code = await asyncio.to_thread(farm_main, ["--url", url, "tokens", "add", "prometheus",
                                               "--scope", "metrics", "--out", str(out)])
    assert code == 0
    metrics = out.read_text().strip()
    assert (await call(client, "GET", "/metrics", metrics))[0] == 200
    assert (await call(client, "GET", "/api/me", metrics))[0] == 403
    capsys.readouterr()
    assert await asyncio.to_thread(farm_main, ["--url", url, "tokens", "list"]) == 0
    assert "api:metrics" in capsys.readouterr().out
    # No name, or two different ones: refused before anything is made.
    assert await asyncio.to_thread(farm_main, ["--url", url, "tokens", "add"]) == 2
    assert await asyncio.to_thread(farm_main, ["--url", url, "tokens", "add", "a",
                                               "--name", "b"]) == 2
