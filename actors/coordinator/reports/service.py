"""The daily reports' schedule and the making of one report (spec 12.4, issue 19.5).

Owns `ReportService`: making a client's report for a day (gathered by
actors.coordinator.reports.build, rendered by .render, stored by .store), handing it to the
notifier of the alerts part (``hub.notifier``: ``await send(Notice(...))``, kind
``report``; without one the report is only kept, said once in the log), and with
``--report-at HH:MM`` (UTC) one report per client for the past UTC day at that time. The
schedule is idempotent: a client's daily report of a day is stored at most once (the
store's unique key) and only the call that stored it sends it, so a restart after the
hour sends nothing twice; a coordinator that was down at the hour makes the day's reports
when it starts, and sends those stored but not yet handed over. The status stream hears
``report_started``, ``report_progress`` {done, total}, ``report_ready`` and
``report_failed``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Awaitable, Callable

from actors.coordinator.backups import next_due
from actors.coordinator.reports import build, render
from actors.coordinator.reports.store import DAILY, MANUAL, ReportStore
from protocol.errors import ValidationError
from actors.coordinator.time_of_day import parse_time_of_day

log = logging.getLogger(__name__)

Emit = Callable[[str, str | None, str | None, dict], None]
NOTICE_KIND = "report"


def parse_report_at(value: str | None) -> time | None:
    """``--report-at HH:MM`` (24-hour, UTC); None when unset."""
    return parse_time_of_day(value, "UTC")


def parse_report_threshold(value: str | int) -> int:
    """``--report-threshold N``: a whole number, 0 or more."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"{value!r}: a whole number of executions, 0 or more")
    return n


def parse_day(value: str, field: str = "$.day") -> date:
    """A ``YYYY-MM-DD`` day; ValidationError naming ``field``."""
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValidationError(field, f"{value!r}: expected a day as YYYY-MM-DD") from None


def due_day(now: datetime, at: time) -> date:
    """The latest UTC day whose report is due at ``now`` (its next day's ``at`` passed)."""
    now = now.astimezone(timezone.utc)
    today_due = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return (now.date() - timedelta(days=1)) if now >= today_due else (now.date()
                                                                      - timedelta(days=2))


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def view(row: dict[str, Any], bodies: bool = False) -> dict[str, Any]:
    """The API's form of a stored report (``bodies``: with its text and summary)."""
    rid = row["report_id"]
    out = {"id": rid, "client": row.get("client"), "client_id": row["client_id"],
           "kind": row["kind"], "day": row["day"], "period_start": row["period_start"],
           "period_end": row["period_end"], "created_at": row["created_at"],
           "created_by": row.get("created_by"), "title": row["title"],
           "sent_at": row.get("sent_at"), "send_error": row.get("send_error"),
           "url": f"/api/reports/{rid}", "html_url": f"/api/reports/{rid}.html"}
    if bodies:
        out["text"] = row["text"]
        out["summary"] = row["summary"]
    return out


class ReportService:
    """Owns making, keeping and sending the clients' reports, and their daily schedule.
    ``hub`` gives the notifier (``hub.notifier``, read at each send: the alerts part sets
    it after start), the registry (to name the registry action a recovery tapped) and the
    unknown-screens queue; any of them may be missing."""

    def __init__(self, db: Any, emit: Emit, *, public_url: str, hub: Any = None,
                 at: time | None = None, threshold: int = build.DEFAULT_THRESHOLD,
                 now: Callable[[], datetime] = _utc_now,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.db, self.emit, self.hub = db, emit, hub
        self.store = ReportStore(db)
        self.public_url = public_url.rstrip("/")
        self.at, self.threshold = at, parse_report_threshold(threshold)
        self._now, self._sleep = now, sleep
        self._said_no_notifier = False

    # -- one report ---------------------------------------------------------------------------

    async def client(self, client: str | int) -> dict[str, Any]:
        """The client row named (or numbered) ``client``; ValidationError($.client)."""
        rows = await self.db.client_rows()
        found = next((r for r in rows if r["name"] == client or r["client_id"] == client),
                     None)
        if found is None:
            raise ValidationError("$.client", f"no such client: {client!r}")
        return found

    def yesterday(self) -> date:
        """The last whole UTC day: what a report covers when no day is named."""
        return self._now().date() - timedelta(days=1)

    def check_day(self, day: date, field: str = "$.day") -> None:
        """A report covers a day that has begun (UTC)."""
        if day > self._now().date():
            raise ValidationError(field, f"{day.isoformat()} has not begun yet (UTC)")

    async def make(self, client: dict[str, Any], day: date, *, kind: str = MANUAL,
                   actor: str | None = None, send: bool = False) -> tuple[dict, bool]:
        """Make ``client``'s report of ``day``: (its stored row, made now). A daily
        report made before is returned as it is (False), and not sent again."""
        self.check_day(day)
        period = build.day_period(day, self._now())
        base = {"client": client["name"], "client_id": client["client_id"],
                "day": period.day, "kind": kind}
        if kind == DAILY and (made := await self.store.daily_id(client["client_id"],
                                                               period.day)) is not None:
            return await self.store.get(made), False
        self.emit("report_started", None, None, base)
        try:
            summary = await build.build_summary(
                self.db, client["client_id"], client["name"], period,
                public_url=self.public_url, threshold=self.threshold,
                unknown_entries=self._unknown_entries(), registry=self._registry())
            report_id, stored = await self.store.add(
                client_id=client["client_id"], kind=kind, day=period.day,
                period_start=period.start, period_end=period.end,
                title=render.title(summary), text=render.render_text(summary),
                html=render.render_html(summary), summary=summary, created_by=actor,
                created_at=self._now())
        except Exception as exc:
            log.exception("report of %s for %s failed", client["name"], period.day)
            self.emit("report_failed", None, None, {**base, "reason": f"{exc}"})
            raise
        row = await self.store.get(report_id)
        if stored and (send or kind == DAILY):
            await self.send(row)
            row = await self.store.get(report_id)
        if stored:
            self.emit("report_ready", None, None, {
                **base, "report_id": report_id, "url": f"/api/reports/{report_id}.html",
                "executions": summary["executions"]["total"],
                "success_rate": summary["success_rate"],
                "recommendations": len(summary["recommendations"]),
                "sent": row.get("sent_at") is not None})
            log.info("report %d made: %s %s (%s, %d executions, %d recommendations)",
                     report_id, client["name"], period.day, kind,
                     summary["executions"]["total"], len(summary["recommendations"]))
        return row, stored

    async def send(self, row: dict[str, Any]) -> bool:
        """Hand a stored report to the notifier (``hub.notifier.send``); False when there is none
        (kept only) or it refused (the reason stored with the report)."""
        notifier = getattr(self.hub, "notifier", None)
        if notifier is None:
            if not self._said_no_notifier:
                log.warning("reports are kept, not sent: this coordinator has no notifier "
                            "(no alert channels configured)")
                self._said_no_notifier = True
            return False
        from actors.coordinator.alerts.notify import Notice  # the alerts part's

        key = (f"report:daily:{row['client_id']}:{row['day']}" if row["kind"] == DAILY
               else f"report:{row['report_id']}")
        notice = Notice(kind=NOTICE_KIND, client_id=row["client_id"], title=row["title"],
                        text=row["text"], html=row["html"],
                        # The console's page of the report: the API's own answers only a
                        # bearer token, so a person following a link could not open it.
                        links={"report": f"{self.public_url}/#reports/{row['report_id']}"},
                        key=key)
        try:
            await notifier.send(notice)
        except Exception as exc:  # noqa: BLE001 - the report stays kept; the reason with it
            log.error("report %d not handed to the notifier: %s", row["report_id"], exc)
            await self.store.mark_sent(row["report_id"], f"{type(exc).__name__}: {exc}")
            return False
        await self.store.mark_sent(row["report_id"])
        return True

    def _registry(self) -> Any:
        store = getattr(self.hub, "registry_store", None)
        return getattr(store, "registry", None)

    def _unknown_entries(self) -> list[dict]:
        entries = getattr(self.hub, "unknown_screens", None)
        return entries() if callable(entries) else []

    # -- the schedule -------------------------------------------------------------------------

    async def daily(self, day: date) -> list[int]:
        """Every client's daily report of ``day`` not made yet; the ids made now. One
        client's failure (logged, on the stream) does not stop the others."""
        clients = [c for c in await self.db.client_rows() if c.get("status") != "retired"]
        made: list[int] = []
        for done, client in enumerate(clients, 1):
            try:
                row, stored = await self.make(client, day, kind=DAILY, actor="schedule")
                if stored:
                    made.append(row["report_id"])
            except Exception:  # noqa: BLE001 - told in make; the next client goes on
                pass
            self.emit("report_progress", None, None, {"day": day.isoformat(), "done": done,
                                                      "total": len(clients)})
        return made

    async def catch_up(self) -> list[int]:
        """At start: the reports due by now and not made (the coordinator was down at the
        hour), then those stored but never handed to the notifier (stopped in between)."""
        if self.at is None:
            return []
        day = due_day(self._now(), self.at)
        made = await self.daily(day)
        for row in await self.store.unsent_daily((day - timedelta(days=1)).isoformat()):
            if row["report_id"] not in made and await self.send(row):
                log.info("report %d (%s %s) sent after a restart", row["report_id"],
                         row.get("client"), row["day"])
        return made

    async def loop(self) -> None:
        """Catch up, then every day at ``at`` (UTC) the past day's reports. The clock is
        looked at again at least once a minute."""
        if self.at is None:
            return
        await self._logged(self.catch_up())
        while True:
            due = next_due(self._now(), self.at)
            log.info("next daily reports at %s", due.isoformat(timespec="minutes"))
            while (left := (due - self._now()).total_seconds()) > 0:
                await self._sleep(min(left, 60.0))
            await self._logged(self.daily(due.date() - timedelta(days=1)))

    async def _logged(self, work: Awaitable[Any]) -> None:
        """A day's reports that could not be made (the database unreachable, say) are
        logged; the schedule goes on, and the next start catches the day up."""
        try:
            await work
        except Exception:  # noqa: BLE001 - the loop must outlive one bad day
            log.exception("daily reports failed")
