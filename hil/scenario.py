"""Running a scenario (`hil.scenario_file`): the firmware against the simulated pack in the
headless runner, its timeline applied on the simulated clock, every check judged each step.

Why and how: docs/internals.md, hil/scenario.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bms.core.firmware import Firmware
from bms.core.signals import Actuation, FaultEvent, Measurement
from bms.data.faults import Level
from bms.runtime.restart import restarted
from hil.loads import Demand, StepProfile
from hil.pack import SimulatedPack
from hil.pack_options import build_pack
from hil.runner import RunOptions, run
from hil.scenario_checks import ActiveRow, StepView, Verdict
from hil.scenario_file import Action, Scenario


class LimitBlindPack(SimulatedPack):
    """A pack whose load and charger disregard the current limits the BMS publishes: a
    faulty charger or inverter, or a short on the bus. Only the contactors stop them."""

    def actuate(self, act: Actuation) -> None:
        super().actuate(act)
        self.charge_limit_a = self.discharge_limit_a = math.inf
        self.voltage_limits_v = (None, None)


class TimelineLoad:
    """The [load] profile, replaced by each timeline `load` from its time on; each profile
    runs on its own clock from the moment it starts."""

    def __init__(self, first: StepProfile, changes: list[Action]):
        self.segments = [(0.0, first)] + [(a.at_s, a.value) for a in changes]

    def demand(self, t_s: float) -> Demand:
        start_s, profile = next(s for s in reversed(self.segments) if s[0] <= t_s)
        return profile.demand(t_s - start_s)


class TimelineFirmware:
    """The firmware as the runner steps it, with the timeline's host side applied first. A
    `reset` request replaces the firmware as a host's Reset does (`bms.runtime.restart`);
    `resets` counts them (the boot the next one ends)."""

    def __init__(self, fw: Firmware, actions: list[Action], tick_s: float, capacity_ah: float):
        self.fw = fw
        self.tick_s = tick_s
        self.capacity_ah = capacity_ah
        self.pending = [a for a in actions if a.kind != "load"]
        self.silent = False
        self.resets = 0

    def step(self, m: Measurement, now_s: float) -> Actuation:
        step = round(now_s / self.tick_s)
        while self.pending and self.pending[0].step <= step:
            self._apply(self.pending.pop(0))
        return self.fw.step(None if self.silent else m, now_s)

    def _apply(self, action: Action) -> None:
        match action.kind:
            case "request" if action.value == "reset":
                self.resets += 1
                self.fw, lost = restarted(self.fw, self.capacity_ah, self.resets)
                if lost:  # one firmware hands the same one over: nothing may be lost
                    raise RuntimeError(f"a reset lost {lost}")
            case "request":
                self.fw.request(action.value)
            case "config":
                self.fw.reconfigure(action.value)
            case "rig":
                self.silent = action.value


@dataclass
class ScenarioResult:
    scenario: Scenario
    verdicts: list[Verdict]
    sim_s: float
    wall_s: float
    events: list[FaultEvent]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def failures(self) -> int:
        return sum(not v.passed for v in self.verdicts)


def active_rows(fw: Firmware) -> frozenset[ActiveRow]:
    """The protection rows active now, and the faults raised outside the table."""
    p = fw.protection
    rows = {(r.fault, r.level, r.quantity) for r, on in zip(p.rows, p.active, strict=True) if on}
    return frozenset(rows | {(name, Level.FAULT, None) for name in fw.event_faults})


def scenario_pack(sc: Scenario) -> SimulatedPack:
    """The scenario's pack, by the same code as `run`'s (`hil.pack_options.build_pack`) on
    the chemistry read with the file (so a case sent to another machine needs no file),
    with the load's faults: limits disregarded, another charge voltage."""
    kind = LimitBlindPack if sc.load.ignore_limits else SimulatedPack
    pack = build_pack(sc.pack, sc.tick_s, kind, sc.chem)
    if sc.load.charge_v_per_cell is not None:
        pack.charge_voltage_v = sc.load.charge_v_per_cell * pack.n_series
    return pack


def run_scenario(sc: Scenario) -> ScenarioResult:
    pack = scenario_pack(sc)
    fw = Firmware(pack.chem, pack.n_series, pack.capacity_ah, sc.config)
    driver = TimelineFirmware(fw, list(sc.actions), sc.tick_s, pack.capacity_ah)
    load = TimelineLoad(sc.load.profile, [a for a in sc.actions if a.kind == "load"])
    verdicts = [Verdict(check) for check in sc.checks]
    active: frozenset[ActiveRow] = frozenset()
    seen = [fw]  # the firmware the active set was read from

    def on_step(now_s: float, m: Measurement, act: Actuation) -> None:
        nonlocal active
        if act.events or now_s == 0.0 or driver.fw is not seen[0]:
            # The active set changes only with an event, or a new firmware (a reset).
            active = active_rows(driver.fw)
            seen[0] = driver.fw
        view = StepView(round(now_s / sc.tick_s), now_s, act, active, pack)
        for verdict in verdicts:
            verdict.observe(view)

    result = run(pack, driver, load,
                 RunOptions(duration_s=sc.duration_s, tick_s=sc.tick_s,
                            injections=sc.injections),
                 on_step=on_step)
    return ScenarioResult(sc, verdicts, result.sim_s, result.wall_s, result.totals.events)
