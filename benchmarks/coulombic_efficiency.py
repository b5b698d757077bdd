"""Coulombic efficiency: SoC error through UPS-style cycles on a plant that stores 0.95 of each
charge, with a cell profile that says 1.0 - the estimator learning the efficiency, and not.
Prints one JSON line.

    .venv/bin/python benchmarks/coulombic_efficiency.py [--chemistry na-nvpf] [--cycles 6]
        [--plant-efficiency 0.95] [--offset-sigma-c 0.002] [--tick-s 1] [--quick]

A cycle: an outage at 1C for 20 minutes (a third of the charge), a recharge at 1C (CC-CV to
full), a 15-minute rest. 4 cells in series; the same seed, sensors and plant both runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from bms.core.firmware import Firmware
from bms.data.config import default_config
from bms.data.presets import PRESETS
from hil.loads import StepProfile
from hil.pack import PackSpec, SimulatedPack

OUTAGE_S, RECHARGE_S, REST_S = 1200.0, 3600.0, 900.0
N_SERIES = 4


def run(args, learn: bool) -> dict:
    """RMSE and maximum of every cell's SoC error over the run, the last cycle's maximum,
    and the learnt efficiency at the end of each cycle."""
    preset = PRESETS[args.chemistry]
    plant = dataclasses.replace(preset, coulombic_efficiency=args.plant_efficiency)
    profile = dataclasses.replace(preset, coulombic_efficiency=args.profile_efficiency)
    pack = SimulatedPack(plant, PackSpec(n_series=N_SERIES, initial_soc=0.95), args.tick_s)
    cfg = default_config(profile, N_SERIES, pack.capacity_ah)
    if args.offset_sigma_c is not None:
        cfg = dataclasses.replace(cfg, estimation=dataclasses.replace(
            cfg.estimation, offset_sigma_a=args.offset_sigma_c * pack.capacity_ah))
    firmware = Firmware(profile, N_SERIES, pack.capacity_ah, cfg)
    firmware.estimator.learn_efficiency = learn
    one_c_a = pack.capacity_ah
    cycle_s = OUTAGE_S + RECHARGE_S + REST_S
    duty = StepProfile((0.0, OUTAGE_S, OUTAGE_S + RECHARGE_S), (-one_c_a, one_c_a, 0.0), "a",
                       period_s=cycle_s)
    squares, cycle_max_pct, efficiency, k = [], [], [], 0
    for _ in range(args.cycles):
        worst = 0.0
        for _ in range(round(cycle_s / args.tick_s)):
            now_s = k * args.tick_s
            act = firmware.step(pack.measure(), now_s)
            pack.actuate(act)
            pack.advance(duty.demand(now_s))
            k += 1
            error = act.estimate.cell_soc - pack.true_soc
            squares.append(float(np.mean(error * error)))
            worst = max(worst, float(np.abs(error).max()))
        cycle_max_pct.append(round(100.0 * worst, 3))
        efficiency.append(round(act.estimate.coulombic_efficiency, 4))
    return {"rmse_pct": round(100.0 * float(np.sqrt(np.mean(squares))), 3),
            "max_pct": max(cycle_max_pct), "last_cycle_max_pct": cycle_max_pct[-1],
            "cycle_max_pct": cycle_max_pct, "efficiency_by_cycle": efficiency,
            "state": act.state.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chemistry", default="na-nvpf", choices=sorted(PRESETS))
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--plant-efficiency", type=float, default=0.95)
    parser.add_argument("--profile-efficiency", type=float, default=1.0)
    parser.add_argument("--offset-sigma-c", type=float, default=None,
                        help="the current sensor's offset doubt, as a share of 1C "
                        "(default: the configuration's, 0.01)")
    parser.add_argument("--tick-s", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true",
                        help="two cycles at a 2 s tick: that the benchmark runs")
    args = parser.parse_args()
    if args.quick:
        args.cycles, args.tick_s = 2, 2.0
    start = time.perf_counter()
    results = {name: run(args, learn) for name, learn in (("learning", True), ("fixed", False))}
    print(json.dumps({
        "benchmark": "coulombic_efficiency", "chemistry": args.chemistry,
        "cycles": args.cycles, "plant_efficiency": args.plant_efficiency,
        "profile_efficiency": args.profile_efficiency, "offset_sigma_c": args.offset_sigma_c,
        "tick_s": args.tick_s, **results, "wall_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
