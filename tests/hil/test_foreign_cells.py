"""The foreign plants (hil.foreign_cells) behave like cells, and the profile a user makes of
one in the lab is what parse_profile reads. Expected values are the physics written out
(charge balance, the sphere's steady diffusion lead), not the models' own helpers."""

from __future__ import annotations

import numpy as np
import pytest

from bms.core.signals import Actuation, Contactors
from bms.data.chemistry import parse_profile
from hil.foreign_cells import DIFFUSION, FOREIGN_PLANTS, THREE_RC, slow_cycle, user_profile
from hil.foreign_cells.model import ForeignCells, ForeignCellSpec
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack

DT_S = 0.1
TICKS_PER_SECOND = 10
PLANTS = list(FOREIGN_PLANTS.values())
IDS = list(FOREIGN_PLANTS)


def make_cells(spec: ForeignCellSpec, soc: float = 0.6, temperature_c: float = 25.0,
               seed: int | None = None, shape: tuple[int, int] = (1, 1)) -> ForeignCells:
    ones = np.ones(shape)
    return spec.cell_model(seed)(spec.chemistry(), soc * ones, spec.capacity_ah * ones, ones,
                                 0.0 * ones, DT_S, temperature_c * ones)


def run(cells: ForeignCells, current_a: float, seconds: float) -> np.ndarray:
    """Steps as the pack does (a slow step every second); the terminal voltage at the end."""
    temperature_c = cells.temperature_c.copy()
    for k in range(round(seconds / DT_S)):
        cells.prepare()
        v = cells.advance(current_a)
        if k % TICKS_PER_SECOND == TICKS_PER_SECOND - 1:
            cells.slow_step(temperature_c, TICKS_PER_SECOND * DT_S)
    return v


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_charge_stores_the_efficiency_share_and_discharge_all_of_it(spec):
    """0.5C for 10 minutes moves SoC by 1/12 x the efficiency on charge, 1/12 on discharge."""
    cells = make_cells(spec, 0.5)
    current_a = 0.5 * spec.capacity_ah
    run(cells, current_a, 600.0)
    charged = float(cells.soc[0, 0]) - 0.5
    assert charged == pytest.approx(spec.coulombic_efficiency / 12.0, rel=1e-9)
    run(cells, -current_a, 600.0)
    assert float(cells.soc[0, 0]) - 0.5 - charged == pytest.approx(-1.0 / 12.0, rel=1e-9)


def test_the_two_plants_differ_in_efficiency():
    assert THREE_RC.coulombic_efficiency == 0.95
    assert DIFFUSION.coulombic_efficiency > THREE_RC.coulombic_efficiency


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_voltage_relaxes_toward_the_rest_ocv(spec):
    """After a 1C discharge the terminal voltage climbs back to the OCV of the bulk SoC:
    far from it a second into the rest, within 3 mV of it after two hours, never away."""
    cells = make_cells(spec, 0.8)
    run(cells, -spec.capacity_ah, 600.0)
    gaps = []
    for seconds in (1.0, 59.0, 540.0, 2400.0, 4200.0):
        v = run(cells, 0.0, seconds)
        gaps.append(float(cells.rest_ocv_v()[0, 0] - v[0]))
    assert gaps[0] > 0.02
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False))
    assert abs(gaps[-1]) < 3e-3


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_polarisation_grows_with_current(spec):
    """The voltage below the rest OCV after a minute's discharge grows with the current."""
    drops = []
    for c_rate in (0.25, 0.5, 1.0, 2.0):
        cells = make_cells(spec, 0.75)
        v = run(cells, -c_rate * spec.capacity_ah, 60.0)
        drops.append(float(cells.rest_ocv_v()[0, 0] - v[0]))
    assert all(b > a > 0 for a, b in zip(drops, drops[1:], strict=False))


def test_diffusion_surface_leads_the_bulk_by_the_spheres_steady_state():
    """Under a constant flux a sphere's surface concentration leads its mean by
    tau_d x (i / Q) / 15 once the transient is gone (Carslaw & Jaeger): 0.5C, tau_d 3000 s
    give 2.78 % of SoC; the slowest mode (tau_d / 4.49^2 = 149 s) has died out after 30 min."""
    cells = make_cells(DIFFUSION, 0.9)
    run(cells, -0.5 * DIFFUSION.capacity_ah, 1800.0)
    lead = float((cells.surface_soc - cells.soc)[0, 0])
    assert lead == pytest.approx(-DIFFUSION.diffusion_tau_s * 0.5 / 3600.0 / 15.0, rel=2e-3)


def test_diffusion_hysteresis_relaxes_at_rest_three_rc_stays():
    """The diffusion plant's hysteresis decays toward the middle at rest (3 h time
    constant); the three-RC plant's stays where the last current left it."""
    for spec, factor in ((DIFFUSION, np.exp(-3600.0 / DIFFUSION.hysteresis_rest_s)),
                         (THREE_RC, 1.0)):
        cells = make_cells(spec, 0.7)
        run(cells, -spec.capacity_ah, 600.0)
        before = float(cells.hysteresis[0, 0])
        run(cells, 0.0, 3600.0)
        assert before < -0.5
        assert float(cells.hysteresis[0, 0]) == pytest.approx(before * factor, rel=1e-6)


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_resistance_grows_toward_empty_and_in_the_cold(spec):
    mid = make_cells(spec, 0.5).r_step_ohm[0, 0]
    assert make_cells(spec, 0.02).r_step_ohm[0, 0] > 1.5 * mid
    assert make_cells(spec, 0.5, temperature_c=0.0).r_step_ohm[0, 0] > 1.5 * mid


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_the_seed_sets_the_cells_spread(spec):
    """The same seed gives the same cells (and voltages); another seed other cells; within
    one pack the cells differ."""
    voltages = []
    for seed in (3, 3, 4):
        cells = make_cells(spec, 0.6, seed=seed, shape=(4, 1))
        voltages.append(run(cells, -spec.capacity_ah, 120.0))
    np.testing.assert_array_equal(voltages[0], voltages[1])
    assert not np.array_equal(voltages[0], voltages[2])
    assert np.ptp(voltages[0]) > 1e-4


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_parallel_cells_share_the_group_current_and_voltage(spec):
    """Cells in parallel with different resistances: their currents add up to the group's,
    and each sits at the group's terminal voltage."""
    cells = make_cells(spec, 0.6, seed=1, shape=(2, 3))
    cells.set_health(cells.capacity_as / 3600.0, np.array([[1.0, 1.3, 0.8]] * 2),
                     cells.temperature_c)
    cells.prepare()
    v = cells.advance(np.array([-4.0, 2.0]))
    np.testing.assert_allclose(cells.current_a.sum(axis=1), [-4.0, 2.0], rtol=1e-12)
    assert np.ptp(cells.current_a[0]) > 0.01
    np.testing.assert_allclose(cells._e_v + cells.r_step_ohm * cells.current_a,
                               np.repeat(v[:, None], 3, axis=1), rtol=1e-12)


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_aged_capacity_keeps_soc_and_voltage_and_counts_charge_against_it(spec):
    """The plant's ageing hands new health over with `set_health`: SoC and the voltage at
    rest go on from where they were, and charge then moves SoC against the new capacity."""
    cells, twin = make_cells(spec, 0.6), make_cells(spec, 0.6)
    for c in (cells, twin):
        run(c, -spec.capacity_ah, 30.5)
    soc = float(cells.soc[0, 0])
    cells.set_health(0.8 * spec.capacity_ah * np.ones((1, 1)), np.ones((1, 1)),
                     cells.temperature_c)
    assert float(cells.soc[0, 0]) == soc
    assert run(cells, 0.0, 5.0)[0] == pytest.approx(run(twin, 0.0, 5.0)[0], abs=1e-9)
    run(cells, -0.8 * spec.capacity_ah, 60.0)
    assert float(cells.soc[0, 0]) == pytest.approx(soc - 1.0 / 60.0, rel=1e-9)


def test_simulated_pack_runs_on_foreign_cells():
    """SimulatedPack builds the cells with the model it is given and draws the load's current
    through them: a 1C discharge for 60 s takes 1/60 of the charge from every cell."""
    pack = SimulatedPack(THREE_RC.chemistry(), PackSpec(n_series=4, initial_soc=0.8), DT_S,
                         cell_model=THREE_RC.cell_model(0))
    assert isinstance(pack.cells, ForeignCells)
    pack.actuate(Actuation("RUN", Contactors(True, False, True), np.zeros(4, bool),
                           10.0, 10.0, 0, 0.8))
    before = pack.true_soc.copy()
    for _ in range(600):
        pack.advance(Demand(-THREE_RC.capacity_ah, "a"))
    moved = (before - pack.true_soc) * pack.true_capacity_ah / THREE_RC.capacity_ah
    np.testing.assert_allclose(moved, 1.0 / 60.0, rtol=2e-3)


@pytest.fixture(scope="module")
def lab():
    return {name: slow_cycle(spec) for name, spec in FOREIGN_PLANTS.items()}


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_lab_cycle_is_a_c20_discharge_to_cut_off_and_a_cc_cv_charge(spec, lab):
    curves = lab[spec.name]
    c20_a = 0.05 * spec.capacity_ah
    out, into = curves.phase == 1, curves.phase == 2
    np.testing.assert_allclose(curves.current_a[out], -c20_a)
    assert curves.voltage_v[out][-1] <= spec.thresholds.undervoltage_v < curves.voltage_v[out][-2]
    assert curves.current_a[into].max() == pytest.approx(c20_a)
    assert curves.current_a[into][-1] < 0.01 * spec.capacity_ah  # the CV taper ended it
    assert curves.voltage_v[into].max() == pytest.approx(spec.thresholds.charge_v, abs=1e-9)


@pytest.mark.parametrize("spec", PLANTS, ids=IDS)
def test_user_profile_is_lab_data_that_parse_profile_accepts(spec, lab):
    """The profile has what a user measures - capacity from the C/20 discharge, the two C/20
    branches with their resistive and diffusion drop - and no ECM values."""
    profile = user_profile(spec, lab[spec.name])
    assert "ecm" not in profile and "coulombic_efficiency" not in profile
    chem = parse_profile(profile, "lab")
    # The cut-off ends the discharge a little before the true 0 %.
    assert 0.98 * spec.capacity_ah < chem.capacity_ah < spec.capacity_ah
    soc = chem.ocv.soc
    inside = (soc >= 0.1) & (soc <= 0.9)
    true_charge = np.interp(soc, spec.soc, spec.mid_v + spec.half_gap_v)
    true_discharge = np.interp(soc, spec.soc, spec.mid_v - spec.half_gap_v)
    # Under C/20 the terminal voltage lies below the rest OCV on discharge, above on charge.
    assert np.mean((chem.ocv.discharge_v - true_discharge)[inside]) < -1e-3
    assert np.mean((chem.ocv.charge_v - true_charge)[inside]) > 1e-3
    assert chem.ocv.charge_v[-1] == pytest.approx(spec.thresholds.charge_v, abs=1e-3)
