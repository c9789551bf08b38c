"""Conversations and their messages (schema v5's ``conversations`` and ``messages``).

Owns the SQL of both tables over the farm database's single writer and readers: one
conversation per account and partner (``external_user_id`` is the partner's name as the
phone showed it, ``conversation_type`` ``direct``), its messages in the order read
(``message_id``), each with its sender (``them`` / ``us``) and ``sent_at`` = when a phone
first read it (a conversation screen shows no times we could trust). `ConversationStore.add_read`
appends only what a read adds to what is stored (`new_tail`), in one writer job, so a
screen read twice, or an event replayed after a crash, adds nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

from actors.coordinator.engagement.accounts import (ACCOUNT_JOINS, account_name, client_filter,
                                                    in_list)
from actors.store.caller_scope import as_clients
from actors.store.execution_records import utc_text

SENDERS = ("them", "us")
DIRECT = "direct"
TAIL = 500            # stored messages a read is compared with (newest)
MAX_TEXT = 4000       # one message's text, as stored
MAX_PARTNER = 200

Message = tuple[str, str]  # (sender, text)


def new_tail(stored: Sequence[Message], read: Sequence[Message]) -> list[Message]:
    """What of ``read`` (a screen's messages, oldest first) is not in ``stored`` (the
    conversation's newest stored messages, oldest first): nothing when ``read`` is a run of
    ``stored`` (the same screen again, or an older part of it); else what follows the
    longest overlap of the stored tail with the head of ``read``; all of it when they do
    not overlap (a read made after more messages came than one screen shows)."""
    stored, read = list(stored), list(read)
    n = len(read)
    if n == 0:
        return []
    for start in range(len(stored) - n, -1, -1):
        if stored[start:start + n] == read:
            return []
    for k in range(min(len(stored), n - 1), 0, -1):
        if stored[-k:] == read[:k]:
            return read[k:]
    return read


def iso(value: Any) -> str | None:
    """A stored UTC timestamp (text, as both engines give it) in ISO 8601 with ``Z``."""
    if value is None:
        return None
    text = str(value).replace(" ", "T")
    return text[:19] + "Z" if len(text) >= 19 else text


def clean_messages(messages: Any) -> list[Message]:
    """The messages of a ``messages_read`` event as (sender, text), dropping what is not one
    (an unknown sender, an empty text); texts cut at `MAX_TEXT`."""
    out: list[Message] = []
    for item in messages if isinstance(messages, list) else []:
        if not isinstance(item, dict):
            continue
        sender, text = item.get("sender"), item.get("text")
        if sender in SENDERS and isinstance(text, str) and text.strip():
            out.append((sender, text.strip()[:MAX_TEXT]))
    return out


def _conversation_view(row: Any) -> dict[str, Any]:
    last = None
    if row["last_text"] is not None:
        last = {"sender": row["last_sender"], "text": row["last_text"]}
    return {"conversation_id": row["conversation_id"], "account_id": row["account_id"],
            "account": account_name(row), "serial": row["serial"],
            "platform": row["conv_platform"], "partner": row["external_username"],
            "started_at": iso(row["started_at"]),
            "last_message_at": iso(row["last_message_at"]),
            "message_count": row["message_count"], "last_message": last}


_CONVERSATIONS = (
    "SELECT c.conversation_id, c.account_id, c.platform AS conv_platform,"
    " c.external_username, c.started_at, c.last_message_at, a.platform, a.account_number,"
    " ph.serial_number AS serial,"
    " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.conversation_id)"
    " AS message_count,"
    " (SELECT m.sender_type FROM messages m WHERE m.conversation_id = c.conversation_id"
    "  ORDER BY m.message_id DESC LIMIT 1) AS last_sender,"
    " (SELECT m.message_text FROM messages m WHERE m.conversation_id = c.conversation_id"
    "  ORDER BY m.message_id DESC LIMIT 1) AS last_text"
    f" FROM conversations c JOIN accounts a ON a.account_id = c.account_id{ACCOUNT_JOINS}")


class ConversationStore:
    """Owns the rows of ``conversations`` and ``messages`` (through ``db``, the FarmDB)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def add_read(self, account_id: int, platform: str, partner: str,
                       messages: Sequence[Message], at: datetime | None = None
                       ) -> tuple[int, int]:
        """Take what a phone read of one conversation: (conversation id, messages added)."""
        when = utc_text(at or datetime.now(timezone.utc))
        partner = partner.strip()[:MAX_PARTNER]
        read = list(messages)
        key = (account_id, platform, partner, DIRECT)

        def job(conn: Any) -> tuple[int, int]:
            conn.execute(
                "INSERT INTO conversations (account_id, platform, external_user_id,"
                " external_username, conversation_type, started_at, last_message_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, platform,"
                " external_user_id, conversation_type) DO NOTHING",
                (account_id, platform, partner, partner, DIRECT, when, when))
            conversation = conn.execute(
                "SELECT conversation_id FROM conversations WHERE account_id = ?"
                " AND platform = ? AND external_user_id = ? AND conversation_type = ?",
                key).fetchone()[0]
            rows = conn.execute(
                "SELECT sender_type, message_text FROM messages WHERE conversation_id = ?"
                " ORDER BY message_id DESC LIMIT ?", (conversation, TAIL)).fetchall()
            stored = [(r[0], r[1]) for r in reversed(rows)]
            new = new_tail(stored, read)
            if new:
                conn.executemany(
                    "INSERT INTO messages (conversation_id, sender_type, message_text,"
                    " sent_at) VALUES (?, ?, ?, ?)",
                    [(conversation, sender, text, when) for sender, text in new])
                conn.execute("UPDATE conversations SET last_message_at = ?"
                             " WHERE conversation_id = ?", (when, conversation))
            return conversation, len(new)

        return await self.db._atomic(job)

    async def list(self, clients: frozenset[int] | None = None, *,
                   account_ids: Sequence[int] | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        """Conversations of ``clients``' accounts (None: every client's), optionally of
        some accounts only, the latest message first."""
        where, args = client_filter(clients)
        if account_ids is not None:
            ids_sql, ids = in_list(account_ids)
            where, args = f"{where} AND c.account_id IN {ids_sql}", (*args, *ids)
        with as_clients(clients):
            rows = await self.db._all(
                f"{_CONVERSATIONS} WHERE {where}"
                " ORDER BY c.last_message_at DESC, c.conversation_id DESC LIMIT ?",
                (*args, limit))
        return [_conversation_view(r) for r in rows]

    async def get(self, conversation_id: int, clients: frozenset[int] | None = None,
                  *, limit: int = 200) -> dict[str, Any] | None:
        """One conversation with its newest ``limit`` messages (oldest first); None when
        there is none, or it is not of ``clients``."""
        where, args = client_filter(clients)
        with as_clients(clients):
            row = await self.db._one(f"{_CONVERSATIONS} WHERE {where}"
                                     " AND c.conversation_id = ?", (*args, conversation_id))
            if row is None:
                return None
            rows = await self.db._all(
                "SELECT message_id, sender_type, message_text, sent_at FROM messages"
                " WHERE conversation_id = ? ORDER BY message_id DESC LIMIT ?",
                (conversation_id, limit))
        return {"conversation": _conversation_view(row), "messages": [
            {"message_id": r["message_id"], "sender": r["sender_type"],
             "text": r["message_text"], "sent_at": iso(r["sent_at"])}
            for r in reversed(rows)]}

