"""Fuzzing the replay CSV reader (`hil.replay.read_trace`).

Any text or bytes — a good trace with cells, rows or bytes changed, quoted cells across
lines, a byte-order mark, CRLF line ends — gives a Trace that holds every data row, each
one finite, in time order and inside what the cell profile covers; or InputError whose
every problem names a line of the file (`line 7, column v2 = 'x': ...`), and a line that
holds the value it quotes; never another exception.
"""

from __future__ import annotations

import ast
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bms.data.config import TEMP_PLAUSIBLE_C
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from hil.replay import COVER_MARGIN_V, MAX_CURRENT_A, Trace, read_trace
from tests.fuzz.mutations import mutated, mutated_text

CHEM = PRESETS["na-nfm"]  # cells 1.5..4.1 V
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A problem that names no line: about the whole file, or the count of those not listed.
WHOLE_FILE = ("the file has no data rows", "... and ", "cannot read the file",
              "not a readable CSV text file")


@st.composite
def trace_rows(draw: st.DrawFn) -> list[list[str]]:
    """A good trace as cells: header, then rows of increasing time."""
    n_v, n_t = draw(st.integers(1, 4)), draw(st.integers(0, 2))
    extras = draw(st.lists(st.sampled_from(["balancing_mask", "note", "soc_pct"]),
                           unique=True, max_size=2))
    header = ["time_s", "current_a", *(f"v{i + 1}" for i in range(n_v)),
              *(f"t{i + 1}" for i in range(n_t)), *extras]
    header = draw(st.permutations(header))
    rows, time_s = [header], 0.0
    for _ in range(draw(st.integers(1, 6))):
        time_s += draw(st.sampled_from([0.1, 1.0, 2.5]))
        cells = {"time_s": f"{time_s:.3f}", "current_a": f"{draw(st.floats(-50, 50)):.3f}",
                 "balancing_mask": f"{draw(st.integers(0, 2**n_v - 1)):x}", "note": "ok",
                 "soc_pct": "50"}
        cells |= {f"v{i + 1}": f"{draw(st.floats(3.0, 3.9)):.4f}" for i in range(n_v)}
        cells |= {f"t{i + 1}": f"{draw(st.floats(-10, 45)):.1f}" for i in range(n_t)}
        rows.append([cells[name] for name in header])
    return rows


def as_text(rows: list[list[str]], line_end: str = "\n") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=line_end).writerows(rows)
    return out.getvalue()


# What a bad cell may hold: not a number, not finite, far out of range, empty, a quoted
# text across lines, a comma.
BAD_CELLS = st.sampled_from(["", "x", "nan", "inf", "-inf", "1e400", "1e9", "-1e9", "4.2",
                             "1_0", " 3.5 ", "0x10", "3,5", "line\nbreak", '"', "1" * 5000])


@st.composite
def edited_trace(draw: st.DrawFn) -> str:
    """A good trace with some cells or rows changed, then written as CSV."""
    rows = draw(trace_rows())
    for _ in range(draw(st.integers(0, 3))):
        r = draw(st.integers(0, len(rows) - 1))
        edit = draw(st.sampled_from(["cell", "cell", "drop", "repeat", "swap", "short",
                                     "blank"]))
        if edit == "cell" and rows[r]:
            c = draw(st.integers(0, len(rows[r]) - 1))
            rows[r][c] = draw(BAD_CELLS | st.text(max_size=6))
        elif edit == "drop" and len(rows) > 1:
            del rows[r]
        elif edit == "repeat":
            rows.insert(r, list(rows[r]))
        elif edit == "swap":
            rows[r], rows[-1] = rows[-1], rows[r]
        elif edit == "short":
            rows[r] = rows[r][:-1]
        elif edit == "blank":
            rows.insert(r + 1, [])
    text = as_text(rows, draw(st.sampled_from(["\n", "\r\n"])))
    return ("\ufeff" if draw(st.booleans()) else "") + text


def data_rows(text: str) -> int:
    """The non-blank rows after the header, as a CSV reader sees them."""
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    return sum(1 for row in rows[1:] if row and any(cell.strip() for cell in row))


def check_trace(trace: Trace, text: str) -> None:
    n = trace.time_s.size
    n_v = trace.cell_voltage_v.shape[1]
    assert n == data_rows(text) > 0  # every data row is in it: nothing lost or made up
    assert trace.current_a.shape == (n,) and trace.cell_voltage_v.shape == (n, n_v)
    assert trace.temperature_c.shape[0] == n and trace.bleeding.shape == (n, n_v)
    for values in (trace.time_s, trace.current_a, trace.cell_voltage_v, trace.temperature_c):
        assert np.all(np.isfinite(values))
    assert np.all(np.diff(trace.time_s) > 0)
    assert np.all(np.abs(trace.current_a) <= MAX_CURRENT_A)
    lim = CHEM.limits
    assert np.all(trace.cell_voltage_v >= lim.v_min - COVER_MARGIN_V)
    assert np.all(trace.cell_voltage_v <= lim.v_max + COVER_MARGIN_V)
    low_c, high_c = TEMP_PLAUSIBLE_C
    assert np.all((trace.temperature_c > low_c) & (trace.temperature_c < high_c))


LINE_PROBLEM = re.compile(r"line (\d+)(?:, column [^=]* = (.*?): | \(header\))", re.S)


def check_problems(exc: InputError, path: Path, text: str) -> None:
    """Every problem names a line of the file, and the line quotes the value it names."""
    assert exc.source == str(path) and exc.problems
    lines = re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff"))  # what csv takes as a line
    for problem in exc.problems:
        if problem.startswith(WHOLE_FILE):
            continue
        named = LINE_PROBLEM.match(problem)
        assert named, problem
        line_no = int(named.group(1))
        assert 1 <= line_no <= len(lines), (problem, len(lines))
        value = named.group(2)
        if value and value[0] in "'\"":
            raw = ast.literal_eval(value)  # a value across lines is on none of them whole
            if not any(mark in raw for mark in ('\n', '\r', '"')) and raw.strip():
                assert raw.strip() in lines[line_no - 1], (problem, lines[line_no - 1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay_fuzz")


GOOD = "time_s,current_a,v1,v2\n0,1.0,3.5,3.5\n1,1.0,3.5,3.6\n"


def read(folder: Path, content: str | bytes) -> None:
    path = folder / "trace.csv"
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(content)
    text = path.read_bytes().decode("utf-8", "replace")
    try:
        trace = read_trace(path, CHEM)
    except InputError as exc:
        event("refused")
        check_problems(exc, path, text)
    else:
        event("read")
        check_trace(trace, text)


@FUZZ
@given(content=edited_trace())
@example(content=GOOD)
@example(content='time_s,current_a,v1,note\n0,1,3.5,"a\nb"\n1,1,x,ok\n')  # a cell across lines
@example(content="time_s,current_a,v" + "1" * 5000 + ",v1\n0,1,3.5,3.5\n")
@example(content='time_s,current_a,v1\n0,"3,5"\n')  # a short row quoted as written
@example(content='time_s,current_a,v1\n"\n:",0.000,3.0000\n')  # a value across lines
def test_an_edited_trace_is_read_whole_or_refused_naming_lines(folder: Path, content: str):
    read(folder, content)


@FUZZ
@given(content=st.one_of(st.text(max_size=200), mutated_text(GOOD, 6), mutated(GOOD.encode()),
                         st.binary(max_size=80)))
@example(content=b"time_s,current_a,v1\n0,1,3.5\x00\n")
@example(content="time_s,current_a,v1\r0,1,3.5\n")
def test_any_file_is_a_trace_or_input_error(folder: Path, content: str | bytes):
    read(folder, content)
