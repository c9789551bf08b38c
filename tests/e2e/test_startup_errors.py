"""A coordinator or node that cannot start says why in one line on stderr (no traceback) and
exits non-zero at once, having closed what it opened: a process supervisor restarts it, or
the operator reads the line. The real `bin/farm-coordinator` and `bin/farm-node` commands."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from actors.node.device.adb_server import free_port

ROOT = Path(__file__).resolve().parents[2]
EXIT_WITHIN_S = 20  # the bug: the process printed its error and then never exited


def _run(command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, str(ROOT / "bin" / command), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=EXIT_WITHIN_S,
                              env={**os.environ, "PHONEFARM_SECRET": "startup-test",
                                   **(env or {})})
    except subprocess.TimeoutExpired as exc:  # run() killed it: the process hung
        pytest.fail(f"{command} still running {EXIT_WITHIN_S} s after a start-up error; "
                    f"stderr: {exc.stderr!r}")


def _coordinator(data: Path, *args: str, env: dict[str, str] | None = None):
    return _run("farm-coordinator", "--data", str(data), "--http", f"127.0.0.1:{free_port()}",
                "--listen", f"tcp://127.0.0.1:{free_port()}", "--retention", "off", *args, env=env)


def _node(data: Path, *args: str, env: dict[str, str] | None = None):
    return _run("farm-node", "--name", "n1", "--data", str(data), "--adb-port", str(free_port()),
                "--coordinator", f"tcp://127.0.0.1:{free_port()}", *args, env=env)


def _assert_one_clear_line(out: subprocess.CompletedProcess, prog: str, *words: str) -> str:
    assert out.returncode not in (0, None), out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    mine = [line for line in out.stderr.splitlines() if line.startswith(f"{prog}: ")]
    assert len(mine) == 1, out.stderr
    for word in words:
        assert word in mine[0], mine[0]
    return mine[0]


def _corrupt_registry(folder: Path) -> None:
    shutil.copytree(ROOT / "registry" / "apps", folder)
    (folder / "clipshare.json").write_text('{"broken')


def test_coordinator_with_a_corrupt_registry_json_exits(tmp_path: Path) -> None:
    _corrupt_registry(tmp_path / "data" / "registry")
    out = _coordinator(tmp_path / "data")
    _assert_one_clear_line(out, "farm-coordinator", "registry", "clipshare.json")


def test_coordinator_with_a_malformed_master_key_exits(tmp_path: Path) -> None:
    out = _coordinator(tmp_path / "data", env={"PHONEFARM_SECRET_KEY": "not-a-key"})
    line = _assert_one_clear_line(out, "farm-coordinator", "PHONEFARM_SECRET_KEY")
    assert "not-a-key" not in line  # a key, even a wrong one, is never printed


def test_coordinator_with_a_corrupt_event_store_exits(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "coordinator.sqlite3").write_bytes(b"not a database at all" * 100)
    out = _coordinator(tmp_path / "data")
    _assert_one_clear_line(out, "farm-coordinator", "coordinator.sqlite3")


def test_coordinator_whose_http_port_is_taken_exits(tmp_path: Path) -> None:
    """The HTTP endpoint binds last, after the hub started: everything is closed again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _run("farm-coordinator", "--data", str(tmp_path / "data"), "--retention", "off",
                   "--http", f"127.0.0.1:{port}", "--listen", f"tcp://127.0.0.1:{free_port()}")
    _assert_one_clear_line(out, "farm-coordinator", str(port))


def test_node_with_a_corrupt_registry_json_exits(tmp_path: Path) -> None:
    _corrupt_registry(tmp_path / "reg")
    out = _node(tmp_path / "data", "--registry", str(tmp_path / "reg"))
    _assert_one_clear_line(out, "farm-node", "registry", "clipshare.json")


def test_node_with_a_corrupt_journal_exits(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "journal-n1.sqlite3").write_bytes(b"not a database at all" * 100)
    out = _node(tmp_path / "data")
    _assert_one_clear_line(out, "farm-node", "journal-n1.sqlite3")


def test_node_with_a_missing_secret_file_exits(tmp_path: Path) -> None:
    out = _node(tmp_path / "data", "--secret-file", str(tmp_path / "nope"))
    _assert_one_clear_line(out, "farm-node", "nope")
