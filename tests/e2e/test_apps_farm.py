"""Apps across a real farm (issue 20.2-20.3): `farm-coordinator --demo` with its node and
virtual phones behind the real adb server. APKs made by tests/apk_factory.py are uploaded
to the library (POST /api/apks), installed with `farm apps install ... --wait` (an unplugged
phone fails with its reason, the others succeed; each node is sent the files once), the
inventory follows the nodes' reports, a client's pin shows the drift and the reconcile
installs the pinned version back, a downgrade without --allow-downgrade is refused with the
phone's words, a tenant installs on its own phones only, and a sequence requiring another
version of its app does not start, saying which. One farm for the module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.apk_factory import make_apk, make_xapk
from tests.e2e.demo_farm import DemoFarm, call
from tests.e2e.farm_auth import admin_token, sign_in_console

ROOT = Path(__file__).resolve().parents[2]
CLIPSHARE = "com.phonefarm.clipshare"
PHONES = 4


class AppsFarm(DemoFarm):
    """A demo coordinator (its node, 4 virtual phones) with its admin token and adb port."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, PHONES)
        self.token = self.admin_token
        self.serials = sorted(p["serial"] for p in self.phone_rows)
        self.acme = self.acme_phones
        assert len(self.serials) == PHONES, self.phone_rows

    def adb(self, *args: str) -> None:
        subprocess.run(["adb", "-P", str(self.adb_port), *args], capture_output=True,
                       timeout=30, check=True)

    def upload(self, blob: bytes, name: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{self.base}/api/apks?name={name}", data=blob, method="POST",
            headers={"Content-Type": "application/octet-stream",
                     "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            import json
            return response.status, json.load(response)

    def farm(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "PHONEFARM_TOKEN": token or self.token}
        return subprocess.run([sys.executable, "-m", "actors.control.cli", "--url", self.base,
                               *args], capture_output=True, text=True, timeout=120, env=env,
                              cwd=ROOT)

    def login(self, name: str) -> str:
        status, answer = call(self.base, "POST", "/api/login", None,
                              {"user": name, "password": self.passwords[name]})
        assert status == 200, answer
        return answer["token"]

    def installed(self, serial: str) -> dict | None:
        _, inv = call(self.base, "GET",
                      f"/api/apps/inventory?serial={serial}&package={CLIPSHARE}", self.token)
        return next((r for r in inv["inventory"] if r["package"] == CLIPSHARE), None)

    def wait_version(self, serials: list[str], code: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all((self.installed(s) or {}).get("version_code") == code for s in serials):
                return
            time.sleep(0.3)
        raise AssertionError({s: self.installed(s) for s in serials})

@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = AppsFarm(tmp_path_factory.mktemp("apps"))
    yield farm
    farm.stop()


def wait_install(farm: AppsFarm, install_id: str, token: str | None = None) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, view = call(farm.base, "GET", f"/api/apps/installs/{install_id}",
                            token or farm.token)
        assert status == 200, view
        if view["finished"]:
            return view
        time.sleep(0.2)
    raise AssertionError(view)


def test_install_over_the_farm_with_an_unplugged_phone(farm: AppsFarm) -> None:
    # The phones report what they have at connect: the demo's clipshare 4.1.0 (410).
    farm.wait_version(farm.serials, 410)
    base = make_apk(CLIPSHARE, 420, "4.2.0", size_pad=3_000_000)
    splits = {"config.arm64_v8a": make_apk(CLIPSHARE, 420, split="config.arm64_v8a",
                                           abis=("arm64-v8a",)),
              "config.x86_64": make_apk(CLIPSHARE, 420, split="config.x86_64",
                                        abis=("x86_64",))}
    status, added = farm.upload(make_xapk(base, splits, CLIPSHARE, 420, version_name="4.2.0"),
                                "clipshare-4.2.0.xapk")
    assert status == 201, added
    assert added["app"] == "clipshare" and added["version_code"] == 420
    unplugged = farm.serials[-1]
    farm.adb("disconnect", unplugged)
    try:
        done = farm.farm("apps", "install", "clipshare", "--version", "4.2.0", "phone:all",
                         "--wait")
    finally:
        farm.adb("connect", unplugged)
    # One phone failed: exit status 1, each phone's progress and result printed.
    assert done.returncode == 1, done.stdout + done.stderr
    install_id = re.search(r"^(in-\w+):", done.stdout, re.M).group(1)
    for serial in farm.serials[:-1]:
        assert re.search(rf"^{serial}: ok \(base\.apk,config\.arm64_v8a\.apk\)$", done.stdout,
                         re.M), done.stdout
    assert re.search(rf"^{unplugged}: failed: ", done.stdout, re.M), done.stdout
    view = wait_install(farm, install_id)
    assert view["counts"] == {"failed": 1, "ok": PHONES - 1}
    assert view["phones"][unplugged]["reason"]
    farm.wait_version(farm.serials[:-1], 420)
    # The stream carried the node's progress and results (the coordinator's own too).
    status, installs = call(farm.base, "GET", "/api/apps/installs", farm.token)
    assert installs["installs"][0]["install_id"] == install_id


def test_pins_drift_and_reconcile_and_a_refused_downgrade(farm: AppsFarm) -> None:
    status, added = farm.upload(make_apk(CLIPSHARE, 410, "4.1.0"), "clipshare-4.1.0.apk")
    assert status in (200, 201), added
    # Without --allow-downgrade a phone at 4.2.0 refuses 4.1.0 with its own words.
    phone = farm.serials[0]
    done = farm.farm("apps", "install", "clipshare", "--version", "4.1.0", f"phone:{phone}",
                     "--wait")
    assert done.returncode == 1 and "INSTALL_FAILED_VERSION_DOWNGRADE" in done.stdout, \
        done.stdout
    # Acme pins 4.1.0: its phones at 4.2.0 have drifted; the reconcile puts 4.1.0 back.
    pinned = farm.farm("apps", "pin", "clipshare", "4.1.0", "--client", "Acme")
    assert pinned.returncode == 0, pinned.stderr
    drifted = [s for s in farm.acme if (farm.installed(s) or {}).get("version_code") != 410]
    listed = farm.farm("apps", "list", "--outdated")
    assert listed.returncode == 0
    assert sorted(re.findall(r"^(\S+)\s+clipshare", listed.stdout, re.M)) == drifted
    status, answer = call(farm.base, "POST", "/api/apps/reconcile", farm.token, {})
    assert status == 200 and sorted(answer["installs"][0]["phones"]) == drifted, answer
    wait_install(farm, answer["installs"][0]["install_id"])
    farm.wait_version(farm.acme, 410)
    assert farm.farm("apps", "list", "--outdated").stdout.strip() == ""
    unpinned = farm.farm("apps", "unpin", "clipshare", "--client", "Acme")
    assert unpinned.returncode == 0, unpinned.stderr


def test_a_tenant_installs_on_its_phones_only(farm: AppsFarm) -> None:
    acme = farm.login("acme")
    status, answer = call(farm.base, "POST", "/api/apps/install", acme,
                          {"app": "clipshare", "version": "4.2.0", "scope": "phone:all",
                           "allow_downgrade": True})
    assert status == 202 and answer["phones"] == farm.acme, answer
    view = wait_install(farm, answer["install_id"], acme)
    assert sorted(view["phones"]) == farm.acme and view["counts"] == {"ok": len(farm.acme)}
    status, inventory = call(farm.base, "GET", "/api/apps/inventory", acme)
    assert inventory["phones"] == farm.acme
    viewer = farm.login("acme-viewer")
    status, _ = call(farm.base, "POST", "/api/apps/install", viewer,
                     {"app": "clipshare", "version": "4.2.0", "scope": "phone:all"})
    assert status == 403


def test_a_sequence_requiring_another_version_does_not_start(farm: AppsFarm) -> None:
    phone = farm.acme[0]
    farm.wait_version([phone], 420)
    sequence = {"name": "needs-4.1", "app": "clipshare", "requires_app_version": "4.1.0",
                "steps": [{"type": "sleep", "seconds": 0.1}]}
    status, run = call(farm.base, "POST", "/api/runs", farm.token,
                       {"sequence": sequence, "scope": f"phone:{phone}"})
    assert status in (200, 201, 202), run
    [execution] = run["executions"].values()
    assert execution["status"] == "failed"
    assert execution["error"] == (f"phone {phone} has {CLIPSHARE} 4.2.0 (420), the sequence "
                                  "requires 4.1.0"), execution

    # With an ensure_app step first, the coordinator installs 4.1.0, then the run starts.
    sequence = {**sequence, "name": "ensures-4.1", "steps": [
        {"type": "ensure_app", "app": "clipshare", "version": "4.1.0"},
        {"type": "sleep", "seconds": 0.1}]}
    status, run = call(farm.base, "POST", "/api/runs", farm.token,
                       {"sequence": sequence, "scope": f"phone:{phone}"})
    [execution] = run["executions"].values()
    assert status in (200, 201, 202) and execution["status"] == "pending", run
    farm.wait_version([phone], 410)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, done = call(farm.base, "GET", f"/api/executions/{execution['execution_id']}",
                       farm.token)
        if done.get("status") not in ("pending", "running"):
            break
        time.sleep(0.3)
    assert done["status"] == "completed", done
    # Put the phone back at 4.2.0 for the console's test.
    status, answer = call(farm.base, "POST", "/api/apps/install", farm.token,
                          {"app": "clipshare", "version": "4.2.0", "scope": f"phone:{phone}"})
    wait_install(farm, answer["install_id"])


CHROMIUM = "/usr/bin/chromium"


def test_the_console_apps_page_installs_with_progress(farm: AppsFarm) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("needs /usr/bin/chromium")
    admin_token(farm.data, farm.base)  # for sign_in_console
    farm.wait_version(farm.acme, 420)
    status, pin = call(farm.base, "POST", "/api/apps/pins", farm.token,
                       {"app": "clipshare", "version": "4.1.0", "client": "Acme"})
    assert status == 201, pin
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox"])
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                sign_in_console(context, farm.base)
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(farm.base + "/#apps")
                page.wait_for_selector("#apk-library td:has-text('4.2.0')")
                # Acme's phones run 4.2.0 against a 4.1.0 pin: their cells are highlighted.
                page.wait_for_selector("#app-matrix td.drift")
                drifted = page.eval_on_selector_all(
                    "#app-matrix tr", "rows => rows.filter(r => r.querySelector('td.drift'))"
                    ".map(r => r.dataset.serial)")
                assert sorted(drifted) == farm.acme
                for serial in farm.acme:
                    page.check(f"#app-matrix input[data-serial='{serial}']")
                page.select_option("#install-app", "clipshare@4.1.0")
                page.check("#install-downgrade")
                page.click("#install-button")
                page.wait_for_selector("#install-progress")
                page.wait_for_function(
                    "[...document.querySelectorAll('#install-progress .install-state')]"
                    f".filter(s => s.textContent === 'ok').length === {len(farm.acme)}",
                    timeout=60_000)
                values = page.eval_on_selector_all("#install-progress progress",
                                                   "bars => bars.map(b => b.value)")
                assert values == [100] * len(farm.acme)
                # The inventory follows: no drift left once the nodes have reported.
                page.wait_for_function("!document.querySelector('#app-matrix td.drift')",
                                       timeout=30_000)
                assert errors == []
            finally:
                browser.close()
    finally:
        call(farm.base, "DELETE", f"/api/apps/pins/{pin['pin_id']}", farm.token)
