"""R0 and two RC pairs from a pulse (HPPC) test, with numpy alone.

The slow pair comes from the rest after a constant-current step (the RC voltages had
settled at R * I, so the rest shows each decaying from there): v(t) = OCV + a1 exp(-t/tau1)
+ a2 exp(-t/tau2), fitted by variable projection (the amplitudes are linear: for each pair
of time constants on a grid, least squares gives them at once; the best pair is refined on a
finer grid), and R = a / I. At C/3 the fast pair is a few millivolts there, so R0 and the
fast pair come from the pulses instead: each pulse with the rests about it is fitted as the
circuit the plant integrates (zero-order hold: a row's current held over its interval), the
slow pair known, with the OCV's drift over the pulse and the RC voltages left from before
it as further unknowns; again linear but for tau1, which is searched on a grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hil.fitting.segments import Segmented

TAU1_RANGE_S = (0.3, 60.0)
TAU2_RANGE_S = (10.0, 5000.0)
TAU_RATIO_MIN = 3.0  # the slow pair at least this much slower than the fast one
GRID = 36
RELAX_MIN_S = 600.0  # a rest this long after a step shows both pairs decay
RELAX_WINDOW_S = 3600.0  # the part of a rest fitted (an hour shows a tau of 20 min)
RELAX_MIN_ROWS = 20  # five parameters need a rest sampled more often than this
STEP_MIN_C = 0.1  # steps slower than C/10 move the voltage too little to fit
MERGE_SOC = 0.02  # relaxations this close in SoC are one table column
PULSE_BEFORE_S = 10.0  # rest rows before a pulse in its fit (the baseline)
PULSE_AFTER_S = 60.0  # rest rows after it (the fast pair's decay)


@dataclass(frozen=True, eq=False)
class Relaxation:
    """The RC pairs fitted to one rest after a step."""

    soc: float
    temperature_c: float
    start_s: float  # when the step before it started (its HPPC level begins there)
    step_a: float  # the step's current
    t_s: np.ndarray  # the rest's rows fitted: time since the step ended, and voltage
    voltage_v: np.ndarray
    r1_ohm: float
    tau1_s: float
    r2_ohm: float
    tau2_s: float
    rms_v: float


@dataclass(frozen=True, eq=False)
class Pulse:
    """A pulse with the rests about it: the rows a fit of R0 and the fast pair reads."""

    soc: float
    temperature_c: float
    time_s: float  # the onset
    t_s: np.ndarray
    dt_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray


def fit_two_exponentials(t_s: np.ndarray, v: np.ndarray, tau1_s: float | None = None
                         ) -> tuple[np.ndarray, float]:
    """(c0, a1, tau1, a2, tau2) and the rms residual of v = c0 + a1 e^(-t/tau1) +
    a2 e^(-t/tau2), tau1 < tau2 / TAU_RATIO_MIN; `tau1_s` given, tau1 is held to it."""
    tau1 = np.geomspace(*TAU1_RANGE_S, GRID) if tau1_s is None else np.array([tau1_s])
    tau2 = np.geomspace(*TAU2_RANGE_S, GRID)
    best = _best_pair(t_s, v, tau1, tau2)
    for _ in range(2):  # refine around the best pair, within the ranges
        t1 = tau1 if tau1_s is not None else np.clip(
            best[2] * np.geomspace(0.7, 1.4, 15), *TAU1_RANGE_S)
        t2 = np.clip(best[4] * np.geomspace(0.7, 1.4, 15), *TAU2_RANGE_S)
        best = _best_pair(t_s, v, t1, t2)
    params, sse = best[:5], best[5]
    return np.array(params), float(np.sqrt(sse / t_s.size))


def _best_pair(t_s: np.ndarray, v: np.ndarray, tau1: np.ndarray, tau2: np.ndarray):
    e1 = np.exp(-t_s[:, None] / tau1)  # (n, k1)
    e2 = np.exp(-t_s[:, None] / tau2)  # (n, k2)
    n = float(t_s.size)
    s1, s2 = e1.sum(0), e2.sum(0)
    s11, s22, s12 = (e1 * e1).sum(0), (e2 * e2).sum(0), e1.T @ e2
    b0, b1, b2 = v.sum(), e1.T @ v, e2.T @ v
    k1, k2 = tau1.size, tau2.size
    g = np.empty((k1, k2, 3, 3))
    g[..., 0, 0] = n
    g[..., 0, 1] = g[..., 1, 0] = s1[:, None]
    g[..., 0, 2] = g[..., 2, 0] = s2[None, :]
    g[..., 1, 1] = s11[:, None]
    g[..., 2, 2] = s22[None, :]
    g[..., 1, 2] = g[..., 2, 1] = s12
    g += np.eye(3) * 1e-12 * n
    b = np.stack(np.broadcast_arrays(b0, b1[:, None], b2[None, :]), axis=-1)
    x = np.linalg.solve(g, b[..., None])[..., 0]
    sse = float(v @ v) - (x * b).sum(-1)
    sse = np.where(tau2[None, :] >= TAU_RATIO_MIN * tau1[:, None], sse, np.inf)
    i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
    c0, a1, a2 = x[i, j]
    return c0, a1, float(tau1[i]), a2, float(tau2[j]), max(float(sse[i, j]), 0.0)


def relaxations(seg: Segmented, soc: np.ndarray, capacity_ah: float) -> list[Relaxation]:
    """The RC pairs from each rest of RELAX_MIN_S or more after a constant-current step of
    C/10 or more."""
    trace, found = seg.trace, []
    for k in range(1, len(seg.runs)):
        rest, step = seg.runs[k], seg.runs[k - 1]
        if (rest.kind != "rest" or rest.duration_s < RELAX_MIN_S or not seg.is_constant(step)
                or abs(step.median_a) < STEP_MIN_C * capacity_ah):
            continue
        t0 = trace.time_s[step.last]
        rows = np.arange(rest.start, rest.stop)
        rows = rows[trace.time_s[rows] - t0 <= RELAX_WINDOW_S]
        if rows.size < RELAX_MIN_ROWS:
            continue
        params, rms_v = fit_two_exponentials(trace.time_s[rows] - t0, trace.voltage_v[rows])
        _, a1, tau1, a2, tau2 = params
        current_a = step.median_a
        r1, r2 = max(a1 / current_a, 0.0), max(a2 / current_a, 0.0)
        found.append(Relaxation(float(soc[step.last]), float(trace.temp_c[rows].mean()),
                                float(trace.time_s[step.start]), current_a,
                                trace.time_s[rows] - t0, trace.voltage_v[rows],
                                r1, tau1, r2, tau2, rms_v))
    return found


def pulses(seg: Segmented, soc: np.ndarray) -> list[Pulse]:
    """Each pulse, with up to PULSE_BEFORE_S of rest before it and PULSE_AFTER_S after."""
    trace, found = seg.trace, []
    t = trace.time_s
    for k, run in enumerate(seg.runs):
        if not seg.is_pulse(k):
            continue
        before = seg.runs[k - 1]
        after_stop = (seg.runs[k + 1].stop if k + 1 < len(seg.runs)
                      and seg.runs[k + 1].kind == "rest" else run.stop)
        first = int(np.searchsorted(t, t[run.start] - PULSE_BEFORE_S))
        first = max(first, before.start, run.start - 1 if run.start else 0)
        last = int(np.searchsorted(t, t[run.last] + PULSE_AFTER_S, side="right"))
        rows = np.arange(min(first, run.start - 1), min(last, after_stop))
        found.append(Pulse(float(soc[run.start]), float(trace.temp_c[run.start]),
                           float(t[run.start]), t[rows], seg.dt_s[rows],
                           trace.current_a[rows], trace.voltage_v[rows]))
    return found


def fit_pulse(p: Pulse, r2_ohm: float, tau2_s: float) -> tuple[float, float, float, float]:
    """(r0, r1, tau1, rms_v) of one pulse, the slow pair (r2, tau2) known: for each tau1 on
    a grid, least squares on v = c + R0 i + R1 u1 + k q + b1 e^(-t/tau1) + b2 e^(-t/tau2)
    - R2 u2, u the RC responses to the current (zero-order hold, unit resistance), q the
    charge (the OCV's drift), the b the RC voltages left from before the window."""
    i, dt = p.current_a, p.dt_s
    since = p.t_s - p.t_s[0]
    q_ah = np.cumsum(i * dt) / 3600.0
    slow = _zoh_response(i, np.exp(-dt / tau2_s)) * r2_ohm
    v = p.voltage_v - slow
    best = (np.inf, 0.0, 0.0, 1.0)
    for tau1 in np.geomspace(*TAU1_RANGE_S, 3 * GRID):
        u1 = _zoh_response(i, np.exp(-dt / tau1))
        design = np.column_stack((np.ones_like(v), i, u1, q_ah, np.exp(-since / tau1),
                                  np.exp(-since / tau2_s)))
        coef, *_ = np.linalg.lstsq(design, v, rcond=None)
        sse = float(np.sum((design @ coef - v) ** 2))
        if sse < best[0]:
            best = (sse, float(coef[1]), float(coef[2]), float(tau1))
    sse, r0, r1, tau1 = best
    return r0, max(r1, 0.0), tau1, float(np.sqrt(sse / v.size))


def _zoh_response(current_a: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """An RC voltage of unit resistance under `current_a`, each row's current held over its
    interval: x_k = a_k x_(k-1) + (1 - a_k) i_k, from 0."""
    x = np.empty(current_a.size)
    state = 0.0
    for k in range(current_a.size):
        state = decay[k] * state + (1.0 - decay[k]) * current_a[k]
        x[k] = state
    return x


def _by_soc(items: list, soc_of) -> list[list]:
    """`items` in groups of neighbours closer than MERGE_SOC in SoC, lowest first."""
    groups: list[list] = []
    for item in sorted(items, key=soc_of):
        if groups and soc_of(item) - soc_of(groups[-1][-1]) < MERGE_SOC:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def slow_pair(r: Relaxation, tau1_s: float) -> tuple[float, float]:
    """(r2, tau2) of a relaxation fitted again with tau1 held to the pulses' (a C/3 step's
    fast pair is a few millivolts: free, it can take the slow pair's place)."""
    params, _ = fit_two_exponentials(r.t_s, r.voltage_v, tau1_s)
    return max(params[3] / r.step_a, 0.0), float(params[4])


def ecm_columns(relax: list[Relaxation], pulse: list[Pulse]) -> dict[str, np.ndarray]:
    """One table row: soc and the five parameters at each SoC a relaxation or a level of
    pulses was taken at (neighbours closer than MERGE_SOC are one). The slow pair comes from
    the relaxations, R0 and the fast pair from the pulses (each fitted with the slow pair at
    its SoC); either is interpolated (flat beyond its ends) where the other was measured.
    Twice: the second time the relaxations are fitted with tau1 held to the pulses'."""
    relax_groups = _by_soc(relax, lambda r: r.soc)
    relax_soc = np.array([np.mean([r.soc for r in g]) for g in relax_groups])
    pulse_groups = _by_soc(pulse, lambda p: p.soc)
    pulse_soc = np.array([np.mean([p.soc for p in g]) for g in pulse_groups])
    slow = _slow_columns([[(r.r2_ohm, r.tau2_s) for r in g] for g in relax_groups])
    fast = _fast_columns(pulse_groups, relax_soc, slow)
    slow = _slow_columns([[slow_pair(r, float(np.interp(r.soc, pulse_soc, fast["tau1_s"])))
                           for r in g] for g in relax_groups])
    fast = _fast_columns(pulse_groups, relax_soc, slow)
    soc = list(relax_soc)
    soc += [s for s in pulse_soc if np.min(np.abs(relax_soc - s)) >= MERGE_SOC]
    soc = np.clip(np.sort(soc), 0.0, 1.0)
    cols = {"soc": soc}
    cols.update({key: np.interp(soc, pulse_soc, values) for key, values in fast.items()})
    cols.update({key: np.interp(soc, relax_soc, values) for key, values in slow.items()})
    return cols


def _slow_columns(pairs: list[list[tuple[float, float]]]) -> dict[str, np.ndarray]:
    """r2 and tau2 per column: the mean over each column's relaxations."""
    return {"r2_ohm": np.array([np.mean([p[0] for p in g]) for g in pairs]),
            "tau2_s": np.array([np.mean([p[1] for p in g]) for g in pairs])}


def _fast_columns(pulse_groups: list[list[Pulse]], relax_soc: np.ndarray,
                  slow: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """r0, r1 and tau1 per level of pulses: the median over its pulses, each fitted with the
    slow pair at its SoC."""
    fast: dict[str, list[float]] = {"r0_ohm": [], "r1_ohm": [], "tau1_s": []}
    for group in pulse_groups:
        fits = np.array([fit_pulse(p, float(np.interp(p.soc, relax_soc, slow["r2_ohm"])),
                                   float(np.interp(p.soc, relax_soc, slow["tau2_s"])))[:3]
                         for p in group])
        for key, column in zip(fast, fits.T, strict=True):
            fast[key].append(float(np.median(column)))
    return fast
