"""Request and response types of the control endpoint, as msgspec Structs.

Owns what an operator may send (`ActionRequest` and the strict `ControlAction` union: unknown
fields and out-of-range values are rejected, with the JSON path of the field) and the shapes
of the responses, which `openapi` turns into the published schema. Actions map one to one
onto `protocol.messages` actions (same tags, same fields) but the lock operations
(acquire/release) are not offered to operators.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType

from actors.node.device.keycodes import key_code
from protocol.errors import ValidationError, VariableError, split_msgspec_error
from protocol.names import printable, whole
from protocol.messages import MAX_KEY_REPEAT, MAX_SWIPE_POINTS

if TYPE_CHECKING:
    from aiohttp import web

MAX_BODY_BYTES = 1024 * 1024
# Deeper JSON is refused before anything walks it: msgspec, json and every recursive walk of
# a dict[str, Any] (sequence checks, orjson, to_builtins) would hit Python's recursion limit.
MAX_JSON_DEPTH = 64
# SQLite's largest INTEGER: a bigger Python int raises OverflowError inside the query.
SQLITE_INT_MAX = 2**63 - 1

RowId = Annotated[int, Meta(ge=1, le=SQLITE_INT_MAX, description="database id")]

Coordinate = Annotated[int, Meta(ge=0, le=100_000, description="screen pixel")]
# A direct action is answered within the hub's command deadline (30 s), and a gesture lasts
# what it says on a phone (the agent plays it in real time, as `input swipe` does on real
# hardware): a longer one left its caller unanswered and queued every later action of the
# phone behind it (a fuzzed 600 s swipe held both demo phones for 10 minutes). Longer holds
# belong in a sequence, which no caller waits on (sequences/load.py allows 600 s).
MAX_GESTURE_MS = 10_000
DurationMs = Annotated[int, Meta(ge=1, le=MAX_GESTURE_MS, description=(
    f"milliseconds, at most {MAX_GESTURE_MS} (the action is answered within the command "
    "deadline; longer holds go in a sequence)"))]
PackageName = Annotated[str, Meta(pattern=whole(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+"),
                                  max_length=255, description="Android package, e.g. com.example.app")]
ActivityName = Annotated[str, Meta(pattern=whole(r"\.?[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*"),
                                   max_length=255, description="activity class, e.g. .MainActivity")]
SwipePath = Annotated[list[tuple[Coordinate, Coordinate]],
                     Meta(min_length=2, max_length=MAX_SWIPE_POINTS,
                          description="points [x, y] the finger passes through, in order, "
                                      "spread evenly over duration_ms")]
KeyValue = Annotated[Union[Annotated[int, Meta(ge=0, le=10_000)], Annotated[str, Meta(min_length=1, max_length=64)]],
                     Meta(description="Android keycode number or name (HOME, KEYCODE_BACK, ...)")]


class _ControlAction(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    """Base of the operator action union; the wire form has ``"type": "<tag>"``."""


class TapAction(_ControlAction, tag="tap", frozen=True):
    x: Coordinate
    y: Coordinate


class LongTapAction(_ControlAction, tag="long_tap", frozen=True):
    x: Coordinate
    y: Coordinate
    duration_ms: DurationMs = 800


class SwipeAction(_ControlAction, tag="swipe", frozen=True):
    """From (x1, y1) to (x2, y2) in a straight line, or along ``path``: then x1..y2 may be
    left out (they are the path's first and last points, and must be if given)."""

    x1: Coordinate | UnsetType = UNSET
    y1: Coordinate | UnsetType = UNSET
    x2: Coordinate | UnsetType = UNSET
    y2: Coordinate | UnsetType = UNSET
    duration_ms: DurationMs = 300
    path: SwipePath | UnsetType = UNSET


class TextAction(_ControlAction, tag="text", frozen=True):
    """``text`` is typed as is; ``template``, when given, is what the operator wrote
    (variables, spintax) and ``text`` its value for this phone: a recording keeps the
    template, so playback resolves it per phone (issue 21.5). It must parse."""

    text: Annotated[str, Meta(min_length=1, max_length=10_000)]
    template: Annotated[str, Meta(min_length=1, max_length=10_000)] | UnsetType = UNSET


class KeyAction(_ControlAction, tag="key", frozen=True):
    key: KeyValue
    repeat: Annotated[int, msgspec.Meta(ge=1, le=MAX_KEY_REPEAT)] = 1


class LaunchAppAction(_ControlAction, tag="launch_app", frozen=True):
    package: PackageName
    activity: ActivityName | None = None


class StopAppAction(_ControlAction, tag="stop_app", frozen=True):
    package: PackageName


class ScreenshotAction(_ControlAction, tag="screenshot", frozen=True):
    pass


ControlAction = Union[TapAction, LongTapAction, SwipeAction, TextAction, KeyAction,
                      LaunchAppAction, StopAppAction, ScreenshotAction]


class ActionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /api/actions: run one action on every phone a scope selects."""

    scope: Annotated[str, Meta(min_length=1, max_length=10_000,
                               description="phone:all | phone:SERIAL_OR_TAG[,..] | phone:all-a,b | "
                                           "phone:client:NAME | node:NAME[,..] (spec 15.2; an "
                                           "account: scope is a 400)")]
    action: ControlAction
    execution_id: Annotated[str, Meta(min_length=1, max_length=200)] | None = None


# --- responses (documentation; handlers pass the hub's dicts through) -------------------------


class ActionResult(msgspec.Struct):
    """One phone's outcome; the hub may add fields (e.g. a screenshot reference)."""

    status: Literal["ok", "locked", "error", "gone"]
    error: str | None = None


class ActionsResponse(msgspec.Struct):
    results: dict[str, ActionResult]


class PhonePause(msgspec.Struct):
    """The coordinator paused the phone (e.g. reason recovery_failures): new work is
    refused until POST /api/phones/{serial}/resume."""
    reason: str
    since: str
    detail: dict[str, Any]


class Phone(msgspec.Struct):
    """One phone. ``io``: the path its actions take, "agent" (a resident scrcpy server:
    touches and keys over its control socket, screenshots from its video stream) or "shell"
    (one `input`/`screencap` program per action), with ``io_reason`` saying why when shell
    (no server jar on its node, Android too old, the agent died and restarts); null when its
    node does not say (a node older than the agent)."""

    serial: str
    node: str
    state: Literal["online", "paused", "offline", "failed"]
    lock_holder: str | None
    active_app: str | None
    active_account: dict[str, Any]
    last_screen: str | None
    tags: list[str]
    screen_ts: float | None
    paused: PhonePause | None = None
    io: Literal["agent", "shell"] | None = None
    io_reason: str | None = None


class PhonesResponse(msgspec.Struct):
    phones: list[Phone]


class NodeHealth(msgspec.Struct):
    """A node's latest own measurement (every 5 s; actors.metrics.health)."""

    cpu_pct: float
    mem_used: int
    mem_total: int
    disk_used: int  # the disk of the node's data folder
    disk_total: int
    adb_ok: bool  # its adb server answered
    adb_rtt_ms: float | None
    at: str  # ISO 8601, UTC


class Node(msgspec.Struct):
    name: str
    state: Literal["up", "down"]
    last_heartbeat: float
    phones: int  # its phones now: online, paused or failed (not offline)
    health: NodeHealth | None = None  # null until the node's first report


class NodesResponse(msgspec.Struct):
    nodes: list[Node]


class UnknownScreen(msgspec.Struct):
    """One queued frame that no registered screen matched (deduplicated across phones)."""

    id: str
    url: str
    node: str
    serials: list[str]
    seen: int
    status: str
    phash: str
    app: str | None = None
    previous_screen: str | None = None
    last_action: dict | None = None
    registry_version: str | None = None
    width: int | None = None
    height: int | None = None


class UnknownScreensResponse(msgspec.Struct):
    unknown_screens: list[UnknownScreen]


class HubEvent(msgspec.Struct):
    """One SSE ``data:`` payload; the SSE ``event:`` line repeats ``event``."""

    event: str
    ts: float
    node: str | None
    serial: str | None
    data: dict[str, Any]


class LoopLag(msgspec.Struct):
    """How late the coordinator's event loop ran (a stall delays every request and event)."""

    max: float             # largest lag since start, ms
    recent_max: float      # largest lag within the last window_s seconds, ms
    window_s: float
    stalls: int            # samples later than stall_ms
    stall_ms: float


class Health(msgspec.Struct):
    ok: bool
    loop_lag_ms: LoopLag | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error response. Extra members say where the problem is."""

    error: str
    field: str | None = None     # JSON path of a bad field ($.action.x) or query parameter
    line: int | None = None      # bad JSON: 1-based line and column
    column: int | None = None
    offset: int | None = None    # bad scope: 0-based offset into scope
    scope: str | None = None
    serial: str | None = None    # unknown phone
    problems: list[dict[str, str]] | None = None  # invalid sequence: every {where, reason}


class RequestError(ValidationError):
    """A request body was rejected; ``body`` is the JSON error response to send."""

    def __init__(self, where: str, reason: str, **extra: Any) -> None:
        super().__init__(where, reason)
        self.body: dict[str, Any] = {"error": str(self), **extra}


_INTEGER = re.compile(r"-?[0-9]{1,40}")


@dataclass(frozen=True)
class IntParam:
    """An integer path or query parameter and its bounds: every route parses its integer
    parameters with `parse` and documents them with `openapi`, so what is checked and what
    is published are one definition (ids default to SQLite's 1..2^63-1)."""

    name: str
    location: Literal["path", "query"] = "path"
    minimum: int = 1
    maximum: int = SQLITE_INT_MAX
    default: int | None = None
    description: str = ""

    def parse(self, request: "web.Request") -> int:
        """The parameter's value; `RequestError` naming it (``field``) when it is missing,
        not a decimal integer, or out of bounds."""
        source = request.match_info if self.location == "path" else request.query
        raw = source.get(self.name)
        if raw is None and self.default is not None:
            return self.default
        where = f"{self.location} parameter {self.name}"
        expected = f"expected an integer {self.minimum}..{self.maximum}"
        if raw is None:
            raise RequestError(where, f"required: {expected}", field=self.name)
        if not _INTEGER.fullmatch(raw) or not self.minimum <= int(raw) <= self.maximum:
            raise RequestError(where, f"{expected}, got {raw!r}", field=self.name)
        return int(raw)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        schema: dict[str, Any] = {"type": "integer", "minimum": self.minimum,
                                  "maximum": self.maximum}
        if self.default is not None:
            schema["default"] = self.default
        out = {"name": self.name, "in": self.location, "required": self.location == "path",
               "schema": schema}
        if self.description:
            out["description"] = self.description
        return out


THUMB_WIDTH = IntParam("w", "query", 16, 2000,
                       description="thumbnail width in pixels; omit for the full PNG frame")
EXECUTIONS_LIMIT = IntParam("limit", "query", 1, 1000, default=50)


T = TypeVar("T")
_DECODERS: dict[type, msgspec.json.Decoder] = {}
# A JSON string (escapes included): its brackets are text, not nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """`RequestError` when ``body`` nests arrays and objects deeper than ``limit``."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return  # cannot be deeper: the common case costs two counts
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > limit:
                raise RequestError("request body", f"JSON nested deeper than {limit} levels",
                                   field="$")
        else:
            depth -= 1


def decode_request(body: bytes, kind: type[T], what: str = "a JSON object") -> T:
    """Decode and validate a request body as ``kind``; `RequestError` names the JSON line and
    column of a syntax error, the JSON path of a bad field, or a nesting too deep."""
    if not body.strip():
        raise RequestError("request body", f"empty: expected {what}", field="$")
    check_json_depth(body)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        path, reason = split_msgspec_error(str(exc))
        raise RequestError(path, reason, field=path) from None
    except msgspec.DecodeError as exc:
        raise _syntax_error(body, str(exc)) from None


def decode_action_request(body: bytes) -> ActionRequest:
    """A POST /api/actions body (see `decode_request`), its key names checked too."""
    request = decode_request(body, ActionRequest, "a JSON object with scope and action")
    if isinstance(request.action, KeyAction):
        try:
            key_code(request.action.key)
        except ValueError as exc:
            raise RequestError("$.action.key", str(exc), field="$.action.key") from None
    if isinstance(request.action, SwipeAction):
        request = msgspec.structs.replace(request, action=_complete_swipe(request.action))
    if isinstance(request.action, TextAction) and request.action.template is not UNSET:
        from sequences.spintax import parse  # a recording must not keep a broken template
        try:
            parse(request.action.template)
        except VariableError as exc:
            error = RequestError("$.action.template", f"offset {exc.offset}: {exc.reason}",
                                 field="$.action.template", offset=exc.offset)
            error.body["reason"] = exc.reason
            raise error from None
    return request


def _complete_swipe(swipe: SwipeAction) -> SwipeAction:
    """Both forms of a swipe with x1..y2 filled in; the path's ends and x1..y2 agree."""
    ends = {"x1": swipe.x1, "y1": swipe.y1, "x2": swipe.x2, "y2": swipe.y2}
    if swipe.path is UNSET:
        for name, value in ends.items():
            if value is UNSET:
                where = f"$.action.{name}"
                raise RequestError(where, "required (or give a path)", field=where)
        return swipe
    (px1, py1), (px2, py2) = swipe.path[0], swipe.path[-1]
    implied = {"x1": px1, "y1": py1, "x2": px2, "y2": py2}
    for name, value in ends.items():
        if value is not UNSET and value != implied[name]:
            where = f"$.action.{name}"
            raise RequestError(where, f"{value} is not the path's end ({implied[name]}); "
                               "leave x1..y2 out or match the path", field=where)
    return msgspec.structs.replace(swipe, **implied)


class RecordStart(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/record/start: record what is sent to the scope's first phone."""

    scope: str
    # The recording's file is <app>/<name>.json: checked here, before the scope is resolved.
    name: Annotated[str, Meta(pattern=whole("[a-z0-9_]{1,64}"),
                              description="1-64 of a-z, 0-9 and _")]
    app: Annotated[str, Meta(pattern=whole("[a-z0-9_]{1,64}"))] | None = None


class RecordStop(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/record/stop: write the recording as a sequence file."""

    recording_id: str


class RunRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/runs: start a sequence on every phone (or account) of a scope."""

    sequence: Annotated[Union[Annotated[str, Meta(min_length=1, max_length=200)], dict[str, Any]],
                        Meta(description="library name (clipshare/post_clip) or an inline "
                                         "sequence object")]
    scope: Annotated[str, Meta(min_length=1, max_length=10_000,
                               description="phone:all | phone:SERIAL[,..] | node:NAME[,..] | "
                                           "account:platform.number@phone")]
    variables: dict[printable(64, 1, "custom variable name"), str] | None = None


class RunExecutionStart(msgspec.Struct):
    """One target's execution as the run starts (pending until its node reports)."""

    execution_id: str
    status: Literal["pending", "locked", "failed"]
    account: str | None = None
    error: str | None = None


class RunStarted(msgspec.Struct):
    run_id: str
    sequence: str
    executions: dict[str, RunExecutionStart]


class ExecutionStep(msgspec.Struct):
    """One played step: path is steps[3], steps[5].then[0] or switch[2]."""

    index: int | None
    path: str | None
    type: str | None
    status: str | None  # running | success | failed | skipped
    screen: str | None
    start_time: str | None
    end_time: str | None
    error: str | None
    screenshot: str | None  # URL of the failure screenshot


class Execution(msgspec.Struct):
    execution_id: str
    run_id: str | None
    serial: str | None
    sequence: str | None
    account: str | None
    status: str  # pending | running | paused | completed | failed | cancelled | locked
    error: str | None
    reason: str | None
    current_step: int | None
    start_time: str | None
    end_time: str | None
    steps: list[ExecutionStep]


class RunStatus(msgspec.Struct):
    run_id: str
    sequence: str | None
    status: Literal["running", "completed", "failed"]
    executions: list[Execution]


class ScheduleView(msgspec.Struct):
    """A schedule as listed (the request's fields, defaults left out) and where it stands."""

    id: str
    sequence: str
    target: str
    type: str
    # completed: fires no more and none of its jobs is queued or running; failed: firing
    # or planning it raised (``error`` says why; its events have the ``error`` event).
    status: Literal["pending", "active", "paused", "completed", "cancelled", "failed"]
    next_fire: str | None      # UTC ISO time of the next occurrence, None: nothing more
    last_occurrence: str | None
    fired: int
    jobs: dict[str, int]       # job status -> count
    error: str | None = None
    # The clients it belongs to (its creator's; its target means their phones); absent: a
    # super user's (every phone).
    clients: list[int] | None = None


class SchedulesResponse(msgspec.Struct):
    schedules: list[ScheduleView]


class ScheduleEvent(msgspec.Struct):
    """One thing the scheduler did: fired, misfire, queued, dispatched, locked,
    dispatch_failed, finished, retry, skipped, cancelled, error (the schedule failed)."""

    id: int
    at: str
    schedule_id: str | None
    job_id: str | None
    serial: str | None
    kind: str
    reason: str | None
    detail: dict[str, Any]
    execution_id: str | None = None


class ScheduleEventsResponse(msgspec.Struct):
    events: list[ScheduleEvent]


class ExecutionsResponse(msgspec.Struct):
    """Executions, newest first (their steps left out); ``next_before``: the ``before`` of
    the next page, None when this is the last."""

    executions: list[dict[str, Any]]
    next_before: str | None = None


def _syntax_error(body: bytes, fallback: str) -> RequestError:
    """Locate a JSON syntax error as line/column (msgspec reports only a byte offset)."""
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        return RequestError(f"request body: line {exc.lineno} column {exc.colno}",
                            f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno)
    except UnicodeDecodeError as exc:
        return RequestError(f"request body: byte {exc.start}", "invalid JSON: not UTF-8 text",
                            offset=exc.start)
    return RequestError("request body", f"invalid JSON: {fallback}", field="$")
