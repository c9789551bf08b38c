"""The farm database: the spec's schema (7.5) in one SQLite file, written by the coordinator.

Owns the schema and its forward-only migrations (SQL files ``actors/store/schema/vN.sql``, version in
``PRAGMA user_version``), and the
async read/write methods over it: the core tables of spec 7.5.1 (clients, users, agents,
phones, profiles, accounts), the content the variable system reads (hashtag sets, caption
templates, media files, custom variables, named counters), and the execution records of
spec 7.5.3 (executions, execution_steps).

Additions to the spec's columns, kept minimal and listed here so they stay visible:

- ``clients.contact_email``, ``clients.contact_discord`` (spec 15.1's ``${client.contact.*}``),
  and a unique index on ``clients.name`` (clients are upserted by name).
- ``accounts.bio`` (spec 15.1's ``${account.instagram.account2.bio}``).
- ``agents`` (phones reference it; the spec never defines it): the node registry.
- ``tasks`` as in spec 7.5.3, because ``executions.task_id`` references it.
- ``executions``: ``execution_key`` (our string execution ids), ``run_id``, ``serial``,
  ``sequence``, ``error_reason``, ``current_step``; ``execution_steps``: ``path``, ``error``,
  ``screenshot``.
- ``scheduler_state`` (one row: the scheduler's msgspec state as JSON) and
  ``schedule_events`` (what the scheduler did), for actors.coordinator.scheduling.schedules.
- v5 adds the rest of the spec's tables with the spec's columns (7.5.3 task_dependencies and
  task_targets, 7.5.4-7.5.11, 12.2, 16.4). Where 7.5.10 redefines ``clients`` and ``users``,
  the existing tables are kept and the missing columns added (``clients.organization_id``;
  ``users.organization_id``, ``email`` (nullable: old rows have none), ``status`` (default
  'active'), ``updated_at`` (no default: SQLite cannot ALTER in a CURRENT_TIMESTAMP one)).
  Soft deletes (spec 16.1) go through a ``status`` column, added where the spec has none:
  ``content_posts``, ``app_registry``, the three definition tables and ``api_keys`` (beside
  its ``is_active``).
- ``api_keys.encrypted_key`` holds ciphertext only (encrypted with the organization's key,
  spec 16.4.1), never a plaintext key; ``key_identifier`` is the masked form for display.
  Keys the farm itself issues would be stored as a hash in ``encrypted_key``'s place.
- ``audit_log`` (spec 16.3.1, written by `FarmDB.audit`): who (``actor``), when (``at``),
  what (``entity_type``, ``entity_id`` as text, ``action`` create|update|delete), the
  ``before_state``/``after_state`` as JSON, and the ``reason``. (Not ``before``/``after``:
  MySQL reserves BEFORE.)
- An index on every foreign key column and on the columns the code looks rows up by.
- v6: ``recovery_attempts`` also names the farm's execution (``execution_key``, ``serial``,
  ``sequence``, ``step_path``, ``failure_reason``), the ``screen`` recovery began on, the
  ``goal_screen``, the ``reached_screen``, ``steps``, ``resume_from`` and ``error``: the
  spec's row links ``sequence_executions``, which sequence runs do not write.
- v7: ``screen_proposals`` (no spec table): one discovery proposal per queued unknown
  screen, its review status and the proposal as one JSON document (actors.coordinator.ai.discovery).
- v8: ``api_keys.base_url``, ``model``, ``label`` (an OpenAI-compatible key needs its
  endpoint; actors.coordinator.ai.keys), and ``phones.paused_reason``, ``paused_at``, ``paused_detail``:
  the coordinator's pause of a phone (actors.coordinator.phone_pause), apart from the registry's status.
- v11: ``node_keys`` (no spec table): each node's own key for the node link, sealed under
  the master key (the coordinator must hold the key to check and return HMAC proofs),
  ``key_last4`` for display, ``created_at``, ``revoked_at``, ``last_seen_at``
  (actors.coordinator.node_keys).
- v12: ``accounts.password_sealed``/``password_org`` and ``profiles.profile_password_sealed``/
  ``password_org``: passwords are stored sealed (spec 16.4.1's per-organization key, issue
  17.5), with the organization whose derived key sealed them. The spec's plaintext columns
  ``accounts.password`` and ``profiles.profile_password`` are never written; rows from before
  v12 are sealed when the coordinator opens the database with its master key
  (`FarmDB.open(..., master_key=)`). Reads give ``password_set`` / ``profile_password_set``;
  only `variable_context` with ``secrets=True`` (a run's text resolution) opens them.
  ``executions.plan`` (the resolved steps a node is sent, typed passwords included) is
  stored sealed too (no new column: a plan not starting with ``{`` is ciphertext).
- v13: a group's name is unique within its client (``groups.client_id``; NULL: the farm's
  shared groups), no longer farm-wide: each client has a book of its own (`group_book`,
  `save_group_book` take the client). ``workflow_executions.client_ids``: the clients
  (JSON list of ids) of the caller who started it, NULL for a super user's (issue 17.4).

A phone has no profile column: the spec links profiles to accounts, so a phone's profile is
the profile of its accounts (the first account's, or the named account's).

Timestamps are UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (the form of SQLite's
CURRENT_TIMESTAMP, with microseconds), so they sort and compare as text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import aiosqlite
import orjson

from actors.access.secrets_box import SecretBox, SecretDecryptError, load_master_key
from actors.store.db_target import SQLITE, DbTarget
from actors.store.db_writer import SingleWriter
from actors.store.migrations import (PG_VERSION_TABLE, SCHEMA_VERSION, check_schema_version,
                                     migrate_postgresql, migration_statements)
from actors.store.pg import PgReader, start_writer
from actors.store.execution_history import (ExecutionQuery, before_sql, history_sql,
                                            tenant_serials_sql)
from actors.store.execution_records import FIND_STEP_SQL, ExecutionRecords, utc_text
from actors.store.execution_records import FINAL_STATUSES as _FINAL_STATUSES
from protocol.errors import FarmError, ValidationError

if TYPE_CHECKING:
    from actors.store.stats import FailureQuery, StatsQuery
    from sequences.groups import GroupBook

log = logging.getLogger(__name__)

SQLITE_FILES = DbTarget(SQLITE)

_RECOVERY_FIELDS = ("sequence_execution_id", "task_execution_id", "attempt_number",
                    "start_time", "end_time", "status", "recovery_prompt", "ai_response",
                    "actions_taken", "screenshot_before", "screenshot_after", "execution_key",
                    "serial", "sequence", "step_path", "failure_reason", "screen", "goal_screen",
                    "reached_screen", "steps", "resume_from", "error")
AUDIT_ACTIONS = ("create", "update", "delete")

PROFILE_FIELDS = ("first_name", "last_name", "birth_month", "birth_day", "birth_year",
                  "gender", "profile_password", "interests")
_STEP_FIELDS = ("step_number", "action_type", "screen_name", "start_time", "end_time",
                "status", "path", "error", "screenshot")
MEDIA_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".mp4", ".mov",
                              ".m4v", ".webm"})

# Passwords are sealed with a SecretBox of this purpose (actors.access.secrets_box), and
# execution plans (a run's resolved steps: what a node types, passwords included) with one
# of the other (no organization: only crash resume and AI recovery read them back).
PASSWORDS = "passwords"
PLANS = "execution_plans"
UNFINISHED = ("pending", "running", "paused")
# What a password variable resolves to outside a run (previews): never the password.
SECRET_MASK = "\u2022" * 8
# Keys whose values never leave the database in clear: FarmDB.audit stores them as
# "<key>_set": true|false, and so does the start-up sealing for older audit rows.
SECRET_KEYS = ("password", "profile_password")
# The organization whose derived key seals an account's password: the client of its profile
# (the one given, else the account's), else its phone's client (as FarmDB.owner_of).
# Parameters: profile_id, platform, account_number, phone_id, phone_id.
_ACCOUNT_ORG_SQL = (
    "SELECT organization_id FROM clients WHERE client_id = COALESCE("
    " (SELECT client_id FROM profiles WHERE profile_id = COALESCE(?, (SELECT profile_id FROM"
    "  accounts WHERE platform = ? AND account_number = ? AND phone_id = ?))),"
    " (SELECT client_id FROM phones WHERE phone_id = ?))")
# A profile's: its client's (the new client_id given, else the stored one).
_PROFILE_ORG_SQL = ("SELECT organization_id FROM clients WHERE client_id = COALESCE(?,"
                    " (SELECT client_id FROM profiles WHERE profile_id = ?))")
# An audit entry's entity_id as a number, NULL when it is not digits: PostgreSQL refuses
# to CAST other text (SQLite made it 0, which matches no row either).
_ENTITY_NUMBER = ("CASE WHEN entity_id <> '' AND LTRIM(entity_id, '0123456789') = ''"
                  " AND LENGTH(entity_id) < 19 THEN CAST(entity_id AS BIGINT) END")
# The client of the link in bio an audit entry names by id: its account's (as 'account').
_LINK_CLIENT_SQL = (
    "(SELECT COALESCE(pr.client_id, ph.client_id) FROM link_in_bio l"
    " JOIN accounts a ON a.account_id = l.account_id"
    " LEFT JOIN profiles pr ON pr.profile_id = a.profile_id"
    " LEFT JOIN phones ph ON ph.phone_id = a.phone_id"
    f" WHERE l.link_id = {_ENTITY_NUMBER})")
# The client an audit entry's entity belongs to now, by entity type (how FarmDB.audit_trail
# shows a caller only its clients' entries); NULL for farm-wide entities and unknown types.
_AUDIT_CLIENT_SQL = (
    "CASE entity_type"
    " WHEN 'client' THEN (SELECT client_id FROM clients"
    f"  WHERE client_id = {_ENTITY_NUMBER})"
    f" WHEN 'phone' THEN (SELECT client_id FROM phones WHERE phone_id = {_ENTITY_NUMBER})"
    " WHEN 'phone_tags' THEN (SELECT client_id FROM phones WHERE serial_number = entity_id)"
    " WHEN 'phone_pause' THEN (SELECT client_id FROM phones WHERE serial_number = entity_id)"
    " WHEN 'profile' THEN (SELECT client_id FROM profiles"
    f"  WHERE profile_id = {_ENTITY_NUMBER})"
    " WHEN 'account' THEN (SELECT COALESCE(pr.client_id, ph.client_id) FROM accounts a"
    "  LEFT JOIN profiles pr ON pr.profile_id = a.profile_id"
    "  LEFT JOIN phones ph ON ph.phone_id = a.phone_id"
    f"  WHERE a.account_id = {_ENTITY_NUMBER})"
    " WHEN 'sequence_definition' THEN (SELECT client_id FROM sequence_definitions"
    f"  WHERE sequence_def_id = {_ENTITY_NUMBER})"
    " WHEN 'workflow_definition' THEN (SELECT client_id FROM workflow_definitions"
    f"  WHERE workflow_def_id = {_ENTITY_NUMBER})"
    f" WHEN 'ai_key' THEN (SELECT client_id FROM api_keys WHERE key_id = {_ENTITY_NUMBER})"
    f" WHEN 'user' THEN (SELECT client_id FROM users WHERE user_id = {_ENTITY_NUMBER})"
    f" WHEN 'report' THEN (SELECT client_id FROM reports WHERE report_id = {_ENTITY_NUMBER})"
    " WHEN 'alert_rule' THEN (SELECT client_id FROM alert_rules"
    f"  WHERE rule_id = {_ENTITY_NUMBER})"
    f" WHEN 'alert' THEN (SELECT client_id FROM alerts WHERE alert_id = {_ENTITY_NUMBER})"
    # Content (schema v23): audited by row id (actors.coordinator.content_store).
    " WHEN 'caption_template' THEN (SELECT client_id FROM caption_templates"
    f"  WHERE caption_template_id = {_ENTITY_NUMBER})"
    " WHEN 'hashtag_set' THEN (SELECT client_id FROM hashtag_sets"
    f"  WHERE hashtag_set_id = {_ENTITY_NUMBER})"
    " WHEN 'custom_variable' THEN (SELECT client_id FROM custom_variables"
    f"  WHERE custom_variable_id = {_ENTITY_NUMBER})"
    " WHEN 'media' THEN (SELECT client_id FROM media_items"
    f"  WHERE media_item_id = {_ENTITY_NUMBER})"
    # Links in bio (schema v24): a link and its click imports, audited by link id; the
    # client is its account's (as 'account' above).
    f" WHEN 'link' THEN {_LINK_CLIENT_SQL}"
    f" WHEN 'link_clicks' THEN {_LINK_CLIENT_SQL}"
    " END")


def account_ref(row: Mapping[str, Any]) -> str:
    """An account row's ``platform.account_number``: how scopes, runs and ``${account.…}``
    name it."""
    return f"{row['platform']}.{row['account_number']}"


RETIRED = "retired"  # the status of a deleted (soft-deleted) client, phone or account


def is_retired(row: Mapping[str, Any]) -> bool:
    return row.get("status") == RETIRED


_INSERT_SCHEDULE_EVENT = ("INSERT INTO schedule_events (at, schedule_id, job_id, serial, kind,"
                          " reason, detail) VALUES (?, ?, ?, ?, ?, ?, ?)")


def _schedule_event_rows(events: list[dict]) -> list[tuple]:
    return [(utc_text(e["at"]), e.get("schedule_id"), e.get("job_id"), e.get("serial"),
             e["kind"], e.get("reason"), orjson.dumps(e.get("detail") or {}).decode())
            for e in events]


def default_db_path() -> Path:
    """Where the farm database lives: ``$PHONEFARM_DATA/farm.sqlite3`` (default ./farm-data)."""
    return Path(os.environ.get("PHONEFARM_DATA", "./farm-data")) / "farm.sqlite3"


class FarmDB:
    """The coordinator's farm database: one write connection owned by a single writer task
    that commits queued writes in batches (actors.store.db_writer), and a separate read connection
    (WAL: reads never wait for the writer, and see every write whose call returned).

    Open with ``await FarmDB.open(path)``; migrations run on open. Every method is a
    coroutine on the opening loop, except the callables inside a `variable_context`, which
    are meant for a worker thread (see there)."""

    def __init__(self, path: Path | str, conn: aiosqlite.Connection | None,
                 target: DbTarget = SQLITE_FILES) -> None:
        self.path = str(path)  # on PostgreSQL too: its folder holds the master key and media
        self.target = target
        # SQLite: migrations run on this connection; then it only reads (query_only).
        self._conn = conn
        self._reader = conn
        self._pg_reader: PgReader | None = None
        self._writer: SingleWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._master: bytes | None = None
        self._boxes: dict[str, SecretBox] = {}

    @property
    def engine(self) -> str:
        return self.target.engine

    @classmethod
    async def open(cls, path: Path | str, *, master_key: bytes | None = None,
                   target: DbTarget | None = None) -> "FarmDB":
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.
        A file only: the writer and the readers have a connection each. With a PostgreSQL
        ``target`` the database is that server's (``path`` then only names the data folder,
        where the master key and media are).

        ``master_key`` (the coordinator's) seals passwords and execution plans, and
        plaintext ones of rows from before v12 are sealed here, before anything else reads
        or writes. Without one (tools, tests) the default master key of the database's
        folder (PHONEFARM_SECRET_KEY, else secret.key there) is loaded when a secret is
        first written or opened, and old plaintext rows are left for the coordinator."""
        if target is not None and target.is_postgresql:
            return await cls._open_postgresql(path, target, master_key)
        if str(path) == ":memory:":
            raise FarmError("the farm database needs a file (its writer and readers each "
                            "open it): use a temporary file instead of :memory:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        conn.row_factory = aiosqlite.Row
        db = cls(path, conn)
        db._loop = asyncio.get_running_loop()
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            await db._migrate()
            if master_key is not None:
                db._master = master_key
                await db._seal_plaintext_secrets()
            await conn.execute("PRAGMA query_only=ON")
            db._writer = await SingleWriter(str(path)).start()
        except BaseException:
            await conn.close()
            raise
        return db

    @classmethod
    async def _open_postgresql(cls, path: Path | str, target: DbTarget,
                               master_key: bytes | None) -> "FarmDB":
        db = cls(path, None, target)
        db._loop = asyncio.get_running_loop()
        db._master = master_key
        try:
            await asyncio.to_thread(migrate_postgresql, target)
            db._pg_reader = await PgReader(target.url, target.password).open()  # type: ignore[arg-type]
            db._writer = await start_writer(target)
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()  # the queued writes first
            self._writer = None
        if self._conn is not None:
            await self._conn.close()
        if self._pg_reader is not None:
            await self._pg_reader.close()
            self._pg_reader = None

    async def _migrate(self) -> None:
        version = await self.schema_version()
        check_schema_version(version, self.path, SCHEMA_VERSION)
        for number in range(version, SCHEMA_VERSION):
            # executescript would commit on its own; run each statement inside one
            # transaction so a failed migration leaves the previous version intact.
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in migration_statements(number + 1, SQLITE):
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version = {number + 1}")
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            log.info("farm database %s migrated to schema version %d", self.path, number + 1)

    async def schema_version(self) -> int:
        if self.target.is_postgresql:
            return (await self._one(f"SELECT version FROM {PG_VERSION_TABLE}"))[0]
        return (await self._one("PRAGMA user_version"))[0]

    # -- passwords at rest (issue 17.5) ----------------------------------------------------

    def _sealer(self, purpose: str) -> SecretBox:
        found = self._boxes.get(purpose)
        if found is None:
            if self._master is None:
                self._master = load_master_key(Path(self.path).parent)
            found = self._boxes[purpose] = SecretBox(self._master, purpose)
        return found

    def _passwords(self) -> SecretBox:
        return self._sealer(PASSWORDS)

    def _open_plan(self, key: str, plan: str | None) -> str | None:
        """An execution's stored plan as JSON text: opened, or as written before v12 (plain
        JSON). None, logged, when this master key cannot open it (that execution cannot be
        resumed; the others can)."""
        if plan is None or plan.startswith("{"):
            return plan
        try:
            return self._sealer(PLANS).open(plan, None, f"execution {key} plan")
        except SecretDecryptError as exc:
            log.error("%s", exc)
            return None

    async def _seal_plaintext_secrets(self) -> tuple[int, int]:
        """Seal every plaintext account and profile password and the plans of unfinished
        executions (rows written before v12), drop the plaintext plans of finished ones
        (only crash resume and AI recovery read a plan, of an unfinished execution) and
        replace secrets kept in older audit entries by ``<key>_set``; (accounts, profiles)
        sealed. One transaction on the migration connection, before the writer starts: a
        crash leaves every row as it was, and a second run finds nothing to do. Deleted
        content is zeroed (secure_delete) and the WAL truncated, so the plaintext does not
        linger in the file's free space."""
        conn = self._conn
        box = self._passwords()
        unfinished = ", ".join(f"'{s}'" for s in UNFINISHED)
        plans = await self._all(
            "SELECT execution_id, execution_key, plan FROM executions WHERE plan LIKE '{%'"
            f" AND status IN ({unfinished})")
        finished_plans = (await self._one(
            "SELECT COUNT(*) FROM executions WHERE plan LIKE '{%'"
            f" AND status NOT IN ({unfinished})"))[0]
        accounts = await self._all(
            "SELECT account_id, password, password_sealed, profile_id, platform,"
            " account_number, phone_id FROM accounts WHERE password IS NOT NULL")
        profiles = await self._all(
            "SELECT profile_id, profile_password, profile_password_sealed, client_id"
            " FROM profiles WHERE profile_password IS NOT NULL")
        audits = await self._all(
            "SELECT audit_id, before_state, after_state FROM audit_log WHERE"
            " before_state LIKE '%password\"%' OR after_state LIKE '%password\"%'")
        if not (accounts or profiles or audits or plans or finished_plans):
            return 0, 0
        sealed_accounts = sealed_profiles = 0
        await conn.execute("PRAGMA secure_delete=ON")
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for r in accounts:
                sealed, org = r["password_sealed"], None
                if sealed is None and r["password"]:
                    org = await self._org(_ACCOUNT_ORG_SQL, (
                        r["profile_id"], r["platform"], r["account_number"], r["phone_id"],
                        r["phone_id"]))
                    sealed = box.seal(r["password"], org)
                    sealed_accounts += 1
                    await conn.execute("UPDATE accounts SET password_sealed = ?,"
                                       " password_org = ?, password = NULL WHERE account_id = ?",
                                       (sealed, org, r["account_id"]))
                else:  # empty, or sealed already: only the plaintext goes
                    await conn.execute("UPDATE accounts SET password = NULL"
                                       " WHERE account_id = ?", (r["account_id"],))
            for r in profiles:
                if r["profile_password_sealed"] is None and r["profile_password"]:
                    org = await self._org(_PROFILE_ORG_SQL, (r["client_id"], r["profile_id"]))
                    sealed_profiles += 1
                    await conn.execute(
                        "UPDATE profiles SET profile_password_sealed = ?, password_org = ?,"
                        " profile_password = NULL WHERE profile_id = ?",
                        (box.seal(r["profile_password"], org), org, r["profile_id"]))
                else:
                    await conn.execute("UPDATE profiles SET profile_password = NULL"
                                       " WHERE profile_id = ?", (r["profile_id"],))
            for r in plans:
                await conn.execute("UPDATE executions SET plan = ? WHERE execution_id = ?",
                                   (self._sealer(PLANS).seal(r["plan"], None),
                                    r["execution_id"]))
            await conn.execute("UPDATE executions SET plan = NULL WHERE plan LIKE '{%'"
                               f" AND status NOT IN ({unfinished})")
            for r in audits:
                before, after = (_redacted_json(r["before_state"]),
                                 _redacted_json(r["after_state"]))
                if (before, after) != (r["before_state"], r["after_state"]):
                    await conn.execute("UPDATE audit_log SET before_state = ?, after_state = ?"
                                       " WHERE audit_id = ?", (before, after, r["audit_id"]))
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        async with conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
            busy = (await cur.fetchone())[0]
        if busy:
            log.warning("farm database %s: passwords sealed, but the WAL could not be "
                        "truncated now (another connection reads it): their old plaintext "
                        "pages go at the next checkpoint", self.path)
        log.info("farm database %s: sealed %d account and %d profile passwords and %d "
                 "execution plans stored in clear (encrypted under the master key); %d "
                 "plans of finished executions dropped", self.path, sealed_accounts,
                 sealed_profiles, len(plans), finished_plans)
        return sealed_accounts, sealed_profiles

    async def _org(self, sql: str, args: tuple) -> int | None:
        row = await self._one(sql, args)
        return None if row is None else row[0]

    async def _sealed_password(self, password: str | None, org_sql: str,
                               org_args: tuple) -> tuple[bool, str | None, int | None]:
        """(change it, sealed, organization) for a password given to an upsert: None
        leaves the stored one, "" removes it, anything else is sealed."""
        if password is None:
            return False, None, None
        if password == "":
            return True, None, None
        org = await self._org(org_sql, org_args)
        return True, self._passwords().seal(password, org), org

    def _open_password(self, plaintext: str | None, sealed: str | None, org: int | None,
                       what: str, reveal: bool) -> str | None:
        """A stored password: opened (``reveal``), else SECRET_MASK; None when there is none.
        A plaintext value (a row from before v12 not sealed yet) counts as stored."""
        if sealed is None and not plaintext:
            return None
        if not reveal:
            return SECRET_MASK
        return plaintext if sealed is None else self._passwords().open(sealed, org, what)

    async def _phone_passwords(self, serial: str, reveal: bool
                               ) -> tuple[dict[int, str | None], dict[int, str | None]]:
        """({account_id: password}, {profile_id: profile password}) of phone ``serial``'s
        accounts and their profiles: opened when ``reveal``, else SECRET_MASK (None: none)."""
        rows = await self._all(
            "SELECT a.account_id, a.password, a.password_sealed, a.password_org,"
            " pr.profile_id, pr.profile_password, pr.profile_password_sealed,"
            " pr.password_org AS profile_org FROM accounts a"
            " JOIN phones ph ON ph.phone_id = a.phone_id"
            " LEFT JOIN profiles pr ON pr.profile_id = a.profile_id"
            " WHERE ph.serial_number = ?", (serial,))
        accounts: dict[int, str | None] = {}
        profiles: dict[int, str | None] = {}
        for r in rows:
            accounts[r["account_id"]] = self._open_password(
                r["password"], r["password_sealed"], r["password_org"],
                f"account {r['account_id']} password", reveal)
            if r["profile_id"] is not None and r["profile_id"] not in profiles:
                profiles[r["profile_id"]] = self._open_password(
                    r["profile_password"], r["profile_password_sealed"], r["profile_org"],
                    f"profile {r['profile_id']} password", reveal)
        return accounts, profiles

    # -- screen discovery proposals (actors.coordinator.ai.discovery) -------------------------------------

    async def add_proposal(self, unknown_screen_id: str, status: str, proposal: dict) -> dict:
        """Store the proposal for a queued unknown screen (one per screen: a second add
        returns the first); returns its row (`proposal_row`)."""
        now = utc_text()
        await self._write(
            "INSERT INTO screen_proposals (unknown_screen_id, status, proposal, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (unknown_screen_id) DO NOTHING",
            (unknown_screen_id, status, orjson.dumps(proposal).decode(), now, now))
        row = await self._one("SELECT proposal_id FROM screen_proposals"
                              " WHERE unknown_screen_id = ?", (unknown_screen_id,))
        return await self.proposal_row(row[0])  # type: ignore[index,return-value]

    async def update_proposal(self, proposal_id: int, *, status: str | None = None,
                              proposal: dict | None = None,
                              resolved_by: str | None = None) -> dict | None:
        """Change a proposal's status and/or document; the row afterwards, None if absent."""
        await self._write(
            "UPDATE screen_proposals SET status = COALESCE(?, status),"
            " proposal = COALESCE(?, proposal), resolved_by = COALESCE(?, resolved_by),"
            " updated_at = ? WHERE proposal_id = ?",
            (status, None if proposal is None else orjson.dumps(proposal).decode(),
             resolved_by, utc_text(), int(proposal_id)))
        return await self.proposal_row(proposal_id)

    async def proposal_row(self, proposal_id: int) -> dict | None:
        row = await self._one("SELECT * FROM screen_proposals WHERE proposal_id = ?",
                              (int(proposal_id),))
        return None if row is None else _proposal_dict(row)

    async def proposal_rows(self, status: str | None = None) -> list[dict]:
        """Proposals, oldest first; only those with ``status`` when given."""
        sql, args = "SELECT * FROM screen_proposals", ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        return [_proposal_dict(r) for r in await self._all(sql + " ORDER BY proposal_id", args)]

    # -- audit trail (spec 16.3.1) -------------------------------------------------------

    async def audit(self, entity_type: str, entity_id: Any, action: str, before: Any,
                    after: Any, actor: str | int | None = None,
                    reason: str | None = None) -> int:
        """Record one change to an entity: who (``actor``: a user id or name, None for the
        system), when (now, UTC), ``before``/``after`` states (any JSON-encodable value, None
        for a create's before or a delete's after) and why. ``action`` is create, update or
        delete. ``entity_id`` is stored as text. A password (any ``SECRET_KEYS`` key, at
        any depth) is stored as ``<key>_set``: true|false. Returns the new audit_id."""
        if action not in AUDIT_ACTIONS:
            raise ValidationError(f"audit {entity_type}", f"unknown action {action!r} "
                                  f"(expected one of {', '.join(AUDIT_ACTIONS)})")
        row = await self._write(
            "INSERT INTO audit_log (at, actor, entity_type, entity_id, action, before_state,"
            " after_state, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING audit_id",
            (utc_text(), None if actor is None else str(actor), entity_type,
             None if entity_id is None else str(entity_id), action,
             _json_or_none(redact_secrets(before)), _json_or_none(redact_secrets(after)),
             reason))
        return row[0]

    async def audit_trail(self, entity_type: str | None = None, entity_id: Any = None,
                          limit: int = 100, *, since: str | None = None,
                          client_ids: Iterable[int] | None = None) -> list[dict]:
        """The most recent audit entries (newest first), optionally for one entity type or
        one entity, at or after ``since`` (UTC text, as ``at``); ``before``/``after`` come
        back decoded, ``entity_id`` as text, ``client_id`` the client the entity belongs to
        now (`_AUDIT_CLIENT_SQL`; None for farm-wide things: groups, the screen registry).
        With ``client_ids`` only entries whose ``client_id`` is one of them."""
        where, args = [], []
        if entity_type is not None:
            where.append("entity_type = ?")
            args.append(entity_type)
        if entity_id is not None:
            where.append("entity_id = ?")
            args.append(str(entity_id))
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if client_ids is not None:
            ids = sorted({int(c) for c in client_ids})
            where.append(f"client_id IN ({', '.join('?' for _ in ids)})" if ids else "1 = 0")
            args.extend(ids)
        sql = (f"SELECT * FROM (SELECT audit_log.*, {_AUDIT_CLIENT_SQL} AS client_id"
               " FROM audit_log) AS entries")
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._all(sql + " ORDER BY audit_id DESC LIMIT ?", (*args, int(limit)))
        return [{"audit_id": r["audit_id"], "at": r["at"], "actor": r["actor"],
                 "entity_type": r["entity_type"], "entity_id": r["entity_id"],
                 "client_id": r["client_id"], "action": r["action"],
                 "before": None if r["before_state"] is None else orjson.loads(r["before_state"]),
                 "after": None if r["after_state"] is None else orjson.loads(r["after_state"]),
                 "reason": r["reason"]} for r in rows]

    # -- small helpers -------------------------------------------------------------------

    # Each read runs to its end in one call on the reader's thread. A statement left open
    # between two calls (execute, then fetch) holds the connection's read transaction, and
    # another coroutine's read slipped in between shares its snapshot: it would miss a
    # write whose call has already returned.
    async def _one(self, sql: str, args: Iterable[Any] = ()) -> aiosqlite.Row | None:
        return next(iter(await self._all(sql, args)), None)

    async def _all(self, sql: str, args: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        if self._pg_reader is not None:
            return await self._pg_reader.fetchall(sql, tuple(args))
        return list(await self._reader.execute_fetchall(sql, tuple(args)))

    async def _write(self, sql: str, args: Iterable[Any] = ()) -> aiosqlite.Row | None:
        """One statement through the single writer (committed when this returns); returns
        its RETURNING row if any."""
        args = tuple(args)
        return await self._writer_of().run(lambda conn: conn.execute(sql, args).fetchone())

    async def _write_many(self, sql: str, rows: list[tuple]) -> None:
        """One statement for each of ``rows``, through the single writer, all or none."""
        await self._writer_of().run(lambda conn: conn.executemany(sql, rows) and None,
                                    atomic=True)

    async def _atomic(self, job: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``job(conn)`` (several statements, on the writer's thread: no awaits) through
        the single writer, all or none: readers see the state before it or after it, never a
        mix."""
        return await self._writer_of().run(job, atomic=True)

    def _json_elements(self, column: str) -> str:
        """A FROM item ``j`` with the elements of the JSON list in ``column``, one per row as
        ``j.value``. The one spot where the engines' SQL differs: neither has the other's
        function for this (SQLite json_each, PostgreSQL jsonb_array_elements_text)."""
        if self.target.is_postgresql:
            return f"jsonb_array_elements_text(CAST({column} AS JSONB)) AS j(value)"
        return f"json_each({column}) AS j"

    def _writer_of(self) -> SingleWriter:
        if self._writer is None:
            raise FarmError(f"farm database {self.path}: not open")
        return self._writer

    async def _client_id(self, client: str | int | None) -> int | None:
        if client is None or isinstance(client, int):
            return client
        row = await self._one("SELECT client_id FROM clients WHERE name = ?", (client,))
        if row is None:
            raise ValidationError(f"client {client!r}", "no such client")
        return row[0]

    async def _phone_id(self, serial: str) -> int | None:
        row = await self._one("SELECT phone_id FROM phones WHERE serial_number = ?", (serial,))
        return None if row is None else row[0]

    # -- execution records (spec 7.5.3) --------------------------------------------------

    async def create_execution(self, key: str, *, run_id: str | None = None,
                               serial: str | None = None, sequence: str | None = None,
                               status: str = "pending", task_id: int | None = None,
                               account_id: int | None = None, plan: str | None = None,
                               start_time: datetime | None = None,
                               error_reason: str | None = None,
                               error_message: str | None = None,
                               sequence_version: int | None = None,
                               registry_version: str | None = None) -> int:
        """Record a new execution under our string id ``key``; returns its execution_id.
        ``sequence_version``: the version of its sequence file (definition_versions) and
        ``registry_version`` the registry's, as the start saw them.

        ``phone_id`` is filled from ``serial`` when the phone is in the database (an unknown
        serial is kept in ``serial`` only). A second call with the same key raises. One
        write, no read first (a hot path: every dispatch). ``plan`` (what the node is sent,
        typed passwords included) is stored sealed; `unfinished_executions` opens it. A
        final ``status`` (an execution refused before it was sent) gets its end_time now, so
        the refusal is one write: a full disk cannot leave it ``pending``."""
        if plan is not None:
            plan = self._sealer(PLANS).seal(plan, None)
        end_time = utc_text() if status in _FINAL_STATUSES else None
        row = await self._write(
            "INSERT INTO executions (execution_key, run_id, serial, sequence, status, task_id,"
            " phone_id, account_id, plan, start_time, end_time, error_reason, error_message,"
            " sequence_version, registry_version) VALUES (?, ?, ?, ?, ?, ?,"
            " (SELECT phone_id FROM phones WHERE serial_number = ?), ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING execution_id",
            (key, run_id, serial, sequence, status, task_id, serial, account_id, plan,
             utc_text(start_time), end_time, error_reason, error_message, sequence_version,
             registry_version))
        return row[0]

    async def update_execution(self, key: str, **fields: Any) -> None:
        """Set columns of execution ``key``: any of status, error_message, error_reason,
        current_step, start_time, end_time (datetimes are stored as UTC text), run_id, serial,
        sequence, task_id, phone_id, account_id. A final status (completed, failed,
        cancelled, stopped) without an end_time sets end_time to now."""
        await self.write_records(lambda records: records.update(key, **fields))

    async def add_step(self, key: str, step_number: int, action_type: str | None = None, *,
                       path: str | None = None, screen_name: str | None = None,
                       status: str = "running", start_time: datetime | None = None) -> int:
        """Record the start of a step of execution ``key``; returns its step_id (pass it to
        `finish_step`). Also sets the execution's ``current_step``."""
        return await self.write_records(lambda records: records.add_step(
            key, step_number, action_type, path=path, screen_name=screen_name, status=status,
            start_time=start_time))

    async def find_step(self, key: str, path: str) -> tuple[int, str] | None:
        """(step_id, status) of the latest step of execution ``key`` at ``path``, or None:
        a replayed step event finds the row its first delivery wrote."""
        row = await self._one(FIND_STEP_SQL, (key, path))
        return None if row is None else (row[0], row[1])

    async def finish_step(self, step_id: int, status: str, *, screen_name: str | None = None,
                          error: str | None = None, screenshot: str | None = None,
                          end_time: datetime | None = None) -> None:
        """Record a step's outcome ('success', 'failed', 'skipped'); a None screen_name,
        error or screenshot leaves the stored value."""
        await self.write_records(lambda records: records.finish_step(
            step_id, status, screen_name=screen_name, error=error, screenshot=screenshot,
            end_time=end_time))

    async def write_records(self, job: Callable[[ExecutionRecords], Any]) -> Any:
        """Run ``job(records)`` (plain code, no awaits) as one all-or-none job of the single
        writer: many record changes for one thread hop and one commit."""
        return await self._atomic(lambda conn: job(ExecutionRecords(conn)))

    async def get_execution(self, key: str) -> dict | None:
        """Execution ``key`` as a dict (``key`` = execution_key) with its ``steps`` in order,
        or None."""
        row = await self._one("SELECT * FROM executions WHERE execution_key = ?", (key,))
        if row is None:
            return None
        execution = _execution_dict(row)
        steps = await self._all("SELECT * FROM execution_steps WHERE execution_id = ?"
                                " ORDER BY step_id", (row["execution_id"],))
        execution["steps"] = [dict(s) for s in steps]
        return execution

    async def execution_statuses(self, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """(status, error_message) of each execution in ``keys`` that exists, in one query
        per 500 keys (the scheduler polls every running job's record on each tick)."""
        out: dict[str, tuple[str, str | None]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for r in await self._all(
                    "SELECT execution_key, status, error_message FROM executions"
                    f" WHERE execution_key IN ({','.join('?' * len(chunk))})", chunk):
                out[r[0]] = (r[1], r[2])
        return out

    async def unfinished_executions(self, serials: list[str]) -> list[dict]:
        """Executions on ``serials`` that have not ended (pending, running, paused), with
        their ``plan`` opened (None when there is none or it cannot be opened)."""
        if not serials:
            return []
        marks = ",".join("?" * len(serials))
        rows = [_execution_dict(r, with_plan=True) for r in await self._all(
            "SELECT * FROM executions WHERE status IN ('pending', 'running', 'paused')"
            f" AND serial IN ({marks}) ORDER BY execution_id", serials)]
        for row in rows:
            row["plan"] = self._open_plan(row["key"], row.get("plan"))
        return rows

    async def list_executions(self, run_id: str | None = None,
                              limit: int | None = None) -> list[dict]:
        """Executions (without steps), oldest first; only ``run_id``'s when given."""
        sql, args = "SELECT * FROM executions", []
        if run_id is not None:
            sql += " WHERE run_id = ?"
            args.append(run_id)
        sql += " ORDER BY execution_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_execution_dict(r) for r in await self._all(sql, args)]

    async def recent_executions(self, limit: int = 50) -> list[dict]:
        """The latest ``limit`` executions (without steps), newest first."""
        return (await self.execution_page(ExecutionQuery(limit=limit)))[0]

    async def execution_page(self, query: ExecutionQuery) -> tuple[list[dict], str | None]:
        """One page of the execution history (actors.store.execution_history): the rows
        ``query`` selects (without steps), newest first (by start time), and the ``before``
        of the next page (None: this is the last). ValidationError naming ``before`` when there is no
        such execution (or, for a tenant's query, not one of its phones')."""
        serials = None
        if query.clients is not None:
            serials = [r[0] for r in await self._all(*tenant_serials_sql(query.clients))]
        before = None
        if query.before is not None:
            found = await self._one(*before_sql(query, serials))
            if found is None:
                raise ValidationError("before", f"no execution {query.before!r}")
            before = (found[0], found[1])
        rows = [_execution_dict(r) for r in await self._all(
            *history_sql(query, before, serials))]
        more = len(rows) > query.limit
        rows = rows[:query.limit]
        return rows, (rows[-1]["key"] if more and rows else None)

    # -- recovery attempts (spec 12.3.4, 12.3.5; actors.coordinator.ai.recovery) --------------------------

    async def add_recovery_attempt(self, **fields: Any) -> int:
        """Record an attempt that starts now (columns of recovery_attempts); its id."""
        bad = set(fields) - set(_RECOVERY_FIELDS)
        if bad:
            raise ValidationError("recovery attempt", f"unknown fields {sorted(bad)}")
        fields.setdefault("start_time", datetime.now(timezone.utc))
        values = [utc_text(v) if isinstance(v, datetime) else v for v in fields.values()]
        row = await self._write(
            f"INSERT INTO recovery_attempts ({', '.join(fields)}) VALUES"
            f" ({', '.join('?' * len(fields))}) RETURNING recovery_id", values)
        return row[0]

    async def update_recovery_attempt(self, recovery_id: int, **fields: Any) -> None:
        """Set columns of attempt ``recovery_id``; a final status sets end_time."""
        bad = set(fields) - set(_RECOVERY_FIELDS)
        if bad:
            raise ValidationError(f"recovery attempt {recovery_id}", f"unknown fields {sorted(bad)}")
        if fields.get("status") in ("succeeded", "failed") and "end_time" not in fields:
            fields["end_time"] = datetime.now(timezone.utc)
        values = [utc_text(v) if isinstance(v, datetime) else v for v in fields.values()]
        sets = ", ".join(f"{name} = ?" for name in fields)
        await self._write(f"UPDATE recovery_attempts SET {sets} WHERE recovery_id = ?",
                          (*values, recovery_id))

    async def recovery_attempts(self, *, execution_key: str | None = None,
                                sequence: str | None = None, serial: str | None = None,
                                status: str | None = None, limit: int = 100) -> list[dict]:
        """Attempts, newest first, filtered by any of the given columns."""
        where, args = [], []
        for name, value in (("execution_key", execution_key), ("sequence", sequence),
                            ("serial", serial), ("status", status)):
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value)
        sql = "SELECT * FROM recovery_attempts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY recovery_id DESC LIMIT ?"
        return [dict(r) for r in await self._all(sql, (*args, limit))]

    async def recovery_stats(self, by: str = "sequence") -> list[dict]:
        """Success rates grouped by ``by`` (sequence, screen, serial, failure_reason):
        attempts, succeeded, failed, success_rate, mean_steps (finished attempts only)."""
        if by not in ("sequence", "screen", "serial", "failure_reason"):
            raise ValidationError("by", f"{by!r} is not one of sequence, screen, serial, "
                                        "failure_reason")
        rows = await self._all(
            f"SELECT {by} AS key, COUNT(*) AS attempts,"
            " COUNT(*) FILTER (WHERE status = 'succeeded') AS succeeded,"
            " COUNT(*) FILTER (WHERE status = 'failed') AS failed,"
            " AVG(steps) AS mean_steps FROM recovery_attempts"
            " WHERE status IN ('succeeded', 'failed')"
            f" GROUP BY {by} ORDER BY attempts DESC, key")
        return [{by: r["key"], "attempts": r["attempts"], "succeeded": r["succeeded"],
                 "failed": r["failed"], "success_rate": r["succeeded"] / r["attempts"],
                 "mean_steps": r["mean_steps"]} for r in rows]

    # -- stats rollups (issue 19.2; the SQL and the aggregation rules: actors.store.stats) --

    async def stats_series(self, query: "StatsQuery") -> dict:
        """GET /api/stats's series from the one-minute rollups (``query.clients``: a
        tenant's clients only)."""
        from actors.store.stats import series
        return await series(self, query)

    async def top_failures(self, query: "FailureQuery") -> dict:
        """GET /api/stats/top-failures: the sequences and screens failing most since."""
        from actors.store.stats import top_failures
        return await top_failures(self, query)

    # -- sequence and workflow definitions (spec 12.2) --------------------------------------
    # ``clients`` (a set of client ids) narrows every lookup to the shared library (client_id
    # NULL) and those clients' own definitions, a client's own before a shared one of the
    # same name: a name is unique within its client, not across the farm. None: every row
    # (a super user), the newest of a name first.

    async def sequence_definitions(self, include_retired: bool = False,
                                   clients: Iterable[int] | None = None) -> list[dict]:
        """Every sequence definition (active ones unless ``include_retired``), by name."""
        where, args = _definition_filter("s", clients, include_retired)
        return [dict(r) for r in await self._all(
            "SELECT s.*, c.name AS client FROM sequence_definitions s LEFT JOIN clients c"
            f" ON c.client_id = s.client_id{where} ORDER BY s.name, s.sequence_def_id", args)]

    async def sequence_definition(self, name: str,
                                  clients: Iterable[int] | None = None) -> dict | None:
        """The active sequence definition called ``name``, or None."""
        where, args = _definition_filter("s", clients, False)
        row = await self._one(
            "SELECT s.*, c.name AS client FROM sequence_definitions s LEFT JOIN clients c"
            f" ON c.client_id = s.client_id{where} AND s.name = ?"
            " ORDER BY s.client_id IS NULL, s.sequence_def_id DESC LIMIT 1", (*args, name))
        return None if row is None else dict(row)

    async def save_sequence_definition(self, name: str, *, description: str | None = None,
                                       json_path: str | None = None,
                                       recovery_prompt: str | None = None,
                                       client: str | int | None = None,
                                       clients: Iterable[int] | None = None) -> dict:
        """Create the active definition ``name``, or update it (its version goes up by one);
        returns the stored row. ``clients``: as for `sequence_definition` (which row is
        updated)."""
        client_id = await self._client_id(client)
        found = await self._definition_of("sequence_definitions", name, client_id, clients)
        if found is None:
            def_id = (await self._write(
                "INSERT INTO sequence_definitions (name, description, json_path,"
                " recovery_prompt, client_id) VALUES (?, ?, ?, ?, ?) RETURNING sequence_def_id",
                (name, description, json_path, recovery_prompt, client_id)))[0]
        else:
            def_id = found["sequence_def_id"]
            await self._write(
                "UPDATE sequence_definitions SET description = ?, json_path = ?,"
                " recovery_prompt = ?, client_id = ?, version = version + 1, updated_at = ?"
                " WHERE sequence_def_id = ?", (description, json_path, recovery_prompt,
                                               client_id, utc_text(), def_id))
        row = await self._one(
            "SELECT s.*, c.name AS client FROM sequence_definitions s LEFT JOIN clients c"
            " ON c.client_id = s.client_id WHERE s.sequence_def_id = ?", (def_id,))
        return dict(row)  # type: ignore[arg-type]

    async def _definition_of(self, table: str, name: str, client_id: int | None,
                             clients: Iterable[int] | None) -> dict | None:
        """The active definition a save for ``client_id`` replaces: with ``clients``, as
        the lookups choose (the caller's own, else the shared one); without, exactly that
        client's (None: the shared library's), so a save for one client never takes
        another client's row of the same name."""
        if clients is not None:
            lookup = (self.sequence_definition if table == "sequence_definitions"
                      else self.workflow_definition)
            return await lookup(name, clients)
        return await self.own_definition(table, name, client_id)

    async def own_definition(self, table: str, name: str,
                             client_id: int | None) -> dict | None:
        """The active row of ``table`` (sequence_definitions, workflow_definitions) named
        ``name`` of exactly client ``client_id`` (None: the shared library's), or None."""
        row = await self._one(f"SELECT * FROM {table} WHERE name = ? AND status = 'active'"
                              " AND COALESCE(client_id, 0) = COALESCE(?, 0)"
                              " ORDER BY 1 DESC LIMIT 1", (name, client_id))
        return None if row is None else dict(row)

    async def retire_sequence_definition(self, name: str,
                                         clients: Iterable[int] | None = None) -> dict | None:
        """Soft delete (status retired); the retired row, or None when there is none."""
        found = await self.sequence_definition(name, clients)
        if found is None:
            return None
        await self._write("UPDATE sequence_definitions SET status = 'retired', updated_at = ?"
                          " WHERE sequence_def_id = ?", (utc_text(), found["sequence_def_id"]))
        row = await self._one("SELECT * FROM sequence_definitions WHERE sequence_def_id = ?",
                              (found["sequence_def_id"],))
        return dict(row)

    async def workflow_definitions(self, include_retired: bool = False,
                                   clients: Iterable[int] | None = None) -> list[dict]:
        """Every workflow definition (see `workflow_definition`), by name."""
        where, args = _definition_filter("w", clients, include_retired)
        rows = await self._all(f"SELECT workflow_def_id FROM workflow_definitions w{where}"
                               " ORDER BY name, workflow_def_id", args)
        return [await self._workflow_by_id(r[0]) for r in rows]  # type: ignore[misc]

    async def workflow_definition(self, name: str,
                                  clients: Iterable[int] | None = None) -> dict | None:
        """The active workflow ``name``: its row (``is_template`` as bool, ``client`` name)
        and ``sequences``: [{position, sequence, sequence_def_id, depends_on (positions),
        retry (dict)}] in execution order; None when there is none."""
        where, args = _definition_filter("w", clients, False)
        row = await self._one(f"SELECT workflow_def_id FROM workflow_definitions w{where}"
                              " AND name = ? ORDER BY client_id IS NULL, workflow_def_id DESC"
                              " LIMIT 1", (*args, name))
        return None if row is None else await self._workflow_by_id(row[0])

    async def workflow_definition_by_id(self, workflow_def_id: int) -> dict | None:
        """Like `workflow_definition`, by id, retired ones too."""
        return await self._workflow_by_id(workflow_def_id)

    async def _workflow_by_id(self, workflow_def_id: int) -> dict | None:
        row = await self._one(
            "SELECT w.*, c.name AS client FROM workflow_definitions w LEFT JOIN clients c"
            " ON c.client_id = w.client_id WHERE w.workflow_def_id = ?", (workflow_def_id,))
        if row is None:
            return None
        out = dict(row)
        out["is_template"] = bool(out["is_template"])
        out["sequences"] = [
            {"position": r["execution_order"], "sequence": r["name"],
             "sequence_def_id": r["sequence_def_id"],
             "depends_on": orjson.loads(r["conditional_execution"] or "{}").get("depends_on", []),
             "retry": orjson.loads(r["retry_policy"] or "{}")}
            for r in await self._all(
                "SELECT ws.*, s.name FROM workflow_sequences ws JOIN sequence_definitions s"
                " ON s.sequence_def_id = ws.sequence_def_id WHERE ws.workflow_def_id = ?"
                " ORDER BY ws.execution_order", (workflow_def_id,))]
        return out

    async def save_workflow_definition(self, name: str, sequences: list[dict], *,
                                       description: str | None = None,
                                       is_template: bool = False,
                                       client: str | int | None = None,
                                       clients: Iterable[int] | None = None) -> dict:
        """Create the active workflow ``name`` or replace its definition, in one transaction.
        ``sequences``: [{sequence_def_id, depends_on (earlier positions), retry (dict)}] in
        execution order (checked by the caller, actors.coordinator.scheduling.workflows). Returns the stored form.
        ``clients``: as for `workflow_definition` (which row is replaced)."""
        client_id = await self._client_id(client)
        found = await self._definition_of("workflow_definitions", name, client_id, clients)

        def job(conn: sqlite3.Connection) -> int:
            if found is None:
                wid = conn.execute(
                    "INSERT INTO workflow_definitions (name, description, client_id,"
                    " is_template) VALUES (?, ?, ?, ?) RETURNING workflow_def_id",
                    (name, description, client_id, bool(is_template))).fetchone()[0]
            else:
                wid = found["workflow_def_id"]
                conn.execute(
                    "UPDATE workflow_definitions SET description = ?, client_id = ?,"
                    " is_template = ?, updated_at = ? WHERE workflow_def_id = ?",
                    (description, client_id, bool(is_template), utc_text(), wid))
                conn.execute("DELETE FROM workflow_sequences WHERE workflow_def_id = ?",
                             (wid,))
            for position, entry in enumerate(sequences):
                conn.execute(
                    "INSERT INTO workflow_sequences (workflow_def_id, sequence_def_id,"
                    " execution_order, conditional_execution, retry_policy)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (wid, entry["sequence_def_id"], position,
                     orjson.dumps({"depends_on": list(entry.get("depends_on") or [])}).decode(),
                     orjson.dumps(entry.get("retry") or {}).decode()))
            return wid

        return await self._workflow_by_id(await self._atomic(job))  # type: ignore[return-value]

    async def retire_workflow_definition(self, name: str,
                                         clients: Iterable[int] | None = None) -> dict | None:
        """Soft delete (status retired); the retired definition, or None."""
        found = await self.workflow_definition(name, clients)
        if found is None:
            return None
        await self._write("UPDATE workflow_definitions SET status = 'retired', updated_at = ?"
                          " WHERE workflow_def_id = ?", (utc_text(), found["workflow_def_id"]))
        return await self._workflow_by_id(found["workflow_def_id"])

    # -- workflow and sequence executions (spec 7.5.9, 12.4) ---------------------------------

    async def create_workflow_execution(self, workflow_def_id: int, target: str, *,
                                        schedule_type: str = "immediate",
                                        when: datetime | None = None,
                                        client_ids: Iterable[int] | None = None) -> int:
        """A workflow execution (status pending) and its scheduled_workflows entry (which
        keeps the target); returns the workflow_execution_id. ``client_ids``: the clients
        it belongs to (None: a super user's)."""
        owners = None if client_ids is None else orjson.dumps(sorted(set(client_ids))).decode()
        def job(conn: sqlite3.Connection) -> int:
            swid = conn.execute(
                "INSERT INTO scheduled_workflows (workflow_def_id, schedule_type,"
                " scheduled_time, target_selector, status) VALUES (?, ?, ?, ?, 'fired')"
                " RETURNING scheduled_workflow_id",
                (workflow_def_id, schedule_type, utc_text(when), target)).fetchone()[0]
            return conn.execute(
                "INSERT INTO workflow_executions (scheduled_workflow_id, workflow_def_id,"
                " start_time, status, client_ids) VALUES (?, ?, ?, 'pending', ?)"
                " RETURNING workflow_execution_id",
                (swid, workflow_def_id, utc_text(when), owners)).fetchone()[0]

        return await self._atomic(job)

    async def update_workflow_execution(self, workflow_execution_id: int, **fields: Any) -> None:
        """Set status, error_message, start_time or end_time (a final status without an
        end_time sets it to now)."""
        unknown = set(fields) - {"status", "error_message", "start_time", "end_time"}
        if unknown:
            raise ValidationError(f"workflow execution {workflow_execution_id}",
                                  f"unknown fields {sorted(unknown)}")
        if fields.get("status") in _FINAL_STATUSES and "end_time" not in fields:
            fields["end_time"] = datetime.now(timezone.utc)
        values = [utc_text(v) if isinstance(v, datetime) else v for v in fields.values()]
        sets = ", ".join(f"{name} = ?" for name in fields)
        await self._write(f"UPDATE workflow_executions SET {sets}"
                          " WHERE workflow_execution_id = ?", (*values, workflow_execution_id))

    async def workflow_executions(self, statuses: Iterable[str] | None = None,
                                  limit: int = 50,
                                  clients: Iterable[int] | None = None) -> list[dict]:
        """Workflow executions, newest first (only those with one of ``statuses``): the row
        with ``workflow`` (name), ``target`` and ``client_ids`` (a list, None: a super
        user's). With ``clients``, only executions belonging to some of those clients and
        to no other (never a super user's)."""
        sql = ("SELECT x.*, w.name AS workflow, sw.target_selector AS target"
               " FROM workflow_executions x"
               " LEFT JOIN workflow_definitions w ON w.workflow_def_id = x.workflow_def_id"
               " LEFT JOIN scheduled_workflows sw"
               " ON sw.scheduled_workflow_id = x.scheduled_workflow_id")
        where: list[str] = []
        args: list[Any] = []
        if statuses is not None:
            statuses = list(statuses)
            where.append(_in_list("x.status", statuses))
            args += statuses
        if clients is not None:
            ids = sorted(set(clients))
            where.append("x.client_ids IS NOT NULL AND x.client_ids <> '[]' AND NOT EXISTS"
                         f" (SELECT 1 FROM {self._json_elements('x.client_ids')}"
                         f" WHERE {_in_list('CAST(j.value AS INTEGER)', ids, negate=True)})")
            args += ids
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_with_owners(dict(r)) for r in await self._all(
            sql + " ORDER BY x.workflow_execution_id DESC LIMIT ?", (*args, limit))]

    async def workflow_execution(self, workflow_execution_id: int) -> dict | None:
        """One workflow execution (as `workflow_executions`) with its ``sequences``: the
        sequence_executions rows with ``sequence`` (name) and ``serial``, in order."""
        rows = await self._all(
            "SELECT x.*, w.name AS workflow, sw.target_selector AS target"
            " FROM workflow_executions x"
            " LEFT JOIN workflow_definitions w ON w.workflow_def_id = x.workflow_def_id"
            " LEFT JOIN scheduled_workflows sw"
            " ON sw.scheduled_workflow_id = x.scheduled_workflow_id"
            " WHERE x.workflow_execution_id = ?", (workflow_execution_id,))
        if not rows:
            return None
        out = _with_owners(dict(rows[0]))
        out["sequences"] = [dict(r) for r in await self._all(
            "SELECT se.*, s.name AS sequence, p.serial_number AS serial"
            " FROM sequence_executions se"
            " LEFT JOIN sequence_definitions s ON s.sequence_def_id = se.sequence_def_id"
            " LEFT JOIN phones p ON p.phone_id = se.phone_id"
            " WHERE se.workflow_execution_id = ?"
            " ORDER BY se.execution_order, p.serial_number, se.account_id",
            (workflow_execution_id,))]
        return out

    async def save_sequence_execution(self, workflow_execution_id: int, execution_order: int,
                                      sequence_def_id: int | None, serial: str,
                                      account_id: int | None, **fields: Any) -> int:
        """Create or update the sequence execution of one workflow sequence on one target
        (phone ``serial``, registered if new, and account): status, start_time, end_time,
        error_message. Returns its sequence_execution_id."""
        phone_id = await self._phone_id(serial) or await self.upsert_phone(serial)
        values = {k: utc_text(v) if isinstance(v, datetime) else v for k, v in fields.items()
                  if k in ("status", "start_time", "end_time", "error_message")}
        row = await self._one(
            "SELECT sequence_execution_id FROM sequence_executions WHERE"
            " workflow_execution_id = ? AND execution_order = ? AND phone_id = ?"
            " AND COALESCE(account_id, 0) = COALESCE(?, 0)",
            (workflow_execution_id, execution_order, phone_id, account_id))
        if row is None:
            names = ["workflow_execution_id", "execution_order", "sequence_def_id", "phone_id",
                     "account_id", *values]
            found = await self._write(
                f"INSERT INTO sequence_executions ({', '.join(names)}) VALUES"
                f" ({', '.join('?' * len(names))}) RETURNING sequence_execution_id",
                (workflow_execution_id, execution_order, sequence_def_id, phone_id, account_id,
                 *values.values()))
            return found[0]
        if values:
            await self._write(
                f"UPDATE sequence_executions SET {', '.join(f'{k} = ?' for k in values)}"
                " WHERE sequence_execution_id = ?", (*values.values(), row[0]))
        return row[0]

    # -- the scheduler's state and record (actors.coordinator.scheduling.schedules) -------------------------------

    # -- groups (spec 15.4-15.6) -----------------------------------------------------------

    async def group_book(self, client_id: int | None = None) -> "GroupBook":
        """The groups and rules of client ``client_id`` as a `GroupBook` (None: the farm's
        shared book, the one super users work in); the spec's built-in ``active``/``warming``
        set when that book has nothing stored yet. What is stored was checked when it was
        saved."""
        from sequences.groups import Group, GroupBook, Rule

        rows = await self._all("SELECT g.*, p.name AS parent_name FROM groups g"
                               " LEFT JOIN groups p ON p.group_id = g.parent_id"
                               " WHERE COALESCE(g.client_id, 0) = COALESCE(?, 0) ORDER BY g.group_id", (client_id,))
        if not rows:
            return GroupBook.with_defaults()
        book = GroupBook()
        names = {r["group_id"]: r["name"] for r in rows}
        for r in rows:
            book.groups[r["name"]] = Group(r["name"], r["member_kind"], r["type"], [],
                                           r["filter"], r["parent_name"], r["description"])
        for m in await self._all("SELECT m.group_id, m.entity_id FROM group_memberships m"
                                 " JOIN groups g ON g.group_id = m.group_id"
                                 " WHERE COALESCE(g.client_id, 0) = COALESCE(?, 0) ORDER BY m.group_id, m.position",
                                 (client_id,)):
            book.groups[names[m["group_id"]]].members.append(m["entity_id"])
        sets: dict[str, list[str]] = {}
        for rel in await self._all("SELECT r.* FROM group_relationships r"
                                   " JOIN groups g ON g.group_id = r.group_id_1"
                                   " WHERE COALESCE(g.client_id, 0) = COALESCE(?, 0) ORDER BY r.relationship_id",
                                   (client_id,)):
            if rel["relationship_type"] == "exclusive":
                name = orjson.loads(rel["parameters"] or "{}").get("set", "")
                sets.setdefault(name, []).append(names[rel["group_id_1"]])
            else:
                book.rules.append(Rule(rel["relationship_type"],
                                       (names[rel["group_id_1"]], names[rel["group_id_2"]])))
        book.rules[:0] = [Rule("exclusive", tuple(groups), name) for name, groups in sets.items()]
        return book

    async def save_group_book(self, book: "GroupBook", client_id: int | None = None) -> None:
        """Replace the stored groups of client ``client_id`` (None: the shared book) by
        ``book`` (checked by `GroupBook` as it was changed), in one transaction: readers see
        the old groups or the new, never a mix. Other clients' groups are not touched."""
        def job(conn: sqlite3.Connection) -> None:
            mine = "SELECT group_id FROM groups WHERE COALESCE(client_id, 0) = COALESCE(?, 0)"
            conn.execute(f"DELETE FROM group_relationships WHERE group_id_1 IN ({mine})"
                         f" OR group_id_2 IN ({mine})", (client_id, client_id))
            conn.execute(f"DELETE FROM group_memberships WHERE group_id IN ({mine})",
                         (client_id,))
            conn.execute("DELETE FROM groups WHERE COALESCE(client_id, 0) = COALESCE(?, 0)", (client_id,))
            ids: dict[str, int] = {}
            for group in book.groups.values():
                ids[group.name] = conn.execute(
                    "INSERT INTO groups (name, description, type, member_kind, filter,"
                    " client_id) VALUES (?, ?, ?, ?, ?, ?) RETURNING group_id",
                    (group.name, group.description, group.type, group.kind,
                     group.filter, client_id)).fetchone()[0]
                for position, member in enumerate(group.members):
                    conn.execute(
                        "INSERT INTO group_memberships (group_id, entity_type, entity_id,"
                        " position) VALUES (?, ?, ?, ?)", (ids[group.name], group.kind, member,
                                                          position))
            for group in book.groups.values():  # a parent may be defined after its child
                if group.parent:
                    conn.execute("UPDATE groups SET parent_id = ? WHERE group_id = ?",
                                 (ids[group.parent], ids[group.name]))
            for rule in book.rules:
                if rule.kind == "exclusive":
                    for name in rule.groups:
                        conn.execute(
                            "INSERT INTO group_relationships (relationship_type, group_id_1,"
                            " parameters) VALUES ('exclusive', ?, ?)",
                            (ids[name], orjson.dumps({"set": rule.name}).decode()))
                else:
                    conn.execute(
                        "INSERT INTO group_relationships (relationship_type, group_id_1,"
                        " group_id_2) VALUES (?, ?, ?)", (rule.kind, ids[rule.groups[0]],
                                                          ids[rule.groups[1]]))

        await self._atomic(job)

    async def load_scheduler_state(self) -> str | None:
        """The scheduler's saved state (JSON text), or None if it never saved."""
        row = await self._one("SELECT state FROM scheduler_state WHERE state_id = 1")
        return None if row is None else row[0]

    async def save_scheduler_state(self, state: str) -> None:
        await self._write(
            "INSERT INTO scheduler_state (state_id, state, updated_at) VALUES (1, ?, ?)"
            " ON CONFLICT (state_id) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at", (state, utc_text()))

    async def load_scheduler_rows(self) -> dict[str, str]:
        """The scheduler's saved rows (key -> JSON text; see schema v9)."""
        return {r[0]: r[1] for r in await self._all("SELECT key, state FROM scheduler_rows")}

    async def save_scheduler_rows(self, rows: dict[str, str], deletes: list[str],
                                  events: list[dict], *, drop_whole_state: bool = False) -> None:
        """Write the scheduler's changed rows, delete the gone ones and append its events,
        all or none (a crash never leaves the rows half saved); ``drop_whole_state`` removes
        the v3 whole-state row once its content lives in rows."""
        now = utc_text()
        upserts = [(k, v, now) for k, v in rows.items()]
        gone = [(k,) for k in deletes]
        events_rows = _schedule_event_rows(events)

        def job(conn: Any) -> None:
            if upserts:
                conn.executemany(
                    "INSERT INTO scheduler_rows (key, state, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET state = excluded.state,"
                    " updated_at = excluded.updated_at", upserts)
            if gone:
                conn.executemany("DELETE FROM scheduler_rows WHERE key = ?", gone)
            if events_rows:
                conn.executemany(_INSERT_SCHEDULE_EVENT, events_rows)
            if drop_whole_state:
                conn.execute("DELETE FROM scheduler_state")

        await self._atomic(job)

    async def add_schedule_events(self, events: list[dict]) -> None:
        """Append scheduler events: dicts of at (datetime), schedule_id, job_id, serial,
        kind, reason, detail (a dict, stored as JSON)."""
        if not events:
            return
        await self._write_many(_INSERT_SCHEDULE_EVENT, _schedule_event_rows(events))

    async def schedule_events(self, schedule_id: str | None = None,
                              limit: int = 500) -> list[dict]:
        """Scheduler events, oldest first (the latest ``limit``); only ``schedule_id``'s
        when given."""
        where, args = "", []
        if schedule_id is not None:
            where, args = " WHERE schedule_id = ?", [schedule_id]
        rows = await self._all(f"SELECT * FROM schedule_events{where} ORDER BY id DESC LIMIT ?",
                               (*args, limit))
        return [{**dict(r), "detail": orjson.loads(r["detail"] or "{}")} for r in reversed(rows)]

    # -- seeding upserts -----------------------------------------------------------------

    async def upsert_client(self, name: str, *, status: str | None = "active",
                            contact_email: str | None = None,
                            contact_discord: str | None = None) -> int:
        """Create or update the client called ``name``; returns its client_id."""
        row = await self._write(
            "INSERT INTO clients (name, status, contact_email, contact_discord)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET status = excluded.status,"
            " contact_email = excluded.contact_email,"
            " contact_discord = excluded.contact_discord, updated_at = CURRENT_TIMESTAMP"
            " RETURNING client_id", (name, status, contact_email, contact_discord))
        return row[0]

    async def upsert_agent(self, name: str, *, address: str | None = None,
                           status: str | None = None) -> int:
        """Create or update the node called ``name`` in the agents table; returns agent_id."""
        row = await self._write(
            "INSERT INTO agents (name, address, status, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET address = COALESCE(excluded.address, agents.address),"
            " status = COALESCE(excluded.status, agents.status), last_seen = excluded.last_seen"
            " RETURNING agent_id", (name, address, status, utc_text()))
        return row[0]

    async def upsert_profile(self, profile_id: int | None = None, *,
                             client: str | int | None = None, **fields: Any) -> int:
        """Update profile ``profile_id`` (only the given fields), or create one when it is
        None; fields are spec 7.5.1's profile columns (``profile_password`` is sealed; ""
        removes it). Returns the profile_id."""
        unknown = set(fields) - set(PROFILE_FIELDS)
        if unknown:
            raise ValidationError("profile", f"unknown fields {sorted(unknown)}")
        client_id = await self._client_id(client)
        if client is not None:
            fields["client_id"] = client_id
        change, sealed, org = await self._sealed_password(
            fields.pop("profile_password", None), _PROFILE_ORG_SQL,
            (fields.get("client_id"), profile_id))
        if change:
            fields.update(profile_password=None, profile_password_sealed=sealed,
                          password_org=org)
        if profile_id is None:
            names = ", ".join(fields) or "client_id"
            marks = ", ".join("?" for _ in fields) or "NULL"
            row = await self._write(f"INSERT INTO profiles ({names}) VALUES ({marks})"
                                    " RETURNING profile_id", list(fields.values()))
            return row[0]
        if fields:
            sets = ", ".join(f"{n} = ?" for n in fields)
            row = await self._write(f"UPDATE profiles SET {sets} WHERE profile_id = ?"
                                    " RETURNING profile_id", (*fields.values(), profile_id))
            if row is None:
                raise ValidationError(f"profile {profile_id}", "no such profile")
        return profile_id

    async def upsert_phone(self, serial: str, *, client: str | int | None = None,
                           model: str | None = None, phone_number: str | None = None,
                           status: str | None = None, agent: str | None = None) -> int:
        """Create or update the phone ``serial``; None leaves a stored value. ``client`` is a
        client name or id, ``agent`` a node name (created if new). Returns the phone_id."""
        client_id = await self._client_id(client)
        agent_id = await self.upsert_agent(agent) if agent else None
        row = await self._write(
            "INSERT INTO phones (serial_number, client_id, model, phone_number, status,"
            " agent_id) VALUES (?, ?, ?, ?, COALESCE(?, 'active'), ?)"
            " ON CONFLICT (serial_number) DO UPDATE SET"
            " client_id = COALESCE(excluded.client_id, phones.client_id),"
            " model = COALESCE(excluded.model, phones.model),"
            " phone_number = COALESCE(excluded.phone_number, phones.phone_number),"
            " status = COALESCE(?, phones.status),"
            " agent_id = COALESCE(excluded.agent_id, phones.agent_id)"
            " RETURNING phone_id",
            (serial, client_id, model, phone_number, status, agent_id, status))
        return row[0]

    async def upsert_account(self, serial: str, platform: str, account_number: str, *,
                             username: str | None = None, password: str | None = None,
                             profile_id: int | None = None, status: str | None = None,
                             bio: str | None = None) -> int:
        """Create or update account (platform, account_number) on phone ``serial`` (which
        must exist); None leaves a stored value, ``password`` is sealed ("" removes it: the
        profile's is used). Returns the account_id."""
        phone_id = await self._phone_id(serial)
        if phone_id is None:
            raise ValidationError(f"phone {serial}", "not in the farm database")
        change, sealed, org = await self._sealed_password(
            password, _ACCOUNT_ORG_SQL, (profile_id, platform, account_number, phone_id,
                                         phone_id))
        row = await self._write(
            "INSERT INTO accounts (platform, account_number, phone_id, username,"
            " password_sealed, password_org, profile_id, status, bio)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, COALESCE(?, 'warming'), ?)"
            " ON CONFLICT (platform, account_number, phone_id) DO UPDATE SET"
            " username = COALESCE(excluded.username, accounts.username),"
            " password = CASE WHEN ? THEN NULL ELSE accounts.password END,"
            " password_sealed = CASE WHEN ? THEN excluded.password_sealed"
            "  ELSE accounts.password_sealed END,"
            " password_org = CASE WHEN ? THEN excluded.password_org"
            "  ELSE accounts.password_org END,"
            " profile_id = COALESCE(excluded.profile_id, accounts.profile_id),"
            " status = COALESCE(?, accounts.status), bio = COALESCE(excluded.bio, accounts.bio)"
            " RETURNING account_id",
            (platform, account_number, phone_id, username, sealed, org, profile_id, status,
             bio, change, change, change, status))
        return row[0]

    async def set_custom(self, name: str, value: str, client: str | int | None = None) -> None:
        """Set custom variable ``name`` for every client (client None) or for one client."""
        client_id = await self._client_id(client)

        # Update, else insert: an upsert's conflict target must repeat its unique index's
        # expression as created, IFNULL(client_id, 0) on SQLite and COALESCE(client_id, 0)
        # on PostgreSQL (which has no IFNULL). The single writer runs one job at a time.
        def job(conn: Any) -> None:
            if not conn.execute("UPDATE custom_variables SET value = ? WHERE name = ?"
                                " AND COALESCE(client_id, 0) = COALESCE(?, 0)"
                                " AND account_id IS NULL",
                                (value, name, client_id)).rowcount:
                conn.execute("INSERT INTO custom_variables (name, value, client_id)"
                             " VALUES (?, ?, ?)", (name, value, client_id))

        await self._atomic(job)

    async def set_hashtag_set(self, name: str, tags: list[str],
                              client: str | int | None = None) -> None:
        client_id = await self._client_id(client)
        tags_json = orjson.dumps(list(tags)).decode()

        # Names are unique per client (v23): update, else insert, as set_custom does.
        def job(conn: Any) -> None:
            if not conn.execute("UPDATE hashtag_sets SET tags = ? WHERE name = ?"
                                " AND COALESCE(client_id, 0) = COALESCE(?, 0)",
                                (tags_json, name, client_id)).rowcount:
                conn.execute("INSERT INTO hashtag_sets (name, client_id, tags)"
                             " VALUES (?, ?, ?)", (name, client_id, tags_json))

        await self._atomic(job)

    async def set_caption_template(self, name: str, template: str,
                                   client: str | int | None = None) -> None:
        """Store caption template ``name``; it is checked by the variable parser first."""
        from sequences.variables import parse  # the parser names the offset of any mistake
        parse(template)
        client_id = await self._client_id(client)

        def job(conn: Any) -> None:  # names are unique per client (v23)
            if not conn.execute("UPDATE caption_templates SET template = ? WHERE name = ?"
                                " AND COALESCE(client_id, 0) = COALESCE(?, 0)",
                                (template, name, client_id)).rowcount:
                conn.execute("INSERT INTO caption_templates (name, client_id, template)"
                             " VALUES (?, ?, ?)", (name, client_id, template))

        await self._atomic(job)

    # -- reads for the others --------------------------------------------------------------

    async def phone_rows(self) -> list[dict]:
        """Every phone: serial, phone_id, phone_number, client (name), client_id, model,
        status, agent (node name), profile (dict of its first account's profile, or None)."""
        rows = await self._all(
            "SELECT p.phone_id, p.serial_number AS serial, p.phone_number, p.model, p.status,"
            " p.client_id, c.name AS client, a.name AS agent FROM phones p"
            " LEFT JOIN clients c ON c.client_id = p.client_id"
            " LEFT JOIN agents a ON a.agent_id = p.agent_id ORDER BY p.serial_number")
        profiles = await self._phone_profiles()
        return [{**dict(r), "profile": profiles.get(r["phone_id"])} for r in rows]

    async def _phone_profiles(self) -> dict[int, dict]:
        # The profile of the phone's lowest-numbered account that has one.
        rows = await self._all(
            "SELECT a.phone_id, pr.* FROM accounts a JOIN profiles pr"
            f" ON pr.profile_id = a.profile_id WHERE (a.status IS NULL OR a.status <> '{RETIRED}')"
            " ORDER BY a.phone_id, a.account_id DESC")
        return {r["phone_id"]: _profile_dict(r) for r in rows}

    async def account_rows(self, serial: str | None = None, *,
                           include_retired: bool = False) -> list[dict]:
        """Every account in use (or those on phone ``serial``): account_id, platform,
        account_number, username, password_set (the account has a password of its own; never
        the password: a run types the profile's when it has none), bio, status, serial,
        profile (dict or None, with profile_password_set). A retired (deleted) account is left out
        unless ``include_retired``: whatever chooses an account must never see one; only
        history (which account an execution ran as) and the registry listing ask for them."""
        sql = ("SELECT a.account_id, a.platform, a.account_number, a.username,"
               " a.password AS account_password, a.password_sealed AS account_sealed,"
               " a.bio, a.status, ph.serial_number AS serial, pr.*"
               " FROM accounts a LEFT JOIN phones ph ON ph.phone_id = a.phone_id"
               " LEFT JOIN profiles pr ON pr.profile_id = a.profile_id WHERE 1 = 1")
        args: tuple = ()
        if serial is not None:
            sql += " AND ph.serial_number = ?"
            args = (serial,)
        if not include_retired:
            sql += f" AND (a.status IS NULL OR a.status <> '{RETIRED}')"
        rows = await self._all(sql + " ORDER BY ph.serial_number, a.platform, a.account_number,"
                               " a.account_id", args)
        out = []
        for r in rows:
            profile = _profile_dict(r) if r["profile_id"] is not None else None
            out.append({"account_id": r["account_id"], "platform": r["platform"],
                        "account_number": r["account_number"], "username": r["username"],
                        "password_set": _is_set(r["account_password"], r["account_sealed"]),
                        "bio": r["bio"], "status": r["status"], "serial": r["serial"],
                        "profile": profile})
        return out

    async def client_rows(self) -> list[dict]:
        """Every client (retired ones too): client_id, name, status, contacts, times."""
        return [dict(r) for r in await self._all("SELECT * FROM clients ORDER BY name")]

    async def client_row(self, name: str) -> dict | None:
        row = await self._one("SELECT * FROM clients WHERE name = ?", (name,))
        return None if row is None else dict(row)

    async def profile_rows(self) -> list[dict]:
        """Every profile: profile_id, client_id, client (name) and the profile columns,
        ``profile_password_set`` in place of the password."""
        return [_profile_view(r) for r in await self._all(
            "SELECT pr.*, c.name AS client FROM profiles pr"
            " LEFT JOIN clients c ON c.client_id = pr.client_id ORDER BY pr.profile_id")]

    async def profile_row(self, profile_id: int) -> dict | None:
        row = await self._one("SELECT pr.*, c.name AS client FROM profiles pr LEFT JOIN clients"
                              " c ON c.client_id = pr.client_id WHERE pr.profile_id = ?",
                              (profile_id,))
        return None if row is None else _profile_view(row)

    # -- organizations and AI endpoint keys (spec 16.4, actors.coordinator.ai.keys) -------------------

    async def upsert_organization(self, name: str) -> int:
        """The organization called ``name`` (created if new); its organization_id."""
        row = await self._one("SELECT organization_id FROM organizations WHERE name = ?"
                              " ORDER BY organization_id LIMIT 1", (name,))
        if row is not None:
            return row[0]
        row = await self._write("INSERT INTO organizations (name) VALUES (?)"
                                " RETURNING organization_id", (name,))
        return row[0]

    async def organization_row(self, ref: str | int) -> dict | None:
        """The organization with that id (an int or digits) or name, or None."""
        if isinstance(ref, int) or str(ref).isdigit():
            row = await self._one("SELECT * FROM organizations WHERE organization_id = ?",
                                  (int(ref),))
        else:
            row = await self._one("SELECT * FROM organizations WHERE name = ?"
                                  " ORDER BY organization_id LIMIT 1", (ref,))
        return None if row is None else dict(row)

    async def set_client_organization(self, client: str | int, organization_id: int | None
                                      ) -> None:
        client_id = await self._client_id(client)
        await self._write("UPDATE clients SET organization_id = ?, updated_at = ?"
                          " WHERE client_id = ?", (organization_id, utc_text(), client_id))

    async def add_api_key(self, *, service_name: str, key_identifier: str, encrypted_key: str,
                          organization_id: int | None, client_id: int | None,
                          base_url: str | None = None, model: str | None = None,
                          label: str | None = None) -> int:
        """Store one key (``encrypted_key`` is ciphertext, never a plaintext key); its key_id."""
        row = await self._write(
            "INSERT INTO api_keys (organization_id, client_id, service_name, key_identifier,"
            " encrypted_key, base_url, model, label, is_active, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, TRUE, 'active', ?) RETURNING key_id",
            (organization_id, client_id, service_name, key_identifier, encrypted_key,
             base_url, model, label, utc_text()))
        return row[0]

    # is_active (BOOLEAN) as 1/0 on both engines: what SQLite always gave (PostgreSQL: a bool)
    _API_KEY_VIEW = ("SELECT k.key_id, k.service_name, k.key_identifier, k.base_url, k.model,"
                     " k.label, k.status, CASE WHEN k.is_active THEN 1 ELSE 0 END AS is_active,"
                     " k.created_at, k.last_used_at,"
                     " k.client_id, c.name AS client, k.organization_id,"
                     " o.name AS organization FROM api_keys k"
                     " LEFT JOIN clients c ON c.client_id = k.client_id"
                     " LEFT JOIN organizations o ON o.organization_id = k.organization_id")

    async def api_key_rows(self, include_retired: bool = False) -> list[dict]:
        """Every key without its ciphertext: key_id, service_name, key_identifier (masked),
        base_url, model, label, status, client (name) / organization (name) and their ids."""
        where = "" if include_retired else " WHERE k.status = 'active'"
        return [dict(r) for r in await self._all(self._API_KEY_VIEW + where
                                                 + " ORDER BY k.key_id")]

    async def api_key_row(self, key_id: int) -> dict | None:
        row = await self._one(self._API_KEY_VIEW + " WHERE k.key_id = ?", (int(key_id),))
        return None if row is None else dict(row)

    async def api_key_ciphertext(self, key_id: int) -> tuple[str, int | None] | None:
        """(encrypted_key, organization_id) of key ``key_id``, None if there is none."""
        row = await self._one("SELECT encrypted_key, organization_id FROM api_keys"
                              " WHERE key_id = ?", (int(key_id),))
        return None if row is None else (row[0], row[1])

    async def retire_api_key(self, key_id: int) -> None:
        """Soft delete (spec 16.1): status retired, no longer used."""
        await self._write("UPDATE api_keys SET status = 'retired', is_active = FALSE"
                          " WHERE key_id = ?", (int(key_id),))

    async def active_api_key(self, service_name: str, *, client_id: int | None = None,
                             organization_id: int | None = None) -> dict | None:
        """The newest active key of ``service_name`` for the client (when ``client_id``), or
        the organization-wide one (client_id NULL) of ``organization_id``; with its
        ``encrypted_key``. None when there is none."""
        if client_id is not None:
            where, args = "client_id = ?", (client_id,)
        elif organization_id is not None:
            where, args = "client_id IS NULL AND organization_id = ?", (organization_id,)
        else:
            return None
        row = await self._one(
            f"SELECT * FROM api_keys WHERE {where} AND service_name = ? AND status = 'active'"
            " AND is_active ORDER BY key_id DESC LIMIT 1", (*args, service_name))
        return None if row is None else dict(row)

    async def owner_of(self, serial: str, account_id: int | None = None
                       ) -> tuple[int | None, int | None]:
        """(client_id, organization_id) whose work an execution on phone ``serial`` is: the
        client of the account's profile when the execution runs as an account that has one,
        else the phone's client; the organization is that client's. (None, None) if unknown."""
        client_id = None
        if account_id is not None:
            row = await self._one("SELECT pr.client_id FROM accounts a JOIN profiles pr"
                                  " ON pr.profile_id = a.profile_id WHERE a.account_id = ?",
                                  (int(account_id),))
            client_id = row[0] if row is not None else None
        if client_id is None:
            row = await self._one("SELECT client_id FROM phones WHERE serial_number = ?",
                                  (serial,))
            client_id = row[0] if row is not None else None
        if client_id is None:
            return None, None
        row = await self._one("SELECT organization_id FROM clients WHERE client_id = ?",
                              (client_id,))
        return client_id, (row[0] if row is not None else None)

    # -- node keys (issue 17.6, actors.coordinator.node_keys) ------------------------------

    _NODE_KEY_VIEW = ("SELECT node_key_id, node, key_last4, created_at, revoked_at,"
                      " last_seen_at FROM node_keys")

    async def node_key_rows(self) -> list[dict]:
        """Every node key without its ciphertext, by node name."""
        return [dict(r) for r in await self._all(self._NODE_KEY_VIEW + " ORDER BY node")]

    async def node_key_row(self, node: str) -> dict | None:
        row = await self._one(self._NODE_KEY_VIEW + " WHERE node = ?", (node,))
        return None if row is None else dict(row)

    async def node_key_ciphertexts(self) -> list[dict]:
        """node, encrypted_key, revoked_at of every node key (what the coordinator checks
        hellos with)."""
        return [dict(r) for r in await self._all(
            "SELECT node, encrypted_key, revoked_at FROM node_keys ORDER BY node")]

    async def put_node_key(self, node: str, encrypted_key: str, key_last4: str) -> bool:
        """Store ``node``'s key (ciphertext only): a new row, or in place of a revoked key.
        False (nothing changed) when the node has a key that is not revoked."""
        row = await self._write(
            "INSERT INTO node_keys (node, encrypted_key, key_last4, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (node) DO UPDATE SET"
            " encrypted_key = excluded.encrypted_key, key_last4 = excluded.key_last4,"
            " created_at = excluded.created_at, revoked_at = NULL, last_seen_at = NULL"
            " WHERE node_keys.revoked_at IS NOT NULL RETURNING node_key_id",
            (node, encrypted_key, key_last4, utc_text()))
        return row is not None

    async def revoke_node_key(self, node: str) -> bool:
        """Mark ``node``'s key revoked (now); False when it has none or it was revoked."""
        row = await self._write(
            "UPDATE node_keys SET revoked_at = ? WHERE node = ? AND revoked_at IS NULL"
            " RETURNING node_key_id", (utc_text(), node))
        return row is not None

    async def node_key_seen(self, node: str) -> None:
        """``node`` connected with its key now."""
        await self._write("UPDATE node_keys SET last_seen_at = ? WHERE node = ?"
                          " AND revoked_at IS NULL", (utc_text(), node))

    async def execution_serials(self, keys: list[str]) -> dict[str, str | None]:
        """The phone (serial) of each execution in ``keys`` that exists: which node may
        report on it (the node holding that phone)."""
        out: dict[str, str | None] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for r in await self._all(
                    "SELECT execution_key, serial FROM executions"
                    f" WHERE execution_key IN ({','.join('?' * len(chunk))})", chunk):
                out[r[0]] = r[1]
        return out

    # -- the coordinator's phone pause (actors.coordinator.phone_pause) ---------------------------------

    async def set_phone_pause(self, serial: str, reason: str | None,
                              detail: dict | None = None) -> None:
        """Pause phone ``serial`` for ``reason`` (a phone row is created if the registry has
        none), or clear its pause with reason None."""
        if reason is None:
            await self._write("UPDATE phones SET paused_reason = NULL, paused_at = NULL,"
                              " paused_detail = NULL WHERE serial_number = ?", (serial,))
            return
        await self._write(
            "INSERT INTO phones (serial_number, paused_reason, paused_at, paused_detail)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (serial_number) DO UPDATE SET"
            " paused_reason = excluded.paused_reason, paused_at = excluded.paused_at,"
            " paused_detail = excluded.paused_detail",
            (serial, reason, utc_text(), _json_or_none(detail)))

    async def paused_phones(self) -> dict[str, dict]:
        """serial -> {"reason", "since", "detail"} of every paused phone."""
        rows = await self._all("SELECT serial_number, paused_reason, paused_at, paused_detail"
                               " FROM phones WHERE paused_reason IS NOT NULL")
        return {r[0]: {"reason": r[1], "since": r[2],
                       "detail": orjson.loads(r[3]) if r[3] else {}} for r in rows}

    # -- counters and media (persisted state of the variable system) ---------------------

    async def next_counter(self, name: str, start: int = 1, step: int = 1) -> int:
        """The next value of counter ``name``: ``start`` the first time, then + ``step``.
        One statement, so concurrent callers never get the same value."""
        row = await self._write(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = counters.value + ? RETURNING value",
            (name, start, step))
        return row[0]

    async def add_media(self, folder: str, paths: Iterable[str]) -> None:
        """Register media files under ``folder`` (already known ones are kept as they are)."""
        await self._write_many("INSERT INTO media_files (folder, path) VALUES (?, ?)"
                               " ON CONFLICT (folder, path) DO NOTHING",
                               [(folder, p) for p in paths])

    async def next_media(self, folder: str, *, library_of: int | None | bool = False) -> str:
        """The least-used file of ``folder`` (ties by path: round robin), marked used.

        When ``folder`` is a directory on disk its media files are registered first and only
        files still there are picked; otherwise the files registered with `add_media`.

        ``library_of`` (a client id, or None for a phone of no client) makes ``folder`` the
        media library: a file another client uploaded (v23 ``media_items``, by SHA-256) is
        never drawn for this one; the farm's shared uploads and files put in the folder by
        hand are. False: no library rule (a ``content.media.folder`` folder)."""
        present = await asyncio.to_thread(_scan_media, folder)
        if present is not None:
            await self.add_media(folder, present)
            if library_of is not False and present:
                present = await self._drawable_media(present, library_of)
                if not present:
                    raise ValidationError(f"media folder {folder}",
                                          "has no media files this phone's client may use")
        filter_sql, args = "", [folder]
        if present is not None:
            if not present:
                raise ValidationError(f"media folder {folder}", "has no media files")
            filter_sql = f" AND path IN ({', '.join('?' for _ in present)})"
            args += present
        row = await self._write(
            "UPDATE media_files SET used_count = used_count + 1, last_used = ?"
            " WHERE media_id = (SELECT media_id FROM media_files WHERE folder = ?"
            f"{filter_sql} ORDER BY used_count, path LIMIT 1) RETURNING path",
            [utc_text(), *args])
        if row is None:
            raise ValidationError(f"media folder {folder}", "has no media files")
        return row[0]

    async def _drawable_media(self, paths: list[str], client_id: int | None) -> list[str]:
        """``paths`` (library files named ``<sha256>.<ext>``) less those only other clients
        uploaded."""
        rows = await self._all("SELECT sha256, client_id FROM media_items", ())
        allowed = {r["sha256"] for r in rows if r["client_id"] is None
                   or r["client_id"] == client_id}
        foreign = {r["sha256"] for r in rows} - allowed
        return [p for p in paths if Path(p).stem not in foreign]

    # -- the variable context ------------------------------------------------------------

    async def variable_context(self, serial: str, account: str | tuple[str, str] | None = None,
                               custom_overrides: dict[str, str] | None = None, *,
                               media_folder: str | None = None,
                               clock: Callable[[], datetime] | None = None,
                               ai: Any = None, secrets: bool = False,
                               client_world: bool = False) -> "VariableContext":
        """Everything ``${...}`` can name for phone ``serial`` (and its account ``account``,
        "platform.account_number", the shorthand ``${account.FIELD}`` refers to).

        Passwords (``${account.password}``, ``${profile.profile_password}``) are SECRET_MASK
        unless ``secrets``: only text resolved for a node to type (a run's steps) asks for
        them opened; SecretDecryptError names one the master key cannot open.

        ``client_world`` (a tenant's run or preview): ``${group...}`` and the farm-wide
        counts see the phone's client's group book, phones and accounts only; else the
        farm's shared group book over every phone.

        Counters and media in the returned context call back into this database on its
        loop, so `sequences.variables.resolve` must run in a worker thread with it (see
        `resolve_text`); on the loop's own thread they raise instead of deadlocking."""
        from sequences.variables import NoAIProvider, VariableContext, parse_account_ref

        phone = await self._one(
            "SELECT p.phone_id, p.client_id, c.name, c.status, c.contact_email,"
            " c.contact_discord FROM phones p LEFT JOIN clients c ON c.client_id = p.client_id"
            " WHERE p.serial_number = ?", (serial,))
        if phone is None:
            raise ValidationError(f"phone {serial}", "not in the farm database")
        client_id = phone["client_id"]
        client = {} if client_id is None else {
            "name": phone["name"], "status": phone["status"],
            "contact_email": phone["contact_email"], "contact_discord": phone["contact_discord"]}
        every = await self.account_rows(serial, include_retired=True)
        accounts = [a for a in every if not is_retired(a)]
        current = parse_account_ref(account) if account is not None else None
        if current is not None and not any(
                (a["platform"], a["account_number"]) == current for a in accounts):
            retired = any((a["platform"], a["account_number"]) == current for a in every)
            raise ValidationError(f"phone {serial}", f"account {current[0]}.{current[1]} is "
                                  "retired (deleted)" if retired else
                                  f"has no account {current[0]}.{current[1]}")
        passwords, profile_passwords = await self._phone_passwords(serial, secrets)

        def with_password(profile: dict | None) -> dict | None:
            if not profile:
                return profile
            out = {k: v for k, v in profile.items() if k != "profile_password_set"}
            return {**out, "profile_password": profile_passwords.get(profile["profile_id"])}

        # What the resolver reads: an account's password, else its profile's (spec 15.1).
        accounts = [{**{k: v for k, v in a.items() if k != "password_set"},
                     "profile": with_password(a["profile"]),
                     "password": passwords.get(a["account_id"]) or profile_passwords.get(
                         (a["profile"] or {}).get("profile_id"))} for a in accounts]
        profile = next((a["profile"] for a in accounts
                        if current is not None and (a["platform"], a["account_number"]) == current
                        and a["profile"]), None)
        if profile is None:
            profile = next((a["profile"] for a in accounts if a["profile"]), None) or {}
        custom: dict[str, str] = {}
        # Farm-wide values first, so a client's own value of the same name wins.
        for r in await self._all("SELECT name, value FROM custom_variables WHERE"
                                 " (client_id IS NULL OR client_id = ?) AND account_id IS NULL"
                                 " ORDER BY client_id IS NOT NULL", (client_id,)):
            custom[r["name"]] = r["value"]
        # The current account's own values (v23) win over its client's.
        current_id = next((a["account_id"] for a in accounts if current is not None and
                           (a["platform"], a["account_number"]) == current), None)
        if current_id is not None:
            for r in await self._all("SELECT name, value FROM custom_variables"
                                     " WHERE account_id = ?", (current_id,)):
                custom[r["name"]] = r["value"]
        custom.update(custom_overrides or {})
        # A client's set or template of a name wins over the farm's shared one (v23).
        hashtags = {r["name"]: orjson.loads(r["tags"]) for r in await self._all(
            "SELECT name, tags FROM hashtag_sets WHERE client_id IS NULL OR client_id = ?"
            " ORDER BY client_id IS NOT NULL", (client_id,))}
        captions = {r["name"]: r["template"] for r in await self._all(
            "SELECT name, template FROM caption_templates WHERE client_id IS NULL"
            " OR client_id = ? ORDER BY client_id IS NOT NULL", (client_id,))}
        default_folder = media_folder or str(Path(self.path).parent / "media")
        return VariableContext(
            serial=serial, client=client, profile=profile,
            accounts=[{k: v for k, v in a.items() if k != "profile"} for a in accounts],
            account=current, hashtag_sets=hashtags, caption_templates=captions,
            media=_DBMedia(self, default_folder, client_id), custom=custom,
            counters=self._threaded(self.next_counter),
            clock=clock or (lambda: datetime.now(timezone.utc)),
            ai=ai if ai is not None else NoAIProvider(),
            **(await self._client_world(client_id) if client_world else {
                "phones": await self.phone_rows(), "farm_accounts": await self.account_rows(),
                "groups": await self.group_book()}))

    async def _client_world(self, client_id: int | None) -> dict[str, Any]:
        """What a tenant's text on a phone of client ``client_id`` may name: that client's
        group book over its phones and their accounts (a phone with no client: nothing),
        never another client's groups or phones."""
        from sequences.groups import GroupBook

        if client_id is None:
            return {"phones": [], "farm_accounts": [], "groups": GroupBook.with_defaults()}
        phones = [p for p in await self.phone_rows() if p.get("client_id") == client_id]
        mine = {p["serial"] for p in phones}
        return {"phones": phones,
                "farm_accounts": [a for a in await self.account_rows() if a.get("serial") in mine],
                "groups": await self.group_book(client_id)}

    async def resolve_text(self, text: str, serial: str,
                           account: str | tuple[str, str] | None = None, *,
                           custom_overrides: dict[str, str] | None = None,
                           rng: "random.Random | None" = None, **context: Any) -> str:
        """``text`` with its variables and spintax resolved for phone ``serial`` (counters
        and media uses persisted; passwords masked unless ``secrets=True`` is passed on to
        `variable_context`). Resolution runs in a worker thread."""
        import random

        from sequences.variables import resolve
        ctx = await self.variable_context(serial, account, custom_overrides, **context)
        return await asyncio.to_thread(resolve, text, ctx, rng or random.Random())

    def _threaded(self, coro_fn: Callable[..., Any]) -> Callable[..., Any]:
        """A sync callable running ``coro_fn`` on this database's loop from a worker thread."""
        loop = self._loop

        def call(*args: Any) -> Any:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                raise FarmError("the farm database's variable context touches the database: "
                                "resolve in a worker thread (FarmDB.resolve_text or "
                                "asyncio.to_thread), not on the event loop")
            return asyncio.run_coroutine_threadsafe(coro_fn(*args), loop).result(timeout=30)

        return call


class _DBMedia:
    """`sequences.variables.MediaSource` over the media_files table (used from a worker
    thread; see FarmDB.variable_context)."""

    def __init__(self, db: FarmDB, default_folder: str, client_id: int | None) -> None:
        self._next = db._threaded(db.next_media)
        self._library = db._threaded(
            lambda folder: db.next_media(folder, library_of=client_id))
        self.default_folder = default_folder

    def next(self) -> str:
        # The library: this phone's client's uploads and the farm's, never another client's.
        return self._library(self.default_folder)

    def folder(self, path: str) -> str:
        # A relative folder is under the media root, wherever the coordinator was started.
        return self._next(str(Path(self.default_folder) / path))


def _scan_media(folder: str) -> list[str] | None:
    """Media file paths directly in ``folder``, sorted; None when it is not a directory."""
    root = Path(folder)
    if not root.is_dir():
        return None
    return sorted(str(p) for p in root.iterdir()
                  if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)


def _proposal_dict(row: aiosqlite.Row) -> dict:
    return {**orjson.loads(row["proposal"]), "id": row["proposal_id"],
            "unknown_screen": row["unknown_screen_id"], "status": row["status"],
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "resolved_by": row["resolved_by"]}


def _json_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS,
                                                   default=str).decode()


def _with_owners(row: dict) -> dict:
    """A workflow execution row with ``client_ids`` decoded (a list, or None)."""
    if row.get("client_ids") is not None:
        row["client_ids"] = orjson.loads(row["client_ids"])
    return row


def _in_list(column: str, values: list, negate: bool = False) -> str:
    """``column IN (?, ...)`` (or NOT IN) for ``values``; for none, the condition's value
    as written out (PostgreSQL has no empty ``IN ()``, which SQLite reads as false)."""
    if not values:
        return "1 = 1" if negate else "1 = 0"
    return f"{column} {'NOT IN' if negate else 'IN'} ({', '.join('?' * len(values))})"


def _definition_filter(alias: str, clients: Iterable[int] | None,
                       include_retired: bool) -> tuple[str, list[Any]]:
    """A definition table's WHERE clause (always one, so callers can add ``AND ...``):
    active rows unless ``include_retired``; with ``clients``, only the shared library and
    those clients' rows."""
    where, args = [f"{alias}.status = 'active'" if not include_retired else "1 = 1"], []
    if clients is not None:
        ids = sorted(set(clients))
        where.append(f"({alias}.client_id IS NULL OR {_in_list(f'{alias}.client_id', ids)})")
        args += ids
    return " WHERE " + " AND ".join(where), args


def _profile_dict(row: aiosqlite.Row) -> dict:
    return {"profile_id": row["profile_id"], "client_id": row["client_id"],
            **{f: row[f] for f in PROFILE_FIELDS if f != "profile_password"},
            "profile_password_set": _is_set(row["profile_password"],
                                            row["profile_password_sealed"])}


def _profile_view(row: aiosqlite.Row) -> dict:
    """A profiles row as the API shows it: ``profile_password_set``, never the password."""
    out = {k: row[k] for k in row.keys()
           if k not in ("profile_password", "profile_password_sealed", "password_org")}
    out["profile_password_set"] = _is_set(row["profile_password"],
                                          row["profile_password_sealed"])
    return out


def _is_set(plaintext: str | None, sealed: str | None) -> bool:
    return sealed is not None or bool(plaintext)


def redact_secrets(value: Any) -> Any:
    """``value`` with every ``SECRET_KEYS`` key (at any depth) replaced by ``<key>_set``:
    true|false. What the audit trail keeps of a password."""
    if isinstance(value, dict):
        out: dict = {}
        for k, v in value.items():
            if k in SECRET_KEYS:
                out[f"{k}_set"] = bool(v)
            else:
                out[k] = redact_secrets(v)
        return out
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


def _redacted_json(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    redacted = redact_secrets(value)
    return text if redacted == value else _json_or_none(redacted)


def _execution_dict(row: aiosqlite.Row, with_plan: bool = False) -> dict:
    out = dict(row)
    out["key"] = out["execution_key"]
    if not with_plan:
        out.pop("plan", None)  # large, and only crash recovery reads it
    return out


async def seed_demo(db: FarmDB, serials: list[str]) -> None:
    """The demo farm's data: clients "Demo Farm" (the first half of the phones) and "Acme"
    (the rest), one profile per phone, and on every phone
    the virtual ClipShare app's three accounts (clipshare account1..account3), a hashtag set
    "demo" and a caption template "daily". Safe to run on every start (upserts)."""
    demo_accounts = [("account1", "clip_creator", "hunter2"),
                     ("account2", "dance_daily", "pass123"),
                     ("account3", "chef_mia", "tasty42")]
    first_names = ["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
    await db.upsert_client("Demo Farm", status="active", contact_email="ops@demo.farm",
                           contact_discord="demo-farm#0001")
    await db.upsert_client("Acme", status="active", contact_email="ops@acme.example")
    # The first half of the phones is Demo Farm's, the rest Acme's: two tenants to try
    # the isolation on (a phone the operator re-assigned keeps its client).
    split = (len(serials) + 1) // 2
    known = {row["serial"]: row["client_id"] for row in await db.phone_rows()}
    for index, serial in enumerate(serials):
        client = "Demo Farm" if index < split else "Acme"
        await db.upsert_phone(serial, client=None if known.get(serial) else client,
                              model="Virtual Phone")
        existing = await db.account_rows(serial, include_retired=True)
        profile_id = next((a["profile"]["profile_id"] for a in existing if a["profile"]), None)
        # An account the operator deleted stays deleted: only new ones start active.
        seeded = {a["account_number"] for a in existing if a["platform"] == "clipshare"}
        profile_id = await db.upsert_profile(
            profile_id, client=client, first_name=first_names[index % len(first_names)],
            last_name=f"Demo{index + 1}", birth_month=(index % 12) + 1,
            birth_day=(index % 28) + 1, birth_year=1995 + index % 10, gender="unspecified",
            profile_password=f"demo-profile-{index + 1}", interests="dance, cooking, travel")
        for number, username, password in demo_accounts:
            await db.upsert_account(serial, "clipshare", number, username=username,
                                    password=password, profile_id=profile_id,
                                    status=None if number in seeded else "active")
    await db.set_hashtag_set("demo", ["phonefarm", "clipshare", "daily"], client="Demo Farm")
    await db.set_caption_template(
        "daily", "{Just|Today I} {watched|posted|finished} something {fun|new|great} "
                 "- ${profile.first_name} {:)|!} ${content.hashtags.demo}", client="Demo Farm")
    log.info("demo farm data seeded for %d phones", len(serials))
