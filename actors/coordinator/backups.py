"""The coordinator's backups (issue 18.3): taken on request (`POST /api/backups`) or daily
(`--backup-at HH:MM`), one at a time, in a worker thread, reported on the status stream.

Owns `BackupService`: where backups go (``--backup-dir``, default ``DATA/backups``), the one
backup in progress (a second request is `BackupBusy`), the stream events ``backup_started``,
``backup_progress`` {done_files, total_files, done_bytes, total_bytes}, ``backup_finished``
{the backup's summary} and ``backup_failed`` {reason}, the daily scheduled backup and its
pruning to the newest ``--backup-keep`` of this farm's backups. What a backup holds is
actors.store.backup's.
"""

from __future__ import annotations

import asyncio
import logging
import time as clock
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Callable

from actors.store.backup import BackupBusy, BackupError, list_backups, prune, summary, take_backup
from actors.coordinator.time_of_day import parse_time_of_day

log = logging.getLogger(__name__)

# hub.emit(event, node, serial, data)
Emit = Callable[[str, str | None, str | None, dict], None]


def parse_backup_at(value: str | None) -> time | None:
    """``--backup-at HH:MM`` (24-hour, the coordinator machine's local time); None when unset."""
    return parse_time_of_day(value, "local time")


def parse_backup_keep(value: str | int) -> int:
    """``--backup-keep N``: at least 1."""
    try:
        keep = int(value)
    except ValueError:
        keep = 0
    if keep < 1:
        raise ValueError(f"{value!r}: a whole number of backups, at least 1")
    return keep


def next_due(now: datetime, at: time) -> datetime:
    """The first local ``at`` after ``now`` (an aware local datetime)."""
    due = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return due if due > now else (now + timedelta(days=1)).replace(
        hour=at.hour, minute=at.minute, second=0, microsecond=0)


class BackupService:
    """Owns this coordinator's backups: taking one at a time off the event loop, telling
    the status stream how it goes, listing the backup folder, the daily scheduled backup
    and pruning its old ones. ``database`` is the farm's --db (a DbTarget; None: the SQLite
    files in ``data``)."""

    def __init__(self, data: Path, backup_dir: Path, emit: Emit, *,
                 registry: Path | None = None, master_key: bytes | None = None,
                 at: time | None = None, keep: int = 30, database: Any = None) -> None:
        parse_backup_keep(keep)
        self.data, self.backup_dir, self.emit = Path(data), Path(backup_dir), emit
        self.registry, self.master_key, self.database = registry, master_key, database
        self.at, self.keep = at, keep
        self.source = str(self.data.resolve())
        self.running: str | None = None  # who asked for the backup being taken

    async def backup(self, to: Path | None = None, *, include_master_key: bool = False,
                     scheduled: bool = False, actor: str | None = None) -> dict[str, Any]:
        """Take a backup into ``to`` (default the backup folder); its summary. BackupBusy
        while another runs; BackupError (also on the stream) when it fails."""
        if self.running is not None:
            raise BackupBusy(f"a backup is being taken already (for {self.running}); try "
                             f"again when it has finished")
        self.running = actor or ("schedule" if scheduled else "someone")
        dest = Path(to) if to is not None else self.backup_dir
        loop = asyncio.get_running_loop()
        started = clock.monotonic()

        def progress(done: int, total: int, done_bytes: int, total_bytes: int) -> None:
            loop.call_soon_threadsafe(self.emit, "backup_progress", None, None, {
                "done_files": done, "total_files": total, "done_bytes": done_bytes,
                "total_bytes": total_bytes})

        self.emit("backup_started", None, None, {"to": str(dest), "scheduled": scheduled,
                                                 "include_master_key": include_master_key})
        try:
            folder, manifest = await asyncio.to_thread(
                take_backup, self.data, dest, registry=self.registry,
                master_key=self.master_key, include_master_key=include_master_key,
                progress=progress, scheduled=scheduled, database=self.database)
        except Exception as exc:  # noqa: BLE001 - every failure is told, on the stream too
            if isinstance(exc, BackupError):
                reason = str(exc)
            elif isinstance(exc, OSError):
                reason = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
            else:  # not foreseen: the traceback goes to the log
                log.exception("backup failed")
                reason = f"{type(exc).__name__}: {exc}"
            log.error("backup failed: %s", reason)
            self.emit("backup_failed", None, None, {"reason": reason, "scheduled": scheduled})
            raise BackupError(f"backup failed: {reason}") from None
        finally:
            self.running = None
        result = {**summary(folder, manifest),
                  "duration_s": round(clock.monotonic() - started, 3)}
        self.emit("backup_finished", None, None, result)
        return result

    def list(self) -> list[dict[str, Any]]:
        """The backups in the backup folder, newest first (partial and foreign folders
        left out)."""
        return [summary(path, manifest)
                for path, manifest in reversed(list_backups(self.backup_dir))]

    async def scheduled_once(self) -> None:
        """The daily backup, then the oldest of this farm's backups beyond ``keep`` go.
        A failure is logged with its reason (and was on the stream); the next day tries
        again."""
        try:
            result = await self.backup(scheduled=True, actor="schedule")
        except BackupBusy as exc:
            log.warning("scheduled backup skipped: %s", exc)
            return
        except BackupError as exc:
            log.error("scheduled %s", exc)
            return
        try:
            deleted = await asyncio.to_thread(prune, self.backup_dir, self.keep, self.source)
        except (BackupError, OSError) as exc:
            log.error("pruning old backups in %s failed: %s", self.backup_dir, exc)
            return
        for path in deleted:
            log.info("old backup %s deleted (--backup-keep %d)", path, self.keep)
        if deleted:
            self.emit("backup_pruned", None, None, {
                "deleted": [p.name for p in deleted], "keep": self.keep})
        log.info("scheduled backup %s done", result["path"])

    async def loop(self) -> None:
        """Every day at ``at`` (local time), `scheduled_once`. The clock is looked at again
        at least once a minute, so a changed clock (or DST) shifts the wait with it."""
        if self.at is None:
            return
        while True:
            due = next_due(datetime.now().astimezone(), self.at)
            log.info("next scheduled backup at %s", due.isoformat(timespec="minutes"))
            while (left := (due - datetime.now().astimezone()).total_seconds()) > 0:
                await asyncio.sleep(min(left, 60.0))
            await self.scheduled_once()
