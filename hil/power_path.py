"""Pack contactors, precharge resistor and the DC-link capacitance on the load side.

With the negative contactor and the precharge path closed, the bus charges through the
precharge resistor (time constant (R_pre + R_pack) * C); with both main contactors
closed the bus is the pack terminal voltage and the load current flows; otherwise the
bus discharges through the load's bleed resistance. A welded contactor stays closed
whatever it is commanded; an open precharge resistor never conducts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from bms.core.signals import OPEN, Contactors


@dataclass(frozen=True)
class PowerPathSpec:
    precharge_resistor_ohm: float = 47.0
    bus_capacitance_f: float = 4.7e-3  # tau ~0.22 s with 47 ohm: precharge in about 1 s
    bus_bleed_tau_s: float = 2.0

    @classmethod
    def for_pack(cls, pack_nominal_v: float, one_c_a: float) -> PowerPathSpec:
        """Sized like a real design: precharge current at most 0.2C, done in about 1 s
        (time constant 0.22 s)."""
        resistor_ohm = pack_nominal_v / (0.2 * one_c_a)
        return cls(precharge_resistor_ohm=resistor_ohm, bus_capacitance_f=0.22 / resistor_ohm)


class PowerPath:
    def __init__(self, spec: PowerPathSpec):
        self.spec = spec
        self.commanded: Contactors | None = OPEN
        self.actual: Contactors = OPEN  # what the contacts really are
        self.welded: Contactors = OPEN  # which contacts are welded shut
        self.weld_pending: Contactors = OPEN  # contacts that weld the next time they close
        self.precharge_open = False
        self.bus_v = 0.0

    def command(self, contactors: Contactors) -> None:
        """Applies the firmware's contactor commands; welded contacts stay closed."""
        if contactors == self.commanded:
            return
        self.commanded = c = contactors
        if self.weld_pending != OPEN:
            p = self.weld_pending
            self.welded = Contactors(
                self.welded.negative or (p.negative and c.negative),
                self.welded.precharge or (p.precharge and c.precharge),
                self.welded.positive or (p.positive and c.positive),
            )
        w = self.welded
        self.actual = contactors if w == OPEN else Contactors(
            c.negative or w.negative, c.precharge or w.precharge, c.positive or w.positive
        )

    def weld(self, which: str) -> None:
        """The named contactor ('negative', 'precharge', 'positive') welds shut: at once if it
        is closed now, else the next time it closes."""
        self.weld_pending = replace(self.weld_pending, **{which: True})
        commanded, self.commanded = self.commanded, None
        self.command(commanded)

    def step(self, dt_s: float, pack_emf_v: float, pack_r_ohm: float, load_a: float) -> float:
        """Advances the bus by one step; returns the pack current (A, positive = charging)."""
        c = self.actual
        if c.main_closed:
            self.bus_v = pack_emf_v + pack_r_ohm * load_a
            return load_a
        if c.negative and c.precharge and not self.precharge_open:
            r_ohm = self.spec.precharge_resistor_ohm + pack_r_ohm
            tau_s = r_ohm * self.spec.bus_capacitance_f
            start_v = self.bus_v
            self.bus_v = pack_emf_v + (start_v - pack_emf_v) * math.exp(-dt_s / tau_s)
            # Mean current over the step: the charge that flowed into the capacitor.
            return -self.spec.bus_capacitance_f * (self.bus_v - start_v) / dt_s
        self.bus_v *= math.exp(-dt_s / self.spec.bus_bleed_tau_s)
        return 0.0
