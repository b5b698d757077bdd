"""How well the fitted cell explains the data: the fitted chemistry driven with the measured
current, each row at its own interval (the 2-RC circuit integrated exactly for a current held
over the row, and the one-state hysteresis, as `hil.cells` does), at the counted SoC, and its
voltage against the measured one, per kind of segment, held-out rows apart.

The SoC is the counted one (from the nearest full charge, with the fitted capacity and
efficiency), not the model's own: a residual then says how well the voltage model fits, not
how far counting drifted over a file of days."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bms.data.chemistry import BELOW_EMPTY_SOC, Chemistry
from hil.fitting.segments import SLOW_C, SLOW_TOLERANCE, Segmented

KINDS = ("rest", "pulse", "slow", "step")


@dataclass(frozen=True)
class Residual:
    kind: str
    held_out: bool
    rows: int
    rms_mv: float
    max_mv: float

    def as_dict(self) -> dict:
        return {"kind": self.kind, "part": "held-out" if self.held_out else "fitted",
                "rows": self.rows, "rms_mv": round(self.rms_mv, 3),
                "max_mv": round(self.max_mv, 3)}


def simulate_v(chem: Chemistry, seg: Segmented, soc: np.ndarray) -> np.ndarray:
    """The fitted cell's terminal voltage at each row of `seg`, at SoC `soc`."""
    trace = seg.trace
    soc = np.clip(soc, -BELOW_EMPTY_SOC, 1.0)
    temp = trace.temp_c
    d_soc = np.diff(soc, prepend=soc[0])
    rate = chem.ocv.hysteresis_rate
    decay = np.exp(-rate * np.abs(d_soc))
    direction = np.sign(d_soc)
    h = np.empty(soc.size)
    state = 0.0
    for k in range(soc.size):  # h' = s + (h - s) e^(-rate |dSoC|); no move, no change
        if direction[k]:
            state = direction[k] + (state - direction[k]) * decay[k]
        h[k] = state
    ocv = chem.ocv.voltage_v(soc, h, temp)
    r0, r1, tau1, r2, tau2 = chem.ecm.lookup(soc, temp)
    i = trace.current_a
    a1, a2 = np.exp(-seg.dt_s / tau1), np.exp(-seg.dt_s / tau2)
    b1, b2 = r1 * (1.0 - a1) * i, r2 * (1.0 - a2) * i
    v_rc = np.empty(soc.size)
    x1 = x2 = 0.0
    for k in range(soc.size):  # exact for the row's current held over its interval
        x1 = a1[k] * x1 + b1[k]
        x2 = a2[k] * x2 + b2[k]
        v_rc[k] = x1 + x2
    return ocv + r0 * i + v_rc


def row_kinds(seg: Segmented, capacity_ah: float) -> np.ndarray:
    """Each row's kind of segment: rest, pulse, slow (<= C/20) or step (any other run)."""
    kinds = np.empty(seg.trace.time_s.size, dtype=object)
    for k, run in enumerate(seg.runs):
        if run.kind == "rest":
            kind = "rest"
        elif seg.is_pulse(k):
            kind = "pulse"
        elif abs(run.median_a) <= SLOW_C * SLOW_TOLERANCE * capacity_ah:
            kind = "slow"
        else:
            kind = "step"
        kinds[run.start:run.stop] = kind
    return kinds


def residuals(errors_v: list[np.ndarray], kinds: list[np.ndarray],
              held: list[np.ndarray]) -> list[Residual]:
    """RMS and largest |error| per kind, fitted rows and held-out rows apart."""
    err = np.concatenate(errors_v)
    kind = np.concatenate(kinds)
    out = np.concatenate(held)
    table = []
    for held_out in (False, True):
        for name in KINDS:
            pick = (kind == name) & (out == held_out)
            if pick.any():
                e = err[pick] * 1e3
                table.append(Residual(name, held_out, int(pick.sum()),
                                      float(np.sqrt(np.mean(e * e))), float(np.abs(e).max())))
    return table
