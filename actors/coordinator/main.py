"""`farm-coordinator`: the central process (hub, event store, control endpoint).

Owns start-up and shut-down of the coordinator, and in ``--demo`` mode of a whole farm on
this machine: a private adb server, virtual phones (`farm-virtual`) and a local node
(`farm-node`), each a child process that Ctrl-C stops with it, leaving nothing behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from actors.coordinator.ai.client import AIClient, AIConfig
from actors.coordinator.ai.keys import AIKeyring, load_master_key
from actors.control.app import make_app
from actors.control.backups import BACKUPS
from actors.control.alerts import ALERTS
from actors.coordinator.alerts.rules import load_config as load_alerts_config
from actors.coordinator.alerts.service import AlertService
from actors.coordinator.backups import BackupService, parse_backup_at, parse_backup_keep
from actors.control.reports import REPORTS
from actors.apps.library import ApkLibrary, parse_max_mb
from actors.control.apks import APKS
from actors.control.apps import APPS
from actors.coordinator.apps import AppService, parse_reconcile_at
from actors.coordinator.engagement.ingest import MessageIngest
from actors.control.posts import CONTENT
from actors.coordinator.content_data.service import ContentDataService
from actors.coordinator.reports.service import (ReportService, parse_report_at,
                                                parse_report_threshold)
from actors.coordinator.rollups import RollupService
from actors.access.bootstrap import ensure_admin, login_link, seed_demo_people
from actors.access.passwords import hashing_warning
from actors.access.service import Access
from actors.access.tokens import TOKEN_PREFIX
from protocol.addresses import is_loopback
from actors.node.device.adb_server import kill_adb_server, start_private_adb_server
from actors.store.db_target import DbTarget, add_db_options, parse_db
from actors.store.event_store import EventStore
from actors.coordinator.hub import Hub
from actors.coordinator.node_keys import NodeKeyring, ensure_node_key
from actors.store.data_dir import secure_data_dir
from actors.store.farm_db import FarmDB, seed_demo
from actors.coordinator.registry_store import RegistryStore
from actors.store.retention import RetentionJob, load_policy
from actors.coordinator.unknown_screens import UnknownScreenQueue
from actors.control.metrics import METRICS
from actors.metrics.coordinator import attach_metrics, metrics_listen_address
from actors.metrics.serve import MetricsServer
from actors.process import StartupError, run_main, setup_logging, starting, stop_signal
from virtual.profile import PROFILES

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]  # the repository: the demo starts its children there


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="farm-coordinator", description=__doc__.splitlines()[0])
    p.add_argument("--http", default=os.environ.get("PHONEFARM_HTTP", "127.0.0.1:8470"),
                   help="HOST:PORT of the control endpoint (default 127.0.0.1:8470)")
    p.add_argument("--listen", default=os.environ.get("PHONEFARM_LISTEN", "tcp://127.0.0.1:8471"),
                   help="nng address nodes dial (default tcp://127.0.0.1:8471)")
    p.add_argument("--secret", help="farm secret (prefer --secret-file or PHONEFARM_SECRET)")
    p.add_argument("--secret-file")
    p.add_argument("--token", default=os.environ.get("PHONEFARM_TOKEN"),
                   help="deprecated (one more release): one shared HTTP token acting as a "
                        "super user; use users and tokens (`farm login`, `farm tokens add`). "
                        "Prefer PHONEFARM_TOKEN to the flag")
    p.add_argument("--data", default=os.environ.get("PHONEFARM_DATA", "./farm-data"))
    add_db_options(p)
    p.add_argument("--registry", default=os.environ.get("PHONEFARM_REGISTRY_STORE"),
                   help="the editable screen registry folder (default DATA/registry; created "
                        "as a copy of the demo registry on first start)")
    p.add_argument("--demo", action="store_true",
                   help="also start an adb server, virtual phones and a local node")
    p.add_argument("--phones", type=int, default=6, help="virtual phones in --demo (default 6)")
    p.add_argument("--base-port", type=int, default=None,
                   help="--demo: first port of the virtual phones, whose serials are "
                        "127.0.0.1:PORT, PORT+1, .. (default 40001, random ports when one of "
                        "those is taken; 0: random ports)")
    p.add_argument("--phone-profile", choices=sorted(PROFILES), default="instant",
                   help="--demo: what the virtual phones' work costs: instant (default) or "
                        "real (a real phone's input, screencap and app_process times, one "
                        "35 MB/s USB 2.0 bus for all: figures that predict hardware)")
    p.add_argument("--phone-io", choices=("agent", "shell"), default="agent",
                   help="--demo: how the node drives the virtual phones: agent (default; a "
                        "resident scrcpy server, screenshots from its video stream) or shell "
                        "(one `input`/`screencap` per action, for comparison)")
    p.add_argument("--ai-base-url", default=os.environ.get("PHONEFARM_AI_BASE_URL"),
                   help="OpenAI-compatible endpoint for recovery/discovery/ai.* variables "
                        "(e.g. http://127.0.0.1:11434/v1); unset = AI off")
    p.add_argument("--node-stagger-s", type=float,
                   default=float(os.environ.get("PHONEFARM_NODE_STAGGER_S", "1.0")),
                   help="minimum seconds between two scheduled executions starting on one node "
                        "(default 1: not in the same second; a big farm's rate needs less, "
                        "e.g. 0.1 s for 10 starts/s per node)")
    p.add_argument("--ai-model", default=os.environ.get("PHONEFARM_AI_MODEL"))
    p.add_argument("--ai-key", default=os.environ.get("PHONEFARM_AI_KEY"),
                   help="API key of the AI endpoint (prefer PHONEFARM_AI_KEY)")
    p.add_argument("--secret-key-file", default=os.environ.get("PHONEFARM_SECRET_KEY_FILE"),
                   help="the farm master key that encrypts stored AI keys (default: "
                        "PHONEFARM_SECRET_KEY, else DATA/secret.key, generated once, mode 0600)")
    p.add_argument("--recovery-max-steps", type=int,
                   default=int(os.environ.get("PHONEFARM_RECOVERY_MAX_STEPS", "8")),
                   help="AI actions per recovery attempt (default 8)")
    p.add_argument("--recovery-pause-after", type=int,
                   default=int(os.environ.get("PHONEFARM_RECOVERY_PAUSE_AFTER", "3")),
                   help="failed recoveries in a row that pause a phone (default 3)")
    p.add_argument("--log-level", default=os.environ.get("PHONEFARM_LOG_LEVEL", "INFO"))
    p.add_argument("--apk-max-mb", metavar="MB", type=_flag(parse_max_mb),
                   default=os.environ.get("PHONEFARM_APK_MAX_MB", "1024"),
                   help="largest APK or bundle POST /api/apks takes, in MiB (default 1024)")
    p.add_argument("--retention", choices=("on", "off"),
                   default=os.environ.get("PHONEFARM_RETENTION", "on"),
                   help="daily data retention in this process (default on; `farm retention` "
                        "runs it by hand)")
    p.add_argument("--retention-config", metavar="FILE",
                   default=os.environ.get("PHONEFARM_RETENTION_CONFIG"),
                   help="TOML file with a [retention] table; PHONEFARM_RETENTION_<FIELD> "
                        "variables override it")
    p.add_argument("--backup-dir", metavar="DIR", default=os.environ.get("PHONEFARM_BACKUP_DIR"),
                   help="where backups go (default DATA/backups; never itself backed up)")
    # A bad --backup-at/--backup-keep (or its variable) is a usage error naming the flag.
    p.add_argument("--backup-at", metavar="HH:MM", type=_flag(parse_backup_at),
                   default=os.environ.get("PHONEFARM_BACKUP_AT"),
                   help="take a backup every day at this local time (default: none)")
    p.add_argument("--backup-keep", metavar="N", type=_flag(parse_backup_keep),
                   default=os.environ.get("PHONEFARM_BACKUP_KEEP", "30"),
                   help="after each scheduled backup keep this farm's newest N (default 30)")
    p.add_argument("--export-git", metavar="DIR", default=os.environ.get("PHONEFARM_EXPORT_GIT"),
                   help="commit every definition changed since the last export into the Git "
                        "repository DIR, at start and every --export-every (default: none)")
    p.add_argument("--export-every", metavar="1h", type=_flag(_export_every),
                   default=os.environ.get("PHONEFARM_EXPORT_EVERY", "1h"),
                   help="how often --export-git exports (30m, 1h, 1d; default 1h)")
    p.add_argument("--report-at", metavar="HH:MM", type=_flag(parse_report_at),
                   default=os.environ.get("PHONEFARM_REPORT_AT"),
                   help="make each client's report of the past UTC day every day at this "
                        "UTC time, and send it (default: none)")
    p.add_argument("--report-threshold", metavar="N", type=_flag(parse_report_threshold),
                   default=os.environ.get("PHONEFARM_REPORT_THRESHOLD", "3"),
                   help="a report recommends on each step that failed or needed recovery "
                        "in more than N executions (default 3)")
    p.add_argument("--alerts-config", metavar="FILE",
                   default=os.environ.get("PHONEFARM_ALERTS_CONFIG"),
                   help="alert rules and notification channels (TOML, see config/alerts.toml; "
                        "default: none: rules only from the API, the console's list only)")
    p.add_argument("--public-url", metavar="URL", default=os.environ.get("PHONEFARM_PUBLIC_URL"),
                   help="the console's address as people reach it, for links in alerts and "
                        "reports (default http://<--http>)")
    p.add_argument("--metrics-listen", metavar="127.0.0.1:PORT",
                   default=os.environ.get("PHONEFARM_METRICS_LISTEN"),
                   help="also serve GET /metrics here without a token (a loopback address "
                        "only; default: only the control endpoint's /metrics, with a token)")
    p.add_argument("--apps-reconcile-at", metavar="HH:MM", type=_flag(parse_reconcile_at),
                   default=os.environ.get("PHONEFARM_APPS_RECONCILE_AT"),
                   help="every day at this UTC time install the pinned version of an app on "
                        "each online phone whose version drifted from its pin (default: none)")
    p.add_argument("--metrics-per-phone", action="store_true",
                   help="add per-phone series (a serial label) to the metrics")
    return p.parse_args(argv)


def _export_every(text: str):
    from actors.access.tokens import parse_duration
    from protocol.errors import ValidationError

    try:
        return parse_duration(text, "--export-every")
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def _flag(parse):
    """An argparse type from ``parse``, whose ValueError says what is wrong."""
    def convert(value: str):
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def backup_service(args: argparse.Namespace, data: Path, registry: Path, emit,
                   master_key: bytes, target: DbTarget) -> BackupService:
    """The coordinator's backups (--backup-dir, default DATA/backups; --backup-at/-keep) of
    the farm in ``target`` (--db: SQLite files, or pg_dump of the PostgreSQL database)."""
    return BackupService(data, Path(args.backup_dir) if args.backup_dir else data / "backups",
                         emit, registry=registry, master_key=master_key, at=args.backup_at,
                         keep=args.backup_keep, database=target)


def public_url(args: argparse.Namespace) -> str:
    """The console's address for links in notices: --public-url, else http://<--http>."""
    return (args.public_url or f"http://{args.http}").rstrip("/")


def report_service(args: argparse.Namespace, farm_db: FarmDB, hub: Hub) -> ReportService:
    """The clients' reports (--report-at HH:MM UTC, --report-threshold N); links in them
    start with --public-url (default http://<--http>)."""
    return ReportService(farm_db, hub.emit, public_url=public_url(args), hub=hub,
                         at=args.report_at, threshold=args.report_threshold)


def retention_job(args: argparse.Namespace, data: Path, unknown: UnknownScreenQueue | None,
                  target: DbTarget | None = None) -> RetentionJob | None:
    """The daily retention job for ``--data``, or None with ``--retention off``. A bad
    config stops start-up (ValidationError names the field)."""
    if args.retention == "off":
        return None
    # PHONEFARM_RETENTION_CONFIG names the file (the flag's default), it is not a field.
    environ = {k: v for k, v in os.environ.items() if k != "PHONEFARM_RETENTION_CONFIG"}
    policy = load_policy(args.retention_config, environ)
    return RetentionJob(data, policy, unknown=unknown, target=target)


def ai_client(args: argparse.Namespace) -> AIClient | None:
    """The farm's AI client from --ai-* (defaults from PHONEFARM_AI_*), None when no URL."""
    if not args.ai_base_url:
        return None
    config = AIConfig(base_url=args.ai_base_url, model=args.ai_model or "default",
                      api_key=args.ai_key or "none")
    log.info("ai endpoint=%s model=%s", config.base_url, config.model)
    return AIClient(config)


def farm_secret(args: argparse.Namespace, data: Path) -> str | None:
    """The shared farm secret, deprecated (kept one release, with a warning); None without
    one: then only nodes with their own key connect (farm nodes add NAME)."""
    if args.secret_file:
        secret = Path(args.secret_file).read_text().strip()
    else:
        secret = args.secret or os.environ.get("PHONEFARM_SECRET")
    if not secret:
        return None
    log.warning("the shared farm secret (--secret-file, --secret, PHONEFARM_SECRET) is "
                "deprecated and goes in the next release: give each node its own key "
                "(farm nodes add NAME; farm-node --key-file)")
    return secret


DEMO_NODE = "demo-node"


class Demo:
    """The child processes of ``--demo``: adb server, virtual phones, one local node."""

    key_file: Path | None = None  # the demo node's key (actors.coordinator.node_keys)

    def __init__(self, data: Path, phones: int, coordinator: str, secret: str | None,
                 base_port: int | None = None, phone_profile: str = "instant",
                 phone_io: str = "agent") -> None:
        self.data, self.phones, self.coordinator, self.secret = data, phones, coordinator, secret
        self.base_port = base_port  # None: farm-virtual's default (40001, else random)
        self.phone_profile = phone_profile  # farm-virtual --profile
        self.phone_io = phone_io  # farm-node --phone-io
        self.adb_port: int | None = None
        self.children: list[subprocess.Popen] = []
        self.serials: list[str] = []
        # Set once the demo's data is seeded: Acme's users created now [(name, role,
        # password)] and a one-time login link of the admin, printed at start.
        self.people: list[tuple[str, str, str]] = []
        self.login_link: str | None = None

    def start(self) -> None:
        self.adb_port = start_private_adb_server().port
        env = {**os.environ, **({"PHONEFARM_SECRET": self.secret} if self.secret else {})}
        virtual = subprocess.Popen(self.virtual_argv(self.adb_port), cwd=ROOT,
                                   stdout=subprocess.PIPE, text=True)
        self.children.append(virtual)
        serials = [virtual.stdout.readline().strip() for _ in range(self.phones)]
        if not all(serials):  # farm-virtual said why on stderr (ours)
            raise StartupError(f"the demo's virtual phones did not start (farm-virtual "
                               f"exited with status {virtual.wait()})")
        log.info("demo phones: %s", ", ".join(serials))
        self.serials = serials
        self.children.append(subprocess.Popen(self.node_argv(self.adb_port), cwd=ROOT, env=env))

    def node_argv(self, adb_port: int) -> list[str]:
        """The farm-node command line of the demo's node. The virtual phones take any
        non-empty file as the scrcpy server jar: the demo writes a placeholder of its own."""
        argv = [sys.executable, "-m", "actors.node", "--name", DEMO_NODE, "--coordinator",
                self.coordinator, "--adb-port", str(adb_port), "--data", str(self.data),
                "--phone-io", self.phone_io]
        if self.key_file is not None:  # the node's own key (set by start)
            argv += ["--key-file", str(self.key_file)]
        if self.phone_io == "agent":
            jar = self.data / "scrcpy-server-placeholder.jar"
            self.data.mkdir(parents=True, exist_ok=True)
            jar.write_bytes(b"placeholder scrcpy-server: virtual phones run their own\n")
            argv += ["--scrcpy-server", str(jar)]
        return argv

    def virtual_argv(self, adb_port: int) -> list[str]:
        """The farm-virtual command line of the demo's phones."""
        ports = [] if self.base_port is None else ["--base-port", str(self.base_port)]
        return [sys.executable, "-m", "virtual.cli", "--phones", str(self.phones),
                "--adb-port", str(adb_port), "--profile", self.phone_profile, *ports]

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.adb_port is not None:
            kill_adb_server(self.adb_port)


async def run(args: argparse.Namespace) -> None:
    """Start the coordinator, serve until SIGINT/SIGTERM, stop. What start-up opened is
    closed again on the way out, after a failed start-up too (StartupError says why)."""
    async with contextlib.AsyncExitStack() as stack:
        with starting():
            hub, demo = await start(args, stack)
        host, _, port = args.http.rpartition(":")
        url = f"http://{host}:{port}/"
        adb_note = f", demo adb server 127.0.0.1:{demo.adb_port}" if demo else ""
        stop = stop_signal()  # a Ctrl-C answering the line below must find our handler
        print(f"phonefarm coordinator: {url}  (API {url}api/phones, nodes dial "
              f"{hub.link.address}{adb_note})", flush=True)
        if demo is not None and demo.login_link:
            print(f"log in as admin (link valid once, 15 minutes): {url}#login="
                  f"{demo.login_link}", flush=True)
        for name, role, password in demo.people if demo is not None else ():
            print(f"demo user {name} ({role} of Acme), password: {password}", flush=True)
        await stop.wait()


async def start(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> tuple[Hub, Demo | None]:
    """Open and start everything, each closer pushed on ``stack`` as soon as its part is
    open (the stop runs them in reverse: retention, demo, HTTP, hub, databases)."""
    metrics_at = metrics_listen_address(args.metrics_listen)  # first: a bad one opens nothing
    data = Path(args.data)
    secure_data_dir(data)  # umask 0o077 before anything is written: owner-only files
    host, _, port = args.http.rpartition(":")
    if args.token and args.token.startswith(TOKEN_PREFIX):
        # PHONEFARM_TOKEN is also where the farm CLI takes a user's token from: a shell
        # set up for `farm` must not make that user's token a super user's shared token.
        log.warning("PHONEFARM_TOKEN/--token holds a user's access token (%s...): not used "
                    "as the deprecated shared token", TOKEN_PREFIX)
        args.token = None
    if args.token:
        log.warning("--token/PHONEFARM_TOKEN is deprecated and will be removed in the next "
                    "release: it acts as a super user; give people accounts (farm users add) "
                    "and scripts their own tokens (farm tokens add)")
    with starting():  # an unknown PHONEFARM_PASSWORD_HASHING stops here, naming it
        hashing = hashing_warning()
    if hashing is not None:
        log.warning("%s", hashing)
    secret = farm_secret(args, data)
    unknown = UnknownScreenQueue(data / "unknown-screens")
    with starting():
        target = parse_db(args.db, args.db_password_file)
    retention = retention_job(args, data, unknown, target)  # before opening anything: may refuse
    with starting():  # a bad alerts config names its file, line, rule and field
        alerts_config = load_alerts_config(args.alerts_config)
    where = data / "coordinator.sqlite3" if not target.is_postgresql else target.describe()
    with starting(f"the event store {where}"):
        store = await EventStore(data / "coordinator.sqlite3", target).open()
    stack.push_async_callback(store.close)
    master_key = load_master_key(data, args.secret_key_file)
    where = data / "farm.sqlite3" if not target.is_postgresql else target.describe()
    with starting(f"the farm database {where}"):
        # With the master key: passwords stored in clear by an older version are sealed now.
        farm_db = await FarmDB.open(data / "farm.sqlite3", master_key=master_key,
                                    target=target)
    stack.push_async_callback(farm_db.close)
    registry_dir = Path(args.registry) if args.registry else data / "registry"
    with starting(f"the screen registry {registry_dir} is invalid"):
        registry = RegistryStore.open(registry_dir, farm_db)
    # Per-client / per-organization AI keys; the default is the --ai-* client (hub.ai).
    keyring = AIKeyring(farm_db, master_key, default=lambda: hub.ai)
    node_keys = NodeKeyring(farm_db, master_key)  # each node's own key for the link
    await node_keys.load()
    hub = Hub(args.listen, secret, store, unknown=unknown, db=farm_db, data_dir=data,
              ai=ai_client(args), registry_store=registry, node_stagger_s=args.node_stagger_s,
              ai_keys=keyring, node_keys=node_keys)
    stack.push_async_callback(hub.close)  # also closes the keyring and the AI client
    metrics = attach_metrics(hub, {"farm": farm_db, "events": store},
                             per_phone=args.metrics_per_phone)
    await keyring.check()  # a key the master key cannot open is named in the log now
    with starting(f"the node link {args.listen}"):
        await hub.start()
    if hub.recovery is not None:
        hub.recovery.options.max_steps = max(1, args.recovery_max_steps)
        hub.recovery.options.pause_after_failures = max(1, args.recovery_pause_after)
    access = Access.over(farm_db, legacy_token=args.token)
    admin = await ensure_admin(access, data)
    app = make_app(hub, token=args.token, access=access, bound_loopback=is_loopback(host))
    backups = backup_service(args, data, registry_dir, hub.emit, master_key, target)
    app[BACKUPS] = backups
    reports = report_service(args, farm_db, hub)
    app[REPORTS] = reports
    app[METRICS] = metrics.registry
    alerts = AlertService(hub, farm_db, alerts_config, public_url=public_url(args),
                          data_dir=data)
    with starting():  # a config rule naming no client of the farm stops here
        await alerts.start()
    stack.push_async_callback(alerts.close)
    app[ALERTS] = alerts
    # The APK library (issue 20.1): POST/GET/DELETE /api/apks, under DATA/apks.
    app[APKS] = ApkLibrary(data / "apks", farm_db, max_bytes=args.apk_max_mb * 1024 * 1024)
    app[APKS].clear_incoming()  # an upload a stop cut off
    # Apps on the phones (issue 20): installs, the inventory's intake, pins and reconcile.
    apps = await AppService(hub, farm_db, app[APKS],
                            at=args.apps_reconcile_at).start()
    stack.push_async_callback(apps.close)
    app[APPS] = hub.apps = apps
    # Conversations the phones read (issue 21.6): messages_read events into their rows.
    ingest = MessageIngest(hub, farm_db).start()
    stack.push_async_callback(ingest.close)
    await ingest.replay()
    # Content data (issue 21.2/21.3): the node's read events into posts, metrics and account
    # health; the daily rollups; the scheduler asks it about skip_at_risk schedules.
    content = await ContentDataService(hub, farm_db).start()
    stack.push_async_callback(content.close)
    app[CONTENT] = content
    if hub.schedules is not None:
        hub.schedules.account_health = content.account_risk
    # The farm's one way to tell people: the reports (and any other part) send a Notice
    # through hub.notifier.
    hub.notifier, hub.public_url = alerts.notifier, alerts.notifier.public_url
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    with starting(f"the control endpoint {args.http}"):
        await web.TCPSite(runner, host, int(port)).start()
    if metrics_at is not None:
        with starting(f"--metrics-listen {args.metrics_listen}"):
            server = await MetricsServer(metrics.registry, *metrics_at).start()
        stack.push_async_callback(server.close)
    demo = None
    if args.demo:
        demo = Demo(data, args.phones, hub.link.address, secret, base_port=args.base_port,
                    phone_profile=args.phone_profile, phone_io=args.phone_io)
        stack.push_async_callback(asyncio.to_thread, demo.stop)  # first: a half start too
        demo.key_file = await ensure_node_key(node_keys, DEMO_NODE, data / f"{DEMO_NODE}.key")
        await asyncio.to_thread(demo.start)
        await seed_demo(farm_db, demo.serials)
        demo.people = await seed_demo_people(access)
        await hub.owners.load()
        if admin:
            demo.login_link = await login_link(access, admin)
    if retention is not None:
        retention_task = asyncio.create_task(retention.loop())
        stack.push_async_callback(_cancel, retention_task)
    # The one-minute stats rollups GET /api/stats reads (issue 19.2): closes each minute.
    rollups = RollupService(farm_db, hub.phones, client_of=hub.owners.client_id)
    stack.push_async_callback(_cancel, asyncio.create_task(rollups.loop()))
    # The daily content rollups (client/platform daily metrics), after midnight UTC.
    stack.push_async_callback(_cancel, asyncio.create_task(content.loop()))
    if backups.at is not None:  # the daily backup (--backup-at)
        stack.push_async_callback(_cancel, asyncio.create_task(backups.loop()))
    if apps.at is not None:  # the daily reconcile of pinned app versions (--apps-reconcile-at)
        stack.push_async_callback(_cancel, asyncio.create_task(apps.loop()))
    if reports.at is not None:  # the daily reports (--report-at), made late after a stop
        stack.push_async_callback(_cancel, asyncio.create_task(reports.loop()))
    if args.export_git:  # definitions to Git (--export-git, --export-every)
        from actors.coordinator.definitions.exporter import GitExporter

        exporter = GitExporter(hub, farm_db, args.export_git, args.export_every)
        stack.push_async_callback(_cancel, asyncio.create_task(exporter.loop()))
    return hub, demo


async def _cancel(task: asyncio.Task) -> None:
    # A retention run in its worker thread finishes on its own; the wait for the next is dropped.
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    return run_main("farm-coordinator", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
