"""The nodes' ``messages_read`` events into conversations (issue 21.6).

`MessageIngest` is a hub event observer (`Hub.event_observers`: told every emitted event,
none dropped): `observe` only queues a ``messages_read`` event (it runs inside the hub's
emit: no I/O, never blocks), and one task writes them in order through
`ConversationStore.add_read`. Writing is idempotent: a replayed event, or the same screen
read again, finds its messages stored and adds nothing (`new_tail`); events already taken
are also remembered by (execution_id, seq) for the process's life, so a replay costs no
write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any

from actors.coordinator.engagement.accounts import account_of_event
from actors.coordinator.engagement.conversations import ConversationStore, clean_messages

log = logging.getLogger(__name__)

EVENT = "messages_read"
REMEMBERED = 10_000  # (execution_id, seq) keys of events taken, newest kept


class MessageIngest:
    """Owns the queue of ``messages_read`` events and the task that stores them."""

    def __init__(self, hub: Any, db: Any) -> None:
        self.hub = hub
        self.store = ConversationStore(db)
        self.db = db
        self._queue: asyncio.Queue[dict] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._taken: OrderedDict[tuple[Any, Any], None] = OrderedDict()
        self.stored = 0  # messages added since start (tests, logs)

    def observe(self, item: dict) -> None:
        """One emitted event (inside `Hub.emit`: memory only)."""
        if item.get("event") == EVENT:
            self._queue.put_nowait(item)

    def start(self) -> "MessageIngest":
        self.hub.event_observers.append(self.observe)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="message-ingest")
        return self

    async def replay(self) -> int:
        """Queue again the ``messages_read`` events the last run stored just before it
        stopped (this queue is memory only); `new_tail` makes the second write a no-op."""
        return await self.hub.replay_stored((EVENT,), self.observe)

    async def close(self) -> None:
        if self.observe in self.hub.event_observers:
            self.hub.event_observers.remove(self.observe)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every event queued so far is stored (tests)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self.take(item.get("data") or {}, serial=item.get("serial"))
            except Exception:  # one bad event must not end the intake
                log.exception("messages_read event not stored: %r", item.get("data"))
            finally:
                self._queue.task_done()

    async def take(self, data: dict[str, Any], serial: str | None = None) -> int:
        """Store one ``messages_read`` event's data; the number of messages added."""
        key = (data.get("execution_id"), data.get("seq"))
        if key[1] is not None and key in self._taken:
            return 0
        partner = data.get("partner")
        messages = clean_messages(data.get("messages"))
        if not isinstance(partner, str) or not partner.strip() or not messages:
            log.info("messages_read without a partner or messages ignored (execution %s)",
                     data.get("execution_id"))
            return 0
        account = await account_of_event(self.db, data, serial or data.get("serial"))
        if account is None:
            log.warning("messages_read of no known account ignored (execution %s, "
                        "account %r)", data.get("execution_id"), data.get("account"))
            return 0
        _, added = await self.store.add_read(account["account_id"], account["platform"],
                                             partner, messages, _when(data.get("at")))
        if key[1] is not None:
            self._taken[key] = None
            while len(self._taken) > REMEMBERED:
                self._taken.popitem(last=False)
        self.stored += added
        return added


def _when(at: Any) -> datetime | None:
    """The event's ``at`` (epoch seconds) as a UTC time; None when it is not one."""
    if not isinstance(at, (int, float)) or isinstance(at, bool):
        return None
    try:
        return datetime.fromtimestamp(at, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
