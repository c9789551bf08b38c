"""Links in bio and conversations over HTTP (issue 21.6), with access control, on both
engines: the public redirect /l/{code} (no token; counts a click by source and 302s;
404 for an unknown or removed code), link creation with URL checks, click imports, and a
tenant seeing and changing its own clients' accounts' links and conversations only."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.bootstrap import ensure_admin  # noqa: E402
from actors.access.service import Access  # noqa: E402
from actors.control.app import make_app  # noqa: E402
from actors.control.links import CLICKS  # noqa: E402
from actors.control.openapi import openapi_document  # noqa: E402
from actors.coordinator.engagement.clicks import (MAX_SOURCES, OTHER,  # noqa: E402
                                                  PER_ADDRESS, click_address)
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
    await client.app[CLICKS].flush()
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
             (await req(client, "GET", "/api/audit?entity=link", admin))[1]["entries"]]
    assert ("link", "create") in trail and ("link", "delete") in trail


async def _link(client: TestClient, token: str, account: int) -> dict:
    status, link = await req(client, "POST", "/api/links", token,
                             {"account": account, "url": "https://shop.example/"})
    assert status == 201, link
    return link


async def _clicks(client: TestClient, token: str, link: dict) -> dict[str, int]:
    status, body = await req(client, "GET", "/api/links?removed=1", token)
    return next(x for x in body["links"] if x["link_id"] == link["link_id"])[
        "clicks_by_source"]


async def test_a_head_redirects_and_counts_nothing(farm) -> None:
    client, admin, _, accounts = farm
    link = await _link(client, admin, accounts["A1"])
    for _ in range(3):
        resp = await client.head(f"/l/{link['code']}?src=preview", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "https://shop.example/"
    assert (await client.head("/l/nosuchcode", allow_redirects=False)).status == 404
    assert client.app[CLICKS].pending() == 0
    await client.app[CLICKS].flush()
    assert await _clicks(client, admin, link) == {}
    await req(client, "GET", f"/l/{link['code']}?src=bio")
    await client.app[CLICKS].flush()
    assert await _clicks(client, admin, link) == {"bio": 1}


async def test_one_address_counts_a_few_clicks_a_minute_on_a_link(farm) -> None:
    """TestClient's peer is loopback, so X-Forwarded-For (a proxy's, last entry) names the
    caller; an IPv6 address counts by its /64."""
    client, admin, _, accounts = farm
    link, other = (await _link(client, admin, accounts["A1"]),
                   await _link(client, admin, accounts["A1"]))
    for i in range(PER_ADDRESS + 5):
        status, resp = await req(client, "GET", f"/l/{link['code']}",
                                 **{"X-Forwarded-For": f"10.9.9.{i}, 203.0.113.7"})
        assert status == 302  # every one redirected, counted or not
    for i in range(PER_ADDRESS + 5):  # one host's IPv6 addresses: one /64
        await req(client, "GET", f"/l/{link['code']}?src=v6",
                  **{"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"})
    await req(client, "GET", f"/l/{link['code']}?src=else",
              **{"X-Forwarded-For": "203.0.113.8"})
    await req(client, "GET", f"/l/{other['code']}",
              **{"X-Forwarded-For": "203.0.113.7"})  # another link: its own limit
    await client.app[CLICKS].flush()
    assert await _clicks(client, admin, link) == {"direct": PER_ADDRESS, "v6": PER_ADDRESS,
                                                  "else": 1}
    assert await _clicks(client, admin, other) == {"direct": 1}


def test_the_click_address_trusts_a_forwarded_for_from_loopback_only() -> None:
    assert click_address("127.0.0.1", "1.2.3.4, 5.6.7.8") == "5.6.7.8"
    assert click_address("::1", "2001:db8::1") == "2001:db8::/64"
    assert click_address("198.51.100.4", "5.6.7.8") == "198.51.100.4"   # not a proxy here
    assert click_address("127.0.0.1", "garbage") == "127.0.0.1"
    assert click_address("::ffff:198.51.100.4", None) == "198.51.100.4"
    assert click_address(None, None) == "unknown"


async def test_sources_past_the_cap_count_as_other(farm) -> None:
    client, admin, _, accounts = farm
    link = await _link(client, admin, accounts["A1"])
    for i in range(MAX_SOURCES + 5):
        await req(client, "GET", f"/l/{link['code']}?src=s{i:02d}",
                  **{"X-Forwarded-For": f"198.51.100.{i}"})
    await client.app[CLICKS].flush()
    counted = await _clicks(client, admin, link)
    assert len(counted) == MAX_SOURCES + 1 and counted[OTHER] == 5
    assert sum(counted.values()) == MAX_SOURCES + 5
    # The stored rows count: after the flush a new source still finds the day full.
    await req(client, "GET", f"/l/{link['code']}?src=late",
              **{"X-Forwarded-For": "198.51.100.200"})
    await client.app[CLICKS].flush()
    counted = await _clicks(client, admin, link)
    assert "late" not in counted and counted[OTHER] == 6


async def test_a_burst_of_clicks_is_one_write_made_after_the_redirects(farm, db,
                                                                       monkeypatch) -> None:
    client, admin, _, accounts = farm
    link = await _link(client, admin, accounts["A1"])
    # The periodic flush (every FLUSH_S) stopped: on a loaded machine the 30 requests can
    # take longer than that, and its write is not the one this test is about.
    await client.app[CLICKS].close()
    writes = []
    for name in ("_write", "_write_many", "_atomic"):
        real = getattr(db, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            writes.append(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(db, name, spy)
    for i in range(30):
        status, _ = await req(client, "GET", f"/l/{link['code']}?src=s{i % 3}",
                              **{"X-Forwarded-For": f"192.0.2.{i}"})
        assert status == 302
    assert writes == [] and client.app[CLICKS].pending() == 30
    await client.app[CLICKS].flush()
    assert writes == ["_atomic"]
    assert await _clicks(client, admin, link) == {"s0": 10, "s1": 10, "s2": 10}


async def test_clicks_are_written_by_the_periodic_flush_and_on_close(db, farm) -> None:
    client, admin, _, accounts = farm
    link = await _link(client, admin, accounts["A1"])
    await req(client, "GET", f"/l/{link['code']}?src=timer")
    deadline = asyncio.get_running_loop().time() + 60
    while await _clicks(client, admin, link) != {"timer": 1}:  # FLUSH_S, with no help
        assert asyncio.get_running_loop().time() < deadline, "never flushed"
        await asyncio.sleep(0.1)
    # A server closed with clicks not yet written writes them as it closes.
    hub = FakeHub()
    hub.db = db
    server = TestServer(make_app(hub))
    async with TestClient(server) as other:
        await req(other, "GET", f"/l/{link['code']}?src=closing")
        assert other.app[CLICKS].pending() == 1
    assert await _clicks(client, admin, link) == {"timer": 1, "closing": 1}


async def test_a_tenant_reads_the_audit_of_its_own_links(farm) -> None:
    client, admin, tokens, accounts = farm
    acme = tokens["acme"]
    mine = await _link(client, acme, accounts["A1"])
    theirs = await _link(client, admin, accounts["B1"])
    for link, token in ((mine, acme), (theirs, admin)):
        status, _ = await req(client, "POST", "/api/link-clicks", token, {
            "code": link["code"], "date": TODAY.isoformat(), "count": 2})
        assert status == 200
    assert (await req(client, "DELETE", f"/api/links/{mine['link_id']}", acme))[0] == 200
    for entity in ("link", "link_clicks"):
        status, body = await req(client, "GET", f"/api/audit?entity={entity}", acme)
        assert status == 200, body
        assert {e["entity_id"] for e in body["entries"]} == {str(mine["link_id"])}, entity
        assert {e["client_id"] for e in body["entries"]} == {
            next(iter(body["entries"]))["client_id"]} != {None}
        status, body = await req(client, "GET", f"/api/audit?entity={entity}", admin)
        assert {e["entity_id"] for e in body["entries"]} == {
            str(mine["link_id"]), str(theirs["link_id"])}
    status, body = await req(client, "GET", "/api/audit?entity=link", acme)
    assert sorted(e["action"] for e in body["entries"]) == ["create", "delete"]


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
    # From the clock now, not the module's import: a run that crosses midnight (UTC) would
    # otherwise send a day that has begun.
    tomorrow = (datetime.now(timezone.utc).date() + timedelta(days=1)).isoformat()
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
