"""Fault-and-scale figures, printed, never asserted (issue 22.4).

One harness run (tests/harness/scenario.py: `run_scenario`): a farm of `--racks` racks,
each in its own network namespace with its own adb server, `--phones` virtual phones and a
node, the coordinator in the root namespace; a steady load (a per-minute schedule over every
phone, a run every 5 s, a broadcast tap every 3 s); first `--baseline-minutes` without
faults, then `--minutes` of faults (`--script FILE`, e.g. config/chaos.example.toml, or
`--random SEED`), the invariants checked after each fault's recovery and once the farm
settled. Prints:
- faults injected, by kind, and each fault's recovery: seconds from its end until every
  phone is online and each affected phone completed an execution again; p50 and p99
  (target p99 < 10 s);
- invariant violations (target 0; each printed with the fault timeline around it);
- executions completed per minute without faults (the baseline phase) and under faults,
  and their ratio;
- this machine's CPU count, its load average before and after, and the CPU seconds the
  farm's processes used: what this machine bounds.
The last line is `violations: N`. Needs root (network namespaces, nftables, a tmpfs for the
disk_full fault); says why and exits 3 without them.

Run: python bench/chaos.py --racks 4 --phones 15 --minutes 10 --random 22 --baseline-minutes 3
     python bench/chaos.py --racks 2 --phones 3 --minutes 9 --script config/chaos.example.toml
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.scenario import (RECOVERY_TARGET_S, ScenarioResult, add_arguments,  # noqa: E402
                                    percentile, run_from_args)


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's reaped children: the farm's processes
    (`ip netns exec` execs its command, so each node, adb server and phone process is one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_figures(result: ScenarioResult, cpu_s: float, load_before: tuple[float, ...],
                  load_after: tuple[float, ...]) -> None:
    racks, phones = result.racks, result.phones
    print()
    print(f"== chaos: {racks} rack(s) x {phones} phone(s) = {racks * phones} phones ==")
    kinds = result.kinds()
    print(f"faults injected: {len(result.faults)}  "
          + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    print("recovery per fault (s from the fault's end to every phone back and work resumed):")
    for fault, seconds in result.recoveries:
        print(f"  {fault.at_s:7.1f} s  {fault.describe():58} "
              + ("not recovered" if seconds is None else f"{seconds:6.1f}"))
    done = result.recovery_seconds
    if done:
        p99 = percentile(done, 99)
        met = "met" if p99 < RECOVERY_TARGET_S and not result.unrecovered else "NOT met"
        print(f"recovery p50 {percentile(done, 50):.1f} s, p99 {p99:.1f} s "
              f"(target p99 < {RECOVERY_TARGET_S:.0f} s: {met}; {len(result.unrecovered)} "
              f"not recovered; p99 of fewer than 100 faults is their maximum)")
    for fault, error in result.errors:
        print(f"fault primitive failed: {fault.describe()}: {error}")
    without, under = result.rate_without_faults, result.rate_with_faults
    print("completed executions per minute:")
    print(f"  without faults  {'not measured (--baseline-minutes 0)' if without is None else f'{without:.1f}'}"
          + (f"  (each minute: {result.baseline_per_minute})" if result.baseline_per_minute
             else ""))
    print(f"  under faults    {'not measured' if under is None else f'{under:.1f}'}"
          + (f"  (each minute: {result.faults_per_minute})" if result.faults_per_minute
             else ""))
    if without and under is not None:
        print(f"  ratio under/without: {under / without:.2f}")
    print(f"farm {'settled' if result.settled else 'did NOT settle'} "
          f"({result.settle_s or 0:.1f} s after the faults); farm start "
          f"{result.start_s or 0:.1f} s; whole run {result.wall_s or 0:.1f} s")
    cores = os.cpu_count() or 1
    wall = result.wall_s or 1.0
    print(f"machine: {cores} CPU(s); load average (1/5/15 min) before "
          f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
          f"{'/'.join(f'{x:.2f}' for x in load_after)}")
    print(f"the farm's processes used {cpu_s:.0f} CPU-s in {wall:.0f} s: "
          f"{cpu_s / wall:.2f} of {cores} core(s) on average")
    print(f"what this machine bounds: the coordinator, {racks} node(s), {racks} adb "
          f"server(s), {racks} virtual-phone process(es) ({phones} phone(s) each) and the "
          f"harness (load, probes, checks reading every phone's log) share {cores} core(s). "
          "Completed executions per minute is the load's pace (a run every 5 s and a "
          "per-minute schedule over every phone), capped by how fast these processes get "
          "CPU; recovery seconds include restarting Python processes (a node, the "
          "coordinator: several seconds each when the cores are busy) and the adb "
          "round trips of every phone coming back. A load average above the CPU count "
          "means the processes waited for CPU: the figures are then this machine's bound, "
          "not the farm's.")
    notes = result.notes
    if notes:
        counts: dict[str, int] = {}
        for n in notes:
            counts[n.invariant] = counts.get(n.invariant, 0) + 1
        print("notes (excused, not violations): "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"invariant violations: {len(result.violations)} (target 0)")
    if result.violations:
        print(result.report())
    print(f"violations: {len(result.violations)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(ap)
    args = ap.parse_args()
    load_before = os.getloadavg()
    cpu0 = children_cpu_s()
    began = time.monotonic()
    result = run_from_args(args, "pf-chaos-", lambda line: print(
        f"[{time.monotonic() - began:6.1f}] {line}", flush=True))
    if isinstance(result, int):
        return result
    print_figures(result, children_cpu_s() - cpu0, load_before, os.getloadavg())
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
