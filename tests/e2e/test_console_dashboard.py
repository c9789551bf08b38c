"""The console's Dashboard page in a real browser (Debian chromium driven by Playwright)
against a real `farm-coordinator --demo` with 4 virtual phones: the phones by state per node
and per client match GET /api/phones, and follow a run live (busy while it plays, idle after)
without a reload; the finished run shows as completed in the executions chart's data (from
GET /api/stats, fetched again once its minute closed); a failing run shows in the top
failures with its screenshot (the image answered 200 and drawn); a tenant's dashboard shows
only its client's phones and numbers; no console errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.demo_farm import DemoFarm, call
from tests.e2e.farm_auth import CONSOLE_TOKEN_KEY, admin_token, api_json, sign_in_console

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
PHONES = 4
STATES = ("busy", "idle", "paused", "offline", "failed")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")

# Each table row's counts as the page shows them: {key: {state: n, "total": n}}.
SHOWN = """(table) => Object.fromEntries([...document.querySelectorAll(`${table} tr[data-key]`)].map(
  (tr) => [tr.dataset.key, Object.fromEntries([...tr.querySelectorAll('td[data-state]')].map(
    (td) => [td.dataset.state, Number(td.textContent)]))]))"""


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    farm = DemoFarm(tmp, PHONES)
    admin_token(tmp / "data", farm.base)  # for sign_in_console and api_json
    yield farm
    farm.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        yield browser
        browser.close()


def watched(context) -> tuple:
    """A new page of ``context`` whose console errors, page errors and screenshot answers
    are kept (``page.errors``, ``page.shots``: url -> status)."""
    page = context.new_page()
    page.errors, page.shots = [], {}
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: page.shots.__setitem__(r.url, r.status)
            if r.url.endswith("/screenshot") else None)
    return page


@pytest.fixture(scope="module")
def page(farm, browser):
    """The admin's dashboard, open for the whole module."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    sign_in_console(context, farm.base)
    page = watched(context)
    page.goto(farm.base + "/#dashboard")
    page.wait_for_selector("#dash-nodes tr[data-key]")
    yield page
    context.close()
    assert not page.errors, page.errors


def api(farm, path: str):
    return api_json(farm.base + path, timeout=10)


def expected(phones: list[dict], key: str) -> dict:
    """Phones by state per ``key`` (node or client) as the dashboard counts them."""
    out: dict[str, dict] = {}
    for p in phones:
        state = ("busy" if p.get("lock_holder") else "idle") if p["state"] == "online" else p["state"]
        row = out.setdefault(p.get(key) or "(none)", {s: 0 for s in STATES} | {"total": 0})
        row[state] += 1
        row["total"] += 1
    return out


def wait_shown(page, table: str, want, timeout: float = 20.0) -> dict:
    """The counts of ``table`` once ``want(shown)`` holds (else the last seen, for the assert)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = page.evaluate(SHOWN, table)
        if want(shown) or time.monotonic() > deadline:
            return shown
        time.sleep(0.1)


def wait_run(farm, run_id: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while (status := api(farm, f"/api/runs/{run_id}")["status"]) in ("pending", "running"):
        assert time.monotonic() < deadline, api(farm, f"/api/runs/{run_id}")
        time.sleep(0.2)
    return status


def test_phones_by_state_per_node_and_client_match_the_api(farm, page):
    phones = api(farm, "/api/phones")["phones"]
    assert sum(p["state"] == "online" for p in phones) == PHONES
    for table, key in (("#dash-nodes", "node"), ("#dash-clients", "client")):
        want = expected(phones, key)
        assert wait_shown(page, table, lambda shown, want=want: shown == want) == want
    assert set(expected(phones, "client")) == {"Acme", "Demo Farm"}
    # Node health (GET /api/nodes health) once the node reported it, "-" before.
    nodes = api(farm, "/api/nodes")["nodes"]
    cpu = page.locator("#dash-nodes tr[data-key] td[data-health=cpu]").all_inner_texts()
    assert len(cpu) == len(nodes) and all(t == "-" or t.endswith(" %") for t in cpu), cpu


def test_a_run_turns_its_phone_busy_live_then_shows_completed_on_the_chart(farm, page):
    serial = farm.acme_phones[0]
    node = next(p["node"] for p in api(farm, "/api/phones")["phones"] if p["serial"] == serial)
    run = api_json(farm.base + "/api/runs", {"scope": f"phone:{serial}", "sequence": {
        "name": "dash_ok", "steps": [{"type": "sleep", "seconds": 3},
                                     {"type": "tap", "x": 540, "y": 2300}]}})
    busy = wait_shown(page, "#dash-nodes", lambda s: s.get(node, {}).get("busy") == 1)
    assert busy[node]["busy"] == 1, busy  # from the stream, no reload
    assert wait_run(farm, run["run_id"]) == "completed"
    idle = wait_shown(page, "#dash-nodes", lambda s: s.get(node, {}).get("busy") == 0)
    assert idle[node] == {"busy": 0, "idle": PHONES, "paused": 0, "offline": 0, "failed": 0,
                          "total": PHONES}, idle
    # The run's minute is closed a few seconds after it ends; the page fetches the current
    # bucket again just after each minute (a bound, not a speed: up to two minutes here).
    try:
        page.wait_for_function("(window.__dashboard.charts.executions.data[1] || [])"
                               ".reduce((a, b) => a + b, 0) > 0", timeout=150000)
    except sync_api.TimeoutError:
        raise AssertionError(f"no completed execution on the chart: "
                             f"{page.evaluate('window.__dashboard.stats')}") from None
    drawn = page.evaluate("window.__dashboard.charts.executions.data")
    stats = api(farm, "/api/stats?from=24h&step=1h")["series"][0]["points"]
    assert sum(drawn[1]) == sum(p["executions"]["completed"] for p in stats) >= 1
    assert sum(drawn[2]) == sum(p["executions"]["failed"] for p in stats)
    assert not page.locator("#dash-stats-note").inner_text()


def test_a_failing_run_shows_in_top_failures_with_its_screenshot(farm, page):
    serial = farm.acme_phones[1]
    run = api_json(farm.base + "/api/runs", {"scope": f"phone:{serial}", "sequence": {
        "name": "dash_fail", "retry": {"immediate": 0, "short": 0},
        "steps": [{"type": "expect_screen", "screen": "clipshare/settings"}]}})
    assert wait_run(farm, run["run_id"]) == "failed"
    top = api(farm, "/api/stats/top-failures?since=24h&limit=10")
    failed = next(s for s in top["sequences"] if s["sequence"] == "inline/dash_fail")
    shot = failed["last"]["screenshot"]
    assert shot and failed["last"]["serial"] == serial
    row = page.locator('#dash-failures table[data-kind=sequence] tr[data-key="inline/dash_fail"]')
    row.wait_for(timeout=30000)  # execution_finished on the stream fetched the list again
    page.wait_for_function(
        """() => { const i = document.querySelector(
             '#dash-failures table[data-kind=sequence] tr[data-key="inline/dash_fail"] img');
           return i && i.complete && i.naturalWidth > 0; }""", timeout=15000)
    assert page.shots.get(farm.base + shot) == 200, page.shots
    assert "1 of 1" in row.inner_text() and serial in row.inner_text()
    shown_screens = page.eval_on_selector_all(
        "#dash-failures table[data-kind=screen] tr[data-key]", "rs => rs.map(r => r.dataset.key)")
    assert shown_screens == [s["screen"] for s in top["screens"]]


def test_a_report_opens_in_the_console_with_its_screenshot(farm, page):
    """The report notice's link, <public>/#reports/<id>: the API's report and screenshot routes
    take only a bearer token, so the console fetches both with it and shows the report in a
    sandboxed frame (no scripts) with its failure screenshot drawn."""
    top = api(farm, "/api/stats/top-failures?since=24h&limit=10")
    if not any(s["sequence"] == "inline/dash_fail" for s in top["sequences"]):  # run alone
        run = api_json(farm.base + "/api/runs", {"scope": f"phone:{farm.acme_phones[1]}",
            "sequence": {"name": "dash_fail", "retry": {"immediate": 0, "short": 0},
                         "steps": [{"type": "expect_screen", "screen": "clipshare/settings"}]}})
        assert wait_run(farm, run["run_id"]) == "failed"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    report = api_json(farm.base + "/api/reports", {"client": "Acme", "day": today})
    assert "inline/dash_fail" in report["text"]
    assert page.locator('header nav a[href="#reports"]').inner_text() == "Reports"
    page.evaluate(f"location.hash = 'reports/{report['id']}'")
    page.locator(f'#report-list tr[data-id="{report["id"]}"]').wait_for(timeout=15000)
    frame_el = page.locator("#report-frame")
    frame_el.wait_for(timeout=15000)
    assert "allow-scripts" not in frame_el.get_attribute("sandbox")
    frame = page.frame_locator("#report-frame")
    assert frame.locator("h1").inner_text(timeout=15000) == report["title"]
    assert "inline/dash_fail" in frame.locator("body").inner_text()
    shot = frame.locator("img.shot").first
    shot.wait_for(timeout=15000)
    assert shot.evaluate("i => i.complete && i.naturalWidth > 0"), shot.get_attribute("src")[:80]
    assert any("/steps/" in url and status == 200 for url, status in page.shots.items())
    # A click on the screenshot leads to its execution's page in the console (not the API).
    link = frame.locator("a:has(img.shot)").first.get_attribute("href")
    assert "/#executions/" in link, link


def test_a_tenant_sees_only_its_clients_phones_and_numbers(farm, browser):
    status, login = call(farm.base, "POST", "/api/login", None,
                         {"user": "acme", "password": farm.passwords["acme"]})
    assert status == 200, login
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(f"sessionStorage.setItem('{CONSOLE_TOKEN_KEY}', '{login['token']}')")
    page = watched(context)
    try:
        page.goto(farm.base + "/#dashboard")
        page.wait_for_selector("#dash-clients tr[data-key]")
        shown = wait_shown(page, "#dash-clients", lambda s: s.get("Acme", {}).get("total")
                           == len(farm.acme_phones))
        assert list(shown) == ["Acme"] and shown["Acme"]["total"] == len(farm.acme_phones)
        page.wait_for_function("window.__dashboard && window.__dashboard.loads > 0")
        assert not page.locator("#dash-stats-note").inner_text()
        # Acme's own failure is listed to Acme (the phone is Acme's).
        page.locator('#dash-failures tr[data-key="inline/dash_fail"]').wait_for(timeout=15000)
    finally:
        context.close()
    assert not page.errors, page.errors
