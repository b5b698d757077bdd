"""How close `bms-emu fit` comes to a cell it was not told about: the lab procedure
(`hil.fitting.lab_procedure`) run on each preset's simulated cell, fitted, and the fit held
against the truth. Prints one JSON line.

    .venv/bin/python benchmarks/fit_accuracy.py [--chemistry na-nfm na-nvpf] [--seed 1]
        [--quick]

Per chemistry: capacity and coulombic efficiency against the cell's (the fitted capacity
ends at the C/20 cut-off, a few tenths of a percent short of the table's 0 %), the OCV
branches' rms and largest error over 10-90 % SoC, R0 at 50 % SoC against the cell's (its
resistance spread included), and the held-out residual table `bms-emu fit` prints. The full
procedure is about 80 simulated hours a cell (a minute of CPU); `--quick` takes the tests'
shortened one on na-nfm alone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bms.data.presets import PRESETS
from hil.fitting.fit import FitOptions, fit_cell, read_all
from hil.fitting.lab_procedure import write_lab_files

FILES = ("ocv.csv", "hppc.csv", "cycles.csv")
OCV_CHECK_SOC = np.linspace(0.1, 0.9, 81)


def one(name: str, seed: int, quick: bool) -> dict:
    true = PRESETS[name]
    with tempfile.TemporaryDirectory() as folder:
        started = time.process_time()
        truth = write_lab_files(true, Path(folder), seed=seed, quick=quick)
        simulated_cpu_s = time.process_time() - started
        started = time.process_time()
        result = fit_cell(read_all([str(Path(folder) / f) for f in FILES]), FitOptions())
        fit_cpu_s = time.process_time() - started
    chem = result.chemistry
    ocv = {}
    for branch in ("charge_v", "discharge_v"):
        error_v = (np.interp(OCV_CHECK_SOC, chem.ocv.soc, getattr(chem.ocv, branch))
                   - np.interp(OCV_CHECK_SOC, true.ocv.soc, getattr(true.ocv, branch)))
        ocv[branch] = {"rms_mv": round(float(np.sqrt(np.mean(error_v ** 2))) * 1e3, 2),
                       "max_mv": round(float(np.abs(error_v).max()) * 1e3, 2)}
    mid = (np.array([0.5]), np.array([25.0]))
    r0_true = float(true.ecm.lookup(*mid)[0, 0]) * truth["r_factor"]
    r0_fit = float(chem.ecm.lookup(*mid)[0, 0])
    return {
        "capacity_ah": round(chem.capacity_ah, 5), "capacity_true_ah": round(
            truth["capacity_ah"], 5),
        "capacity_error_pct": round(100 * (chem.capacity_ah / truth["capacity_ah"] - 1), 3),
        "coulombic_efficiency": round(chem.coulombic_efficiency, 5),
        "coulombic_efficiency_true": truth["coulombic_efficiency"],
        "ocv_10_90_pct": ocv,
        "r0_50pct_error_pct": round(100 * (r0_fit / r0_true - 1), 2),
        "held_out": result.held_out,
        "residuals": [r.as_dict() for r in result.residuals],
        "simulate_cpu_s": round(simulated_cpu_s, 1), "fit_cpu_s": round(fit_cpu_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chemistry", nargs="+", default=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    names = ["na-nfm"] if args.quick else args.chemistry
    print(json.dumps({"benchmark": "fit_accuracy", "seed": args.seed, "quick": args.quick,
                      "cases": {n: one(n, args.seed, args.quick) for n in names}}))


if __name__ == "__main__":
    main()
