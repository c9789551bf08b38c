"""Templates across clients (issue 23.3) over the control endpoint and `farm templates`, on a
real FarmDB (SQLite and PostgreSQL) behind a real aiohttp server: an organization admin
marks a workflow a template and copies it into another client of the organization (its
sequences come along, the lineage is recorded); status shows a copy behind its template;
update applies the template's change to an unedited copy and refuses an edited one with the
diff; a client of another organization, or an admin of another, is refused."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.principal import Principal  # noqa: E402
from actors.control import content, definitions, registry, templates, workflows  # noqa: E402
from actors.control.cli import main as farm_main  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from tests.api_call import app_as, call  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine")

SUPER = Principal(user_id=1, name="admin", role="super", client_ids=None)
MODULES = (registry, workflows, content, definitions, templates)


@pytest.fixture
async def org(db: FarmDB):
    """Organization Brand with clients Acme and Beta, organization Other with Zeta; Acme's
    own sequence definition and workflow "daily" (a template)."""
    hub = FakeHub()
    hub.db = db
    admin = TestClient(TestServer(app_as(hub, SUPER, MODULES)))
    await admin.start_server()
    for name in ("Acme", "Beta", "Zeta"):
        assert (await call(admin, "POST", "/api/clients", {"name": name}))[0] == 201
    ids = {}
    for org_name, clients in (("Brand", ("Acme", "Beta")), ("Other", ("Zeta",))):
        org_id = (await db._write("INSERT INTO organizations (name) VALUES (?)"
                                  " RETURNING organization_id", (org_name,)))[0]
        for client in clients:
            await db._write("UPDATE clients SET organization_id = ? WHERE name = ?",
                            (org_id, client))
            ids[client] = (await db.client_row(client))["client_id"]
        ids[org_name] = org_id
    assert (await call(admin, "POST", "/api/sequences", {"name": "clipshare/login"}))[0] == 201
    assert (await call(admin, "POST", "/api/sequences", {
        "name": "clipshare/post_clip", "client": "Acme", "description": "Acme's posting"}))[0] == 201
    assert (await call(admin, "POST", "/api/workflows", {
        "name": "daily", "client": "Acme", "reason": "first", "sequences": [
            {"sequence": "clipshare/login"}]}))[0] == 201
    brand_admin = Principal(user_id=5, name="bea", role="admin", organization_id=ids["Brand"],
                            client_ids=frozenset({ids["Acme"], ids["Beta"]}))
    client = TestClient(TestServer(app_as(hub, brand_admin, MODULES)))
    await client.start_server()
    yield hub, admin, client, ids
    await client.close()
    await admin.close()


async def test_an_organization_admin_copies_a_template_and_keeps_the_copy_current(
        org, capsys) -> None:
    hub, admin, bea, ids = org
    status, body = await call(bea, "POST", "/api/templates/copy", {
        "kind": "workflow", "name": "daily", "from_client": "Acme", "to_client": "Beta"})
    assert status == 400 and "not a template" in body["error"]  # not marked yet
    url = str(bea.make_url("")).rstrip("/")
    farm = lambda *argv: asyncio.to_thread(farm_main, ["--url", url, *argv])  # noqa: E731
    assert await farm("templates", "add", "daily", "--client", "Acme") == 0
    assert "workflow daily is a template" in capsys.readouterr().out
    # The template gains Acme's own post_clip before it is copied.
    assert (await call(admin, "PUT", "/api/workflows/daily", {
        "client": "Acme", "is_template": True, "reason": "post too", "sequences": [
            {"sequence": "clipshare/login"}, {"sequence": "clipshare/post_clip"}]}))[0] == 200

    assert await farm("templates", "copy", "daily", "--to-client", "Beta") == 0
    assert capsys.readouterr().out.strip() == (
        "workflow daily copied to Beta (template version 3, copy version 1)")
    beta_wf = await hub.db.workflow_definition("daily", [ids["Beta"]])
    assert beta_wf["client_id"] == ids["Beta"]
    assert [s["sequence"] for s in beta_wf["sequences"]] == ["clipshare/login",
                                                             "clipshare/post_clip"]
    post_clip = await hub.db.sequence_definition("clipshare/post_clip", [ids["Beta"]])
    assert post_clip["client_id"] == ids["Beta"] and post_clip["description"] == "Acme's posting"
    status, body = await call(bea, "POST", "/api/templates/copy", {
        "kind": "workflow", "name": "daily", "from_client": "Acme", "to_client": "Beta"})
    assert status == 400 and body["field"] == "to_client"  # Beta has one now

    listing = (await call(bea, "GET", "/api/templates"))[1]
    assert listing["templates"] == [{"kind": "workflow", "name": "daily", "client": "Acme"}]
    (copy,) = listing["copies"]
    assert copy["behind"] is False and copy["edited"] is False

    # The template moves on: the copy is behind; update brings it along.
    assert (await call(admin, "PUT", "/api/workflows/daily", {
        "client": "Acme", "is_template": True, "reason": "retry login", "sequences": [
            {"sequence": "clipshare/login", "retry": {"attempts": 2, "delay_s": 30}},
            {"sequence": "clipshare/post_clip"}]}))[0] == 200
    code = await farm("templates", "status")
    out = capsys.readouterr().out
    assert code == 0 and "behind" in out and "Beta" in out and "3/4" in out
    code = await farm("templates", "update", "workflow", "daily", "--client", "Beta")
    assert code == 0 and "now template version 4" in capsys.readouterr().out
    beta_wf = await hub.db.workflow_definition("daily", [ids["Beta"]])
    assert beta_wf["sequences"][0]["retry"] == {"attempts": 2, "delay_s": 30.0}
    history = (await call(bea, "GET",
                          "/api/definitions/workflow/daily/versions?client=Beta"))[1]
    assert history["versions"][0]["reason"].startswith("update from template workflow daily")

    # An edited copy is not overwritten: the template's change comes back to merge by hand.
    assert (await call(bea, "PUT", "/api/workflows/daily", {
        "client": "Beta", "reason": "ours", "sequences": [
            {"sequence": "clipshare/login"}]}))[0] == 200
    assert (await call(admin, "PUT", "/api/workflows/daily", {
        "client": "Acme", "is_template": True, "description": "v4", "sequences": [
            {"sequence": "clipshare/login"}, {"sequence": "clipshare/post_clip"}]}))[0] == 200
    before = await hub.db.workflow_definition("daily", [ids["Beta"]])
    status, body = await call(bea, "POST", "/api/templates/update", {
        "kind": "workflow", "name": "daily", "client": "Beta"})
    assert status == 409 and "edited since" in body["error"]
    assert any(op["path"] == "/description" for op in body["diff"]["changes"])
    assert await hub.db.workflow_definition("daily", [ids["Beta"]]) == before


async def test_copies_stay_within_one_organization_and_its_admins(org, db: FarmDB) -> None:
    hub, admin, bea, ids = org
    assert (await call(admin, "POST", "/api/templates", {
        "kind": "workflow", "name": "daily", "client": "Acme"}))[0] == 200
    status, body = await call(admin, "POST", "/api/templates/copy", {
        "kind": "workflow", "name": "daily", "from_client": "Acme", "to_client": "Zeta"})
    assert status == 400 and body["field"] == "to_client" and "organization" in body["error"]
    status, body = await call(bea, "POST", "/api/templates/copy", {
        "kind": "workflow", "name": "daily", "from_client": "Acme", "to_client": "Zeta"})
    assert status in (400, 403)  # Zeta is not Bea's: reads as no such client or refused
    other = Principal(user_id=6, name="otto", role="admin", organization_id=ids["Other"],
                      client_ids=frozenset({ids["Zeta"]}))
    async with TestClient(TestServer(app_as(hub, other, MODULES))) as otto:
        status, body = await call(otto, "POST", "/api/templates/copy", {
            "kind": "workflow", "name": "daily", "from_client": "Acme", "to_client": "Zeta"})
        assert status == 403
        assert (await call(otto, "GET", "/api/templates"))[1]["templates"] == []
    status, body = await call(bea, "POST", "/api/templates/update", {
        "kind": "workflow", "name": "daily", "client": "Beta"})
    assert status == 404 and "no copy" in body["error"]
    assert await db._all("SELECT * FROM template_copies") == []
