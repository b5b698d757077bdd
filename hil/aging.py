"""Cell ageing in the plant: capacity fade and resistance growth driven by time, temperature,
SoC and charge throughput, with a seeded cell-to-cell spread.

Why and how: docs/internals.md, hil/aging.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bms.data.chemistry import AgingParams, arrhenius_factor

SECONDS_PER_YEAR = 365.25 * 86400.0
REFERENCE_C = 25.0  # the temperature AgingParams' rates are given at
# The laws hold to about 60 % of capacity; past that a cell is held at this share (a pack
# aged that far is a broken pack, not an old one).
MIN_CAPACITY_FRACTION = 0.2
# What `AgeSpec.cycles` are: full cycles (0 -> 100 -> 0 %) at this C-rate and REFERENCE_C.
PRE_AGE_C_RATE = 0.5
# As a run goes, the model advances this often (temperature and SoC sampled then)...
AGING_STEP_S = 60.0
# ...and the cells take the capacities and resistances it gives this often: a cell loses
# about 0.01 % of its capacity in an hour, far less than a firmware sees in an hour.
AGING_APPLY_S = 3600.0
# The ageing spread's random stream: a key of its own, so that every other draw from the
# pack's seed stays what it was.
AGING_SEED_KEY = 1000


@dataclass(frozen=True)
class AgeSpec:
    """What a pack has lived before the run starts: `years` stored at REFERENCE_C and
    `storage_soc`, and `cycles` full cycles at PRE_AGE_C_RATE and REFERENCE_C (the cycling's
    own calendar time is in `years`: give both for a pack that cycled over its years)."""

    years: float = 0.0
    cycles: float = 0.0
    storage_soc: float = 0.5  # fraction


class CellAging:
    """Each cell's ageing so far, as two stress integrals, and what it has done to the cell.

    Calendar fade is k * sqrt(t) at constant conditions; with k varying as the stress s(T, SoC)
    (1 at 25 °C, 50 % SoC), loss^2 grows as k_ref^2 * s^2 dt, so the loss is
    k_ref * sqrt(stress_years) with stress_years the integral of s^2 dt: exact for any history,
    and the same integral serves capacity and resistance. Cycle fade is linear in
    `stress_cycles`, full equivalent cycles (half the SoC moved) weighted by the cold and
    C-rate factors. Each cell's rates are the chemistry's times its own `rate_factor`
    (lognormal, median 1): the spread grows with age, as it does in real packs."""

    def __init__(self, params: AgingParams, shape: tuple[int, ...], rng: np.random.Generator):
        self.params = params
        self.rate_factor = np.exp(params.spread_rel * rng.standard_normal(shape))
        self.stress_years = np.zeros(shape)
        self.stress_cycles = np.zeros(shape)

    def calendar_stress(self, temperature_c: np.ndarray, soc: np.ndarray) -> np.ndarray:
        """The calendar rate against 25 °C and 50 % SoC: Arrhenius in temperature, linear in
        SoC between the low (0 %), 1 (50 %) and high (100 %) factors."""
        p = self.params
        soc_factor = np.interp(soc, (0.0, 0.5, 1.0), (p.low_soc_factor, 1.0, p.high_soc_factor))
        return arrhenius_factor(temperature_c, -p.activation_j_per_mol) * soc_factor

    def cycle_stress(self, temperature_c: np.ndarray, c_rate: np.ndarray) -> np.ndarray:
        """The cycle rate against 25 °C and 1C or less: faster in the cold and above 1C."""
        p = self.params
        cold = arrhenius_factor(np.minimum(temperature_c, REFERENCE_C),
                                p.cold_activation_j_per_mol)
        return cold * (1.0 + p.c_rate_factor_per_c * np.maximum(np.abs(c_rate) - 1.0, 0.0))

    def pre_age(self, age: AgeSpec) -> None:
        """Lives `age` at once (see AgeSpec)."""
        stress = self.calendar_stress(np.array(REFERENCE_C), np.array(age.storage_soc))
        self.stress_years += stress * stress * age.years
        self.stress_cycles += age.cycles * self.cycle_stress(np.array(REFERENCE_C),
                                                             np.array(PRE_AGE_C_RATE))

    def advance(self, elapsed_s: float, temperature_c: np.ndarray, soc: np.ndarray,
                moved_soc: np.ndarray, c_rate: np.ndarray) -> None:
        """`elapsed_s` at these temperatures and SoC, in which each cell's SoC moved by
        `moved_soc` in all (charge and discharge added) at `c_rate` on average."""
        stress = self.calendar_stress(temperature_c, np.clip(soc, 0.0, 1.0))
        self.stress_years += stress * stress * (elapsed_s / SECONDS_PER_YEAR)
        self.stress_cycles += 0.5 * moved_soc * self.cycle_stress(temperature_c, c_rate)

    def _lost_pct(self, calendar_pct: float, cycle_pct_per_kcycle: float) -> np.ndarray:
        return self.rate_factor * (calendar_pct * np.sqrt(self.stress_years)
                                   + cycle_pct_per_kcycle * self.stress_cycles / 1000.0)

    @property
    def capacity_fraction(self) -> np.ndarray:
        """Each cell's capacity against its capacity new."""
        p = self.params
        lost = self._lost_pct(p.calendar_capacity_pct_per_sqrt_year,
                              p.cycle_capacity_pct_per_kcycle)
        return np.maximum(1.0 - lost / 100.0, MIN_CAPACITY_FRACTION)

    @property
    def resistance_factor(self) -> np.ndarray:
        """Each cell's resistance against its resistance new."""
        p = self.params
        return 1.0 + self._lost_pct(p.calendar_resistance_pct_per_sqrt_year,
                                    p.cycle_resistance_pct_per_kcycle) / 100.0


class PackAging:
    """The ageing of a pack's cells as a run goes, at a cost the tick does not see: each slow
    step sums the SoC each cell moved (a few array operations), each AGING_STEP_S advances
    the model, each AGING_APPLY_S hands the cells their new capacities and resistances. A run
    shorter than AGING_APPLY_S is therefore the same, bit for bit, as one that does not age.
    """

    def __init__(self, params: AgingParams, age: AgeSpec, seed: int, soc: np.ndarray,
                 new_capacity_ah: np.ndarray, new_r_factor: np.ndarray, slow_interval_s: float):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(AGING_SEED_KEY,)))
        self.model = CellAging(params, soc.shape, rng)
        self.model.pre_age(age)
        self.age = age
        self.slow_interval_s = slow_interval_s
        self.step_every = max(1, round(AGING_STEP_S / slow_interval_s))  # slow steps
        self.apply_every = max(1, round(AGING_APPLY_S / AGING_STEP_S))  # ageing steps
        self.slow_steps = 0
        self.aging_steps = 0
        self.lived_s = 0.0  # of this run
        self._last_soc = np.array(soc, dtype=float)
        self._moved_soc = np.zeros(soc.shape)
        self._moved_sq_soc = np.zeros(soc.shape)  # per slow step, squared: gives the C-rate
        self._fraction = self.model.capacity_fraction  # as last handed to the cells
        self._growth = self.model.resistance_factor
        self.capacity_ah = new_capacity_ah * self._fraction
        self.r_factor = new_r_factor * self._growth

    def slow_step(self, cells, temperature_c: np.ndarray) -> None:
        """After the cells' slow step. `cells` take the new health through `set_health` (a
        cell model without it - `hil.foreign_cells` - keeps its start-of-run health)."""
        soc = cells.soc
        moved = soc - self._last_soc
        self._last_soc = soc
        self._moved_sq_soc += moved * moved
        self._moved_soc += np.abs(moved)
        self.slow_steps += 1
        if self.slow_steps % self.step_every:
            return
        # Each slow step's SoC moved is its C-rate times the interval: weighted by what it
        # moved, their mean C-rate is the sum of squares over the sum.
        interval_h = self.slow_interval_s / 3600.0
        c_rate = self._moved_sq_soc / np.maximum(self._moved_soc, 1e-12) / interval_h
        elapsed_s = self.step_every * self.slow_interval_s
        self.model.advance(elapsed_s, temperature_c, soc, self._moved_soc, c_rate)
        self.lived_s += elapsed_s
        self._moved_soc[:] = 0.0
        self._moved_sq_soc[:] = 0.0
        self.aging_steps += 1
        if self.aging_steps % self.apply_every == 0 and hasattr(cells, "set_health"):
            # By the fade since the last hand-over, from the cells' capacity as it is: a
            # capacity set on the cells from outside (a test's weak cell) fades on from there.
            fraction, growth = self.model.capacity_fraction, self.model.resistance_factor
            self.capacity_ah = cells.capacity_as / 3600.0 * (fraction / self._fraction)
            self.r_factor = self.r_factor * (growth / self._growth)
            self._fraction, self._growth = fraction, growth
            cells.set_health(self.capacity_ah, self.r_factor, temperature_c)

    def summary(self) -> dict:
        """The cells' true health now, and the life they started the run with, as plain data
        (a run's summary)."""
        cap, r = self.capacity_ah, self.r_factor
        return {
            "capacity_ah": [round(float(cap.min()), 4), round(float(cap.max()), 4)],
            "resistance_pct": [round(float(r.min()) * 100.0, 2),
                               round(float(r.max()) * 100.0, 2)],
            "started_aged": {"years": self.age.years, "cycles": self.age.cycles,
                             "storage_soc_pct": self.age.storage_soc * 100.0},
        }
