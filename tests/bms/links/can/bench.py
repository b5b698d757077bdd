"""A CAN link on a firmware that drives a small simulated pack, in simulated time, with an
"inverter" on the other end of python-can's virtual bus: each tick the firmware steps, the
device takes the step in (as the runtime has it) and the link polls."""

from __future__ import annotations

import itertools

import can

from bms.core.firmware import Firmware
from bms.data.config_toml import parse_config
from bms.data.presets import PRESETS
from bms.host.device import Device, Identity
from bms.links.can.bus_spec import BusSpec
from bms.links.can.frame_sets import frame_set
from bms.links.can.link import CanLink
from hil.injections import apply_injection, parse_injection
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack
from protocol import messages as pm

TICK_S = 0.1
KEEPALIVE = {"pylon-lv": can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False),
             "pylon-hv": can.Message(arbitration_id=0x4200, data=bytes(8), is_extended_id=True)}
_channels = itertools.count()


class CanBench:
    """`config`: firmware configuration overrides, as a TOML file would give them."""

    def __init__(self, name: str = "pylon-lv", config: dict | None = None, n_series: int = 16,
                 initial_soc: float = 0.6):
        self.pack = SimulatedPack(PRESETS["na-nfm"],
                                  PackSpec(n_series=n_series, initial_soc=initial_soc), TICK_S)
        chem, cap = self.pack.chem, self.pack.capacity_ah
        cfg = parse_config(config or {}, "test", chem, n_series, cap)
        self.fw = Firmware(chem, n_series, cap, cfg)
        self.device = Device(self.fw, chem, Identity(chem.name, pm.Mode.SIM, 1, cap,
                                                     self.pack.sensors.n_temp))
        self.frames = frame_set(name)
        channel = f"can-bench-{next(_channels)}"
        self.link = CanLink(BusSpec("virtual", channel), self.frames, self.device)
        self.inverter = can.Bus(interface="virtual", channel=channel)
        self.keepalive = KEEPALIVE[name]
        self.link.poll(0.0)  # opens the bus: a virtual bus delivers only to buses open
        self.k = 0
        self.act = None
        self.events = []
        self.received: list[tuple[float, can.Message]] = []  # what the inverter got, when

    @property
    def now_s(self) -> float:
        return self.k * TICK_S

    def inject(self, text: str) -> None:
        apply_injection(self.pack, parse_injection(text, self.pack.n_series,
                                                   self.pack.sensors.n_temp))

    def tick(self, demand_a: float = 0.0, inverter_alive: bool = True) -> None:
        """One firmware step and one poll; a live inverter sends its keep-alive each second."""
        now_s = self.now_s
        m = self.pack.measure()
        self.act = self.fw.step(m, now_s)
        self.events.extend(self.act.events)
        self.device.observe(m, self.act)
        self.pack.actuate(self.act)
        self.pack.advance(Demand(demand_a, "a"))
        if inverter_alive and self.k % round(1.0 / TICK_S) == 0:
            self.inverter.send(self.keepalive)
        self.link.poll(now_s)
        while (frame := self.inverter.recv(timeout=0.0)) is not None:
            self.received.append((now_s, frame))
        self.k += 1

    def run(self, seconds: float, demand_a: float = 0.0, inverter_alive: bool = True) -> None:
        for _ in range(round(seconds / TICK_S)):
            self.tick(demand_a, inverter_alive)

    def last(self, name: str) -> can.Message:
        """The newest frame of the named message the inverter received."""
        message = self.frames.message(name)
        return next(f for _, f in reversed(self.received)
                    if (f.arbitration_id, f.is_extended_id) == (message.frame_id,
                                                                 message.is_extended_frame))

    def decoded(self, name: str) -> dict:
        return self.frames.message(name).decode(bytes(self.last(name).data),
                                                decode_choices=False)

    def close(self) -> None:
        self.link.shutdown()
        self.inverter.shutdown()
