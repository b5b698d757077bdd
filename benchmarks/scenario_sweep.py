"""The scenario library run serially and on a pool of processes (`bms-emu scenario --jobs`),
in one process one after the other: wall seconds of each and their ratio. Prints one JSON
line.

    .venv/bin/python benchmarks/scenario_sweep.py [--jobs 2] [--quick]

The files are read once, before either run (as the command does); each run is only the
sweep, `hil.scenario_sweep.run_cases`. `identical` says whether the two runs' outcomes
agree (wall times aside). Goal: `--jobs 2` at least 1.5x faster than serial on an idle
2-core machine; the library's longest scenario bounds the ratio below 2. `--quick`: five
short files (what tests/benchmarks checks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from hil.scenario_campaign import load_cases
from hil.scenario_sweep import Outcome, ProcessPoolEngine, SerialEngine, run_cases

LIBRARY = Path(__file__).resolve().parents[1] / "scenarios"
QUICK = ("short-circuit", "open-wire", "silent-rig", "welded-contactor", "charge-overcurrent")
GOAL_RATIO = 1.5


def comparable(outcome: Outcome) -> tuple:
    """An outcome less its wall time: what must not depend on the engine."""
    return (outcome.scenario.path, outcome.passed, outcome.sim_s,
            [(v.check.label, v.passed, v.message) for v in outcome.verdicts],
            [e.describe() for e in outcome.events])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="five short files")
    args = parser.parse_args()
    files = [LIBRARY / f"{n}.toml" for n in QUICK] if args.quick \
        else sorted(LIBRARY.glob("*.toml"))
    cases = [case for path in files for case in load_cases(path)]
    timed = {}
    for name, engine in (("serial", SerialEngine()), ("parallel", ProcessPoolEngine(args.jobs))):
        started = time.perf_counter()
        timed[name] = (run_cases(cases, engine), time.perf_counter() - started)
    (serial, serial_s), (parallel, parallel_s) = timed["serial"], timed["parallel"]
    ratio = serial_s / parallel_s
    print(json.dumps({
        "benchmark": "scenario_sweep",
        "scenarios": len(cases),
        "jobs": args.jobs,
        "serial_s": round(serial_s, 2),
        "parallel_s": round(parallel_s, 2),
        "ratio": round(ratio, 2),
        "longest_case_s": round(max(o.wall_s for o in serial), 2),
        "identical": [comparable(o) for o in serial] == [comparable(o) for o in parallel],
        "passed": sum(o.passed for o in serial),
        "goal": f"ratio >= {GOAL_RATIO} with --jobs 2 on an idle 2-core machine",
        "goal_met": ratio >= GOAL_RATIO,
        "cpus": len(os.sched_getaffinity(0)),
        "load_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
