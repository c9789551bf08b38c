"""The phone actor: the only owner of one phone.

Every device action for a serial goes through its ``PhoneActor``, in the actor's own thread,
so two executions can never touch one phone at once. The actor owns the device driver, the
lock (execution id + lease), active app, active account per platform, last screen name and
the latest frame. After every action's screenshot it asks the node's matcher which screen
the phone is on, clears a recognised interrupt with the interrupt's handler action, and
reports an unknown screen (full PNG and context) once per distinct frame. State that must survive a crash of the actor (the lock above all) lives in
a ``PhoneRecord`` that the rack keeps and hands to the restarted actor.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np
import pykka

from actors.node.bridge import BridgedActor, Call, Deferred, tell_quietly
from actors.node.capture import CaptureScheduler
from actors.node.device.driver import DeviceDriver, field_at
from actors.node.matcher import Identification
from protocol.errors import (DeviceError, DeviceGone, DeviceTimeout, FarmError, PhoneLocked,
                             ValidationError)
from protocol.messages import MAX_KEY_REPEAT
from registry.ocr import field_is_blank, normalize_text, shared_reader
from registry.fingerprint import ScreenFingerprint

log = logging.getLogger(__name__)

THUMB_WIDTH = 270
JPEG_QUALITY = 70
# Interrupts cleared in a row without an action in between; more means the handler does not
# work (or popups keep coming) and a human should look.
MAX_AUTO_HANDLED = 3
# A field box read by OCR is cut this share of its height inside its edges: the outline a
# focused field is drawn with is not text.
OCR_FIELD_INSET = 0.12

# publish(event, serial, data, durable): durable events are journaled and must arrive;
# the rest (thumbnails) are live-only and may be dropped when nobody listens.
Publish = Callable[[str, str, dict, bool], None]


@dataclass
class PhoneRecord:
    """What the farm knows about one phone, kept across actor restarts."""

    serial: str
    state: str = "online"  # online | paused | failed
    lock_holder: str | None = None
    lock_expires: float = 0.0
    active_app: str | None = None
    active_accounts: dict[str, str] = field(default_factory=dict)
    last_screen: str | None = None
    last_screenshot_ts: float | None = None
    tags: list[str] = field(default_factory=list)
    # Which path the phone's actions take: "agent" (scrcpy) or "shell", and why shell.
    io: str | None = None
    io_reason: str | None = None

    def view(self) -> dict:
        return {"serial": self.serial, "state": self.state, "lock_holder": self.lock_holder,
                "lock_expires": self.lock_expires if self.lock_holder else None,
                "active_app": self.active_app, "active_account": dict(self.active_accounts),
                "last_screen": self.last_screen, "screen_ts": self.last_screenshot_ts,
                "tags": list(self.tags), "io": self.io, "io_reason": self.io_reason}


def encode_thumbnail(frame: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """A JPEG of ``width`` pixels' width from an RGBA frame (the live view's unit)."""
    h, w = frame.shape[:2]
    height = max(1, round(h * width / w))
    small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGBA2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise FarmError("JPEG encoding failed")
    return data.tobytes()


def _box(action: dict) -> tuple[int, int, int, int]:
    """An action's ``box`` [x0, y0, x1, y1] in phone pixels."""
    box = action.get("box")
    if not (isinstance(box, (list, tuple)) and len(box) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box)
            and box[0] < box[2] and box[1] < box[3]):
        raise ValidationError("action.box", f"{box!r} is not [x0, y0, x1, y1] with x0 < x1, y0 < y1")
    return box[0], box[1], box[2], box[3]


def encode_png(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGBA2BGRA),
                            [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise FarmError("PNG encoding failed")
    return data.tobytes()


class PhoneActor(BridgedActor):
    """Owns one phone: its driver, lock, app/account state and latest frame."""

    def __init__(self, record: PhoneRecord, driver: DeviceDriver, publish: Publish,
                 clock: Callable[[], float] = time.time, debug_actions: bool = False,
                 on_crash: Callable[[str, BaseException], None] | None = None,
                 captures: CaptureScheduler | None = None,
                 matcher: pykka.ActorRef | None = None, handle_interrupts: bool = True,
                 unknown_confirm_s: float = 0.5) -> None:
        super().__init__()
        self.matcher = matcher
        self.handle_interrupts = handle_interrupts
        self._auto_handled = 0
        self._last_action: dict | None = None
        self._unknown_reported: ScreenFingerprint | None = None   # the unknown screen last reported
        self._unknown_candidate: ScreenFingerprint | None = None  # seen once, reported if seen again
        self._last_known_screen: str | None = None
        self.unknown_confirm_s = unknown_confirm_s
        self.captures = captures or CaptureScheduler()
        self._capture_due = False
        self.record = record
        self.driver = driver
        self.publish = publish
        self.clock = clock
        self.debug_actions = debug_actions
        self.on_crash = on_crash
        self.frame: np.ndarray | None = None

    @property
    def serial(self) -> str:
        return self.record.serial

    def _event(self, event: str, data: dict | None = None, durable: bool = True) -> None:
        try:
            self.publish(event, self.serial, data or {}, durable)
        except Exception:
            log.exception("phone=%s could not publish %s", self.serial, event)

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        # The supervisor hears of the crash before the caller does.
        if self.on_crash is not None:
            self.on_crash(self.serial, exception_value)
        super().on_failure(exception_type, exception_value, traceback)

    # --- the lock --------------------------------------------------------------------------
    def _expire_lock(self) -> None:
        rec = self.record
        if rec.lock_holder is not None and self.clock() >= rec.lock_expires:
            holder, rec.lock_holder = rec.lock_holder, None
            log.info("phone=%s lease of execution %s expired", self.serial, holder)
            self._event("lock_freed", {"execution_id": holder, "reason": "lease expired"})

    def acquire(self, execution_id: str, lease_s: float) -> dict:
        """Take (or renew) the lock for ``execution_id``; PhoneLocked if another holds it."""
        if not execution_id:
            raise ValidationError("acquire.execution_id", "must not be empty")
        if not 0 < lease_s <= 24 * 3600:
            raise ValidationError("acquire.lease_s", f"{lease_s} is not in (0, 86400]")
        self._expire_lock()
        rec = self.record
        if rec.lock_holder not in (None, execution_id):
            raise PhoneLocked(self.serial, rec.lock_holder, rec.lock_expires)
        renewed = rec.lock_holder == execution_id
        rec.lock_holder, rec.lock_expires = execution_id, self.clock() + lease_s
        if not renewed:
            self._event("lock_taken", {"execution_id": execution_id, "expires": rec.lock_expires})
        return {"execution_id": execution_id, "expires": rec.lock_expires}

    def release(self, execution_id: str) -> bool:
        self._expire_lock()
        if self.record.lock_holder != execution_id:
            return False
        self.record.lock_holder = None
        self._event("lock_freed", {"execution_id": execution_id, "reason": "released"})
        return True

    def tick(self) -> None:
        """Periodic housekeeping from the node: expire leases."""
        self._expire_lock()

    # --- presence --------------------------------------------------------------------------
    def pause(self, reason: str) -> None:
        if self.record.state != "paused":
            self.record.state = "paused"
            self._event("phone_paused", {"reason": reason})

    def resume(self) -> None:
        if self.record.state == "paused":
            self.record.state = "online"
            self._event("phone_resumed", {})
            self.driver.wake_agent()  # its restart need not wait out the back-off

    def view(self) -> dict:
        self._expire_lock()
        return self.record.view()

    # --- actions ---------------------------------------------------------------------------
    def perform(self, action: dict, execution_id: str | None = None) -> Any:
        """Run one action; returns a result dict (status ok/locked/error/gone)."""
        self._expire_lock()
        rec = self.record
        kind = action.get("type")
        if rec.lock_holder is not None and rec.lock_holder != execution_id:
            return {"status": "locked", "holder": rec.lock_holder, "error": None}
        if rec.state == "paused":
            return {"status": "gone", "error": f"phone {self.serial} is unplugged (paused)"}
        if rec.state == "failed":
            return {"status": "error", "error": f"phone {self.serial} is marked failed"}
        if kind != "screenshot":
            self.captures.action_started()
            self._auto_handled = 0
            self._last_action = {k: v for k, v in action.items() if k != "text"}
        started = time.perf_counter()
        try:
            data = self._run(kind, action)
        except DeviceGone as exc:
            self.pause(str(exc))
            # Sent before the phone went: it may have played it, so no blind resend either.
            return {"status": "gone", "error": str(exc), **({"delivered": True} if exc.sent else {})}
        except DeviceTimeout as exc:
            # Sent, unanswered: the phone may still play it, so the caller must not send it
            # again (a step looks at the screen instead).
            return {"status": "error", "error": str(exc), "delivered": True}
        except (DeviceError, ValidationError) as exc:
            # A request that had gone on to the phone may have run: not sent again either.
            return {"status": "error", "error": str(exc),
                    **({"delivered": True} if getattr(exc, "sent", False) else {})}
        result = {"status": "ok", "error": None, **data}
        self._event("action_result", {"action": kind, "status": "ok",
                                      "execution_id": execution_id,
                                      "ms": round((time.perf_counter() - started) * 1000, 2)})
        if kind == "screenshot":
            return result
        return Deferred(result, self._after_action)

    def _run(self, kind: str | None, a: dict) -> dict:
        d = self.driver
        if kind == "tap":
            d.tap(a["x"], a["y"])
        elif kind == "long_tap":
            d.long_tap(a["x"], a["y"], a.get("duration_ms", 800))
        elif kind == "swipe":
            d.swipe(a["x1"], a["y1"], a["x2"], a["y2"], a.get("duration_ms", 300), a.get("path"))
        elif kind == "text":
            d.type_text(a["text"])
        elif kind == "key":
            d.key(a["key"], a.get("repeat", 1))
        elif kind == "clear_text":
            return self._clear_text(a)
        elif kind == "read_field":
            return self._read_field(_box(a))
        elif kind == "launch_app":
            d.launch_app(a["package"], a.get("activity"))
            self._set_app(a["package"])
        elif kind == "stop_app":
            d.stop_app(a["package"])
            if self.record.active_app == a["package"]:
                self._set_app(None)
        elif kind == "screenshot":
            self._capture()
            return {"png": encode_png(self.frame)}
        elif kind == "debug_crash" and self.debug_actions:
            raise RuntimeError(f"debug_crash requested on phone {self.serial}")
        else:
            raise ValidationError("action.type", f"unknown action type {kind!r}")
        return {}

    def _clear_text(self, a: dict) -> dict:
        """Empty the text field in ``box``: tap it (focus), MOVE_END (a tap may leave the caret
        mid-text), ``dels`` DELs, and read it back (see ``_read_field``): a popup that came up
        during the DELs took the focus and the rest of them, so only the read says it worked."""
        box = _box(a)
        dels = a.get("dels", 30)
        if not isinstance(dels, int) or not 1 <= dels <= MAX_KEY_REPEAT:
            raise ValidationError("action.dels", f"{dels!r} is not in 1..{MAX_KEY_REPEAT}")
        self.driver.tap((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
        self.driver.key("MOVE_END")
        self.driver.key("DEL", dels)
        return self._read_field(box)

    def _read_field(self, box: tuple[int, int, int, int]) -> dict:
        """What the text field in ``box`` (phone pixels) holds: {"text", "via", "password"}.
        ``text`` "" is empty, None no field there (a dialog in front). Through `uiautomator
        dump` where the phone has it; else OCR of the box on a fresh frame, which drops
        underscores and the like: good for empty or not, not for the exact text (and a
        focused field that shows its hint reads as not empty). A frame the matcher does not
        name as a state (a dialog in front, whose panel may well look empty where the field
        is) reads None."""
        nodes = self.driver.ui_dump()
        if nodes is not None:
            node = field_at(nodes, box)
            return {"text": None if node is None else node.value, "via": "uiautomator",
                    "password": node is not None and node.password}
        self._capture()
        if self.matcher is not None:
            try:
                found = self.matcher.proxy().identify(self.frame, self.record.active_app).get(timeout=30)
            except Exception as exc:  # as in _identify: matching must never take the phone down
                raise DeviceError(self.serial, "read field",
                                  f"screen identification failed: {exc!r}") from exc
            if found.kind != "state":
                return {"text": None, "via": "ocr", "password": False}
        h, w = self.frame.shape[:2]
        inset = round((box[3] - box[1]) * OCR_FIELD_INSET)
        x0, y0 = max(0, box[0] + inset), max(0, box[1] + inset)
        x1, y1 = min(w, box[2] - inset), min(h, box[3] - inset)
        if x1 <= x0 or y1 <= y0:
            raise ValidationError("action.box", f"{list(box)} is not inside the {w}x{h} screen")
        crop = np.ascontiguousarray(self.frame[y0:y1, x0:x1, :3])
        if field_is_blank(crop):
            return {"text": "", "via": "ocr", "password": False}
        try:
            text, _score = shared_reader().read(crop)
        except FarmError as exc:  # rapidocr missing or broken
            raise DeviceError(self.serial, "read field", str(exc)) from exc
        # Ink the recognizer reads as nothing (a stray mark) is not empty: say what it is.
        return {"text": text if normalize_text(text) else "(unreadable)", "via": "ocr",
                "password": False}

    def _set_app(self, package: str | None) -> None:
        if self.record.active_app != package:
            self.record.active_app = package
            self._event("app_changed", {"app": package})

    def set_account(self, platform: str, account: str) -> None:
        if self.record.active_accounts.get(platform) != account:
            self.record.active_accounts[platform] = account
            self._event("account_changed", {"platform": platform, "account": account})

    def _capture(self) -> None:
        # The one place this actor takes a frame: the stream's on the agent path.
        self.frame = self.driver.screenshot()
        self.record.last_screenshot_ts = self.clock()

    def _after_action(self) -> None:
        """Ask for the screenshot that follows every action (coalesced, node-wide limited)."""
        self._capture_due = True
        ref = self.actor_ref

        def grant() -> None:
            ref.tell(Call("capture_now"))  # ActorDeadError gives the slot back

        self.captures.request(self.serial, grant)

    def _publish_thumbnail(self) -> None:
        """The live view's frame, with the full frame's size (the console scales taps by it)."""
        h, w = self.frame.shape[:2]
        self._event("thumbnail", {"jpeg": encode_thumbnail(self.frame), "width": w, "height": h,
                                  "ts": self.record.last_screenshot_ts}, durable=False)

    def look_again(self) -> None:
        """Take another post-action frame (to confirm what the last one showed)."""
        self._after_action()

    def capture_now(self) -> None:
        """Holding a capture slot: take the frame, publish the thumbnail, give the slot back."""
        try:
            if not self._capture_due or self.record.state != "online":
                return
            if not self.actor_inbox.empty():
                # Actions are waiting: they go first, and the frame after them is the one
                # worth showing.
                self._after_action()
                return
            self._capture_due = False
            self._capture()
            self._publish_thumbnail()
            self._identify()
        except DeviceGone as exc:
            self.pause(str(exc))
        except DeviceError as exc:
            log.warning("phone=%s screenshot after action failed: %s", self.serial, exc)
        finally:
            self.captures.release()

    # --- which screen is this? ---------------------------------------------------------------
    def _identify(self, follow_up: bool = True) -> Identification | None:
        """Name the screen of the frame just taken; clear an interrupt; report an unknown.
        ``follow_up`` False: a cleared interrupt schedules no new look (the caller looks)."""
        if self.matcher is None:
            return None
        try:
            found: Identification = self.matcher.proxy().identify(
                self.frame, self.record.active_app).get(timeout=30)
        except Exception as exc:  # matching must never take the phone down
            log.error("phone=%s screen identification failed: %r", self.serial, exc)
            return None
        previous = self.record.last_screen
        if previous != "unknown":
            self._last_known_screen = previous
        if self.record.last_screen != found.label:
            self.record.last_screen = found.label
            self._event("screen_changed", {"screen": found.label, "previous": previous,
                                           "kind": found.kind})
        if found.kind == "unknown":
            self._report_unknown(found, self._last_known_screen)
            return found
        self._unknown_reported = self._unknown_candidate = None
        if found.kind == "state" and found.package:
            self._set_app(found.package)  # the screen is the truth, e.g. after HOME
        # A challenge (verification, captcha) is recorded and left alone, never tapped away.
        if found.kind == "interrupt" and self.handle_interrupts and found.health != "challenge":
            self._clear_interrupt(found, follow_up)
        return found

    def _clear_interrupt(self, found: Identification, follow_up: bool = True) -> bool:
        """Tap the interrupt's handler; False when there is none or too many came in a row."""
        if found.handler_xy is None or found.handler_type not in ("tap", "long_tap"):
            log.warning("phone=%s interrupt %s has no tap handler; left for the operator",
                        self.serial, found.label)
            return False
        if self._auto_handled >= MAX_AUTO_HANDLED:
            if self._auto_handled == MAX_AUTO_HANDLED:
                self._auto_handled += 1
                self._event("interrupt_stuck", {"screen": found.label,
                                                "handled": MAX_AUTO_HANDLED})
            return False
        self._auto_handled += 1
        x, y = found.handler_xy
        if found.handler_type == "tap":
            self.driver.tap(x, y)
        else:
            self.driver.long_tap(x, y)
        self._event("interrupt_handled", {"screen": found.label, "action": found.handler,
                                          "x": x, "y": y})
        if follow_up:
            self._after_action()  # and look again: the screen under the popup, or the next popup
        return True

    def identify_now(self, execution_id: str | None = None) -> dict:
        """Capture a fresh frame now and name it, clearing interrupts on the way (each cleared
        one is looked at again, at most ``MAX_AUTO_HANDLED`` times). Used by playback, which
        must know the screen before its next step rather than whenever the capture slot
        comes. Answers {"status": ok|gone|error|locked, "screen", "kind", "app", "package",
        "width", "height", "error"}."""
        self._expire_lock()
        rec = self.record
        if rec.lock_holder is not None and rec.lock_holder != execution_id:
            return {"status": "locked", "holder": rec.lock_holder, "error": None}
        if rec.state != "online":
            return {"status": "gone", "error": f"phone {self.serial} is {rec.state}"}
        self._auto_handled = 0
        found: Identification | None = None
        try:
            for _ in range(MAX_AUTO_HANDLED + 1):
                self._capture_due = False  # this frame serves any capture still pending
                self._capture()
                self._publish_thumbnail()
                handled_before = self._auto_handled
                found = self._identify(follow_up=False)
                if found is None or found.kind != "interrupt" \
                        or self._auto_handled == handled_before:
                    break
        except DeviceGone as exc:
            self.pause(str(exc))
            return {"status": "gone", "error": str(exc)}
        except DeviceError as exc:
            return {"status": "error", "error": str(exc)}
        h, w = self.frame.shape[:2]
        if found is None:
            return {"status": "ok", "screen": None, "kind": None, "app": None, "package": None,
                    "width": w, "height": h, "error": None}
        return {"status": "ok", "screen": found.label, "kind": found.kind, "app": found.app,
                "package": found.package, "width": w, "height": h, "error": None,
                "health": found.health}

    # --- reading the screen (issue 21's read steps) ----------------------------------------
    def _crop(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """The RGB crop of ``box`` (phone pixels) of the latest frame; ValidationError when it
        is not inside the frame."""
        h, w = self.frame.shape[:2]
        x0, y0, x1, y1 = box
        x1, y1 = min(w, x1), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            raise ValidationError("box", f"{list(box)} is not inside the {w}x{h} screen")
        return np.ascontiguousarray(self.frame[y0:y1, x0:x1, :3])

    def _reading(self, execution_id: str | None, read: Callable[[], dict]) -> dict:
        """``read()`` on the latest frame (a fresh one when there is none), as an answer
        {"status": ok|locked|gone|error, ...}; the lock is checked as for an action."""
        self._expire_lock()
        rec = self.record
        if rec.lock_holder is not None and rec.lock_holder != execution_id:
            return {"status": "locked", "holder": rec.lock_holder, "error": None}
        if rec.state != "online":
            return {"status": "gone", "error": f"phone {self.serial} is {rec.state}"}
        try:
            if self.frame is None:
                self._capture()
            return {"status": "ok", "error": None, **read()}
        except DeviceGone as exc:
            self.pause(str(exc))
            return {"status": "gone", "error": str(exc)}
        except (DeviceError, ValidationError) as exc:
            return {"status": "error", "error": str(exc)}
        except FarmError as exc:  # OCR unavailable (rapidocr missing or broken)
            return {"status": "error", "error": f"OCR: {exc}"}

    def read_text(self, box: list[int], execution_id: str | None = None) -> dict:
        """The one line of text in ``box`` [x0, y0, x1, y1] (phone pixels) of the frame the
        last look took (playback looks right before): recognition only. {"text", "score"}."""
        def read() -> dict:
            text, score = shared_reader().read(self._crop(_box({"box": box})))
            return {"text": text, "score": score}
        return self._reading(execution_id, read)

    def read_lines(self, title_box: list[int], body_box: list[int],
                   execution_id: str | None = None) -> dict:
        """A conversation: the line in ``title_box`` (recognition only) and every text line
        found in ``body_box`` (detection on that crop): {"title", "lines": [{"box" (in the
        crop's pixels), "text"}], "width" (the crop's)}."""
        def read() -> dict:
            title, _ = shared_reader().read(self._crop(_box({"box": title_box})))
            body = self._crop(_box({"box": body_box}))
            lines = shared_reader().detect(body, width=body.shape[1])
            return {"title": title, "width": body.shape[1],
                    "lines": [{"box": list(line.box), "text": line.text} for line in lines]}
        return self._reading(execution_id, read)

    def _report_unknown(self, found: Identification, previous: str | None) -> None:
        fingerprint = ScreenFingerprint.of(self.frame)
        if fingerprint.same_screen(self._unknown_reported):
            return  # still the screen already reported
        if not fingerprint.same_screen(self._unknown_candidate):
            # A real phone mid-animation shows frames no screen matches: only a frame that
            # is still there a moment later is worth a human's (or the AI's) time.
            self._unknown_candidate = fingerprint
            timer = threading.Timer(self.unknown_confirm_s, tell_quietly,
                                    (self.actor_ref, Call("look_again")))
            timer.daemon = True
            timer.start()
            return
        self._unknown_candidate = None
        self._unknown_reported = fingerprint
        h, w = self.frame.shape[:2]
        self._event("unknown_screen", {
            "png_b64": base64.b64encode(encode_png(self.frame)).decode(),
            "app": self.record.active_app, "previous_screen": previous,
            "last_action": self._last_action, "ambiguous": list(found.ambiguous),
            "registry_version": found.registry_version, "width": w, "height": h,
            "phash": f"{fingerprint.phash:064x}", "ts": self.record.last_screenshot_ts})

    def screen(self, width: int | None = None) -> bytes:
        """Latest frame: PNG, or a JPEG thumbnail of ``width`` pixels."""
        if self.frame is None:
            if self.record.state != "online":
                raise DeviceGone(self.serial, "screenshot", "phone is not online")
            self._capture()
        return encode_png(self.frame) if width is None else encode_thumbnail(self.frame, width)

