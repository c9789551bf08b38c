"""Installs, uninstalls and app inventories of a node's phones (issue 20).

Owns the node's side of `InstallApp` / `UninstallApp`: the phone's lock taken as
``install:<install_id>`` through its phone actor (the same lease rules as executions),
the choice of splits for the phone's ABI and density, the install session run from the
node's APK cache in a worker thread (never the node's loop, never the phone actor's thread:
a 50 MB APK takes seconds to cross USB), its progress (live ``app_install_progress``, at
most ~4 a second per phone), its outcome (durable ``app_install_finished``) and the lock's
release. Also the phones' inventories (durable ``apps_inventory``: at phone connect, after
every install or uninstall, and hourly) and install sessions a failed install could not
abandon because the phone had gone (abandoned as soon as the phone is back).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from actors.node.apk_cache import ApkCache
from actors.node.bridge import ask_actor, call_actor
from actors.node.rack import PhoneDirectory
from protocol.errors import DeviceError, FarmError, PhoneLocked, ValidationError
from protocol.messages import ApkFileRef, InstallApp, UninstallApp

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.25   # app_install_progress at most this often per phone (~4/s)
INVENTORY_EVERY_S = 3600.0
INSTALL_WORKERS = 16      # phones installing at once per node (USB bandwidth is shared anyway)
INVENTORY_WORKERS = 4

# Android's density buckets (dpi) as config splits name them.
DENSITY_DPI = {"ldpi": 120, "mdpi": 160, "tvdpi": 213, "hdpi": 240, "xhdpi": 320,
               "xxhdpi": 480, "xxxhdpi": 640}
_DPI = re.compile(r"^(\d+)dpi$")

Publish = Callable[[str, str | None, dict, bool], None]
Answer = tuple[str, str | None, dict]


def density_dpi(name: str) -> int | None:
    """A density split's dpi ("xxhdpi" 480, "420dpi" 420); None for a name that is none."""
    name = name.lower().removeprefix("config.")
    m = _DPI.match(name)
    return int(m.group(1)) if m else DENSITY_DPI.get(name)


def pick_splits(files: list[ApkFileRef], abilist: list[str], density: int) -> list[ApkFileRef]:
    """The APKs one phone gets: the base, the ABI split(s) of the first ABI of ``abilist``
    that has one, the density split closest to ``density`` (the higher of two as close) and
    every split that is for neither. ValidationError when there is no single base, or ABI
    splits but none for this phone (it would install without its native code)."""
    bases = [f for f in files if f.split is None]
    if len(bases) != 1:
        raise ValidationError("install_app.files", f"{len(bases)} base APKs (split null), "
                                                   "need exactly one")
    abi_splits = [f for f in files if f.split is not None and f.abi]
    dense = [f for f in files if f.split is not None and not f.abi and f.density]
    plain = [f for f in files if f.split is not None and not f.abi and not f.density]
    picked = [bases[0]]
    if abi_splits:
        offered = {f.abi for f in abi_splits}
        abi = next((a for a in abilist if a in offered), None)
        if abi is None:
            raise ValidationError(
                "install_app.files", f"INSTALL_FAILED_NO_MATCHING_ABIS: no split for the "
                f"phone's ABIs ({', '.join(abilist) or 'none reported'}); the app has "
                f"{', '.join(sorted(offered))}")
        picked += [f for f in abi_splits if f.abi == abi]
    rated = [(density_dpi(f.density), f) for f in dense]
    rated = [(dpi, f) for dpi, f in rated if dpi is not None]
    if rated:
        best = min(rated, key=lambda r: (abs(r[0] - density), -r[0]))[0]
        picked += [f for dpi, f in rated if dpi == best][:1]
    return picked + plain


class AppInstaller:
    """The node's installs and inventories (one per node; its coroutines run on the loop)."""

    def __init__(self, node: str, directory: PhoneDirectory, cache: ApkCache,
                 publish: Publish) -> None:
        self.node = node
        self.directory = directory
        self.cache = cache
        self.publish = publish
        # (install_id, serial) -> its task, while it runs (a re-sent command is not run twice).
        self.jobs: dict[tuple[str, str], asyncio.Task] = {}
        # serial -> install sessions left open by a failure the phone did not hear of.
        self.stale_sessions: dict[str, set[str]] = {}
        self._inventory_running: set[str] = set()
        self._installs = ThreadPoolExecutor(INSTALL_WORKERS, thread_name_prefix="install")
        self._inventories = ThreadPoolExecutor(INVENTORY_WORKERS, thread_name_prefix="inventory")
        self._tasks: set[asyncio.Task] = set()

    # --- commands ----------------------------------------------------------------------------
    async def install(self, serial: str, action: InstallApp) -> Answer:
        """Answer an InstallApp at once; the install runs on in the background."""
        try:
            missing = self.cache.missing([f.sha256 for f in action.files])
        except ValidationError as exc:
            return "error", str(exc), {}
        if missing:
            return "missing_apk", f"node {self.node} lacks {len(missing)} APK(s)", \
                {"missing": missing}
        if not action.files:
            return "error", "install_app.files: empty", {}
        return await self._start(serial, action.install_id, action.lease_s,
                                 lambda holder: self._install(serial, holder, action))

    async def uninstall(self, serial: str, action: UninstallApp) -> Answer:
        return await self._start(serial, action.install_id, action.lease_s,
                                 lambda holder: self._uninstall(serial, holder, action))

    async def _start(self, serial: str, install_id: str, lease_s: float,
                     work: Callable[[str], Any]) -> Answer:
        key = (install_id, serial)
        running = self.jobs.get(key)
        if running is not None and not running.done():
            return "ok", None, {"started": True, "already_running": True}
        record, ref = self.directory.record(serial), self.directory.get(serial)
        if record is None:
            return "error", f"phone {serial} is not on node {self.node}", {}
        if record.state == "paused":
            return "gone", f"phone {serial} is unplugged (paused)", {}
        if ref is None:
            why = "marked failed" if record.state == "failed" else "restarting after a crash"
            return "error", f"phone {serial} is {why}", {}
        holder = f"install:{install_id}"
        try:
            # In the phone actor's order, as a run's start: of two at once one is "locked".
            await call_actor(ref, "acquire", holder, lease_s)
        except PhoneLocked as exc:
            return "locked", str(exc), {"holder": exc.holder}
        except FarmError as exc:
            return "error", str(exc), {}
        task = asyncio.get_running_loop().create_task(work(holder))
        self.jobs[key] = task
        task.add_done_callback(lambda t: self.jobs.get(key) is t and self.jobs.pop(key))
        return "ok", None, {"started": True}

    # --- the work ------------------------------------------------------------------------------
    async def _install(self, serial: str, holder: str, action: InstallApp) -> None:
        loop = asyncio.get_running_loop()
        result: dict[str, Any] = {"install_id": action.install_id, "serial": serial,
                                  "package": action.package,
                                  "version_code": action.version_code, "splits": []}
        try:
            picked = await loop.run_in_executor(
                self._installs, self._install_blocking, serial, holder, action, result)
            result.update(status="ok", reason=None, splits=picked)
        except (FarmError, OSError) as exc:
            result.update(status="failed", reason=_reason(exc))
        except Exception as exc:  # noqa: BLE001 - a bug still ends as a failed install
            log.exception("phone=%s install %s crashed", serial, action.install_id)
            result.update(status="failed", reason=f"node error: {exc!r}")
        await self._finish(serial, holder, "app_install_finished", result)

    def _install_blocking(self, serial: str, holder: str, action: InstallApp,
                          result: dict) -> list[str]:
        driver = self._driver(serial)
        self._abandon_stale(serial, driver)
        picked = pick_splits(action.files, driver.abi_list(), driver.density())
        result["splits"] = [f.name for f in picked]
        last = {"at": 0.0, "renewed": time.monotonic()}

        def progress(stage: str, sent: int, total: int) -> None:
            now = time.monotonic()
            if stage == "sending" and sent < total and now - last["at"] < PROGRESS_EVERY_S:
                return
            last["at"] = now
            if stage != "committed":
                self.publish("app_install_progress", serial, {
                    "install_id": action.install_id, "serial": serial, "stage": stage,
                    "bytes_sent": sent, "bytes_total": total}, False)
            if now - last["renewed"] > action.lease_s / 3:  # a long install keeps its lock
                last["renewed"] = now
                self._renew(serial, holder, action.lease_s)

        try:
            driver.install_named([(f.name, self.cache.path(f.sha256)) for f in picked],
                                 allow_downgrade=action.allow_downgrade, progress=progress)
        except DeviceError as exc:
            session = getattr(exc, "open_session", None)
            if session is not None:
                self.stale_sessions.setdefault(serial, set()).add(session)
            raise
        return [f.name for f in picked]

    async def _uninstall(self, serial: str, holder: str, action: UninstallApp) -> None:
        result: dict[str, Any] = {"install_id": action.install_id, "serial": serial,
                                  "package": action.package, "version_code": None,
                                  "splits": [], "uninstall": True}
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._installs, lambda: self._driver(serial).uninstall(action.package))
            result.update(status="ok", reason=None)
        except FarmError as exc:
            result.update(status="failed", reason=_reason(exc))
        await self._finish(serial, holder, "app_install_finished", result)

    async def _finish(self, serial: str, holder: str, event: str, result: dict) -> None:
        """Report, free the phone, then take its inventory (what is installed now)."""
        self.publish(event, serial, result, True)
        log.info("phone=%s %s %s %s: %s%s", serial, "uninstall" if result.get("uninstall")
                 else "install", result["package"], result["install_id"], result["status"],
                 f" ({result['reason']})" if result.get("reason") else "")
        ref = self.directory.get(serial)
        if ref is not None:
            try:
                await call_actor(ref, "release", holder)
            except FarmError as exc:  # the lease still ends it
                log.warning("phone=%s lock %s not released: %s", serial, holder, exc)
        await self.inventory(serial, "install")

    def _renew(self, serial: str, holder: str, lease_s: float) -> None:
        ref = self.directory.get(serial)
        if ref is not None:
            try:
                ask_actor(ref, "acquire", holder, lease_s, timeout=30)
            except FarmError as exc:
                log.warning("phone=%s lock %s not renewed: %s", serial, holder, exc)

    def _driver(self, serial: str):
        driver = self.directory.driver(serial)
        if driver is None:
            raise DeviceError(serial, "install", f"phone {serial} has no driver (not attached)")
        return driver

    def _abandon_stale(self, serial: str, driver) -> None:
        for session in sorted(self.stale_sessions.get(serial, set())):
            driver.abandon_session(session)  # DeviceError: still away, kept for next time
            self.stale_sessions[serial].discard(session)
            log.info("phone=%s install session %s left open earlier: abandoned", serial, session)

    # --- inventories ---------------------------------------------------------------------------
    async def inventory(self, serial: str, reason: str) -> dict | None:
        """Read the phone's packages and versions and publish apps_inventory; None when the
        phone could not be read (logged) or an inventory of it is already running."""
        if serial in self._inventory_running:
            return None
        self._inventory_running.add(serial)
        try:
            driver = self._driver(serial)

            def read() -> dict:
                try:
                    self._abandon_stale(serial, driver)
                except DeviceError as exc:
                    log.warning("phone=%s stale install sessions not abandoned: %s", serial, exc)
                return driver.package_versions()

            packages = await asyncio.get_running_loop().run_in_executor(self._inventories, read)
        except FarmError as exc:
            log.warning("phone=%s inventory (%s) not taken: %s", serial, reason, exc)
            return None
        finally:
            self._inventory_running.discard(serial)
        data = {"serial": serial, "packages": packages, "reason": reason}
        self.publish("apps_inventory", serial, data, True)
        return data

    def phone_back(self, serial: str) -> None:
        """On the loop: a phone connected or came back; take its inventory."""
        task = asyncio.get_running_loop().create_task(self.inventory(serial, "connect"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def hourly(self, online: Callable[[], list[str]],
                     every_s: float = INVENTORY_EVERY_S) -> None:
        """Every ``every_s``: the inventory of every online phone."""
        while True:
            await asyncio.sleep(every_s)
            # One phone's unexpected failure must not end the hourly inventories.
            results = await asyncio.gather(*(self.inventory(s, "hourly") for s in online()),
                                           return_exceptions=True)
            for error in (r for r in results if isinstance(r, Exception)):
                log.error("hourly inventory failed: %r", error)

    def close(self) -> None:
        for task in list(self._tasks) + list(self.jobs.values()):
            task.cancel()
        self._installs.shutdown(wait=False, cancel_futures=True)
        self._inventories.shutdown(wait=False, cancel_futures=True)


def _reason(exc: BaseException) -> str:
    """A failure as an operator reads it: the package manager's words when it had some."""
    if isinstance(exc, DeviceError):
        return exc.reason
    return str(exc)
