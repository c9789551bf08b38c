"""Secrets and the audit trail over the control endpoint (issue 17.5), on a real FarmDB in a
temp dir behind a real aiohttp server: passwords are write-only (never in an answer: accounts,
profiles, the phone registry, the audit trail, a variable preview; /resolve refuses them
before anything moves), every change is audited under the caller's own name, and
``GET /api/audit`` / ``farm audit`` filter by entity, time and the caller's clients."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.principal import Principal  # noqa: E402
from actors.control import audit, registry, variables, workflows  # noqa: E402
from actors.control.app import make_app  # noqa: E402
from actors.control.cli import main as farm_main  # noqa: E402
from actors.control.openapi import openapi_document  # noqa: E402
from actors.store.farm_db import SECRET_MASK, FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from tests.api_call import app_as as app_with, call  # noqa: E402

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

SERIAL = "127.0.0.1:40123"  # a phone of the fake hub
SECRETS = ("acct-pass-9911", "profile-pass-2277")


@pytest.fixture
def hub(db: FarmDB) -> FakeHub:
    hub = FakeHub()
    hub.db = db
    return hub


def app_as(hub: FakeHub, principal: Principal) -> web.Application:
    """The control routes of this issue with ``principal`` as the caller of every request
    (what the auth middleware establishes from a token)."""
    return app_with(hub, principal, (registry, workflows, variables, audit))


async def seed(client: TestClient) -> None:
    for body in ({"name": "Acme"}, {"name": "Zeta"}):
        assert (await call(client, "POST", "/api/clients", body))[0] == 201
    status, phone = await call(client, "POST", "/api/phones/registry",
                               {"serial": SERIAL, "client": "Acme"})
    assert status == 201, phone
    status, profile = await call(client, "POST", "/api/profiles",
                                 {"client": "Acme", "first_name": "Ann",
                                  "profile_password": SECRETS[1]})
    assert status == 201 and profile["profile_password_set"] is True, profile
    assert "profile_password" not in profile
    status, account = await call(client, "POST", "/api/accounts",
                                 {"serial": SERIAL, "platform": "ig", "account_number": "a1",
                                  "username": "ann", "password": SECRETS[0],
                                  "profile_id": profile["profile_id"]})
    assert status == 201 and account["password_set"] is True, account
    assert (await call(client, "POST", "/api/sequences",
                       {"name": "demo/login", "client": "Zeta"}))[0] == 201


def assert_no_secret(what: str, body) -> None:
    text = json.dumps(body)
    assert not any(s in text for s in SECRETS), (what, text)


async def test_the_api_never_answers_a_password(hub: FakeHub, db: FarmDB) -> None:
    async with TestClient(TestServer(make_app(hub))) as client:
        await seed(client)
        for path in ("/api/accounts", f"/api/accounts?serial={SERIAL}", "/api/profiles",
                     "/api/phones/registry", "/api/audit", f"/api/variables?serial={SERIAL}"):
            status, body = await call(client, "GET", path)
            assert status == 200, (path, body)
            assert_no_secret(path, body)
        status, body = await call(client, "GET", "/api/accounts")
        assert [(a["password_set"], a["profile"]["profile_password_set"])
                for a in body["accounts"]] == [(True, True)]
        # The audit trail knows a password was set, not which.
        status, body = await call(client, "GET", "/api/audit?entity=profile")
        assert body["entries"][0]["after"]["profile_password_set"] is True

        text = "${account.ig.a1.password}/${profile.profile_password}/${dynamic.counter(c)}"
        status, body = await call(client, "POST", "/api/variables/preview",
                                  {"text": text, "serials": [SERIAL]})
        assert status == 200 and body["texts"][SERIAL] == f"{SECRET_MASK}/{SECRET_MASK}/1"
        status, body = await call(client, "POST", "/api/variables/resolve",
                                  {"text": "{${account.ig.a1.password}} ${dynamic.counter(c)}",
                                   "serials": [SERIAL], "seed": 3})
        assert status == 400 and body["field"] == "$.text" and "write-only" in body["error"]
        assert_no_secret("resolve", body)
        assert await db._one("SELECT value FROM counters WHERE name = 'c'") is None  # unmoved
        status, body = await call(client, "POST", "/api/variables/resolve",
                                  {"text": "${account.ig.a1.username}", "serials": [SERIAL]})
        assert status == 200 and body["texts"][SERIAL] == "ann"
        # Write-only still means writable: "" removes the account's own password.
        status, account = await call(client, "POST", "/api/accounts",
                                     {"serial": SERIAL, "platform": "ig", "account_number": "a1",
                                      "password": ""})
        assert status == 200 and account["password_set"] is False
    # What a run types is the real one (RunManager resolves with secrets=True).
    assert await db.resolve_text("${account.ig.a1.password}", SERIAL, secrets=True) == SECRETS[1]
    schemas = openapi_document()["components"]["schemas"]
    assert "write-only" in schemas["AccountBody"]["properties"]["password"]["anyOf"][0][
        "description"]


async def test_every_change_is_audited_under_the_callers_name(hub: FakeHub, db: FarmDB) -> None:
    ann = Principal(user_id=7, name="ann", role="super")
    async with TestClient(TestServer(app_as(hub, ann))) as client:
        await seed(client)
        assert (await call(client, "DELETE", "/api/clients/Zeta"))[0] == 200
        assert (await call(client, "POST", f"/api/phones/{SERIAL}/tags", {"tag": "vip"}))[0] == 200
    trail = await db.audit_trail()
    assert {t["entity_type"] for t in trail} == {"client", "phone", "profile", "account",
                                                 "sequence_definition", "phone_tags"}
    assert {t["actor"] for t in trail} == {"user:7:ann"}


async def test_get_audit_filters_by_entity_time_and_the_callers_clients(
        hub: FakeHub, db: FarmDB) -> None:
    root = Principal(user_id=1, name="root", role="super")
    async with TestClient(TestServer(app_as(hub, root))) as client:
        await seed(client)
        await call(client, "POST", "/api/groups", {"name": "farmwide", "kind": "phone"})
        old = await db.audit("client", 999, "update", None, None, actor="someone")
        await db._write("UPDATE audit_log SET at = '2020-01-01 00:00:00.000000'"
                        " WHERE audit_id = ?", (old,))
        status, body = await call(client, "GET", "/api/audit")
        everything = body["entries"]
        assert status == 200 and [e["audit_id"] for e in everything] == sorted(
            (e["audit_id"] for e in everything), reverse=True)  # newest first
        assert {"group", "client", "phone", "profile", "account",
                "sequence_definition"} <= {e["entity_type"] for e in everything}
        status, body = await call(client, "GET", "/api/audit?entity=sequence")
        assert [e["entity_type"] for e in body["entries"]] == ["sequence_definition"]
        assert body["entries"][0]["after"]["name"] == "demo/login"
        status, body = await call(client, "GET", "/api/audit?since=2d")
        assert old not in [e["audit_id"] for e in body["entries"]]
        assert len(body["entries"]) == len(everything) - 1
        status, body = await call(client, "GET", "/api/audit?since=2019-12-31T23:00:00")
        assert len(body["entries"]) == len(everything)
        status, body = await call(client, "GET", "/api/audit?limit=2")
        assert [e["audit_id"] for e in body["entries"]] == [e["audit_id"]
                                                            for e in everything[:2]]
        for query, field in (("since=yesterday", "since"), ("since=99999999999y", "since"),
                             ("limit=0", "limit"), ("entity=DROP%20TABLE", "entity")):
            status, body = await call(client, "GET", f"/api/audit?{query}")
            assert status == 400 and body["field"] == field, (query, body)

    acme = (await db.client_row("Acme"))["client_id"]
    admin = Principal(user_id=2, name="acme-admin", role="admin", client_ids=frozenset({acme}))
    async with TestClient(TestServer(app_as(hub, admin))) as client:
        status, body = await call(client, "GET", "/api/audit")
        mine = body["entries"]
        assert status == 200 and mine
        assert {e["entity_type"] for e in mine} == {"client", "phone", "profile", "account"}
        assert {e["client_id"] for e in mine} == {acme}  # no Zeta, no group, no unknown client
        status, body = await call(client, "GET", "/api/audit?entity=sequence")
        assert body["entries"] == []  # Zeta's sequence
    nobody = Principal(user_id=3, name="lost", role="client", client_ids=frozenset())
    async with TestClient(TestServer(app_as(hub, nobody))) as client:
        assert (await call(client, "GET", "/api/audit"))[1]["entries"] == []


async def test_farm_audit_lists_the_trail(hub: FakeHub, capsys) -> None:
    async with TestClient(TestServer(make_app(hub))) as client:
        await seed(client)
        url = str(client.make_url("")).rstrip("/")
        code = await asyncio.to_thread(farm_main, ["--url", url, "audit", "--entity",
                                                   "sequence", "--since", "2d"])
        out = capsys.readouterr().out.splitlines()
        assert code == 0 and out[0].split() == ["AT", "(UTC)", "WHO", "ACTION", "ENTITY", "ID",
                                                "REASON"]
        assert len(out) == 2 and "create" in out[1] and "sequence_definition" in out[1]
        code = await asyncio.to_thread(farm_main, ["--url", url, "audit", "--json",
                                                   "--entity", "account"])
        entries = json.loads(capsys.readouterr().out)
        assert code == 0 and [e["entity_type"] for e in entries] == ["account"]
        assert_no_secret("farm audit --json", entries)
        code = await asyncio.to_thread(farm_main, ["--url", url, "audit", "--since", "soon"])
        assert code == 2 and "since" in capsys.readouterr().err
