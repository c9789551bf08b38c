"""A whole farm laid out as a real one, with the switches to break it.

Owns the processes of one harness farm and their life: the coordinator in the root
namespace (HTTP on loopback, nng on the bridge address), and per rack, inside the rack's
network namespace (tests.harness.netns), a private adb server, a `virtual.cli` process of
phones, an `actors.node` process and the delay proxy (tests.harness.delay_proxy) the node
dials the coordinator through. Also owns the fault primitives that act on those
processes (kill -9 and restart, partition, loss, delay and jitter, unplug, slow, disk full,
clock skew) and the small probes a harness needs (get/post, health, phones online). Every
primitive returns promptly; timing recovery is the caller's job. `stop` leaves nothing behind.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, IO

from tests.e2e.farm_auth import admin_token
from tests.harness.netns import Network, RackNet, namespaces_available, pick_harness_id, run

ROOT = Path(__file__).resolve().parents[2]
SECRET = "harness-farm-secret"
# Inside its own namespace every rack has the whole port space: fixed ports are safe.
ADB_PORT = 5037
METRICS_PORT = 9100
# The rack's delay proxy, on the namespace's loopback: the node's way to the coordinator.
PROXY_PORT = 8470
# Phone ports (serials 127.0.0.1:PORT) are unique farm-wide: the coordinator keys phones by
# serial, and random ports drawn in two namespaces could meet.
PHONE_PORT_BASE = 20001
HTTP_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_S = 1.0
FILLER_NAME = "harness-disk-filler"

# `python -c` launcher of a node whose time.time() runs `offset` seconds off (clock skew):
# patched before anything imports it, so every wall-clock read the node makes in Python
# (event timestamps, journal times, lock expiry checks) is skewed; monotonic clocks are not.
SKEWED_NODE = (
    "import sys, time\n"
    "_off = float(sys.argv.pop(1))\n"
    "_t, _tn = time.time, time.time_ns\n"
    "time.time = lambda: _t() + _off\n"
    "time.time_ns = lambda: _tn() + int(_off * 1e9)\n"
    "import runpy\n"
    "sys.argv[0] = 'actors.node'\n"
    "runpy.run_module('actors.node', run_name='__main__', alter_sys=True)\n")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             every: float = 0.1) -> Any:
    """``predicate()``'s first true value; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _stop_process(proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; reaps it."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _kill_process(proc: subprocess.Popen | None) -> None:
    """kill -9 and reap."""
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait()


@dataclass
class Rack:
    """One rack: its namespace (net), adb server, virtual phones and node process."""

    name: str
    index: int
    net: RackNet
    adb_port: int
    serials: list[str] = field(default_factory=list)
    adb: subprocess.Popen | None = None
    virtual: subprocess.Popen | None = None
    node: subprocess.Popen | None = None
    proxy: subprocess.Popen | None = None
    clock_skew_s: float = 0.0
    slow_ms: dict[str, int] = field(default_factory=dict)  # `vphone slow` set per phone

    @property
    def metrics_address(self) -> str:
        return f"{self.net.address}:{METRICS_PORT}"

    def adb_args(self, *args: str) -> list[str]:
        """An adb client command against the rack's server, inside the namespace. ``-H``
        names the host, which keeps the client from starting a server of its own when
        ours is down (it does so only for a local one)."""
        return self.net.exec_args(["adb", "-H", "127.0.0.1", "-P", str(self.adb_port),
                                   *args])

    def shell(self, serial: str, *args: str, timeout: float = 10) -> str:
        """``adb shell ARGS`` on ``serial``: its stdout; RuntimeError with stderr when
        adb or the command fails. A slowed phone's commands (this one too) get its delay
        on top of ``timeout``: `vphone slow 0` itself waits out the old delay."""
        timeout += self.slow_ms.get(serial, 0) / 1000
        done = subprocess.run(self.adb_args("-s", serial, "shell", *args),
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} {serial}: shell {' '.join(args)} failed "
                               f"({done.returncode}): {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def vphone_log(self, serial: str) -> list[dict]:
        """What ``vphone log`` prints on ``serial``: one dict per JSON line (taps have
        kind == "tap" and x, y)."""
        return [json.loads(line) for line in self.shell(serial, "vphone", "log").splitlines()
                if line.strip()]


class HarnessFarm:
    """The coordinator, the racks' namespaces and their processes of one harness run; owns
    starting them, the faults acting on them, and removing all of it (`stop`)."""

    def __init__(self, workdir: Path, racks: int, phones: int, *, seed: int = 1,
                 coordinator_tmpfs_mb: int | None = None, profile: str = "instant") -> None:
        if racks < 1 or phones < 1:
            raise ValueError(f"need at least 1 rack and 1 phone, got {racks} x {phones}")
        self.workdir = Path(workdir).resolve()
        self.rack_count = racks
        self.phones_per_rack = phones
        self.seed = seed
        self.coordinator_tmpfs_mb = coordinator_tmpfs_mb
        self.profile = profile
        self.logs = self.workdir / "logs"
        self.coordinator_data = self.workdir / "coordinator"
        # Where `stop` copies a tmpfs data dir before unmounting it.
        self.saved_coordinator_data = self.workdir / "coordinator-saved"
        self.harness_id: int | None = None
        self.network: Network | None = None
        self.racks: dict[str, Rack] = {}
        self.coordinator: subprocess.Popen | None = None
        self.http_port: int | None = None
        self.nng_port: int | None = None
        self.base_url = ""
        self.token = ""
        self.env = {**os.environ, "PHONEFARM_SECRET": SECRET, "PHONEFARM_LOG_LEVEL": "INFO"}
        for stray in ("PHONEFARM_DATA", "PHONEFARM_TOKEN", "PHONEFARM_COORDINATOR",
                      "PHONEFARM_NODE_KEY_FILE"):
            self.env.pop(stray, None)  # the harness names everything on the command line
        self._tmpfs_mounted = False
        self._started = False
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="harness-probe")

    # --- life ------------------------------------------------------------------------------
    def start(self) -> "HarnessFarm":
        """Network, coordinator, every rack's adb server, phones and node; returns once
        every phone is online. Anything failing stops what was started, then raises."""
        if self._started:
            raise RuntimeError("this HarnessFarm was started already")
        reason = namespaces_available()
        if reason is not None:
            raise RuntimeError(f"cannot build racks in namespaces: {reason}")
        self._started = True
        atexit.register(self.stop)
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            self.harness_id = pick_harness_id()
            self.network = Network(self.harness_id)
            if self.coordinator_tmpfs_mb is not None:
                self._mount_tmpfs()
            self.http_port = _free_port("127.0.0.1")
            self.nng_port = _free_port(self.network.gateway)
            self.base_url = f"http://127.0.0.1:{self.http_port}"
            self.start_coordinator()
            for i in range(1, self.rack_count + 1):
                name = f"rack{i}"
                self.racks[name] = Rack(name=name, index=i, net=self.network.add_rack(name),
                                        adb_port=ADB_PORT)
            for rack in self.racks.values():
                self.start_adb(rack.name)
            for rack in self.racks.values():
                self._start_virtual(rack)
            for rack in self.racks.values():
                self._read_serials(rack)
            for rack in self.racks.values():
                self._start_proxy(rack)
            for rack in self.racks.values():
                self.start_node(rack.name)
            total = self.rack_count * self.phones_per_rack
            wait_for(lambda: self.phones_online() >= total, 30 + 2 * total,
                     f"{total} phones online (logs in {self.logs})")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process, unmount the tmpfs, remove namespaces and bridge.
        Idempotent; safe after a failed start."""
        if self._stopped:
            return
        self._stopped = True
        racks = list(self.racks.values())
        # Nodes first (they would log every phone vanishing), then their proxies, phones, adb.
        with ThreadPoolExecutor(max_workers=max(1, len(racks) * 2 + 1)) as pool:
            list(pool.map(lambda r: _stop_process(r.node), racks))
            list(pool.map(lambda r: _stop_process(r.proxy, timeout=5), racks))
            list(pool.map(lambda r: _stop_process(r.virtual), racks))
            list(pool.map(lambda r: _kill_process(r.adb), racks))
            pool.submit(_stop_process, self.coordinator).result()
        # Anything still inside a namespace was started by us (adb daemons, children).
        for rack in racks:
            for pid in rack.net.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._tmpfs_mounted:
            # The tmpfs dies with its mount: keep its databases for a post-mortem.
            shutil.copytree(self.coordinator_data, self.saved_coordinator_data,
                            ignore=shutil.ignore_patterns(FILLER_NAME), dirs_exist_ok=True)
            run(["umount", "-l", str(self.coordinator_data)], check=False)
            self._tmpfs_mounted = False
        if self.network is not None:
            self.network.close()
        self._pool.shutdown(wait=False)
        atexit.unregister(self.stop)

    def __enter__(self) -> "HarnessFarm":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- processes -------------------------------------------------------------------------
    def _log(self, name: str) -> IO[bytes]:
        # Appended: a restarted process's log follows its previous life's.
        return open(self.logs / f"{name}.log", "ab")

    def _spawn(self, argv: list[str], log_name: str, **kw: Any) -> subprocess.Popen:
        with self._log(log_name) as log:
            kw.setdefault("stdout", log)
            return subprocess.Popen(argv, cwd=ROOT, env=self.env, stderr=log,
                                    stdin=subprocess.DEVNULL, **kw)

    def start_coordinator(self) -> None:
        """Start the coordinator (same ports and data as before) and wait until its
        /api/health answers (a few seconds)."""
        if self.coordinator is not None and self.coordinator.poll() is None:
            raise RuntimeError("the coordinator is running")
        assert self.network is not None
        self.coordinator = self._spawn(
            [sys.executable, "-m", "actors.coordinator.main",
             "--http", f"127.0.0.1:{self.http_port}",
             "--listen", f"tcp://{self.network.gateway}:{self.nng_port}",
             "--data", str(self.coordinator_data)], "coordinator")
        # Written before the endpoint listens and kept over restarts.
        self.token = admin_token(self.coordinator_data, self.base_url)
        wait_for(lambda: self.coordinator.poll() is not None
                 or self.get("/api/health")[0] == 200, 30, "the coordinator's /api/health")
        if self.coordinator.poll() is not None:
            raise RuntimeError(f"the coordinator exited ({self.coordinator.returncode}): "
                               f"see {self.logs / 'coordinator.log'}")

    def kill_coordinator(self) -> None:
        """kill -9 of the coordinator."""
        _kill_process(self.coordinator)

    def start_node(self, rack: str) -> None:
        """Start the rack's node (with its clock skew, if one was set). It dials the
        coordinator through the rack's delay proxy, which lives as long as the rack."""
        r = self.racks[rack]
        if r.node is not None and r.node.poll() is None:
            raise RuntimeError(f"the node of {rack} is running")
        args = ["--name", rack, "--coordinator",
                f"tcp://127.0.0.1:{PROXY_PORT}", "--adb-port", str(r.adb_port),
                "--data", str(self.workdir / rack), "--metrics", r.metrics_address]
        if r.clock_skew_s:
            argv = [sys.executable, "-c", SKEWED_NODE, repr(r.clock_skew_s), *args]
        else:
            argv = [sys.executable, "-m", "actors.node", *args]
        r.node = self._spawn(r.net.exec_args(argv), f"{rack}-node")

    def kill_node(self, rack: str) -> None:
        """kill -9 of the rack's node."""
        _kill_process(self.racks[rack].node)

    def start_adb(self, rack: str) -> None:
        """Start the rack's adb server (in the foreground: its PID is ours to kill) on its
        port, wait until it answers, and plug the rack's known phones back in: a USB hub's
        phones reappear by themselves on a new server, but `adb connect`ed virtual phones
        do not (virtual/farm.py re-plugs a phone only after its own `vphone unplug`)."""
        r = self.racks[rack]
        if r.adb is not None and r.adb.poll() is None:
            raise RuntimeError(f"the adb server of {rack} is running")
        # No -H here: the server refuses to listen on a named host.
        r.adb = self._spawn(r.net.exec_args(["adb", "-P", str(r.adb_port), "nodaemon",
                                             "server"]), f"{rack}-adb")
        wait_for(lambda: r.adb.poll() is not None or subprocess.run(
            r.adb_args("devices"), capture_output=True, timeout=10).returncode == 0,
            20, f"{rack}'s adb server")
        if r.adb.poll() is not None:
            raise RuntimeError(f"{rack}'s adb server exited ({r.adb.returncode}): "
                               f"see {self.logs / (rack + '-adb.log')}")
        for serial in r.serials:
            subprocess.run(r.adb_args("connect", serial), capture_output=True, timeout=15)

    def kill_adb(self, rack: str) -> None:
        """kill -9 of the rack's adb server. The node's device watcher reports nothing while
        no server answers (it retries), so the phones stay online and commands to them
        fail until `start_adb`, which re-connects them."""
        _kill_process(self.racks[rack].adb)

    def _delay_control(self, rack: str) -> Path:
        return self.workdir / f"{rack}-delay.json"

    def _start_proxy(self, rack: Rack) -> None:
        """The rack's delay proxy, inside its namespace: on the namespace's loopback, dialing
        the coordinator's nng address over the veth (so partitions and loss still apply to
        the link). Returns once it listens."""
        assert self.network is not None
        self._delay_control(rack.name).unlink(missing_ok=True)  # no delay until asked
        # By its path, not -m: `tests.harness` would import the whole farm into each proxy.
        script = Path(__file__).with_name("delay_proxy.py")
        rack.proxy = self._spawn(
            rack.net.exec_args([sys.executable, str(script),
                                "--listen", f"127.0.0.1:{PROXY_PORT}",
                                "--upstream", f"{self.network.gateway}:{self.nng_port}",
                                "--control", str(self._delay_control(rack.name))]),
            f"{rack.name}-proxy", stdout=subprocess.PIPE)
        proc = rack.proxy
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else b""
        proc.stdout.close()  # it prints this one line only
        if not line.startswith(b"listening "):
            raise RuntimeError(f"{rack.name}: the delay proxy did not start (exit "
                               f"{proc.poll()}): see "
                               f"{self.logs / (rack.name + '-proxy.log')}")

    def _start_virtual(self, rack: Rack) -> None:
        base = PHONE_PORT_BASE + (rack.index - 1) * self.phones_per_rack
        rack.virtual = self._spawn(
            rack.net.exec_args([sys.executable, "-m", "virtual.cli", "--phones",
                                str(self.phones_per_rack), "--adb-port", str(rack.adb_port),
                                "--base-port", str(base),
                                "--seed", str(self.seed * 1000 + rack.index * 100),
                                "--profile", self.profile]),
            f"{rack.name}-virtual", stdout=subprocess.PIPE)

    def _read_serials(self, rack: Rack) -> None:
        """The serials the rack's virtual.cli prints once its phones are plugged in; then
        its stdout is copied to its log so the pipe never fills."""
        proc = rack.virtual
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + 30 + self.phones_per_rack
        buf = b""
        fd = proc.stdout.fileno()
        while buf.count(b"\n") < self.phones_per_rack:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"{rack.name}: virtual phones did not start (exit "
                                   f"{proc.poll()}): see "
                                   f"{self.logs / (rack.name + '-virtual.log')}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    continue  # EOF: poll() tells on the next turn
                buf += chunk
        rack.serials = [s.strip() for s in buf.decode().splitlines() if s.strip()]

        def drain() -> None:
            with self._log(f"{rack.name}-virtual") as log:
                for line in proc.stdout:
                    log.write(line)

        threading.Thread(target=drain, name=f"drain-{rack.name}", daemon=True).start()

    # --- HTTP ------------------------------------------------------------------------------
    def _request(self, path: str, data: bytes | None, timeout: float
                 ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except (OSError, ValueError):  # refused, reset, timed out: the farm may be down
            return 0, None
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path`` as admin: (status, decoded JSON or None); status 0 when nothing
        answered. Never raises."""
        return self._request(path, None, HTTP_TIMEOUT_S)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        """POST ``body`` as JSON to ``path`` as admin: (status, decoded JSON or None);
        status 0 when nothing answered. Never raises."""
        return self._request(path, json.dumps(body).encode(), HTTP_TIMEOUT_S)

    # --- probes ----------------------------------------------------------------------------
    def phones(self) -> dict[str, dict]:
        """The coordinator's phones by serial ({} when it does not answer)."""
        status, listing = self.get("/api/phones")
        if status != 200 or not isinstance(listing, dict):
            return {}
        return {p["serial"]: p for p in listing.get("phones", [])}

    def phones_online(self) -> int:
        """How many of the farm's phones the coordinator calls online (0 when it is down)."""
        return sum(p.get("state") == "online" for p in self.phones().values())

    def all_serials(self) -> list[str]:
        return [s for rack in self.racks.values() for s in rack.serials]

    def rack_of(self, serial: str) -> Rack:
        for rack in self.racks.values():
            if serial in rack.serials:
                return rack
        raise KeyError(f"no rack has phone {serial}")

    @staticmethod
    def _timed_get(url: str, headers: dict[str, str] | None = None) -> float | None:
        started = time.monotonic()
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=HEALTH_TIMEOUT_S) as r:
                r.read()
        except (OSError, ValueError):
            return None
        took = time.monotonic() - started
        return took if took <= HEALTH_TIMEOUT_S else None

    def health(self) -> dict[str, float | None]:
        """Seconds the coordinator's /api/health and each node's GET /metrics (from the
        root namespace) took to answer; None when one did not within 1 s. Probed in
        parallel, so the whole call takes about 1 s at most."""
        targets = {"coordinator": self.base_url + "/api/health"}
        for rack in self.racks.values():
            targets[rack.name] = f"http://{rack.metrics_address}/metrics"
        futures = {k: self._pool.submit(self._timed_get, url) for k, url in targets.items()}
        return {k: f.result() for k, f in futures.items()}

    def _data_dir(self) -> Path:
        # After `stop` a tmpfs data dir is gone; its copy is not.
        if self.coordinator_tmpfs_mb is not None and self._stopped:
            return self.saved_coordinator_data
        return self.coordinator_data

    def db_path(self) -> Path:
        """The coordinator's SQLite farm database (FarmDB: executions, schedules, locks)."""
        return self._data_dir() / "farm.sqlite3"

    def events_db_path(self) -> Path:
        """The coordinator's event store (node_events as journaled by the nodes)."""
        return self._data_dir() / "coordinator.sqlite3"

    # --- network faults --------------------------------------------------------------------
    def partition(self, rack: str, on: bool) -> None:
        """Cut (or restore) the rack off the root namespace: the coordinator and probes."""
        self.racks[rack].net.partition(on)

    def loss(self, rack: str, percent: int) -> None:
        """Drop ``percent`` % of the rack's packets each way (0: none)."""
        self.racks[rack].net.loss(percent)

    def delay(self, rack: str, ms: float, jitter_ms: float = 0) -> None:
        """Hold every chunk the rack's node and the coordinator send each other ``ms`` +
        uniform(0, ``jitter_ms``) ms, in order (the rack's delay proxy); 0, 0 removes it.
        Applies within 0.1 s, to open connections too."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError(f"delay {ms} ms, jitter {jitter_ms} ms: must not be negative")
        self.racks[rack]  # KeyError for an unknown rack, before touching anything
        control = self._delay_control(rack)
        if not ms and not jitter_ms:
            control.unlink(missing_ok=True)
            return
        # Atomic: the proxy never reads a half-written file.
        tmp = control.with_suffix(".tmp")
        tmp.write_text(json.dumps({"delay_ms": ms, "jitter_ms": jitter_ms}))
        os.replace(tmp, control)

    def bandwidth(self, rack: str, kbit: int | None) -> None:
        """Cap the rack's link (None: no cap)."""
        self.racks[rack].net.bandwidth(kbit)

    # --- phone faults ----------------------------------------------------------------------
    def unplug(self, serials: list[str], seconds: float) -> dict[str, str]:
        """`vphone unplug SECONDS` on every serial at once (the phone drops off its adb
        server and re-plugs itself after ``seconds``). Returns the serials that could not
        be unplugged with why (e.g. one unplugged already); never raises for those."""
        def one(serial: str) -> str | None:
            try:
                self.rack_of(serial).shell(serial, "vphone", "unplug", f"{seconds:g}")
            except (RuntimeError, KeyError, subprocess.TimeoutExpired) as exc:
                return str(exc)
            return None

        with ThreadPoolExecutor(max_workers=max(1, min(16, len(serials)))) as pool:
            outcomes = dict(zip(serials, pool.map(one, serials)))
        return {s: why for s, why in outcomes.items() if why is not None}

    def slow(self, serial: str, ms: int) -> None:
        """`vphone slow MS`: every shell command and agent request of the phone takes
        ``ms`` longer (0 removes it)."""
        rack = self.rack_of(serial)
        rack.shell(serial, "vphone", "slow", str(int(ms)))
        if ms:
            rack.slow_ms[serial] = int(ms)
        else:
            rack.slow_ms.pop(serial, None)

    # --- coordinator disk ------------------------------------------------------------------
    def _mount_tmpfs(self) -> None:
        self.coordinator_data.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", f"size={self.coordinator_tmpfs_mb}m,mode=0700",
             f"pf{self.harness_id}-coord", str(self.coordinator_data)])
        self._tmpfs_mounted = True

    def fill_disk(self) -> int:
        """Fill the coordinator's tmpfs with a filler file until it is full; the bytes
        written. Needs coordinator_tmpfs_mb."""
        if not self._tmpfs_mounted:
            raise RuntimeError("fill_disk needs HarnessFarm(coordinator_tmpfs_mb=...)")
        written = 0
        # Unbuffered: a buffered file would meet ENOSPC again in its close.
        fd = os.open(self.coordinator_data / FILLER_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        try:
            # 1 MiB writes, then 4 KiB ones for the last partial megabyte (tmpfs pages).
            for size in (1 << 20, 4096):
                block = b"\0" * size
                while True:
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free_disk(self) -> None:
        """Remove the filler file (no error when there is none)."""
        (self.coordinator_data / FILLER_NAME).unlink(missing_ok=True)

    # --- clock skew ------------------------------------------------------------------------
    def skew_clock(self, rack: str, seconds: float) -> None:
        """Restart the rack's node (SIGTERM, then start) with its wall clock (Python's
        time.time/time_ns) ``seconds`` off; 0 restarts it with the true clock. Without
        libfaketime the skew can only be set at a node's start."""
        r = self.racks[rack]
        _stop_process(r.node, timeout=10)
        r.clock_skew_s = float(seconds)
        self.start_node(rack)
