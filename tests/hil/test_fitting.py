"""`hil.fitting`: the fit recovers a simulated cell it was not told about, holds data out,
and names the test that is missing or the line that is bad."""

from __future__ import annotations

import numpy as np
import pytest

from bms.data.presets import PRESETS
from bms.data.validation import InputError
from hil.fitting.ecm_fit import fit_two_exponentials
from hil.fitting.fit import FitOptions, fit_cell, read_all
from hil.fitting.lab_procedure import hppc_test, run_procedure
from tests.support.lab_files import LAB_FILES, lab_files

TRUE = PRESETS["na-nfm"]


@pytest.fixture(scope="module")
def fitted():
    folder, truth = lab_files()
    result = fit_cell(read_all([str(folder / name) for name in LAB_FILES]), FitOptions())
    return result, truth


def test_capacity_and_coulombic_efficiency_are_recovered(fitted):
    result, truth = fitted
    assert result.chemistry.capacity_ah == pytest.approx(truth["capacity_ah"], rel=0.01)
    assert truth["coulombic_efficiency"] < 1.0  # the preset loses charge: something to find
    assert result.chemistry.coulombic_efficiency == pytest.approx(
        truth["coulombic_efficiency"], abs=0.003)


def test_both_ocv_branches_are_recovered_within_millivolts(fitted):
    result, _ = fitted
    soc = np.linspace(0.1, 0.9, 33)
    for branch in ("charge_v", "discharge_v"):
        error_v = (np.interp(soc, result.chemistry.ocv.soc, getattr(result.chemistry.ocv, branch))
                   - np.interp(soc, TRUE.ocv.soc, getattr(TRUE.ocv, branch)))
        assert np.sqrt(np.mean(error_v ** 2)) < 0.010, branch
        assert np.abs(error_v).max() < 0.020, branch
    # the hysteresis is there: the charge branch above the discharge branch on the plateau
    gap_v = np.interp(0.3, result.chemistry.ocv.soc,
                      result.chemistry.ocv.charge_v - result.chemistry.ocv.discharge_v)
    assert gap_v > 0.05


def test_r0_and_the_rc_pairs_are_recovered_at_mid_soc(fitted):
    result, truth = fitted
    fit = result.chemistry.ecm.lookup(np.array([0.6]), np.array([25.0]))[:, 0]
    true = TRUE.ecm.lookup(np.array([0.6]), np.array([25.0]))[:, 0]
    true[[0, 1, 3]] *= truth["r_factor"]  # this cell's resistance spread
    r0, r1, tau1, r2, tau2 = fit / true
    assert r0 == pytest.approx(1.0, abs=0.08)
    assert r1 == pytest.approx(1.0, abs=0.2) and tau1 == pytest.approx(1.0, abs=0.2)
    assert r2 == pytest.approx(1.0, abs=0.2) and tau2 == pytest.approx(1.0, abs=0.2)
    # resistance rises toward empty, as the true cell's does
    low = result.chemistry.ecm.lookup(np.array([0.02]), np.array([25.0]))[0, 0]
    assert low > 1.1 * fit[0]


def test_a_share_of_the_pulses_and_the_last_cycle_are_held_out_and_fit_within_millivolts(
        fitted):
    result, _ = fitted
    assert any(h.startswith("HPPC level") for h in result.held_out)
    assert any(h.startswith("cycle") for h in result.held_out)
    held = {r.kind: r for r in result.residuals if r.held_out}
    assert {"pulse", "rest", "step"} <= set(held)
    assert held["pulse"].rms_mv < 10.0 and held["rest"].rms_mv < 10.0
    assert held["step"].rms_mv < 15.0


def test_no_holdout_holds_nothing_out():
    folder, _ = lab_files()
    result = fit_cell(read_all([str(folder / name) for name in LAB_FILES]),
                      FitOptions(holdout=0.0))
    assert result.held_out == []
    assert not any(r.held_out for r in result.residuals)


def test_missing_tests_are_named_all_at_once():
    folder, _ = lab_files()
    with pytest.raises(InputError) as exc:
        fit_cell(read_all([str(folder / "cycles.csv")]), FitOptions())
    text = str(exc.value)
    assert "no current pulses" in text and "R0 needs the HPPC test's pulses" in text
    assert "no slow discharge (<= C/20) found" in text
    assert "no slow charge (<= C/20) found" in text


def test_pulses_without_a_slow_charge_ask_for_the_c20_charge():
    folder, _ = lab_files()
    with pytest.raises(InputError) as exc:
        fit_cell(read_all([str(folder / "hppc.csv")]), FitOptions())
    problems = exc.value.problems
    assert len(problems) == 1  # the discharge branch comes from the HPPC's rests
    assert problems[0].startswith("no slow charge (<= C/20) found: the OCV's charge branch "
                                  "needs a C/20 charge from empty")


@pytest.mark.parametrize(("text", "expected"), [
    ("time_s,current_a\n0,1\n", "missing column(s) voltage_v"),
    ("time_s,current_a,voltage_v\n" + "".join(f"{k},0,3.1\n" for k in range(12))
     + "12,0,abc\n", "line 14, column voltage_v = 'abc': must be a finite number"),
    ("time_s,current_a,voltage_v\n" + "".join(f"{k},0,3.1\n" for k in range(12))
     + "5,0,3.1\n", "line 14, column time_s = 5: must be greater than the previous row's "
     "time (11): time must go forward"),
])
def test_a_bad_csv_names_the_file_the_line_and_the_field(tmp_path, text, expected):
    path = tmp_path / "lab.csv"
    path.write_text(text)
    with pytest.raises(InputError) as exc:
        read_all([str(path)])
    assert str(path) in str(exc.value) and expected in str(exc.value)


def test_two_exponentials_are_separated():
    t_s = np.arange(1.0, 3600.0)
    rng = np.random.default_rng(0)
    v = 3.2 - 0.010 * np.exp(-t_s / 5.0) - 0.008 * np.exp(-t_s / 200.0)
    params, rms_v = fit_two_exponentials(t_s, v + 2e-4 * rng.standard_normal(t_s.size))
    c0, a1, tau1, a2, tau2 = params
    assert c0 == pytest.approx(3.2, abs=2e-4)
    assert (a1, a2) == (pytest.approx(-0.010, rel=0.05), pytest.approx(-0.008, rel=0.05))
    assert (tau1, tau2) == (pytest.approx(5.0, rel=0.1), pytest.approx(200.0, rel=0.1))
    assert rms_v < 3e-4


def test_an_hppc_file_at_another_temperature_gives_the_ecm_a_row_for_it(tmp_path):
    folder, truth = lab_files()
    cold = tmp_path / "hppc_0c.csv"
    run_procedure(TRUE, hppc_test(3, 1800.0, step_c=1.0), cold, 1.0, seed=3, initial_soc=0.98,
                  ambient_c=0.0)
    result = fit_cell(read_all([*(str(folder / n) for n in LAB_FILES), str(cold)]),
                      FitOptions())
    temps = result.profile["ecm"]["temperature_c"]
    assert len(temps) == 2 and temps[0] == pytest.approx(0.0, abs=1.5)
    assert temps[1] == pytest.approx(25.0, abs=1.5)
    cold_r0, warm_r0 = result.chemistry.ecm.lookup(np.array([0.6, 0.6]),
                                                   np.array([temps[0], 25.0]))[0]
    true_ratio = (TRUE.ecm.lookup(np.array([0.6]), np.array([temps[0]]))[0, 0]
                  / TRUE.ecm.lookup(np.array([0.6]), np.array([25.0]))[0, 0])
    assert cold_r0 / warm_r0 == pytest.approx(true_ratio, rel=0.1)
