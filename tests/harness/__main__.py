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

from tests.harness.scenario import add_arguments, run_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness",
                                     description="A farm in network namespaces, broken on "
                                                 "purpose, its invariants checked.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run_from_args(args, "pf-harness-", lambda line: print(line, flush=True))
    if isinstance(result, int):
        return result
    print(result.report())
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
