"""One mechanism for cell models the estimator does not share, configured by data.

A `ForeignCellSpec` describes a cell: its rest OCV with a hysteresis that may relax at rest,
a series resistance that depends on SoC and temperature, any number of RC pairs, solid
diffusion (the surface of the particles, not the bulk, sets the OCV) and a coulombic
efficiency. `ForeignCells` steps such cells with the interface `hil.pack.SimulatedPack`
uses of `hil.cells.CellArray` (prepare / advance / slow_step, soc, capacity_as, ...).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from bms.data.chemistry import (
    CellLimits,
    Chemistry,
    OcvCurve,
    ThermalParams,
    Thresholds,
    arrhenius_factor,
    separable_ecm,
)
from hil.cells import SeriesParallel

OCV_SLOPE_STEP = 2e-3  # SoC step of the secant that linearises the OCV between slow steps
PARAM_REFRESH_SLOW_STEPS = 10  # resistances and time constants follow SoC and temperature
# Below this mean current (in C) over a slow step a cell rests: its hysteresis relaxes.
REST_C = 0.02
# Roots of tan(x) = x: the radial modes of diffusion in a sphere (Carslaw & Jaeger).
_SPHERE_ROOTS = np.array([4.493409, 7.725252, 10.904122, 14.066194, 17.220755, 20.371303])


@dataclass(frozen=True, eq=False)
class ForeignCellSpec:
    """A cell model as data; resistances are at 25 °C and mid SoC, for `capacity_ah`."""

    name: str
    description: str
    capacity_ah: float
    soc: np.ndarray  # rest OCV table: SoC (fraction), mid voltage and half the gap
    mid_v: np.ndarray
    half_gap_v: np.ndarray
    temp_coeff_v_per_k: float
    hysteresis_rate: float  # the state swings by 1 - 1/e over 1/rate of the capacity
    hysteresis_rest_s: float  # at rest it relaxes toward the middle with this time constant
    r0_ohm: float
    low_soc_r_gain: float  # every resistance x (1 + gain * exp(-soc / width))
    low_soc_r_width: float
    r_activation_j_per_mol: float
    rc_ohm: tuple[float, ...]
    rc_tau_s: tuple[float, ...]
    diffusion_tau_s: float  # particle radius^2 / diffusivity at 25 °C; 0: no diffusion
    diffusion_modes: int
    diffusion_activation_j_per_mol: float
    coulombic_efficiency: float  # share of the charge put in that is stored
    tau_spread_rel: float  # cell-to-cell spread of the time constants (lognormal sigma)
    limits: CellLimits
    thresholds: Thresholds
    thermal: ThermalParams
    self_discharge_pct_per_month: float

    @functools.cached_property
    def ocv(self) -> OcvCurve:
        """The plant's rest OCV (of the particle surface for a diffusion model)."""
        return OcvCurve(self.soc, self.mid_v + self.half_gap_v, self.mid_v - self.half_gap_v,
                        self.temp_coeff_v_per_k, self.hysteresis_rate)

    def chemistry(self) -> Chemistry:
        """What `SimulatedPack` needs of a chemistry (size, thresholds, thermal figures); its
        ECM is a 2-RC summary for reference only: the cells never read it."""
        ecm = separable_ecm(np.array([0.0, 1.0]), np.array([25.0]), np.ones(2), np.ones(1),
                            self.r0_ohm, self.rc_ohm[0], self.rc_tau_s[0],
                            sum(self.rc_ohm[1:]), max(self.rc_tau_s))
        return Chemistry(name=self.name, description=self.description,
                         capacity_ah=self.capacity_ah, nominal_v=float(np.mean(self.mid_v)),
                         ocv=self.ocv, ecm=ecm, limits=self.limits, thresholds=self.thresholds,
                         thermal=self.thermal,
                         self_discharge_pct_per_month=self.self_discharge_pct_per_month,
                         coulombic_efficiency=self.coulombic_efficiency)

    def cell_model(self, seed: int | None) -> functools.partial:
        """The constructor `SimulatedPack(cell_model=...)` calls, with CellArray's arguments;
        the time constants' spread is drawn from `seed` (None: every cell nominal)."""
        return functools.partial(ForeignCells, self, seed)


class ForeignCells(SeriesParallel):
    """The cells of a `ForeignCellSpec`, vectorised over (n_series, n_parallel).

    Linear parts (RC pairs and the diffusion modes) step exactly over a tick for a constant
    current; the OCV of the surface SoC is linearised between slow steps, as CellArray does.
    Solid diffusion is the modal solution for a sphere under a surface flux: the surface SoC
    leads the bulk by sum_k z_k, each mode with time constant tau_d / root_k^2 and input
    (2/3) i / Q; the modes not simulated are added as their steady state.
    """

    def __init__(self, spec: ForeignCellSpec, seed: int | None, chemistry: Chemistry,
                 soc: np.ndarray, capacity_ah: np.ndarray, r_factor: np.ndarray,
                 self_discharge_per_s: np.ndarray, dt_s: float, temperature_c: np.ndarray):
        self.spec = spec
        self.coulombic_efficiency = spec.coulombic_efficiency
        self.chem = chemistry
        self.dt_s = dt_s
        self.parallel = soc.shape[1]
        self.soc_at_slow = np.array(soc, dtype=float)
        self.current_sum_a: np.ndarray | float = 0.0  # stored charge since the slow step, As
        self.current_a: np.ndarray | float = 0.0
        self.current_sq_sum: np.ndarray | float = 0.0
        self.ticks_since_slow = 0
        self.capacity_as = capacity_ah * 3600.0
        self.soc_per_as = dt_s / self.capacity_as
        # Resistances scale inversely with the cell's size (SimulatedPack may resize it).
        self.r_factor = r_factor * spec.capacity_ah / chemistry.capacity_ah
        self.self_discharge_per_s = self_discharge_per_s
        self.short_conductance_s = np.zeros_like(self.soc_at_slow)
        self.hysteresis = np.ones_like(self.soc_at_slow)  # a cell stored after its charge
        n_modes = spec.diffusion_modes if spec.diffusion_tau_s > 0 else 0
        self.n_modes = n_modes
        roots_sq = _SPHERE_ROOTS[:n_modes] ** 2
        self.mode_share = 1.0 / roots_sq  # each mode's time constant over tau_d
        # The modes left out, as a static lead of the surface per A/Q, in units of tau_d.
        self.static_lead = 1.0 / 15.0 - (2.0 / 3.0) * self.mode_share.sum() if n_modes else 0.0
        shape = self.soc_at_slow.shape
        rng = np.random.default_rng(seed)
        k = n_modes + len(spec.rc_ohm)
        spread = (np.exp(spec.tau_spread_rel * rng.standard_normal((k, *shape)))
                  if seed is not None else np.ones((k, *shape)))
        self.tau_spread = spread
        self.x = np.zeros((k, *shape))  # diffusion modes (SoC), then RC voltages (V)
        self.out = np.ones((k, *shape))  # volts per unit of each state
        self.temperature_c = np.broadcast_to(temperature_c, shape).astype(float)
        self.slow_steps = 0
        self._refresh_params(self.temperature_c)
        self.slow_step(temperature_c, 0.0)
        self._e_v = self.ocv_at_slow_v

    @property
    def surface_soc(self) -> np.ndarray:
        """The SoC at the particles' surface, which sets the OCV (the bulk without diffusion):
        the bulk, the simulated modes and the steady lead of those left out."""
        return (self.soc + self.x[:self.n_modes].sum(axis=0)
                + self.static_lead_per_a * self.current_a)

    def _short_soc(self) -> np.ndarray:
        """An internal short is driven by the OCV the terminals see: the surface's."""
        return self.surface_soc

    def rest_ocv_v(self) -> np.ndarray:
        """The OCV of the bulk SoC: where the cell's voltage ends after a long enough rest."""
        return self.spec.ocv.voltage_v(self.soc, self.hysteresis, self.temperature_c)

    def slow_step(self, temperature_c: np.ndarray, elapsed_s: float) -> np.ndarray:
        """Hysteresis, leakage, parameters and the OCV's linearisation, `elapsed_s` after the
        last slow step. Returns the mean heat released in each cell over that interval, W."""
        self.temperature_c = np.broadcast_to(temperature_c, self.soc_at_slow.shape)
        ocv = self.spec.ocv
        d_soc, heat_w = self._leak(ocv, temperature_c, elapsed_s, self._interval_heat_w())
        resting = np.abs(d_soc) * 3600.0 <= REST_C * elapsed_s
        self.hysteresis = np.where(
            resting, self.hysteresis * np.exp(-elapsed_s / self.spec.hysteresis_rest_s),
            self.hysteresis)
        self.slow_steps += 1
        if self.slow_steps % PARAM_REFRESH_SLOW_STEPS == 1:
            self._refresh_params(temperature_c)

        surface = self.surface_soc
        step = OCV_SLOPE_STEP * np.where(d_soc < 0, -1.0, 1.0)
        here_v, ahead_v = ocv.voltage_v(np.stack([surface, surface + step]), self.hysteresis,
                                        temperature_c)
        slope = (ahead_v - here_v) / step  # V per unit SoC at the surface
        self.out[:self.n_modes] = slope
        # The OCV moves with the stored charge and with the modes; both from here on.
        self.ocv_at_slow_v = here_v - slope * (surface - self.soc_at_slow)
        self.ocv_per_a = slope * self.soc_per_as
        self._step_response(slope)
        return heat_w

    def set_health(self, capacity_ah: np.ndarray, r_factor: np.ndarray,
                   temperature_c: np.ndarray) -> None:
        """New capacities and resistance factors (the plant's ageing, `hil.aging`) from now
        on. SoC, a fraction, stays, and so does the OCV: the charge counted since the slow
        step is restated in the new capacity's units."""
        slope = self.ocv_per_a / self.soc_per_as  # V per unit SoC
        self.current_sum_a = self.current_sum_a * (capacity_ah * 3600.0 / self.capacity_as)
        self.capacity_as = capacity_ah * 3600.0
        self.soc_per_as = self.dt_s / self.capacity_as
        self.ocv_per_a = slope * self.soc_per_as
        self.r_factor = r_factor * self.spec.capacity_ah / self.chem.capacity_ah
        self._refresh_params(temperature_c)
        self._step_response(slope)

    def _refresh_params(self, temperature_c: np.ndarray) -> None:
        spec = self.spec
        shape = 1.0 + spec.low_soc_r_gain * np.exp(-np.maximum(self.soc, 0.0)
                                                   / spec.low_soc_r_width)
        r_scale = (shape * arrhenius_factor(temperature_c, spec.r_activation_j_per_mol)
                   * self.r_factor)
        self.r0_ohm = spec.r0_ohm * r_scale
        ones = np.ones_like(self.soc_at_slow)
        # Diffusion slows in the cold like a resistance rises: tau_d x Arrhenius.
        tau_d_s = (spec.diffusion_tau_s * ones
                   * arrhenius_factor(temperature_c, spec.diffusion_activation_j_per_mol))
        if self.n_modes:
            tau_d_s = tau_d_s * self.tau_spread[0]
        n = self.n_modes
        tau_s = np.concatenate([self.mode_share[:, None, None] * tau_d_s,
                                np.asarray(spec.rc_tau_s)[:, None, None] * ones])
        tau_s[n:] *= self.tau_spread[n:]
        self.a = np.exp(-self.dt_s / tau_s)
        self.r_rc_ohm = np.asarray(spec.rc_ohm)[:, None, None] * r_scale
        # Per A over one tick, exact for a constant current: a mode (SoC) gains
        # (2/3) / Q x tau (1 - a), an RC (V) R (1 - a).
        per_a = np.concatenate([2.0 / 3.0 / self.capacity_as * tau_s[:n], self.r_rc_ohm])
        self.b = per_a * (1.0 - self.a)
        self.static_lead_per_a = self.static_lead * tau_d_s / self.capacity_as

    def _step_response(self, slope: np.ndarray) -> None:
        """Each cell's voltage per A within one tick, and the groups' and pack's resistance."""
        self.r_step_ohm = (self.r0_ohm + (self.out * self.b).sum(axis=0)
                           + slope * self.static_lead_per_a)
        self.g_step_s = 1.0 / self.r_step_ohm
        self.group_r_ohm = 1.0 / self.g_step_s.sum(axis=1)
        self.pack_r_ohm = float(self.group_r_ohm.sum())

    def _interval_heat_w(self) -> np.ndarray:
        if self.ticks_since_slow == 0:
            return np.zeros_like(self.soc_at_slow)
        mean_sq_a2 = self.current_sq_sum / self.ticks_since_slow
        self.current_sq_sum = 0.0
        self.ticks_since_slow = 0
        v_rc = self.x[self.n_modes:]
        return self.r0_ohm * mean_sq_a2 + (v_rc * v_rc / self.r_rc_ohm).sum(axis=0)

    def prepare(self) -> tuple[float, float]:
        """Each cell's source voltage for the coming tick; returns the pack's Thevenin
        equivalent (EMF in V, resistance in ohm) at the terminals."""
        self.x *= self.a
        e = self.ocv_at_slow_v + self.ocv_per_a * self.current_sum_a + (
            self.out * self.x).sum(axis=0)
        return self._thevenin(e)

    def advance(self, group_current_a: np.ndarray | float) -> np.ndarray:
        """Steps the cells with each series group's current; returns the groups' terminal
        voltages."""
        i, v = self._flow(group_current_a)
        self.x += self.b * i
        return v

