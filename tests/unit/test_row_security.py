"""Tenant isolation inside PostgreSQL (issue 18.2): row-level security on every client-owned
table, so that a read made for a caller reaching some clients returns nothing of another
client's even when its query forgot the filter. Real PostgreSQL (tests/pg_cluster.py),
connected as the farm's ordinary role (not a superuser: the policies bind it)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from actors.coordinator.reports.store import ReportStore
from actors.store.caller_scope import as_clients
from actors.store.farm_db import FarmDB

# Tables without a client of their own: identity (organizations, users, tokens), the farm's
# machinery (nodes, keys, the scheduler's state, the registry, media folders), and the
# spec's catalogue tables that name no client, phone or account.
FARM_WIDE = {
    "organizations", "users", "user_client_access", "auth_tokens", "agents", "node_keys",
    "scheduler_state", "scheduler_rows", "scheduled_workflows", "screen_proposals",
    "media_files", "counters", "apk_files", "app_registry", "audit_log", "phonefarm_schema",
    "workflow_sequences", "task_definitions", "task_dependencies", "task_targets",
    "task_executions", "content_analysis", "content_tags",
    "post_analytics_sources", "platform_daily_metrics",
    "stats_minutes", "stats_hours",  # the rollups' closed minutes and hours (v17): times, counts
}


@pytest.fixture
async def pg_db(pg_cluster, tmp_path: Path) -> FarmDB:
    db = await FarmDB.open(tmp_path / "farm.sqlite3", target=pg_cluster.new_database())
    yield db
    await db.close()


async def _two_clients(db: FarmDB) -> tuple[int, int]:
    a = await db.upsert_client("acme")
    b = await db.upsert_client("globex")
    for client, serial in ((a, "A1"), (b, "B1")):
        await db.upsert_phone(serial, client=client)
        profile = await db.upsert_profile(client=client, first_name=serial)
        await db.upsert_account(serial, "clipshare", "account1", username=f"{serial}-user",
                                profile_id=profile)
        await db.create_execution(f"run-{serial}", serial=serial, sequence="clipshare/login")
        await db.save_sequence_definition(f"own-{serial}", client=client)
        await db.add_recovery_attempt(serial=serial, execution_key=f"run-{serial}",
                                      status="failed")
        await db.create_workflow_execution(
            (await db.save_workflow_definition(f"wf-{serial}", []))["workflow_def_id"],
            f"phone:{serial}", client_ids=[client])
        await ReportStore(db).add(client_id=client, kind="daily", day="2026-12-06",
                                  period_start=datetime(2026, 12, 6, tzinfo=timezone.utc),
                                  period_end=datetime(2026, 12, 7, tzinfo=timezone.utc),
                                  title=f"report {serial}", text="t", html="h", summary={})
    await db.save_sequence_definition("shared")  # the farm's library: every caller's
    await db.upsert_phone("UNASSIGNED")
    return a, b


async def test_a_query_without_its_filter_sees_nothing_of_another_client(pg_db: FarmDB) -> None:
    a, b = await _two_clients(pg_db)
    everything = {t: await pg_db._all(f"SELECT * FROM {t}") for t in (
        "clients", "phones", "profiles", "accounts", "executions", "sequence_definitions",
        "recovery_attempts", "workflow_executions", "reports")}
    assert len(everything["phones"]) == 3 and len(everything["clients"]) == 2

    with as_clients({a}):
        assert [r["name"] for r in await pg_db._all("SELECT * FROM clients")] == ["acme"]
        assert [r["serial_number"] for r in await pg_db._all("SELECT * FROM phones")] == ["A1"]
        assert [r["first_name"] for r in await pg_db._all("SELECT * FROM profiles")] == ["A1"]
        assert [r["username"] for r in await pg_db._all("SELECT * FROM accounts")] == ["A1-user"]
        assert [r["serial"] for r in await pg_db._all("SELECT * FROM executions")] == ["A1"]
        assert [r["serial"] for r in await pg_db._all("SELECT * FROM recovery_attempts")] == ["A1"]
        assert [r["title"] for r in await pg_db._all("SELECT * FROM reports")] == ["report A1"]
        assert sorted(r["name"] for r in await pg_db._all(
            "SELECT * FROM sequence_definitions")) == ["own-A1", "shared"]
        owners = [r["client_ids"] for r in await pg_db._all("SELECT * FROM workflow_executions")]
        assert owners == [f"[{a}]"]
        # The FarmDB methods themselves, called for that caller, see only its rows too.
        assert [p["serial"] for p in await pg_db.phone_rows()] == ["A1"]
        assert [e["key"] for e in await pg_db.recent_executions()] == ["run-A1"]
        # A join or a subquery does not reach around it either.
        assert (await pg_db._one("SELECT COUNT(*) FROM accounts a JOIN phones p"
                                 " ON p.phone_id = a.phone_id"))[0] == 1
        assert (await pg_db._one("SELECT COUNT(*) FROM executions WHERE serial IN"
                                 " (SELECT serial_number FROM phones)"))[0] == 1

    with as_clients(set()):  # a caller reaching no client: no client's rows, the library
        assert await pg_db._all("SELECT * FROM phones") == []
        assert await pg_db._all("SELECT * FROM executions") == []
        assert [r["name"] for r in await pg_db._all("SELECT * FROM sequence_definitions")] == [
            "shared"]

    # Outside a scoped call, the farm's own work sees everything again.
    assert len(await pg_db._all("SELECT * FROM phones")) == 3
    assert {t: len(await pg_db._all(f"SELECT * FROM {t}")) for t in everything} == {
        t: len(rows) for t, rows in everything.items()}


async def test_every_client_owned_table_has_a_forced_policy(pg_db: FarmDB) -> None:
    """A new table naming a client, phone, account, profile or execution without a policy
    fails here: add it to schema policies (or to FARM_WIDE with the reason)."""
    rows = await pg_db._all(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        " (SELECT COUNT(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r'")
    unguarded = [r["relname"] for r in rows if r["relname"] not in FARM_WIDE
                 and not (r["relrowsecurity"] and r["relforcerowsecurity"] and r["policies"])]
    assert unguarded == []
    owned = {r[0] for r in await pg_db._all(
        "SELECT DISTINCT table_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND column_name IN"
        " ('client_id', 'client_ids', 'phone_id', 'account_id', 'execution_id', 'serial')")}
    assert owned - FARM_WIDE, "the sweep found no client-owned table"
    assert not (owned & FARM_WIDE) - {"users", "user_client_access", "task_executions",
                                      "task_targets", "content_analysis", "audit_log"}


async def test_rows_under_a_post_conversation_or_link_follow_their_account(
        pg_db: FarmDB) -> None:
    """post_metrics, messages, message_responses and link_clicks name no client themselves:
    they are their parent's (v24's policies), so a caller sees another client's none."""
    a, b = await _two_clients(pg_db)
    for serial in ("A1", "B1"):
        account = (await pg_db._one("SELECT account_id FROM accounts a JOIN phones p"
                                    " ON p.phone_id = a.phone_id WHERE p.serial_number = ?",
                                    (serial,)))[0]
        post = (await pg_db._write("INSERT INTO content_posts (account_id, caption) VALUES"
                                   " (?, ?) RETURNING post_id", (account, serial)))[0]
        await pg_db._write("INSERT INTO post_metrics (post_id, metric_date, views) VALUES"
                           " (?, '2026-12-06', 10)", (post,))
        chat = (await pg_db._write("INSERT INTO conversations (account_id, platform,"
                                   " external_user_id) VALUES (?, 'clipshare', ?)"
                                   " RETURNING conversation_id", (account, serial)))[0]
        message = (await pg_db._write("INSERT INTO messages (conversation_id, message_text)"
                                      " VALUES (?, ?) RETURNING message_id",
                                      (chat, f"hi {serial}")))[0]
        await pg_db._write("INSERT INTO message_responses (message_id, ai_prompt) VALUES"
                           " (?, ?)", (message, f"prompt {serial}"))
        link = (await pg_db._write("INSERT INTO link_in_bio (account_id, url, code) VALUES"
                                   " (?, 'https://x.example/', ?) RETURNING link_id",
                                   (account, f"code{serial}")))[0]
        await pg_db._write("INSERT INTO link_clicks (link_id, click_date, click_count, source)"
                           " VALUES (?, '2026-12-06', 3, ?)", (link, serial.lower()))
    queries = {
        "post_metrics": "SELECT p.caption FROM post_metrics m JOIN content_posts p"
                        " ON p.post_id = m.post_id",
        "messages": "SELECT message_text FROM messages",
        "message_responses": "SELECT ai_prompt FROM message_responses",
        "link_clicks": "SELECT source FROM link_clicks",
    }
    everyone = {t: sorted(r[0] for r in await pg_db._all(q)) for t, q in queries.items()}
    assert everyone == {"post_metrics": ["A1", "B1"], "messages": ["hi A1", "hi B1"],
                        "message_responses": ["prompt A1", "prompt B1"],
                        "link_clicks": ["a1", "b1"]}
    with as_clients({a}):
        assert {t: sorted(r[0] for r in await pg_db._all(q)) for t, q in queries.items()} == {
            "post_metrics": ["A1"], "messages": ["hi A1"], "message_responses": ["prompt A1"],
            "link_clicks": ["a1"]}
        # Without the join to the parent too: the bare table shows one client's row.
        for table in queries:
            assert (await pg_db._one(f"SELECT COUNT(*) FROM {table}"))[0] == 1, table
    with as_clients(set()):
        for table in queries:
            assert (await pg_db._one(f"SELECT COUNT(*) FROM {table}"))[0] == 0, table
    assert b


async def test_another_program_connecting_as_the_farm_sees_no_client_unless_it_says_so(
        pg_db: FarmDB, pg_cluster) -> None:
    import psycopg

    await _two_clients(pg_db)
    dsn = dict(host="127.0.0.1", port=pg_cluster.port, user="phonefarm",
               password="phonefarm-test-only", dbname=pg_db.target.url.rsplit("/", 1)[1])
    with psycopg.connect(**dsn) as conn:
        assert conn.execute("SELECT COUNT(*) FROM phones").fetchone()[0] == 0
    with psycopg.connect(**dsn, options="-c phonefarm.clients=*") as conn:
        assert conn.execute("SELECT COUNT(*) FROM phones").fetchone()[0] == 3
