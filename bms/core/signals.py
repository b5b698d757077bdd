"""What crosses the firmware boundary: measurements in, actuation out.

The firmware is called as `step(measurement, now_s) -> Actuation`; these types are
the same whether the measurement comes from the simulated pack, a rig over a serial
link or a recorded trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from bms.data.faults import Level, subject_fields, subject_text


class State(StrEnum):
    """The firmware's states, by the names the protocol, MQTT, CSV, JSON and logs carry.
    A state's code on the wire is its place in this list: add new states at the end."""

    INIT = "INIT"
    STANDBY = "STANDBY"
    PRECHARGE = "PRECHARGE"
    RUN = "RUN"
    FAULT = "FAULT"
    STORAGE = "STORAGE"
    SERVICE = "SERVICE"
    RECOVERY = "RECOVERY"  # a recovery charge: charge at a reduced current, no discharge

    @property
    def code(self) -> int:
        return _STATE_ORDER.index(self)

    @classmethod
    def from_code(cls, code: int) -> State:
        """The state of a wire code; IndexError for a code no state has."""
        return _STATE_ORDER[code]


_STATE_ORDER: tuple[State, ...] = tuple(State)
HOST_REQUESTS = ("standby", "run", "storage", "clear-faults", "service-reset")


@dataclass(frozen=True, slots=True)
class Contactors:
    negative: bool = False
    precharge: bool = False
    positive: bool = False

    @property
    def main_closed(self) -> bool:
        """True when the pack is connected to the bus through both main contactors."""
        return self.negative and self.positive

    def describe(self) -> str:
        return "closed" if self.main_closed else "open"


OPEN = Contactors()


@dataclass(frozen=True, slots=True, eq=False)
class Measurement:
    cell_voltage_v: np.ndarray  # (n_series,)
    temperature_c: np.ndarray  # (n_temp_sensors,)
    current_a: float  # positive = charging
    bus_voltage_v: float  # DC link, load side of the contactors
    contactors: Contactors  # auxiliary-contact feedback
    # Which bleed switches were on during the interval this measurement closes, as an AFE
    # or a recording reports them; None: as the firmware commanded.
    balancing: np.ndarray | None = None
    # The pack's own voltage sensor, inside the contactors; None where there is none (a
    # rig's frame does not carry it): the sum of the cells is then not checked against it.
    pack_voltage_v: float | None = None
    # (n_series,) each cell channel's reading during the AFE's open-wire test (a test
    # current on every sense line), taken in the interval this measurement closes beside
    # the ordinary readings; None: no test in it (none asked for, or a source that cannot
    # run one: a replayed trace, a rig's frame). See bms.core.open_wire.
    open_wire_test_v: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class FaultEvent:
    t_s: float
    name: str
    code: int
    level: Level
    action: str  # "raised" or "cleared"
    index: int | None = None  # offending cell or sensor, 0-based
    value: float | None = None  # its reading when the event happened

    def as_dict(self) -> dict:
        """The event as people and JSON read it: the offending one as `cell` or `sensor`,
        numbered from 1."""
        return {
            "t_s": round(self.t_s, 6),
            "name": self.name,
            "code": self.code,
            "level": self.level,
            "action": self.action,
            **subject_fields(self.name, self.index),
            "value": None if self.value is None else round(self.value, 6),
        }

    def describe(self) -> str:
        """The event on one line of a log or report, its cell or sensor numbered from 1:
        `t=12.3 s FAULT CELL_OVERVOLTAGE raised, cell 3`."""
        where = subject_text(subject_fields(self.name, self.index))
        return (f"t={self.t_s:.10g} s {self.level} {self.name} {self.action}"
                + (f", {where}" if where else ""))


@dataclass(frozen=True, eq=False)
class Estimate:
    soc: float  # pack, fraction
    cell_soc: np.ndarray  # fraction
    cell_soc_sigma: np.ndarray  # the filter's standard deviation, fraction
    cell_capacity_ah: np.ndarray
    cell_resistance_factor: np.ndarray  # 1 = the chemistry's table
    cell_bled_soc: np.ndarray  # SoC each cell has given to its bleed resistor since start
    reset_epoch: int  # counts resets of SoC from the voltage (full, empty, a rest's first)
    soh_pct: float  # the weakest cell's capacity, percent of nominal
    resistance_pct: float  # mean resistance, percent of nominal
    current_offset_a: float
    remaining_wh: float  # at the present discharge power (else at the reference power)
    runtime_s: float | None  # at the present discharge power; None when not discharging
    runtime_reference_s: float  # at the configured reference power
    # Each cell's SoC by its voltage alone (the model's drops taken out; NaN: no valid
    # reading) and how far that may be off (the model's error over the OCV slope), fraction.
    cell_rest_soc: np.ndarray | None = None
    cell_rest_soc_sigma: np.ndarray | None = None
    # How far apart the cells' SoC stand by their voltages, beyond that doubt: the pack's
    # imbalance where the OCV can tell it (0 where it is flat), fraction.
    soc_spread: float = 0.0
    # The share of a charge the cells store, as learnt (`Estimator._learn_efficiency`): the
    # cells' mean, and each cell's.
    coulombic_efficiency: float = 1.0
    cell_coulombic_efficiency: np.ndarray | None = None

    def as_dict(self) -> dict:
        """The figures at the edges (percent, rounded), as the CLI and CSV give them."""
        return {
            "soc_pct": round(self.soc * 100.0, 3),
            "soh_pct": round(self.soh_pct, 2),
            "resistance_pct": round(self.resistance_pct, 2),
            "current_offset_a": round(self.current_offset_a, 5),
            "remaining_wh": round(self.remaining_wh, 3),
            "runtime_s": None if self.runtime_s is None else round(self.runtime_s, 1),
            "runtime_reference_s": round(self.runtime_reference_s, 1),
            "coulombic_efficiency": round(self.coulombic_efficiency, 4),
        }


@dataclass(frozen=True, slots=True, eq=False)
class Actuation:
    """The firmware's decisions for one step. Its arrays are never modified after the step
    returns them (a firmware hands out a new array when a value changes), so a consumer may
    tell "unchanged" by identity."""

    state: str
    contactors: Contactors
    balance_mask: np.ndarray  # (n_series,) bool: bleed resistor on
    charge_limit_a: float  # >= 0
    discharge_limit_a: float  # >= 0, magnitude
    fault_bitmap: int
    soc: float  # pack SoC estimate, fraction
    events: tuple[FaultEvent, ...] = ()
    estimate: Estimate | None = None  # SoC, SoH, energy; the same object between updates
    # Pack voltages a charger may charge to (CVL) and a load may discharge to (DVL), what an
    # inverter takes as its setpoints; None where unknown (a frame that does not carry them).
    charge_voltage_limit_v: float | None = None
    discharge_voltage_limit_v: float | None = None
    # Asks the measurement front end to run its open-wire test during the coming interval
    # and report it with the next measurement (`Measurement.open_wire_test_v`); only asked
    # when no bleed switch is on in that interval.
    open_wire_test: bool = False
    # The fault bitmap split by level: the faults with a WARNING, an ALARM and a FAULT row
    # active, in Level order (a fault may be in several at once).
    level_bitmaps: tuple[int, int, int] = (0, 0, 0)
