"""The web console's routes over a fake hub and a real FarmDB: the console page and its
modules, custom phone tags, the variable browser and preview/resolve (counters move only
when resolving for use); every route documented in the OpenAPI document."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.control.app import make_app  # noqa: E402
from actors.store.farm_db import FarmDB, seed_demo  # noqa: E402
from actors.coordinator.phone_tags import PhoneTags  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

S1 = "127.0.0.1:40123"


@pytest.fixture
async def client(tmp_path: Path):
    db = await FarmDB.open(tmp_path / "farm.db")
    await seed_demo(db, [S1])
    hub = FakeHub()
    hub.db = db
    async with TestClient(TestServer(make_app(hub, token="t0k"))) as c:
        yield c
    await db.close()


AUTH = {"Authorization": "Bearer t0k"}


async def test_console_page_and_modules_need_no_token(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    assert '<script type="module"' in await page.text()
    module = await client.get("/static/main.js")
    assert module.status == 200 and "javascript" in module.headers["Content-Type"]
    assert (await client.get("/api/phones")).status == 401


async def test_tags_add_remove_shown_in_phones(client: TestClient) -> None:
    resp = await client.post(f"/api/phones/{S1}/tags", json={"tag": "batch-a"}, headers=AUTH)
    assert resp.status == 200 and "batch-a" in (await resp.json())["tags"]
    phones = (await (await client.get("/api/phones", headers=AUTH)).json())["phones"]
    assert "batch-a" in next(p for p in phones if p["serial"] == S1)["tags"]
    bad = await client.post(f"/api/phones/{S1}/tags", json={"tag": "no spaces"}, headers=AUTH)
    assert bad.status == 400 and (await bad.json())["field"] == "$.tag"
    gone = await client.post("/api/phones/nope/tags", json={"tag": "x"}, headers=AUTH)
    assert gone.status == 404
    resp = await client.delete(f"/api/phones/{S1}/tags/batch-a", headers=AUTH)
    assert "batch-a" not in (await resp.json())["tags"]


def test_tag_store_survives_a_restart(tmp_path: Path) -> None:
    PhoneTags(tmp_path / "t.json").add("s1", "red")
    assert PhoneTags(tmp_path / "t.json").of("s1") == ["red"]


async def test_variable_browser_lists_a_phones_variables(client: TestClient) -> None:
    body = await (await client.get(f"/api/variables?serial={S1}", headers=AUTH)).json()
    cats = {c["name"]: c["variables"] for c in body["categories"]}
    assert "${content.hashtags.demo}" in cats["content"]
    assert "${account.clipshare.account1.username}" in cats["account"]
    assert "${profile.first_name}" in cats["profile"]


async def test_preview_has_no_side_effects_and_resolve_does(client: TestClient) -> None:
    text = {"text": "{Hi|Hello} ${profile.first_name} #${dynamic.counter(c,5,1)}",
            "serials": [S1]}
    for _ in range(2):
        out = await (await client.post("/api/variables/preview", json=text,
                                        headers=AUTH)).json()
        assert out["texts"][S1] in ("Hi Ava #5", "Hello Ava #5")
    used = [(await (await client.post("/api/variables/resolve", json=text,
                                      headers=AUTH)).json())["texts"][S1] for _ in range(2)]
    assert [u.rsplit("#", 1)[1] for u in used] == ["5", "6"]


async def test_resolve_asks_the_farms_model_and_preview_does_not(tmp_path: Path) -> None:
    pytest.importorskip("actors.coordinator.ai.variables")  # the AI issue's provider of ${ai.*}
    from actors.coordinator.ai.client import AIClient, AIConfig
    from virtual.model_server import ScriptedModel, reply_text

    model = ScriptedModel()
    await model.start()
    db = await FarmDB.open(tmp_path / "farm.db")
    await seed_demo(db, [S1])
    hub = FakeHub()
    hub.db = db
    hub.ai = AIClient(AIConfig(base_url=model.base_url, model="m1", timeout_s=5))
    model.script = [reply_text("Sunny and bright")]
    text = {"text": "${ai.caption(a sunny day)}", "serials": [S1]}
    try:
        async with TestClient(TestServer(make_app(hub))) as c:
            preview = await (await c.post("/api/variables/preview", json=text)).json()
            assert preview["texts"][S1] == "[AI caption: a sunny day]" and not model.requests
            used = await (await c.post("/api/variables/resolve", json=text)).json()
            assert used["texts"][S1] == "Sunny and bright" and len(model.requests) == 1
    finally:
        await hub.ai.close()
        await db.close()
        await model.stop()


async def test_bad_text_names_the_offset(client: TestClient) -> None:
    resp = await client.post("/api/variables/preview", headers=AUTH,
                             json={"text": "hi ${nope.x}", "serials": [S1]})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "$.text" and body["offset"] == 3


async def test_console_routes_documented(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    for path in ("/api/variables", "/api/variables/preview", "/api/variables/resolve",
                 "/api/phones/{serial}/tags", "/api/phones/{serial}/tags/{tag}"):
        assert path in doc["paths"], path
