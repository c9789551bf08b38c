"""The whole HTTP API fuzzed from its own OpenAPI document (schemathesis), against a real
coordinator with virtual phones (`farm-coordinator --demo` in a subprocess).

Per operation, bounded examples (PHONEFARM_FUZZ_EXAMPLES, default 15 to keep the suite in its
CI budget; `bench/fuzz.py` runs
more): no 5xx, every 4xx a JSON error, every 400 naming where the problem is, every answer
in the documented schema and content type. Afterwards the
farm must still answer, keep its phones online, keep the run recorded before the fuzzing, and
have logged no unhandled exception. The request counts and the largest event-loop stall are
printed in the run's summary.

The coordinator always authenticates: the fuzzing calls as a super user of its own
(`Keeper`), logged in again whenever a fuzzed call ended its session (`POST /api/logout`,
`DELETE /api/tokens/{id}` of its token), so the cases after it are not all refused.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from schemathesis.checks import content_type_conformance, response_schema_conformance

from actors.control.openapi import openapi_document
from actors.node.device.adb_server import free_port
from tests.e2e.farm_auth import admin_token

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("PHONEFARM_FUZZ_EXAMPLES", "15"))
PHONES = 2
# Where a 400 may say what was wrong: a JSON path, a line/column, an offset, a list of problems.
LOCATORS = ("field", "line", "offset", "problems", "scope", "serial", "parameter")

STATS: dict[str, Any] = {"statuses": Counter(), "server_errors": [], "chained": 0,
                         "relogins": 0}


def _get(base: str, path: str, timeout: float = 10, token: str | None = None) -> Any:
    req = urllib.request.Request(base + path, headers=_bearer(token or KEEPER.token))
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _post(base: str, path: str, body: dict, timeout: float = 10,
          token: str | None = None) -> Any:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **_bearer(token or KEEPER.token)})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Keeper:
    """The fuzzing's own super user and its live session token. A fuzzed call may end the
    session the fuzzing calls with (log out, revoke its token by id, disable its user);
    `after` notices and logs in again, so the next case is not a 401 for that reason."""

    NAME = "fuzz-keeper"  # not a name the fuzzing generates; its own users it may disable

    def __init__(self) -> None:
        self.base, self.token, self.password = "", "", secrets.token_urlsafe(18)

    def start(self, base: str, admin: str) -> None:
        self.base = base
        _post(base, "/api/users", {"name": self.NAME, "password": self.password,
                                   "role": "super"}, token=admin)
        self.login()

    def login(self) -> None:
        self.token = _post(self.base, "/api/login", {"user": self.NAME,
                                                     "password": self.password})["token"]

    def headers(self) -> dict[str, str]:
        return _bearer(self.token)

    def after(self, case, response) -> None:
        """Log in again when ``response`` (to the fuzzed ``case``) may have ended the
        session: it was refused as unauthenticated, or it was a change that can end one."""
        ends = case.method.upper() in ("POST", "DELETE") and case.path.startswith(
            ("/api/logout", "/api/tokens/", "/api/users/"))
        if response.status_code != 401 and not (ends and response.status_code < 400):
            return
        try:
            _get(self.base, "/api/me")
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
            STATS["relogins"] += 1
            self.login()


KEEPER = Keeper()


class DemoFarm:
    """A `farm-coordinator --demo` process on free ports with its own data folder."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.log = data.parent / "coordinator.log"
        http = free_port()
        self.base = f"http://127.0.0.1:{http}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actors.coordinator", "--demo", "--phones", str(PHONES),
             "--http", f"127.0.0.1:{http}", "--listen", f"tcp://127.0.0.1:{free_port()}",
             "--data", str(data), "--log-level", "WARNING", "--base-port", "0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))

    def wait_online(self, token: str, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                phones = _get(self.base, "/api/phones", token=token)["phones"]
                # The demo's phones take the scrcpy agent path once their agents run.
                if sum(p["state"] == "online" and p["io"] == "agent" for p in phones) == PHONES:
                    return phones
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{PHONES} demo phones not online on the agent path within "
                             f"{timeout} s")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoFarm:
    farm = DemoFarm(tmp_path_factory.mktemp("fuzz") / "data")
    try:
        admin = admin_token(farm.data, timeout=120)  # written before the endpoint listens
        phones = farm.wait_online(admin)
        KEEPER.start(farm.base, admin)
        # A run recorded before the fuzzing: it must still be there, unchanged, afterwards.
        started = _post(farm.base, "/api/runs", {
            "sequence": {"name": "fuzz_probe", "steps": [{"type": "key", "key": "HOME"}]},
            "scope": f"phone:{phones[0]['serial']}"})
        farm.before_run = _wait_run(farm.base, started["run_id"])
        yield farm
    finally:
        STATS["exit_code"] = farm.stop()


def _wait_run(base: str, run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _get(base, f"/api/runs/{run_id}")
        if run["status"] != "running":
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still running after {timeout} s")


# The document is built in-process so that each operation is its own test item;
# test_the_served_document_is_the_fuzzed_one checks the coordinator serves the same.
# Left out: POST /api/backups (takeBackup) writes a whole copy of the farm into any existing
# folder its `to` names, and the fuzzing would draw `/`, `/tmp` ... (it runs as root in CI);
# its body and answers are checked in tests/unit/test_backup_service.py and e2e in
# tests/e2e/test_backup_restore.py. GET /api/backups is fuzzed.
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(operation_id="takeBackup")


def test_the_served_document_is_the_fuzzed_one(demo: DemoFarm) -> None:
    assert _get(demo.base, "/api/openapi.json") == json.loads(json.dumps(openapi_document()))


def check_error_body(response, case) -> str | None:
    """None when the response keeps the API's error rules, else what it broke."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}"
    if status < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{status} without a JSON body: {response.text[:200]!r}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        return f"{status} body has no error text: {str(body)[:200]}"
    if status == 400 and not any(k in body for k in LOCATORS):
        return f"400 does not name the field: {body}"
    return None


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck), database=None, derandomize=True)
def test_api_operation(case, demo: DemoFarm) -> None:
    response = case.call(base_url=demo.base, timeout=30, headers=KEEPER.headers())
    KEEPER.after(case, response)
    STATS["statuses"][response.status_code] += 1
    problem = check_error_body(response, case)
    if problem is not None and response.status_code >= 500:
        STATS["server_errors"].append(f"{case.method} {case.formatted_path}: {response.text[:300]}")
    assert problem is None, f"{case.method} {case.formatted_path}: {problem}\n{case.as_curl_command()}"
    # What is answered is what the document says: its schema and its content type.
    case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])


def test_api_sequences_of_calls(demo: DemoFarm) -> None:
    """Chains of calls along the document's inferred links (create a sequence, then read,
    change and delete it; start a run, then read it): the single-operation fuzzing above
    mostly meets 404s for ids it cannot know."""
    machine = schema.as_state_machine()

    class Chains(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case) -> dict[str, Any]:
            return {"base_url": demo.base, "timeout": 30, "headers": KEEPER.headers()}

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            KEEPER.after(case, response)
            STATS["statuses"][response.status_code] += 1
            STATS["chained"] += 1
            problem = check_error_body(response, case)
            if problem is not None and response.status_code >= 500:
                STATS["server_errors"].append(f"{case.method} {case.formatted_path}: {response.text[:300]}")
            if problem is not None:
                problems.append(f"{case.method} {case.formatted_path}: {problem}\n{case.as_curl_command()}")
            assert problem is None, problems[-1] if problems else problem
            try:
                case.validate_response(response, checks=[response_schema_conformance,
                                                         content_type_conformance])
            except AssertionError as exc:
                problems.append(f"{case.method} {case.formatted_path}: {exc}")
                raise

    problems: list[str] = []
    try:
        Chains.run(settings=settings(max_examples=EXAMPLES * 2, stateful_step_count=10,
                                     phases=[Phase.generate], deadline=None,
                                     suppress_health_check=list(HealthCheck), database=None,
                                     derandomize=True))
    except Flaky:
        # Which steps a chain can take depends on what the farm answered before (its
        # bundles of created ids), so hypothesis finds a replayed prefix drawing otherwise:
        # not a fault of the API (schemathesis' own runner counts it a pass the same way).
        # Any step that did break a rule was recorded on the way and fails below.
        pass
    assert not problems, "\n\n".join(problems)


def test_the_farm_survived_the_fuzzing(demo: DemoFarm, record_property) -> None:
    health = _get(demo.base, "/api/health")
    STATS["loop_lag_ms"] = health["loop_lag_ms"]
    # On the report, not in a module global: under pytest-xdist the summary is printed by
    # the controlling process, which ran none of the fuzzing.
    record_property(FUZZ_SUMMARY_PROPERTY, fuzz_summary())
    assert health["ok"] is True
    phones = _get(demo.base, "/api/phones")["phones"]
    assert sum(p["state"] == "online" for p in phones) == PHONES
    assert [p["io"] for p in phones] == ["agent"] * PHONES, phones  # fuzzed on the agent path
    assert _get(demo.base, f"/api/runs/{demo.before_run['run_id']}") == demo.before_run
    assert demo.proc.poll() is None
    log = demo.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]


FUZZ_SUMMARY_PROPERTY = "api_fuzz_summary"


def fuzz_summary() -> list[str]:
    """Lines for the test run's summary (tests/conftest.py prints them)."""
    statuses: Counter = STATS["statuses"]
    if not statuses:
        return []
    lag = STATS.get("loop_lag_ms") or {}
    counts = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    return [f"API fuzz: {sum(statuses.values())} requests ({EXAMPLES} examples per operation, "
            f"{STATS['chained']} of them in chains of calls); by status {counts}; "
            f"logged in again {STATS['relogins']} time(s) after a call ended the session",
            f"API fuzz: 5xx found {len(STATS['server_errors'])}; longest event-loop stall "
            f"{lag.get('max', '?')} ms (stalls over {lag.get('stall_ms', 100)} ms: "
            f"{lag.get('stalls', '?')})",
            *(f"  5xx: {line}" for line in STATS["server_errors"][:20])]
