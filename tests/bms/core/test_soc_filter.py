"""The SoC filter's covariance (bms/core/soc_filter.py), kept as (state, state, cell) and
moved term by term in buffers reused from run to run: what it holds is still each cell's
F P F' (plus noise on the diagonal only), run after run, and a reset from the voltage
touches only the cells it names.
"""

from __future__ import annotations

import numpy as np

from bms.core.soc_filter import HYST, N_STATES, OFFSET, SOC, V1, V2, FilterNoise, SocFilter
from bms.data.presets import PRESETS

NOISE = FilterNoise(voltage_v=1.5e-3, current_a=0.01, model_v=5e-3, model_dynamic=0.1,
                    correlation_s=300.0, capacity_rel=0.02, leak_per_sqrt_s=0.005 / 60.0,
                    offset_a=0.05, offset_walk_a_per_sqrt_s=1e-4, flat_slope_v=1.0, one_c_a=1.5)
N_CELLS = 6
CAPACITY_AS = np.full(N_CELLS, 1.5 * 3600.0)
R_RC_OHM = np.array([np.full(N_CELLS, 0.01), np.full(N_CELLS, 0.02)])
TAU_S = np.array([np.full(N_CELLS, 4.0), np.full(N_CELLS, 120.0)])


def _filter_with_correlations(seed: int) -> SocFilter:
    """A filter whose cells each have a different, fully correlated covariance."""
    rng = np.random.default_rng(seed)
    f = SocFilter(PRESETS["na-nfm"], np.linspace(0.2, 0.8, N_CELLS), 0.02, NOISE)
    root = rng.normal(scale=0.05, size=(N_CELLS, N_STATES, N_STATES))
    f.covariance[:] = root @ root.transpose(0, 2, 1)
    f.x[:, OFFSET] = 0.03
    return f


def _transition(f: SocFilter, charge_as: np.ndarray, period_s: float) -> np.ndarray:
    """Each cell's F for `predict` (before it runs), written as 5x5 matrices."""
    a = np.exp(-period_s / TAU_S)
    gain = R_RC_OHM * (1.0 - a)
    d_soc = (charge_as - f.x[:, OFFSET] * period_s) / CAPACITY_AS
    F = np.zeros((N_CELLS, N_STATES, N_STATES))
    F[:, SOC, SOC] = F[:, OFFSET, OFFSET] = 1.0
    F[:, V1, V1], F[:, V2, V2] = a[0], a[1]
    F[:, HYST, HYST] = np.exp(-f.chem.ocv.hysteresis_rate * np.abs(d_soc))
    F[:, SOC, OFFSET] = -period_s / CAPACITY_AS
    F[:, V1, OFFSET], F[:, V2, OFFSET] = -gain[0], -gain[1]
    return F


def test_predict_moves_each_cells_covariance_by_its_transition_run_after_run():
    f = _filter_with_correlations(seed=3)
    off_diagonal = ~np.eye(N_STATES, dtype=bool)
    for charge_as in (np.linspace(-20.0, 5.0, N_CELLS), np.linspace(3.0, -8.0, N_CELLS)):
        F = _transition(f, charge_as, 1.0)
        expected = F @ f.covariance @ F.transpose(0, 2, 1)
        f.predict(charge_as, 1.0, CAPACITY_AS, R_RC_OHM, TAU_S, 10, False)
        got = f.covariance
        # The process noise is on the diagonal only: off it, P is exactly moved by F.
        np.testing.assert_allclose(got[:, off_diagonal], expected[:, off_diagonal],
                                   rtol=1e-12, atol=1e-18)
        assert np.all(np.diagonal(got, axis1=1, axis2=2)
                      > np.diagonal(expected, axis1=1, axis2=2))


def test_recalibrate_clears_the_named_cells_soc_and_branch_and_no_other_cell():
    f = _filter_with_correlations(seed=5)
    before = f.covariance.copy()
    cells = np.zeros(N_CELLS, dtype=bool)
    cells[[1, 4]] = True
    sigma = np.full(N_CELLS, 0.01)
    f.recalibrate(cells, np.full(N_CELLS, 0.5), sigma, hyst=1.0)
    after = f.covariance
    np.testing.assert_array_equal(after[~cells], before[~cells])
    for known, variance in ((SOC, 0.01 ** 2), (HYST, 0.01)):
        row = after[cells, known]
        assert np.all(row[:, known] == variance)
        others = np.delete(row, known, axis=1)
        assert not others.any()
        np.testing.assert_array_equal(after[cells][:, :, known], row)  # the column likewise
    assert np.all(f.soc[cells] == 0.5)
    np.testing.assert_array_equal(f.soc_sigma[cells], sigma[cells])
