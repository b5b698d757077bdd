"""State estimation: per-cell SoC, pack SoC, state of health, remaining energy and runtime,
updated by the firmware every step from the measurement.

Why and how: docs/internals.md, bms/core/estimator.py.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from bms.core.signals import Estimate, Measurement
from bms.core.soc_filter import HYST, V1, V2, FilterNoise, SocFilter
from bms.data.chemistry import COULOMBIC_EFFICIENCY_MIN, FULL_TOLERANCE_V, Chemistry
from bms.data.config import TEMP_PLAUSIBLE_C, EstimationConfig, cell_v_plausible

ANCHOR_MIN_SOC = 0.3  # capacity needs anchors at least this far apart
CAPACITY_PLAUSIBLE = (0.3, 1.5)  # a capacity sample outside this share of nominal is noise
STEP_MIN_C = 0.2  # a current step this large (in C) measures resistance
RESISTANCE_PRIOR = 0.3  # relative uncertainty of the table's resistance at start
RESISTANCE_STEP_ERROR = 0.1  # relative error of one step's resistance sample
RESISTANCE_AGEING_PER_H = 0.02  # how fast the resistance may drift, relative per sqrt(h)
RESISTANCE_EXCESS_MAX = 3.0  # a step's relative excess beyond this is not the resistance
ECM_REFRESH_S = 10.0  # the estimator's model parameters are read from the table this often
REST_RESET_EVERY_S = 60.0  # while a relaxed rest lasts, the voltage resets SoC this often
MAX_WAIT_S = 30.0  # with no clean reading for this long, the filter counts coulombs only
STORED_SOC_SIGMA = 0.02  # a stored SoC the voltage does not contradict: its count's error
# Coulombic efficiency: learnt between two anchors of one kind (full, empty, relaxed rest).
FULL, EMPTY, REST = range(3)  # the kinds of anchor, rows of the per-kind counts
EFFICIENCY_PRIOR = 0.03  # how far the chemistry's efficiency may be off at start
EFFICIENCY_DRIFT_PER_H = 5e-4  # how fast it may drift (ageing, temperature), per sqrt(h)
EFFICIENCY_SPAN = 0.1  # the learnt efficiency stays this close to the chemistry's (and <= 1)
EFFICIENCY_MIN_IN = 0.2  # a sample needs this share of the capacity charged in between
EFFICIENCY_OUTLIER = 0.15  # a sample further than this from the estimate is not the cell's
EFFICIENCY_ANCHOR_DOUBT = 0.005  # SoC: what one anchor may be off beyond its voltage doubt


class PackModel(NamedTuple):
    """The pack as one cell of the model (`Estimator.pack_model`): the cells' resistances
    summed, their time constants averaged, and how fast the pack's OCV rises per coulomb."""

    r0_ohm: float
    r1_ohm: float
    tau1_s: float
    r2_ohm: float
    tau2_s: float
    ocv_v_per_as: float


def pack_soc(cell_soc: np.ndarray, capacity_ah: np.ndarray) -> float:
    """The pack's SoC for the user: what can still be discharged over that plus what can
    still be charged, each set by its limiting cell. 1 when the highest cell is full, 0 when
    the lowest is empty, and continuous in between: min() hands over from one limiting cell
    to the next without a jump."""
    return _soc_of_room(*_room_ah(np.clip(cell_soc, 0.0, 1.0), capacity_ah))


def _room_ah(soc: np.ndarray, capacity_ah: np.ndarray) -> tuple[float, float]:
    """What the pack can still deliver and still take, Ah, each set by its limiting cell."""
    held_ah = soc * capacity_ah
    return float(held_ah.min()), float((capacity_ah - held_ah).min())


def _soc_of_room(out_ah: float, in_ah: float) -> float:
    return out_ah / (out_ah + in_ah) if out_ah + in_ah > 0.0 else 0.0


class EnergyTable:
    """Energy stored below each SoC on the discharge branch, to integrate the OCV fast."""

    def __init__(self, chemistry: Chemistry):
        ocv = chemistry.ocv
        self.soc, mid, half = ocv.lookup_tables
        v = mid - half
        steps = np.diff(self.soc) * 0.5 * (v[1:] + v[:-1])
        self.below = np.concatenate(([0.0], np.cumsum(steps)))  # V x SoC fraction
        self.temp_coeff_v_per_k = ocv.temp_coeff_v_per_k

    def wh(self, soc_from: np.ndarray, soc_to: np.ndarray, capacity_ah: np.ndarray,
           temperature_c: np.ndarray) -> np.ndarray:
        """Each cell's energy between two SoC values at open-circuit voltage, Wh."""
        e = np.interp(soc_from, self.soc, self.below) - np.interp(soc_to, self.soc, self.below)
        shift = self.temp_coeff_v_per_k * (temperature_c - 25.0) * (soc_from - soc_to)
        return (e + shift) * capacity_ah


class Estimator:
    def __init__(self, chemistry: Chemistry, n_series: int, parallel_capacity_ah: float,
                 cfg: EstimationConfig, rest_current_a: float, charge_v: float,
                 undervoltage_v: float, bleed_resistor_ohm: float,
                 stored_soc: float | np.ndarray | None = None):
        self.chem = chemistry
        self.n = n_series
        self.nominal_ah = parallel_capacity_ah  # also the 1C current, A
        self.charge_v = charge_v
        self.undervoltage_v = undervoltage_v
        self.stored_soc = stored_soc
        self.v_plausible = cell_v_plausible(chemistry)
        self.rested_s: float | None = None  # how long the pack rested before the start
        self.filter: SocFilter | None = None
        self.reconfigure(cfg, rest_current_a, bleed_resistor_ohm)
        # Cells and resistances of the model scale with the cells in parallel.
        self.r_scale = chemistry.capacity_ah / parallel_capacity_ah
        self.capacity_ah = np.full(n_series, parallel_capacity_ah)
        self.r_factor = np.ones(n_series)
        self._r_var = np.full(n_series, RESISTANCE_PRIOR ** 2)
        self.energy = EnergyTable(chemistry)
        self.estimate: Estimate | None = None
        # Each cell's coulombic efficiency and its variance; with `learn_efficiency` off
        # (benchmarks compare) it stays the chemistry's.
        self.learn_efficiency = True
        self.efficiency = np.full(n_series, chemistry.coulombic_efficiency)
        self._efficiency_mean = chemistry.coulombic_efficiency
        self._efficiency_var = np.full(n_series, EFFICIENCY_PRIOR ** 2)
        # The charge put in and each cell's taken out as measured, and the time, since start;
        # per anchor kind and cell, the SoC of its last anchor and these totals then. Not
        # less the filter's current offset: on a charge the offset state takes up what a
        # wrong efficiency leaves in the voltage (both make the cell lag its count), and
        # would hide it from the balance.
        self._total_in_as = self._total_s = 0.0
        self._total_out_as = np.zeros(n_series)
        self._kind_soc = np.full((3, n_series), np.nan)
        self._kind_in_at_as = np.zeros((3, n_series))
        self._kind_out_at_as = np.zeros((3, n_series))
        self._kind_at_s = np.zeros((3, n_series))
        # Accumulated since the last filter run.
        self._charge_as = 0.0
        self._charge_in_as = 0.0  # of which charging, As
        self._bleed_as = np.zeros(n_series)
        self._bled_soc = np.zeros(n_series)
        self._elapsed_s = 0.0
        self._samples = 0
        # Per cell, charge counted since its last capacity anchor (None: no anchor yet).
        self._anchor_soc = np.full(n_series, np.nan)
        self._since_anchor_as = np.zeros(n_series)
        self._rest_since_s: float | None = None
        self._rest_reset_s = -np.inf  # the last relaxed-rest reset
        self.reset_epoch = 0  # counts resets from the voltage, repeats within a rest aside
        self._full_done = self._empty_done = False
        # At the last filter run: current, the model's resistive + RC voltage, innovation.
        self._step_ref: tuple | None = None
        self._ecm_now = np.zeros((5, n_series))  # r0, r1, tau1, r2, tau2 at the last run
        self._ecm_table = self._ecm_now  # the same from the table, without learnt factors
        self._pack_model = PackModel(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        # Each cell's SoC by its voltage alone, its doubt, and the cells' spread beyond it.
        self._rest_soc = np.full(n_series, np.nan)
        self._rest_soc_sigma = np.full(n_series, np.inf)
        self._soc_spread = 0.0
        self._pack_model_of: np.ndarray | None = None  # the _ecm_now it was worked out from
        self._resistance_of: np.ndarray | None = None  # likewise for `cell_resistance_ohm`
        self._resistance_ohm = np.zeros(n_series)
        self._ecm_due_s = -np.inf
        self._sensor_of_cell: np.ndarray | None = None
        self._sensor_count = 0

    def reconfigure(self, cfg: EstimationConfig, rest_current_a: float,
                    bleed_resistor_ohm: float) -> None:
        """New settings, at start or at run time; the state (SoC and its covariance,
        capacities, resistances, what has been counted) carries over. Settings read only at
        start (offset_sigma_a, stored_soc_sigma) change nothing once the filter runs."""
        self.cfg = cfg
        self.rest_current_a = rest_current_a
        self.bleed_resistor_ohm = bleed_resistor_ohm
        self.noise = FilterNoise(
            voltage_v=cfg.voltage_noise_v, current_a=cfg.current_noise_a,
            model_v=cfg.model_error_v, model_dynamic=0.1, correlation_s=cfg.model_correlation_s,
            capacity_rel=0.02,
            leak_per_sqrt_s=0.005 / 60.0,  # 0.5 % SoC in an hour
            offset_a=cfg.offset_sigma_a,
            offset_walk_a_per_sqrt_s=0.001 * self.nominal_ah / 60.0,
            flat_slope_v=cfg.trusted_slope_mv_per_pct * 0.1, one_c_a=self.nominal_ah)
        self.trusted_slope = cfg.trusted_slope_mv_per_pct * 0.1  # V per unit SoC
        if self.filter is not None:
            self.filter.noise = self.noise

    def restore(self, cell_soc: np.ndarray | None, capacity_ah: np.ndarray,
                resistance_factor: np.ndarray, rested_s: float | None) -> None:
        """What a store kept over a power-down, before the first step: the SoC to start
        from, the capacities (state of health) and resistances learnt. `rested_s`: how long
        the pack was left without current (the time it was off): past `rest_settle_s`, the
        start takes the rest voltage where the curve is steep, as a rest while running
        would."""
        if self.filter is not None:
            raise RuntimeError("restore comes before the first step")
        for name, a in (("capacity_ah", capacity_ah), ("resistance_factor", resistance_factor)):
            if np.shape(a) != (self.n,) or not np.all(np.isfinite(a)) or np.any(a <= 0):
                raise ValueError(f"stored {name} must be {self.n} positive numbers")
        if cell_soc is not None:
            self.stored_soc = np.clip(np.asarray(cell_soc, dtype=float), 0.0, 1.0)
        self.capacity_ah = np.array(capacity_ah, dtype=float)
        self.r_factor = np.array(resistance_factor, dtype=float)
        self.rested_s = rested_s

    # --- every step -------------------------------------------------------------------

    def step(self, m: Measurement, dt_s: float, now_s: float,
             bleed_mask: np.ndarray | None, voltages_trusted: bool = True) -> Estimate:
        """Counts the charge since the last measurement (`dt_s` ago); runs the filter once
        `period_s` has gathered. `bleed_mask` is what bled since then (None: nothing);
        with `voltages_trusted` False (a sensor fault) the voltages correct nothing."""
        if self.filter is None:
            self._start(m, now_s)
            return self.estimate
        current_a = m.current_a
        self._charge_as += current_a * dt_s
        if current_a > 0.0:
            self._charge_in_as += current_a * dt_s
        if bleed_mask is not None:
            v = m.cell_voltage_v
            self._bleed_as += bleed_mask * (np.where(np.isfinite(v), v, 0.0)
                                            * (dt_s / self.bleed_resistor_ohm))
        self._elapsed_s += dt_s
        self._samples += 1
        # A bleed current through the sense wires shifts the readings of the bleeding cell
        # and its neighbours: only readings taken with no bleed (the balancer's measurement
        # windows) go to the voltage model, and the filter waits for one.
        clean = bleed_mask is None and voltages_trusted
        if self._elapsed_s >= self.cfg.period_s and (clean or self._elapsed_s >= MAX_WAIT_S):
            self._run_filter(m, now_s, clean)
        elif self.estimate.runtime_s is not None and not (
                current_a - self.filter.offset_a < -self.rest_current_a):
            self._discharge_ended()
        return self.estimate

    def _discharge_ended(self) -> None:
        """Between filter runs (up to MAX_WAIT_S apart while cells bleed) the discharge the
        runtime was of has ended: there is no runtime when not discharging, and the
        remaining energy is again the reference power's."""
        e = self.estimate
        self.estimate = dataclasses.replace(
            e, runtime_s=None,
            remaining_wh=e.runtime_reference_s * self.cfg.reference_power_w / 3600.0)

    def _learn_resistance(self, current_a: float, valid: np.ndarray) -> None:
        """Between two filter runs with a current step (or a ramp) between them, the model's
        resistive and RC voltages changed by d_dyn; a resistance off by a factor k leaves
        (k - 1) * d_dyn in this run's innovation against the last run's residual, whatever
        the SoC error (which moves slowly)."""
        f = self.filter
        now_dyn = f.dynamic_v
        # How far this run's correction moved each (valid) cell's prediction.
        moved_v = np.where(valid, f.innovation_v - f.residual_v, 0.0)
        previous, self._step_ref = self._step_ref, (current_a, now_dyn, f.residual_v, valid,
                                                    moved_v)
        if previous is None:
            return
        prev_a, prev_dyn, prev_residual, prev_valid, prev_moved_v = previous
        d_i = current_a - prev_a
        if abs(d_i) < STEP_MIN_C * self.nominal_ah:
            return
        d_dyn = f.prior_dynamic_v - prev_dyn
        d_dyn = np.where(d_dyn != 0.0, d_dyn, np.nan)
        excess = (f.innovation_v - prev_residual) / d_dyn
        ok = valid & prev_valid & (np.abs(excess) < RESISTANCE_EXCESS_MAX)
        # A scalar Kalman update per cell: the sample's variance is the readings' noise over
        # the step, the last correction's size (the residual is linearised: a correction of
        # hundreds of mV, as while SoC converges from a wrong start, leaves an error of that
        # order), and the RC model's own error.
        noise_v2 = 2.0 * self.cfg.voltage_noise_v ** 2 + np.square(prev_moved_v)
        sample_var = np.square(self.r_factor) * (
            noise_v2 / np.square(d_dyn) + RESISTANCE_STEP_ERROR ** 2)
        gain = np.where(ok, self._r_var / (self._r_var + sample_var), 0.0)
        self.r_factor = self.r_factor + gain * np.nan_to_num(self.r_factor * excess)
        self._r_var = self._r_var * (1.0 - gain)

    # --- start ------------------------------------------------------------------------

    def _start(self, m: Measurement, now_s: float) -> None:
        """From the stored SoC when there is one, else from the voltage (less the ohmic drop
        when a current flows). A stored SoC that the voltage, where the curve is steep,
        contradicts beyond three standard deviations of both is stale, and so is any after
        a long enough rest (`restore`): those cells start from the voltage."""
        t = self._cell_temperature_c(m)
        v = m.cell_voltage_v
        finite = self._plausible(v)
        # An unreadable cell starts like the others (or mid-table if none is readable); its
        # sensor fault is the protection's to raise.
        stand_in = float(v[finite].mean()) if finite.any() else float(
            np.interp(0.5, self.chem.ocv.soc, self.chem.ocv.mid_v))
        v = np.where(finite, v, stand_in)
        r = self.chem.ecm.lookup(np.full(self.n, 0.5), t) * self.r_scale
        i_a = m.current_a if math.isfinite(m.current_a) else 0.0
        ocv = self.chem.ocv
        by_voltage, slope = ocv.soc_on_branch(v - r[0] * i_a, np.zeros(self.n), t)
        # Unknown branch: half the hysteresis gap; unknown polarisation under a current.
        doubt_v = (np.interp(by_voltage, ocv.lookup_tables[0], ocv.lookup_tables[2])
                   + self.cfg.model_error_v + (r[1] + r[3]) * abs(i_a))
        voltage_sigma = np.clip(doubt_v / np.maximum(slope, 1e-3), 0.02, 0.3)
        if self.stored_soc is None:
            soc, sigma = by_voltage, voltage_sigma
        else:
            soc = np.broadcast_to(np.asarray(self.stored_soc, dtype=float), (self.n,)).copy()
            sigma = np.full(self.n, self.cfg.stored_soc_sigma)
            rested = (self.rested_s is not None and self.rested_s >= self.cfg.rest_settle_s
                      and abs(i_a) < self.rest_current_a)
            stale = (slope >= self.trusted_slope) & (
                rested | (np.abs(soc - by_voltage) > 3.0 * np.hypot(sigma, voltage_sigma)))
            soc = np.where(stale, by_voltage, soc)
            # Until the voltage shows it stale (here, or the filter's evidence later), a
            # stored SoC is as good as the count that made it: a model the cells have not
            # proved must not pull it (the filter raises the doubt on evidence). Where the
            # curve is steep, its doubt is as large as the voltage's disagreement with it, up
            # to the configured doubt: a stored SoC far off is pulled in at once, one the
            # voltage nearly agrees with only as far as that.
            steep_doubt = np.clip(np.abs(soc - by_voltage), STORED_SOC_SIGMA, sigma)
            sigma = np.where(stale, voltage_sigma,
                             np.where(slope >= self.trusted_slope, steep_doubt,
                                      np.minimum(sigma, STORED_SOC_SIGMA)))
        self.filter = SocFilter(self.chem, soc, sigma, self.noise)
        self._ecm(t, now_s)
        self.filter.ocv_v = self.chem.ocv.with_slope(soc, self.filter.by_state[HYST], t)[0]
        self._read_rest_soc(v, finite, i_a, t, r[0])
        self._publish(m, t)

    def _plausible(self, v: np.ndarray) -> np.ndarray:
        """Readings a working sensor can give (NaN is not one): the others say nothing of
        the cell, from the first such reading on, before the sensor fault has tripped."""
        lo, hi = self.v_plausible
        return (v >= lo) & (v <= hi)

    # --- every period -----------------------------------------------------------------

    def _cell_temperature_c(self, m: Measurement) -> np.ndarray:
        t = m.temperature_c
        if t.size == 0:  # a rig without temperature sensors
            return np.full(self.n, 25.0)
        if self._sensor_of_cell is None or self._sensor_count != t.size:
            # Sensors spread evenly along the string: cell i reads sensor i * M // N.
            self._sensor_count = t.size
            self._sensor_of_cell = np.minimum(np.arange(self.n) * t.size // self.n, t.size - 1)
        t_cell = t[self._sensor_of_cell]
        # A reading no working sensor gives (the protection's plausibility window) is left
        # out, as the protection leaves it out.
        lo, hi = TEMP_PLAUSIBLE_C
        return np.where((t_cell > lo) & (t_cell < hi), t_cell, 25.0)

    def _ecm(self, t: np.ndarray, now_s: float) -> np.ndarray:
        """The model's parameters for each cell now: (r0, r1, tau1, r2, tau2). The table is
        read every `ECM_REFRESH_S`: SoC and temperature move it by a percent or so in that
        time, and the lookup is a large share of a filter run."""
        if now_s >= self._ecm_due_s:
            self._ecm_table = self.chem.ecm.lookup(np.clip(self.filter.soc, 0.0, 1.0), t)
            self._ecm_due_s = now_s + ECM_REFRESH_S
        p = self._ecm_table.copy()
        scale = self.r_scale * self.r_factor
        for resistance_ohm in p[0], p[1], p[3]:  # rows in place: cheaper than p[[0, 1, 3]]
            resistance_ohm *= scale
        self._ecm_now = p
        return p

    def _run_filter(self, m: Measurement, now_s: float, clean: bool) -> None:
        f = self.filter
        t = self._cell_temperature_c(m)
        period_s = self._elapsed_s
        mean_a = self._charge_as / period_s
        p = self._ecm(t, now_s)
        cell_as = self._charge_as - self._bleed_as
        lost_as = (1.0 - self.efficiency) * self._charge_in_as  # not stored of the charge
        at_rest = abs(mean_a - f.offset_a) < self.rest_current_a
        # The RC pairs' rows as views: p[1::2] is (r1, r2), p[2::2] is (tau1, tau2).
        f.predict(cell_as, period_s, self.capacity_ah * 3600.0, p[1::2], p[2::2],
                  self._samples, at_rest, lost_as)
        self._since_anchor_as += cell_as - f.offset_a * period_s - lost_as
        if math.isfinite(self._charge_as):  # an unreadable current counts nothing
            self._total_in_as += self._charge_in_as
            self._total_out_as += self._charge_in_as - cell_as
        self._total_s += period_s
        self._efficiency_var = self._efficiency_var + (
            EFFICIENCY_DRIFT_PER_H ** 2 * period_s / 3600.0)
        if self._bleed_as.any():
            self._bled_soc = self._bled_soc + self._bleed_as / (self.capacity_ah * 3600.0)
        v = m.cell_voltage_v
        valid = self._plausible(v) & clean
        f.update(np.where(valid, v, 0.0), m.current_a, t, p[0], period_s, valid)
        self._r_var = self._r_var + RESISTANCE_AGEING_PER_H ** 2 * period_s / 3600.0
        if clean:
            self._learn_resistance(m.current_a, valid)
        open_contactors = not (m.contactors.negative or m.contactors.positive
                               or m.contactors.precharge)
        # A reading above the offset any sensor could have is a current, not an offset.
        if (self.cfg.learn_offset_when_open and open_contactors
                and abs(mean_a) < 0.05 * self.nominal_ah):
            f.observe_offset(mean_a, self._samples)
        i_a = m.current_a - f.offset_a
        self._events(v, valid, i_a, t, p[0], now_s)
        self._read_rest_soc(v, valid, i_a, t, p[0])
        self._charge_as = self._charge_in_as = 0.0
        self._bleed_as = np.zeros(self.n)
        self._elapsed_s = 0.0
        self._samples = 0
        self._publish(m, t)

    def _events(self, v: np.ndarray, valid: np.ndarray, i_a: float, t: np.ndarray,
                r0_ohm: np.ndarray, now_s: float) -> None:
        cfg = self.cfg
        # The reductions np.max and np.min call, without their Python wrappers.
        v_max = float(np.maximum.reduce(v, where=valid, initial=-np.inf))
        v_min = float(np.minimum.reduce(v, where=valid, initial=np.inf))
        at_rest = abs(i_a) < self.rest_current_a
        if at_rest:
            if self._rest_since_s is None:
                self._rest_since_s = now_s
            # Relaxed: the voltage sets SoC where the curve is steep, and keeps setting it
            # while the rest lasts (a cell losing charge to an internal short is followed).
            if (valid.any() and now_s - self._rest_since_s >= cfg.rest_settle_s
                    and now_s - self._rest_reset_s >= REST_RESET_EVERY_S):
                first = self._rest_reset_s < self._rest_since_s
                self._rest_reset_s = now_s
                self._voltage_anchor(v, valid, i_a, t, r0_ohm, None, new_epoch=first)
        else:
            self._rest_since_s = None
        if i_a < -self.rest_current_a:
            self._full_done = False
        if i_a > self.rest_current_a:
            self._empty_done = False
        # Full: at the charge voltage with the current tapered, the end of a CC-CV charge.
        # The table's 100 % is that charge's limit (the charge branch at the charge voltage);
        # the reset reads the SoC off the charge branch, the current's drop taken out, so a
        # charge ended at the taper current reads a hair below 100 %, as it is.
        if (not self._full_done and v_max >= self.charge_v - FULL_TOLERANCE_V
                and 0.0 <= i_a <= cfg.full_taper_c * self.nominal_ah):
            self._full_done = True
            self._voltage_anchor(v, valid, i_a, t, r0_ohm, 1.0)
        if (not self._empty_done and i_a < -self.rest_current_a
                and v_min <= self.undervoltage_v + cfg.empty_margin_v):
            self._empty_done = True
            self._voltage_anchor(v, valid, i_a, t, r0_ohm, -1.0)

    def _read_rest_soc(self, v: np.ndarray, valid: np.ndarray, i_a: float, t: np.ndarray,
                       r0_ohm: np.ndarray) -> None:
        """Each cell's SoC by its voltage alone - the model's resistive and RC drops taken
        out, on the cell's hysteresis branch - and how far that reading may be off: the
        model's error over the OCV slope there. The cells' spread is what is left of the
        highest less its doubt over the lowest plus its: where the OCV is flat a voltage
        says little, and the spread counts little. Without a valid reading all stand."""
        if not valid.any():
            return
        f, cfg = self.filter, self.cfg
        ir_v = r0_ohm * i_a
        rc_v = f.by_state[V1] + f.by_state[V2]
        soc, slope = self.chem.ocv.soc_on_branch(np.where(valid, v - ir_v - rc_v, 0.0),
                                                 f.by_state[HYST], t)
        doubt_v = math.hypot(cfg.voltage_noise_v, cfg.model_error_v) + self.noise.model_dynamic * (
            np.abs(ir_v) + np.abs(f.by_state[V1]) + np.abs(f.by_state[V2]))
        sigma = doubt_v / np.maximum(slope, 1e-6)
        self._rest_soc = np.where(valid, soc, np.nan)
        self._rest_soc_sigma = np.where(valid, sigma, np.inf)
        high = float(np.maximum.reduce(soc - sigma, where=valid, initial=-np.inf))
        low = float(np.minimum.reduce(soc + sigma, where=valid, initial=np.inf))
        self._soc_spread = max(high - low, 0.0)

    def _voltage_anchor(self, v: np.ndarray, valid: np.ndarray, i_a: float, t: np.ndarray,
                        r0_ohm: np.ndarray, branch: float | None,
                        new_epoch: bool = True) -> None:
        """Resets the cells whose SoC the voltage gives reliably, and learns capacity.
        `new_epoch`: a reset other than a repeat within one rest, which moves cells by
        their coulomb count's error (the internal-short check starts over)."""
        f = self.filter
        ocv_v = v - r0_ohm * i_a - f.by_state[V1] - f.by_state[V2]
        hyst = f.by_state[HYST] if branch is None else np.full(self.n, branch)
        soc, slope = self.chem.ocv.soc_on_branch(np.where(valid, ocv_v, 0.0), hyst, t)
        trusted = valid & (slope >= self.trusted_slope)
        sigma = math.hypot(self.cfg.voltage_noise_v, self.cfg.model_error_v) / np.maximum(
            slope, self.trusted_slope)
        f.recalibrate(trusted, soc, sigma, branch)
        if trusted.any() and new_epoch:
            self.reset_epoch += 1
        self._learn_efficiency(REST if branch is None else FULL if branch > 0 else EMPTY,
                               trusted, soc, sigma)
        moved = soc - self._anchor_soc
        learn = trusted & (np.abs(moved) >= ANCHOR_MIN_SOC)  # NaN anchor compares False
        if learn.any():
            sample_ah = self._since_anchor_as / np.where(learn, moved, 1.0) / 3600.0
            low, high = CAPACITY_PLAUSIBLE
            learn &= (sample_ah > low * self.nominal_ah) & (sample_ah < high * self.nominal_ah)
            weight = 0.8 * np.minimum(np.abs(moved), 1.0)
            self.capacity_ah = np.where(
                learn, self.capacity_ah + weight * (sample_ah - self.capacity_ah),
                self.capacity_ah)
        self._anchor_soc = np.where(trusted, soc, self._anchor_soc)
        self._since_anchor_as = np.where(trusted, 0.0, self._since_anchor_as)

    def _learn_efficiency(self, kind: int, cells: np.ndarray, soc: np.ndarray,
                          soc_sigma: np.ndarray) -> None:
        """Between two anchors of one kind, what a cell stored of the charge put in is the
        charge taken out plus the SoC gained: a sample of its coulombic efficiency. A scalar
        Kalman update weighs it by how far it may be off - both anchors' doubt, the
        capacity's error on the SoC gained, the current sensor's offset (`offset_sigma_a`)
        over the time between - over the charge put in; anchors of one kind share their
        systematic error, which cancels. `cells` anchored now, at `soc`; their count of this
        kind starts over."""
        in_as = self._total_in_as - self._kind_in_at_as[kind]
        since_s = self._total_s - self._kind_at_s[kind]
        capacity_as = self.capacity_ah * 3600.0
        gained = soc - self._kind_soc[kind]  # NaN: no earlier anchor of this kind
        sample = (self._total_out_as - self._kind_out_at_as[kind] + gained * capacity_as
                  ) / np.maximum(in_as, 1e-9)
        learn = (self.learn_efficiency & cells & (in_as >= EFFICIENCY_MIN_IN * capacity_as)
                 & (np.abs(sample - self.efficiency) < EFFICIENCY_OUTLIER))  # NaN: False
        if learn.any():
            anchor_as = np.hypot(soc_sigma, EFFICIENCY_ANCHOR_DOUBT) * capacity_as
            offset_as = self.cfg.offset_sigma_a * since_s
            error_as = np.sqrt(2.0 * np.square(anchor_as) + np.square(offset_as)
                               + np.square(self.noise.capacity_rel * gained * capacity_as))
            sample_var = np.square(error_as / np.maximum(in_as, 1e-9))
            gain = np.where(learn, self._efficiency_var / (self._efficiency_var + sample_var),
                            0.0)
            low = max(COULOMBIC_EFFICIENCY_MIN,
                      self.chem.coulombic_efficiency - EFFICIENCY_SPAN)
            self.efficiency = np.clip(
                self.efficiency + gain * np.nan_to_num(sample - self.efficiency), low, 1.0)
            self._efficiency_var = self._efficiency_var * (1.0 - gain)
            self._efficiency_mean = float(self.efficiency.mean())
        self._kind_soc[kind] = np.where(cells, soc, self._kind_soc[kind])
        self._kind_in_at_as[kind, cells] = self._total_in_as
        self._kind_out_at_as[kind, cells] = self._total_out_as[cells]
        self._kind_at_s[kind, cells] = self._total_s

    def cell_resistance_ohm(self) -> np.ndarray:
        """Each cell's resistance to a steady current (R0 + R1 + R2) at the last filter run,
        learnt factors included; zeros before the first. Worked out once per run (the
        firmware's limits and `_publish` both read it); not to be changed in place."""
        p = self._ecm_now
        if self._resistance_of is not p:
            self._resistance_ohm = p[0] + p[1] + p[3]
            self._resistance_of = p
        return self._resistance_ohm

    def pack_model(self) -> PackModel:
        """The pack as one cell of the model at the last filter run, learnt factors
        included; all zeros before the first."""
        p = self._ecm_now
        if self._pack_model_of is not p:
            f = self.filter
            slope_v = f.ocv_slope_v if f is not None else np.zeros(self.n)
            r0, r1, tau1, r2, tau2 = p.sum(axis=1)
            self._pack_model = PackModel(
                float(r0), float(r1), float(tau1) / self.n, float(r2), float(tau2) / self.n,
                float((slope_v / (self.capacity_ah * 3600.0)).sum()))
            self._pack_model_of = p
        return self._pack_model

    # --- what is published --------------------------------------------------------------

    def _publish(self, m: Measurement, t: np.ndarray) -> None:
        f = self.filter
        soc = np.clip(f.soc, 0.0, 1.0)
        cap = self.capacity_ah
        out_ah, in_ah = _room_ah(soc, cap)  # soc is clipped to 0..1 above
        pack_ocv_v = float(f.ocv_v.sum())
        stored_wh = float(self.energy.wh(soc, soc - out_ah / cap, cap, t).sum())
        pack_r_ohm = float(self.cell_resistance_ohm().sum())
        i_a = m.current_a - f.offset_a
        pack_v = float(m.cell_voltage_v.sum())
        if not math.isfinite(pack_v):  # an unreadable cell: the model's OCV stands in
            pack_v = pack_ocv_v
        present_w = -pack_v * i_a if i_a < -self.rest_current_a else None

        def usable_wh(power_w: float) -> float:
            """Stored energy less what the pack's resistance turns into heat at that power."""
            current_a = power_w / max(pack_ocv_v, 1e-9)
            return stored_wh * max(0.0, 1.0 - current_a * pack_r_ohm / max(pack_ocv_v, 1e-9))

        ref_w = self.cfg.reference_power_w
        remaining_wh = usable_wh(present_w if present_w is not None else ref_w)
        self.estimate = Estimate(
            soc=_soc_of_room(out_ah, in_ah),
            cell_soc=f.soc.copy(),
            cell_soc_sigma=f.soc_sigma,
            cell_capacity_ah=cap,
            cell_resistance_factor=self.r_factor,
            cell_bled_soc=self._bled_soc,
            reset_epoch=self.reset_epoch,
            soh_pct=float(cap.min() / self.nominal_ah * 100.0),
            resistance_pct=float(self.r_factor.sum()) / self.n * 100.0,
            current_offset_a=f.offset_a,
            remaining_wh=remaining_wh,
            runtime_s=None if present_w is None else remaining_wh * 3600.0 / present_w,
            runtime_reference_s=usable_wh(ref_w) * 3600.0 / ref_w,
            cell_rest_soc=self._rest_soc,
            cell_rest_soc_sigma=self._rest_soc_sigma,
            soc_spread=self._soc_spread,
            coulombic_efficiency=self._efficiency_mean,
            cell_coulombic_efficiency=self.efficiency,
        )
