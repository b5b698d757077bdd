"""Built-in sodium-ion chemistry presets; every figure names its source ([TOB], [HAK], [CHA],
[NA]) or is marked "Estimate".

Why and how: docs/internals.md, bms/data/presets.py.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from bms.data.chemistry import (
    GENERIC_AGING,
    CellLimits,
    Chemistry,
    OcvCurve,
    ThermalParams,
    Thresholds,
    arrhenius_factor,
    check_chemistry,
    full_at_charge_voltage,
    load_profile,
    separable_ecm,
)
from bms.data.validation import InputError

# Shape of resistance over temperature: Arrhenius with 20 kJ/mol (estimate; gives x2 at
# 0 °C and x4 at -20 °C against 25 °C, the order reported for hard-carbon cells).
ECM_TEMP_C = np.array([-40.0, -20.0, 0.0, 25.0, 45.0, 60.0])
ECM_TEMP_FACTOR = arrhenius_factor(ECM_TEMP_C, activation_j_per_mol=20e3)

# The sourced OCV tables below are kept as published: they go on above the chemistry's
# charge voltage (to the 4.1 / 4.2 V the sources charge to). `full_at_charge_voltage` ends
# each at its thresholds.charge_v, so that 100 % SoC is the cell charged to that voltage
# (CC-CV, termination current going to zero) and a full cell at rest is below every
# over-voltage threshold; `check_chemistry` holds the result to the rules a profile is.

# Coulombic efficiency (the share of a charge the cell stores): none of the sources above
# gives it. Steady-state cycling values for formed hard-carbon full cells are higher than
# 99.5 % (the usual order in the literature; not checked against one source here), and
# leave out what is lost at the top of a charge and in a float; issue 18 reports
# 0.94-0.96 on recharge of real cells (no source named; a Hall current sensor's gain error
# alone is of that order). Estimate: 0.99 for both presets, between the two. The estimator
# starts from it and learns the cell's own (`bms.core.estimator`).
PRESET_COULOMBIC_EFFICIENCY = 0.99

# --- na-nfm: layered oxide / hard carbon, sloping OCV ------------------------------

# Discharge branch [HAK] via [NA] (±0.03 V), on the source's SoC axis (100 % there: 4.08 V).
_NFM_SOC_PCT = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100], dtype=float)
_NFM_DISCHARGE_V = np.array([2.00, 2.32, 2.68, 2.79, 2.90, 3.05, 3.22, 3.44, 3.62, 3.84, 4.08])
# Charge-minus-discharge gap [NA]: up to ~80 mV on the hard-carbon plateau (20-35 % SoC),
# ~20 mV above 35 %; 50-60 mV below 20 % is an estimate between the two.
_NFM_GAP_V = np.array([0.05, 0.06, 0.08, 0.08, 0.03, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02])

NA_NFM = full_at_charge_voltage(Chemistry(
    name="na-nfm",
    description="layered oxide (NaNi1/3Fe1/3Mn1/3O2) / hard carbon, sloping OCV; 18650 1.5 Ah",
    # [HAK]; the rated capacity of the cell charged to thresholds.charge_v, the 0..100 % of
    # the ended table (what a datasheet rates: charge voltage to cut-off).
    capacity_ah=1.5,
    nominal_v=3.0,  # [HAK] ~3.0 V; [TOB] 3.05 V
    ocv=OcvCurve(
        soc=_NFM_SOC_PCT / 100.0,
        charge_v=_NFM_DISCHARGE_V + _NFM_GAP_V,
        discharge_v=_NFM_DISCHARGE_V,
        temp_coeff_v_per_k=-0.2e-3,  # [NA] -0.2 mV/K (reported for HC / NVP; assumed here)
        hysteresis_rate=25.0,  # estimate: 4 % of capacity swings 63 % of the gap
    ),
    # 25 °C mid-SoC values: [HAK] DC resistance 50-67 mOhm for 0.1-10 s pulses and [TOB]
    # <= 30 mOhm AC 1 kHz give R0 ~35 mOhm and R0 + R1 + R2 ~ 57-70 mOhm; the split between
    # R1 / R2 and the time constants are estimates. SoC shape (higher toward empty) estimate.
    ecm=separable_ecm(
        soc=np.array([0.0, 0.1, 0.2, 0.5, 0.9, 1.0]),
        temperature_c=ECM_TEMP_C,
        soc_factor=np.array([2.0, 1.4, 1.15, 1.0, 1.0, 1.1]),
        temp_factor=ECM_TEMP_FACTOR,
        r0_ohm=0.035,
        r1_ohm=0.020,
        tau1_s=4.0,
        r2_ohm=0.015,
        tau2_s=120.0,
    ),
    limits=CellLimits(
        v_min=1.5,  # [HAK] cut-off 1.5 V
        v_max=4.1,  # [HAK] charge to 4.1 V, taken as the absolute maximum
        charge_temp_min_c=-20.0,  # [TOB] -20..55 °C
        charge_temp_max_c=55.0,
        discharge_temp_min_c=-40.0,  # [TOB] -40..60 °C
        discharge_temp_max_c=60.0,
        max_charge_c=1.0,  # [HAK] 1C charge ([TOB] 1C max)
        max_discharge_c=3.0,  # [HAK] 3C discharge ([TOB] allows 6C)
    ),
    thresholds=Thresholds(
        charge_v=4.0,  # [NA] over-voltage 4.0-4.1 V; [TOB] charges to 3.95 V
        overvoltage_v=4.08,  # [NA] 4.0-4.1 V, kept below the 4.1 V absolute maximum
        overvoltage_release_v=3.95,  # [NA] release ~3.9 V
        undervoltage_v=1.8,  # [NA] 1.5-1.8 V; [TOB] cut-off 1.8 V
        undervoltage_release_v=2.2,  # [NA] release ~2.2 V
        cold_charge_derate_below_c=0.0,  # [NA] derating below ~0 °C
    ),
    # Estimates for an 18650 (~45 g, ~1 J/(g K)) in a pack with air cooling.
    thermal=ThermalParams(
        heat_capacity_j_per_k=45.0,
        resistance_to_ambient_k_per_w=12.0,
        resistance_to_neighbour_k_per_w=8.0,
    ),
    self_discharge_pct_per_month=3.0,  # estimate
    coulombic_efficiency=PRESET_COULOMBIC_EFFICIENCY,  # estimate, see above
    aging=GENERIC_AGING,  # assumptions for layered oxide / hard carbon: see GENERIC_AGING
))

# --- na-nvpf: polyanion Na3V2(PO4)2F3 / hard carbon, two flat plateaus ---------------

# Shape from [CHA]: a steep rise at low SoC, a plateau near 3.7 V, a step near 50 %, then a
# plateau near 4.1-4.15 V as flat as LFP (~2 mV per %, [NA]). Tabulated by hand from the
# PyBaMM parameter set's curves; the exact knee positions are estimates.
_NVPF_SOC_PCT = np.array([0, 2, 5, 10, 20, 30, 40, 47, 50, 53, 56, 60, 70, 80, 90, 97, 100],
                         dtype=float)
_NVPF_DISCHARGE_V = np.array([2.00, 2.80, 3.35, 3.57, 3.62, 3.645, 3.67, 3.70, 3.82, 3.98,
                              4.05, 4.058, 4.078, 4.098, 4.118, 4.14, 4.20])
# Gap: hard-carbon hysteresis at low SoC [NA], small on the cathode plateaus (estimate).
_NVPF_GAP_V = np.array([0.04, 0.04, 0.035, 0.03, 0.02, 0.015, 0.012, 0.012, 0.012, 0.012,
                        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01])

NA_NVPF = full_at_charge_voltage(Chemistry(
    name="na-nvpf",
    description="polyanion (Na3V2(PO4)2F3) / hard carbon, flat plateaus; 18650 1.0 Ah",
    capacity_ah=1.0,  # estimate for a power-oriented NVPF 18650
    nominal_v=3.7,  # [NA] ~3.7 V
    ocv=OcvCurve(
        soc=_NVPF_SOC_PCT / 100.0,
        charge_v=np.minimum(_NVPF_DISCHARGE_V + _NVPF_GAP_V, 4.22),
        discharge_v=_NVPF_DISCHARGE_V,
        temp_coeff_v_per_k=-0.2e-3,  # [NA] dU/dT of a hard-carbon / NVP cell
        hysteresis_rate=25.0,  # estimate
    ),
    # Estimates for a power-oriented cell: lower resistance than na-nfm.
    ecm=separable_ecm(
        soc=np.array([0.0, 0.1, 0.2, 0.5, 0.9, 1.0]),
        temperature_c=ECM_TEMP_C,
        soc_factor=np.array([2.2, 1.4, 1.1, 1.0, 1.0, 1.15]),
        temp_factor=ECM_TEMP_FACTOR,
        r0_ohm=0.025,
        r1_ohm=0.010,
        tau1_s=3.0,
        r2_ohm=0.010,
        tau2_s=80.0,
    ),
    limits=CellLimits(
        v_min=2.0,  # [CHA] cut-off 2.0 V
        v_max=4.25,  # estimate: 50 mV above the 4.2 V charge voltage of [CHA]
        charge_temp_min_c=-20.0,  # [NA] generic sodium-ion ranges ([CHA] is isothermal)
        charge_temp_max_c=55.0,
        discharge_temp_min_c=-40.0,
        discharge_temp_max_c=60.0,
        max_charge_c=2.0,  # estimate
        max_discharge_c=5.0,  # estimate
    ),
    thresholds=Thresholds(
        charge_v=4.18,  # estimate: below the 4.2 V charge voltage of [CHA]
        overvoltage_v=4.23,
        overvoltage_release_v=4.12,
        undervoltage_v=2.2,
        undervoltage_release_v=2.9,  # above the steep low-SoC rise
        cold_charge_derate_below_c=0.0,
    ),
    thermal=ThermalParams(
        heat_capacity_j_per_k=45.0,
        resistance_to_ambient_k_per_w=12.0,
        resistance_to_neighbour_k_per_w=8.0,
    ),
    self_discharge_pct_per_month=3.0,  # estimate
    coulombic_efficiency=PRESET_COULOMBIC_EFFICIENCY,  # estimate, see above
    # ASSUMPTIONS: NVPF / hard-carbon 18650s are reported to keep 80 % after 4,000+ cycles
    # (a more stable cathode than layered oxide), so 4 %/1,000 cycles; a slightly slower
    # calendar fade (2 %/sqrt(year)) and resistance growth; the rest as GENERIC_AGING.
    aging=dataclasses.replace(
        GENERIC_AGING,
        calendar_capacity_pct_per_sqrt_year=2.0,
        calendar_resistance_pct_per_sqrt_year=3.0,
        cycle_capacity_pct_per_kcycle=4.0,
        cycle_resistance_pct_per_kcycle=6.0,
        c_rate_factor_per_c=0.2,
    ),
))

PRESETS: dict[str, Chemistry] = {
    c.name: check_chemistry(c, f"preset {c.name}") for c in (NA_NFM, NA_NVPF)}
DEFAULT_PRESET = NA_NFM.name


def resolve_chemistry(name_or_path: str) -> Chemistry:
    """A preset by name, or a cell profile by path (anything ending in .toml or existing)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    # os.path.exists, not Path.exists: it says False (not OSError) for a name too long
    if name_or_path.endswith(".toml") or os.path.exists(name_or_path):
        return load_profile(name_or_path)
    raise InputError(
        "--chemistry",
        [f"{name_or_path!r} is neither a preset ({', '.join(sorted(PRESETS))}) "
         "nor a cell profile file (.toml)"],
    )
