"""The simulated pack's load when an inverter drives it (`--profile inverter`): the newest
DC setpoint the simulated inverter (`bms-emu inverter`) sent on the CAN bus
(`hil.dc_bus`), as the Demand the pack draws. It stands where a load profile stands, in
`serve --sim`, `run` and `rig`. An inverter that falls silent - killed, or its bus gone -
has its power stage off: after SILENT_AFTER_S without a setpoint the pack draws nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bms.links.can.bus_spec import BusSpec, open_bus
from bms.links.can.kept_bus import KeptBus, Opener
from hil.dc_bus import OFF, bitrate, decode_setpoint
from hil.loads import Demand

if TYPE_CHECKING:
    import can

log = logging.getLogger(__name__)

SILENT_AFTER_S = 1.0  # ten setpoints missed


class InverterLoad(KeptBus):
    """`demand(now_s)` reads the bus (opening it when due) and says what the pack draws."""

    def __init__(self, spec: BusSpec, opener: Opener = open_bus):
        super().__init__(spec, bitrate(), opener, "the inverter's DC setpoints", log)
        self.setpoint = OFF
        self.heard_s: float | None = None
        self.setpoints = 0  # setpoints taken
        self.other_frames = 0  # everything else on the bus (the BMS's frames, ...)

    def demand(self, now_s: float) -> Demand:
        self.exchange(now_s, lambda frame: self._take(frame, now_s), list)
        if self.heard_s is None or now_s - self.heard_s > SILENT_AFTER_S:
            return Demand(0.0, "a")
        return Demand(self.setpoint.current_a, "a", self.setpoint.voltage_limit_v)

    def _take(self, frame: can.Message, now_s: float) -> list[can.Message]:
        setpoint = decode_setpoint(frame)
        if setpoint is None:
            self.other_frames += 1
        else:
            self.setpoint, self.heard_s = setpoint, now_s
            self.setpoints += 1
        return []

    def describe(self) -> str:
        return f"the inverter on CAN {self.spec.describe()}"

    def stats(self) -> dict:
        return {**self.bus_stats(), "setpoints": self.setpoints,
                "other_frames": self.other_frames}
