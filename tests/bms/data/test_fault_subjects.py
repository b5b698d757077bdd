"""Issue 16, numbering at human edges: a fault's 0-based `index` (binary payloads, the store)
is shown as `cell N` / `sensor N` from 1 wherever a person reads it, and the kind (cell or
temperature sensor) comes from the fault, in step with what the firmware names."""

from __future__ import annotations

import pytest

from bms.core.signals import FaultEvent
from bms.data.config import default_config
from bms.data.faults import FAULT_CODES, FAULT_SUBJECTS, subject, subject_fields, subject_text
from bms.data.presets import PRESETS
from bms.data.quantities import QUANTITY_BY_NAME, Offender
from bms.host import views
from protocol import messages as pm


def offender_kind(offender: Offender) -> str | None:
    """What a quantity's offender names, read from its description: a temperature reading
    is a sensor's, anything else about a cell is a cell's."""
    if offender == Offender.NONE:
        return None
    text = offender.value
    kind = "sensor" if "temperature" in text else "cell" if "cell" in text else None
    assert kind is not None, f"cannot tell what {offender.name} names: {text!r}"
    return kind


def test_every_fault_says_what_its_index_counts():
    assert FAULT_SUBJECTS.keys() == FAULT_CODES.keys()
    assert set(FAULT_SUBJECTS.values()) <= {"cell", "sensor", None}


@pytest.mark.parametrize("chemistry", sorted(PRESETS))
def test_the_kind_agrees_with_what_each_protection_row_names(chemistry):
    """A row whose offender is a cell must belong to a fault shown as a cell, and so on:
    else a temperature row's sensor 2 would be printed as cell 2."""
    chem = PRESETS[chemistry]
    for row in default_config(chem, 16, chem.capacity_ah).protection:
        kind = offender_kind(QUANTITY_BY_NAME[row.quantity].offender)
        if kind is not None:
            assert FAULT_SUBJECTS[row.fault] == kind, (row.fault, row.level, row.quantity)


@pytest.mark.parametrize(("name", "index", "expected"), [
    ("CELL_OVERVOLTAGE", 2, ("cell", 3)),
    ("CELL_UNDERVOLTAGE", 0, ("cell", 1)),
    ("TEMP_SENSOR_FAULT", 1, ("sensor", 2)),
    ("CHARGE_OVERTEMP", 0, ("sensor", 1)),
    ("CELL_OVERVOLTAGE", None, None),  # no index
    ("CELL_OVERVOLTAGE", -1, None),  # none, as the wire says it
    ("PACK_OVERVOLTAGE", 2, None),  # the pack as a whole
    ("NEWER_FAULT", 2, None),  # a fault this firmware does not know
])
def test_subject_numbers_from_1_under_its_kind(name, index, expected):
    assert subject(name, index) == expected


def test_the_fields_name_one_kind_and_the_text_reads_as_people_count():
    cell = subject_fields("OPEN_WIRE", 4)
    sensor = subject_fields("TEMP_SPREAD", 0)
    none = subject_fields("SHORT_CIRCUIT", None)
    assert (cell, sensor, none) == ({"cell": 5, "sensor": None}, {"cell": None, "sensor": 1},
                                    {"cell": None, "sensor": None})
    assert [subject_text(f) for f in (cell, sensor, none)] == ["cell 5", "sensor 1", ""]


def test_an_event_as_json_and_as_a_line_names_the_cell_from_1():
    event = FaultEvent(12.5, "CELL_OVERVOLTAGE", 0, "FAULT", "raised", 2, 4.38)
    d = event.as_dict()
    assert (d["cell"], d["sensor"]) == (3, None) and "index" not in d
    assert event.describe() == "t=12.5 s FAULT CELL_OVERVOLTAGE raised, cell 3"
    timeout = FaultEvent(3.0, "MEASUREMENT_TIMEOUT", 18, "FAULT", "raised", None, 1.2)
    assert timeout.describe() == "t=3 s FAULT MEASUREMENT_TIMEOUT raised"


def test_a_fault_log_page_entry_is_shown_from_1_and_none_stays_none():
    """The wire's 0-based index (-1 none) becomes `cell` / `sensor` in query's JSON."""
    def entry(code: int, index: int) -> dict:
        return {"t_s": 1.0, "code": code, "level": 3, "action": 1, "index": index,
                "value": 1.0, "state": 0, "soc_pct": 50.0}

    temp = views.fault_entry_dict(entry(FAULT_CODES["TEMP_SENSOR_FAULT"], 2))
    cell = views.fault_entry_dict(entry(FAULT_CODES["CELL_UNDERVOLTAGE"], 0))
    timeout = views.fault_entry_dict(entry(FAULT_CODES["MEASUREMENT_TIMEOUT"], -1))
    assert (temp["sensor"], temp["cell"]) == (3, None) and "index" not in temp
    assert (cell["cell"], cell["sensor"]) == (1, None)
    assert (timeout["cell"], timeout["sensor"]) == (None, None)


def test_the_bleeding_cells_are_numbered_from_1():
    d = views.balancing_dict(pm.BalancingState(mode=1, mask=[False, True, False, True]))
    assert d["bleeding_cells"] == [2, 4] and "balancing" not in d
