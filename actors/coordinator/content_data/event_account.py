"""Which execution, phone and account a node's data event is about (issue 21).

Owns the one rule every consumer of the node's data events (``metric_recorded``,
``post_recorded``, ``health_signal``: actors.coordinator.content_data; ``messages_read``:
actors.coordinator.engagement) uses to find the rows an event writes onto:

1. the execution by its key (``execution_id`` in the event is the execution's key,
   ``ex-...``, as RunSequence carries it; never a row id: a node could name any row);
2. an execution whose record names a phone other than the event's is refused (the event
   is dropped and logged): a node may only write onto its own phones' executions and
   accounts (the hub's ReportScope refuses such events too; this guards the rows);
3. the account: the execution's, else the event's ``account`` (``platform.number``) on the
   event's phone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EventAccount:
    """What an event is about: the executions row id, account, phone and platform (None: not
    known), or ``refused`` saying why the event must not be written at all."""

    execution_id: int | None = None
    account_id: int | None = None
    phone_id: int | None = None
    platform: str | None = None
    refused: str | None = None


def execution_key(data: dict) -> str | None:
    """The execution key an event names (None: none, or not a key)."""
    value = data.get("execution_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return None
    return str(value)


def resolve_event(conn: Any, data: dict, serial: str | None) -> EventAccount:
    """The execution and account of a node event (``serial``: the phone it came about; the
    event's own ``serial`` when None). Runs on a connection (a writer job)."""
    serial = serial or data.get("serial")
    execution_id = account_id = phone_id = None
    key = execution_key(data)
    if key is not None:
        row = conn.execute("SELECT execution_id, account_id, phone_id, serial FROM executions"
                           " WHERE execution_key = ?", (key,)).fetchone()
        if row is not None:
            if row[3] and serial and row[3] != serial:
                return EventAccount(refused=f"execution {key} runs on phone {row[3]}, not on "
                                            f"{serial}")
            execution_id, account_id, phone_id = row[0], row[1], row[2]
            serial = serial or row[3]
    ref = data.get("account")
    if account_id is None and isinstance(ref, str) and "." in ref and serial:
        platform, number = ref.split(".", 1)
        row = conn.execute(
            "SELECT a.account_id FROM accounts a JOIN phones ph ON ph.phone_id = a.phone_id"
            " WHERE a.platform = ? AND a.account_number = ? AND ph.serial_number = ?",
            (platform, number, serial)).fetchone()
        account_id = row[0] if row is not None else None
    if phone_id is None and serial:
        row = conn.execute("SELECT phone_id FROM phones WHERE serial_number = ?",
                           (serial,)).fetchone()
        phone_id = row[0] if row is not None else None
    platform = None
    if account_id is not None:
        row = conn.execute("SELECT platform FROM accounts WHERE account_id = ?",
                           (account_id,)).fetchone()
        platform = row[0] if row is not None else None
    return EventAccount(execution_id, account_id, phone_id, platform)
