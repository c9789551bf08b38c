"""Links in bio and conversations over HTTP (issue 21.6), with access control, on both
engines: the public redirect /l/{code} (no token; counts a click by source and 302s;
404 for an unknown or removed code), link creation with URL checks, click imports, and a
tenant seeing and changing its own clients' accounts' links and conversations only."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.bootstrap import ensure_admin  # noqa: E402
from actors.access.service import Access  # noqa: E402
from actors.control.app import make_app  # noqa: E402
from actors.control.openapi import openapi_document  # noqa: E402
from actors.coordinator.engagement.conversations import ConversationStore  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine")

PASSWORD = "correct horse battery"
TODAY = datetime.now(timezone.utc).date()


@pytest.fixture
async def farm(db: FarmDB, tmp_path: Path):
    """(client, admin token, tokens of Acme's client user and viewer, account ids): phones
    A1 (Acme) and B1 (Zeta), each with account clipshare.account1."""
    hub = FakeHub()
    hub.db = db
    access = Access.over(db)
    await ensure_admin(access, tmp_path)
    admin = (tmp_path / "admin.token").read_text().strip()
    accounts = {}
    for name, serial in (("Acme", "A1"), ("Zeta", "B1")):
        client = await db.upsert_client(name)
        await db.upsert_phone(serial, client=client)
        accounts[serial] = await db.upsert_account(serial, "clipshare", "account1",
                                                   username=f"{serial}-user")
    async with TestClient(TestServer(make_app(hub, access=access))) as client:
        tokens = {}
        for name, role in (("acme", "client"), ("acme-viewer", "viewer")):
            status, body = await req(client, "POST", "/api/users", admin, {
                "name": name, "password": PASSWORD, "role": role, "clients": ["Acme"]})
            assert status == 201, body
            status, body = await req(client, "POST", "/api/login", None,
                                     {"user": name, "password": PASSWORD})
            tokens[name] = body["token"]
        yield client, admin, tokens, accounts


async def req(client: TestClient, method: str, path: str, token: str | None = None,
              body=None, **headers: str):
    if token:
        headers["Authorization"] = f"Bearer {token}"
    resp = await client.request(method, path, json=body, headers=headers,
                                allow_redirects=False)
    if resp.content_type == "application/json":
        return resp.status, await resp.json()
    return resp.status, resp


async def test_a_link_counts_its_clicks_and_redirects_without_a_token(farm) -> None:
    client, admin, _, accounts = farm
    status, link = await req(client, "POST", "/api/links", admin, {
        "account": accounts["A1"], "url": "https://shop.example/p?id=1", "title": "Shop"})
    assert status == 201, link
    assert link["account"] == "clipshare.account1" and link["serial"] == "A1"
    code = link["code"]
    # Public: no token at all.
    status, resp = await req(client, "GET", f"/l/{code}")
    assert status == 302 and resp.headers["Location"] == "https://shop.example/p?id=1"
    assert resp.headers["Cache-Control"] == "no-store"
    await req(client, "GET", f"/l/{code}?src=Instagram")
    await req(client, "GET", f"/l/{code}", Referer="https://t.co/abc")
    await req(client, "GET", f"/l/{code}", Referer="https://t.co/def")
    status, body = await req(client, "GET", "/api/links", admin)
    (listed,) = body["links"]
    assert listed["clicks"] == 4
    assert listed["clicks_by_source"] == {"direct": 1, "instagram": 1, "t.co": 2}
    # Imported counts add to a day and source.
    status, body = await req(client, "POST", "/api/link-clicks", admin, {
        "code": code, "date": (TODAY - timedelta(days=1)).isoformat(), "count": 25,
        "source": "newsletter"})
    assert status == 200 and body["clicks"] == 29, body
    # Unknown codes: a JSON 404, nothing counted.
    for path in ("/l/nosuchcode", "/l/x", "/l/a.b%20c"):
        status, body = await req(client, "GET", path)
        assert status == 404 and body["error"] == "no such link", path
    # Removed: the code leads nowhere, the clicks stay.
    status, body = await req(client, "DELETE", f"/api/links/{link['link_id']}", admin)
    assert status == 200 and body["removed"]["clicks"] == 29 and body["removed"]["removed_at"]
    assert (await req(client, "GET", f"/l/{code}"))[0] == 404
    assert (await req(client, "DELETE", f"/api/links/{link['link_id']}", admin))[0] == 404
    assert (await req(client, "GET", "/api/links", admin))[1]["links"] == []
    status, body = await req(client, "GET", "/api/links?removed=1", admin)
    assert [x["link_id"] for x in body["links"]] == [link["link_id"]]
    trail = [(e["entity_type"], e["action"]) for e in
             (await req(client, "GET", "/api/audit?entity_type=link", admin))[1]["entries"]]
    assert ("link", "create") in trail and ("link", "delete") in trail


async def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(farm) -> None:
    client, admin, _, accounts = farm
    a1 = accounts["A1"]
    cases = [
        ({"account": a1, "url": "javascript:alert(1)"}, "$.url"),
        ({"account": a1, "url": "ftp://example.com/x"}, "$.url"),
        ({"account": a1, "url": "https://user:pw@example.com/"}, "$.url"),
        ({"account": a1, "url": "https:///nohost"}, "$.url"),
        ({"account": a1}, "$"),
        ({"account": 987654, "url": "https://example.com/"}, "$.account"),
        ({"account": "clipshare.account1", "url": "https://example.com/"}, "$.account"),
        ({"account": "²", "url": "https://example.com/"}, "$.account"),
        ({"account": "99999999999999999999999", "url": "https://example.com/"}, "$.account"),
        ({"account": a1, "url": "https://example.com/", "extra": 1}, "$"),
    ]
    for body, field in cases:
        status, answer = await req(client, "POST", "/api/links", admin, body)
        assert status == 400, (body, answer)
        assert answer["field"].startswith(field), (body, answer)
    status, answer = await req(client, "POST", "/api/links", admin, {
        "account": "clipshare.account1", "url": "https://example.com/"})
    assert "names 2 accounts" in answer["error"]
    assert (await req(client, "GET", "/api/links", admin))[1]["links"] == []
    status, link = await req(client, "POST", "/api/links", admin,
                             {"account": a1, "url": "http://example.com/"})
    tomorrow = (TODAY + timedelta(days=1)).isoformat()
    for body, field in [
            ({"code": "nosuchcode", "date": TODAY.isoformat(), "count": 1}, "$.code"),
            ({"code": link["code"], "date": tomorrow, "count": 1}, "$.date"),
            ({"code": link["code"], "date": "07/12/2026", "count": 1}, "$.date"),
            ({"code": link["code"], "date": TODAY.isoformat(), "count": 0}, "$.count"),
            ({"code": link["code"], "date": TODAY.isoformat(), "count": 1,
              "source": "Not OK"}, "$.source")]:
        status, answer = await req(client, "POST", "/api/link-clicks", admin, body)
        assert status == 400 and answer["field"] == field, (body, answer)
    assert (await req(client, "GET", "/api/links", admin))[1]["links"][0]["clicks"] == 0
    for path, field in (("/api/links?account=nope", "account"),
                        ("/api/links?removed=yes", "removed"),
                        ("/api/conversations?limit=0", "limit"),
                        ("/api/conversations/abc/messages", "id")):
        status, answer = await req(client, "GET", path, admin)
        assert status == 400 and answer["field"] == field, (path, answer)


async def test_a_tenant_sees_and_changes_its_own_accounts_only(farm, db) -> None:
    client, admin, tokens, accounts = farm
    acme, viewer = tokens["acme"], tokens["acme-viewer"]
    _, theirs = await req(client, "POST", "/api/links", admin,
                          {"account": accounts["B1"], "url": "https://zeta.example/"})
    status, mine = await req(client, "POST", "/api/links", acme,
                             {"account": "clipshare.account1", "url": "https://acme.example/"})
    assert status == 201 and mine["account_id"] == accounts["A1"], mine
    # Another client's account, link and code answer like missing ones.
    status, answer = await req(client, "POST", "/api/links", acme,
                               {"account": accounts["B1"], "url": "https://acme.example/"})
    assert status == 400 and answer["error"].startswith("$.account: no such account")
    assert [x["link_id"] for x in (await req(client, "GET", "/api/links", acme))[1]["links"]] \
        == [mine["link_id"]]
    assert (await req(client, "GET", f"/api/links?account={accounts['B1']}", acme))[0] == 400
    status, answer = await req(client, "DELETE", f"/api/links/{theirs['link_id']}", acme)
    assert status == 404 and answer["error"] == f"no such link: {theirs['link_id']}"
    status, answer = await req(client, "POST", "/api/link-clicks", acme, {
        "code": theirs["code"], "date": TODAY.isoformat(), "count": 5})
    assert status == 400 and answer["field"] == "$.code"
    # A viewer reads, never changes.
    assert (await req(client, "GET", "/api/links", viewer))[0] == 200
    assert (await req(client, "POST", "/api/links", viewer, {
        "account": accounts["A1"], "url": "https://acme.example/"}))[0] == 403
    assert (await req(client, "DELETE", f"/api/links/{mine['link_id']}", viewer))[0] == 403
    # Conversations likewise.
    store = ConversationStore(db)
    ca, _ = await store.add_read(accounts["A1"], "clipshare", "Dana", [("them", "hi")])
    cb, _ = await store.add_read(accounts["B1"], "clipshare", "Eli", [("them", "secret")])
    status, body = await req(client, "GET", "/api/conversations", viewer)
    assert [c["conversation_id"] for c in body["conversations"]] == [ca]
    status, body = await req(client, "GET", "/api/conversations?account=clipshare.account1",
                             acme)
    assert [c["partner"] for c in body["conversations"]] == ["Dana"]
    status, body = await req(client, "GET", f"/api/conversations/{ca}/messages", acme)
    assert status == 200 and body["messages"][0]["text"] == "hi"
    status, body = await req(client, "GET", f"/api/conversations/{cb}/messages", acme)
    assert status == 404 and body["error"] == f"no such conversation: {cb}"
    status, body = await req(client, "GET", "/api/conversations", admin)
    assert {c["partner"] for c in body["conversations"]} == {"Dana", "Eli"}
    # Nothing of the public route needs the policy: it is outside /api.
    assert (await req(client, "GET", f"/l/{theirs['code']}"))[0] == 302


def test_the_routes_are_documented() -> None:
    paths = openapi_document()["paths"]
    assert {"/api/links", "/api/links/{id}", "/api/link-clicks", "/api/conversations",
            "/api/conversations/{id}/messages", "/l/{code}"} <= set(paths)
    assert paths["/l/{code}"]["get"]["security"] == []


async def test_farm_links_and_conversations(db, monkeypatch, tmp_path, capsys) -> None:
    """The CLI against an open endpoint (every caller a super user) over ``db``."""
    import asyncio

    from actors.control.cli import main as farm_main

    monkeypatch.delenv("PHONEFARM_URL", raising=False)
    monkeypatch.delenv("PHONEFARM_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PHONEFARM_DATA", str(tmp_path / "farm-data"))
    client = await db.upsert_client("Acme")
    await db.upsert_phone("A1", client=client)
    account = await db.upsert_account("A1", "clipshare", "account1")
    await ConversationStore(db).add_read(account, "clipshare", "Dana",
                                         [("them", "hi there"), ("us", "hello")])
    hub = FakeHub()
    hub.db = db
    server = TestServer(make_app(hub))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")

    async def farm(*argv: str) -> int:
        return await asyncio.to_thread(farm_main, ["--url", url, *argv])

    try:
        assert await farm("links", "add", "clipshare.account1", "https://acme.example/",
                          "--title", "Shop") == 0
        out = capsys.readouterr().out
        assert "link 1 of clipshare.account1 (A1): code" in out and f"{url}/l/" in out
        code = out.split("code ")[1].split(",")[0]
        assert await farm("links", "clicks", code, "--date", TODAY.isoformat(),
                          "--count", "3") == 0
        assert "3 clicks in all" in capsys.readouterr().out
        assert await farm("links") == 0
        listed = capsys.readouterr().out
        assert code in listed and "https://acme.example/" in listed and " 3 " in listed
        assert await farm("links", "add", "clipshare.account1", "ftp://x") == 2
        assert "$.url" in capsys.readouterr().err
        assert await farm("links", "remove", "1") == 0
        assert await farm("links") == 0 and capsys.readouterr().out == "link 1 removed\n"
        assert await farm("conversations") == 0
        listed = capsys.readouterr().out
        assert "Dana" in listed and "hello" in listed
        assert await farm("conversations", "show", "1") == 0
        assert capsys.readouterr().out.splitlines()[1:] == ["  < hi there", "  > hello"]
    finally:
        await server.close()
