"""Metrics as an operator scrapes them (issue 19.1): one coordinator process with
--metrics-listen, one node process with --metrics, 3 virtual phones behind a real adb
server. After runs (one sequence completing on every phone, one failing), the
coordinator's /metrics (with a metrics token, and on the loopback port without one) and the
node's /metrics show the series moving; GET /api/nodes carries the node's health; a metrics
token reads /metrics only, a viewer's token without the scope may not; a non-loopback
--metrics-listen stops the start with one line."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.node.device.adb_server import free_port
from tests.e2e.farm_auth import api_json, farm_env
from tests.e2e.test_farm_processes import ROOT, Farm, wait

PHONES = 3


class MetricsFarm(Farm):
    """The process farm of test_farm_processes with the metrics endpoints switched on."""

    def __init__(self, data) -> None:
        super().__init__(data)
        self.metrics_port = free_port()  # the coordinator's --metrics-listen
        self.node_metrics_port = free_port()

    def start_coordinator(self) -> None:
        self.coordinator = self._spawn(
            "actors.coordinator.main", "--http", f"127.0.0.1:{self.http}", "--listen",
            f"tcp://127.0.0.1:{self.nng}", "--data", str(self.data / "coordinator"),
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            log_name="coordinator", stdout=subprocess.DEVNULL)
        from tests.e2e.farm_auth import admin_token
        admin_token(self.data / "coordinator", self.url)
        wait(lambda: self.get("/api/health") is not None, 20, "coordinator HTTP")

    def start_node(self, name: str) -> None:
        self.nodes[name] = self._spawn(
            "actors.node", "--name", name, "--coordinator", f"tcp://127.0.0.1:{self.nng}",
            "--adb-port", str(self.adb[name].port), "--data", str(self.data / name),
            "--metrics", f"127.0.0.1:{self.node_metrics_port}", log_name=name)


def scrape(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def series(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(found: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items()
               if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def run_to_end(farm: Farm, body: dict) -> dict:
    started = farm.post("/api/runs", body)
    return wait(lambda: (r := farm.get(f"/api/runs/{started['run_id']}"))
                and r["status"] != "running" and r, 60, "the run to end")


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    f = MetricsFarm(tmp_path_factory.mktemp("metrics-farm"))
    try:
        f.start_coordinator()
        f.add_rack("rack1", PHONES)
        wait(lambda: sum(p["state"] == "online" for p in f.phones().values()) == PHONES, 60,
             f"{PHONES} phones online")
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def metrics_token(farm) -> str:
    """Made as an operator would: `farm tokens add --name prometheus --scope metrics`."""
    out = subprocess.run(
        [sys.executable, "-m", "actors.control.cli", "--url", farm.url, "tokens", "add",
         "--name", "prometheus", "--scope", "metrics"], cwd=ROOT, env=farm_env(farm.url),
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_series_move_after_runs(farm, metrics_token) -> None:
    taps = [{"type": "tap", "x": 100 + i, "y": 1500} for i in range(2)]
    run = run_to_end(farm, {"scope": "phone:all", "sequence": {"name": "metrics_taps",
                                                                 "steps": taps}})
    assert run["status"] == "completed", run
    serial = farm.serials["rack1"][0]
    failing = {"name": "metrics_fail", "retry": {"immediate": 0, "short": 0},
               "steps": [{"type": "expect_screen", "screen": "clipshare/upload"}]}
    run = run_to_end(farm, {"scope": f"phone:{serial}", "sequence": failing})
    assert run["status"] == "failed", run
    # The node's first health report comes within 5 s of its start.
    nodes = wait(lambda: (n := farm.get("/api/nodes")) and n["nodes"][0].get("health") and n,
                 20, "the node's health in GET /api/nodes")
    health = nodes["nodes"][0]["health"]
    assert set(health) == {"cpu_pct", "mem_used", "mem_total", "disk_used", "disk_total",
                           "adb_ok", "adb_rtt_ms", "at"}
    assert health["adb_ok"] is True and 0 < health["mem_used"] <= health["mem_total"]

    status, text = scrape(f"{farm.url}/metrics", metrics_token)
    assert status == 200, text
    found = series(text)
    assert total(found, "farm_actions_total", type="tap", status="ok") >= 2 * PHONES
    assert total(found, "farm_action_seconds_count", type="tap") >= 2 * PHONES
    assert total(found, "farm_executions_started_total",
                 sequence="inline/metrics_taps") == PHONES
    assert total(found, "farm_executions_finished_total", sequence="inline/metrics_taps",
                 status="completed") == PHONES
    assert total(found, "farm_executions_finished_total", sequence="inline/metrics_fail",
                 status="failed") == 1
    assert total(found, "farm_step_failures_total") >= 1
    assert total(found, "farm_phones", node="rack1") == PHONES
    assert total(found, "farm_event_link_lag_seconds_count", node="rack1") > 0
    assert total(found, "farm_db_write_seconds_count", db="farm") > 0
    assert total(found, "farm_db_write_seconds_count", db="events") > 0
    assert total(found, "farm_node_up", node="rack1") == 1
    assert total(found, "farm_node_adb_up", node="rack1") == 1
    assert total(found, "farm_node_memory_total_bytes", node="rack1") > 0
    for name in ("farm_scheduler_queue_depth", "farm_scheduler_dispatch_delay_seconds_count",
                 "farm_recovery_attempts_total", "farm_link_command_resends_total",
                 "farm_link_event_resend_requests_total"):
        assert any(n == name for n, _ in found), name
    assert not any("serial" in dict(labels) for _, labels in found)  # no --metrics-per-phone

    # The loopback port: the same registry, no token.
    status, text = scrape(f"http://127.0.0.1:{farm.metrics_port}/metrics")
    assert status == 200 and total(series(text), "farm_phones", node="rack1") == PHONES

    status, text = scrape(f"http://127.0.0.1:{farm.node_metrics_port}/metrics")
    assert status == 200
    node = series(text)
    assert total(node, "farm_node_actions_total", type="tap") >= 2 * PHONES
    assert total(node, "farm_node_capture_frames_total") > 0
    assert total(node, "farm_node_capture_bytes_total") > 0
    assert total(node, "farm_node_phones") == PHONES
    assert total(node, "farm_node_link_connected") == 1
    assert total(node, "farm_node_cpu_percent") >= 0 and total(node, "farm_node_adb_up") == 1


def test_a_metrics_token_reads_metrics_only_and_a_viewer_none(farm, metrics_token) -> None:
    assert scrape(f"{farm.url}/metrics", metrics_token)[0] == 200
    assert scrape(f"{farm.url}/api/phones", metrics_token)[0] == 403
    assert scrape(f"{farm.url}/metrics")[0] == 401
    api_json(f"{farm.url}/api/clients", {"name": "Acme"})
    api_json(f"{farm.url}/api/users", {"name": "vic", "password": "correct horse battery",
                                       "role": "viewer", "clients": ["Acme"]})
    login = urllib.request.Request(
        f"{farm.url}/api/login", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"user": "vic", "password": "correct horse battery"}).encode())
    with urllib.request.urlopen(login, timeout=10) as r:
        viewer = json.loads(r.read())["token"]
    status, body = scrape(f"{farm.url}/metrics", viewer)
    assert status == 403 and "metrics scope" in body


def test_metrics_listen_elsewhere_than_loopback_stops_the_start(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "actors.coordinator.main", "--data", str(tmp_path / "data"),
         "--http", f"127.0.0.1:{free_port()}", "--metrics-listen", "0.0.0.0:9470"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics-listen" in lines[0] and "loopback" in lines[0], lines
    assert not (tmp_path / "data").exists()  # refused before anything was opened
