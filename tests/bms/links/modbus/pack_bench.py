"""A Device on a firmware stepped by hand in simulated time, as the runtime steps it, and a
Modbus link serving it on a free localhost port: what the Modbus tests read and write."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np

from bms.core.firmware import Firmware
from bms.core.signals import OPEN, Measurement
from bms.data.presets import PRESETS
from bms.host.device import Device, Identity
from bms.host.policy import CommandPolicy
from bms.links.modbus.address import parse_address
from bms.links.modbus.pack_view import nameplate_of
from bms.links.modbus.server import ModbusLink
from protocol import messages as pm

CHEM = PRESETS["na-nfm"]
N_SERIES = 4
N_PARALLEL = 2
CAPACITY_AH = N_PARALLEL * CHEM.capacity_ah
CELLS_PER_SENSOR = 2  # two sensors over four cells
TICK_S = 0.1
CELLS_V = np.array([3.50, 3.48, 3.53, 3.51])  # lowest: cell 2, highest: cell 3 (from 1)
TEMPS_C = np.array([24.0, 27.5])
PACK_ID = "bench-pack"
UNIT = 1


class Bench:
    """The firmware stepped on readings whose contactor feedback and bus follow its
    commands, so that a `run` request closes the contactors."""

    def __init__(self):
        self.fw = Firmware(CHEM, N_SERIES, CAPACITY_AH)
        self.device = Device(self.fw, CHEM, Identity(CHEM.name, pm.Mode.SIM, N_PARALLEL,
                                                     CAPACITY_AH, len(TEMPS_C)))
        assert self.fw.request("standby") is None  # waits for a host's run
        self.k = 0
        self.act = None

    @property
    def now_s(self) -> float:
        return self.k * TICK_S

    def step(self, cells=CELLS_V, temps=TEMPS_C, current_a: float = 0.0, n: int = 1):
        for _ in range(n):
            c = OPEN if self.act is None else self.act.contactors
            v = np.asarray(cells, float) + 1e-4 * (self.k % 2)  # a reading that never moves
            bus_up = c.negative and (c.positive or c.precharge)  # is a stuck sensor
            m = Measurement(v, np.asarray(temps, float), current_a,
                            float(v.sum()) if bus_up else 0.0, c,
                            balancing=np.zeros(v.shape, dtype=bool))
            self.act = self.fw.step(m, self.now_s)
            self.device.observe(m, self.act)
            self.k += 1
        return self.act

    def run(self, **readings) -> None:
        """Asks for RUN and steps until the firmware is there (a few seconds of precharge)."""
        assert self.fw.request("run") is None
        for _ in range(200):
            if self.step(**readings).state == "RUN":
                return
        raise AssertionError(f"never reached RUN: {self.fw.state}")

    def status(self) -> pm.Status:
        return self.device.status(self.now_s)


@contextlib.asynccontextmanager
async def serving(bench: Bench, policy: CommandPolicy | None = None,
                  address: str = "tcp://127.0.0.1:0", wait: bool = True
                  ) -> AsyncIterator[ModbusLink]:
    """The bench's device on Modbus until the block ends; the link's clock is the bench's.
    `wait`: the block starts once the server is up (else at once)."""
    policy = policy or CommandPolicy()
    plate = nameplate_of(bench.device, PACK_ID, UNIT, CELLS_PER_SENSOR,
                         remote_control=policy.enabled("state"))
    link = ModbusLink(parse_address(address), bench.device, plate, policy, reopen_every_s=0.05)
    await link.start(lambda: bench.now_s)
    try:
        if wait:
            await asyncio.wait_for(link.opened.wait(), 10)
        yield link
    finally:
        await link.close()
