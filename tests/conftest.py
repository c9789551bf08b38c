"""Shared fixtures: real adb servers on private ports and farms of virtual phones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# argon2's test profile in this process and every farm it starts (they inherit it): the
# default costs ~0.2 s of CPU per hash or login, hundreds of times per run.
# tests/unit/test_password_hashing.py checks the default and the variable itself.
os.environ.setdefault("PHONEFARM_PASSWORD_HASHING", "cheapest")

from actors.node.device.adb_server import AdbServer, kill_adb_server, start_private_adb_server  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from virtual.farm import FarmSpec, VirtualFarm  # noqa: E402
from virtual.model_server import ScriptedModel  # noqa: E402


@pytest.fixture(scope="module")
def adb_server() -> AdbServer:
    """A real Debian adb server of this test module's own, stopped by its own command."""
    server = start_private_adb_server()
    yield server
    kill_adb_server(server.port)


@pytest.fixture(scope="module")
def farm(adb_server: AdbServer) -> VirtualFarm:
    """Four virtual phones with the demo app, plugged into the module's adb server."""
    f = VirtualFarm(FarmSpec(phones=4, adb=adb_server)).start_in_thread()
    yield f
    f.stop_thread()


def run_adb(server: AdbServer, *args: str, timeout: float = 60, input: bytes | None = None):
    """The real `adb` command line against ``server``."""
    return subprocess.run(["adb", "-P", str(server.port), *args], capture_output=True,
                          timeout=timeout, input=input)


@pytest.fixture(scope="session")
def pg_cluster():
    """The run's PostgreSQL server (tests/pg_cluster.py), started on first use."""
    from tests.pg_cluster import PgCluster

    cluster = PgCluster().start()
    yield cluster
    cluster.stop()


ENGINES = ("sqlite", "postgresql")


def _use_postgresql(mp: pytest.MonkeyPatch, cluster, folder: Path):
    """Point every farm database this test opens at a fresh database of ``cluster``: in
    this process (FarmDB.open and EventStore without a target of their own) and in the
    coordinators it starts (PHONEFARM_DB, PHONEFARM_DB_PASSWORD_FILE)."""
    from actors.store import event_store

    target = cluster.new_database()
    real_open = FarmDB.open.__func__

    async def open_on_pg(cls, path, **kw):
        kw["target"] = kw.get("target") or target
        return await real_open(cls, path, **kw)

    mp.setattr(FarmDB, "open", classmethod(open_on_pg))
    real_init = event_store.EventStore.__init__
    mp.setattr(event_store.EventStore, "__init__",
               lambda self, path, target_=None: real_init(self, path, target_ or target))
    mp.setenv("PHONEFARM_DB", target.url)
    mp.setenv("PHONEFARM_DB_PASSWORD_FILE", str(cluster.password_file(folder)))
    return target


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch, tmp_path: Path) -> str:
    """Run the test on each database engine (see `_use_postgresql`)."""
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        target = _use_postgresql(monkeypatch, cluster, tmp_path)
        yield request.param
        cluster.drop_database(target)
    else:
        yield request.param


@pytest.fixture(scope="module", params=ENGINES)
def module_engine(request, tmp_path_factory) -> str:
    """`engine` for a module whose farm is started once for all its tests: take it before
    the farm fixture starts anything."""
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        with pytest.MonkeyPatch.context() as mp:
            target = _use_postgresql(mp, cluster, tmp_path_factory.mktemp("pg"))
            yield request.param
        cluster.drop_database(target)
    else:
        yield request.param


@pytest.fixture
async def db(tmp_path: Path, engine: str) -> FarmDB:
    """A real farm database in the test's temp dir, once per engine (SQLite file; a fresh
    database of the run's PostgreSQL server)."""
    farm = await FarmDB.open(tmp_path / "farm.sqlite3")
    yield farm
    await farm.close()


@pytest.fixture
async def scripted_model() -> ScriptedModel:
    """The scripted OpenAI-compatible server on an ephemeral port (set ``.script``)."""
    server = ScriptedModel()
    await server.start()
    yield server
    await server.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    """The API fuzz figures (tests/e2e/test_api_fuzz.py), when that module ran: read from
    its last test's report, which reaches this process with or without pytest-xdist."""
    lines = [line for outcome in ("passed", "failed")
             for report in terminalreporter.stats.get(outcome, [])
             for name, value in getattr(report, "user_properties", ())
             if name == "api_fuzz_summary" for line in value]
    if lines:
        terminalreporter.section("API fuzz")
        for line in lines:
            terminalreporter.write_line(line)
