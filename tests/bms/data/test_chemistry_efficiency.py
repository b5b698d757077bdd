"""Coulombic efficiency as chemistry data: the profile key, its default, its range, presets."""

from __future__ import annotations

import dataclasses

import pytest

from bms.data.chemistry import check_chemistry, load_profile
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from bms_emu.chemistries_cmd import describe
from tests.bms.data.test_chemistry import MINIMAL, write


def with_efficiency(value: str) -> str:
    """MINIMAL with a top-level `coulombic_efficiency = value`."""
    return MINIMAL.replace("capacity_ah = 3.0",
                           f"capacity_ah = 3.0\ncoulombic_efficiency = {value}")


def test_a_profile_without_the_key_loads_as_lossless(tmp_path):
    assert load_profile(write(tmp_path, MINIMAL)).coulombic_efficiency == 1.0


def test_a_profile_gives_its_efficiency_and_a_resized_cell_keeps_it(tmp_path):
    chem = load_profile(write(tmp_path, with_efficiency("0.95")))
    assert chem.coulombic_efficiency == 0.95
    assert chem.with_capacity(10.0).coulombic_efficiency == 0.95
    assert describe(chem)["coulombic_efficiency"] == 0.95


@pytest.mark.parametrize("value", ["0.5", "1.01", "0", "-0.9"])
def test_an_efficiency_out_of_range_is_refused_naming_key_value_and_range(tmp_path, value):
    with pytest.raises(InputError) as err:
        load_profile(write(tmp_path, with_efficiency(value)))
    (problem,) = err.value.problems
    assert problem.startswith(f"coulombic_efficiency = {float(value)}"), problem
    assert "(0.5, 1]" in problem


@pytest.mark.parametrize(("value", "shown", "needed"), [
    ('"high"', "'high'", "must be a number"), ("nan", "nan", "must be a finite number")])
def test_an_efficiency_that_is_not_a_number_is_refused(tmp_path, value, shown, needed):
    with pytest.raises(InputError) as err:
        load_profile(write(tmp_path, with_efficiency(value)))
    (problem,) = err.value.problems
    assert problem == f"coulombic_efficiency = {shown}: {needed}"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_has_an_efficiency_below_one(name):
    assert 0.9 <= PRESETS[name].coulombic_efficiency < 1.0


def test_a_built_chemistry_with_an_impossible_efficiency_is_refused():
    chem = dataclasses.replace(PRESETS["na-nfm"], coulombic_efficiency=1.2)
    with pytest.raises(InputError, match=r"coulombic_efficiency = 1.2: must be within"):
        check_chemistry(chem, "preset na-nfm")
