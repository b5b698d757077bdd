"""The lab procedure `bms-emu fit` expects, run on the emulator's own simulated cell: lab
files with a known truth, for the fit's tests and for trying the fit before a lab week.

Three files, as a lab would take them (README "Fit a cell profile from lab data"):
- ocv.csv: a full charge, a C/20 discharge to the cut-off and a C/20 CC-CV charge, each
  followed by a long rest (the OCV's two branches, the capacity);
- hppc.csv: from full, at each SoC level a 1C discharge pulse and a 0.75C charge pulse with
  40 s rests, then a C/3 step down by a share of the capacity and a rest (R0, RC pairs);
- cycles.csv: full cycles at C/3 between the limits (capacity and coulombic efficiency).
Each file is a fresh run of one seeded cell (the same cell: the spread comes from the seed),
at a tick that suits it: a pulse needs a fine one, a C/20 run does not.

    python -m hil.fitting.lab_procedure OUTDIR [--chemistry na-nfm] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms.core.signals import Actuation, Contactors
from bms.data.chemistry import Chemistry
from bms.data.presets import resolve_chemistry
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack
from hil.sensors import SensorSpec

# A lab cycler's channel: finer than a BMS's AFE, with a small offset.
LAB_SENSORS = SensorSpec(cell_noise_v=0.5e-3, cell_lsb_v=0.1e-3, current_offset_c=1e-4,
                         current_gain_error=1e-3, current_noise_c=2e-4, cells_per_temp_sensor=1)
CLOSED = Contactors(negative=True, precharge=False, positive=True)
STEP_MIN_S = 60.0  # a CC-CV step ends on its taper only after this long


@dataclass(frozen=True)
class Step:
    """Hold `c_rate` (positive = charge, 0 = rest) until the first stop: `duration_s`; the
    reading at the cut-off (discharge) or, charging, the current tapering below `taper_c`
    at the charge voltage (CC-CV); `capacity_share` of the capacity moved."""

    c_rate: float = 0.0
    duration_s: float = math.inf
    taper_c: float | None = None
    capacity_share: float | None = None


def rest(seconds: float) -> Step:
    return Step(duration_s=seconds)


def ocv_test(rest_s: float = 7200.0) -> list[Step]:
    return [Step(1 / 3, taper_c=0.02), rest(rest_s), Step(-0.05), rest(rest_s),
            Step(0.05, taper_c=0.01), rest(rest_s)]


def hppc_test(levels: int = 10, rest_s: float = 3600.0, step_c: float = 1 / 3) -> list[Step]:
    steps = [Step(1 / 3, taper_c=0.02), rest(rest_s)]
    for _ in range(levels):
        steps += [Step(-1.0, duration_s=10), rest(40), Step(0.75, duration_s=10), rest(40),
                  Step(-step_c, capacity_share=1.0 / levels), rest(rest_s)]
    return steps


def cycle_test(cycles: int = 2, c_rate: float = 1 / 3, rest_s: float = 3600.0) -> list[Step]:
    steps = [Step(-c_rate), rest(rest_s)]
    for _ in range(cycles):
        steps += [Step(c_rate, taper_c=0.02), rest(rest_s), Step(-c_rate), rest(rest_s)]
    return steps


def run_procedure(chem: Chemistry, steps: list[Step], path: Path, tick_s: float, seed: int,
                  initial_soc: float, cutoff_v: float | None = None,
                  ambient_c: float = 25.0) -> SimulatedPack:
    """Runs `steps` on one simulated cell and writes its readings, one row per tick, as
    time_s,current_a,voltage_v,temp_c. The cut-off defaults to the OCV table's 0 % point
    (where the cell's rated capacity ends). Returns the pack, for its truth."""
    pack = SimulatedPack(chem, PackSpec(n_series=1, initial_soc=initial_soc, seed=seed,
                                        sensors=LAB_SENSORS, ambient_c=ambient_c), tick_s)
    one_c_a = pack.capacity_ah
    cutoff_v = float(pack.chem.ocv.discharge_v[0]) if cutoff_v is None else cutoff_v
    pack.actuate(Actuation("RUN", CLOSED, np.zeros(1, dtype=bool), 10.0 * one_c_a,
                           10.0 * one_c_a, 0, initial_soc))
    t_s = 0.0
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["time_s", "current_a", "voltage_v", "temp_c"])
        for step in steps:
            demand = Demand(step.c_rate * one_c_a, "a")
            moved_ah, elapsed_s = 0.0, 0.0
            while elapsed_s < step.duration_s:
                pack.advance(demand)
                m = pack.measure()
                t_s += tick_s
                elapsed_s += tick_s
                current_a, voltage_v = m.current_a, float(m.cell_voltage_v[0])
                out.writerow([f"{t_s:.1f}", f"{current_a:.5f}", f"{voltage_v:.5f}",
                              f"{float(m.temperature_c[0]):.2f}"])
                moved_ah += abs(pack.current_a) * tick_s / 3600.0
                if step.c_rate < 0 and voltage_v <= cutoff_v:
                    break
                if step.taper_c is not None and elapsed_s > STEP_MIN_S and (
                        pack.current_a < step.taper_c * one_c_a):
                    break
                if step.capacity_share is not None and (
                        moved_ah >= step.capacity_share * one_c_a):
                    break
    return pack


def write_lab_files(chem: Chemistry, folder: Path, seed: int = 0, quick: bool = False) -> dict:
    """ocv.csv, hppc.csv and cycles.csv of one seeded cell in `folder`; returns the truth
    (capacity, resistance factor, efficiency) the fit should find. `quick`: 30 min rests
    and five HPPC levels stepped at 1C (for tests: a fifth of the simulated ticks)."""
    rest_s = 1800.0 if quick else 3600.0
    pack = run_procedure(chem, ocv_test(rest_s), folder / "ocv.csv", 30.0, seed, 0.95)
    hppc = hppc_test(5, rest_s, step_c=1.0) if quick else hppc_test(10, rest_s)
    run_procedure(chem, hppc, folder / "hppc.csv", 1.0, seed, 0.98)
    run_procedure(chem, cycle_test(2, rest_s=rest_s), folder / "cycles.csv", 5.0, seed, 0.5)
    return {"chemistry": chem.name, "capacity_ah": float(pack.true_capacity_ah[0]),
            "r_factor": float(pack.cells.r_factor[0, 0]),
            "coulombic_efficiency": chem.coulombic_efficiency}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hil.fitting.lab_procedure",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--chemistry", default="na-nfm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="30 min rests, 5 HPPC levels at 1C")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    truth = write_lab_files(resolve_chemistry(args.chemistry), args.folder, args.seed,
                            args.quick)
    (args.folder / "truth.json").write_text(json.dumps(truth) + "\n")
    print(json.dumps(truth))


if __name__ == "__main__":
    main()
