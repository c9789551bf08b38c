"""CRUD routes of the control endpoint (actors.control.registry) over a fake hub backed by a
real FarmDB on a temporary file: groups with their rules, clients, profiles, the phone
registry and accounts; bad bodies are 400 naming the field."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.control.app import make_app  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from tests.api_call import call  # noqa: E402

S1, S2, S3 = "127.0.0.1:40123", "127.0.0.1:40124", "R58M123ABC"


@pytest.fixture
def hub(db: FarmDB) -> FakeHub:
    hub = FakeHub()
    hub.db = db
    return hub


@pytest.fixture
async def client(hub: FakeHub):
    async with TestClient(TestServer(make_app(hub))) as c:
        yield c


# --- groups -----------------------------------------------------------------------------


async def test_groups_list_defaults(client: TestClient) -> None:
    status, body = await call(client, "GET", "/api/groups")
    assert status == 200
    names = {g["name"]: g for g in body["groups"]}
    assert set(names) == {"active", "warming"}
    assert names["active"]["type"] == "system" and names["active"]["member_count"] == 0
    assert body["rules"] == [{"kind": "exclusive", "groups": ["active", "warming"],
                              "name": "account_status", "client": None}]


async def test_group_create_members_and_resolved_count(client: TestClient, db: FarmDB) -> None:
    status, g = await call(client, "POST", "/api/groups", {"name": "rack_a", "kind": "phone"})
    assert status == 201 and g["type"] == "custom" and g["members"] == []
    status, g = await call(client, "POST", "/api/groups/rack_a/members", {"member": S1})
    assert status == 200 and g["members"] == [S1] and g["member_count"] == 1, g
    await call(client, "POST", "/api/groups/rack_a/members", {"member": S2})
    status, child = await call(client, "POST", "/api/groups",
                               {"name": "front", "kind": "phone", "parent": "rack_a"})
    assert status == 201 and child["parent"] == "rack_a"
    # hierarchy: a child's member must be in the parent
    status, err = await call(client, "POST", "/api/groups/front/members", {"member": S3})
    assert status == 400 and "not in parent group 'rack_a'" in err["error"]
    # smart group resolves over the phones
    status, smart = await call(client, "POST", "/api/groups",
                               {"name": "rack1_phones", "kind": "phone",
                                "filter": "filter.phones where node = rack1"})
    assert status == 201 and smart["type"] == "smart"
    status, body = await call(client, "GET", "/api/groups")
    by_name = {g["name"]: g for g in body["groups"]}
    assert by_name["rack1_phones"]["member_count"] == 2 and by_name["rack1_phones"]["members"] == []
    # persisted in the farm DB
    book = await db.group_book()
    assert book.groups["rack_a"].members == [S1, S2] and book.groups["front"].parent == "rack_a"
    # remove, delete
    status, g = await call(client, "DELETE", f"/api/groups/rack_a/members/{quote(S2, safe='')}")
    assert status == 200 and g["members"] == [S1]
    status, err = await call(client, "DELETE", "/api/groups/rack_a")
    assert status == 400 and "child groups: front" in err["error"]
    assert (await call(client, "DELETE", "/api/groups/front"))[0] == 200
    assert (await call(client, "DELETE", "/api/groups/rack_a"))[0] == 200
    assert "rack_a" not in (await db.group_book()).groups
    trail = await db.audit_trail("group", "rack_a")
    assert [(e["action"], e["reason"]) for e in reversed(trail)] == [
        ("create", None), ("update", "member added"), ("update", "member added"),
        ("update", "member removed"), ("delete", None)]
    assert trail[1]["before"] == {"members": [S1, S2]} and trail[1]["after"] == {"members": [S1]}


async def test_group_rules_are_checked(client: TestClient) -> None:
    for name in ("a", "b"):
        await call(client, "POST", "/api/groups", {"name": name, "kind": "phone"})
    await call(client, "POST", "/api/groups/a/members", {"member": S1})
    status, rule = await call(client, "POST", "/api/groups/rules",
                              {"kind": "excludes", "groups": ["a", "b"]})
    assert status == 201 and rule == {"kind": "excludes", "groups": ["a", "b"], "name": None,
                                      "client": None}
    status, err = await call(client, "POST", "/api/groups/b/members", {"member": S1})
    assert status == 400 and "rule excludes('a', 'b')" in err["error"]
    # an exclusive set that the current members break is refused
    await call(client, "POST", "/api/groups", {"name": "c", "kind": "phone"})
    await call(client, "POST", "/api/groups/c/members", {"member": S1})
    status, err = await call(client, "POST", "/api/groups/rules",
                             {"kind": "exclusive", "groups": ["a", "c"], "name": "one_rack"})
    assert status == 400 and "already in 'a'" in err["error"]
    # a system group cannot be deleted; the rule-named group neither
    assert (await call(client, "DELETE", "/api/groups/active"))[0] == 400
    status, err = await call(client, "DELETE", "/api/groups/a")
    assert status == 400 and "remove the rule first" in err["error"]


@pytest.mark.parametrize("body, field", [
    ({"name": "bad-name", "kind": "phone"}, "$.name"),
    ({"name": "x", "kind": "tablet"}, "$.kind"),
    ({"name": "x", "kind": "phone", "colour": "red"}, "$"),
    ({"kind": "phone"}, "$"),
])
async def test_group_create_bad_body(client: TestClient, body: dict, field: str) -> None:
    status, err = await call(client, "POST", "/api/groups", body)
    assert status == 400 and err["field"] == field, err


async def test_group_errors(client: TestClient) -> None:
    status, err = await call(client, "POST", "/api/groups",
                             {"name": "s", "kind": "account", "filter": "filter.phones where node = x"})
    assert status == 400 and "filter.accounts" in err["error"]
    status, err = await call(client, "POST", "/api/groups/nope/members", {"member": S1})
    assert status == 404 and "nope" in err["error"]
    status, err = await call(client, "DELETE", "/api/groups/nope")
    assert status == 404
    status, err = await call(client, "POST", "/api/groups/rules",
                             {"kind": "requires", "groups": ["active", "warming", "x"]})
    assert status == 400 and err["field"] == "$.groups"
    status, err = await call(client, "POST", "/api/groups/rules",
                             {"kind": "exclusive", "groups": ["active", "warming"]})
    assert status == 400 and err["field"] == "$.name"
    status, err = await call(client, "POST", "/api/groups/rules",
                             {"kind": "requires", "groups": ["active", "nope"]})
    assert status == 404


async def test_no_farm_db_is_409() -> None:
    async with TestClient(TestServer(make_app(FakeHub()))) as c:
        status, err = await call(c, "GET", "/api/groups")
        assert status == 409 and "no farm database" in err["error"]


# --- clients, profiles, phones, accounts --------------------------------------------------


async def test_clients_crud(client: TestClient, db: FarmDB) -> None:
    status, c = await call(client, "POST", "/api/clients",
                           {"name": "acme", "contact_email": "ops@acme.test"})
    assert status == 201 and c["status"] == "active" and c["contact_email"] == "ops@acme.test"
    status, c = await call(client, "POST", "/api/clients", {"name": "acme", "status": "paused"})
    assert status == 200 and c["status"] == "paused"
    status, err = await call(client, "POST", "/api/clients", {"name": "x", "contact_email": "nope"})
    assert status == 400 and err["field"] == "$.contact_email"
    status, c = await call(client, "DELETE", "/api/clients/acme")
    assert status == 200 and c["status"] == "retired"
    status, body = await call(client, "GET", "/api/clients")
    assert [(c["name"], c["status"]) for c in body["clients"]] == [("acme", "retired")]
    assert (await call(client, "DELETE", "/api/clients/nobody"))[0] == 404
    trail = await db.audit_trail("client")
    assert [(e["action"], e["reason"]) for e in reversed(trail)] == [
        ("create", None), ("update", None), ("update", "soft delete (status retired)")]
    assert trail[0]["before"]["status"] == "paused" and trail[0]["after"]["status"] == "retired"


async def test_profiles_phones_accounts(client: TestClient) -> None:
    await call(client, "POST", "/api/clients", {"name": "acme"})
    status, p = await call(client, "POST", "/api/profiles",
                           {"client": "acme", "first_name": "Ann", "birth_month": 4})
    assert status == 201 and p["client"] == "acme" and p["first_name"] == "Ann"
    pid = p["profile_id"]
    status, p = await call(client, "POST", "/api/profiles", {"profile_id": pid, "last_name": "Lee"})
    assert status == 200 and (p["first_name"], p["last_name"]) == ("Ann", "Lee")
    status, err = await call(client, "POST", "/api/profiles", {"birth_month": 13})
    assert status == 400 and err["field"] == "$.birth_month"
    assert (await call(client, "POST", "/api/profiles", {"profile_id": 999}))[0] == 404
    status, err = await call(client, "POST", "/api/profiles", {"client": "nobody"})
    assert status == 400 and err["field"] == "$.client"
    assert len((await call(client, "GET", "/api/profiles"))[1]["profiles"]) == 1

    status, ph = await call(client, "POST", "/api/phones/registry",
                            {"serial": S1, "client": "acme", "model": "Pixel 7", "agent": "rack1"})
    assert status == 201 and ph["client"] == "acme" and ph["status"] == "active"
    assert ph["agent"] == "rack1"
    status, err = await call(client, "POST", "/api/phones/registry", {"serial": S2, "status": "Bad!"})
    assert status == 400 and err["field"] == "$.status"

    status, err = await call(client, "POST", "/api/accounts",
                             {"serial": S2, "platform": "tiktok", "account_number": "1"})
    assert status == 400 and err["field"] == "$.serial"
    status, a = await call(client, "POST", "/api/accounts",
                           {"serial": S1, "platform": "tiktok", "account_number": "1",
                            "username": "ann", "profile_id": pid})
    assert status == 201 and a["status"] == "warming" and a["profile"]["first_name"] == "Ann"
    status, a = await call(client, "POST", "/api/accounts",
                           {"serial": S1, "platform": "tiktok", "account_number": "1",
                            "status": "active"})
    assert status == 200 and a["status"] == "active" and a["username"] == "ann"
    status, err = await call(client, "POST", "/api/accounts",
                             {"serial": S1, "platform": "tiktok"})
    assert status == 400 and "account_number" in err["error"]
    status, body = await call(client, "GET", f"/api/accounts?serial={quote(S1, safe='')}")
    assert [x["account_id"] for x in body["accounts"]] == [a["account_id"]]

    status, gone = await call(client, "DELETE", f"/api/accounts/{a['account_id']}")
    assert status == 200 and gone["status"] == "retired"
    assert (await call(client, "DELETE", "/api/accounts/x"))[0] == 400
    assert (await call(client, "DELETE", "/api/accounts/999"))[0] == 404
    status, ph = await call(client, "DELETE", f"/api/phones/registry/{quote(S1, safe='')}")
    assert status == 200 and ph["status"] == "retired" and ph["model"] == "Pixel 7"
    status, body = await call(client, "GET", "/api/phones/registry")
    assert [(r["serial"], r["status"]) for r in body["phones"]] == [(S1, "retired")]
    # the live directory is unchanged
    assert len((await call(client, "GET", "/api/phones"))[1]["phones"]) == 3


# --- farm groups (CLI) ----------------------------------------------------------------------


async def test_farm_groups_cli(hub: FakeHub, db: FarmDB, capsys: pytest.CaptureFixture) -> None:
    import asyncio

    from actors.control.cli import main

    server = TestServer(make_app(hub))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")

    async def farm(*argv: str) -> int:
        return await asyncio.to_thread(main, ["--url", url, *argv])

    try:
        assert await farm("groups", "add", "rack_a", "phone") == 0
        assert "rack_a" in capsys.readouterr().out
        assert await farm("groups", "member", "add", "rack_a", S1) == 0
        assert await farm("groups", "member", "add", "rack_a", S3) == 0
        assert await farm("groups", "add", "front", "phone", "--parent", "rack_a") == 0
        assert await farm("groups", "add", "r1", "phone", "--smart",
                          "filter.phones where node = rack1") == 0
        capsys.readouterr()
        assert await farm("groups", "member", "add", "front", S2) == 2
        assert "not in parent group 'rack_a'" in capsys.readouterr().err
        assert await farm("groups", "member", "remove", "rack_a", S3) == 0
        capsys.readouterr()
        assert await farm("groups") == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["NAME", "CLIENT", "KIND", "TYPE", "PARENT", "COUNT",
                                    "MEMBERS/FILTER"]
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        # A super user's groups are the shared book's: no client.
        assert rows["rack_a"][:7] == ["rack_a", "-", "phone", "custom", "-", "1", S1]
        assert rows["front"][:6] == ["front", "-", "phone", "custom", "rack_a", "0"]
        assert rows["r1"][:6] == ["r1", "-", "phone", "smart", "-", "2"]
        assert rows["active"][:4] == ["active", "-", "account", "system"]
        assert await farm("groups", "list") == 0
        assert (await db.group_book()).groups["rack_a"].members == [S1]
    finally:
        await server.close()
