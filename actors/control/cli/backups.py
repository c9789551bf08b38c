"""`farm backup` (through the API: the coordinator takes it while the farm runs), `farm backup
list`, and `farm restore` (local, with the coordinator stopped; a PostgreSQL backup into the
``--db`` database)."""

from __future__ import annotations

import argparse
import os
import sys
import threading

from actors.control.cli.client import EXIT_OK, FarmClient, add_command
from actors.control.cli.format import format_table
from actors.store.db_target import add_db_options

# A backup is answered when it is whole: a big farm's takes minutes.
BACKUP_TIMEOUT_S = 3600.0


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _follow_progress(client: FarmClient, done: threading.Event) -> None:
    """Print the backup's progress events on stderr until ``done`` (best effort: a stream
    that cannot be followed leaves only the result)."""
    try:
        for name, payload in client.events(read_timeout=BACKUP_TIMEOUT_S):
            if done.is_set():
                return
            data = payload.get("data") or {}
            if name == "backup_progress":
                print(f"backup: {data.get('done_files')}/{data.get('total_files')} files, "
                      f"{_size(data.get('done_bytes'))} of {_size(data.get('total_bytes'))}",
                      file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 - progress is a courtesy, the POST's answer is the result
        return


def _cmd_backup(client: FarmClient, args: argparse.Namespace) -> int:
    if args.action == "list":
        answer = client.get_json("/api/backups")
        rows = [[b["name"], str(b.get("created_at")), _size(b.get("size")), str(b.get("files")),
                 "yes" if b.get("master_key_included") else "no",
                 "scheduled" if b.get("scheduled") else "manual"]
                for b in answer["backups"]]
        print(f"backups in {answer['backup_dir']}:")
        if rows:
            print(format_table(rows, ["NAME", "CREATED", "SIZE", "FILES", "MASTER KEY", "BY"]))
        return EXIT_OK
    body: dict = {"include_master_key": args.include_master_key}
    if args.to is not None:
        body["to"] = os.path.abspath(args.to)
    done = threading.Event()
    follower = FarmClient(client.url, client.token, timeout=client.timeout)
    threading.Thread(target=_follow_progress, args=(follower, done), daemon=True).start()
    client.timeout = max(client.timeout, BACKUP_TIMEOUT_S)
    try:
        result = client.post_json("/api/backups", body)
    finally:
        done.set()
    facts = result.get("facts") or {}
    print(f"backup {result['path']}: {result['files']} files, {_size(result.get('size'))}, "
          f"{result.get('duration_s')} s")
    if facts:
        print("holds: " + ", ".join(f"{k}={v}" for k, v in sorted(facts.items())))
    print(f"master key: {result.get('master_key')}")
    return EXIT_OK


def _cmd_restore(client: FarmClient, args: argparse.Namespace) -> int:
    from actors.store.backup import restore_backup

    from actors.store.db_target import parse_db

    report = restore_backup(args.backup, args.data, force=args.force,
                            database=parse_db(args.db, args.db_password_file))
    for line in report.lines():
        print(line)
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "backup",
                    "take a backup now through the coordinator (a consistent copy while the "
                    "farm runs: databases, registry, recordings, media, screenshots; the "
                    "master key only with --include-master-key); `farm backup list` lists "
                    "the coordinator's backups", _cmd_backup)
    p.add_argument("action", nargs="?", choices=["list"], help="list the backups instead")
    p.add_argument("--to", metavar="DIR", default=None,
                   help="an existing folder on the coordinator's machine (default its "
                        "--backup-dir, DATA/backups)")
    p.add_argument("--include-master-key", action="store_true",
                   help="copy the master key into the backup too (else keep it apart)")
    help_text = ("restore a backup into a coordinator's data folder (locally, with the "
                 "coordinator stopped): every file's hash is checked first; a non-empty "
                 "folder needs --force, which moves its contents to DATA.replaced-<time>")
    p = sub.add_parser("restore", help=help_text, description=help_text)
    p.add_argument("backup", metavar="BACKUP", help="the phonefarm-backup-... folder")
    p.add_argument("--data", default=os.environ.get("PHONEFARM_DATA", "./farm-data"),
                   metavar="DIR", help="data folder (env PHONEFARM_DATA, default ./farm-data)")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty data folder (moved aside, not deleted) or "
                        "PostgreSQL database (dumped beside it first)")
    add_db_options(p, "a PostgreSQL backup's target (an empty database)")
    p.set_defaults(func=_cmd_restore)
