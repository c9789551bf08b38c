"""The sequence data model (spec 12.1.2): a named list of steps played on one phone.

A sequence file (``sequences/library/<app>/<name>.json``) is a ``Sequence``; its steps are a
tagged union on ``type``. Texts may hold variables and spintax (``sequences.variables``):
the coordinator resolves them per phone before the steps travel to the node, so what a node
plays is plain data with no template left in it. Taps name either coordinates or a registry
action (``"action": "feed.go_to_profile"``: the screen's action box centre, scaled to the
phone). Screens are registry labels: ``clipshare/feed``, ``clipshare/interrupt:rate_us``.
The one exception to "no template left": ``${read.NAME}``, a value a read step of the same
execution took off the screen, stays as written until the node plays the step.

``sequences.load`` checks meaning (screens and actions that exist, variables that parse)
and reports every problem with file, step path (``steps[3].then[0]``) and field.
"""

from __future__ import annotations

from typing import Union

import msgspec


class _Step(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type",
            omit_defaults=True):
    """Common to every step: an optional label for logs and the web console."""

    label: str | None = None


class TapStep(_Step, tag="tap", frozen=True):
    """Tap at (x, y) in the phone's pixels, or at a registry action: ``screen.action``
    (a state of the sequence's app) or ``app/screen.action``."""

    x: int | None = None
    y: int | None = None
    action: str | None = None


class LongTapStep(_Step, tag="long_tap", frozen=True):
    x: int | None = None
    y: int | None = None
    action: str | None = None
    duration_ms: int = 800


class SwipeStep(_Step, tag="swipe", frozen=True):
    """Swipe from (x1, y1) to (x2, y2); with ``path`` through those points (its first and
    last are (x1, y1) and (x2, y2)), as a console drag is recorded."""

    x1: int = 0
    y1: int = 0
    x2: int = 0
    y2: int = 0
    duration_ms: int = 300
    path: list[tuple[int, int]] | None = None


class TypeStep(_Step, tag="type", frozen=True):
    """Type text (variables and spintax resolved per phone first).

    ``clear``: empty the text field ``field`` (a registry action on it, e.g.
    ``login.username_field``) first, and type only once it reads empty: tap it, MOVE_END,
    DELs, read it back (``uiautomator dump``, else OCR of the action's box), in a few
    rounds that each clear popups first; a field that will not empty fails the step
    (``field_not_empty``). A DEL burst alone can be cut short by a popup that takes the
    focus, and the text then lands after what was left."""

    text: str = ""
    clear: bool = False
    field: str | None = None


class KeyStep(_Step, tag="key", frozen=True):
    """Press ``key`` ``repeat`` times in one go (e.g. DEL x30 clears a field)."""

    key: str = ""
    repeat: int = 1


class WaitForScreenStep(_Step, tag="wait_for_screen", frozen=True):
    """Poll until the phone shows ``screen`` (interrupts cleared meanwhile) or time runs out."""

    screen: str = ""
    timeout_s: float = 10.0


class GoToStep(_Step, tag="go_to", frozen=True):
    """Get to the state ``screen`` from whatever screen of its app the phone shows: the
    shortest route of registry actions (``registry.navigation``), taken one action at a time
    and planned again from wherever each one really led (popups cleared on the way). Fails
    naming the path tried when no route is left, after ``2 x`` the app's states in actions,
    or after ``timeout_s``."""

    screen: str = ""
    timeout_s: float = 60.0


class ExpectScreenStep(_Step, tag="expect_screen", frozen=True):
    """The phone must show ``screen`` now (after the usual settle): else the step fails."""

    screen: str = ""


class LaunchAppStep(_Step, tag="launch_app", frozen=True):
    """Launch a registry app (by key) or a package."""

    app: str | None = None
    package: str | None = None


class SwitchAccountStep(_Step, tag="switch_account", frozen=True):
    """Make ``account`` (``platform.account_number``) the active one on its app."""

    account: str = ""


class SleepStep(_Step, tag="sleep", frozen=True):
    """Sleep ``seconds``, or a random time in [min_s, max_s]."""

    seconds: float | None = None
    min_s: float | None = None
    max_s: float | None = None


class EnsureAppStep(_Step, tag="ensure_app", frozen=True):
    """The phone must have ``app`` (a library app: its registry name or package) at
    ``version`` (a version name or code). Played by the coordinator before the phone's run
    starts (actors.coordinator.apps: the library's version is installed where the phone has
    another, downgrades included; a failed install fails the execution); top-level steps
    only. The node is sent a no-op in its place."""

    app: str = ""      # both required: the loader refuses an empty one, naming it
    version: str = ""


class IfScreenStep(_Step, tag="if_screen", frozen=True):
    """If the phone shows ``screen`` now, play ``then``, else ``otherwise``."""

    screen: str = ""
    then: list["Step"] = msgspec.field(default_factory=list)
    otherwise: list["Step"] = msgspec.field(default_factory=list)


# --- reading the screen into data (issue 21); never produced by the recorder ---------------

# What record_metric may record: of the account (no ``post``), or of a post.
ACCOUNT_METRICS = ("followers", "following", "posts")
POST_METRICS = ("views", "likes", "comments", "shares", "saves")


class ReadTextStep(_Step, tag="read_text", frozen=True):
    """OCR (recognition only) of one line of text into the execution's read variable
    ``into`` (``${read.NAME}`` in later steps). Where: ``region``, a read region (or
    validation region) of a registry state, ``screen.region`` or ``app/screen.region``
    (scaled to the phone like actions; the phone must show that screen), or ``box``
    [x1, y1, x2, y2] in the phone's pixels: exactly one of the two."""

    into: str = ""
    region: str | None = None
    box: tuple[int, int, int, int] | None = None
    locale: str = "en"


class ReadNumberStep(_Step, tag="read_number", frozen=True):
    """Like read_text, then the text is parsed to a whole number by
    ``sequences.numbers.parse_count`` in ``locale`` (``1.2K``, ``3,4 M``, ``12.5万``); a text
    that is no count fails the step (reason ``not_a_number``)."""

    into: str = ""
    region: str | None = None
    box: tuple[int, int, int, int] | None = None
    locale: str = "en"


class RecordMetricStep(_Step, tag="record_metric", frozen=True):
    """Record ``metric`` = ``value`` (a template giving a whole number at play time, normally
    ``${read.NAME}``) for the execution's account, or with ``post`` for a post: ``latest``
    (the account's latest post) or a template giving the app's post id. The node sends a
    ``metric_recorded`` event; a value that is no whole number fails the step
    (``not_a_number``)."""

    metric: str = ""
    value: str = ""
    post: str | None = None


class RecordPostStep(_Step, tag="record_post", frozen=True):
    """The execution posted: the caption is what the earlier ``type`` step labelled
    ``caption_step`` typed (resolved), its hashtags the ``#words`` in it; ``media`` and
    ``platform_post_id`` are optional templates. The node sends ``post_recorded``; an
    execution that fails before reaching this step sends it with status ``failed``."""

    caption_step: str = ""
    media: str | None = None
    platform_post_id: str | None = None


class ReadMessagesStep(_Step, tag="read_messages", frozen=True):
    """On a conversation screen: OCR the partner's name in ``partner_region`` and the message
    lines in ``body_region`` (text detection on that crop; a line left of the body's middle is
    theirs, right of it ours, top to bottom). Regions as read_text's. The node sends
    ``messages_read``."""

    partner_region: str = ""
    body_region: str = ""
    locale: str = "en"


Step = Union[TapStep, LongTapStep, SwipeStep, TypeStep, KeyStep, WaitForScreenStep, GoToStep,
             ExpectScreenStep, LaunchAppStep, SwitchAccountStep, SleepStep, IfScreenStep,
             EnsureAppStep, ReadTextStep, ReadNumberStep, RecordMetricStep, RecordPostStep,
             ReadMessagesStep]

STEP_TYPES = ("tap", "long_tap", "swipe", "type", "key", "wait_for_screen", "go_to",
              "expect_screen", "launch_app", "switch_account", "sleep", "if_screen", "ensure_app",
              "read_text", "read_number", "record_metric", "record_post", "read_messages")


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Tiered retry of spec 12.3.2 for a failing step: ``immediate`` attempts after
    ``immediate_delay_s``, then ``short`` attempts after ``short_delay_s`` (time for adb to
    reconnect), then a device check (gone: pause and wait; present: the execution fails)."""

    immediate: int = 2
    immediate_delay_s: float = 2.0
    short: int = 2
    short_delay_s: float = 10.0


class Sequence(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One sequence file."""

    name: str
    steps: list[Step]
    description: str = ""
    app: str | None = None            # registry app key, made active before the steps
    account: str | None = None        # "platform.account_number" or a ${...} selector
    recovery_prompt: str = ""
    retry: RetryPolicy = RetryPolicy()
    version: int = 1
    # The version (name or code) of ``app`` the sequence was made for: a run refuses to
    # start on a phone with another installed (issue 20.3; None: any version).
    requires_app_version: str | None = None

