"""The demo registry identifies what the real adb path delivers: a virtual phone's raw
screencap, taken by the device driver through a real adb server, at the registry's size and
on a phone of another size."""

from __future__ import annotations

import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver
from registry.load import DEMO_REGISTRY, load_registry
from registry.match import Matcher
from virtual.demo_registry import CLIPSHARE_PACKAGE
from virtual.farm import FarmSpec, VirtualFarm


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(load_registry(DEMO_REGISTRY))


@pytest.fixture(scope="module")
def small_farm(adb_server: AdbServer) -> VirtualFarm:
    """One 720x1600 phone beside the module's 1080x2400 ones, on the same adb server."""
    f = VirtualFarm(FarmSpec(phones=1, width=720, height=1600, seed=100, adb=adb_server)).start_in_thread()
    yield f
    f.stop_thread()


def identify(driver: DeviceDriver, matcher: Matcher) -> str:
    """What a phone actor does: the raw frame, scoped to the app in front."""
    return matcher.identify(driver.screenshot(), driver.current_app()[0]).label


@pytest.mark.parametrize("which", ["1080x2400", "720x1600"])
def test_driver_frames_are_identified(which: str, farm: VirtualFarm, small_farm: VirtualFarm,
                                      adb_server: AdbServer, matcher: Matcher) -> None:
    serial = farm.serials[0] if which == "1080x2400" else small_farm.serials[0]
    driver = DeviceDriver(serial, AdbServer(port=adb_server.port))
    width, height = (int(v) for v in which.split("x"))
    assert driver.window_size() == (width, height)
    assert driver.screenshot().shape == (height, width, 4)
    try:
        driver.key("HOME")
        assert identify(driver, matcher) == "launcher/home"
        driver.launch_app(CLIPSHARE_PACKAGE)
        assert identify(driver, matcher) == "clipshare/login"
        driver.shell("vphone popup rate_us")
        assert identify(driver, matcher) == "clipshare/interrupt:rate_us"
    finally:
        driver.stop_app(CLIPSHARE_PACKAGE)
