"""What crosses the firmware boundary: measurements in, actuation out.

The firmware is called as `step(measurement, now_s) -> Actuation`; these types are
the same whether the measurement comes from the simulated pack, a rig over a serial
link or a recorded trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bms.estimator import Estimate

STATES = ("INIT", "STANDBY", "PRECHARGE", "RUN", "FAULT", "STORAGE", "SERVICE")
HOST_REQUESTS = ("standby", "run", "storage", "clear-faults")


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


@dataclass(frozen=True, slots=True)
class FaultEvent:
    t_s: float
    name: str
    code: int
    level: str  # "WARNING", "ALARM" or "FAULT"
    action: str  # "raised" or "cleared"
    index: int | None = None  # offending cell or sensor, 0-based
    value: float | None = None  # its reading when the event happened

    def as_dict(self) -> dict:
        return {
            "t_s": round(self.t_s, 6),
            "name": self.name,
            "code": self.code,
            "level": self.level,
            "action": self.action,
            "index": self.index,
            "value": None if self.value is None else round(self.value, 6),
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
