"""Fault names, numeric codes and levels: the one place they are defined.

The protocol, MQTT payloads, CSV fault bitmaps, the fault log and `--json` events all
use these names and codes; never renumber an existing entry.
"""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    """How serious a fault is, by the names every edge carries. Its code on the wire (a
    fault log entry's `level`) is its place in this list, from 1: add new levels at the end."""

    WARNING = "WARNING"  # reported
    ALARM = "ALARM"  # current limits cut
    FAULT = "FAULT"  # contactors open, latched until cleared

    @property
    def code(self) -> int:
        return _LEVEL_ORDER.index(self) + 1

    @classmethod
    def from_code(cls, code: int) -> Level:
        """The level of a wire code; ValueError for a code no level has."""
        if not 1 <= code <= len(_LEVEL_ORDER):
            raise ValueError(f"no level has code {code}")
        return _LEVEL_ORDER[code - 1]


_LEVEL_ORDER: tuple[Level, ...] = tuple(Level)


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
