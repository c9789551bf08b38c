"""Fuzz the whole HTTP API harder than the test suite does, and print the figures.

Runs tests/e2e/test_api_fuzz.py (schemathesis over the coordinator's own OpenAPI document,
against a real `farm-coordinator --demo` with virtual phones) with more examples per
operation, and prints what its summary prints: requests generated, counts per HTTP status,
5xx found (target 0) and the longest event-loop stall the coordinator's loop-lag probe saw
(target < 100 ms).

    python bench/fuzz.py --examples 200
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200, help="examples per operation (default 200)")
    args = ap.parse_args()
    env = {**os.environ, "PHONEFARM_FUZZ_EXAMPLES": str(args.examples)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/e2e/test_api_fuzz.py"], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
