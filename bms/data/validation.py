"""One way to report bad input: collect every problem, then refuse the whole input.

Loaders (cell profiles, configuration, CSV files) call `Problems.add` for each bad
field and `Problems.raise_if_any` at the end, so the user sees every mistake at
once and nothing is half-applied. An error about an unknown name says which names were
meant with `close_names`, one rule for the CLI and MQTT.
"""

from __future__ import annotations

import csv
import difflib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


class InputError(ValueError):
    """Bad user input; the message names each bad field, its value and what is allowed."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


@dataclass
class Problems:
    """Accumulates problems found in one input (a file, a command-line value)."""

    source: str
    items: list[str] = field(default_factory=list)

    def add(self, where: str, value: object, allowed: str) -> None:
        self.items.append(f"{where} = {_shown(value)}: {allowed}")

    def check_range(
        self, where: str, value: float, low: float | None = None, high: float | None = None
    ) -> None:
        """Adds a problem when `value` is outside [low, high] (either bound optional) or NaN."""
        if (
            value != value
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            self.add(where, value, f"must be within [{lo}, {hi}]")

    def raise_if_any(self) -> None:
        if self.items:
            raise InputError(self.source, self.items)


def _shown(value: object) -> str:
    """repr(value), or what it is when Python refuses to write an int of over 4300 digits
    (TOML reads one from a long enough hex literal)."""
    try:
        return repr(value)
    except ValueError:
        return f"<a {type(value).__name__} too large to show>"


def close_names(text: str, names: Sequence[str], *, similar: int = 5, contains: bool = True,
                last_part: bool = True, limit: int = 6) -> list[str]:
    """The names a mistyped `text` may have meant, best first, each once, at most `limit`:
    those ending in `.text` (the section left out) or, with `contains`, holding a `text` of
    3 characters or more; then the `similar` closest spellings; then, with `last_part`,
    those whose last dotted part is spelled like `text`. The CLI takes the defaults; an
    MQTT reason, which may name several unknown parameters, asks for fewer."""
    near = [n for n in names
            if n.endswith("." + text) or (contains and len(text) >= 3 and text in n)]
    near += difflib.get_close_matches(text, names, n=similar, cutoff=0.6)
    if last_part:
        near += [n for n in names
                 if difflib.get_close_matches(text, [n.rsplit(".", 1)[-1]], cutoff=0.75)]
    return list(dict.fromkeys(near))[:limit]


def read_toml(path: str | Path) -> dict:
    """A TOML file's contents; InputError naming the file when it cannot be read or parsed."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(str(path), [f"not valid TOML: {exc}"]) from exc
    except ValueError as exc:  # a NUL in the name; an integer of over 4300 digits
        raise InputError(str(path), [f"cannot read the file: {exc}"]) from exc


def read_csv_rows(path: str | Path) -> list[list[str]]:
    """A CSV file's rows; InputError naming the file when it cannot be read."""
    return [row.cells for row in read_csv_lines(path)]


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
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = f.readlines()  # split where the csv reader splits: \n, \r\n or \r
        reader = csv.reader(lines)
        rows, line = [], 1
        for cells in reader:
            text = "".join(lines[line - 1:reader.line_num]).rstrip("\r\n")
            rows.append(CsvRow(line, cells, text))
            line = reader.line_num + 1
        return rows
    except OSError as exc:
        raise InputError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(str(path), [f"not a readable CSV text file: {exc}"]) from exc
    except ValueError as exc:  # a NUL in the name
        raise InputError(str(path), [f"cannot read the file: {exc}"]) from exc
