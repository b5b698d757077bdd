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
    # The inverter's keep-alive on a field link stopped; its level is the link's
    # configured action (`can.keepalive_action`).
    "INVERTER_TIMEOUT": 22,
}

FAULT_NAMES: dict[int, str] = {code: name for name, code in FAULT_CODES.items()}

# What the cell-or-sensor number of a fault counts: "cell", "sensor" (temperature), or None
# for a fault of the pack as a whole. Inside binary payloads it is a 0-based `index`;
# wherever a person reads it, it is numbered from 1 and named by its kind (`subject`).
SUBJECT_KINDS: tuple[str, ...] = ("cell", "sensor")
FAULT_SUBJECTS: dict[str, str | None] = {
    "CELL_OVERVOLTAGE": "cell",
    "CELL_UNDERVOLTAGE": "cell",
    "PACK_OVERVOLTAGE": None,
    "PACK_UNDERVOLTAGE": None,
    "CHARGE_OVERTEMP": "sensor",
    "CHARGE_UNDERTEMP": "sensor",
    "DISCHARGE_OVERTEMP": "sensor",
    "DISCHARGE_UNDERTEMP": "sensor",
    "CHARGE_OVERCURRENT": None,
    "DISCHARGE_OVERCURRENT": None,
    "SHORT_CIRCUIT": None,
    "CELL_IMBALANCE": "cell",
    "TEMP_SPREAD": "sensor",
    "OPEN_WIRE": "cell",
    "VOLTAGE_SENSOR_FAULT": "cell",  # a cell's reading; the pack voltage sensor's: no index
    "TEMP_SENSOR_FAULT": "sensor",
    "CURRENT_SENSOR_FAULT": None,
    "CELL_SELF_DISCHARGE": "cell",
    "MEASUREMENT_TIMEOUT": None,
    "PRECHARGE_FAILED": None,
    "CONTACTOR_WELDED": None,
    "INTERNAL_ERROR": None,
    "INVERTER_TIMEOUT": None,
}


def subject(name: str, index: int | None) -> tuple[str, int] | None:
    """The cell or sensor behind a fault as a person counts it: (kind, number from 1) from
    the 0-based `index`; None for none (no index, -1 on the wire, a pack-level fault, or a
    fault this firmware does not know)."""
    kind = FAULT_SUBJECTS.get(name)
    if kind is None or index is None or index < 0:
        return None
    return kind, index + 1


def subject_fields(name: str, index: int | None) -> dict[str, int | None]:
    """The `cell` and `sensor` fields of a fault at a human edge (JSON, MQTT): the one
    behind it numbered from 1 under its kind, the other None."""
    found = subject(name, index)
    return {kind: found[1] if found and found[0] == kind else None for kind in SUBJECT_KINDS}


def subject_text(fields: dict) -> str:
    """"cell 3", "sensor 2" or "" from a dict with the `subject_fields` fields."""
    return next((f"{kind} {fields[kind]}" for kind in SUBJECT_KINDS
                 if fields.get(kind) is not None), "")


def bitmap(names: set[str] | list[str]) -> int:
    """The fault bitmap with a bit set for each named fault."""
    out = 0
    for name in names:
        out |= 1 << FAULT_CODES[name]
    return out


def names_in(bitmap_value: int) -> list[str]:
    """Fault names whose bits are set, in code order."""
    return [name for name, code in FAULT_CODES.items() if bitmap_value >> code & 1]
