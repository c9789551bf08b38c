"""A node's metrics: its phones by state, the actions they did and how long they took, the
frames captured after actions, its event journal's backlog and re-sends, and its own
health (CPU, memory, disk, adb server), in one CollectorRegistry of its own."""

from __future__ import annotations

import time
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from actors.metrics.coordinator import ACTION_BUCKETS
from actors.metrics.labels import BoundedLabel

NODE_PHONE_STATES = ("busy", "idle", "paused", "failed")


class NodeMetrics:
    """Owns one node's CollectorRegistry. Fed by `observe` with everything the phone
    actors publish (`Node.publish`, any thread), and by `health` (the latest report of the
    node's `HealthProbe`); the phone directory and the link are read when scraped.
    ``per_phone`` adds per-serial series (`--metrics-per-phone`)."""

    def __init__(self, node: Any, *, per_phone: bool = False) -> None:
        self.node = node
        self.per_phone = per_phone
        self.latest_health: dict | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._type = BoundedLabel(64)
        self.actions = Counter("farm_node_actions", "Device actions done on this node's "
                               "phones, by type", ["type"], registry=r)
        self.action_seconds = Histogram("farm_node_action_seconds", "How long a device action "
                                        "took on its phone, by type", ["type"],
                                        buckets=ACTION_BUCKETS, registry=r)
        self.frames = Counter("farm_node_capture_frames", "Frames captured after actions (each "
                              "one identified and sent as the phone's thumbnail)", registry=r)
        self.frame_bytes = Counter("farm_node_capture_bytes", "Bytes of those frames as "
                                   "captured (RGBA, width x height x 4)", registry=r)
        self.thumb_bytes = Counter("farm_node_thumbnail_bytes", "Bytes of the JPEG thumbnails "
                                   "made of them", registry=r)
        self.phone_actions = (Counter("farm_node_phone_actions", "Device actions per phone "
                                      "(--metrics-per-phone)", ["serial", "type"], registry=r)
                              if per_phone else None)
        r.register(_NodeState(self))

    def observe(self, event: str, serial: str | None, data: dict) -> None:
        """One thing a phone actor published (called on its thread)."""
        if event == "thumbnail":
            self.frames.inc()
            width, height = data.get("width"), data.get("height")
            if isinstance(width, int) and isinstance(height, int):
                self.frame_bytes.inc(width * height * 4)
            jpeg = data.get("jpeg")
            if isinstance(jpeg, (bytes, str)):
                self.thumb_bytes.inc(len(jpeg))
        elif event == "action_result":
            kind = self._type(data.get("action"))
            self.actions.labels(kind).inc()
            ms = data.get("ms")
            if isinstance(ms, (int, float)) and ms >= 0:
                self.action_seconds.labels(kind).observe(ms / 1000.0)
            if self.phone_actions is not None and serial:
                self.phone_actions.labels(serial, kind).inc()

    def health(self, report: dict) -> None:
        self.latest_health = {**report, "_taken": time.time()}


class _NodeState(Collector):
    """The node now, read at scrape time: phones by state, the link and its journal, the
    executions playing, the last health report."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list:
        # Nothing to check at registration: the state it reads may not exist yet.
        return []

    def collect(self) -> Iterable[Any]:
        node = self.metrics.node
        phones = GaugeMetricFamily("farm_node_phones", "This node's phones by state (busy, "
                                   "idle, paused, failed)", labels=["state"])
        per_phone = (GaugeMetricFamily("farm_node_phone_state", "1 for each phone's state "
                                       "(--metrics-per-phone)", labels=["serial", "state"])
                     if self.metrics.per_phone else None)
        counts = dict.fromkeys(NODE_PHONE_STATES, 0)
        for view in node.directory.views():
            state = view.get("state")
            if state == "online":
                state = "busy" if view.get("lock_holder") else "idle"
            state = state if state in counts else "failed"
            counts[state] += 1
            if per_phone is not None:
                per_phone.add_metric([str(view.get("serial")), state], 1)
        for state, n in counts.items():
            phones.add_metric([state], n)
        yield phones
        if per_phone is not None:
            yield per_phone
        playing = GaugeMetricFamily("farm_node_executions_playing", "Executions this node "
                                    "plays now")
        playing.add_metric([], len(node.playbacks))
        yield playing
        yield from self._link(node.link)
        yield from self._health(self.metrics.latest_health)

    def _link(self, link: Any) -> Iterable[Any]:
        connected = GaugeMetricFamily("farm_node_link_connected", "1 while connected to the "
                                      "coordinator")
        connected.add_metric([], 1 if link is not None and link.connected else 0)
        yield connected
        unacked = GaugeMetricFamily("farm_node_events_unacked", "Journaled events the "
                                    "coordinator has not acknowledged yet")
        journal = getattr(link, "journal", None)
        unacked.add_metric([], max(0, journal.last_seq - journal.acked_upto)
                           if journal is not None else 0)
        yield unacked
        rewinds = CounterMetricFamily("farm_node_event_resends", "Times this node started "
                                      "sending its events again (asked, or no ack in time)")
        rewinds.add_metric([], getattr(link, "counts", {}).get("event_rewinds", 0))
        yield rewinds
        commands = CounterMetricFamily("farm_node_commands", "Commands from the coordinator "
                                       "run")
        commands.add_metric([], getattr(link, "commands_executed", 0))
        yield commands

    def _health(self, health: dict | None) -> Iterable[Any]:
        if not health:
            return
        for key, name, text, scale in (
                ("cpu_pct", "farm_node_cpu_percent", "This machine's CPU use (percent)", 1),
                ("mem_used", "farm_node_memory_used_bytes", "Memory in use", 1),
                ("mem_total", "farm_node_memory_total_bytes", "Memory", 1),
                ("disk_used", "farm_node_disk_used_bytes", "Used on the data folder's disk", 1),
                ("disk_total", "farm_node_disk_total_bytes", "The data folder's disk", 1),
                ("adb_ok", "farm_node_adb_up", "1 while the adb server answers", 1),
                ("adb_rtt_ms", "farm_node_adb_rtt_seconds", "A round trip to the adb server",
                 0.001)):
            value = health.get(key)
            if value is None:
                continue
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], float(value) * scale)
            yield gauge
        age = GaugeMetricFamily("farm_node_health_age_seconds", "Since the last health "
                                "measurement")
        age.add_metric([], max(0.0, time.time() - health.get("_taken", time.time())))
        yield age
