"""The console's Accounts and Posts pages (issue 21) in a real browser (Debian chromium
driven by Playwright) against a real `farm-coordinator --demo` with 2 virtual phones.

Data is fed through the farm database as the coordinator's intake writes it (an account's
follower readings and a challenge met, a post and its metric readings) and through the API
(a link in bio, clicked twice through the public /l/{code} without a token). The Accounts
page shows the account at risk with its reason, its followers and change, a sparkline of
the trend drawn by uPlot, its last post and the link with its 2 clicks; the post's link
opens the Posts page, whose chart of the post's metrics over time is drawn by uPlot with a
line per metric read; no console errors. And clipshare/read_inbox played on a virtual phone
stores its conversation once, however often it is read. One farm for the module."""

from __future__ import annotations

import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.demo_farm import DemoFarm, call
from tests.e2e.farm_auth import admin_token, sign_in_console

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # the 302 itself is what we check
        return None


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = DemoFarm(tmp_path_factory.mktemp("engagement"), phones=2)
    admin_token(farm.data, farm.base)  # for sign_in_console
    yield farm
    farm.stop()


@pytest.fixture(scope="module")
def fed(farm: DemoFarm) -> dict:
    """An account of the first phone with follower readings, a challenge, a post with
    metric readings, and a link clicked twice."""
    status, answer = call(farm.base, "GET", "/api/accounts", farm.admin_token)
    assert status == 200, answer
    account = next(a for a in answer["accounts"] if a.get("phone") == farm.phone_rows[0]["serial"])
    account_id = account["account_id"]
    now = time.time()
    with sqlite3.connect(farm.data / "farm.sqlite3", timeout=30) as db:
        db.executemany(
            "INSERT INTO account_metric_samples (account_id, metric, value, recorded_at,"
            " event_key) VALUES (?, 'followers', ?, ?, ?)",
            [(account_id, value, now - (5 - i) * 3600, f"test:followers:{i}")
             for i, value in enumerate((1000, 1040, 1100, 1180, 1250))])
        db.execute("INSERT INTO account_health_events (account_id, kind, screen, at, event_key)"
                   " VALUES (?, 'challenge', 'clipshare/interrupt:verify_identity', ?,"
                   " 'test:challenge')", (account_id, now - 600))
        post_id = db.execute(
            "INSERT INTO content_posts (account_id, platform, caption, hashtags, posted_at,"
            " status, app, event_key) VALUES (?, 'clipshare', 'Loving this sunset #golden',"
            " '[\"golden\"]', datetime('now', '-3 hours'), 'active', 'clipshare',"
            " 'test:post') RETURNING post_id", (account_id,)).fetchone()[0]
        db.executemany(
            "INSERT INTO post_metric_samples (post_id, metric, value, recorded_at, event_key)"
            " VALUES (?, ?, ?, ?, ?)",
            [(post_id, metric, value * (i + 1), now - (3 - i) * 3600, f"test:{metric}:{i}")
             for i in range(3) for metric, value in (("views", 500), ("likes", 40),
                                                     ("comments", 3))])
    status, link = call(farm.base, "POST", "/api/links", farm.admin_token, {
        "account": account_id, "url": "https://shop.example/sunset", "title": "Shop"})
    assert status == 201, link
    opener = urllib.request.build_opener(NoRedirect)
    for src in ("", "?src=bio"):
        try:
            opener.open(f"{farm.base}/l/{link['code']}{src}", timeout=10)
        except urllib.error.HTTPError as exc:  # the unfollowed 302
            assert exc.code == 302 and exc.headers["Location"] == "https://shop.example/sunset"
    # The redirect counts in memory; the coordinator writes the clicks every 2 s.
    deadline = time.monotonic() + 60
    while True:
        status, answer = call(farm.base, "GET", "/api/links", farm.admin_token)
        if next(x for x in answer["links"] if x["link_id"] == link["link_id"])["clicks"] == 2:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
    return {"account_id": account_id, "post_id": post_id, "link": link}


@pytest.fixture(scope="module")
def page(farm: DemoFarm):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        sign_in_console(context, farm.base)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        yield page
        browser.close()
    assert not page.errors, page.errors


def test_accounts_page_shows_health_trend_last_posts_and_links(farm, fed, page) -> None:
    page.goto(farm.base + "/#accounts")
    row = page.locator(f"#account-list tr[data-account='{fed['account_id']}']")
    row.wait_for()
    assert row.locator("td.health").get_attribute("data-state") == "at_risk"
    assert "challenge screen met once" in row.locator("td.health").inner_text()
    assert row.locator("td.followers").inner_text().replace(",", "").replace(".", "") == "1250"
    assert "+250" in row.inner_text().replace(",", "")
    # The sparkline is a uPlot canvas with a drawn size.
    canvas = row.locator(".sparkline canvas")
    canvas.wait_for()
    assert canvas.evaluate("c => c.width > 0 && c.height > 0")
    assert row.locator(f"a[href='#posts/{fed['post_id']}']").count() == 1
    link = page.locator(f"#link-list tr[data-link='{fed['link']['link_id']}']")
    link.wait_for()
    assert link.locator("td.clicks").inner_text() == "2"
    assert f"/l/{fed['link']['code']}" in link.inner_text() and "bio 1" in link.inner_text()


def test_posts_page_charts_a_posts_metrics_over_time(farm, fed, page) -> None:
    page.goto(farm.base + "/#accounts")
    page.locator(f"a[href='#posts/{fed['post_id']}']").first.click()
    page.wait_for_selector(f"#post-list tr[data-post='{fed['post_id']}']")
    row = page.locator(f"#post-list tr[data-post='{fed['post_id']}']")
    assert "Loving this sunset" in row.inner_text()
    assert row.locator("td.views").inner_text().replace(",", "") == "1500"
    chart = page.locator("#post-chart")
    chart.locator("canvas").wait_for()
    # One legend entry per metric read, with the chart's data: three readings each.
    labels = chart.locator(".u-legend .u-series .u-label").all_inner_texts()
    assert {"views", "likes", "comments"} <= set(labels), labels
    assert "shares" not in labels
    assert page.locator("#post-detail h3").inner_text().startswith(f"Post {fed['post_id']}")


def _run(farm: DemoFarm, sequence: str, serial: str, timeout: float = 120) -> dict:
    status, started = call(farm.base, "POST", "/api/runs", farm.admin_token,
                           {"sequence": sequence, "scope": f"phone:{serial}"})
    assert status == 202, started
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = call(farm.base, "GET", f"/api/runs/{started['run_id']}", farm.admin_token)[1]
        if view["status"] != "running":
            assert view["status"] == "completed", view
            return view
        time.sleep(0.3)
    raise AssertionError(f"{sequence} on {serial} still running after {timeout} s")


def test_a_conversation_read_on_a_phone_is_stored_once(farm) -> None:
    """clipshare/read_inbox on a virtual phone: the node's messages_read event becomes one
    conversation with the partner's name and the messages in order, theirs and ours; read
    again, nothing is added."""
    serial = farm.phone_rows[1]["serial"]
    account = _run(farm, "clipshare/read_inbox", serial)["executions"][0]["account"]

    def conversations() -> list[dict]:
        return call(farm.base, "GET", f"/api/conversations?account={account}",
                    farm.admin_token)[1]["conversations"]

    deadline = time.monotonic() + 15
    while not (found := [c for c in conversations() if c["serial"] == serial]) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == 1, found
    first = found[0]
    assert first["partner"] and first["message_count"] >= 2, first
    status, read = call(farm.base, "GET",
                        f"/api/conversations/{first['conversation_id']}/messages",
                        farm.admin_token)
    assert status == 200 and {m["sender"] for m in read["messages"]} == {"them", "us"}, read
    assert all(m["text"].strip() for m in read["messages"])
    _run(farm, "clipshare/read_inbox", serial)
    # The run ended after its messages_read event (the journal keeps a node's events in
    # order); give the intake's queue a moment, then nothing may have been added.
    time.sleep(1.0)
    again = [c for c in conversations() if c["serial"] == serial]
    assert [(c["conversation_id"], c["message_count"]) for c in again] == [
        (first["conversation_id"], first["message_count"])]
