"""Replay: the firmware on recorded measurements instead of the simulated pack.

Why and how: docs/internals.md, hil/replay.py.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from bms.core.firmware import Firmware
from bms.core.signals import OPEN, Actuation, Measurement
from bms.data.chemistry import Chemistry
from bms.data.config import TEMP_PLAUSIBLE_C, FirmwareConfig
from bms.data.faults import names_in
from bms.data.validation import Problems, read_csv_lines
from hil.recorder import mask_from_hex

DEFAULT_TEMPERATURE_C = 25.0
COVER_MARGIN_V = 0.1  # how far past the profile's voltage limits a reading may go
MAX_CURRENT_A = 1e5  # beyond any pack: a unit or parsing mistake
MAX_TIME_S = 1e10  # three centuries
MAX_REPORTED = 20  # problems listed before "... and N more"


@dataclass(frozen=True, eq=False)
class Trace:
    time_s: np.ndarray  # (rows,)
    current_a: np.ndarray  # (rows,)
    cell_voltage_v: np.ndarray  # (rows, n_series)
    temperature_c: np.ndarray  # (rows, n_temp)
    bleeding: np.ndarray  # (rows, n_series) bool: bleed resistors on as each row was taken
    source: str


def _is_numbered(name: str, prefix: str) -> bool:
    return re.fullmatch(prefix + r"[0-9]+", name) is not None


def _column_number(name: str) -> int:
    """The N of a column vN or tN; int() refuses N of over 4300 digits, and an N of over 18
    is past any column there is."""
    digits = name[1:].lstrip("0")
    return int(digits or "0") if len(digits) <= 18 else sys.maxsize


def _numbered_columns(header: list[str], prefix: str) -> list[int]:
    """Indices of prefix1, prefix2, ... in order, up to the first number missing."""
    where = {name: j for j, name in enumerate(header)}
    indices = []
    while f"{prefix}{len(indices) + 1}" in where:
        indices.append(where[f"{prefix}{len(indices) + 1}"])
    return indices


def read_trace(path: str | Path, chemistry: Chemistry) -> Trace:
    """Reads and checks a measurement CSV; InputError lists every problem with its line."""
    source = str(path)
    numbered = read_csv_lines(path)
    rows = [row.cells for row in numbered]
    problems = Problems(source)
    header = [h.strip() for h in rows[0]] if rows else []
    twice = sorted({h for h in header if header.count(h) > 1 and h})
    if twice:
        problems.add("line 1 (header)", twice[0], "a column name appears more than once")
    missing = [c for c in ("time_s", "current_a", "v1") if c not in header]
    if missing:
        problems.add("line 1 (header)", numbered[0].text[:80] if numbered else "",
                     f"missing column(s) {', '.join(missing)}; need time_s, current_a, "
                     "v1..vN and optionally t1..tM")
        problems.raise_if_any()
    v_cols = _numbered_columns(header, "v")
    t_cols = _numbered_columns(header, "t")
    for prefix, cols in (("v", v_cols), ("t", t_cols)):
        stray = sorted(h for h in header
                       if _is_numbered(h, prefix) and _column_number(h) > len(cols))
        if stray:
            problems.add("line 1 (header)", stray[0],
                         f"{prefix}{len(cols) + 1} is missing: columns {prefix}1.. must be "
                         "numbered without gaps")
    problems.raise_if_any()

    used = [header.index("time_s"), header.index("current_a"), *v_cols, *t_cols]
    names = [header[j] for j in used]
    lim = chemistry.limits
    low_v, high_v = lim.v_min - COVER_MARGIN_V, lim.v_max + COVER_MARGIN_V
    table: list[list[float]] = []
    masks: list[np.ndarray] = []
    mask_col = header.index("balancing_mask") if "balancing_mask" in header else None
    no_bleed = np.zeros(len(v_cols), dtype=bool)
    found: list[str] = []

    def bad(line_no: int, column: str, value: object, why: str) -> None:
        found.append(f"line {line_no}, column {column} = {value!r}: {why}")

    for line_no, row, text in numbered[1:]:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            bad(line_no, "-", text[:60],
                f"has {len(row)} columns, the header has {len(header)}")
            continue
        values = []
        for j, name in zip(used, names, strict=True):
            try:
                x = float(row[j])
            except ValueError:
                x = math.nan
            if not math.isfinite(x):
                bad(line_no, name, row[j], "must be a finite number")
            values.append(x)
        if not all(map(math.isfinite, values)):
            continue
        if table and values[0] <= table[-1][0]:
            bad(line_no, "time_s", values[0],
                f"must be greater than the previous time ({table[-1][0]:g})")
            continue
        if abs(values[1]) > MAX_CURRENT_A:
            bad(line_no, "current_a", values[1], f"must be within +/-{MAX_CURRENT_A:g} A")
        if abs(values[0]) > MAX_TIME_S:
            bad(line_no, "time_s", values[0], f"must be within +/-{MAX_TIME_S:g} s")
        lo_c, hi_c = TEMP_PLAUSIBLE_C
        for k, temp in enumerate(values[2 + len(v_cols):]):
            if not lo_c < temp < hi_c:
                bad(line_no, f"t{k + 1}", temp,
                    f"must be within ({lo_c:g}, {hi_c:g}) °C, what a working sensor reads")
        cells = values[2:2 + len(v_cols)]
        for k, v in enumerate(cells):
            if not low_v <= v <= high_v:
                bad(line_no, f"v{k + 1}", v,
                    f"outside the voltages the cell profile covers ({lim.v_min:g}-"
                    f"{lim.v_max:g} V, +/-{COVER_MARGIN_V:g} V): use a profile for this cell")
        mask = no_bleed
        if mask_col is not None:
            try:
                mask = mask_from_hex(row[mask_col].strip() or "0", len(v_cols))
            except ValueError:
                bad(line_no, "balancing_mask", row[mask_col],
                    f"must be a hexadecimal mask of {len(v_cols)} cells (bit i = cell i + 1)")
        table.append(values)
        masks.append(mask)
    if not table and not found:
        found.append("the file has no data rows")
    if found:
        extra = len(found) - MAX_REPORTED
        problems.items.extend(found[:MAX_REPORTED])
        if extra > 0:
            problems.items.append(f"... and {extra} more")
        problems.raise_if_any()
    data = np.array(table)
    n_v = len(v_cols)
    temps = (data[:, 2 + n_v:] if t_cols
             else np.full((len(table), 1), DEFAULT_TEMPERATURE_C))
    return Trace(data[:, 0], data[:, 1], data[:, 2:2 + n_v], temps, np.array(masks), source)


def replay_config(config: FirmwareConfig) -> FirmwareConfig:
    """The configuration for a replay: the recorded current says nothing of contactors."""
    never = math.inf
    return dataclasses.replace(
        config,
        estimation=dataclasses.replace(config.estimation, learn_offset_when_open=False),
        precharge=dataclasses.replace(config.precharge, done_current_a=never),
        contactors=dataclasses.replace(config.contactors, weld_current_a=never),
        balancing=dataclasses.replace(config.balancing, mode="off"),
        protection=tuple(dataclasses.replace(row, threshold=never)
                         if row.quantity == "idle_current_a" else row
                         for row in config.protection))


def output_columns(n_series: int) -> list[str]:
    return (["time_s", "soc_pct", *(f"soc{i + 1}_pct" for i in range(n_series)), "state",
             "faults", "soh_pct", "resistance_pct", "current_offset_a", "remaining_wh",
             "runtime_reference_s", "charge_limit_a", "discharge_limit_a"])


def replay(trace: Trace, firmware: Firmware, out: TextIO) -> Actuation:
    """Runs the firmware over the trace, writing one output row per input row."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(output_columns(trace.cell_voltage_v.shape[1]))
    contactors = OPEN
    act = None
    for k in range(trace.time_s.size):
        v = trace.cell_voltage_v[k]
        bus_v = float(v.sum()) if contactors.main_closed or contactors.precharge else 0.0
        m = Measurement(cell_voltage_v=v, temperature_c=trace.temperature_c[k],
                        current_a=float(trace.current_a[k]), bus_voltage_v=bus_v,
                        contactors=contactors, balancing=trace.bleeding[k])
        act = firmware.step(m, float(trace.time_s[k]))
        contactors = act.contactors
        e = act.estimate
        writer.writerow([
            f"{trace.time_s[k]:.3f}", f"{act.soc * 100:.3f}",
            *(f"{x * 100:.3f}" for x in e.cell_soc.tolist()),
            act.state, "|".join(names_in(act.fault_bitmap)), f"{e.soh_pct:.2f}",
            f"{e.resistance_pct:.2f}", f"{e.current_offset_a:.5f}", f"{e.remaining_wh:.3f}",
            f"{e.runtime_reference_s:.1f}", f"{act.charge_limit_a:.3f}",
            f"{act.discharge_limit_a:.3f}",
        ])
    return act
