"""The scenario library under scenarios/: every file passes, and together they are the
subject of an expectation for every protection row of the default configuration and
every fault raised outside the table, so a new row without a scenario fails here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bms.data.config import default_config
from bms.data.faults import FAULT_CODES
from bms.data.presets import PRESETS
from hil.scenario import run_scenario
from hil.scenario_file import load_scenario

LIBRARY = Path(__file__).resolve().parents[2] / "scenarios"
FILES = sorted(LIBRARY.glob("*.toml"))
# Raised only by an exception inside the firmware's step: no plant condition leads there
# (tests/bms/test_firmware.py feeds a broken measurement to show it).
# INTERNAL_ERROR: a firmware bug; INVERTER_TIMEOUT: a CAN link's inverter falling silent
# (tests/bms/links/can/test_keepalive.py), which a scenario has no link for.
UNREACHABLE_FROM_THE_PLANT = {"INTERNAL_ERROR", "INVERTER_TIMEOUT"}


def subjects() -> list:
    """Every (fault, level, quantity) the library asserts active somewhere."""
    return [s for path in FILES for check in load_scenario(path).checks
            for s in check.subjects]


def test_the_library_is_there():
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_passes(path):
    sc = load_scenario(path)
    assert sc.description, "a library scenario says what it shows and why"
    result = run_scenario(sc)
    failed = [f"{v.check.label}: {v.message}" for v in result.verdicts if not v.passed]
    events = [e.describe() for e in result.events]
    assert not failed, "\n".join([*failed, "events:", *events])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_protection_row_is_the_subject_of_an_expectation(preset):
    """A row is covered by an expectation that it is active with its fault and level, and
    its quantity too where its fault has more than one row at that level."""
    rows = default_config(PRESETS[preset], 16, 1.5).protection
    per_level = Counter((r.fault, r.level) for r in rows)
    seen = subjects()
    missing = [
        f"{r.fault} {r.level} ({r.quantity})" for r in rows
        if not any(s.fault == r.fault and s.level == r.level
                   and (s.quantity == r.quantity
                        or s.quantity is None and per_level[r.fault, r.level] == 1)
                   for s in seen)]
    assert not missing, f"protection rows no scenario in {LIBRARY} expects: {missing}"


def test_every_fault_outside_the_table_is_the_subject_of_an_expectation():
    in_table = {r.fault for r in default_config(PRESETS["na-nfm"], 16, 1.5).protection}
    seen = {s.fault for s in subjects()}
    missing = set(FAULT_CODES) - in_table - seen - UNREACHABLE_FROM_THE_PLANT
    assert not missing, f"faults no scenario expects: {sorted(missing)}"
