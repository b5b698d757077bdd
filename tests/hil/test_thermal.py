"""Lumped thermal model (hil.thermal.ThermalModel): C dT/dt = P + (Ta - T)/Ra + neighbours."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bms.data.chemistry import ThermalParams
from hil.thermal import ThermalModel

C_J_PER_K = 45.0
RA_K_PER_W = 12.0
RN_K_PER_W = 8.0
PARAMS = ThermalParams(C_J_PER_K, RA_K_PER_W, RN_K_PER_W)
TAU_S = C_J_PER_K * RA_K_PER_W  # 540 s for a lone node


def run(model: ThermalModel, heat_w, seconds: float) -> None:
    heat_w = np.broadcast_to(np.asarray(heat_w, dtype=float), model.temperature_c.shape)
    for _ in range(round(seconds / model.dt_s)):
        model.advance(heat_w)


def test_single_node_settles_at_ambient_plus_p_times_r():
    """Steady state: T = T_ambient + P * R_ambient (0.5 W x 12 K/W = 6 K)."""
    model = ThermalModel(PARAMS, np.array([25.0]), 25.0, dt_s=10.0)
    run(model, 0.5, 20 * TAU_S)
    # 20 time constants: within 6 K * e^-20 of the end; the fixed point is exact.
    assert model.temperature_c[0] == pytest.approx(31.0, abs=1e-6)


@pytest.mark.parametrize("n_tau", [1, 2, 3])
def test_single_node_time_constant_is_c_times_r(n_tau):
    """The rise follows dT = P R (1 - exp(-t / (C R))), tau = 45 J/K x 12 K/W = 540 s."""
    model = ThermalModel(PARAMS, np.array([20.0]), 20.0, dt_s=1.0)
    run(model, 0.5, n_tau * TAU_S)
    expected = 20.0 + 6.0 * (1.0 - math.exp(-n_tau))
    # Explicit Euler with dt/tau = 1/540 errs by ~n dt/(2 tau) e^-n of the 6 K step,
    # at most 2e-3 K at one tau; 0.01 K still tells e^-1 from e^-0.99 (0.02 K apart).
    assert model.temperature_c[0] == pytest.approx(expected, abs=0.01)


def test_coarse_tick_is_stable_and_does_not_overshoot():
    """A 10-minute tick (larger than tau) is sub-stepped: the rise is monotonic, never past
    the steady state."""
    model = ThermalModel(PARAMS, np.array([25.0]), 25.0, dt_s=600.0)
    temps = []
    for _ in range(30):
        model.advance(np.array([0.5]))
        temps.append(model.temperature_c[0])
    assert np.all(np.diff(temps) >= 0)  # it reaches the fixed point exactly, then stays
    assert temps[0] > 25.0
    assert max(temps) <= 31.0 + 1e-9
    assert temps[-1] == pytest.approx(31.0, abs=1e-3)


def test_two_node_steady_state_with_neighbour_coupling():
    """Heat in node 1 only. Solving the two balance equations by hand with
    ga = 1/Ra, gn = 1/Rn: x1 = P (ga + gn) / (ga^2 + 2 ga gn), x2 = x1 gn / (ga + gn)."""
    model = ThermalModel(PARAMS, np.array([25.0, 25.0]), 25.0, dt_s=5.0)
    p_w = 1.0
    run(model, [p_w, 0.0], 30 * TAU_S)
    ga, gn = 1.0 / RA_K_PER_W, 1.0 / RN_K_PER_W
    x1 = p_w * (ga + gn) / (ga * ga + 2.0 * ga * gn)
    x2 = x1 * gn / (ga + gn)
    assert model.temperature_c == pytest.approx([25.0 + x1, 25.0 + x2], abs=1e-6)


def test_neighbour_coupling_conserves_energy_and_evens_out():
    """No heat and no path to ambient: the mean temperature stays put while the spread
    between cells decays toward zero."""
    insulated = ThermalParams(C_J_PER_K, math.inf, RN_K_PER_W)
    start = np.array([20.0, 30.0, 25.0, 40.0, 10.0])
    model = ThermalModel(insulated, start, ambient_c=-50.0, dt_s=1.0)
    spreads = []
    for _ in range(60):
        run(model, 0.0, 60.0)
        assert model.temperature_c.mean() == pytest.approx(start.mean(), abs=1e-9)
        spreads.append(np.ptp(model.temperature_c))
    assert np.all(np.diff(spreads) < 0)
    assert spreads[-1] < 0.05 * np.ptp(start)


def test_heat_without_ambient_raises_mean_by_energy_over_capacity():
    """Insulated cells: the mean temperature rises by (sum P) t / (n C), whichever cell
    takes the heat."""
    insulated = ThermalParams(C_J_PER_K, math.inf, RN_K_PER_W)
    model = ThermalModel(insulated, np.full(4, 25.0), 25.0, dt_s=1.0)
    heat_w = np.array([2.0, 0.0, 0.0, 1.0])
    run(model, heat_w, 600.0)
    expected = 25.0 + heat_w.sum() * 600.0 / (4 * C_J_PER_K)
    assert model.temperature_c.mean() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("factor", [3.0, 10.0])
def test_cooling_failure_multiplies_the_steady_rise(factor):
    """A cooling failure multiplies R_ambient, so the steady rise P R becomes factor P R."""
    model = ThermalModel(PARAMS, np.array([25.0]), 25.0, dt_s=10.0)
    model.set_cooling_factor(factor)
    run(model, 0.5, 25 * factor * TAU_S)  # 25 of the new, longer time constants
    assert model.temperature_c[0] - 25.0 == pytest.approx(factor * 6.0, rel=1e-6)
