"""A cell profile's [ecm] as measured tables (what `bms-emu fit` writes): by SoC and
temperature, spread over temperature when one is given, refused naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from bms.data.chemistry import parse_profile
from bms.data.validation import InputError


def test_the_profile_ecm_tables_load_by_soc_and_temperature():
    base = {"name": "c", "capacity_ah": 2.0, "limits": {"v_min": 2.0, "v_max": 4.2},
            "ocv": {"soc_pct": [0, 100], "voltage_v": [2.5, 4.0]}}
    chem = parse_profile({**base, "ecm": {
        "soc_pct": [10, 90], "temperature_c": [0, 25],
        "r0_ohm": [[0.04, 0.02], [0.02, 0.01]], "r1_ohm": 0.01, "tau1_s": [5, 8],
        "r2_ohm": 0.01, "tau2_s": 100}}, "test")
    r0 = chem.ecm.lookup(np.array([0.5, 0.1]), np.array([25.0, 0.0]))[0]
    assert r0 == pytest.approx([0.015, 0.04])
    one = parse_profile({**base, "ecm": {"soc_pct": [10, 90], "r0_ohm": [0.02, 0.01]}}, "t")
    cold, warm = one.ecm.lookup(np.array([0.9, 0.9]), np.array([0.0, 25.0]))[0]
    assert warm == pytest.approx(0.01) and cold > 1.5 * warm  # spread by Arrhenius
    with pytest.raises(InputError, match=r"ecm.r0_ohm = \[0.02\]: must be a number, a list "
                       r"of 2 numbers \(one per ecm.soc_pct\)"):
        parse_profile({**base, "ecm": {"soc_pct": [10, 90], "r0_ohm": [0.02]}}, "t")


@pytest.mark.parametrize(("ecm", "expected"), [
    ({"soc_pct": [90, 10]}, "ecm.soc_pct = [90.0, 10.0]: must be strictly ascending within "
                            "[0, 100]"),
    ({"temperature_c": [25]}, "ecm.soc_pct: is required with ecm.temperature_c"),
    ({"soc_pct": [50]}, "ecm.soc_pct = [50.0]: needs at least 2 values"),
    ({"soc_pct": [10, 90], "temperature_c": [0, 25], "tau1_s": [[1, 2], [3, 0]]},
     "ecm.tau1_s = [[1, 2], [3, 0]]: each value must be within [0.001, 10000]"),
    ({"soc_pct": [10, 90], "r0_ohm": [True, 0.1]}, "ecm.r0_ohm = [True, 0.1]: must be a number"),
    ({"soc_pct": [10, 90], "r0_ohm": [10**400, 0.1]}, "ecm.r0_ohm = [1000"),
])
def test_bad_ecm_tables_are_refused_naming_the_field(ecm, expected):
    base = {"name": "c", "capacity_ah": 2.0, "limits": {"v_min": 2.0, "v_max": 4.2},
            "ocv": {"soc_pct": [0, 100], "voltage_v": [2.5, 4.0]}}
    with pytest.raises(InputError) as exc:
        parse_profile({**base, "ecm": ecm}, "t")
    assert any(p.startswith(expected) for p in exc.value.problems), exc.value.problems
