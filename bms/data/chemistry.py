"""Cell chemistry as data: OCV curves with hysteresis, 2-RC parameters, limits, thermal figures.

A chemistry is either a built-in preset (`bms.data.presets`) or a user cell profile in
TOML (`load_profile`); `bms.data.presets.resolve_chemistry` accepts either wherever a
chemistry is named.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms.data.clipping import clip
from bms.data.validation import Problems, read_toml

# Below the 0 % point of the OCV table a sodium-ion cell may still be discharged
# (to 0 V for storage and transport); the curve falls to 0 V over this much charge.
BELOW_EMPTY_SOC = 0.03
# Above the 100 % point (the cell charged to its charge voltage) the curve goes on rising
# with the table's last slope over this much charge, then stays flat: an overcharged cell's
# voltage climbs past the charge voltage, which is also what ends a CC-CV charge at 100 %.
ABOVE_FULL_SOC = 0.05


@dataclass(frozen=True, eq=False)
class OcvCurve:
    """Open-circuit voltage against SoC (fraction), with a charge and a discharge branch."""

    soc: np.ndarray
    charge_v: np.ndarray
    discharge_v: np.ndarray
    temp_coeff_v_per_k: float
    # How fast the hysteresis state swings between branches: it moves by 1 - 1/e after
    # 1/hysteresis_rate of the capacity has passed in one direction.
    hysteresis_rate: float

    @property
    def mid_v(self) -> np.ndarray:
        return 0.5 * (self.charge_v + self.discharge_v)

    @property
    def half_gap_v(self) -> np.ndarray:
        return 0.5 * (self.charge_v - self.discharge_v)

    @functools.cached_property
    def lookup_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(soc, mid_v, half_gap_v) extended below 0 % down to 0 V, and above 100 % over
        ABOVE_FULL_SOC with the last segment's slope and the last hysteresis gap, for
        np.interp."""
        mid_v, half_v = self.mid_v, self.half_gap_v
        rise_v = ABOVE_FULL_SOC * (mid_v[-1] - mid_v[-2]) / (self.soc[-1] - self.soc[-2])
        soc = np.concatenate(([-BELOW_EMPTY_SOC], self.soc, [self.soc[-1] + ABOVE_FULL_SOC]))
        mid = np.concatenate(([0.0], mid_v, [mid_v[-1] + rise_v]))
        half = np.concatenate(([0.0], half_v, [half_v[-1]]))
        return soc, mid, half

    @property
    def full_v(self) -> float:
        """The highest rest voltage of a full cell (at 25 °C): the charge branch at 100 %."""
        return float(self.charge_v[-1])

    def charge_soc_at(self, voltage_v: float) -> float:
        """The SoC (fraction) where the charge branch first reaches `voltage_v` (25 °C);
        the table's end if it never does."""
        c, s = self.charge_v, self.soc
        if voltage_v > c[-1]:
            return float(s[-1])
        j = int(np.argmax(c >= voltage_v))
        if j == 0:
            return float(s[0])
        return float(s[j - 1] + (voltage_v - c[j - 1]) / (c[j] - c[j - 1]) * (s[j] - s[j - 1]))

    def ending_at(self, charge_voltage_v: float) -> OcvCurve:
        """This curve with 100 % moved to where its charge branch reaches the charge voltage.

        100 % SoC is a cell charged to the charge voltage by CC-CV, in the limit of a
        termination current going to zero: at rest it then sits on the charge branch at
        exactly the charge voltage. A measured (sourced) table that goes on above the charge
        voltage is cut there: the points above are dropped, the end point is interpolated
        on both branches, and the SoC axis is stretched so that the cut is 100 %. A table
        that ends at or below the charge voltage is returned as it is.
        """
        if charge_voltage_v >= self.charge_v[-1]:
            return self
        full = self.charge_soc_at(charge_voltage_v)
        if full <= self.soc[0]:
            raise ValueError(f"the charge branch starts at {self.charge_v[0]:g} V, at or above "
                             f"the charge voltage {charge_voltage_v:g} V")
        keep = self.soc < full
        soc = np.append(self.soc[keep], full)
        charge = np.append(self.charge_v[keep], charge_voltage_v)
        discharge = np.append(self.discharge_v[keep], np.interp(full, self.soc,
                                                                self.discharge_v))
        return dataclasses.replace(self, soc=soc / full, charge_v=charge,
                                   discharge_v=np.minimum(discharge, charge))

    def voltage_v(self, soc: np.ndarray, hysteresis: np.ndarray, temperature_c: np.ndarray):
        """OCV of each cell: hysteresis +1 is the charge branch, -1 the discharge branch."""
        soc_t, mid, half = self.lookup_tables
        return (
            np.interp(soc, soc_t, mid)
            + hysteresis * np.interp(soc, soc_t, half)
            + self.temp_coeff_v_per_k * (np.asarray(temperature_c) - 25.0)
        )

    @functools.cached_property
    def _segments(self) -> np.ndarray:
        """Per table segment (column): start SoC, mid and half-gap at the start, and their
        slopes; one array, so that a cell's row of each is one gather."""
        soc_t, mid, half = self.lookup_tables
        d_soc = np.diff(soc_t)
        return np.stack((soc_t[:-1], mid[:-1], half[:-1], np.diff(mid) / d_soc,
                         np.diff(half) / d_soc))

    def with_slope(self, soc: np.ndarray, hysteresis: np.ndarray, temperature_c: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """OCV, its slope dOCV/dSoC (V per unit SoC) and the half hysteresis gap, per cell:
        what a filter needs each run, in a few array operations."""
        segments = self._segments
        start = segments[0]
        k = clip(np.searchsorted(start, soc, side="right") - 1, 0, start.size - 1)
        start_k, mid0, half0, mid_slope, half_slope = segments.take(k, axis=1)
        ds = soc - start_k
        half = half0 + half_slope * ds
        slope = mid_slope + hysteresis * half_slope
        ocv = (mid0 + mid_slope * ds + hysteresis * half
               + self.temp_coeff_v_per_k * (temperature_c - 25.0))
        return ocv, slope, half

    def soc_on_branch(self, voltage_v: np.ndarray, hysteresis: np.ndarray,
                      temperature_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each cell's SoC whose OCV, with that cell's hysteresis state, is `voltage_v`;
        and the OCV slope there (V per unit SoC), which says how far to trust it."""
        soc_t, mid, half = self.lookup_tables
        corrected = np.asarray(voltage_v) - self.temp_coeff_v_per_k * (
            np.asarray(temperature_c) - 25.0)
        # (table, n): the count below runs over rows, a third faster than over columns.
        curves = mid[:, None] + half[:, None] * np.asarray(hysteresis, dtype=float)
        k = clip((curves <= corrected).sum(axis=0) - 1, 0, soc_t.size - 2)
        cells = np.arange(curves.shape[1])
        low, high = curves[k, cells], curves[k + 1, cells]
        slope = (high - low) / (soc_t[k + 1] - soc_t[k])
        soc = soc_t[k] + (corrected - low) / np.where(slope > 0, slope, np.inf)
        # A reading above the full cell's says full: the voltage alone never says more.
        return clip(soc, soc_t[0], self.soc[-1]), slope


@dataclass(frozen=True, eq=False)
class EcmTable:
    """2-RC equivalent circuit parameters tabulated over temperature (rows) and SoC (columns)."""

    soc: np.ndarray
    temperature_c: np.ndarray
    r0_ohm: np.ndarray
    r1_ohm: np.ndarray
    tau1_s: np.ndarray
    r2_ohm: np.ndarray
    tau2_s: np.ndarray

    @functools.cached_property
    def _flat(self) -> np.ndarray:
        """The five tables as one (5, n_temp * n_soc) array: r0, r1, tau1, r2, tau2."""
        tables = (self.r0_ohm, self.r1_ohm, self.tau1_s, self.r2_ohm, self.tau2_s)
        return np.stack(tables).reshape(5, -1)

    def lookup(self, soc: np.ndarray, temperature_c: np.ndarray) -> np.ndarray:
        """Bilinear interpolation (clamped at the table edges); returns (5, *soc.shape)."""
        shape = np.shape(soc)
        soc_f = np.ravel(soc)
        temp_f = np.ravel(np.broadcast_to(temperature_c, shape))
        n_temp, n_soc = self.temperature_c.size, self.soc.size
        ti = np.interp(temp_f, self.temperature_c, np.arange(n_temp, dtype=float))
        si = np.interp(soc_f, self.soc, np.arange(n_soc, dtype=float))
        t0 = np.minimum(ti.astype(np.intp), n_temp - 2)
        s0 = np.minimum(si.astype(np.intp), n_soc - 2)
        tw = ti - t0
        sw = si - s0
        corner = t0 * n_soc + s0
        flat = self._flat
        v00 = flat.take(corner, axis=1)
        v01 = flat.take(corner + 1, axis=1)
        v10 = flat.take(corner + n_soc, axis=1)
        v11 = flat.take(corner + n_soc + 1, axis=1)
        low = v00 + (v01 - v00) * sw
        high = v10 + (v11 - v10) * sw
        return (low + (high - low) * tw).reshape(5, *shape)

    def scaled(self, resistance_factor: float) -> EcmTable:
        return dataclasses.replace(
            self,
            r0_ohm=self.r0_ohm * resistance_factor,
            r1_ohm=self.r1_ohm * resistance_factor,
            r2_ohm=self.r2_ohm * resistance_factor,
        )


@dataclass(frozen=True)
class CellLimits:
    """Absolute limits of the cell: no configuration may go beyond them."""

    v_min: float
    v_max: float
    charge_temp_min_c: float
    charge_temp_max_c: float
    discharge_temp_min_c: float
    discharge_temp_max_c: float
    max_charge_c: float
    max_discharge_c: float


@dataclass(frozen=True)
class Thresholds:
    """Recommended operating thresholds (inside the absolute limits)."""

    charge_v: float
    overvoltage_v: float
    overvoltage_release_v: float
    undervoltage_v: float
    undervoltage_release_v: float
    # Below this temperature the charge current is derated toward the charge minimum.
    cold_charge_derate_below_c: float


@dataclass(frozen=True)
class ThermalParams:
    heat_capacity_j_per_k: float
    resistance_to_ambient_k_per_w: float
    resistance_to_neighbour_k_per_w: float


@dataclass(frozen=True)
class AgingParams:
    """How a cell ages (the plant's `hil.aging`), at 25 °C, 50 % SoC and up to 1C: capacity
    lost and resistance gained by calendar (as the square root of time: a passivation layer
    that slows its own growth) and by cycling (in proportion to the charge put through); the
    factors say how temperature, SoC and C-rate speed the two up."""

    calendar_capacity_pct_per_sqrt_year: float  # % of capacity lost after one year
    calendar_resistance_pct_per_sqrt_year: float  # % resistance gained after one year
    cycle_capacity_pct_per_kcycle: float  # % lost per 1,000 full equivalent cycles
    cycle_resistance_pct_per_kcycle: float
    # The calendar rate rises with temperature as exp(-E / R (1/T - 1/298.15 K)).
    activation_j_per_mol: float
    high_soc_factor: float  # the calendar rate at 100 % SoC over that at 50 %
    low_soc_factor: float  # the calendar rate at 0 % SoC over that at 50 %
    # Below 25 °C the cycle rate rises as exp(E / R (1/T - 1/298.15 K)) (plating); above,
    # the calendar term carries the heat.
    cold_activation_j_per_mol: float
    c_rate_factor_per_c: float  # the cycle rate times 1 + this per C above 1C
    spread_rel: float  # cell-to-cell spread of the rates: lognormal sigma


# (low, high) of each [aging] key in a cell profile.
AGING_RANGES: dict[str, tuple[float, float]] = {
    "calendar_capacity_pct_per_sqrt_year": (0.0, 50.0),
    "calendar_resistance_pct_per_sqrt_year": (0.0, 200.0),
    "cycle_capacity_pct_per_kcycle": (0.0, 100.0),
    "cycle_resistance_pct_per_kcycle": (0.0, 500.0),
    "activation_j_per_mol": (0.0, 150e3),
    "high_soc_factor": (0.0, 20.0),
    "low_soc_factor": (0.0, 20.0),
    "cold_activation_j_per_mol": (0.0, 150e3),
    "c_rate_factor_per_c": (0.0, 10.0),
    "spread_rel": (0.0, 1.0),
}

# Generic sodium-ion (layered oxide / hard carbon) ageing, for a profile without [aging] and
# the na-nfm preset. ASSUMPTIONS, not measurements of one cell: published cycle life for
# layered-oxide / hard-carbon 18650s is 80 % capacity after 2,000-5,000 cycles (CATL claims
# > 10,000 for its own cells); ~6 %/1,000 cycles puts 80 % near 3,000 cycles with the
# calendar share of that time. Calendar fade as k * sqrt(t), 2.5 %/sqrt(year) at 25 °C and
# 50 % SoC (~8 % after 10 years), with an Arrhenius factor of 50 kJ/mol (about x2 per 10 K,
# the usual figure for lithium-ion SEI growth, assumed to hold for hard carbon), twice as
# fast at 100 % SoC and 0.6 times at 0 %. Resistance grows by ~1.5 % per % of capacity lost
# (typical of aged cells: +30-50 % resistance at 80 % capacity). Cold cycling: 30 kJ/mol.
GENERIC_AGING = AgingParams(
    calendar_capacity_pct_per_sqrt_year=2.5,
    calendar_resistance_pct_per_sqrt_year=4.0,
    cycle_capacity_pct_per_kcycle=6.0,
    cycle_resistance_pct_per_kcycle=10.0,
    activation_j_per_mol=50e3,
    high_soc_factor=2.0,
    low_soc_factor=0.6,
    cold_activation_j_per_mol=30e3,
    c_rate_factor_per_c=0.3,
    spread_rel=0.15,
)


@dataclass(frozen=True, eq=False)
class Chemistry:
    name: str
    description: str
    capacity_ah: float
    nominal_v: float
    ocv: OcvCurve
    ecm: EcmTable
    limits: CellLimits
    thresholds: Thresholds
    thermal: ThermalParams
    self_discharge_pct_per_month: float
    # The share of the charge put in that the cell stores (the rest goes to side reactions
    # and heat); a discharge gives out all it takes. 1.0: nothing lost.
    coulombic_efficiency: float = 1.0
    aging: AgingParams = GENERIC_AGING  # how the plant ages it (`hil.aging`)

    def with_capacity(self, capacity_ah: float) -> Chemistry:
        """The same chemistry in a cell of another size.

        Resistance scales inversely with capacity, heat capacity with it, and the
        thermal resistances with the surface, taken as capacity to the 2/3 power.
        """
        ratio = capacity_ah / self.capacity_ah
        surface = ratio ** (2.0 / 3.0)
        thermal = ThermalParams(
            heat_capacity_j_per_k=self.thermal.heat_capacity_j_per_k * ratio,
            resistance_to_ambient_k_per_w=self.thermal.resistance_to_ambient_k_per_w / surface,
            resistance_to_neighbour_k_per_w=self.thermal.resistance_to_neighbour_k_per_w / surface,
        )
        return dataclasses.replace(
            self, capacity_ah=capacity_ah, ecm=self.ecm.scaled(1.0 / ratio), thermal=thermal
        )


def arrhenius_factor(temperature_c: np.ndarray, activation_j_per_mol: float) -> np.ndarray:
    """Resistance relative to 25 °C for a thermally activated process."""
    gas_constant = 8.314
    kelvin = np.asarray(temperature_c, dtype=float) + 273.15
    return np.exp(activation_j_per_mol / gas_constant * (1.0 / kelvin - 1.0 / 298.15))


def separable_ecm(
    soc: np.ndarray,
    temperature_c: np.ndarray,
    soc_factor: np.ndarray,
    temp_factor: np.ndarray,
    r0_ohm: float,
    r1_ohm: float,
    tau1_s: float,
    r2_ohm: float,
    tau2_s: float,
) -> EcmTable:
    """ECM tables from 25 °C / mid-SoC values and shape factors over temperature and SoC.

    Resistances follow factor(T) * factor(SoC); time constants are kept constant.
    """
    shape = np.outer(temp_factor, soc_factor)
    ones = np.ones_like(shape)
    return EcmTable(
        soc=np.asarray(soc, dtype=float),
        temperature_c=np.asarray(temperature_c, dtype=float),
        r0_ohm=r0_ohm * shape,
        r1_ohm=r1_ohm * shape,
        tau1_s=tau1_s * ones,
        r2_ohm=r2_ohm * shape,
        tau2_s=tau2_s * ones,
    )


# --- user cell profiles ----------------------------------------------------------

# Generic shape of resistance over SoC and temperature, used for user profiles that
# give only 25 °C values: resistance rises toward empty and in the cold.
GENERIC_SOC = np.array([0.0, 0.1, 0.2, 0.5, 0.9, 1.0])
GENERIC_SOC_FACTOR = np.array([2.0, 1.4, 1.15, 1.0, 1.0, 1.1])
GENERIC_TEMP_C = np.array([-40.0, -20.0, 0.0, 25.0, 45.0, 60.0])
GENERIC_TEMP_FACTOR = arrhenius_factor(GENERIC_TEMP_C, activation_j_per_mol=20e3)

# Generic sodium-ion windows (shared/sodium-ion.md) for limits a profile leaves out.
_LIMIT_DEFAULTS = {
    "charge_temp_min_c": -20.0,
    "charge_temp_max_c": 55.0,
    "discharge_temp_min_c": -40.0,
    "discharge_temp_max_c": 60.0,
    "max_charge_c": 1.0,
    "max_discharge_c": 2.0,
}

_PROFILE_KEYS = {
    "": {"name", "description", "capacity_ah", "nominal_v", "self_discharge_pct_per_month",
         "coulombic_efficiency", "limits", "ocv", "ecm", "thresholds", "thermal", "aging"},
    "limits": {f.name for f in dataclasses.fields(CellLimits)},
    "ocv": {"soc_pct", "voltage_v", "charge_v", "discharge_v", "temp_coeff_v_per_k",
            "hysteresis_rate"},
    "ecm": {"r0_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s", "soc_pct", "temperature_c"},
    "thresholds": {f.name for f in dataclasses.fields(Thresholds)},
    "thermal": {f.name for f in dataclasses.fields(ThermalParams)},
    "aging": set(AGING_RANGES),
}


def _number(problems: Problems, table: dict, key: str, where: str, default=None):
    value = table.get(key, default)
    if value is None:
        problems.add(where, None, "is required")
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(where, value, "must be a number")
        return float("nan")
    if not _finite(value):
        problems.add(where, value, "must be a finite number")
        return float("nan")
    return float(value)


def _finite(value: int | float) -> bool:
    """Not NaN, not infinite, and (an int) not past the largest float."""
    return -sys.float_info.max <= value <= sys.float_info.max


def _vector(problems: Problems, table: dict, key: str, where: str) -> np.ndarray | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and _finite(x) for x in value
    ):
        problems.add(where, value, "must be a non-empty list of finite numbers")
        return None
    return np.asarray(value, dtype=float)


def parse_profile(data: dict, source: str) -> Chemistry:
    """Builds a Chemistry from a parsed profile; raises InputError naming every bad field."""
    problems = Problems(source)
    for section, allowed in _PROFILE_KEYS.items():
        table = data if not section else data.get(section, {})
        if not isinstance(table, dict):
            problems.add(section, table, "must be a table")
            continue
        for key in sorted(set(table) - allowed):  # an unknown table too: a misspelt [thermal]
            where = f"{section}.{key}" if section else key
            problems.add(where, table[key], f"unknown field; allowed: {sorted(allowed)}")
    if any(not isinstance(data.get(section, {}), dict) for section in _PROFILE_KEYS if section):
        problems.raise_if_any()  # the fields below are read from these tables

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add("name", name, "must be a non-empty string")
    description = data.get("description", f"user cell profile {source}")
    if not isinstance(description, str):
        problems.add("description", description, "must be a string")
    capacity_ah = _number(problems, data, "capacity_ah", "capacity_ah")
    problems.check_range("capacity_ah", capacity_ah, 1e-3, 1e5)

    lim = data.get("limits", {})
    v_min = _number(problems, lim, "v_min", "limits.v_min")
    v_max = _number(problems, lim, "v_max", "limits.v_max")
    if v_min >= v_max:
        problems.add("limits.v_min", v_min, f"must be below limits.v_max ({v_max:g})")
    optional = {key: _number(problems, lim, key, f"limits.{key}", default)
                for key, default in _LIMIT_DEFAULTS.items()}
    limits = CellLimits(v_min=v_min, v_max=v_max, **optional)
    for low, high in (("charge_temp_min_c", "charge_temp_max_c"),
                      ("discharge_temp_min_c", "discharge_temp_max_c")):
        if getattr(limits, low) >= getattr(limits, high):
            problems.add(f"limits.{low}", getattr(limits, low), f"must be below limits.{high}")
    for key in ("max_charge_c", "max_discharge_c"):
        problems.check_range(f"limits.{key}", getattr(limits, key), 0.0, 100.0)

    ocv = _parse_ocv(problems, data.get("ocv"), v_min, v_max)
    ecm = _parse_ecm(problems, data.get("ecm", {}), capacity_ah)
    aging = _parse_aging(problems, data.get("aging", {}))
    problems.raise_if_any()

    span_v = v_max - v_min
    thr = data.get("thresholds", {})
    thresholds = Thresholds(
        # By default the cell is charged to its table's 100 %.
        charge_v=_number(problems, thr, "charge_v", "thresholds.charge_v", ocv.full_v),
        overvoltage_v=_number(problems, thr, "overvoltage_v", "thresholds.overvoltage_v", v_max),
        overvoltage_release_v=_number(problems, thr, "overvoltage_release_v",
                                      "thresholds.overvoltage_release_v", v_max - 0.08 * span_v),
        undervoltage_v=_number(problems, thr, "undervoltage_v", "thresholds.undervoltage_v", v_min),
        undervoltage_release_v=_number(problems, thr, "undervoltage_release_v",
                                       "thresholds.undervoltage_release_v", v_min + 0.15 * span_v),
        cold_charge_derate_below_c=_number(problems, thr, "cold_charge_derate_below_c",
                                           "thresholds.cold_charge_derate_below_c", 0.0),
    )
    check_thresholds(problems, thresholds, limits)
    check_full_charge(problems, ocv, thresholds,
                      "ocv.voltage_v" if "voltage_v" in data["ocv"] else "ocv.charge_v")

    th = data.get("thermal", {})
    thermal = ThermalParams(
        heat_capacity_j_per_k=_number(problems, th, "heat_capacity_j_per_k",
                                      "thermal.heat_capacity_j_per_k", 30.0 * capacity_ah),
        resistance_to_ambient_k_per_w=_number(problems, th, "resistance_to_ambient_k_per_w",
                                              "thermal.resistance_to_ambient_k_per_w", 10.0),
        resistance_to_neighbour_k_per_w=_number(problems, th, "resistance_to_neighbour_k_per_w",
                                                "thermal.resistance_to_neighbour_k_per_w", 8.0),
    )
    for f in dataclasses.fields(ThermalParams):
        problems.check_range(f"thermal.{f.name}", getattr(thermal, f.name), 1e-6, None)
    nominal_v = _number(problems, data, "nominal_v", "nominal_v", float(np.mean(ocv.mid_v)))
    problems.check_range("nominal_v", nominal_v, v_min, v_max)
    self_discharge = _number(problems, data, "self_discharge_pct_per_month",
                             "self_discharge_pct_per_month", 3.0)
    problems.check_range("self_discharge_pct_per_month", self_discharge, 0.0, 100.0)
    efficiency = _number(problems, data, "coulombic_efficiency", "coulombic_efficiency", 1.0)
    check_coulombic_efficiency(problems, efficiency)
    problems.raise_if_any()
    return Chemistry(
        name=name.strip(),
        description=description,
        capacity_ah=capacity_ah,
        nominal_v=nominal_v,
        ocv=ocv,
        ecm=ecm,
        limits=limits,
        thresholds=thresholds,
        thermal=thermal,
        self_discharge_pct_per_month=self_discharge,
        coulombic_efficiency=efficiency,
        aging=aging,
    )


# A cell that stores half or less of what it is charged with is broken, not inefficient.
COULOMBIC_EFFICIENCY_MIN = 0.5


def check_coulombic_efficiency(problems: Problems, efficiency: float) -> None:
    """The share stored must be in (COULOMBIC_EFFICIENCY_MIN, 1]: a cell cannot store more
    than it is given. A NaN was told already (not a number)."""
    if efficiency == efficiency and not COULOMBIC_EFFICIENCY_MIN < efficiency <= 1.0:
        problems.add("coulombic_efficiency", efficiency,
                     f"must be within ({COULOMBIC_EFFICIENCY_MIN:g}, 1]: the share of the "
                     "charge put in that the cell stores (1 = none lost)")


def check_thresholds(problems: Problems, thr: Thresholds, limits: CellLimits) -> None:
    """Thresholds must sit inside the absolute limits, in order, each release on the safe
    side: limits.v_min <= undervoltage_v < undervoltage_release_v < charge_v < overvoltage_v
    <= limits.v_max, undervoltage_release_v < overvoltage_release_v < overvoltage_v (an
    over-voltage may release below the charge voltage: the cell must then give some charge
    back before it clears)."""
    for key in ("charge_v", "overvoltage_v", "overvoltage_release_v", "undervoltage_v",
                "undervoltage_release_v"):
        problems.check_range(f"thresholds.{key}", getattr(thr, key), limits.v_min, limits.v_max)
    # (lower, higher, the one a problem names): a release on the wrong side is the release's.
    for low, high, named in (
        ("undervoltage_v", "undervoltage_release_v", "undervoltage_release_v"),
        ("undervoltage_release_v", "overvoltage_release_v", "overvoltage_release_v"),
        ("undervoltage_release_v", "charge_v", "charge_v"),
        ("overvoltage_release_v", "overvoltage_v", "overvoltage_release_v"),
        # Equal, a full cell would rest on the over-voltage rows (`default_config` puts its
        # WARNING a third of the way from the charge voltage to overvoltage_v).
        ("charge_v", "overvoltage_v", "charge_v"),
    ):
        low_v, high_v = getattr(thr, low), getattr(thr, high)
        if low_v < high_v or low_v != low_v or high_v != high_v:  # NaN: said already
            continue
        if named == low:
            problems.add(f"thresholds.{low}", low_v, f"must be below thresholds.{high} "
                         f"({high_v:g}); allowed: [{limits.v_min:g}, {high_v:g})")
        else:
            problems.add(f"thresholds.{high}", high_v, f"must be above thresholds.{low} "
                         f"({low_v:g}); allowed: ({low_v:g}, {limits.v_max:g}]")


# 100 % is the cell charged to its charge voltage; a table whose charge branch ends this
# little below it is close enough (the estimator calls a cell this close to it full).
FULL_TOLERANCE_V = 0.01


def check_full_charge(problems: Problems, ocv: OcvCurve, thr: Thresholds,
                      field: str = "ocv.charge_v") -> None:
    """100 % SoC must be the cell charged to thresholds.charge_v (CC-CV, the termination
    current going to zero): the charge branch ends at the charge voltage (within
    FULL_TOLERANCE_V below it), never above. A full cell at rest, on either branch (the
    discharge branch lies below the charge branch), is then below overvoltage_v and below
    every over-voltage row `default_config` derives, which lie above the charge voltage.
    `field` names the charge branch as the input gave it."""
    where = f"{field}[{ocv.charge_v.size - 1}]"
    end_v, charge_v = ocv.full_v, thr.charge_v
    allowed = (f"the OCV at 100 % must be within [{charge_v - FULL_TOLERANCE_V:.4g}, "
               f"{charge_v:.4g}] V: 100 % is the cell charged to thresholds.charge_v "
               f"({charge_v:g} V)")
    if end_v > charge_v:
        crossing_pct = 100.0 * ocv.charge_soc_at(charge_v)
        problems.add(where, end_v, f"{allowed}; the charge branch reaches {charge_v:g} V at "
                     f"{crossing_pct:.4g} % of this table: end the table there (drop the "
                     f"points above, scale soc_pct so that {crossing_pct:.4g} % becomes 100 %) "
                     "or raise thresholds.charge_v")
    elif end_v < charge_v - FULL_TOLERANCE_V:
        problems.add(where, end_v, f"{allowed}; extend the table up to {charge_v:g} V or "
                     f"lower thresholds.charge_v to {end_v:g}")


def full_at_charge_voltage(chem: Chemistry) -> Chemistry:
    """`chem` with its OCV table ended at its charge voltage (`OcvCurve.ending_at`): how a
    sourced table that goes on above the charge voltage becomes a coherent 0..100 %.

    The capacity stays the rated capacity: a cell's rating is the charge it gives between
    its charge voltage and its cut-off, which is the 0..100 % of the ended table."""
    return dataclasses.replace(chem, ocv=chem.ocv.ending_at(chem.thresholds.charge_v))


def check_chemistry(chem: Chemistry, source: str) -> Chemistry:
    """A built chemistry (a preset) held to the rules a profile is: thresholds in order
    inside the limits, the OCV table inside the limits and coherent with the charge
    voltage. Returns it; raises InputError naming every problem."""
    problems = Problems(source)
    ocv, lim = chem.ocv, chem.limits
    if ocv.soc[0] != 0 or ocv.soc[-1] != 1 or np.any(np.diff(ocv.soc) <= 0):
        problems.add("ocv.soc", ocv.soc.tolist(), "must rise strictly from 0 to 1")
    for key in ("charge_v", "discharge_v"):
        vec = getattr(ocv, key)
        if np.any(np.diff(vec) < 0) or vec.min() < lim.v_min or vec.max() > lim.v_max:
            problems.add(f"ocv.{key}", vec.tolist(), "must not fall as SoC rises and must be "
                         f"within the cell limits [{lim.v_min:g}, {lim.v_max:g}]")
    _check_branches(problems, ocv.charge_v, ocv.discharge_v)
    check_thresholds(problems, chem.thresholds, lim)
    check_full_charge(problems, ocv, chem.thresholds)
    check_coulombic_efficiency(problems, chem.coulombic_efficiency)
    problems.raise_if_any()
    return chem


def _parse_ocv(problems: Problems, ocv: dict | None, v_min: float, v_max: float) -> OcvCurve:
    if not isinstance(ocv, dict):
        problems.add("ocv", ocv, "a table [ocv] with soc_pct and voltage_v (or charge_v and "
                     "discharge_v) is required")
        return None  # type: ignore[return-value]
    soc_pct = _vector(problems, ocv, "soc_pct", "ocv.soc_pct")
    one = _vector(problems, ocv, "voltage_v", "ocv.voltage_v")
    charge = _vector(problems, ocv, "charge_v", "ocv.charge_v")
    discharge = _vector(problems, ocv, "discharge_v", "ocv.discharge_v")
    if soc_pct is None:
        problems.add("ocv.soc_pct", None, "is required")
        return None  # type: ignore[return-value]
    if one is not None and (charge is not None or discharge is not None):
        problems.add("ocv.voltage_v", "(given)", "give either voltage_v or charge_v and "
                     "discharge_v, not both")
    if one is not None:
        charge = discharge = one
    if charge is None or discharge is None:
        problems.add("ocv", sorted(ocv), "needs voltage_v, or both charge_v and discharge_v")
        return None  # type: ignore[return-value]
    if np.any(np.diff(soc_pct) <= 0):
        bad = int(np.argmax(np.diff(soc_pct) <= 0)) + 1
        problems.add(f"ocv.soc_pct[{bad}]", float(soc_pct[bad]),
                     "soc_pct must be strictly ascending")
    if soc_pct[0] != 0 or soc_pct[-1] != 100:
        problems.add("ocv.soc_pct", [float(soc_pct[0]), float(soc_pct[-1])],
                     "must start at 0 and end at 100")
    # one voltage_v is both branches: checked once, so that a problem is told once
    branches = ((("voltage_v", one),) if one is not None
                else (("charge_v", charge), ("discharge_v", discharge)))
    for name, vec in branches:
        if vec.size != soc_pct.size:
            problems.add(f"ocv.{name}", f"{vec.size} values",
                         f"must have as many values as ocv.soc_pct ({soc_pct.size})")
            continue
        if np.any(np.diff(vec) < 0):
            bad = int(np.argmax(np.diff(vec) < 0)) + 1
            problems.add(f"ocv.{name}[{bad}]", float(vec[bad]),
                         "OCV must not fall as SoC rises")
        out = (vec < v_min) | (vec > v_max)
        if v_min < v_max and np.any(out):  # limits in the wrong order are told already
            bad = int(np.argmax(out))
            problems.add(f"ocv.{name}[{bad}]", float(vec[bad]),
                         f"must be within the cell limits [{v_min:g}, {v_max:g}]")
    if charge.size == discharge.size:
        _check_branches(problems, charge, discharge)
    temp_coeff = _number(problems, ocv, "temp_coeff_v_per_k", "ocv.temp_coeff_v_per_k", -2e-4)
    problems.check_range("ocv.temp_coeff_v_per_k", temp_coeff, -0.01, 0.01)
    rate = _number(problems, ocv, "hysteresis_rate", "ocv.hysteresis_rate", 25.0)
    problems.check_range("ocv.hysteresis_rate", rate, 0.1, 1000.0)
    return OcvCurve(soc_pct / 100.0, charge, discharge, temp_coeff, rate)


def _check_branches(problems: Problems, charge: np.ndarray, discharge: np.ndarray) -> None:
    if np.any(charge < discharge):
        bad = int(np.argmax(charge < discharge))
        problems.add(f"ocv.charge_v[{bad}]", float(charge[bad]),
                     "the charge branch must not lie below the discharge branch")


def _parse_ecm(problems: Problems, ecm: dict, capacity_ah: float) -> EcmTable:
    # Defaults when the profile gives no ECM: the na-nfm preset's resistances (a 1.5 Ah
    # 18650 with 50-67 mOhm DC resistance) scaled inversely with capacity, in ohm * Ah.
    per_ah = 1.0 / capacity_ah if capacity_ah > 0 else 1.0
    defaults = {"r0_ohm": 0.0525 * per_ah, "r1_ohm": 0.03 * per_ah, "tau1_s": 4.0,
                "r2_ohm": 0.0225 * per_ah, "tau2_s": 120.0}
    if "soc_pct" in ecm or "temperature_c" in ecm:
        return _parse_ecm_tables(problems, ecm, defaults)
    values = {}
    for key, default in defaults.items():
        values[key] = _number(problems, ecm, key, f"ecm.{key}", default)
        low = 1e-3 if key.startswith("tau") else 0.0
        problems.check_range(f"ecm.{key}", values[key], low, 1e4)
    return separable_ecm(GENERIC_SOC, GENERIC_TEMP_C, GENERIC_SOC_FACTOR, GENERIC_TEMP_FACTOR,
                         **values)


def _numbers_only(value) -> bool:
    """A number (not a bool), or lists of them at any depth."""
    if isinstance(value, list):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_ecm_tables(problems: Problems, ecm: dict, defaults: dict[str, float]) -> EcmTable:
    """[ecm] measured by SoC (`soc_pct`) and optionally by temperature (`temperature_c`), as
    `bms-emu fit` writes it: each parameter a number (the same everywhere), a list over
    soc_pct, or one such list per temperature. One temperature (or none: 25 °C) is spread
    over temperature with the generic Arrhenius shape, as the scalar form is."""
    soc_pct = _vector(problems, ecm, "soc_pct", "ecm.soc_pct")
    temps = _vector(problems, ecm, "temperature_c", "ecm.temperature_c")
    if soc_pct is None:
        if "soc_pct" not in ecm:  # else told already: not a list of numbers
            problems.add("ecm.soc_pct", None, "is required with ecm.temperature_c")
        return None  # type: ignore[return-value]
    temps = np.array([25.0]) if temps is None else temps
    for where, axis, low, high in (("ecm.soc_pct", soc_pct, 0.0, 100.0),
                                   ("ecm.temperature_c", temps, -60.0, 100.0)):
        if np.any(np.diff(axis) <= 0) or axis.min() < low or axis.max() > high:
            problems.add(where, axis.tolist(), f"must be strictly ascending within [{low:g}, "
                         f"{high:g}]")
    if soc_pct.size < 2:
        problems.add("ecm.soc_pct", soc_pct.tolist(), "needs at least 2 values")
    shape = (temps.size, soc_pct.size)
    tables = {}
    for key, default in defaults.items():
        value = ecm.get(key, default)
        try:
            table = np.asarray(value, dtype=float) if _numbers_only(value) else None
        except (ValueError, OverflowError):  # ragged lists; an int past the largest float
            table = None
        if table is not None and table.shape in ((), shape[1:], shape):
            table = np.broadcast_to(table, shape)
        else:
            table = None
        if table is None or not np.all(np.isfinite(table)):
            problems.add(f"ecm.{key}", value, f"must be a number, a list of {shape[1]} numbers "
                         f"(one per ecm.soc_pct) or {shape[0]} such lists (one per "
                         "ecm.temperature_c)")
            continue
        low = 1e-3 if key.startswith("tau") else 0.0
        if table.min() < low or table.max() > 1e4:
            problems.add(f"ecm.{key}", value, f"each value must be within [{low:g}, 10000]")
        tables[key] = table
    if problems.items:
        return None  # type: ignore[return-value]
    if temps.size == 1:  # spread over temperature: resistances by Arrhenius, times kept
        factor = GENERIC_TEMP_FACTOR / arrhenius_factor(temps[0], activation_j_per_mol=20e3)
        tables = {key: (factor[:, None] if key.startswith("r") else np.ones((factor.size, 1)))
                  * table[0] for key, table in tables.items()}
        temps = GENERIC_TEMP_C
    return EcmTable(soc=soc_pct / 100.0, temperature_c=temps,
                    **{key: np.array(table, dtype=float) for key, table in tables.items()})


def _parse_aging(problems: Problems, aging: dict) -> AgingParams:
    """[aging]: each key given is checked against AGING_RANGES; a key left out (or the whole
    table) takes the generic sodium-ion assumption (GENERIC_AGING)."""
    values = {}
    for key, (low, high) in AGING_RANGES.items():
        values[key] = _number(problems, aging, key, f"aging.{key}",
                              getattr(GENERIC_AGING, key))
        problems.check_range(f"aging.{key}", values[key], low, high)
    return AgingParams(**values)


def load_profile(path: str | Path) -> Chemistry:
    """Reads a user cell profile; raises InputError naming the file and every bad field."""
    return parse_profile(read_toml(path), str(path))
