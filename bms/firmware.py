"""PLACEHOLDER firmware, replaced by the firmware-core issue (protection table, debouncer,
full state machine, derating, balancing, fault log).

It is only the minimal logic that keeps the headless loop honest: it closes the
contactors through a precharge, publishes current limits that taper near the voltage
window's ends, opens everything on a cell beyond the chemistry's absolute limits, and
counts coulombs for a rough SoC. It does not debounce, balance or estimate.
"""

from __future__ import annotations

import numpy as np

from bms.chemistry import Chemistry
from bms.faults import FAULT_CODES, Level, bitmap
from bms.signals import OPEN, Actuation, Contactors, FaultEvent, Measurement

PRECHARGE_DONE_FRACTION = 0.95  # bus within 5 % of the pack voltage
PRECHARGE_TIMEOUT_S = 5.0
TAPER_V = 0.1  # limits fall to zero over the last 100 mV before a voltage threshold


class PlaceholderFirmware:
    """PLACEHOLDER: see the module docstring."""

    def __init__(self, chemistry: Chemistry, n_series: int, pack_capacity_ah: float):
        self.chem = chemistry
        self.n_series = n_series
        self.capacity_as = pack_capacity_ah * 3600.0
        self.max_charge_a = chemistry.limits.max_charge_c * pack_capacity_ah
        self.max_discharge_a = chemistry.limits.max_discharge_c * pack_capacity_ah
        self.state = "INIT"
        self.requested = "run"
        self.active: set[str] = set()
        self.soc = 0.0  # pack SoC by coulomb counting, fraction
        self.v_min = self.v_max = 0.0
        self.t_min = self.t_max = 0.0
        self.last_temperature_c: np.ndarray | None = None
        self.precharge_since_s = 0.0
        self.last_s: float | None = None
        self.no_balancing = np.zeros(n_series, dtype=bool)

    def request(self, name: str) -> None:
        """Host request: `run`, `standby`, `storage` or `clear-faults`."""
        if name == "clear-faults":
            self.active.clear()
            if self.state == "FAULT":
                self.state = "STANDBY"
        else:
            self.requested = name

    def step(self, m: Measurement, now_s: float) -> Actuation:
        dt_s = 0.0 if self.last_s is None else now_s - self.last_s
        self.last_s = now_s
        events: list[FaultEvent] = []
        self._protect(m, now_s, events)
        if self.state == "INIT":
            cells_soc = self.chem.ocv.soc_at_rest(m.cell_voltage_v, m.temperature_c.mean())
            self.soc = float(cells_soc.mean())
            self.state = "STANDBY"
        else:
            self.soc += m.current_a * dt_s / self.capacity_as
        contactors = self._sequence(m, now_s, events)
        thr = self.chem.thresholds
        charge = discharge = 0.0
        if self.state == "RUN":
            charge = self.max_charge_a * _ramp((thr.charge_v - self.v_max) / TAPER_V)
            discharge = self.max_discharge_a * _ramp((self.v_min - thr.undervoltage_v) / TAPER_V)
        return Actuation(
            state=self.state,
            contactors=contactors,
            balance_mask=self.no_balancing,
            charge_limit_a=charge,
            discharge_limit_a=discharge,
            fault_bitmap=bitmap(self.active),
            soc=min(max(self.soc, 0.0), 1.0),
            events=tuple(events),
        )

    def _raise(self, events: list[FaultEvent], now_s: float, name: str,
               index: int | None = None, value: float | None = None) -> None:
        self.active.add(name)
        self.state = "FAULT"
        events.append(FaultEvent(now_s, name, FAULT_CODES[name], Level.FAULT.name, "raised",
                                 index, value))

    def _protect(self, m: Measurement, now_s: float, events: list[FaultEvent]) -> None:
        lim = self.chem.limits
        v = m.cell_voltage_v
        t = m.temperature_c
        self.v_min, self.v_max = float(v.min()), float(v.max())
        if t is not self.last_temperature_c:  # sensors are sampled slower than the tick
            self.last_temperature_c = t
            self.t_min, self.t_max = float(t.min()), float(t.max())
        t_min, t_max = self.t_min, self.t_max
        checks = (
            ("CELL_OVERVOLTAGE", self.v_max > lim.v_max, v, np.argmax),
            ("CELL_UNDERVOLTAGE", self.v_min < lim.v_min, v, np.argmin),
            ("DISCHARGE_OVERTEMP", t_max > lim.discharge_temp_max_c, t, np.argmax),
            ("DISCHARGE_UNDERTEMP", t_min < lim.discharge_temp_min_c, t, np.argmin),
        )
        for name, tripped, values, worst in checks:
            if tripped and name not in self.active:
                index = int(worst(values))
                self._raise(events, now_s, name, index, float(values[index]))

    def _sequence(self, m: Measurement, now_s: float, events: list[FaultEvent]) -> Contactors:
        if self.state == "STANDBY" and self.requested == "run":
            self.state = "PRECHARGE"
            self.precharge_since_s = now_s
        if self.state == "PRECHARGE":
            pack_v = float(np.sum(m.cell_voltage_v))
            if m.bus_voltage_v >= PRECHARGE_DONE_FRACTION * pack_v:
                self.state = "RUN"
            elif now_s - self.precharge_since_s > PRECHARGE_TIMEOUT_S:
                self._raise(events, now_s, "PRECHARGE_FAILED", None, m.bus_voltage_v)
                return OPEN
            else:
                return Contactors(negative=True, precharge=True, positive=False)
        if self.state == "RUN":
            return Contactors(negative=True, precharge=False, positive=True)
        return OPEN


def _ramp(x: float) -> float:
    """x clipped to [0, 1]: the share of a limit left as a voltage nears its threshold."""
    return min(max(x, 0.0), 1.0)
