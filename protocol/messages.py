"""Every message that crosses the coordinator <-> node link, as typed msgspec Structs.

One envelope (`Envelope`) carries one body; the envelope's ``kind`` names the body type
(`KINDS` maps kind -> type). Bodies are plain (untagged) Structs: the kind lives once, in the
envelope. Device actions inside a `Command` are a tagged union on the field ``type``.

Adding a message: define a Struct with a ``KIND`` class variable, add it to `Body` and
`KINDS`. Unknown fields are ignored on decode (a newer peer may add optional fields); a
new required field or a changed meaning needs `PROTOCOL_VERSION` bumped. Building or
parsing the wire form is `protocol.codec`'s job, nobody else's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

import msgspec

from sequences.model import RetryPolicy, Step

PROTOCOL_VERSION = 1
MAX_KEY_REPEAT = 100  # presses of one key action (a 30-character field cleared with DEL)
MAX_SWIPE_POINTS = 64  # points of a swipe path (the driver plays one shell line of them)


# --- device actions (inside Command) ---------------------------------------------------


class _Action(msgspec.Struct, frozen=True, tag_field="type"):
    """Base of the action union; the wire form has ``"type": "<tag>"``."""


class Tap(_Action, tag="tap", frozen=True):
    x: int
    y: int


class LongTap(_Action, tag="long_tap", frozen=True):
    x: int
    y: int
    duration_ms: int = 800


class Swipe(_Action, tag="swipe", frozen=True):
    """A straight swipe from (x1, y1) to (x2, y2), or with ``path`` one that follows those
    points (the first and last are (x1, y1) and (x2, y2)). A node too old for ``path``
    ignores it and swipes straight."""

    x1: int
    y1: int
    x2: int
    y2: int
    duration_ms: int = 300
    path: list[tuple[int, int]] | msgspec.UnsetType = msgspec.UNSET  # left off the wire when unset


class Text(_Action, tag="text", frozen=True):
    text: str


class Key(_Action, tag="key", frozen=True):
    key: int | str  # Android keycode number or name such as "KEYCODE_BACK"
    repeat: int = 1  # presses in one `input keyevent` (clearing a field: DEL x30)


class LaunchApp(_Action, tag="launch_app", frozen=True):
    package: str
    activity: str | None = None


class StopApp(_Action, tag="stop_app", frozen=True):
    package: str


class Screenshot(_Action, tag="screenshot", frozen=True):
    pass


class Acquire(_Action, tag="acquire", frozen=True):
    execution_id: str
    lease_s: float


class Release(_Action, tag="release", frozen=True):
    execution_id: str


class Identify(_Action, tag="identify", frozen=True):
    """Capture a fresh frame and name its screen (interrupts cleared on the way), as playback
    does before a step; ``png``: the frame comes back too. Used by AI recovery."""

    png: bool = False


class DebugCrash(_Action, tag="debug_crash", frozen=True):
    """Test-only: makes the phone actor crash; nodes honour it only with --debug-actions."""


class MediaFile(msgspec.Struct, frozen=True):
    """A media file a run's texts named (``${content.media.*}``): the node copies it from its
    cache (sent like an APK: ApkHave/ApkPut by SHA-256) to ``path`` on the phone and has the
    media scanner index it, before the run's steps play (actors/node/media_push.py)."""

    sha256: str
    path: str   # on the phone, under /sdcard/DCIM/PhoneFarm/
    size: int


class RunSequence(_Action, tag="run_sequence", frozen=True):
    """Play a sequence on the phone (node side: ``actors/node/playback.py``). Its texts are
    resolved already (variables, spintax): the node plays plain data. The node answers at
    once (started, or why not) and reports progress as journaled execution events."""

    execution_id: str
    run_id: str
    sequence: str
    steps: list[Step]
    app: str | None = None                 # registry app key made active first
    package: str | None = None             # its package (launched if not in front)
    account: str | None = None             # "platform.account_number" made active first
    account_username: str | None = None    # what the app shows for that account
    switch_steps: list[Step] = []          # the app's switch-account steps for that account
    retry: RetryPolicy = RetryPolicy()
    lease_s: float = 3600.0
    resume_from: int = 0                   # first top-level step to play (crash recovery)
    # Crash recovery: the screen the last successful step left; the run resumes only if the
    # phone still shows it (else it fails cleanly: no step is played twice blindly).
    resume_screen: str | None = None
    # Set when the coordinator will try AI recovery (actors/coordinator/ai/recovery.py): a step failing on an
    # unknown screen or a screen timeout keeps the phone's lock for it instead of releasing.
    recovery_prompt: str | None = None
    # Media files put in the phone's gallery before the steps (the texts name their paths).
    media: list[MediaFile] = []
    # Sent again for a record still ``pending`` (its first send's answer was lost to a
    # coordinator crash): the node answers ok without playing when it has started this
    # execution already (a playback, or its execution_started in the journal).
    if_new: bool = False


class CancelRun(_Action, tag="cancel_run", frozen=True):
    """Stop a running execution after its current step; the lock is released."""

    execution_id: str


# --- apps (issue 20): the node's APK cache and installs (actors/node/installs.py) ----------

MAX_APK_CHUNK = 4 * 1024 * 1024  # bytes of one ApkPut (base64 on the wire: under 6 MB)


class ApkPut(_Action, tag="apk_put", frozen=True):
    """One chunk of an APK for the node's cache (the Command's serial is ""). Chunks come in
    order: ``offset`` is the bytes the node holds already; the ``last`` one makes the node
    check the whole file's size and SHA-256 and keep it as ``<sha256>.apk``, or drop it.
    Answered ok, or error with why (nothing kept)."""

    sha256: str
    size: int
    offset: int
    data: bytes
    last: bool = False


class ApkHave(_Action, tag="apk_have", frozen=True):
    """Which of these APKs (by SHA-256) the node's cache lacks: ok with {"missing": [...]}."""

    sha256s: list[str]


class ApkFileRef(msgspec.Struct, frozen=True):
    """One APK of an app version: a base (``split`` None) or a split, with the ABI or the
    density it is for (None: neither)."""

    sha256: str
    name: str
    size: int
    split: str | None = None
    abi: str | None = None
    density: str | None = None


class InstallApp(_Action, tag="install_app", frozen=True):
    """Install an app version on the Command's phone from the node's cache: the node takes
    the phone's lock as ``install:<install_id>``, picks the splits for the phone's ABI and
    density, installs them in one session and releases the lock. Answered at once (ok,
    locked, gone, missing_apk with {"missing": [...]}); the outcome is the durable event
    app_install_finished, progress the live app_install_progress."""

    install_id: str
    package: str
    version_code: int
    files: list[ApkFileRef]
    allow_downgrade: bool = False
    lease_s: float = 900.0


class UninstallApp(_Action, tag="uninstall_app", frozen=True):
    """Uninstall ``package`` from the Command's phone, under its lock like InstallApp."""

    install_id: str
    package: str
    lease_s: float = 300.0


Action = Union[Tap, LongTap, Swipe, Text, Key, LaunchApp, StopApp, Screenshot, Acquire, Release,
               DebugCrash, RunSequence, CancelRun, Identify, ApkPut, ApkHave, InstallApp,
               UninstallApp]


# --- bodies ----------------------------------------------------------------------------


class PhoneInfo(msgspec.Struct, frozen=True):
    serial: str
    state: str  # e.g. "device", "offline", "unauthorized", "paused"
    model: str | None = None
    # The phone actor's full view (lock holder, app, account, screen…) for the directory.
    # Optional keys a newer node adds: "io" ("agent": a resident scrcpy server drives the
    # phone, "shell": `input`/`screencap`) and "io_reason" (why shell); the same view rides
    # phone_up / phone_restarted events, and a "phone_io" event tells a change.
    detail: dict[str, Any] = {}


class Challenge(msgspec.Struct, frozen=True):
    """coordinator -> node, first message on every new connection."""

    KIND: ClassVar[str] = "challenge"
    nonce: str


class Hello(msgspec.Struct, frozen=True):
    """node -> coordinator, answer to Challenge. With ``nonce`` (the node's own challenge to
    the coordinator): proof = codec.link_proof(key, NODE_TO_COORDINATOR, challenge nonce,
    nonce, node), key = the node's key or the shared farm secret, and the Welcome must
    prove the same key back. Without (a node of the one-way handshake, shared secret only):
    proof = hex HMAC-SHA256(secret, challenge nonce + node)."""

    KIND: ClassVar[str] = "hello"
    node: str
    proof: str
    phones: list[PhoneInfo] = []
    last_acked_seq: int | None = None
    # The node's screen registry version (content hash; None: no registry): a node that
    # missed a push is sent the coordinator's registry when it (re)connects.
    registry_version: str | None = None
    nonce: str | None = None


class Welcome(msgspec.Struct, frozen=True):
    """coordinator -> node: hello accepted. last_seq = highest event seq the coordinator
    already holds for this node (the node may drop those from its journal)."""

    KIND: ClassVar[str] = "welcome"
    coordinator: str
    last_seq: int = 0
    # This coordinator takes EventBatch: the node may send its queued events several to a
    # message (an older coordinator leaves it False and gets one Event per message).
    event_batches: bool = False
    # The coordinator's proof (codec.link_proof, COORDINATOR_TO_NODE) when the Hello had a
    # nonce; a node that sent one accepts nothing from a coordinator whose proof is wrong.
    proof: str | None = None


class Refused(msgspec.Struct, frozen=True):
    """coordinator -> node: hello rejected; the coordinator closes the connection."""

    KIND: ClassVar[str] = "refused"
    reason: str


class Heartbeat(msgspec.Struct, frozen=True, omit_defaults=True):
    """Both ways, every second. From a node, ``sent_upto`` is the highest event seq it had
    sent on this connection before this heartbeat: the coordinator, reading it in order
    after those events, knows a missing one was lost on the way (Pair1 can drop a message)
    and asks for it at once instead of the node waiting for its ack timeout."""

    KIND: ClassVar[str] = "heartbeat"
    sent_upto: int | None = None


class Command(msgspec.Struct, frozen=True):
    """coordinator -> node. At-least-once; the node runs a command_id at most once."""

    KIND: ClassVar[str] = "command"
    command_id: str
    serial: str
    action: Action
    execution_id: str | None = None


# missing_apk: an InstallApp names an APK the node's cache lacks (data {"missing": [...]}).
CommandStatus = Literal["ok", "locked", "error", "gone", "missing_apk"]


class CommandResult(msgspec.Struct, frozen=True):
    """node -> coordinator, answer to Command (same command_id)."""

    KIND: ClassVar[str] = "command_result"
    command_id: str
    serial: str
    status: CommandStatus
    error: str | None = None
    data: dict[str, Any] = {}


class Event(msgspec.Struct, frozen=True):
    """node -> coordinator. Journaled on the node first; seq is per node, increasing."""

    KIND: ClassVar[str] = "event"
    seq: int
    event: str
    serial: str | None = None
    data: dict[str, Any] = {}


class EventBatch(msgspec.Struct, frozen=True):
    """node -> coordinator: journaled events with consecutive seqs, in order, in one message
    (only to a coordinator whose Welcome said ``event_batches``). Each is handled exactly
    as if it had come alone."""

    KIND: ClassVar[str] = "event_batch"
    events: list[Event]


class EventAck(msgspec.Struct, frozen=True):
    """coordinator -> node: every event with seq <= upto_seq is safely stored.
    ``resend_from``: an event arrived past a gap (the events between never came); the node
    sends again from this seq at once instead of waiting for its ack timeout (an older
    node ignores the field and re-sends on the timeout)."""

    KIND: ClassVar[str] = "event_ack"
    upto_seq: int
    resend_from: int | None = None


class LiveEvent(msgspec.Struct, frozen=True):
    """node -> coordinator: live-only news (thumbnails). Not journaled, never re-sent:
    a thumbnail missed while the link was down is replaced by the next one."""

    KIND: ClassVar[str] = "live_event"
    event: str
    serial: str | None = None
    data: dict[str, Any] = {}


class LiveWatch(msgspec.Struct, frozen=True):
    """coordinator -> node: some console page watches ``serial``: send its new frames as
    `LiveFrame`s, JPEG ``width`` pixels wide, at most ``fps`` a second, for ``lease_s``
    (the coordinator renews the lease while the page watches; a lost stop ends with it).
    ``width`` 0: nobody watches, stop now. An older node logs the unknown kind and ignores
    it (the console then keeps its thumbnails)."""

    KIND: ClassVar[str] = "live_watch"
    serial: str
    width: int
    fps: float = 10.0
    lease_s: float = 10.0


class LiveFrame(msgspec.Struct, frozen=True):
    """node -> coordinator: one new frame of a watched phone (never journaled, never re-sent:
    the next frame replaces a lost one). ``width`` x ``height``: the full frame's size."""

    KIND: ClassVar[str] = "live_frame"
    serial: str
    jpeg: bytes
    ts: float
    width: int
    height: int


class RegistryPush(msgspec.Struct, frozen=True):
    """coordinator -> node: one app of the coordinator's screen registry (one app per message,
    so a message stays far under the size limit). ``app_json`` is the app's JSON file byte for
    byte and ``files`` every file it names (registry-relative path -> bytes), so the node's
    registry hashes to the coordinator's ``version`` once it holds every app in ``apps``
    (the coordinator's app keys: the node drops any other app's JSON)."""

    KIND: ClassVar[str] = "registry_push"
    version: str
    app: str
    app_json: bytes
    files: dict[str, bytes] = {}
    apps: list[str] = []


class RegistryApplied(msgspec.Struct, frozen=True):
    """node -> coordinator, answer to RegistryPush: the node's registry version afterwards
    (its matcher uses it from the next frame on), or why the push was not applied."""

    KIND: ClassVar[str] = "registry_applied"
    app: str
    version: str
    error: str | None = None


Body = Union[Challenge, Hello, Welcome, Refused, Heartbeat, Command, CommandResult, Event,
             EventBatch, EventAck, LiveEvent, RegistryPush, RegistryApplied, LiveWatch, LiveFrame]

KINDS: dict[str, type] = {
    t.KIND: t
    for t in (Challenge, Hello, Welcome, Refused, Heartbeat, Command, CommandResult, Event,
              EventBatch, EventAck, LiveEvent, RegistryPush, RegistryApplied, LiveWatch,
              LiveFrame)
}


class Envelope(msgspec.Struct, frozen=True):
    """The one wire unit: ``{v, id, kind, src, dst, ts, body}``. ts is UTC epoch seconds."""

    v: int
    id: str
    kind: str
    src: str
    dst: str
    ts: float
    body: Body
