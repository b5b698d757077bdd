"""Fuzzing the firmware configuration loader (`bms.data.config_toml`).

Whatever a file holds — tables of any shape, values of any TOML type, numbers far out of
range, text that is not TOML or not UTF-8 — the loader returns a FirmwareConfig that the
firmware takes and the protocol can carry, with every value the file gave applied, or
raises InputError whose every problem starts with a key the file gave
(`limits.max_charge_a = ...`). Its input is never changed.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bms.core.firmware import Firmware
from bms.data.config import FirmwareConfig, default_config
from bms.data.config_toml import (
    FIXED_ROW_FIELDS,
    ROW_FIELDS,
    config_scalars,
    config_sections,
    config_to_toml,
    load_config,
    parse_config,
    row_keys,
)
from bms.data.parameters import catalogue, value_of
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from bms.host.frames import VALUE_KINDS
from protocol import messages as pm
from protocol.codec import encode
from tests.fuzz.mutations import huge, mutated, mutated_text, toml_value

CHEM = PRESETS["na-nfm"]
N_SERIES, CAPACITY_AH = 4, 3.0
BASE = default_config(CHEM, N_SERIES, CAPACITY_AH)
SECTIONS = config_sections(BASE)
SCALARS = config_scalars(BASE)
ROWS = dict(zip(row_keys(BASE.protection), BASE.protection, strict=True))
SOURCE = "fuzz.toml"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GOOD_FACTORS = (0.5, 0.9, 1.0, 1.0, 1.1)  # often allowed: some configurations are good
WILD_FACTORS = (-1.0, 0.0, 2.0, 1e6)


def near(default: object, wild: bool) -> st.SearchStrategy:
    """Values of the default's type around it; `wild`: also far off, or of any type."""
    if isinstance(default, bool):
        return st.booleans() if not wild else st.booleans() | toml_value
    if isinstance(default, str):
        words = [str(word) for word in type(default)]  # a choice: its enum's words
        return st.sampled_from(words) if not wild else st.sampled_from([*words, ""]) | toml_value
    if isinstance(default, int):
        good = st.integers(max(default // 2, 1), 2 * default)
        return good if not wild else st.one_of(good, st.integers(-2, 3 * default), huge,
                                               toml_value)
    good = st.sampled_from(GOOD_FACTORS).map(lambda f: f * default)
    return good if not wild else st.one_of(good, st.sampled_from(WILD_FACTORS).map(
        lambda f: f * default), st.floats(), toml_value)


def table(fields: dict[str, object], wild: bool,
          extra: tuple[str, ...] = ()) -> st.SearchStrategy:
    """A table giving some of `fields` (name -> default); `wild`: perhaps with a stranger or
    two, or not a table at all."""
    known = st.fixed_dictionaries({}, optional={k: near(v, wild) for k, v in fields.items()})
    if not wild:
        return known
    names = st.text(max_size=8) | (st.sampled_from(extra) if extra else st.nothing())
    strangers = st.dictionaries(names, toml_value, max_size=2)
    return st.one_of(known, st.tuples(known, strangers).map(lambda ab: ab[1] | ab[0]),
                     toml_value)


def fields_of(obj) -> dict[str, object]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@st.composite
def protection(draw: st.DrawFn, wild: bool) -> object:
    """[protection.FAULT.LEVEL(.quantity)] tables for some rows, or anything."""
    if wild and draw(st.integers(0, 5)) == 0:
        return draw(toml_value)
    tree: dict = {}
    for key in draw(st.lists(st.sampled_from(list(ROWS)), max_size=3, unique=True)):
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        row = ROWS[key]
        node[key[-1]] = draw(table({f: getattr(row, f) for f in ROW_FIELDS}, wild,
                                   FIXED_ROW_FIELDS))
    if wild and draw(st.booleans()):  # a stranger: dotted, empty, an unknown fault or level
        path = draw(st.lists(st.text(max_size=10), min_size=1, max_size=3))
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[path[-1]] = draw(toml_value)
    return tree


@st.composite
def config_data(draw: st.DrawFn) -> dict:
    """A file's tables: near the defaults, or (`wild`) anything at all."""
    wild = draw(st.booleans())
    keys = st.sampled_from([*SCALARS, *SECTIONS, "protection"])
    if wild:
        keys |= st.text(max_size=8)
    data: dict = {}
    for key in draw(st.lists(keys, max_size=5, unique=True)):
        if key in SCALARS:
            data[key] = draw(near(getattr(BASE, key), wild))
        elif key in SECTIONS:
            data[key] = draw(table(fields_of(SECTIONS[key]), wild))
        elif key == "protection":
            data[key] = draw(protection(wild))
        else:
            data[key] = draw(toml_value)
    return data


def paths(data: object, prefix: str = "") -> set[str]:
    """Every dotted key path in nested tables."""
    if not isinstance(data, dict):
        return set()
    out = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        out |= {path} | paths(value, path + ".")
    return out


def check_applied(cfg: FirmwareConfig, data: dict) -> None:
    """Every value the file gave is in the configuration (an int for a float as a float64:
    2**60 + 1 reads as 2**60)."""

    def same(obj, name: str, given: object) -> bool:
        value = getattr(obj, name)
        return value == (float(given) if isinstance(value, float) else given)

    for key, value in data.items():
        if key in SCALARS:
            assert same(cfg, key, value), key
        elif key in SECTIONS:
            for name, v in value.items():
                assert same(getattr(cfg, key), name, v), (key, name)
    given = {}
    for key in ROWS:
        node = data.get("protection", {})
        for part in key:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        given[key] = node
    for row, key in zip(cfg.protection, ROWS, strict=True):
        for name, v in given[key].items():
            assert same(row, name, v), (key, name)


def check(data: dict) -> None:
    before = copy.deepcopy(data)
    try:
        cfg = parse_config(data, SOURCE, CHEM, N_SERIES, CAPACITY_AH)
    except InputError as exc:
        assert exc.source == SOURCE and exc.problems
        given = paths(data)
        for problem in exc.problems:
            assert any(problem.startswith(f"{p} = ") for p in given), (problem, sorted(given))
    else:
        check_applied(cfg, data)
        Firmware(CHEM, N_SERIES, CAPACITY_AH, cfg)  # the firmware takes it as it starts
        Firmware(CHEM, N_SERIES, CAPACITY_AH).reconfigure(cfg)  # ... and at run time
        encode(pm.ConfigValues(tuple(  # ... and a host can read every value back
            {"param_id": p.id, "kind": int(VALUE_KINDS[p.kind]), "value": value_of(cfg, p)}
            for p in catalogue(cfg))), 0)
    assert pickle.dumps(data) == pickle.dumps(before)  # NaN != NaN: compare bytes


@FUZZ
@given(data=config_data())
@example(data={"rest_current_a": 10**400})  # was OverflowError: int too large for a float
@example(data={"protection": {"CELL_OVERVOLTAGE": {"FAULT": {"threshold": -(10**400)}}}})
@example(data={"protection": {"a.b.c.d": 1}})  # was IndexError: a dotted key, misnamed
@example(data={"fault_log_size": 10**30})  # was accepted; the firmware could not take it
@example(data={"precharge": {"retries": 2**31}})  # was accepted; the protocol's INT is int32
def test_any_tables_give_a_config_the_firmware_takes_or_errors_naming_given_keys(data):
    check(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config_fuzz")


DEFAULT_TEXT = config_to_toml(BASE, CHEM)


@FUZZ
@given(content=st.one_of(st.text(max_size=300), mutated_text(DEFAULT_TEXT),
                         mutated(DEFAULT_TEXT.encode()), st.binary(max_size=100)))
@example(content=DEFAULT_TEXT)
@example(content="fault_log_size = 99999999999999999999999999999999\n")
@example(content="fault_log_size = " + "9" * 5000)  # was ValueError from tomllib, unreported
@example(content="fault_log_size = 0x" + "f" * 5000)  # was ValueError from repr() of the int
@example(content="[balancing]\nmeasure_every_s = 1979-05-27\n")
def test_any_file_gives_a_config_or_an_error_naming_the_file(folder: Path, content):
    path = folder / "config.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    try:
        cfg = load_config(path, CHEM, N_SERIES, CAPACITY_AH)
    except InputError as exc:
        assert exc.source == str(path) and exc.problems and str(path) in str(exc)
    else:
        assert isinstance(cfg, FirmwareConfig)
        if content == DEFAULT_TEXT:
            assert cfg == BASE
        Firmware(CHEM, N_SERIES, CAPACITY_AH).reconfigure(cfg)


def test_strategies_reach_good_configs():
    """The property above is not only about refusals: near-default tables often pass."""
    ok = []

    @settings(max_examples=100, deadline=None, database=None)
    @given(data=config_data())
    def collect(data):
        try:
            parse_config(data, SOURCE, CHEM, N_SERIES, CAPACITY_AH)
            ok.append(bool(data))
        except InputError:
            pass

    collect()
    assert sum(ok) >= 10, ok

