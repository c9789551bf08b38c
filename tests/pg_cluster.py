"""A real PostgreSQL server for the test run: Debian's ``initdb`` and ``pg_ctl`` in a temp dir,
started once per session, no system service.

Owns the cluster's folder and process. The farm connects as ``phonefarm``, an ordinary role
(not a superuser: row-level security binds it) with a password over TCP, as a coordinator
would; each test gets a database of its own, copied from a template migrated once.
Run as root (CI), the server runs as the ``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from itertools import count
from pathlib import Path

import psycopg

from actors.store.db_target import DbTarget, parse_db

APP_ROLE = "phonefarm"
APP_PASSWORD = "phonefarm-test-only"  # a throwaway cluster's, not a secret
_ids = count(1)


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A PostgreSQL cluster of the test run's own (see the module docstring)."""

    def __init__(self) -> None:
        # In memory where the machine has room: a test run creates hundreds of databases,
        # and their files on disk cost more to write and to remove than the tests take.
        shm = Path("/dev/shm")
        memory = shm.is_dir() and shutil.disk_usage(shm).free > 2 << 30
        self.folder = Path(tempfile.mkdtemp(prefix="phonefarm-pg-",
                                            dir=str(shm) if memory else None))
        self.port = _free_port()
        self._as: list[str] = []
        self._template_ready = False

    def start(self) -> "PgCluster":
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL's initdb/pg_ctl not found: apt-get install postgresql")
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(self.folder, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.folder / "data"
        self._run(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        hba = data / "pg_hba.conf"
        hba.write_text("local all all trust\n"
                       "host all postgres 127.0.0.1/32 trust\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n")
        self._run(pg_ctl, "-D", str(data), "-l", str(self.folder / "server.log"), "-w",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
                        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                        " -c max_connections=300", "start")
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}' CREATEDB")
        return self

    def stop(self) -> None:
        pg_ctl = pg_bin("pg_ctl")
        if pg_ctl and (self.folder / "data" / "postmaster.pid").exists():
            self._run(pg_ctl, "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])}: {done.stderr.strip() or done.stdout}")

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                               dbname=dbname, autocommit=True)

    def url(self, dbname: str) -> str:
        return f"postgresql://{APP_ROLE}@127.0.0.1:{self.port}/{dbname}"

    def target(self, dbname: str) -> DbTarget:
        return DbTarget("postgresql", self.url(dbname), APP_PASSWORD)

    def new_database(self, migrated: bool = True) -> DbTarget:
        """A fresh database owned by the farm's role: empty, or (``migrated``) at the
        newest schema version, copied from a template migrated once."""
        name = f"farm_{os.getpid()}_{next(_ids)}"
        with self.admin() as conn:
            if migrated:
                self._template(conn)
                conn.execute(f"CREATE DATABASE {name} OWNER {APP_ROLE} TEMPLATE farm_template"
                             " STRATEGY FILE_COPY")
            else:
                conn.execute(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
        return self.target(name)

    def drop_database(self, target: DbTarget) -> None:
        """Remove a test's database (its connections ended first)."""
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {target.url.rsplit('/', 1)[1]} WITH (FORCE)")

    def _template(self, conn: psycopg.Connection) -> None:
        if self._template_ready:
            return
        from actors.store.migrations import migrate_postgresql

        conn.execute(f"CREATE DATABASE farm_template OWNER {APP_ROLE}")
        migrate_postgresql(self.target("farm_template"))
        self._template_ready = True

    def password_file(self, folder: Path) -> Path:
        path = folder / "pg-password"
        path.write_text(APP_PASSWORD + "\n")
        path.chmod(0o600)
        return path


def wait_gone(cluster: PgCluster, dbname: str, timeout: float = 10) -> None:
    """Wait until no connection uses ``dbname`` (a stopped coordinator's pool closing)."""
    deadline = time.monotonic() + timeout
    with cluster.admin() as conn:
        while time.monotonic() < deadline:
            n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                             (dbname,)).fetchone()[0]
            if not n:
                return
            time.sleep(0.05)


__all__ = ["PgCluster", "parse_db", "pg_bin", "wait_gone"]
