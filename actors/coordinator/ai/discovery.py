"""Screen discovery (spec 6.1-6.3): a proposal for every queued unknown screen, reviewed by a
human, approved into the registry.

Owns the proposals (farm DB ``screen_proposals``) and how one is made: text detection on the
frame (``registry.ocr.TextReader.detect``, downscaled, in a worker thread: ~1 s) finds every
line of text and its box; with an AI model (``hub.ai``) the model names the screen, says
whether it is a state or an interrupt, picks up to 3 stable identifying texts (no feed
content) and the actions (e.g. dismiss) with the text they sit on, through the tool call
``propose_screen``; each text is located among the detected lines and becomes a validation
region (reference crop + ``expected_text``) or an action box. Without a model the most
stable-looking lines (top bar titles first, never clocks, counters or @/# content) become
the regions under a placeholder name for the operator to edit.

Approval goes through the registry store (atomic, audited, pushed to nodes). Emits
``discovery_proposed`` and ``discovery_resolved`` on the hub's stream.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
from typing import Annotated, Any, Callable, Literal

import cv2
import msgspec
import numpy as np
from msgspec import Meta

from actors.coordinator.ai.client import AIReply
from actors.coordinator.registry_store import (ActionEdit, RegionEdit, RegistryStore, ScreenEdit,
                                   decode_png_frame)
from protocol.errors import FarmError, ValidationError
from protocol.names import whole
from registry.load import resolve_path
from registry.model import GLOBAL_APP
from registry.ocr import TextLine, TextReader, shared_reader, text_similarity

log = logging.getLogger(__name__)

MAX_ELEMENTS = 3
# A detected line counts as the model's element when they read this much alike.
ELEMENT_MATCH = 0.6
# Pixels (registry space) added around a detected line's box: the recognizer wants margins.
REGION_PAD = 12
MIN_LINE_SCORE = 0.8
# The top of the frame that is the status bar (clock, battery): never a region.
STATUS_BAR = 0.03
# Normalized cross-correlation over which a line's box shows the same on two frames (it
# ignores brightness and contrast: the screen under a popup is dimmed, its text unchanged).
SAME_CORRELATION = 0.9
# A line this much darker than on the registered screen sits under a popup's backdrop.
DIMMED = 0.8
_KEY_CHARS = re.compile(r"[^a-z0-9]+")

SYSTEM_PROMPT = (
    "You register screens of Android apps for a phone farm's screen matcher. You get a "
    "screenshot of a screen nobody registered yet. Call propose_screen exactly once with: a "
    "short snake_case name; a description of the screen's purpose; kind 'state' for a screen "
    "of the app one navigates to, 'interrupt' for a popup, dialog or banner covering one; up "
    "to 3 elements: texts visible on the screen, copied exactly, that identify it and read the "
    "same every time (titles, fixed labels, button captions) - never feed content, user "
    "names, counts, dates or times; and the actions a phone can take there (e.g. 'dismiss' on "
    "a popup), each with the exact text of the element it sits on.")

PROPOSE_TOOL = {"type": "function", "function": {
    "name": "propose_screen",
    "description": "Propose how to register this screen.",
    "parameters": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "snake_case screen name"},
            "description": {"type": "string"},
            "kind": {"type": "string", "enum": ["state", "interrupt"]},
            "elements": {"type": "array", "maxItems": MAX_ELEMENTS, "items": {"type": "string"},
                         "description": "stable identifying texts, exactly as shown"},
            "actions": {"type": "array", "items": {
                "type": "object",
                "properties": {"name": {"type": "string"},
                               "element": {"type": "string",
                                           "description": "text of the element it sits on"}},
                "required": ["name", "element"]}},
        },
        "required": ["name", "description", "kind", "elements"],
    }}}

ScreenKey = Annotated[str, Meta(pattern=whole("[a-z0-9_]{1,64}"))]
AppKey = Annotated[str, Meta(pattern=whole("[a-z0-9_]{1,64}"))]


class ProposalEdit(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT /api/discovery/{id}``: the fields to change (others stay)."""

    name: ScreenKey | None = None
    description: Annotated[str, Meta(max_length=4096)] | None = None
    kind: Literal["state", "interrupt"] | None = None
    app: AppKey | None = None
    regions: Annotated[list[RegionEdit], Meta(max_length=32)] | None = None
    actions: Annotated[list[ActionEdit], Meta(max_length=32)] | None = None
    handler: Annotated[str, Meta(max_length=64)] | None = None


class ApproveRequest(ScreenEdit, forbid_unknown_fields=True):
    """The optional body of ``POST /api/discovery/{id}/approve``: the PUT screen body, plus
    the screen's ``name`` and ``app`` when they differ from the proposal's."""

    name: ScreenKey | None = None
    app: AppKey | None = None


class ProposalNotFound(FarmError):
    """No proposal with that id (HTTP 404)."""


class ProposalResolved(FarmError):
    """The proposal was approved or discarded already (HTTP 409)."""


class _Proposal(msgspec.Struct, forbid_unknown_fields=True):
    """The model's ``propose_screen`` arguments."""

    name: str
    description: str = ""
    kind: Literal["state", "interrupt"] = "state"
    elements: list[str] = []
    actions: list[dict[str, str]] = []


def screen_key(text: str, fallback: str) -> str:
    key = _KEY_CHARS.sub("_", text.lower()).strip("_")[:64]
    return key or fallback


def stable_lines(lines: list[TextLine], height: int, count: int = MAX_ELEMENTS,
                 common: frozenset[TextLine] = frozenset()) -> list[TextLine]:
    """The lines most likely to read the same every time the screen shows: real words (not
    clocks, battery levels, counters), no @handles or #tags (feed content), confidently read;
    lines that tell this screen from the app's registered ones before those ``common`` with
    one (a popup's text before the bars of the screen under it); then the top bar's titles,
    the bottom bar's labels, the rest top-down."""
    def usable(line: TextLine) -> bool:
        text = line.text
        letters = sum(c.isalpha() for c in text)
        return (line.score >= MIN_LINE_SCORE and letters >= 3 and letters >= len(text) / 2
                and "@" not in text and "#" not in text and line.box[1] > STATUS_BAR * height)

    def rank(line: TextLine) -> tuple[bool, int, int]:
        y = line.box[1] / height
        band = 0 if y < 0.15 else 1 if y > 0.85 else 2
        return line in common, band, line.box[1]

    return sorted(filter(usable, lines), key=rank)[:count]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalized cross-correlation of two same-sized grey crops (0 when either is flat)."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / norm if norm > 1e-6 else 0.0


def _locate(text: str, lines: list[TextLine], used: set[int]) -> int | None:
    """Index of the detected line that reads most like ``text`` (None under ELEMENT_MATCH)."""
    best, best_score = None, ELEMENT_MATCH
    for i, line in enumerate(lines):
        if i in used:
            continue
        score = text_similarity(text, line.text)
        if score >= best_score:
            best, best_score = i, score
    return best


def _box(line: TextLine, scale: tuple[float, float], size: tuple[int, int]) -> list[int]:
    """A detected line's box in registry space, padded, inside the screen."""
    sx, sy = scale
    x1, y1, x2, y2 = line.box
    return [max(0, int(x1 * sx) - REGION_PAD), max(0, int(y1 * sy) - REGION_PAD),
            min(size[0], int(np.ceil(x2 * sx)) + REGION_PAD),
            min(size[1], int(np.ceil(y2 * sy)) + REGION_PAD)]


class DiscoveryService:
    """Owns the screen proposals: making one per new unknown screen, their review."""

    def __init__(self, store: RegistryStore, db: Any, unknown: Any, *,
                 ai: Callable[[], Any] = lambda: None,
                 emit: Callable[[str, str | None, str | None, dict], None] = lambda *a: None,
                 reader: TextReader | None = None) -> None:
        self.store = store
        self.db = db
        self.unknown = unknown
        self._ai = ai
        self._emit = emit
        self._reader = reader
        self._queue: asyncio.Queue[str] | None = None
        self._worker: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one approve/discard/edit at a time

    # --- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker and queue every unknown screen that has no proposal yet."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work())
        self._worker.add_done_callback(
            lambda t: t.cancelled() or t.exception() is None
            or log.error("discovery worker died: %r", t.exception()))
        self._queue.put_nowait("*")  # backlog marker: read the queue once the loop runs

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    def submit(self, entry_id: str) -> None:
        """A new unknown screen was queued: propose how to register it (in the background,
        one at a time: detection takes the cores for a second)."""
        if self._queue is not None:
            self._queue.put_nowait(entry_id)

    async def _work(self) -> None:
        while True:
            entry_id = await self._queue.get()
            ids = ([e["id"] for e in self.unknown.entries() if e.get("status", "queued") == "queued"]
                   if entry_id == "*" else [entry_id])
            for one in ids:
                try:
                    await self.propose(one)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one bad screen must not stop discovery of the others
                    log.exception("discovery of unknown screen %s failed", one)

    # --- making a proposal --------------------------------------------------------------
    async def propose(self, entry_id: str) -> dict:
        """The proposal for queued unknown screen ``entry_id`` (made once; stored)."""
        existing = [p for p in await self.db.proposal_rows() if p["unknown_screen"] == entry_id]
        if existing:
            return self._view(existing[0])
        entry = next((e for e in self.unknown.entries() if e["id"] == entry_id), None)
        if entry is None:
            raise ProposalNotFound(f"unknown screen {entry_id!r}: not in the queue")
        png = await asyncio.to_thread(self.unknown.image, entry_id)
        t0 = time.perf_counter()
        status = "proposed"
        try:
            doc = await self._make(entry, png)
        except FarmError as exc:  # AI error, undecodable frame: the operator still reviews it
            log.error("discovery: no proposal for %s: %s", entry_id, exc)
            doc, status = {"error": str(exc), "name": f"unknown_{screen_key(entry_id, 'x')}",
                           "description": "", "kind": "state", "regions": [], "actions": [],
                           **self._app_for(entry, None)}, "failed"
        doc["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        row = await self.db.add_proposal(entry_id, status, doc)
        log.info("discovery: proposal %s for unknown screen %s: %s (%s, %d regions, %d actions)"
                 " in %.0f ms (text detection %.0f ms)", row["id"], entry_id, doc["name"],
                 doc.get("source"), len(doc["regions"]), len(doc["actions"]),
                 doc["elapsed_ms"], doc.get("detect_ms", 0))
        view = self._view(row)
        self._emit("discovery_proposed", entry.get("node"), entry.get("serial"), view)
        return view

    def _app_for(self, entry: dict, frame_size: tuple[int, int] | None) -> dict:
        """The registry app the screen belongs to: the app of its phone's package, else a
        new app named after the package (created on approval), else the global section."""
        package = entry.get("app")
        registry = self.store.registry
        key = registry.app_for_package(package)
        if key is not None:
            return {"app": key, "package": package,
                    "screen_size": list(registry.apps[key].screen_size), "new_app": False}
        if package:
            return {"app": screen_key(package.rsplit(".", 1)[-1], "app"), "package": package,
                    "screen_size": list(frame_size) if frame_size else None, "new_app": True}
        return {"app": GLOBAL_APP, "package": None,
                "screen_size": list(registry.apps[GLOBAL_APP].screen_size)
                if GLOBAL_APP in registry.apps else None, "new_app": False}

    async def _make(self, entry: dict, png: bytes) -> dict:
        frame_bgr = decode_png_frame(png, f"unknown screen {entry['id']}")
        h, w = frame_bgr.shape[:2]
        where = self._app_for(entry, (w, h))
        size = tuple(where["screen_size"] or (w, h))
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        reader = self._reader or shared_reader()
        ai = self._ai()

        def timed_detect() -> tuple[list[TextLine], float]:
            t0 = time.perf_counter()
            return reader.detect(rgb), (time.perf_counter() - t0) * 1000

        detect = asyncio.get_running_loop().run_in_executor(None, timed_detect)
        reply: Any = None
        if ai is not None:
            # The model and the detector work at once: the model's answer usually takes longer.
            reply, (lines, detect_ms) = await asyncio.gather(self._ask(ai, entry, png), detect)
        else:
            lines, detect_ms = await detect
        scale = (size[0] / w, size[1] / h)
        doc: dict[str, Any] = {**where, "detect_ms": round(detect_ms, 1), "lines": [
            {"box": _box(line, scale, size), "text": line.text, "score": round(line.score, 3)}
            for line in lines]}
        placeholder = f"unknown_{screen_key(entry['id'], 'screen')}"
        if isinstance(reply, AIReply):
            try:
                doc.update(self._from_model(reply, lines, scale, size, placeholder))
            except FarmError as exc:  # a useless answer: the text on the screen still helps
                reply = str(exc)
        if "regions" not in doc or not doc["regions"]:
            common, dimmed = await asyncio.to_thread(self._common_lines, where["app"],
                                                     frame_bgr, lines, scale, size)
            chosen = stable_lines(lines, h, common=common)
            # New text over a registered screen's dimmed text: a popup, so an interrupt.
            over_known = dimmed and any(line not in common for line in chosen)
            regions: list[dict] = []
            for line in chosen:
                regions.append(self._region(line, regions, scale, size))
            if "source" in doc:  # the model named it but none of its texts was found
                doc["regions"] = regions
            else:
                doc.update(source="ocr", name=placeholder,
                           kind="interrupt" if where["app"] == GLOBAL_APP or over_known
                           else "state",
                           description="Proposed from the screen's text (no AI answer): "
                                       "name and describe it.",
                           regions=regions, actions=[])
                if isinstance(reply, str):
                    doc["ai_error"] = reply
        await asyncio.to_thread(self._read_as_matcher, doc["regions"], frame_bgr, size, reader)
        return doc

    async def _ask(self, ai: Any, entry: dict, png: bytes) -> "AIReply | str":
        """The model's answer, or why there is none (the proposal falls back to OCR)."""
        try:
            return await ai.chat(SYSTEM_PROMPT, self._user_prompt(entry), image_png=png,
                                 tools=[PROPOSE_TOOL])
        except FarmError as exc:  # AIError after its retries, or an unreadable frame
            log.warning("discovery: AI model gave no proposal for %s: %s", entry["id"], exc)
            return str(exc)

    def _from_model(self, reply: AIReply, lines: list[TextLine], scale, size,
                    placeholder: str) -> dict:
        """The model's ``propose_screen`` call as a proposal: its texts located among the
        detected lines (regions), its actions on the lines they name (action boxes)."""
        call = next((c for c in reply.tool_calls if c.name == "propose_screen"), None)
        if call is None:
            raise FarmError(f"AI model did not call propose_screen (said: {reply.text[:200]!r})")
        try:
            proposal = msgspec.convert(call.arguments, _Proposal)
        except msgspec.ValidationError as exc:
            raise FarmError(f"AI model's propose_screen arguments: {exc}") from None
        used: set[int] = set()
        regions: list[dict] = []
        missing: list[str] = []
        for text in proposal.elements[:MAX_ELEMENTS]:
            found = _locate(text, lines, used)
            if found is None:
                missing.append(text)
                continue
            used.add(found)
            regions.append(self._region(lines[found], regions, scale, size))
        actions: list[dict] = []
        for action in proposal.actions:
            found = _locate(action.get("element", ""), lines, set())
            if found is None:
                missing.append(action.get("element", ""))
                continue
            actions.append({"name": screen_key(action.get("name", ""), f"action_{len(actions)}"),
                            "coordinates": _box(lines[found], scale, size),
                            "action_type": "tap", "linked_state": None})
        doc = {"source": "ai", "name": screen_key(proposal.name, placeholder),
               "description": proposal.description, "kind": proposal.kind, "regions": regions,
               "actions": actions, "not_found": missing,
               "ai_usage": {"prompt_tokens": reply.usage.prompt_tokens,
                            "completion_tokens": reply.usage.completion_tokens,
                            "cost": reply.usage.cost, "attempts": reply.attempts}}
        if proposal.kind == "interrupt" and actions:
            doc["handler"] = actions[0]["name"]
        return doc

    def _common_lines(self, app_key: str, frame_bgr: np.ndarray, lines: list[TextLine],
                      scale, size) -> tuple[frozenset[TextLine], bool]:
        """The lines whose box looks the same on a registered screen of the app (its
        reference screenshot): they do not tell this screen from that one. And whether they
        are dimmed there (darker than on the registered screen: a popup's backdrop)."""
        app = self.store.registry.apps.get(app_key)
        if app is None or not lines:
            return frozenset(), False
        # Per line, its brightness over the brightest registered screen it matches (other
        # popups' screenshots have the same dimmed backdrop: the bare screen is the brightest).
        brightness: dict[TextLine, float] = {}
        gray = cv2.cvtColor(cv2.resize(frame_bgr, tuple(size), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2GRAY).astype(np.float32)
        common: set[TextLine] = set()
        for screen in (*app.states.values(), *app.interrupts.values()):
            if screen.reference_screenshot is None:
                continue
            try:  # resolve_path: nothing outside the registry folder is read
                png = resolve_path(self.store.registry, screen.reference_screenshot).read_bytes()
            except (OSError, ValidationError):
                continue
            known = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
            if known is None or known.shape[::-1] != tuple(size):
                continue
            known = known.astype(np.float32)
            for line in lines:
                x1, y1, x2, y2 = _box(line, scale, size)
                if _correlation(gray[y1:y2, x1:x2], known[y1:y2, x1:x2]) > SAME_CORRELATION:
                    common.add(line)
                    if y1 < STATUS_BAR * size[1]:
                        continue  # the status bar stays bright above a popup's backdrop
                    ratio = (float(gray[y1:y2, x1:x2].mean())
                             / max(1.0, float(known[y1:y2, x1:x2].mean())))
                    brightness[line] = min(ratio, brightness.get(line, ratio))
        return (frozenset(common),
                bool(brightness) and statistics.median(brightness.values()) < DIMMED)

    @staticmethod
    def _user_prompt(entry: dict) -> str:
        return (f"Package in front: {entry.get('app') or 'unknown'}. Screen before: "
                f"{entry.get('previous_screen') or 'unknown'}. Last action: "
                f"{entry.get('last_action') or 'none'}. Propose how to register this screen.")

    @staticmethod
    def _region(line: TextLine, taken: list[dict], scale, size) -> dict:
        """A validation region over a detected line, named after its text (unique among
        ``taken``: the same word twice on a screen is common)."""
        base = screen_key(line.text, f"text_{len(taken)}")[:40]
        names = {r["name"] for r in taken}
        name = base if base not in names else next(
            f"{base}_{n}" for n in range(2, 100) if f"{base}_{n}" not in names)
        return {"name": name, "coordinates": _box(line, scale, size), "ocr_enabled": True,
                "expected_text": line.text}

    @staticmethod
    def _read_as_matcher(regions: list[dict], frame_bgr: np.ndarray, size, reader) -> None:
        """Each region's ``expected_text`` as the matcher's OCR check will read it (the
        recognizer alone, on the full-resolution box): detection ran on a half-size frame and
        reads small text differently ("Updateavailable")."""
        frame = cv2.cvtColor(cv2.resize(frame_bgr, tuple(size), interpolation=cv2.INTER_AREA)
                             if frame_bgr.shape[1::-1] != tuple(size) else frame_bgr,
                             cv2.COLOR_BGR2RGB)
        for region in regions:
            x1, y1, x2, y2 = region["coordinates"]
            text, _ = reader.read(frame[y1:y2, x1:x2])
            if text.strip():
                region["expected_text"] = text.strip()

    # --- review -------------------------------------------------------------------------
    def _view(self, row: dict) -> dict:
        view = {k: v for k, v in row.items() if k != "lines"}
        view["image"] = f"/api/unknown-screens/{row['unknown_screen']}/image"
        view["lines"] = row.get("lines", [])
        return view

    async def proposals(self, status: str | None = None) -> list[dict]:
        return [self._view(r) for r in await self.db.proposal_rows(status)]

    async def _open(self, proposal_id: str) -> dict:
        row = await self.db.proposal_row(int(proposal_id)) if proposal_id.isdigit() else None
        if row is None:
            raise ProposalNotFound(f"proposal {proposal_id!r}: no such proposal")
        if row["status"] in ("approved", "discarded"):
            raise ProposalResolved(f"proposal {proposal_id}: already {row['status']}")
        return row

    @staticmethod
    def _doc(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in (
            "id", "unknown_screen", "status", "created_at", "updated_at", "resolved_by")}

    async def update(self, proposal_id: str, edit: ProposalEdit, *, actor: str | None = None) -> dict:
        async with self._lock:
            row = await self._open(proposal_id)
            doc = self._doc(row)
            for field in ("name", "description", "kind", "app", "handler"):
                value = getattr(edit, field)
                if value is not None:
                    doc[field] = value
            for field in ("regions", "actions"):
                value = getattr(edit, field)
                if value is not None:
                    doc[field] = msgspec.to_builtins(value)
            if edit.app is not None and edit.app != row.get("app"):
                doc["new_app"] = edit.app not in self.store.registry.apps
            doc["edited_by"] = actor
            status = "proposed" if row["status"] == "failed" else None
            return self._view(await self.db.update_proposal(int(proposal_id), status=status,
                                                            proposal=doc))

    async def approve(self, proposal_id: str, body: ApproveRequest | None, frame_png: bytes | None,
                      *, actor: str | None = None) -> dict:
        """Write the proposal (or ``body``, its edited form) into the registry: the registry
        store validates, saves atomically, audits and pushes it to every node."""
        async with self._lock:
            row = await self._open(proposal_id)
            app = (body.app if body is not None and body.app else None) or row.get("app")
            name = (body.name if body is not None and body.name else None) or row.get("name")
            if body is None:
                body = msgspec.convert({
                    "kind": row.get("kind", "state"), "description": row.get("description", ""),
                    "handler": row.get("handler"), "regions": row.get("regions", []),
                    "actions": row.get("actions", [])}, ApproveRequest)
            if not body.reason:
                body = msgspec.structs.replace(
                    body, reason=f"discovery proposal {proposal_id} (unknown screen "
                                 f"{row['unknown_screen']}, {row.get('source', 'edited')})")
            if app not in self.store.registry.apps and body.package is None:
                body = msgspec.structs.replace(
                    body, package=row.get("package"),
                    screen_size=tuple(row["screen_size"]) if row.get("screen_size") else None)
            if frame_png is None:
                try:
                    frame_png = await asyncio.to_thread(self.unknown.image, row["unknown_screen"])
                except (FarmError, OSError) as exc:
                    raise ValidationError("$.frame", f"the unknown screen's frame is gone ({exc}):"
                                                     " give a frame") from None
            edit = msgspec.convert({k: v for k, v in msgspec.to_builtins(body).items()
                                    if k not in ("name", "app")}, ScreenEdit)
            saved = await self.store.save_screen(app, name, edit, frame_png, actor=actor)
            doc = {**self._doc(row), "app": app, "name": name, "registry_version": saved["version"]}
            resolved = await self.db.update_proposal(int(proposal_id), status="approved",
                                                     proposal=doc, resolved_by=actor)
            await asyncio.to_thread(self.unknown.set_status, row["unknown_screen"], "registered")
        view = self._view(resolved)
        self._emit("discovery_resolved", None, None,
                   {"id": view["id"], "status": "approved", "app": app, "screen": name,
                    "version": saved["version"], "unknown_screen": row["unknown_screen"]})
        return {**saved, "proposal": view}

    async def registered(self, entry_id: str, saved: dict, *, actor: str | None = None) -> None:
        """A queued unknown screen was saved into the registry directly (edit mode, PUT with
        its frame): the entry is registered and its open proposal resolved as approved."""
        async with self._lock:
            await asyncio.to_thread(self.unknown.set_status, entry_id, "registered")
            row = next((p for p in await self.db.proposal_rows("proposed")
                        if p["unknown_screen"] == entry_id), None)
            if row is None:
                return
            doc = {**self._doc(row), "app": saved["app"], "name": saved["screen"],
                   "registry_version": saved["version"], "saved_in_edit_mode": True}
            await self.db.update_proposal(row["id"], status="approved", proposal=doc,
                                          resolved_by=actor)
        self._emit("discovery_resolved", None, None,
                   {"id": row["id"], "status": "approved", "app": saved["app"],
                    "screen": saved["screen"], "version": saved["version"],
                    "unknown_screen": entry_id})

    async def discard(self, proposal_id: str, *, actor: str | None = None, reason: str = "") -> dict:
        async with self._lock:
            row = await self._open(proposal_id)
            doc = {**self._doc(row), "discard_reason": reason or None}
            resolved = await self.db.update_proposal(int(proposal_id), status="discarded",
                                                     proposal=doc, resolved_by=actor)
            await asyncio.to_thread(self.unknown.set_status, row["unknown_screen"], "discarded")
        view = self._view(resolved)
        self._emit("discovery_resolved", None, None,
                   {"id": view["id"], "status": "discarded", "unknown_screen": row["unknown_screen"]})
        return view
