"""A lab data file (`time_s,current_a,voltage_v[,temp_c]`, one cell, positive = charging),
read and checked whole before any fitting: a bad file is refused with every problem named
by its line and column, so that a fit never runs on half a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms.data.csv_table import Findings, read_table
from bms.data.validation import Problems

REQUIRED_COLUMNS = ("time_s", "current_a", "voltage_v")
OPTIONAL_COLUMNS = ("temp_c",)
DEFAULT_TEMPERATURE_C = 25.0  # a file without temp_c was taken at room temperature
MIN_ROWS = 10


@dataclass(frozen=True, eq=False)
class LabTrace:
    """One file's samples; `line` is each row's line in the file, for the messages."""

    source: str
    time_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    temp_c: np.ndarray
    line: np.ndarray

    @property
    def temperature_c(self) -> float:
        """The temperature the file was taken at: the median of its readings."""
        return float(np.median(self.temp_c))


def read_lab_csv(path: str | Path) -> LabTrace:
    """Reads one lab file; InputError names the file and every bad line and column."""
    table = read_table(path)
    header = table.header
    problems = Problems(table.source)
    table.check_header(problems, REQUIRED_COLUMNS,
                       "time_s,current_a,voltage_v and optionally temp_c")
    problems.raise_if_any()
    names = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in header]
    nums = table.numbers([header.index(c) for c in names])
    found = Findings()
    found.add([row.line for row in nums.misshapen], 0,
              lambda k: f"line {nums.misshapen[k].line}: has {len(nums.misshapen[k].cells)} "
              f"columns, the header has {len(header)}")
    lines, values = nums.lines, nums.values
    rows, cols = np.nonzero(~np.isfinite(values))
    found.add(lines[rows], cols, lambda k: f"line {lines[rows[k]]}, column {names[cols[k]]} "
              f"= {nums.cell(rows[k], cols[k])!r}: must be a finite number")
    finite = np.flatnonzero(np.isfinite(values).all(axis=1))
    time_s = values[finite, 0]
    back = np.flatnonzero(np.diff(time_s) <= 0) + 1
    found.add(lines[finite[back]], 0,
              lambda k: f"line {lines[finite[back[k]]]}, column time_s = "
              f"{time_s[back[k]]:g}: must be greater than the previous row's time "
              f"({time_s[back[k] - 1]:g}): time must go forward")
    if len(table.rows) < MIN_ROWS:
        problems.items.append(f"the file has {len(table.rows)} data rows; a fit needs at "
                              f"least {MIN_ROWS}")
    found.report(problems)
    problems.raise_if_any()
    data = values[finite]
    temp_c = data[:, 3] if "temp_c" in names else np.full(data.shape[0], DEFAULT_TEMPERATURE_C)
    return LabTrace(table.source, data[:, 0], data[:, 1], data[:, 2], temp_c, lines[finite])
