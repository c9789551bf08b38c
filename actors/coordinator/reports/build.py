"""What a client's report says: the figures of one period gathered from the farm database.

Owns `build_summary` (reads: the client's phones, the executions started in the period and
their failed or recovered steps, the recovery attempts begun in it, the phones paused now,
the unknown screens its phones met) and the pure parts that turn rows into the report's
summary: counts and success rate, failures by reason with links to their screenshots,
recovery figures, the phones that needed a human, and the recommendations of spec 12.3.5
(`recommendations`: every sequence step that failed or needed recovery in more than
``threshold`` executions, the screens it met and the registry action or recovery path that
fixed it most often). The summary is plain JSON: it is stored with the report and rendered
by actors.coordinator.reports.render.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable
from urllib.parse import quote

import orjson

from actors.store.execution_records import FINAL_STATUSES, screenshot_route, utc_text

DEFAULT_THRESHOLD = 3   # a step is recommended on when it needed help in more executions
EXAMPLES_PER_REASON = 3  # failures shown (with screenshots) per reason
MAX_RECOMMENDATIONS = 20


@dataclass(frozen=True)
class Period:
    """The UTC day a report covers: [start, end); ``partial`` when it is not over yet."""

    day: str
    start: datetime
    end: datetime
    partial: bool = False


def day_period(day: date, now: datetime | None = None) -> Period:
    """The period of UTC ``day``, cut at ``now`` when the day is not over."""
    now = now or datetime.now(timezone.utc)
    start = datetime.combine(day, time(0, 0), timezone.utc)
    end = start + timedelta(days=1)
    return Period(day.isoformat(), start, min(end, now), partial=now < end)


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + path


def screenshot_url(base: str, execution_id: str, path: str) -> str:
    """The API's address of a failed step's screenshot (actors.coordinator.runs)."""
    return _url(base, screenshot_route(execution_id, path))


def unknown_image_url(base: str, entry_id: str) -> str:
    return _url(base, f"/api/unknown-screens/{quote(entry_id, safe='')}/image")


def _is_label(screen: str | None) -> bool:
    """A registry label (``app/state``) rather than an unknown-screens queue id."""
    return bool(screen) and "/" in str(screen)


def _loads(text: Any) -> Any:
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


# --- gathering -------------------------------------------------------------------------------

async def gather(db: Any, client_id: int, period: Period) -> dict[str, list[dict]]:
    """The rows a report is made of (the coordinator's own reads: every client's rows are
    visible to it, so each statement names the client)."""
    args = (client_id, utc_text(period.start), utc_text(period.end))
    serials = "SELECT serial_number FROM phones WHERE client_id = ?"
    executions = await db._all(
        "SELECT execution_key, run_id, serial, sequence, status, error_reason, error_message,"
        f" start_time, end_time FROM executions WHERE serial IN ({serials})"
        " AND start_time >= ? AND start_time < ? ORDER BY start_time, execution_key", args)
    steps = await db._all(
        "SELECT e.execution_key, e.sequence, e.serial, s.path, s.action_type, s.screen_name,"
        " s.status, s.error, s.screenshot, s.end_time FROM execution_steps s"
        " JOIN executions e ON e.execution_id = s.execution_id"
        f" WHERE e.serial IN ({serials}) AND e.start_time >= ? AND e.start_time < ?"
        " AND s.status IN ('failed', 'recovered') ORDER BY s.step_id", args)
    attempts = await db._all(
        "SELECT recovery_id, execution_key, serial, sequence, step_path, failure_reason,"
        " screen, status, actions_taken, reached_screen, resume_from, steps, error, start_time"
        f" FROM recovery_attempts WHERE serial IN ({serials})"
        " AND start_time >= ? AND start_time < ? ORDER BY recovery_id", args)
    paused = await db._all(
        "SELECT serial_number, paused_reason, paused_at, paused_detail FROM phones"
        " WHERE client_id = ? AND paused_reason IS NOT NULL ORDER BY serial_number",
        (client_id,))
    phones = await db._all(serials, (client_id,))
    return {"executions": [dict(r) for r in executions], "steps": [dict(r) for r in steps],
            "attempts": [dict(r) for r in attempts], "paused": [dict(r) for r in paused],
            "serials": [r[0] for r in phones]}


async def build_summary(db: Any, client_id: int, client: str, period: Period, *,
                        public_url: str, threshold: int = DEFAULT_THRESHOLD,
                        unknown_entries: Iterable[dict] = (),
                        registry: Any = None) -> dict[str, Any]:
    """The summary of ``client``'s ``period`` (see `summarize`)."""
    rows = await gather(db, client_id, period)
    return summarize(rows, client_id=client_id, client=client, period=period,
                     public_url=public_url, threshold=threshold,
                     unknown_entries=unknown_entries, registry=registry)


# --- the summary -----------------------------------------------------------------------------

def summarize(rows: dict[str, list[dict]], *, client_id: int, client: str, period: Period,
              public_url: str, threshold: int = DEFAULT_THRESHOLD,
              unknown_entries: Iterable[dict] = (), registry: Any = None,
              now: datetime | None = None) -> dict[str, Any]:
    """The report's figures from the gathered ``rows``: JSON-ready."""
    executions, steps, attempts = rows["executions"], rows["steps"], rows["attempts"]
    statuses = Counter(e["status"] for e in executions)
    finished = sum(n for s, n in statuses.items() if s in FINAL_STATUSES)
    completed = statuses.get("completed", 0)
    recovery_done = [a for a in attempts if a["status"] in ("succeeded", "failed")]
    succeeded = sum(a["status"] == "succeeded" for a in attempts)
    return {
        "client": client, "client_id": client_id, "day": period.day,
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat(),
                   "partial": period.partial},
        "generated_at": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "runs": len({e["run_id"] for e in executions if e.get("run_id")}),
        "executions": {"total": len(executions), "completed": completed,
                       "failed": statuses.get("failed", 0),
                       "other": len(executions) - completed - statuses.get("failed", 0)},
        "success_rate": round(completed / finished, 4) if finished else None,
        "failures": failures_by_reason(executions, steps, public_url),
        "recovery": {"attempts": len(attempts), "succeeded": succeeded,
                     "failed": sum(a["status"] == "failed" for a in attempts),
                     "success_rate": (round(succeeded / len(recovery_done), 4)
                                      if recovery_done else None)},
        "needs_human": needs_human(rows, period, public_url, unknown_entries),
        "threshold": threshold,
        "recommendations": recommendations(steps, attempts, threshold, public_url, registry),
        "links": {"executions": _url(public_url, "/api/executions?since="
                                     + quote(period.start.isoformat(), safe="")
                                     + "&until=" + quote(period.end.isoformat(), safe=""))},
    }


def failures_by_reason(executions: list[dict], steps: list[dict],
                       public_url: str) -> list[dict[str, Any]]:
    """Failed executions grouped by reason, most first, each with a few examples and their
    failed step's screenshot link."""
    failed_step: dict[str, dict] = {}
    for step in steps:  # an execution's last failed step is where it stopped
        if step["status"] == "failed":
            failed_step[step["execution_key"]] = step
    groups: dict[str, list[dict]] = {}
    for e in executions:
        if e["status"] == "failed":
            groups.setdefault(e.get("error_reason") or "unknown", []).append(e)
    out = []
    for reason, rows in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        examples = []
        for e in rows[-EXAMPLES_PER_REASON:][::-1]:  # the latest first
            step = failed_step.get(e["execution_key"]) or {}
            examples.append({
                "execution_id": e["execution_key"], "serial": e["serial"],
                "sequence": e["sequence"], "step": step.get("path"),
                "screen": step.get("screen_name"), "error": e.get("error_message"),
                "at": e.get("end_time") or e.get("start_time"),
                "screenshot": (screenshot_url(public_url, e["execution_key"], step["path"])
                               if step.get("screenshot") and step.get("path") else None)})
        out.append({"reason": reason, "count": len(rows), "examples": examples})
    return out


def needs_human(rows: dict[str, list[dict]], period: Period, public_url: str,
                unknown_entries: Iterable[dict]) -> dict[str, list[dict]]:
    """Phones paused now, phones whose recoveries failed in the period, and the unknown
    screens the client's phones met in it (waiting for someone to register them)."""
    paused = [{"serial": r["serial_number"], "reason": r["paused_reason"],
               "since": r["paused_at"],
               "resume": _url(public_url, f"/api/phones/{quote(r['serial_number'], safe='')}"
                                          "/resume")}
              for r in rows["paused"]]
    failed: dict[str, dict] = {}
    for a in rows["attempts"]:
        if a["status"] == "failed" and a.get("serial"):
            entry = failed.setdefault(a["serial"], {"serial": a["serial"], "failures": 0})
            entry["failures"] += 1
            entry["last_error"] = a.get("error")
    serials = set(rows["serials"])
    start, end = period.start.timestamp(), period.end.timestamp()
    unknown = []
    for entry in unknown_entries:
        seen_by = sorted(s for s in entry.get("serials") or [] if s in serials)
        when = next((entry[k] for k in ("last_seen", "at", "ts")
                     if isinstance(entry.get(k), (int, float))), None)
        if not seen_by or when is None or not start <= when < end:
            continue
        unknown.append({"id": entry["id"], "app": entry.get("app"), "serials": seen_by,
                        "seen": entry.get("seen"), "status": entry.get("status"),
                        "last_seen": datetime.fromtimestamp(when, timezone.utc).isoformat(
                            timespec="seconds"),
                        "image": unknown_image_url(public_url, entry["id"])})
    return {"paused": paused, "failed_recovery": sorted(failed.values(),
                                                        key=lambda f: (-f["failures"],
                                                                       f["serial"])),
            "unknown_screens": unknown}


# --- recommendations (spec 12.3.5) ------------------------------------------------------------

def registry_action_at(registry: Any, label: str | None, x: Any, y: Any) -> str | None:
    """``app/screen.action`` of the registry action whose box holds (x, y) on the screen
    ``label`` (``app/state`` or ``app/interrupt:name``), or None. Both are in the app's
    screen_size pixels when the phone's size is the registry's (the virtual phones')."""
    if registry is None or not _is_label(label) or not isinstance(x, (int, float)) \
            or not isinstance(y, (int, float)):
        return None
    app_key, _, key = str(label).partition("/")
    app = registry.apps.get(app_key)
    if app is None:
        return None
    screen = (app.interrupts.get(key.removeprefix("interrupt:")) if key.startswith("interrupt:")
              else app.states.get(key))
    for action in (screen.actions if screen is not None else []):
        x1, y1, x2, y2 = action.coordinates
        if x1 <= x < x2 and y1 <= y < y2:
            return f"{label}.{action.name}"
    return None


def _action_text(action: dict, registry: Any) -> tuple[str, bool]:
    """One recovery action in words, and whether it is a registry action."""
    tool, args = action.get("tool"), action.get("arguments") or {}
    if tool == "tap":
        found = registry_action_at(registry, action.get("screen_before"), args.get("x"),
                                   args.get("y"))
        if found is not None:
            return found, True
        where = f" on {action['screen_before']}" if action.get("screen_before") else ""
        return f"tap ({args.get('x')}, {args.get('y')}){where}", False
    if tool == "key":
        return f"key {args.get('key')}", False
    if tool == "launch_app":
        return f"launch {args.get('app')}", False
    if tool == "type_text":
        return "type text", False
    if tool == "wait":
        return f"wait {args.get('seconds')} s", False
    return str(tool), False


def recovery_path(attempt: dict, registry: Any) -> tuple[str, list[str]]:
    """A succeeded attempt's path (what it did, then where the sequence went on) and the
    registry actions on it."""
    actions = _loads(attempt.get("actions_taken")) or []
    parts, named = [], []
    for action in actions if isinstance(actions, list) else []:
        if not isinstance(action, dict) or action.get("result") not in ("ok", None):
            continue  # an action that did not happen fixed nothing
        text, is_registry = _action_text(action, registry)
        parts.append(text)
        if is_registry:
            named.append(text)
    resumed = f"resume on {attempt.get('reached_screen') or 'the goal screen'}"
    return " -> ".join([*parts, resumed]) if parts else f"none needed: {resumed}", named


def recommendations(steps: list[dict], attempts: list[dict], threshold: int, public_url: str,
                    registry: Any = None) -> list[dict[str, Any]]:
    """Every (sequence, step) that failed or needed recovery in more than ``threshold``
    executions, most first: how often, the screens it met, and what fixed it most."""
    by_step: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(sequence: Any, path: Any) -> dict[str, Any]:
        return by_step.setdefault((str(sequence), str(path)), {
            "executions": set(), "failed": 0, "recovered": 0, "attempts": [],
            "screens": set(), "action_type": None, "error": None})

    for s in steps:
        if not s.get("path"):
            continue
        e = entry(s["sequence"], s["path"])
        e["executions"].add(s["execution_key"])
        e["failed" if s["status"] == "failed" else "recovered"] += 1
        e["action_type"] = e["action_type"] or s.get("action_type")
        if s["status"] == "failed" and s.get("error"):
            e["error"] = s["error"]
        if s.get("screen_name"):  # (execution, screen): a step row and its attempt are
            e["screens"].add((s["execution_key"], s["screen_name"]))  # one encounter
    for a in attempts:
        if not a.get("step_path"):
            continue
        e = entry(a["sequence"], a["step_path"])
        e["executions"].add(a["execution_key"])
        e["attempts"].append(a)
        if a.get("screen"):
            e["screens"].add((a["execution_key"], a["screen"]))
    out = []
    for (sequence, path), e in by_step.items():
        times = len(e["executions"])
        if times <= threshold:
            continue
        fixes: Counter[str] = Counter()
        registry_actions: dict[str, list[str]] = {}
        succeeded = [a for a in e["attempts"] if a["status"] == "succeeded"]
        for a in succeeded:
            text, named = recovery_path(a, registry)
            fixes[text] += 1
            registry_actions[text] = named
        fix = None
        if fixes:  # most often; a tie goes to the shorter path, then the first in order
            best = min(fixes, key=lambda p: (-fixes[p], p.count(" -> "), p))
            fix = {"path": best, "registry_actions": registry_actions[best],
                   "count": fixes[best], "of": len(succeeded)}
        met = Counter(screen for _, screen in e["screens"])  # executions per screen
        screens = [{"screen": name, "count": n, "registered": _is_label(name),
                    **({} if _is_label(name) else {"image": unknown_image_url(public_url,
                                                                              name)})}
                   for name, n in sorted(met.items(), key=lambda kv: (-kv[1], kv[0]))]
        rec = {"sequence": sequence, "step": path, "action_type": e["action_type"],
               "times": times, "failed": e["failed"], "recovered": e["recovered"],
               "recovery_attempts": len(e["attempts"]),
               "recovery_succeeded": len(succeeded), "screens": screens, "fix": fix,
               "last_error": e["error"]}
        rec["advice"] = advice(rec)
        out.append(rec)
    out.sort(key=lambda r: (-r["times"], r["sequence"], r["step"]))
    return out[:MAX_RECOMMENDATIONS]


def advice(rec: dict[str, Any]) -> str:
    """The recommendation in one sentence or two."""
    met = ", ".join(f"{s['screen'] if s['registered'] else 'an unknown screen (' + s['screen'] + ')'}"
                    f" (in {s['count']})" for s in rec["screens"][:3]) or "no screen recorded"
    head = (f"Step {rec['step']} of {rec['sequence']} failed or needed recovery in "
            f"{rec['times']} executions; it met {met}.")
    fix = rec["fix"]
    if fix is None:
        unknown = any(not s["registered"] for s in rec["screens"])
        return head + (" Nothing fixed it yet: register the unknown screen it met (the "
                       "discovery queue) so playback and recovery know it." if unknown else
                       " Nothing fixed it yet: give the run a recovery_prompt, or handle "
                       "that screen in the sequence.")
    share = f"{fix['count']} of {fix['of']} successful recoveries"
    if fix["registry_actions"]:
        actions = list(dict.fromkeys(fix["registry_actions"]))
        first = actions[0]
        screen, _, action = first.rpartition(".")
        todo = (f"make {action} the handler of the interrupt {screen} (the node then clears "
                "it by itself)" if "/interrupt:" in screen else
                f"add a tap on {first} to the sequence before this step")
        return head + (f" The registry action {', '.join(actions)} fixed it most ({share}: "
                       f"{fix['path']}): {todo}.")
    return head + f" The recovery path {fix['path']} fixed it most ({share})."
