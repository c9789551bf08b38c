"""The alerts' tables in the farm database (schema v18), on both engines.

Owns the SQL of alert rules, alert state (firing/resolved, since, last notified, acked,
silenced), the notification outbox (one row per notice and channel until delivered or
expired) and the console's notification list with per-user read marks. ``clients``
arguments are a caller's client ids (None: the farm); reads made for a caller also run
under its clients (actors.store.caller_scope), so PostgreSQL's row-level security guards
them a second time."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Iterable

import orjson

from actors.coordinator.alerts.rules import Rule
from actors.store.caller_scope import as_clients
from protocol.errors import ValidationError

OUTBOX_KEEP_S = 7 * 86400.0  # delivered and expired outbox rows are pruned after this


def _in(column: str, values: Iterable[Any]) -> tuple[str, list]:
    values = list(values)
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join('?' * len(values))})", values


def _scope(clients: frozenset[int] | None, column: str = "client_id") -> tuple[str, list]:
    """A caller's filter: every row for the farm (None), else its clients' rows only."""
    if clients is None:
        return "1 = 1", []
    return _in(column, sorted(clients))


class AlertStore:
    """Owns the v18 tables through one FarmDB (its single writer and its readers)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    # --- rules ------------------------------------------------------------------------------
    async def client_id(self, name: str | None, where: str) -> int | None:
        if name is None:
            return None
        row = await self.db._one("SELECT client_id FROM clients WHERE name = ?", (name,))
        if row is None:
            raise ValidationError(where, f"no client named {name!r}")
        return row[0]

    async def rules(self, clients: frozenset[int] | None = None) -> list[Rule]:
        where, args = _scope(clients, "r.client_id")
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT r.*, c.name AS client_name FROM alert_rules r LEFT JOIN clients c"
                f" ON c.client_id = r.client_id WHERE {where} ORDER BY r.name", args)
        return [_rule(r) for r in rows]

    async def rule(self, ref: str | int, clients: frozenset[int] | None = None) -> Rule | None:
        """A rule by id or name, among the caller's."""
        found = [r for r in await self.rules(clients)
                 if (r.rule_id == ref if isinstance(ref, int) else r.name == ref)]
        return found[0] if found else None

    async def name_taken(self, name: str) -> bool:
        return await self.db._one("SELECT 1 FROM alert_rules WHERE name = ?", (name,)) is not None

    async def add_rule(self, rule: Rule, source: str = "api") -> Rule:
        now = time.time()
        row = await self.db._write(
            "INSERT INTO alert_rules (name, source, client_id, kind, params, repeat_s,"
            " channels, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING rule_id",
            (rule.name, source, rule.client_id, rule.kind, orjson.dumps(rule.params).decode(),
             rule.repeat_s, _json(rule.channels), int(rule.enabled), now, now))
        return replace(rule, rule_id=row[0], source=source)

    async def sync_file_rules(self, rules: list[Rule]) -> None:
        """The config file's rules replace the stored file rules (by name: an unchanged
        rule keeps its id, alerts and silence); removed ones go, with their alerts."""
        def job(conn: Any) -> None:
            now = time.time()
            names = [r.name for r in rules]
            where, args = _in("name", names)
            conn.execute(f"DELETE FROM alert_rules WHERE source = 'file' AND NOT ({where})",
                         args)
            for r in rules:
                conn.execute(
                    "INSERT INTO alert_rules (name, source, client_id, kind, params, repeat_s,"
                    " channels, enabled, created_at, updated_at)"
                    " VALUES (?, 'file', ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
                    " SET client_id = excluded.client_id, kind = excluded.kind,"
                    " params = excluded.params, repeat_s = excluded.repeat_s,"
                    " channels = excluded.channels, enabled = excluded.enabled,"
                    " updated_at = excluded.updated_at",
                    (r.name, r.client_id, r.kind, orjson.dumps(r.params).decode(), r.repeat_s,
                     _json(r.channels), int(r.enabled), now, now))
        await self.db._atomic(job)

    async def delete_rule(self, rule_id: int) -> None:
        await self.db._write("DELETE FROM alert_rules WHERE rule_id = ?", (rule_id,))

    async def silence(self, rule_id: int, until: float | None, by: str | None) -> None:
        await self.db._write("UPDATE alert_rules SET silenced_until = ?, silenced_by = ?,"
                             " updated_at = ? WHERE rule_id = ?",
                             (until, by, time.time(), rule_id))

    # --- alerts -----------------------------------------------------------------------------
    async def open_alert(self, rule: Rule, subject: str, since: float, title: str, text: str,
                         links: dict[str, str], state: str = "firing") -> int:
        row = await self.db._write(
            "INSERT INTO alerts (rule_id, rule_name, client_id, kind, subject, state, since,"
            " resolved_at, title, text, links) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING alert_id",
            (rule.rule_id, rule.name, rule.client_id, rule.kind, subject, state, since,
             since if state == "resolved" else None, title, text,
             orjson.dumps(links).decode()))
        return row[0]

    async def notified(self, alert_id: int, at: float) -> None:
        await self.db._write("UPDATE alerts SET last_notified_at = ?, notified = notified + 1"
                             " WHERE alert_id = ?", (at, alert_id))

    async def resolve(self, alert_id: int, at: float) -> None:
        await self.db._write("UPDATE alerts SET state = 'resolved', resolved_at = ?"
                             " WHERE alert_id = ?", (at, alert_id))

    async def ack(self, alert_id: int, by: str) -> None:
        await self.db._write("UPDATE alerts SET acked_by = ?, acked_at = ? WHERE alert_id = ?",
                             (by, time.time(), alert_id))

    async def firing(self) -> list[dict]:
        return [dict(r) for r in await self.db._all(
            "SELECT * FROM alerts WHERE state = 'firing' ORDER BY alert_id")]

    async def alerts(self, clients: frozenset[int] | None = None, state: str | None = None,
                     limit: int = 100) -> list[dict]:
        where, args = _scope(clients, "a.client_id")
        if state is not None:
            where += " AND a.state = ?"
            args.append(state)
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT a.*, c.name AS client FROM alerts a LEFT JOIN clients c"
                f" ON c.client_id = a.client_id WHERE {where}"
                " ORDER BY a.since DESC, a.alert_id DESC LIMIT ?", [*args, limit])
        return [_alert(r) for r in rows]

    async def alert(self, alert_id: int, clients: frozenset[int] | None = None) -> dict | None:
        where, args = _scope(clients, "a.client_id")
        with as_clients(clients):
            row = await self.db._one(
                "SELECT a.*, c.name AS client FROM alerts a LEFT JOIN clients c"
                f" ON c.client_id = a.client_id WHERE a.alert_id = ? AND {where}",
                [alert_id, *args])
        return _alert(row) if row is not None else None

    # --- the outbox -------------------------------------------------------------------------
    async def enqueue(self, notice: dict, kind: str, key: str | None, client_id: int | None,
                      channels: list[str], expires_at: float) -> list[int]:
        """One outbox row per channel (an existing row of the same channel, kind and key is
        the same notice: its id is returned, nothing is added)."""
        body = orjson.dumps(notice).decode()

        def job(conn: Any) -> list[int]:
            now = time.time()
            ids = []
            for channel in channels:
                row = conn.execute(
                    "INSERT INTO alert_outbox (channel, kind, notice_key, client_id, notice,"
                    " next_attempt_at, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (channel, kind, notice_key) DO NOTHING RETURNING outbox_id",
                    (channel, kind, key, client_id, body, now, expires_at, now)).fetchone()
                if row is None:
                    row = conn.execute(
                        "SELECT outbox_id FROM alert_outbox WHERE channel = ? AND kind = ?"
                        " AND notice_key = ?", (channel, kind, key)).fetchone()
                ids.append(row[0])
            return ids
        return await self.db._atomic(job)

    async def due(self, now: float, limit: int = 100) -> list[dict]:
        rows = await self.db._all(
            "SELECT * FROM alert_outbox WHERE delivered_at IS NULL AND next_attempt_at <= ?"
            " AND expires_at > ? ORDER BY next_attempt_at, outbox_id LIMIT ?",
            (now, now, limit))
        return [{**dict(r), "notice": orjson.loads(r["notice"])} for r in rows]

    async def next_due(self) -> float | None:
        row = await self.db._one("SELECT MIN(next_attempt_at) FROM alert_outbox WHERE"
                                 " delivered_at IS NULL AND expires_at > ?", (time.time(),))
        return row[0] if row is not None else None

    async def delivered(self, outbox_id: int, at: float) -> None:
        await self.db._write("UPDATE alert_outbox SET delivered_at = ?, last_attempt_at = ?,"
                             " attempts = attempts + 1, last_error = NULL WHERE outbox_id = ?",
                             (at, at, outbox_id))

    async def failed(self, outbox_id: int, at: float, error: str, next_at: float) -> None:
        await self.db._write("UPDATE alert_outbox SET last_attempt_at = ?, last_error = ?,"
                             " attempts = attempts + 1, next_attempt_at = ?"
                             " WHERE outbox_id = ?", (at, error[:1000], next_at, outbox_id))

    async def prune(self, now: float) -> None:
        await self.db._write("DELETE FROM alert_outbox WHERE (delivered_at IS NOT NULL AND"
                             " delivered_at < ?) OR expires_at < ?",
                             (now - OUTBOX_KEEP_S, now - OUTBOX_KEEP_S))

    async def outbox(self, outbox_ids: list[int]) -> list[dict]:
        where, args = _in("outbox_id", outbox_ids)
        return [dict(r) for r in await self.db._all(
            f"SELECT * FROM alert_outbox WHERE {where} ORDER BY outbox_id", args)]

    async def channel_stats(self, now: float) -> dict[str, dict]:
        """Per channel: pending, delivered and expired counts, the last attempt's time and
        error (of the newest failed row still pending), the last delivery's time."""
        rows = await self.db._all(
            "SELECT channel,"
            " SUM(CASE WHEN delivered_at IS NULL AND expires_at > ? THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN delivered_at IS NOT NULL THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN delivered_at IS NULL AND expires_at <= ? THEN 1 ELSE 0 END),"
            " MAX(delivered_at), MAX(last_attempt_at)"
            " FROM alert_outbox GROUP BY channel", (now, now))
        out = {r[0]: {"pending": int(r[1] or 0), "delivered": int(r[2] or 0),
                      "expired": int(r[3] or 0), "last_delivered_at": r[4],
                      "last_attempt_at": r[5], "last_error": None} for r in rows}
        errors = await self.db._all(
            "SELECT channel, last_error, last_attempt_at FROM alert_outbox"
            " WHERE last_error IS NOT NULL AND delivered_at IS NULL ORDER BY last_attempt_at")
        for r in errors:  # the newest failure per channel wins
            if r[0] in out:
                out[r[0]]["last_error"] = r[1]
        return out

    # --- the console's notifications --------------------------------------------------------
    async def add_notification(self, notice: dict, kind: str, key: str | None,
                               client_id: int | None) -> int:
        def job(conn: Any) -> int:
            row = conn.execute(
                "INSERT INTO notifications (client_id, kind, notice_key, title, text, links,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, notice_key)"
                " DO NOTHING RETURNING notification_id",
                (client_id, kind, key, notice["title"], notice["text"],
                 orjson.dumps(notice.get("links") or {}).decode(), time.time())).fetchone()
            if row is None:
                row = conn.execute("SELECT notification_id FROM notifications WHERE kind = ?"
                                   " AND notice_key = ?", (kind, key)).fetchone()
            return row[0]
        return await self.db._atomic(job)

    async def notifications(self, user_id: int, clients: frozenset[int] | None,
                            unread: bool = False, limit: int = 50) -> dict:
        where, args = _scope(clients, "n.client_id")
        read = ("LEFT JOIN notification_reads r ON r.notification_id = n.notification_id"
                " AND r.user_id = ?")
        with as_clients(clients):
            rows = await self.db._all(
                f"SELECT n.*, c.name AS client, r.read_at FROM notifications n {read}"
                f" LEFT JOIN clients c ON c.client_id = n.client_id WHERE {where}"
                + (" AND r.read_at IS NULL" if unread else "")
                + " ORDER BY n.created_at DESC, n.notification_id DESC LIMIT ?",
                [user_id, *args, limit])
            count = await self.db._one(
                f"SELECT COUNT(*) FROM notifications n {read} WHERE {where}"
                " AND r.read_at IS NULL", [user_id, *args])
        return {"unread": int(count[0]), "notifications": [
            {"id": r["notification_id"], "kind": r["kind"], "client": r["client"],
             "title": r["title"], "text": r["text"], "links": orjson.loads(r["links"]),
             "created_at": iso(r["created_at"]), "read": r["read_at"] is not None}
            for r in rows]}

    async def mark_read(self, user_id: int, clients: frozenset[int] | None,
                        ids: list[int] | None) -> int:
        """Mark the caller's visible notifications ``ids`` (None: all) read; how many were
        unread. One INSERT ... SELECT in the writer: no id list is loaded, however many."""
        where, args = _scope(clients)
        if ids is not None:
            chosen, more = _in("notification_id", ids)
            where, args = f"{where} AND {chosen}", [*args, *more]
        sql = ("INSERT INTO notification_reads (notification_id, user_id, read_at)"
               f" SELECT notification_id, ?, ? FROM notifications WHERE {where}"
               " ON CONFLICT (notification_id, user_id) DO NOTHING")
        params = (user_id, time.time(), *args)
        return await self.db._atomic(lambda conn: conn.execute(sql, params).rowcount)


def iso(at: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``...Z``)."""
    if at is None:
        return None
    from datetime import datetime, timezone
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(list(value)).decode()


def _rule(r: Any) -> Rule:
    channels = orjson.loads(r["channels"]) if r["channels"] else None
    return Rule(name=r["name"], kind=r["kind"], params=orjson.loads(r["params"]),
                client=r["client_name"], repeat_s=r["repeat_s"],
                channels=tuple(channels) if channels is not None else None,
                enabled=bool(r["enabled"]), rule_id=r["rule_id"], client_id=r["client_id"],
                source=r["source"], silenced_until=r["silenced_until"],
                silenced_by=r["silenced_by"])


def _alert(r: Any) -> dict:
    return {"id": r["alert_id"], "rule": r["rule_name"], "rule_id": r["rule_id"],
            "kind": r["kind"], "client": r["client"], "subject": r["subject"],
            "state": r["state"], "since": iso(r["since"]), "resolved_at": iso(r["resolved_at"]),
            "last_notified_at": iso(r["last_notified_at"]), "notified": r["notified"],
            "title": r["title"], "text": r["text"], "links": orjson.loads(r["links"]),
            "acked_by": r["acked_by"], "acked_at": iso(r["acked_at"])}
