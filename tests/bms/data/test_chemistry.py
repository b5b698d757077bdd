"""Chemistry presets and user cell profiles: what loads, and how bad profiles are refused."""

from __future__ import annotations

import numpy as np
import pytest

from bms.data.chemistry import load_profile, parse_profile
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
