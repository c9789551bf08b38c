"""`python -m tests.harness`: one harness run (issue 22), its report, and an exit code.

    python -m tests.harness --racks N --phones M --minutes T [--random SEED | --script FILE]
        [--workdir DIR] [--coordinator-tmpfs-mb MB] [--baseline-minutes B]

Exit codes: 0 no invariant violated; 1 violations (the report with the timeline around
each is printed); 2 a fault script refused (file:line, fault, field; nothing started);
3 no network namespaces can be made here (the reason is printed). The last line printed is
``violations: N`` (N is ``-`` when nothing ran).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.harness.faults import ScriptError
from tests.harness.netns import namespaces_available
from tests.harness.scenario import add_arguments, faults_from_args, run_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness",
                                     description="A farm in network namespaces, broken on "
                                                 "purpose, its invariants checked.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        faults, seed, tmpfs = faults_from_args(args)
    except ScriptError as exc:
        print(f"fault script refused: {exc}")
        print("violations: -")
        return 2
    reason = namespaces_available()
    if reason is not None:
        print(f"cannot run the harness here: {reason}")
        print("violations: -")
        return 3
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pf-harness-"))
    try:
        result = run_scenario(workdir, args.racks, args.phones, faults=faults, seed=seed,
                              minutes=args.minutes, baseline_minutes=args.baseline_minutes,
                              coordinator_tmpfs_mb=tmpfs,
                              progress=lambda line: print(line, flush=True))
    except ScriptError as exc:  # a phone target that is not one of the farm's phones
        print(f"fault script refused: {exc}")
        print("violations: -")
        return 2
    print(result.report())
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
