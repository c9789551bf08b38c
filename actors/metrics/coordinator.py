"""The coordinator's metrics: what the farm does (actions, executions, step failures,
recovery), how its machinery keeps up (event-link lag and re-sends, scheduler queue and
dispatch delay, database write latency) and the farm's state (phones by state per node and
client, each node's health), in one CollectorRegistry of its own."""

from __future__ import annotations

import time
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from actors.metrics.labels import BoundedLabel, LastSeen
from actors.metrics.serve import parse_listen
from actors.process import StartupError

# Seconds. Actions: a tap on the agent path is ~10 ms, a shell `input` ~230 ms, a
# screenshot over USB up to a second; a swipe may last 10 s.
ACTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0)
DISPATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# A phone row's state as the metrics count it (the stats rollups use the same words).
PHONE_STATES = ("busy", "idle", "paused", "offline", "failed")
# Events the node sends that carry no travel time worth measuring (made here, or live).
_NOT_LINK = frozenset({"thumbnail", "node_up", "node_down", "overflow"})


def phone_state(view: dict) -> str:
    """busy / idle / paused / offline / failed for one phone view (`Hub.phones`)."""
    state = view.get("state")
    if state == "online":
        return "busy" if view.get("lock_holder") else "idle"
    return state if state in PHONE_STATES else "offline"


class CoordinatorMetrics:
    """Owns the coordinator's CollectorRegistry. Fed by `observe` (every event `Hub.emit`
    sends to the status stream: node events once stored, and the coordinator's own such as
    recovery), `dispatched` (the scheduler) and the database writers' hooks (`watch_db`);
    the farm's state is read from the hub when scraped (`_HubState`). ``per_phone`` adds
    per-serial series (`--metrics-per-phone`); otherwise no label is a serial."""

    def __init__(self, hub: Any, *, per_phone: bool = False) -> None:
        self.hub = hub
        self.per_phone = per_phone
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._type = BoundedLabel(64)
        self._status = BoundedLabel(32)
        self._sequence = BoundedLabel(500)
        self._reason = BoundedLabel(100)
        self._node = BoundedLabel(500)
        self._sequences = LastSeen()
        # Label children by (metric, values): prometheus-client's labels() validates and
        # locks at every call, a few microseconds each on the hot path of every event.
        self._children: dict[tuple, Any] = {}
        self.actions = Counter("farm_actions", "Device actions done on phones (every node), "
                               "by action type and result", ["type", "status"], registry=r)
        self.action_seconds = Histogram("farm_action_seconds", "How long a device action "
                                        "took on its phone, by action type", ["type"],
                                        buckets=ACTION_BUCKETS, registry=r)
        self.started = Counter("farm_executions_started", "Executions started (a resumed "
                               "one counts again), by sequence", ["sequence"], registry=r)
        self.finished = Counter("farm_executions_finished", "Executions ended, by sequence "
                                "and status (completed, failed, cancelled)",
                                ["sequence", "status"], registry=r)
        self.step_failures = Counter("farm_step_failures", "Steps that failed after their "
                                     "retries, by reason", ["reason"], registry=r)
        self.recovery_attempts = Counter("farm_recovery_attempts", "AI recovery attempts "
                                         "started", registry=r)
        self.recovery_outcomes = Counter("farm_recovery_outcomes", "AI recovery attempts "
                                         "ended, by outcome (succeeded, failed) and reason",
                                         ["outcome", "reason"], registry=r)
        self.link_lag = Histogram("farm_event_link_lag_seconds", "From a node publishing an "
                                  "event to the coordinator having stored it (includes "
                                  "re-sends after a drop; clocks of node and coordinator "
                                  "machines assumed in step)", ["node"],
                                  buckets=LAG_BUCKETS, registry=r)
        self.dispatch_delay = Histogram("farm_scheduler_dispatch_delay_seconds", "From a "
                                        "scheduled job being due to its execution starting",
                                        buckets=DISPATCH_BUCKETS, registry=r)
        self.db_write = Histogram("farm_db_write_seconds", "A database write as its caller "
                                  "waits for it (queue and commit), by database "
                                  "(farm, events)", ["db"], buckets=DB_BUCKETS, registry=r)
        self.db_commit = Histogram("farm_db_commit_seconds", "One writer transaction (a batch "
                                   "of writes), by database", ["db"], buckets=DB_BUCKETS,
                                   registry=r)
        self.phone_actions = (Counter("farm_phone_actions", "Device actions per phone "
                                      "(--metrics-per-phone)", ["serial", "type"], registry=r)
                              if per_phone else None)
        r.register(_HubState(self))

    # --- fed by the hub ----------------------------------------------------------------
    def observe(self, item: dict) -> None:
        """One event as `Hub.emit` sends it ({event, ts, node, serial, data})."""
        name, data = item.get("event"), item.get("data") or {}
        if not isinstance(data, dict):
            return
        node = item.get("node")
        if node and name not in _NOT_LINK and isinstance(data.get("at"), (int, float)):
            self._child(self.link_lag, self._node(node)).observe(
                max(0.0, float(item.get("ts") or time.time()) - data["at"]))
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self, item, data)

    def _action(self, item: dict, data: dict) -> None:
        kind = self._type(data.get("action"))
        self._child(self.actions, kind, self._status(data.get("status"))).inc()
        ms = data.get("ms")
        if isinstance(ms, (int, float)) and ms >= 0:
            self._child(self.action_seconds, kind).observe(ms / 1000.0)
        if self.phone_actions is not None and item.get("serial"):
            self.phone_actions.labels(str(item["serial"]), kind).inc()

    def _started(self, item: dict, data: dict) -> None:
        sequence = self._sequence(data.get("sequence"))
        if data.get("execution_id"):
            self._sequences.put(str(data["execution_id"]), sequence)
        self._child(self.started, sequence).inc()

    def _finished(self, item: dict, data: dict) -> None:
        sequence = self._sequences.get(data.get("execution_id"))
        self._child(self.finished, sequence, self._status(data.get("status"))).inc()

    def _step(self, item: dict, data: dict) -> None:
        if data.get("status") == "failed":
            self._child(self.step_failures, self._reason(data.get("reason"))).inc()

    def _recovery(self, item: dict, data: dict) -> None:
        name = item.get("event")
        if name == "recovery_started":
            self.recovery_attempts.inc()
        elif name == "recovery_succeeded":
            self.recovery_outcomes.labels("succeeded", "").inc()
        else:
            self.recovery_outcomes.labels("failed", self._reason(data.get("reason"))).inc()

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def dispatched(self, delay_s: float) -> None:
        """A scheduled job started ``delay_s`` after it was due (ScheduleService)."""
        self.dispatch_delay.observe(max(0.0, delay_s))

    def watch_db(self, name: str, writer: Any) -> None:
        """Time ``writer``'s (a SingleWriter's) writes under ``db=name``."""
        if writer is None:
            return
        writer.on_write = self.db_write.labels(name).observe
        writer.on_commit = self.db_commit.labels(name).observe


_HANDLERS = {
    "action_result": CoordinatorMetrics._action,
    "execution_started": CoordinatorMetrics._started,
    "execution_finished": CoordinatorMetrics._finished,
    "step_finished": CoordinatorMetrics._step,
    "recovery_started": CoordinatorMetrics._recovery,
    "recovery_succeeded": CoordinatorMetrics._recovery,
    "recovery_failed": CoordinatorMetrics._recovery,
}


def _phone_states(hub: Any) -> Iterable[tuple[str, str, str, str]]:
    """(serial, node, client, state) of every phone, as `Hub.phones` would show it (the
    coordinator's pause over the node's state), read from the hub's rows without building
    each phone's view (a scrape of 1000 phones would copy 1000 dicts for four fields)."""
    rows = getattr(hub, "phone_rows", None)
    if not isinstance(rows, dict):  # a hub without rows: its views
        for view in hub.phones():
            yield (str(view["serial"]), str(view.get("node") or ""),
                   str(view.get("client") or ""), phone_state(view))
        return
    pauses, owners = getattr(hub, "pauses", None), getattr(hub, "owners", None)
    for serial, row in list(rows.items()):
        state = row.get("state")
        if state in ("online", "paused") and pauses is not None \
                and pauses.of(serial) is not None:
            state = "paused"
        elif state == "online":
            state = "busy" if row.get("lock_holder") else "idle"
        elif state not in PHONE_STATES:
            state = "offline"
        client = owners.client_name(serial) if owners is not None else None
        yield str(serial), str(row.get("node") or ""), str(client or ""), state


class _HubState(Collector):
    """What the hub knows now, read at scrape time on the loop: phones by state per node
    and client, nodes and their health, the scheduler's queue, the link's re-sends."""

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list:
        # Nothing to check at registration: the state it reads may not exist yet.
        return []

    def collect(self) -> Iterable[Any]:
        hub = self.metrics.hub
        yield from self._phones(hub)
        yield from self._nodes(hub)
        schedules = getattr(hub, "schedules", None)
        queued = GaugeMetricFamily("farm_scheduler_queue_depth", "Scheduled jobs waiting to "
                                   "start (queued)")
        core = getattr(schedules, "scheduler", None)
        queued.add_metric([], sum(1 for job in core.state.jobs.values()
                                  if job.status == "queued") if core is not None else 0)
        yield queued
        counts = getattr(getattr(hub, "link", None), "counts", {})
        resends = CounterMetricFamily("farm_link_command_resends", "Commands sent again to a "
                                      "node for want of a result")
        resends.add_metric([], counts.get("command_resends", 0))
        yield resends
        asked = CounterMetricFamily("farm_link_event_resend_requests", "Times a node was "
                                    "asked to re-send events (a seq gap)")
        asked.add_metric([], counts.get("event_resend_requests", 0))
        yield asked

    def _phones(self, hub: Any) -> Iterable[Any]:
        phones = GaugeMetricFamily("farm_phones", "Phones by state (busy, idle, paused, "
                                   "offline, failed), node and client",
                                   labels=["node", "client", "state"])
        per_phone = (GaugeMetricFamily("farm_phone_state", "1 for each phone's current "
                                       "state (--metrics-per-phone)",
                                       labels=["serial", "node", "client", "state"])
                     if self.metrics.per_phone else None)
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for serial, node, client, state in _phone_states(hub):
            counts.setdefault((node, client), dict.fromkeys(PHONE_STATES, 0))[state] += 1
            if per_phone is not None:
                per_phone.add_metric([serial, node, client, state], 1)
        for (node, client), by_state in sorted(counts.items()):
            for state, n in by_state.items():
                phones.add_metric([node, client, state], n)
        yield phones
        if per_phone is not None:
            yield per_phone

    def _nodes(self, hub: Any) -> Iterable[Any]:
        now = time.time()
        up = GaugeMetricFamily("farm_node_up", "1 while the node's link is up", labels=["node"])
        # The row's last_heartbeat is when the node connected or an event of it was stored.
        age = GaugeMetricFamily("farm_node_last_event_age_seconds", "Since an event of the "
                                "node was last stored (or it connected)", labels=["node"])
        gauges = {key: GaugeMetricFamily(name, text, labels=["node"]) for key, name, text in (
            ("cpu_pct", "farm_node_cpu_percent", "The node machine's CPU use (percent)"),
            ("mem_used", "farm_node_memory_used_bytes", "The node machine's memory in use"),
            ("mem_total", "farm_node_memory_total_bytes", "The node machine's memory"),
            ("disk_used", "farm_node_disk_used_bytes", "Used on the disk of the node's data "
                                                       "folder"),
            ("disk_total", "farm_node_disk_total_bytes", "Size of the disk of the node's "
                                                         "data folder"),
            ("adb_ok", "farm_node_adb_up", "1 while the node's adb server answers"),
            ("adb_rtt_ms", "farm_node_adb_rtt_seconds", "A round trip to the node's adb "
                                                        "server"))}
        for row in hub.nodes():
            name = str(row["name"])
            up.add_metric([name], 1 if row.get("state") == "up" else 0)
            age.add_metric([name], max(0.0, now - float(row.get("last_heartbeat") or now)))
            health = row.get("health")
            if not health:
                continue
            for key, family in gauges.items():
                value = health.get(key)
                if value is None:
                    continue
                if key == "adb_rtt_ms":
                    value = value / 1000.0
                family.add_metric([name], float(value))
        yield up
        yield age
        yield from gauges.values()


def attach_metrics(hub: Any, dbs: dict[str, Any], *, per_phone: bool = False
                   ) -> CoordinatorMetrics:
    """The coordinator's metrics, hooked where each number is known: the hub's emitted
    events, the scheduler's dispatches, the writers of ``dbs`` (name -> FarmDB/EventStore)."""
    metrics = CoordinatorMetrics(hub, per_phone=per_phone)
    hub.metrics = metrics
    schedules = getattr(hub, "schedules", None)
    if schedules is not None:
        schedules.on_dispatched = metrics.dispatched
    for name, db in dbs.items():
        metrics.watch_db(name, getattr(db, "_writer", None))
    return metrics


def metrics_listen_address(text: str | None) -> tuple[str, int] | None:
    """``--metrics-listen`` -> (host, port) on loopback, None when not given; a StartupError
    naming the flag otherwise (one line, exit 2)."""
    if not text:
        return None
    try:
        return parse_listen(text, "--metrics-listen", loopback_only=True)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
