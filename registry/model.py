"""The screen registry's data model (spec 3.2, extended for matching).

A registry is a set of apps plus the ``global`` section; each app has states and interrupts;
each screen has validation regions (what identifies it) and actions (where to tap, and which
state that leads to). The extensions over spec 3.2 are all optional, so a spec-shaped file
still loads: per region a reference crop, ``expected_text`` and a ``threshold``; per app its
``package`` and the ``screen_size`` that every coordinate refers to (frames of other sizes
are scaled); per screen a ``reference_screenshot`` used by ``farm registry check``; per
action whether ``go_to`` may take it (``navigation``).

These are plain msgspec Structs: decoding checks types, ``registry.load`` checks meaning
(regions inside the screen, linked states that exist, files that exist) and reports every
problem with file and JSON path. Paths inside the model are relative to the JSON file's
folder, as written; ``registry.load`` resolves them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

GLOBAL_APP = "global"
DEFAULT_SCREEN_SIZE = (1080, 2400)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in the app's screen_size space, x2/y2 exclusive


class Region(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One validation region: a box that must look like its reference (and/or read its text)."""

    name: str
    coordinates: Box
    ocr_enabled: bool = False
    # Reference crop of exactly this box, a PNG path relative to the JSON file's folder.
    reference: str | None = None
    # What OCR must read here (compared normalized: case, whitespace, fuzzy ratio).
    expected_text: str | None = None
    # Minimum similarity in [0, 1]; None = the matcher's default for the kind of check.
    threshold: float | None = None


class ScreenAction(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A named place to act on a screen; ``linked_state`` is where it leads (None: stays/unknown).

    The actions with a ``linked_state`` are the app's map (``registry.navigation``). An action
    that does more than move between screens, more than reaching its linked state implies
    (posting, submitting a form with whatever it holds, switching the account), says
    ``navigation: false``: a sequence's ``go_to`` never takes it on its way somewhere.
    """

    name: str
    coordinates: Box
    action_type: Literal["tap", "long_tap", "swipe_up", "swipe_down", "swipe_left", "swipe_right"] = "tap"
    linked_state: str | None = None
    navigation: bool = True


class ReadRegion(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A box a sequence reads (``read_text``, ``read_number``, ``read_messages``: a count, a
    name, a message list). Never used to identify the screen: what it shows changes."""

    name: str
    coordinates: Box


# What a screen says about the account's health (issue 21): ``login`` a login screen (met
# mid-run: a forced re-login), ``challenge`` a verification/captcha screen (the execution
# stops; it is never cleared, solved or handed to AI recovery).
HEALTH_TAGS = ("login", "challenge")


class Screen(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A state or an interrupt: how to recognise it and what can be done on it."""

    name: str
    description: str = ""
    validation_regions: list[Region] = msgspec.field(default_factory=list)
    actions: list[ScreenAction] = msgspec.field(default_factory=list)
    # Interrupts only: the action that clears it when it appears on its own (default: the
    # action named "dismiss", else the first action).
    handler: str | None = None
    # A full frame of this screen (PNG, relative path) for `farm registry check`.
    reference_screenshot: str | None = None
    # Boxes sequences read (not matched); see ReadRegion.
    read_regions: list[ReadRegion] = msgspec.field(default_factory=list)
    # One of HEALTH_TAGS, checked by registry.load.
    health: str | None = None

    def read_region(self, name: str) -> "ReadRegion | Region | None":
        """The read region ``name``, else the validation region of that name."""
        return next((r for r in self.read_regions if r.name == name), None) \
            or next((r for r in self.validation_regions if r.name == name), None)

    def handler_action(self) -> ScreenAction | None:
        if self.handler is not None:
            return next((a for a in self.actions if a.name == self.handler), None)
        return next((a for a in self.actions if a.name == "dismiss"), self.actions[0] if self.actions else None)


class App(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One app's screens. ``package`` maps a phone's foreground package to this app."""

    package: str | None = None
    screen_size: tuple[int, int] = DEFAULT_SCREEN_SIZE
    states: dict[str, Screen] = msgspec.field(default_factory=dict)
    interrupts: dict[str, Screen] = msgspec.field(default_factory=dict)


class RegistryFile(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Spec 3.2's single-file form: ``{"apps": {"tiktok": {...}, "global": {...}}}``."""

    apps: dict[str, App]


ScreenKind = Literal["state", "interrupt"]


class ScreenRef(msgspec.Struct, frozen=True):
    """Names one screen: app key, kind and screen key (``clipshare/feed``)."""

    app: str
    kind: ScreenKind
    key: str

    def label(self) -> str:
        return f"{self.app}/{self.key}" if self.kind == "state" else f"{self.app}/interrupt:{self.key}"


class Registry(msgspec.Struct):
    """A loaded, validated registry: apps by key (``global`` among them), its folder and version.

    ``version`` is the content hash of every JSON and reference file (``registry.load``).
    """

    apps: dict[str, App]
    root: str = ""
    version: str = ""

    def app_for_package(self, package: str | None) -> str | None:
        if package is None:
            return None
        return next((key for key, app in self.apps.items() if app.package == package), None)

    def screen(self, ref: ScreenRef) -> Screen:
        app = self.apps[ref.app]
        return (app.states if ref.kind == "state" else app.interrupts)[ref.key]

    def screens(self) -> list[ScreenRef]:
        out = []
        for app_key, app in self.apps.items():
            out += [ScreenRef(app_key, "interrupt", k) for k in app.interrupts]
            out += [ScreenRef(app_key, "state", k) for k in app.states]
        return out
