"""`farm db status|migrate`: the farm database's schema version, and bringing it up to date
(locally: on the data folder's SQLite file or the ``--db`` PostgreSQL database)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from actors.control.cli.client import EXIT_REJECTED, FarmClient
from actors.store.db_target import add_db_options


def _target(args: argparse.Namespace):
    from actors.store.db_target import parse_db

    return parse_db(args.db, args.db_password_file)


def _status_lines(status: dict) -> list[str]:
    version = status["version"]
    state = ("not created yet (the coordinator creates it at its first start)"
             if version is None else
             f"NEWER than this program's {status['program_version']}: the coordinator refuses "
             "to start on it" if status["newer_than_program"] else
             f"{status['pending']} migration(s) pending" if status["pending"] else "up to date")
    return [f"engine:   {status['engine']}", f"database: {status['database']}",
            f"schema:   {version if version is not None else '-'} "
            f"(this program: {status['program_version']}): {state}"]


def _cmd_status(client: FarmClient, args: argparse.Namespace) -> int:
    import psycopg

    from actors.store.migrations import schema_status
    from protocol.errors import FarmError

    try:
        status = schema_status(Path(args.data), _target(args))
    except (FarmError, psycopg.Error, OSError) as exc:
        print(f"farm db: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_REJECTED
    print("\n".join(_status_lines(status)))
    return EXIT_REJECTED if status["newer_than_program"] else 0


def _cmd_migrate(client: FarmClient, args: argparse.Namespace) -> int:
    import psycopg

    from actors.store.farm_db import FarmDB
    from actors.store.migrations import schema_status
    from protocol.errors import FarmError

    async def migrate(target) -> None:  # noqa: ANN001
        db = await FarmDB.open(Path(args.data) / "farm.sqlite3", target=target)
        await db.close()

    try:
        target = _target(args)
        before = schema_status(Path(args.data), target)
        asyncio.run(migrate(target))
        after = schema_status(Path(args.data), target)
    except (FarmError, psycopg.Error, OSError) as exc:
        print(f"farm db: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_REJECTED
    print(f"schema version {before['version'] or 0} -> {after['version']} "
          f"({after['database']})")
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help_text = ("the farm database's schema version (status) and bringing it up to date "
                 "(migrate), locally")
    db = sub.add_parser("db", help=help_text, description=help_text)
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for name, func, text in (
            ("status", _cmd_status, "engine, database, schema version, migrations pending"),
            ("migrate", _cmd_migrate, "apply the pending migrations (the coordinator also "
                                      "does at start; a newer schema is refused)")):
        p = db_sub.add_parser(name, help=text, description=text)
        p.add_argument("--data", default=os.environ.get("PHONEFARM_DATA", "./farm-data"),
                       metavar="DIR", help="data folder (env PHONEFARM_DATA, default ./farm-data)")
        add_db_options(p)
        p.set_defaults(func=func)
