"""Daily reports (issue 19.5, spec 12.4 and 12.3.5) on a real farm database, on both engines:
the figures built from known rows (counts, success rate, failures by reason with their
screenshots, recovery, phones that needed a human, recommendations naming the registry
action that fixed a step most), the renderings (HTML escaped, text readable), the daily
schedule made once per client and day across restarts and caught up after a stop, the
notifier handed each report once, and the API scoped to the caller's clients with bad
input refused naming the field."""

from __future__ import annotations

import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.principal import Principal  # noqa: E402
from actors.control import reports as reports_api  # noqa: E402
from actors.control.app import json_errors  # noqa: E402
from actors.control.auth import PRINCIPAL_KEY  # noqa: E402
from actors.control.http import HUB  # noqa: E402
from actors.coordinator.reports import build, render  # noqa: E402
from actors.coordinator.reports.service import ReportService, due_day  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from registry.model import App, Registry, Screen, ScreenAction  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine")

DAY = date(2026, 12, 6)
AT = time(7, 0)
URL = "http://farm.example:8470"
SEQ = "clipshare/post"
RATE_US = "clipshare/interrupt:rate_us"
REGISTRY = Registry(apps={"clipshare": App(interrupts={"rate_us": Screen(
    name="rate_us", actions=[ScreenAction(name="dismiss", coordinates=(100, 2000, 500, 2200))])})})


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hour, minute), timezone.utc)


def tap_dismiss() -> str:
    return orjson.dumps([{"step": 1, "tool": "tap", "arguments": {"x": 300, "y": 2100},
                          "screen_before": RATE_US, "result": "ok",
                          "screen_after": "clipshare/feed"}]).decode()


async def execution(db: FarmDB, key: str, serial: str, status: str, *, run: str = "run-1",
                    when: datetime | None = None, reason: str | None = None,
                    step: tuple[str, str, str | None] | None = None) -> None:
    """An execution of SEQ; ``step``: (path, step status, screen) of its troubled step."""
    await db.create_execution(key, run_id=run, serial=serial, sequence=SEQ,
                              start_time=when or at(10))
    if step is not None:
        path, step_status, screen = step
        step_id = await db.add_step(key, 2, "tap", path=path, start_time=when or at(10))
        await db.finish_step(step_id, step_status, screen_name=screen,
                             error="expected clipshare/compose" if step_status == "failed"
                             else None,
                             screenshot=f"/data/executions/{key}/{path}.png"
                             if step_status == "failed" else None)
    fields = {"status": status}
    if reason:
        fields.update(error_reason=reason, error_message=f"{reason} at {step[0] if step else '?'}")
    await db.update_execution(key, **fields)


async def attempt(db: FarmDB, key: str, serial: str, status: str, actions: str = "[]",
                  path: str = "steps[2]") -> None:
    await db.add_recovery_attempt(execution_key=key, serial=serial, sequence=SEQ,
                                  step_path=path, status=status, actions_taken=actions,
                                  screen=RATE_US, reached_screen="clipshare/feed"
                                  if status == "succeeded" else None,
                                  error=None if status == "succeeded" else "gave_up: stuck",
                                  start_time=at(10, 5))


async def seed(db: FarmDB) -> dict[str, int]:
    """Acme: A1, A2 (paused); Globex: B1. Acme's day: 6 executions of SEQ in 2 runs, 2
    completed (one after a recovery), 4 failed at steps[2] on the rate-us dialog; recoveries:
    2 fixed by tapping its dismiss action, 1 by the back key, 1 failed. Noise: an execution
    the day before, Globex's, and a step that failed twice only."""
    acme = await db.upsert_client("Acme")
    globex = await db.upsert_client("Globex")
    for serial, client in (("A1", acme), ("A2", acme), ("B1", globex)):
        await db.upsert_phone(serial, client=client)
    await execution(db, "e1", "A1", "completed")
    await execution(db, "e2", "A1", "completed", step=("steps[2]", "recovered", RATE_US))
    for key, serial in (("e3", "A1"), ("e4", "A2"), ("e5", "A2")):
        await execution(db, key, serial, "failed", run="run-2", reason="wrong_screen",
                        step=("steps[2]", "failed", RATE_US))
    await execution(db, "e6", "A1", "failed", run="run-2", reason="timeout",
                    step=("steps[2]", "failed", None))
    await attempt(db, "e2", "A1", "succeeded", tap_dismiss())
    await attempt(db, "e3", "A1", "succeeded", tap_dismiss())
    await attempt(db, "e4", "A2", "succeeded", orjson.dumps([{
        "step": 1, "tool": "key", "arguments": {"key": "back"}, "result": "ok"}]).decode())
    await attempt(db, "e5", "A2", "failed")
    await execution(db, "e7", "A1", "failed", run="run-3", reason="wrong_screen",
                    step=("steps[5]", "failed", "clipshare/feed"))
    await execution(db, "e8", "A1", "failed", run="run-3", reason="wrong_screen",
                    step=("steps[5]", "failed", "clipshare/feed"))
    await execution(db, "old", "A1", "failed", when=at(23, day=DAY - timedelta(days=1)),
                    reason="wrong_screen", step=("steps[2]", "failed", RATE_US))
    await execution(db, "g1", "B1", "failed", run="run-g", reason="wrong_screen",
                    step=("steps[2]", "failed", RATE_US))
    await db.set_phone_pause("A2", "recovery_failures", {"failures_in_a_row": 3})
    return {"acme": acme, "globex": globex}


async def test_the_summary_counts_the_clients_day_and_recommends_the_fix(db: FarmDB) -> None:
    ids = await seed(db)
    period = build.day_period(DAY, at(7, day=DAY + timedelta(days=1)))
    unknown = [{"id": "node-7", "serials": ["A1"], "seen": 2, "app": "clipshare",
                "last_seen": at(11).timestamp(), "status": "queued"},
               {"id": "node-8", "serials": ["B1"], "seen": 1, "last_seen": at(11).timestamp()},
               {"id": "node-9", "serials": ["A1"], "seen": 1,
                "last_seen": at(11, day=DAY - timedelta(days=3)).timestamp()}]
    s = await build.build_summary(db, ids["acme"], "Acme", period, public_url=URL,
                                  unknown_entries=unknown, registry=REGISTRY)
    assert s["period"]["partial"] is False and s["day"] == "2026-12-06"
    assert s["runs"] == 3
    assert s["executions"] == {"total": 8, "completed": 2, "failed": 6, "other": 0}
    assert s["success_rate"] == round(2 / 8, 4)
    assert [(f["reason"], f["count"]) for f in s["failures"]] == [("wrong_screen", 5),
                                                                   ("timeout", 1)]
    latest = s["failures"][0]["examples"][0]
    assert latest["execution_id"] == "e8" and latest["step"] == "steps[5]"
    assert latest["screenshot"] == f"{URL}/api/executions/e8/steps/steps%5B5%5D/screenshot"
    assert s["failures"][1]["examples"][0]["screenshot"].endswith("/e6/steps/steps%5B2%5D/"
                                                                  "screenshot")
    assert s["recovery"] == {"attempts": 4, "succeeded": 3, "failed": 1, "success_rate": 0.75}
    human = s["needs_human"]
    assert [(p["serial"], p["reason"]) for p in human["paused"]] == [("A2",
                                                                      "recovery_failures")]
    assert [(p["serial"], p["failures"]) for p in human["failed_recovery"]] == [("A2", 1)]
    assert [u["id"] for u in human["unknown_screens"]] == ["node-7"]
    assert human["unknown_screens"][0]["image"] == f"{URL}/api/unknown-screens/node-7/image"

    # steps[2] needed help in e2..e6 (5 > 3); steps[5] only in 2 executions.
    (rec,) = s["recommendations"]
    assert (rec["sequence"], rec["step"], rec["times"]) == (SEQ, "steps[2]", 5)
    assert (rec["failed"], rec["recovered"], rec["recovery_attempts"]) == (4, 1, 4)
    # e2..e5 met the dialog (a step row and its recovery attempt count once).
    assert rec["screens"][0] == {"screen": RATE_US, "count": 4, "registered": True}
    assert rec["fix"] == {"path": f"{RATE_US}.dismiss -> resume on clipshare/feed",
                          "registry_actions": [f"{RATE_US}.dismiss"], "count": 2, "of": 3}
    assert f"registry action {RATE_US}.dismiss fixed it most (2 of 3" in rec["advice"]
    assert f"make dismiss the handler of the interrupt {RATE_US}" in rec["advice"]

    s1 = await build.build_summary(db, ids["acme"], "Acme", period, public_url=URL,
                                   threshold=1, registry=REGISTRY)
    assert [(r["step"], r["times"]) for r in s1["recommendations"]] == [("steps[2]", 5),
                                                                        ("steps[5]", 2)]
    assert s1["recommendations"][1]["fix"] is None
    # Without the registry the tap is still a path, named by where it tapped.
    s2 = await build.build_summary(db, ids["acme"], "Acme", period, public_url=URL)
    assert s2["recommendations"][0]["fix"]["path"] == (f"tap (300, 2100) on {RATE_US} -> "
                                                       "resume on clipshare/feed")
    # Globex sees its own day only.
    g = await build.build_summary(db, ids["globex"], "Globex", period, public_url=URL)
    assert g["executions"]["total"] == 1 and g["needs_human"]["paused"] == []


def test_the_html_escapes_what_came_from_the_database_and_the_text_reads() -> None:
    evil = '<script>alert("x")</script>'
    rows = {"executions": [{"execution_key": "k<1>", "run_id": "r", "serial": "S&1",
                            "sequence": evil, "status": "failed", "error_reason": "wrong<b>",
                            "error_message": '<img src=x onerror="alert(1)">',
                            "start_time": "2026-12-06 10:00:00", "end_time": None}],
            "steps": [{"execution_key": "k<1>", "sequence": evil, "serial": "S&1",
                       "path": "steps[0]", "action_type": "tap", "screen_name": "a/<i>",
                       "status": "failed", "error": "x", "screenshot": "/s.png",
                       "end_time": None}] * 1,
            "attempts": [], "paused": [{"serial_number": "S&1", "paused_reason": "<r>",
                                        "paused_at": "t", "paused_detail": None}],
            "serials": ["S&1"]}
    s = build.summarize(rows, client_id=1, client=f"Acme{evil}",
                        period=build.day_period(DAY, at(9, day=DAY + timedelta(days=1))),
                        public_url=URL, threshold=0)
    html = render.render_html(s)
    assert "<script>" not in html and "onerror=\"" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x onerror=&quot;" in html
    assert 'src="http://farm.example:8470/api/executions/k%3C1%3E/steps/steps%5B0%5D/' \
           'screenshot"' in html  # the screenshot by URL, never its bytes
    assert "base64" not in html
    text = render.render_text(s)
    assert "Success rate: 0.0%" in text and "Executions: 1 (0 completed, 1 failed" in text
    assert "wrong<b>: 1" in text and "S&1: paused (<r>)" in text
    assert f"Step steps[0] of {evil} failed or needed recovery in 1 executions" in text


class FakeNotifier:
    def __init__(self) -> None:
        self.notices: list = []

    async def send(self, notice, channels=None) -> list[int]:
        self.notices.append(notice)
        return [len(self.notices)]


class Hub:
    def __init__(self, notifier=None) -> None:
        self.notifier = notifier
        self.events: list[tuple[str, dict]] = []

    def emit(self, event, node, serial, data) -> None:
        self.events.append((event, data))


def service(db: FarmDB, hub: Hub, now: datetime) -> ReportService:
    return ReportService(db, hub.emit, public_url=URL, hub=hub, at=AT, now=lambda: now)


async def test_the_daily_reports_are_made_once_per_client_and_day(db: FarmDB) -> None:
    await seed(db)
    assert due_day(at(7, 5, DAY + timedelta(days=1)), AT) == DAY
    assert due_day(at(6, 59, DAY + timedelta(days=1)), AT) == DAY - timedelta(days=1)
    notifier = FakeNotifier()
    hub = Hub(notifier)
    # The coordinator was down at 07:00: it starts at 09:30 and makes the day's reports.
    made = await service(db, hub, at(9, 30, DAY + timedelta(days=1))).catch_up()
    assert len(made) == 2
    assert sorted(n.title for n in notifier.notices) == [
        "Daily report 2026-12-06: Acme", "Daily report 2026-12-06: Globex"]
    acme = next(n for n in notifier.notices if n.title.endswith("Acme"))
    assert acme.kind == "report" and acme.html.startswith("<!DOCTYPE html>")
    # The console's page of the report: the API's routes take only a bearer token.
    assert acme.links["report"].startswith(f"{URL}/#reports/")
    assert acme.links["report"].removeprefix(f"{URL}/#reports/").isdigit()
    assert "Success rate: 25.0%" in acme.text
    assert [e for e, _ in hub.events].count("report_ready") == 2
    assert ("report_progress", {"day": "2026-12-06", "done": 2, "total": 2}) in hub.events
    # A restart at 07:05 the next morning, and the schedule's own run: nothing twice.
    again = service(db, hub, at(7, 5, DAY + timedelta(days=1)))
    assert await again.catch_up() == [] and await again.daily(DAY) == []
    assert len(notifier.notices) == 2
    rows = await again.store.list()
    assert len(rows) == 2 and all(r["sent_at"] is not None for r in rows)


async def test_a_report_kept_without_a_notifier_is_sent_once_one_arrives(db: FarmDB) -> None:
    await seed(db)
    now = at(7, 1, DAY + timedelta(days=1))
    kept = service(db, Hub(None), now)
    assert len(await kept.catch_up()) == 2
    assert all(r["sent_at"] is None for r in await kept.store.list())
    notifier = FakeNotifier()
    later = service(db, Hub(notifier), now + timedelta(hours=1))
    assert await later.catch_up() == []  # made already: only handed over now
    assert len(notifier.notices) == 2
    assert {n.key for n in notifier.notices} == {
        f"report:daily:{c['client_id']}:2026-12-06" for c in await db.client_rows()}
    assert await later.catch_up() == [] and len(notifier.notices) == 2


async def test_the_loop_makes_the_next_day_at_the_hour(db: FarmDB) -> None:
    await seed(db)
    clock = [at(8, 0, DAY + timedelta(days=1))]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)
        if clock[0] > at(7, 30, DAY + timedelta(days=2)):
            raise StopAsyncIteration  # out of the loop

    hub = Hub(FakeNotifier())
    svc = ReportService(db, hub.emit, public_url=URL, hub=hub, at=AT,
                        now=lambda: clock[0], sleep=sleep)
    with pytest.raises(StopAsyncIteration):
        await svc.loop()
    days = sorted((r["client"], r["day"]) for r in await svc.store.list())
    assert days == [("Acme", "2026-12-06"), ("Acme", "2026-12-07"),
                    ("Globex", "2026-12-06"), ("Globex", "2026-12-07")]
    assert max(slept) <= 60.0


def app_as(db: FarmDB, principal: Principal, now: datetime) -> web.Application:
    @web.middleware
    async def caller(request: web.Request, handler):
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    app = web.Application(middlewares=[json_errors, caller])
    hub = Hub()
    hub.farm_db = lambda: db  # where a refused change is audited
    app[HUB] = hub
    app[reports_api.REPORTS] = service(db, hub, now)
    reports_api.add_routes(app)
    return app


async def test_the_api_keeps_each_tenant_to_its_clients_reports(db: FarmDB) -> None:
    ids = await seed(db)
    now = at(12, 0, DAY + timedelta(days=1))
    made = await service(db, Hub(), now).daily(DAY)
    assert len(made) == 2
    acme_admin = Principal(user_id=7, name="ann", role="admin", client_ids=frozenset(
        {ids["acme"]}))
    acme_client = Principal(user_id=8, name="bob", role="client", client_ids=frozenset(
        {ids["acme"]}))
    root = Principal(user_id=1, name="admin", role="super")
    async with TestClient(TestServer(app_as(db, acme_admin, now))) as c:
        body = await (await c.get("/api/reports")).json()
        assert [r["client"] for r in body["reports"]] == ["Acme"]
        mine, = body["reports"]
        other = next(i for i in made if i != mine["id"])
        for path in (f"/api/reports/{other}", f"/api/reports/{other}.html",
                     f"/api/reports/{other}?format=text"):
            assert (await c.get(path)).status == 404, path
        got = await (await c.get(f"/api/reports/{mine['id']}")).json()
        assert got["summary"]["executions"]["total"] == 8 and "Recommendations" in got["text"]
        page = await c.get(f"/api/reports/{mine['id']}.html")
        assert page.status == 200 and page.content_type == "text/html"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert (await page.text()) == await (await c.get(
            f"/api/reports/{mine['id']}?format=html")).text()
        assert (await c.get("/api/reports?client=Globex")).status == 400
        # An admin makes one for its client (today so far), not for another's.
        resp = await c.post("/api/reports", json={"client": "Acme", "day": "2026-12-07"})
        made_now = await resp.json()
        assert resp.status == 201 and made_now["kind"] == "manual", made_now
        assert made_now["summary"]["period"]["partial"] is True
        assert made_now["created_by"] == "user:7:ann"
        for body, field in (({"client": "Globex"}, "$.client"),
                            ({"client": "Nobody"}, "$.client"),
                            ({"client": "Acme", "day": "06.12.2026"}, "$.day"),
                            ({"client": "Acme", "day": "2026-12-09"}, "$.day"),
                            ({"client": "Acme", "extra": 1}, "$"),
                            ({"day": "2026-12-06"}, "$")):
            resp = await c.post("/api/reports", json=body)
            answer = await resp.json()
            assert resp.status == 400 and answer.get("field", "").startswith(field), (body,
                                                                                      answer)
        for path, field in (("/api/reports?limit=0", "limit"), ("/api/reports?day=x", "day"),
                            ("/api/reports/abc", "id"), ("/api/reports/1?format=pdf",
                                                         "format")):
            resp = await c.get(path)
            assert resp.status == 400 and (await resp.json())["field"] == field, path
    async with TestClient(TestServer(app_as(db, acme_client, now))) as c:
        resp = await c.post("/api/reports", json={"client": "Acme"})
        assert resp.status == 403
    refused = await db.audit_trail("refused")
    assert refused and refused[0]["actor"] == "user:8:bob"
    # The report made is in the trail of its client's callers, not of another client's.
    made_entries = await db.audit_trail("report", client_ids=[ids["acme"]])
    assert [e["entity_id"] for e in made_entries] == [str(made_now["id"])]
    assert await db.audit_trail("report", client_ids=[ids["globex"]]) == []
    assert len(await service(db, Hub(), now).store.list()) == 3  # nothing made by refusals
    async with TestClient(TestServer(app_as(db, root, now))) as c:
        body = await (await c.get("/api/reports?limit=2")).json()
        assert len(body["reports"]) == 2
        body = await (await c.get(f"/api/reports?before={body['reports'][-1]['id']}")).json()
        assert len(body["reports"]) == 1
        body = await (await c.get("/api/reports?client=Globex&day=2026-12-06")).json()
        assert [r["client"] for r in body["reports"]] == ["Globex"]


async def test_a_daily_report_reaches_a_webhook_channel_that_takes_reports(db: FarmDB) -> None:
    from actors.coordinator.alerts.notify import Notifier
    from actors.coordinator.alerts.rules import AlertsConfig, Channel
    from actors.coordinator.alerts.store import AlertStore
    from test_alerts import Hook

    await seed(db)
    hook = await Hook().start()
    config = AlertsConfig((Channel("acme-hook", "webhook", url=hook.url("/acme"),
                                   kinds=("report",), clients=("Acme",)),
                           Channel("alerts-only", "webhook", url=hook.url("/alerts"),
                                   kinds=("alert",))))
    notifier = Notifier(AlertStore(db), config, public_url=URL)
    try:
        made = await service(db, Hub(notifier), at(7, 0, DAY + timedelta(days=1))).catch_up()
        assert len(made) == 2
        assert await notifier.deliver_due() == 1  # Acme's, to the channel taking reports
        (got,) = await hook.wait(1)
        body = got["body"]
        assert got["path"] == "/acme" and body["kind"] == "report"
        assert body["client"] == "Acme" and body["title"] == "Daily report 2026-12-06: Acme"
        assert "Recommendations (steps needing help" in body["text"]
        assert body["html"].startswith("<!DOCTYPE html>")
        assert body["links"]["report"] in {f"{URL}/#reports/{i}" for i in made}
    finally:
        if notifier._session is not None:  # deliver_due opened it (run() closes its own)
            await notifier._session.close()
        await hook.stop()


async def test_farm_reports_lists_shows_and_makes(db: FarmDB, capsys) -> None:
    import asyncio

    from actors.control.cli import main as farm_main

    ids = await seed(db)
    now = at(12, 0, DAY + timedelta(days=1))
    await service(db, Hub(), now).daily(DAY)
    root = Principal(user_id=1, name="admin", role="super")
    async with TestClient(TestServer(app_as(db, root, now))) as c:
        url = str(c.make_url("")).rstrip("/")

        def farm(*argv: str) -> tuple[int, str, str]:
            code = farm_main(["--url", url, "reports", *argv])
            out = capsys.readouterr()
            return code, out.out, out.err

        code, out, _ = await asyncio.to_thread(farm, "list", "--client", "Acme")
        lines = out.splitlines()
        assert code == 0 and lines[0].split() == ["ID", "CLIENT", "DAY", "KIND", "CREATED",
                                                  "SENT"]
        assert len(lines) == 2 and "Acme" in lines[1] and "daily" in lines[1]
        report_id = lines[1].split()[0]
        code, out, _ = await asyncio.to_thread(farm, "show", report_id)
        assert code == 0 and out.startswith("Daily report 2026-12-06: Acme")
        code, out, _ = await asyncio.to_thread(farm, "show", report_id, "--html")
        assert code == 0 and out.startswith("<!DOCTYPE html>")
        code, out, _ = await asyncio.to_thread(farm, "make", "--client", "Globex",
                                               "--day", "2026-12-06")
        assert code == 0 and out.startswith("report ") and "Globex" in out
        code, _, err = await asyncio.to_thread(farm, "make", "--client", "Nobody")
        assert code == 2 and "no such client" in err
        code, _, err = await asyncio.to_thread(farm, "show")
        assert code == 2 and "id" in err
    assert ids["globex"] in {r["client_id"] for r in await ReportService(
        db, Hub().emit, public_url=URL).store.list(client_id=ids["globex"])}


async def test_a_day_that_fails_does_not_stop_the_schedule(db: FarmDB, monkeypatch) -> None:
    await seed(db)
    clock = [at(8, 0, DAY + timedelta(days=1))]
    tried: list[date] = []
    real_daily = ReportService.daily

    async def flaky(self, day: date) -> list[int]:
        tried.append(day)
        if len(tried) == 1:
            raise OSError("the database is unreachable")
        return await real_daily(self, day)

    async def sleep(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)
        if clock[0] > at(7, 30, DAY + timedelta(days=2)):
            raise StopAsyncIteration

    monkeypatch.setattr(ReportService, "daily", flaky)
    svc = ReportService(db, Hub().emit, public_url=URL, at=AT, now=lambda: clock[0], sleep=sleep)
    with pytest.raises(StopAsyncIteration):
        await svc.loop()
    assert tried == [DAY, DAY + timedelta(days=1)]
    assert sorted({r["day"] for r in await svc.store.list()}) == ["2026-12-07"]


def test_a_tenant_hears_its_own_clients_report_events_only() -> None:
    from actors.access.scope import event_visible

    acme = Principal(user_id=7, name="ann", role="viewer", client_ids=frozenset({1}))
    root = Principal(user_id=1, name="admin", role="super")

    def event(name: str, client_id) -> dict:
        return {"event": name, "serial": None, "node": None,
                "data": {"client_id": client_id, "report_id": 5}}

    assert event_visible(acme, None, event("report_ready", 1))
    assert not event_visible(acme, None, event("report_ready", 2))
    assert not event_visible(acme, None, event("report_ready", "1"))
    assert not event_visible(acme, None, event("report_progress", 1))  # farm-wide counts
    assert event_visible(root, None, event("report_progress", None))
