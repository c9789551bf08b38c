"""What a node may report on (issue 17.6): its own phones and their executions, nothing else.

Owns the rule the hub applies to every node message before it changes anything: a phone
belongs to the node that reported it attached, until it is offline there (unplugged, or
that node down); an execution belongs to the node of its phone (the execution record's
serial). An event from node A about a phone attached to node B, or naming an execution of
another phone, is refused: not stored, not applied, logged naming the node. The refused
event's seq is taken by an ``event_refused`` row (which event, why), so the node's stream
goes on and the refusal stays on record.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from protocol.messages import Event

log = logging.getLogger(__name__)

REFUSED_EVENT = "event_refused"
SERIALS_CACHED = 4096  # execution -> serial never changes: a bounded cache saves the queries


class ReportScope:
    """Decides which node messages are about the sender's own phones and executions.
    ``hub`` gives ``phone_rows`` and ``node_rows``; ``db`` (a FarmDB, or None) the
    execution records' serials."""

    def __init__(self, hub: Any, db: Any = None) -> None:
        self.hub = hub
        self.db = db
        self._serials: OrderedDict[str, str | None] = OrderedDict()
        self._warned: set[tuple[str, str]] = set()  # (node, serial) of live messages dropped

    def owner_elsewhere(self, node: str, serial: str | None) -> str | None:
        """The other node ``serial`` is attached to now, or None (``node``'s own, unknown,
        or offline where it was: a phone moved to another rack may be reported there)."""
        if serial is None:
            return None
        row = self.hub.phone_rows.get(serial)
        if row is None or row["node"] == node or row["state"] == "offline":
            return None
        other = row["node"]
        if self.hub.node_rows.get(other, {}).get("state") != "up":
            return None
        return other

    async def refusals(self, node: str, events: list[Event]) -> dict[int, str]:
        """seq -> why, for each event of ``node`` it may not report (logged)."""
        execution_ids = sorted({str(e.data["execution_id"]) for e in events
                                if isinstance(e.data, dict) and e.data.get("execution_id")})
        serials = await self._execution_serials(execution_ids) if execution_ids else {}
        refused: dict[int, str] = {}
        for event in events:
            reason = None
            other = self.owner_elsewhere(node, event.serial)
            if other is not None:
                reason = f"phone {event.serial} is attached to node {other}"
            else:
                execution_id = event.data.get("execution_id") if isinstance(event.data, dict) \
                    else None
                if execution_id:
                    serial = serials.get(str(execution_id))
                    if str(execution_id) in serials and serial != event.serial:
                        owner = self.hub.phone_rows.get(serial or "", {}).get("node")
                        reason = (f"execution {execution_id} runs on phone {serial}"
                                  + (f" of node {owner}" if owner else "")
                                  + f", not on {event.serial}")
            if reason is not None:
                refused[event.seq] = reason
                log.warning("node=%s event refused seq=%d event=%s serial=%s: %s", node,
                            event.seq, event.event, event.serial, reason)
        return refused

    def live_allowed(self, node: str, serial: str | None, what: str) -> bool:
        """Whether a live message (thumbnail, live frame) of ``node`` about ``serial`` may
        be shown; a refusal is logged once per node and phone (frames come many a second)."""
        other = self.owner_elsewhere(node, serial)
        if other is None:
            return True
        if (node, serial or "") not in self._warned:
            self._warned.add((node, serial or ""))
            log.warning("node=%s %s about phone %s of node %s refused (logged once)", node,
                        what, serial, other)
        return False

    def hello_phone_allowed(self, node: str, serial: str) -> bool:
        """Whether ``node``'s Hello may list ``serial`` as its phone (logged when not)."""
        other = self.owner_elsewhere(node, serial)
        if other is not None:
            log.warning("node=%s hello lists phone %s attached to node %s: ignored", node,
                        serial, other)
        return other is None

    def node_up(self, node: str) -> None:
        """A node (re)connected: its live refusals are logged again if they recur."""
        self._warned = {w for w in self._warned if w[0] != node}

    async def _execution_serials(self, execution_ids: list[str]) -> dict[str, str | None]:
        found = {e: self._serials[e] for e in execution_ids if e in self._serials}
        missing = [e for e in execution_ids if e not in found]
        if missing and self.db is not None and hasattr(self.db, "execution_serials"):
            fetched = await self.db.execution_serials(missing)
            for execution_id, serial in fetched.items():
                self._serials[execution_id] = serial
                found[execution_id] = serial
            while len(self._serials) > SERIALS_CACHED:
                self._serials.popitem(last=False)
        return found


def refused_row(event: Event, reason: str) -> tuple[int, str, str | None, dict]:
    """The event store row that takes a refused event's seq: which event and why, none of
    its data but the execution it named."""
    data: dict[str, Any] = {"event": event.event, "reason": reason}
    if isinstance(event.data, dict) and event.data.get("execution_id"):
        data["execution_id"] = str(event.data["execution_id"])
    return event.seq, REFUSED_EVENT, event.serial, data
