"""A UPS ride-through and its recharge over CAN in one process, in simulated time: the
firmware with its CAN link (as `serve --can` runs it), the simulated pack whose current is
the simulated inverter's (as `--profile inverter` has it), and the simulated inverter
(as `bms-emu inverter` runs it), on one python-can virtual bus. Each tick the pack is
measured, the firmware steps and the device takes the step in, the pack advances under
the inverter's DC setpoint, then the BMS's link and the inverter each poll. The same
objects the processes run in real time, here as fast as the CPU goes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bms.core.firmware import Firmware
from bms.core.signals import Actuation, FaultEvent
from bms.data.config_toml import parse_config
from bms.data.presets import PRESETS
from bms.host.device import Device, Identity
from bms.links.can.bus_spec import BusSpec
from bms.links.can.frame_sets import frame_set
from bms.links.can.link import CanLink
from hil.inverter_load import InverterLoad
from hil.inverter_node import InverterLink, InverterNode
from hil.pack import PackSpec, SimulatedPack, SpreadSpec
from hil.ups_duty import UpsDuty
from protocol import messages as pm

_channels = itertools.count()


@dataclass(frozen=True)
class Sample:
    """One tick, as the tests and the report read it: the truth, what the firmware
    published, what the inverter did."""

    t_s: float
    current_a: float  # the pack's true current, positive = charging
    pack_v: float  # true terminal voltage
    state: str
    charge_limit_a: float  # the firmware's published limits at this step
    discharge_limit_a: float
    charge_voltage_limit_v: float | None
    discharge_voltage_limit_v: float | None
    mode: str  # the inverter's
    setpoint_a: float


@dataclass
class LoopOptions:
    frame_set: str = "pylon-lv"
    chemistry: str = "na-nfm"
    series: int = 16
    initial_soc: float = 0.8
    tick_s: float = 0.5
    seed: int = 0
    spread: SpreadSpec = field(default_factory=SpreadSpec)  # cell-to-cell
    config: dict = field(default_factory=dict)  # firmware configuration, as a TOML file's


class InverterLoop:
    def __init__(self, duty: UpsDuty, options: LoopOptions | None = None):
        o = options or LoopOptions()
        self.options = o
        self.pack = SimulatedPack(PRESETS[o.chemistry], PackSpec(
            n_series=o.series, initial_soc=o.initial_soc, seed=o.seed, spread=o.spread),
            o.tick_s)
        chem, capacity_ah = self.pack.chem, self.pack.capacity_ah
        self.fw = Firmware(chem, o.series, capacity_ah,
                           parse_config(o.config, "inverter loop", chem, o.series, capacity_ah))
        self.device = Device(self.fw, chem, Identity(chem.name, pm.Mode.SIM, 1, capacity_ah,
                                                     self.pack.sensors.n_temp))
        bus = BusSpec("virtual", f"inverter-loop-{next(_channels)}")
        self.frames = frame_set(o.frame_set)
        self.link = CanLink(bus, self.frames, self.device)
        self.load = InverterLoad(bus)
        self.node = InverterNode(self.frames, duty)
        self.inverter = InverterLink(bus, self.node)
        self.inverter_alive = True  # False: the inverter process is gone
        self.bms_link_alive = True  # False: the BMS's CAN link is gone (the firmware runs on)
        self.k = 0
        self.act: Actuation | None = None
        self.events: list[FaultEvent] = []
        self.samples: list[Sample] = []

    @property
    def now_s(self) -> float:
        return self.k * self.options.tick_s

    def tick(self) -> None:
        now_s = self.now_s
        m = self.pack.measure()
        act = self.act = self.fw.step(m, now_s)
        self.events.extend(act.events)
        self.device.observe(m, act)
        self.pack.actuate(act)
        self.pack.advance(self.load.demand(now_s))
        if self.bms_link_alive:
            self.link.poll(now_s)
        if self.inverter_alive:
            self.inverter.poll(now_s)
        d = self.node.decision
        self.samples.append(Sample(
            now_s, self.pack.current_a, self.pack.pack_voltage_v, act.state,
            act.charge_limit_a, act.discharge_limit_a, act.charge_voltage_limit_v,
            act.discharge_voltage_limit_v, str(d.mode), d.setpoint.current_a))
        self.k += 1

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / self.options.tick_s)):
            self.tick()

    def kill_inverter(self) -> None:
        """The inverter process ends: its bus closes, nothing more from it."""
        self.inverter_alive = False
        self.inverter.shutdown()

    def cut_bms_link(self) -> None:
        """The BMS's CAN adapter is unplugged for good: nothing more from the battery."""
        self.bms_link_alive = False
        self.link.shutdown()

    def close(self) -> None:
        for part in (self.link, self.load, self.inverter):
            part.shutdown()
