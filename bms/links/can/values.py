"""What the CAN frames carry, read from what the firmware has published: Device.status()
(the protocol's Status, the one view every link answers from) and, for the fault flags,
the actuation's bitmaps by level. A DBC signal is filled from the source of its name;
nothing here decides anything the firmware decides (limits, requests, faults)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from cantools.database.can import Message, Signal

from bms import __version__
from bms.core.signals import State
from bms.host.device import Device
from bms.links.can.fault_flags import flag_values
from protocol import messages as pm

MANUFACTURER = "PYLON"  # what Pylontech-compatible batteries name themselves (0x35E)
FORBIDDEN = 0xAA  # pylon-hv: charge (discharge) forbidden
SOFTWARE_VERSION = tuple(int(x) for x in __version__.split(".")[:2])
CONNECTED = (State.RUN, State.RECOVERY)
# A limit below this rounds to 0 A in every set's 0.1 A field: no permission, so that the
# enable flags never say yes beside a limit of 0 (as a limit ramps up from 0).
ALLOWED_MIN_A = 0.05


@dataclass(frozen=True)
class Published:
    """One moment of the firmware's published state, as the frames read it."""

    status: pm.Status
    cycles: float  # equivalent full cycles
    rest_current_a: float  # below it the pack is idle
    n_series: int
    capacity_ah: float
    nominal_cell_v: float

    @property
    def state(self) -> State:
        return State.from_code(self.status.state)

    @property
    def level_bitmaps(self) -> tuple[int, int, int]:
        """The faults active at WARNING, ALARM and FAULT (bit = fault code), as Status
        publishes them."""
        s = self.status
        return s.warning_bitmap, s.alarm_bitmap, s.fault_level_bitmap


def published(device: Device, now_s: float) -> Published | None:
    """The device's published state at `now_s`; None before the firmware's first step."""
    act = device.act
    if act is None:
        return None
    fw = device.fw
    return Published(device.status(now_s),
                     fw.counters.cycles(device.identity.capacity_ah), fw.cfg.rest_current_a,
                     fw.n_series, device.identity.capacity_ah, device.chem.nominal_v)


def _basic_status(p: Published) -> int:
    """pylon-hv: 0 sleep (contactors open), 1 charge, 2 discharge, 3 idle."""
    if p.state not in CONNECTED:
        return 0
    current_a = p.status.current_a
    return 1 if current_a > p.rest_current_a else 2 if current_a < -p.rest_current_a else 3


def _char(k: int) -> Callable[[Published], float]:
    return lambda _p: ord(MANUFACTURER.ljust(8)[k])


# DBC signal name -> where its value comes from (SI units, as the DBC's).
SOURCES: dict[str, Callable[[Published], float]] = {
    "charge_voltage_limit": lambda p: p.status.charge_voltage_limit_v,
    "discharge_voltage_limit": lambda p: p.status.discharge_voltage_limit_v,
    "charge_current_limit": lambda p: p.status.charge_limit_a,
    "discharge_current_limit": lambda p: p.status.discharge_limit_a,
    "discharge_current_limit_negative": lambda p: -p.status.discharge_limit_a,
    "soc": lambda p: p.status.soc_pct,
    "soh": lambda p: p.status.soh_pct,
    "pack_voltage": lambda p: p.status.pack_voltage_v,
    "current": lambda p: p.status.current_a,
    "temperature": lambda p: p.status.temp_c_max,
    "temperature_max": lambda p: p.status.temp_c_max,
    "temperature_min": lambda p: p.status.temp_c_min,
    "temperature_max_index": lambda p: p.status.temp_c_max_index,
    "temperature_min_index": lambda p: p.status.temp_c_min_index,
    "cell_voltage_max": lambda p: p.status.cell_v_max,
    "cell_voltage_min": lambda p: p.status.cell_v_min,
    "cell_voltage_max_index": lambda p: p.status.cell_v_max_index,
    "cell_voltage_min_index": lambda p: p.status.cell_v_min_index,
    # Requests: what the published limits and state already say.
    "charge_enable": lambda p: p.status.charge_limit_a >= ALLOWED_MIN_A,
    "discharge_enable": lambda p: p.status.discharge_limit_a >= ALLOWED_MIN_A,
    "force_charge_request_1": lambda p: p.state == State.RECOVERY,
    "force_charge_request": lambda p: p.state == State.RECOVERY,
    "force_charge_request_2": lambda _p: 0,
    "full_charge_request": lambda _p: 0,
    "balance_charge_request": lambda _p: 0,
    "charge_forbidden": lambda p: 0 if p.status.charge_limit_a >= ALLOWED_MIN_A else FORBIDDEN,
    "discharge_forbidden": lambda p: (0 if p.status.discharge_limit_a >= ALLOWED_MIN_A
                                      else FORBIDDEN),
    "basic_status": _basic_status,
    "cycle_count": lambda p: p.cycles,
    # Who the battery is.
    "module_count": lambda _p: 1,
    "pn_p": lambda _p: ord("P"),
    "pn_n": lambda _p: ord("N"),
    **{f"manufacturer_char_{k + 1}": _char(k) for k in range(8)},
    "hardware_version": lambda _p: 1,
    "hardware_version_major": lambda _p: 1,
    "hardware_version_minor": lambda _p: 0,
    "software_version_major": lambda _p: SOFTWARE_VERSION[0],
    "software_version_minor": lambda _p: SOFTWARE_VERSION[1],
    "series_cells": lambda p: p.n_series,
    "modules_in_series": lambda _p: 1,
    "cells_per_module": lambda p: min(p.n_series, 255),
    "voltage_level": lambda p: p.n_series * p.nominal_cell_v,
    "capacity": lambda p: p.capacity_ah,
}


def signal_values(frame_set: str, p: Published) -> dict[str, float]:
    """Every signal the frame set can carry, by name."""
    return {**{name: float(source(p)) for name, source in SOURCES.items()},
            **flag_values(frame_set, p.level_bitmaps)}


def _fit(signal: Signal, value: float) -> float:
    """A value the field can hold: not a number (nothing measured yet) as 0, beyond the
    field's range as its end."""
    if not math.isfinite(value):
        value = 0.0
    low = signal.minimum if signal.minimum is not None else -math.inf
    high = signal.maximum if signal.maximum is not None else math.inf
    return min(max(value, low), high)


def encode(message: Message, values: dict[str, float]) -> bytes:
    """The message's payload from `values` (`signal_values`)."""
    return message.encode({s.name: _fit(s, values[s.name]) for s in message.signals})
