"""Alerts on a real farm (issue 19.3): a `farm-coordinator --demo` process with an alerts
config whose channel is a real webhook server of the test; a phone unplugged with the real
adb (`adb disconnect`) is alerted with links and resolved when plugged back, a finished run
is notified, the rules API refuses a bad rule naming the field, tenants see and change only
their clients' rules and alerts, `farm alerts` lists, acks and silences, and a bad config
stops the coordinator with exit status 2 and one line. One farm for the module."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from actors.node.device.adb_server import free_port
from tests.e2e.alert_hook import HookServer, alerts_toml, matching
from tests.e2e.demo_farm import DemoFarm, call
from tests.e2e.farm_auth import admin_token, sign_in_console

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
RUN = {"name": "alert_probe", "steps": [{"type": "key", "key": "HOME"}]}


class AlertFarm(DemoFarm):
    """A demo coordinator started with ``--alerts-config`` (its webhook: ``hook``)."""

    def __init__(self, tmp: Path, hook: HookServer, phones: int = 3) -> None:
        config = tmp / "alerts.toml"
        config.write_text(alerts_toml(hook.url()))
        self.public = "http://farm.example:8470"
        super().__init__(tmp, phones, ("--alerts-config", str(config), "--public-url",
                                       self.public, "--retention", "off"))
        self.token = self.admin_token
        self.phones = self.phone_rows
        self.acme = self.acme_phones

    def login(self, user: str) -> str:
        status, answer = call(self.base, "POST", "/api/login", None,
                              {"user": user, "password": self.passwords[user]})
        assert status == 200, answer
        return answer["token"]

    def adb(self, *args: str) -> None:
        subprocess.run(["adb", "-P", str(self.adb_port), *args], capture_output=True,
                       timeout=30, check=True)

@pytest.fixture(scope="module")
def hook():
    server = HookServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def farm(tmp_path_factory, hook):
    farm = AlertFarm(tmp_path_factory.mktemp("alerts"), hook)
    yield farm
    farm.stop()


def test_an_unplugged_phone_is_alerted_with_links_and_resolved(farm: AlertFarm,
                                                               hook: HookServer) -> None:
    serial = farm.acme[0]
    farm.adb("disconnect", serial)
    [(_, alert)] = hook.wait_for(matching(kind="alert", title_has=serial))
    assert alert["client"] is None and alert["links"]["phone"].startswith(farm.public + "/")
    status, answer = call(farm.base, "GET", "/api/alerts?state=firing", farm.token)
    firing = [a for a in answer["alerts"] if a["subject"] == serial]
    assert status == 200 and len(firing) == 1 and firing[0]["rule"] == "unplugged"

    farm.adb("connect", serial)
    resolved = hook.wait_for(matching(kind="resolved", title_has=serial))
    assert len(resolved) == 1, hook.bodies()
    assert len(hook.bodies(matching(kind="alert", title_has=serial))) == 1  # fired once
    status, answer = call(farm.base, "GET", "/api/notifications", farm.token)
    assert answer["unread"] >= 2


def test_a_finished_run_is_notified(farm: AlertFarm, hook: HookServer) -> None:
    serial = next(p["serial"] for p in farm.phones if p["serial"] not in farm.acme)
    status, run = call(farm.base, "POST", "/api/runs", farm.token,
                       {"sequence": RUN, "scope": f"phone:{serial}"})
    assert status == 202, run
    [(_, notice)] = hook.wait_for(lambda b: b.get("kind") == "run_finished"
                                  and run["run_id"] in b.get("text", ""))
    assert notice["title"] == "Run inline/alert_probe completed"
    assert notice["links"]["executions"] == f"{farm.public}/#executions"


def test_the_rules_api_refuses_a_bad_rule_and_scopes_tenants(farm: AlertFarm) -> None:
    status, answer = call(farm.base, "POST", "/api/alerts/rules", farm.token,
                          {"name": "late", "kind": "scheduler_delay", "seconds": -3})
    assert status == 400 and answer["field"] == "$.seconds", answer
    status, answer = call(farm.base, "POST", "/api/alerts/rules", farm.token,
                          {"name": "late", "kind": "scheduler_delay", "window": 3})
    assert status == 400 and answer["field"] == "$.window", answer

    acme = farm.login("acme")
    status, answer = call(farm.base, "POST", "/api/alerts/rules", acme,
                          {"name": "acme-node", "kind": "node_down"})
    assert status == 403, answer
    status, mine = call(farm.base, "POST", "/api/alerts/rules", acme,
                        {"name": "acme-paused", "kind": "phone_paused"})
    assert status == 201 and mine["client"] == "Acme", mine
    status, rules = call(farm.base, "GET", "/api/alerts/rules", acme)
    assert [r["name"] for r in rules["rules"]] == ["acme-paused"]
    status, alerts = call(farm.base, "GET", "/api/alerts", acme)
    assert status == 200 and alerts["alerts"] == []  # the farm rule's alerts are the farm's
    status, answer = call(farm.base, "GET", "/api/alerts/channels", acme)
    assert status == 403
    status, answer = call(farm.base, "DELETE", "/api/alerts/rules/unplugged", acme)
    assert status == 404  # another's rule is like a missing one
    viewer = farm.login("acme-viewer")
    status, answer = call(farm.base, "POST", "/api/alerts/rules/acme-paused/silence", viewer,
                          {"for": "1h"})
    assert status == 403
    status, answer = call(farm.base, "POST", "/api/notifications/read", viewer, {"all": True})
    assert status == 200
    status, answer = call(farm.base, "DELETE", "/api/alerts/rules/acme-paused", acme)
    assert status == 200


def test_farm_alerts_lists_acks_and_silences(farm: AlertFarm) -> None:
    env = {**os.environ, "PHONEFARM_TOKEN": farm.token}

    def farm_cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "actors.control.cli", "--url", farm.base,
                              "alerts", *args], capture_output=True, text=True, env=env,
                             timeout=30, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = farm_cli("list")
    assert "unplugged" in listed and "runs-done" in listed
    alert_id = re.search(r"^\s*(\d+)\s", listed, re.M).group(1)
    assert "acked" in farm_cli("ack", alert_id)
    assert "silenced until" in farm_cli("silence", "unplugged", "--for", "2h")
    rules = json.loads(farm_cli("rules", "--json"))
    assert next(r for r in rules["rules"] if r["name"] == "unplugged")["silenced_until"]


def test_the_console_bell_alerts_page_and_execution_links(farm: AlertFarm) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("needs /usr/bin/chromium")
    admin_token(farm.data, farm.base)  # for sign_in_console
    serial = farm.acme[-1]
    status, run = call(farm.base, "POST", "/api/runs", farm.token,
                       {"sequence": RUN, "scope": f"phone:{serial}"})
    execution_id = run["executions"][serial]["execution_id"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            sign_in_console(context, farm.base)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(farm.base + "/#wall")
            page.wait_for_function("Number(document.getElementById('bell-count').textContent) > 0")
            farm.adb("disconnect", serial)  # a firing alert (its rule may be silenced: still listed)
            page.click("#bell")
            page.wait_for_selector("#alert-list button:has-text('Ack')")
            page.click("#alert-list button:has-text('Ack')")
            page.wait_for_function("[...document.querySelectorAll('#alert-list td')]"
                                   ".some((td) => td.textContent.startsWith('user:'))")
            # The rule and channel lists are fetched on their own: wait for each to be drawn.
            rule = page.locator("#rule-list td", has_text="unplugged")
            channel = page.locator("#channel-list td", has_text=re.compile("^hook$"))
            rule.first.wait_for(timeout=30000)
            channel.first.wait_for(timeout=30000)
            assert rule.count() == 1 and channel.count() == 1
            page.click("text=Mark all read")
            page.wait_for_function("document.getElementById('bell-count').hidden")
            page.goto(f"{farm.base}/#executions/{execution_id}")
            page.wait_for_selector(f"#execution-detail h3:has-text('{execution_id}')")
            assert errors == []
        finally:
            farm.adb("connect", serial)
            browser.close()


def test_a_bad_alerts_config_stops_the_coordinator_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "alerts.toml"
    config.write_text('[[rule]]\nname = "x"\nkind = "phone_offline"\nminutes = "ten"\n')
    out = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "farm-coordinator"), "--data", str(tmp_path / "d"),
         "--http", f"127.0.0.1:{free_port()}", "--listen", f"tcp://127.0.0.1:{free_port()}",
         "--retention", "off", "--alerts-config", str(config)],
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("farm-coordinator: ")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"{config}:4: rule 'x' (#1): minutes" in lines[0], lines[0]
