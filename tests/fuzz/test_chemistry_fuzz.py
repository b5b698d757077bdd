"""Fuzzing the cell profile loader (`bms.data.chemistry`: parse_profile, load_profile;
`bms.data.presets.resolve_chemistry`).

A profile with values changed, removed, added, of another type or out of range gives a
Chemistry that is consistent (finite numbers, ordered windows, an OCV table that rises
inside the cell limits, thresholds inside them) and that the firmware starts on, with
what the file gave applied; or InputError whose every problem starts with a field the file
gave or a profile field. Nothing the file gives is silently ignored. Any text, any bytes
and any name for `--chemistry` give a Chemistry or InputError, never another exception.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bms.core.firmware import Firmware
from bms.data.chemistry import (
    _PROFILE_KEYS,
    Chemistry,
    load_profile,
    parse_profile,
)
from bms.data.presets import NA_NFM, PRESETS, resolve_chemistry
from bms.data.validation import InputError
from tests.fuzz.mutations import huge, mutated, mutated_text, toml_value
from tests.hil.test_replay import USER_CELL

SOURCE = "fuzz-cell.toml"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fields_of(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


# Every field given: the na-nfm preset written out as a profile.
FULL = {
    "name": "fuzz-cell", "description": "na-nfm as a profile", "capacity_ah": 3.0,
    "nominal_v": NA_NFM.nominal_v, "self_discharge_pct_per_month": 3.0,
    "limits": fields_of(NA_NFM.limits),
    "ocv": {"soc_pct": np.round(NA_NFM.ocv.soc * 100.0, 9).tolist(),
            "charge_v": NA_NFM.ocv.charge_v.tolist(),
            "discharge_v": NA_NFM.ocv.discharge_v.tolist(),
            "temp_coeff_v_per_k": NA_NFM.ocv.temp_coeff_v_per_k,
            "hysteresis_rate": NA_NFM.ocv.hysteresis_rate},
    "ecm": {"r0_ohm": 0.02, "r1_ohm": 0.01, "tau1_s": 10.0, "r2_ohm": 0.01, "tau2_s": 200.0},
    "thresholds": fields_of(NA_NFM.thresholds),
    "thermal": fields_of(NA_NFM.thermal),
}
# Only what is required (the README's example).
MINIMAL = {"name": "my-cell", "capacity_ah": 3.0, "limits": {"v_min": 2.0, "v_max": 4.3},
           "ocv": {"soc_pct": [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
                   "voltage_v": [2.0, 2.3, 2.7, 2.8, 2.9, 3.05, 3.2, 3.45, 3.6, 3.85, 4.1]}}
# The names a problem may start with when the file did not give them (a required field,
# a whole table): every field of the schema.
SCHEMA = {section or key for section, keys in _PROFILE_KEYS.items() for key in keys} | {
    f"{section}.{key}" for section, keys in _PROFILE_KEYS.items() if section for key in keys}


def places(data: dict, prefix: tuple = ()) -> list[tuple]:
    """Paths to every value and table in nested tables."""
    out = []
    for key, value in data.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += places(value, (*prefix, key))
    return out


def dotted(data: dict) -> set[str]:
    return {".".join(p) for p in places(data)}


@st.composite
def profile(draw: st.DrawFn) -> dict:
    """FULL or MINIMAL with a few edits: a value replaced, scaled or dropped, a list edited,
    a stranger added."""
    data = copy.deepcopy(draw(st.sampled_from([FULL, MINIMAL])))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(places(data)))
        *parents, key = path
        node = data
        for part in parents:
            node = node[part]
        value = node[key]
        edit = draw(st.sampled_from(["scale", "scale", "replace", "drop", "stranger", "list"]))
        if edit == "scale" and isinstance(value, float | int) and not isinstance(value, bool) \
                and abs(value) < 1e300:
            node[key] = value * draw(st.sampled_from([-1.0, 0.0, 0.5, 0.99, 1.01, 2.0, 1e9]))
        elif edit == "replace":
            node[key] = draw(toml_value | huge)
        elif edit == "drop":
            del node[key]
        elif edit == "stranger":
            target = value if isinstance(value, dict) else node
            name = draw(st.sampled_from(sorted(SCHEMA)) | st.text(max_size=8))
            target[name.rpartition(".")[2]] = draw(toml_value)
        elif edit == "list" and isinstance(value, list) and value:
            i = draw(st.integers(0, len(value) - 1))
            change = draw(st.sampled_from(["set", "del", "swap"]))
            if change == "set":
                value[i] = draw(st.sampled_from([float("nan"), float("inf"), -1.0, 1e300,
                                                 10**400, "3.0", True]) | st.floats())
            elif change == "del":
                del value[i]
            else:
                value[i], value[-1] = value[-1], value[i]
    return data


def check_consistent(chem: Chemistry) -> None:
    """What the firmware relies on in a chemistry."""
    numbers = [chem.capacity_ah, chem.nominal_v, chem.self_discharge_pct_per_month,
               chem.ocv.temp_coeff_v_per_k, chem.ocv.hysteresis_rate,
               *fields_of(chem.limits).values(), *fields_of(chem.thresholds).values(),
               *fields_of(chem.thermal).values()]
    arrays = [chem.ocv.soc, chem.ocv.charge_v, chem.ocv.discharge_v,
              *(getattr(chem.ecm, f) for f in ("r0_ohm", "r1_ohm", "tau1_s", "r2_ohm",
                                               "tau2_s"))]
    assert all(np.isfinite(x) for x in numbers), numbers
    assert all(np.all(np.isfinite(a)) for a in arrays)
    ocv, lim, thr = chem.ocv, chem.limits, chem.thresholds
    assert ocv.soc[0] == 0 and ocv.soc[-1] == 1 and np.all(np.diff(ocv.soc) > 0)
    assert ocv.soc.shape == ocv.charge_v.shape == ocv.discharge_v.shape
    assert np.all(np.diff(ocv.discharge_v) >= 0) and np.all(ocv.charge_v >= ocv.discharge_v)
    assert lim.v_min <= ocv.discharge_v.min() and ocv.charge_v.max() <= lim.v_max
    assert lim.v_min < lim.v_max and lim.charge_temp_min_c < lim.charge_temp_max_c
    assert lim.discharge_temp_min_c < lim.discharge_temp_max_c
    assert lim.v_min <= thr.undervoltage_v < thr.undervoltage_release_v <= lim.v_max
    assert lim.v_min <= thr.overvoltage_release_v < thr.overvoltage_v <= lim.v_max
    assert thr.charge_v <= thr.overvoltage_v and chem.capacity_ah > 0


def check_applied(chem: Chemistry, data: dict) -> None:
    """What the file gave is in the chemistry (as a float64: 10**30 reads as 1e30)."""
    assert chem.name == data["name"].strip() and chem.capacity_ah == float(data["capacity_ah"])
    if "description" in data:
        assert chem.description == data["description"]
    for section in ("limits", "thresholds", "thermal"):
        for key, value in data.get(section, {}).items():
            assert getattr(getattr(chem, section), key) == float(value), (section, key)


def names_something(problem: str, data: dict) -> bool:
    """The problem starts with `where = ` (a value given) or `where: ` (a required one left
    out), `where` a field given or a field of the schema (a list element as
    `ocv.soc_pct[2]`)."""
    indexed = re.match(r"([\w.]+)\[\d+\] = ", problem)
    if indexed:
        return indexed.group(1) in SCHEMA
    return any(problem.startswith((f"{where} = ", f"{where}: "))
               for where in dotted(data) | SCHEMA)


@FUZZ
@given(data=profile())
@example(data=FULL)
@example(data=MINIMAL)
@example(data=MINIMAL | {"capacity_ah": 10**400})  # was OverflowError from float()
@example(data=MINIMAL | {"limits": {"v_min": float("nan"), "v_max": 4.3},
                         "thresholds": fields_of(NA_NFM.thresholds)})  # was accepted
@example(data=MINIMAL | {"ocv": {"soc_pct": [0, 50, 100],
                                 "voltage_v": [2.0, float("nan"), 4.1]}})  # was accepted
@example(data=MINIMAL | {"ocv": {"soc_pct": [0, 100], "voltage_v": [2.0, 10**400]}})
@example(data=MINIMAL | {"thermals": {"heat_capacity_j_per_k": 1.0}})  # was ignored
@example(data=MINIMAL | {"description": {"text": "a table"}})  # was written as str(dict)
def test_any_profile_gives_a_consistent_chemistry_or_errors_naming_fields(data: dict):
    before = pickle.dumps(data)
    try:
        chem = parse_profile(data, SOURCE)
    except InputError as exc:
        assert exc.source == SOURCE and exc.problems
        for problem in exc.problems:
            assert names_something(problem, data), problem
    else:
        check_consistent(chem)
        check_applied(chem, data)
        assert all(".".join(p) in SCHEMA for p in places(data))  # nothing ignored
        Firmware(chem, 4, 2 * chem.capacity_ah)
    assert pickle.dumps(data) == before


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chemistry_fuzz")




@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(st.text(max_size=200), mutated_text(USER_CELL, 6),
                         mutated(USER_CELL.encode()), st.binary(max_size=60)))
@example(content=USER_CELL)
@example(content=USER_CELL + "nominal_v = 0x" + "f" * 5000 + "\n")
def test_any_file_gives_a_chemistry_or_an_error_naming_the_file(folder: Path, content):
    path = folder / "cell.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    try:
        chem = load_profile(path)
    except InputError as exc:
        assert exc.source == str(path) and exc.problems
    else:
        check_consistent(chem)


@pytest.fixture(scope="module")
def empty(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


@settings(max_examples=150, deadline=None)
@given(name=st.text(st.characters(blacklist_characters="/"), max_size=40)
       | st.sampled_from(sorted(PRESETS)) | st.text(min_size=300, max_size=5000)
       .map(lambda s: s.replace("/", "_")))
@example(name="x" * 5000)  # was OSError: File name too long
@example(name="cell\x00.toml")  # was ValueError: embedded null byte
@example(name=".")
def test_any_chemistry_name_is_a_chemistry_or_input_error(empty: Path, name: str):
    """Run in an empty folder, so that a name finds no file (but `.`, itself)."""
    with contextlib.chdir(empty):
        try:
            chem = resolve_chemistry(name)
        except InputError as exc:
            assert exc.source in (name, "--chemistry") and exc.problems
        else:
            assert chem is PRESETS[name]
