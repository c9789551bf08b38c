"""AI recovery of an execution stuck on a screen it did not expect (spec 10, 12.3.3-12.3.5).

Owns, on the coordinator, what happens after a node reports an execution failed on an
unknown screen, a screen timeout or a wrong screen, when its run carries a recovery prompt and
the farm has an AI model (``hub.ai``): the node kept the phone's lock for us
(``RunSequence.recovery_prompt``), so no other execution can take the phone meanwhile. Then:
save the frame (and queue an unknown one for discovery), and loop up to ``max_steps``: show
the model the recovery prompt, the goal (the screens from which the sequence can go on, with
their registry descriptions) and the current frame; play the one tool it calls (tap, swipe,
type, key, launch_app, wait, give_up) on the phone under the execution's id; name the screen
again. On a screen from which the sequence can continue, the stored plan is sent again from
that step (``RunManager.resend``, the crash-resume path: no step runs twice); otherwise the
execution fails with diagnostics, the lock is released, and a phone that fails
``pause_after_failures`` recoveries in a row is paused (actors.coordinator.phone_pause, reason
``recovery_failures``) until an operator resumes it. Each attempt is a ``recovery_attempts`` row (prompt, responses, actions,
before/after frames) and ``recovery_started/step/succeeded/failed`` events go on the stream.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import msgspec
import orjson

from actors.coordinator.ai.client import AIError, ToolCall
from protocol.errors import FarmError
from protocol.files import write_atomic
from protocol.messages import RunSequence
from registry.model import Registry
from sequences.model import (ExpectScreenStep, GoToStep, IfScreenStep, LongTapStep, TapStep,
                             WaitForScreenStep)

log = logging.getLogger(__name__)

# Failures recovery takes over (actors/node/playback.py reasons).
RECOVERABLE = frozenset({"unknown_screen", "timeout", "wrong_screen"})
# Why the coordinator pauses a phone after repeated failed recoveries (actors.coordinator.phone_pause).
PAUSE_REASON = "recovery_failures"
ANY_KNOWN = "*"  # a resume point open to any registered state (an if_screen step)
_STEP = re.compile(r"^steps\[(\d+)\]")

KEYS = {"back": "KEYCODE_BACK", "home": "KEYCODE_HOME", "enter": "KEYCODE_ENTER",
        "app_switch": "KEYCODE_APP_SWITCH"}

SYSTEM_PROMPT = (
    "You operate an Android phone for an automation farm whose scripted sequence got lost. "
    "Each turn you get the task, the goal screens, what the phone shows now and a screenshot. "
    "Call exactly one tool per turn to move the phone toward one of the goal screens: dismiss "
    "dialogs, go back, reopen the app. Coordinates are in the phone's pixels. Never solve "
    "captchas or work around security checks: call give_up instead. Call give_up when the "
    "goal cannot be reached.")


def _fn(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required}}}


_INT = {"type": "integer"}
TOOLS = [
    _fn("tap", "Tap a point of the screen.", {"x": _INT, "y": _INT}, ["x", "y"]),
    _fn("swipe", "Swipe from (x1, y1) to (x2, y2).",
        {"x1": _INT, "y1": _INT, "x2": _INT, "y2": _INT}, ["x1", "y1", "x2", "y2"]),
    _fn("type_text", "Type text into the focused field.", {"text": {"type": "string"}}, ["text"]),
    _fn("key", "Press a key.", {"key": {"type": "string", "enum": sorted(KEYS)}}, ["key"]),
    _fn("launch_app", "Bring an app to the front (registry app name or Android package).",
        {"app": {"type": "string"}}, ["app"]),
    _fn("wait", "Wait for the screen to settle (at most 10 s).",
        {"seconds": {"type": "number"}}, ["seconds"]),
    _fn("give_up", "Stop: the goal cannot be reached.", {"reason": {"type": "string"}},
        ["reason"]),
]


@dataclass
class RecoveryOptions:
    """Limits of one recovery; tests shorten the settle."""

    max_steps: int = 8                 # AI actions per attempt
    pause_after_failures: int = 3      # failed recoveries in a row that pause the phone
    lease_s: float = 600.0             # the execution's lock while recovery works
    settle_s: float = 0.5              # after an action, before the screen is named
    max_wait_s: float = 10.0           # the wait tool's ceiling


@dataclass
class ResumePoint:
    """A screen from which the sequence can go on, and the top-level step it goes on at."""

    screen: str
    index: int
    description: str = ""


def _label(screen: str, app: str | None) -> str:
    return screen if "/" in screen or not app else f"{app}/{screen}"


def _action_screen(ref: str, app: str | None) -> tuple[str, str] | None:
    """``screen.action`` / ``app/screen.action`` -> (app/screen label, action name)."""
    app_key, _, rest = ref.rpartition("/")
    screen, _, action = rest.partition(".")
    if not screen or not action:
        return None
    return _label(screen, app_key or app), action


def screen_health(registry: Registry | None, label: str | None) -> str | None:
    """The registry's health tag of ``app/screen`` or ``app/interrupt:name`` (None: none)."""
    if registry is None or not label or "/" not in label:
        return None
    app_key, _, screen = label.partition("/")
    app = registry.apps.get(app_key)
    if app is None:
        return None
    found = (app.interrupts.get(screen.removeprefix("interrupt:")) if screen.startswith("interrupt:")
             else app.states.get(screen))
    return found.health if found is not None else None


def describe(registry: Registry | None, label: str) -> str:
    """The registry's description of ``app/screen`` (state or interrupt), or ''."""
    if registry is None or "/" not in label:
        return ""
    app_key, _, screen = label.partition("/")
    app = registry.apps.get(app_key)
    if app is None:
        return ""
    found = app.states.get(screen) or app.interrupts.get(screen.removeprefix("interrupt:"))
    return found.description if found is not None else ""


def resume_points(run: RunSequence, failed_path: str, registry: Registry | None
                  ) -> list[ResumePoint]:
    """Where the sequence can go on after ``failed_path`` failed, earliest step first: the
    failed step itself when it did nothing yet (a wait/expect re-checks its screen; an
    if_screen or a go_to takes any state), the screen a failed tap's action leads to (the tap
    happened: the next step), and, for every later top-level step, the screen it needs (a
    wait/expect screen or a go_to's target, or the screen of a tap's registry action). Steps before the failure never replay."""
    m = _STEP.match(failed_path or "")
    if m is None:
        return []
    failed = int(m.group(1))
    nested = failed_path != f"steps[{failed}]"
    points: dict[str, int] = {}
    steps = run.steps
    if not nested and failed < len(steps):
        step = steps[failed]
        if isinstance(step, (WaitForScreenStep, ExpectScreenStep)):
            points[_label(step.screen, run.app)] = failed
        elif isinstance(step, (IfScreenStep, GoToStep)):  # a go_to walks from any state
            points[ANY_KNOWN] = failed
        elif isinstance(step, (TapStep, LongTapStep)) and step.action and failed + 1 < len(steps):
            linked = _linked_state(registry, step.action, run.app)
            if linked is not None:
                points[linked] = failed + 1
    for index in range(failed + 1, len(steps)):
        step = steps[index]
        if isinstance(step, (WaitForScreenStep, ExpectScreenStep, GoToStep)):
            points.setdefault(_label(step.screen, run.app), index)
        elif isinstance(step, (TapStep, LongTapStep)) and step.action:
            found = _action_screen(step.action, run.app)
            if found is not None:
                points.setdefault(found[0], index)
    return sorted((ResumePoint(s, i, describe(registry, s)) for s, i in points.items()),
                  key=lambda p: p.index)


def _linked_state(registry: Registry | None, ref: str, app: str | None) -> str | None:
    found = _action_screen(ref, app)
    if registry is None or found is None:
        return None
    label, action_name = found
    app_key, _, screen = label.partition("/")
    entry = registry.apps.get(app_key)
    screen_def = entry.states.get(screen) if entry is not None else None
    for action in (screen_def.actions if screen_def is not None else []):
        if action.name == action_name and action.linked_state:
            return _label(action.linked_state, app_key)
    return None


def tool_action(call: ToolCall, package_of: Callable[[str], str | None]) -> dict:
    """The device action (protocol form) of a tool call; ValueError names a bad argument.
    ``wait`` and ``give_up`` are not device actions and are handled by the caller."""
    a = call.arguments

    def num(name: str) -> int:
        value = a.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{call.name}.{name}: a number is needed, got {value!r}")
        return int(value)

    if call.name == "tap":
        return {"type": "tap", "x": num("x"), "y": num("y")}
    if call.name == "swipe":
        return {"type": "swipe", "x1": num("x1"), "y1": num("y1"), "x2": num("x2"),
                "y2": num("y2"), "duration_ms": 300}
    if call.name == "type_text":
        if not isinstance(a.get("text"), str):
            raise ValueError("type_text.text: a string is needed")
        return {"type": "text", "text": a["text"]}
    if call.name == "key":
        key = str(a.get("key", "")).lower()
        if key not in KEYS:
            raise ValueError(f"key.key: {a.get('key')!r} is not one of {', '.join(sorted(KEYS))}")
        return {"type": "key", "key": KEYS[key]}
    if call.name == "launch_app":
        app = str(a.get("app", ""))
        package = package_of(app) or (app if "." in app else None)
        if package is None:
            raise ValueError(f"launch_app.app: {app!r} is neither a registry app nor a package")
        return {"type": "launch_app", "package": package}
    raise ValueError(f"unknown tool {call.name!r}")


class RecoveryManager:
    """Runs AI recovery attempts for the coordinator's executions (one at a time each)."""

    def __init__(self, hub: Any, runs: Any, options: RecoveryOptions | None = None, *,
                 registry: Callable[[], Registry | None] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.hub = hub
        self.runs = runs
        self.options = options or RecoveryOptions()
        self._registry = registry or self._default_registry
        self._sleep = sleep
        self.active: set[str] = set()
        self.failures_in_a_row: dict[str, int] = {}

    def _default_registry(self) -> Registry | None:
        """The coordinator's live registry (the editable store, with approved discoveries),
        else the runs' registry, else the default one."""
        store = getattr(self.hub, "registry_store", None)
        if store is not None:
            return store.registry
        if self.runs.registry is not None:
            return self.runs.registry
        from sequences.load import default_registry

        return default_registry()

    @property
    def folder(self) -> Path:
        return Path(self.runs.data_dir) / "recovery"

    # --- the hub's questions ----------------------------------------------------------------
    def wants(self, data: dict) -> bool:
        """Does recovery take over this ``execution_finished``? (AI on, a recoverable
        failure, and the node kept the lock for us.)"""
        ai_on = self.hub.ai is not None or getattr(self.hub, "ai_keys", None) is not None
        return (ai_on and data.get("status") == "failed"
                and data.get("reason") in RECOVERABLE and bool(data.get("lock_held"))
                and bool(data.get("execution_id"))
                and str(data["execution_id"]) not in self.active)

    async def recover(self, serial: str, data: dict) -> dict:
        """One recovery attempt of the execution ``data`` names; never raises."""
        execution_id = str(data["execution_id"])
        self.active.add(execution_id)
        try:
            return await self._recover(serial, execution_id, data)
        except Exception as exc:  # a bug: the execution fails, the coordinator lives on
            log.exception("execution=%s recovery crashed", execution_id)
            await self._give_back(serial, execution_id)
            await self.runs.db.update_execution(execution_id, status="failed",
                                                error_reason="recovery_failed",
                                                error_message=f"recovery crashed: {exc!r}")
            return {"status": "failed", "reason": "internal_error"}
        finally:
            self.active.discard(execution_id)

    # --- one attempt -------------------------------------------------------------------------
    async def _recover(self, serial: str, execution_id: str, data: dict) -> dict:
        db = self.runs.db
        record = next((r for r in await db.unfinished_executions([serial])
                       if r["execution_key"] == execution_id), None)
        if record is None or not record.get("plan"):
            await self._give_back(serial, execution_id)
            return {"status": "failed", "reason": "no_plan"}
        run = msgspec.json.decode(record["plan"], type=RunSequence)
        registry = self._registry()
        failed_path = str(data.get("failed_step") or "")
        points = resume_points(run, failed_path, registry)
        by_screen = {p.screen: p for p in points}
        attempt = len(await db.recovery_attempts(execution_key=execution_id, limit=1000)) + 1
        recovery_id = await db.add_recovery_attempt(
            execution_key=execution_id, serial=serial, sequence=run.sequence,
            step_path=failed_path, failure_reason=data.get("reason"), attempt_number=attempt,
            status="running", recovery_prompt=run.recovery_prompt,
            goal_screen=points[0].screen if points else None)
        folder = self.folder / execution_id
        base = {"execution_id": execution_id, "run_id": run.run_id, "attempt": attempt,
                "recovery_id": recovery_id}
        self._emit("recovery_started", serial, {
            **base, "sequence": run.sequence, "step": failed_path, "reason": data.get("reason"),
            "error": data.get("error"), "goal": [p.screen for p in points]})
        log.info("execution=%s phone=%s recovery %d: %s at %s, goal %s", execution_id, serial,
                 attempt, data.get("reason"), failed_path, [p.screen for p in points])

        state = _Attempt()
        if not points:
            return await self._failed(serial, run, recovery_id, base, state, data,
                                      "no_resume_point", "no later step names a screen to "
                                      "resume from")
        try:  # the execution's client's AI key, else its organization's, else the default
            ai = await self._ai_for(serial, record)
        except FarmError as exc:
            return await self._failed(serial, run, recovery_id, base, state, data, "ai_key",
                                      str(exc))
        if ai is None:
            return await self._failed(serial, run, recovery_id, base, state, data,
                                      "no_ai_model", "no AI model is configured for this "
                                      "phone's client any more")
        await self._device(serial, {"type": "acquire", "execution_id": execution_id,
                                    "lease_s": self.options.lease_s}, execution_id)
        look = await self._look(serial, execution_id)
        if look.get("status") != "ok":
            return await self._failed(serial, run, recovery_id, base, state, data,
                                      "phone_unavailable", f"cannot see the phone: "
                                      f"{look.get('status')}: {look.get('error')}")
        state.before = await self._save(folder / f"{attempt}-before.png", look["png"])
        screen_id = await self._queue_unknown(serial, execution_id, run, look, attempt)
        await db.update_recovery_attempt(recovery_id, screenshot_before=state.before,
                                         screen=screen_id or look.get("screen"))
        while True:
            if screen_health(registry, look.get("screen")) == "challenge":
                # Issue 21: a verification screen is recorded and left alone, never solved.
                return await self._failed(serial, run, recovery_id, base, state, data,
                                          "challenge_screen", f"the phone shows "
                                          f"{look.get('screen')}, a verification screen: AI "
                                          "recovery never acts on one", look)
            point = self._reached(look, by_screen)
            if point is not None:
                return await self._succeeded(serial, run, record, recovery_id, base, state,
                                             look, point, failed_path)
            if state.steps >= self.options.max_steps:
                return await self._failed(serial, run, recovery_id, base, state, data,
                                          "max_steps", f"goal not reached in "
                                          f"{self.options.max_steps} steps", look)
            state.steps += 1
            prompt = self._prompt(run, data, points, look, state, registry)
            try:
                reply = await ai.chat(SYSTEM_PROMPT, prompt, image_png=look["png"], tools=TOOLS)
            except AIError as exc:
                state.responses.append({"step": state.steps, "error": str(exc)})
                return await self._failed(serial, run, recovery_id, base, state, data,
                                          "ai_error", exc.reason, look)
            state.prompts.append(prompt)
            state.responses.append({
                "step": state.steps, "text": reply.text, "attempts": reply.attempts,
                "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
                "usage": {"prompt_tokens": reply.usage.prompt_tokens,
                          "completion_tokens": reply.usage.completion_tokens,
                          "cost": reply.usage.cost}})
            call = reply.tool_calls[0] if reply.tool_calls else None
            entry: dict[str, Any] = {"step": state.steps,
                                     "tool": call.name if call else None,
                                     "arguments": call.arguments if call else None,
                                     "screen_before": look.get("screen")}
            if call is not None and call.name == "give_up":
                entry["result"] = "gave up"
                state.actions.append(entry)
                return await self._failed(serial, run, recovery_id, base, state, data,
                                          "gave_up", str(call.arguments.get("reason") or ""),
                                          look)
            outcome = await self._act(serial, execution_id, call, registry)
            entry["result"] = outcome
            if outcome in ("locked", "gone"):
                state.actions.append(entry)
                return await self._failed(serial, run, recovery_id, base, state, data,
                                          "phone_unavailable", f"action answered {outcome}",
                                          look)
            await self._sleep(self.options.settle_s)
            look = await self._look(serial, execution_id)
            if look.get("status") != "ok":
                state.actions.append(entry)
                return await self._failed(serial, run, recovery_id, base, state, data,
                                          "phone_unavailable", f"cannot see the phone: "
                                          f"{look.get('error')}")
            entry["screen_after"] = look.get("screen")
            entry["frame"] = await self._save(folder / f"{attempt}-step{state.steps}.png",
                                              look["png"])
            state.actions.append(entry)
            self._emit("recovery_step", serial, {**base, "step": state.steps,
                                                 "tool": entry["tool"],
                                                 "arguments": entry["arguments"],
                                                 "result": outcome,
                                                 "screen": look.get("screen")})

    def _reached(self, look: dict, by_screen: dict[str, ResumePoint]) -> ResumePoint | None:
        screen = look.get("screen")
        if screen in by_screen:
            return by_screen[screen]
        if ANY_KNOWN in by_screen and look.get("kind") == "state":
            return ResumePoint(screen, by_screen[ANY_KNOWN].index)
        return None

    def _prompt(self, run: RunSequence, data: dict, points: list[ResumePoint], look: dict,
                state: "_Attempt", registry: Registry | None) -> str:
        goals = "\n".join(
            f"- {p.screen if p.screen != ANY_KNOWN else 'any screen of the app'}"
            f"{': ' + p.description if p.description else ''} (the sequence goes on at step "
            f"{p.index})" for p in points)
        screen = look.get("screen")
        now = ("a screen the registry does not know" if look.get("kind") in ("unknown", None)
               or not screen else f"{screen}: {describe(registry, screen)}")
        done = "\n".join(f"- {a['tool']}({_args(a['arguments'])}) -> {a.get('screen_after')}"
                         f"{' (' + str(a['result']) + ')' if a['result'] != 'ok' else ''}"
                         for a in state.actions) or "- none yet"
        return (f"Task: {run.recovery_prompt}\n\n"
                f"The sequence {run.sequence!r} stopped at {data.get('failed_step')}: "
                f"{data.get('reason')} ({data.get('error')}).\n"
                f"Goal: bring the phone to one of these screens:\n{goals}\n\n"
                f"Now the phone shows: {now}\n"
                f"Phone screen size: {look.get('width')}x{look.get('height')} pixels.\n"
                f"Actions so far:\n{done}\n"
                f"Step {state.steps} of at most {self.options.max_steps}: call one tool.")

    async def _act(self, serial: str, execution_id: str, call: ToolCall | None,
                   registry: Registry | None) -> str:
        """Play the tool call; 'ok', 'locked', 'gone', or what was wrong with it."""
        if call is None:
            return "no tool call"
        if call.name == "wait":
            seconds = call.arguments.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                return f"bad arguments: wait.seconds is not a number ({seconds!r})"
            await self._sleep(max(0.0, min(float(seconds), self.options.max_wait_s)))
            return "ok"

        def package_of(app: str) -> str | None:
            entry = registry.apps.get(app) if registry is not None else None
            return entry.package if entry is not None else None

        try:
            action = tool_action(call, package_of)
        except ValueError as exc:
            return f"bad arguments: {exc}"
        out = await self._device(serial, action, execution_id)
        status = out.get("status")
        if status in ("locked", "gone"):
            return status
        return "ok" if status == "ok" else f"error: {out.get('error')}"

    # --- endings ------------------------------------------------------------------------------
    async def _succeeded(self, serial: str, run: RunSequence, record: dict, recovery_id: int,
                         base: dict, state: "_Attempt", look: dict, point: ResumePoint,
                         failed_path: str) -> dict:
        db = self.runs.db
        execution_id = base["execution_id"]
        state.after = await self._save(self.folder / execution_id / f"{base['attempt']}-after.png",
                                       look["png"])
        resume_screen = look.get("screen") if point.index > 0 else None
        await db.update_execution(execution_id, error_reason=None, error_message=None)
        result = await self._resend(record, point.index, resume_screen)
        if result.get("status") != "ok":
            return await self._failed(serial, run, recovery_id, base, state,
                                      {"failed_step": failed_path}, "resume",
                                      f"could not resume at step {point.index}: "
                                      f"{result.get('error')}", look)
        found = await db.find_step(execution_id, failed_path)
        if found is not None:  # the failed step's row: fixed by recovery, not a failure
            await db.finish_step(found[0], "recovered")
        await self._record(recovery_id, state, "succeeded", reached_screen=look.get("screen"),
                           resume_from=point.index)
        self.failures_in_a_row[serial] = 0
        self._emit("recovery_succeeded", serial, {**base, "steps": state.steps,
                                                  "screen": look.get("screen"),
                                                  "resume_from": point.index})
        log.info("execution=%s phone=%s recovered in %d step(s) on %s: resumes at step %d",
                 execution_id, serial, state.steps, look.get("screen"), point.index)
        return {"status": "succeeded", "steps": state.steps, "resume_from": point.index,
                "screen": look.get("screen")}

    async def _resend(self, record: dict, index: int, screen: str | None) -> dict:
        # The node forgets a finished playback just after its last event: a start that
        # arrives first is told "already running" and would be lost.
        for _ in range(20):
            result = await self.runs.resend(record, index, screen)
            if not (result.get("status") == "ok" and result.get("already_running")):
                return result
            await self._sleep(0.25)
        return {"status": "error", "error": "the node still plays the failed execution"}

    async def _failed(self, serial: str, run: RunSequence, recovery_id: int, base: dict,
                      state: "_Attempt", data: dict, reason: str, detail: str,
                      look: dict | None = None) -> dict:
        execution_id = base["execution_id"]
        if look is not None and look.get("png") is not None:
            state.after = await self._save(
                self.folder / execution_id / f"{base['attempt']}-after.png", look["png"])
        tried = ", ".join(f"{a['tool']}({_args(a['arguments'])})" for a in state.actions) \
            or "no action"
        diagnostics = (f"{data.get('reason') or 'failure'} at {data.get('failed_step')} "
                       f"({data.get('error')}); AI recovery failed: {reason}: {detail}; "
                       f"{state.steps} step(s) tried: {tried}; last screen "
                       f"{(look or {}).get('screen') or 'unknown'}")
        await self._give_back(serial, execution_id)
        await self.runs.db.update_execution(execution_id, status="failed",
                                            error_reason="recovery_failed",
                                            error_message=diagnostics)
        await self._record(recovery_id, state, "failed",
                           reached_screen=(look or {}).get("screen"), error=f"{reason}: {detail}")
        failures = self.failures_in_a_row.get(serial, 0) + 1
        self.failures_in_a_row[serial] = failures
        paused = failures >= self.options.pause_after_failures
        self._emit("recovery_failed", serial, {**base, "reason": reason, "detail": detail,
                                               "steps": state.steps, "diagnostics": diagnostics,
                                               "failures_in_a_row": failures,
                                               "phone_paused": paused})
        log.warning("execution=%s phone=%s %s", execution_id, serial, diagnostics)
        if paused:
            await self._pause(serial, failures, diagnostics)
        schedules = getattr(self.hub, "schedules", None)
        if schedules is not None:
            schedules.wake()
        return {"status": "failed", "reason": reason, "detail": detail, "steps": state.steps}

    async def _pause(self, serial: str, failures: int, diagnostics: str) -> None:
        """Pause the phone (spec 12.3.3: pause the device after repeated failures): the
        coordinator's pause (actors.coordinator.phone_pause: state paused, reason recovery_failures, new
        work refused, the lock held on the node) until an operator resumes it
        (``farm resume SERIAL``, POST /api/phones/{serial}/resume)."""
        pauses = getattr(self.hub, "pauses", None)
        if pauses is None:
            log.error("phone=%s not paused after %d failed recoveries: no farm database",
                      serial, failures)
            return
        await pauses.pause(serial, PAUSE_REASON, {"failures_in_a_row": failures,
                                                  "last_failure": diagnostics})
        self._emit("recovery_phone_paused", serial, {
            "failures_in_a_row": failures, "reason": PAUSE_REASON,
            "resume": f"POST /api/phones/{serial}/resume"})

    async def _give_back(self, serial: str, execution_id: str) -> None:
        out = await self._device(serial, {"type": "release", "execution_id": execution_id})
        if out.get("status") != "ok":
            log.warning("execution=%s phone=%s lock not released after recovery: %s",
                        execution_id, serial, out.get("error"))

    async def _record(self, recovery_id: int, state: "_Attempt", status: str, **fields) -> None:
        await self.runs.db.update_recovery_attempt(
            recovery_id, status=status, steps=state.steps,
            recovery_prompt="\n\n---\n\n".join(state.prompts) or None,
            ai_response=orjson.dumps(state.responses).decode(),
            actions_taken=orjson.dumps(state.actions).decode(),
            screenshot_before=state.before, screenshot_after=state.after, **fields)

    async def _ai_for(self, serial: str, record: dict) -> Any:
        ai_for = getattr(self.hub, "ai_for", None)
        if ai_for is None:
            return self.hub.ai
        return await ai_for(serial, record.get("account_id"))

    # --- the phone -----------------------------------------------------------------------------
    async def _device(self, serial: str, action: dict, execution_id: str | None = None) -> dict:
        try:
            return await self.hub.device_action(serial, action, execution_id)
        except FarmError as exc:
            return {"status": "error", "error": str(exc)}

    async def _look(self, serial: str, execution_id: str) -> dict:
        out = await self._device(serial, {"type": "identify", "png": True}, execution_id)
        if out.get("status") == "ok":
            try:
                out["png"] = base64.b64decode(out.get("png") or "")
            except ValueError:
                return {"status": "error", "error": "the node sent no decodable frame"}
            if not out["png"]:
                return {"status": "error", "error": "the node sent no frame"}
        return out

    async def _save(self, path: Path, png: bytes) -> str:
        await asyncio.to_thread(write_atomic, path, png)
        return str(path)

    async def _queue_unknown(self, serial: str, execution_id: str, run: RunSequence,
                             look: dict, attempt: int) -> str | None:
        """An unknown frame goes to the discovery queue (deduplicated there); its entry id."""
        queue = getattr(self.hub, "unknown", None)
        if queue is None or look.get("kind") not in ("unknown", None):
            return None
        try:
            entry = await asyncio.to_thread(queue.add, f"recovery-{execution_id}-{attempt}",
                                            look["png"], {
                                                "serial": serial, "app": run.app,
                                                "sequence": run.sequence, "source": "recovery",
                                                "at": time.time()})
        except FarmError as exc:
            log.error("execution=%s unknown screen not queued: %s", execution_id, exc)
            return None
        return entry["id"]

    def _emit(self, event: str, serial: str, data: dict) -> None:
        self.hub.emit(event, None, serial, data)


@dataclass
class _Attempt:
    steps: int = 0
    before: str | None = None
    after: str | None = None

    def __post_init__(self) -> None:
        self.prompts: list[str] = []
        self.responses: list[dict] = []
        self.actions: list[dict] = []


def _args(arguments: dict | None) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in (arguments or {}).items())
