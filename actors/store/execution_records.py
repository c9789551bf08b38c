"""Execution-record writes as plain statements on the farm database's write connection.

Why a separate, synchronous form: node events arrive in bursts (four per execution at
least), and one writer job per event cost a thread hop and a wait each. `ExecutionRecords`
runs inside one job of the single writer (`FarmDB.write_records`), so a whole burst of
events becomes one job; its reads see the job's own earlier writes (a step started and
finished in the same burst). `FarmDB`'s async record methods are thin wrappers over it: one
way to write a record.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import quote

from protocol.errors import ValidationError

EXECUTION_FIELDS = ("task_id", "phone_id", "account_id", "start_time", "end_time", "status",
                    "error_message", "run_id", "serial", "sequence", "error_reason",
                    "current_step", "plan")
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "stopped"})
FIND_STEP_SQL = (
    "SELECT s.step_id, s.status, s.start_seq FROM execution_steps s JOIN executions e"
    " ON e.execution_id = s.execution_id WHERE e.execution_key = ? AND s.path = ?"
    " ORDER BY s.step_id DESC LIMIT 1")


def utc_text(when: datetime | None = None) -> str:
    """A UTC timestamp as the database stores it (naive datetimes are taken as UTC)."""
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.isoformat(sep=" ", timespec="microseconds")


def screenshot_route(execution_id: str, path: str) -> str:
    """The API route of a step's screenshot (GET, the caller's scope checked), each segment
    percent-encoded: a step path such as ``steps[0]`` or ``a/b`` must stay one segment."""
    return (f"/api/executions/{quote(execution_id, safe='')}/steps/"
            f"{quote(path, safe='')}/screenshot")


class ExecutionRecords:
    """Owns nothing but a borrowed write connection: reads and writes of executions and
    their steps, run on the writer's thread inside one job (no awaits in here)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo only this block's writes when it raises (the rest of the job stays)."""
        self.conn.execute("SAVEPOINT record")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO record")
            self.conn.execute("RELEASE record")
            raise
        self.conn.execute("RELEASE record")

    def update(self, key: str, **fields: Any) -> None:
        """Set columns of execution ``key`` (see `FarmDB.update_execution`)."""
        unknown = set(fields) - set(EXECUTION_FIELDS)
        if unknown:
            raise ValidationError(f"execution {key}", f"unknown fields {sorted(unknown)}")
        if not fields:
            return
        if fields.get("status") in FINAL_STATUSES and "end_time" not in fields:
            fields["end_time"] = datetime.now(timezone.utc)
        values = [utc_text(v) if isinstance(v, datetime) else v for v in fields.values()]
        sets = ", ".join(f"{name} = ?" for name in fields)
        row = self.conn.execute(f"UPDATE executions SET {sets} WHERE execution_key = ?"
                                " RETURNING execution_id", (*values, key)).fetchone()
        if row is None:
            raise ValidationError(f"execution {key}", "no such execution")

    def status(self, key: str) -> str | None:
        row = self.conn.execute("SELECT status FROM executions WHERE execution_key = ?",
                                (key,)).fetchone()
        return None if row is None else row[0]

    def outcome(self, key: str) -> tuple[str, str | None] | None:
        """(status, error_reason) of execution ``key``, None if there is none."""
        row = self.conn.execute("SELECT status, error_reason FROM executions"
                                " WHERE execution_key = ?", (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def add_step(self, key: str, step_number: int, action_type: str | None = None, *,
                 path: str | None = None, screen_name: str | None = None,
                 status: str = "running", start_time: datetime | None = None,
                 start_seq: int | None = None) -> int:
        """A new step row of execution ``key`` (also its ``current_step``); its step_id.
        ``start_seq``: the journal seq of the node event that started it."""
        row = self.conn.execute("SELECT execution_id FROM executions WHERE execution_key = ?",
                                (key,)).fetchone()
        if row is None:
            raise ValidationError(f"execution {key}", "no such execution")
        step = self.conn.execute(
            "INSERT INTO execution_steps (execution_id, step_number, action_type, path,"
            " screen_name, status, start_time, start_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING step_id",
            (row[0], step_number, action_type, path, screen_name, status,
             utc_text(start_time), start_seq)).fetchone()
        self.conn.execute("UPDATE executions SET current_step = ? WHERE execution_id = ?",
                          (step_number, row[0]))
        return step[0]

    def find_step(self, key: str, path: str) -> tuple[int, str, int | None] | None:
        """(step_id, status, start_seq) of the latest step of execution ``key`` at ``path``,
        or None."""
        row = self.conn.execute(FIND_STEP_SQL, (key, path)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def finish_step(self, step_id: int, status: str, *, screen_name: str | None = None,
                    error: str | None = None, screenshot: str | None = None,
                    end_time: datetime | None = None) -> None:
        row = self.conn.execute(
            "UPDATE execution_steps SET status = ?, end_time = ?,"
            " screen_name = COALESCE(?, screen_name), error = COALESCE(?, error),"
            " screenshot = COALESCE(?, screenshot) WHERE step_id = ? RETURNING step_id",
            (status, utc_text(end_time), screen_name, error, screenshot, step_id)).fetchone()
        if row is None:
            raise ValidationError(f"execution step {step_id}", "no such step")
