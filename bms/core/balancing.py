"""Passive (bleed-resistor) cell balancing: `Balancer.step(...)` returns, once per firmware
step, the mask of the cells whose bleed resistor should be on. Pure, no clock, no I/O.

Why and how: docs/internals.md, bms/core/balancing.py.
"""

from __future__ import annotations

import numpy as np

from bms.data.config import BalancingConfig, BalancingMode, BalancingWhen
from bms.data.validation import Problems

# SoC per millivolt used to convert start_mv / stop_mv in soc mode: 0.5 % SoC per 10 mV
# on the sloping part of a layered-oxide / hard-carbon OCV (shared/sodium-ion.md; the
# na-nfm table gives ~18 mV per % above 35 % SoC). BalancingConfig has no SoC thresholds.
SOC_PER_MV = 0.0005
# Tolerance on the measurement cadence, so that a time summed from ticks (9.999999 s)
# still counts as the 10 s it stands for.
TIME_EPS_S = 1e-6


def sense_wire_shift_v(bleed_a: np.ndarray, wire_ohm: float) -> np.ndarray:
    """How far each cell's reading moves while cells bleed: a cell and its two neighbours
    share sense wires, so a bleed current's drop in them lowers the bleeding cell's reading
    by two drops and raises each neighbour's by one. (The plant applies it; the firmware
    takes it off again.)"""
    drop_v = bleed_a * wire_ohm
    shift_v = -2.0 * drop_v
    shift_v[1:] += drop_v[:-1]
    shift_v[:-1] += drop_v[1:]
    return shift_v


def _frozen(mask: np.ndarray) -> np.ndarray:
    mask.flags.writeable = False
    return mask


class Balancer:
    """Passive balancing decisions; see the module docstring for the rules."""

    def __init__(self, cfg: BalancingConfig, n_series: int):
        self.check(cfg, n_series)
        self.n_series = n_series
        self._tune(cfg)

        self._off = _frozen(np.zeros(n_series, dtype=bool))
        self._decision = self._off  # the mask decided at the last clean reading
        self._last = self._off  # the mask returned at the last step
        self._latched = np.zeros(n_series, dtype=bool)
        self._last_off_s: float | None = None  # last step that returned all False

        # Public, read-only for callers.
        self.measuring = False  # this step returned the all-False measurement mask
        self.clean_reading = False  # the reading given to this step was taken without bleed
        self.held_voltage_v: np.ndarray | None = None  # last clean voltages
        self.held_soc: np.ndarray | None = None  # SoC given with them (None: voltage rule)
        self.held_at_s: float | None = None  # when they were read

    @staticmethod
    def check(cfg: BalancingConfig, n_series: int) -> None:
        """Raises InputError naming every field a balancer cannot work with."""
        problems = Problems("balancing configuration")
        if cfg.mode not in list(BalancingMode):
            problems.add("balancing.mode", cfg.mode,
                         f"must be one of {', '.join(BalancingMode)}")
        if cfg.when not in list(BalancingWhen):
            problems.add("balancing.when", cfg.when,
                         f"must be one of {', '.join(BalancingWhen)}")
        problems.check_range("balancing.stop_mv", cfg.stop_mv, 0.0, None)
        problems.check_range("balancing.start_mv", cfg.start_mv, cfg.stop_mv, None)
        problems.check_range("balancing.max_cells", cfg.max_cells, 0, None)
        if not cfg.measure_every_s > 0.0:
            problems.add("balancing.measure_every_s", cfg.measure_every_s, "must be > 0")
        if n_series < 1:
            problems.add("n_series", n_series, "must be >= 1")
        problems.raise_if_any()

    def _tune(self, cfg: BalancingConfig) -> None:
        self.cfg = cfg
        self.start_v = cfg.start_mv * 1e-3
        self.stop_v = cfg.stop_mv * 1e-3
        self.start_soc = cfg.start_mv * SOC_PER_MV
        self.stop_soc = cfg.stop_mv * SOC_PER_MV
        self.max_cells = min(int(cfg.max_cells), self.n_series)

    def retune(self, cfg: BalancingConfig) -> None:
        """A new configuration at run time. The latches and the held clean reading carry
        over, and the decision is made again on that reading at once: a cell now within a
        raised stop_mv, or beyond a lowered max_cells, stops with the next step rather than
        at the next measurement window."""
        self.check(cfg, self.n_series)
        self._tune(cfg)
        if self.held_voltage_v is not None:
            self._decide(self.held_voltage_v, self.held_soc, self.held_at_s)

    @property
    def basis(self) -> str:
        """What the last decision compared: "soc" or "voltage"."""
        return "soc" if self.cfg.mode == "soc" and self.held_soc is not None else "voltage"

    def step(
        self,
        cell_voltage_v: np.ndarray,
        cell_soc: np.ndarray | None,
        temperature_max_c: float,
        current_a: float,
        rest_current_a: float,
        allowed: bool,
        now_s: float,
    ) -> np.ndarray:
        """The bleed mask for this step (read-only; the same object while unchanged)."""
        self.measuring = False
        self.clean_reading = clean = self._last is self._off
        if self._last_off_s is None:
            self._last_off_s = now_s
        cfg = self.cfg
        if cfg.mode == "off":
            return self._emit(self._off, now_s)
        if cfg.when == "rest":
            current_ok = abs(current_a) < rest_current_a
        elif cfg.when == "charge":
            current_ok = current_a > rest_current_a
        else:
            current_ok = True
        # Written so that a NaN temperature closes the gate.
        gate_open = allowed and temperature_max_c <= cfg.max_temp_c and current_ok
        # While the gate is closed every reading is clean; deciding on each would cost a
        # sort per tick for nothing, so the latch then follows one reading per period.
        if clean and (gate_open or self.held_at_s is None
                      or now_s - self.held_at_s >= cfg.measure_every_s - TIME_EPS_S):
            self._decide(cell_voltage_v, cell_soc, now_s)
        out = self._decision if gate_open else self._off
        if out is not self._off and now_s - self._last_off_s >= cfg.measure_every_s - TIME_EPS_S:
            out = self._off
            self.measuring = True
        return self._emit(out, now_s)

    def _emit(self, out: np.ndarray, now_s: float) -> np.ndarray:
        if out is self._off:
            self._last_off_s = now_s
        self._last = out
        return out

    def _decide(self, cell_voltage_v: np.ndarray, cell_soc: np.ndarray | None,
                now_s: float) -> None:
        """New held values from a clean reading, the hysteresis latch, and the mask."""
        v = np.array(cell_voltage_v, dtype=float)
        self.held_voltage_v = v
        self.held_soc = None if cell_soc is None else np.array(cell_soc, dtype=float)
        self.held_at_s = now_s
        if self.held_soc is not None and self.cfg.mode == "soc":
            x, start, stop = self.held_soc, self.start_soc, self.stop_soc
        else:
            x, start, stop = v, self.start_v, self.stop_v
        excess = x - x.min()  # NaN anywhere: every comparison below is False
        latched = (excess > start) | (self._latched & (excess > stop))
        self._latched = latched
        want = latched & (v >= self.cfg.min_cell_v)
        n_want = int(np.count_nonzero(want))
        if n_want > self.max_cells:
            # The max_cells largest excesses among the wanted cells; the rest are -inf.
            ranked = np.where(want, excess, -np.inf)
            keep = self.n_series - self.max_cells
            want = np.zeros(self.n_series, dtype=bool)
            if self.max_cells:
                want[np.argpartition(ranked, keep)[keep:]] = True
        if np.array_equal(want, self._decision):
            return
        self._decision = _frozen(want) if want.any() else self._off
