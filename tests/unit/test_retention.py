"""Retention (spec 7.6): each rule on a fake data folder with set mtimes; the database rules on
each engine (real SQLite files, a real PostgreSQL database of the run's cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from actors.store.db_target import DbTarget, db_from_env
from actors.store.event_store import EventStore
from actors.store.farm_db import FarmDB, utc_text
from actors.store.pg import connect_sync
from actors.store.retention import (RetentionPolicy, apply, load_policy, next_run, parse_duration,
                              plan, policy_with)
from protocol.errors import ValidationError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
DAY = 86400.0


def png(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    frame = np.full((240, 108, 3), 200, np.uint8)
    frame[40:120, 10:90] = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    return cv2.imencode(".png", frame)[1].tobytes()


def put(path: Path, age_s: float, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png() if data is None else data)
    when = NOW.timestamp() - age_s
    os.utime(path, (when, when))
    return path


def actions(result) -> dict[str, str]:
    return {f.path.relative_to(result.data_dir).as_posix(): f.action for f in result.files}


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    # SQLite creates a WAL database's -wal/-shm sidecars even for a read-only reader; the
    # database files themselves (and their rows, compared separately) must not change.
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


# --- files -----------------------------------------------------------------------------------


def test_error_screenshots_compressed_after_24h_and_kept_30_days(tmp_path) -> None:
    fresh = put(tmp_path / "executions/e1/3.png", 10 * 3600)
    day_old = put(tmp_path / "executions/e1/4.png", 25 * 3600)
    month_old = put(tmp_path / "executions/e2/1.png", 31 * DAY)
    put(tmp_path / "executions/e3/2.jpg", 31 * DAY)  # already compressed: still deleted
    result = plan(tmp_path, NOW)
    assert actions(result) == {"executions/e1/4.png": "compress", "executions/e2/1.png": "delete",
                               "executions/e3/2.jpg": "delete"}
    assert all(f.reason for f in result.files)

    done = apply(result)
    assert (done.compressed, done.deleted, done.errors) == (1, 2, [])
    assert fresh.exists() and not day_old.exists() and not month_old.exists()
    jpg = day_old.with_suffix(".jpg")
    assert cv2.imdecode(np.frombuffer(jpg.read_bytes(), np.uint8), cv2.IMREAD_COLOR) is not None
    # The copy keeps the original's age, so the 30-day clock still runs from the capture.
    assert jpg.stat().st_mtime == pytest.approx(NOW.timestamp() - 25 * 3600)
    assert not (tmp_path / "executions/e2").exists() and not (tmp_path / "executions/e3").exists()
    assert actions(plan(tmp_path, NOW)) == {}  # idempotent
    assert actions(plan(tmp_path, NOW + timedelta(days=29))) == {"executions/e1/4.jpg": "delete",
                                                                 "executions/e1/3.png": "compress"}


def test_webp_format(tmp_path) -> None:
    put(tmp_path / "executions/e1/1.png", 2 * DAY)
    policy = RetentionPolicy(compress_format="webp")
    apply(plan(tmp_path, NOW, policy))
    assert (tmp_path / "executions/e1/1.webp").exists()
    assert not (tmp_path / "executions/e1/1.png").exists()


def test_unknown_screens_kept_60_days_png_and_json_together(tmp_path) -> None:
    q = tmp_path / "unknown-screens"
    put(q / "n1-1.png", 61 * DAY)
    put(q / "n1-1.json", 61 * DAY, b'{"id": "n1-1"}')
    put(q / "n1-2.png", 90 * DAY)  # seen again recently: its JSON was rewritten
    put(q / "n1-2.json", 5 * DAY, b'{"id": "n1-2"}')
    put(q / "n1-3.png", 70 * DAY)  # an orphan image (its JSON already gone)
    put(q / "n1-4.png", 10 * DAY)
    put(q / "n1-4.json", 10 * DAY, b'{"id": "n1-4"}')
    result = plan(tmp_path, NOW)
    assert actions(result) == {"unknown-screens/n1-1.png": "delete",
                               "unknown-screens/n1-3.png": "delete"}
    entry = next(f for f in result.files if f.path.name == "n1-1.png")
    assert entry.companions == (q / "n1-1.json",)  # the JSON first, then the PNG
    assert "n1-1.json + " in entry.line() and "unknown screen" in entry.line()

    apply(result)
    assert sorted(p.name for p in q.iterdir()) == ["n1-2.json", "n1-2.png", "n1-4.json", "n1-4.png"]


def test_unknown_screens_not_compressed_unless_asked(tmp_path) -> None:
    put(tmp_path / "unknown-screens/n1-1.png", 3 * DAY)
    put(tmp_path / "unknown-screens/n1-1.json", 3 * DAY, b"{}")
    assert actions(plan(tmp_path, NOW)) == {}
    result = plan(tmp_path, NOW, RetentionPolicy(compress_unknown=True))
    assert actions(result) == {"unknown-screens/n1-1.png": "compress"}


def test_regular_screenshots_full_week_then_hourly_week_then_gone(tmp_path) -> None:
    folder = tmp_path / "screenshots/p1"
    base = int(NOW.timestamp()) // 3600 * 3600  # an hour boundary
    names = {}
    for label, age in {"recent": 3600.0, "old-day": 2 * DAY,
                       "thin-first": 8 * DAY + 3000, "thin-second": 8 * DAY + 1800,
                       "thin-third": 8 * DAY + 600, "next-hour": 8 * DAY - 1200,
                       "gone": 15 * DAY}.items():
        epoch = base - age
        names[label] = f"screenshots/p1/{epoch:.0f}.png"
        # mtime deliberately different: the epoch in the name is when the shot was taken.
        put(folder / f"{epoch:.0f}.png", 0)
    result = plan(tmp_path, datetime.fromtimestamp(base, timezone.utc))
    assert actions(result) == {
        names["old-day"]: "compress", names["thin-first"]: "compress",
        names["thin-second"]: "thin", names["thin-third"]: "thin",
        names["next-hour"]: "compress", names["gone"]: "delete"}
    assert "not the first of hour" in next(f.reason for f in result.files if f.action == "thin")

    apply(result)
    later = plan(tmp_path, datetime.fromtimestamp(base, timezone.utc))
    assert actions(later) == {}  # the hour's first shot survives thinning, as JPEG
    assert (tmp_path / names["thin-first"]).with_suffix(".jpg").exists()


def test_regular_screenshots_of_each_phone_thinned_separately(tmp_path) -> None:
    epoch = int(NOW.timestamp()) // 3600 * 3600 - 9 * int(DAY)
    put(tmp_path / f"screenshots/p1/{epoch}.jpg", 0)
    put(tmp_path / f"screenshots/p2/{epoch + 60}.jpg", 0)
    assert actions(plan(tmp_path, NOW)) == {}


def test_dry_run_changes_nothing(tmp_path, capsys, engine) -> None:
    put(tmp_path / "executions/e1/1.png", 2 * DAY)
    put(tmp_path / "executions/e2/1.png", 40 * DAY)
    put(tmp_path / "unknown-screens/a.png", 90 * DAY)
    put(tmp_path / "unknown-screens/a.json", 90 * DAY, b"{}")
    dbs = make_databases(tmp_path, farm_target())
    before_files = snapshot(tmp_path)
    before_rows = table_counts(dbs)

    from actors.control.cli import main
    # On PostgreSQL --db and its password file come from PHONEFARM_DB(_PASSWORD_FILE).
    assert main(["retention", "--data", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("compress ") and "e1/1.png" in line for line in out)
    assert any(line.startswith("delete ") and "a.json + " in line for line in out)
    assert any(line.startswith("delete ") and "execution_steps" in line for line in out)
    assert "dry run: nothing changed" in out[-1]
    assert snapshot(tmp_path) == before_files
    assert table_counts(dbs) == before_rows


@pytest.mark.parametrize("value, message", [
    ("postgresql://farm:secret@127.0.0.1/farm", "carries a password"),
    ("mysql://127.0.0.1/farm", "expected postgresql://"),
    ("postgresql://farm@127.0.0.1/", "no database name"),
])
def test_a_bad_db_is_one_error_line(tmp_path, capsys, value, message) -> None:
    from actors.control.cli import main

    put(tmp_path / "executions/e2/1.png", 40 * DAY)
    assert main(["retention", "--data", str(tmp_path), "--db", value]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "secret" not in err
    assert (tmp_path / "executions/e2/1.png").exists()


def test_an_unreachable_database_is_one_error_line_and_changes_nothing(tmp_path, capsys) -> None:
    from actors.control.cli import main

    shot = put(tmp_path / "executions/e2/1.png", 40 * DAY)
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    assert main(["retention", "--data", str(tmp_path), "--db",
                 "postgresql://farm@127.0.0.1:1/farm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("farm: farm database postgresql://farm@127.0.0.1:1/farm: ")
    assert "\n" not in err and shot.exists()


# --- databases -------------------------------------------------------------------------------


def farm_target() -> DbTarget | None:
    """The farm database the `engine` fixture chose: None (the data folder's SQLite files)
    or its fresh PostgreSQL database (PHONEFARM_DB)."""
    target = db_from_env()
    return target if target.is_postgresql else None


class Databases:
    """Where a test's farm rows and node events are: the two SQLite files of the data folder,
    or one PostgreSQL database (``target``) holding both."""

    def __init__(self, folder: Path, target: DbTarget | None) -> None:
        self.folder, self.target = folder, target
        self.farm, self.events = folder / "farm.sqlite3", folder / "coordinator.sqlite3"

    @property
    def names(self) -> tuple[str, str]:
        """How plan lines name the farm database and the event database."""
        if self.target is None:
            return "farm.sqlite3", "coordinator.sqlite3"
        name = self.target.url.rsplit("/", 1)[1]
        return name, name

    @contextlib.contextmanager
    def connect(self, which: str) -> Iterator:
        """A connection to the farm (``farm``) or event (``events``) database, committed and
        closed at the end (both take ``?`` placeholders)."""
        if self.target is not None:
            conn = connect_sync(self.target.url, self.target.password)
            conn.execute("SELECT set_config('phonefarm.clients', '*', false)")  # all clients
        else:
            conn = sqlite3.connect(self.farm if which == "farm" else self.events)
        try:
            yield conn
            if self.target is None:
                conn.commit()
        finally:
            conn.close()


def make_databases(folder: Path, target: DbTarget | None = None) -> Databases:
    """The farm database (FarmDB schema) with executions of several ages and the event store
    (EventStore schema) with events of several ages: farm.sqlite3 and coordinator.sqlite3
    in ``folder``, or both in the PostgreSQL database of ``target``."""
    dbs = Databases(folder, target)

    async def build() -> None:
        db = await FarmDB.open(dbs.farm, target=target)
        await db.close()
        store = await EventStore(dbs.events, target).open()
        for seq, age in enumerate([40 * DAY, 35 * DAY, 31 * DAY, 2 * DAY], start=1):
            await store.add("rack1", seq, "step_ended", "p1", {"n": seq}, NOW.timestamp() - age)
        # A quiet node whose only (old) event must stay: it carries the node's last seq.
        await store.add("rack2", 7, "step_ended", "p9", {}, NOW.timestamp() - 100 * DAY)
        await store.close()

    asyncio.run(build())
    with dbs.connect("farm") as conn:
        for key, age_days, status in [("recent", 2, "completed"), ("month", 40, "failed"),
                                      ("old", 400, "completed"), ("stuck", 400, "running"),
                                      ("unfinished", 40, "running")]:
            start = NOW - timedelta(days=age_days, minutes=5)
            end = None if status == "running" else NOW - timedelta(days=age_days)
            execution_id = conn.execute(
                "INSERT INTO executions (execution_key, status, start_time, end_time, serial)"
                " VALUES (?, ?, ?, ?, 'p1') RETURNING execution_id",
                (key, status, utc_text(start), end and utc_text(end))).fetchone()[0]
            for n in range(2):
                conn.execute(
                    "INSERT INTO execution_steps (execution_id, step_number, status, start_time,"
                    " end_time, path, screenshot) VALUES (?, ?, 'failed', ?, ?, ?, ?)",
                    (execution_id, n, utc_text(start), end and utc_text(end), str(n),
                     f"farm-data/executions/{key}/{n}.png"))
    return dbs


def table_counts(dbs: Databases) -> dict[str, list]:
    with dbs.connect("farm") as c:
        execs = [r[0] for r in c.execute("SELECT execution_key FROM executions ORDER BY 1")]
        steps = [r[0] for r in c.execute(
            "SELECT e.execution_key FROM execution_steps s JOIN executions e USING (execution_id)"
            " ORDER BY 1")]
    with dbs.connect("events") as c:
        evs = [tuple(r) for r in c.execute("SELECT node, seq FROM node_events ORDER BY 1, 2")]
    return {"executions": execs, "steps": steps, "events": evs}


def test_step_rows_30_days_summaries_1_year_events_30_days(tmp_path, engine) -> None:
    dbs = make_databases(tmp_path, farm_target())
    result = plan(tmp_path, NOW, target=dbs.target)
    farm_name, events_name = dbs.names
    by_table = {(r.db.name, r.table, r.reason.split(" ")[0]): r.rows for r in result.rows}
    assert by_table == {(farm_name, "execution_steps", "step"): 4,  # month + old
                        (farm_name, "executions", "execution"): 1,  # old
                        (events_name, "node_events", "node"): 3}
    assert all(r.reason for r in result.rows)
    assert f"delete 3 rows {events_name}:node_events  (" in result.lines()[-1]
    if dbs.target is not None:  # everything is on the server: no SQLite file was made
        assert not list(tmp_path.glob("*.sqlite3*"))

    done = apply(result)
    assert done.errors == [] and done.rows_deleted == 8
    after = table_counts(dbs)
    # Summaries outlive their steps; unfinished executions keep everything (crash resume).
    assert after["executions"] == ["month", "recent", "stuck", "unfinished"]
    assert after["steps"] == ["recent"] * 2 + ["stuck"] * 2 + ["unfinished"] * 2
    assert after["events"] == [("rack1", 4), ("rack2", 7)]
    assert plan(tmp_path, NOW, target=dbs.target).rows == []


def test_summaries_take_their_steps_along_when_steps_outlive_them(tmp_path, engine) -> None:
    dbs = make_databases(tmp_path, farm_target())
    policy = RetentionPolicy(step_details=timedelta(days=1000), summaries=timedelta(days=365))
    done = apply(plan(tmp_path, NOW, policy, target=dbs.target))
    assert done.errors == []
    after = table_counts(dbs)
    assert "old" not in after["executions"] and "old" not in after["steps"]
    assert "month" in after["steps"]


def test_compressing_an_error_screenshot_repoints_its_step_row(tmp_path, engine) -> None:
    dbs = make_databases(tmp_path, farm_target())
    put(tmp_path / "executions/recent/0.png", 2 * DAY)
    done = apply(plan(tmp_path, NOW, target=dbs.target))
    assert done.errors == [] and done.step_refs_updated == 1
    with dbs.connect("farm") as c:
        shots = dict(c.execute("SELECT e.execution_key || '/' || s.path, s.screenshot FROM "
                               "execution_steps s JOIN executions e USING (execution_id)"))
    assert shots["recent/0"] == "farm-data/executions/recent/0.jpg"
    assert shots["recent/1"] == "farm-data/executions/recent/1.png"


def test_stats_rollups_kept_400_days(tmp_path, engine) -> None:
    dbs = make_databases(tmp_path, farm_target())
    minutes = [int((NOW - timedelta(days=d)).timestamp()) // 60 * 60 for d in (401, 399)]
    with dbs.connect("farm") as conn:
        for minute in minutes:
            conn.execute("INSERT INTO stats_minutes (minute, phone_samples) VALUES (?, 12)",
                         (minute,))
            conn.execute("INSERT INTO stats_phone_minutes (minute, client_id, node, idle)"
                         " VALUES (?, 0, 'rack1', 2.0)", (minute,))
            conn.execute("INSERT INTO stats_execution_minutes (minute, client_id, sequence,"
                         " node, started) VALUES (?, 0, 's/x', 'rack1', 1)", (minute,))
            conn.execute("INSERT INTO stats_execution_hours (hour, client_id, sequence,"
                         " node, started) VALUES (?, 0, 's/x', 'rack1', 1)", (minute,))
    result = plan(tmp_path, NOW, target=dbs.target)
    rollups = {r.table: r.rows for r in result.rows if r.table.startswith("stats_")}
    assert rollups == {"stats_execution_minutes": 1, "stats_phone_minutes": 1,
                       "stats_minutes": 1, "stats_execution_hours": 1}
    assert all("> 400d" in r.reason for r in result.rows if r.table.startswith("stats_"))
    assert apply(result).errors == []
    with dbs.connect("farm") as conn:
        for table in rollups:
            column = "hour" if table.endswith("hours") else "minute"
            assert [r[0] for r in conn.execute(f"SELECT {column} FROM {table}")] == minutes[1:]


def test_reports_kept_a_year(tmp_path, engine) -> None:
    dbs = make_databases(tmp_path, farm_target())
    made = [utc_text(NOW - timedelta(days=d)) for d in (366, 364)]
    with dbs.connect("farm") as conn:
        conn.execute("INSERT INTO clients (name) VALUES ('Acme')")
        client = conn.execute("SELECT client_id FROM clients WHERE name = 'Acme'").fetchone()[0]
        for created in made:
            conn.execute("INSERT INTO reports (client_id, kind, day, period_start, period_end,"
                         " created_at, title, text, html, summary) VALUES"
                         " (?, 'daily', ?, ?, ?, ?, 't', 't', 'h', '{}')",
                         (client, created[:10], created, created, created))
    result = plan(tmp_path, NOW, target=dbs.target)
    (rows,) = [r for r in result.rows if r.table == "reports"]
    assert rows.rows == 1 and "> 365d" in rows.reason
    assert apply(result).errors == []
    with dbs.connect("farm") as conn:
        assert [r[0][:10] for r in conn.execute("SELECT day FROM reports")] == [made[1][:10]]


def test_resolved_alerts_and_notifications_kept_90_days(tmp_path, engine) -> None:
    dbs = make_databases(tmp_path, farm_target())
    old, recent = ((NOW - timedelta(days=d)).timestamp() for d in (91, 89))
    with dbs.connect("farm") as conn:
        conn.execute("INSERT INTO alert_rules (name, source, kind, params, created_at,"
                     " updated_at) VALUES ('r', 'api', 'phone_paused', '{}', ?, ?)", (old, old))
        rule = conn.execute("SELECT rule_id FROM alert_rules").fetchone()[0]
        for subject, state, resolved in (("gone", "resolved", old), ("kept", "resolved", recent),
                                         ("still", "firing", None)):
            conn.execute("INSERT INTO alerts (rule_id, rule_name, kind, subject, state, since,"
                         " resolved_at, title, text, links) VALUES (?, 'r', 'phone_paused', ?,"
                         " ?, ?, ?, 't', 't', '{}')", (rule, subject, state, old, resolved))
        for key, made in (("gone", old), ("kept", recent)):
            conn.execute("INSERT INTO notifications (kind, notice_key, title, text, links,"
                         " created_at) VALUES ('alert', ?, 't', 't', '{}', ?)", (key, made))
            conn.execute("INSERT INTO notification_reads (notification_id, user_id, read_at)"
                         " SELECT notification_id, 1, ? FROM notifications WHERE notice_key = ?",
                         (made, key))
    result = plan(tmp_path, NOW, target=dbs.target)
    counts = {r.table: r.rows for r in result.rows
              if r.table in ("alerts", "notifications", "notification_reads")}
    assert counts == {"alerts": 1, "notifications": 1, "notification_reads": 1}
    assert apply(result).errors == []
    with dbs.connect("farm") as conn:
        assert sorted(r[0] for r in conn.execute("SELECT subject FROM alerts")) == ["kept",
                                                                                   "still"]
        assert [r[0] for r in conn.execute("SELECT notice_key FROM notifications")] == ["kept"]
        assert conn.execute("SELECT COUNT(*) FROM notification_reads").fetchone()[0] == 1


# --- policy and schedule -----------------------------------------------------------------------


def test_defaults_are_spec_7_6() -> None:
    p = RetentionPolicy()
    assert p.compress_after == timedelta(hours=24) and p.compress_quality == 80
    assert (p.error_screenshots, p.unknown_screens) == (timedelta(days=30), timedelta(days=60))
    assert (p.regular_full, p.regular_hourly) == (timedelta(days=7), timedelta(days=7))
    assert (p.step_details, p.summaries) == (timedelta(days=30), timedelta(days=365))
    assert p.stats_rollups == timedelta(days=400) and p.reports == timedelta(days=365)
    assert p.alerts == timedelta(days=90) and p.notifications == timedelta(days=90)


def test_example_config_loads_to_the_defaults() -> None:
    path = Path(__file__).resolve().parents[2] / "config/retention.example.toml"
    assert load_policy(path) == RetentionPolicy()


def test_config_overrides_fields_and_environment_overrides_config(tmp_path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text('[retention]\nerror_screenshots = "45d"\ncompress_format = "webp"\n')
    p = load_policy(cfg, {"PHONEFARM_RETENTION_UNKNOWN_SCREENS": "2w", "HOME": "/x"})
    assert p.error_screenshots == timedelta(days=45) and p.compress_format == "webp"
    assert p.unknown_screens == timedelta(days=14) and p.summaries == timedelta(days=365)
    assert policy_with(p, {"compress_quality": "60"}).compress_quality == 60


def test_bad_duration_names_the_field(tmp_path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text('[retention]\nunknown_screens = "60 days"\n')
    with pytest.raises(ValidationError) as err:
        load_policy(cfg)
    assert f"{cfg}: retention.unknown_screens" in str(err.value) and "60 days" in str(err.value)

    cfg.write_text('[retention]\nerror_screenshot = "30d"\n')
    with pytest.raises(ValidationError, match="retention.error_screenshot: unknown setting"):
        load_policy(cfg)
    cfg.write_text('[retention]\ncompress_quality = 0\n')
    with pytest.raises(ValidationError, match="retention.compress_quality"):
        load_policy(cfg)
    with pytest.raises(ValidationError, match="retention.node_events"):
        policy_with(RetentionPolicy(), {"node_events": "0d"})


def test_parse_duration() -> None:
    assert parse_duration("24h", "x") == timedelta(hours=24)
    assert parse_duration("1.5d", "x") == timedelta(hours=36)
    assert parse_duration("1y", "x") == timedelta(days=365)
    for bad in ("", "30", "d", "-1d", "30 x", 30):
        with pytest.raises(ValidationError, match="^x: bad duration"):
            parse_duration(bad, "x")


def test_next_run_is_the_next_wall_clock_time_in_utc() -> None:
    assert next_run(NOW, "03:30") == datetime(2026, 11, 26, 3, 30, tzinfo=timezone.utc)
    assert next_run(NOW, "13:00") == datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)
    at = datetime(2026, 11, 25, 3, 30, tzinfo=timezone.utc)
    assert next_run(at, "03:30") == at + timedelta(days=1)  # never the same run twice
    with pytest.raises(ValidationError, match="run_at"):
        next_run(NOW, "25:00")


def test_naive_now_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="aware"):
        plan(tmp_path, datetime(2026, 1, 1))


def test_unknown_screen_queue_reopens_whole_after_retention(tmp_path) -> None:
    from actors.coordinator.unknown_screens import UnknownScreenQueue

    folder = tmp_path / "unknown-screens"
    q = UnknownScreenQueue(folder)
    q.add("n1-1", png(1), {"serial": "p1", "at": 1.0})
    q.add("n1-2", cv2.imencode(".png", np.zeros((240, 108, 3), np.uint8))[1].tobytes(),
          {"serial": "p2", "at": 2.0})
    for path in folder.glob("n1-1.*"):
        os.utime(path, (NOW.timestamp() - 61 * DAY,) * 2)
    apply(plan(tmp_path, NOW))
    reopened = UnknownScreenQueue(folder)
    assert [e["id"] for e in reopened.entries()] == ["n1-2"]
    assert reopened.image("n1-2").startswith(b"\x89PNG")
