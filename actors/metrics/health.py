"""A node's own health (the ``node_health`` event and ``GET /api/nodes`` ``health``): CPU, memory, the data folder's disk, and
whether its adb server answers; measured on the node every `HEALTH_EVERY_S` and checked
again on the coordinator before it is kept."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from actors.node.device.adb_server import AdbServer
from protocol.errors import FarmError

HEALTH_EVERY_S = 5.0
HEALTH_EVENT = "node_health"  # a LiveEvent (not journaled: only the latest matters)
ADB_PROBE_TIMEOUT_S = 2.0
FIELDS = ("cpu_pct", "mem_used", "mem_total", "disk_used", "disk_total", "adb_ok",
          "adb_rtt_ms", "at")


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class HealthProbe:
    """Owns measuring one node: `measure` blocks (psutil, a round trip to the adb server),
    so the node calls it in a worker thread. CPU % is the whole machine's since the last
    call (psutil's interval-less form; primed at construction, so the first figure covers
    the time since the node started, not zero)."""

    def __init__(self, data_dir: Path, adb: AdbServer) -> None:
        self.data_dir = Path(data_dir)
        # Its own short timeout: a hung adb server must not hold the probe for 20 s.
        self.adb = AdbServer(adb.host, adb.port, timeout=ADB_PROBE_TIMEOUT_S)
        psutil.cpu_percent(interval=None)

    def measure(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        try:
            disk = psutil.disk_usage(str(self.data_dir))
            disk_used, disk_total = int(disk.used), int(disk.total)
        except OSError:
            disk_used = disk_total = 0
        adb_ok, rtt_ms = self._adb_round_trip()
        return {"cpu_pct": float(psutil.cpu_percent(interval=None)),
                "mem_used": int(memory.total - memory.available), "mem_total": int(memory.total),
                "disk_used": disk_used, "disk_total": disk_total, "adb_ok": adb_ok,
                "adb_rtt_ms": rtt_ms, "at": iso_now()}

    def _adb_round_trip(self) -> tuple[bool, float | None]:
        start = time.perf_counter()
        try:
            self.adb.host_query("host:version")
        except (FarmError, OSError):
            return False, None
        return True, round((time.perf_counter() - start) * 1000.0, 3)


def health_row(data: Any) -> dict[str, Any] | None:
    """A node's report as the coordinator keeps it (`GET /api/nodes` ``health``), or None
    when it is not one: every field of the contract with its type, nothing else."""
    if not isinstance(data, dict):
        return None
    try:
        row = {"cpu_pct": _number(data["cpu_pct"]),
               "mem_used": _count(data["mem_used"]), "mem_total": _count(data["mem_total"]),
               "disk_used": _count(data["disk_used"]), "disk_total": _count(data["disk_total"]),
               "adb_ok": data["adb_ok"],
               "adb_rtt_ms": None if data.get("adb_rtt_ms") is None
               else _number(data["adb_rtt_ms"]),
               "at": data["at"]}
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(row["adb_ok"], bool) or not isinstance(row["at"], str) \
            or len(row["at"]) > 40:
        return None
    return row


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ValueError(value)
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value
