"""Faults of the fault-and-scale harness (issue 22.2): what a fault is, fault scripts (TOML)
and seeded random scripts, the timeline of what happened, and the runner that injects the
faults into a running `HarnessFarm` and measures how long the farm takes to recover.

A fault script is a TOML file of ``[[fault]]`` tables::

    [[fault]]
    at = "30s"            # from the runner's start: "500ms", "30s", "2m", "1.5m", "1h" or seconds
    kind = "node_kill"    # see KINDS
    target = "rack1"      # a rack, a serial (slow) or left out (coordinator_kill, disk_full)
    for = "5s"            # how long the fault lasts (each kind has a default)

    [[fault]]
    at = "1m"
    kind = "loss"
    target = "rack2"
    for = "1m"
    params = { percent = 5 }

Every refusal (`ScriptError`) names the file, the line, the fault's number (1 = the first
``[[fault]]``) and the field, and `load_script` refuses the whole script: nothing runs.

The kinds and their fault primitives on the farm (tests/harness/farm.py):

- node_kill (rack): ``kill_node``; after ``for``: ``start_node``.
- coordinator_kill (no target): ``kill_coordinator``; after ``for``: ``start_coordinator``.
- adb_kill (rack): ``kill_adb`` (kill -9 of the rack's adb server); after ``for``:
  ``start_adb`` on the same port.
- partition (rack): ``partition(rack, True)``; after ``for``: ``partition(rack, False)``.
- loss (rack, params percent 1..100): ``loss(rack, percent)``; after ``for``: ``loss(rack, 0)``.
- delay (rack, params ms 0..5000 and jitter_ms 0..5000, each 0 by default, one of them above
  0): ``delay(rack, ms, jitter_ms)`` (the rack's delay proxy holds every chunk between its
  node and the coordinator ms + uniform(0, jitter_ms)); after ``for``: ``delay(rack, 0, 0)``.
- unplug_storm (rack, or none: any phone of the farm; params phones=10, repeat=1, every_s=10,
  seconds=3): ``repeat`` times, ``every_s`` apart, ``phones`` phones drawn (seeded) are
  unplugged for ``seconds`` (``vphone unplug``). Its length follows from those: no ``for``.
- slow (serial or rack, params ms; with a rack, params phones = how many of its phones,
  default all): ``vphone slow MS`` on each; after ``for``: ``vphone slow 0``.
- disk_full (no target): ``fill_disk`` (the coordinator's tmpfs); after ``for``: ``free_disk``.
  Needs a farm started with ``coordinator_tmpfs_mb``.
- clock_skew (rack, params seconds, non-zero): ``skew_clock(rack, seconds)``; after ``for``:
  ``skew_clock(rack, 0)``. Refused when the farm cannot skew a node's clock (`supported_kinds`).
"""

from __future__ import annotations

import datetime as _dt
import math
import random
import re
import sqlite3
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from actors.store.execution_records import utc_text

# --- what a fault is -----------------------------------------------------------------------


@dataclass
class Fault:
    """One fault to inject: ``at_s`` seconds after the runner starts, lasting ``duration_s``
    (an unplug storm's is derived from its params), on ``target`` (a rack, a serial or None),
    with the kind's ``params``. ``source`` says where it came from, for refusals: (file, line
    of its ``[[fault]]``, its number from 1); not part of equality."""

    at_s: float
    kind: str
    duration_s: float
    target: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source: tuple[str, int, int] | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """``loss rack2 percent=5 for 60s``: how the timeline and reports name it."""
        parts = [self.kind]
        if self.target is not None:
            parts.append(self.target)
        parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in sorted(self.params.items())]
        # A storm's length is its params' (a Fault built in code may carry any duration_s).
        length = (storm_length_s(self.params) if self.kind == "unplug_storm"
                  and {"repeat", "every_s", "seconds"} <= self.params.keys() else self.duration_s)
        parts.append(f"for {length:g}s")
        return " ".join(parts)


class ScriptError(ValueError):
    """A fault script (or a fault given to the runner) that is refused. ``file``, ``line``
    (1-based, None if unknown), ``index`` (the fault's number from 1, None for the whole
    script) and ``field`` (``at``, ``params.percent``, ...) say where; ``reason`` why."""

    def __init__(self, file: str, line: int | None, index: int | None, field_name: str | None,
                 reason: str) -> None:
        self.file, self.line, self.index, self.field, self.reason = (
            file, line, index, field_name, reason)
        where = file if not line else f"{file}:{line}"
        what = []
        if index is not None:
            what.append(f"fault {index}")
        if field_name is not None:
            what.append(f"field {field_name!r}")
        super().__init__(f"{where}: {', '.join(what) + ': ' if what else ''}{reason}")


# --- the kinds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: ``int`` or ``number`` (``seconds`` also takes "30s"), its
    bounds (inclusive), whether 0 is refused, and its default (None: required unless
    ``optional``)."""

    type: str
    low: float
    high: float
    default: float | None = None
    optional: bool = False
    nonzero: bool = False


@dataclass(frozen=True)
class Kind:
    """What a kind takes: its ``target`` (``rack``, ``rack?`` = a rack or none, ``none``,
    ``serial|rack``), its params, and its default length (None: derived, no ``for``)."""

    target: str
    params: dict[str, Param]
    default_for_s: float | None
    max_for_s: float = 3600.0


KINDS: dict[str, Kind] = {
    "node_kill": Kind("rack", {}, 5.0),
    "coordinator_kill": Kind("none", {}, 5.0),
    "adb_kill": Kind("rack", {}, 2.0),
    "partition": Kind("rack", {}, 30.0),
    "loss": Kind("rack", {"percent": Param("int", 1, 100)}, 60.0),
    # 5 s at most: the link calls a peer silent for 3 s dead (protocol/transport.py), so a
    # delay of seconds already acts as a short partition when it starts.
    "delay": Kind("rack", {"ms": Param("int", 0, 5000, default=0),
                           "jitter_ms": Param("int", 0, 5000, default=0)}, 60.0),
    "unplug_storm": Kind("rack?", {"phones": Param("int", 1, 10_000, default=10),
                                   "repeat": Param("int", 1, 1000, default=1),
                                   "every_s": Param("seconds", 0.1, 3600, default=10.0),
                                   "seconds": Param("seconds", 0.1, 3600, default=3.0)}, None),
    # 10 minutes at most: the virtual phone's own bound is loose; a longer hang is a dead phone.
    "slow": Kind("serial|rack", {"ms": Param("int", 1, 600_000),
                                 "phones": Param("int", 1, 10_000, optional=True)}, 30.0),
    "disk_full": Kind("none", {}, 20.0),
    "clock_skew": Kind("rack", {"seconds": Param("number", -86_400, 86_400, nonzero=True)},
                       60.0),
}

# Kinds that take the whole farm down (recovery is measured on every phone).
FARM_WIDE = frozenset({"coordinator_kill", "disk_full"})

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds of ``"500ms"``, ``"30s"``, ``"2m"``, ``"1.5m"``, ``"1h"`` or a number of
    seconds; ValueError saying what is accepted otherwise."""
    if isinstance(value, bool):  # a bool is an int to Python, never a duration
        raise ValueError(f"expected a duration such as \"30s\" or \"2m\", got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as \"30s\" or \"2m\", got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a duration of 0 s or more, got {value!r}")
    return seconds


def storm_length_s(params: dict[str, Any]) -> float:
    """An unplug storm's length: its last unplug starts ``(repeat - 1) * every_s`` in and
    lasts ``seconds``."""
    return (params["repeat"] - 1) * params["every_s"] + params["seconds"]


# --- fault scripts -------------------------------------------------------------------------

_FIELDS = ("at", "kind", "target", "for", "params")
_HEADER = re.compile(r"^\s*\[\[\s*fault\s*\]\]")
_TABLE = re.compile(r"^\s*\[")


class _Lines:
    """Where things are in a script's text, for refusals: the n-th ``[[fault]]`` header and
    a field's line inside that fault's block (found by scanning, as tomllib keeps no
    positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers = [i + 1 for i, line in enumerate(self.lines) if _HEADER.match(line)]

    def header(self, index: int) -> int | None:
        return self.headers[index - 1] if 0 < index <= len(self.headers) else None

    def key(self, name: str) -> int | None:
        """The line of a top-level key: ``name = ...`` before any table, else the first
        ``[name]`` / ``[[name]]`` header."""
        pattern = re.compile(rf"^\s*{re.escape(name)}\s*[=.]")
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(name)}\s*[\].]")
        in_tables = False
        for i, line in enumerate(self.lines):
            in_tables = in_tables or bool(_TABLE.match(line))
            if (not in_tables and pattern.match(line)) or header.match(line):
                return i + 1
        return None

    def field(self, index: int, name: str) -> int | None:
        """The line of field ``name`` (``for``, ``params.percent``) of fault ``index``, else
        the line of its ``params``, else its header."""
        start = self.header(index)
        if start is None:
            return None
        end = self.header(index + 1) or len(self.lines) + 1
        block = range(start, end - 1)  # 0-based indexes of the lines after the header
        top, _, sub = name.partition(".")
        candidates = [sub, top] if sub else [top]
        for key in candidates:
            pattern = re.compile(rf"(^|[{{,\s]){re.escape(key)}\s*=")
            in_params = False
            for i in block:
                line = self.lines[i].split("#", 1)[0]
                if _TABLE.match(line):
                    in_params = bool(re.match(r"^\s*\[\s*fault\s*\.\s*params\s*\]", line))
                    if key == "params" and in_params:
                        return i + 1
                    continue
                # A top-level field is not looked for inside [fault.params], nor a param
                # outside params' braces or table.
                if key == sub and not (in_params or "params" in line):
                    continue
                if key != sub and in_params:
                    continue
                if pattern.search(line):
                    return i + 1
        return start


def load_script(path: str | Path, *, racks: Iterable[str] | None = None,
                serials: Iterable[str] | None = None) -> list[Fault]:
    """The faults of the TOML script at ``path``, in order of ``at``. With ``racks`` (and
    ``serials``) the targets are checked against them too. Raises ScriptError naming the
    file, line, fault and field of the first problem."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(name, None, None, None, f"cannot read the script: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ScriptError(name, int(m.group(1)) if m else None, None, None,
                          f"not valid TOML: {exc}") from None
    lines = _Lines(text)
    for key in doc:
        if key != "fault":
            raise ScriptError(name, lines.key(key), None, key,
                              "unknown top-level key: a script holds [[fault]] tables only")
    raw = doc.get("fault")
    if raw is None or raw == []:
        raise ScriptError(name, None, None, "fault", "no [[fault]] table: nothing to inject")
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ScriptError(name, lines.key("fault"), None, "fault",
                          "must be an array of tables, written [[fault]]")
    rack_set = set(racks) if racks is not None else None
    serial_set = set(serials) if serials is not None else None
    faults = []
    for index, table in enumerate(raw, 1):
        def refuse(field_name: str | None, reason: str, index: int = index) -> ScriptError:
            line = lines.field(index, field_name) if field_name else lines.header(index)
            return ScriptError(name, line, index, field_name, reason)

        faults.append(_parse_fault(table, refuse, (name, lines.header(index) or 0, index),
                                   rack_set, serial_set))
    return sorted(faults, key=lambda f: f.at_s)


def _parse_fault(table: dict[str, Any], refuse: Callable[[str | None, str], ScriptError],
                 source: tuple[str, int, int], racks: set[str] | None,
                 serials: set[str] | None) -> Fault:
    for key in table:
        if key not in _FIELDS:
            raise refuse(key, f"unknown field (a fault takes {', '.join(_FIELDS)})")
    for key in ("at", "kind"):
        if key not in table:
            raise refuse(key, "required")
    kind_name = table["kind"]
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        raise refuse("kind", f"unknown kind {kind_name!r} (known: {', '.join(KINDS)})")
    kind = KINDS[kind_name]
    try:
        at_s = parse_duration(table["at"])
    except ValueError as exc:
        raise refuse("at", str(exc)) from None

    params = table.get("params", {})
    if not isinstance(params, dict):
        raise refuse("params", "must be a table, e.g. params = { percent = 5 }")
    values: dict[str, Any] = {}
    for key in params:
        if key not in kind.params:
            known = ", ".join(kind.params) or "none"
            raise refuse(f"params.{key}", f"{kind_name} takes no param {key!r} (its params: "
                                          f"{known})")
    for key, spec in kind.params.items():
        where = f"params.{key}"
        if key not in params:
            if spec.default is not None:
                values[key] = spec.default
            elif not spec.optional:
                raise refuse(where, f"{kind_name} needs params.{key}")
            continue
        values[key] = _param_value(params[key], spec, lambda reason, w=where: refuse(w, reason))

    _check_params(kind_name, values, refuse)

    target = table.get("target")
    if target is not None and (not isinstance(target, str) or not target):
        raise refuse("target", f"must be a non-empty text, got {target!r}")
    _check_target(kind_name, kind, target, values, lambda reason: refuse("target", reason),
                  racks, serials)

    if kind.default_for_s is None:
        if "for" in table:
            raise refuse("for", f"{kind_name} lasts as its params say (repeat, every_s, "
                                f"seconds): leave 'for' out")
        duration = storm_length_s(values)
    elif "for" in table:
        try:
            duration = parse_duration(table["for"])
        except ValueError as exc:
            raise refuse("for", str(exc)) from None
        if duration > kind.max_for_s:
            raise refuse("for", f"at most {kind.max_for_s:g} s, got {duration:g} s")
    else:
        duration = kind.default_for_s
    return Fault(at_s, kind_name, duration, target, values, source=source)


def _param_value(value: Any, spec: Param, refuse: Callable[[str], ScriptError]) -> float | int:
    if spec.type == "seconds":
        try:
            number: float | int = parse_duration(value)
        except ValueError as exc:
            raise refuse(str(exc)) from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise refuse(f"expected {'an integer' if spec.type == 'int' else 'a number'}, "
                     f"got {value!r}")
    elif spec.type == "int" and not isinstance(value, int):
        raise refuse(f"expected an integer, got {value!r}")
    else:
        number = value
    if not math.isfinite(number) or not spec.low <= number <= spec.high:
        raise refuse(f"expected {spec.low:g}..{spec.high:g}, got {value!r}")
    if spec.nonzero and number == 0:
        raise refuse("must not be 0")
    return number


def _check_params(kind_name: str, values: dict[str, Any],
                  refuse: Callable[[str | None, str], ScriptError]) -> None:
    """Rules between a kind's params (each param alone was checked already)."""
    if kind_name == "delay" and not (values.get("ms") or values.get("jitter_ms")):
        raise refuse("params.ms", "a delay needs params.ms or params.jitter_ms above 0")


def _check_target(kind_name: str, kind: Kind, target: str | None, params: dict[str, Any],
                  refuse: Callable[[str], ScriptError], racks: set[str] | None,
                  serials: set[str] | None) -> None:
    if kind.target == "none":
        if target is not None:
            raise refuse(f"{kind_name} takes no target (it hits the whole farm)")
        return
    if target is None:
        if kind.target == "rack?":
            return
        what = "a serial or a rack" if kind.target == "serial|rack" else "a rack"
        raise refuse(f"{kind_name} needs a target: {what}")
    if kind.target in ("rack", "rack?"):
        if racks is not None and target not in racks:
            raise refuse(f"no rack {target!r} (racks: {', '.join(sorted(racks))})")
        return
    # serial|rack
    is_rack = racks is not None and target in racks
    if not is_rack and serials is not None and target not in serials:
        raise refuse(f"no rack or phone {target!r} (racks: {', '.join(sorted(racks or ()))})")
    if "phones" in params and not is_rack and (racks is not None or serials is not None):
        raise refuse(f"params.phones goes with a rack target; {target!r} is a phone")


# --- seeded random scripts -----------------------------------------------------------------

# Seconds after a fault's end before the next one starts (plus up to 10 s drawn): room for
# the farm to recover (the target is under 10 s) and for the invariant check after it.
RECOVER_GAP_S = {"node_kill": 20.0, "coordinator_kill": 25.0, "adb_kill": 20.0,
                 "partition": 20.0, "loss": 20.0, "delay": 20.0, "unplug_storm": 20.0, "slow": 25.0,
                 "disk_full": 25.0, "clock_skew": 20.0}


def _random_shape(kind: str, rng: random.Random, racks: list[str]
                  ) -> tuple[str | None, float, dict[str, Any]]:
    """(target, duration, params) of a random fault of ``kind``, in the issue's sizes."""
    rack = rng.choice(racks)
    if kind == "node_kill":
        return rack, float(rng.randint(1, 8)), {}
    if kind == "coordinator_kill":
        return None, float(rng.randint(1, 8)), {}
    if kind == "adb_kill":
        return rack, float(rng.randint(1, 4)), {}
    if kind == "partition":
        return rack, float(rng.choice((10, 20, 30))), {}
    if kind == "loss":
        return rack, float(rng.choice((30, 45, 60))), {"percent": rng.choice((3, 5, 10))}
    if kind == "delay":
        return rack, float(rng.choice((30, 45, 60))), {"ms": rng.choice((20, 50, 100)),
                                                       "jitter_ms": rng.choice((50, 100, 200))}
    if kind == "unplug_storm":
        params = {"phones": 10, "repeat": rng.randint(2, 4),
                  "every_s": float(rng.randint(8, 15)), "seconds": float(rng.randint(2, 5))}
        return rng.choice((rack, None)), storm_length_s(params), params
    if kind == "slow":
        return rack, float(rng.choice((20, 30, 45))), {"ms": rng.choice((5000, 30_000)),
                                                       "phones": rng.randint(1, 3)}
    if kind == "disk_full":
        return None, float(rng.choice((15, 30))), {}
    if kind == "clock_skew":
        return rack, 60.0, {"seconds": rng.choice((-1, 1)) * rng.randint(120, 600)}
    raise ValueError(f"unknown kind {kind!r}")


def random_script(seed: int, racks: list[str], minutes: float, *,
                  kinds: Iterable[str] | None = None, warmup_s: float = 20.0,
                  settle_s: float = 30.0) -> list[Fault]:
    """A fault script drawn from ``seed`` (the same faults for the same arguments) for a run
    of ``minutes``: the first fault after ``warmup_s``, one at a time, each starting a
    recovery gap (`RECOVER_GAP_S` plus up to 10 s) after the previous one ended, the last
    one ended ``settle_s`` before the run ends. The kinds are drawn from a shuffled bag
    refilled when empty, so every kind comes once before any comes twice; over a long run
    (about 10 minutes per round of all ten) every kind is covered. ``kinds``: the kinds to
    draw (`supported_kinds` of the farm; default all)."""
    if not racks:
        raise ValueError("random_script needs at least one rack")
    chosen = sorted(set(kinds) if kinds is not None else KINDS)
    unknown = [k for k in chosen if k not in KINDS]
    if unknown or not chosen:
        raise ValueError(f"unknown kinds {unknown} (known: {', '.join(KINDS)})" if unknown
                         else "random_script needs at least one kind")
    rng = random.Random(seed)
    racks = sorted(racks)  # the same script whatever order the racks came in
    end = minutes * 60.0 - settle_s
    t = warmup_s
    bag: list[str] = []
    out: list[Fault] = []
    while True:
        if not bag:
            bag = chosen[:]
            rng.shuffle(bag)
        kind = bag.pop()
        target, duration, params = _random_shape(kind, rng, racks)
        if t + duration > end:
            break
        out.append(Fault(round(t, 1), kind, duration, target, params,
                         source=(f"<random seed {seed}>", 0, len(out) + 1)))
        t = round(t + duration + RECOVER_GAP_S[kind] + rng.uniform(0, 10), 1)
    return out


# --- the timeline --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One thing that happened: ``mono`` (time.monotonic) and ``wall`` (time.time) when it
    was added, its ``kind`` (``fault``, ``request``, ...), ``what`` in words, and fields."""

    mono: float
    wall: float
    kind: str
    what: str
    fields: dict[str, Any]

    def __str__(self) -> str:
        stamp = _dt.datetime.fromtimestamp(self.wall, _dt.timezone.utc).strftime(
            "%H:%M:%S.%f")[:-3]
        extra = " ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"{stamp} {self.kind:8} {self.what}{' ' + extra if extra else ''}"


@dataclass(frozen=True)
class Window:
    """A fault's active span in wall time: from its apply to the end of its undo (``end``
    None while it lasts). ``index`` is the fault's number in the runner's list, from 1."""

    index: int
    kind: str
    target: str | None
    start: float
    end: float | None
    affected: tuple[str, ...]

    def covers(self, wall: float, slack_s: float = 0.0) -> bool:
        return self.start - slack_s <= wall <= (self.end if self.end is not None
                                                else time.time()) + slack_s


class Timeline:
    """Owns the harness run's record of what happened, in order, shared by threads (the
    fault runner, the load, the health probe): faults applied and undone, requests made and
    their answers, notes. Reports use `around` to show what led to a violation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []

    def add(self, kind: str, what: str, **fields: Any) -> Entry:
        entry = Entry(time.monotonic(), time.time(), kind, what, fields)
        with self._lock:
            self._entries.append(entry)
        return entry

    def entries(self, kind: str | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self._entries if kind is None or e.kind == kind]

    def around(self, wall_time: float, seconds: float) -> list[Entry]:
        """The entries within ``seconds`` of ``wall_time`` (either side), in order."""
        with self._lock:
            return [e for e in self._entries if abs(e.wall - wall_time) <= seconds]

    def windows(self, kinds: Iterable[str] | None = None) -> list[Window]:
        """The faults' active spans, from the runner's ``fault`` entries (``phase`` start
        and end), of the given kinds (default all)."""
        wanted = set(kinds) if kinds is not None else None
        starts: dict[int, Entry] = {}
        ends: dict[int, float] = {}
        for e in self.entries("fault"):
            index = e.fields.get("index")
            if e.fields.get("phase") == "start":
                starts[index] = e
            elif e.fields.get("phase") == "end":
                ends[index] = e.wall
        return [Window(i, s.fields["fault"], s.fields.get("target"), s.wall, ends.get(i),
                       tuple(s.fields.get("affected", ())))
                for i, s in sorted(starts.items())
                if wanted is None or s.fields["fault"] in wanted]

    @staticmethod
    def format(entries: Iterable[Entry]) -> str:
        return "\n".join(str(e) for e in entries)


# --- running faults ------------------------------------------------------------------------


def rack_serials(farm: Any) -> dict[str, list[str]]:
    """Each rack's name with its phones' serials."""
    return {name: list(rack.serials) for name, rack in farm.racks.items()}


def supported_kinds(farm: Any) -> set[str]:
    """The kinds ``farm`` can inject: disk_full needs the coordinator on a tmpfs
    (``coordinator_tmpfs_mb``), clock_skew a farm whose ``skew_clock`` works (a farm that
    cannot skew a node's clock has no such method, or sets ``clock_skew_supported`` False),
    delay a farm with a ``delay`` method (the racks' delay proxies)."""
    kinds = set(KINDS)
    if not callable(getattr(farm, "delay", None)):
        kinds.discard("delay")
    if getattr(farm, "coordinator_tmpfs_mb", None) is None:
        kinds.discard("disk_full")
    if (not callable(getattr(farm, "skew_clock", None))
            or not getattr(farm, "clock_skew_supported", True)):
        kinds.discard("clock_skew")
    return kinds


_UNSUPPORTED = {
    "delay": "delay: this farm has no delay proxy on its racks' links (no delay method)",
    "disk_full": "disk_full needs the coordinator's data on a tmpfs: start the farm with "
                 "coordinator_tmpfs_mb",
    "clock_skew": "clock_skew: this farm cannot start a node with a skewed clock (no "
                  "libfaketime, and the node reads the real clock for its timestamps)",
}


def check_faults(faults: list[Fault], racks: dict[str, list[str]],
                 supported: set[str]) -> None:
    """Refuse (ScriptError) a fault this farm cannot take: an unsupported kind, a target
    that is not one of its racks or phones, or a kind's rules broken (for faults built in
    code rather than loaded)."""
    serials = {s for ss in racks.values() for s in ss}
    for number, fault in enumerate(faults, 1):
        file, line, index = fault.source or ("<faults>", 0, number)

        def refuse(field_name: str | None, reason: str) -> ScriptError:
            return ScriptError(file, line or None, index, field_name, reason)

        if fault.kind not in KINDS:
            raise refuse("kind", f"unknown kind {fault.kind!r} (known: {', '.join(KINDS)})")
        if fault.kind not in supported:
            raise refuse("kind", _UNSUPPORTED.get(fault.kind, f"{fault.kind}: not supported "
                                                               f"by this farm"))
        kind = KINDS[fault.kind]
        for key in fault.params:
            if key not in kind.params:
                raise refuse(f"params.{key}", f"{fault.kind} takes no param {key!r}")
        for key, spec in kind.params.items():
            if key not in fault.params and spec.default is None and not spec.optional:
                raise refuse(f"params.{key}", f"{fault.kind} needs params.{key}")
        _check_params(fault.kind, fault.params, refuse)
        _check_target(fault.kind, kind, fault.target, fault.params,
                      lambda reason: refuse("target", reason), set(racks), serials)
        if fault.at_s < 0 or fault.duration_s < 0:
            raise refuse("at" if fault.at_s < 0 else "for", "must not be negative")


class FaultRunner:
    """Owns injecting ``faults`` into a running farm at their times (seconds from `start`):
    a scheduling thread starts one worker thread per fault, which applies it, waits its
    length, undoes it (always, also on `stop` or an error), records each phase in the
    ``timeline``, then measures the recovery: the seconds from the moment the undo began
    (a restart's own time counts; for ``slow``, from when its phones answer at speed again,
    since `vphone slow 0` itself waits out the old delay) until
    every phone is online and each affected phone (the rack's, the storm's or slowed
    phones, every phone for a farm-wide fault) has completed an execution that ended after
    the fault did; None if that did not happen within ``recovery_timeout_s``.
    ``on_recovered(fault, seconds)`` is called after each measurement (the harness checks
    the invariants there); ``on_phones_back()`` once per fault when every phone is online
    again after it (`SteadyLoad.kick`: work is started then, so the measure is the farm's
    and not the load's period). Faults the farm cannot take are refused when it is built."""

    def __init__(self, farm: Any, faults: list[Fault], timeline: Timeline, *, seed: int = 0,
                 recovery_timeout_s: float = 120.0, poll_s: float = 0.5,
                 on_recovered: Callable[[Fault, float | None], None] | None = None,
                 on_phones_back: Callable[[], None] | None = None) -> None:
        self.farm = farm
        self.faults = sorted(faults, key=lambda f: f.at_s)
        self.timeline = timeline
        self.seed = seed
        self.recovery_timeout_s = recovery_timeout_s
        self.poll_s = poll_s
        self.on_recovered = on_recovered
        self.on_phones_back = on_phones_back
        self.racks = rack_serials(farm)
        check_faults(self.faults, self.racks, supported_kinds(farm))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._recoveries: list[tuple[int, Fault, float | None]] = []
        self._errors: list[tuple[Fault, str]] = []
        self._workers: list[threading.Thread] = []
        # index -> the phones each repeat of an unplug storm unplugs (`_affected`)
        self._draws: dict[int, list[list[str]]] = {}
        self._lifted: dict[int, tuple[float, float]] = {}  # when each fault was lifted
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    # --- public ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the clock (``at`` counts from now) and the scheduling thread."""
        if self._thread is not None:
            raise RuntimeError("FaultRunner.start: already started")
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._schedule, name="fault-runner",
                                        daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every fault was applied, undone and its recovery measured; True if
        all are done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(None if deadline is None else max(0, deadline - time.monotonic()))
        for worker in list(self._workers):
            worker.join(None if deadline is None else max(0, deadline - time.monotonic()))
        return self.done

    @property
    def done(self) -> bool:
        return (self._thread is not None and not self._thread.is_alive()
                and not any(w.is_alive() for w in self._workers))

    def stop(self, timeout: float = 60.0) -> None:
        """Start no more faults, undo the active ones now, stop measuring; wait for that."""
        self._stop.set()
        self.join(timeout)

    @property
    def recoveries(self) -> list[tuple[Fault, float | None]]:
        """(fault, recovery seconds or None) of each fault measured, in the script's order."""
        with self._lock:
            return [(f, s) for _, f, s in sorted(self._recoveries, key=lambda r: r[0])]

    @property
    def errors(self) -> list[tuple[Fault, str]]:
        """(fault, what failed) for each fault primitive that raised."""
        with self._lock:
            return list(self._errors)

    # --- threads -----------------------------------------------------------------------------

    def _schedule(self) -> None:
        for index, fault in enumerate(self.faults, 1):
            if self._stop.wait(max(0.0, self._t0 + fault.at_s - time.monotonic())):
                return
            worker = threading.Thread(target=self._run_one, args=(index, fault),
                                      name=f"fault-{index}-{fault.kind}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _run_one(self, index: int, fault: Fault) -> None:
        affected = self._affected(index, fault)
        common = {"index": index, "fault": fault.kind, "target": fault.target}
        self.timeline.add("fault", fault.describe(), phase="start",
                          affected=tuple(affected), **common)
        try:
            self._apply_and_undo(index, fault, affected)
        finally:
            self.timeline.add("fault", fault.describe(), phase="end", **common)
        # Recovery counts from the moment the fault was lifted (the undo began): a restart's
        # own time (a coordinator's start takes seconds) is part of the recovery.
        end_wall, end_mono = self._lifted.get(index, (time.time(), time.monotonic()))
        seconds = self._measure(index, fault, end_wall, end_mono, affected)
        with self._lock:
            self._recoveries.append((index, fault, seconds))
        self.timeline.add("fault", fault.describe(), phase="recovered",
                          seconds=None if seconds is None else round(seconds, 2), **common)
        if self.on_recovered is not None:
            try:
                self.on_recovered(fault, seconds)
            except Exception as exc:  # the callback's failure is reported, not a dead runner
                self._error(index, fault, "on_recovered", exc)

    def _affected(self, index: int, fault: Fault) -> list[str]:
        """The phones whose recovery counts: a storm's drawn phones (drawn here, seeded by
        the runner's seed and the fault's number, so a rerun unplugs the same phones)."""
        everyone = [s for ss in self.racks.values() for s in ss]
        if fault.kind in FARM_WIDE:
            return everyone
        if fault.kind == "unplug_storm":
            pool = self.racks[fault.target] if fault.target is not None else everyone
            rng = random.Random(f"{self.seed}:{index}")
            n = min(int(fault.params["phones"]), len(pool))
            # Every repeat draws anew; the affected phones are all that were drawn.
            draws = [sorted(rng.sample(pool, n)) for _ in range(int(fault.params["repeat"]))]
            self._draws[index] = draws
            return sorted({s for d in draws for s in d})
        if fault.kind == "slow":
            if fault.target in self.racks:
                pool = self.racks[fault.target]
                return pool[:int(fault.params.get("phones", len(pool)))]
            return [fault.target]
        return self.racks[fault.target]

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _error(self, index: int, fault: Fault, step: str, exc: BaseException) -> None:
        message = f"{step}: {type(exc).__name__}: {exc}"
        with self._lock:
            self._errors.append((fault, message))
        self.timeline.add("fault", fault.describe(), phase="error", index=index,
                          fault=fault.kind, target=fault.target, error=message)

    def _call(self, index: int, fault: Fault, step: str, fn: Callable[..., Any],
              *args: Any) -> bool:
        """``fn(*args)``; a failure is recorded (timeline and `errors`), never raised, so
        the undo still runs."""
        try:
            fn(*args)
            return True
        except Exception as exc:
            self._error(index, fault, step, exc)
            return False

    def _apply_and_undo(self, index: int, fault: Fault, affected: list[str]) -> None:
        farm, kind, rack, p = self.farm, fault.kind, fault.target, fault.params
        call = lambda step, fn, *args: self._call(index, fault, step, fn, *args)  # noqa: E731
        if kind == "unplug_storm":
            draws = self._draws[index]
            for n, serials in enumerate(draws):
                if self._stop.is_set():
                    return
                self.timeline.add("fault", f"unplug {len(serials)} phone(s) for "
                                           f"{p['seconds']:g}s", phase="step", index=index,
                                  fault=kind, repeat=n + 1, serials=tuple(serials))
                try:
                    refused = farm.unplug(serials, p["seconds"])
                except Exception as exc:
                    self._error(index, fault, "unplug", exc)
                else:
                    if refused:  # e.g. a phone still unplugged from the repeat before
                        self.timeline.add("fault", "unplug refused", phase="step",
                                          index=index, fault=kind, refused=refused)
                self._wait(p["every_s"] if n + 1 < len(draws) else p["seconds"])
            return
        apply_undo: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "node_kill": (lambda: farm.kill_node(rack), lambda: farm.start_node(rack)),
            "coordinator_kill": (farm.kill_coordinator, farm.start_coordinator),
            "adb_kill": (lambda: farm.kill_adb(rack), lambda: farm.start_adb(rack)),
            "partition": (lambda: farm.partition(rack, True),
                          lambda: farm.partition(rack, False)),
            "loss": (lambda: farm.loss(rack, p["percent"]), lambda: farm.loss(rack, 0)),
            "delay": (lambda: farm.delay(rack, p.get("ms", 0), p.get("jitter_ms", 0)),
                      lambda: farm.delay(rack, 0, 0)),
            "disk_full": (farm.fill_disk, farm.free_disk),
            "clock_skew": (lambda: farm.skew_clock(rack, p["seconds"]),
                           lambda: farm.skew_clock(rack, 0)),
        }
        if kind == "slow":
            applied = [s for s in affected if call(f"slow {s}", farm.slow, s, p["ms"])]
            try:
                self._wait(fault.duration_s)
            finally:
                # `vphone slow 0` itself waits out the old delay: the phones are slow until
                # it returns, so they are lifted together and the fault ends once all are.
                unslow = [threading.Thread(target=call, args=(f"unslow {s}", farm.slow, s, 0),
                                           name=f"unslow-{s}") for s in applied]
                for thread in unslow:
                    thread.start()
                for thread in unslow:
                    thread.join()
                self._lift(index)
            return
        apply, undo = apply_undo[kind]
        call("apply", apply)
        try:
            self._wait(fault.duration_s)
        finally:
            # Undone even if applying failed part way: a half-made partition must not stay.
            self._lift(index)
            call("undo", undo)

    def _lift(self, index: int) -> None:
        self._lifted[index] = (time.time(), time.monotonic())

    def _measure(self, index: int, fault: Fault, end_wall: float, end_mono: float,
                 affected: list[str]) -> float | None:
        total = sum(len(ss) for ss in self.racks.values())
        deadline = end_mono + self.recovery_timeout_s
        told = False
        while not self._stop.is_set():
            try:
                online = self.farm.phones_online()
            except Exception:  # the coordinator may be down: not recovered yet
                online = -1
            if online >= total and not told and self.on_phones_back is not None:
                told = True
                try:
                    self.on_phones_back()
                except Exception as exc:  # reported; the measure goes on
                    self._error(index, fault, "on_phones_back", exc)
            if online >= total and completed_since(self.farm.db_path(), end_wall,
                                                   affected) >= set(affected):
                return time.monotonic() - end_mono
            if time.monotonic() > deadline:
                return None
            self._stop.wait(self.poll_s)
        return None


def completed_since(db_path: Path, since_wall: float, serials: Iterable[str]) -> set[str]:
    """The serials among ``serials`` with an execution completed after ``since_wall``
    (time.time()), read from the coordinator's farm database opened read-only; empty if
    the database cannot be read now."""
    wanted = list(serials)
    if not wanted:
        return set()
    since = utc_text(_dt.datetime.fromtimestamp(since_wall, _dt.timezone.utc))
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return set()
    try:
        marks = ",".join("?" * len(wanted))
        rows = con.execute(
            f"SELECT DISTINCT serial FROM executions WHERE status = 'completed' "
            f"AND end_time > ? AND serial IN ({marks})", (since, *wanted)).fetchall()
        return {serial for (serial,) in rows}
    except sqlite3.Error:
        return set()
    finally:
        con.close()
