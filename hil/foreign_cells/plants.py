"""The foreign plants: two sodium-ion-like cells built to differ from the estimator's model.

The estimator (bms/core/soc_filter.py) assumes a 2-RC circuit with one-state hysteresis
that stays where the last current left it, on an OCV table of the bulk SoC. These cells
break those assumptions the way real cells do; their shapes and figures are assumptions
chosen to be plausible for sodium-ion cells (hard-carbon plateau and hysteresis, a cathode
step, diffusion-limited particles), not measurements of a product.
"""

from __future__ import annotations

import math

import numpy as np

from bms.data.chemistry import CellLimits, ThermalParams, Thresholds
from hil.foreign_cells.model import ForeignCellSpec

_SOC = np.linspace(0.0, 1.0, 201)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _limits(v_max: float) -> CellLimits:
    return CellLimits(v_min=1.5, v_max=v_max, charge_temp_min_c=-20.0, charge_temp_max_c=55.0,
                      discharge_temp_min_c=-40.0, discharge_temp_max_c=60.0,
                      max_charge_c=1.0, max_discharge_c=3.0)


def _thresholds(full_v: float, undervoltage_v: float) -> Thresholds:
    return Thresholds(charge_v=full_v, overvoltage_v=full_v + 0.08,
                      overvoltage_release_v=full_v - 0.05, undervoltage_v=undervoltage_v,
                      undervoltage_release_v=undervoltage_v + 0.5,
                      cold_charge_derate_below_c=0.0)


# --- diffusion: solid diffusion, a flat plateau and a step, hysteresis that relaxes -----

# A steep rise from empty, a plateau of 1 mV per % (15-45 %), a 0.28 V step at 50 % over
# about 5 % of SoC, then a slope of 0.9 V per unit SoC.
_DIFFUSION_MID_V = (2.05 + 0.85 * (1.0 - np.exp(-_SOC / 0.04)) + 0.08 * _SOC
                    + 0.28 * _logistic((_SOC - 0.5) / 0.012)
                    + 0.9 * 0.02 * np.log1p(np.exp((_SOC - 0.55) / 0.02)))
# Hard-carbon-like gap on the plateau (70 mV), 24 mV above the step.
_DIFFUSION_HALF_V = 0.012 + 0.023 * _logistic((0.5 - _SOC) / 0.03)
_DIFFUSION_FULL_V = float(_DIFFUSION_MID_V[-1] + _DIFFUSION_HALF_V[-1])

DIFFUSION = ForeignCellSpec(
    name="diffusion",
    description=(
        "Solid-diffusion cell (1.5 Ah): the OCV is that of the particles' surface, which "
        "leads the bulk under load (5 radial modes of a sphere, R^2/D = 50 min at 25 °C, "
        "slower in the cold) and relaxes for an hour after; a flat plateau and a step the "
        "presets do not have; hysteresis that relaxes toward the middle at rest (3 h) "
        "where the estimator's stays; resistance 2.5 x at empty and Arrhenius in "
        "temperature; one fast charge-transfer RC; coulombic efficiency 0.995. Fair test: "
        "every effect is first-order physics of real cells, none is in the estimator's "
        "model, and the estimator gets only a lab profile of it."),
    capacity_ah=1.5,
    soc=_SOC,
    mid_v=_DIFFUSION_MID_V,
    half_gap_v=_DIFFUSION_HALF_V,
    temp_coeff_v_per_k=-0.3e-3,
    hysteresis_rate=12.0,
    hysteresis_rest_s=3.0 * 3600.0,
    r0_ohm=0.030,
    low_soc_r_gain=1.5,
    low_soc_r_width=0.08,
    r_activation_j_per_mol=25e3,
    rc_ohm=(0.012,),
    rc_tau_s=(0.5,),
    diffusion_tau_s=3000.0,
    diffusion_modes=5,
    diffusion_activation_j_per_mol=40e3,
    coulombic_efficiency=0.995,
    tau_spread_rel=0.15,
    limits=_limits(_DIFFUSION_FULL_V + 0.15),
    thresholds=_thresholds(_DIFFUSION_FULL_V, undervoltage_v=2.0),
    thermal=ThermalParams(heat_capacity_j_per_k=45.0, resistance_to_ambient_k_per_w=12.0,
                          resistance_to_neighbour_k_per_w=8.0),
    self_discharge_pct_per_month=3.0,
)

# --- three-rc: long time constants, resistance soaring at low SoC, efficiency 0.95 ------

# Sloping with a knee at 22 % and a shoulder at 88 %, a sharp drop below 5 %.
_THREE_RC_MID_V = (2.25 + 1.25 * _SOC + 0.16 * np.tanh((_SOC - 0.22) / 0.07)
                   + 0.10 * np.tanh((_SOC - 0.88) / 0.04) - 0.35 * np.exp(-_SOC / 0.03))
_THREE_RC_HALF_V = 0.009 + 0.006 * np.exp(-_SOC / 0.15)
_THREE_RC_FULL_V = float(_THREE_RC_MID_V[-1] + _THREE_RC_HALF_V[-1])

THREE_RC = ForeignCellSpec(
    name="three-rc",
    description=(
        "Three-RC cell (3 Ah) with time constants of 3 s, 90 s and 30 min (the last one "
        "keeps the voltage moving long after the estimator calls the cell relaxed), every "
        "resistance up to 5 x toward empty, a sloping OCV with a knee and a shoulder, "
        "hysteresis that stays, and coulombic efficiency 0.95 (of the charge put in, 95 % "
        "is stored). Fair test: long relaxation, low-SoC resistance and charge losses are "
        "what users meet in real cells and what a profile from a slow discharge misses."),
    capacity_ah=3.0,
    soc=_SOC,
    mid_v=_THREE_RC_MID_V,
    half_gap_v=_THREE_RC_HALF_V,
    temp_coeff_v_per_k=-0.15e-3,
    hysteresis_rate=30.0,
    hysteresis_rest_s=math.inf,
    r0_ohm=0.015,
    low_soc_r_gain=4.0,
    low_soc_r_width=0.06,
    r_activation_j_per_mol=30e3,
    rc_ohm=(0.006, 0.010, 0.014),
    rc_tau_s=(3.0, 90.0, 1800.0),
    diffusion_tau_s=0.0,
    diffusion_modes=0,
    diffusion_activation_j_per_mol=0.0,
    coulombic_efficiency=0.95,
    tau_spread_rel=0.1,
    limits=_limits(_THREE_RC_FULL_V + 0.15),
    thresholds=_thresholds(_THREE_RC_FULL_V, undervoltage_v=1.6),
    thermal=ThermalParams(heat_capacity_j_per_k=90.0, resistance_to_ambient_k_per_w=9.0,
                          resistance_to_neighbour_k_per_w=6.0),
    self_discharge_pct_per_month=3.0,
)

FOREIGN_PLANTS: dict[str, ForeignCellSpec] = {s.name: s for s in (DIFFUSION, THREE_RC)}
