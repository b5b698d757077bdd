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
from bms.data.csv_table import Findings, read_table
from bms.data.faults import names_in
from bms.data.validation import Problems
from hil.recorder import mask_from_hex

DEFAULT_TEMPERATURE_C = 25.0
COVER_MARGIN_V = 0.1  # how far past the profile's voltage limits a reading may go
MAX_CURRENT_A = 1e5  # beyond any pack: a unit or parsing mistake
MAX_TIME_S = 1e10  # three centuries


@dataclass(frozen=True, eq=False)
class Trace:
    time_s: np.ndarray  # (rows,)
    current_a: np.ndarray  # (rows,)
    cell_voltage_v: np.ndarray  # (rows, n_series)
    temperature_c: np.ndarray  # (rows, n_temp)
    bleeding: np.ndarray  # (rows, n_series) bool: bleed resistors on as each row was taken
    source: str


_NUMBERED = {prefix: re.compile(prefix + "[0-9]+") for prefix in ("v", "t")}


def _is_numbered(name: str, prefix: str) -> bool:
    return _NUMBERED[prefix].fullmatch(name) is not None


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
    table = read_table(path)
    header = table.header
    problems = Problems(table.source)
    if not table.check_header(problems, ("time_s", "current_a", "v1"),
                              "time_s, current_a, v1..vN and optionally t1..tM"):
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

    nums = table.numbers([header.index("time_s"), header.index("current_a"), *v_cols, *t_cols])
    names = [header[j] for j in nums.indices]
    found = Findings()
    width = len(header)
    found.add([row.line for row in nums.misshapen], 0,
              lambda k: _bad(nums.misshapen[k].line, "-", nums.misshapen[k].text[:60],
                             f"has {len(nums.misshapen[k].cells)} columns, the header has "
                             f"{width}"))
    lines, values = nums.lines, nums.values
    rows, cols = np.nonzero(~np.isfinite(values))
    found.add(lines[rows], cols, lambda k: _bad(lines[rows[k]], names[cols[k]],
                                                nums.cell(rows[k], cols[k]),
                                                "must be a finite number"))
    finite = np.flatnonzero(np.isfinite(values).all(axis=1))
    # A row whose time does not pass every time before it is left out, so the time it must
    # pass is the highest so far.
    time_s = values[finite, 0]
    previous_s = np.maximum.accumulate(np.concatenate(([-np.inf], time_s[:-1])))
    back = np.flatnonzero(time_s <= previous_s)
    found.add(lines[finite[back]], 0,
              lambda k: _bad(lines[finite[back[k]]], "time_s", float(time_s[back[k]]),
                             f"must be greater than the previous time "
                             f"({previous_s[back[k]]:g})"))
    kept = np.delete(finite, back)
    n_v = len(v_cols)
    _check_ranges(found, lines[kept], values[kept], n_v, chemistry)
    bleeding = np.zeros((kept.size, n_v), dtype=bool)
    mask_col = header.index("balancing_mask") if "balancing_mask" in header else None
    if mask_col is not None:
        bad_masks = []
        for k, i in enumerate(kept.tolist()):
            text = nums.rows[i].cells[mask_col]
            try:
                bleeding[k] = mask_from_hex(text.strip() or "0", n_v)
            except ValueError:
                bad_masks.append(i)
        found.add(lines[bad_masks], values.shape[1],
                  lambda k: _bad(lines[bad_masks[k]], "balancing_mask",
                                 nums.rows[bad_masks[k]].cells[mask_col],
                                 f"must be a hexadecimal mask of {n_v} cells (bit i = cell "
                                 "i + 1)"))
    if not table.rows:
        problems.items.append("the file has no data rows")
    found.report(problems)
    problems.raise_if_any()
    data = values[kept]
    temps = (data[:, 2 + n_v:] if t_cols
             else np.full((kept.size, 1), DEFAULT_TEMPERATURE_C))
    return Trace(data[:, 0], data[:, 1], data[:, 2:2 + n_v], temps, bleeding, table.source)


def _bad(line: int, column: str, value: object, why: str) -> str:
    return f"line {line}, column {column} = {value!r}: {why}"


def _check_ranges(found: Findings, lines: np.ndarray, values: np.ndarray, n_v: int,
                  chemistry: Chemistry) -> None:
    """The plausibility of rows of finite values (time_s, current_a, v1..vN, t1..tM), in that
    order within a row: an absurd current or time, a temperature no working sensor reads, a
    cell voltage the profile does not cover."""
    lim = chemistry.limits
    low_v, high_v = lim.v_min - COVER_MARGIN_V, lim.v_max + COVER_MARGIN_V
    lo_c, hi_c = TEMP_PLAUSIBLE_C
    temps, cells = values[:, 2 + n_v:], values[:, 2:2 + n_v]
    checks = (
        (values[:, 1:2], np.abs(values[:, 1:2]) > MAX_CURRENT_A, 0, lambda j: "current_a",
         f"must be within +/-{MAX_CURRENT_A:g} A"),
        (values[:, 0:1], np.abs(values[:, 0:1]) > MAX_TIME_S, 1, lambda j: "time_s",
         f"must be within +/-{MAX_TIME_S:g} s"),
        (temps, ~((lo_c < temps) & (temps < hi_c)), 2, lambda j: f"t{j + 1}",
         f"must be within ({lo_c:g}, {hi_c:g}) °C, what a working sensor reads"),
        (cells, (cells < low_v) | (cells > high_v), 2 + temps.shape[1], lambda j: f"v{j + 1}",
         f"outside the voltages the cell profile covers ({lim.v_min:g}-{lim.v_max:g} V, "
         f"+/-{COVER_MARGIN_V:g} V): use a profile for this cell"),
    )
    for block, out, first_place, name, why in checks:
        rows, cols = np.nonzero(out)
        found.add(lines[rows], first_place + cols,
                  lambda k, block=block, rows=rows, cols=cols, name=name, why=why: _bad(
                      lines[rows[k]], name(cols[k]), float(block[rows[k], cols[k]]), why))


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
