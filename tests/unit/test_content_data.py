"""Content data (issue 21.2/21.3) on a real FarmDB (both engines) and a real Hub: the node's
metric_recorded / post_recorded / health_signal events emitted into the hub become posts,
metric samples, the day's post_metrics row and health events (a replayed event changes
nothing); the daily rollup of a known day, twice; health states from crafted events; the
HTTP routes behind a real aiohttp server as a super user and as a tenant; the scheduler's
skip_at_risk."""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.principal import Principal  # noqa: E402
from actors.control import analytics as analytics_api  # noqa: E402
from actors.control import posts as posts_api  # noqa: E402
from actors.control import registry as registry_api  # noqa: E402
from actors.control.app import json_errors  # noqa: E402
from actors.control.auth import PRINCIPAL_KEY  # noqa: E402
from actors.control.http import HUB  # noqa: E402
from actors.control.posts import CONTENT  # noqa: E402
from actors.coordinator.content_data.health import assess  # noqa: E402
from actors.coordinator.content_data.service import ContentDataService  # noqa: E402
from actors.coordinator.hub import Hub  # noqa: E402
from actors.coordinator.scheduling.scheduler import Schedule  # noqa: E402
from actors.coordinator.scheduling.schedules import ScheduleService  # noqa: E402
from actors.store.event_store import EventStore  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from protocol.messages import Event, RunSequence  # noqa: E402
from sequences.model import RecordPostStep, TapStep, TypeStep  # noqa: E402
from tests.api_call import call  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine")

A1, Z1 = "10.0.0.1:5555", "10.0.0.9:5555"  # Acme's phone, Zeta's
DAY1 = datetime(2026, 12, 1, tzinfo=timezone.utc)
DAY2 = DAY1 + timedelta(days=1)


class Farm:
    """A real Hub over a real FarmDB with Acme's account on A1 and Zeta's on Z1, each with
    an execution, and the content service taking the hub's events."""

    def __init__(self, db: FarmDB, hub: Hub, service: ContentDataService) -> None:
        self.db, self.hub, self.service = db, hub, service
        self.seq = 0

    def emit(self, event: str, serial: str, execution_id: int | str, at: datetime, seq: int | None
             = None, **data) -> None:
        if seq is None:
            self.seq += 1
            seq = self.seq
        account = "clipshare.a1" if serial == A1 else "clipshare.z1"
        self.hub.emit(event, "rack-1", serial, {
            "execution_id": execution_id, "seq": seq, "serial": serial, "account": account,
            "app": "clipshare", "at": at.timestamp(), **data})

    async def rows(self, table: str) -> list[dict]:
        return [dict(r) for r in await self.db._all(f"SELECT * FROM {table}")]


@pytest.fixture
async def farm(db: FarmDB, tmp_path: Path):
    acme, zeta = await db.upsert_client("Acme"), await db.upsert_client("Zeta")
    await db.upsert_phone(A1, client=acme)
    await db.upsert_phone(Z1, client=zeta)
    ids = {}
    for serial, client, number in ((A1, acme, "a1"), (Z1, zeta, "z1")):
        profile = await db.upsert_profile(client=client, first_name=number)
        account = await db.upsert_account(serial, "clipshare", number, username=number,
                                          profile_id=profile)
        ids[serial] = await db.create_execution(f"ex-{number}", serial=serial,
                                                sequence="clipshare/post_clip",
                                                account_id=account)
    store = await EventStore(tmp_path / "coordinator.sqlite3").open()
    hub = Hub("tcp://127.0.0.1:1", "secret", store, db=db, data_dir=tmp_path / "data")
    await hub.owners.load()
    service = await ContentDataService(hub, db, at=None,
                                       now=lambda: DAY2 + timedelta(hours=20)).start()
    f = Farm(db, hub, service)
    f.acme, f.zeta, f.executions = acme, zeta, ids
    f.keys = {A1: "ex-a1", Z1: "ex-z1"}  # what the node names an execution by
    yield f
    await service.close()
    await store.close()


async def test_events_become_rows_and_a_replay_changes_nothing(farm: Farm) -> None:
    ex, key = farm.executions[A1], farm.keys[A1]
    at = DAY1 + timedelta(hours=1)
    farm.emit("post_recorded", A1, key, at, status="posted", caption="Loving it #fyp #cats",
              hashtags=["#fyp", "cats", "#fyp"], media="m-1", platform_post_id=None,
              reason=None)
    farm.emit("metric_recorded", A1, key, at, metric="followers", value=120, post=None)
    farm.emit("metric_recorded", A1, key, at, seq=77, metric="views", value=10, post="latest")
    farm.emit("metric_recorded", A1, key, at, metric="likes", value=3, post="latest")
    # The node names the execution by its key (what RunSequence carries).
    farm.emit("health_signal", A1, "ex-a1", at, kind="relogin", screen="clipshare/login")
    farm.emit("metric_recorded", A1, key, at, seq=77, metric="views", value=10, post="latest")
    farm.emit("metric_recorded", A1, key, at, metric="nonsense", value=1, post=None)
    # A resumed or recovered playback meeting the login screen again: one relogin still.
    farm.emit("health_signal", A1, "ex-a1", at + timedelta(minutes=5), seq=1_000_000_002,
              kind="relogin", screen="clipshare/login")
    await farm.service.drain()
    assert farm.service.outcomes == {"stored": 5, "replayed": 2, "dropped": 1}

    [post] = await farm.rows("content_posts")
    assert json.loads(post["hashtags"]) == ["fyp", "cats"]  # stored without '#', each once
    assert (post["caption"], post["status"], post["execution_id"], post["app"],
            post["media_id"]) == ("Loving it #fyp #cats", "active", ex, "clipshare", "m-1")
    [sample] = await farm.rows("account_metric_samples")
    assert (sample["metric"], sample["value"], sample["execution_id"]) == ("followers", 120, ex)
    assert sample["phone_id"] is not None
    assert sorted((s["metric"], s["value"]) for s in await farm.rows("post_metric_samples")) \
        == [("likes", 3), ("views", 10)]
    [day] = await farm.rows("post_metrics")
    assert (str(day["metric_date"])[:10], day["views"], day["likes"]) == ("2026-12-01", 10, 3)
    [health] = await farm.rows("account_health_events")
    assert (health["kind"], health["screen"], health["execution_id"]) == (
        "relogin", "clipshare/login", ex)

    # A failed post is a failed row and a health event; its replay neither.
    for _ in range(2):
        farm.emit("post_recorded", A1, key, at, seq=500, status="failed", caption=None,
                  hashtags=[], media=None, platform_post_id=None, reason="no_match")
    await farm.service.drain()
    assert sorted(p["status"] for p in await farm.rows("content_posts")) == ["active", "failed"]
    assert sorted(h["kind"] for h in await farm.rows("account_health_events")) == [
        "post_failed", "relogin"]

async def test_a_node_cannot_write_onto_another_phones_execution_or_account(farm: Farm) -> None:
    """Z1's node naming Acme's execution (by its key, or by its executions row id, which is no
    name for it) writes nothing on Acme's account: the hub's report scope refuses the first,
    the ingest drops both."""
    at = DAY1 + timedelta(hours=1)
    refused = await farm.hub.report_scope.refusals("rack-2", [Event(
        seq=1, event="metric_recorded", serial=Z1, data={"execution_id": farm.keys[A1]})])
    assert "runs on phone" in refused[1]
    farm.emit("metric_recorded", Z1, farm.keys[A1], at, metric="followers", value=1, post=None)
    farm.emit("post_recorded", Z1, farm.keys[A1], at, status="posted", caption="spam",
              hashtags=[], media=None, platform_post_id=None, reason=None)
    farm.emit("health_signal", Z1, farm.keys[A1], at, kind="challenge", screen="x/y")
    # The row id of Acme's execution, from Z1 without an account: no account is known.
    farm.hub.emit("metric_recorded", "rack-2", Z1, {
        "execution_id": farm.executions[A1], "seq": 9, "serial": Z1, "account": None,
        "app": "clipshare", "at": at.timestamp(), "metric": "followers", "value": 2,
        "post": None})
    await farm.service.drain()
    assert farm.service.outcomes == {"dropped": 4}
    for table in ("account_metric_samples", "content_posts", "account_health_events"):
        assert await farm.rows(table) == []


async def _post_execution(farm: Farm, key: str, *, posts: bool = True) -> None:
    steps = [TypeStep(text="Sunny #beach #sun", label="caption"), TapStep(x=1, y=1)]
    if posts:
        steps.append(RecordPostStep(caption_step="caption"))
    plan = RunSequence(execution_id=key, run_id="r", sequence="clipshare/post_clip",
                       steps=steps, app="clipshare", account="clipshare.a1")
    account = (await farm.db._one("SELECT account_id FROM accounts WHERE account_number = 'a1'"))
    await farm.db.create_execution(key, serial=A1, sequence="clipshare/post_clip",
                                   account_id=account[0],
                                   plan=msgspec.json.encode(plan).decode())


async def test_a_held_failure_records_a_failed_post_only_when_the_execution_ends(
        farm: Farm) -> None:
    """A failure kept for AI recovery is no failed post (the node sends none); the recovery's
    failure, or a held failure no recovery took, is: once, with the plan's caption. An
    execution that posted, or whose plan records no post, gets none."""
    for key in ("ex-held", "ex-ai-off", "ex-posted"):
        await _post_execution(farm, key)
    await _post_execution(farm, "ex-nopost", posts=False)
    held = {"status": "failed", "reason": "unknown_screen", "error": "?",
            "failed_step": "steps[1]", "lock_held": True}
    farm.hub.emit("execution_finished", "rack-1", A1, {
        "execution_id": "ex-held", **held, "recovering": True})
    await farm.service.drain()
    assert await farm.rows("content_posts") == []  # recovery may still post
    for _ in range(2):  # its end, and a replay of it
        farm.hub.emit("recovery_failed", None, A1, {
            "execution_id": "ex-held", "reason": "gave_up", "detail": "lost"})
    farm.hub.emit("execution_finished", "rack-1", A1, {"execution_id": "ex-ai-off", **held})
    farm.emit("post_recorded", A1, "ex-posted", DAY1, status="posted", caption="Sunny",
              hashtags=[], media=None, platform_post_id=None, reason=None)
    farm.hub.emit("recovery_failed", None, A1, {"execution_id": "ex-posted",
                                                "reason": "gave_up", "detail": "lost"})
    farm.hub.emit("recovery_failed", None, A1, {"execution_id": "ex-nopost",
                                                "reason": "gave_up", "detail": "lost"})
    await farm.service.drain()
    rows = {r["execution_id"]: r for r in await farm.db._all(
        "SELECT e.execution_key AS execution_id, p.status, p.caption, p.hashtags, p.reason"
        " FROM content_posts p JOIN executions e ON e.execution_id = p.execution_id")}
    assert {k: r["status"] for k, r in rows.items()} == {
        "ex-held": "failed", "ex-ai-off": "failed", "ex-posted": "active"}
    assert rows["ex-held"]["caption"] == "Sunny #beach #sun"
    assert json.loads(rows["ex-held"]["hashtags"]) == ["beach", "sun"]
    assert rows["ex-held"]["reason"] == "recovery_failed: gave_up: lost"
    assert rows["ex-ai-off"]["reason"] == "unknown_screen: ?"
    assert len([h for h in await farm.rows("account_health_events")
                if h["kind"] == "post_failed"]) == 2


async def test_a_transient_database_error_is_retried_and_a_data_error_dropped(
        farm: Farm) -> None:
    service, real = farm.service, farm.service.store.ingest
    calls: list[str] = []
    slept: list[float] = []
    failures = [sqlite3.OperationalError("database is locked"),
                ConnectionError("server closed the connection")]

    async def flaky(event: str, serial: str | None, data: dict) -> str:
        calls.append(data.get("metric"))
        if data.get("metric") == "bad":
            raise sqlite3.IntegrityError("CHECK constraint failed")
        if failures:
            raise failures.pop(0)
        return await real(event, serial, data)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    service.store.ingest, service._sleep = flaky, sleep
    farm.emit("metric_recorded", A1, farm.keys[A1], DAY1, metric="followers", value=5,
              post=None)
    farm.emit("metric_recorded", A1, farm.keys[A1], DAY1, metric="bad", value=5, post=None)
    await service.drain()
    assert calls == ["followers"] * 3 + ["bad"]  # the data error is not tried again
    assert slept == [0.5, 1.0]
    assert service.outcomes == {"stored": 1, "dropped": 1}
    assert [r["value"] for r in await farm.rows("account_metric_samples")] == [5]


async def test_events_stored_just_before_a_crash_are_written_at_the_next_start(
        farm: Farm) -> None:
    """The hub stores an event before it emits it; a coordinator that died in between (or
    before the queue's write) finds it at its next start: the services replay what was
    received in the REPLAY_S before the newest stored event (measured from that event, so a
    long outage does not hide it), and their idempotent writes ignore what was written."""
    from actors.coordinator.engagement.ingest import MessageIngest
    from actors.coordinator.hub import REPLAY_S

    ex, newest = farm.keys[A1], DAY2.timestamp() + 5000
    base = {"execution_id": ex, "serial": A1, "account": "clipshare.a1", "app": "clipshare",
            "at": DAY2.timestamp()}
    stored = [  # (seq, event, data, received_at): stored, never emitted
        (1, "metric_recorded", {**base, "seq": 1, "metric": "followers", "value": 90,
                                "post": None}, newest - REPLAY_S - 60),   # before the window
        (2, "metric_recorded", {**base, "seq": 2, "metric": "followers", "value": 95,
                                "post": None}, newest - 30),
        (3, "messages_read", {**base, "seq": 3, "partner": "Dana",
                              "messages": [{"sender": "them", "text": "Hi!"}]}, newest - 20),
        (4, "step_finished", {"execution_id": ex, "path": "0"}, newest)]
    for seq, event, data, received in stored:
        await farm.hub.store.add("rack-1", seq, event, A1, data, received)
    restarted = await ContentDataService(farm.hub, farm.db, at=None).start()
    ingest = MessageIngest(farm.hub, farm.db).start()
    try:
        assert await ingest.replay() == 1
        await restarted.drain()
        await ingest.drain()
        assert [r["value"] for r in await farm.rows("account_metric_samples")] == [95]
        assert [r["message_text"] for r in await farm.rows("messages")] == ["Hi!"]
        # Started again: the same events replayed, nothing written twice.
        again = await ContentDataService(farm.hub, farm.db, at=None).start()
        await again.drain()
        await again.close()
        assert await ingest.replay() == 1
        await ingest.drain()
        assert len(await farm.rows("account_metric_samples")) == 1
        assert len(await farm.rows("messages")) == 1
    finally:
        await restarted.close()
        await ingest.close()


async def _known_days(farm: Farm) -> None:
    """Acme's account posts on day 1 (views 10, likes 2) and reads it again on day 2 (views
    50, likes 7, comments 1); followers 100 on day 1, 110 then 125 on day 2; 7 link clicks
    on day 2. Zeta's posts once on day 2, unread."""
    ex, zx = farm.keys[A1], farm.keys[Z1]
    farm.emit("post_recorded", A1, ex, DAY1 + timedelta(minutes=30), status="posted",
              caption="one", hashtags=[], media=None, platform_post_id="p1", reason=None)
    for day, views, likes, comments in ((DAY1, 10, 2, 0), (DAY2, 50, 7, 1)):
        for metric, value in (("views", views), ("likes", likes), ("comments", comments)):
            farm.emit("metric_recorded", A1, ex, day + timedelta(hours=12), metric=metric,
                      value=value, post="p1")
    for when, value in ((DAY1 + timedelta(hours=1), 100), (DAY2 + timedelta(hours=1), 110),
                        (DAY2 + timedelta(hours=22), 125)):
        farm.emit("metric_recorded", A1, ex, when, metric="followers", value=value, post=None)
    farm.emit("post_recorded", Z1, zx, DAY2 + timedelta(hours=3), status="posted",
              caption="zeta", hashtags=[], media=None, platform_post_id=None, reason=None)
    await farm.service.drain()
    link = await farm.db._write("INSERT INTO link_in_bio (account_id, url) SELECT account_id,"
                                " 'https://example.com' FROM accounts WHERE account_number ="
                                " 'a1' RETURNING link_id")
    await farm.db._write("INSERT INTO link_clicks (link_id, click_date, click_count, source)"
                         " VALUES (?, ?, ?, ?)", (link[0], "2026-12-02", 7, "direct"))


async def test_the_rollup_of_a_known_day_twice_gives_the_same_rows(farm: Farm) -> None:
    await _known_days(farm)
    for _ in range(2):
        made = await farm.service.rollup(DAY2.date())
        assert made == {"date": "2026-12-02", "clients": 2, "platforms": 1}
    rows = await farm.service.store.daily("2026-12-02", "2026-12-02")
    by_client = {r["client"]: r for r in rows["clients"]}
    acme = by_client["Acme"]
    assert (acme["posts"], acme["views"], acme["likes"], acme["comments"],
            acme["link_clicks"], acme["follower_growth"]) == (0, 40, 5, 1, 7, 25)
    assert acme["engagement_rate"] == pytest.approx(6 / 40)
    assert by_client["Zeta"]["posts"] == 1 and by_client["Zeta"]["engagement_rate"] is None
    [platform] = rows["platforms"]
    assert (platform["platform"], platform["posts"], platform["views"],
            platform["follower_growth"]) == ("clipshare", 1, 40, 25)
    await farm.service.rollup(DAY1.date())
    day1 = {r["client"]: r for r in (await farm.service.store.daily(
        "2026-12-01", "2026-12-01"))["clients"]}
    assert (day1["Acme"]["posts"], day1["Acme"]["views"], day1["Acme"]["follower_growth"]) \
        == (1, 10, 0)
    assert len((await farm.service.store.daily("2026-12-01", "2026-12-02"))["clients"]) == 4


def test_health_states_from_crafted_events() -> None:
    now = DAY2.timestamp()
    ev = lambda kind, days_ago=1, screen=None: {  # noqa: E731
        "kind": kind, "at": now - days_ago * 86400, "screen": screen}
    assert assess([], [], now).state == "ok"
    h = assess([ev("challenge", screen="clipshare/interrupt:verify_identity")], [], now)
    assert h.state == "at_risk" and h.challenges_7d == 1
    assert h.reasons == ["challenge screen met once in 7 days "
                         "(clipshare/interrupt:verify_identity)"]
    assert assess([ev("challenge", days_ago=8)], [], now).state == "ok"  # outside the week
    h = assess([ev("relogin"), ev("relogin", 2)], [], now)
    assert (h.state, h.relogins_7d) == ("watch", 2)
    assert assess([ev("post_failed")] * 2, [], now).state == "watch"
    assert assess([ev("post_failed")] * 3, [], now).state == "at_risk"
    h = assess([], [[now - 6 * 86400, 1000], [now - 3600, 990]], now)
    assert (h.state, h.followers, h.followers_change_7d) == ("watch", 990, -10)
    assert assess([], [[now - 6 * 86400, 1000], [now, 800]], now).state == "at_risk"
    h = assess([], [[now - 86400, 10], [now, 15]], now)
    assert (h.state, h.followers_change_7d) == ("ok", 5)


def app_as(farm: Farm, principal: Principal) -> web.Application:
    @web.middleware
    async def caller(request: web.Request, handler):
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    app = web.Application(middlewares=[json_errors, caller])
    app[HUB] = farm.hub
    app[CONTENT] = farm.service
    posts_api.add_routes(app)
    analytics_api.add_routes(app)
    registry_api.add_routes(app)
    return app


SUPER = Principal(user_id=1, name="root", role="super")


async def test_routes_for_a_super_user_and_a_tenant(farm: Farm) -> None:
    await _known_days(farm)
    farm.emit("health_signal", Z1, farm.keys[Z1], DAY2 + timedelta(hours=5),
              kind="challenge", screen="clipshare/interrupt:verify_identity")
    await farm.service.drain()
    tenant = Principal(user_id=2, name="acme-user", role="client",
                       client_ids=frozenset({farm.acme}))
    async with TestClient(TestServer(app_as(farm, SUPER))) as client:
        status, body = await call(client, "GET", "/api/posts")
        assert status == 200, body
        assert [p["account"] for p in body["posts"]] == ["clipshare.z1", "clipshare.a1"]
        acme_post = body["posts"][1]
        assert set(acme_post) >= {"post_id", "account", "account_id", "platform", "posted_at",
                                  "caption", "hashtags", "media", "status", "execution_id",
                                  "latest"}
        assert acme_post["latest"] == {"views": 50, "likes": 7, "comments": 1, "shares": None,
                                       "saves": None}
        assert acme_post["posted_at"].startswith("2026-12-01T00:30:00")
        zeta_post = body["posts"][0]["post_id"]
        status, body = await call(client, "GET", "/api/posts?account=clipshare.a1&limit=5")
        assert [p["account"] for p in body["posts"]] == ["clipshare.a1"]
        status, body = await call(client, "GET", "/api/posts?since=2026-12-02T00:00:00Z")
        assert [p["account"] for p in body["posts"]] == ["clipshare.z1"]
        for query, field in (("limit=0", "limit"), ("since=yesterday", "since"),
                             ("account=clipshare.nobody", "account")):
            status, body = await call(client, "GET", f"/api/posts?{query}")
            assert (status, body.get("field")) == (400, field), body
        status, body = await call(client, "GET", f"/api/posts/{acme_post['post_id']}/metrics")
        assert status == 200, body
        assert [d["date"] for d in body["daily"]] == ["2026-12-01", "2026-12-02"]
        assert body["daily"][1]["views"] == 50 and len(body["samples"]) == 6
        assert (await call(client, "GET", "/api/posts/999999/metrics"))[0] == 404
        assert (await call(client, "GET", "/api/posts/x/metrics"))[0] == 400
        status, made = await call(client, "POST", "/api/analytics/rollup",
                                  {"date": "2026-12-02"})
        assert (status, made["clients"]) == (200, 2), made
        for bad in ({"date": "2026-13-01"}, {"date": "12/02/2026"}, {}, {"date": "2999-01-01"}):
            status, body = await call(client, "POST", "/api/analytics/rollup", bad)
            assert status == 400 and "date" in body["error"], body
        status, daily = await call(client, "GET",
                                   "/api/analytics/daily?since=2026-12-01&until=2026-12-02")
        assert status == 200 and len(daily["clients"]) == 2 and len(daily["platforms"]) == 1
        status, body = await call(client, "GET", "/api/analytics/daily?since=2026-12-05"
                                                 "&until=2026-12-01")
        assert (status, body["field"]) == (400, "since")
        status, body = await call(client, "GET", "/api/accounts")
        accounts = {a["account"]: a for a in body["accounts"]}
        assert accounts["clipshare.z1"]["health"]["state"] == "at_risk"
        a1 = accounts["clipshare.a1"]
        assert (a1["health"]["state"], a1["health"]["followers"], a1["client_id"],
                a1["phone"]) == ("ok", 125, farm.acme, A1)
        assert [v for _, v in a1["followers_series"]] == [100, 110, 125]
        assert [p["caption"] for p in a1["last_posts"]] == ["one"]
        status, body = await call(client, "GET", "/api/accounts?health=at_risk")
        assert [a["account"] for a in body["accounts"]] == ["clipshare.z1"]
        assert (await call(client, "GET", "/api/accounts?health=bad"))[1]["field"] == "health"

    async with TestClient(TestServer(app_as(farm, tenant))) as client:
        status, body = await call(client, "GET", "/api/posts")
        assert [p["account"] for p in body["posts"]] == ["clipshare.a1"]
        status, body = await call(client, "GET", f"/api/posts/{zeta_post}/metrics")
        assert status == 404, body
        status, body = await call(client, "GET", "/api/posts?account=clipshare.z1")
        assert (status, body["field"]) == (400, "account")
        status, body = await call(client, "POST", "/api/analytics/rollup",
                                  {"date": "2026-12-02"})
        assert status == 403
        status, daily = await call(client, "GET",
                                   "/api/analytics/daily?since=2026-12-01&until=2026-12-02")
        assert [r["client"] for r in daily["clients"]] == ["Acme"] and "platforms" not in daily
        status, body = await call(client, "GET", "/api/accounts")
        assert [a["account"] for a in body["accounts"]] == ["clipshare.a1"]
        assert "Zeta" not in str(body) and "z1" not in str(body)


class Runs:
    """Starts nothing: records each start as a pending execution."""

    def __init__(self, db: FarmDB) -> None:
        self.db, self.started = db, []

    async def targets(self, scope: str, **_) -> list[tuple[str, str | None]]:
        return [(A1, "clipshare.a1" if scope.startswith("account:") else None)]

    def sequence(self, name: str):
        from types import SimpleNamespace

        return name, SimpleNamespace(account="clipshare")  # as post_clip: the phone's first

    async def start_one(self, sequence, serial, account, variables=None, *, run_id=None,
                        **_) -> dict:
        key = f"sched-{len(self.started) + 1}"
        self.started.append((key, serial, account))
        await self.db.create_execution(key, run_id=run_id, serial=serial, sequence=sequence)
        return {"execution_id": key, "status": "pending", "account": account, "error": None}


class PhonesHub:
    phone_rows = {A1: {"serial": A1, "node": "rack1", "state": "online", "lock_holder": None}}
    node_rows = {"rack1": {"name": "rack1", "state": "up"}}


async def test_a_skip_at_risk_schedule_skips_an_at_risk_account_and_says_why(farm: Farm
                                                                             ) -> None:
    now = [datetime.now(timezone.utc)]
    farm.service._now = lambda: now[0]
    runs = Runs(farm.db)
    schedules = ScheduleService(PhonesHub(), runs, farm.db, clock=lambda: now[0])
    await schedules.load()
    schedules.account_health = farm.service.account_risk
    await schedules.add(Schedule(id="careful", sequence="clipshare/post_clip",
                                 target="account:clipshare.a1@all", type="immediate",
                                 skip_at_risk=True))
    await schedules.step()
    assert [s[2] for s in runs.started] == ["clipshare.a1"]  # healthy: it runs
    await farm.db.update_execution("sched-1", status="completed")
    farm.emit("health_signal", A1, farm.keys[A1], now[0] - timedelta(hours=1),
              kind="challenge", screen="clipshare/interrupt:verify_identity")
    await farm.service.drain()
    await schedules.add(Schedule(id="careful2", sequence="clipshare/post_clip",
                                 target="account:clipshare.a1@all", type="immediate",
                                 skip_at_risk=True))
    await schedules.add(Schedule(id="regardless", sequence="clipshare/post_clip",
                                 target="account:clipshare.a1@all", type="immediate"))
    # A phone scope names no account: the sequence's (the phone's first clipshare one) is it.
    await schedules.add(Schedule(id="by_phone", sequence="clipshare/post_clip",
                                 target=f"phone:{A1}", type="immediate", skip_at_risk=True))
    for _ in range(4):
        now[0] += timedelta(seconds=5)
        await schedules.step()
    assert len(runs.started) == 2 and runs.started[1][0] == "sched-2"  # only "regardless"
    by_phone = [e for e in await schedules.events("by_phone") if e["kind"] == "skipped"]
    assert len(by_phone) == 1 and by_phone[0]["detail"]["account"] == "clipshare.a1"
    skipped = [e for e in await schedules.events("careful2") if e["kind"] == "skipped"]
    assert len(skipped) == 1, await schedules.events("careful2")
    assert skipped[0]["detail"]["account"] == "clipshare.a1"
    assert "at_risk" in skipped[0]["reason"] and "challenge" in skipped[0]["reason"]
    assert schedules.view("careful2")["jobs"] == {"skipped": 1}
    assert schedules.view("careful2")["skip_at_risk"] is True  # stored with the schedule
    again = ScheduleService(PhonesHub(), runs, farm.db, clock=lambda: now[0])
    await again.load()
    assert again.view("careful2")["skip_at_risk"] is True


async def test_farm_posts_accounts_and_analytics(farm: Farm, capsys) -> None:
    import asyncio
    import json

    from actors.control.cli import main as farm_main

    await _known_days(farm)
    async with TestClient(TestServer(app_as(farm, SUPER))) as client:
        url = str(client.make_url("")).rstrip("/")

        def farm_cli(*args: str) -> tuple[int, str, str]:
            code = farm_main(["--url", url, *args])
            out = capsys.readouterr()
            return code, out.out, out.err

        code, out, _ = await asyncio.to_thread(farm_cli, "posts", "--account", "clipshare.a1")
        lines = out.splitlines()
        assert code == 0 and lines[0].split()[:4] == ["ID", "ACCOUNT", "POSTED", "STATUS"]
        assert "clipshare.a1" in lines[1] and "50" in lines[1].split() and len(lines) == 2
        post_id = lines[1].split()[0]
        code, out, _ = await asyncio.to_thread(farm_cli, "posts", "show", post_id)
        assert code == 0 and "2026-12-02" in out and "one" in out.splitlines()[0]
        code, out, err = await asyncio.to_thread(farm_cli, "posts", "--since", "soon")
        assert code == 2 and "since" in err
        code, out, _ = await asyncio.to_thread(farm_cli, "analytics", "rollup", "--date",
                                               "2026-12-02")
        assert code == 0 and out.startswith("2026-12-02: 2 client rows, 1 platform rows")
        code, out, _ = await asyncio.to_thread(farm_cli, "analytics", "daily", "--since",
                                               "2026-12-02", "--until", "2026-12-02")
        acme = next(line.split() for line in out.splitlines() if "Acme" in line)
        assert code == 0 and acme[3:10] == ["0", "40", "5", "1", "7", "25", "15.00%"]
        code, out, err = await asyncio.to_thread(farm_cli, "analytics", "rollup", "--date",
                                                 "2026-02-30")
        assert code == 2 and "date" in err
        code, out, _ = await asyncio.to_thread(farm_cli, "accounts", "--json")
        rows = json.loads(out)
        assert code == 0 and {r["account"]: r["health"]["state"] for r in rows} == {
            "clipshare.a1": "ok", "clipshare.z1": "ok"}
        code, out, _ = await asyncio.to_thread(farm_cli, "accounts")
        assert code == 0 and out.splitlines()[0].split()[:5] == [
            "ID", "ACCOUNT", "PHONE", "STATUS", "HEALTH"]


async def test_the_daily_loop_rolls_the_day_before_up_after_midnight(farm: Farm) -> None:
    import asyncio

    from actors.coordinator.content_data.service import ROLLUP_AT

    await _known_days(farm)
    farm.emit("post_recorded", A1, farm.keys[A1], DAY2 + timedelta(hours=2),
              status="posted", caption="two", hashtags=["#two"], media=None,
              platform_post_id=None, reason=None)
    await farm.service.drain()
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        raise asyncio.CancelledError  # stop at the first wait for the next day

    # 00:20 UTC on day 3: day 2 is due (rolled up at 00:10), day 3 is not.
    loop = ContentDataService(farm.hub, farm.db, at=ROLLUP_AT, sleep=sleep,
                              now=lambda: DAY2 + timedelta(days=1, minutes=20))
    with pytest.raises(asyncio.CancelledError):
        await loop.loop()
    assert naps == [60.0]  # waiting for 00:10 the day after, the clock looked at each minute
    rows = await farm.service.store.daily("2026-12-01", "2026-12-03")
    assert {r["date"] for r in rows["clients"]} == {"2026-12-02"}
    acme = next(r for r in rows["clients"] if r["client"] == "Acme")
    assert acme["posts"] == 1 and acme["views"] == 40
    # Last posts per account, newest first (GET /api/accounts' last_posts).
    last = await farm.service.store.last_posts(
        [r["account_id"] for r in await farm.service.store.accounts()], 1)
    assert sorted(p[0]["caption"] for p in last.values()) == ["two", "zeta"]
