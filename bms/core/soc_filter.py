"""Per-cell state-of-charge filter: an extended Kalman filter on the 2-RC + hysteresis model,
vectorised over cells, with the current sensor's offset as a state.

Why and how: docs/internals.md, bms/core/soc_filter.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bms.data.chemistry import BELOW_EMPTY_SOC, Chemistry
from bms.data.clipping import clip

SOC, V1, V2, HYST, OFFSET = range(5)
RC = slice(V1, V2 + 1)  # the two RC pairs' rows, each updated alike
N_STATES = 5
MODEL_ERROR_CAP = 4.0  # the model error seen in the innovations counts up to this x model_v
SOC_MAX = 1.05  # SoC is kept inside [-BELOW_EMPTY_SOC, SOC_MAX]
# The evidence on the voltage model is kept per cell, per region of the OCV curve (SoC bins)
# and per current level (signed current in C, edges between levels: discharge, light
# discharge, rest, light charge, charge).
REGIONS = 10
LEVEL_EDGES_C = np.array([-0.25, -0.02, 0.02, 0.25])
LEVELS = LEVEL_EDGES_C.size + 1
EVIDENCE_MIN = 0.1  # a level with less evidence than this says nothing of the state
# A region with less evidence than this over all levels does not raise the state's doubt: a
# reading gone wrong for seconds (a sense wire before its fault trips) must not.
EVIDENCE_STATE = 0.25
UNPROVEN_DYNAMIC = 0.5  # relative error of the resistive and RC voltages where unproven
NONE_SEEN_V = 1e3  # stands in for the minima over no level seen (they cancel)
BIAS, EVIDENCE, DYNAMIC = range(3)  # what is kept per region and level (SocFilter.levels)


@dataclass(frozen=True)
class FilterNoise:
    """What the filter assumes about its sensors and its model (one standard deviation)."""

    voltage_v: float  # cell voltage reading noise, quantisation included
    current_a: float  # current reading noise per sample
    model_v: float  # OCV and model error at rest
    model_dynamic: float  # relative error of the resistive and RC voltages
    correlation_s: float  # how long a model error persists
    capacity_rel: float  # relative error of the assumed capacity
    leak_per_sqrt_s: float  # SoC random walk: unmodelled self-discharge and leaks
    offset_a: float  # initial uncertainty of the current offset
    offset_walk_a_per_sqrt_s: float  # drift of the current offset
    flat_slope_v: float  # OCV slope (V per unit SoC) below which the voltage counts less
    one_c_a: float = 1.0  # the 1C current, A: current levels are told apart in C


def _fold(op: np.ufunc, by_cell: np.ndarray) -> np.ndarray:
    """`op` folded over the columns (levels, states) in order, per cell (row): what
    `op.reduce(axis=1)` gives (a sum in the same order), at half its cost - a reduction's
    inner loop over five elements a cell costs more than five passes over the cells."""
    out = op(by_cell[:, 0], by_cell[:, 1])
    for column in range(2, by_cell.shape[1]):
        op(out, by_cell[:, column], out=out)
    return out


class SocFilter:
    """The filter's state and its two steps, `predict` (coulombs) and `update` (voltage)."""

    def __init__(self, chemistry: Chemistry, soc: np.ndarray, soc_sigma: np.ndarray | float,
                 noise: FilterNoise):
        n = soc.shape[0]
        self.chem = chemistry
        self.noise = noise
        # The state as (state, cell): each state a contiguous row of cells, which every run
        # reads a few dozen times; `x` gives it as (cell, state).
        self.by_state = np.zeros((N_STATES, n))
        self.by_state[SOC] = soc
        # The covariance is kept as (state, state, cell): its per-cell products then run over
        # rows of cells: F P F' three times faster than over 5x5 blocks at 416 cells.
        self.P = np.zeros((N_STATES, N_STATES, n))
        self.P[SOC, SOC] = np.square(soc_sigma)
        self.P[V1, V1] = self.P[V2, V2] = 0.01 ** 2  # unknown polarisation at start
        self.P[HYST, HYST] = 1.0  # the branch is unknown at start
        self.P[OFFSET, OFFSET] = noise.offset_a ** 2
        self._P_next = np.empty_like(self.P)  # predict builds the next covariance here
        self._term = np.empty_like(self.P)  # and each of its terms here
        # F's diagonal and offset column (predict), and the reading's H (update): the rows
        # (columns of H) that never change are set once; each run writes the others.
        self._d = np.ones((N_STATES, n))
        self._c = np.zeros((N_STATES, n))
        self._H = np.ones((n, N_STATES))
        self.ocv_v = np.zeros(n)  # each cell's OCV at the last update
        self.ocv_slope_v = np.zeros(n)  # and its slope there, V per unit SoC
        self.innovation_ms = np.full(n, noise.model_v ** 2)  # running mean square, V^2
        # Of the last update, for the resistance learner: the reading minus the prediction
        # before and after the correction, and the resistive + RC voltage before and after.
        self.innovation_v = self.residual_v = np.zeros(n)
        self.prior_dynamic_v = self.dynamic_v = np.zeros(n)
        self.moved_soc = np.zeros(n)  # SoC counted since the voltage last set each cell
        # Per cell, OCV region and current level: the mean innovation (V, kept as if taken
        # against the present state), how much evidence it rests on (0..1) and the mean
        # resistive + RC voltage (V) there. Rows are cell * REGIONS + region: one gather and
        # one scatter per update.
        self.levels = np.zeros((n * REGIONS, 3, LEVELS))
        self._row = np.arange(n) * REGIONS  # each cell's row at the last update
        self._stats = self.levels[self._row]  # and those rows, gathered (_weigh_levels)

    @property
    def x(self) -> np.ndarray:
        """The state, (cell, state): a view of `by_state`."""
        return self.by_state.T

    @property
    def soc(self) -> np.ndarray:
        return self.by_state[SOC]

    @property
    def soc_sigma(self) -> np.ndarray:
        return np.sqrt(self.P[SOC, SOC])

    @property
    def covariance(self) -> np.ndarray:
        """Each cell's covariance, (cell, state, state): a view of `P`."""
        return self.P.transpose(2, 0, 1)

    @property
    def offset_a(self) -> float:
        return float(self.by_state[OFFSET, 0])

    def predict(self, charge_as: np.ndarray, period_s: float, capacity_as: np.ndarray,
                r_rc_ohm: np.ndarray, tau_s: np.ndarray, samples: int, at_rest: bool,
                lost_as: np.ndarray | float = 0.0) -> None:
        """Moves the state over `period_s` in which each cell took `charge_as` (measured,
        its bleed current included), of which it did not store `lost_as` (the coulombic
        efficiency's share of a charge): that moves SoC, not the RC voltages."""
        x, nz = self.by_state, self.noise
        b = x[OFFSET]
        mean_current_a = charge_as / period_s  # each cell's own: a bleed polarises it too
        d_soc = (charge_as - b * period_s - lost_as) / capacity_as
        a = np.exp(-period_s / tau_s)  # (2, n)
        gain = r_rc_ohm * (1.0 - a)
        direction = np.sign(d_soc)
        decay = np.exp(-self.chem.ocv.hysteresis_rate * np.abs(d_soc))

        clip(x[SOC] + d_soc, -BELOW_EMPTY_SOC, SOC_MAX, out=x[SOC])
        x[RC] = a * x[RC] + gain * (mean_current_a - b)
        x[HYST] = direction + (x[HYST] - direction) * decay

        # P <- F P F' with F = diag(d) + c e_b' (the offset column): written out, because
        # a batched matrix product of 5x5 matrices costs more than these element-wise terms,
        # term by term into buffers kept from run to run. Per element, in this order:
        # d_i P_ij d_j + p_i c_j + c_i p_j + P_bb c_i c_j, with p = D P e_b.
        d, c = self._d, self._c  # d[SOC], d[OFFSET] stay 1; c[HYST], c[OFFSET] stay 0
        d[RC], d[HYST] = a, decay
        c[SOC], c[RC] = -period_s / capacity_as, -gain
        P, term = self.P, self._term
        p_b = P[:, OFFSET] * d  # (D P e_b)
        P_next = np.multiply(d[:, None], P, out=self._P_next)
        P_next *= d[None]
        P_next += np.multiply(p_b[:, None], c[None], out=term)
        P_next += np.multiply(c[:, None], p_b[None], out=term)
        np.multiply(c[:, None], c[None], out=term)
        term *= P[OFFSET, OFFSET]
        P_next += term
        self.P, self._P_next = P_next, P
        P = P_next
        # Current noise summed over the period's samples and the capacity's error on the
        # charge moved; at rest, where nothing else moves SoC, a slow walk for leaks the
        # model does not know (an internal short shows as the voltage leading it). Under
        # load there is no such walk: on a flat plateau it would let a biased voltage pull
        # SoC away from the coulomb count.
        sample_s = period_s / max(samples, 1)
        # A capacity error is a bias: its variance grows with the square of the SoC moved
        # since the voltage last set the cell, not with the sum of each period's squares.
        moved = self.moved_soc + d_soc
        capacity_var = nz.capacity_rel ** 2 * np.maximum(moved * moved - self.moved_soc ** 2,
                                                         0.0)
        self.moved_soc = moved
        P[SOC, SOC] += (np.square(nz.current_a * sample_s) * samples / capacity_as ** 2
                        + capacity_var
                        + (nz.leak_per_sqrt_s ** 2 * period_s if at_rest else 0.0))
        dyn = np.square(nz.model_dynamic * gain * np.abs(mean_current_a)) + 1e-8
        P[V1, V1] += dyn[0]
        P[V2, V2] += dyn[1]
        P[HYST, HYST] += np.square(0.1 * (1.0 - decay)) + 1e-6
        P[OFFSET, OFFSET] += nz.offset_walk_a_per_sqrt_s ** 2 * period_s

    def update(self, cell_voltage_v: np.ndarray, current_a: float, temperature_c: np.ndarray,
               r0_ohm: np.ndarray, period_s: float, valid: np.ndarray) -> None:
        """Corrects the state with one voltage reading per cell (only `valid` cells)."""
        x, nz = self.by_state, self.noise
        ocv, slope, half = self.chem.ocv.with_slope(x[SOC], x[HYST], temperature_c)
        self.ocv_v, self.ocv_slope_v = ocv, slope
        i_true = current_a - x[OFFSET]
        ir_v = r0_ohm * i_true
        innovation = cell_voltage_v - (ocv + x[V1] + x[V2] + ir_v)
        self.innovation_v = innovation
        self.prior_dynamic_v = ir_v + x[V1] + x[V2]
        all_valid = bool(valid.all())
        if not all_valid:
            innovation = np.where(valid, innovation, 0.0)
        dynamic_abs_v = np.abs(ir_v) + np.abs(x[V1]) + np.abs(x[V2])
        abs_slope = np.maximum(np.abs(slope), 1e-6)
        weight = min(period_s / max(nz.correlation_s, period_s), 1.0)
        level_err_v, excess_v, evidence = self._weigh_levels(
            innovation, dynamic_abs_v, valid, (current_a - self.offset_a) / nz.one_c_a, weight)
        # "My state is wrong": the state's doubt is raised to what the levels agree on
        # beyond any model error, so the voltage pulls it back (a stale stored SoC).
        self.P[SOC, SOC] = np.maximum(self.P[SOC, SOC], np.square(excess_v / abs_slope))
        H = self._H  # (cell, state), as the matrix product takes it; H[:, RC] stays 1
        H[:, SOC], H[:, HYST], H[:, OFFSET] = slope, half, -r0_ohm
        PH = self._times(H)
        hph = _fold(np.add, H * PH)  # the state's part of the reading's variance
        explained = hph + nz.voltage_v ** 2
        # The model's error as seen: the innovations' mean square beyond what the state's
        # uncertainty and the sensor explain (covariance matching). A cell the model fits
        # worse than assumed - a resistance or an OCV off by more than model_v - is then
        # trusted less, instead of its bias being read as SoC or as a current offset.
        # Capped: a state that is confidently wrong (a stale stored SoC) also gives large
        # innovations, and must still be pulled back by the voltage. "My model is wrong
        # here" is not capped: a current level whose mean innovation differs from the
        # others' in this region (polarisation the model lacks, a hysteresis branch the
        # table lacks) is the model's error at that level, whatever the state.
        model_var = np.maximum(np.clip(self.innovation_ms - explained, nz.model_v ** 2,
                                       (MODEL_ERROR_CAP * nz.model_v) ** 2),
                               np.square(level_err_v))
        # Where the model has not proved itself (little evidence at this level and region)
        # its resistive and RC voltages are doubted more, and the count carries SoC.
        relative = nz.model_dynamic + (1.0 - evidence) * max(UNPROVEN_DYNAMIC
                                                             - nz.model_dynamic, 0.0)
        dynamic_v = relative * dynamic_abs_v
        persist = max(nz.correlation_s / period_s, 1.0)
        # Where the curve is flat the model's error is worth more SoC than it says (1 mV is
        # 0.5 % of SoC on a 0.2 V plateau), and a persistent one would be read as SoC drift
        # or as a current offset: there the voltage counts less, by the slope's shortfall
        # squared, and the coulomb count carries SoC across the plateau. That holds once
        # SoC is known about as well as the model error allows (model_v / slope); a state
        # far less certain than that (a wrong start) still takes the voltage at full weight.
        shortfall2 = np.square(np.maximum(nz.flat_slope_v / abs_slope, 1.0))
        settled = np.minimum(np.square(nz.model_v / abs_slope) / self.P[SOC, SOC], 1.0)
        flat2 = 1.0 + (shortfall2 - 1.0) * settled
        r = nz.voltage_v ** 2 + (model_var + dynamic_v * dynamic_v) * persist * flat2
        if not all_valid:
            r = np.where(valid, r, np.inf)
        self.innovation_ms += weight * (np.where(valid, innovation * innovation,
                                                 self.innovation_ms) - self.innovation_ms)
        soc_before = x[SOC].copy()
        gain = self._correct(H, innovation, r, PH, hph)
        # As _shift_levels, on the rows _weigh_levels gathered: one scatter instead of two.
        self._stats[:, BIAS] -= (slope * (x[SOC] - soc_before))[:, None]
        self.levels[self._row] = self._stats
        self.fuse_offset()
        # What the resistance learner compares across runs: the resistive and RC voltage of
        # the corrected state, and the reading's residual against it (linearised).
        self.dynamic_v = r0_ohm * (current_a - x[OFFSET]) + x[V1] + x[V2]
        self.residual_v = innovation * (1.0 - _fold(np.add, H * gain))

    def _weigh_levels(self, innovation_v: np.ndarray, dynamic_abs_v: np.ndarray,
                      valid: np.ndarray, current_c: float,
                      weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adds this innovation to each valid cell's mean at its OCV region and the current
        level, and returns per cell: the model's error at this level (its mean less the
        state's part), the state's error beyond what any model error could be (V), and the
        evidence at this level (0..1).

        The state's part is what every level seen in the region agrees on: the smallest
        mean if all have one sign, else none - a model error flips with the current's
        direction or vanishes at rest; a state error does neither. Beyond a model error: the
        state's part past the error cap and the least mean dynamic voltage of the levels
        seen (all of it doubted). The cells' rows stay gathered in `_stats` for `update` to
        shift and store."""
        level = int(np.searchsorted(LEVEL_EDGES_C, current_c))
        n = self.by_state.shape[1]
        region = clip((self.by_state[SOC] * REGIONS).astype(np.intp), 0, REGIONS - 1)
        self._row = np.arange(n) * REGIONS + region
        stats = self._stats = self.levels[self._row]  # (n, 3, LEVELS), a copy
        bias, evidence, dynamic = stats[:, BIAS], stats[:, EVIDENCE], stats[:, DYNAMIC]
        grown = evidence[:, level] + weight * (1.0 - evidence[:, level])
        # A mean weighted as if over the evidence so far: the first readings count in full.
        step = np.where(valid, weight / grown, 0.0)
        bias[:, level] += step * (innovation_v - bias[:, level])
        dynamic[:, level] += step * (dynamic_abs_v - dynamic[:, level])
        evidence[:, level] = np.where(valid, grown, evidence[:, level])
        seen = evidence >= EVIDENCE_MIN
        smallest_v = _fold(np.minimum, np.where(seen, np.abs(bias), NONE_SEEN_V))
        rising = _fold(np.logical_or, seen & (bias > 0.0))
        falling = _fold(np.logical_or, seen & (bias < 0.0))
        state_v = np.where(rising != falling, np.where(rising, smallest_v, -smallest_v), 0.0)
        level_err_v = bias[:, level] - state_v  # not yet seen: all of it is in doubt
        least_dynamic_v = _fold(np.minimum, np.where(seen, dynamic, NONE_SEEN_V))
        agreed = (rising != falling) & (_fold(np.add, evidence) >= EVIDENCE_STATE)
        excess_v = np.where(agreed, np.maximum(
            smallest_v - MODEL_ERROR_CAP * self.noise.model_v - least_dynamic_v, 0.0), 0.0)
        return level_err_v, excess_v, evidence[:, level]

    def _shift_levels(self, d_soc: np.ndarray, cells: np.ndarray | slice = slice(None)) -> None:
        """The state moved by `d_soc`: every level's mean in the cell's region is kept as if
        taken against the new state (what is left of the state's part after the move)."""
        self.levels[self._row[cells], BIAS] -= (self.ocv_slope_v[cells] * d_soc)[:, None]

    def observe_offset(self, mean_current_a: float, samples: int) -> None:
        """With the contactors open no current flows: the reading is the offset itself."""
        H = np.zeros_like(self.x, order="C")
        H[:, OFFSET] = 1.0
        r = self.noise.current_a ** 2 / max(samples, 1)
        self._correct(H, mean_current_a - self.by_state[OFFSET], np.full(H.shape[0], r))

    def _correct(self, H: np.ndarray, innovation: np.ndarray, r: np.ndarray,
                 PH: np.ndarray | None = None, hph: np.ndarray | None = None) -> np.ndarray:
        """One scalar measurement per cell. P - PH PH' / s stays symmetric as written.
        `PH` and `hph` (H' P H per cell): as `update` has worked them out already."""
        if PH is None:
            PH = self._times(H)
        s = (_fold(np.add, H * PH) if hph is None else hph) + r
        K = PH / s[:, None]  # a cell with r = inf gets K = 0
        self.by_state += K.T * innovation
        self.P -= np.multiply(K.T[:, None], PH.T[None], out=self._term)
        x = self.by_state
        clip(x[SOC], -BELOW_EMPTY_SOC, SOC_MAX, out=x[SOC])
        clip(x[HYST], -1.0, 1.0, out=x[HYST])
        return K

    def _times(self, H: np.ndarray) -> np.ndarray:
        """P H per cell, (cell, state), by a batched matrix product on contiguous 5x5 blocks:
        the BLAS sums in an order of its own, which the filter's numbers have followed."""
        return (np.ascontiguousarray(self.covariance) @ H[:, :, None])[:, :, 0]

    def fuse_offset(self) -> None:
        """Every cell's offset estimate replaced by their median (the upper one of an even
        count: np.median's extra work is a visible cost at one run per second)."""
        b = self.by_state[OFFSET]
        middle = b.size // 2
        b[:] = np.partition(b, middle)[middle]

    def recalibrate(self, cells: np.ndarray, soc: np.ndarray, soc_sigma: np.ndarray,
                    hyst: float | None = None) -> None:
        """Sets `cells` to a SoC known from the voltage alone (full, empty or a relaxed rest),
        forgetting what the coulomb count had built up for them; at full or empty the
        branch is known too (`hyst` +1 or -1)."""
        if not cells.any():
            return
        self._shift_levels(soc[cells] - self.by_state[SOC, cells], cells)
        self.by_state[SOC, cells] = soc[cells]
        self.moved_soc[cells] = 0.0
        P = self.P[:, :, cells]
        known = [SOC] if hyst is None else [SOC, HYST]
        P[known, :] = 0.0
        P[:, known] = 0.0
        P[SOC, SOC] = np.square(soc_sigma)[cells]
        if hyst is not None:
            self.by_state[HYST, cells] = hyst
            P[HYST, HYST] = 0.01
        self.P[:, :, cells] = P
