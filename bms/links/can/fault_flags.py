"""Which flag of a frame set each active fault raises, by level: the one table (data) the
CAN frames, docs/can.md and the tests read.

A frame set has warning flags and protection flags: a WARNING row sets the warning flag
of its fault, an ALARM (limits cut) or a FAULT (contactors open) row the protection flag.
pylon-lv: a fault with no flag of its own raises the system error flags. pylon-hv: the
faults its warning and protection words have no bit for set an error bit, a malfunction in
the Pylontech documents, at FAULT level only (an inverter may stop on one); below FAULT
they show in the limits alone (an ALARM cuts them).
"""

from __future__ import annotations

from bms.data.faults import FAULT_CODES, Level

# The signal a WARNING, an ALARM and a FAULT set (None: no flag at that level).
FlagsByLevel = tuple[str | None, str | None, str | None]


def _levelled(warning_prefix: str, stem: str) -> FlagsByLevel:
    """The warning flag for a WARNING, the protection flag for an ALARM or a FAULT."""
    return f"{warning_prefix}_{stem}", f"protection_{stem}", f"protection_{stem}"


def _lv(stem: str) -> FlagsByLevel:
    return _levelled("warning", stem)


def _hv(stem: str) -> FlagsByLevel:
    return _levelled("alarm", stem)  # the Pylontech HV documents call a warning an alarm


def _fault_only(signal: str) -> FlagsByLevel:
    return None, None, signal


# frame set -> fault name -> the flags it sets by level (Level order).
FAULT_FLAGS: dict[str, dict[str, FlagsByLevel]] = {
    "pylon-lv": {
        "CELL_OVERVOLTAGE": _lv("high_voltage"),
        "CELL_UNDERVOLTAGE": _lv("low_voltage"),
        "PACK_OVERVOLTAGE": _lv("high_voltage"),
        "PACK_UNDERVOLTAGE": _lv("low_voltage"),
        "CHARGE_OVERTEMP": _lv("high_temperature"),
        "CHARGE_UNDERTEMP": _lv("low_temperature"),
        "DISCHARGE_OVERTEMP": _lv("high_temperature"),
        "DISCHARGE_UNDERTEMP": _lv("low_temperature"),
        "CHARGE_OVERCURRENT": _lv("charge_overcurrent"),
        "DISCHARGE_OVERCURRENT": _lv("discharge_overcurrent"),
        "SHORT_CIRCUIT": _lv("discharge_overcurrent"),
        **dict.fromkeys(("CELL_IMBALANCE", "TEMP_SPREAD", "OPEN_WIRE", "VOLTAGE_SENSOR_FAULT",
                         "TEMP_SENSOR_FAULT", "CURRENT_SENSOR_FAULT", "CELL_SELF_DISCHARGE",
                         "MEASUREMENT_TIMEOUT", "PRECHARGE_FAILED", "CONTACTOR_WELDED",
                         "INTERNAL_ERROR", "INVERTER_TIMEOUT"), _lv("system_error")),
    },
    "pylon-hv": {
        "CELL_OVERVOLTAGE": _hv("cell_high_voltage"),
        "CELL_UNDERVOLTAGE": _hv("cell_low_voltage"),
        "PACK_OVERVOLTAGE": _hv("pack_high_voltage"),
        "PACK_UNDERVOLTAGE": _hv("pack_low_voltage"),
        "CHARGE_OVERTEMP": _hv("charge_high_temperature"),
        "CHARGE_UNDERTEMP": _hv("charge_low_temperature"),
        "DISCHARGE_OVERTEMP": _hv("discharge_high_temperature"),
        "DISCHARGE_UNDERTEMP": _hv("discharge_low_temperature"),
        "CHARGE_OVERCURRENT": _hv("charge_overcurrent"),
        "DISCHARGE_OVERCURRENT": _hv("discharge_overcurrent"),
        "SHORT_CIRCUIT": _hv("discharge_overcurrent"),
        "VOLTAGE_SENSOR_FAULT": _fault_only("error_voltage_sensor"),
        "OPEN_WIRE": _fault_only("error_voltage_sensor"),
        "TEMP_SENSOR_FAULT": _fault_only("error_temperature_sensor"),
        "MEASUREMENT_TIMEOUT": _fault_only("error_internal_communication"),
        "PRECHARGE_FAILED": _fault_only("error_relay"),
        "CONTACTOR_WELDED": _fault_only("error_relay"),
        "CELL_SELF_DISCHARGE": _fault_only("error_damage"),
        **dict.fromkeys(("CELL_IMBALANCE", "TEMP_SPREAD", "CURRENT_SENSOR_FAULT",
                         "INTERNAL_ERROR", "INVERTER_TIMEOUT"), _fault_only("error_other")),
    },
}


# Flags of a frame set that no fault of this firmware sets: always 0. pylon-hv: the pack
# is one module (its pack flags say it all), and it has no input side of its own.
UNUSED_FLAGS: dict[str, tuple[str, ...]] = {
    "pylon-lv": (),
    "pylon-hv": ("error_input_overvoltage", "error_input_reversal",
                 "alarm_module_low_voltage", "alarm_module_high_voltage",
                 "protection_module_low_voltage", "protection_module_high_voltage"),
}


def flag_values(frame_set: str, level_bitmaps: tuple[int, int, int]) -> dict[str, int]:
    """Every flag of the frame set: 1 where a fault active at a level sets it, else 0.
    `level_bitmaps` are the firmware's (WARNING, ALARM, FAULT) fault bitmaps."""
    table = FAULT_FLAGS[frame_set]
    out = dict.fromkeys({s for flags in table.values() for s in flags if s}, 0)
    out.update(dict.fromkeys(UNUSED_FLAGS[frame_set], 0))
    for k, bits in enumerate(level_bitmaps):
        for name, code in FAULT_CODES.items():
            signal = table[name][k]
            if bits >> code & 1 and signal is not None:
                out[signal] = 1
    return out


def flag_table_markdown(frame_set: str) -> str:
    """The table as docs/can.md shows it (a test keeps the two the same)."""
    rows = ["| fault | " + " | ".join(level.value for level in Level) + " |",
            "|---|" + "---|" * len(Level)]
    rows += [f"| {name} | " + " | ".join(f"`{s}`" if s else "-" for s in flags) + " |"
             for name, flags in FAULT_FLAGS[frame_set].items()]
    return "\n".join(rows)
