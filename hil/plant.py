"""The simulated pack under its load, with faults scheduled on the clock that drives it:
what `serve --sim` runs the firmware against and what `rig` simulates behind a serial
link. The caller owns the clock; each `advance` is one tick of the pack."""

from __future__ import annotations

from dataclasses import replace

from bms.core.signals import Actuation, Measurement
from hil.injections import Injection, InjectionSchedule, parse_injection
from hil.inverter_load import InverterLoad
from hil.loads import Load
from hil.pack import SimulatedPack


class Plant:
    def __init__(self, pack: SimulatedPack, profile: Load,
                 injections: tuple[Injection, ...] = ()):
        self.pack = pack
        self.profile = profile
        self.injections = InjectionSchedule(injections)

    def measure(self) -> Measurement:
        return self.pack.measure()

    def actuate(self, act: Actuation) -> None:
        self.pack.actuate(act)

    def advance(self, now_s: float) -> None:
        """Applies the injections due by `now_s`, then moves the pack on by one tick."""
        self.injections.apply_due(self.pack, now_s)
        self.pack.advance(self.profile.demand(now_s))

    def close(self) -> None:
        """Lets go of what the load holds open: an inverter's bus (`--profile inverter`)."""
        if isinstance(self.profile, InverterLoad):
            self.profile.shutdown()

    def inject(self, spec: str, now_s: float) -> None:
        """Schedules a fault given as `--inject` writes it, AT counted from now; raises
        InputError for a bad spec and then schedules nothing."""
        inj = parse_injection(spec, self.pack.n_series, self.pack.sensors.n_temp)
        self.injections.add(replace(inj, at_s=now_s + inj.at_s))
