"""One harness run from start to report (issue 22): the function `python -m tests.harness`,
`bench/chaos.py` and the CI test all call.

`run_scenario` starts a `HarnessFarm`, the status-stream watcher and health probe
(tests.harness.invariants), the steady load (tests.harness.load); optionally runs a baseline
phase without faults, measuring completed executions per minute; then the `FaultRunner`
(tests.harness.faults) with the faults given or drawn from a seed, an invariants check
(``settled=False``) after each fault's recovery; then stops the faults and the load, waits
(bounded) until the farm settled (every phone online, no execution pending or running) and
makes the final check (``settled=True``). The farm is always stopped, also on failure.
The answer, a `ScenarioResult`, prints itself with `report()`.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.harness.farm import HarnessFarm
from tests.harness.faults import (Entry, Fault, FaultRunner, Timeline, check_faults,
                                  random_script, supported_kinds)
from tests.harness.invariants import HealthProbe, StreamWatcher, Violation, check, report
from tests.harness.load import SteadyLoad, completed_between

# The recovery target: the farm fully back within 10 s of a fault's end (p99).
RECOVERY_TARGET_S = 10.0
ACTIVE_STATES = ("pending", "running")


class _ProgressTimeline(Timeline):
    """A Timeline that also prints each fault phase (start, step, end, error, recovered)
    as it is added: the runner's threads write the timeline, so this is where a run's
    progress is seen first."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        super().__init__()
        self._progress = progress

    def add(self, kind: str, what: str, **fields: Any) -> Entry:
        entry = super().add(kind, what, **fields)
        if kind == "fault":
            phase = fields.get("phase")
            extra = ""
            if phase == "recovered":
                s = fields.get("seconds")
                extra = " in NOT recovered" if s is None else f" in {s:.1f} s"
                extra = extra.replace(" in NOT", ": NOT")
            elif phase == "error":
                extra = f": {fields.get('error')}"
            self._progress(f"fault {fields.get('index', '?')} {phase}: {what}{extra}")
        return entry


@dataclass
class ScenarioResult:
    """What one harness run found: the faults and their recoveries, the invariant
    violations (and excused oddities, ``notes``), completed executions per minute with and
    without faults, whether the farm settled, and the whole timeline."""

    racks: int
    phones: int
    faults: list[Fault] = field(default_factory=list)
    recoveries: list[tuple[Fault, float | None]] = field(default_factory=list)
    errors: list[tuple[Fault, str]] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    notes: list[Violation] = field(default_factory=list)
    checks: list[tuple[str, int]] = field(default_factory=list)  # (which check, violations)
    baseline_per_minute: list[int] = field(default_factory=list)  # completed, each minute
    faults_per_minute: list[int] = field(default_factory=list)
    rate_without_faults: float | None = None  # completed executions per minute
    rate_with_faults: float | None = None
    settled: bool = False
    settle_s: float | None = None
    start_s: float | None = None  # the farm's start, until every phone was online
    wall_s: float | None = None   # the whole run
    workdir: Path | None = None
    timeline: Timeline | None = None

    @property
    def recovery_seconds(self) -> list[float]:
        return [s for _, s in self.recoveries if s is not None]

    @property
    def unrecovered(self) -> list[Fault]:
        """Faults applied whose recovery was not seen within the runner's timeout."""
        return [f for f, s in self.recoveries if s is None]

    def kinds(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)

    def report(self) -> str:
        """The run in words: faults, recoveries, rates, checks, violations with the
        timeline around each, and the notes counted by invariant."""
        lines = [f"farm: {self.racks} rack(s) x {self.phones} phone(s), started in "
                 f"{_secs(self.start_s)}, whole run {_secs(self.wall_s)}"
                 + (f", logs in {self.workdir / 'logs'}" if self.workdir else "")]
        kinds = self.kinds()
        lines.append(f"faults injected: {len(self.faults)}"
                     + (f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})"
                        if kinds else ""))
        for fault, seconds in self.recoveries:
            lines.append(f"  at {fault.at_s:6.1f} s  {fault.describe():55} recovered "
                         + ("NOT within the timeout" if seconds is None
                            else f"in {seconds:.1f} s"))
        measured = len(self.recoveries)
        if measured < len(self.faults):
            lines.append(f"  {len(self.faults) - measured} fault(s) not measured (the run "
                         "ended first)")
        if self.recovery_seconds:
            lines.append(f"recovery: p50 {percentile(self.recovery_seconds, 50):.1f} s, "
                         f"p99 {percentile(self.recovery_seconds, 99):.1f} s (target p99 < "
                         f"{RECOVERY_TARGET_S:.0f} s), {len(self.unrecovered)} not recovered")
        for fault, error in self.errors:
            lines.append(f"fault primitive failed: {fault.describe()}: {error}")
        lines.append(f"completed executions per minute: without faults "
                     f"{_rate(self.rate_without_faults, self.baseline_per_minute)}, "
                     f"under faults {_rate(self.rate_with_faults, self.faults_per_minute)}")
        if self.rate_without_faults and self.rate_with_faults is not None:
            lines.append(f"  ratio under/without faults: "
                         f"{self.rate_with_faults / self.rate_without_faults:.2f}")
        lines.append("farm settled" + (f" in {self.settle_s:.1f} s" if self.settled else
                                       f": NO (still busy after {_secs(self.settle_s)})"))
        lines.append("checks: " + ", ".join(f"{name} {n}" for name, n in self.checks))
        notes = Counter(n.invariant for n in self.notes)
        if notes:
            lines.append("notes (excused, not violations): "
                         + ", ".join(f"{k} {n}" for k, n in sorted(notes.items())))
        if self.violations:
            lines.append(f"violations ({len(self.violations)}):")
            lines.append(report(self.violations, self.timeline))
        lines.append(f"violations: {len(self.violations)}")
        return "\n".join(lines)


def _secs(s: float | None) -> str:
    return "?" if s is None else f"{s:.1f} s"


def _rate(r: float | None, minutes: list[int]) -> str:
    if r is None:
        return "not measured"
    return f"{r:.1f}" + (f" (each minute: {', '.join(map(str, minutes))})" if minutes else "")


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (p99 of fewer than 100 values is their maximum)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def per_minute(db_path: Path, start: float, end: float) -> list[int]:
    """Executions completed in each whole minute of [start, end) (a last partial minute
    left out unless it is the only one)."""
    minutes = max(1, int((end - start) // 60))
    return [completed_between(db_path, start + 60 * i, min(end, start + 60 * (i + 1)))
            for i in range(minutes)]


def active_executions(db_path: Path) -> int | None:
    """How many executions are pending or running (None: the database was not readable)."""
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return None
    try:
        marks = ",".join("?" * len(ACTIVE_STATES))
        (n,) = con.execute(f"SELECT COUNT(*) FROM executions WHERE status IN ({marks})",
                           ACTIVE_STATES).fetchone()
        return int(n)
    except sqlite3.Error:
        return None
    finally:
        con.close()


def run_scenario(workdir: Path, racks: int, phones: int, *, faults: list[Fault] | None = None,
                 seed: int = 1, minutes: float | None = None, baseline_minutes: float = 0.0,
                 coordinator_tmpfs_mb: int | None = None,
                 recovery_timeout_s: float = 120.0, settle_timeout_s: float = 90.0,
                 progress: Callable[[str], None] = print) -> ScenarioResult:
    """Run a farm of ``racks`` x ``phones`` under ``faults`` (or, with None, a script drawn
    from ``seed`` for ``minutes``) and check the invariants. The fault phase lasts
    ``minutes`` (default: until the last fault's end), then every fault's recovery is
    awaited (up to ``recovery_timeout_s`` each). Raises ScriptError before anything starts
    for faults this farm cannot take, RuntimeError when the farm cannot start."""
    began = time.monotonic()
    workdir = Path(workdir)
    farm = HarnessFarm(workdir, racks, phones, seed=seed,
                       coordinator_tmpfs_mb=coordinator_tmpfs_mb)
    rack_names = [f"rack{i}" for i in range(1, racks + 1)]
    if faults is None:
        if minutes is None:
            raise ValueError("run_scenario: give faults or minutes for a random script")
        faults = random_script(seed, rack_names, minutes, kinds=supported_kinds(farm))
    else:
        # Refused before anything starts; a phone target (slow) is checked by the runner
        # once the phones' serials exist.
        check_faults([f for f in faults if not (f.kind == "slow" and f.target is not None
                                                and f.target not in rack_names)],
                     {name: [] for name in rack_names}, supported_kinds(farm))
    last_end = max((f.at_s + f.duration_s for f in faults), default=0.0)
    phase_s = max(minutes * 60 if minutes is not None else 0.0, last_end)
    result = ScenarioResult(racks=racks, phones=phones, faults=list(faults), workdir=workdir)
    timeline = _ProgressTimeline(progress)
    result.timeline = timeline
    check_lock = threading.Lock()
    seen: set[tuple[str, str]] = set()
    seen_notes: set[tuple[str, str]] = set()
    stream: StreamWatcher | None = None
    health: HealthProbe | None = None
    load: SteadyLoad | None = None
    runner: FaultRunner | None = None

    def run_check(label: str, settled: bool) -> None:
        # One check at a time: overlapping faults recover in parallel threads.
        with check_lock:
            notes: list[Violation] = []
            try:
                found = check(farm, timeline, settled=settled, stream=stream, health=health,
                              notes=notes)
            except Exception as exc:  # a checker crash is a finding, not a dead run
                found = [Violation("checker", f"{label}: {type(exc).__name__}: {exc}",
                                   time.time(), [])]
            new = [v for v in found if (v.invariant, v.message) not in seen]
            seen.update((v.invariant, v.message) for v in found)
            result.violations += new
            for n in notes:
                if (n.invariant, n.message) not in seen_notes:
                    seen_notes.add((n.invariant, n.message))
                    result.notes.append(n)
            result.checks.append((label, len(found)))
            progress(f"check {label}: {len(found)} violation(s)"
                     + (f", {len(new)} new" if len(new) != len(found) else "")
                     + "".join(f"\n  {v.invariant}: {v.message}" for v in new))

    try:
        progress(f"starting a farm of {racks} rack(s) x {phones} phone(s) in {workdir}")
        farm.start()
        result.start_s = time.monotonic() - began
        progress(f"farm up in {result.start_s:.1f} s: {farm.phones_online()} phones online, "
                 f"coordinator {farm.base_url}")
        stream = StreamWatcher(farm, timeline).start()
        health = HealthProbe(farm, timeline).start()
        if not stream.wait_connected(15):
            progress("status stream not connected after 15 s (the check will say so)")
        load = SteadyLoad(farm, timeline)
        load.start()
        # Built (and its serial targets refused) before the baseline: no wasted minutes.
        runner = FaultRunner(farm, faults, timeline, seed=seed,
                             recovery_timeout_s=recovery_timeout_s,
                             on_phones_back=load.kick,
                             on_recovered=lambda fault, s: run_check(
                                 f"after {fault.kind} at {fault.at_s:g}s", False))
        if baseline_minutes > 0:
            progress(f"baseline: {baseline_minutes:g} min without faults")
            # Measured from the load's first minute on: a run takes a moment to start.
            b0 = time.time()
            time.sleep(baseline_minutes * 60)
            b1 = time.time()
            result.baseline_per_minute = per_minute(farm.db_path(), b0, b1)
            result.rate_without_faults = (completed_between(farm.db_path(), b0, b1)
                                          * 60 / (b1 - b0))
            progress(f"baseline: {result.rate_without_faults:.1f} completed/min "
                     f"{result.baseline_per_minute}")
            run_check("after the baseline", False)
        progress(f"faults: {len(faults)} over {phase_s:.0f} s: "
                 + "; ".join(f"{f.at_s:g}s {f.describe()}" for f in faults))
        f0 = time.time()
        runner.start()
        time.sleep(phase_s)
        f1 = time.time()
        # The last faults' recoveries (each bounded by the runner's timeout).
        runner.join(recovery_timeout_s + 30)
        runner.stop()
        result.faults_per_minute = per_minute(farm.db_path(), f0, f1)
        result.rate_with_faults = completed_between(farm.db_path(), f0, f1) * 60 / (f1 - f0)
        result.recoveries = runner.recoveries
        result.errors = runner.errors
        load.stop()
        load = None
        progress("faults over, load stopped: settling")
        s0 = time.monotonic()
        total = racks * phones

        def quiet() -> bool:
            return farm.phones_online() >= total and active_executions(farm.db_path()) == 0

        while not quiet() and time.monotonic() - s0 < settle_timeout_s:
            time.sleep(0.5)
        result.settle_s = time.monotonic() - s0
        result.settled = quiet()
        progress(f"farm {'settled' if result.settled else 'NOT settled'} after "
                 f"{result.settle_s:.1f} s")
        run_check("final (settled)", True)
    finally:
        if runner is not None:
            runner.stop()
        if load is not None:
            load.stop()
        for watcher in (stream, health):
            if watcher is not None:
                watcher.stop()
        farm.stop()
        result.wall_s = time.monotonic() - began
    return result


# --- the command line shared by `python -m tests.harness` and bench/chaos.py ----------------
DEFAULT_TMPFS_MB = 64


def add_arguments(parser: Any) -> None:
    """The options of a harness run on an argparse parser."""
    parser.add_argument("--racks", type=int, default=2, help="racks (namespaces), default 2")
    parser.add_argument("--phones", type=int, default=3, help="virtual phones per rack")
    parser.add_argument("--minutes", type=float, default=2.0,
                        help="length of the fault phase (a script's may be longer)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--random", type=int, metavar="SEED",
                       help="faults drawn from SEED (the default, with seed 1)")
    which.add_argument("--script", type=Path, metavar="FILE", help="a TOML fault script")
    parser.add_argument("--seed", type=int, default=1,
                        help="with --script: the seed of its draws (unplug storms)")
    parser.add_argument("--workdir", type=Path,
                        help="logs and data (default: a new folder under /tmp, kept)")
    parser.add_argument("--coordinator-tmpfs-mb", type=int, metavar="MB",
                        help="the coordinator's data on a tmpfs of MB MiB (disk_full needs "
                             f"it; default {DEFAULT_TMPFS_MB} when the faults may hold a "
                             "disk_full, 0 = none)")
    parser.add_argument("--baseline-minutes", type=float, default=0.0,
                        help="minutes without faults first, for the completed/min baseline")


def faults_from_args(args: Any) -> tuple[list[Fault] | None, int, int | None]:
    """(faults, seed, tmpfs MiB) of parsed options, before anything starts: a script is
    read and checked against the racks it names (ScriptError: file:line, fault, field);
    None faults = drawn from the seed once the farm is built."""
    from tests.harness.faults import load_script  # noqa: PLC0415 - one use

    if args.racks < 1 or args.phones < 1:
        raise SystemExit("need --racks and --phones of at least 1")
    rack_names = [f"rack{i}" for i in range(1, args.racks + 1)]
    tmpfs = args.coordinator_tmpfs_mb
    if args.script is not None:
        faults = load_script(args.script, racks=rack_names)
        if tmpfs is None and any(f.kind == "disk_full" for f in faults):
            tmpfs = DEFAULT_TMPFS_MB
        seed = args.seed
    else:
        faults = None
        seed = args.random if args.random is not None else 1
        if tmpfs is None:
            tmpfs = DEFAULT_TMPFS_MB
    return faults, seed, (tmpfs or None)


def run_from_args(args: Any, workdir_prefix: str,
                  progress: Callable[[str], None]) -> "ScenarioResult | int":
    """One run from parsed `add_arguments` options: its result, or the exit code of a run
    that did not start (2: a fault script refused, naming file:line, fault and field; 3: no
    network namespaces here), after printing why and ``violations: -``."""
    import tempfile  # noqa: PLC0415 - only the command lines come here

    from tests.harness.faults import ScriptError  # noqa: PLC0415
    from tests.harness.netns import namespaces_available  # noqa: PLC0415

    try:
        faults, seed, tmpfs = faults_from_args(args)
        reason = namespaces_available()
        if reason is not None:
            print(f"cannot run the harness here: {reason}")
            print("violations: -")
            return 3
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix=workdir_prefix))
        return run_scenario(workdir, args.racks, args.phones, faults=faults, seed=seed,
                            minutes=args.minutes, baseline_minutes=args.baseline_minutes,
                            coordinator_tmpfs_mb=tmpfs, progress=progress)
    except ScriptError as exc:  # also a phone target that is not one of the farm's phones
        print(f"fault script refused: {exc}")
        print("violations: -")
        return 2
