"""The long randomised property search, run by hand: `make test` draws the same examples every
run (the "ci" profile), so new ones are searched for here, a fresh seed each round.

    .venv/bin/python benchmarks/fuzz_hypothesis.py [--rounds 20] [--seed 1] [PATHS...]

Each round runs the property tests (the fuzz tests and the firmware's safety invariants
unless PATHS are given) under the "fuzz" profile with its own seed. Prints one JSON line:
rounds, seeds, the failures with the seed that reproduces each
(`pytest --hypothesis-profile=fuzz --hypothesis-seed=SEED PATH`), and the time taken.
A failure found here is pinned as an `@example` in its test before it is fixed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = ["tests/fuzz", "tests/bms/core/test_safety_invariants.py"]
FAILED = re.compile(r"^FAILED (\S+)", re.M)


def one_round(paths: list[str], seed: int) -> list[str]:
    """The test ids that failed in one round with this seed."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--hypothesis-profile=fuzz", f"--hypothesis-seed={seed}", *paths],
        cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest could not run (exit {done.returncode}):\n{done.stdout}"
                         f"{done.stderr}")
    return FAILED.findall(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=DEFAULT_PATHS)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None,
                        help="the first round's seed (default: a random one)")
    args = parser.parse_args()
    first = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    start = time.perf_counter()
    failures = []
    seeds = [first + k for k in range(args.rounds)]
    for seed in seeds:
        failures += [{"test": test, "seed": seed} for test in one_round(args.paths, seed)]
    print(json.dumps({"benchmark": "fuzz_hypothesis", "paths": args.paths,
                      "rounds": args.rounds, "seeds": [seeds[0], seeds[-1]],
                      "failures": failures, "seconds": round(time.perf_counter() - start, 1)}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
