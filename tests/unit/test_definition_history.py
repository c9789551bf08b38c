"""Definitions with history (issue 23.1) over the control endpoint, on a real FarmDB (SQLite
and PostgreSQL), a real registry folder and real sequence files behind a real aiohttp
server: every save is a numbered version with author, time, reason and content hash; a diff
names what changed (a screen's moved regions); a revert is a new version equal to the old
one, saved through the kind's own path; bad input names its field and changes nothing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.principal import Principal  # noqa: E402
from actors.control import content, definitions, registry, workflows  # noqa: E402
from actors.coordinator.registry_store import RegistryStore, ScreenEdit  # noqa: E402
from actors.coordinator.runs import RunManager  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from sequences.load import LIBRARY  # noqa: E402
from tests.api_call import app_as, call  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine")

SUPER = Principal(user_id=1, name="admin", role="super", client_ids=None)


def definitions_hub(db: FarmDB, tmp_path: Path) -> FakeHub:
    """A hub with a farm database, a registry folder and sequence files (a copy of the
    library, and the operator's folder) in ``tmp_path``."""
    hub = FakeHub()
    hub.db = db
    library = tmp_path / "library"
    shutil.copytree(LIBRARY, library)
    hub.registry_store = RegistryStore.open(tmp_path / "registry", db)
    hub.runs = RunManager(hub, db, tmp_path, library=library, recorded=tmp_path / "sequences",
                          registry=lambda: hub.registry_store.registry)
    return hub


@pytest.fixture
def hub(db: FarmDB, tmp_path: Path) -> FakeHub:
    return definitions_hub(db, tmp_path)


async def client_of(hub: FakeHub, principal: Principal = SUPER) -> TestClient:
    client = TestClient(TestServer(app_as(hub, principal, (registry, workflows, content,
                                                               definitions))))
    await client.start_server()
    return client


WF = "/api/definitions/workflow/daily"


async def test_a_workflow_s_saves_are_versions_a_diff_names_the_change_and_a_revert_is_a_new_equal_version(
        hub: FakeHub) -> None:
    c = await client_of(hub)
    try:
        assert (await call(c, "POST", "/api/clients", {"name": "Acme"}))[0] == 201
        for name in ("clipshare/login", "clipshare/post_clip"):
            assert (await call(c, "POST", "/api/sequences", {"name": name}))[0] == 201
        status, _ = await call(c, "POST", "/api/workflows", {
            "name": "daily", "client": "Acme", "reason": "first cut",
            "sequences": [{"sequence": "clipshare/login"}]})
        assert status == 201
        status, _ = await call(c, "PUT", "/api/workflows/daily", {
            "reason": "post after login", "client": "Acme", "sequences": [
                {"sequence": "clipshare/login"},
                {"sequence": "clipshare/post_clip", "depends_on": [0],
                 "retry": {"attempts": 2, "delay_s": 30}}]})
        assert status == 200

        status, listing = await call(c, "GET", f"{WF}/versions")
        assert status == 200, listing
        assert [v["version"] for v in listing["versions"]] == [2, 1]
        assert [v["reason"] for v in listing["versions"]] == ["post after login", "first cut"]
        assert {v["author"] for v in listing["versions"]} == {"user:1:admin"}
        assert listing["client"] == "Acme"
        first = listing["versions"][1]
        assert len(first["content_hash"]) == 64 and first["created_at"]

        status, one = await call(c, "GET", f"{WF}/versions/1")
        assert status == 200
        assert [s["sequence"] for s in one["content"]["sequences"]] == ["clipshare/login"]

        status, diff = await call(c, "GET", f"{WF}/diff?from=1&to=2")
        assert status == 200, diff
        added = [op for op in diff["changes"] if op["op"] == "add"]
        assert added and added[0]["path"] == "/sequences/1"
        assert added[0]["value"]["sequence"] == "clipshare/post_clip"

        status, head = await call(c, "POST", f"{WF}/revert",
                                  {"version": 1, "reason": "post_clip breaks the feed"})
        assert status == 200, head
        assert head["version"] == 3
        assert head["content_hash"] == first["content_hash"]
        assert head["reason"] == "revert to version 1: post_clip breaks the feed"
        status, now = await call(c, "GET", "/api/workflows/daily")
        assert [s["sequence"] for s in now["sequences"]] == ["clipshare/login"]
        assert now["client"] == "Acme"
        audit = await hub.db.audit_trail("workflow_definition")
        assert audit[0]["reason"] == "revert to version 1: post_clip breaks the feed"
    finally:
        await c.close()


async def test_bad_input_names_its_field_and_changes_nothing(hub: FakeHub) -> None:
    c = await client_of(hub)
    try:
        assert (await call(c, "POST", "/api/sequences", {"name": "clipshare/login"}))[0] == 201
        assert (await call(c, "POST", "/api/workflows", {
            "name": "daily", "sequences": [{"sequence": "clipshare/login"}]}))[0] == 201
        before = await call(c, "GET", f"{WF}/versions")

        status, body = await call(c, "POST", f"{WF}/revert", {"version": 9, "reason": "x"})
        assert status == 404 and "no version 9" in body["error"] and "it has 1" in body["error"]
        status, body = await call(c, "POST", f"{WF}/revert", {"version": 1})
        assert status == 400 and "reason" in json.dumps(body)
        status, body = await call(c, "GET", f"{WF}/diff?from=1&to=weekly@1")
        assert status == 400 and body["field"] == "to" and "'weekly'" in body["error"]
        status, body = await call(c, "GET", f"{WF}/diff?from=1&to=4")
        assert status == 404 and "no version 4 (to" in body["error"]
        status, body = await call(c, "GET", f"{WF}/diff?from=x&to=1")
        assert status == 400 and body["field"] == "from"
        status, body = await call(c, "GET", "/api/definitions/workflow/nightly/versions")
        assert status == 404 and "nightly" in body["error"]
        status, body = await call(c, "GET", "/api/definitions/recipe/daily/versions")
        assert status == 400 and body["field"] == "kind"

        assert await call(c, "GET", f"{WF}/versions") == before
    finally:
        await c.close()


async def test_a_sequence_file_s_versions_follow_the_disk_and_a_revert_writes_the_operator_s_copy(
        hub: FakeHub, tmp_path: Path) -> None:
    c = await client_of(hub)
    name = "clipshare/check_stats"
    url = f"/api/definitions/sequence/{name}"
    lib_file = tmp_path / "library" / f"{name}.json"
    try:
        status, listing = await call(c, "GET", f"{url}/versions")
        assert status == 200, listing
        assert [v["version"] for v in listing["versions"]] == [1]
        assert listing["versions"][0]["author"] is None  # found on disk

        changed = json.loads(lib_file.read_text())
        changed["description"] = "edited by hand"
        lib_file.write_text(json.dumps(changed))
        assert await hub.runs.sequence_version(name) == 2  # what a run's start records

        status, diff = await call(c, "GET", f"{url}/diff?from=1&to=2")
        assert diff["changes"][0]["path"] == "/description"
        assert diff["changes"][0]["value"] == "edited by hand"

        status, head = await call(c, "POST", f"{url}/revert", {"version": 1, "reason": "undo"})
        assert status == 200, head
        assert head["version"] == 3
        copy = tmp_path / "sequences" / f"{name}.json"
        assert json.loads(copy.read_text())["description"] != "edited by hand"
        assert await hub.runs.sequence_version(name) == 3  # runs now load the operator's copy
        assert hub.runs.sequence(name)[1].description != "edited by hand"
    finally:
        await c.close()


async def test_a_screen_s_region_move_shows_in_the_diff_and_a_revert_restores_its_json_and_crops(
        hub: FakeHub) -> None:
    store: RegistryStore = hub.registry_store
    c = await client_of(hub)
    url = "/api/definitions/screen/clipshare/feed"
    try:
        original = store.screen_content("clipshare", "feed")
        _, screen = store.screen("clipshare", "feed")
        regions = [{"name": r.name, "coordinates": list(r.coordinates)}
                   for r in screen.validation_regions]
        regions[0]["coordinates"] = [20, 100, 1060, 220]
        edit = ScreenEdit(kind="state", description=screen.description, reason="tighter title",
                          regions=regions,
                          actions=[{"name": a.name, "coordinates": list(a.coordinates),
                                    "action_type": a.action_type,
                                    "linked_state": a.linked_state}
                                   for a in screen.actions])
        import msgspec
        edit = msgspec.convert(msgspec.to_builtins(edit), ScreenEdit)
        await store.save_screen("clipshare", "feed", edit, None, actor="user:1:admin")

        status, listing = await call(c, "GET", f"{url}/versions")
        assert status == 200, listing
        # The seed as found (caught up at the save), then the edit.
        assert [v["reason"] for v in listing["versions"]][0] == "tighter title"
        newest = listing["versions"][0]["version"]
        status, diff = await call(c, "GET", f"{url}/diff?from=1&to={newest}")
        assert status == 200, diff
        moved = [r for r in diff["regions"] if r["change"] == "moved"]
        assert moved == [{"region": "title", "change": "moved", "from": [8, 88, 1072, 232],
                          "to": [20, 100, 1060, 220],
                          "reference_from": moved[0]["reference_from"],
                          "reference_to": moved[0]["reference_to"]}]
        assert diff["files"]["added"] and not any(
            "files" in op["path"] for op in diff["changes"])

        version_before = store.version
        status, head = await call(c, "POST", f"{url}/revert", {"version": 1, "reason": "undo"})
        assert status == 200, head
        assert store.screen_content("clipshare", "feed") == original
        assert store.version != version_before
        _, back = store.screen("clipshare", "feed")
        assert list(back.validation_regions[0].coordinates) == [8, 88, 1072, 232]
    finally:
        await c.close()


async def test_a_tenant_sees_its_own_and_shared_history_and_reverts_no_farm_definition(
        hub: FakeHub) -> None:
    admin = await client_of(hub)
    try:
        for name in ("Acme", "Zeta"):
            assert (await call(admin, "POST", "/api/clients", {"name": name}))[0] == 201
        assert (await call(admin, "POST", "/api/sequences", {"name": "clipshare/login"}))[0] == 201
        acme_id = (await hub.db.client_row("Acme"))["client_id"]
        zeta_id = (await hub.db.client_row("Zeta"))["client_id"]
        for client_id in (acme_id, zeta_id):  # each client's own admin makes its "daily"
            own = await client_of(hub, Principal(user_id=8, name="boss", role="admin",
                                                 client_ids=frozenset({client_id})))
            try:
                assert (await call(own, "POST", "/api/workflows", {
                    "name": "daily", "sequences": [{"sequence": "clipshare/login"}]}))[0] == 201
            finally:
                await own.close()
        status, body = await call(admin, "GET", f"{WF}/versions")
        assert status == 400 and body["field"] == "client"  # two clients have one
        status, body = await call(admin, "GET", f"{WF}/versions?client=Zeta")
        assert status == 200 and body["client"] == "Zeta"
    finally:
        await admin.close()
    tenant = await client_of(hub, Principal(user_id=7, name="ann", role="admin",
                                            client_ids=frozenset({acme_id})))
    try:
        status, body = await call(tenant, "GET", f"{WF}/versions")
        assert status == 200 and body["client"] == "Acme"
        status, body = await call(tenant, "GET", f"{WF}/versions?client=Zeta")
        assert status == 400 and body["field"] == "client"  # another's reads as none
        status, body = await call(tenant, "GET",
                                  "/api/definitions/sequence/clipshare/login/versions")
        assert status == 200 and body["versions"]
        status, body = await call(tenant, "POST",
                                  "/api/definitions/sequence/clipshare/login/revert",
                                  {"version": 1, "reason": "mine now"})
        assert status == 403
    finally:
        await tenant.close()


async def test_a_caption_template_s_history_and_revert(hub: FakeHub) -> None:
    c = await client_of(hub)
    url = "/api/definitions/caption/daily"
    try:
        for template, reason in (("Morning {one|two}", None), ("Evening", "tone")):
            body = {"template": template}
            if reason:
                body["reason"] = reason
            status, _ = await call(c, "PUT", "/api/content/captions/daily", body)
            assert status in (200, 201)
        status, head = await call(c, "POST", f"{url}/revert", {"version": 1, "reason": "back"})
        assert status == 200 and head["version"] == 3
        status, rows = await call(c, "GET", "/api/content/captions")
        assert [r["template"] for r in rows["captions"] if r["name"] == "daily"] == [
            "Morning {one|two}"]
    finally:
        await c.close()


async def test_farm_history_diff_and_revert_on_the_command_line(hub: FakeHub, capsys) -> None:
    import asyncio

    from actors.control.cli import main as farm_main

    c = await client_of(hub)
    try:
        for template in ("Morning", "Evening"):
            assert (await call(c, "PUT", "/api/content/captions/daily",
                               {"template": template, "reason": f"say {template}"}))[0] in (
                200, 201)
        url = str(c.make_url("")).rstrip("/")

        def farm(*argv: str) -> tuple[int, str, str]:
            return farm_main(["--url", url, *argv])

        code = await asyncio.to_thread(farm, "history", "caption", "daily")
        out = capsys.readouterr().out.splitlines()
        assert code == 0 and out[0] == "caption daily"
        assert out[1].split()[:3] == ["VERSION", "AT", "(UTC)"]
        assert out[2].split()[0] == "2" and out[2].endswith("say Evening")
        code = await asyncio.to_thread(farm, "diff", "caption", "daily", "1", "2")
        out = capsys.readouterr().out.splitlines()
        assert code == 0 and out[1] == '  ~ /template: "Morning" -> "Evening"'
        code = await asyncio.to_thread(farm, "revert", "caption", "daily", "1", "--reason",
                                       "too late")
        assert code == 0 and "version 3 saved, equal to version 1" in capsys.readouterr().out
        code = await asyncio.to_thread(farm, "revert", "caption", "daily", "7", "--reason", "x")
        assert code == 2 and "no version 7" in capsys.readouterr().err
    finally:
        await c.close()
