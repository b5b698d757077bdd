"""Packs that age (issue 18): the ageing laws' directions, the seeded per-cell spread, an aged
pack's true capacity against the model, ageing as a run goes, `run --age-*` and [aging]."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from bms.data.chemistry import GENERIC_AGING, parse_profile
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from bms_emu.main import main
from hil.aging import AgeSpec, CellAging, PackAging
from hil.cells import CellArray
from hil.pack import PackSpec, SimulatedPack

NO_SPREAD = dataclasses.replace(GENERIC_AGING, spread_rel=0.0)
YEAR_S = 365.25 * 86400.0
PROFILE = {"name": "lab-cell", "capacity_ah": 3.0, "limits": {"v_min": 2.0, "v_max": 4.3},
           "ocv": {"soc_pct": [0, 50, 100], "voltage_v": [2.0, 3.2, 4.1]}}


def aged(years: float = 0.0, temperature_c: float = 25.0, soc: float = 0.5,
         moved_soc: float = 0.0, c_rate: float = 0.5) -> CellAging:
    """One cell without spread, after `years` at these conditions and `moved_soc` moved."""
    cell = CellAging(NO_SPREAD, (1,), np.random.default_rng(0))
    cell.advance(years * YEAR_S, np.array([temperature_c]), np.array([soc]),
                 np.array([moved_soc]), np.array([c_rate]))
    return cell


def lost_pct(cell: CellAging) -> float:
    return float(100.0 * (1.0 - cell.capacity_fraction[0]))


def grown_pct(cell: CellAging) -> float:
    return float(100.0 * (cell.resistance_factor[0] - 1.0))


def test_calendar_fade_is_the_square_root_law_at_the_reference():
    # 2.5 % after a year at 25 °C and 50 % SoC, twice that after four years.
    assert lost_pct(aged(1.0)) == pytest.approx(2.5)
    assert lost_pct(aged(4.0)) == pytest.approx(5.0)
    assert grown_pct(aged(4.0)) == pytest.approx(8.0)


def test_fade_grows_with_time_temperature_soc_and_throughput():
    base = aged(1.0)
    for older in (aged(2.0), aged(1.0, temperature_c=45.0), aged(1.0, soc=1.0),
                  aged(1.0, moved_soc=200.0)):
        assert lost_pct(older) > lost_pct(base)
        assert grown_pct(older) > grown_pct(base)
    # ...and falls in the cool and at low SoC.
    assert lost_pct(aged(1.0, temperature_c=5.0)) < lost_pct(base)
    assert lost_pct(aged(1.0, soc=0.0)) < lost_pct(base)
    # The loss is k * sqrt(t), and k is Arrhenius: 50 kJ/mol gives 3.5 times at 45 °C.
    ratio = lost_pct(aged(1.0, temperature_c=45.0)) / lost_pct(base)
    assert ratio == pytest.approx(math.exp(50e3 / 8.314 * (1 / 298.15 - 1 / 318.15)), rel=1e-6)


def test_cycle_fade_is_linear_in_throughput_and_faster_cold_and_fast():
    # 1,000 full cycles move the SoC by 2,000 (charge and discharge): 6 % lost.
    assert lost_pct(aged(moved_soc=2000.0)) == pytest.approx(6.0)
    assert lost_pct(aged(moved_soc=4000.0)) == pytest.approx(12.0)
    assert lost_pct(aged(moved_soc=2000.0, temperature_c=0.0)) > 6.0
    assert lost_pct(aged(moved_soc=2000.0, c_rate=3.0)) == pytest.approx(6.0 * (1 + 0.3 * 2))


def test_calendar_history_adds_up_in_any_order():
    """The loss depends on the stress integral, not on when the hot spell came."""
    def lived(order):
        cell = CellAging(NO_SPREAD, (1,), np.random.default_rng(0))
        for t_c in order:
            cell.advance(YEAR_S, np.array([t_c]), np.array([0.5]), np.zeros(1), np.zeros(1))
        return lost_pct(cell)

    assert lived((25.0, 45.0)) == pytest.approx(lived((45.0, 25.0)))
    assert lived((25.0, 45.0)) < lived((45.0, 45.0))


def test_spread_is_seeded_and_per_cell():
    def capacity(seed):
        spec = PackSpec(n_series=8, n_parallel=2, seed=seed, age=AgeSpec(years=10.0))
        return SimulatedPack(PRESETS["na-nfm"], spec, 0.1).cells.capacity_as

    first, again, other = capacity(3), capacity(3), capacity(4)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
    assert np.unique(first).size == first.size  # every cell its own
    assert first.shape == (8, 2)


def test_an_aged_pack_has_the_capacity_and_resistance_the_model_gives():
    chem = PRESETS["na-nfm"]
    new = SimulatedPack(chem, PackSpec(n_series=16, seed=5), 0.1)
    old = SimulatedPack(chem, PackSpec(n_series=16, seed=5, age=AgeSpec(years=10.0,
                                                                          cycles=1000.0)), 0.1)
    m = old.aging.model.rate_factor[:, 0]
    # 10 years at 25 °C / 50 %: 2.5 * sqrt(10) %; 1,000 cycles at 0.5C: 6 %; times each
    # cell's own rate.
    lost = m * (2.5 * math.sqrt(10.0) + 6.0) / 100.0
    grown = m * (4.0 * math.sqrt(10.0) + 10.0) / 100.0
    np.testing.assert_allclose(old.true_capacity_ah, new.true_capacity_ah * (1.0 - lost))
    np.testing.assert_allclose(old.cells.r_factor[:, 0], new.cells.r_factor[:, 0] * (1 + grown))
    assert np.all(old.true_resistance_factor > new.true_resistance_factor)
    # The firmware's nominal is the new cell's: the plant's truth has moved away from it.
    assert old.capacity_ah == new.capacity_ah
    # Stored full, a pack ages faster than at 50 %.
    full = SimulatedPack(chem, PackSpec(n_series=16, seed=5,
                                        age=AgeSpec(years=10.0, storage_soc=1.0)), 0.1)
    half = SimulatedPack(chem, PackSpec(n_series=16, seed=5, age=AgeSpec(years=10.0)), 0.1)
    assert np.all(full.true_capacity_ah < half.true_capacity_ah)


class StubCells:
    """What PackAging reads of the cells (their SoC and capacity) and what it gives them."""

    def __init__(self, soc: float, capacity_ah: float):
        self.soc = np.array([[soc]])
        self.capacity_as = np.array([[capacity_ah * 3600.0]])
        self.health: list[tuple] = []

    def set_health(self, capacity_ah, r_factor, temperature_c):
        self.health.append((capacity_ah.copy(), r_factor.copy()))


def test_a_run_ages_its_cells_every_hour_with_the_throughput_it_saw():
    """An hour of 0.5C cycling at 25 °C, one slow step a second: the cells take the new health
    once, after the hour, and it is what the model gives for that hour and throughput."""
    flat = dataclasses.replace(NO_SPREAD, low_soc_factor=1.0, high_soc_factor=1.0)
    aging = PackAging(flat, AgeSpec(), seed=0, soc=np.array([[0.5]]),
                      new_capacity_ah=np.array([[2.0]]), new_r_factor=np.array([[1.0]]),
                      slow_interval_s=1.0)
    cells = StubCells(0.5, 2.0)
    step = 0.5 / 3600.0  # 0.5C for a second
    for k in range(3600):
        cells.soc = cells.soc + (step if (k // 600) % 2 == 0 else -step)
        aging.slow_step(cells, np.array([[25.0]]))
        if k < 3599:
            assert not cells.health
    assert len(cells.health) == 1
    capacity_ah, r_factor = cells.health[0]
    expected = aged(1.0 / (365.25 * 24), moved_soc=0.5, soc=0.5)
    # SoC-flat calendar rates and 0.5C: the hour and the SoC moved are all that count.
    np.testing.assert_allclose(capacity_ah[0] / 2.0, expected.capacity_fraction, rtol=1e-9)
    np.testing.assert_allclose(r_factor[0], expected.resistance_factor, rtol=1e-9)
    assert capacity_ah[0, 0] < 2.0


def test_new_health_keeps_soc_and_voltage_and_scales_resistance():
    chem = PRESETS["na-nfm"]
    shape = (4, 1)
    temp = np.full(shape, 25.0)
    cells = CellArray(chem, np.full(shape, 0.6), np.full(shape, 1.5), np.ones(shape),
                      np.zeros(shape), 0.1, temp)
    for _ in range(5):
        cells.prepare()
        cells.advance(-1.5)
    soc, ocv, r0 = cells.soc.copy(), cells.ocv_v().copy(), cells.r0_ohm.copy()
    cells.set_health(np.full(shape, 1.2), np.full(shape, 1.3), temp)
    np.testing.assert_allclose(cells.soc, soc)
    np.testing.assert_allclose(cells.ocv_v(), ocv)
    np.testing.assert_allclose(cells.r0_ohm, r0 * 1.3)
    # The same current now moves SoC 1.5 / 1.2 times as fast.
    cells.prepare()
    cells.advance(-1.5)
    np.testing.assert_allclose(soc - cells.soc, 1.5 * 0.1 / (1.2 * 3600.0), rtol=1e-9)


def run_json(capsys, *flags: str) -> dict:
    assert main(["run", "--duration", "30s", "--series", "4", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_run_age_years_changes_what_the_run_reports(capsys):
    fresh = run_json(capsys)["cells_true"]
    old = run_json(capsys, "--age-years", "10", "--age-cycles", "500")["cells_true"]
    assert old["started_aged"] == {"years": 10.0, "cycles": 500.0, "storage_soc_pct": 50.0}
    assert old["capacity_ah"][1] < fresh["capacity_ah"][0]
    assert old["resistance_pct"][0] > fresh["resistance_pct"][1]
    assert fresh["started_aged"]["years"] == 0.0


def test_bad_age_flags_are_refused(capsys):
    assert main(["run", "--duration", "10s", "--series", "4", "--age-years", "-1",
                 "--age-cycles", "1e6", "--age-soc", "101"]) == 2
    err = capsys.readouterr().err
    assert "--age-years = -1.0: must be within [0, 50]" in err
    assert "--age-cycles = 1000000.0: must be within [0, 20000]" in err
    assert "--age-soc = 101.0: must be within [0, 100]" in err


def test_a_profile_without_aging_loads_with_the_generic_assumptions():
    chem = parse_profile(PROFILE, "lab-cell.toml")
    assert chem.aging == GENERIC_AGING


def test_a_profile_aging_table_is_read_and_every_bad_value_named():
    chem = parse_profile({**PROFILE, "aging": {"cycle_capacity_pct_per_kcycle": 3.0,
                                               "spread_rel": 0.0}}, "lab-cell.toml")
    assert chem.aging.cycle_capacity_pct_per_kcycle == 3.0
    assert chem.aging.spread_rel == 0.0
    assert chem.aging.activation_j_per_mol == GENERIC_AGING.activation_j_per_mol
    with pytest.raises(InputError) as exc:
        parse_profile({**PROFILE, "aging": {"spread_rel": 2.0, "high_soc_factor": "x",
                                            "calendar_fade": 1.0}}, "lab-cell.toml")
    text = str(exc.value)
    assert "aging.spread_rel = 2.0: must be within [0, 1]" in text
    assert "aging.high_soc_factor" in text and "must be a number" in text
    assert "aging.calendar_fade" in text and "unknown field" in text


def test_zero_rates_mean_a_pack_that_does_not_age():
    chem = parse_profile({**PROFILE, "aging": {
        "calendar_capacity_pct_per_sqrt_year": 0, "calendar_resistance_pct_per_sqrt_year": 0,
        "cycle_capacity_pct_per_kcycle": 0, "cycle_resistance_pct_per_kcycle": 0}}, "p.toml")
    new = SimulatedPack(chem, PackSpec(n_series=4, seed=2), 0.1)
    old = SimulatedPack(chem, PackSpec(n_series=4, seed=2, age=AgeSpec(years=20.0,
                                                                        cycles=5000.0)), 0.1)
    assert np.array_equal(new.cells.capacity_as, old.cells.capacity_as)


def test_a_scenario_pack_table_takes_the_age_keys():
    from hil.pack_options import PACK_TABLE, pack_spec

    assert {"age_years", "age_cycles", "age_soc_pct"} <= set(PACK_TABLE)
    values = SimpleNamespace(series=4, parallel=1, capacity_ah=None, cells_per_temp_sensor=4,
                             age_years=3.0, age_cycles=10.0, age_soc=80.0)
    assert pack_spec(values).age == AgeSpec(years=3.0, cycles=10.0, storage_soc=0.8)


def test_the_summary_table_says_how_aged_the_cells_started(capsys):
    assert main(["run", "--duration", "30s", "--series", "4", "--age-years", "7"]) == 0
    # The table wraps its cells: the words, without the frame, in order.
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "cells (true) capacity / resistance" in out
    assert "(started aged 7 years at 50 % SoC, 0 cycles)" in out
