"""Prometheus metrics of the coordinator and the nodes (issue 19).

`coordinator.CoordinatorMetrics` and `node.NodeMetrics` each own one process's
CollectorRegistry (never prometheus-client's global one): counters and histograms fed by
one observer call where the number is known, and collectors that read existing state at
scrape time. `health` measures a node (psutil, the adb server), `labels` keeps label sets
bounded, `serve` is the text endpoint (`render`, `MetricsServer`, `parse_listen`).
"""
