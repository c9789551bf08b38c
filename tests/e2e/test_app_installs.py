"""Issue 20, the node's side: virtual phones' package manager answering through the real adb
server, the driver's install sessions (abandoned on any failure), the node's APK cache and
InstallApp under the phone's lock."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import orjson
import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver
from actors.node.installs import pick_splits
from protocol.codec import make_command
from protocol.errors import DeviceError
from protocol.messages import ApkFileRef, ApkHave, ApkPut, InstallApp, UninstallApp
from tests.e2e.test_farm_inprocess import shutdown, start_farm, wait_for
from tests.apk_factory import make_apk

CLIPSHARE = "com.phonefarm.clipshare"


def apk(package: str, version: int, *, split: str | None = None, abis=(), pad: int = 0,
        density: str | None = None) -> bytes:
    """A real APK with a binary manifest (tests/apk_factory.py), as a phone reads it."""
    return make_apk(package, version, f"{version / 100:.2f}", split=split, abis=abis,
                    density=density, size_pad=pad)


def sessions(d: DeviceDriver) -> list[int]:
    return orjson.loads(d.shell("vphone sessions").stdout)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture()
def driver(farm, adb_server) -> DeviceDriver:
    return DeviceDriver(farm.serials[0], AdbServer(port=adb_server.port))


def test_pm_getprop_and_dumpsys_answer_like_a_phone(driver):
    assert driver.abi_list() == ["arm64-v8a", "armeabi-v7a", "armeabi"]
    assert driver.density() == 420
    listed = driver.shell("pm list packages --show-versioncode").text
    assert f"package:{CLIPSHARE} versionCode:410\n" in listed
    dump = driver.shell(f"dumpsys package {CLIPSHARE}").text
    assert "versionName=4.1.0" in dump and "versionCode=410 minSdk=" in dump
    assert driver.package_versions()[CLIPSHARE] == {"version_code": 410, "version_name": "4.1.0"}


def test_split_set_picked_for_the_phone_and_installed_in_one_session(driver, tmp_path):
    pkg = "com.example.splits"
    blobs = {"base.apk": apk(pkg, 200),
             "split_config.arm64_v8a.apk": apk(pkg, 200, split="config.arm64_v8a",
                                               abis=("arm64-v8a",)),
             "split_config.x86_64.apk": apk(pkg, 200, split="config.x86_64", abis=("x86_64",)),
             "split_config.xxhdpi.apk": apk(pkg, 200, split="config.xxhdpi", density="xxhdpi"),
             "split_config.mdpi.apk": apk(pkg, 200, split="config.mdpi", density="mdpi"),
             "split_feature.apk": apk(pkg, 200, split="feature")}
    meta = {"split_config.arm64_v8a.apk": ("config.arm64_v8a", "arm64-v8a", None),
            "split_config.x86_64.apk": ("config.x86_64", "x86_64", None),
            "split_config.xxhdpi.apk": ("config.xxhdpi", None, "xxhdpi"),
            "split_config.mdpi.apk": ("config.mdpi", None, "mdpi"),
            "split_feature.apk": ("feature", None, None)}
    refs = [ApkFileRef(sha256=hashlib.sha256(b).hexdigest(), name=n, size=len(b),
                       split=meta.get(n, (None,))[0], abi=meta.get(n, (None, None))[1],
                       density=meta.get(n, (None, None, None))[2]) for n, b in blobs.items()]
    picked = pick_splits(refs, driver.abi_list(), driver.density())
    assert [f.name for f in picked] == ["base.apk", "split_config.arm64_v8a.apk",
                                        "split_config.xxhdpi.apk", "split_feature.apk"]
    seen = []
    driver.install_named([(f.name, write(tmp_path, f.name, blobs[f.name])) for f in picked],
                         progress=lambda stage, sent, total: seen.append((stage, sent, total)))
    total = sum(len(blobs[f.name]) for f in picked)
    assert seen[-2:] == [("committing", total, total), ("committed", total, total)]
    assert driver.package_versions()[pkg] == {"version_code": 200, "version_name": "2.00"}
    paths = driver.shell(f"pm path {pkg}").text
    assert "split_config.arm64_v8a.apk" in paths and "x86_64" not in paths
    assert sessions(driver) == []
    driver.uninstall(pkg)
    assert pkg not in driver.package_versions()
    with pytest.raises(DeviceError, match="DELETE_FAILED_INTERNAL_ERROR"):
        driver.uninstall(pkg)


def test_refusals_use_the_package_managers_words_and_leave_no_session(driver, tmp_path):
    pkg = "com.example.refused"
    x86 = write(tmp_path, "x86.apk", apk(pkg, 1, abis=("x86_64",)))
    with pytest.raises(DeviceError, match=r"Failure \[INSTALL_FAILED_NO_MATCHING_ABIS: "):
        driver.install(x86)
    corrupt = write(tmp_path, "corrupt.apk", b"PK\x03\x04 this is no zip")
    with pytest.raises(DeviceError, match=r"Failure \[INSTALL_PARSE_FAILED_NOT_APK: "):
        driver.install(corrupt)
    cut = apk(pkg, 1, pad=4096)
    truncated = write(tmp_path, "truncated.apk", cut[:len(cut) // 2])
    with pytest.raises(DeviceError, match=r"Failure \[INSTALL_PARSE_FAILED_NOT_APK: "):
        driver.install(truncated)
    nameless = write(tmp_path, "nameless.apk", make_apk(None, 1))
    with pytest.raises(DeviceError, match=r"Failure \[INSTALL_PARSE_FAILED_BAD_PACKAGE_NAME: "):
        driver.install(nameless)
    base = write(tmp_path, "base.apk", apk(pkg, 1))
    other = write(tmp_path, "other.apk", apk("com.example.other", 1, split="config.xxhdpi"))
    with pytest.raises(DeviceError, match=r"Failure \[INSTALL_FAILED_INVALID_APK: .*Inconsistent "
                                          r"package com.example.other"):
        driver.install([base, other])
    assert sessions(driver) == []
    assert pkg not in driver.package_versions()


def test_downgrade_needs_allow_downgrade(driver, tmp_path):
    pkg = "com.example.versions"
    driver.install(write(tmp_path, "v3.apk", apk(pkg, 300)))
    old = write(tmp_path, "v2.apk", apk(pkg, 200))
    with pytest.raises(DeviceError, match=r"INSTALL_FAILED_VERSION_DOWNGRADE: Downgrade detected: "
                                          r"Update version code 200 is older than current 300"):
        driver.install(old)
    assert driver.package_versions()[pkg]["version_code"] == 300
    driver.install(old, allow_downgrade=True)
    assert driver.package_versions()[pkg]["version_code"] == 200
    assert sessions(driver) == []


def test_unplugged_mid_install_fails_with_the_reason_and_the_session_is_abandoned_later(
        farm, adb_server, tmp_path):
    serial = farm.serials[3]
    adb = AdbServer(port=adb_server.port)
    d = DeviceDriver(serial, adb)
    big = write(tmp_path, "big.apk", apk("com.example.big", 1, pad=24 << 20))
    pulled = []

    def progress(stage: str, sent: int, total: int) -> None:
        if not pulled:  # the cable goes after the first MiB
            pulled.append(sent)
            DeviceDriver(serial, adb).shell("vphone unplug 2")
            time.sleep(1.0)

    with pytest.raises(DeviceError) as info:
        d.install(big, progress=progress)
    assert info.value.open_session is not None  # the phone was away: it could not be told
    deadline = time.monotonic() + 30
    while adb.device_state(serial) != "device":
        assert time.monotonic() < deadline, "phone not back"
        time.sleep(0.2)
    back = DeviceDriver(serial, adb)
    assert sessions(back) == [int(info.value.open_session)]
    back.abandon_session(info.value.open_session)
    assert sessions(back) == []
    assert "com.example.big" not in back.package_versions()


# --- the node: APK cache and InstallApp under the phone's lock ---------------------------


async def test_node_apk_cache_and_install_app_under_the_lock(farm, adb_server, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path,
                                        node_options={"inventory_every_s": 2.0})
    try:
        await _node_cache_and_installs(store, node, farm.serials[1], farm.serials[2], tmp_path)
        await _unplugged_mid_install(store, node, farm.serials[1], farm.serials[2], adb_server)
    finally:
        await shutdown(node, hub, store)


async def _node_cache_and_installs(store, node, serial, other, tmp_path):
    async def run(serial_, action):
        return await node.on_command(make_command(serial_, action))

    pkg = "com.example.node"
    blob = apk(pkg, 500, pad=5 << 20)
    sha = hashlib.sha256(blob).hexdigest()
    cache_dir = tmp_path / "node" / "apk-cache-rack-a"
    assert (await run("", ApkHave(sha256s=[sha]))).data == {"missing": [sha]}
    # A wrong hash keeps nothing: neither the file nor its part.
    wrong = "0" * 64
    half = len(blob) // 2
    assert (await run("", ApkPut(sha256=wrong, size=len(blob), offset=0,
                                 data=blob[:half]))).status == "ok"
    bad = await run("", ApkPut(sha256=wrong, size=len(blob), offset=half, data=blob[half:],
                               last=True))
    assert bad.status == "error" and "hash to " + sha in bad.error
    assert list(cache_dir.iterdir()) == []
    skipped = await run("", ApkPut(sha256=sha, size=len(blob), offset=half, data=blob[half:]))
    assert skipped.status == "error" and "apk_put.offset" in skipped.error
    refs = [ApkFileRef(sha256=sha, name="base.apk", size=len(blob))]
    missing = await run(serial, InstallApp(install_id="i0", package=pkg, version_code=500,
                                           files=refs))
    assert missing.status == "missing_apk" and missing.data == {"missing": [sha]}
    for offset in range(0, len(blob), 4 << 20):
        chunk = blob[offset:offset + (4 << 20)]
        got = await run("", ApkPut(sha256=sha, size=len(blob), offset=offset, data=chunk,
                                   last=offset + len(chunk) == len(blob)))
        assert got.status == "ok", got
    assert (cache_dir / f"{sha}.apk").read_bytes() == blob
    assert (await run("", ApkHave(sha256s=[sha]))).data == {"missing": []}

    # A phone locked by an execution: the install is refused as locked.
    record = node.directory.record(other)
    await asyncio.to_thread(node.directory.get(other).proxy().acquire("exec-1", 60).get)
    locked = await run(other, InstallApp(install_id="i1", package=pkg, version_code=500,
                                         files=refs))
    assert locked.status == "locked" and locked.data["holder"] == "exec-1"
    await asyncio.to_thread(node.directory.get(other).proxy().release("exec-1").get)
    assert record.lock_holder is None

    started = await run(serial, InstallApp(install_id="i2", package=pkg, version_code=500,
                                           files=refs, lease_s=60))
    assert started.status == "ok", started
    assert node.directory.record(serial).lock_holder == "install:i2"
    # While it installs, an action of anybody else is refused as locked.
    again = await run(serial, InstallApp(install_id="i3", package=pkg, version_code=500,
                                         files=refs))
    assert again.status in ("locked", "ok")  # ok only if i2 already finished

    done = (await wait_for_async(lambda: _named(store, "app_install_finished", serial)))[-1]["data"]
    assert done["status"] == "ok" and done["splits"] == ["base.apk"] and done["install_id"] in (
        "i2", "i3")
    await wait_for(lambda: node.directory.record(serial).lock_holder is None, what="lock freed")
    inv = await wait_for_async(lambda: _named(store, "apps_inventory", serial, reason="install"))
    packages = inv[-1]["data"]["packages"]
    assert packages[pkg] == {"version_code": 500, "version_name": "5.00"}
    assert packages[CLIPSHARE]["version_code"] == 410
    connect = await _named(store, "apps_inventory", serial, reason="connect")
    assert connect, "an inventory at phone connect"
    await wait_for_async(lambda: _named(store, "apps_inventory", other, reason="hourly"))

    removed = await run(serial, UninstallApp(install_id="u1", package=pkg))
    assert removed.status == "ok"
    await wait_for_async(lambda: _named(store, "app_install_finished", serial, install_id="u1"))
    await wait_for(lambda: node.directory.record(serial).lock_holder is None, what="lock freed")


async def _unplugged_mid_install(store, node, pulled, kept, adb_server):
    """Two phones install a 12 MB APK; one loses its cable after its first MiB: it fails
    with the reason, the other succeeds, and once the phone is back the session the failure
    could not abandon is abandoned (no session left open)."""
    async def run(serial_, action):
        return await node.on_command(make_command(serial_, action))

    pkg = "com.example.unplugged"
    blob = apk(pkg, 700, pad=12 << 20)
    sha = hashlib.sha256(blob).hexdigest()
    for offset in range(0, len(blob), 4 << 20):
        chunk = blob[offset:offset + (4 << 20)]
        assert (await run("", ApkPut(sha256=sha, size=len(blob), offset=offset, data=chunk,
                                     last=offset + len(chunk) == len(blob)))).status == "ok"
    adb = AdbServer(port=adb_server.port)
    publish, cut, stale = node.installer.publish, [], []

    def publish_and_unplug(event, serial, data, durable):
        publish(event, serial, data, durable)
        if event == "app_install_finished" and serial == pulled:
            stale.append(set(node.installer.stale_sessions.get(pulled, ())))
        if event == "app_install_progress" and serial == pulled and not cut:
            cut.append(data["bytes_sent"])  # in the install's thread: the stream waits
            DeviceDriver(pulled, adb).shell("vphone unplug 2")
            time.sleep(1.0)

    node.installer.publish = publish_and_unplug
    try:
        refs = [ApkFileRef(sha256=sha, name="base.apk", size=len(blob))]
        for serial in (pulled, kept):
            started = await run(serial, InstallApp(install_id="cut", package=pkg,
                                                   version_code=700, files=refs))
            assert started.status == "ok", started
        done = await wait_for_async(lambda: _finished_both(store, "cut", pulled, kept))
    finally:
        node.installer.publish = publish
    assert cut and done[kept]["status"] == "ok"
    failed = done[pulled]
    assert failed["status"] == "failed" and failed["splits"] == ["base.apk"], failed
    assert "connection lost" in failed["reason"] or "device state" in failed["reason"] \
        or "no answer" in failed["reason"], failed
    assert len(stale) == 1 and len(stale[0]) == 1, "the session left open was kept to abandon"
    await wait_for(lambda: node.directory.record(pulled).lock_holder is None, what="lock freed")
    back = DeviceDriver(pulled, adb)
    await wait_for(lambda: adb.device_state(pulled) == "device", timeout=30, what="phone back")
    await wait_for_async(lambda: _named(store, "apps_inventory", pulled, reason="connect"),
                         timeout=30)

    def no_sessions():
        return not node.installer.stale_sessions.get(pulled) and \
            orjson.loads(back.shell("vphone sessions").stdout) == []
    await wait_for(lambda: no_sessions(), timeout=30, what="no install session left open")
    assert pkg not in back.package_versions()


async def _finished_both(store, install_id, *serials):
    found = {e["serial"]: e["data"] for e in await store.events("rack-a")
             if e["event"] == "app_install_finished" and e["data"].get("install_id") == install_id}
    return found if all(s in found for s in serials) else None


async def _named(store, name, serial, **match):
    return [e for e in await store.events("rack-a") if e["event"] == name
            and e["serial"] == serial and all(e["data"].get(k) == v for k, v in match.items())]


async def wait_for_async(make, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        got = await make()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)
