"""Evaluating alert rules: on hub events as they happen, and on a periodic tick for
durations, rates and the disk.

`AlertEngine` owns the alerts' life: a rule's condition becoming true about a subject (a
phone, a node, a sequence, the farm) fires one alert (a row in ``alerts`` and an
``alert`` notice), repeated at most every ``repeat`` while it stays true and nobody acked
it, and resolved (a ``resolved`` notice) when it turns false. Event kinds
(recovery_failed, run_finished, workflow_finished) are one notice per occurrence. A
silenced rule records its alerts but sends nothing until the silence ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import statistics
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from actors.coordinator.alerts.notify import Notice, Notifier
from actors.coordinator.alerts.rules import KINDS, AlertsConfig, Rule, format_duration_s
from actors.coordinator.alerts.store import AlertStore, iso
from actors.coordinator.runs import ACTIVE
from actors.store.execution_records import utc_text

log = logging.getLogger(__name__)

TICK_S = 2.0           # durations (offline N minutes, node down N s) are checked this often
QUERY_EVERY_S = 30.0   # failure rates and scheduler delay (database reads) at most this often
DISK_EVERY_S = 60.0
RATE_WINDOW_S = 3600.0
# Events after which conditions are looked at again at once (not at the next tick).
CONDITION_EVENTS = frozenset({"phone_up", "phone_down", "phone_paused", "phone_resumed",
                              "phone_restarted", "phone_failed", "node_up", "node_down"})
UNREACHABLE = frozenset({"offline", "paused"})  # a phone row's states counted as offline
CONDITION_KINDS = ("phone_offline", "phone_paused", "node_down")
QUERY_KINDS = ("failure_rate", "scheduler_delay")
RUN_CHECK_S = 1.0      # a run's executions are read at most this often
# The events the engine acts on (the rest of the stream is not kept).
WATCHED_EVENTS = CONDITION_EVENTS | {"recovery_failed", "execution_finished",
                                     "workflow_finished"}


class AlertEngine:
    """Owns the rules in force and the firing alerts of one coordinator; `run` is its task."""

    def __init__(self, hub: Any, store: AlertStore, notifier: Notifier, *,
                 data_dir: str | Path = ".", tick_s: float = TICK_S,
                 query_every_s: float = QUERY_EVERY_S) -> None:
        self.hub = hub
        self.store = store
        self.notifier = notifier
        self.data_dir = Path(data_dir)
        self.tick_s = tick_s
        self.query_every_s = query_every_s
        self.rules: list[Rule] = []
        self.firing: dict[tuple[int, str], dict] = {}   # (rule_id, subject) -> alert row
        self.node_down_since: dict[str, float] = {}
        self._last_query = 0.0
        self._last_disk = 0.0
        self._query_soon = False
        self._disk_active: dict[int, dict[str, dict]] = {}
        self._query_active: dict[int, dict[str, dict]] = {}
        self._lock = asyncio.Lock()
        self._runs_pending: dict[str, float] = {}   # run_id -> an execution of it finished
        self._runs_checked: dict[str, float] = {}   # run_id -> last looked at (monotonic)
        # Events handed over by the hub's emit (`observe`), in order and never dropped: a
        # subscriber's bounded queue drops the oldest under load, which would lose notices.
        self._events: asyncio.Queue[dict] = asyncio.Queue()

    @property
    def public_url(self) -> str:
        return self.notifier.public_url

    async def load(self, config: AlertsConfig) -> None:
        """The config file's rules into the store (clients checked: ValidationError naming
        the rule), then every rule and firing alert."""
        rules = []
        for rule in config.rules:
            where = f"{config.path}: rule {rule.name!r}: client"
            rules.append(replace(rule, client_id=await self.store.client_id(rule.client, where)))
        for rule in rules:
            existing = await self.store.rule(rule.name)
            if existing is not None and existing.source != "file":
                raise_taken(config.path, rule.name)
        await self.store.sync_file_rules(rules)
        await self.reload()

    async def reload(self) -> None:
        """Take the stored rules again (after an API change)."""
        async with self._lock:
            self.rules = await self.store.rules()
            self._last_query = self._last_disk = 0.0  # a new rule is looked at the next tick
            known = {r.rule_id for r in self.rules}
            self.firing = {(a["rule_id"], a["subject"]): a for a in await self.store.firing()
                           if a["rule_id"] in known}

    # --- the loop ---------------------------------------------------------------------------
    def observe(self, item: dict) -> None:
        """Take one emitted event (called inside the hub's emit: memory only, no I/O)."""
        if item["event"] in WATCHED_EVENTS:
            self._events.put_nowait(item)

    async def run(self) -> None:
        self.hub.event_observers.append(self.observe)
        try:
            next_tick = time.monotonic()
            while True:
                timeout = max(0.0, next_tick - time.monotonic())
                item = None
                with contextlib.suppress(asyncio.TimeoutError):
                    item = await asyncio.wait_for(self._events.get(), timeout=timeout)
                try:
                    if item is not None:
                        await self.on_event(item)
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self.tick_s
                        await self.tick()
                except Exception:  # one bad evaluation must not end alerting
                    log.exception("alert evaluation failed")
        finally:
            self.hub.event_observers.remove(self.observe)

    async def on_event(self, item: dict) -> None:
        name, data = item["event"], item.get("data") or {}
        if name == "node_down" and item.get("node"):
            self.node_down_since.setdefault(item["node"], item.get("ts") or time.time())
        elif name == "node_up" and item.get("node"):
            self.node_down_since.pop(item["node"], None)
        if name in CONDITION_EVENTS:
            await self.evaluate_conditions()
        elif name == "recovery_failed":
            await self._recovery_failed(item.get("serial"), data)
        elif name == "execution_finished":
            self._query_soon = True
            await self._run_finished(data)
        elif name == "workflow_finished":
            await self._workflow_finished(data)

    async def tick(self) -> None:
        await self.evaluate_conditions()
        if self._runs_pending:
            await self._check_pending_runs()
        now = time.time()
        if any(r.kind == "disk" for r in self.rules) and now - self._last_disk >= DISK_EVERY_S:
            self._last_disk = now
            await self._check_disk()
        if any(r.kind in QUERY_KINDS for r in self.rules) and (
                now - self._last_query >= self.query_every_s
                or (self._query_soon and now - self._last_query >= self.tick_s)):
            self._last_query, self._query_soon = now, False
            await self._check_queries()

    # --- conditions -------------------------------------------------------------------------
    def _active(self, rule: Rule, now: float) -> dict[str, dict]:
        """subject -> {"title", "text", "links", "since"} of ``rule``'s true conditions."""
        hub = self.hub
        out: dict[str, dict] = {}
        if rule.kind == "phone_offline":
            limit = rule.params["minutes"] * 60
            for serial, row in list(hub.phone_rows.items()):
                # "paused" in a row is the node's pause of a phone it cannot reach
                # (unplugged, offline, unauthorized); the coordinator's pause is phone_paused.
                if row.get("state") not in UNREACHABLE or not self._phone_in(rule, serial):
                    continue
                since = row.get("state_at") or now
                if now - since >= limit:
                    out[serial] = {
                        "since": since,
                        "title": f"Phone {serial} offline for {_minutes(now - since)}",
                        "text": f"Phone {serial} on node {row.get('node')} has been "
                                f"{'offline' if row.get('state') == 'offline' else 'unreachable'}"
                                f" since {iso(since)} (rule {rule.name}: longer than "
                                f"{rule.params['minutes']:g} min).",
                        "links": {"phone": self._url("#wall")}}
        elif rule.kind == "phone_paused":
            pauses = getattr(hub, "pauses", None)
            for serial, pause in list((pauses.paused if pauses is not None else {}).items()):
                if not self._phone_in(rule, serial):
                    continue
                detail = pause.get("detail") or {}
                out[serial] = {
                    "since": now,
                    "title": f"Phone {serial} paused: {pause.get('reason')}",
                    "text": f"The coordinator paused phone {serial} ({pause.get('reason')}, "
                            f"since {pause.get('since')} UTC)."
                            + (f" Last failure: {detail['last_failure']}"
                               if detail.get("last_failure") else "")
                            + f" Resume it with `farm resume {serial}`.",
                    "links": {"phone": self._url("#wall")}}
        elif rule.kind == "node_down":
            limit = rule.params["seconds"]
            for node, row in list(hub.node_rows.items()):
                if row.get("state") != "down":
                    self.node_down_since.pop(node, None)
                    continue
                since = self.node_down_since.setdefault(node, now)
                if now - since >= limit:
                    out[node] = {"since": since, "title": f"Node {node} down",
                                 "text": f"Node {node} has not been heard from since "
                                         f"{iso(since)} (rule {rule.name}: longer than "
                                         f"{limit:g} s); its phones are offline.",
                                 "links": {"nodes": self._url("#wall")}}
        elif rule.kind == "disk":
            out = self._disk_active.get(rule.rule_id, {})
        elif rule.kind in QUERY_KINDS:
            out = self._query_active.get(rule.rule_id, {})
        return out

    def _phone_in(self, rule: Rule, serial: str) -> bool:
        if rule.client is None:
            return True
        owners = getattr(self.hub, "owners", None)
        return owners is not None and owners.client_name(serial) == rule.client

    async def evaluate_conditions(self, kinds: tuple[str, ...] | None = None) -> None:
        async with self._lock:
            now = time.time()
            for rule in self.rules:
                if KINDS[rule.kind].event or (kinds is not None and rule.kind not in kinds):
                    continue
                # A disabled rule's alerts resolve (nothing watches them any more).
                await self._settle(rule, self._active(rule, now) if rule.enabled else {}, now)

    async def _settle(self, rule: Rule, active: dict[str, dict], now: float) -> None:
        """Fire what turned true, repeat what is due, resolve what turned false."""
        for subject, what in active.items():
            alert = self.firing.get((rule.rule_id, subject))
            if alert is None:
                await self._fire(rule, subject, what, now)
            elif not alert.get("notified") and not alert.get("acked_by") \
                    and not self._silenced(rule, now):
                # Its first notice never went out (the send failed, the coordinator stopped
                # before it, or a silence ended): send it now, not a repeat later (or never).
                # The key alert:<id>:0 makes a notice that did get stored count once.
                await self._notify(rule, alert, "alert", what, now)
            elif rule.repeat_s is not None and not alert.get("acked_by") \
                    and now - (alert.get("last_notified_at") or alert["since"]) >= rule.repeat_s:
                await self._notify(rule, alert, "alert", what, now, repeat=True)
        for (rule_id, subject), alert in list(self.firing.items()):
            if rule_id == rule.rule_id and subject not in active:
                await self._resolve(rule, alert, now)

    async def _fire(self, rule: Rule, subject: str, what: dict, now: float) -> None:
        alert_id = await self.store.open_alert(rule, subject, now, what["title"], what["text"],
                                               what["links"])
        alert = {"alert_id": alert_id, "rule_id": rule.rule_id, "subject": subject,
                 "since": now, "last_notified_at": None, "notified": 0, "acked_by": None}
        self.firing[(rule.rule_id, subject)] = alert
        log.warning("alert %d fired: rule %s (%s) %s: %s", alert_id, rule.name, rule.kind,
                    subject, what["title"])
        self.hub.emit("alert_fired", None, _serial(rule, subject), {
            "id": alert_id, "rule": rule.name, "kind": rule.kind, "subject": subject,
            "title": what["title"]})
        await self._notify(rule, alert, "alert", what, now)

    async def _resolve(self, rule: Rule, alert: dict, now: float) -> None:
        self.firing.pop((rule.rule_id, alert["subject"]), None)
        await self.store.resolve(alert["alert_id"], now)
        log.info("alert %d resolved: rule %s %s", alert["alert_id"], rule.name, alert["subject"])
        self.hub.emit("alert_resolved", None, _serial(rule, alert["subject"]), {
            "id": alert["alert_id"], "rule": rule.name, "subject": alert["subject"]})
        if alert.get("notified"):  # nobody heard of it (silenced): nothing to take back
            what = {"title": f"Resolved: {rule.kind.replace('_', ' ')} {alert['subject']}",
                    "text": f"Alert {alert['alert_id']} of rule {rule.name} about "
                            f"{alert['subject']} is resolved (firing since "
                            f"{iso(alert['since'])}, {_minutes(now - alert['since'])}).",
                    "links": {"alerts": self._url("#alerts")}}
            await self._notify(rule, alert, "resolved", what, now)

    async def _notify(self, rule: Rule, alert: dict, kind: str, what: dict, now: float,
                      repeat: bool = False) -> None:
        if self._silenced(rule, now):
            return
        count = alert.get("notified", 0)
        key = f"{kind}:{alert['alert_id']}" + (f":{count}" if kind == "alert" else "")
        title = what["title"] if not repeat else f"Still: {what['title']}"
        text = what["text"] + (f"\nAlert {alert['alert_id']} (rule {rule.name}); ack it with "
                               f"`farm alerts ack {alert['alert_id']}`." if kind == "alert" else "")
        await self.notifier.send(Notice(kind=kind, client_id=rule.client_id, title=title,
                                        text=text, links=what["links"], key=key),
                                 list(rule.channels) if rule.channels is not None else None)
        if kind == "alert":
            await self.store.notified(alert["alert_id"], now)
            alert["last_notified_at"], alert["notified"] = now, count + 1

    @staticmethod
    def _silenced(rule: Rule, now: float) -> bool:
        return rule.silenced_until is not None and rule.silenced_until > now

    # --- the disk and the database's figures ------------------------------------------------
    async def _check_disk(self) -> None:
        for rule in self.rules:
            if rule.kind != "disk" or not rule.enabled:
                continue
            path = rule.params.get("path") or str(self.data_dir)
            try:
                usage = await asyncio.to_thread(shutil.disk_usage, path)
            except OSError as exc:
                log.warning("alert rule %s: disk of %s unreadable: %s", rule.name, path, exc)
                continue
            used = 100.0 * usage.used / usage.total if usage.total else 0.0
            active = {}
            if used > rule.params["percent"]:
                active["disk"] = {"since": time.time(),
                                  "title": f"Disk of {path} {used:.0f}% full",
                                  "text": f"The disk holding {path} is {used:.1f}% used "
                                          f"({usage.free / 1e9:.1f} GB free; rule {rule.name}: "
                                          f"over {rule.params['percent']:g}%).",
                                  "links": {"console": self._url("")}}
            self._disk_active[rule.rule_id] = active
        await self.evaluate_conditions(("disk",))

    async def _check_queries(self) -> None:
        rates: dict[int | None, dict] = {}
        for rule in self.rules:
            if not rule.enabled:
                continue
            if rule.kind == "failure_rate":
                if rule.client_id not in rates:
                    rates[rule.client_id] = await self._failure_counts(rule.client_id)
                self._query_active[rule.rule_id] = self._rate_active(rule, rates[rule.client_id])
            elif rule.kind == "scheduler_delay":
                self._query_active[rule.rule_id] = await self._delay_active(rule)
        await self.evaluate_conditions(QUERY_KINDS)

    async def _failure_counts(self, client_id: int | None) -> dict[str, tuple[int, int, str]]:
        """sequence -> (finished, failed, last failed execution) over the last hour."""
        since = utc_text(datetime.now(timezone.utc) - timedelta(seconds=RATE_WINDOW_S))
        where, args = "", [since]
        if client_id is not None:
            where = (" AND serial IN (SELECT serial_number FROM phones WHERE client_id = ?)")
            args.append(client_id)
        rows = await self.store.db._all(
            "SELECT sequence, COUNT(*), SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),"
            " MAX(CASE WHEN status = 'failed' THEN execution_key END) FROM executions"
            " WHERE start_time >= ? AND status IN ('completed', 'failed')" + where
            + " GROUP BY sequence", args)
        return {r[0]: (int(r[1]), int(r[2] or 0), r[3]) for r in rows if r[0]}

    def _rate_active(self, rule: Rule, counts: dict[str, tuple[int, int, str]]) -> dict:
        out = {}
        for sequence, (finished, failed, last) in counts.items():
            if rule.params.get("sequence") and sequence != rule.params["sequence"]:
                continue
            if finished < rule.params["min_executions"]:
                continue
            rate = 100.0 * failed / finished
            if rate > rule.params["percent"]:
                links = {"executions": self._url("#executions")}
                if last:
                    links["last failure"] = self._url(f"#executions/{quote(last, safe='')}")
                out[sequence] = {"since": time.time(),
                                 "title": f"{sequence}: {rate:.0f}% failed in the last hour",
                                 "text": f"Sequence {sequence}: {failed} of {finished} "
                                         f"executions failed in the last hour ({rate:.1f}%; "
                                         f"rule {rule.name}: over {rule.params['percent']:g}%).",
                                 "links": links}
        return out

    async def _delay_active(self, rule: Rule) -> dict:
        delays = await self.dispatch_delays(rule.params["window_minutes"] * 60)
        if not delays:
            return {}
        p95 = _p95(delays)
        if p95 <= rule.params["seconds"]:
            return {}
        return {"scheduler": {"since": time.time(),
                              "title": f"Scheduler running late: p95 {p95:.0f} s",
                              "text": f"Scheduled executions started {p95:.1f} s after their "
                                      f"time (p95 of {len(delays)} in the last "
                                      f"{rule.params['window_minutes']:g} min; rule "
                                      f"{rule.name}: over {rule.params['seconds']:g} s).",
                              "links": {"schedules": self._url("#schedules")}}}

    async def dispatch_delays(self, window_s: float) -> list[float]:
        """Seconds from each scheduled occurrence to its execution's start, for executions
        started in the last ``window_s``: a scheduled run's id is
        ``<schedule>@<occurrence, UTC>`` (actors.coordinator.scheduling.scheduler
        occurrence_run_id) and its record's start_time is when it was dispatched."""
        since = utc_text(datetime.now(timezone.utc) - timedelta(seconds=window_s))
        rows = await self.store.db._all(
            "SELECT run_id, start_time FROM executions WHERE start_time >= ?"
            " AND run_id LIKE '%@%'", (since,))
        out = []
        for run_id, start in rows:
            try:
                due = datetime.strptime(run_id.rsplit("@", 1)[1], "%Y%m%dT%H%M%SZ")
                began = datetime.fromisoformat(str(start)).replace(tzinfo=None)
            except (ValueError, IndexError):
                continue
            out.append(max(0.0, (began - due).total_seconds()))
        return out

    # --- event kinds ------------------------------------------------------------------------
    async def _event_alert(self, rule: Rule, subject: str, kind: str, what: dict) -> None:
        """An event kind's one notice (deduplicated by rule and subject)."""
        now = time.time()
        alert_id = await self.store.open_alert(rule, subject, now, what["title"], what["text"],
                                               what["links"], state="resolved")
        self.hub.emit("alert_fired", None, _serial(rule, subject), {
            "id": alert_id, "rule": rule.name, "kind": rule.kind, "subject": subject,
            "title": what["title"]})
        if self._silenced(rule, now):
            return
        await self.notifier.send(Notice(kind=kind, client_id=rule.client_id, title=what["title"],
                                        text=what["text"], links=what["links"],
                                        key=f"{rule.rule_id}:{subject}"),
                                 list(rule.channels) if rule.channels is not None else None)
        await self.store.notified(alert_id, now)

    def _event_rules(self, kind: str, serial: str | None = None) -> list[Rule]:
        return [r for r in self.rules if r.kind == kind and r.enabled
                and (serial is None or self._phone_in(r, serial))]

    async def _recovery_failed(self, serial: str | None, data: dict) -> None:
        rules = self._event_rules("recovery_failed", serial)
        if not rules or not serial:
            return
        execution = str(data.get("execution_id") or "")
        links = {"execution": self._url(f"#executions/{quote(execution, safe='')}")} \
            if execution else {}
        shot = await self._screenshot(execution) if execution else None
        if shot:
            links["screenshot"] = shot
        what = {"title": f"Recovery failed on {serial}",
                "text": f"AI recovery of execution {execution} on phone {serial} failed: "
                        f"{data.get('reason')}: {data.get('detail') or ''}".rstrip(": ")
                        + (f" ({data.get('failures_in_a_row')} in a row"
                           + ("; the phone is paused" if data.get("phone_paused") else "")
                           + ")" if data.get("failures_in_a_row") else ""),
                "links": links}
        for rule in rules:
            await self._event_alert(rule, f"{execution or serial}:{data.get('attempt', '')}",
                                    "alert", what)

    async def _screenshot(self, execution_id: str) -> str | None:
        """The console page that shows the execution's failure screenshot, if it has one (the
        image's API route answers only a bearer token: a person could not open it)."""
        runs = getattr(self.hub, "runs", None)
        if runs is None:
            return None
        try:
            view = await runs.get_execution(execution_id)
        except Exception:  # gone, or no database: the notice goes without it
            return None
        if not any(s.get("screenshot") for s in view.get("steps", [])):
            return None
        return self._url(f"#executions/{quote(execution_id, safe='')}")

    async def _run_finished(self, data: dict) -> None:
        run_id = data.get("run_id")
        if not self._event_rules("run_finished") or not run_id or data.get("recovering"):
            return
        self._runs_pending[run_id] = time.monotonic()
        if time.monotonic() - self._runs_checked.get(run_id, 0.0) >= RUN_CHECK_S:
            await self._check_run(run_id)
        # else: a big run finishing execution after execution is looked at once a second
        # (by the tick), not once per execution

    async def _check_pending_runs(self) -> None:
        now = time.monotonic()
        for run_id in list(self._runs_pending):
            if now - self._runs_checked.get(run_id, 0.0) >= RUN_CHECK_S:
                await self._check_run(run_id)
        for run_id, at in list(self._runs_checked.items()):
            if now - at > 3600 and run_id not in self._runs_pending:
                del self._runs_checked[run_id]

    async def _check_run(self, run_id: str) -> None:
        """Notify the run_finished rules of ``run_id`` once none of its executions is
        active (one read of its statuses until then)."""
        self._runs_checked[run_id] = time.monotonic()
        runs = getattr(self.hub, "runs", None)
        if runs is None:
            self._runs_pending.pop(run_id, None)
            return
        records = await runs.db.list_executions(run_id=run_id)
        if any(r.get("status") in ACTIVE for r in records):
            return
        self._runs_pending.pop(run_id, None)
        try:
            run = await runs.get_run(run_id)
        except Exception:  # gone meanwhile
            return
        if run["status"] == "running":
            return
        rules = self._event_rules("run_finished")
        executions = run["executions"]
        failed = [e for e in executions if e["status"] != "completed"]
        owners = getattr(self.hub, "owners", None)
        clients = {owners.client_name(e["serial"]) if owners is not None else None
                   for e in executions}
        for rule in rules:
            if rule.params.get("sequence") and rule.params["sequence"] != run["sequence"]:
                continue
            if rule.params["status"] != "any" and rule.params["status"] != run["status"]:
                continue
            if rule.client is not None and clients != {rule.client}:
                continue
            links = {"executions": self._url("#executions")}
            if failed:
                links["failure"] = self._url(
                    f"#executions/{quote(failed[0]['execution_id'], safe='')}")
                # The execution's console page, which shows the screenshot (not the image's
                # API route: a person's browser has no token for it).
                shot = next((e["execution_id"] for e in failed
                             if any(s.get("screenshot") for s in e.get("steps", []))), None)
                if shot:
                    links["screenshot"] = self._url(f"#executions/{quote(shot, safe='')}")
            text = (f"Run {run_id} of {run['sequence']} finished {run['status']}: "
                    f"{len(executions) - len(failed)} of {len(executions)} executions completed.")
            for e in failed[:10]:
                text += f"\n- {e['serial']}: {e['status']} {e.get('reason') or ''} " \
                        f"{e.get('error') or ''}".rstrip()
            await self._event_alert(rule, run_id, "run_finished", {
                "title": f"Run {run['sequence']} {run['status']}", "text": text,
                "links": links})

    async def _workflow_finished(self, data: dict) -> None:
        rules = self._event_rules("workflow_finished")
        wfx = data.get("workflow_execution_id")
        for rule in rules:
            if rule.params.get("workflow") and rule.params["workflow"] != data.get("workflow"):
                continue
            if rule.params["status"] != "any" and rule.params["status"] != data.get("status"):
                continue
            if rule.client is not None and not await self._workflow_of(wfx, rule.client_id):
                continue
            await self._event_alert(rule, f"workflow:{wfx}", "workflow_finished", {
                "title": f"Workflow {data.get('workflow')} {data.get('status')}",
                "text": f"Workflow run {wfx} of {data.get('workflow')} finished "
                        f"{data.get('status')}" + (f": {data['error']}" if data.get("error")
                                                   else "."),
                "links": {"schedules": self._url("#schedules")}})

    async def _workflow_of(self, wfx: Any, client_id: int | None) -> bool:
        """Whether the workflow run touched ``client_id``'s phones and no other client's:
        a client's rule hears only of its own runs, and the notice's text (the workflow's
        error) may speak of every phone the run touched."""
        row = await self.store.db._one("SELECT client_ids FROM workflow_executions"
                                       " WHERE workflow_execution_id = ?", (wfx,))
        if row is None or client_id is None:
            return False
        try:
            clients = orjson.loads(row[0] or "[]")
        except orjson.JSONDecodeError:
            return False
        return isinstance(clients, list) and set(clients) == {client_id}

    def _url(self, path: str) -> str:
        return f"{self.public_url}/{path}"


def raise_taken(path: str | None, name: str) -> None:
    from protocol.errors import ValidationError
    raise ValidationError(f"{path}: rule {name!r}: name",
                          "an API rule has this name: rename one of them")


def _serial(rule: Rule, subject: str) -> str | None:
    """The stream event's serial for a phone's alert (so its client's console sees it)."""
    return subject if rule.kind in ("phone_offline", "phone_paused") else None


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return format_duration_s(round(seconds / 60) * 60) or ""


def _p95(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[-1]
