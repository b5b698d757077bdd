"""The parts of a lab file, found from its current and voltage alone: runs of rest, charge
and discharge; which runs are pulses, slow (<= C/20) runs and constant-current steps; where
the cell was full (the end of a CC-CV charge) and empty (a discharge ended at the cut-off);
and each sample's SoC, counted from the nearest full charge.

A lab file says nothing of its own structure, so every rule here is a threshold on what a
standard test looks like (docs: README "Fit a cell profile from lab data")."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hil.fitting.lab_data import LabTrace

# Below this share of the file's largest current a sample is rest (pass one, before the
# capacity is known); then below this C-rate (pass two).
REST_SHARE_OF_MAX = 0.01
REST_C = 0.005
PULSE_MAX_S = 60.0  # a run this short after a rest is a pulse
SLOW_C = 0.05  # a slow run: at most C/20 ...
SLOW_TOLERANCE = 1.25  # ... give or take a rated capacity that is not the measured one
STEP_MIN_S = 300.0  # a constant-current step long enough for the RC voltages to settle
CC_SPREAD = 0.1  # a constant current: the run's end within 10 % of its median
END_TOLERANCE_V = 0.015  # a run ending this close to the highest (lowest) end is full (empty)


@dataclass(frozen=True)
class Run:
    """Samples [start, stop) of one kind: 'rest', 'charge' or 'discharge'."""

    kind: str
    start: int
    stop: int
    duration_s: float
    median_a: float

    @property
    def last(self) -> int:
        return self.stop - 1


@dataclass(frozen=True, eq=False)
class Segmented:
    """One file cut into runs, with the samples' time steps and counted charge."""

    trace: LabTrace
    runs: list[Run]
    dt_s: np.ndarray  # each row's interval: its current flowed since the row before
    charge_ah: np.ndarray  # cumulative charge at each row, A h (positive = in)

    def is_pulse(self, k: int) -> bool:
        run = self.runs[k]
        return (run.kind != "rest" and run.duration_s <= PULSE_MAX_S and k > 0
                and self.runs[k - 1].kind == "rest")

    def is_long(self, run: Run) -> bool:
        return run.kind != "rest" and run.duration_s > PULSE_MAX_S

    def is_constant(self, run: Run) -> bool:
        """A constant-current run long enough for the RC voltages to settle."""
        if run.kind == "rest" or run.duration_s < STEP_MIN_S:
            return False
        i = self.trace.current_a
        tail = i[max(run.start, run.stop - max(3, (run.stop - run.start) // 5)):run.stop]
        return bool(np.all(np.abs(tail - run.median_a) <= CC_SPREAD * abs(run.median_a)))


def row_intervals_s(time_s: np.ndarray) -> np.ndarray:
    """Each row's interval; the first row gets the median interval."""
    dt = np.diff(time_s, prepend=np.nan)
    dt[0] = np.median(dt[1:]) if dt.size > 1 else 1.0
    return dt


def split_runs(trace: LabTrace, rest_a: float) -> Segmented:
    i = trace.current_a
    kind = np.where(np.abs(i) <= rest_a, 0, np.sign(i)).astype(int)
    edges = np.flatnonzero(np.diff(kind)) + 1
    starts = np.concatenate(([0], edges))
    stops = np.concatenate((edges, [i.size]))
    dt = row_intervals_s(trace.time_s)
    names = {0: "rest", 1: "charge", -1: "discharge"}
    runs = [Run(names[int(kind[a])], int(a), int(b), float(dt[a:b].sum()),
                float(np.median(i[a:b]))) for a, b in zip(starts, stops, strict=True)]
    return Segmented(trace, runs, dt, np.cumsum(i * dt) / 3600.0)


def without_offset(trace: LabTrace, rest_a: float) -> tuple[LabTrace, float]:
    """The trace with its current sensor's offset taken out, and the offset (A): the median
    current of its rests of a minute or more, where no current flows. An offset of C/10000
    is 0.2 % of a C/20 current, which would tilt the OCV's SoC axis by that much."""
    seg = split_runs(trace, rest_a)
    rows = [np.arange(r.start, r.stop) for r in seg.runs
            if r.kind == "rest" and r.duration_s >= PULSE_MAX_S]
    if not rows:
        return trace, 0.0
    offset_a = float(np.median(trace.current_a[np.concatenate(rows)]))
    return replace(trace, current_a=trace.current_a - offset_a), offset_a


def capacity_guess_ah(traces: list[LabTrace]) -> float:
    """The largest charge taken out in one discharge run: near the capacity when a file
    holds a full discharge, the scale the C-rate rules need before the capacity is fitted."""
    peak_a = max(float(np.abs(t.current_a).max()) for t in traces)
    best = 0.0
    for trace in traces:
        seg = split_runs(trace, REST_SHARE_OF_MAX * peak_a)
        for run in seg.runs:
            if run.kind == "discharge":
                best = max(best, float(seg.charge_ah[run.start - 1 if run.start else 0]
                                       - seg.charge_ah[run.last]))
    return best if best > 0 else peak_a


@dataclass(frozen=True)
class Event:
    """The cell full (end of a CC-CV charge) or empty (a discharge run ended at cut-off)."""

    kind: str  # 'full' or 'empty'
    row: int
    current_a: float  # the run's median current: the rate the cut-off was met at


def end_voltages(segs: list[Segmented]) -> tuple[float, float]:
    """The highest end of a long charge run and the lowest end of a long discharge run over
    all files: the charge voltage and the cut-off the lab used."""
    tops = [s.trace.voltage_v[r.last] for s in segs for r in s.runs
            if r.kind == "charge" and s.is_long(r)]
    bottoms = [s.trace.voltage_v[r.last] for s in segs for r in s.runs
               if r.kind == "discharge" and s.is_long(r)]
    return (max(tops) if tops else float("nan"), min(bottoms) if bottoms else float("nan"))


def find_events(seg: Segmented, top_v: float, bottom_v: float) -> list[Event]:
    v = seg.trace.voltage_v
    events = []
    for run in seg.runs:
        if not seg.is_long(run):
            continue
        if run.kind == "charge" and v[run.last] >= top_v - END_TOLERANCE_V:
            events.append(Event("full", run.last, run.median_a))
        elif run.kind == "discharge" and v[run.last] <= bottom_v + END_TOLERANCE_V:
            events.append(Event("empty", run.last, run.median_a))
    return events


def soc_reference(seg: Segmented, fulls: list[int], capacity_ah: float,
                  efficiency: float) -> np.ndarray:
    """Each row's SoC (fraction), counted from the nearest full charge before it (after it,
    for rows before the first): charge in stored at `efficiency`, charge out all taken."""
    i = seg.trace.current_a
    stored_ah = np.cumsum(np.where(i > 0, efficiency, 1.0) * i * seg.dt_s) / 3600.0
    anchor = np.searchsorted(np.asarray(fulls), np.arange(i.size), side="right") - 1
    anchor_row = np.asarray(fulls)[np.maximum(anchor, 0)]
    return 1.0 + (stored_ah - stored_ah[anchor_row]) / capacity_ah
