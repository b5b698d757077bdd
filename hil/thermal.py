"""Lumped thermal model: one node per cell, coupled to its series neighbours and to ambient.

C dT/dt = P_heat + (T_ambient - T) / R_ambient + (T_left + T_right - 2 T) / R_neighbour

Integrated explicitly with as many sub-steps as stability needs for the chosen tick
(the shortest node time constant divided by four).
"""

from __future__ import annotations

import math

import numpy as np

from bms.data.chemistry import ThermalParams


class ThermalModel:
    def __init__(self, params: ThermalParams, temperature_c: np.ndarray, ambient_c: float,
                 dt_s: float):
        self.temperature_c = np.array(temperature_c, dtype=float)
        self.ambient_c = ambient_c
        self.heat_capacity_j_per_k = params.heat_capacity_j_per_k
        self.g_neighbour_w_per_k = 1.0 / params.resistance_to_neighbour_k_per_w
        self.g_ambient_w_per_k = np.full_like(
            self.temperature_c, 1.0 / params.resistance_to_ambient_k_per_w
        )
        self.dt_s = dt_s
        # Fastest node: full neighbour coupling on both sides plus ambient.
        tau_min_s = params.heat_capacity_j_per_k / (
            2.0 * self.g_neighbour_w_per_k + 1.0 / params.resistance_to_ambient_k_per_w
        )
        self.substeps = max(1, math.ceil(dt_s / (0.25 * tau_min_s)))

    def set_cooling_factor(self, resistance_factor: float) -> None:
        """Multiplies every cell's thermal resistance to ambient (a cooling failure)."""
        self.g_ambient_w_per_k = self.g_ambient_w_per_k / resistance_factor

    def advance(self, heat_w: np.ndarray) -> None:
        h = self.dt_s / self.substeps / self.heat_capacity_j_per_k
        t = self.temperature_c
        for _ in range(self.substeps):
            flow_w = heat_w + self.g_ambient_w_per_k * (self.ambient_c - t)
            if t.shape[0] > 1:
                # What np.diff(t, axis=0) gives, without its wrapper (a visible share here).
                step = (t[1:] - t[:-1]) * self.g_neighbour_w_per_k
                flow_w[:-1] += step
                flow_w[1:] -= step
            t = t + h * flow_w
        self.temperature_c = t
