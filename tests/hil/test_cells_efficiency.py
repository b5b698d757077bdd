"""The plant's coulombic efficiency: a charge stores that share of its current, a discharge
gives all of it, on the scalar (one cell per group) and the parallel path alike."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hil.cells import CellArray
from tests.hil.test_cells import FAST_RC, LINEAR_OCV, flat_chemistry

DT_S = 10.0  # one slow step per tick: exact for constant currents, and quick
CAPACITY_AH = 1.5
C5_A = CAPACITY_AH / 5.0


def cells_at(soc: float, parallel: int, efficiency: float) -> CellArray:
    """Equal cells on the linear OCV (3 V + 1 V x SoC), no self-discharge, fast RC."""
    chem = dataclasses.replace(flat_chemistry(**FAST_RC, ocv=LINEAR_OCV),
                               coulombic_efficiency=efficiency)
    shape = (1, parallel)
    return CellArray(chem, np.full(shape, soc), np.full(shape, CAPACITY_AH), np.ones(shape),
                     np.zeros(shape), DT_S, np.full(shape, 25.0))


def run(cells: CellArray, group_current_a: float, seconds: float) -> np.ndarray:
    """Holds the group current; returns the terminal voltage of the last tick."""
    temperature_c = np.full(cells.soc.shape, 25.0)
    for _ in range(round(seconds / DT_S)):
        cells.prepare()
        v = cells.advance(group_current_a)
        cells.slow_step(temperature_c, DT_S)
    return v


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_full_cycle_at_c5_gives_back_the_efficiency_of_what_went_in(parallel):
    """In at C/5 from 10 % for four hours: 0.8 of the capacity went in and 0.95 x 0.8 is
    stored, which the rest voltage shows. Out at C/5: back at 10 % after 0.95 x 4 h, so
    the charge out over the charge in is 0.95."""
    group_a = C5_A * parallel
    cells = cells_at(0.1, parallel, efficiency=0.95)
    run(cells, group_a, 4 * 3600.0)
    np.testing.assert_allclose(cells.soc, 0.1 + 0.95 * 0.8, rtol=1e-9)
    rest_v = run(cells, 0.0, 30.0)
    assert rest_v[0] == pytest.approx(3.0 + 0.1 + 0.95 * 0.8, abs=1e-6)
    run(cells, -group_a, 0.95 * 4 * 3600.0)
    np.testing.assert_allclose(cells.soc, 0.1, atol=1e-9)


def test_a_lossless_cell_stores_all_of_a_charge():
    cells = cells_at(0.1, 1, efficiency=1.0)
    run(cells, C5_A, 3600.0)
    np.testing.assert_allclose(cells.soc, 0.1 + 0.2, rtol=1e-12)


def test_a_discharge_is_not_scaled_by_the_efficiency():
    cells = cells_at(0.9, 2, efficiency=0.9)
    run(cells, -2 * C5_A, 3600.0)
    np.testing.assert_allclose(cells.soc, 0.9 - 0.2, rtol=1e-9)
