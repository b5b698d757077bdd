"""The alarm table: a WARNING sets its fault's warning bit, an ALARM or a FAULT its alarm
bit, on every model's event bitfield alike; every fault has its bits."""

from __future__ import annotations

import pytest

from bms.data.faults import FAULT_CODES
from bms.links.modbus.sunspec_events import ALSO_AT_ALARM, EVENT_BITS, event_bitfield
from bms.links.modbus.sunspec_points import point

FIELDS = ("802.Evt1", "803.StrEvt1", "804.Evt1")


def levels(name: str, level: int) -> tuple[int, int, int]:
    """The level bitmaps with fault `name` active at level 0 (WARNING), 1 (ALARM), 2 (FAULT)."""
    out = [0, 0, 0]
    out[level] = 1 << FAULT_CODES[name]
    return tuple(out)


def test_every_bit_named_is_the_same_bit_in_every_models_event_field():
    named = {bit for pair in EVENT_BITS.values() for bit in pair} | set(ALSO_AT_ALARM.values())
    bits = [{name: point(key).symbols[name] for name in named} for key in FIELDS]
    assert bits[0] == bits[1] == bits[2]


@pytest.mark.parametrize("key", FIELDS)
@pytest.mark.parametrize(("fault", "warning_bit", "alarm_bit"), [
    ("CELL_OVERVOLTAGE", "OVER_VOLT_WARNING", "OVER_VOLT_ALARM"),
    ("DISCHARGE_OVERCURRENT", "OVER_DISCHARGE_CURRENT_WARNING", "OVER_DISCHARGE_CURRENT_ALARM"),
    ("OPEN_WIRE", "OTHER_WARNING", "OTHER_ALARM"),
])
def test_a_warning_sets_the_warning_bit_an_alarm_or_fault_the_alarm_bit(key, fault,
                                                                       warning_bit, alarm_bit):
    symbols = point(key).symbols
    by_level = [event_bitfield(levels(fault, level), symbols) for level in range(3)]
    assert by_level == [1 << symbols[warning_bit], 1 << symbols[alarm_bit],
                        1 << symbols[alarm_bit]]


def test_an_imbalance_past_its_warning_also_says_other_alarm():
    symbols = point("802.Evt1").symbols
    assert event_bitfield(levels("CELL_IMBALANCE", 1), symbols) == (
        1 << symbols["VOLTAGE_IMBALANCE_WARNING"] | 1 << symbols["OTHER_ALARM"])


def test_faults_at_several_levels_set_all_their_bits():
    symbols = point("802.Evt1").symbols
    warning, alarm = 1 << FAULT_CODES["CELL_OVERVOLTAGE"], 1 << FAULT_CODES["CHARGE_OVERTEMP"]
    assert event_bitfield((warning, alarm, 0), symbols) == (
        1 << symbols["OVER_VOLT_WARNING"] | 1 << symbols["OVER_TEMP_ALARM"])
