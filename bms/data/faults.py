"""Fault names, numeric codes and levels: the one place they are defined.

The protocol, MQTT payloads, CSV fault bitmaps, the fault log and `--json` events all
use these names and codes; never renumber an existing entry.
"""

from __future__ import annotations

from enum import IntEnum


class Level(IntEnum):
    WARNING = 1  # reported
    ALARM = 2  # current limits cut
    FAULT = 3  # contactors open, latched until cleared


# name -> code; the code is also the bit position in the fault bitmap.
FAULT_CODES: dict[str, int] = {
    "CELL_OVERVOLTAGE": 0,
    "CELL_UNDERVOLTAGE": 1,
    "PACK_OVERVOLTAGE": 2,
    "PACK_UNDERVOLTAGE": 3,
    "CHARGE_OVERTEMP": 4,
    "CHARGE_UNDERTEMP": 5,
    "DISCHARGE_OVERTEMP": 6,
    "DISCHARGE_UNDERTEMP": 7,
    "CHARGE_OVERCURRENT": 8,
    "DISCHARGE_OVERCURRENT": 9,
    "SHORT_CIRCUIT": 10,
    "CELL_IMBALANCE": 11,
    "TEMP_SPREAD": 12,
    "OPEN_WIRE": 13,
    "VOLTAGE_SENSOR_FAULT": 14,
    "TEMP_SENSOR_FAULT": 15,
    "CURRENT_SENSOR_FAULT": 16,
    "CELL_SELF_DISCHARGE": 17,
    "MEASUREMENT_TIMEOUT": 18,
    "PRECHARGE_FAILED": 19,
    "CONTACTOR_WELDED": 20,
    "INTERNAL_ERROR": 21,
}

FAULT_NAMES: dict[int, str] = {code: name for name, code in FAULT_CODES.items()}


def bitmap(names: set[str] | list[str]) -> int:
    """The fault bitmap with a bit set for each named fault."""
    out = 0
    for name in names:
        out |= 1 << FAULT_CODES[name]
    return out


def names_in(bitmap_value: int) -> list[str]:
    """Fault names whose bits are set, in code order."""
    return [name for name, code in FAULT_CODES.items() if bitmap_value >> code & 1]
