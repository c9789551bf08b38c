"""actors.coordinator.phone_pause.PhonePauses over a real farm database and a recording stand-in for the
hub's device actions: a pause is persisted (a coordinator restart keeps it), audited, held by
the node lock, refused work names it; the hold is taken again when its lease ends or the node
returns without it; an operator's resume gives the lock back."""

from __future__ import annotations

import pytest

from actors.coordinator.phone_pause import PAUSE_HOLDER, PhonePauses

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")


class Recovery:
    def __init__(self) -> None:
        self.failures_in_a_row = {"P1": 3}


class Schedules:
    woken = 0

    def wake(self) -> None:
        self.woken += 1


class HubStandIn:
    """Records device actions and stream events."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict]] = []
        self.events: list[tuple[str, str | None, str | None, dict]] = []
        self.phone_rows = {"P1": {"node": "rack1"}}
        self.recovery, self.schedules = Recovery(), Schedules()

    async def device_action(self, serial: str, action: dict, execution_id=None) -> dict:
        self.actions.append((serial, action))
        return {"status": "ok"}

    def emit(self, event: str, node, serial, data: dict) -> None:
        self.events.append((event, node, serial, data))


async def test_pause_is_kept_refused_held_and_resumed(db) -> None:
    hub = HubStandIn()
    pauses = PhonePauses(hub, db)
    await pauses.load()
    assert pauses.refusal("P1") is None
    pause = await pauses.pause("P1", "recovery_failures", {"failures_in_a_row": 3})
    assert pause["reason"] == "recovery_failures" and pause["detail"] == {"failures_in_a_row": 3}
    assert hub.actions == [("P1", {"type": "acquire", "execution_id": PAUSE_HOLDER,
                                   "lease_s": 86400.0})]
    (event, node, serial, data) = hub.events[-1]
    assert (event, node, serial, data["reason"]) == ("phone_paused", "rack1", "P1",
                                                      "recovery_failures")
    # A coordinator restart: a new PhonePauses reads it back from the farm database.
    again = PhonePauses(hub, db)
    await again.load()
    assert again.of("P1")["reason"] == "recovery_failures"
    assert "farm resume P1" in again.refusal("P1")
    # The hold is taken again when the lease ends or the node returns without it, not when
    # an operator released it by hand or for another holder.
    assert again.lock_changed("P1", "lock_freed", {"execution_id": PAUSE_HOLDER,
                                                   "reason": "lease expired"})
    assert not again.lock_changed("P1", "lock_freed", {"execution_id": PAUSE_HOLDER,
                                                       "reason": "released"})
    assert not again.lock_changed("P1", "lock_freed", {"execution_id": "ex-1"})
    assert again.lock_changed("P1", "hello", {"lock_holder": None})
    assert not again.lock_changed("P1", "hello", {"lock_holder": PAUSE_HOLDER})
    assert not again.lock_changed("P2", "hello", {"lock_holder": None})
    # The operator resumes it.
    out = await again.resume("P1", actor="ops", reason="cable fixed")
    assert out["resumed"] and out["was"]["reason"] == "recovery_failures"
    assert hub.actions[-1] == ("P1", {"type": "release", "execution_id": PAUSE_HOLDER})
    assert hub.events[-1][0] == "phone_resumed" and hub.schedules.woken == 1
    assert "P1" not in hub.recovery.failures_in_a_row
    assert again.refusal("P1") is None and await db.paused_phones() == {}
    trail = await db.audit_trail("phone_pause", "P1")
    assert [(t["actor"], t["reason"]) for t in trail] == [
        ("ops", "resumed: cable fixed"), (None, "paused: recovery_failures")]
    with pytest.raises(LookupError, match="not paused"):
        await again.resume("P1")
