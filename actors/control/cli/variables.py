"""`farm vars preview`: text with its variables and spintax resolved, locally on the farm
database (its SQLite file, or its PostgreSQL database with --db URL).
"""

from __future__ import annotations

import argparse
import os
import sys

from actors.control.cli.client import EXIT_OK, EXIT_REJECTED, FarmClient


def caret_lines(text: str, offset: int) -> list[str]:
    """TEXT on one line and a caret under character ``offset`` (newlines shown as spaces)."""
    return ["  " + text.replace("\n", " "), "  " + " " * offset + "^"]


def _cmd_vars_preview(client: FarmClient, args: argparse.Namespace) -> int:
    import asyncio
    import random
    from pathlib import Path

    from actors.store.db_target import parse_db
    from actors.store.farm_db import FarmDB, default_db_path
    from protocol.errors import FarmError, VariableError

    value = args.db or os.environ.get("PHONEFARM_DB")
    target = None
    if value and value.startswith(("postgresql://", "postgres://")):
        try:
            target = parse_db(value, args.db_password_file)
        except FarmError as exc:
            print(f"farm: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        path = default_db_path()  # its folder holds the master key and the media
    else:
        path = Path(value) if value else default_db_path()
        if not path.exists():
            print(f"farm: no farm database at {path} (start the coordinator, or pass --db)",
                  file=sys.stderr)
            return EXIT_REJECTED

    async def preview() -> str:
        db = await FarmDB.open(path, target=target)
        try:
            return await db.resolve_text(args.text, args.phone, args.account,
                                         rng=random.Random(args.seed))
        finally:
            await db.close()

    try:
        print(asyncio.run(preview()))
    except VariableError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        if exc.text == args.text:
            for line in caret_lines(exc.text, exc.offset):
                print(line, file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    vars_help = "variables and spintax (locally, on the farm database file)"
    p = sub.add_parser("vars", help=vars_help, description=vars_help)
    vars_sub = p.add_subparsers(dest="vars_command", required=True, metavar="COMMAND")
    help_text = ("print TEXT with its ${...} variables and {a|b} spintax resolved for a phone "
                 "(counters and media moves are real: they persist; passwords are shown "
                 "masked)")
    p = vars_sub.add_parser("preview", help=help_text, description=help_text)
    p.add_argument("text")
    p.add_argument("--phone", required=True, metavar="SERIAL")
    p.add_argument("--account", default=None, metavar="PLATFORM.NUMBER",
                   help="current account for ${account.FIELD}, e.g. clipshare.account1")
    p.add_argument("--db", default=None, metavar="PATH|URL",
                   help="farm database: a SQLite file (default $PHONEFARM_DATA/farm.sqlite3, "
                        "PHONEFARM_DATA defaulting to ./farm-data) or, as the coordinator's "
                        "--db, postgresql://USER@HOST[:PORT]/DATABASE (env PHONEFARM_DB)")
    p.add_argument("--db-password-file", metavar="FILE",
                   default=os.environ.get("PHONEFARM_DB_PASSWORD_FILE"),
                   help="file holding the PostgreSQL password (else PGPASSWORD, ~/.pgpass)")
    p.add_argument("--seed", type=int, default=None, help="seed the random choices")
    p.set_defaults(func=_cmd_vars_preview)
