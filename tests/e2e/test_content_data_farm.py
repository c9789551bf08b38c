"""Issue 21.2/21.3 end to end: a real `farm-coordinator --demo` (virtual phones running
ClipShare) plays `clipshare/post_clip` then `clipshare/check_stats`; the node's
post_recorded and metric_recorded events become a post with its metrics and the account's
followers, read back through GET /api/posts, /api/posts/{id}/metrics and /api/accounts, and
rolled up for today through POST /api/analytics/rollup. Then a challenge screen on a phone
fails its run, puts its account at risk (GET /api/accounts) and a skip_at_risk schedule skips
it with a schedule event naming the account and why."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver
from tests.e2e.demo_farm import DemoFarm, call


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> DemoFarm:
    farm = DemoFarm(tmp_path_factory.mktemp("content"), phones=2)
    yield farm
    farm.stop()


def api(farm: DemoFarm, method: str, path: str, body: dict | None = None) -> Any:
    status, answer = call(farm.base, method, path, farm.admin_token, body)
    assert status in (200, 201, 202), (method, path, status, answer)
    return answer


def run(farm: DemoFarm, sequence: str, serial: str, timeout: float = 120,
        status: str = "completed") -> dict:
    started = api(farm, "POST", "/api/runs", {"sequence": sequence, "scope": f"phone:{serial}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api(farm, "GET", f"/api/runs/{started['run_id']}")
        if view["status"] != "running":
            assert view["status"] == status, view
            return view
        time.sleep(0.3)
    raise AssertionError(f"{sequence} on {serial} still running after {timeout} s")


def wait_for(what: str, probe, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := probe()):
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout} s")


def test_a_post_and_its_stats_reach_the_api(farm: DemoFarm) -> None:
    serial = next(p["serial"] for p in farm.phone_rows if p.get("client") != "Acme")
    posted = run(farm, "clipshare/post_clip", serial)
    account = posted["executions"][0]["account"]
    assert account, posted
    run(farm, "clipshare/check_stats", serial)

    def post_with_views() -> dict | None:
        posts = api(farm, "GET", f"/api/posts?account={account}")["posts"]
        return next((p for p in posts if p["latest"]["views"] is not None), None)

    post = wait_for("post with metrics", post_with_views)
    assert post["status"] == "active" and post["caption"] and post["account"] == account
    # Hashtags stored as hashtag sets store them: without '#' (the node sends "#word").
    assert post["hashtags"] == list(dict.fromkeys(
        w[1:] for w in post["caption"].split() if w.startswith("#") and len(w) > 1)), post
    assert isinstance(post["latest"]["likes"], int) and isinstance(post["latest"]["comments"],
                                                                   int)
    metrics = api(farm, "GET", f"/api/posts/{post['post_id']}/metrics")
    assert {s["metric"] for s in metrics["samples"]} == {"views", "likes", "comments"}
    assert metrics["daily"][-1]["date"] == datetime.now(timezone.utc).date().isoformat()

    row = next(a for a in api(farm, "GET", f"/api/accounts?serial={serial}")["accounts"]
               if a["account"] == account)
    assert isinstance(row["health"]["followers"], int) and row["health"]["state"] == "ok"
    assert row["followers_series"] and row["last_posts"][0]["post_id"] == post["post_id"]

    today = datetime.now(timezone.utc).date().isoformat()
    made = api(farm, "POST", "/api/analytics/rollup", {"date": today})
    assert made["date"] == today and made["platforms"] >= 1
    daily = api(farm, "GET", f"/api/analytics/daily?since={today}")
    clipshare = next(r for r in daily["platforms"] if r["platform"] == "clipshare")
    assert clipshare["posts"] >= 1 and clipshare["views"] >= post["latest"]["views"]


def test_a_challenge_puts_the_account_at_risk_and_a_careful_schedule_skips_it(
        farm: DemoFarm) -> None:
    serial = next(p["serial"] for p in farm.phone_rows if p.get("client") == "Acme")
    run(farm, "clipshare/check_stats", serial)  # logged in, healthy
    # The phone shows ClipShare's "Confirm it's you" (a screen tagged health: challenge): the
    # execution stops there, failed, and the account is at risk; nothing tries to get past it.
    DeviceDriver(serial, AdbServer(port=farm.adb_port)).shell("vphone popup verify_identity")
    failed = run(farm, "clipshare/check_stats", serial, status="failed")
    account = failed["executions"][0]["account"]

    def at_risk() -> dict | None:
        rows = api(farm, "GET", "/api/accounts?health=at_risk")["accounts"]
        return next((a for a in rows if a["account"] == account and a["phone"] == serial),
                    None)

    row = wait_for("the account at risk", at_risk)
    assert row["health"]["challenges_7d"] == 1
    assert "clipshare/interrupt:verify_identity" in row["health"]["reasons"][0]
    schedule = api(farm, "POST", "/api/schedules", {
        "sequence": "clipshare/check_stats", "target": f"phone:{serial}", "type": "immediate",
        "skip_at_risk": True})

    def skipped() -> dict | None:
        events = api(farm, "GET", f"/api/schedules/{schedule['id']}/events")["events"]
        return next((e for e in events if e["kind"] == "skipped"), None)

    event = wait_for("the skipped job", skipped)
    assert event["detail"]["account"] == account and "at_risk" in event["reason"]
    assert "challenge" in event["reason"]
