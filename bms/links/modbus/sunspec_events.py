"""The firmware's faults on SunSpec's battery event bitfield (Evt1 of models 802 and 804,
StrEvt1 of model 803): which bit each fault sets at each level.

A WARNING sets the fault's `_WARNING` bit; an ALARM (current limits cut) and a FAULT
(contactors open, latched) set its `_ALARM` bit. Where SunSpec has one bit only for a kind of
fault (COMMUNICATION_ERROR, CONTACTOR_ERROR, VOLTAGE_IMBALANCE_WARNING) every level sets
it (a lost rig or inverter is a COMMUNICATION_ERROR); faults SunSpec has no bit for set
OTHER_WARNING / OTHER_ALARM. The exact fault is in the vendor bitfields (EvtVnd1: every
active fault, EvtVnd2: those at FAULT level; bit = the fault's code, docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from bms.data.faults import FAULT_CODES

OTHER = ("OTHER_WARNING", "OTHER_ALARM")

# fault -> (the bit its WARNING sets, the bit its ALARM and FAULT set), by SunSpec symbol.
EVENT_BITS: dict[str, tuple[str, str]] = {
    "CELL_OVERVOLTAGE": ("OVER_VOLT_WARNING", "OVER_VOLT_ALARM"),
    "CELL_UNDERVOLTAGE": ("UNDER_VOLT_WARNING", "UNDER_VOLT_ALARM"),
    "PACK_OVERVOLTAGE": ("OVER_VOLT_WARNING", "OVER_VOLT_ALARM"),
    "PACK_UNDERVOLTAGE": ("UNDER_VOLT_WARNING", "UNDER_VOLT_ALARM"),
    "CHARGE_OVERTEMP": ("OVER_TEMP_WARNING", "OVER_TEMP_ALARM"),
    "CHARGE_UNDERTEMP": ("UNDER_TEMP_WARNING", "UNDER_TEMP_ALARM"),
    "DISCHARGE_OVERTEMP": ("OVER_TEMP_WARNING", "OVER_TEMP_ALARM"),
    "DISCHARGE_UNDERTEMP": ("UNDER_TEMP_WARNING", "UNDER_TEMP_ALARM"),
    "CHARGE_OVERCURRENT": ("OVER_CHARGE_CURRENT_WARNING", "OVER_CHARGE_CURRENT_ALARM"),
    "DISCHARGE_OVERCURRENT": ("OVER_DISCHARGE_CURRENT_WARNING",
                              "OVER_DISCHARGE_CURRENT_ALARM"),
    "SHORT_CIRCUIT": ("OVER_DISCHARGE_CURRENT_WARNING", "OVER_DISCHARGE_CURRENT_ALARM"),
    "CELL_IMBALANCE": ("VOLTAGE_IMBALANCE_WARNING", "VOLTAGE_IMBALANCE_WARNING"),
    "TEMP_SPREAD": ("TEMPERATURE_IMBALANCE_WARNING", "TEMPERATURE_IMBALANCE_ALARM"),
    "OPEN_WIRE": OTHER,
    "VOLTAGE_SENSOR_FAULT": OTHER,
    "TEMP_SENSOR_FAULT": OTHER,
    "CURRENT_SENSOR_FAULT": OTHER,
    "CELL_SELF_DISCHARGE": OTHER,
    "MEASUREMENT_TIMEOUT": ("COMMUNICATION_ERROR", "COMMUNICATION_ERROR"),
    "PRECHARGE_FAILED": OTHER,
    "CONTACTOR_WELDED": ("CONTACTOR_ERROR", "CONTACTOR_ERROR"),
    "INTERNAL_ERROR": OTHER,
    "INVERTER_TIMEOUT": ("COMMUNICATION_ERROR", "COMMUNICATION_ERROR"),
}
# Whichever sets it, CELL_IMBALANCE at ALARM or FAULT also sets OTHER_ALARM: SunSpec has no
# voltage-imbalance alarm, and an inverter must still see that limits were cut.
ALSO_AT_ALARM: dict[str, str] = {"CELL_IMBALANCE": "OTHER_ALARM"}

if set(EVENT_BITS) != set(FAULT_CODES):  # a new fault must be given its bits here
    raise ValueError(f"EVENT_BITS does not cover the faults exactly: "
                     f"{sorted(set(FAULT_CODES) ^ set(EVENT_BITS))}")


def event_bitfield(level_bitmaps: tuple[int, int, int], symbols: Mapping[str, int]) -> int:
    """Evt1 for the faults active by level (WARNING, ALARM, FAULT bitmaps, bit = fault
    code); `symbols` the bitfield's bits by name, from the model definition."""
    warning, alarm, fault = level_bitmaps
    out = 0
    for name, code in FAULT_CODES.items():
        warning_bit, alarm_bit = EVENT_BITS[name]
        if warning >> code & 1:
            out |= 1 << symbols[warning_bit]
        if (alarm | fault) >> code & 1:
            out |= 1 << symbols[alarm_bit]
            if name in ALSO_AT_ALARM:
                out |= 1 << symbols[ALSO_AT_ALARM[name]]
    return out


def table_rows() -> list[tuple[str, str, str]]:
    """(fault, WARNING sets, ALARM / FAULT set) for the reference."""
    return [(name, warning_bit, " + ".join(filter(None, (alarm_bit, ALSO_AT_ALARM.get(name)))))
            for name, (warning_bit, alarm_bit) in EVENT_BITS.items()]
