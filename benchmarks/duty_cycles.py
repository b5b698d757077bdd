"""Duty cycles on healthy packs, the whole catalogue: full cycles at 0.2, 0.5, 1 and 2C,
the library's UPS outage, days of float and of rest, on both presets, 16S and 416S, at a
1 s measurement period (`hil.duty_cycles`). Prints one JSON line: per run its events, the
true SoC range it reached, its end state and its verdict.

    .venv/bin/python benchmarks/duty_cycles.py [--jobs N] [--quick]

Goal: every run passes: nothing raised, RUN with the contactors closed at the end, the
SoC range the cycle drives the pack to reached. `--quick` runs one short cycle of each
kind (what tests/benchmarks checks); the whole catalogue takes about an hour of CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bms.data.presets import PRESETS
from hil.duty_cycles import DutyCycle, float_charge, full_cycle, rest, run_duty_cycle
from hil.scenario import run_scenario
from hil.scenario_file import load_scenario

UPS = Path(__file__).resolve().parents[1] / "scenarios" / "ups-outage-to-empty-and-recharge.toml"
SERIES = (16, 416)


def catalogue(quick: bool) -> tuple[list[DutyCycle], list[dict]]:
    """The runs, and the UPS scenario's packs (the library file, `--set` on each)."""
    if quick:
        return ([full_cycle(2.0), DutyCycle("rest 1 h na-nvpf 16S", "rest", "1h", "na-nvpf")],
                [{"pack.chemistry": "na-nvpf", "pack.series": 16}])
    cycles = [full_cycle(c, chem, n) for chem in PRESETS for n in SERIES
              for c in (0.2, 0.5, 1.0, 2.0)]
    cycles += [make(2.0, chem, n) for make in (float_charge, rest) for chem in PRESETS
               for n in SERIES]
    packs = [{"pack.chemistry": chem, "pack.series": n} for chem in PRESETS for n in SERIES]
    return cycles, packs


def ups(changes: dict) -> dict:
    result = run_scenario(load_scenario(UPS, changes))
    return {"name": f"UPS outage {changes['pack.chemistry']} {changes['pack.series']}S",
            "command": f"bms-emu scenario {UPS.relative_to(UPS.parents[1])} --set "
                       f"pack.chemistry={changes['pack.chemistry']} --set "
                       f"pack.series={changes['pack.series']}",
            "passed": result.passed,
            "problems": [f"{v.check.label}: {v.message}" for v in result.verdicts
                         if not v.passed],
            "events": [e.describe() for e in result.events],
            "sim_s": result.sim_s, "wall_s": round(result.wall_s, 2)}


def one(cycle: DutyCycle) -> dict:
    return run_duty_cycle(cycle).as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="one short run of each kind")
    args = parser.parse_args()
    cycles, packs = catalogue(args.quick)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = [*pool.map(one, cycles), *pool.map(ups, packs)]
    print(json.dumps({
        "benchmark": "duty_cycles",
        "runs": runs,
        "passed": sum(r["passed"] for r in runs),
        "failed": sum(not r["passed"] for r in runs),
        "goal": "every run passes",
        "goal_met": all(r["passed"] for r in runs),
        "wall_s": round(time.perf_counter() - started, 1),
        "jobs": args.jobs,
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
