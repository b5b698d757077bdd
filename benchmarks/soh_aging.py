"""State of health on aged packs: what a fresh firmware (it knows only the nominal cell) learns
of each cell's capacity and resistance after a stated duty. One JSON line per case.

    .venv/bin/python benchmarks/soh_aging.py [--cycles 2] [--series 16] [--tick-s 0.5] [--case 10y]

Each case is a na-nfm pack aged by the plant's model (`hil.aging`, each cell with its own
seeded rate: the spread of a real aged pack), started at 50 % SoC. The duty is full cycles
at 0.5C (`cycles:0.5`: CC-CV charge to the charge voltage, discharge to the limit's taper),
the duty that gives the capacity learner its anchors (full and empty) and the resistance
learner its current steps; `--duty datacenter` is the UPS day instead (float, a 10-minute
outage at 2 E, recharge, peak shaving), which never empties the pack. Errors per cell:
capacity in % of nominal, resistance in % of the true value; `untrained_*` is the error of
the nominal values the firmware starts from.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bms.core.firmware import Firmware
from bms.data.presets import PRESETS
from hil.aging import AgeSpec
from hil.loads import CYCLE_CHARGE_EXTRA_S, CYCLE_DISCHARGE_EXTRA_S, cycles, datacenter
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run

CASES: dict[str, AgeSpec] = {
    "5y": AgeSpec(years=5.0),
    "10y": AgeSpec(years=10.0),
    "2000cycles": AgeSpec(cycles=2000.0),
    "10y_2000cycles": AgeSpec(years=10.0, cycles=2000.0),
}
C_RATE = 0.5


def _errors(name: str, error_pct: np.ndarray) -> dict:
    return {f"{name}_max_pct": round(float(np.abs(error_pct).max()), 2),
            f"{name}_rms_pct": round(float(np.sqrt(np.mean(error_pct ** 2))), 2)}


def case(name: str, age: AgeSpec, args) -> dict:
    pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=args.series, seed=args.seed,
                                                     initial_soc=0.5, age=age), args.tick_s)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
    if args.duty == "cycles":
        period_s = 2 * 3600.0 / C_RATE + CYCLE_CHARGE_EXTRA_S + CYCLE_DISCHARGE_EXTRA_S
        duration_s, profile = args.cycles * period_s, cycles(pack.capacity_ah, C_RATE)
        duty = f"{args.cycles} full cycles at {C_RATE}C (cycles:{C_RATE}), 25 °C ambient"
    else:
        duration_s, profile = args.days * 86400.0, datacenter(pack.energy_wh)
        duty = f"{args.days:g} data-centre day(s) (UPS: float, outage, recharge), 25 °C"
    result = run(pack, firmware, profile, RunOptions(duration_s=duration_s,
                                                     tick_s=args.tick_s))
    est = result.last.estimate
    nominal_ah = pack.capacity_ah
    true_ah, true_r = pack.true_capacity_ah, pack.true_resistance_factor
    cap_err = (est.cell_capacity_ah - true_ah) / nominal_ah * 100.0
    r_err = (est.cell_resistance_factor - true_r) / true_r * 100.0
    return {
        "benchmark": "soh_aging",
        "case": name,
        "age": {"years": age.years, "cycles": age.cycles, "storage_soc_pct": 50.0},
        "duty": duty,
        "series": args.series,
        "true_capacity_pct": [round(float(true_ah.min() / nominal_ah * 100), 2),
                              round(float(true_ah.max() / nominal_ah * 100), 2)],
        "true_resistance_pct": [round(float(true_r.min() * 100), 2),
                                round(float(true_r.max() * 100), 2)],
        **_errors("capacity_err", cap_err),
        **_errors("resistance_err", r_err),
        **_errors("untrained_capacity_err", (nominal_ah - true_ah) / nominal_ah * 100.0),
        **_errors("untrained_resistance_err", (1.0 - true_r) / true_r * 100.0),
        "soh_pct": round(est.soh_pct, 2),
        "soh_true_pct": round(float(true_ah.min() / nominal_ah * 100), 2),
        "cells_learnt_capacity": int(np.sum(est.cell_capacity_ah != nominal_ah)),
        "sim_s": round(result.sim_s),
        "wall_s": round(result.wall_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duty", choices=("cycles", "datacenter"), default="cycles")
    parser.add_argument("--cycles", type=int, default=2, help="with --duty cycles")
    parser.add_argument("--days", type=float, default=1.0, help="with --duty datacenter")
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tick-s", type=float, default=0.5)
    parser.add_argument("--case", choices=sorted(CASES), action="append",
                        help="one case (repeatable); default: all")
    args = parser.parse_args()
    for name in args.case or CASES:
        print(json.dumps(case(name, CASES[name], args)), flush=True)


if __name__ == "__main__":
    main()
