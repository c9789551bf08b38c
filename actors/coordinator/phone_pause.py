"""The coordinator's paused phones (spec 12.3.3: "pause the device after repeated failures").

Owns which phones the coordinator has paused, why and since when (persisted in the farm
database: ``phones.paused_reason``, so a coordinator restart keeps them), the refusal of new
work for them (``refusal``: runs and schedules ask before starting anything), the operator's
``resume`` (audited), and the lock underneath: a paused phone's lock is held by
``PAUSE_HOLDER`` on its node, so even a direct action is refused there; the hold is taken
again when its lease (a day at most) ends or the node comes back while the phone is still
paused. ``phone_paused`` / ``phone_resumed`` events (``by: coordinator``) go on the stream.
"""

from __future__ import annotations

import logging
from typing import Any

from protocol.errors import FarmError

log = logging.getLogger(__name__)

PAUSE_HOLDER = "phone-paused"     # the lock holder of a paused phone on its node
HOLD_LEASE_S = 24 * 3600.0        # the longest lease a phone grants; taken again after


class PhonePauses:
    """The paused phones of one hub; ``await load()`` before use."""

    def __init__(self, hub: Any, db: Any) -> None:
        self.hub = hub
        self.db = db
        self.paused: dict[str, dict] = {}

    async def load(self) -> None:
        self.paused = await self.db.paused_phones()
        if self.paused:
            log.warning("paused phones: %s", ", ".join(
                f"{s} ({p['reason']})" for s, p in sorted(self.paused.items())))

    def of(self, serial: str) -> dict | None:
        """{"reason", "since", "detail"} of a paused phone, None if it is not paused."""
        return self.paused.get(serial)

    def refusal(self, serial: str) -> str | None:
        """Why new work is refused on ``serial`` (None: it is not paused)."""
        pause = self.paused.get(serial)
        if pause is None:
            return None
        return (f"phone {serial} is paused ({pause['reason']} since {pause['since']} UTC): "
                f"resume it with `farm resume {serial}` or POST /api/phones/{serial}/resume")

    async def pause(self, serial: str, reason: str, detail: dict | None = None,
                    actor: str | None = None) -> dict:
        """Pause ``serial`` for ``reason`` (e.g. recovery_failures); its pause record."""
        before = self.paused.get(serial)
        await self.db.set_phone_pause(serial, reason, detail or {})
        self.paused = await self.db.paused_phones()
        pause = self.paused[serial]
        await self.db.audit("phone_pause", serial, "update", before, pause, actor=actor,
                            reason=f"paused: {reason}")
        held = await self.hold(serial)
        log.error("phone=%s paused: %s %s (lock %s)", serial, reason, detail or {}, held)
        self._emit("phone_paused", serial, {"reason": reason, "since": pause["since"],
                                            "detail": pause["detail"], "by": "coordinator",
                                            "lock": held,
                                            "resume": f"POST /api/phones/{serial}/resume"})
        return pause

    async def resume(self, serial: str, actor: str | None = None,
                     reason: str | None = None) -> dict:
        """The operator's resume: the pause ends, the lock is given back; LookupError when
        the phone is not paused. Returns {"serial", "resumed", "was"}."""
        before = self.paused.get(serial)
        if before is None:
            raise LookupError(f"phone {serial} is not paused")
        await self.db.set_phone_pause(serial, None)
        self.paused.pop(serial, None)
        await self.db.audit("phone_pause", serial, "update", before, None, actor=actor,
                            reason=f"resumed{': ' + reason if reason else ''}")
        released = await self._device(serial, {"type": "release",
                                                "execution_id": PAUSE_HOLDER})
        recovery = getattr(self.hub, "recovery", None)
        if recovery is not None:  # a fresh start: the failures before the pause are forgiven
            recovery.failures_in_a_row.pop(serial, None)
        log.warning("phone=%s resumed by %s (was paused: %s)", serial, actor or "?",
                    before["reason"])
        self._emit("phone_resumed", serial, {"by": "coordinator", "actor": actor,
                                             "was": before["reason"],
                                             "lock_released": released.get("status") == "ok"})
        schedules = getattr(self.hub, "schedules", None)
        if schedules is not None:
            schedules.wake()
        return {"serial": serial, "resumed": True, "was": before}

    async def hold(self, serial: str) -> str:
        """Take the pause lock on the phone's node; its answer's status (best effort: the
        coordinator refuses new work for a paused phone even without it)."""
        out = await self._device(serial, {"type": "acquire", "execution_id": PAUSE_HOLDER,
                                          "lease_s": HOLD_LEASE_S})
        if out.get("status") != "ok":
            log.warning("phone=%s pause lock not taken: %s %s", serial, out.get("status"),
                        out.get("error"))
        return str(out.get("status"))

    def lock_changed(self, serial: str, event: str, data: dict) -> bool:
        """True when the pause lock of a still paused phone must be taken again: its lease
        ended, or its node (re)appeared without it."""
        if serial not in self.paused:
            return False
        if event == "lock_freed":
            return data.get("execution_id") == PAUSE_HOLDER and data.get("reason") != "released"
        return event == "hello" and data.get("lock_holder") != PAUSE_HOLDER

    async def _device(self, serial: str, action: dict) -> dict:
        try:
            return await self.hub.device_action(serial, action)
        except FarmError as exc:
            return {"status": "error", "error": str(exc)}

    def _emit(self, event: str, serial: str, data: dict) -> None:
        row = getattr(self.hub, "phone_rows", {}).get(serial) or {}
        self.hub.emit(event, row.get("node"), serial, data)
