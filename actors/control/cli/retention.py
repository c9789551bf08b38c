"""`farm retention`: the data retention policy applied locally to a data folder (and, with
``--db``, to the farm's PostgreSQL database)."""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone

from actors.control.cli.client import FarmClient
from actors.store.db_target import add_db_options


def _cmd_retention(client: FarmClient, args: argparse.Namespace) -> int:
    from actors.store.db_target import parse_db
    from actors.store.retention import run_command

    # A bad --db is a FarmError: cli.main prints its one line and exits 2.
    target = parse_db(args.db, args.db_password_file)
    return run_command(args.data, dry_run=args.dry_run, config=args.config,
                       now=datetime.now(timezone.utc), environ=os.environ, target=target)


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help_text = ("apply the data retention policy (spec 7.6) to a coordinator's data folder "
                 "(locally): one line per compress/delete/thin, then a summary")
    p = sub.add_parser("retention", help=help_text, description=help_text)
    p.add_argument("--data", default=os.environ.get("PHONEFARM_DATA", "./farm-data"),
                   metavar="DIR", help="data folder (env PHONEFARM_DATA, default ./farm-data)")
    add_db_options(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be done; change nothing")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML with a [retention] table (see config/retention.example.toml); "
                        "PHONEFARM_RETENTION_<KEY> variables override it")
    p.set_defaults(func=_cmd_retention)
