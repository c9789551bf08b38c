"""Alerts and notifications (issue 19.3): rules checked whole (file: file, line, rule,
field; API: the field), alerts fired once, repeated, acknowledged, silenced and resolved,
delivered by a real aiohttp webhook server and a real SMTP server (aiosmtpd), kept in the
outbox while a webhook is down and delivered after a restart, and scoped per client. The
database tests run on both engines."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from actors.access.principal import Principal
from actors.access.users import AccessDenied
from actors.coordinator.alerts.notify import Notice, Notifier
from actors.coordinator.alerts.rules import (AlertsConfig, Channel, load_config, parse_channel,
                                             parse_rule)
from actors.coordinator.alerts.service import AlertService
from actors.coordinator.alerts.store import OUTBOX_KEEP_S, AlertStore
from actors.store.farm_db import FarmDB
from protocol.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]


# --- a real webhook receiver ----------------------------------------------------------------


class Hook:
    """A real aiohttp server taking webhook POSTs (``fail`` answers 503 that many times)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.bodies: list[dict] = []
        self.fail = 0
        self.got = asyncio.Event()
        self.runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503, text="busy")
        self.bodies.append({"path": request.path, "body": await request.json(),
                            "at": time.time()})
        self.got.set()
        return web.Response(text="ok")

    async def start(self) -> "Hook":
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait(self, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.bodies


class MiniHub:
    """What the engine reads of the hub: phone and node rows, pauses, owners, the stream."""

    def __init__(self) -> None:
        self.phone_rows: dict[str, dict] = {}
        self.node_rows: dict[str, dict] = {}
        self.pauses = None
        self.owners = None
        self.runs = None
        self.events: list[tuple] = []
        self.queues: set[asyncio.Queue] = set()
        self.event_observers: list = []

    def emit(self, event, node, serial, data) -> None:
        self.events.append((event, node, serial, data))
        item = {"event": event, "ts": time.time(), "node": node, "serial": serial,
                "data": data}
        for observe in self.event_observers:
            observe(item)
        for q in self.queues:
            q.put_nowait(item)

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.queues.add(q)
        return q

    def unsubscribe(self, q) -> None:
        self.queues.discard(q)


class Owners:
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def client_name(self, serial: str) -> str | None:
        return self.names.get(serial)


SUPER = Principal(user_id=1, name="admin", role="super")


# --- rules and the config file --------------------------------------------------------------


def test_the_shipped_example_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "alerts.toml")
    assert {r.kind for r in config.rules} >= {"phone_offline", "node_down", "failure_rate",
                                              "scheduler_delay", "disk", "phone_paused",
                                              "recovery_failed"}
    assert config.channels[0].name == "ops-hook"


@pytest.mark.parametrize("body, where", [
    ('[[rule]]\nname = "a"\nkind = "phone_offline"\nminutes = -1\n', ":4: rule 'a' (#1): minutes"),
    ('[[rule]]\nname = "a"\nkind = "nope"\n', ":3: rule 'a' (#1): kind"),
    ('[[rule]]\nname = "a"\nkind = "disk"\npercent = 50\nclient = "Acme"\n', ":5: rule 'a' (#1): client"),
    ('[[rule]]\nname = "a"\nkind = "phone_paused"\n\n[[rule]]\nname = "b"\nkind = "node_down"\n'
     'seconds = "x"\n', ":8: rule 'b' (#2): seconds"),
    ('[[rule]]\nname = "a"\nkind = "phone_paused"\nchannels = ["nowhere"]\n', ":4: rule 'a' (#1): channels"),
    ('[[rule]]\nname = "a"\nkind = "phone_paused"\nrepeat = "often"\n', ":4: rule 'a' (#1): repeat"),
    ('[[rule]]\nname = "a"\nkind = "phone_paused"\ncolour = 1\n', ":4: rule 'a' (#1): colour"),
    ('[[channel]]\nname = "h"\ntype = "webhook"\nurl = "ftp://x"\n', ":4: channel 'h' (#1): url"),
    ('[[channel]]\nname = "m"\ntype = "email"\nto = ["a@x"]\nfrom = "f@x"\nsmtp = "host"\n',
     ":6: channel 'm' (#1): smtp"),
    ('[[channel]]\nname = "m"\ntype = "email"\nto = ["a@x"]\nfrom = "f@x"\nsmtp = "h:25"\n'
     'user = "u"\npassword_file = "missing.pw"\n', ":8: channel 'm' (#1): password_file"),
    ('[[rule]\nname = "a"\n', "not valid TOML"),
])
def test_a_bad_config_names_file_line_rule_and_field(tmp_path: Path, body: str, where: str) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(body)
    with pytest.raises(ValidationError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and where in str(caught.value), str(caught.value)


def test_api_rules_name_the_json_field() -> None:
    where = lambda f: f"$.{f}"  # noqa: E731
    with pytest.raises(ValidationError) as caught:
        parse_rule({"name": "r", "kind": "failure_rate", "percent": 120}, where)
    assert caught.value.where == "$.percent"
    with pytest.raises(ValidationError) as caught:
        parse_rule({"name": "bad name!", "kind": "phone_paused"}, where)
    assert caught.value.where == "$.name"
    rule = parse_rule({"name": "r", "kind": "phone_offline", "repeat": "never"}, where)
    assert rule.params == {"minutes": 10.0} and rule.repeat_s is None
    with pytest.raises(ValidationError) as caught:  # a floor: no flood of repeats
        parse_rule({"name": "r", "kind": "phone_offline", "repeat": "30s"}, where)
    assert caught.value.where == "$.repeat" and "1m" in caught.value.reason
    assert parse_rule({"name": "r", "kind": "phone_paused", "repeat": "1m"}, where).repeat_s == 60


def test_a_channel_takes_its_kinds_and_clients() -> None:
    c = parse_channel({"name": "c", "type": "slack", "url": "https://h/x",
                       "kinds": ["alert"], "clients": ["Acme"]}, lambda f: f)
    assert c.takes("alert", "Acme") and not c.takes("report", "Acme")
    assert not c.takes("alert", None) and not c.takes("alert", "Globex")
    assert "x" not in c.view()["url"]  # a webhook's path is its secret


# --- the engine and the outbox, on both engines ---------------------------------------------


async def _service(db: FarmDB, hub: MiniHub, channels: list[Channel], rules: list[dict],
                   tmp_path: Path) -> AlertService:
    # "repeat_s" (seconds, below the 1 min floor of a rule's "repeat") lets a test repeat fast.
    config = AlertsConfig(tuple(channels), tuple(
        replace(parse_rule({k: v for k, v in r.items() if k != "repeat_s"}, lambda f: f,
                           channels=lambda n: True),
                **({"repeat_s": r["repeat_s"]} if "repeat_s" in r else {}))
        for r in rules), str(tmp_path / "alerts.toml"))
    service = AlertService(hub, db, config, public_url="http://farm.example:8470",
                           data_dir=tmp_path, retry_base_s=0.2)
    await service.engine.load(config)
    return service


async def test_an_alert_fires_once_repeats_is_acked_silenced_and_resolves(
        db: FarmDB, tmp_path: Path) -> None:
    hook = await Hook().start()
    hub = MiniHub()
    hub.phone_rows["P1"] = {"serial": "P1", "node": "rack1", "state": "offline",
                            "state_at": time.time() - 5}
    service = await _service(db, hub, [Channel("hook", "webhook", url=hook.url())], [
        {"name": "offline", "kind": "phone_offline", "minutes": 0, "repeat_s": 1.0}], tmp_path)
    delivery = asyncio.create_task(service.notifier.run())
    try:
        engine = service.engine
        await engine.evaluate_conditions()
        await engine.evaluate_conditions()  # still true: no second alert
        bodies = await hook.wait(1)
        assert len(bodies) == 1
        first = bodies[0]["body"]
        assert first["kind"] == "alert" and "P1" in first["title"]
        assert first["links"]["phone"].startswith("http://farm.example:8470/")
        alerts = await service.alerts(SUPER, "firing", 10)
        assert len(alerts) == 1 and alerts[0]["subject"] == "P1"

        await asyncio.sleep(1.1)  # the repeat interval passed: sent again, once
        await engine.evaluate_conditions()
        await engine.evaluate_conditions()
        bodies = await hook.wait(2)
        assert len(bodies) == 2 and bodies[1]["body"]["title"].startswith("Still:")

        await service.ack(alerts[0]["id"], SUPER)  # acked: no more repeats
        await asyncio.sleep(1.1)
        await engine.evaluate_conditions()
        await asyncio.sleep(0.3)
        assert len(hook.bodies) == 2

        hub.phone_rows["P1"]["state"] = "online"  # resolved: one resolved notice
        await engine.evaluate_conditions()
        bodies = await hook.wait(3)
        assert bodies[2]["body"]["kind"] == "resolved"
        assert (await service.alerts(SUPER, "resolved", 10))[0]["acked_by"] == "user:1:admin"

        await service.silence("offline", "2h", SUPER)  # silenced: recorded, not sent
        hub.phone_rows["P1"]["state"] = "offline"
        await engine.evaluate_conditions()
        await asyncio.sleep(0.3)
        assert len(hook.bodies) == 3
        assert len(await service.alerts(SUPER, "firing", 10)) == 1
        hub.phone_rows["P1"]["state"] = "online"
        await engine.evaluate_conditions()  # nobody was told: no resolved notice either
        await asyncio.sleep(0.3)
        assert len(hook.bodies) == 3
        # The console's list has every notice sent.
        listed = await service.notifications(SUPER, False, 50)
        assert listed["unread"] == 3
        assert await service.mark_read(SUPER, None) == 3
        assert (await service.notifications(SUPER, True, 50))["notifications"] == []
    finally:
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)
        await hook.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_webhook_down_then_up_gets_every_notice_after_retry_and_a_restart(
        tmp_path: Path, engine: str) -> None:
    port = _free_port()
    channel = Channel("hook", "webhook", url=f"http://127.0.0.1:{port}/in")
    config = AlertsConfig((channel,))
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    notifier = Notifier(AlertStore(db), config, retry_base_s=0.2)
    delivery = asyncio.create_task(notifier.run())
    ids = [(await notifier.send(Notice("alert", None, f"n{i}", "text", key=f"k{i}")))[0]
           for i in range(3)]
    assert await notifier.send(Notice("alert", None, "n0", "text", key="k0")) == [ids[0]]
    await asyncio.sleep(0.8)  # nobody listens: attempts fail, the rows stay
    views = await notifier.channel_views()
    assert views[0]["pending"] == 3 and views[0]["failing"]
    assert "Connect" in views[0]["last_error"] or "connect" in views[0]["last_error"]
    delivery.cancel()  # the coordinator stops with the notices undelivered
    await asyncio.gather(delivery, return_exceptions=True)
    await db.close()

    hook = Hook(port)
    hook.fail = 2  # up, but answering 503 twice first
    await hook.start()
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    notifier = Notifier(AlertStore(db), config, retry_base_s=0.2)
    delivery = asyncio.create_task(notifier.run())
    try:
        bodies = await hook.wait(3)
        assert sorted(b["body"]["title"] for b in bodies) == ["n0", "n1", "n2"]
        # The webhook has the body before the notifier has marked its row delivered.
        deadline = time.monotonic() + 10
        while (views := await notifier.channel_views())[0]["pending"] and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert views[0]["pending"] == 0 and views[0]["delivered"] == 3
        assert not views[0]["failing"]
    finally:
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)
        await hook.stop()
        await db.close()


async def test_a_notice_past_its_expiry_is_never_sent_and_old_rows_are_pruned(
        tmp_path: Path, engine: str) -> None:
    port = _free_port()
    config = AlertsConfig((Channel("hook", "webhook", url=f"http://127.0.0.1:{port}/in"),))
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    try:
        store = AlertStore(db)
        notifier = Notifier(store, config, retry_base_s=0.1, expire_s=0.3)
        [stale] = await notifier.send(Notice("alert", None, "stale", "text", key="stale"))
        assert await notifier.deliver_due() == 0  # nobody listens: the row stays, pending
        await asyncio.sleep(0.5)
        hook = await Hook(port).start()
        try:
            [fresh] = await notifier.send(Notice("alert", None, "fresh", "text", key="fresh"))
            await asyncio.sleep(0.2)  # the channel's retry time after the first failure
            assert await notifier.deliver_due() == 1
            assert [b["body"]["title"] for b in hook.bodies] == ["fresh"]  # never the expired
        finally:
            await hook.stop()
        [view] = await notifier.channel_views()
        assert (view["pending"], view["delivered"], view["expired"]) == (0, 1, 1)
        # A week after, both rows are pruned; a row still within its week stays.
        await store.prune(time.time() + OUTBOX_KEEP_S - 60)
        assert len(await store.outbox([stale, fresh])) == 2
        await store.prune(time.time() + OUTBOX_KEEP_S + 60)
        assert await store.outbox([stale, fresh]) == []
    finally:
        await db.close()


async def test_slack_and_discord_bodies(db: FarmDB, tmp_path: Path) -> None:
    hook = await Hook().start()
    config = AlertsConfig((Channel("s", "slack", url=hook.url("/slack")),
                           Channel("d", "discord", url=hook.url("/discord"))))
    notifier = Notifier(AlertStore(db), config)
    try:
        await notifier.send(Notice("alert", None, "Phone P1 offline", "since 01:00",
                                   links={"execution": "http://farm/#executions/e1"}, key="x"))
        await notifier.deliver_due()
        bodies = {b["path"]: b["body"] for b in hook.bodies}
        assert "Phone P1 offline" in bodies["/slack"]["text"]
        assert "<http://farm/#executions/e1|execution>" in bodies["/slack"]["text"]
        assert bodies["/slack"]["blocks"][0]["type"] == "section"
        assert "Phone P1 offline" in bodies["/discord"]["content"]
        assert bodies["/discord"]["embeds"][0]["url"] == "http://farm/#executions/e1"
    finally:
        await hook.stop()


async def test_email_reaches_a_real_smtp_server(db: FarmDB, tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    received: list[bytes] = []
    logins: list[tuple[bytes, bytes]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            received.append(envelope.original_content)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret")

    port = _free_port()
    smtp = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=authenticator,
                      auth_require_tls=False)
    smtp.start()
    password = tmp_path / "smtp.pw"
    password.write_text("s3cret\n")
    channel = parse_channel({"name": "mail", "type": "email", "to": ["ops@example.com"],
                             "from": "farm@example.com", "smtp": f"127.0.0.1:{port}",
                             "user": "farm", "password_file": str(password)}, lambda f: f)
    notifier = Notifier(AlertStore(db), AlertsConfig((channel,)))
    try:
        await notifier.send(Notice("report", None, "Daily report", "12 runs <ok>",
                                   html="<p>12 runs &lt;ok&gt;</p>", key="r1"))
        assert await notifier.deliver_due() == 1
        message = message_from_bytes(received[0])
        assert message["Subject"] == "[phonefarm] Daily report"
        parts = {p.get_content_type(): p.get_payload(decode=True).decode()
                 for p in message.walk() if not p.is_multipart()}
        assert "12 runs <ok>" in parts["text/plain"]
        assert "<p>12 runs &lt;ok&gt;</p>" in parts["text/html"]
        assert logins == [(b"farm", b"s3cret")]
    finally:
        smtp.stop()


# --- who sees what ---------------------------------------------------------------------------


async def test_tenants_see_and_manage_only_their_clients_rules_and_notices(
        db: FarmDB, tmp_path: Path) -> None:
    acme = await db.upsert_client("Acme")
    globex = await db.upsert_client("Globex")
    await db.upsert_phone("A1", client=acme)
    await db.upsert_phone("G1", client=globex)
    hub = MiniHub()
    hub.owners = Owners({"A1": "Acme", "G1": "Globex"})
    for serial in ("A1", "G1"):
        hub.phone_rows[serial] = {"serial": serial, "node": "n", "state": "offline",
                                  "state_at": time.time() - 60}
    service = await _service(db, hub, [], [], tmp_path)
    acme_user = Principal(user_id=7, name="acme", role="client", client_ids=frozenset({acme}))
    viewer = Principal(user_id=8, name="glob", role="client", client_ids=frozenset({globex}))

    mine = await service.add_rule({"name": "acme-offline", "kind": "phone_offline",
                                   "minutes": 0}, acme_user)  # its one client by default
    assert mine["client"] == "Acme"
    with pytest.raises(AccessDenied):
        await service.add_rule({"name": "n", "kind": "node_down"}, acme_user)
    with pytest.raises(ValidationError) as caught:
        await service.add_rule({"name": "x", "kind": "phone_paused", "client": "Globex"},
                               acme_user)
    assert caught.value.where == "$.client"
    await service.add_rule({"name": "farm-offline", "kind": "phone_offline", "minutes": 0},
                           SUPER)
    await service.engine.evaluate_conditions()

    assert [r["name"] for r in await service.rules(acme_user)] == ["acme-offline"]
    assert await service.rules(viewer) == []
    acme_alerts = await service.alerts(acme_user, None, 50)
    assert [(a["rule"], a["subject"]) for a in acme_alerts] == [("acme-offline", "A1")]
    assert await service.alerts(viewer, None, 50) == []
    assert len(await service.alerts(SUPER, None, 50)) == 3  # farm rule: A1 and G1
    with pytest.raises(LookupError):  # another tenant's rule is like a missing one
        await service.silence("acme-offline", "1h", viewer)
    with pytest.raises(LookupError):
        await service.ack(acme_alerts[0]["id"], viewer)
    assert (await service.notifications(acme_user, False, 50))["unread"] == 1
    assert (await service.notifications(viewer, False, 50))["unread"] == 0
    assert await service.mark_read(viewer, None) == 0
    assert (await service.notifications(SUPER, False, 50))["unread"] == 3
    # The stream's notification events reach the notice's client's users, not others'.
    from actors.access.scope import event_visible
    notes = [{"event": e, "serial": s, "data": d} for e, _, s, d in hub.events
             if e == "notification"]
    assert len(notes) == 3
    assert sum(event_visible(acme_user, hub, n) for n in notes) == 1
    assert sum(event_visible(viewer, hub, n) for n in notes) == 0


# --- the kinds read from the database, the disk and events, on both engines -----------------


async def test_failure_rate_scheduler_delay_disk_and_event_kinds(db: FarmDB, tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    acme = await db.upsert_client("Acme")
    await db.upsert_phone("A1", client=acme)
    now = datetime.now(timezone.utc)
    for i, status in enumerate(["failed", "failed", "completed", "failed"]):
        await db.create_execution(f"ex-{i}", serial="A1", sequence="app/post", status=status)
    await db.create_execution("ex-ok", serial="A1", sequence="app/login", status="completed")
    late = (now - timedelta(seconds=300)).strftime("%Y%m%dT%H%M%SZ")
    for i in range(3):  # scheduled 5 minutes before they started
        await db.create_execution(f"ex-s{i}", serial="A1", sequence="app/login",
                                  run_id=f"nightly@{late}", status="running")
    hook = await Hook().start()
    hub = MiniHub()
    hub.owners = Owners({"A1": "Acme"})

    class Runs:  # the execution view the engine reads: ex-0 failed with a screenshot
        async def get_execution(self, execution_id: str) -> dict:
            return {"steps": [{"path": "steps[0]", "screenshot":
                               f"/api/executions/{execution_id}/steps/steps%5B0%5D/screenshot"}]}

    hub.runs = Runs()
    service = await _service(db, hub, [Channel("hook", "webhook", url=hook.url())], [
        {"name": "rate", "kind": "failure_rate", "percent": 50, "min_executions": 3,
         "client": "Acme"},
        {"name": "rate-strict", "kind": "failure_rate", "percent": 80, "min_executions": 3},
        {"name": "late", "kind": "scheduler_delay", "seconds": 60},
        {"name": "disk", "kind": "disk", "percent": 0},
        {"name": "recovery", "kind": "recovery_failed"},
        {"name": "flows", "kind": "workflow_finished", "status": "failed"},
    ], tmp_path)
    delivery = asyncio.create_task(service.notifier.run())
    try:
        await service.engine.tick()
        firing = {(a["rule"], a["subject"]) for a in await service.alerts(SUPER, "firing", 50)}
        # 3 of 4 app/post failed (75%): over 50%, not over 80%; app/login has no failure.
        assert firing == {("rate", "app/post"), ("late", "scheduler"), ("disk", "disk")}
        delays = await service.engine.dispatch_delays(900)
        assert len(delays) == 3 and all(295 <= d < 400 for d in delays)
        await service.engine.on_event({"event": "recovery_failed", "serial": "A1", "data": {
            "execution_id": "ex-0", "attempt": 1, "reason": "gave_up", "detail": "no route",
            "failures_in_a_row": 3, "phone_paused": True}})
        await service.engine.on_event({"event": "workflow_finished", "serial": None, "data": {
            "workflow_execution_id": 4, "workflow": "daily", "status": "completed"}})
        await service.engine.on_event({"event": "workflow_finished", "serial": None, "data": {
            "workflow_execution_id": 5, "workflow": "daily", "status": "failed",
            "error": "step 2"}})
        bodies = [b["body"] for b in await hook.wait(5)]
        titles = sorted(b["title"] for b in bodies)
        assert any(t.startswith("app/post: 75% failed") for t in titles), titles
        assert "Recovery failed on A1" in titles and "Workflow daily failed" in titles
        assert not any("completed" in t for t in titles)
        recovery = next(b for b in bodies if b["title"] == "Recovery failed on A1")
        assert recovery["links"]["execution"] == "http://farm.example:8470/#executions/ex-0"
        # The screenshot link is the console's execution page (which shows it): the image's
        # API route needs a bearer token no mail client or browser tab has.
        assert recovery["links"]["screenshot"] == "http://farm.example:8470/#executions/ex-0"
        assert "the phone is paused" in recovery["text"]
        rate = next(b for b in bodies if b["title"].startswith("app/post"))
        assert rate["client"] == "Acme"
        assert rate["links"]["last failure"].startswith("http://farm.example:8470/#executions/ex-")
    finally:
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)
        await hook.stop()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (it is its own CA), and its key."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "smtp.crt", folder / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_email_over_starttls_checks_the_server_certificate(db: FarmDB, tmp_path: Path) -> None:
    import ssl

    from aiosmtpd.controller import Controller

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    received: list[bool] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            received.append(session.ssl is not None)
            return "250 OK"

    port = _free_port()
    smtp = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context,
                      require_starttls=True)
    smtp.start()
    fields = {"type": "email", "to": ["ops@example.com"], "from": "farm@example.com",
              "smtp": f"127.0.0.1:{port}", "starttls": True}
    trusting = parse_channel({"name": "tls", **fields, "ca_file": str(cert)}, lambda f: f)
    doubting = parse_channel({"name": "plain-trust", **fields}, lambda f: f)
    notifier = Notifier(AlertStore(db), AlertsConfig((trusting, doubting)))
    try:
        await notifier.send(Notice("alert", None, "over TLS", "text", key="t1"))
        assert await notifier.deliver_due() == 1
        assert received == [True]  # the message went over the STARTTLS session
        views = {v["name"]: v for v in await notifier.channel_views()}
        assert views["plain-trust"]["pending"] == 1  # an unknown CA: refused, kept, retried
        assert "CERTIFICATE" in views["plain-trust"]["last_error"].upper()
    finally:
        smtp.stop()


async def test_postgresql_row_security_hides_other_clients_alert_rows(pg_cluster,
                                                                      tmp_path: Path) -> None:
    """Schema v18's FORCEd policies: a query without its filter, made for Acme, reads no
    row of Globex's nor any farm-wide one."""
    from actors.store.caller_scope import as_clients

    db = await FarmDB.open(tmp_path / "farm.sqlite3", target=pg_cluster.new_database())
    try:
        acme, globex = await db.upsert_client("Acme"), await db.upsert_client("Globex")
        hub = MiniHub()
        hub.owners = Owners({"A1": "Acme", "G1": "Globex"})
        for serial in ("A1", "G1"):
            hub.phone_rows[serial] = {"serial": serial, "node": "n", "state": "offline",
                                      "state_at": time.time() - 60}
        service = await _service(db, hub, [Channel("hook", "webhook", url="http://127.0.0.1:9/")],
                                 [], tmp_path)
        for name, client in (("a", "Acme"), ("g", "Globex"), ("farm", None)):
            await service.add_rule({"name": name, "kind": "phone_offline", "minutes": 0,
                                    **({"client": client} if client else {})}, SUPER)
        await service.engine.evaluate_conditions()
        tables = ("alert_rules", "alerts", "alert_outbox", "notifications")
        everything = {t: len(await db._all(f"SELECT * FROM {t}")) for t in tables}
        assert everything == {"alert_rules": 3, "alerts": 4, "alert_outbox": 4,
                              "notifications": 4}
        await service.mark_read(SUPER, None)
        with as_clients({acme}):
            seen = {t: {r["client_id"] for r in await db._all(f"SELECT * FROM {t}")}
                    for t in tables}
            assert seen == {t: {acme} for t in tables}
            assert await db._all("SELECT * FROM notification_reads") != []
        with as_clients({globex}):
            assert len(await db._all("SELECT * FROM alerts")) == 1
        with as_clients(set()):
            for table in tables:
                assert await db._all(f"SELECT * FROM {table}") == [], table
    finally:
        await db.close()


async def test_a_daily_report_goes_out_through_the_notifier(db: FarmDB, tmp_path: Path) -> None:
    """The notifier end to end: the reports part's send hands a report to the real Notifier;
    a channel taking reports for that client receives it, with its HTML and link."""
    from datetime import date

    from actors.coordinator.reports.service import ReportService

    await db.upsert_client("Acme")
    hook = await Hook().start()
    hub = MiniHub()
    config = AlertsConfig((Channel("reports", "webhook", url=hook.url("/reports"),
                                   kinds=("report",), clients=("Acme",)),
                           Channel("other", "webhook", url=hook.url("/other"),
                                   clients=("Globex",))))
    hub.notifier = Notifier(AlertStore(db), config, public_url="http://farm.example")
    reports = ReportService(db, hub.emit, public_url="http://farm.example", hub=hub)
    try:
        row, made = await reports.make(await reports.client("Acme"), date.today(), send=True)
        assert made
        await hub.notifier.deliver_due()
        [(path, body)] = [(b["path"], b["body"]) for b in hook.bodies]
        assert path == "/reports" and body["kind"] == "report" and body["client"] == "Acme"
        # The console's report page (the API's .html route answers only a bearer token).
        assert body["html"] and body["links"]["report"] == (
            f"http://farm.example/#reports/{row['report_id']}")
        acme = Principal(user_id=3, name="a", role="client",
                         client_ids=frozenset({row["client_id"]}))
        assert (await AlertStore(db).notifications(3, acme.client_ids))["unread"] == 1
    finally:
        await hook.stop()


# --- review fixes: channel scoping, a lost first notice, workflow scoping, audit ------------


async def test_a_rule_naming_a_channel_of_another_client_sends_nothing_there(
        db: FarmDB, tmp_path: Path) -> None:
    acme = await db.upsert_client("Acme")
    await db.upsert_client("Globex")
    await db.upsert_phone("A1", client=acme)
    hub = MiniHub()
    hub.owners = Owners({"A1": "Acme"})
    hub.phone_rows["A1"] = {"serial": "A1", "node": "n", "state": "offline",
                            "state_at": time.time() - 60}
    globex_hook = Channel("globex-hook", "webhook", url="http://127.0.0.1:9/g",
                          clients=("Globex",))
    reports_only = Channel("reports", "webhook", url="http://127.0.0.1:9/r", kinds=("report",))
    open_hook = Channel("open", "webhook", url="http://127.0.0.1:9/o")
    service = await _service(db, hub, [globex_hook, reports_only, open_hook], [], tmp_path)
    acme_user = Principal(user_id=7, name="acme", role="client", client_ids=frozenset({acme}))
    # A tenant is told up front: the channel does not take its client's notices.
    with pytest.raises(ValidationError) as caught:
        await service.add_rule({"name": "spy", "kind": "phone_offline", "minutes": 0,
                                "channels": ["globex-hook"]}, acme_user)
    assert caught.value.where == "$.channels" and "globex-hook" in caught.value.reason
    assert await service.rules(SUPER) == []
    # A super user's (or the file's) rule naming it: the notifier still skips it, and a
    # channel whose kinds leave out alerts.
    await service.add_rule({"name": "mixed", "kind": "phone_offline", "minutes": 0,
                            "client": "Acme", "channels": ["globex-hook", "reports", "open"]},
                           SUPER)
    await service.engine.evaluate_conditions()
    rows = await db._all("SELECT channel FROM alert_outbox")
    assert [r[0] for r in rows] == ["open"]
    assert (await service.notifications(acme_user, False, 50))["unread"] == 1


@pytest.mark.parametrize("repeat", ["never", "1h"])
async def test_an_alert_whose_first_notice_failed_is_sent_at_the_next_evaluation(
        db: FarmDB, tmp_path: Path, repeat: str) -> None:
    hub = MiniHub()
    hub.phone_rows["P1"] = {"serial": "P1", "node": "rack1", "state": "offline",
                            "state_at": time.time() - 5}
    service = await _service(db, hub, [], [{"name": "offline", "kind": "phone_offline",
                                            "minutes": 0, "repeat": repeat}], tmp_path)
    real_send = service.notifier.send
    calls = []

    async def failing_once(notice, channels=None):
        calls.append(notice.key)
        if len(calls) == 1:
            raise RuntimeError("database gone for a moment")
        return await real_send(notice, channels)

    service.notifier.send = failing_once
    with pytest.raises(RuntimeError):
        await service.engine.evaluate_conditions()
    (alert,) = await service.alerts(SUPER, "firing", 10)
    assert alert["notified"] == 0
    await service.engine.evaluate_conditions()  # not a repeat an hour later: now
    await service.engine.evaluate_conditions()  # once
    assert calls == [f"alert:{alert['id']}:0"] * 2
    assert (await service.notifications(SUPER, False, 50))["unread"] == 1
    # A coordinator stopped between open_alert and the send: the next one sends it.
    hub.phone_rows["P2"] = {"serial": "P2", "node": "rack1", "state": "offline",
                            "state_at": time.time() - 5}
    rule = service.engine.rules[0]
    await service.store.open_alert(rule, "P2", time.time(), "P2 offline", "t", {})
    restarted = await _service(db, hub, [], [{"name": "offline", "kind": "phone_offline",
                                              "minutes": 0, "repeat": repeat}], tmp_path)
    await restarted.engine.evaluate_conditions()
    titles = [n["title"] for n in (await restarted.notifications(SUPER, False, 50))
              ["notifications"]]
    assert len(titles) == 2 and any("P2" in t for t in titles)


async def test_a_workflow_touching_two_clients_fires_neither_clients_rule(
        db: FarmDB, tmp_path: Path) -> None:
    acme = await db.upsert_client("Acme")
    globex = await db.upsert_client("Globex")
    hub = MiniHub()
    service = await _service(db, hub, [], [
        {"name": "acme-flows", "kind": "workflow_finished", "client": "Acme"},
        {"name": "farm-flows", "kind": "workflow_finished"}], tmp_path)
    both = await _workflow_execution(db, [acme, globex])
    only_acme = await _workflow_execution(db, [acme])
    for wfx in (both, only_acme):
        await service.engine.on_event({"event": "workflow_finished", "serial": None, "data": {
            "workflow_execution_id": wfx, "workflow": "daily", "status": "failed",
            "error": "phone G1 of Globex: no network"}})
    fired = sorted((a["rule"], a["subject"]) for a in await service.alerts(SUPER, None, 50))
    assert fired == [("acme-flows", f"workflow:{only_acme}"), ("farm-flows", f"workflow:{both}"),
                     ("farm-flows", f"workflow:{only_acme}")]
    acme_user = Principal(user_id=7, name="acme", role="client", client_ids=frozenset({acme}))
    seen = (await service.notifications(acme_user, False, 50))["notifications"]
    assert len(seen) == 1


async def _workflow_execution(db: FarmDB, client_ids: list[int]) -> int:
    """A finished workflow run whose phones belong to ``client_ids``."""
    row = await db._write("INSERT INTO workflow_executions (status, client_ids) VALUES"
                          " ('failed', ?) RETURNING workflow_execution_id",
                          (orjson.dumps(client_ids).decode(),))
    return row[0]


async def test_tenants_see_their_own_alert_rule_and_alert_changes_in_the_audit(
        db: FarmDB, tmp_path: Path) -> None:
    acme = await db.upsert_client("Acme")
    globex = await db.upsert_client("Globex")
    await db.upsert_phone("A1", client=acme)
    hub = MiniHub()
    hub.owners = Owners({"A1": "Acme"})
    hub.phone_rows["A1"] = {"serial": "A1", "node": "n", "state": "offline",
                            "state_at": time.time() - 60}
    service = await _service(db, hub, [], [], tmp_path)
    acme_user = Principal(user_id=7, name="acme", role="client", client_ids=frozenset({acme}))
    await service.add_rule({"name": "acme-offline", "kind": "phone_offline", "minutes": 0},
                           acme_user)
    await service.silence("acme-offline", "1h", acme_user)
    await service.engine.evaluate_conditions()
    (alert,) = await service.alerts(acme_user, None, 10)
    await service.ack(alert["id"], acme_user)
    mine = await db.audit_trail(client_ids=[acme])
    assert sorted((e["entity_type"], e["action"]) for e in mine) == [
        ("alert", "update"), ("alert_rule", "create"), ("alert_rule", "update")]
    assert await db.audit_trail(client_ids=[globex]) == []


async def test_the_engine_gets_every_event_of_a_burst_from_the_real_hub_emit(
        db: FarmDB, tmp_path: Path) -> None:
    from actors.coordinator.hub import SUBSCRIBER_QUEUE, Hub

    class EmitHub(MiniHub):
        """MiniHub with the real Hub.emit (its observers and its bounded subscriber queues)."""
        emit = Hub.emit

        def __init__(self) -> None:
            super().__init__()
            self.metrics = None
            self.subscribers: set = set()

    hub = EmitHub()
    service = await _service(db, hub, [], [], tmp_path)
    task = asyncio.create_task(service.engine.run())
    try:
        deadline = time.monotonic() + 10
        while not hub.event_observers and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert hub.event_observers, "the engine registers with Hub.event_observers"
        burst = SUBSCRIBER_QUEUE + 500  # more than a subscriber's queue holds
        for i in range(burst):  # no await between: nothing is read meanwhile
            hub.emit("node_down", f"n{i}", None, {})
            hub.emit("screen", f"n{i}", None, {})  # not watched: not kept
        deadline = time.monotonic() + 10
        while len(service.engine.node_down_since) < burst and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(service.engine.node_down_since) == burst
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert hub.event_observers == []
