"""Electrical model of the cells: 2-RC equivalent circuit plus one-state hysteresis.

Why and how: docs/internals.md, hil/cells.py.
"""

from __future__ import annotations

import numpy as np

from bms.data.chemistry import BELOW_EMPTY_SOC, Chemistry, OcvCurve

OCV_SLOPE_STEP = 2e-3  # SoC step of the secant that linearises the OCV between slow steps
# ECM parameters are re-read every this many slow steps: resistance moves by about 1 %
# per % of SoC and 3 % per kelvin, and neither moves that far in ten seconds.
ECM_REFRESH_SLOW_STEPS = 10


class SeriesParallel:
    """The network every cell model steps through: each cell a source voltage behind its
    one-tick step resistance, cells in parallel within a group, groups in series. A model
    sets `parallel`, `r_step_ohm`, `g_step_s`, `group_r_ohm`, `pack_r_ohm` and
    `coulombic_efficiency`, and keeps `soc_at_slow`, `soc_per_as`, `current_sum_a`,
    `current_sq_sum`, `ticks_since_slow`."""

    @property
    def soc(self) -> np.ndarray:
        """Each cell's state of charge, fraction (what it holds over its capacity; below 0
        toward 0 V): as at the last slow step, plus what it stored since."""
        return self.soc_at_slow + self.soc_per_as * self.current_sum_a

    @soc.setter
    def soc(self, value: np.ndarray) -> None:
        self.soc_at_slow = np.array(value, dtype=float)
        self.current_sum_a = 0.0

    def _short_soc(self) -> np.ndarray:
        """The SoC whose OCV drives an injected internal short."""
        return self.soc

    def _leak(self, ocv: OcvCurve, temperature_c: np.ndarray, elapsed_s: float,
              heat_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Self-discharge and any injected internal short over `elapsed_s`: SoC falls, and
        the hysteresis state moves (a leak is a discharge like any other). Returns the SoC
        moved since the last slow step, and `heat_w` with the short's heat added."""
        soc = self.soc
        if self.short_conductance_s.any():
            ocv_now = ocv.voltage_v(self._short_soc(), self.hysteresis, temperature_c)
            short_a = self.short_conductance_s * np.maximum(ocv_now, 0.0)
            heat_w = heat_w + short_a * ocv_now
            soc -= short_a * elapsed_s / self.capacity_as
        soc -= self.self_discharge_per_s * elapsed_s
        soc = np.maximum(soc, -BELOW_EMPTY_SOC)
        d_soc = soc - self.soc_at_slow
        direction = np.sign(d_soc)
        self.hysteresis = direction + (self.hysteresis - direction) * np.exp(
            -ocv.hysteresis_rate * np.abs(d_soc)
        )
        self.soc = soc
        return d_soc, heat_w

    def _thevenin(self, e_v: np.ndarray) -> tuple[float, float]:
        """With each cell's source voltage for the coming tick: the pack's EMF (V) and
        resistance (ohm) at the terminals, which the charger and the precharge need."""
        self._e_v = e_v
        if self.parallel == 1:
            return float(e_v.sum()), self.pack_r_ohm
        self._group_norton_a = (e_v * self.g_step_s).sum(axis=1)
        return float((self._group_norton_a * self.group_r_ohm).sum()), self.pack_r_ohm

    def _flow(self, group_current_a: np.ndarray | float) -> tuple[np.ndarray | float,
                                                                  np.ndarray]:
        """Each cell's current for the groups' currents (a number when all groups carry the
        same), and the groups' terminal voltages; counts the charge each cell stores."""
        if self.parallel == 1:
            i = group_current_a if np.isscalar(group_current_a) else group_current_a[:, None]
            v = self._e_v + self.r_step_ohm * i
        else:
            v = ((group_current_a + self._group_norton_a) * self.group_r_ohm)[:, None]
            i = (v - self._e_v) * self.g_step_s
        self.current_a = i
        self.current_sq_sum += i * i
        self.ticks_since_slow += 1
        # The efficiency is at most 1: the smaller of i and i * efficiency is what is stored,
        # for a charge (i > 0) and a discharge alike, in two array operations (a float: the
        # one current of every cell, numpy's float included).
        eff = self.coulombic_efficiency
        self.current_sum_a += min(i, i * eff) if isinstance(i, float) else np.minimum(i, i * eff)
        return i, v[:, 0]


class CellArray(SeriesParallel):
    """The cells' electrochemical state and its time step (no thermal, no sensors)."""

    def __init__(
        self,
        chemistry: Chemistry,
        soc: np.ndarray,
        capacity_ah: np.ndarray,
        r_factor: np.ndarray,
        self_discharge_per_s: np.ndarray,
        dt_s: float,
        temperature_c: np.ndarray,
    ):
        self.chem = chemistry
        self.dt_s = dt_s
        self.parallel = soc.shape[1]
        self.soc_at_slow = np.array(soc, dtype=float)
        # Sum over the ticks since the last slow step of the current each cell stores (all of
        # a discharge, coulombic_efficiency of a charge), A; a number while every cell
        # carries the same current.
        self.current_sum_a: np.ndarray | float = 0.0
        self.coulombic_efficiency = chemistry.coulombic_efficiency
        self.hysteresis = np.zeros_like(self.soc_at_slow)
        self.v_rc = np.zeros((2, *self.soc_at_slow.shape))  # the two RC voltages, V
        self.current_a: np.ndarray | float = 0.0
        self.current_sq_sum: np.ndarray | float = 0.0  # sum of i^2 over ticks since slow step
        self.ticks_since_slow = 0
        self.capacity_as = capacity_ah * 3600.0
        self.r_factor = r_factor
        self.soc_per_as = dt_s / self.capacity_as  # SoC change per ampere over one tick
        self.self_discharge_per_s = self_discharge_per_s
        # Conductance of an injected internal short across each cell (0 = none).
        self.short_conductance_s = np.zeros_like(self.soc_at_slow)
        self.slow_steps = 0
        self.slow_step(temperature_c, 0.0)
        self._e_v = self.ocv_v()

    def slow_step(self, temperature_c: np.ndarray, elapsed_s: float) -> np.ndarray:
        """Hysteresis, leakage, parameters and OCV linearisation, `elapsed_s` after the last
        slow step. Returns the mean heat released in each cell over that interval, W."""
        ocv = self.chem.ocv
        d_soc, heat_w = self._leak(ocv, temperature_c, elapsed_s, self._interval_heat_w())
        self.slow_steps += 1
        if self.slow_steps % ECM_REFRESH_SLOW_STEPS == 1:
            self._refresh_ecm(temperature_c)

        step = OCV_SLOPE_STEP * np.where(d_soc < 0, -1.0, 1.0)
        # The SoC property worked out once; np.array stacks at a quarter of np.stack's cost.
        soc = self.soc
        here_v, ahead_v = ocv.voltage_v(np.array((soc, soc + step)), self.hysteresis,
                                        temperature_c)
        self.ocv_at_slow_v = here_v
        self.ocv_per_a = (ahead_v - here_v) / step * self.soc_per_as
        return heat_w

    def _refresh_ecm(self, temperature_c: np.ndarray) -> None:
        params = self.chem.ecm.lookup(self.soc, temperature_c)  # r0, r1, tau1, r2, tau2
        self.r0_ohm = params[0] * self.r_factor
        self.r_rc_ohm = params[[1, 3]] * self.r_factor
        self.a_rc = np.exp(-self.dt_s / params[[2, 4]])
        self.b_rc = self.r_rc_ohm * (1.0 - self.a_rc)
        self.r_step_ohm = self.r0_ohm + self.b_rc[0] + self.b_rc[1]
        self.g_step_s = 1.0 / self.r_step_ohm
        self.group_r_ohm = 1.0 / self.g_step_s.sum(axis=1)
        self.pack_r_ohm = float(self.group_r_ohm.sum())

    def set_health(self, capacity_ah: np.ndarray, r_factor: np.ndarray,
                   temperature_c: np.ndarray) -> None:
        """New capacities and resistance factors (the plant's ageing, `hil.aging`) from now
        on. SoC, a fraction, stays: the charge held shrinks with the capacity, and the OCV
        goes on from where it is; the resistances are read again at once."""
        self.ocv_at_slow_v = self.ocv_v()
        self.soc = self.soc  # the charge counted since the slow step, at the old capacity
        capacity_as = capacity_ah * 3600.0
        self.ocv_per_a = self.ocv_per_a * (self.capacity_as / capacity_as)
        self.capacity_as = capacity_as
        self.soc_per_as = self.dt_s / capacity_as
        self.r_factor = r_factor
        self._refresh_ecm(temperature_c)

    def _interval_heat_w(self) -> np.ndarray:
        if self.ticks_since_slow == 0:
            return np.zeros_like(self.soc)
        mean_sq_a2 = self.current_sq_sum / self.ticks_since_slow
        self.current_sq_sum = 0.0
        self.ticks_since_slow = 0
        r1_v, r2_v = self.v_rc
        return self.r0_ohm * mean_sq_a2 + r1_v * r1_v / self.r_rc_ohm[0] + r2_v * r2_v / (
            self.r_rc_ohm[1]
        )

    def ocv_v(self) -> np.ndarray:
        return self.ocv_at_slow_v + self.ocv_per_a * self.current_sum_a

    def prepare(self) -> tuple[float, float]:
        """Computes each cell's source voltage for the coming tick.

        Returns the pack's Thevenin equivalent (EMF in V, resistance in ohm) seen at the
        terminals for this tick, which the charger and the precharge circuit need.
        """
        self.v_rc *= self.a_rc  # the RC voltages' free decay over the tick
        e = self.ocv_v()
        e += self.v_rc[0]
        e += self.v_rc[1]
        return self._thevenin(e)

    def advance(self, group_current_a: np.ndarray | float) -> np.ndarray:
        """Steps the cells with each series group's current (a number when all groups carry
        the same); returns the groups' terminal voltages."""
        i, v = self._flow(group_current_a)
        self.v_rc += self.b_rc * i
        return v
