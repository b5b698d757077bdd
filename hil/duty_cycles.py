"""Duty cycles as users' equipment runs them, for hours and days, on a healthy pack: a UPS
outage to empty and the recharge, full cycles at 0.2-2C, days of float and of rest, at a
1 s measurement period. A healthy pack comes through each with nothing raised (a user
reads any event as a fault of the pack), its contactors closed, and the SoC the cycle
drives it to reached. tests/hil/test_duty_cycles.py runs the shorter ones at every
`make test`; benchmarks/duty_cycles.py runs the whole catalogue, by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bms.core.firmware import Firmware
from bms.core.signals import Actuation, FaultEvent, Measurement
from bms.data.durations import parse_duration_s
from bms.data.presets import PRESETS
from hil.loads import cycles, resolve_profile
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run

SOC_SAMPLE_EVERY_S = 60.0


@dataclass(frozen=True)
class DutyCycle:
    name: str
    profile: str  # as `bms-emu run --profile`
    duration: str  # as `--duration`
    chemistry: str = "na-nfm"
    series: int = 16
    initial_soc_pct: float = 50.0
    tick_s: float = 1.0
    # The true pack SoC the cycle must take the pack below and above (None: either way).
    reaches_below_pct: float | None = None
    reaches_above_pct: float | None = None

    @property
    def command(self) -> str:
        """The same run from the command line, to read its events by hand."""
        return (f"bms-emu run --chemistry {self.chemistry} --series {self.series} "
                f"--profile {self.profile} --initial-soc {self.initial_soc_pct:g} "
                f"--tick {self.tick_s:g} --duration {self.duration} --json")


@dataclass
class DutyResult:
    cycle: DutyCycle
    events: list[FaultEvent]
    soc_true_min_pct: float
    soc_true_max_pct: float
    state: str
    contactors: str
    sim_s: float
    wall_s: float

    @property
    def problems(self) -> list[str]:
        return judge(self)

    def as_dict(self) -> dict:
        return {"name": self.cycle.name, "command": self.cycle.command,
                "passed": not self.problems, "problems": self.problems,
                "events": [e.describe() for e in self.events],
                "soc_true_min_pct": round(self.soc_true_min_pct, 2),
                "soc_true_max_pct": round(self.soc_true_max_pct, 2),
                "state": self.state, "contactors": self.contactors,
                "sim_s": self.sim_s, "wall_s": round(self.wall_s, 2)}


def full_cycle(c_rate: float, chemistry: str = "na-nfm", series: int = 16) -> DutyCycle:
    """One charge from 5 % to full and one discharge to empty at `c_rate`, both taken to
    their ends by the published limits (`cycles:C`)."""
    duration_s = cycles(1.0, c_rate).period_s  # one charge and one discharge
    return DutyCycle(f"full cycle {c_rate:g}C {chemistry} {series}S", f"cycles:{c_rate:g}",
                     f"{duration_s:g}s", chemistry, series, initial_soc_pct=5.0,
                     reaches_below_pct=10.0, reaches_above_pct=95.0)


def float_charge(days: float, chemistry: str = "na-nfm", series: int = 16) -> DutyCycle:
    """A UPS's pack kept full: a charger at 0.5C from full, held at the charge voltage limit
    with whatever small current the cells take."""
    return DutyCycle(f"float {days:g} d {chemistry} {series}S", "current:0.5C", f"{days:g}d",
                     chemistry, series, initial_soc_pct=100.0, reaches_above_pct=97.0)


def rest(days: float, chemistry: str = "na-nfm", series: int = 16) -> DutyCycle:
    """Days connected and idle (a standby string)."""
    return DutyCycle(f"rest {days:g} d {chemistry} {series}S", "rest", f"{days:g}d",
                     chemistry, series, initial_soc_pct=90.0)


def run_duty_cycle(cycle: DutyCycle) -> DutyResult:
    pack = SimulatedPack(PRESETS[cycle.chemistry],
                         PackSpec(n_series=cycle.series,
                                  initial_soc=cycle.initial_soc_pct / 100.0), cycle.tick_s)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
    profile = resolve_profile(cycle.profile, pack.energy_wh, pack.capacity_ah)
    soc = [pack.true_pack_soc * 100.0]
    every = max(1, round(SOC_SAMPLE_EVERY_S / cycle.tick_s))
    step = 0

    def sample(now_s: float, m: Measurement, act: Actuation) -> None:
        nonlocal step
        step += 1
        if step % every == 0:
            soc.append(pack.true_pack_soc * 100.0)

    started = time.perf_counter()
    result = run(pack, firmware, profile,
                 RunOptions(duration_s=parse_duration_s(cycle.duration), tick_s=cycle.tick_s),
                 on_step=sample)
    wall_s = time.perf_counter() - started
    soc.append(pack.true_pack_soc * 100.0)
    return DutyResult(cycle, result.totals.events, min(soc), max(soc), result.last.state,
                      result.last.contactors.describe(), result.sim_s, wall_s)


def judge(r: DutyResult) -> list[str]:
    """What a user would call wrong with a healthy pack's run."""
    problems = [f"raised on a healthy pack: t={e.t_s:g} s {e.name} {e.level}"
                for e in r.events if e.action == "raised"]
    if (r.state, r.contactors) != ("RUN", "closed"):
        problems.append(f"ends in {r.state} with contactors {r.contactors}, not RUN closed")
    below, above = r.cycle.reaches_below_pct, r.cycle.reaches_above_pct
    if below is not None and r.soc_true_min_pct > below:
        problems.append(f"true SoC never below {below:g} % (lowest {r.soc_true_min_pct:.1f})")
    if above is not None and r.soc_true_max_pct < above:
        problems.append(f"true SoC never above {above:g} % (highest {r.soc_true_max_pct:.1f})")
    return problems
