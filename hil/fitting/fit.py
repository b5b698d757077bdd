"""From lab files to a cell profile: segment, count, fit the ECM, the OCV, the capacity and
the efficiency, check the profile loads, and validate it on held-out data.

Held out (with `holdout` > 0): a share of the HPPC levels (every round(1/holdout)-th, from
the middle of each run of levels, with its pulses: the table then interpolates over it) and,
when there are two cycles or more, the last full cycle (left out of capacity and
efficiency). Every test missing is told at once, naming the test that would give it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bms.data.chemistry import Chemistry, parse_profile
from bms.data.validation import InputError, Problems
from hil.fitting import capacity as cap
from hil.fitting import ecm_fit, ocv_fit
from hil.fitting.lab_data import LabTrace, read_lab_csv
from hil.fitting.segments import (
    REST_C,
    Segmented,
    capacity_guess_ah,
    end_voltages,
    find_events,
    soc_reference,
    split_runs,
    without_offset,
)
from hil.fitting.validation import Residual, residuals, row_kinds, simulate_v

SAME_TEMPERATURE_C = 5.0  # files within this of each other were taken at one temperature
LIMIT_MARGIN_V = 0.02  # v_max above the charge voltage when the data never went higher


@dataclass(frozen=True)
class FitOptions:
    name: str = "fitted-cell"
    holdout: float = 0.2
    v_min: float | None = None
    v_max: float | None = None


@dataclass(frozen=True, eq=False)
class FitResult:
    profile: dict
    chemistry: Chemistry
    residuals: list[Residual]
    held_out: list[str]
    notes: list[str] = field(default_factory=list)
    # per file: (time_s, measured V, model V, held-out mask), for plots
    traces: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=list)


def read_all(paths: list[str]) -> list[LabTrace]:
    problems = Problems("bms-emu fit")
    traces = [problems.take(read_lab_csv, p) for p in paths]
    problems.raise_if_any()
    return traces  # type: ignore[return-value]


def fit_cell(traces: list[LabTrace], options: FitOptions) -> FitResult:
    """The profile fitted to `traces`; InputError naming each missing test."""
    problems = Problems("bms-emu fit")
    c_guess = capacity_guess_ah(traces)
    traces = [without_offset(t, REST_C * c_guess)[0] for t in traces]
    segs = [split_runs(t, REST_C * c_guess) for t in traces]
    top_v, bottom_v = end_voltages(segs)
    events = [find_events(s, top_v, bottom_v) for s in segs]
    if not any(e.kind == "full" for ev in events for e in ev):
        problems.items.append("no full charge found (a CC-CV charge to the charge voltage, "
                              "its current tapering off): every file must begin with one")
    cycles = [c for s, ev in zip(segs, events, strict=True) for c in cap.cycles(s, ev)]
    held_cycles = cycles[-1:] if options.holdout > 0 and len(cycles) >= 2 else []
    kept_cycles = [c for c in cycles if c not in held_cycles]
    held_fulls = {(id(c.seg), c.full_row) for c in held_cycles}
    discharges = [q for s, ev in zip(segs, events, strict=True)
                  for q in cap.full_discharges_ah(
                      s, [e for e in ev if (id(s), e.row) not in held_fulls])]
    if not discharges:
        problems.items.append("no full discharge found (from a full charge to the cut-off): "
                              "the capacity needs one, e.g. the C/20 discharge")
    problems.raise_if_any()
    capacity_ah = max(discharges)
    efficiency = (float(np.mean([c.efficiency for c in kept_cycles])) if kept_cycles
                  else None)
    notes = [] if kept_cycles else [
        "no full cycle (empty -> full -> empty at one rate): coulombic_efficiency left out "
        "(1.0)"]
    socs = []
    for seg, ev in zip(segs, events, strict=True):
        fulls = [e.row for e in ev if e.kind == "full"]
        if not fulls:
            problems.items.append(f"{seg.trace.source}: no full charge in this file: the SoC "
                                  "of its tests cannot be counted; begin it with a CC-CV "
                                  "charge")
            continue
        socs.append(soc_reference(seg, fulls, capacity_ah, efficiency or 1.0))
    problems.raise_if_any()

    groups = _temperature_groups(segs)
    held_windows: dict[int, list[tuple[float, float]]] = {
        id(c.seg): [] for c in held_cycles}
    for c in held_cycles:
        held_windows[id(c.seg)].append(c.span_s)
    held_names = [f"cycle {c.seg.trace.source} {c.span_s[0]:.0f}-{c.span_s[1]:.0f} s"
                  for c in held_cycles]
    columns = []
    for temp_c, members in groups:
        relax, pulses = [], []
        for k in members:
            relax += [(k, r) for r in ecm_fit.relaxations(segs[k], socs[k], capacity_ah)]
            pulses += [(k, p) for p in ecm_fit.pulses(segs[k], socs[k])]
        if not relax:
            problems.items.append(f"no rest of >= {ecm_fit.RELAX_MIN_S / 60:.0f} min after a "
                                  f"constant-current step (>= C/10) found at {temp_c:.0f} °C: "
                                  "the RC pairs need the HPPC test's SoC steps with 1 h rests")
        if not pulses:
            problems.items.append(f"no current pulses (<= 60 s after a rest) found at "
                                  f"{temp_c:.0f} °C: R0 needs the HPPC test's pulses")
        if not relax or not pulses:
            continue
        relax, pulses, held = _hold_out_levels(relax, pulses, segs, options.holdout)
        for k, start_s, stop_s, soc in held:
            held_windows.setdefault(id(segs[k]), []).append((start_s, stop_s))
            held_names.append(f"HPPC level at {100 * soc:.0f} % SoC ({temp_c:.0f} °C)")
        columns.append((temp_c, ecm_fit.ecm_columns([r for _, r in relax],
                                                    [p for _, p in pulses])))
    ref = min(range(len(groups)), key=lambda g: abs(groups[g][0] - 25.0))
    # Without an ECM (told above) the OCV's tests are still looked for, to tell all at once.
    ref_cols = dict(columns).get(groups[ref][0], {"soc": np.zeros(1), "r0_ohm": np.zeros(1),
                                                  "r1_ohm": 0.0, "r2_ohm": 0.0})
    r_dc = ref_cols["r0_ohm"] + ref_cols["r1_ohm"] + ref_cols["r2_ohm"]

    def r_dc_at(soc: np.ndarray, _temp_c: np.ndarray) -> np.ndarray:
        return np.interp(soc, ref_cols["soc"], r_dc)

    ref_segs = [(segs[k], socs[k]) for k in groups[ref][1]]
    branches = {}
    for direction, name, test in ((-1, "discharge", "a C/20 discharge from full"),
                                  (1, "charge", "a C/20 charge from empty")):
        samples = ocv_fit.slow_samples(ref_segs, direction, capacity_ah, r_dc_at)
        if not ocv_fit.usable(samples):
            samples = ocv_fit.rest_samples(ref_segs, direction)
        if not ocv_fit.usable(samples):
            problems.items.append(f"no slow {name} (<= C/20) found: the OCV's {name} branch "
                                  f"needs {test}, or rests of >= 30 min after {name} steps "
                                  "across the SoC range")
            continue
        branches[name] = ocv_fit.on_grid(samples)
        how = "slow runs" if samples.source == "slow" else "rest points"
        notes.append(f"OCV {name} branch from {how}")
    problems.raise_if_any()
    ecm = _ecm_section(columns)
    charge_v = float(top_v)
    charge = np.minimum(branches["charge"], charge_v)
    charge[-1] = charge_v  # 100 %: charged to the charge voltage, the taper gone to zero
    discharge = np.minimum(branches["discharge"], charge)
    all_v = np.concatenate([t.voltage_v for t in traces])
    v_min = options.v_min if options.v_min is not None else math.floor(
        100 * min(all_v.min(), discharge.min())) / 100
    v_max = options.v_max if options.v_max is not None else math.ceil(
        100 * max(all_v.max(), charge_v + LIMIT_MARGIN_V)) / 100
    sources = ", ".join(t.source for t in traces)
    profile = {
        "name": options.name,
        "description": f"fitted by bms-emu fit from {sources}",
        "capacity_ah": capacity_ah,
        **({"coulombic_efficiency": min(efficiency, 1.0)} if efficiency else {}),
        "limits": {"v_min": v_min, "v_max": v_max},
        "thresholds": {"charge_v": charge_v, "overvoltage_v": v_max},
        "ocv": {"soc_pct": ocv_fit.GRID_PCT.tolist(), "charge_v": charge.tolist(),
                "discharge_v": discharge.tolist()},
        "ecm": ecm,
    }
    try:
        chem = parse_profile(profile, "the fitted profile")
    except InputError as exc:
        raise InputError("bms-emu fit", ["the data gave a profile that is not valid (check "
                                         "--v-min / --v-max and the tests):",
                                         *exc.problems]) from exc
    errors, kinds, held, plots = [], [], [], []
    for seg, soc in zip(segs, socs, strict=True):
        model_v = simulate_v(chem, seg, soc)
        t = seg.trace.time_s
        out = np.zeros(t.size, dtype=bool)
        for start_s, stop_s in held_windows.get(id(seg), []):
            out |= (t >= start_s) & (t <= stop_s)
        errors.append(seg.trace.voltage_v - model_v)
        kinds.append(row_kinds(seg, capacity_ah))
        held.append(out)
        plots.append((seg.trace.source, t, seg.trace.voltage_v, model_v, out))
    return FitResult(profile, chem, residuals(errors, kinds, held), held_names, notes, plots)


def _temperature_groups(segs: list[Segmented]) -> list[tuple[float, list[int]]]:
    """Files grouped by the temperature they were taken at, coldest first."""
    order = sorted(range(len(segs)), key=lambda k: segs[k].trace.temperature_c)
    groups: list[tuple[float, list[int]]] = []
    for k in order:
        temp_c = segs[k].trace.temperature_c
        if groups and temp_c - groups[-1][0] < SAME_TEMPERATURE_C:
            groups[-1][1].append(k)
        else:
            groups.append((temp_c, [k]))
    return [(float(np.mean([segs[k].trace.temperature_c for k in ks])), ks) for _, ks in groups]


def _hold_out_levels(relax, pulses, segs, holdout: float):
    """Leaves out every round(1/holdout)-th HPPC level (its relaxation and the pulses up to
    the next level), keeping the first and last; returns what is kept and what was held."""
    order = sorted(relax, key=lambda kr: (kr[0], kr[1].start_s))
    if holdout <= 0 or len(order) < 3:
        return relax, pulses, []
    every = max(2, round(1.0 / holdout))
    held, kept = [], []
    for n, (k, r) in enumerate(order):
        is_held = n % every == every // 2 and 0 < n < len(order) - 1
        (held if is_held else kept).append((k, r, n))
    windows = []
    for k, r, n in held:
        nxt = order[n + 1][1].start_s if order[n + 1][0] == k else float(
            segs[k].trace.time_s[-1])
        windows.append((k, r.start_s, nxt, r.soc))
    kept_pulses = [(k, p) for k, p in pulses
                   if not any(k == w[0] and w[1] <= p.time_s < w[2] for w in windows)]
    return [(k, r) for k, r, _ in kept], kept_pulses, windows


def _ecm_section(columns: list[tuple[float, dict[str, np.ndarray]]]) -> dict:
    """The profile's [ecm]: the tables on the SoC columns of the group nearest 25 °C, one row
    per temperature (a single temperature: one list per parameter)."""
    ref_temp, ref = min(columns, key=lambda tc: abs(tc[0] - 25.0))
    soc = ref["soc"]
    section: dict = {"soc_pct": [round(100 * s, 2) for s in soc]}
    section["temperature_c"] = [round(t, 1) for t, _ in columns]
    for key in ("r0_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s"):
        rows = [np.interp(soc, cols["soc"], cols[key]).tolist() for _, cols in columns]
        section[key] = rows if len(rows) > 1 else rows[0]
    if len(columns) == 1:
        section["temperature_c"] = [round(ref_temp, 1)]
    return section
