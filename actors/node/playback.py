"""Playback of one sequence on one phone: the node side of an execution.

Owns one running execution (one ``PlaybackActor`` per ``RunSequence``): the phone's lock for
its whole life (taken first, renewed before every step, released at the end whatever the
end), making the sequence's app and account active first (spec 16.2), playing the steps
with a screen check after every action, the tiered retry of spec 12.3.2 per step, waiting
for an unplugged phone to come back, and the execution events the coordinator records.

The actor blocks in its own thread and asks the phone actor one thing at a time
(``ask_actor``), so between steps the phone actor is free for views, ticks and pauses.

Events (durable, published through the node; a contract with the coordinator):
``execution_started`` {execution_id, run_id, sequence, account}
``step_started`` {execution_id, run_id, index, path, type}
``step_finished`` {execution_id, run_id, index, path, type, status, screen, attempts, error,
reason, screenshot_png_b64 (failed only)}
``execution_paused`` {execution_id, run_id, reason} / ``execution_resumed`` {execution_id, run_id}
``execution_finished`` {execution_id, run_id, status, error, reason, failed_step, last_ok_step}
Preparation steps (the run's media put in the gallery, launching the app, switching the
account) have ``index`` -1 and the paths ``media_push``, ``launch_app`` and ``switch[i]``.

Issue 21's data events (durable; each with execution_id (the execution's key, as in
execution_started), serial, account, app, at and ``seq``: see ``actors.node.readings``):
``metric_recorded`` {metric, value, post}, ``post_recorded`` {status, caption, hashtags, media,
platform_post_id, reason} (status ``failed`` when an execution with a record_post step ends
failed before reaching it; not for a failure held for AI recovery, whose final end the
coordinator knows and records), ``health_signal`` {kind: challenge | relogin, screen},
``messages_read`` {partner, messages: [{sender: them | us, text}]}. A screen tagged
``challenge`` fails the execution at once (reason ``challenge_screen``, never recoverable);
a ``login`` one met mid-run sends one ``relogin`` signal.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import msgspec
import pykka

from actors.node.bridge import ask_actor
from actors.node.apk_cache import ApkCache
from actors.node.matcher import action_box, action_centre
from actors.node.media_push import MediaPushError, push_media
from actors.node.readings import Readings, hashtags_of, sender_of
from actors.node.rack import PhoneDirectory
from protocol.errors import ActorStopped, DeviceGone, FarmError, PhoneLocked, ValidationError
from protocol.messages import MAX_KEY_REPEAT, RunSequence
from registry.model import App, Registry, ScreenAction
from registry.navigation import NavigationError, route
from sequences.load import walk_steps
from sequences.model import (ExpectScreenStep, GoToStep, IfScreenStep, KeyStep, LaunchAppStep,
                             LongTapStep, ReadMessagesStep, ReadNumberStep, ReadTextStep,
                             RecordMetricStep, RecordPostStep, SleepStep, Step, SwipeStep,
                             SwitchAccountStep, TapStep, TypeStep, WaitForScreenStep)
from sequences.numbers import parse_count
from sequences.variables import substitute_reads

log = logging.getLogger(__name__)

Publish = Callable[[str, str, dict, bool], None]

ASK_TIMEOUT_S = 60.0
# An unplugged phone is waited for this long (keeping its lock) before the execution fails.
DEVICE_WAIT_S = 30 * 60.0
# A launched app must show one of its screens within this.
LAUNCH_TIMEOUT_S = 15.0
# Failures AI recovery (coordinator, actors/coordinator/ai/recovery.py) may fix: the lock is kept for it.
RECOVERABLE = frozenset({"unknown_screen", "timeout", "wrong_screen"})
# A type step's clear: rounds of look (popups cleared), tap, MOVE_END, DELs and read back
# before the field counts as one that will not empty; DELs of the first round (the length
# is not known yet; the next rounds press twice what was read, OCR drops characters).
CLEAR_ROUNDS = 3
CLEAR_FIRST_DELS = 30


@dataclass
class PlaybackOptions:
    """Timing knobs; tests shorten them, real phones may need longer settles."""

    settle_s: float = 0.25           # after an action, before its screen is looked at
    poll_s: float = 0.4              # wait_for_screen's polling period
    unknown_confirm_s: float = 0.5   # an unknown screen is looked at once more after this
    hop_wait_s: float = 5.0          # go_to: how long one action's screen may take to change
    device_wait_s: float = DEVICE_WAIT_S


class _Cancelled(Exception):
    pass


class _ChallengeSeen(Exception):
    """The phone shows a screen tagged ``challenge``: the execution stops there."""

    def __init__(self, screen: str) -> None:
        super().__init__(screen)
        self.screen = screen


class _ExecutionFailed(Exception):
    def __init__(self, reason: str, error: str, path: str | None) -> None:
        super().__init__(error)
        self.reason, self.error, self.path = reason, error, path


@dataclass
class _Attempt:
    """One try of a step: ok, or why not. ``gone``: the phone vanished (device check now);
    ``final``: retrying cannot help (a step that names nothing playable)."""

    ok: bool
    screen: str | None = None
    reason: str | None = None
    error: str | None = None
    gone: bool = False
    final: bool = False


OK = _Attempt(True)


class PlaybackActor(pykka.ThreadingActor):
    """Plays one RunSequence on one phone; stops itself when the execution has ended."""

    use_daemon_thread = True  # see BridgedActor

    def __init__(self, run: RunSequence, serial: str, directory: PhoneDirectory,
                 publish: Publish, matcher: pykka.ActorRef | None,
                 cancel: threading.Event, on_done: Callable[[str], None] | None = None,
                 options: PlaybackOptions | None = None,
                 media_cache: ApkCache | None = None) -> None:
        super().__init__()
        self.media_cache = media_cache  # where the run's media files are (the APK cache)
        self.run = run
        self.serial = serial
        self.directory = directory
        self.publish = publish
        self.matcher = matcher
        self.cancel = cancel
        self.on_done = on_done
        self.opt = options or PlaybackOptions()
        self.registry: Registry | None = None
        self.frame_size: tuple[int, int] | None = None
        self.screen: str | None = None
        self.last_ok_step = run.resume_from - 1
        self.cancel_reason = "cancelled"
        self.readings = Readings(run, serial, self._publish_data)
        # Whether a login screen now is a forced re-login: armed once the first step plays,
        # never for a sequence that itself expects a login screen (it is the login).
        self.relogin_armed = False
        self.expects_login = False

    # --- life -------------------------------------------------------------------------------
    def on_start(self) -> None:
        self.actor_ref.tell("play")  # played from the inbox so that start() returns at once

    def on_receive(self, message: Any) -> Any:
        if message == "play":
            try:
                self._play()
            finally:
                if self.on_done is not None:
                    self.on_done(self.run.execution_id)
                self.actor_ref.stop(block=False)
        return None

    def _event(self, event: str, data: dict) -> None:
        try:
            self.publish(event, self.serial, {"execution_id": self.run.execution_id,
                                              "run_id": self.run.run_id, **data}, True)
        except Exception:
            log.exception("execution=%s could not publish %s", self.run.execution_id, event)

    def _publish_data(self, event: str, data: dict) -> None:
        """One of issue 21's data events (already carrying execution_id, serial, seq...)."""
        try:
            self.publish(event, self.serial, data, True)
        except Exception:
            log.exception("execution=%s could not publish %s", self.run.execution_id, event)

    def _phone(self) -> pykka.ActorRef:
        ref = self.directory.get(self.serial)
        if ref is None:
            raise ActorStopped(f"phone {self.serial} has no running actor")
        return ref

    def _ask(self, method: str, *args: Any) -> Any:
        return ask_actor(self._phone(), method, *args, timeout=ASK_TIMEOUT_S)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.cancel.wait(seconds):
            raise _Cancelled()

    # --- the execution ------------------------------------------------------------------------
    def _play(self) -> None:
        run = self.run
        log.info("execution=%s phone=%s sequence=%s starting at step %d", run.execution_id,
                 self.serial, run.sequence, run.resume_from)
        self._event("execution_started", {"sequence": run.sequence, "account": run.account})
        status, reason, error, failed = "completed", None, None, None
        ours = True  # the node may have taken the lock for us already: release it in any case
        try:
            try:
                self._ask("acquire", run.execution_id, run.lease_s)
            except PhoneLocked as exc:
                ours = False
                raise _ExecutionFailed("locked", str(exc), None) from None
            except ActorStopped as exc:
                raise _ExecutionFailed("phone_unavailable", str(exc), None) from None
            if self.matcher is not None:
                self.registry = self.matcher.proxy().registry.get(timeout=ASK_TIMEOUT_S)
            self.expects_login = self._expects_login()
            if run.resume_from > 0:
                self._check_resume()
            else:
                self._push_media()
                self._prepare()
            for index in range(run.resume_from, len(run.steps)):
                self._play_step(run.steps[index], index, f"steps[{index}]")
                self.last_ok_step = index
        except _Cancelled:
            status, reason = "cancelled", self.cancel_reason
        except _ExecutionFailed as exc:
            status, reason, error, failed = "failed", exc.reason, exc.error, exc.path
        except _ChallengeSeen as exc:  # outside a step (a resume's look): no step to fail
            status, reason = "failed", "challenge_screen"
            error = f"the phone shows {exc.screen}, a verification screen: stopped"
        except Exception as exc:  # a bug: the execution fails, the node lives on
            log.exception("execution=%s crashed", run.execution_id)
            status, reason, error = "failed", "internal_error", repr(exc)
        finally:
            # A failure AI recovery will try keeps the lock (until its lease ends): no other
            # execution can take the phone between this end and the recovery's first action.
            held = ours and status == "failed" and reason in RECOVERABLE \
                and bool(run.recovery_prompt) and (failed or "").startswith("steps[")
            if ours and not held:
                try:
                    self._ask("release", run.execution_id)
                except FarmError as exc:
                    # The lease still ends it; the phone is not stuck for good.
                    log.warning("execution=%s lock not released: %s", run.execution_id, exc)
        if status == "failed":  # a held failure may still post after AI recovery
            self.readings.post_failed(reason or "failed", error, held=held)
        log.info("execution=%s phone=%s %s%s", run.execution_id, self.serial, status,
                 f" ({reason}: {error})" if reason else "")
        self._event("execution_finished", {"status": status, "error": error, "reason": reason,
                                           "failed_step": failed,
                                           "last_ok_step": self.last_ok_step,
                                           "lock_held": held, "screen": self.screen})

    def _prepare(self) -> None:
        """Spec 16.2: the sequence's app in front, then its account active."""
        run = self.run
        package = run.package or self._package_of(run.app)
        if package is not None:
            self._run_with_retry(-1, "launch_app", "launch_app",
                                 lambda state: self._ensure_app(package))
        if run.account:
            platform = self._platform()
            view = self._ask("view")
            if view.get("active_account", {}).get(platform) != run.account:
                self._switch_account(platform)

    def _push_media(self) -> None:
        """The run's media files in the phone's gallery before anything else (a resumed run
        pushed them before its crash). A failure fails the execution, reason
        ``media_push_failed``, with its screenshot (path ``media_push``)."""
        if not self.run.media:
            return

        def attempt(state: dict) -> _Attempt:
            driver = self.directory.driver(self.serial)
            if driver is None:
                return _Attempt(False, reason="media_push_failed", gone=True,
                                error=f"phone {self.serial} has no driver")
            try:
                push_media(driver, self.media_cache, self.run.media,
                           state.setdefault("done", set()))
            except MediaPushError as exc:
                return _Attempt(False, reason="media_push_failed", error=str(exc), final=True)
            except DeviceGone as exc:
                return _Attempt(False, reason="media_push_failed", error=str(exc), gone=True)
            except (FarmError, OSError) as exc:
                return _Attempt(False, reason="media_push_failed", error=str(exc))
            return OK

        self._run_with_retry(-1, "media_push", "media_push", attempt)

    def _check_resume(self) -> None:
        """Crash recovery (spec 12.3.1): resume only where the last successful step left the
        phone. App and account were made active before the crash and are not redone: a
        restarted node has forgotten them, so they are taken from the run."""
        run = self.run
        if run.account:
            self._ask("set_account", self._platform(), run.account)
        if run.resume_screen is None:
            return
        self._sleep(self.opt.settle_s)
        out = self._look()
        if out.get("status") != "ok" or self.screen != run.resume_screen:
            raise _ExecutionFailed(
                "resume_screen_mismatch",
                f"cannot resume at step {run.resume_from}: expected {run.resume_screen}, the "
                f"phone shows {self.screen if out.get('status') == 'ok' else out.get('error')}",
                f"steps[{run.resume_from}]")
        log.info("execution=%s phone=%s resumes at step %d on %s", run.execution_id,
                 self.serial, run.resume_from, self.screen)

    def _platform(self) -> str:
        account = self.run.account or ""
        if "." in account:
            return account.split(".", 1)[0]
        return self.run.app or self.run.package or "default"

    def _switch_account(self, platform: str) -> None:
        run = self.run
        if not run.switch_steps:
            raise _ExecutionFailed("no_switch_steps", f"account {run.account} is not active "
                                   f"on {platform} and the run carries no switch steps",
                                   "switch")
        log.info("execution=%s phone=%s switching %s account to %s", run.execution_id,
                 self.serial, platform, run.account)
        for i, step in enumerate(run.switch_steps):
            self._play_step(step, -1, f"switch[{i}]")
        # Verified by the switch steps themselves: their last step waits for the screen the
        # app shows once the account is in (a failed login never gets there).
        self._ask("set_account", platform, run.account)

    # --- one step -----------------------------------------------------------------------------
    def _play_step(self, step: Step, index: int, path: str) -> None:
        if self.cancel.is_set():
            raise _Cancelled()
        if index >= 0:
            self._renew()
            self.readings.at_step(index)
        if isinstance(step, IfScreenStep):
            self._event("step_started", {"index": index, "path": path, "type": "if_screen"})
            box: dict = {}

            def look(state: dict) -> _Attempt:
                seen = self._identify(settle=True)
                if not seen.ok:
                    return seen
                box["match"] = self._same_screen(seen.screen, step.screen)
                return seen

            self._run_with_retry(index, path, "if_screen", look, started=True)
            branch, name = (step.then, "then") if box["match"] else (step.otherwise, "otherwise")
            for j, inner in enumerate(branch):
                self._play_step(inner, index, f"{path}.{name}[{j}]")
            return
        if isinstance(step, SwitchAccountStep):
            self._event("step_started", {"index": index, "path": path, "type": "switch_account"})
            if step.account != self.run.account:
                self._finish_step(index, path, "switch_account", _Attempt(
                    False, reason="bad_step", error=f"{path}: only the run's account "
                    f"{self.run.account!r} can be switched to, not {step.account!r}"), 1)
                raise _ExecutionFailed("bad_step", f"{path}: account {step.account!r}", path)
            armed, self.relogin_armed = self.relogin_armed, False  # its own login screens
            try:
                self._switch_account(self._platform())
            finally:
                self.relogin_armed = armed
            self._finish_step(index, path, "switch_account", OK, 1)
            return
        step_type = type(step).__struct_config__.tag
        if isinstance(step, TypeStep) and "${read." in step.text:
            try:
                step = msgspec.structs.replace(step, text=substitute_reads(step.text,
                                                                          self.readings.values))
            except ValidationError as exc:
                failure = _Attempt(False, reason="unknown_read_variable", error=exc.reason,
                                   final=True)
                self._run_with_retry(index, path, step_type, lambda state: failure)
        self._run_with_retry(index, path, step_type, lambda state: self._attempt(step, state))
        if isinstance(step, TypeStep) and step.label:
            self.readings.typed[step.label] = step.text  # a record_post's caption
        if index >= 0:
            self.relogin_armed = True  # the first step has played: a login screen now is forced

    def _renew(self) -> None:
        try:
            self._ask("acquire", self.run.execution_id, self.run.lease_s)
        except PhoneLocked as exc:  # the lease ran out and another execution took the phone
            raise _ExecutionFailed("lock_lost", str(exc), None) from None
        except ActorStopped:
            pass  # restarting; the step's own device check waits for it

    def _run_with_retry(self, index: int, path: str, step_type: str,
                        attempt: Callable[[dict], _Attempt], started: bool = False) -> None:
        """Spec 12.3.2: ``immediate`` retries, then ``short`` ones, then a device check
        (gone: wait for it, keeping the lock, and start over; present: the execution fails)."""
        if not started:
            self._event("step_started", {"index": index, "path": path, "type": step_type})
        policy = self.run.retry
        schedule = [policy.immediate_delay_s] * policy.immediate \
            + [policy.short_delay_s] * policy.short
        state: dict = {}  # what the step has done so far (an action is not done twice)
        attempts = 0
        while True:
            if self.cancel.is_set():
                raise _Cancelled()
            attempts += 1
            try:
                outcome = attempt(state)
            except ActorStopped as exc:  # the phone actor restarts: like a vanished phone
                outcome = _Attempt(False, reason="phone_unavailable", error=str(exc), gone=True)
            except _ChallengeSeen as exc:
                # Recorded and stopped: never retried, never handed to AI recovery.
                self._fail_step(index, path, step_type, _Attempt(
                    False, screen=exc.screen, reason="challenge_screen", final=True,
                    error=f"the phone shows {exc.screen}, a verification screen: the execution "
                          "stops (it is never solved or cleared)"), attempts)
            if outcome.ok:
                self._finish_step(index, path, step_type, outcome, attempts)
                return
            log.info("execution=%s %s attempt %d failed: %s %s", self.run.execution_id, path,
                     attempts, outcome.reason, outcome.error)
            if outcome.final:
                self._fail_step(index, path, step_type, outcome, attempts)
            if not outcome.gone and schedule:
                self._sleep(schedule.pop(0))
                continue
            if self._device_present():
                if outcome.gone:
                    continue  # it came back while we looked: just try again
                self._fail_step(index, path, step_type, outcome, attempts)
            self._wait_for_device(outcome.error or outcome.reason or "device gone")
            schedule = [policy.immediate_delay_s] * policy.immediate \
                + [policy.short_delay_s] * policy.short

    def _finish_step(self, index: int, path: str, step_type: str, outcome: _Attempt,
                     attempts: int, screenshot: str | None = None) -> None:
        data = {"index": index, "path": path, "type": step_type,
                "status": "ok" if outcome.ok else "failed",
                "screen": outcome.screen if outcome.screen is not None else self.screen,
                "attempts": attempts, "error": outcome.error, "reason": outcome.reason}
        if not outcome.ok:
            data["screenshot_png_b64"] = screenshot
        self._event("step_finished", data)

    def _fail_step(self, index: int, path: str, step_type: str, outcome: _Attempt,
                   attempts: int) -> None:
        png = None
        try:
            png = base64.b64encode(self._ask("screen")).decode()
        except FarmError as exc:
            log.warning("execution=%s no screenshot of failed %s: %s", self.run.execution_id,
                        path, exc)
        self._finish_step(index, path, step_type, outcome, attempts, png)
        raise _ExecutionFailed(outcome.reason or "failed", outcome.error or "", path)

    # --- the device check -------------------------------------------------------------------------
    def _device_present(self) -> bool:
        record = self.directory.record(self.serial)
        if record is not None and record.state == "failed":
            raise _ExecutionFailed("phone_failed", f"phone {self.serial} is marked failed", None)
        return record is not None and record.state == "online" \
            and self.directory.get(self.serial) is not None

    def _wait_for_device(self, why: str) -> None:
        """Pause until the phone is back (the lock stays ours), or fail after a long while."""
        self._event("execution_paused", {"reason": why})
        log.warning("execution=%s paused: phone %s gone (%s)", self.run.execution_id,
                    self.serial, why)
        deadline = time.monotonic() + self.opt.device_wait_s
        renew_every = max(1.0, self.run.lease_s / 3)
        renewed = time.monotonic()
        while not self._device_present():
            if time.monotonic() > deadline:
                raise _ExecutionFailed("device_gone", f"phone {self.serial} did not come back "
                                       f"within {self.opt.device_wait_s:g}s", None)
            if time.monotonic() - renewed > renew_every:
                renewed = time.monotonic()
                try:
                    self._ask("acquire", self.run.execution_id, self.run.lease_s)
                except ActorStopped:
                    pass
            self._sleep(0.2)
        self._event("execution_resumed", {})
        log.info("execution=%s resumed: phone %s is back", self.run.execution_id, self.serial)

    # --- screens ------------------------------------------------------------------------------
    def _label(self, screen: str) -> str:
        return screen if "/" in screen or not self.run.app else f"{self.run.app}/{screen}"

    def _same_screen(self, seen: str | None, wanted: str) -> bool:
        return seen is not None and seen == self._label(wanted)

    def _look(self) -> dict:
        out = self._ask("identify_now", self.run.execution_id)
        if out.get("status") == "ok":
            self.screen = out.get("screen")
            if out.get("width"):
                self.frame_size = (out["width"], out["height"])
            self._health(out.get("screen"), out.get("health"))
        return out

    def _health(self, screen: str | None, health: str | None) -> None:
        """Issue 21's account health: a challenge stops the execution (``_ChallengeSeen``), a
        login screen met mid-run is one forced re-login per execution."""
        if screen is None or health is None:
            return
        if health == "challenge":
            self.readings.health_signal("challenge", screen)
            raise _ChallengeSeen(screen)
        if health == "login" and self.relogin_armed and not self.expects_login:
            self.readings.health_signal("relogin", screen)

    def _expects_login(self) -> bool:
        """Whether the sequence itself goes to, waits for or acts on a login-tagged screen
        (a login sequence: its login screens are no forced re-login)."""
        if self.registry is None:
            return False
        logins = {ref.label() for ref in self.registry.screens()
                  if self.registry.screen(ref).health == "login"}
        if not logins:
            return False
        for _path, step in walk_steps(self.run.steps):
            screen = getattr(step, "screen", None)
            if isinstance(screen, str) and self._label(screen) in logins:
                return True
            for ref in (getattr(step, "action", None), getattr(step, "field", None)):
                if isinstance(ref, str) and "." in ref:
                    app_key, _, rest = ref.rpartition("/")
                    label = f"{app_key or self.run.app}/{rest.split('.', 1)[0]}"
                    if label in logins:
                        return True
        return False

    def _identify(self, settle: bool = False) -> _Attempt:
        """The screen now; an unknown one is looked at once more (mid-animation frames)."""
        if settle:
            self._sleep(self.opt.settle_s)
        for second_look in (False, True):
            out = self._look()
            if out.get("status") != "ok":
                return self._action_failed(out, otherwise="device_error")
            if out.get("kind") != "unknown" or second_look:
                break
            self._sleep(self.opt.unknown_confirm_s)
        if out.get("kind") == "unknown":
            return _Attempt(False, screen="unknown", reason="unknown_screen",
                            error="the phone shows a screen the registry does not know")
        return _Attempt(True, screen=out.get("screen"))

    def _wait_for(self, wanted: str, timeout_s: float) -> _Attempt:
        deadline = time.monotonic() + timeout_s
        label = self._label(wanted)
        while True:
            out = self._look()
            if out.get("status") == "gone":
                return _Attempt(False, reason="device_gone", error=out.get("error"), gone=True)
            if out.get("status") == "ok" and out.get("screen") == label:
                return _Attempt(True, screen=label)
            if time.monotonic() >= deadline:
                seen = out.get("screen")
                reason = "unknown_screen" if seen == "unknown" else "timeout"
                return _Attempt(False, screen=seen, reason=reason,
                                error=f"{label} not shown within {timeout_s:g}s (saw {seen})")
            self._sleep(min(self.opt.poll_s, max(0.0, deadline - time.monotonic())))

    def _ensure_app(self, package: str) -> _Attempt:
        """The app in front: launched unless one of its screens shows already."""
        seen = self._identify()
        if seen.gone:
            return seen
        if self._look_package() == package:
            return _Attempt(True, screen=self.screen)
        out = self._ask("perform", {"type": "launch_app", "package": package},
                        self.run.execution_id)
        if out.get("status") != "ok":
            return self._action_failed(out)
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while time.monotonic() < deadline:
            self._sleep(self.opt.settle_s)
            seen = self._identify()
            if seen.gone:
                return seen
            if self._look_package() == package:
                return _Attempt(True, screen=self.screen)
        return _Attempt(False, screen=self.screen, reason="app_not_active",
                        error=f"{package} launched but none of its screens showed "
                              f"within {LAUNCH_TIMEOUT_S:g}s (saw {self.screen})")

    def _look_package(self) -> str | None:
        if self.registry is None or not self.screen or "/" not in self.screen:
            return None
        app = self.registry.apps.get(self.screen.split("/", 1)[0])
        return app.package if app is not None else None

    def _package_of(self, app: str | None) -> str | None:
        if app is None or self.registry is None or app not in self.registry.apps:
            return None
        return self.registry.apps[app].package

    # --- actions ------------------------------------------------------------------------------
    def _resolve(self, ref: str) -> tuple[int, int]:
        """``screen.action`` (of the run's app) or ``app/screen.action`` -> phone pixels."""
        _label, app, action = self._registry_action(ref)
        return action_centre(action, tuple(app.screen_size), self._phone_size(app))

    def _resolve_box(self, ref: str) -> tuple[tuple[int, int, int, int], str]:
        """A registry action's box in phone pixels, and the label of the screen it is on."""
        label, app, action = self._registry_action(ref)
        return action_box(action, tuple(app.screen_size), self._phone_size(app)), label

    def _phone_size(self, app: App) -> tuple[int, int]:
        if self.frame_size is None:
            self._look()
        return self.frame_size or tuple(app.screen_size)

    def _registry_action(self, ref: str) -> tuple[str, App, ScreenAction]:
        """``screen.action`` (of the run's app) or ``app/screen.action``: the label of its
        screen, its app and the action."""
        if self.registry is None:
            raise FarmError(f"action {ref!r}: this node has no screen registry")
        app_key, _, rest = ref.rpartition("/")
        app_key = app_key or self.run.app or ""
        screen_key, _, action_name = rest.partition(".")
        app = self.registry.apps.get(app_key)
        if app is None:
            raise FarmError(f"action {ref!r}: no app {app_key!r} in the registry")
        screen = app.states.get(screen_key) or app.interrupts.get(screen_key)
        if screen is None:
            raise FarmError(f"action {ref!r}: no screen {screen_key!r} in app {app_key!r}")
        for action in screen.actions:
            if action.name == action_name:
                kind = "" if screen_key in app.states else "interrupt:"
                return f"{app_key}/{kind}{screen_key}", app, action
        raise FarmError(f"action {ref!r}: screen {app_key}/{screen_key} has no action "
                        f"{action_name!r}")

    def _action_of(self, step: Step) -> dict | None:
        if isinstance(step, (TapStep, LongTapStep)):
            if step.action:
                x, y = self._resolve(step.action)
            elif step.x is not None and step.y is not None:
                x, y = step.x, step.y
            else:
                raise FarmError("a tap needs x and y or an action")
            if isinstance(step, TapStep):
                return {"type": "tap", "x": x, "y": y}
            return {"type": "long_tap", "x": x, "y": y, "duration_ms": step.duration_ms}
        if isinstance(step, SwipeStep):
            swipe = {"type": "swipe", "x1": step.x1, "y1": step.y1, "x2": step.x2,
                     "y2": step.y2, "duration_ms": step.duration_ms}
            if step.path:
                swipe["path"] = [list(point) for point in step.path]
            return swipe
        if isinstance(step, TypeStep):
            return {"type": "text", "text": step.text}
        if isinstance(step, KeyStep):
            return {"type": "key", "key": step.key, "repeat": step.repeat}
        if isinstance(step, LaunchAppStep):
            package = step.package or self._package_of(step.app)
            if package is None:
                raise FarmError(f"app {step.app!r} is not in the registry")
            return {"type": "launch_app", "package": package}
        return None

    def _action_failed(self, out: dict, otherwise: str = "action_error") -> _Attempt:
        """A phone actor's answer that was not "ok", as a failed attempt; ``otherwise`` is the
        reason when the device is there and the lock still ours."""
        status = out.get("status")
        if status == "gone":
            return _Attempt(False, reason="device_gone", error=out.get("error"), gone=True)
        if status == "locked":
            return _Attempt(False, reason="lock_lost", error=f"held by {out.get('holder')}",
                            final=True)
        return _Attempt(False, reason=otherwise, error=out.get("error"))

    # --- type with clear -------------------------------------------------------------------
    def _clear_and_type(self, step: TypeStep) -> _Attempt:
        """Empty the text field ``step.field``, then type. A popup that comes up during the
        DELs takes the focus and the DELs after it (a real phone's dialog gets the keys), so
        each round looks first (the popup is cleared, the field gets its focus back), then
        the phone taps the field, MOVE_END, DELs and reads the field back; the text is typed
        once it reads empty, and read back too: a dialog in front then (the text went to it)
        is another round, and so is a text other than the one typed where the phone can say
        exactly what the field holds (uiautomator; OCR drops characters such as "_").
        ``field_not_empty`` (with what was read) after ``CLEAR_ROUNDS`` rounds."""
        try:
            box, screen = self._resolve_box(step.field or "")
        except FarmError as exc:
            return _Attempt(False, reason="bad_step", error=str(exc), final=True)
        eid = self.run.execution_id
        dels, problem = CLEAR_FIRST_DELS, ""
        for round_no in range(1, CLEAR_ROUNDS + 1):
            seen = self._look()
            if seen.get("status") != "ok":
                return self._action_failed(seen, otherwise="device_error")
            if self.screen != screen:
                return _Attempt(False, screen=self.screen, reason="wrong_screen",
                                error=f"{step.field} is on {screen}, the phone shows {self.screen}")
            out = self._ask("perform", {"type": "clear_text", "box": list(box), "dels": dels}, eid)
            if out.get("status") != "ok":
                return self._action_failed(out)
            read = out.get("text")
            if read == "":
                out = self._ask("perform", {"type": "text", "text": step.text}, eid)
                if out.get("status") != "ok":
                    return self._action_failed(out)
                out = self._ask("perform", {"type": "read_field", "box": list(box)}, eid)
                if out.get("status") != "ok":
                    return self._action_failed(out)
                exact = out.get("via") == "uiautomator" and not out.get("password")
                if out.get("text") == step.text or (not exact and out.get("text") is not None):
                    return self._identify(settle=True)
                read = out.get("text")
                problem = (f"typed {len(step.text)} characters into {step.field}, it reads "
                           f"{read!r}" if read is not None else
                           f"typed into {step.field}, then a dialog hid it")
            else:
                problem = (f"{step.field} still reads {read!r} after {dels} DELs"
                           if read is not None else f"a dialog hid {step.field} while clearing it")
            log.info("execution=%s clear %s round %d: %s (read via %s)", eid, step.field,
                     round_no, problem, out.get("via"))
            dels = min(MAX_KEY_REPEAT, max(CLEAR_FIRST_DELS, 2 * len(read or "")))
        return _Attempt(False, screen=self.screen, reason="field_not_empty",
                        error=f"{problem} ({CLEAR_ROUNDS} rounds of clearing)")

    def _attempt(self, step: Step, state: dict) -> _Attempt:
        if isinstance(step, GoToStep):
            return self._go_to(step, state)
        if isinstance(step, WaitForScreenStep):
            return self._wait_for(step.screen, step.timeout_s)
        if isinstance(step, ExpectScreenStep):
            seen = self._identify(settle=True)
            if not seen.ok or self._same_screen(seen.screen, step.screen):
                return seen
            return _Attempt(False, screen=seen.screen, reason="wrong_screen",
                            error=f"expected {self._label(step.screen)}, saw {seen.screen}")
        if isinstance(step, SleepStep):
            if step.seconds is not None:
                self._sleep(step.seconds)
            else:
                self._sleep(random.uniform(step.min_s or 0.0, step.max_s or step.min_s or 0.0))
            return _Attempt(True, screen=self.screen)
        if isinstance(step, (ReadTextStep, ReadNumberStep)):
            return self._read(step)
        if isinstance(step, ReadMessagesStep):
            return self._read_messages(step)
        if isinstance(step, RecordMetricStep):
            return self._record_metric(step, state)
        if isinstance(step, RecordPostStep):
            return self._record_post(step, state)
        if isinstance(step, TypeStep) and step.clear:
            return self._clear_and_type(step)  # clears first: a retry may do it all again
        if not state.get("acted"):
            try:
                action = self._action_of(step)
            except FarmError as exc:
                return _Attempt(False, reason="bad_step", error=str(exc), final=True)
            if action is None:
                return _Attempt(False, reason="bad_step", final=True,
                                error=f"step type {type(step).__name__} cannot be played")
            # A popup that came up since the last look would eat the tap: look (and clear)
            # first. Costs one frame per action.
            pre = self._look()
            if pre.get("status") == "gone":
                return _Attempt(False, reason="device_gone", error=pre.get("error"), gone=True)
            out = self._ask("perform", action, self.run.execution_id)
            if out.get("status") != "ok":
                if out.get("delivered"):
                    state["acted"] = True  # sent but unanswered: a retry only looks
                return self._action_failed(out)
            state["acted"] = True  # a retry looks again, it does not tap twice
        return self._identify(settle=True)

    # --- reading the screen (issue 21) --------------------------------------------------------
    def _region_box(self, ref: str) -> tuple[tuple[int, int, int, int], str]:
        """A registry region (``screen.region`` of the run's app, or ``app/screen.region``:
        a read region, else a validation region, of a state) in phone pixels, and the label
        of its state."""
        if self.registry is None:
            raise FarmError(f"region {ref!r}: this node has no screen registry")
        app_key, _, rest = ref.rpartition("/")
        app_key = app_key or self.run.app or ""
        screen_key, _, name = rest.partition(".")
        app = self.registry.apps.get(app_key)
        screen = app.states.get(screen_key) if app is not None else None
        region = screen.read_region(name) if screen is not None else None
        if app is None or region is None:
            raise FarmError(f"region {ref!r}: no region {name!r} on state {app_key}/{screen_key} "
                            "in this node's registry")
        return action_box(region, tuple(app.screen_size), self._phone_size(app)), \
            f"{app_key}/{screen_key}"

    def _read_place(self, refs: list[str | None], box: tuple | None) -> _Attempt | list:
        """Look (a fresh frame, interrupts cleared), then the boxes to read: each region's
        (the phone must show its state: else ``wrong_screen``), or ``box``."""
        seen = self._identify(settle=False)
        if not seen.ok:
            return seen
        if box is not None:
            return [tuple(box)]
        boxes = []
        for ref in refs:
            try:
                where, label = self._region_box(ref or "")
            except FarmError as exc:
                return _Attempt(False, reason="bad_step", error=str(exc), final=True)
            if self.screen != label:
                return _Attempt(False, screen=self.screen, reason="wrong_screen",
                                error=f"{ref} is on {label}, the phone shows {self.screen}")
            boxes.append(where)
        return boxes

    def _read(self, step: ReadTextStep | ReadNumberStep) -> _Attempt:
        place = self._read_place([step.region], step.box)
        if isinstance(place, _Attempt):
            return place
        out = self._ask("read_text", list(place[0]), self.run.execution_id)
        if out.get("status") != "ok":
            return self._action_failed(out, otherwise="ocr_error")
        text = str(out.get("text") or "")
        if isinstance(step, ReadNumberStep):
            try:
                text = str(parse_count(text, step.locale))
            except ValidationError as exc:
                return _Attempt(False, screen=self.screen, reason="not_a_number",
                                error=f"{step.region or list(step.box or ())} reads {text!r}: "
                                      f"{exc.reason} (locale {step.locale})")
        self.readings.values[step.into] = text
        log.info("execution=%s read %s = %r", self.run.execution_id, step.into, text)
        return _Attempt(True, screen=self.screen)

    def _read_messages(self, step: ReadMessagesStep) -> _Attempt:
        place = self._read_place([step.partner_region, step.body_region], None)
        if isinstance(place, _Attempt):
            return place
        out = self._ask("read_lines", list(place[0]), list(place[1]), self.run.execution_id)
        if out.get("status") != "ok":
            return self._action_failed(out, otherwise="ocr_error")
        width = out.get("width") or 1
        messages = [{"sender": sender_of(line["box"], width), "text": line["text"]}
                    for line in out.get("lines") or []]
        self.readings.messages_read(str(out.get("title") or ""), messages)
        return _Attempt(True, screen=self.screen)

    def _fill(self, text: str | None) -> str | None:
        return None if text is None else substitute_reads(text, self.readings.values)

    def _record_metric(self, step: RecordMetricStep, state: dict) -> _Attempt:
        try:
            value, post = self._fill(step.value) or "", self._fill(step.post)
        except ValidationError as exc:
            return _Attempt(False, reason="unknown_read_variable", error=exc.reason, final=True)
        if not re.fullmatch(r"\s*-?\d{1,18}\s*", value):
            return _Attempt(False, reason="not_a_number", final=True, screen=self.screen,
                            error=f"{step.metric}: {step.value!r} gives {value!r}, not a whole "
                                  "number")
        if not state.get("sent"):
            self.readings.metric(step.metric, int(value), post)
            state["sent"] = True
        return _Attempt(True, screen=self.screen)

    def _record_post(self, step: RecordPostStep, state: dict) -> _Attempt:
        try:
            media, post_id = self._fill(step.media), self._fill(step.platform_post_id)
        except ValidationError as exc:
            return _Attempt(False, reason="unknown_read_variable", error=exc.reason, final=True)
        # What this playback typed, else (a resume after a restart or AI recovery that did
        # not replay the type step) the step's text as the coordinator resolved it.
        caption = self.readings.caption(step.caption_step)
        if caption is None:
            log.warning("execution=%s record_post: no text for step %r",
                        self.run.execution_id, step.caption_step)
        if not state.get("sent"):
            self.readings.posted(caption, hashtags_of(caption or ""), media, post_id)
            state["sent"] = True
        return _Attempt(True, screen=self.screen)

    # --- go_to ----------------------------------------------------------------------------------
    def _go_to(self, step: GoToStep, state: dict) -> _Attempt:
        """One attempt at walking to ``step.screen``: look, and until it shows, take the first
        action of the shortest route from the screen seen (registry.navigation), then look
        again; a screen other than the action's linked state is a wrong turn, planned on
        from. ``state["tried"]`` keeps the hops of every attempt: the action budget (twice
        the app's states) is the step's, and a failure names the whole path."""
        target = self._label(step.screen)
        app_key, _, goal = target.partition("/")
        app = self.registry.apps.get(app_key) if self.registry is not None else None
        if app is None or goal not in app.states:
            return _Attempt(False, reason="bad_step", final=True,
                            error=f"go_to {target}: this node's registry has no such state")
        tried: list[str] = state.setdefault("tried", [])
        budget = 2 * len(app.states)
        deadline = time.monotonic() + step.timeout_s
        seen = self._identify()
        while True:
            here = seen.screen or self.screen or "unknown"
            if not seen.ok:
                return self._go_to_failed(seen, target, tried, seen.error or seen.reason or "")
            if here == target:
                if tried:
                    log.info("execution=%s go_to %s done: %s", self.run.execution_id, target,
                             "; ".join(tried))
                return _Attempt(True, screen=here)
            here_app, _, here_key = here.partition("/")
            if here_app != app_key or not here_key:
                return self._go_to_failed(_Attempt(False, screen=here, reason="wrong_screen"),
                                          target, tried, f"the phone shows {here}, not a screen "
                                          f"of {app_key}")
            if len(tried) >= budget:
                return self._go_to_failed(_Attempt(False, screen=here, reason="timeout",
                                                   final=True), target, tried,
                                          f"gave up after {len(tried)} actions")
            if time.monotonic() >= deadline:
                return self._go_to_failed(_Attempt(False, screen=here, reason="timeout"), target,
                                          tried, f"not there within {step.timeout_s:g}s")
            try:
                hop = route(app, here_key, goal, app_key)[0]
            except NavigationError as exc:
                # An interrupt left on the screen may still be cleared: worth another attempt.
                return self._go_to_failed(_Attempt(False, screen=here, reason="no_route",
                                                   final=here_key in app.states),
                                          target, tried, str(exc))
            out = self._ask("perform", self._gesture(app, hop.action), self.run.execution_id)
            if out.get("status") != "ok":
                return self._go_to_failed(self._action_failed(out), target, tried,
                                          f"{hop.line(app_key)}: {out.get('error')}")
            expected = f"{app_key}/{hop.target}"
            seen = self._after_hop(here, expected, min(deadline, time.monotonic()
                                                       + self.opt.hop_wait_s))
            got = seen.screen or "unknown"
            tried.append(hop.line(app_key) + ("" if got == expected else f" (saw {got})"))
            log.info("execution=%s go_to %s: %s", self.run.execution_id, target, tried[-1])

    def _go_to_failed(self, outcome: _Attempt, target: str, tried: list[str],
                      why: str) -> _Attempt:
        """``outcome`` with an error naming the target, why, the path tried and where it ended."""
        outcome.error = (f"go_to {target}: {why}; path tried: {'; '.join(tried) or 'none'}; "
                         f"ended on {outcome.screen or self.screen or 'unknown'}")
        return outcome

    def _after_hop(self, origin: str, expected: str, until: float) -> _Attempt:
        """The screen an action led to: looked at until it is the expected one or another
        known screen than ``origin`` (a slow transition, an unknown in-between frame), or
        ``until`` passes (then what shows: the origin again, or unknown)."""
        self._sleep(self.opt.settle_s)
        while True:
            out = self._look()
            if out.get("status") != "ok":
                return self._action_failed(out, otherwise="device_error")
            screen = out.get("screen")
            if screen == expected or (out.get("kind") != "unknown" and screen != origin):
                return _Attempt(True, screen=screen)
            if time.monotonic() >= until:
                if out.get("kind") == "unknown":
                    return _Attempt(False, screen="unknown", reason="unknown_screen",
                                    error="the phone shows a screen the registry does not know")
                return _Attempt(True, screen=screen)
            self._sleep(min(self.opt.poll_s, max(0.0, until - time.monotonic())))

    def _gesture(self, app: App, action: ScreenAction) -> dict:
        """The device action a registry action stands for, in the phone's pixels: a tap or long
        tap on its box's centre, a swipe across its box (inset by a tenth at each end)."""
        size = self.frame_size or tuple(app.screen_size)
        x, y = action_centre(action, tuple(app.screen_size), size)
        if action.action_type == "tap":
            return {"type": "tap", "x": x, "y": y}
        if action.action_type == "long_tap":
            return {"type": "long_tap", "x": x, "y": y, "duration_ms": 800}
        sx, sy = size[0] / app.screen_size[0], size[1] / app.screen_size[1]
        x1, y1, x2, y2 = action.coordinates
        dx, dy = (x2 - x1) * 0.4 * sx, (y2 - y1) * 0.4 * sy
        end = {"swipe_up": (x, y + dy, x, y - dy), "swipe_down": (x, y - dy, x, y + dy),
               "swipe_left": (x + dx, y, x - dx, y), "swipe_right": (x - dx, y, x + dx, y)}
        a, b, c, d = end[action.action_type]
        return {"type": "swipe", "x1": round(a), "y1": round(b), "x2": round(c), "y2": round(d),
                "duration_ms": 300}
