"""State-of-charge accuracy against the simulated pack as truth. Prints one JSON line per
case (plant x duty x start).

    .venv/bin/python benchmarks/soc_accuracy.py [--series 16] [--datacenter-hours 24]
    .venv/bin/python benchmarks/soc_accuracy.py --plants diffusion,three-rc   # foreign, full
    .venv/bin/python benchmarks/soc_accuracy.py --quick --plants three-rc --profiles pulses

Each case: a plant on a duty with sensor noise as `bms-emu run` has it and a current-sensor
offset (`--current-offset-c`, default 0.5 % of 1C). Errors are the pack SoC (estimate
against the same rule applied to the true cells) and every cell's SoC, taken once a second
after the first 30 minutes. `coulomb_*` is plain coulomb counting of the same current
sensor with the estimator's capacity, each cell from where the estimator starts it, less
the bleed current the firmware switches on, the pack by the same rule, against the same
truth; `harm_pct` is the estimator's RMSE minus
the counting's (what the estimator costs, or gains, over counting).

`--plants` chooses the cells and what the estimator knows of them (default: `model`):
  - `model`: the plant is the estimator's own chemistry preset;
  - `mismatched`: the plant is another model of the cell: OCV off by up to 5 mV in a slow
    wave, a hysteresis gap 30 % wider that swings slower, resistances 30 % higher and time
    constants twice as long;
  - `profile`: the estimator has only what a user brings in a cell profile: one OCV curve
    from a C/20 discharge of the plant (its discharge branch less the C/20 resistive drop:
    no hysteresis; its 100 % point at the charge voltage), the capacity and the voltage
    limits; no ECM values;
  - foreign plants (`hil.foreign_cells`: `diffusion`, `three-rc`): cell models the
    estimator does not share; it gets the profile a user makes of one such cell in the lab
    (C/20 discharge and charge, capacity from the discharge, no ECM values).
The first three run on each `--chemistry` (na-nfm and na-nvpf by default).

`--profiles` (duties): `datacenter` (the built-in UPS day), `pulses` (random -2C..+0.5C
pulses with rests, from high to low SoC), `ups` (an outage at a 2-hour rate that the
firmware's limits end at empty, a rest, a recharge and float: `UPS_OUTAGE`). Default:
datacenter and pulses for the first three plants, pulses and ups for the foreign ones.

`--start` (default: minus-30 for the first three plants, correct and stored-50 for the
foreign ones):
  - `minus-30`: the estimator starts 30 points below the true SoC (a stale stored value);
    its coulomb reference starts from the true cells (drift only);
  - `correct`: each cell's stored SoC is its true one; counting starts there too;
  - `stored-50`: the stored SoC is 50 % while the pack is at 90-95 %; counting starts at
    50 % too (and never recovers).

Goals: minus-30: na-nfm RMSE <= 1 %, max <= 2 %, within 2 % in <= 15 min; na-nvpf RMSE
<= 2.5 %, max <= 5 %. correct (issue 18): RMSE <= 1.5 %, max <= 3 %, harm <= 0.5 points;
stored-50: RMSE <= 3 %, max <= 6 %.

`--quick`: 4 cells in series and 36 minutes of each duty (a test's run, not figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from bms.core.estimator import pack_soc
from bms.core.firmware import Firmware
from bms.data.chemistry import Chemistry, parse_profile
from bms.data.presets import PRESETS
from hil.cells import CellArray
from hil.foreign_cells import FOREIGN_PLANTS, user_profile
from hil.loads import StepProfile, datacenter, pulses
from hil.pack import PackSpec, SimulatedPack
from hil.sensors import SensorSpec

TICK_S = 0.1
SKIP_S = 1800.0
QUICK_HOURS = 0.6
QUICK_SERIES = 4
# minus-30 goals per chemistry: RMSE %, max %, within 2 % after s (None: not asked).
LEGACY_GOALS = {"na-nfm": (1.0, 2.0, 900.0), "na-nvpf": (2.5, 5.0, None)}
# `ups`: (start hour, power as a fraction of the pack's nominal energy per hour; positive =
# charge), repeating every 10 h: float at full, an outage at a 2-hour rate (the firmware's
# discharge limit ends it at empty), half an hour's rest, a recharge at a 4-hour rate.
UPS_OUTAGE = ((0.0, 0.05), (1.0, -0.5), (3.5, 0.0), (4.0, 0.25), (9.5, 0.05))
UPS_PERIOD_H = 10.0
INITIAL_SOC = {"datacenter": 0.9, "pulses": 0.95, "ups": 0.95}


class Start(NamedTuple):
    stored_soc: Callable[[SimulatedPack], float | np.ndarray]  # pack or per cell, fraction
    coulomb_from_stored: bool  # False: the coulomb reference starts from the truth
    goals: tuple[float, float, float | None] | None  # RMSE, max, harm; None: LEGACY_GOALS


STARTS = {
    "minus-30": Start(lambda pack: pack.true_pack_soc - 0.3, False, None),
    "correct": Start(lambda pack: pack.true_soc.copy(), True, (1.5, 3.0, 0.5)),
    "stored-50": Start(lambda pack: 0.5, True, (3.0, 6.0, None)),
}
LEGACY_STARTS = ("minus-30",)
FOREIGN_STARTS = ("correct", "stored-50")
LEGACY_PROFILES = ("datacenter", "pulses")
FOREIGN_PROFILES = ("pulses", "ups")


def mismatched(chem: Chemistry) -> Chemistry:
    """The same cell as another model would have it (see the module docstring)."""
    ocv = chem.ocv
    wave = 0.005 * np.sin(2.0 * np.pi * 1.5 * ocv.soc)
    mid, half = ocv.mid_v + wave, ocv.half_gap_v * 1.3
    ecm = chem.ecm.scaled(1.3)
    return dataclasses.replace(
        chem,
        ocv=dataclasses.replace(ocv, charge_v=mid + half, discharge_v=mid - half,
                                hysteresis_rate=ocv.hysteresis_rate * 0.6),
        ecm=dataclasses.replace(ecm, tau1_s=ecm.tau1_s * 2.0, tau2_s=ecm.tau2_s * 2.0))


def preset_profile(chem: Chemistry) -> Chemistry:
    """The cell as a user would describe it from a slow discharge (see the docstring)."""
    r_total = chem.ecm.lookup(chem.ocv.soc, np.full(chem.ocv.soc.size, 25.0))
    drop_v = 0.05 * chem.capacity_ah * (r_total[0] + r_total[1] + r_total[3])
    voltage_v = np.maximum(chem.ocv.discharge_v - drop_v, chem.limits.v_min)
    # 100 % is where the user's CC-CV charge ended: at the charge voltage (parse_profile
    # holds a table to that).
    voltage_v[-1] = chem.thresholds.charge_v
    return parse_profile({
        "name": f"{chem.name}-profile",
        "capacity_ah": chem.capacity_ah,
        "limits": {"v_min": chem.limits.v_min, "v_max": chem.limits.v_max},
        "thresholds": dataclasses.asdict(chem.thresholds),
        "ocv": {"soc_pct": (chem.ocv.soc * 100.0).tolist(),
                "voltage_v": voltage_v.tolist()},
    }, "benchmark")


PRESET_PLANTS = {  # name -> (plant's chemistry, estimator's chemistry) from a preset
    "model": lambda chem: (chem, chem),
    "mismatched": lambda chem: (mismatched(chem), chem),
    "profile": lambda chem: (chem, preset_profile(chem)),
}


class Plant(NamedTuple):
    chemistry: Chemistry  # the plant's
    estimator: Chemistry  # what the estimator is given
    cell_model: Callable[..., Any]  # builds the plant's cells (SimulatedPack's cell_model)


@functools.cache
def foreign_estimator_chemistry(name: str) -> Chemistry:
    """The profile a user makes of a foreign cell in the lab (hil.foreign_cells.lab)."""
    return parse_profile(user_profile(FOREIGN_PLANTS[name]), f"lab profile of {name}")


def build_plant(plant: str, chem_name: str | None, seed: int) -> Plant:
    if plant in FOREIGN_PLANTS:
        spec = FOREIGN_PLANTS[plant]
        return Plant(spec.chemistry(), foreign_estimator_chemistry(plant),
                     spec.cell_model(seed))
    plant_chem, estimator_chem = PRESET_PLANTS[plant](PRESETS[chem_name])
    return Plant(plant_chem, estimator_chem, CellArray)


def duty(profile_name: str, pack: SimulatedPack) -> StepProfile:
    if profile_name == "datacenter":
        return datacenter(pack.energy_wh)
    if profile_name == "pulses":
        return pulses(pack.capacity_ah, seed=1)
    return StepProfile(tuple(h * 3600.0 for h, _ in UPS_OUTAGE),
                       tuple(f * pack.energy_wh for _, f in UPS_OUTAGE), "w",
                       period_s=UPS_PERIOD_H * 3600.0)


def rms(x: np.ndarray) -> float:
    return round(float(np.sqrt(np.mean(x ** 2))), 3)


def scenario(plant_name: str, chem_name: str | None, profile_name: str, start_name: str,
             hours: float, series: int, offset_c: float) -> dict:
    plant = build_plant(plant_name, chem_name, seed=0)
    pack = SimulatedPack(plant.chemistry,
                         PackSpec(n_series=series, initial_soc=INITIAL_SOC[profile_name],
                                  sensors=SensorSpec(current_offset_c=offset_c)),
                         TICK_S, cell_model=plant.cell_model)
    profile = duty(profile_name, pack)
    start = STARTS[start_name]
    start_true = pack.true_pack_soc
    stored = start.stored_soc(pack)
    capacity_ah = plant.estimator.capacity_ah  # one cell in parallel
    capacity = np.full(series, capacity_ah)
    firmware = Firmware(plant.estimator, series, capacity_ah, stored_soc=stored)
    # Counting per cell (as the estimator's cells start), the pack by the same rule.
    coulomb = (np.broadcast_to(stored, (series,)) if start.coulomb_from_stored
               else pack.true_soc).astype(float)
    pack_err, cell_err, cc_err, times, truth = [], [], [], [], []
    every = round(1.0 / TICK_S)
    for k in range(round(hours * 3600.0 / TICK_S)):
        now_s = k * TICK_S
        m = pack.measure()
        act = firmware.step(m, now_s)
        pack.actuate(act)
        # The bleed current the firmware switched on is counted as the firmware knows it.
        bleed_a = act.balance_mask * (m.cell_voltage_v / pack.spec.balance_resistor_ohm)
        coulomb += (m.current_a - bleed_a) * TICK_S / (capacity_ah * 3600.0)
        if k % every == 0:
            true = pack.true_pack_soc
            times.append(now_s)
            truth.append(true)
            pack_err.append(act.soc - true)
            cell_err.append(np.abs(act.estimate.cell_soc - pack.true_soc).max())
            cc_err.append(pack_soc(coulomb, capacity) - true)
        pack.advance(profile.demand(now_s))
    t = np.array(times)
    pack_err, cell_err, cc_err = (np.abs(np.array(x)) * 100.0 for x in (pack_err, cell_err,
                                                                       cc_err))
    after = t >= SKIP_S
    within = np.nonzero(pack_err <= 2.0)[0]
    outside = np.nonzero(pack_err > 2.0)[0]
    result = {
        "benchmark": "soc_accuracy",
        "plant": plant_name,
        "chemistry": plant.chemistry.name,
        "estimator_chemistry": plant.estimator.name,
        "profile": profile_name,
        "start": start_name,
        "series": series,
        "hours": hours,
        "current_offset_c": offset_c,
        "start_error_pct": round((pack_soc(np.broadcast_to(stored, (series,)), capacity)
                                  - start_true) * 100.0, 1),
        "true_soc_start_pct": round(start_true * 100.0, 1),
        "true_soc_end_pct": round(pack.true_pack_soc * 100.0, 1),
        "true_soc_min_pct": round(min(truth) * 100.0, 1),
        "pack_rmse_pct": rms(pack_err[after]),
        "pack_max_pct": round(float(pack_err[after].max()), 3),
        "cell_max_pct": round(float(cell_err[after].max()), 3),
        "within_2pct_after_s": float(t[within[0]]) if within.size else None,
        "stays_within_2pct_after_s": (float(t[outside[-1]] + 1.0) if outside.size else 0.0),
        "coulomb_rmse_pct": rms(cc_err[after]),
        "coulomb_max_pct": round(float(cc_err[after].max()), 3),
        "coulomb_final_pct": round(float(cc_err[-1]), 3),
        "current_offset_true_a": round(float(pack.sensors.current_offset_a), 5),
        "current_offset_est_a": round(act.estimate.current_offset_a, 5),
    }
    result["harm_pct"] = round(result["pack_rmse_pct"] - result["coulomb_rmse_pct"], 3)
    result.update(goal_figures(result, start, chem_name))
    return result


def goal_figures(result: dict, start: Start, chem_name: str | None) -> dict:
    """The goals that apply to the case and whether it meets them."""
    if start.goals is None:
        rmse_goal, max_goal, conv_goal = LEGACY_GOALS[chem_name or "na-nfm"]
        met = (result["pack_rmse_pct"] <= rmse_goal and result["pack_max_pct"] <= max_goal
               and (conv_goal is None
                    or (result["within_2pct_after_s"] or math.inf) <= conv_goal))
        return {"goal": {"rmse_pct": rmse_goal, "max_pct": max_goal,
                         "within_2pct_s": conv_goal}, "meets_goal": bool(met)}
    rmse_goal, max_goal, harm_goal = start.goals
    met = (result["pack_rmse_pct"] <= rmse_goal and result["pack_max_pct"] <= max_goal
           and (harm_goal is None or result["harm_pct"] <= harm_goal))
    return {"goal": {"rmse_pct": rmse_goal, "max_pct": max_goal, "harm_pct": harm_goal},
            "meets_goal": bool(met)}


def choices(parser: argparse.ArgumentParser, text: str | None, allowed: list[str],
            option: str) -> list[str] | None:
    """A comma-separated option's values; a parser error names the unknown ones."""
    if text is None:
        return None
    values = text.split(",")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        parser.error(f"{option}: unknown {unknown}; choose from {allowed}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--datacenter-hours", type=float, default=24.0)
    parser.add_argument("--pulses-hours", type=float, default=4.0)
    parser.add_argument("--ups-hours", type=float, default=UPS_PERIOD_H)
    parser.add_argument("--chemistry", action="append", choices=sorted(PRESETS))
    parser.add_argument("--plants", default="model",
                        help="comma-separated: model, mismatched, profile, "
                             f"{', '.join(FOREIGN_PLANTS)} (see above)")
    parser.add_argument("--profiles", help="comma-separated: datacenter, pulses, ups")
    parser.add_argument("--start", help="comma-separated: minus-30, correct, stored-50")
    parser.add_argument("--current-offset-c", type=float, default=0.005,
                        help="the current sensor's offset as a fraction of 1C (0.005)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_SERIES} cells and {QUICK_HOURS} h of each duty")
    args = parser.parse_args()
    plants = choices(parser, args.plants, [*PRESET_PLANTS, *FOREIGN_PLANTS], "--plants")
    profiles = choices(parser, args.profiles, ["datacenter", "pulses", "ups"], "--profiles")
    starts = choices(parser, args.start, list(STARTS), "--start")
    hours = {"datacenter": args.datacenter_hours, "pulses": args.pulses_hours,
             "ups": args.ups_hours}
    series = QUICK_SERIES if args.quick else args.series
    for plant in plants:
        foreign = plant in FOREIGN_PLANTS
        chems = [None] if foreign else args.chemistry or ["na-nfm", "na-nvpf"]
        for chem in chems:
            for profile in profiles or (FOREIGN_PROFILES if foreign else LEGACY_PROFILES):
                for start in starts or (FOREIGN_STARTS if foreign else LEGACY_STARTS):
                    run_h = QUICK_HOURS if args.quick else hours[profile]
                    print(json.dumps(scenario(plant, chem, profile, start, run_h, series,
                                              args.current_offset_c)), flush=True)


if __name__ == "__main__":
    main()
