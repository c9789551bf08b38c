"""Installing apps across the farm, and keeping them at their pinned versions (issue 20.2/20.3).

`AppService` owns install and uninstall orchestration: the APK library's files of a version
(`ApkLibrary.files_for`) are pushed to each node once (``ApkHave``, then ``ApkPut`` chunks
of the files the node's cache lacks), then one ``InstallApp`` (or ``UninstallApp``) per
phone; the node answers at once and reports ``app_install_finished`` when the phone is done.
Each phone's state is a row of ``app_install_phones`` (actors.coordinator.apps_store), moved
by the coordinator (pending, sending, installing, or failed when the node cannot be reached
or refuses) and by the node's events (ok / failed with the phone's reason). It also keeps
the inventory (``apps_inventory`` events into ``phone_packages``), computes which phones
drifted from their pins, and with ``--apps-reconcile-at HH:MM`` installs the pinned version
where one drifted, every day at that UTC time.

Node events arrive as a hub event observer (`Hub.event_observers`: told every emitted event,
none dropped, unlike a stream subscriber's bounded queue, which would lose an install's end
under load), handled without waiting; the node's progress events reach the stream as they
are (the hub relays every node event).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time as clock
import uuid
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Any, Callable, Iterable

from actors.coordinator.time_of_day import parse_time_of_day
from actors.coordinator.apps_store import (FAILED, INSTALLING, OK, PENDING, SENDING, TERMINAL,
                                           AppStore)
from protocol.errors import FarmError, ValidationError
from protocol.messages import (MAX_APK_CHUNK, ApkFileRef, ApkHave, ApkPut, Command, InstallApp,
                               UninstallApp)
from protocol.transport import DeliveryError

log = logging.getLogger(__name__)

CHUNK = MAX_APK_CHUNK     # ApkPut carries at most 4 MiB (the link's messages are <= 16 MiB)
INSTALL_LEASE_S = 900.0   # the phone's lock for an install; also how long we wait for its end
PUSH_DEADLINE_S = 120.0   # one ApkPut chunk's delivery deadline
FINISH_GRACE_S = 30.0     # after the lease: a phone never reported is failed


def parse_reconcile_at(value: str | None) -> time | None:
    """``--apps-reconcile-at HH:MM`` (24-hour, UTC); None when unset."""
    return parse_time_of_day(value, "UTC")


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def describe_file(apk: Any) -> dict[str, Any]:
    """One library file as InstallApp names it: sha256, name, split, abi, density, size,
    plus its path, package and version (from the file row, else its ApkInfo)."""
    info = _get(apk, "info")
    pick = lambda name: _get(apk, name, _get(info, name))  # noqa: E731
    split = pick("split")
    abis = tuple(pick("abis") or ())
    densities = tuple(pick("densities") or ())
    # A config split carries one ABI or one density; the base carries none for the node
    # to choose by (its own lib/ entries are the phone's business).
    abi = abis[0] if split and len(abis) == 1 else None
    density = densities[0] if split and len(densities) == 1 and abi is None else None
    path = pick("path")
    sha = pick("sha256")
    return {"sha256": sha, "name": pick("name") or pick("entry_name")
            or (f"{split}.apk" if split else "base.apk"),
            "split": split, "abi": abi, "density": density, "size": int(pick("size") or 0),
            "path": str(path) if path is not None else None, "package": pick("package"),
            "version_code": pick("version_code"), "version_name": pick("version_name")}


@dataclass
class Install:
    """One install or uninstall in flight: its phones' states, in memory for progress."""

    install_id: str
    kind: str
    app: str
    package: str
    version: str | None
    version_code: int | None
    phones: dict[str, dict[str, Any]]
    created_at: float = field(default_factory=clock.time)
    pushed_bytes: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check_done(self) -> None:
        if all(p["state"] in TERMINAL for p in self.phones.values()):
            self.done.set()

    def view(self) -> dict[str, Any]:
        states = [p["state"] for p in self.phones.values()]
        return {"install_id": self.install_id, "kind": self.kind, "app": self.app,
                "package": self.package, "version": self.version,
                "version_code": self.version_code, "pushed_bytes": self.pushed_bytes,
                "finished": self.done.is_set(),
                "counts": {s: states.count(s) for s in sorted(set(states))},
                "phones": {s: dict(p) for s, p in sorted(self.phones.items())}}


class AppService:
    """Owns installs in flight, the inventory's intake, pins' drift and the daily reconcile."""

    def __init__(self, hub: Any, db: Any, library: Any = None, *, at: time | None = None,
                 lease_s: float = INSTALL_LEASE_S, chunk: int = CHUNK,
                 now: Callable[[], datetime] | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.hub = hub
        self.db = db
        self.store = AppStore(db)
        self.library = library
        self.at = at
        self.lease_s = lease_s
        self.chunk = chunk
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._sleep = sleep
        self.installs: dict[str, Install] = {}
        # Bytes of APK data sent to nodes since start (the bench's figure), by node.
        self.bytes_to_node: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._inventory_due: dict[str, dict] = {}
        self._inventory_wake = asyncio.Event()
        self._push_locks: dict[str, asyncio.Lock] = {}

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> "AppService":
        # A phone whose install this coordinator had not handed to its node when it stopped
        # (pending, sending) will not get it now; one installing is finished by the node's
        # event, which the journal delivers whenever the node reconnects.
        for row in await self.store.unfinished():
            if row["state"] in (PENDING, SENDING):
                await self.store.set_state(row["install_id"], row["serial"], FAILED,
                                           "the coordinator stopped before the node had it")
        self.hub.event_observers.append(self._take)
        self._spawn(self._write_inventory())
        return self

    async def close(self) -> None:
        if self._take in self.hub.event_observers:
            self.hub.event_observers.remove(self._take)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("apps: background work failed: %r", task.exception())

    # --- the node's events -----------------------------------------------------------------
    def _take(self, item: dict) -> None:
        try:
            self.observe(item["event"], item.get("serial"), item.get("data") or {})
        except Exception:  # noqa: BLE001 - one bad event must not stop the hub's emit
            log.exception("apps: event %s not taken", item.get("event"))

    def observe(self, event: str, serial: str | None, data: dict) -> None:
        """One emitted event; never awaits (called inside the hub's emit)."""
        if event == "apps_inventory":
            serial = serial or data.get("serial")
            if serial and isinstance(data.get("packages"), dict):
                self._inventory_due[serial] = data["packages"]  # the newest report wins
                self._inventory_wake.set()
        elif event == "app_install_progress":
            install = self.installs.get(data.get("install_id") or "")
            phone = install.phones.get(serial or data.get("serial") or "") if install else None
            if phone is not None and phone["state"] not in TERMINAL:
                phone["bytes_sent"] = int(data.get("bytes_sent") or 0)
                phone["bytes_total"] = int(data.get("bytes_total") or 0)
                phone["stage"] = data.get("stage")
        elif event == "app_install_finished":
            serial = serial or data.get("serial")
            if serial and data.get("install_id"):
                ok = data.get("status") == "ok"
                self._spawn(self._finish(data["install_id"], serial, OK if ok else FAILED,
                                         None if ok else (data.get("reason") or "failed"),
                                         data.get("splits")))

    async def _write_inventory(self) -> None:
        while True:
            await self._inventory_wake.wait()
            self._inventory_wake.clear()
            while self._inventory_due:
                serial, packages = self._inventory_due.popitem()
                try:
                    await self.store.replace_inventory(serial, packages)
                except FarmError as exc:
                    log.error("apps: inventory of %s not stored: %s", serial, exc)

    async def _finish(self, install_id: str, serial: str, state: str, reason: str | None,
                      splits: list[str] | None = None) -> None:
        moved = await self.store.set_state(install_id, serial, state, reason, splits)
        install = self.installs.get(install_id)
        phone = install.phones.get(serial) if install else None
        if phone is not None and phone["state"] not in TERMINAL:
            phone.update(state=state, reason=reason)
            if splits is not None:
                phone["splits"] = list(splits)
            if state == OK and phone.get("bytes_total"):
                phone["bytes_sent"] = phone["bytes_total"]
            install.check_done()
        if moved and phone is None:
            log.info("apps: %s of %s finished %s after this coordinator started", install_id,
                     serial, state)

    async def _move(self, install: Install, serial: str, state: str,
                    reason: str | None = None) -> None:
        """A coordinator-side move of one phone (stored, told on the stream)."""
        phone = install.phones[serial]
        if phone["state"] in TERMINAL:
            return
        phone.update(state=state, reason=reason)
        await self.store.set_state(install.install_id, serial, state, reason)
        self.hub.emit("app_install_state", phone.get("node"), serial,
                      {"install_id": install.install_id, "state": state, "reason": reason})
        install.check_done()

    # --- installing ------------------------------------------------------------------------
    async def files(self, app: str, version: str) -> list[dict[str, Any]]:
        """The library's files of ``app`` at ``version`` (name or code), described."""
        if self.library is None:
            raise FarmError("this coordinator has no APK library")
        found = self.library.files_for(app, version)
        if inspect.isawaitable(found):
            found = await found
        # OBB files of a bundle are not installed by pm (they are copied to the phone's
        # storage), and that is not done yet: the APKs only.
        files = [describe_file(f) for f in found or () if _get(f, "kind", "apk") != "obb"]
        if not files:
            raise ValidationError("$.version", f"the library has no {app} {version}")
        return files

    async def install(self, app: str, version: str, serials: list[str], *,
                      allow_downgrade: bool = False, actor: str | None = None,
                      client_of: Callable[[str], int | None] = lambda s: None) -> Install:
        """Start installing ``app`` ``version`` on ``serials``; answered once recorded,
        the work goes on in the background."""
        files = await self.files(app, version)
        base = next((f for f in files if not f["split"]), files[0])
        install = self._new("install", app, base["package"], base["version_name"] or version,
                            base["version_code"], serials)
        await self._record(install, allow_downgrade, actor, client_of)
        self._spawn(self._run(install, files, allow_downgrade))
        return install

    async def uninstall(self, app: str, package: str, serials: list[str], *,
                        actor: str | None = None,
                        client_of: Callable[[str], int | None] = lambda s: None) -> Install:
        install = self._new("uninstall", app, package, None, None, serials)
        await self._record(install, False, actor, client_of)
        self._spawn(self._run(install, [], False))
        return install

    def _new(self, kind: str, app: str, package: str, version: str | None,
             version_code: Any, serials: list[str]) -> Install:
        install_id = f"in-{uuid.uuid4().hex[:12]}"
        phones = {s: {"serial": s, "node": self.hub.phone_rows.get(s, {}).get("node"),
                      "state": PENDING, "reason": None, "bytes_sent": 0, "bytes_total": 0,
                      "stage": None} for s in serials}
        install = Install(install_id, kind, app, package, version,
                          int(version_code) if version_code is not None else None, phones)
        if not phones:
            install.done.set()
        self.installs[install_id] = install
        return install

    async def _record(self, install: Install, allow_downgrade: bool, actor: str | None,
                      client_of: Callable[[str], int | None]) -> None:
        await self.store.add_install([
            {"install_id": install.install_id, "serial": s, "client_id": client_of(s),
             "node": p["node"], "kind": install.kind, "app": install.app,
             "package": install.package, "version": install.version,
             "version_code": install.version_code, "allow_downgrade": allow_downgrade,
             "created_by": actor} for s, p in install.phones.items()])
        self.hub.emit("app_install_started", None, None, {
            "install_id": install.install_id, "kind": install.kind, "app": install.app,
            "version": install.version, "phones": len(install.phones)})

    async def _run(self, install: Install, files: list[dict], allow_downgrade: bool) -> None:
        by_node: dict[str, list[str]] = {}
        for serial, phone in install.phones.items():
            node = phone["node"]
            if node is None or self.hub.node_rows.get(node, {}).get("state") != "up":
                await self._move(install, serial, FAILED,
                                 f"node {node} of phone {serial} is down" if node
                                 else f"phone {serial} is on no node")
            else:
                by_node.setdefault(node, []).append(serial)
        await asyncio.gather(*(self._run_node(install, node, serials, files, allow_downgrade)
                               for node, serials in by_node.items()))
        try:
            await asyncio.wait_for(install.done.wait(), self.lease_s + FINISH_GRACE_S)
        except asyncio.TimeoutError:
            for serial, phone in install.phones.items():
                if phone["state"] not in TERMINAL:
                    await self._move(install, serial, FAILED, "no result from the node within "
                                     f"{self.lease_s + FINISH_GRACE_S:.0f} s")
        log.info("apps: %s %s %s finished: %s", install.kind, install.app, install.install_id,
                 install.view()["counts"])
        self.hub.emit("app_install_done", None, None, {k: v for k, v in install.view().items()
                                                        if k != "phones"})

    async def _run_node(self, install: Install, node: str, serials: list[str],
                        files: list[dict], allow_downgrade: bool) -> None:
        if files:
            for serial in serials:
                await self._move(install, serial, SENDING)
            try:
                await self.push(node, files, install)
            except (FarmError, DeliveryError, OSError) as exc:
                for serial in serials:
                    await self._move(install, serial, FAILED, f"sending the APK to node "
                                     f"{node} failed: {exc}")
                return
        await asyncio.gather(*(self._start_phone(install, node, s, files, allow_downgrade)
                               for s in serials))

    async def _start_phone(self, install: Install, node: str, serial: str, files: list[dict],
                           allow_downgrade: bool) -> None:
        if install.kind == "install":
            message = InstallApp(
                install_id=install.install_id, package=install.package,
                version_code=install.version_code,
                files=[ApkFileRef(**{k: f[k] for k in ("sha256", "name", "size", "split", "abi",
                                                       "density")}) for f in files],
                allow_downgrade=allow_downgrade, lease_s=self.lease_s)
        else:
            message = UninstallApp(install_id=install.install_id, package=install.package)
        try:
            result = await self._command(node, serial, message, 30.0)
            if result.status == "missing_apk" and files:
                # The node's cache lost a file since ApkHave (a disk cleaned): once more.
                await self.push(node, files, install)
                result = await self._command(node, serial, message, 30.0)
        except (DeliveryError, FarmError, OSError) as exc:
            await self._move(install, serial, FAILED, str(exc))
            return
        if result.status == "ok":
            await self._move(install, serial, INSTALLING)
        else:
            await self._move(install, serial, FAILED, f"{result.status}: "
                             f"{result.error or result.data.get('reason') or ''}".rstrip(": "))

    async def push(self, node: str, files: list[dict], install: Install | None = None) -> int:
        """Send ``node`` the files its cache lacks (asked with ApkHave), in ApkPut chunks;
        the bytes sent. One push per node at a time: installs started together (a run's
        ensure_app on many phones) find the files there after the first."""
        lock = self._push_locks.setdefault(node, asyncio.Lock())
        async with lock:
            return await self._push(node, files, install)

    async def _push(self, node: str, files: list[dict], install: Install | None) -> int:
        have = await self._command(node, "", ApkHave(sha256s=[f["sha256"] for f in files]),
                                   30.0)
        if have.status != "ok":
            raise FarmError(f"ApkHave {have.status}: {have.error}")
        missing = set(have.data.get("missing") or ())
        sent = 0
        for f in files:
            if f["sha256"] not in missing:
                continue
            if not f.get("path"):
                raise FarmError(f"the library has no file for {f['name']} ({f['sha256']})")
            sent += await self._put(node, f, install)
        return sent

    async def _put(self, node: str, f: dict, install: Install | None) -> int:
        size, offset = f["size"], 0
        with open(f["path"], "rb") as fh:  # noqa: ASYNC230 - opening only; reads below
            while True:
                data = await asyncio.to_thread(fh.read, self.chunk)
                if not data and offset < size:  # the library's file is shorter than its row
                    raise FarmError(f"{f['name']}: the library's file ends at {offset} of "
                                    f"{size} bytes ({f['path']})")
                last = offset + len(data) >= size
                result = await self._command(node, "", ApkPut(
                    sha256=f["sha256"], size=size, offset=offset, data=data, last=last),
                    PUSH_DEADLINE_S)
                if result.status != "ok":
                    raise FarmError(f"ApkPut {f['name']} at {offset}: {result.status}: "
                                    f"{result.error}")
                offset += len(data)
                self.bytes_to_node[node] = self.bytes_to_node.get(node, 0) + len(data)
                if install is not None:
                    install.pushed_bytes += len(data)
                if last:
                    return offset

    async def _command(self, node: str, serial: str, message: Any, deadline: float):
        command = Command(command_id=uuid.uuid4().hex, serial=serial, action=message)
        return await self.hub.link.send_command(node, command, deadline=deadline)

    def view(self, install_id: str) -> dict[str, Any] | None:
        install = self.installs.get(install_id)
        return install.view() if install is not None else None

    # --- pins and drift --------------------------------------------------------------------
    async def expected(self, serials: Iterable[str],
                       pins: list[dict[str, Any]]) -> dict[str, dict[str, dict]]:
        """{serial: {package: pin}} of ``serials``: a group's pin over its client's."""
        serials = set(serials)
        out: dict[str, dict[str, dict]] = {s: {} for s in serials}
        owners = getattr(self.hub, "owners", None)
        for pin in sorted(pins, key=lambda p: p["group_name"] is not None):
            if pin["group_name"] is None:
                members = {s for s in serials if owners is not None
                           and owners.client_id(s) == pin["client_id"]}
            else:
                members = set(await self.group_members(pin["group_name"], pin["client_id"]))
            for serial in members & serials:
                out[serial][pin["package"]] = pin
        return out

    async def group_members(self, name: str, client_id: int | None) -> list[str]:
        """The phones of group ``name`` in the book of ``client_id`` (None: the shared
        book), resolved as a run's ``group:`` scope is."""
        runs = getattr(self.hub, "runs", None)
        if runs is None:
            return []
        clients = frozenset({client_id}) if client_id is not None else None
        try:  # the run manager's own target resolution: the group's rules and members
            found = await runs._targets(f"group:{name}", clients=clients)
        except FarmError as exc:
            log.warning("apps: group %s of the pins: %s", name, exc)
            return []
        return [serial for serial, _ in found]

    async def drift(self, serials: Iterable[str],
                    clients: frozenset[int] | None = None) -> list[dict[str, Any]]:
        """Every phone of ``serials`` whose installed version of a pinned package differs
        from its pin: serial, package, app, pinned version and code, installed (or None)."""
        serials = list(serials)
        pins = await self.store.pins(clients)
        expected = await self.expected(serials, pins)
        packages = {p["package"] for p in pins}
        rows = await self.store.inventory(serials, packages, clients) if packages else []
        have = {(r["serial"], r["package"]): r for r in rows}
        out = []
        for serial in sorted(expected):
            for package, pin in sorted(expected[serial].items()):
                row = have.get((serial, package))
                if row is None or int(row["version_code"]) != int(pin["version_code"]):
                    out.append({"serial": serial, "package": package, "app": pin["app"],
                                "pinned": pin["version"], "pinned_code": pin["version_code"],
                                "installed": row["version_name"] if row else None,
                                "installed_code": row["version_code"] if row else None})
        return out

    async def reconcile(self, actor: str = "apps-reconcile") -> list[dict[str, Any]]:
        """Install the pinned version on every online phone that drifted (downgrades
        allowed: the pin is the version the farm's sequences were made for). One install
        per (app, version); the installs started."""
        online = [p["serial"] for p in self.hub.phones() if p.get("state") == "online"]
        todo: dict[tuple[str, str], list[str]] = {}
        for row in await self.drift(online):
            todo.setdefault((row["app"], row["pinned"]), []).append(row["serial"])
        started = []
        owners = getattr(self.hub, "owners", None)
        for (app, version), serials in sorted(todo.items()):
            try:
                install = await self.install(
                    app, version, serials, allow_downgrade=True, actor=actor,
                    client_of=owners.client_id if owners is not None else (lambda s: None))
            except FarmError as exc:
                log.error("apps reconcile: %s %s not installed: %s", app, version, exc)
                continue
            started.append({"install_id": install.install_id, "app": app, "version": version,
                            "phones": serials})
        log.info("apps reconcile: %d installs for %d phones", len(started),
                 sum(len(s["phones"]) for s in started))
        return started

    async def loop(self) -> None:
        """With ``at``: every day at that UTC time, `reconcile`."""
        if self.at is None:
            return
        while True:
            now = self._now()
            due = now.replace(hour=self.at.hour, minute=self.at.minute, second=0,
                              microsecond=0)
            if due <= now:
                due += timedelta(days=1)
            while (left := (due - self._now()).total_seconds()) > 0:
                await self._sleep(min(left, 60.0))  # the clock is looked at every minute
            try:
                await self.reconcile()
            except FarmError as exc:
                log.error("apps reconcile failed: %s", exc)

    # --- a run's steps ---------------------------------------------------------------------
    async def ensure(self, serial: str, app: str, version: str) -> str | None:
        """An ``ensure_app`` step: ``serial`` gets ``app`` at ``version`` from the library
        unless its inventory shows that version already (downgrades allowed). None when the
        phone has it; else why not."""
        try:
            files = await self.files(app, version)
        except FarmError as exc:
            return f"ensure_app {app} {version}: {getattr(exc, 'reason', exc)}"
        base = next((f for f in files if not f["split"]), files[0])
        package, code = base["package"], int(base["version_code"])
        rows = await self.store.inventory([serial], [package])
        if rows and int(rows[0]["version_code"]) == code:
            return None
        owners = getattr(self.hub, "owners", None)
        install = await self.install(app, version, [serial], allow_downgrade=True,
                                     actor=f"ensure_app:{serial}",
                                     client_of=owners.client_id if owners is not None
                                     else (lambda s: None))
        await install.done.wait()
        phone = install.phones[serial]
        if phone["state"] != OK:
            return f"ensure_app {app} {version}: {phone['reason']}"
        # The node's own report follows; the run's next check must not read the old row.
        await self.store.set_package(serial, package, code, base["version_name"])
        return None

    async def version_refusal(self, serial: str, package: str, required: str) -> str | None:
        """Why ``serial`` may not run a sequence requiring ``package`` at ``required``
        (a version name or code), or None."""
        rows = await self.store.inventory([serial], [package])
        if not rows:
            return (f"phone {serial} has no {package} installed (the sequence requires "
                    f"version {required})")
        row = rows[0]
        if required in (str(row["version_name"]), str(row["version_code"])):
            return None
        return (f"phone {serial} has {package} {row['version_name']} ({row['version_code']}), "
                f"the sequence requires {required}")

