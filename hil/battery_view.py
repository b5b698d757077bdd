"""What an inverter knows of the battery: the BMS's frames of a frame set, decoded with the
set's own DBC (cantools), read into one view whatever the set. The inverter decides from
this and nothing else - never from the firmware's objects - so a closed loop tests the
frames as a real inverter reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import can

from bms.links.can.frame_sets import BMS_NODE, FrameSet
from bms.links.can.values import FORBIDDEN

LIMITS = "bms_limits"  # the message that carries CVL, CCL, DCL and DVL in every set
WARNING_PREFIXES = ("warning_", "alarm_")  # pylon-hv calls a warning an alarm
PROTECTION_PREFIXES = ("protection_", "error_")


def _allowed(raw: float) -> bool:
    return int(raw) != FORBIDDEN


# DBC signal -> (view attribute, how its value reads); one table for every set: where two
# sets name a quantity differently, both names are here.
FIELDS: dict[str, tuple[str, Callable[[float], object]]] = {
    "charge_voltage_limit": ("cvl_v", float),
    "charge_current_limit": ("ccl_a", float),
    "discharge_current_limit": ("dcl_a", float),  # pylon-lv: a magnitude
    "discharge_current_limit_negative": ("dcl_a", lambda raw: -float(raw)),  # pylon-hv
    "discharge_voltage_limit": ("dvl_v", float),
    "soc": ("soc_pct", float),
    "soh": ("soh_pct", float),
    "pack_voltage": ("pack_v", float),
    "current": ("current_a", float),
    "temperature": ("temperature_c", float),
    "charge_enable": ("charge_enable", bool),
    "discharge_enable": ("discharge_enable", bool),
    "charge_forbidden": ("charge_enable", _allowed),  # pylon-hv: 0xAA forbidden
    "discharge_forbidden": ("discharge_enable", _allowed),
    "force_charge_request_1": ("force_charge", bool),  # pylon-lv
    "force_charge_request": ("force_charge", bool),  # pylon-hv
    "series_cells": ("series_cells", int),
    "capacity": ("capacity_ah", float),
}


@dataclass
class BatteryView:
    """The newest of each value (NaN, False or empty before it came); `limits_s`: when the
    limits last came, None before."""

    cvl_v: float = math.nan
    ccl_a: float = math.nan
    dcl_a: float = math.nan
    dvl_v: float = math.nan
    soc_pct: float = math.nan
    soh_pct: float = math.nan
    pack_v: float = math.nan
    current_a: float = math.nan
    temperature_c: float = math.nan
    charge_enable: bool = False
    discharge_enable: bool = False
    force_charge: bool = False
    warnings: tuple[str, ...] = ()  # the flags set, without their prefix
    protections: tuple[str, ...] = ()
    manufacturer: str = ""
    series_cells: int | None = None
    capacity_ah: float | None = None
    limits_s: float | None = None
    frames: dict[str, int] = field(default_factory=dict)  # taken, by message name


class BatteryReader:
    """Reads the frames a set's BMS sends into a BatteryView."""

    def __init__(self, frames: FrameSet):
        self.frames = frames
        self.view = BatteryView()
        self.messages = {(m.frame_id, m.is_extended_frame): m for m in frames.db.messages
                         if BMS_NODE in m.senders}

    def take(self, frame: can.Message, now_s: float) -> bool:
        """Reads one frame; False when it is not one the battery sends, or it is of the wrong
        length (then the view is unchanged)."""
        message = self.messages.get((frame.arbitration_id, frame.is_extended_id))
        if message is None or frame.is_remote_frame or len(frame.data) != message.length:
            return False
        values = message.decode(bytes(frame.data), decode_choices=False)
        view = self.view
        for signal, raw in values.items():
            if signal in FIELDS:
                attribute, read = FIELDS[signal]
                setattr(view, attribute, read(raw))
        flags = [s for s in values if s.startswith(WARNING_PREFIXES + PROTECTION_PREFIXES)]
        if flags:  # the set's flags all travel in one frame: it says them all
            view.warnings = _set_flags(values, WARNING_PREFIXES)
            view.protections = _set_flags(values, PROTECTION_PREFIXES)
        chars = [int(values[s]) for s in sorted(values) if s.startswith("manufacturer_char_")]
        if chars:
            view.manufacturer = bytes(chars).decode("ascii", "replace").strip()
        if message.name == LIMITS:
            view.limits_s = now_s
        view.frames[message.name] = view.frames.get(message.name, 0) + 1
        return True


def _set_flags(values: dict, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_stem(s, prefixes) for s, raw in values.items()
                 if s.startswith(prefixes) and raw)


def _stem(signal: str, prefixes: tuple[str, ...]) -> str:
    """`warning_high_voltage` -> `high_voltage`; an error flag keeps its word: `error_relay`."""
    for prefix in prefixes:
        if prefix != "error_" and signal.startswith(prefix):
            return signal[len(prefix):]
    return signal
