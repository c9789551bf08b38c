"""Tenants' schedules, workflow runs, groups and definitions (issue 17.4): a real, started
Hub with its FarmDB and scheduler behind a real aiohttp server with access control, four
phones split between clients A ("Demo Farm": A1, A2) and B ("Acme": B1, B2).

A client user of B makes a schedule, a group, definitions and a workflow run; A's client user
and viewer cannot see or touch them (each answer reads as for an id of nothing at all), while
A's client user makes and runs its own: its ``phone:all`` schedule and workflow fire on A's
phones only, its groups live in A's book (B may use the same names), and it cannot change
the shared library. An admin reaching both clients names the one it means."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

import actors.store.farm_db as farm_db_module
from actors.access.bootstrap import ensure_admin
from actors.access.service import Access
from actors.control.app import make_app
from actors.coordinator.hub import Hub
from actors.coordinator.scheduling.schedules import ScheduleService
from actors.coordinator.scheduling.workflows import schedule_id_of
from actors.node.device.adb_server import free_port
from actors.store.event_store import EventStore
from actors.store.farm_db import FarmDB, seed_demo
from actors.store.migrations import SCHEMA_VERSION
from protocol.messages import Event
from sequences.groups import GroupBook

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

A1, A2, B1, B2 = "127.0.0.1:41001", "127.0.0.1:41002", "127.0.0.1:41003", "127.0.0.1:41004"
A, B = "Demo Farm", "Acme"
GHOST = "127.0.0.1:1"
PASSWORD = "correct horse battery"
FAR = "2099-01-01T00:00:00Z"


class Farm:
    def __init__(self, client: TestClient, hub: Hub, db: FarmDB, tokens: dict[str, str]) -> None:
        self.client, self.hub, self.db, self.tokens = client, hub, db, tokens

    async def call(self, who: str, method: str, path: str, body=None) -> tuple[int, dict]:
        resp = await self.client.request(method, path, json=body, headers={
            "Authorization": f"Bearer {self.tokens[who]}"})
        return resp.status, await resp.json()

    async def ok(self, who: str, method: str, path: str, body=None) -> dict:
        status, answer = await self.call(who, method, path, body)
        assert 200 <= status < 300, (who, method, path, status, answer)
        return answer


@pytest.fixture
async def farm(tmp_path: Path):
    data = tmp_path / "data"
    store = await EventStore(data / "coordinator.sqlite3").open()
    db = await FarmDB.open(data / "farm.sqlite3")
    await seed_demo(db, [A1, A2, B1, B2])
    org = await db.upsert_organization("Agency")
    for name in (A, B):
        await db.set_client_organization(name, org)
    hub = await Hub(f"tcp://127.0.0.1:{free_port()}", "s3cret", store, db=db, data_dir=data,
                    command_deadline=1.0).start()
    hub.node_rows["n1"] = {"name": "n1", "state": "up", "phones": []}
    await hub.handle_batch("n1", [Event(i + 1, "phone_up", s, {"model": "virtual"})
                                  for i, s in enumerate((A1, A2, B1, B2))])
    access = Access.over(db)
    await ensure_admin(access, data)
    tokens = {"super": (data / "admin.token").read_text().strip()}
    client = TestClient(TestServer(make_app(hub, access=access)))
    await client.start_server()
    farm = Farm(client, hub, db, tokens)
    users = {"a": ("client", {"clients": [A]}), "a-viewer": ("viewer", {"clients": [A]}),
             "b": ("client", {"clients": [B]}), "boss": ("admin", {"organization": "Agency"})}
    for name, (role, extra) in users.items():
        await farm.ok("super", "POST", "/api/users",
                      {"name": name, "password": PASSWORD, "role": role, **extra})
        resp = await client.post("/api/login", json={"user": name, "password": PASSWORD})
        tokens[name] = (await resp.json())["token"]
    try:
        yield farm
    finally:
        await client.close()
        await hub.close()
        await db.close()
        await store.close()


def client_id(farm: Farm, serial: str) -> int:
    return farm.hub.owners.client_id(serial)


async def queued(farm: Farm, who: str, schedule_id: str, timeout: float = 10.0) -> set[str]:
    """The phones an occurrence of the schedule queued jobs on (waits for its firing)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        events = (await farm.ok(who, "GET", f"/api/schedules/{schedule_id}/events"))["events"]
        if any(e["kind"] == "fired" for e in events) or \
                asyncio.get_running_loop().time() > deadline:
            return {e["serial"] for e in events if e["kind"] == "queued"}
        await asyncio.sleep(0.1)


async def same_as_missing(farm: Farm, who: str, method: str, path: str, ghost_path: str,
                          body=None, ghost_body=None, secrets=()) -> int:
    """The answer about B's thing equals the one about nothing at all (the names masked)."""
    status, answer = await farm.call(who, method, path, body)
    g_status, g_answer = await farm.call(who, method, ghost_path, ghost_body)
    text, g_text = str(answer), str(g_answer)
    for real, ghost in secrets:
        text, g_text = text.replace(real, "<ID>"), g_text.replace(ghost, "<ID>")
    assert (status, text) == (g_status, g_text), (path, answer, g_answer)
    assert status >= 400, (path, answer)
    return status


# --- schedules --------------------------------------------------------------------------


async def test_schedules_belong_to_their_clients(farm: Farm) -> None:
    b_sched = await farm.ok("b", "POST", "/api/schedules", {
        "sequence": "clipshare/post_clip", "target": "phone:all", "type": "scheduled",
        "at": FAR})
    assert b_sched["clients"] == [client_id(farm, B1)]
    sid = b_sched["id"]
    for who in ("a", "a-viewer"):
        listed = (await farm.ok(who, "GET", "/api/schedules"))["schedules"]
        assert sid not in {s["id"] for s in listed}
        for action in ("pause", "resume", "cancel"):
            assert await same_as_missing(farm, who, "POST", f"/api/schedules/{sid}/{action}",
                                         f"/api/schedules/no-such/{action}",
                                         secrets=[(sid, "no-such")]) in (403, 404)
        assert await same_as_missing(farm, who, "GET", f"/api/schedules/{sid}/events",
                                     "/api/schedules/no-such/events",
                                     secrets=[(sid, "no-such")]) == 404
    # A's target naming B's phone reads as a phone that does not exist; nothing stored.
    body = {"sequence": "clipshare/post_clip", "target": f"phone:{B1}", "type": "scheduled",
            "at": FAR}
    status = await same_as_missing(farm, "a", "POST", "/api/schedules", "/api/schedules",
                                   body, {**body, "target": f"phone:{GHOST}"},
                                   secrets=[(B1, GHOST)])
    assert status == 400
    status, answer = await farm.call("a", "POST", "/api/schedules",
                                     {**body, "target": "phone:all", "clients": [1, 2]})
    assert status == 400 and answer["field"] == "$.clients"
    status, answer = await farm.call("a", "POST", "/api/schedules",
                                     {**body, "target": "phone:all", "depends_on": [sid]})
    assert status == 400 and answer["field"] == "$.depends_on" and "no such" in answer["error"]
    assert (await farm.call("a-viewer", "POST", "/api/schedules",
                            {**body, "target": "phone:all"}))[0] == 403
    # B's schedule is untouched, the super user sees both clients' (and only B's is B's).
    every = {s["id"]: s for s in (await farm.ok("super", "GET", "/api/schedules"))["schedules"]}
    assert every[sid]["status"] == "pending" and len(every) == 1


async def test_a_tenants_phone_all_fires_on_its_own_phones_only(farm: Farm) -> None:
    # A one-shot schedule leaves the live state once its jobs end (here at once: no node
    # answers), so a far-off one shows what listing and a restart keep.
    later = await farm.ok("a", "POST", "/api/schedules", {
        "sequence": "clipshare/post_clip", "target": "phone:all", "type": "scheduled",
        "at": FAR})
    mine = await farm.ok("a", "POST", "/api/schedules", {
        "sequence": "clipshare/post_clip", "target": "phone:all", "type": "immediate"})
    assert await queued(farm, "a", mine["id"]) == {A1, A2}
    listed = {s["id"] for s in (await farm.ok("a-viewer", "GET", "/api/schedules"))["schedules"]}
    assert later["id"] in listed and listed <= {later["id"], mine["id"]}
    # A phone given to A later is A's schedule's too ("now and later"); B1 goes to A.
    await farm.hub.owners.assign(B1, A)
    again = await farm.ok("a", "POST", "/api/schedules", {
        "sequence": "clipshare/post_clip", "target": "phone:all", "type": "immediate"})
    assert await queued(farm, "a", again["id"]) == {A1, A2, B1}
    await farm.hub.owners.assign(B1, B)
    # The super user's phone:all is every phone, as before.
    farm_wide = await farm.ok("super", "POST", "/api/schedules", {
        "sequence": "clipshare/post_clip", "target": "phone:all", "type": "immediate"})
    assert "clients" not in farm_wide
    assert await queued(farm, "super", farm_wide["id"]) == {A1, A2, B1, B2}
    # Whose a schedule is survives a coordinator restart (saved with the schedule).
    reloaded = ScheduleService(farm.hub, farm.hub.runs, farm.db)
    await reloaded.load()
    assert reloaded.core().state.schedules[later["id"]].clients == [client_id(farm, A1)]
    assert later["id"] in {s["id"] for s in reloaded.schedules(
        frozenset({client_id(farm, A1)}))}
    assert later["id"] not in {s["id"] for s in reloaded.schedules(
        frozenset({client_id(farm, B1)}))}


# --- workflows --------------------------------------------------------------------------


async def define(farm: Farm, who: str, workflow: str, sequence: str = "clipshare/login",
                 **extra) -> dict:
    await farm.ok(who, "POST", "/api/sequences", {"name": sequence, **extra})
    return await farm.ok(who, "POST", "/api/workflows", {
        "name": workflow, "sequences": [{"sequence": sequence}], **extra})


async def test_workflow_runs_belong_to_their_clients(farm: Farm) -> None:
    await define(farm, "b", "b_flow")
    b_run = await farm.ok("b", "POST", "/api/workflows/b_flow/run", {"scope": "phone:all"})
    wfx = b_run["workflow_execution_id"]
    assert b_run["clients"] == [client_id(farm, B1)]
    assert await queued(farm, "b", schedule_id_of(wfx, 0)) == {B1, B2}
    for who in ("a", "a-viewer"):
        listed = (await farm.ok(who, "GET", "/api/workflow-executions"))["workflow_executions"]
        assert wfx not in {x["workflow_execution_id"] for x in listed}
        assert await same_as_missing(farm, who, "GET", f"/api/workflow-executions/{wfx}",
                                     "/api/workflow-executions/987654",
                                     secrets=[(str(wfx), "987654")]) == 404
        assert await same_as_missing(farm, who, "GET",
                                     f"/api/schedules/{schedule_id_of(wfx, 0)}/events",
                                     "/api/schedules/no-such/events",
                                     secrets=[(schedule_id_of(wfx, 0), "no-such")]) == 404
    # B's workflow is not A's to run (404 as for none); A's run of its own on B's phone
    # reads as a phone that does not exist.
    assert await same_as_missing(farm, "a", "POST", "/api/workflows/b_flow/run",
                                 "/api/workflows/no_flow/run", {"scope": "phone:all"},
                                 {"scope": "phone:all"},
                                 secrets=[("b_flow", "no_flow")]) == 404
    await define(farm, "a", "a_flow")
    # A schedule of a workflow: B's is none of A's; A's own fires among A's phones.
    body = {"workflow": "b_flow", "target": "phone:all", "type": "scheduled", "at": FAR}
    assert await same_as_missing(farm, "a", "POST", "/api/schedules", "/api/schedules", body,
                                 {**body, "workflow": "no_flow"},
                                 secrets=[("b_flow", "no_flow")]) == 400
    fired = await farm.ok("a", "POST", "/api/schedules", {
        "workflow": "a_flow", "target": "phone:all", "type": "immediate"})
    for _ in range(100):
        started = (await farm.ok("a", "GET", "/api/workflow-executions"))["workflow_executions"]
        if started:
            break
        await asyncio.sleep(0.1)
    assert [x["workflow"] for x in started] == ["a_flow"], fired
    assert await queued(farm, "a", schedule_id_of(started[0]["workflow_execution_id"], 0)) \
        == {A1, A2}
    assert await same_as_missing(farm, "a", "POST", "/api/workflows/a_flow/run",
                                 "/api/workflows/a_flow/run", {"scope": f"phone:{B1}"},
                                 {"scope": f"phone:{GHOST}"}, secrets=[(B1, GHOST)]) == 400
    assert (await farm.call("a-viewer", "POST", "/api/workflows/a_flow/run",
                            {"scope": "phone:all"}))[0] == 403
    mine = await farm.ok("a", "POST", "/api/workflows/a_flow/run", {"scope": "phone:all"})
    assert await queued(farm, "a", schedule_id_of(mine["workflow_execution_id"], 0)) == {A1, A2}
    listed = (await farm.ok("a-viewer", "GET", "/api/workflow-executions"))["workflow_executions"]
    assert [x["workflow_execution_id"] for x in listed] == [
        mine["workflow_execution_id"], started[0]["workflow_execution_id"]]
    every = (await farm.ok("super", "GET", "/api/workflow-executions"))["workflow_executions"]
    assert {x["workflow_execution_id"] for x in every} == {
        wfx, mine["workflow_execution_id"], started[0]["workflow_execution_id"]}


# --- groups -----------------------------------------------------------------------------


async def test_groups_are_per_client(farm: Farm) -> None:
    await farm.ok("b", "POST", "/api/groups", {"name": "vip", "kind": "phone"})
    await farm.ok("b", "POST", "/api/groups/vip/members", {"member": B1})
    await farm.ok("b", "POST", "/api/groups", {"name": "b_only", "kind": "phone"})
    # A has a book of its own: the same name is no clash, B's groups are not in it.
    for who in ("a", "a-viewer"):
        listed = await farm.ok(who, "GET", "/api/groups")
        assert {g["name"] for g in listed["groups"]} == {"active", "warming"}
        assert {g["client"] for g in listed["groups"]} == {A}
    mine = await farm.ok("a", "POST", "/api/groups", {"name": "vip", "kind": "phone"})
    assert mine["client"] == A and mine["members"] == []
    # B's phone is no member A can add; B's group is none A can touch.
    assert await same_as_missing(farm, "a", "POST", "/api/groups/vip/members",
                                 "/api/groups/vip/members", {"member": B1}, {"member": GHOST},
                                 secrets=[(B1, GHOST)]) == 400
    for method, path, body in (("DELETE", "/api/groups/{}", None),
                               ("POST", "/api/groups/{}/members", {"member": A1}),
                               ("DELETE", "/api/groups/{}/members/" + quote(A1, safe=""), None)):
        assert await same_as_missing(farm, "a", method, path.format("b_only"),
                                     path.format("no_such"), body, body,
                                     secrets=[("b_only", "no_such")]) == 404
    assert await same_as_missing(farm, "a", "POST", "/api/groups",
                                 "/api/groups", {"name": "x", "kind": "phone", "parent": "b_only"},
                                 {"name": "x", "kind": "phone", "parent": "no_such"},
                                 secrets=[("b_only", "no_such")]) == 400
    assert await same_as_missing(farm, "a", "GET", f"/api/groups?client={quote(B)}",
                                 "/api/groups?client=Nobody", secrets=[(B, "Nobody")]) == 400
    assert (await farm.call("a-viewer", "POST", "/api/groups",
                            {"name": "v", "kind": "phone"}))[0] == 403
    await farm.ok("a", "POST", "/api/groups/vip/members", {"member": A2})
    # group:vip in A's run is A's vip; in B's, B's; the shared book is the super user's.
    run = await farm.ok("a", "POST", "/api/runs", {"sequence": "clipshare/login",
                                                   "scope": "group:vip"})
    assert list(run["executions"]) == [A2]
    # So are ${group...} in A's texts: A's book over A's phones, never B's or the farm's.
    text = "${group.vip.members} of ${group.all_phones.count}"
    preview = await farm.ok("a", "POST", "/api/variables/preview", {"text": text,
                                                                    "serials": [A1]})
    assert preview["texts"] == {A1: f"{A2} of 2"}
    farm_wide = await farm.ok("super", "POST", "/api/variables/preview", {
        "text": "${group.all_phones.count}", "serials": [A1]})
    assert farm_wide["texts"] == {A1: "4"}
    typed: list[str] = []

    async def send_run(serial, run):  # the plan the node would be sent (no node here)
        typed.extend(s.text for s in run.steps if s.__struct_config__.tag == "type")
        return {"status": "ok", "error": None}

    farm.hub.send_run = send_run
    await farm.ok("a", "POST", "/api/runs", {"scope": f"phone:{A1}", "sequence": {
        "name": "t", "app": "clipshare", "steps": [{"type": "type", "text": text}]}})
    assert typed == [f"{A2} of 2"]
    del farm.hub.send_run
    b_schedule = await farm.ok("b", "POST", "/api/schedules", {
        "sequence": "clipshare/login", "target": "group:vip", "type": "immediate"})
    assert await queued(farm, "b", b_schedule["id"]) == {B1}
    status, answer = await farm.call("super", "POST", "/api/runs", {
        "sequence": "clipshare/login", "scope": "group:vip"})
    assert status == 400 and "unknown group 'vip'" in answer["error"]
    shared = await farm.ok("super", "GET", "/api/groups")
    assert {g["name"] for g in shared["groups"]} == {"active", "warming"}
    acme = await farm.ok("super", "GET", f"/api/groups?client={quote(B)}")
    assert {g["name"]: g["members"] for g in acme["groups"]}["vip"] == [B1]
    # An admin over both clients names the one it means (or the group's one client).
    status, answer = await farm.call("boss", "POST", "/api/groups", {"name": "g", "kind": "phone"})
    assert status == 400 and answer["field"] == "$.client" and "several" in answer["error"]
    await farm.ok("boss", "POST", "/api/groups", {"name": "g", "kind": "phone", "client": B})
    await farm.ok("boss", "DELETE", "/api/groups/b_only")  # only B has it
    status, answer = await farm.call("boss", "DELETE", "/api/groups/vip")  # both have one
    assert status == 400 and answer["field"] == "$.client"
    both = await farm.ok("boss", "GET", "/api/groups")
    assert {(g["client"], g["name"]) for g in both["groups"] if g["type"] != "system"} == {
        (A, "vip"), (B, "vip"), (B, "g")}
    run = await farm.ok("boss", "POST", "/api/runs", {"sequence": "clipshare/login",
                                                      "scope": "group:vip"})
    assert sorted(run["executions"]) == sorted([A2, B1])
    assert (await farm.db.group_book(client_id(farm, B1))).groups["vip"].members == [B1]


async def test_v13_keeps_the_groups_of_an_older_database(tmp_path: Path, monkeypatch,
                                                         engine: str) -> None:
    if engine == "postgresql":
        pytest.skip("SQLite history: a PostgreSQL database starts at the newest version")
    monkeypatch.setattr(farm_db_module, "SCHEMA_VERSION", 12)
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    book = GroupBook.with_defaults()
    book.create("vip", "phone")
    book.add_member("vip", A1)
    book.create("front", "phone", parent="vip")
    book.add_member("front", A1)
    book.create("banned", "phone")
    book.excludes("vip", "banned")
    await db.save_group_book(book)
    await db.close()
    monkeypatch.undo()
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        shared = await db.group_book()
        assert shared.groups["front"].members == [A1] and shared.groups["front"].parent == "vip"
        assert [str(r) for r in shared.rules] == ["exclusivity set 'account_status'",
                                                  "rule excludes('vip', 'banned')"]
        # A client's book of the same names beside it; saving one leaves the other.
        await db.upsert_client("Acme")
        acme = (await db.client_row("Acme"))["client_id"]
        own = GroupBook.with_defaults()
        own.create("vip", "phone")
        await db.save_group_book(own, acme)
        assert (await db.group_book(acme)).groups["vip"].members == []
        assert (await db.group_book()).groups["vip"].members == [A1]
    finally:
        await db.close()


# --- definitions ------------------------------------------------------------------------


async def test_definitions_of_a_client_and_the_shared_library(farm: Farm) -> None:
    shared = await farm.ok("super", "POST", "/api/sequences", {"name": "clipshare/post_clip"})
    assert shared["client"] is None
    b_def = await farm.ok("b", "POST", "/api/sequences", {"name": "clipshare/login"})
    assert b_def["client"] == B
    # A reads the shared library and its own, never B's: B's name is free for A.
    for who in ("a", "a-viewer"):
        names = {d["name"]: d["client"] for d in
                 (await farm.ok(who, "GET", "/api/sequences"))["sequences"]}
        assert names == {"clipshare/post_clip": None}
        assert await same_as_missing(
            farm, who, "GET", "/api/sequences/clipshare/login",
            "/api/sequences/clipshare/nothing",
            secrets=[("clipshare/login", "clipshare/nothing")]) == 404
    for method in ("PUT", "DELETE"):
        assert await same_as_missing(
            farm, "a", method, "/api/sequences/clipshare/login",
            "/api/sequences/clipshare/nothing", {} if method == "PUT" else None,
            {} if method == "PUT" else None,
            secrets=[("clipshare/login", "clipshare/nothing")]) == 404
    a_def = await farm.ok("a", "POST", "/api/sequences", {"name": "clipshare/login",
                                                          "description": "A's"})
    assert a_def["client"] == A and a_def["sequence_def_id"] != b_def["sequence_def_id"]
    # The shared library is the super users' to change; another client is no owner.
    for method, body in (("PUT", {"description": "mine now"}), ("DELETE", None)):
        status, answer = await farm.call("a", method, "/api/sequences/clipshare/post_clip", body)
        assert status == 403 and "shared library" in answer["error"]
    status, answer = await farm.call("a", "POST", "/api/sequences",
                                     {"name": "clipshare/switch_account", "client": B})
    assert status == 400 and answer["field"] == "$.client"
    assert (await farm.call("a-viewer", "POST", "/api/sequences",
                            {"name": "clipshare/switch_account"}))[0] == 403
    updated = await farm.ok("a", "PUT", "/api/sequences/clipshare/login", {"description": "v2"})
    assert updated["version"] == 2 and updated["client"] == A
    # A's workflow uses its own login and the shared post_clip; B's login stays B's.
    flow = await farm.ok("a", "POST", "/api/workflows", {"name": "daily", "sequences": [
        {"sequence": "clipshare/login"}, {"sequence": "clipshare/post_clip"}]})
    assert flow["client"] == A
    assert [s["sequence_def_id"] for s in flow["sequences"]] == [
        a_def["sequence_def_id"], shared["sequence_def_id"]]
    b_view = await farm.ok("b", "GET", "/api/sequences/clipshare/login")
    assert b_view["version"] == 1 and b_view["description"] is None
    assert (await farm.ok("b", "GET", "/api/workflows"))["workflows"] == []
    await farm.ok("a", "DELETE", "/api/workflows/daily")
    retired = await farm.ok("a", "DELETE", "/api/sequences/clipshare/login")
    assert retired["status"] == "retired"
    assert (await farm.ok("b", "GET", "/api/sequences/clipshare/login"))["status"] == "active"
    # The super user sees every client's; an admin over both names the client it means.
    every = (await farm.ok("super", "GET", "/api/sequences"))["sequences"]
    assert sorted((d["name"], d["client"]) for d in every) == [
        ("clipshare/login", B), ("clipshare/post_clip", None)]
    status, answer = await farm.call("boss", "POST", "/api/sequences", {"name": "clipshare/switch_account"})
    assert status == 400 and answer["field"] == "$.client" and "several" in answer["error"]
    made = await farm.ok("boss", "POST", "/api/sequences", {"name": "clipshare/switch_account",
                                                            "client": A})
    assert made["client"] == A


async def test_farm_groups_takes_the_client(farm: Farm, tmp_path: Path, monkeypatch,
                                            capsys) -> None:
    from actors.control.cli import main

    url = str(farm.client.make_url("")).rstrip("/")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PHONEFARM_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("PHONEFARM_TOKEN", farm.tokens["boss"])  # an admin over A and B

    async def farm_cli(*argv: str) -> int:
        return await asyncio.to_thread(main, ["--url", url, *argv])

    assert await farm_cli("groups", "add", "vip", "phone") == 2  # a 400: name the client
    assert "several clients" in capsys.readouterr().err
    assert await farm_cli("groups", "add", "vip", "phone", "--client", B) == 0
    assert await farm_cli("groups", "member", "add", "vip", B1, "--client", B) == 0
    assert await farm_cli("groups", "member", "add", "vip", A1) == 2  # only B has a vip
    assert "no such phone" in capsys.readouterr().err
    assert await farm_cli("groups", "list", "--client", B) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "CLIENT"]
    assert any(line.split()[:2] == ["vip", B] and B1 in line for line in lines), lines
    assert (await farm.db.group_book(client_id(farm, B1))).groups["vip"].members == [B1]
