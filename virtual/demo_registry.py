"""The demo screen registry, generated from the virtual phones' own screens.

Owns the demo registry's content and how it is produced: a small hand-written table naming,
per launcher / ClipShare screen and per popup, the elements that identify it (by the virtual
app JSON's element ids, or the app bar / dialog parts that ``virtual/ui.py`` draws), the
actions on it, and its description; the routes that drive a ``PhoneUI`` to each of those
screens; and writing ``registry/apps`` (JSON, one reference crop per region, one full
reference screenshot per screen) through ``registry.load.save_app``.

Coordinates are never typed in here: they come from the app model (``virtual/apps/*.json``)
and from ``virtual/ui.py``'s app bar and dialog geometry, so the registry follows the virtual
apps when they change. Regenerate with::

    PYTHONPATH=. python3 -m virtual.demo_registry [--out registry/apps]

The output is deterministic (fixed clock, seed, account and feed position; PNGs encoded the
same way every time): ``tests/unit/test_demo_registry.py`` fails while the committed data and
this generator disagree.
"""

from __future__ import annotations

import argparse
import calendar
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from registry.model import GLOBAL_APP, App, Box, ReadRegion, Region, Screen, ScreenAction
from virtual.appmodel import LAUNCHER_PACKAGE, REF_HEIGHT, REF_WIDTH, AppSpec, Element
from virtual.ui import (
    APP_BAR,
    DIALOG_BOX,
    DIALOG_BUTTONS_X,
    DIALOG_BUTTONS_Y,
    KEYCODE_APP_SWITCH,
    PhoneUI,
    load_apps,
)

log = logging.getLogger(__name__)

CLIPSHARE_PACKAGE = "com.phonefarm.clipshare"
# Registry app key -> the package whose screens it describes (global: the system dialogs).
APP_PACKAGES: dict[str, str | None] = {"launcher": LAUNCHER_PACKAGE, "clipshare": CLIPSHARE_PACKAGE,
                                       GLOBAL_APP: None}
SCREEN_SIZE = (REF_WIDTH, REF_HEIGHT)
# Reference frames show this status-bar clock (09:41 UTC); the regions never cover it.
FIXED_TIME = float(calendar.timegm((2026, 1, 1, 9, 41, 0)))
DEFAULT_ACCOUNT = "clip_creator"

# Pseudo element ids for parts that ui.py draws rather than the app JSON.
APP_BAR_TITLE = "@app_bar"  # a screen's "title" in the app bar under the status bar
DIALOG_TITLE = "@dialog_title"
DIALOG_BODY = "@dialog_body"
DIALOG_BUTTONS = "@dialog_buttons"  # the whole button row of a dialog

# Same boxes ui._layout_popup draws the title and body text into.
_DIALOG_PARTS: dict[str, Box] = {
    DIALOG_TITLE: (DIALOG_BOX[0] + 50, DIALOG_BOX[1] + 50, DIALOG_BOX[2] - 50, DIALOG_BOX[1] + 180),
    DIALOG_BODY: (DIALOG_BOX[0] + 50, DIALOG_BOX[1] + 200, DIALOG_BOX[2] - 50, DIALOG_BUTTONS_Y[0] - 30),
    DIALOG_BUTTONS: (DIALOG_BUTTONS_X[0], DIALOG_BUTTONS_Y[0], DIALOG_BUTTONS_X[1], DIALOG_BUTTONS_Y[1]),
}


@dataclass(frozen=True)
class RegionSpec:
    """A validation region: the union box of ``parts`` (element ids or pseudo ids)."""

    name: str
    parts: tuple[str, ...]
    # Background kept around the parts (negative: cut off them), reference px. A box ending
    # exactly on an edge (a button's, the app bar's) turns a 1-2 px shift into a strip of
    # another colour along that whole edge; with a margin the edge stays inside the region
    # and a shift only moves it a little, with an inset it stays outside.
    margin: int = 0
    # Set: the region is also read by OCR and must say this (used once, to show the feature).
    expected_text: str | None = None
    # A read region (registry.model.ReadRegion): where a sequence's read_text / read_number /
    # read_messages step reads (a count, a name, the messages); never matched, no crop.
    read: bool = False


@dataclass(frozen=True)
class ActionSpec:
    """A state's action on one element; ``linked_state`` is where it leads in the same app;
    ``navigation`` False: it does more than move (go_to never takes it, registry.model)."""

    name: str
    element: str
    linked_state: str | None = None
    action_type: str = "tap"
    navigation: bool = True


@dataclass(frozen=True)
class StateSpec:
    """One registered state: the virtual screen it is, what identifies it, what acts on it."""

    app: str
    screen: str
    description: str
    regions: tuple[RegionSpec, ...]
    actions: tuple[ActionSpec, ...] = ()
    # Account health signal when a run meets this screen (registry.model's ``health``).
    health: str | None = None


@dataclass(frozen=True)
class InterruptSpec:
    """One registered interrupt: a virtual popup, identified inside its dialog only.

    Every button becomes an action (named after its text); ``handler_button`` is the one that
    just closes the dialog. ``shown_over`` is the state its reference screenshot shows behind
    the dialog. A challenge (``health`` "challenge") has no handler and no actions: nothing
    may clear it, a run that meets it stops.
    """

    app: str
    popup: str
    description: str
    regions: tuple[RegionSpec, ...]
    handler_button: str | None
    shown_over: str
    health: str | None = None


# Margin for filled elements (buttons, bars), see RegionSpec.margin.
_EDGE = 20
# The dialog's button row: a smaller margin, so the region stays clear of the dialog's
# rounded corners (the backdrop shows there, and it is whatever screen is behind).
_DIALOG_EDGE = 12
# The app bar's title, inset: the bar is a different colour from the content under it.
_TITLE = RegionSpec("title", (APP_BAR_TITLE,), margin=-8)
# Inside the dialog only, so they look the same whatever screen is dimmed behind it.
_DIALOG_TITLE = RegionSpec("title", (DIALOG_TITLE,))
_DIALOG_BUTTONS = RegionSpec("buttons", (DIALOG_BUTTONS,), margin=_DIALOG_EDGE)
_NAV_BAR = RegionSpec("nav_bar", ("nav_home", "nav_upload", "nav_profile"), margin=_EDGE)


def _read(name: str, *elements: str) -> RegionSpec:
    """A read region on elements (a count, a name, a conversation's body)."""
    return RegionSpec(name, elements, read=True)

# Identifying regions: headers, fixed buttons and the nav bar, never feed content, the status
# bar, typed text or anything showing the account (they change between runs and accounts).
STATES: tuple[StateSpec, ...] = (
    StateSpec("launcher", "home",
              "Launcher home screen: the 'Home' heading over the grid of installed apps.",
              # Only the heading: the grid changes whenever an app is installed.
              (RegionSpec("heading", ("greeting",)),)),
    StateSpec("launcher", "recents",
              "Recent apps overview (APP_SWITCH key): cards of recently used apps and a Home button.",
              (_TITLE, RegionSpec("home_button", ("recents_home",), margin=_EDGE)),
              (ActionSpec("go_home", "recents_home", "home"),)),
    StateSpec("clipshare", "login",
              "ClipShare login form, shown when no account is signed in.",
              (RegionSpec("logo", ("logo",)), RegionSpec("subtitle", ("subtitle",)),
               RegionSpec("login_button", ("login",), margin=_EDGE)),
              (ActionSpec("username_field", "username"), ActionSpec("password_field", "password"),
               # Wrong credentials leave the form up under the login_failed interrupt.
               ActionSpec("log_in", "login", "feed", navigation=False)),
              health="login"),
    StateSpec("clipshare", "feed",
              "ClipShare video feed: one video at a time, swipe up for the next; bottom nav bar.",
              # The title is what tells the feed from the profile, which has the same nav bar.
              (_TITLE, RegionSpec("hint", ("hint",)), _NAV_BAR),
              (ActionSpec("next_video", "video", "feed", "swipe_up"),
               ActionSpec("previous_video", "video", "feed", "swipe_down"),
               ActionSpec("video_options", "video", None, "long_tap"),
               ActionSpec("go_to_upload", "nav_upload", "upload"),
               ActionSpec("go_to_profile", "nav_profile", "profile"),
               ActionSpec("go_to_inbox", "inbox", "inbox"))),
    StateSpec("clipshare", "profile",
              "ClipShare profile of the signed-in account: followers, following and posts counts, "
              "the latest post, messages, switch account, settings.",
              (_TITLE, RegionSpec("buttons", ("switch_account", "settings"), margin=_EDGE),
               _NAV_BAR, _read("followers", "followers"), _read("following", "following"),
               _read("posts", "posts")),
              (ActionSpec("switch_account", "switch_account", "account_switcher"),
               ActionSpec("open_settings", "settings", "settings"),
               ActionSpec("open_latest_post", "latest_post", "post"),
               ActionSpec("open_messages", "messages", "inbox"),
               ActionSpec("go_to_feed", "nav_home", "feed"),
               ActionSpec("go_to_upload", "nav_upload", "upload"))),
    StateSpec("clipshare", "post",
              "ClipShare post detail of the account's latest post: caption, views, likes, comments.",
              (_TITLE, RegionSpec("comments_label", ("comments_label",)),
               RegionSpec("back_button", ("back",), margin=_EDGE),
               _read("views", "views"), _read("likes", "likes"), _read("comments", "comments")),
              (ActionSpec("back", "back", "profile"),)),
    StateSpec("clipshare", "inbox",
              "ClipShare messages inbox: the account's conversations, newest first.",
              (_TITLE, RegionSpec("heading", ("heading",)), RegionSpec("back_button", ("back",), margin=_EDGE)),
              (ActionSpec("open_conversation_0", "chat_0", "conversation"),
               ActionSpec("open_conversation_1", "chat_1", "conversation"),
               ActionSpec("open_conversation_2", "chat_2", "conversation"),
               # Back to wherever the inbox was opened from: the profile's Messages or the
               # feed's Inbox; go_to re-plans when it was the feed.
               ActionSpec("back", "back", "profile"))),
    StateSpec("clipshare", "conversation",
              "ClipShare conversation: the partner's name at the top, their messages on the left, "
              "ours on the right, a reply field.",
              (_TITLE, RegionSpec("buttons", ("back", "send"), margin=_EDGE),
               _read("partner", "partner"),
               _read("body", "message_0", "message_1", "message_2", "message_3", "message_4")),
              (ActionSpec("back", "back", "inbox"), ActionSpec("reply_field", "reply"))),
    StateSpec("clipshare", "account_switcher",
              "ClipShare account switcher: one button per saved account, or log in to another one.",
              (_TITLE, RegionSpec("add_account", ("add_account",))),
              (ActionSpec("use_account_0", "account_0", "profile", navigation=False),
               ActionSpec("use_account_1", "account_1", "profile", navigation=False),
               ActionSpec("use_account_2", "account_2", "profile", navigation=False),
               ActionSpec("add_account", "add_account", "login"))),
    StateSpec("clipshare", "upload",
              "ClipShare new post: pick one of three clips, write a caption, post.",
              (_TITLE, RegionSpec("pick_hint", ("pick_hint",)),
               RegionSpec("post_button", ("post",), margin=_EDGE)),
              (ActionSpec("pick_clip_1", "clip_1"), ActionSpec("pick_clip_2", "clip_2"),
               ActionSpec("pick_clip_3", "clip_3"), ActionSpec("caption_field", "caption"),
               ActionSpec("post", "post", "profile", navigation=False),
               # Back to wherever upload was opened from: the feed's Upload (its usual way
               # in) or the profile's; go_to re-plans when it was the profile.
               ActionSpec("cancel", "cancel", "feed"))),
    StateSpec("clipshare", "settings",
              "ClipShare settings: log out, or back to the profile.",
              (_TITLE, RegionSpec("buttons", ("logout", "back"), margin=_EDGE)),
              (ActionSpec("log_out", "logout", "login"), ActionSpec("back", "back", "profile"))),
)

INTERRUPTS: tuple[InterruptSpec, ...] = (
    InterruptSpec("clipshare", "update_available",
                  "ClipShare 'Update available' dialog (may appear when the feed opens); not cancelable.",
                  (_DIALOG_TITLE, _DIALOG_BUTTONS),
                  "Dismiss", "clipshare/feed"),
    InterruptSpec("clipshare", "rate_us",
                  "ClipShare 'Enjoying ClipShare?' rating prompt (random, any ClipShare screen).",
                  (_DIALOG_TITLE, _DIALOG_BUTTONS),
                  "Not now", "clipshare/feed"),
    InterruptSpec("clipshare", "login_failed",
                  "ClipShare 'Login failed' dialog after wrong credentials on the login form.",
                  (_DIALOG_TITLE, _DIALOG_BUTTONS),
                  "OK", "clipshare/login"),
    InterruptSpec("clipshare", "verify_identity",
                  "ClipShare 'Confirm it's you' identity challenge (only when a test tells the virtual "
                  "phone: vphone popup verify_identity). Never dismissed: a run that meets it stops.",
                  # Body and button: the title "Confirm it's you" scored 0.83 on a 720x1600
                  # phone (its thin apostrophe), below the pixel threshold.
                  (RegionSpec("body_and_buttons", (DIALOG_BODY, DIALOG_BUTTONS), margin=_DIALOG_EDGE),),
                  None, "clipshare/feed", health="challenge"),
    InterruptSpec("clipshare", "video_options",
                  "ClipShare 'Video options' dialog (long tap on a video).",
                  (_DIALOG_TITLE, _DIALOG_BUTTONS),
                  "Save", "clipshare/feed"),
    InterruptSpec(GLOBAL_APP, "system_not_responding",
                  "Android 'app isn't responding' dialog, over any app.",
                  # The title names the foreground app, so the body identifies the dialog
                  # instead; with the buttons in the same region, because one line of text in
                  # a box of plain panel is too little to compare on a phone of another size.
                  (RegionSpec("body_and_buttons", (DIALOG_BODY, DIALOG_BUTTONS), margin=_DIALOG_EDGE),),
                  "Wait", "clipshare/feed"),
    InterruptSpec(GLOBAL_APP, "low_battery",
                  "Android 'Battery low' warning, over any app.",
                  # The registry's one OCR region: the title is read as text, not only compared.
                  (RegionSpec("title", (DIALOG_TITLE,), expected_text="Battery low"),
                   _DIALOG_BUTTONS),
                  "OK", "launcher/home"),
)


# --------------------------------------------------------------------------- driving a phone


def new_phone(width: int = REF_WIDTH, height: int = REF_HEIGHT, *, clock: Callable[[], float] | None = None,
              apps: tuple[str, ...] = ("demo",)) -> PhoneUI:
    """A virtual phone on its home screen: seeded, no random popups, fixed clock by default."""
    return PhoneUI(load_apps(list(apps)), width=width, height=height, seed=0,
                   clock=clock or (lambda: FIXED_TIME), random_popups=False)


@functools.lru_cache(maxsize=1)
def _specs() -> dict[str, AppSpec]:
    """The virtual apps by package (immutable, so parsed once)."""
    return {spec.package: spec for spec in load_apps(["demo"])}


def _element(spec: AppSpec, screen: str, element_id: str) -> Element:
    for el in spec.screens[screen].elements:
        if el.id == element_id:
            return el
    raise KeyError(f"{spec.source}: screens.{screen} has no element with id {element_id!r}")


def tap_element(ui: PhoneUI, element_id: str) -> None:
    """Tap the centre of an element of the foreground screen, scaled to the phone's size."""
    state = ui.describe()
    spec = _specs()[state["package"]]
    el = _element(spec, state["screen"], element_id)
    ui.tap(round((el.x + el.w / 2) * ui.width / REF_WIDTH), round((el.y + el.h / 2) * ui.height / REF_HEIGHT))


def log_in(ui: PhoneUI, account: str = DEFAULT_ACCOUNT) -> None:
    """From ClipShare's login form: type an account's credentials and tap Log in."""
    password = next(a.password for a in _specs()[CLIPSHARE_PACKAGE].accounts if a.username == account)
    tap_element(ui, "username")
    ui.text(account)
    tap_element(ui, "password")
    ui.text(password)
    tap_element(ui, "login")


def _expect(ui: PhoneUI, package: str, screen: str) -> None:
    got = ui.describe()
    if (got["package"], got["screen"]) != (package, screen) or got["popup"] is not None:
        raise RuntimeError(f"route to {package}/{screen} ended on {got['package']}/{got['screen']}"
                           f" popup={got['popup']}: the virtual app changed, update virtual/demo_registry.py")


def go_to(ui: PhoneUI, label: str, *, account: str = DEFAULT_ACCOUNT) -> None:
    """Drive a fresh phone (on its home screen) to a registered state, e.g. ``clipshare/feed``.

    Goes through the UI as a user would (taps on elements, keys), logging in as ``account``
    where the screen needs a signed-in user; raises if it does not end where it should.
    """
    app, screen = label.split("/")
    if app == "launcher":
        if screen == "recents":
            ui.start_app(CLIPSHARE_PACKAGE)  # so the overview has a card, as it usually does
            ui.key(KEYCODE_APP_SWITCH)
        _expect(ui, LAUNCHER_PACKAGE, screen)
        return
    if app != "clipshare":
        raise KeyError(f"no route to {label!r}")
    ui.start_app(CLIPSHARE_PACKAGE)
    if screen != "login":
        log_in(ui, account)
        _expect(ui, CLIPSHARE_PACKAGE, "feed")
    if screen in ("profile", "account_switcher", "settings", "post", "inbox", "conversation"):
        tap_element(ui, "nav_profile")
    if screen == "account_switcher":
        tap_element(ui, "switch_account")
    elif screen == "settings":
        tap_element(ui, "settings")
    elif screen == "upload":
        tap_element(ui, "nav_upload")
    elif screen == "post":
        tap_element(ui, "latest_post")
    elif screen in ("inbox", "conversation"):
        tap_element(ui, "messages")
        if screen == "conversation":
            tap_element(ui, "chat_0")
    _expect(ui, CLIPSHARE_PACKAGE, screen)


def state_labels() -> list[str]:
    """Every registered state as ``app/screen``."""
    return [f"{s.app}/{s.screen}" for s in STATES]


def interrupt_labels() -> list[str]:
    """Every registered interrupt as ``app/interrupt:name``."""
    return [f"{i.app}/interrupt:{i.popup}" for i in INTERRUPTS]


# --------------------------------------------------------------------------- building the registry


def _union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _part_box(spec: AppSpec | None, screen: str | None, part: str) -> Box:
    if part == APP_BAR_TITLE:
        return APP_BAR
    if part in _DIALOG_PARTS:
        return _DIALOG_PARTS[part]
    assert spec is not None and screen is not None, f"element {part!r} outside a screen"
    el = _element(spec, screen, part)
    return (el.x, el.y, el.x + el.w, el.y + el.h)


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless, maximum compression, no alpha (frames are opaque): committed data stays small."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a PNG")
    return buf.tobytes()


def _box(spec: AppSpec | None, screen: str | None, r: RegionSpec) -> Box:
    x1, y1, x2, y2 = _union([_part_box(spec, screen, p) for p in r.parts])
    m = r.margin
    return (max(0, x1 - m), max(0, y1 - m), min(REF_WIDTH, x2 + m), min(REF_HEIGHT, y2 + m))


def _regions(app: str, key: str, specs: list[RegionSpec], frame: np.ndarray, spec: AppSpec | None,
             screen: str | None, files: dict[str, bytes]) -> list[Region]:
    out = []
    for r in specs:
        if r.read:
            continue
        box = _box(spec, screen, r)
        ref = f"{app}/{key}.{r.name}.png"
        files[ref] = encode_png(frame[box[1]:box[3], box[0]:box[2]])
        out.append(Region(name=r.name, coordinates=box, reference=ref, ocr_enabled=r.expected_text is not None,
                          expected_text=r.expected_text))
    return out


def _read_regions(specs: tuple[RegionSpec, ...], spec: AppSpec | None, screen: str | None) -> list[ReadRegion]:
    return [ReadRegion(name=r.name, coordinates=_box(spec, screen, r)) for r in specs if r.read]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def build() -> dict[str, tuple[App, dict[str, bytes]]]:
    """Render every registered screen and return, per registry app key, its App and its files."""
    specs = _specs()
    apps: dict[str, App] = {key: App(package=pkg, screen_size=SCREEN_SIZE) for key, pkg in APP_PACKAGES.items()}
    files: dict[str, dict[str, bytes]] = {key: {} for key in APP_PACKAGES}
    for s in STATES:
        ui = new_phone()
        go_to(ui, f"{s.app}/{s.screen}")
        frame = ui.frame_rgba()
        spec = specs[APP_PACKAGES[s.app] or ""]
        regions = _regions(s.app, s.screen, list(s.regions), frame, spec, s.screen, files[s.app])
        actions = [ScreenAction(name=a.name, coordinates=_part_box(spec, s.screen, a.element),
                                action_type=a.action_type, linked_state=a.linked_state,  # type: ignore[arg-type]
                                navigation=a.navigation)
                   for a in s.actions]
        shot = f"{s.app}/{s.screen}.png"
        files[s.app][shot] = encode_png(frame)
        apps[s.app].states[s.screen] = Screen(name=s.screen, description=s.description, validation_regions=regions,
                                              actions=actions, reference_screenshot=shot,
                                              read_regions=_read_regions(s.regions, spec, s.screen), health=s.health)
    popups = {name: popup for spec in specs.values() for name, popup in spec.popups.items()}
    for i in INTERRUPTS:
        popup = popups[i.popup]
        ui = new_phone()
        go_to(ui, i.shown_over)
        ui.force_popup(i.popup)
        frame = ui.frame_rgba()
        regions = _regions(i.app, i.popup, list(i.regions), frame, None, None, files[i.app])
        boxes = PhoneUI.popup_button_boxes(len(popup.buttons))
        actions = [ScreenAction(name=_slug(b.text), coordinates=box) for b, box in zip(popup.buttons, boxes)]
        handler = None
        if i.handler_button is None:
            actions = []  # a challenge: nothing to tap that a run could take for a way out
        else:
            handler = _slug(i.handler_button)
            if handler not in {a.name for a in actions}:
                raise KeyError(f"popup {i.popup} has no button {i.handler_button!r}")
        shot = f"{i.app}/{i.popup}.png"
        files[i.app][shot] = encode_png(frame)
        apps[i.app].interrupts[i.popup] = Screen(
            name=i.popup, description=i.description, validation_regions=regions, actions=actions,
            handler=None if handler == "dismiss" else handler, reference_screenshot=shot, health=i.health)
    return {key: (apps[key], files[key]) for key in APP_PACKAGES}


def write(out: Path) -> str:
    """Build the demo registry and save every app into ``out``; return the registry version."""
    from registry.load import save_app

    out.mkdir(parents=True, exist_ok=True)
    version = ""
    for key, (app, files) in build().items():
        version = save_app(out, key, app, files)
        # A renamed region or screen would otherwise leave its old PNG behind in the package.
        for stale in sorted((out / key).glob("*.png")):
            if f"{key}/{stale.name}" not in files:
                log.info("stale reference removed path=%s", stale)
                stale.unlink()
        log.info("app saved app=%s states=%d interrupts=%d files=%d", key, len(app.states), len(app.interrupts),
                 len(files))
    return version


def main(argv: list[str] | None = None) -> int:
    from actors.process import setup_logging
    from registry.load import DEMO_REGISTRY

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEMO_REGISTRY, help="registry folder (default: %(default)s)")
    args = parser.parse_args(argv)
    setup_logging("info")
    version = write(args.out)
    log.info("demo registry written out=%s version=%s", args.out, version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
