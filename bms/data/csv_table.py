"""CSV files of numbers (a replay trace, a load profile, a recorded run) read one way, in time
linear in rows x columns: the cells become one float array in a single numpy conversion, the
checks run on whole columns, and only the problems that are shown are written out.

A reader quotes each problem with its line and the value as written, so the rows keep the
line they start on and their text (`CsvRow`); problems are collected as (line, place in the
row) keys (`Findings`) and sorted once, so a file with a million bad cells costs one sort,
not a million messages.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bms.data.validation import InputError, NotText, Problems, read_text_bounded

MAX_REPORTED = 20  # problems listed before "... and N more"
MAX_CSV_CHARS = 2**31  # the reader holds a file in memory, several times over


class CsvRow(NamedTuple):
    """One row of a CSV file: the line it starts on, its cells, and its text as written
    (a quoted cell may hold commas and line breaks, so an error quotes `text`, not the
    cells joined again)."""

    line: int
    cells: list[str]
    text: str


def read_csv_lines(path: str | Path) -> list[CsvRow]:
    """A CSV file's rows, each with the line it starts on and its text as written;
    InputError naming the file when it cannot be read."""
    path = Path(path)
    try:
        # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
        text = read_text_bounded(path, MAX_CSV_CHARS, encoding="utf-8-sig", newline="")
        # split where the csv reader splits: \n, \r\n or \r
        lines = io.StringIO(text, newline="").readlines()
        del text
        reader = csv.reader(lines)
        rows, line = [], 1
        for cells in reader:
            text = "".join(lines[line - 1:reader.line_num]).rstrip("\r\n")
            rows.append(CsvRow(line, cells, text))
            line = reader.line_num + 1
        return rows
    except OSError as exc:
        raise InputError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except (NotText, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(str(path), [f"not a readable CSV text file: {exc}"]) from exc
    except ValueError as exc:  # a NUL in the name
        raise InputError(str(path), [f"cannot read the file: {exc}"]) from exc


@dataclass(frozen=True, eq=False)
class Numbers:
    """Some columns of a table's well-shaped rows, as numbers."""

    rows: list[CsvRow]  # the data rows with as many fields as the header
    indices: tuple[int, ...]  # where each column read is in the header
    values: np.ndarray  # (len(rows), len(indices)) float; NaN where a cell is no number
    is_number: np.ndarray  # (len(rows), len(indices)) bool: the cell reads as a number
    misshapen: list[CsvRow]  # data rows with more or fewer fields than the header

    @property
    def lines(self) -> np.ndarray:
        """The line each row of `values` starts on."""
        return np.fromiter((row.line for row in self.rows), dtype=np.int64, count=len(self.rows))

    def cell(self, row: int, column: int) -> str:
        """The cell behind values[row, column], as written."""
        return self.rows[row].cells[self.indices[column]]


@dataclass(frozen=True, eq=False)
class CsvTable:
    """A CSV file: its header (names stripped) and its data rows (blank rows left out)."""

    source: str
    header: list[str]
    first: CsvRow | None  # the header row as written; None for an empty file
    rows: list[CsvRow]

    def check_header(self, problems: Problems, required: Sequence[str], need: str) -> bool:
        """Adds a problem for a column named twice and for missing `required` columns (`need`
        says what a file needs); True when every required column is there."""
        twice = sorted(name for name, count in Counter(self.header).items() if count > 1 and name)
        if twice:
            problems.add("line 1 (header)", twice[0], "a column name appears more than once")
        missing = [c for c in required if c not in self.header]
        if missing:
            problems.add("line 1 (header)", self.first.text[:80] if self.first else "",
                         f"missing column(s) {', '.join(missing)}; need {need}")
        return not missing

    def numbers(self, columns: Sequence[int]) -> Numbers:
        """The columns at these header indices as floats, every cell of every row whose field
        count is the header's: one conversion of the whole block, and column by column only
        when a cell is no number (to find it)."""
        width = len(self.header)
        good = [row for row in self.rows if len(row.cells) == width]
        misshapen = [row for row in self.rows if len(row.cells) != width]
        shape = (len(good), len(columns))
        if not columns or not good:
            return Numbers(good, tuple(columns), np.zeros(shape), np.ones(shape, dtype=bool),
                           misshapen)
        pick = itemgetter(*columns) if len(columns) > 1 else (lambda cells: (cells[columns[0]],))
        cells = [pick(row.cells) for row in good]
        try:
            values = np.array(cells, dtype=float).reshape(shape)
            is_number = np.ones(shape, dtype=bool)
        except ValueError:
            values, is_number = _column_by_column(cells, shape)
        return Numbers(good, tuple(columns), values, is_number, misshapen)


def _column_by_column(cells: list[tuple[str, ...]], shape: tuple[int, int]):
    """values and is_number of a block that holds a cell that is no number."""
    values = np.full(shape, np.nan)
    is_number = np.zeros(shape, dtype=bool)
    for j in range(shape[1]):
        column = [row[j] for row in cells]
        try:
            values[:, j] = np.array(column, dtype=float)
            is_number[:, j] = True
        except ValueError:
            for i, text in enumerate(column):
                try:
                    values[i, j] = float(text)
                    is_number[i, j] = True
                except ValueError:
                    pass
    return values, is_number


def read_table(path: str | Path) -> CsvTable:
    """A CSV file as a header and data rows; InputError naming the file when it cannot be
    read (see `read_csv_lines`)."""
    rows = read_csv_lines(path)
    first = rows[0] if rows else None
    header = [name.strip() for name in first.cells] if first else []
    data = [row for row in rows[1:] if any(cell.strip() for cell in row.cells)]
    return CsvTable(str(path), header, first, data)


@dataclass
class Findings:
    """Problems in a table's rows, kept as (line, place in the row) keys with a way to word
    each, so that they sort in file order and only those shown are worded."""

    _parts: list[tuple[np.ndarray, np.ndarray, Callable[[int], str]]] = field(
        default_factory=list)

    def add(self, lines: np.ndarray | Sequence[int], place: int | np.ndarray,
            describe: Callable[[int], str]) -> None:
        """Problems on `lines` (a problem's `place` orders those of one line);
        `describe(k)` words the k-th."""
        lines = np.asarray(lines, dtype=np.int64)
        places = np.broadcast_to(np.asarray(place, dtype=np.int64), lines.shape)
        if lines.size:
            self._parts.append((lines, places, describe))

    def __len__(self) -> int:
        return sum(lines.size for lines, _, _ in self._parts)

    def report(self, problems: Problems, limit: int = MAX_REPORTED) -> None:
        """The first `limit` problems in file order into `problems`, then how many more."""
        if not self._parts:
            return
        lines = np.concatenate([lines for lines, _, _ in self._parts])
        places = np.concatenate([places for _, places, _ in self._parts])
        part = np.concatenate([np.full(p[0].size, i) for i, p in enumerate(self._parts)])
        within = np.concatenate([np.arange(p[0].size) for p in self._parts])
        shown = np.lexsort((places, lines))[:limit]
        problems.items.extend(self._parts[part[k]][2](int(within[k])) for k in shown)
        if lines.size > limit:
            problems.items.append(f"... and {lines.size - limit} more")
