"""A real `farm-coordinator` keeps its data folder private (issue 17.3): started under the
usual umask 022 on a folder an older version left readable (files 0644, folders 0755), every
folder in it is 0700 and every file (farm.sqlite3 and its -wal/-shm, the event store, the
master key, tokens, the registry copy, screenshots) 0600 once it serves."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from actors.node.device.adb_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_coordinator_makes_its_data_folder_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "farm-data"
    (data / "executions" / "ex-old").mkdir(parents=True)
    (data / "executions" / "ex-old" / "3.png").write_bytes(b"old screenshot")
    os.chmod(data, 0o755)
    os.chmod(data / "executions", 0o755)
    os.chmod(data / "executions" / "ex-old" / "3.png", 0o644)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bin" / "farm-coordinator"), "--data", str(data),
         "--http", f"127.0.0.1:{free_port()}", "--listen", f"tcp://127.0.0.1:{free_port()}",
         "--retention", "off"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PHONEFARM_SECRET": "modes-test"},
        preexec_fn=lambda: os.umask(0o022))
    try:
        line = proc.stdout.readline()  # printed once it serves
        assert line.startswith("phonefarm coordinator:"), proc.stderr.read()
        entries = {p.relative_to(data).as_posix(): stat.S_IMODE(p.lstat().st_mode)
                   for p in [data, *data.rglob("*")]}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    names = set(entries)
    assert {"farm.sqlite3", "farm.sqlite3-wal", "farm.sqlite3-shm", "coordinator.sqlite3",
            "secret.key", "registry", "executions/ex-old/3.png"} <= names, names
    loose = {name: oct(m) for name, m in entries.items()
             if m != (0o700 if (data / name).is_dir() else 0o600)}
    assert not loose, loose
