"""Lifetime counters: what a pack has been through, kept in non-volatile memory.

Charge and energy throughput each way, equivalent full cycles, contactor closings and
openings under load, time in each state, and the extreme readings seen. Updated by the
firmware every step from the measurement it trusts; pure, no clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from bms.core.signals import State

# Extremes start empty: +inf for a minimum, -inf for a maximum, shown as None.
EXTREMES = ("cell_v_max", "cell_v_min", "temp_c_max", "temp_c_min", "current_a_max",
            "current_a_min")


def _no_extremes() -> dict[str, float]:
    return {name: (-math.inf if name.endswith("_max") else math.inf) for name in EXTREMES}


@dataclass
class Counters:
    charge_in_ah: float = 0.0
    charge_out_ah: float = 0.0
    energy_in_wh: float = 0.0
    energy_out_wh: float = 0.0
    contactor_cycles: int = 0  # main contactors closed onto the bus
    opened_under_load: int = 0  # opened with a current of at least the rest current
    last_open_current_a: float = 0.0
    time_in_state_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(State, 0.0))
    extremes: dict[str, float] = field(default_factory=_no_extremes)

    def count_time(self, state: str, dt_s: float) -> None:
        self.time_in_state_s[state] = self.time_in_state_s.get(state, 0.0) + dt_s

    def count_charge(self, current_a: float, pack_v: float, dt_s: float) -> None:
        """The charge and energy of `dt_s` at this current and pack voltage."""
        current_a, pack_v = float(current_a), float(pack_v)
        if not (math.isfinite(pack_v) and math.isfinite(current_a)):
            return
        ah = current_a * dt_s / 3600.0
        if ah >= 0.0:
            self.charge_in_ah += ah
            self.energy_in_wh += ah * pack_v
        else:
            self.charge_out_ah -= ah
            self.energy_out_wh -= ah * pack_v

    def see(self, cell_v_min: float, cell_v_max: float, temp_c_min: float, temp_c_max: float,
            current_a: float) -> None:
        """Widens the extremes by one step's trusted readings (a NaN widens nothing)."""
        # Called every step and most steps widen nothing: compared first, stored (as a
        # float) only when wider; the same result as max() and min(), a NaN widening nothing.
        x = self.extremes
        if cell_v_max > x["cell_v_max"]:
            x["cell_v_max"] = float(cell_v_max)
        if cell_v_min < x["cell_v_min"]:
            x["cell_v_min"] = float(cell_v_min)
        if temp_c_max > x["temp_c_max"]:
            x["temp_c_max"] = float(temp_c_max)
        if temp_c_min < x["temp_c_min"]:
            x["temp_c_min"] = float(temp_c_min)
        if current_a > x["current_a_max"]:
            x["current_a_max"] = float(current_a)
        if current_a < x["current_a_min"]:
            x["current_a_min"] = float(current_a)

    def cycles(self, capacity_ah: float) -> float:
        """Equivalent full cycles: the charge taken out over the pack's nominal capacity."""
        return self.charge_out_ah / capacity_ah

    def as_dict(self) -> dict:
        """Plain data (JSON, the store): an extreme not yet seen is None."""
        data = asdict(self)
        data["extremes"] = {k: (v if math.isfinite(v) else None) for k, v in self.extremes.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Counters:
        """The counters `as_dict` gave; keys a newer firmware added start from zero, keys
        it no longer has are dropped."""
        out = cls()
        for name in ("charge_in_ah", "charge_out_ah", "energy_in_wh", "energy_out_wh",
                     "last_open_current_a"):
            setattr(out, name, float(data.get(name, 0.0)))
        for name in ("contactor_cycles", "opened_under_load"):
            setattr(out, name, int(data.get(name, 0)))
        out.time_in_state_s.update({k: float(v) for k, v in data.get("time_in_state_s", {}).items()
                                    if k in out.time_in_state_s})
        for k, v in data.get("extremes", {}).items():
            if k in out.extremes and v is not None:
                out.extremes[k] = float(v)
        return out
