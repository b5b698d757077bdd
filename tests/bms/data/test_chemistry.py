"""Chemistry presets and user cell profiles: what loads, and how bad profiles are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bms.data import presets
from bms.data.chemistry import OcvCurve, check_chemistry, load_profile, parse_profile
from bms.data.config import default_config
from bms.data.presets import PRESETS, resolve_chemistry
from bms.data.validation import InputError

MINIMAL = """
name = "my-cell"
capacity_ah = 3.0
[limits]
v_min = 2.0
v_max = 4.3
[ocv]
soc_pct = [0, 50, 100]
voltage_v = [2.0, 3.2, 4.2]
"""


def write(tmp_path, text: str):
    path = tmp_path / "cell.toml"
    path.write_text(text)
    return path


def test_presets_are_internally_consistent():
    for chem in PRESETS.values():
        ocv = chem.ocv
        assert np.all(np.diff(ocv.soc) > 0) and ocv.soc[0] == 0 and ocv.soc[-1] == 1
        assert np.all(ocv.charge_v >= ocv.discharge_v)
        assert np.all(np.diff(ocv.discharge_v) >= 0)
        lim, thr = chem.limits, chem.thresholds
        assert lim.v_min < thr.undervoltage_v < thr.undervoltage_release_v
        assert thr.overvoltage_release_v < thr.overvoltage_v <= lim.v_max
        assert thr.charge_v <= thr.overvoltage_v
        assert ocv.charge_v.max() <= lim.v_max and ocv.discharge_v.min() >= lim.v_min


def test_nfm_slope_above_35_pct_is_steep_and_nvpf_plateau_is_flat():
    """The facts the estimator relies on (shared/sodium-ion.md): ~18 mV/% vs ~2 mV/%."""
    nfm, nvpf = PRESETS["na-nfm"].ocv, PRESETS["na-nvpf"].ocv
    soc = np.array([0.4, 0.9])
    nfm_slope = np.diff(np.interp(soc, nfm.soc, nfm.discharge_v))[0] / 50.0 * 1e3
    nvpf_slope = np.diff(np.interp([0.6, 0.9], nvpf.soc, nvpf.discharge_v))[0] / 30.0 * 1e3
    assert 15.0 < nfm_slope < 25.0
    assert nvpf_slope < 3.0


def test_nfm_hysteresis_is_largest_on_the_hard_carbon_plateau():
    ocv = PRESETS["na-nfm"].ocv
    gap_mv = (ocv.charge_v - ocv.discharge_v) * 1e3
    plateau = (ocv.soc >= 0.2) & (ocv.soc <= 0.3)
    assert gap_mv[plateau].min() == pytest.approx(80.0)
    assert gap_mv[ocv.soc >= 0.5].max() == pytest.approx(20.0)


def test_cold_raises_resistance():
    ecm = PRESETS["na-nfm"].ecm
    r0_cold, r0_room = ecm.lookup(np.array([0.5, 0.5]), np.array([-20.0, 25.0]))[0]
    assert r0_room == pytest.approx(0.035)
    assert r0_cold > 3.0 * r0_room


def test_minimal_profile_loads_with_defaults(tmp_path):
    chem = load_profile(write(tmp_path, MINIMAL))
    assert chem.name == "my-cell"
    assert chem.capacity_ah == 3.0
    assert chem.limits.v_min == 2.0 and chem.limits.v_max == 4.3
    # one branch given: no hysteresis
    assert np.array_equal(chem.ocv.charge_v, chem.ocv.discharge_v)
    # default ECM scales inversely with capacity: 0.0525 ohm*Ah / 3 Ah at 25 °C, 50 % SoC
    r0 = chem.ecm.lookup(np.array([0.5]), np.array([25.0]))[0][0]
    assert r0 == pytest.approx(0.0525 / 3.0)
    assert chem.thresholds.overvoltage_v <= chem.limits.v_max


def test_profile_with_both_branches_and_ecm(tmp_path):
    text = MINIMAL.replace("voltage_v = [2.0, 3.2, 4.2]",
                           "charge_v = [2.05, 3.25, 4.2]\ndischarge_v = [2.0, 3.2, 4.15]")
    text += "[ecm]\nr0_ohm = 0.02\nr1_ohm = 0.01\ntau1_s = 10.0\nr2_ohm = 0.01\ntau2_s = 200.0\n"
    chem = load_profile(write(tmp_path, text))
    assert chem.ocv.half_gap_v[1] == pytest.approx(0.025)
    r0, r1, tau1, r2, tau2 = chem.ecm.lookup(np.array([0.5]), np.array([25.0]))[:, 0]
    assert (r0, r1, tau1, r2, tau2) == pytest.approx((0.02, 0.01, 10.0, 0.01, 200.0))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("soc_pct = [0, 50, 100]", "soc_pct = [0, 60, 50, 100]", "ocv.soc_pct[2]"),
        ("voltage_v = [2.0, 3.2, 4.2]", "voltage_v = [2.0, 4.2]", "ocv.voltage_v"),
        ("v_min = 2.0", "v_min = 4.5", "limits.v_min"),
        ("capacity_ah = 3.0", "capacity_ah = -1", "capacity_ah"),
        ("voltage_v = [2.0, 3.2, 4.2]", "voltage_v = [2.0, 3.4, 3.2]", "ocv.voltage_v[2]"),
        ("voltage_v = [2.0, 3.2, 4.2]", "voltage_v = [2.0, 3.2, 4.4]", "ocv.voltage_v[2]"),
        ("soc_pct = [0, 50, 100]", "soc_pct = [5, 50, 100]", "ocv.soc_pct"),
        ("capacity_ah = 3.0", "capacity_ah = \"three\"", "capacity_ah"),
        ('name = "my-cell"', 'name = "my-cell"\ncolour = "blue"', "colour"),
    ],
)
def test_malformed_profile_names_the_field(tmp_path, old, new, field):
    with pytest.raises(InputError) as err:
        load_profile(write(tmp_path, MINIMAL.replace(old, new)))
    assert any(p.startswith(field + " ") for p in err.value.problems), err.value.problems
    assert str(tmp_path / "cell.toml") in str(err.value)


def test_negative_resistance_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"ecm.r0_ohm = -0.01"):
        load_profile(write(tmp_path, MINIMAL + "[ecm]\nr0_ohm = -0.01\n"))


def test_every_problem_is_reported_at_once(tmp_path):
    text = MINIMAL.replace("capacity_ah = 3.0", "capacity_ah = 0").replace(
        "v_min = 2.0", "v_min = 5.0")
    with pytest.raises(InputError) as err:
        load_profile(write(tmp_path, text))
    fields = " ".join(err.value.problems)
    assert "capacity_ah" in fields and "limits.v_min" in fields


def test_release_on_the_wrong_side_is_refused():
    data = {"name": "x", "capacity_ah": 1.0, "limits": {"v_min": 2.0, "v_max": 4.2},
            "ocv": {"soc_pct": [0, 100], "voltage_v": [2.0, 4.1]},
            "thresholds": {"overvoltage_v": 4.1, "overvoltage_release_v": 4.15}}
    with pytest.raises(InputError, match="thresholds.overvoltage_release_v = 4.15"):
        parse_profile(data, "inline")


def test_invalid_toml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(InputError, match="not valid TOML"):
        load_profile(write(tmp_path, "name = "))
    with pytest.raises(InputError, match="cannot read"):
        load_profile(tmp_path / "absent.toml")


def test_resolve_chemistry_accepts_presets_and_paths(tmp_path):
    assert resolve_chemistry("na-nvpf") is PRESETS["na-nvpf"]
    assert resolve_chemistry(str(write(tmp_path, MINIMAL))).name == "my-cell"
    with pytest.raises(InputError, match="'na-xyz' is neither a preset"):
        resolve_chemistry("na-xyz")


def test_with_capacity_scales_resistance_and_heat_capacity():
    base = PRESETS["na-nfm"]
    big = base.with_capacity(150.0)
    r0_base = base.ecm.lookup(np.array([0.5]), np.array([25.0]))[0][0]
    r0_big = big.ecm.lookup(np.array([0.5]), np.array([25.0]))[0][0]
    assert r0_big == pytest.approx(r0_base / 100.0)
    assert big.thermal.heat_capacity_j_per_k == pytest.approx(100.0 * 45.0)
    assert big.ocv is base.ocv


# --- 100 % is the cell charged to its charge voltage -----------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_passes_the_coherence_check(name):
    chem = PRESETS[name]
    assert check_chemistry(chem, name) is chem
    assert chem.ocv.full_v == chem.thresholds.charge_v


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_full_cell_at_rest_on_either_branch_is_below_every_over_voltage_row(name):
    chem = PRESETS[name]
    rows = default_config(chem, 16, chem.capacity_ah).protection
    lowest = min(r.threshold for r in rows if r.fault == "CELL_OVERVOLTAGE")
    full = chem.ocv.voltage_v(np.ones(2), np.array([1.0, -1.0]), np.full(2, 25.0))
    assert full[0] == pytest.approx(chem.thresholds.charge_v)  # the charge branch
    assert full[1] < full[0]  # the discharge branch
    assert full.max() < lowest
    pack_row = next(r for r in rows if r.fault == "PACK_OVERVOLTAGE")
    assert 16 * full.max() < pack_row.threshold


def test_the_sourced_table_ends_where_its_charge_branch_reaches_the_charge_voltage():
    # na-nfm's source: the charge branch 3.86 V at 90 %, 4.10 V at 100 %; it reaches the
    # 4.0 V charge voltage at 90 + 10 * 0.14 / 0.24 = 95.83 % of the source's axis.
    source = OcvCurve(presets._NFM_SOC_PCT / 100.0, presets._NFM_DISCHARGE_V + presets._NFM_GAP_V,
                      presets._NFM_DISCHARGE_V, -0.2e-3, 25.0)
    full = 0.9 + 0.1 * 0.14 / 0.24
    assert source.charge_soc_at(4.0) == pytest.approx(full)
    ended = source.ending_at(4.0)
    assert ended.soc[-1] == 1.0 and ended.soc[-2] == pytest.approx(0.9 / full)
    assert ended.soc.size == source.soc.size  # 100 % dropped, the crossing put in its place
    assert ended.charge_v[-1] == 4.0
    assert ended.discharge_v[-1] == pytest.approx(3.84 + (4.08 - 3.84) * 0.14 / 0.24)
    assert np.array_equal(ended.charge_v[:-1], source.charge_v[:-1])
    assert ended.ending_at(4.0) is ended  # nothing left above
    assert PRESETS["na-nfm"].ocv.soc == pytest.approx(ended.soc)
    # Above 100 % the curve goes on with its last slope: an overcharged cell climbs.
    over = ended.voltage_v(np.array([1.02]), np.array([1.0]), np.array([25.0]))[0]
    assert 4.0 < over < 4.1


def test_an_incoherent_preset_is_refused_naming_the_crossing():
    source = OcvCurve(presets._NFM_SOC_PCT / 100.0, presets._NFM_DISCHARGE_V + presets._NFM_GAP_V,
                      presets._NFM_DISCHARGE_V, -0.2e-3, 25.0)
    with pytest.raises(InputError) as err:
        check_chemistry(dataclasses.replace(PRESETS["na-nfm"], ocv=source), "preset na-nfm")
    (problem,) = err.value.problems
    assert problem.startswith("ocv.charge_v[10] = 4.1: the OCV at 100 % must be within "
                              "[3.99, 4] V")
    assert "reaches 4 V at 95.83 %" in problem


ENDS_HIGH = MINIMAL + "[thresholds]\ncharge_v = 4.0\n"  # the table goes on to 4.2 V


def the_one_problem(tmp_path, text: str) -> str:
    """The single problem loading the profile `text` is refused with."""
    with pytest.raises(InputError) as err:
        load_profile(write(tmp_path, text))
    (problem,) = err.value.problems
    return problem


def test_a_profile_whose_table_ends_above_the_charge_voltage_is_refused(tmp_path):
    problem = the_one_problem(tmp_path, ENDS_HIGH)
    # 3.2 V at 50 %, 4.2 V at 100 %: 4.0 V at 90 %
    assert problem.startswith("ocv.voltage_v[2] = 4.2: the OCV at 100 % must be within "
                              "[3.99, 4] V: 100 % is the cell charged to thresholds.charge_v (4 V)")
    assert "the charge branch reaches 4 V at 90 % of this table" in problem
    # Ended there, as the message says, it loads.
    fixed = ENDS_HIGH.replace("soc_pct = [0, 50, 100]", "soc_pct = [0, 55.5556, 100]").replace(
        "voltage_v = [2.0, 3.2, 4.2]", "voltage_v = [2.0, 3.2, 4.0]")
    assert load_profile(write(tmp_path, fixed)).ocv.full_v == 4.0


def test_a_profile_whose_table_ends_well_below_the_charge_voltage_is_refused(tmp_path):
    problem = the_one_problem(tmp_path, MINIMAL + "[thresholds]\ncharge_v = 4.25\n")
    assert problem.startswith("ocv.voltage_v[2] = 4.2: the OCV at 100 % must be within "
                              "[4.24, 4.25] V")
    assert "lower thresholds.charge_v to 4.2" in problem


def test_a_profile_without_a_charge_voltage_is_charged_to_its_table_end(tmp_path):
    chem = load_profile(write(tmp_path, MINIMAL))
    assert chem.thresholds.charge_v == chem.ocv.full_v == 4.2
    assert chem.thresholds.charge_v < chem.thresholds.overvoltage_v


@pytest.mark.parametrize(("thresholds", "problem"), [
    ({"undervoltage_release_v": 4.2, "overvoltage_release_v": 4.22},
     "thresholds.charge_v = 4.2: must be above thresholds.undervoltage_release_v (4.2)"),
    ({"overvoltage_v": 4.2, "overvoltage_release_v": 4.1},
     "thresholds.charge_v = 4.2: must be below thresholds.overvoltage_v (4.2)"),
    ({"undervoltage_release_v": 3.5, "overvoltage_release_v": 3.4},
     "thresholds.overvoltage_release_v = 3.4: must be above "
     "thresholds.undervoltage_release_v (3.5)"),
    ({"undervoltage_v": 2.5, "undervoltage_release_v": 2.4},
     "thresholds.undervoltage_release_v = 2.4: must be above thresholds.undervoltage_v (2.5)"),
])
def test_thresholds_out_of_order_are_refused(thresholds, problem):
    data = {"name": "x", "capacity_ah": 1.0, "limits": {"v_min": 2.0, "v_max": 4.3},
            "ocv": {"soc_pct": [0, 50, 100], "voltage_v": [2.0, 3.2, 4.2]},
            "thresholds": thresholds}
    with pytest.raises(InputError) as err:
        parse_profile(data, "inline")
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def _soc_on_branch_one_cell(ocv: OcvCurve, voltage_v: float, hysteresis: float,
                            temperature_c: float) -> tuple[float, float]:
    """soc_on_branch's reading for one cell, as its docstring tells it, step by step."""
    soc_t, mid, half = ocv.lookup_tables
    corrected = voltage_v - ocv.temp_coeff_v_per_k * (temperature_c - 25.0)
    curve = mid + hysteresis * half
    k = min(max(int(np.count_nonzero(curve <= corrected)) - 1, 0), soc_t.size - 2)
    slope = (curve[k + 1] - curve[k]) / (soc_t[k + 1] - soc_t[k])
    soc = soc_t[k] + (corrected - curve[k]) / (slope if slope > 0 else np.inf)
    return float(np.clip(soc, soc_t[0], ocv.soc[-1])), float(slope)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_soc_on_branch_reads_every_cell_as_it_would_read_that_cell_alone(name):
    """The vectorised lookup (issue 19: laid out table x cell) gives each cell's bits, NaN
    and readings beyond either end of the table included."""
    ocv = PRESETS[name].ocv
    rng = np.random.default_rng(19)
    n = 64
    v = rng.uniform(-0.5, 4.6, n)
    v[:4] = (np.nan, -np.inf, np.inf, ocv.lookup_tables[1][3])  # the last: on a table point
    h = rng.uniform(-1.0, 1.0, n)
    h[4:6] = (-1.0, 1.0)
    t = rng.uniform(-30.0, 60.0, n)
    soc, slope = ocv.soc_on_branch(v, h, t)
    alone = np.array([_soc_on_branch_one_cell(ocv, *cell) for cell in zip(v, h, t, strict=True)])
    assert soc.tobytes() == alone[:, 0].tobytes()
    assert slope.tobytes() == alone[:, 1].tobytes()
