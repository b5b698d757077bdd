"""The pack-voltage drift figure (`pack_v_drift_v`, `bms.core.pack_v_drift`) on healthy
packs: how close its noise comes to the VOLTAGE_SENSOR_FAULT row's threshold. Prints one
JSON line.

    .venv/bin/python benchmarks/pack_v_drift.py [--hours 2] [--series 16 416]
        [--chemistry na-nfm na-nvpf] [--tick-s 0.1 1] [--profile rest pulses cv]

Each case runs the firmware against a healthy simulated pack (balancing on, at any current:
the bleeds' sense-wire drop is in the readings) and reports the figure's largest value once
judged, its rms, the share of steps a cell bled, the row's threshold and the margin
(threshold / largest), and every VOLTAGE_SENSOR_FAULT event. `cv` is a 0.5C charge from 70 %
SoC into the charger's constant voltage and its taper. The whole default matrix (24 cases of
2 h) takes about 20 minutes; the sensor noise follows `--seed`, so cases of one seed share it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from dataclasses import replace

from bms.core.firmware import Firmware
from bms.data.config import BalancingWhen, default_config
from bms.data.presets import PRESETS
from bms.data.quantities import QUANTITY_INDEX
from hil.loads import StepProfile, constant, pulses
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run

FIGURE = QUANTITY_INDEX["pack_v_drift_v"]
INITIAL_SOC = {"rest": 0.6, "pulses": 0.95, "cv": 0.7}


def profile_for(name: str, capacity_ah: float) -> StepProfile:
    if name == "rest":
        return constant(0.0, "a")
    if name == "pulses":
        return pulses(capacity_ah)
    return constant(0.5 * capacity_ah, "a")


def run_case(chemistry: str, series: int, tick_s: float, profile: str, hours: float,
             seed: int) -> dict:
    pack = SimulatedPack(PRESETS[chemistry], PackSpec(n_series=series, seed=seed,
                                                      initial_soc=INITIAL_SOC[profile]), tick_s)
    cfg = default_config(pack.chem, series, pack.capacity_ah)
    cfg = replace(cfg, balancing=replace(cfg.balancing, when=BalancingWhen.ALWAYS))
    firmware = Firmware(pack.chem, series, pack.capacity_ah, cfg)
    (row,) = [r for r in cfg.protection if r.quantity == "pack_v_drift_v"]
    seen = {"max": 0.0, "at_s": 0.0, "sq": 0.0, "n": 0, "bleeding": 0, "steps": 0}

    def on_step(now_s, m, act) -> None:
        seen["steps"] += 1
        seen["bleeding"] += bool(act.balance_mask.any())
        value = float(firmware.quantities[FIGURE])
        if value > 0.0:  # judged (past the warm-up)
            seen["n"] += 1
            seen["sq"] += value * value
            if value > seen["max"]:
                seen["max"], seen["at_s"] = value, now_s

    start = time.perf_counter()
    result = run(pack, firmware, profile_for(profile, pack.capacity_ah),
                 RunOptions(duration_s=hours * 3600.0, tick_s=tick_s), on_step=on_step)
    events = [f"t={e.t_s:g} s {e.name} {e.level} {e.action} {e.value!r}"
              for e in result.totals.events if e.name == "VOLTAGE_SENSOR_FAULT"]
    return {
        "max_v": round(seen["max"], 5), "max_at_s": seen["at_s"],
        "rms_v": round(math.sqrt(seen["sq"] / max(seen["n"], 1)), 5),
        "threshold_v": row.threshold,
        "margin": round(row.threshold / seen["max"], 2) if seen["max"] else None,
        "bleeding_share": round(seen["bleeding"] / max(seen["steps"], 1), 3),
        "events": events, "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--series", type=int, nargs="+", default=[16, 416])
    parser.add_argument("--chemistry", nargs="+", default=["na-nfm", "na-nvpf"])
    parser.add_argument("--tick-s", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--profile", nargs="+", choices=tuple(INITIAL_SOC),
                        default=list(INITIAL_SOC))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="one short case: 16S na-nfm, 1 s tick, pulses, 0.2 h")
    args = parser.parse_args()
    if args.quick:
        args.hours, args.series, args.chemistry = 0.2, [16], ["na-nfm"]
        args.tick_s, args.profile = [1.0], ["pulses"]
    cases = {}
    for chemistry, series, tick_s, profile in itertools.product(
            args.chemistry, args.series, args.tick_s, args.profile):
        name = f"{chemistry}_{series}s_{tick_s:g}s_{profile}"
        cases[name] = run_case(chemistry, series, tick_s, profile, args.hours, args.seed)
    worst = max(cases.values(), key=lambda c: c["max_v"])
    print(json.dumps({"benchmark": "pack_v_drift", "hours": args.hours, "seed": args.seed,
                      "worst_max_v": worst["max_v"], "worst_margin": worst["margin"],
                      "cases": cases}))


if __name__ == "__main__":
    main()
