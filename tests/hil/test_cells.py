"""Cell electrical model (hil.cells.CellArray) against hand-computed physics.

Expected values come from the textbook formulas of a 2-RC equivalent circuit with
one-state hysteresis, written out here; the code's own helpers are not used to make them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bms.core.signals import Actuation, Contactors
from bms.data.chemistry import OcvCurve, separable_ecm
from bms.data.presets import PRESETS
from hil.cells import CellArray
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack, SpreadSpec

DT_S = 0.1
TICKS_PER_SECOND = 10  # the pack's slow period (one simulated second) at this tick
CAPACITY_AH = 1.5

# OCV = 3.0 V + 1.0 V x SoC exactly: no hysteresis gap and no temperature term, so the
# OCV change over a run is known exactly from the coulombs that passed.
LINEAR_OCV = OcvCurve(
    soc=np.array([0.0, 1.0]),
    charge_v=np.array([3.0, 4.0]),
    discharge_v=np.array([3.0, 4.0]),
    temp_coeff_v_per_k=0.0,
    hysteresis_rate=25.0,
)


def flat_chemistry(r0, r1, tau1, r2, tau2, ocv=None, base="na-nfm"):
    """A preset with ECM parameters that do not depend on SoC or temperature, lossless (no
    self-discharge, every coulomb of a charge stored: tests/hil/test_cells_efficiency.py)."""
    ones = np.ones(2)
    ecm = separable_ecm(np.array([0.0, 1.0]), np.array([-40.0, 60.0]), ones, ones,
                        r0, r1, tau1, r2, tau2)
    chem = PRESETS[base]
    return dataclasses.replace(chem, ecm=ecm, ocv=ocv or chem.ocv,
                               self_discharge_pct_per_month=0.0, coulombic_efficiency=1.0)


# RC branches so fast (tau <= 0.05 s) that after a few seconds at rest the terminal
# voltage is the OCV itself: for tests about OCV and hysteresis only.
FAST_RC = {"r0": 0.03, "r1": 0.001, "tau1": 0.02, "r2": 0.001, "tau2": 0.05}


def make_cells(chem, soc, capacity_ah=CAPACITY_AH, r_factor=1.0, self_discharge_per_s=0.0,
               temperature_c=25.0):
    """CellArray with `soc` of shape (n_series, n_parallel) (a number means one cell)."""
    soc = np.atleast_2d(np.asarray(soc, dtype=float))
    shape = soc.shape

    def full(x):
        return np.broadcast_to(np.asarray(x, dtype=float), shape).copy()

    return CellArray(chem, soc.copy(), full(capacity_ah), full(r_factor),
                     full(self_discharge_per_s), DT_S, full(temperature_c))


class Bench:
    """Drives a CellArray the way the pack does: a slow step after every simulated second."""

    def __init__(self, cells: CellArray, temperature_c: float = 25.0):
        self.cells = cells
        self.temperature_c = np.full(cells.soc.shape, temperature_c)
        self.ticks = 0
        self.heat_w = None

    def tick(self, current_a) -> np.ndarray:
        self.cells.prepare()
        v = self.cells.advance(current_a)
        self.ticks += 1
        if self.ticks % TICKS_PER_SECOND == 0:
            self.heat_w = self.cells.slow_step(self.temperature_c, TICKS_PER_SECOND * DT_S)
        return v

    def run(self, current_a, seconds: float) -> np.ndarray:
        """Terminal voltages of every tick, shape (ticks, n_series)."""
        n = round(seconds / DT_S)
        return np.array([self.tick(current_a) for _ in range(n)])


def set_hysteresis(cells: CellArray, h: float, temperature_c: float = 25.0) -> None:
    """Puts the cells on a given hysteresis state and re-linearises the OCV (no SoC moves)."""
    cells.hysteresis[:] = h
    cells.slow_step(np.full(cells.soc.shape, temperature_c), 0.0)


def rest_voltage(cells: CellArray) -> float:
    cells.prepare()
    return float(cells.advance(0.0)[0])


# --- open-circuit voltage ----------------------------------------------------------

# The presets' 100 %: the SoC, on their sources' axes, where the charge branch reaches the
# charge voltage (na-nfm 3.86 -> 4.10 V from 90 to 100 %, 4.0 V; na-nvpf 4.15 -> 4.21 V from
# 97 to 100 %, 4.18 V). A source table point at x % is at x / FULL on the presets' axes.
NFM_FULL = 0.9 + 0.1 * (4.0 - 3.86) / (4.10 - 3.86)
NVPF_FULL = 0.97 + 0.03 * (4.18 - 4.15) / (4.21 - 4.15)

# (preset, SoC at a table point, discharge-branch V, charge-branch V), copied from the
# tables in bms/data/presets.py (na-nfm gap 0.08 V at 30 %, 0.02 V above 35 %; na-nvpf 0.012 V).
TABLE_POINTS = [
    ("na-nfm", 0.3 / NFM_FULL, 2.79, 2.87),
    ("na-nfm", 0.6 / NFM_FULL, 3.22, 3.24),
    ("na-nfm", 0.9 / NFM_FULL, 3.84, 3.86),
    ("na-nvpf", 0.5 / NVPF_FULL, 3.82, 3.832),
]


@pytest.mark.parametrize(("preset", "soc", "discharge_v", "charge_v"), TABLE_POINTS)
@pytest.mark.parametrize("h", [0.0, 1.0, -1.0], ids=["mid", "charge", "discharge"])
def test_rest_voltage_at_table_point_is_the_table_value(preset, soc, discharge_v, charge_v, h):
    """At rest the terminal voltage is the OCV: the mid branch with h = 0, the charge
    branch with h = +1 and the discharge branch with h = -1."""
    cells = make_cells(PRESETS[preset], soc)
    set_hysteresis(cells, h)
    expected = {0.0: 0.5 * (discharge_v + charge_v), 1.0: charge_v, -1.0: discharge_v}[h]
    # The brief allows 1 mV; the model evaluates the table exactly at a slow step.
    assert rest_voltage(cells) == pytest.approx(expected, abs=1e-3)
    assert rest_voltage(cells) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("temperature_c", [-15.0, 0.0, 45.0])
def test_ocv_temperature_coefficient(temperature_c):
    """The OCV moves by temp_coeff * (T - 25 °C): -0.2 mV/K for na-nfm."""
    chem = PRESETS["na-nfm"]
    cells = make_cells(chem, 0.6 / NFM_FULL)
    set_hysteresis(cells, 0.0, temperature_c)
    expected = 3.23 + (-0.2e-3) * (temperature_c - 25.0)
    assert chem.ocv.temp_coeff_v_per_k == -0.2e-3
    # Exact at a slow step, up to float rounding.
    assert rest_voltage(cells) == pytest.approx(expected, abs=1e-9)


# --- RC response -------------------------------------------------------------------

R0, R1, TAU1, R2, TAU2 = 0.030, 0.020, 4.0, 0.015, 120.0


@pytest.mark.parametrize("current_a", [1.5, -3.0])
def test_step_response_and_relaxation_follow_the_two_rc_formula(current_a):
    """v(t) = OCV(SoC(t)) + I R0 + I R1 (1 - e^(-t/tau1)) + I R2 (1 - e^(-t/tau2)) under a
    constant current from rest; after the current stops, each RC voltage decays with its
    own time constant toward the OCV of the final SoC."""
    chem = flat_chemistry(R0, R1, TAU1, R2, TAU2, ocv=LINEAR_OCV)
    soc0 = 0.5
    bench = Bench(make_cells(chem, soc0))
    on_s = 600.0
    v_on = bench.run(current_a, on_s)[:, 0]

    def soc_at(t_s):
        return soc0 + current_a * t_s / (CAPACITY_AH * 3600.0)

    for t_s in (0.1, 1.0, 4.0, 12.0, 60.0, 120.0, 600.0):
        expected = (3.0 + soc_at(t_s) + current_a * R0
                    + current_a * R1 * (1.0 - math.exp(-t_s / TAU1))
                    + current_a * R2 * (1.0 - math.exp(-t_s / TAU2)))
        # The model reads the OCV at the start of the tick: off by one tick of charge,
        # 1 V/SoC * 3 A * 0.1 s / 5400 As = 5.6e-5 V at most; 1e-4 V is far below the
        # RC terms being checked (1.5 to 100 mV).
        assert v_on[round(t_s / DT_S) - 1] == pytest.approx(expected, abs=1e-4), t_s

    ocv_end = 3.0 + soc_at(on_s)
    v1_end = current_a * R1 * (1.0 - math.exp(-on_s / TAU1))
    v2_end = current_a * R2 * (1.0 - math.exp(-on_s / TAU2))
    v_off = bench.run(0.0, 600.0)[:, 0]
    for t_s in (0.1, 2.0, 4.0, 10.0, 60.0, 120.0, 360.0):
        expected = (ocv_end + v1_end * math.exp(-t_s / TAU1) + v2_end * math.exp(-t_s / TAU2))
        # Nothing moves at rest but the RC decay, which is exact: float rounding only.
        assert v_off[round(t_s / DT_S) - 1] == pytest.approx(expected, abs=1e-9), t_s


def test_steady_heat_is_i_squared_times_total_resistance():
    """Once the RC branches have settled, the heat released is I^2 (R0 + R1 + R2)."""
    tau2 = 20.0
    chem = flat_chemistry(R0, R1, TAU1, R2, tau2, ocv=LINEAR_OCV)
    bench = Bench(make_cells(chem, 0.5))
    current_a = 2.0
    bench.run(current_a, 300.0)  # 15 tau2: the RC voltages are within e^-15 of I R
    expected_w = current_a**2 * (R0 + R1 + R2)
    assert bench.heat_w[0, 0] == pytest.approx(expected_w, rel=1e-5)


# --- hysteresis --------------------------------------------------------------------

GAMMA = 25.0  # na-nfm hysteresis_rate


@pytest.mark.parametrize("seconds", [1, 30, 60, 144, 300])
def test_hysteresis_leaves_the_charge_branch_exponentially(seconds):
    """Discharging by dSoC from the charge branch: h = -1 + 2 exp(-gamma dSoC) at each slow
    step; the rest voltage sits (h + 1) / 2 of the way from the discharge to the charge
    branch."""
    chem = flat_chemistry(**FAST_RC)
    assert chem.ocv.hysteresis_rate == GAMMA
    soc0 = 0.8 / NFM_FULL  # the table point 3.62 V (discharge)
    cells = make_cells(chem, soc0)
    set_hysteresis(cells, 1.0)
    bench = Bench(cells)
    current_a = -CAPACITY_AH  # 1C: dSoC = t / 3600
    bench.run(current_a, seconds)
    d_soc = seconds / 3600.0
    h = -1.0 + 2.0 * math.exp(-GAMMA * d_soc)
    assert cells.hysteresis[0, 0] == pytest.approx(h, abs=1e-9)

    bench.run(0.0, 5.0)  # the fast RC branches relax completely; h does not move at rest
    assert cells.hysteresis[0, 0] == pytest.approx(h, abs=1e-9)
    soc = soc0 - d_soc
    # Between the table's 70 % and 80 % the na-nfm discharge branch runs 3.44 -> 3.62 V;
    # charge is +20 mV.
    discharge_v = 3.44 + (soc * NFM_FULL - 0.7) / 0.1 * (3.62 - 3.44)
    charge_v = discharge_v + 0.02
    expected = discharge_v + 0.5 * (h + 1.0) * (charge_v - discharge_v)
    assert rest_voltage(cells) == pytest.approx(expected, abs=1e-6)


def test_hysteresis_from_mid_moves_toward_charge_branch_when_charging():
    """From h = 0, charging by dSoC gives h = 1 - exp(-gamma dSoC)."""
    cells = make_cells(flat_chemistry(**FAST_RC), 0.5)
    Bench(cells).run(CAPACITY_AH, 72.0)  # dSoC = 0.02
    assert cells.hysteresis[0, 0] == pytest.approx(1.0 - math.exp(-GAMMA * 0.02), abs=1e-9)


# --- coulomb counting --------------------------------------------------------------


def test_coulomb_counting_is_exact():
    """SoC changes by I t / (3600 C) for each cell's own capacity."""
    chem = flat_chemistry(R0, R1, TAU1, R2, TAU2, ocv=LINEAR_OCV)
    capacity_ah = np.array([[1.5], [1.4], [1.6]])
    cells = make_cells(chem, np.full((3, 1), 0.9), capacity_ah=capacity_ah)
    current_a, t_s = -0.75, 3600.0
    Bench(cells).run(current_a, t_s)
    expected = 0.9 + current_a * t_s / (capacity_ah * 3600.0)
    np.testing.assert_allclose(cells.soc - 0.9, expected - 0.9, rtol=1e-9)


def test_self_discharge_takes_its_rate_at_rest():
    """With a self-discharge rate k per second, SoC falls by k t at rest."""
    chem = flat_chemistry(R0, R1, TAU1, R2, TAU2, ocv=LINEAR_OCV)
    cells = make_cells(chem, 0.7, self_discharge_per_s=1e-6)
    Bench(cells).run(0.0, 1000.0)
    assert cells.soc[0, 0] == pytest.approx(0.7 - 1e-3, abs=1e-12)


# --- parallel groups ---------------------------------------------------------------


def _step_resistance_ohm(factor: float) -> float:
    """Resistance one tick of current sees: R0 plus each RC's charge over the tick."""
    return factor * (R0 + R1 * (1 - math.exp(-DT_S / TAU1)) + R2 * (1 - math.exp(-DT_S / TAU2)))


def test_parallel_cells_share_current_inversely_to_resistance():
    """Two equal cells in parallel, one with twice the resistance: at the first tick the
    low-resistance cell carries 2/3 of the group current, and the two sum to it."""
    chem = flat_chemistry(R0, R1, TAU1, R2, TAU2, ocv=LINEAR_OCV)
    cells = make_cells(chem, [[0.5, 0.5]], r_factor=np.array([[1.0, 2.0]]))
    current_a = 3.0
    cells.prepare()
    v = cells.advance(current_a)
    i = np.asarray(cells.current_a)
    assert i[0] == pytest.approx([2.0, 1.0], rel=1e-12)
    assert i.sum() == pytest.approx(current_a, rel=1e-12)
    r_a, r_b = _step_resistance_ohm(1.0), _step_resistance_ohm(2.0)
    assert v[0] == pytest.approx(3.5 + current_a * r_a * r_b / (r_a + r_b), abs=1e-12)


def test_parallel_cells_at_different_soc_circulate_current():
    """At rest, a fuller cell discharges into its emptier parallel neighbour with
    (E1 - E2) / (R1 + R2); the group carries no net current."""
    chem = flat_chemistry(R0, R1, TAU1, R2, TAU2, ocv=LINEAR_OCV)
    cells = make_cells(chem, [[0.6, 0.4]])
    cells.prepare()
    cells.advance(0.0)
    i = np.asarray(cells.current_a)[0]
    expected_a = (3.6 - 3.4) / (2.0 * _step_resistance_ohm(1.0))
    assert i == pytest.approx([-expected_a, expected_a], rel=1e-9)


def test_parallel_group_conserves_charge():
    """Whatever the split, the group's charge changes by I t."""
    chem = flat_chemistry(R0, R1, TAU1, R2, TAU2, ocv=LINEAR_OCV)
    capacity_ah = np.array([[1.5, 1.0]])
    cells = make_cells(chem, [[0.8, 0.6]], capacity_ah=capacity_ah,
                       r_factor=np.array([[1.0, 1.7]]))
    soc0 = cells.soc.copy()
    current_a, t_s = -2.0, 600.0
    Bench(cells).run(current_a, t_s)
    charge_as = ((cells.soc - soc0) * capacity_ah * 3600.0).sum()
    assert charge_as == pytest.approx(current_a * t_s, rel=1e-9)


# --- ECM follows temperature -------------------------------------------------------


def _arrhenius(temperature_c: float) -> float:
    """Resistance relative to 25 °C with 20 kJ/mol (the presets' temperature shape)."""
    return math.exp(20e3 / 8.314 * (1.0 / (temperature_c + 273.15) - 1.0 / 298.15))


@pytest.mark.parametrize("ambient_c", [25.0, 0.0, -20.0])
def test_pack_built_cold_has_cold_resistance_from_the_first_tick(ambient_c):
    """A pack that starts at ambient T draws its first current through resistances at T:
    na-nfm R0 = 35 mOhm x Arrhenius(T) at 90 % SoC (x4.2 at -20 °C), and likewise R1, R2."""
    spread = SpreadSpec(capacity_rel=0.0, r0_rel=0.0, self_discharge_rel=0.0,
                        initial_soc=0.0, temperature_c=0.0)
    pack = SimulatedPack(PRESETS["na-nfm"],
                         PackSpec(n_series=4, ambient_c=ambient_c, spread=spread), DT_S)
    pack.actuate(Actuation("RUN", Contactors(True, False, True), np.zeros(4, bool),
                           10.0, 10.0, 0, 0.9))
    v_rest = pack.group_v.copy()
    current_a = -1.5
    pack.advance(Demand(current_a, "a"))
    f = _arrhenius(ambient_c)  # ECM temperature knots are at -20, 0 and 25 °C: exact there
    r_step = f * (0.035 + 0.020 * (1 - math.exp(-DT_S / 4.0))
                  + 0.015 * (1 - math.exp(-DT_S / 120.0)))
    # The tick reads the OCV at its start, so the step is I * R_step alone; 1e-4 relative
    # leaves room for float rounding only (a wrong temperature is off by a factor of 4).
    np.testing.assert_allclose(pack.group_v - v_rest, current_a * r_step, rtol=1e-4)
