"""The simulated sodium-ion pack: cells, thermal model, sensors and power path together.

One `tick` is: the firmware reads `measure()`, its actuation goes to `actuate()`, and
`advance()` moves the plant one step with the load's demand. True values stay available
(`true_*`) for tests, plots and accuracy figures; the firmware sees only `measure()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bms.core.estimator import pack_soc
from bms.core.signals import Actuation, Measurement
from bms.data.chemistry import Chemistry
from hil.aging import AgeSpec, PackAging
from hil.cells import CellArray
from hil.loads import Demand, pack_current_a
from hil.power_path import PowerPath, PowerPathSpec
from hil.sensors import Sensors, SensorSpec
from hil.thermal import ThermalModel

# How often the slow parts move: ECM parameters follow SoC and temperature, the thermal
# model advances with the heat gathered since, and the temperature sensors are sampled
# (real AFEs multiplex their thermistors at about this rate).
SLOW_PERIOD_S = 1.0
SECONDS_PER_MONTH = 30 * 86400.0


@dataclass(frozen=True)
class SpreadSpec:
    """Cell-to-cell manufacturing spread, drawn once from the seed."""

    capacity_rel: float = 0.01  # standard deviation, relative
    r0_rel: float = 0.03
    self_discharge_rel: float = 0.2  # lognormal sigma
    initial_soc: float = 0.01  # standard deviation, absolute fraction
    temperature_c: float = 0.5  # initial temperature, standard deviation


@dataclass(frozen=True)
class PackSpec:
    n_series: int = 16
    n_parallel: int = 1
    capacity_ah: float | None = None  # per cell; None = the chemistry's
    ambient_c: float = 25.0
    initial_soc: float = 0.9
    seed: int = 0
    spread: SpreadSpec = field(default_factory=SpreadSpec)
    sensors: SensorSpec = field(default_factory=SensorSpec)
    power_path: PowerPathSpec | None = None  # None: sized for the pack (PowerPathSpec.for_pack)
    balance_resistor_ohm: float = 33.0
    balance_heat_to_cell: float = 0.5  # share of bleed heat that reaches the cell
    age: AgeSpec = field(default_factory=AgeSpec)  # what the cells lived before the run


class SimulatedPack:
    def __init__(self, chemistry: Chemistry, spec: PackSpec, dt_s: float,
                 cell_model: Callable[..., Any] = CellArray):
        """`cell_model` builds the cells from CellArray's arguments and gives its interface
        (prepare, advance, slow_step, soc, capacity_as, ...): CellArray, or a cell model the
        estimator does not share (`hil.foreign_cells`)."""
        cell_ah = spec.capacity_ah or chemistry.capacity_ah
        self.chem = chemistry.with_capacity(cell_ah)
        self.spec = spec
        self.dt_s = dt_s
        self.n_series = spec.n_series
        self.capacity_ah = cell_ah * spec.n_parallel  # nominal, per series group
        self.energy_wh = self.capacity_ah * self.chem.nominal_v * spec.n_series
        self.charge_voltage_v = self.chem.thresholds.charge_v * spec.n_series
        shape = (spec.n_series, spec.n_parallel)
        seeds = np.random.SeedSequence(spec.seed).spawn(7)  # the first six as ever
        spread_rng = np.random.default_rng(seeds[0])
        sp = spec.spread
        soc = np.clip(spec.initial_soc + sp.initial_soc * spread_rng.standard_normal(shape), 0, 1)
        capacity = cell_ah * (1.0 + sp.capacity_rel * spread_rng.standard_normal(shape))
        r_factor = 1.0 + sp.r0_rel * spread_rng.standard_normal(shape)
        sd_per_s = (self.chem.self_discharge_pct_per_month / 100.0 / SECONDS_PER_MONTH) * np.exp(
            sp.self_discharge_rel * spread_rng.standard_normal(shape)
        )
        temp_c = spec.ambient_c + sp.temperature_c * spread_rng.standard_normal(shape)
        self.slow_every = max(1, round(SLOW_PERIOD_S / dt_s))
        self.thermal = ThermalModel(self.chem.thermal, temp_c, spec.ambient_c,
                                    self.slow_every * dt_s)
        self.aging = PackAging(self.chem.aging, spec.age, spec.seed, soc, capacity, r_factor,
                               self.thermal.dt_s)
        self.cells = cell_model(self.chem, soc, self.aging.capacity_ah, self.aging.r_factor,
                                sd_per_s, dt_s, self.thermal.temperature_c)
        self.sensors = Sensors(spec.sensors, spec.n_series, self.capacity_ah,
                               [np.random.default_rng(s) for s in seeds[1:]])
        self.power_path = PowerPath(spec.power_path or PowerPathSpec.for_pack(
            self.chem.nominal_v * spec.n_series, self.capacity_ah))
        self.ticks = 0
        self.bleed_heat_sum_w = np.zeros(spec.n_series)  # summed over ticks since slow step
        self.current_a = 0.0
        self.bleed_a = np.zeros(spec.n_series)
        self.balancing = np.zeros(spec.n_series, dtype=bool)
        self.charge_limit_a = 0.0
        self.discharge_limit_a = 0.0
        # The firmware's CVL and DVL, which the charger and the load keep to like an
        # inverter does (None: not published, or a load that disregards them).
        self.voltage_limits_v: tuple[float | None, float | None] = (None, None)
        self.cells.prepare()
        self.group_v = self.cells.advance(0.0)
        self.pack_voltage_v = float(self.group_v.sum())
        self.balancing_on = False
        self.wire_test_due = False  # the firmware asked for the AFE's open-wire test
        self.temperature_reading_c = self.sensors.read_temperatures(self.true_group_temperature_c)

    # --- what the firmware sees -------------------------------------------------------

    def measure(self) -> Measurement:
        """The readings that close the tick just gone, with the open-wire test the last
        actuation asked for (taken once: a second measure without an actuation has none)."""
        bleed = self.bleed_a if self.balancing_on else None
        cell_v = self.sensors.read_voltages(self.group_v, bleed, self.dt_s)
        wire_test_v = None
        if self.wire_test_due:
            self.wire_test_due = False
            wire_test_v = self.sensors.read_wire_test(self.group_v, bleed)
        m = Measurement(
            cell_voltage_v=cell_v,
            temperature_c=self.temperature_reading_c,
            current_a=self.sensors.read_current(self.current_a),
            bus_voltage_v=self.power_path.bus_v,
            contactors=self.power_path.actual,
            pack_voltage_v=self.sensors.read_pack_voltage(self.pack_voltage_v),
            open_wire_test_v=wire_test_v,
        )
        lost = self.sensors.lost_readings
        return replace(m, **dict.fromkeys(lost, math.nan)) if lost else m

    def actuate(self, act: Actuation) -> None:
        self.power_path.command(act.contactors)
        self.wire_test_due = act.open_wire_test  # run during the coming tick
        if act.balance_mask is not self.balancing:
            self.balancing = act.balance_mask
            self.balancing_on = bool(self.balancing.any())
            if not self.balancing_on:
                self.bleed_a = np.zeros(self.n_series)
        self.charge_limit_a = act.charge_limit_a
        self.discharge_limit_a = act.discharge_limit_a
        self.voltage_limits_v = (act.charge_voltage_limit_v, act.discharge_voltage_limit_v)

    def advance(self, demand: Demand) -> None:
        """One step of the plant under the load's demand and the last actuation."""
        if self.ticks % self.slow_every == 0:
            self._slow_step()
        self.ticks += 1
        emf_v, r_ohm = self.cells.prepare()
        if demand.voltage_limit_v is not None:  # an inverter: its setpoint, its voltage
            limit_v = demand.voltage_limit_v
            load_a = pack_current_a(demand, self.pack_voltage_v, emf_v, r_ohm, limit_v,
                                    max(demand.value, 0.0), max(-demand.value, 0.0), limit_v)
        else:
            cvl_v, dvl_v = self.voltage_limits_v
            charge_v = (self.charge_voltage_v if cvl_v is None
                        else min(self.charge_voltage_v, cvl_v))
            load_a = pack_current_a(demand, self.pack_voltage_v, emf_v, r_ohm, charge_v,
                                    self.charge_limit_a, self.discharge_limit_a, dvl_v)
        self.current_a = self.power_path.step(self.dt_s, emf_v, r_ohm, load_a)
        if self.balancing_on:
            self.bleed_a = self.balancing * (self.group_v / self.spec.balance_resistor_ohm)
            self.group_v = self.cells.advance(self.current_a - self.bleed_a)
            self.pack_voltage_v = float(self.group_v.sum())
            self.bleed_heat_sum_w += self.bleed_a * self.bleed_a * self.spec.balance_resistor_ohm
        else:
            self.group_v = self.cells.advance(self.current_a)
            self.pack_voltage_v = emf_v + r_ohm * self.current_a

    def _slow_step(self) -> None:
        """The slow parts: cell hysteresis, leakage and parameters, a thermal step with the
        heat released since the last slow step, the cells' ageing (`hil.aging.PackAging`),
        and a new temperature sample."""
        if not self.ticks:
            return
        heat_w = self.cells.slow_step(self.thermal.temperature_c, self.thermal.dt_s)
        share = self.spec.balance_heat_to_cell / self.spec.n_parallel / self.slow_every
        heat_w += (share * self.bleed_heat_sum_w)[:, None]
        self.bleed_heat_sum_w[:] = 0.0
        self.thermal.advance(heat_w)
        self.aging.slow_step(self.cells, self.thermal.temperature_c)
        self.temperature_reading_c = self.sensors.read_temperatures(self.true_group_temperature_c)

    # --- the truth, for tests and plots -----------------------------------------------

    @property
    def true_group_temperature_c(self) -> np.ndarray:
        t = self.thermal.temperature_c  # (series, parallel)
        return np.add.reduce(t, axis=1) / t.shape[1]  # what t.mean(axis=1) gives, unwrapped

    @property
    def true_soc(self) -> np.ndarray:
        """Each series group's SoC: charge held over capacity, summed over its parallel cells."""
        c = self.cells
        return (c.soc * c.capacity_as).sum(axis=1) / c.capacity_as.sum(axis=1)

    @property
    def true_capacity_ah(self) -> np.ndarray:
        """Each series group's capacity."""
        return self.cells.capacity_as.sum(axis=1) / 3600.0

    @property
    def true_resistance_factor(self) -> np.ndarray:
        """Each series group's resistance against the chemistry's table for the group (the
        estimator's resistance factor): its cells' factors in parallel."""
        return self.spec.n_parallel / (1.0 / self.aging.r_factor).sum(axis=1)

    @property
    def true_pack_soc(self) -> float:
        """The pack's SoC by the firmware's rule (`bms.core.estimator.pack_soc`), from the truth."""
        return pack_soc(self.true_soc, self.true_capacity_ah)

    @property
    def bleed_power_w(self) -> float:
        return float((self.bleed_a * self.group_v).sum())
