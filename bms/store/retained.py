"""What the firmware keeps over a power-down, and how a new firmware takes it back:
`retain(fw)` and `restore(fw, kept, off_s)`, pure (no I/O, no clock).

Why and how: docs/internals.md, bms/store/retained.py.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from bms.core.counters import Counters
from bms.core.fault_log import LogEntry
from bms.core.firmware import Firmware, HandOver
from bms.core.protection import RowKey
from bms.core.signals import State
from bms.data.faults import FAULT_CODES


@dataclass(frozen=True, eq=False)
class Retained:
    cell_soc: np.ndarray | None  # fraction; None: no estimate yet
    cell_capacity_ah: np.ndarray  # learnt capacities: the state of health
    cell_resistance_factor: np.ndarray  # learnt resistances, 1 = the chemistry's table
    latched_rows: tuple[RowKey, ...]  # FAULT rows raised and not cleared
    event_faults: tuple[str, ...]  # latched faults raised outside the table
    counters: Counters
    state: str
    log: tuple[LogEntry, ...] = ()
    log_dropped: int = 0
    log_recorded: int = 0
    locked_out: tuple[str, ...] = ()  # FAULTs locked out until a service action
    # The empty hold: the charge taken back since it engaged, A s (None: no hold).
    empty_charge_as: float | None = None
    # What the firmware passes to the next (ages as of the save).
    hand_over: HandOver = field(default_factory=HandOver)


def retain(fw: Firmware) -> Retained:
    est = fw.estimator
    e = fw.estimate
    return Retained(
        cell_soc=None if e is None else np.clip(e.cell_soc, 0.0, 1.0),
        cell_capacity_ah=est.capacity_ah.copy(),
        cell_resistance_factor=est.r_factor.copy(),
        latched_rows=tuple(fw.protection.latched_rows()),
        event_faults=tuple(sorted(fw.event_faults)),
        counters=Counters.from_dict(fw.counters.as_dict()),
        state=fw.state,
        log=tuple(fw.log.entries),
        log_dropped=fw.log.dropped,
        log_recorded=fw.log.recorded,
        locked_out=tuple(sorted(fw.locked_out)),
        empty_charge_as=fw.empty_charge_as,
        hand_over=fw.hand_over(),
    )


def restore(fw: Firmware, kept: Retained, off_s: float | None) -> list[str]:
    """Puts `kept` into `fw` before its first step; `off_s` is how long the pack was off
    (None: unknown). Returns what could not be restored, in words (a fault this firmware
    no longer has); the rest is restored."""
    if fw.last_s is not None:
        raise RuntimeError("restore comes before the first step")
    fw.estimator.restore(kept.cell_soc, kept.cell_capacity_ah, kept.cell_resistance_factor,
                         off_s)
    unknown = fw.protection.latch(list(kept.latched_rows))
    lost = [f"latched row {fault} ({quantity}) is not in this firmware's table"
            for fault, quantity, _ in unknown]
    for name in kept.event_faults:
        if name in FAULT_CODES:
            fw.event_faults.add(name)
        else:
            lost.append(f"latched fault {name} is not one this firmware knows")
    # A lockout outlives a power-down, as in a real BMS's EEPROM: cycling the supply is
    # not the service action it waits for.
    for name in kept.locked_out:
        if name in FAULT_CODES:
            fw.locked_out.add(name)
        else:
            lost.append(f"lockout of {name} is not one this firmware knows")
    # So is an empty hold: an emptied pack that wakes (or a host's reset) must not invite
    # the inverter back before it has taken charge.
    held_as = kept.empty_charge_as
    if held_as is not None and not (math.isfinite(held_as) and held_as >= 0.0):
        lost.append(f"the empty hold's charge taken back ({held_as} A s) is not a count: "
                    "held from 0")
        held_as = 0.0
    fw.empty_charge_as = held_as
    # And what the firmware before passed on (`Firmware.HandOver`), its ages older by the
    # time off (unknown: as if none, the side that locks out and times out sooner).
    h, off = kept.hand_over, off_s or 0.0
    trips = {}
    for name, ages_s in h.trip_ages_s.items():
        if name in FAULT_CODES:
            trips[name] = [age_s + off for age_s in ages_s]
        else:
            lost.append(f"trips of {name} towards lockout: not a fault this firmware knows")
    age_s = h.recovery_age_s
    if age_s is not None and not (math.isfinite(age_s) and age_s >= 0.0):
        lost.append(f"the recovery charge's age ({age_s} s) is not a time: resumed from 0")
        age_s = 0.0
    unknown = fw.take_over(dataclasses.replace(
        h, trip_ages_s=trips, recovery_age_s=None if age_s is None else age_s + off))
    lost += [f"debouncing row {fault} ({quantity}) is not in this firmware's table"
             for fault, quantity, _ in unknown]
    fw.counters = Counters.from_dict(kept.counters.as_dict())
    fw.log.restore(list(kept.log), kept.log_recorded)
    if kept.state == State.STORAGE:  # a pack put away stays put away until asked otherwise
        fw.requested = "storage"
    return lost
