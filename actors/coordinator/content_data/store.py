"""Content data in the farm database (schema v22 over v5's content tables).

Owns the SQL that turns the node's read events into rows (``content_posts``,
``account_metric_samples``, ``post_metric_samples`` and the day's ``post_metrics`` row,
``account_health_events``), the reads of the posts and accounts API, and the daily rollups
(``client_daily_metrics``, ``platform_daily_metrics``). Each event is one writer job (all
or none) and every row it makes carries the event's key, UNIQUE: a replayed event changes
nothing. Reads made for a caller take the account ids it sees (the scoped account list) and
run with its clients set (actors.store.caller_scope): on PostgreSQL row-level security is
the second guard.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from typing import Any, Iterable

import msgspec

from actors.coordinator.content_data.event_account import (EventAccount, execution_key,
                                                           resolve_event)
from actors.node.readings import FAILED_POST_SEQ, caption_text, hashtags_of
from protocol.messages import RunSequence
from sequences.load import walk_steps
from sequences.model import RecordPostStep
from actors.store.caller_scope import as_clients
from actors.store.execution_records import utc_text

ACCOUNT_METRICS = ("followers", "following", "posts")
POST_METRICS = ("views", "likes", "comments", "shares", "saves")
HEALTH_KINDS = ("relogin", "challenge", "post_failed")
POSTED, FAILED = "active", "failed"  # content_posts.status of a post_recorded event
# An account's client: its profile's, else its phone's (as v14's row security says).
ACCOUNT_CLIENT = "COALESCE(pr.client_id, ph.client_id)"
_ACCOUNT_JOIN = ("accounts a LEFT JOIN phones ph ON ph.phone_id = a.phone_id"
                 " LEFT JOIN profiles pr ON pr.profile_id = a.profile_id")


def event_key(event: str, data: dict) -> str:
    """The key of a node event's rows: the event, its execution and the node's per-execution
    ``seq`` (the time it happened when a node sends none). A health signal is one per
    execution and kind (``health_signal:<execution>:<kind>``): a resume or a recovery that
    meets the login screen again sends another, which must not count twice."""
    if event == "health_signal" and data.get("execution_id") not in (None, ""):
        return f"{event}:{data.get('execution_id')}:{data.get('kind')}"
    seq = data.get("seq")
    return f"{event}:{data.get('execution_id')}:{seq if seq is not None else data.get('at')}"


def clean_hashtags(tags: Any) -> list[str]:
    """A post's hashtags as stored in content_posts.hashtags: without the ``#`` (as hashtag
    sets store them), blanks dropped, each once in order."""
    if not isinstance(tags, list):
        return []
    out = (str(t).strip().lstrip("#").strip() for t in tags if t is not None)
    return list(dict.fromkeys(t for t in out if t))


def iso_utc(text: str | None) -> str | None:
    """A stored UTC timestamp text as ISO 8601 with its zone."""
    if not text:
        return None
    when = datetime.fromisoformat(str(text).replace(" ", "T"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat()


def day_bounds(day: date) -> tuple[float, float]:
    """[start, end) of a UTC day in Unix seconds."""
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
    return start, start + 86400.0


def _in_list(values: Iterable[Any]) -> tuple[str, tuple[Any, ...]]:
    values = tuple(sorted(set(values)))
    if not values:  # PostgreSQL has no IN (): a list that matches nothing
        return "(NULL)", ()
    return "(" + ", ".join("?" * len(values)) + ")", values


def _hashtags(text: Any) -> list[str]:
    try:
        tags = json.loads(text) if text else []
    except ValueError:
        return []
    return [str(t) for t in tags] if isinstance(tags, list) else []


class ContentDataStore:
    """Owns the rows of v22's tables and v5's content and rollup tables (through ``db``, the
    farm's FarmDB)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    # --- ingest ----------------------------------------------------------------------------
    async def ingest(self, event: str, serial: str | None, data: dict) -> str:
        """Store one node event; returns what became of it: ``stored``, ``replayed`` (its
        rows exist), or ``dropped: <why>`` (logged by the caller)."""
        return await self.db._atomic(lambda conn: self._ingest(conn, event, serial, data))

    async def end_failed(self, serial: str | None, data: dict, event: str) -> str:
        """The final end, failed, of an execution whose failure was held for AI recovery
        (``recovery_failed``, or ``execution_finished`` held and not recovered): when its plan
        has a record_post step and it has posted nothing, a failed post (the node's
        post-failed event's key: a node that sent one too changes nothing). ``skipped: why``
        when there is nothing to record."""
        key = execution_key(data)
        row = None if key is None else await self.db._one(
            "SELECT plan FROM executions WHERE execution_key = ?", (key,))
        plan = None if row is None else self.db._open_plan(key, row["plan"])
        if not plan:
            return "skipped: no plan"
        try:
            run = msgspec.json.decode(plan, type=RunSequence)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return f"dropped: the plan of {key} cannot be read ({exc})"
        posts = [s for _, s in walk_steps(run.steps) if isinstance(s, RecordPostStep)]
        if not posts:
            return "skipped: no record_post step"
        caption = caption_text(run.steps, posts[0].caption_step)
        if event == "recovery_failed":
            reason = f"recovery_failed: {data.get('reason')}: {data.get('detail')}"
        else:
            reason = data.get("reason") or "failed"
            reason = f"{reason}: {data['error']}" if data.get("error") else reason
        post = {"execution_id": key, "serial": serial, "account": run.account, "app": run.app,
                "at": data.get("at") or datetime.now(timezone.utc).timestamp(),
                "seq": FAILED_POST_SEQ, "status": "failed", "caption": caption,
                "hashtags": hashtags_of(caption or ""), "media": None,
                "platform_post_id": None, "reason": reason}

        def job(conn: Any) -> str:
            posted = conn.execute(
                "SELECT 1 FROM content_posts p JOIN executions e ON e.execution_id ="
                " p.execution_id WHERE e.execution_key = ? AND p.status = ? LIMIT 1",
                (key, POSTED)).fetchone()
            if posted is not None:
                return "skipped: the execution posted"
            return self._ingest(conn, "post_recorded", serial, post)
        return await self.db._atomic(job)

    def _ingest(self, conn: Any, event: str, serial: str | None, data: dict) -> str:
        key = event_key(event, data)
        ex = resolve_event(conn, data, serial)
        if ex.refused is not None:
            return f"dropped: {ex.refused}"
        if ex.account_id is None:
            return "dropped: the execution has no known account"
        at = float(data.get("at") or datetime.now(timezone.utc).timestamp())
        execution_id = ex.execution_id
        if event == "metric_recorded":
            return self._metric(conn, key, ex, execution_id, at, data)
        if event == "post_recorded":
            return self._post(conn, key, ex, execution_id, at, data)
        if event == "health_signal":
            kind = data.get("kind")
            if kind not in ("relogin", "challenge"):
                return f"dropped: unknown health signal {kind!r}"
            return self._health(conn, key, ex.account_id, kind, data.get("screen"),
                                execution_id, at)
        return f"dropped: not a content event ({event})"

    def _metric(self, conn: Any, key: str, ex: EventAccount, execution_id: int | None,
                at: float, data: dict) -> str:
        metric, post = data.get("metric"), data.get("post")
        try:
            value = int(data.get("value"))
        except (TypeError, ValueError):
            return f"dropped: value {data.get('value')!r} is not an int"
        if post is None:
            if metric not in ACCOUNT_METRICS:
                return f"dropped: {metric!r} is not an account metric"
            row = conn.execute(
                "INSERT INTO account_metric_samples (account_id, metric, value, execution_id,"
                " phone_id, recorded_at, event_key) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (event_key) DO NOTHING RETURNING sample_id",
                (ex.account_id, metric, value, execution_id, ex.phone_id, at, key)).fetchone()
            return "stored" if row is not None else "replayed"
        if metric not in POST_METRICS:
            return f"dropped: {metric!r} is not a post metric"
        if post == "latest":
            found = conn.execute(
                "SELECT post_id FROM content_posts WHERE account_id = ? AND status = ?"
                " ORDER BY posted_at DESC, post_id DESC LIMIT 1",
                (ex.account_id, POSTED)).fetchone()
        else:
            found = conn.execute(
                "SELECT post_id FROM content_posts WHERE account_id = ? AND platform_post_id = ?"
                " ORDER BY post_id DESC LIMIT 1", (ex.account_id, str(post))).fetchone()
        if found is None:
            return f"dropped: the account has no post {post!r}"
        post_id = found[0]
        row = conn.execute(
            "INSERT INTO post_metric_samples (post_id, metric, value, execution_id, recorded_at,"
            " event_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_key) DO NOTHING"
            " RETURNING sample_id", (post_id, metric, value, execution_id, at, key)).fetchone()
        if row is None:
            return "replayed"
        self._post_day(conn, post_id, datetime.fromtimestamp(at, timezone.utc).date())
        return "stored"

    @staticmethod
    def _post_day(conn: Any, post_id: int, day: date) -> None:
        """The day's post_metrics row: each metric's latest sample up to the day's end (a
        metric not read that day carries its earlier value)."""
        _, end = day_bounds(day)
        values = []
        for metric in POST_METRICS:
            row = conn.execute(
                "SELECT value FROM post_metric_samples WHERE post_id = ? AND metric = ?"
                " AND recorded_at < ? ORDER BY recorded_at DESC, sample_id DESC LIMIT 1",
                (post_id, metric, end)).fetchone()
            values.append(row[0] if row is not None else 0)
        now = utc_text()
        conn.execute(
            "INSERT INTO post_metrics (post_id, metric_date, views, likes, comments, shares,"
            " saves, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (post_id, metric_date) DO UPDATE SET views = excluded.views,"
            " likes = excluded.likes, comments = excluded.comments, shares = excluded.shares,"
            " saves = excluded.saves, updated_at = excluded.updated_at",
            (post_id, day.isoformat(), *values, now, now))

    def _post(self, conn: Any, key: str, ex: EventAccount, execution_id: int | None, at: float,
              data: dict) -> str:
        status = data.get("status")
        if status not in ("posted", "failed"):
            return f"dropped: post status {status!r}"
        tags = clean_hashtags(data.get("hashtags"))
        when = utc_text(datetime.fromtimestamp(at, timezone.utc))
        row = conn.execute(
            "INSERT INTO content_posts (account_id, platform, platform_post_id, post_type,"
            " caption, hashtags, media_path, posted_at, status, created_at, execution_id, app,"
            " media_id, reason, event_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (event_key) DO NOTHING RETURNING post_id",
            (ex.account_id, ex.platform, data.get("platform_post_id"), "post",
             data.get("caption"), json.dumps(tags), data.get("media"), when,
             POSTED if status == "posted" else FAILED, utc_text(), execution_id,
             data.get("app"), data.get("media"), data.get("reason"), key)).fetchone()
        if row is None:
            return "replayed"
        if status == "failed":
            self._health(conn, key, ex.account_id, "post_failed", data.get("reason"),
                         execution_id, at)
        return "stored"

    @staticmethod
    def _health(conn: Any, key: str, account_id: int, kind: str, screen: Any,
                execution_id: int | None, at: float) -> str:
        row = conn.execute(
            "INSERT INTO account_health_events (account_id, kind, screen, execution_id, at,"
            " event_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_key) DO NOTHING"
            " RETURNING event_id",
            (account_id, kind, None if screen is None else str(screen), execution_id, at,
             key)).fetchone()
        return "stored" if row is not None else "replayed"

    # --- posts -----------------------------------------------------------------------------
    async def posts(self, *, accounts: Iterable[int] | None = None,
                    since: str | None = None, limit: int = 100, post_id: int | None = None,
                    post_ids: Iterable[int] | None = None,
                    clients: frozenset[int] | None = None) -> list[dict[str, Any]]:
        """Posts newest first, of ``accounts`` (None: every account), posted at or after
        ``since`` (UTC text), each with its latest metrics."""
        where, args = ["1 = 1"], []
        if accounts is not None:
            in_list, ids = _in_list(accounts)
            where.append(f"p.account_id IN {in_list}")
            args += ids
        if since is not None:
            where.append("p.posted_at >= ?")
            args.append(since)
        if post_id is not None:
            where.append("p.post_id = ?")
            args.append(post_id)
        if post_ids is not None:
            in_list, ids = _in_list(post_ids)
            where.append(f"p.post_id IN {in_list}")
            args += ids
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT p.post_id, p.account_id, a.platform AS account_platform,"
                " a.account_number, p.platform, p.posted_at, p.caption, p.hashtags, p.media_id,"
                " p.media_path, p.status, p.reason, p.execution_id, p.platform_post_id, p.app"
                " FROM content_posts p LEFT JOIN accounts a ON a.account_id = p.account_id"
                f" WHERE {' AND '.join(where)} ORDER BY p.posted_at DESC, p.post_id DESC"
                " LIMIT ?", (*args, limit))
            latest = await self._latest([r["post_id"] for r in rows])
        return [self._post_view(r, latest.get(r["post_id"], {})) for r in rows]

    async def _latest(self, post_ids: list[int]) -> dict[int, dict[str, int]]:
        """Each post's latest value of each metric."""
        if not post_ids:
            return {}
        in_list, ids = _in_list(post_ids)
        rows = await self.db._all(
            "SELECT s.post_id, s.metric, s.value FROM post_metric_samples s"
            " JOIN (SELECT post_id, metric, MAX(recorded_at) AS at FROM post_metric_samples"
            f" WHERE post_id IN {in_list} GROUP BY post_id, metric) m"
            " ON m.post_id = s.post_id AND m.metric = s.metric AND m.at = s.recorded_at"
            " ORDER BY s.sample_id", ids)
        out: dict[int, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["post_id"], {})[r["metric"]] = r["value"]
        return out

    @staticmethod
    def _post_view(r: Any, latest: dict[str, int]) -> dict[str, Any]:
        account = (f"{r['account_platform']}.{r['account_number']}"
                   if r["account_number"] is not None else None)
        return {"post_id": r["post_id"], "account": account, "account_id": r["account_id"],
                "platform": r["platform"] or r["account_platform"],
                "posted_at": iso_utc(r["posted_at"]), "caption": r["caption"],
                "hashtags": _hashtags(r["hashtags"]),
                "media": r["media_id"] or r["media_path"], "status": r["status"],
                "reason": r["reason"], "execution_id": r["execution_id"],
                "platform_post_id": r["platform_post_id"], "app": r["app"],
                "latest": {m: latest.get(m) for m in POST_METRICS}}

    async def post_samples(self, post_id: int, clients: frozenset[int] | None = None
                           ) -> tuple[list[dict], list[dict]]:
        """(samples oldest first, daily rows by date) of one post."""
        with as_clients(clients):
            samples = await self.db._all(
                "SELECT recorded_at, metric, value FROM post_metric_samples WHERE post_id = ?"
                " ORDER BY recorded_at, sample_id", (post_id,))
            daily = await self.db._all(
                "SELECT metric_date, views, likes, comments, shares, saves FROM post_metrics"
                " WHERE post_id = ? ORDER BY metric_date", (post_id,))
        return ([{"at": r["recorded_at"], "metric": r["metric"], "value": r["value"]}
                 for r in samples],
                [{"date": str(r["metric_date"])[:10], **{m: r[m] for m in POST_METRICS}}
                 for r in daily])

    # --- accounts --------------------------------------------------------------------------
    async def accounts(self, accounts: Iterable[int] | None = None,
                       clients: frozenset[int] | None = None) -> list[dict[str, Any]]:
        """Account rows (id, platform, number, username, status, client_id, phone serial)."""
        where, args = ["1 = 1"], []
        if accounts is not None:
            in_list, ids = _in_list(accounts)
            where.append(f"a.account_id IN {in_list}")
            args += ids
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT a.account_id, a.platform, a.account_number, a.username, a.status,"
                f" {ACCOUNT_CLIENT} AS client_id, ph.serial_number AS serial"
                f" FROM {_ACCOUNT_JOIN} WHERE {' AND '.join(where)}"
                " ORDER BY a.platform, a.account_number, a.account_id", args)
        return [dict(r) for r in rows]

    async def health_events(self, accounts: Iterable[int], since: float,
                            clients: frozenset[int] | None = None) -> list[dict[str, Any]]:
        in_list, ids = _in_list(accounts)
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT account_id, kind, screen, execution_id, at FROM account_health_events"
                f" WHERE account_id IN {in_list} AND at >= ? ORDER BY at, event_id",
                (*ids, since))
        return [dict(r) for r in rows]

    async def account_samples(self, accounts: Iterable[int], metric: str, since: float,
                              clients: frozenset[int] | None = None) -> dict[int, list]:
        """{account_id: [[at, value], ...]} of ``metric`` since ``since``, oldest first, plus
        the last sample before ``since`` (the start of a change over the window)."""
        in_list, ids = _in_list(accounts)
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT account_id, recorded_at, value FROM account_metric_samples"
                f" WHERE account_id IN {in_list} AND metric = ? AND recorded_at >= ?"
                " ORDER BY recorded_at, sample_id", (*ids, metric, since))
            before = await self.db._all(
                "SELECT s.account_id, s.recorded_at, s.value FROM account_metric_samples s"
                " JOIN (SELECT account_id, MAX(recorded_at) AS at FROM account_metric_samples"
                f" WHERE account_id IN {in_list} AND metric = ? AND recorded_at < ?"
                " GROUP BY account_id) m ON m.account_id = s.account_id AND m.at = s.recorded_at"
                " WHERE s.metric = ?", (*ids, metric, since, metric))
        out: dict[int, list] = {}
        for r in list(before) + list(rows):
            out.setdefault(r["account_id"], []).append([r["recorded_at"], r["value"]])
        return out

    async def last_posts(self, accounts: Iterable[int], per_account: int = 3,
                         clients: frozenset[int] | None = None) -> dict[int, list[dict]]:
        """{account_id: its newest ``per_account`` posts}, in one read."""
        in_list, ids = _in_list(accounts)
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT post_id FROM (SELECT post_id, ROW_NUMBER() OVER (PARTITION BY"
                " account_id ORDER BY posted_at DESC, post_id DESC) AS n FROM content_posts"
                f" WHERE account_id IN {in_list}) ranked WHERE n <= ?", (*ids, per_account))
            posts = await self.posts(post_ids=[r[0] for r in rows], limit=len(rows) or 1,
                                     clients=clients) if rows else []
        out: dict[int, list[dict]] = {}
        for post in posts:  # newest first already
            out.setdefault(post["account_id"], []).append(post)
        return out

    # --- daily rollups ---------------------------------------------------------------------
    async def rollup(self, day: date) -> dict[str, Any]:
        """Recompute ``day``'s (UTC) client and platform rows from the posts, their daily
        metric rows, link clicks and follower samples: the day's rows are replaced whole, so
        running it again gives the same rows. Returns the rows written."""
        return await self.db._atomic(lambda conn: self._rollup(conn, day))

    def _rollup(self, conn: Any, day: date) -> dict[str, Any]:
        start, end = day_bounds(day)
        start_text = utc_text(datetime.fromtimestamp(start, timezone.utc))
        end_text = utc_text(datetime.fromtimestamp(end, timezone.utc))
        accounts = {r[0]: (r[1], r[2]) for r in conn.execute(
            f"SELECT a.account_id, {ACCOUNT_CLIENT}, a.platform FROM {_ACCOUNT_JOIN}")}
        totals: dict[int, dict[str, int]] = {
            a: {"posts": 0, "views": 0, "likes": 0, "comments": 0, "link_clicks": 0,
                "follower_growth": 0} for a in accounts}
        for account_id, n in conn.execute(
                "SELECT account_id, COUNT(*) FROM content_posts WHERE status = ?"
                " AND posted_at >= ? AND posted_at < ? AND account_id IS NOT NULL"
                " GROUP BY account_id", (POSTED, start_text, end_text)):
            totals[account_id]["posts"] += n
        # A post's gain over the day: its day row minus its latest earlier row (none: 0).
        for r in conn.execute(
                "SELECT p.account_id, d.views, d.likes, d.comments,"
                " (SELECT b.views FROM post_metrics b WHERE b.post_id = d.post_id"
                "  AND b.metric_date < d.metric_date ORDER BY b.metric_date DESC LIMIT 1),"
                " (SELECT b.likes FROM post_metrics b WHERE b.post_id = d.post_id"
                "  AND b.metric_date < d.metric_date ORDER BY b.metric_date DESC LIMIT 1),"
                " (SELECT b.comments FROM post_metrics b WHERE b.post_id = d.post_id"
                "  AND b.metric_date < d.metric_date ORDER BY b.metric_date DESC LIMIT 1)"
                " FROM post_metrics d JOIN content_posts p ON p.post_id = d.post_id"
                " WHERE d.metric_date = ? AND p.account_id IS NOT NULL", (day.isoformat(),)):
            t = totals[r[0]]
            for i, metric in enumerate(("views", "likes", "comments")):
                t[metric] += (r[1 + i] or 0) - (r[4 + i] or 0)
        for account_id, n in conn.execute(
                "SELECT l.account_id, SUM(c.click_count) FROM link_clicks c"
                " JOIN link_in_bio l ON l.link_id = c.link_id WHERE c.click_date = ?"
                " AND l.account_id IS NOT NULL GROUP BY l.account_id", (day.isoformat(),)):
            totals[account_id]["link_clicks"] += n or 0
        # Followers gained: the day's last reading minus the last one before the day (none:
        # the day's first reading).
        for account_id in accounts:
            last = conn.execute(
                "SELECT value FROM account_metric_samples WHERE account_id = ? AND metric ="
                " 'followers' AND recorded_at >= ? AND recorded_at < ?"
                " ORDER BY recorded_at DESC, sample_id DESC LIMIT 1",
                (account_id, start, end)).fetchone()
            if last is None:
                continue
            first = conn.execute(
                "SELECT value FROM account_metric_samples WHERE account_id = ? AND metric ="
                " 'followers' AND recorded_at < ? ORDER BY recorded_at DESC, sample_id DESC"
                " LIMIT 1", (account_id, start)).fetchone() or conn.execute(
                "SELECT value FROM account_metric_samples WHERE account_id = ? AND metric ="
                " 'followers' AND recorded_at >= ? ORDER BY recorded_at, sample_id LIMIT 1",
                (account_id, start)).fetchone()
            totals[account_id]["follower_growth"] = last[0] - first[0]
        by_client: dict[tuple[int, str], dict[str, int]] = {}
        by_platform: dict[str, dict[str, int]] = {}
        for account_id, (client_id, platform) in accounts.items():
            groups = [by_platform.setdefault(platform, dict.fromkeys(totals[account_id], 0))]
            if client_id is not None:
                groups.append(by_client.setdefault((client_id, platform),
                                                   dict.fromkeys(totals[account_id], 0)))
            for group in groups:
                for name, value in totals[account_id].items():
                    group[name] += value
        text, now = day.isoformat(), utc_text()
        conn.execute("DELETE FROM client_daily_metrics WHERE metric_date = ?", (text,))
        conn.execute("DELETE FROM platform_daily_metrics WHERE metric_date = ?", (text,))
        for (client_id, platform), t in sorted(by_client.items()):
            conn.execute(
                "INSERT INTO client_daily_metrics (client_id, metric_date, platform,"
                " total_posts, total_views, total_likes, total_comments, total_link_clicks,"
                " follower_growth, engagement_rate, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (client_id, text, platform, t["posts"], t["views"], t["likes"], t["comments"],
                 t["link_clicks"], t["follower_growth"], engagement(t), now))
        for platform, t in sorted(by_platform.items()):
            conn.execute(
                "INSERT INTO platform_daily_metrics (metric_date, platform, total_posts,"
                " total_views, total_likes, total_comments, total_link_clicks,"
                " follower_growth, engagement_rate, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (text, platform, t["posts"], t["views"], t["likes"], t["comments"],
                 t["link_clicks"], t["follower_growth"], engagement(t), now))
        return {"date": text, "clients": len(by_client), "platforms": len(by_platform)}

    async def daily(self, since: str, until: str, *, clients: frozenset[int] | None = None,
                    platform_rows: bool = True) -> dict[str, list[dict[str, Any]]]:
        """The rollups' rows of days ``since``..``until`` (ISO dates, inclusive): the client
        rows of ``clients`` (None: every client) and, with ``platform_rows``, the farm's."""
        where, args = ["m.metric_date >= ? AND m.metric_date <= ?"], [since, until]
        if clients is not None:
            in_list, ids = _in_list(clients)
            where.append(f"m.client_id IN {in_list}")
            args += ids
        columns = ("m.metric_date, m.platform, m.total_posts, m.total_views, m.total_likes,"
                   " m.total_comments, m.total_link_clicks, m.follower_growth,"
                   " m.engagement_rate")
        with as_clients(clients):
            rows = await self.db._all(
                f"SELECT m.client_id, c.name AS client, {columns} FROM client_daily_metrics m"
                " LEFT JOIN clients c ON c.client_id = m.client_id"
                f" WHERE {' AND '.join(where)} ORDER BY m.metric_date, c.name, m.platform",
                args)
            out = {"clients": [_daily_view(r, client=True) for r in rows]}
            if platform_rows:
                rows = await self.db._all(
                    f"SELECT {columns} FROM platform_daily_metrics m WHERE m.metric_date >= ?"
                    " AND m.metric_date <= ? ORDER BY m.metric_date, m.platform",
                    (since, until))
                out["platforms"] = [_daily_view(r) for r in rows]
        return out


def engagement(t: dict[str, int]) -> float | None:
    """(likes + comments) / views; None without views."""
    return round((t["likes"] + t["comments"]) / t["views"], 6) if t["views"] > 0 else None


def _daily_view(r: Any, client: bool = False) -> dict[str, Any]:
    out = {"date": str(r["metric_date"])[:10], "platform": r["platform"],
           "posts": r["total_posts"], "views": r["total_views"], "likes": r["total_likes"],
           "comments": r["total_comments"], "link_clicks": r["total_link_clicks"],
           "follower_growth": r["follower_growth"], "engagement_rate": r["engagement_rate"]}
    if client:
        out = {"client_id": r["client_id"], "client": r["client"], **out}
    return out
