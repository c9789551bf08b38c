"""Bounded label values: a series' label set must not grow with the data."""

from __future__ import annotations

import threading

from prometheus_client import disable_created_metrics

# No `*_created` series: they double what every scrape renders and carry nothing Prometheus
# needs (process-wide in prometheus-client; this process's registries are all ours).
disable_created_metrics()

OTHER = "other"
UNKNOWN = "unknown"


class BoundedLabel:
    """Owns the values one label has taken: the first ``limit`` distinct values are kept,
    every later one is reported as ``other`` (a farm with thousands of inline sequence
    names or free-text reasons must not make thousands of series). Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = UNKNOWN if value is None or value == "" else str(value)[:120]
        if text in self._seen:
            return text
        with self._lock:
            if text in self._seen:
                return text
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(text)
            return text


class LastSeen:
    """A bounded map (oldest dropped first) from an id to a label value: which sequence an
    execution runs, learned from its start and read at its end."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._items: dict[str, str] = {}

    def put(self, key: str, value: str) -> None:
        self._items.pop(key, None)
        self._items[key] = value
        while len(self._items) > self.limit:
            self._items.pop(next(iter(self._items)))

    def get(self, key: str | None, default: str = UNKNOWN) -> str:
        return self._items.get(key or "", default)
