"""Installing apps over the farm (issue 20.2/20.3), the coordinator's side, on a real farm
database on both engines: each node is sent an APK once (ApkHave, then ApkPut chunks of
what it lacks), each phone its InstallApp; the install record follows the node's events
(an unplugged phone fails with its reason, the others succeed); the inventory is the
latest apps_inventory report; pins for a client or a group, the drift from them and the
reconcile that installs the pinned version; the API scoped to the caller's clients; a
sequence's ``requires_app_version`` refusal. The nodes here are a scripted stand-in that
answers the link's commands as the contract says (the real nodes and virtual phones are
tests/e2e/test_apps_e2e.py's)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from actors.access.principal import Principal
from actors.control import apps as apps_api
from actors.control.app import json_errors
from actors.control.auth import PRINCIPAL_KEY
from actors.control.http import HUB
from actors.coordinator import apps as apps_mod
from actors.coordinator.apps import AppService
from actors.store.farm_db import FarmDB

pytestmark = pytest.mark.usefixtures("engine")

PKG = "com.example.clipshare"


class FakeNodes:
    """The nodes' side of the link as the contract states it: an APK cache per node,
    InstallApp answered at once and finished by an event (through ``service.observe``)."""

    def __init__(self) -> None:
        self.cache: dict[str, set[str]] = {}
        self.parts: dict[tuple[str, str], bytearray] = {}
        self.put_bytes: dict[str, int] = {}
        self.unplugged: set[str] = set()
        self.installed: dict[str, dict[str, dict]] = {}
        self.service: AppService | None = None
        self.commands: list[tuple[str, str]] = []

    async def send_command(self, node: str, command: Any, deadline: float = 30.0) -> Any:
        msg = command.action
        kind = type(msg).__name__
        self.commands.append((node, kind))
        cache = self.cache.setdefault(node, set())
        if kind == "ApkHave":
            return _result(data={"missing": [s for s in msg.sha256s if s not in cache]})
        if kind == "ApkPut":
            part = self.parts.setdefault((node, msg.sha256), bytearray())
            assert msg.offset == len(part)
            part += msg.data
            self.put_bytes[node] = self.put_bytes.get(node, 0) + len(msg.data)
            if msg.last:
                assert hashlib.sha256(part).hexdigest() == msg.sha256
                cache.add(msg.sha256)
            return _result()
        if kind in ("InstallApp", "UninstallApp"):
            if command.serial in self.unplugged:
                return _result("gone", f"phone {command.serial} is not attached")
            asyncio.get_running_loop().call_later(0.01, self._finish, command.serial, msg)
            return _result()
        raise AssertionError(kind)

    def _finish(self, serial: str, msg: Any) -> None:
        packages = self.installed.setdefault(serial, {})
        if type(msg).__name__ == "InstallApp":
            assert all(f.sha256 in self.cache[node_of(serial)] for f in msg.files)
            packages[msg.package] = {"version_code": msg.version_code,
                                     "version_name": f"v{msg.version_code}"}
            splits = [f.name for f in msg.files]
        else:
            packages.pop(msg.package, None)
            splits = []
        self.service.observe("app_install_finished", serial, {
            "install_id": msg.install_id, "serial": serial, "package": msg.package,
            "status": "ok", "reason": None, "splits": splits})
        self.service.observe("apps_inventory", serial, {
            "serial": serial, "packages": dict(packages), "reason": "install"})


def node_of(serial: str) -> str:
    return "rack-a" if serial.startswith("A") else "rack-b"


def _result(status: str = "ok", error: str | None = None, data: dict | None = None) -> Any:
    return SimpleNamespace(status=status, error=error, data=data or {})


class Owners:
    def __init__(self, owners: dict[str, int]) -> None:
        self.owners = owners

    def client_id(self, serial: str) -> int | None:
        return self.owners.get(serial)


class FakeHub:
    """The hub's parts the apps service uses: phones, nodes, the link, the stream."""

    def __init__(self, serials: list[str], owners: dict[str, int], nodes: FakeNodes,
                 db: FarmDB) -> None:
        self.phone_rows = {s: {"serial": s, "node": node_of(s), "state": "online"}
                           for s in serials}
        self.node_rows = {"rack-a": {"state": "up"}, "rack-b": {"state": "up"}}
        self.link = nodes
        self.owners = Owners(owners)
        self.emitted: list[tuple[str, str | None, dict]] = []
        self.event_observers: list = []
        self.runs = None
        self._db = db

    def phones(self) -> list[dict]:
        return [dict(r) for r in self.phone_rows.values()]

    def farm_db(self) -> FarmDB:
        return self._db

    def emit(self, event: str, node: str | None, serial: str | None, data: dict) -> None:
        self.emitted.append((event, serial, data))
        for observe in list(self.event_observers):  # as Hub.emit tells its observers
            observe({"event": event, "node": node, "serial": serial, "data": data})


class FakeLibrary:
    """ApkLibrary.files_for as the contract states it: the files of an app's version."""

    def __init__(self, folder: Path) -> None:
        self.versions: dict[str, list[dict]] = {}
        for code, size in ((410, 300_000), (420, 5_000_000)):
            files = []
            for split, abi in ((None, None), ("config.arm64_v8a", "arm64-v8a")):
                data = (f"{code}{split}".encode() * 1000)[:size]
                path = folder / f"{code}-{split}.apk"
                path.write_bytes(data)
                files.append({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                              "path": path, "split": split, "abis": (abi,) if abi else (),
                              "densities": (), "package": PKG, "version_code": code,
                              "version_name": f"4.{code // 10 % 10}.0"})
            self.versions[f"4.{code // 10 % 10}.0"] = files

    def files_for(self, app: str, version: str) -> list[dict]:
        assert app == "clipshare"
        return self.versions.get(version, [])


@pytest.fixture
async def farm(db: FarmDB, tmp_path: Path) -> SimpleNamespace:
    acme = await db.upsert_client("Acme")
    globex = await db.upsert_client("Globex")
    await db._write("INSERT INTO app_registry (app_name, package_name) VALUES (?, ?)",
                    ("clipshare", PKG))
    serials = ["A1", "A2", "B1"]
    for serial, client in (("A1", acme), ("A2", globex), ("B1", acme)):
        await db.upsert_phone(serial, client=client)  # row security on PostgreSQL reads it
    nodes = FakeNodes()
    hub = FakeHub(serials, {"A1": acme, "A2": globex, "B1": acme}, nodes, db)
    service = await AppService(hub, db, FakeLibrary(tmp_path), chunk=1 << 20).start()
    nodes.service = service
    yield SimpleNamespace(db=db, hub=hub, nodes=nodes, service=service, acme=acme,
                          globex=globex)
    await service.close()


async def _finished(service: AppService, install_id: str) -> dict:
    await asyncio.wait_for(service.installs[install_id].done.wait(), 10)
    await asyncio.sleep(0.05)  # the rows' last writes
    return service.view(install_id)


async def test_each_node_gets_the_apk_once_and_an_unplugged_phone_fails_alone(farm) -> None:
    farm.nodes.unplugged.add("A2")
    install = await farm.service.install("clipshare", "4.2.0", ["A1", "A2", "B1"],
                                         client_of=farm.hub.owners.client_id, actor="test")
    view = await _finished(farm.service, install.install_id)
    assert view["counts"] == {"failed": 1, "ok": 2}
    assert view["phones"]["A2"]["state"] == "failed"
    assert "A2 is not attached" in view["phones"]["A2"]["reason"]
    size = sum(f["size"] for f in farm.service.library.versions["4.2.0"])
    # Sent once per node, not per phone: 5 MB in 1 MiB chunks to each of the two nodes.
    assert farm.nodes.put_bytes == {"rack-a": size, "rack-b": size}
    assert farm.service.bytes_to_node == {"rack-a": size, "rack-b": size}
    rows = {r["serial"]: r for r in await farm.service.store.install_rows(install.install_id)}
    assert {s: r["state"] for s, r in rows.items()} == {"A1": "ok", "A2": "failed", "B1": "ok"}
    assert rows["A1"]["splits"] == "base.apk,config.arm64_v8a.apk"
    assert rows["A1"]["client_id"] == farm.acme and rows["A1"]["created_by"] == "test"
    inventory = await farm.service.store.inventory(packages=[PKG])
    assert {(r["serial"], r["version_code"]) for r in inventory} == {("A1", 420), ("B1", 420)}
    # Again: the nodes hold the files already; nothing is sent but the per-phone commands.
    before = dict(farm.nodes.put_bytes)
    again = await farm.service.install("clipshare", "4.2.0", ["A1", "B1"])
    assert (await _finished(farm.service, again.install_id))["counts"] == {"ok": 2}
    assert farm.nodes.put_bytes == before
    # A node that is down: its phones fail at once, naming it.
    farm.hub.node_rows["rack-b"]["state"] = "down"
    down = await farm.service.install("clipshare", "4.1.0", ["B1"])
    view = await _finished(farm.service, down.install_id)
    assert view["phones"]["B1"]["reason"] == "node rack-b of phone B1 is down"


async def test_a_library_file_shorter_than_its_row_fails_the_install_naming_it(farm) -> None:
    # Before, the push read b"" at the file's end forever, sending empty chunks.
    base = farm.service.library.versions["4.1.0"][0]
    Path(base["path"]).write_bytes(Path(base["path"]).read_bytes()[:1000])
    install = await farm.service.install("clipshare", "4.1.0", ["A1"])
    view = await _finished(farm.service, install.install_id)
    assert view["counts"] == {"failed": 1}
    assert f"ends at 1000 of {base['size']} bytes" in view["phones"]["A1"]["reason"]


async def test_an_unknown_version_is_refused_before_anything_is_recorded(farm) -> None:
    with pytest.raises(apps_mod.ValidationError, match="no clipshare 9.9"):
        await farm.service.install("clipshare", "9.9", ["A1"])
    assert await farm.service.store.recent_installs() == []
    assert farm.nodes.commands == []


async def test_pins_drift_and_the_reconcile(farm) -> None:
    store = farm.service.store
    await store.replace_inventory("A1", {PKG: {"version_code": 430, "version_name": "4.3.0"},
                                         "com.android.settings": {"version_code": 34}})
    await store.replace_inventory("B1", {PKG: {"version_code": 410, "version_name": "4.1.0"}})
    await store.replace_inventory("A2", {})
    await store.pin(package=PKG, app="clipshare", version="4.1.0", version_code=410,
                    target=f"client:{farm.acme}", client_id=farm.acme, group_name=None,
                    actor="t")
    drift = await farm.service.drift(["A1", "A2", "B1"])
    # A1 moved ahead (an auto-update); B1 is at its pin; A2 is Globex's: no pin.
    assert [(d["serial"], d["installed"], d["pinned"]) for d in drift] == [
        ("A1", "4.3.0", "4.1.0")]
    assert await store.pinned_versions(PKG) == {"4.1.0"}
    started = await farm.service.reconcile()
    assert [(s["version"], s["phones"]) for s in started] == [("4.1.0", ["A1"])]
    await _finished(farm.service, started[0]["install_id"])
    assert await farm.service.drift(["A1", "A2", "B1"]) == []
    # The inventory report replaces the phone's rows whole.
    await store.replace_inventory("A1", {"com.other": {"version_code": 1}})
    assert [r["package"] for r in await store.inventory(["A1"])] == ["com.other"]


async def test_a_sequence_requiring_a_version_is_refused_naming_it(farm) -> None:
    await farm.service.store.replace_inventory(
        "A1", {PKG: {"version_code": 410, "version_name": "4.1.0"}})
    assert await farm.service.version_refusal("A1", PKG, "4.1.0") is None
    assert await farm.service.version_refusal("A1", PKG, "410") is None
    assert await farm.service.version_refusal("A1", PKG, "4.2.0") == (
        f"phone A1 has {PKG} 4.1.0 (410), the sequence requires 4.2.0")
    assert "has no" in await farm.service.version_refusal("B1", PKG, "4.2.0")


def _app(farm, principal: Principal) -> web.Application:
    @web.middleware
    async def caller(request: web.Request, handler):
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    app = web.Application(middlewares=[json_errors, caller])
    app[HUB] = farm.hub
    app[apps_api.APPS] = farm.service
    apps_api.add_routes(app)
    return app


async def test_the_api_keeps_a_tenant_to_its_clients_phones(farm) -> None:
    root = Principal(user_id=1, name="root", role="super")
    acme = Principal(user_id=2, name="acme", role="client", client_ids=frozenset({farm.acme}))
    async with TestClient(TestServer(_app(farm, root))) as c:
        bad = await c.post("/api/apps/install", json={"app": "clipshare", "version": "4.2.0",
                                                       "scope": "phone:"})
        assert bad.status == 400 and (await bad.json())["field"] == "$.scope"
        bad = await c.post("/api/apps/install", json={"app": "nope", "version": "4.2.0",
                                                       "scope": "phone:all"})
        assert bad.status == 400 and (await bad.json())["field"] == "$.app"
        bad = await c.post("/api/apps/install", json={"app": "clipshare", "version": "4.2.0",
                                                       "scope": "phone:all", "x": 1})
        assert bad.status == 400
        r = await c.post("/api/apps/install", json={"app": "clipshare", "version": "4.2.0",
                                                     "scope": "phone:all"})
        assert r.status == 202
        everyone = await r.json()
        assert everyone["phones"] == ["A1", "A2", "B1"] and everyone["version_code"] == 420
        await _finished(farm.service, everyone["install_id"])
    async with TestClient(TestServer(_app(farm, acme))) as c:
        r = await c.get(f"/api/apps/installs/{everyone['install_id']}")
        assert r.status == 200
        assert sorted((await r.json())["phones"]) == ["A1", "B1"]  # not Globex's A2
        r = await c.post("/api/apps/install", json={"app": "clipshare", "version": "4.1.0",
                                                     "scope": "phone:all"})
        mine = await r.json()
        assert r.status == 202 and mine["phones"] == ["A1", "B1"]
        await _finished(farm.service, mine["install_id"])
        inventory = await (await c.get("/api/apps/inventory")).json()
        assert inventory["phones"] == ["A1", "B1"]
        assert {r["serial"] for r in inventory["inventory"]} == {"A1", "B1"}
        r = await c.post("/api/apps/pins", json={"app": "clipshare", "version": "4.2.0",
                                                  "client": "Globex"})
        assert r.status == 400 and "no such client" in (await r.json())["error"]
        r = await c.post("/api/apps/pins", json={"app": "clipshare", "version": "4.2.0",
                                                  "client": "Acme"})
        assert r.status == 201
        pin = await r.json()
        outdated = await (await c.get("/api/apps/inventory?outdated=1")).json()
        assert sorted(d["serial"] for d in outdated["drift"]) == ["A1", "B1"]
        assert (await c.post("/api/apps/reconcile")).status == 403
        r = await c.delete(f"/api/apps/pins/{pin['pin_id']}")
        assert r.status == 200
        assert (await c.delete(f"/api/apps/pins/{pin['pin_id']}")).status == 404
    async with TestClient(TestServer(_app(farm, root))) as c:
        r = await c.get(f"/api/apps/installs/{mine['install_id']}")
        assert sorted((await r.json())["phones"]) == ["A1", "B1"]
        r = await c.post("/api/apps/uninstall", json={"app": "clipshare", "scope": "phone:B1"})
        assert r.status == 202
        gone = await r.json()
        await _finished(farm.service, gone["install_id"])
        assert await farm.service.store.inventory(["B1"], [PKG]) == []


async def test_ensure_app_installs_only_where_the_version_differs(farm) -> None:
    await farm.service.store.replace_inventory(
        "A1", {PKG: {"version_code": 410, "version_name": "4.1.0"}})
    await farm.service.store.replace_inventory(
        "B1", {PKG: {"version_code": 420, "version_name": "4.2.0"}})
    assert await farm.service.ensure("A1", "clipshare", "4.2.0") is None
    rows = await farm.service.store.inventory(["A1"], [PKG])
    assert rows[0]["version_code"] == 420
    sent = list(farm.nodes.commands)
    assert await farm.service.ensure("B1", "clipshare", "4.2.0") is None
    assert farm.nodes.commands == sent  # B1 had it: nothing sent
    assert await farm.service.ensure("B1", "clipshare", "9.9") == (
        "ensure_app clipshare 9.9: the library has no clipshare 9.9")
    farm.nodes.unplugged.add("A1")
    failure = await farm.service.ensure("A1", "clipshare", "4.1.0")
    assert failure.startswith("ensure_app clipshare 4.1.0: gone: ") and "A1" in failure


async def test_installs_started_together_push_to_a_node_once(farm) -> None:
    installs = await asyncio.gather(*(farm.service.install("clipshare", "4.2.0", [s])
                                      for s in ("A1", "A2", "B1")))
    for install in installs:
        await _finished(farm.service, install.install_id)
    size = sum(f["size"] for f in farm.service.library.versions["4.2.0"])
    assert farm.nodes.put_bytes == {"rack-a": size, "rack-b": size}


async def test_a_restart_fails_what_was_not_handed_to_a_node(farm) -> None:
    await farm.service.store.add_install([
        {"install_id": "in-old", "serial": s, "kind": "install", "app": "clipshare",
         "package": PKG, "state": state}
        for s, state in (("A1", "pending"), ("A2", "sending"), ("B1", "installing"))])
    restarted = await AppService(farm.hub, farm.db, farm.service.library).start()
    try:
        rows = {r["serial"]: r for r in await restarted.store.install_rows("in-old")}
        assert {s: r["state"] for s, r in rows.items()} == {
            "A1": "failed", "A2": "failed", "B1": "installing"}
        assert rows["A1"]["reason"] == "the coordinator stopped before the node had it"
        # The node's event still finishes the one it had.
        restarted.observe("app_install_finished", "B1", {"install_id": "in-old",
                                                         "status": "ok", "splits": []})
        await asyncio.sleep(0.2)
        rows = {r["serial"]: r for r in await restarted.store.install_rows("in-old")}
        assert rows["B1"]["state"] == "ok"
    finally:
        await restarted.close()


async def test_the_daily_reconcile_runs_at_its_utc_time(farm) -> None:
    from datetime import datetime, time, timedelta, timezone

    clock = [datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)]
    slept: list[float] = []
    runs: list[datetime] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    service = AppService(farm.hub, farm.db, farm.service.library, at=time(4, 30),
                         now=lambda: clock[0], sleep=sleep)

    async def reconcile(actor: str = "") -> list:
        runs.append(clock[0])
        if len(runs) == 2:
            raise StopAsyncIteration
        return []

    service.reconcile = reconcile
    with pytest.raises(StopAsyncIteration):
        await service.loop()
    assert runs == [datetime(2026, 12, 7, 4, 30, tzinfo=timezone.utc),
                    datetime(2026, 12, 8, 4, 30, tzinfo=timezone.utc)]
    assert max(slept) <= 60.0
