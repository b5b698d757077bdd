"""The headless runner: firmware against the simulated pack on a simulated clock.

Each tick: the pack is measured, the firmware steps, its actuation is applied and the
plant advances by one tick under the load's demand. Time is simulated; with `speed`
set, the loop sleeps so that simulated time runs `speed` times faster than wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from bms.core.signals import Actuation, FaultEvent, Measurement
from hil.injections import Injection, InjectionSchedule
from hil.loads import Load
from hil.pack import SimulatedPack
from hil.recorder import Recorder

STOP_POLL_S = 0.1  # a paced run sleeps at most this long before it looks for a stop request


class Stepper(Protocol):
    """What the runner steps: the firmware, or a wrapper of it (a scenario's timeline)."""

    def step(self, m: Measurement, now_s: float) -> Actuation: ...


@dataclass(frozen=True)
class RunOptions:
    duration_s: float
    tick_s: float = 0.1
    speed: float | None = None  # None: as fast as possible
    record_every_s: float = 1.0
    injections: tuple[Injection, ...] = ()


@dataclass
class RunTotals:
    energy_in_wh: float = 0.0
    energy_out_wh: float = 0.0
    balancing_wh: float = 0.0
    cell_v_min: float = float("inf")
    cell_v_max: float = float("-inf")
    temp_c_max: float = float("-inf")
    events: list[FaultEvent] = field(default_factory=list)

    def track_extremes(self, pack: SimulatedPack) -> None:
        """True cell voltage and temperature extremes, sampled once a slow period."""
        self.cell_v_min = min(self.cell_v_min, float(pack.group_v.min()))
        self.cell_v_max = max(self.cell_v_max, float(pack.group_v.max()))
        self.temp_c_max = max(self.temp_c_max, float(pack.thermal.temperature_c.max()))


@dataclass
class RunResult:
    sim_s: float
    wall_s: float
    last: Actuation
    last_measurement: Measurement
    totals: RunTotals

    @property
    def rtf(self) -> float:
        return self.sim_s / self.wall_s if self.wall_s > 0 else float("inf")


class PackRun:
    """One pack's run, a tick at a time: `run` loops over it on a clock of its own, and a
    batch (`hil.batch`) steps many in turn on one clock; the same code steps a pack either
    way, so a pack in a batch gives what it gives alone, bit for bit.
    `on_step(now_s, measurement, actuation)` sees every step (MQTT publishes from it)."""

    def __init__(self, pack: SimulatedPack, firmware: Stepper, profile: Load,
                 options: RunOptions, record_to: TextIO | None = None,
                 on_step: Callable[[float, Measurement, Actuation], None] | None = None):
        self.pack, self.firmware, self.profile, self.options = pack, firmware, profile, options
        self.on_step = on_step
        self.n_ticks = round(options.duration_s / options.tick_s)
        self.done = 0  # ticks stepped
        self._record_every = max(1, round(options.record_every_s / options.tick_s))
        self._injections = InjectionSchedule(options.injections)
        self._recorder = (Recorder(record_to, pack.n_series, pack.sensors.n_temp)
                          if record_to is not None else None)
        self.totals = RunTotals()
        self._wh_per_ws = options.tick_s / 3600.0
        self._m: Measurement | None = None
        self._act: Actuation | None = None

    @property
    def finished(self) -> bool:
        return self.done >= self.n_ticks

    def tick(self) -> float:
        """Steps the next tick; its simulated time."""
        k, pack, totals = self.done, self.pack, self.totals
        now_s = k * self.options.tick_s
        self._injections.apply_due(pack, now_s)  # before measuring: a fault due now is seen
        m = self._m = pack.measure()
        act = self._act = self.firmware.step(m, now_s)
        if act.events:
            totals.events.extend(act.events)
        if self.on_step is not None:
            self.on_step(now_s, m, act)
        if self._recorder is not None and k % self._record_every == 0:
            self._recorder.write(now_s, m, act, pack)  # before actuate: the bleed m was under
        pack.actuate(act)
        pack.advance(self.profile.demand(now_s))
        power_w = pack.pack_voltage_v * pack.current_a
        if power_w > 0.0:
            totals.energy_in_wh += power_w * self._wh_per_ws
        else:
            totals.energy_out_wh -= power_w * self._wh_per_ws
        if pack.balancing_on:  # the mask's any(), kept by the pack as the mask changes
            totals.balancing_wh += pack.bleed_power_w * self._wh_per_ws
        if k % pack.slow_every == 0:
            totals.track_extremes(pack)
        self.done = k + 1
        return now_s

    def result(self, wall_s: float) -> RunResult:
        """The run so far (all of it once `finished`)."""
        self.totals.track_extremes(self.pack)
        return RunResult(self.done * self.options.tick_s, wall_s, self._act, self._m,
                         self.totals)


def run(
    pack: SimulatedPack,
    firmware: Stepper,
    profile: Load,
    options: RunOptions,
    record_to: TextIO | None = None,
    progress: Callable[[float], None] | None = None,
    on_step: Callable[[float, Measurement, Actuation], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Runs `options.duration_s` of simulated time; returns the totals and the end state.
    `stop()` true (Ctrl-C) ends the run after the step in progress, with its row recorded:
    the result is the run so far."""
    one = PackRun(pack, firmware, profile, options, record_to, on_step)
    progress_every = max(1, one.n_ticks // 200)
    start = time.perf_counter()
    while not one.finished:
        k = one.done
        now_s = one.tick()
        if progress is not None and k % progress_every == 0:
            progress(now_s)
        if options.speed:
            sleep_until(start + (now_s + options.tick_s) / options.speed, stop)
        if stop is not None and stop():
            break
    return one.result(time.perf_counter() - start)


def sleep_until(wall_s: float, stop: Callable[[], bool] | None) -> None:
    """Sleeps until time.perf_counter() reaches `wall_s`; with `stop`, in slices short enough
    that a stop request does not wait for a long paced tick."""
    while (left_s := wall_s - time.perf_counter()) > 0:
        if stop is None:
            time.sleep(left_s)
        elif stop():
            return
        else:
            time.sleep(min(left_s, STOP_POLL_S))


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summary(result: RunResult, pack: SimulatedPack) -> dict:
    """The run's summary as plain data: what `--json` prints and the table shows."""
    m, act, totals = result.last_measurement, result.last, result.totals
    return {
        "sim_s": round(result.sim_s, 3),
        "wall_s": round(result.wall_s, 3),
        "rtf": round(result.rtf, 1),
        "chemistry": pack.chem.name,
        "series": pack.n_series,
        "parallel": pack.spec.n_parallel,
        "cell_capacity_ah": pack.chem.capacity_ah,
        "cells_true": pack.aging.summary(),  # true capacity and resistance range, and age
        "final": {
            "state": act.state,
            "contactors": act.contactors.describe(),
            "soc_pct": round(act.soc * 100.0, 2),
            "soc_true_pct": round(pack.true_pack_soc * 100.0, 2),
            "pack_v": round(pack.pack_voltage_v, 3),
            "current_a": round(pack.current_a, 3),
            "cell_v_min": round(float(m.cell_voltage_v.min()), 4),
            "cell_v_max": round(float(m.cell_voltage_v.max()), 4),
            "temp_c_min": round(float(m.temperature_c.min()), 2),
            "temp_c_max": round(float(m.temperature_c.max()), 2),
            "charge_limit_a": round(act.charge_limit_a, 3),
            "discharge_limit_a": round(act.discharge_limit_a, 3),
            "charge_voltage_limit_v": _rounded(act.charge_voltage_limit_v, 3),
            "discharge_voltage_limit_v": _rounded(act.discharge_voltage_limit_v, 3),
            "estimate": act.estimate.as_dict() if act.estimate is not None else None,
        },
        "extremes_true": {
            "cell_v_min": round(totals.cell_v_min, 4),
            "cell_v_max": round(totals.cell_v_max, 4),
            "temp_c_max": round(totals.temp_c_max, 2),
        },
        "energy_in_wh": round(totals.energy_in_wh, 3),
        "energy_out_wh": round(totals.energy_out_wh, 3),
        "balancing_wh": round(totals.balancing_wh, 4),
        "events": [e.as_dict() for e in totals.events],
    }
