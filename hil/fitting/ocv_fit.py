"""The OCV's charge and discharge branches, from slow (<= C/20) runs with the IR drop taken
out (the fitted R0 + R1 + R2: at C/20 the RC voltages have long settled), or else from the
voltages at the end of long rests after steps (each on the branch of the step before it).
A slow run is the better source: it gives the whole curve, a plateau's edges included; rest
points give only as many points as the test had steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hil.fitting.segments import SLOW_C, SLOW_TOLERANCE, Segmented

# The profile's OCV table: every 2 %, and every 0.5 % near empty and full, where a
# sodium-ion curve bends most (na-nvpf rises 1.3 V over its first 5 %).
GRID_PCT = np.unique(np.concatenate((np.linspace(0.0, 100.0, 51), np.linspace(0.0, 10.0, 21),
                                     np.linspace(95.0, 100.0, 11))))
# A local straight line through the samples within 3/4 of the wider gap to a neighbouring
# table point: long enough to average the noise out, short enough to follow a bend.
WINDOW_OF_GAP = 0.75
REST_OCV_MIN_S = 1800.0  # a rest this long has relaxed enough to read the OCV
MIN_SPAN = 0.6  # a branch must cover this much of the SoC range to make a table
MIN_REST_POINTS = 5


@dataclass(frozen=True, eq=False)
class Samples:
    """(SoC, OCV) points of one branch, and where they came from."""

    soc: np.ndarray
    ocv_v: np.ndarray
    source: str  # 'slow' or 'rests'

    @property
    def span(self) -> float:
        return float(self.soc.max() - self.soc.min()) if self.soc.size else 0.0


def slow_samples(segs: list[tuple[Segmented, np.ndarray]], direction: int,
                 capacity_ah: float, r_dc: Callable[[np.ndarray, np.ndarray], np.ndarray]
                 ) -> Samples:
    """The OCV along every slow run in `direction` (+1 charge, -1 discharge), IR-corrected."""
    soc, ocv = [], []
    for seg, soc_ref in segs:
        trace = seg.trace
        for run in seg.runs:
            if (run.kind == "rest" or np.sign(run.median_a) != direction
                    or abs(run.median_a) > SLOW_C * SLOW_TOLERANCE * capacity_ah
                    or not seg.is_long(run)):
                continue
            rows = np.arange(run.start, run.stop)
            i = trace.current_a[rows]
            s = np.clip(soc_ref[rows], 0.0, 1.0)
            soc.append(s)
            ocv.append(trace.voltage_v[rows] - i * r_dc(s, trace.temp_c[rows]))
    return _samples(soc, ocv, "slow")


def rest_samples(segs: list[tuple[Segmented, np.ndarray]], direction: int) -> Samples:
    """The voltage at the end of each long rest after a run in `direction`."""
    soc, ocv = [], []
    for seg, soc_ref in segs:
        for k in range(1, len(seg.runs)):
            rest, before = seg.runs[k], seg.runs[k - 1]
            if (rest.kind == "rest" and rest.duration_s >= REST_OCV_MIN_S
                    and np.sign(before.median_a) == direction and seg.is_long(before)):
                soc.append([np.clip(soc_ref[rest.last], 0.0, 1.0)])
                ocv.append([seg.trace.voltage_v[rest.last]])
    return _samples(soc, ocv, "rests")


def _samples(soc: list, ocv: list, source: str) -> Samples:
    if not soc:
        return Samples(np.empty(0), np.empty(0), source)
    return Samples(np.concatenate(soc), np.concatenate(ocv), source)


def usable(samples: Samples) -> bool:
    if samples.source == "rests" and samples.soc.size < MIN_REST_POINTS:
        return False
    return samples.span >= MIN_SPAN


def on_grid(samples: Samples) -> np.ndarray:
    """The branch at GRID_PCT: a local straight line through the samples near each point
    (slow runs), or straight lines between rest points; flat beyond the ends.
    Made non-decreasing (noise must not make an OCV fall)."""
    grid = GRID_PCT / 100.0
    order = np.argsort(samples.soc)
    s, v = samples.soc[order], samples.ocv_v[order]
    if samples.source == "rests":
        return np.maximum.accumulate(np.interp(grid, s, v))
    gaps = np.diff(grid)
    window = WINDOW_OF_GAP * np.maximum(np.append(gaps, gaps[-1]), np.insert(gaps, 0, gaps[0]))
    out = np.empty(grid.size)
    for k, g in enumerate(grid):
        near = np.abs(s - g) <= window[k]
        if np.count_nonzero(near) < 3:
            out[k] = np.interp(g, s, v)
            continue
        slope, intercept = np.polyfit(s[near] - g, v[near], 1)
        out[k] = intercept
    return np.maximum.accumulate(out)
