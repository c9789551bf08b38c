"""The coordinator's registry store: the editable screen registry, its saves and its version.

Owns the coordinator's registry folder (``--registry``, default ``DATA/registry``; on first
start a copy of the packaged demo registry, so the installed package is never written), the
edit of one screen (reference crops cut from a frame, the whole app validated in memory
before a byte is written, atomic save through ``registry.load.save_app``, an audit row), the
registry's version (its content hash) and the payloads pushed to nodes (one app per message).
Saves are serialized; every successful one calls ``on_change`` with
``{"version", "app", "screen", "action"}`` (the hub emits ``registry_changed`` and pushes the
app to every node).

Crop files are named by content (``<app>/<screen>.<region>.<hash8>.png``): a save never
overwrites a file the current JSON names, so a crash between writing crops and writing the
JSON leaves the old registry intact and valid.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import cv2
import msgspec
import numpy as np
from msgspec import Meta

from protocol.errors import FarmError, ValidationError, ValidationErrors
from protocol.files import copy_tree, fsync_dir
from protocol.names import printable, whole
from registry.load import (DEMO_REGISTRY, candidate_registry, load_registry, resolve_path,
                           save_app)
from registry.model import GLOBAL_APP, App, Region, Registry, Screen, ScreenAction

log = logging.getLogger(__name__)

SCREEN_KEY = re.compile(r"[a-z0-9_]{1,64}")  # fullmatch: `$` lets a trailing newline in
# Frames larger than this (either side) are refused: no phone screen is, and decoding one
# would cost the coordinator hundreds of MB.
MAX_FRAME_SIDE = 8192
# A frame whose aspect ratio is off the app's screen_size by more than this is refused
# (stretching it would cut crops the matcher never sees on a real frame).
ASPECT_TOLERANCE = 0.03
AUDIT_ENTITY = "registry_screen"

Name = printable(64, 1)
Box = tuple[Annotated[int, Meta(ge=0, le=100_000)], Annotated[int, Meta(ge=0, le=100_000)],
            Annotated[int, Meta(ge=0, le=100_000)], Annotated[int, Meta(ge=0, le=100_000)]]


class RegistryNotFound(FarmError):
    """No such app, screen or file in the registry (HTTP 404)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what}: not in the registry")


class FrameRef(msgspec.Struct, forbid_unknown_fields=True):
    """Where the crops are cut from: exactly one of a phone's latest frame, a queued unknown
    screen, or an uploaded PNG. Left out: the screen's saved reference screenshot."""

    serial: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    unknown_screen: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    png_b64: Annotated[str, Meta(min_length=1)] | None = None


class RegionEdit(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    coordinates: Box
    ocr_enabled: bool = False
    expected_text: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None


class ActionEdit(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    coordinates: Box
    action_type: Literal["tap", "long_tap", "swipe_up", "swipe_down", "swipe_left",
                         "swipe_right"] = "tap"
    linked_state: Annotated[str, Meta(max_length=64)] | None = None
    # None: as the saved screen's action of that name has it (true for a new one), so a
    # client that does not know the flag cannot turn go_to loose on a Post button.
    navigation: bool | None = None


class ScreenEdit(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT /api/registry/apps/{app}/screens/{screen}``. ``package`` and
    ``screen_size`` are only for a screen of an app the registry does not have yet (the
    app is created; without ``package`` an unknown app is a 404)."""

    kind: Literal["state", "interrupt"]
    description: Annotated[str, Meta(max_length=4096)] = ""
    handler: Annotated[str, Meta(max_length=64)] | None = None
    frame: FrameRef | None = None
    regions: Annotated[list[RegionEdit], Meta(max_length=32)] = []
    actions: Annotated[list[ActionEdit], Meta(max_length=32)] = []
    reason: Annotated[str, Meta(max_length=1024)] = ""
    package: Annotated[str, Meta(pattern=whole(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+"),
                                 max_length=255)] | None = None
    screen_size: tuple[Annotated[int, Meta(ge=1, le=MAX_FRAME_SIDE)],
                       Annotated[int, Meta(ge=1, le=MAX_FRAME_SIDE)]] | None = None


def ensure_registry_dir(root: Path, seed: Path = DEMO_REGISTRY) -> Path:
    """``root`` as a registry folder: when missing, a copy of ``seed`` (copied beside it and
    renamed into place, so a crash never leaves half a copy)."""
    root = Path(root)
    if root.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        copy_tree(seed, tmp)
        os.rename(tmp, root)
        fsync_dir(root.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("registry folder %s created from %s", root, seed)
    return root


def decode_png_frame(png: bytes, where: str) -> np.ndarray:
    """A PNG's pixels (BGR), size-checked; ValidationError naming ``where`` otherwise."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValidationError(where, "not a PNG image")
    header = png[16:24]
    if len(header) == 8:
        width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")
        if not (0 < width <= MAX_FRAME_SIDE and 0 < height <= MAX_FRAME_SIDE):
            raise ValidationError(where, f"frame of {width}x{height} is outside 1..{MAX_FRAME_SIDE} px")
    frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValidationError(where, "PNG could not be decoded")
    return frame


def frame_in_app_space(frame: np.ndarray, screen_size: tuple[int, int], where: str) -> np.ndarray:
    """``frame`` scaled to the app's ``screen_size`` (what every coordinate refers to)."""
    h, w = frame.shape[:2]
    sw, sh = screen_size
    if (w, h) == (sw, sh):
        return frame
    if abs((w / h) / (sw / sh) - 1) > ASPECT_TOLERANCE:
        raise ValidationError(where, f"frame of {w}x{h} does not have the app's screen shape "
                                     f"{sw}x{sh}")
    return cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA if w > sw else cv2.INTER_LINEAR)


def _png(image: np.ndarray) -> bytes:
    ok, out = cv2.imencode(".png", image)
    if not ok:
        raise FarmError("PNG encoding failed")
    return out.tobytes()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")[:40] or "region"


def _content_name(stem: str, data: bytes) -> str:
    return f"{stem}.{hashlib.sha256(data).hexdigest()[:8]}.png"


def app_files(app: App) -> set[str]:
    """Every registry-relative file an app's JSON names (crops and screenshots)."""
    out: set[str] = set()
    for screen in (*app.states.values(), *app.interrupts.values()):
        out.update(r.reference for r in screen.validation_regions if r.reference)
        if screen.reference_screenshot:
            out.add(screen.reference_screenshot)
    return out


class RegistryStore:
    """Owns the coordinator's registry folder: reads, audited atomic edits, the version and
    the per-app payloads that nodes receive."""

    def __init__(self, root: str | Path, db: Any = None,
                 on_change: Callable[[dict], Any] | None = None) -> None:
        self.root = Path(root)
        self.db = db
        self.on_change = on_change
        self.registry: Registry = load_registry(self.root)
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, root: str | Path, db: Any = None, seed: Path = DEMO_REGISTRY) -> "RegistryStore":
        """The store at ``root``, created from ``seed`` when missing. ValidationErrors when
        the folder holds an invalid registry."""
        return cls(ensure_registry_dir(Path(root), seed), db)

    @property
    def version(self) -> str:
        return self.registry.version

    # --- reads -------------------------------------------------------------------------
    def summary(self) -> dict:
        return {"version": self.version, "apps": [
            {"name": key, "package": app.package, "screen_size": list(app.screen_size),
             "states": sorted(app.states), "interrupts": sorted(app.interrupts)}
            for key, app in sorted(self.registry.apps.items())]}

    def app(self, app_key: str) -> App:
        app = self.registry.apps.get(app_key)
        if app is None:
            raise RegistryNotFound(f"app {app_key!r}")
        return app

    def app_json(self, app_key: str) -> dict:
        return msgspec.to_builtins(self.app(app_key))

    def screen(self, app_key: str, screen_key: str) -> tuple[str, Screen]:
        """(kind, screen) of a registered screen; RegistryNotFound otherwise."""
        kind, screen = _find_screen(self.app(app_key), screen_key)
        if screen is None:
            raise RegistryNotFound(f"screen {app_key}/{screen_key}")
        return kind, screen

    def file(self, app_key: str, path: str) -> bytes:
        """A file the app's JSON names (its path as written there, e.g. ``clipshare/feed.png``)."""
        app = self.app(app_key)
        if path not in app_files(app):
            raise RegistryNotFound(f"file {path!r} of app {app_key!r}")
        try:
            return resolve_path(self.registry, path).read_bytes()
        except ValidationError as exc:
            log.warning("registry app %s: file %r is outside %s, not served", app_key, path,
                        self.registry.root)
            raise RegistryNotFound(f"file {path!r} of app {app_key!r} ({exc})") from None
        except OSError as exc:
            raise RegistryNotFound(f"file {path!r} of app {app_key!r} ({exc})") from None

    def app_payload(self, app_key: str) -> tuple[bytes, dict[str, bytes]]:
        """The app's JSON file, byte for byte, and every file it names: what a node needs to
        hold exactly this app."""
        self.app(app_key)
        raw = (self.root / f"{app_key}.json").read_bytes()
        files = {rel: resolve_path(self.registry, rel).read_bytes()
                 for rel in sorted(app_files(self.registry.apps[app_key]))}
        return raw, files

    # --- edits -------------------------------------------------------------------------
    async def save_screen(self, app_key: str, screen_key: str, edit: ScreenEdit,
                          frame_png: bytes | None, *, actor: str | None = None) -> dict:
        """Create or replace one screen from ``edit``, its crops cut from ``frame_png``
        (None: the screen's saved reference screenshot). ValidationErrors names every
        problem (JSON paths of the request, ``$.regions[1].coordinates``); nothing is
        written then. Returns ``{"version", "app", "screen", "action"}``."""
        async with self._lock:
            try:
                change = await asyncio.to_thread(self._save_screen, app_key, screen_key, edit,
                                                 frame_png)
            except ValidationErrors:
                raise
            except ValidationError as exc:  # one problem: reported the same way as many
                raise ValidationErrors([exc]) from None
            return await self._record(change, actor, edit.reason)

    def _build_screen(self, app_key: str, screen_key: str, app: App, edit: ScreenEdit,
                      frame: np.ndarray, old: Screen | None) -> tuple[Screen, dict[str, bytes]]:
        width, height = app.screen_size
        files: dict[str, bytes] = {}
        regions: list[Region] = []
        problems: list[ValidationError] = []
        for i, region in enumerate(edit.regions):
            x1, y1, x2, y2 = region.coordinates
            if not (x1 < x2 and y1 < y2 and x2 <= width and y2 <= height):
                problems.append(ValidationError(
                    f"$.regions[{i}].coordinates",
                    f"box {list(region.coordinates)} must be non-empty and inside the app's "
                    f"{width}x{height} screen"))
                continue
            crop = _png(frame[y1:y2, x1:x2])
            rel = f"{app_key}/" + _content_name(f"{screen_key}.{_slug(region.name)}", crop)
            files[rel] = crop
            regions.append(Region(name=region.name, coordinates=region.coordinates,
                                  ocr_enabled=region.ocr_enabled, reference=rel,
                                  expected_text=region.expected_text,
                                  threshold=region.threshold))
        if problems:
            raise ValidationErrors(problems)
        shot = _png(frame)
        shot_rel = f"{app_key}/" + _content_name(screen_key, shot)
        files[shot_rel] = shot
        was = {a.name: a.navigation for a in old.actions} if old is not None else {}
        actions = [ScreenAction(name=a.name, coordinates=a.coordinates, action_type=a.action_type,
                                linked_state=a.linked_state,
                                navigation=was.get(a.name, True) if a.navigation is None
                                else a.navigation) for a in edit.actions]
        screen = Screen(name=old.name if old is not None else screen_key,
                        description=edit.description, validation_regions=regions,
                        actions=actions, handler=edit.handler, reference_screenshot=shot_rel)
        return screen, files

    def _save_screen(self, app_key: str, screen_key: str, edit: ScreenEdit,
                     frame_png: bytes | None) -> dict:
        if not SCREEN_KEY.fullmatch(screen_key):
            raise ValidationErrors([ValidationError(
                "screen", f"{screen_key!r}: use 1-64 of a-z, 0-9 and _")])
        app = self.registry.apps.get(app_key)
        if app is None:
            if edit.package is None:
                raise RegistryNotFound(f"app {app_key!r} (give package to create it)")
            app = App(package=edit.package, screen_size=edit.screen_size or (1080, 2400))
        if not edit.regions:
            raise ValidationErrors([ValidationError(
                "$.regions", "give at least one validation region: a screen without one never "
                             "matches")])
        if app_key == GLOBAL_APP and edit.kind == "state":
            raise ValidationErrors([ValidationError("$.kind", "the global section holds "
                                                              "interrupts only")])
        old_kind, old = _find_screen(app, screen_key)
        if frame_png is None:
            if old is None or old.reference_screenshot is None:
                raise ValidationErrors([ValidationError(
                    "$.frame", "required: the screen has no saved screenshot to cut crops from")])
            frame_png = resolve_path(self.registry, old.reference_screenshot).read_bytes()
        frame = frame_in_app_space(decode_png_frame(frame_png, "$.frame"), app.screen_size,
                                   "$.frame")
        # The screen as it was, for its history (a seeded screen has no version yet).
        before_content = (self.screen_content(app_key, screen_key) if old is not None
                          else None)
        screen, files = self._build_screen(app_key, screen_key, app, edit, frame, old)
        version = self._write(app_key, _with_screen(app, screen_key, edit.kind, screen), files,
                              screen_key)
        return _saved(version, app_key, screen_key, edit.kind, screen, files, old_kind, old,
                      before_content)

    def _write(self, app_key: str, app: App, files: dict[str, bytes], screen_key: str) -> str:
        """save_app, with its problems' ``where`` made request-relative; reloads the registry
        and drops the screen's crop files no JSON names any more."""
        try:
            save_app(self.root, app_key, app, files)
        except ValidationErrors as exc:
            raise ValidationErrors([_request_problem(p, screen_key) for p in exc.problems]) from None
        self.registry = load_registry(self.root)
        self._drop_unused(app_key, screen_key)
        return self.registry.version

    def _drop_unused(self, app_key: str, screen_key: str) -> None:
        used = set().union(*(app_files(a) for a in self.registry.apps.values()))
        folder = self.root / app_key
        for path in folder.glob(f"{screen_key}.*.png") if folder.is_dir() else ():
            rel = f"{app_key}/{path.name}"
            # Only content-named files (ours): a hand-made crop is never removed.
            if rel not in used and re.search(r"\.[0-9a-f]{8}\.png$", path.name):
                path.unlink(missing_ok=True)

    def screen_content(self, app_key: str, screen_key: str) -> dict:
        """A screen as its history stores it (`screen_content`), read from the folder."""
        kind, screen = self.screen(app_key, screen_key)
        names = {r.reference for r in screen.validation_regions if r.reference}
        if screen.reference_screenshot:
            names.add(screen.reference_screenshot)
        files = {rel: resolve_path(self.registry, rel).read_bytes() for rel in sorted(names)}
        return screen_content(app_key, kind, screen, files)

    def check_screens(self, screens: list[tuple[str, str, dict]]) -> Registry:
        """The registry as it would be with every (app, screen, stored content) of
        ``screens`` saved, validated whole from memory (nothing is written): what an import
        checks before it saves anything. ValidationErrors names each problem."""
        apps: dict[str, App] = {}
        files: dict[str, bytes] = {}
        for app_key, screen_key, content in screens:
            app = apps.get(app_key) or self.app(app_key)
            kind, screen, screen_files = _stored_screen(content)
            files.update(screen_files)
            apps[app_key] = _with_screen(app, screen_key, kind, screen)
        return candidate_registry(self.root, apps, files)

    async def restore_screen(self, app_key: str, screen_key: str, content: dict, *,
                             actor: str | None = None, reason: str = "") -> dict:
        """Save a screen exactly as a stored version had it (``content`` from
        `screen_content`): its JSON and its files, validated like an edit (a state it links
        to must exist); audited and versioned like one."""
        async with self._lock:
            def work() -> dict:
                app = self.app(app_key)
                kind, screen, files = _stored_screen(content)
                old_kind, old = _find_screen(app, screen_key)
                before_content = (self.screen_content(app_key, screen_key) if old is not None
                                  else None)
                version = self._write(app_key, _with_screen(app, screen_key, kind, screen),
                                      files, screen_key)
                return _saved(version, app_key, screen_key, kind, screen, files, old_kind, old,
                              before_content)
            return await self._record(await asyncio.to_thread(work), actor, reason)

    async def delete_screen(self, app_key: str, screen_key: str, *, actor: str | None = None,
                            reason: str = "") -> dict:
        """Remove one screen (validated like a save: a state another screen links to stays)."""
        async with self._lock:
            def work() -> dict:
                kind, old = self.screen(app_key, screen_key)
                app = self.registry.apps[app_key]
                states, interrupts = dict(app.states), dict(app.interrupts)
                (states if kind == "state" else interrupts).pop(screen_key)
                version = self._write(app_key, msgspec.structs.replace(
                    app, states=states, interrupts=interrupts), {}, screen_key)
                return {"version": version, "app": app_key, "screen": screen_key,
                        "action": "delete", "before": {"kind": kind, **msgspec.to_builtins(old)},
                        "after": None}
            return await self._record(await asyncio.to_thread(work), actor, reason)

    async def _record(self, change: dict, actor: str | None, reason: str) -> dict:
        """Audit row, then ``on_change``; returns the public part of the change."""
        if self.db is not None:
            await self.db.audit(AUDIT_ENTITY, f"{change['app']}/{change['screen']}",
                                change["action"], change["before"],
                                {**(change["after"] or {}), "version": change["version"]}
                                if change["after"] is not None else None,
                                actor=actor, reason=reason or None)
            if change.get("content") is not None:
                from actors.coordinator.definitions.versions import VersionStore

                await VersionStore(self.db).record_save(
                    "screen", f"{change['app']}/{change['screen']}", None,
                    change["before_content"], change["content"], author=actor,
                    reason=reason or None)
        public = {k: change[k] for k in ("version", "app", "screen", "action")}
        log.info("registry %s %s/%s by %s: version %s", change["action"], change["app"],
                 change["screen"], actor or "system", change["version"][:12])
        if self.on_change is not None:
            self.on_change(public)
        return public


def _stored_screen(content: dict) -> tuple[str, Screen, dict[str, bytes]]:
    """(kind, screen, files) of a screen as its history stores it; ValidationErrors on
    ``$.content`` when it is not one."""
    try:
        screen = msgspec.convert(content["screen"], Screen)
        kind = content["kind"]
        files = {rel: base64.b64decode(data, validate=True)
                 for rel, data in content["files"].items()}
    except (KeyError, TypeError, ValueError, AttributeError, msgspec.ValidationError) as exc:
        raise ValidationErrors([ValidationError(
            "$.content", f"not a stored screen version: {exc}")]) from None
    if kind not in ("state", "interrupt"):
        raise ValidationErrors([ValidationError("$.content.kind",
                                                f"{kind!r}: state or interrupt")])
    return kind, screen, files


def _find_screen(app: App, screen_key: str) -> tuple[str | None, Screen | None]:
    """(state or interrupt, the screen) of ``app``'s ``screen_key``; (None, None) if none."""
    if screen_key in app.states:
        return "state", app.states[screen_key]
    if screen_key in app.interrupts:
        return "interrupt", app.interrupts[screen_key]
    return None, None


def _saved(version: str, app_key: str, screen_key: str, kind: str, screen: Screen,
           files: dict[str, bytes], old_kind: str | None, old: Screen | None,
           before_content: dict | None) -> dict:
    """The change a save or restore of a screen made, as `RegistryStore._record` takes it."""
    return {"version": version, "app": app_key, "screen": screen_key,
            "action": "update" if old is not None else "create",
            "content": screen_content(app_key, kind, screen, files),
            "before_content": before_content,
            "before": None if old is None else {"kind": old_kind, **msgspec.to_builtins(old)},
            "after": {"kind": kind, **msgspec.to_builtins(screen)}}


def _with_screen(app: App, screen_key: str, kind: str, screen: Screen) -> App:
    """``app`` with ``screen`` as its state or interrupt ``screen_key`` (replacing either)."""
    states, interrupts = dict(app.states), dict(app.interrupts)
    states.pop(screen_key, None)
    interrupts.pop(screen_key, None)
    (states if kind == "state" else interrupts)[screen_key] = screen
    return msgspec.structs.replace(app, states=states, interrupts=interrupts)


def screen_content(app_key: str, kind: str, screen: Screen, files: dict[str, bytes]) -> dict:
    """A screen as a version in its history: the app, state or interrupt, its JSON, and
    every file it names (crops, screenshot), base64."""
    return {"app": app_key, "kind": kind, "screen": msgspec.to_builtins(screen),
            "files": {rel: base64.b64encode(data).decode() for rel, data in sorted(files.items())}}


def _request_problem(problem: ValidationError, screen_key: str) -> ValidationError:
    """A save_app problem (``<file>:<line>: $.states.x.validation_regions[1].coordinates``)
    as the request's field (``$.regions[1].coordinates``) when it is in the edited screen."""
    m = re.search(r"\$\.(?:states|interrupts)\.(\w+)(.*)$", problem.where)
    if m is None or m.group(1) != screen_key:
        return problem
    path = m.group(2).replace(".validation_regions", ".regions")
    path = re.sub(r"\.regions\[(\d+)\]\.reference$", r".regions[\1].coordinates", path)
    return ValidationError("$" + (path or ""), problem.reason)


def frame_from_b64(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("$.frame.png_b64", "not valid base64") from None


