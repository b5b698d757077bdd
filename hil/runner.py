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
    `on_step(now_s, measurement, actuation)` sees every step (MQTT publishes from it).
    `stop()` true (Ctrl-C) ends the run after the step in progress, with its row recorded:
    the result is the run so far."""
    tick_s = options.tick_s
    n_ticks = round(options.duration_s / tick_s)
    record_every = max(1, round(options.record_every_s / tick_s))
    progress_every = max(1, n_ticks // 200)
    extremes_every = pack.slow_every
    injections = InjectionSchedule(options.injections)
    recorder = (
        Recorder(record_to, pack.n_series, pack.sensors.n_temp) if record_to is not None else None
    )
    totals = RunTotals()
    wh_per_ws = tick_s / 3600.0
    start = time.perf_counter()
    m = act = None
    done = 0
    for k in range(n_ticks):
        now_s = k * tick_s
        injections.apply_due(pack, now_s)  # before measuring: a fault due now is seen now
        m = pack.measure()
        act = firmware.step(m, now_s)
        if act.events:
            totals.events.extend(act.events)
        if on_step is not None:
            on_step(now_s, m, act)
        if recorder is not None and k % record_every == 0:
            recorder.write(now_s, m, act, pack)  # before actuate: the bleed m was taken under
        pack.actuate(act)
        pack.advance(profile.demand(now_s))
        power_w = pack.pack_voltage_v * pack.current_a
        if power_w > 0.0:
            totals.energy_in_wh += power_w * wh_per_ws
        else:
            totals.energy_out_wh -= power_w * wh_per_ws
        if pack.balancing.any():
            totals.balancing_wh += pack.bleed_power_w * wh_per_ws
        if k % extremes_every == 0:
            totals.track_extremes(pack)
        if progress is not None and k % progress_every == 0:
            progress(now_s)
        if options.speed:
            _sleep_until(start + (now_s + tick_s) / options.speed, stop)
        done = k + 1
        if stop is not None and stop():
            break
    wall_s = time.perf_counter() - start
    totals.track_extremes(pack)
    return RunResult(done * tick_s, wall_s, act, m, totals)


def _sleep_until(wall_s: float, stop: Callable[[], bool] | None) -> None:
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
