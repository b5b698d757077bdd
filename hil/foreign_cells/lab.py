"""What a user has of a cell: the slow lab cycle they run on one, and the cell profile they
make of it, with no knowledge of the model inside.

The procedure is the usual first lab week: a cell charged (CC-CV) and rested for an hour,
a C/20 discharge to the datasheet cut-off (which measures the capacity), an hour's rest, a
C/20 charge to the charge voltage with its CV taper to C/100. The terminal voltages,
tabulated against the SoC counted on each half, are the profile's OCV branches: they carry
the C/20 resistive drop and the diffusion overpotential, as real lab data does. No ECM
values: the estimator then uses its defaults.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hil.foreign_cells.model import ForeignCellSpec

LAB_DT_S = 10.0  # the lab's sampling period (the cells' step: their linear parts are exact)
LAB_C_RATE = 0.05  # C/20
TAPER_C = 0.01  # the CV phase ends below C/100
REST_S = 3600.0
PROFILE_SOC_PCT = np.linspace(0.0, 100.0, 51)  # the profile's table: every 2 %
TEMPERATURE_C = 25.0


class LabCurves(NamedTuple):
    """The whole procedure as a cycler logs it (positive current = charging)."""

    time_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    phase: np.ndarray  # 0 rest, 1 discharge, 2 charge (CC and CV)


def slow_cycle(spec: ForeignCellSpec) -> LabCurves:
    """Runs the procedure of the module docstring on one nominal cell of `spec`."""
    one = np.ones((1, 1))
    chem = spec.chemistry()
    cells = spec.cell_model(None)(chem, one.copy(), spec.capacity_ah * one, one, 0.0 * one,
                                  LAB_DT_S, TEMPERATURE_C * one)
    c_a = LAB_C_RATE * spec.capacity_ah
    charge_v, cutoff_v = spec.thresholds.charge_v, spec.thresholds.undervoltage_v
    log: list[tuple[float, float, int]] = []

    def tick(wanted_a: float, phase: int) -> tuple[float, float]:
        emf_v, r_ohm = cells.prepare()
        i = min(wanted_a, (charge_v - emf_v) / r_ohm) if wanted_a > 0 else wanted_a
        v = float(cells.advance(i)[0])
        cells.slow_step(TEMPERATURE_C * one, LAB_DT_S)
        log.append((i, v, phase))
        return i, v

    def rest() -> None:
        for _ in range(round(REST_S / LAB_DT_S)):
            tick(0.0, 0)

    rest()
    while tick(-c_a, 1)[1] > cutoff_v:
        pass
    rest()
    while tick(c_a, 2)[0] > TAPER_C * spec.capacity_ah:
        pass
    current, voltage, phase = (np.array(col) for col in zip(*log, strict=True))
    return LabCurves(LAB_DT_S * np.arange(1, len(log) + 1), current, voltage,
                     phase.astype(int))


def user_profile(spec: ForeignCellSpec, curves: LabCurves | None = None) -> dict:
    """The cell profile (what `bms.data.chemistry.parse_profile` reads) a user makes from
    `curves` (by default `slow_cycle(spec)`): the capacity is the charge of the C/20
    discharge; SoC on the discharge is 1 - charge out / capacity, on the charge the charge
    in over all the charge put in (the user does not know the coulombic efficiency). The
    limits and thresholds are the datasheet's."""
    lab = curves or slow_cycle(spec)
    charge_as = lab.current_a * LAB_DT_S
    out = lab.phase == 1
    into = lab.phase == 2
    capacity_as = -charge_as[out].sum()
    soc_out = 1.0 + np.cumsum(charge_as[out]) / capacity_as
    soc_in = np.cumsum(charge_as[into]) / charge_as[into].sum()
    grid = PROFILE_SOC_PCT / 100.0
    discharge = np.interp(grid, soc_out[::-1], lab.voltage_v[out][::-1])
    charge = np.interp(grid, soc_in, lab.voltage_v[into])
    thr, lim = spec.thresholds, spec.limits
    full_v = round(thr.charge_v, 3)
    # As a user tidies measured curves: each rising, the charge branch above the discharge
    # one, inside the limits, and the charge branch's end at the charge voltage.
    discharge = np.clip(np.maximum.accumulate(discharge), lim.v_min, full_v)
    charge = np.clip(np.maximum(np.maximum.accumulate(charge), discharge), lim.v_min, full_v)
    charge[-1] = full_v
    return {
        "name": f"{spec.name}-lab",
        "description": f"profile from a C/20 cycle of one {spec.name} cell",
        "capacity_ah": round(capacity_as / 3600.0, 4),
        "limits": {"v_min": lim.v_min, "v_max": round(lim.v_max, 3)},
        "thresholds": {
            "charge_v": full_v,
            "overvoltage_v": round(thr.overvoltage_v, 3),
            "overvoltage_release_v": round(thr.overvoltage_release_v, 3),
            "undervoltage_v": thr.undervoltage_v,
            "undervoltage_release_v": thr.undervoltage_release_v,
        },
        "ocv": {"soc_pct": PROFILE_SOC_PCT.tolist(),
                "charge_v": np.round(charge, 4).tolist(),
                "discharge_v": np.round(discharge, 4).tolist()},
    }
