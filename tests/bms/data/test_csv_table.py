"""The shared CSV reader of numbers (bms.data.csv_table): what it reads, where it says a
problem is, and the order and cap of the problems told."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bms.data import csv_table
from bms.data.csv_table import MAX_REPORTED, Findings, read_table
from bms.data.validation import InputError, Problems


def write(tmp_path, text: str, name: str = "t.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_header_is_stripped_and_blank_rows_are_left_out(tmp_path):
    table = read_table(write(tmp_path, "\ufeff a , b\n1,2\n\n , \n3,4\n"))
    assert table.header == ["a", "b"]
    assert table.first.line == 1 and table.first.text == " a , b"  # the byte-order mark gone
    assert [row.line for row in table.rows] == [2, 5]


def test_columns_are_read_as_floats_in_the_order_asked(tmp_path):
    table = read_table(write(tmp_path, "a,b,c\n1,2,x\n4, 5 ,y\n"))
    nums = table.numbers([1, 0])
    assert nums.values.tolist() == [[2.0, 1.0], [5.0, 4.0]]
    assert nums.is_number.all()
    assert nums.lines.tolist() == [2, 3]
    assert nums.cell(1, 0) == " 5 "


def test_a_cell_that_is_no_number_is_nan_and_marked(tmp_path):
    """'nan' and 'inf' are numbers (the caller decides if they are allowed); 'x' and '' are
    not; every other cell of the block keeps its value."""
    table = read_table(write(tmp_path, "a,b\n1,x\nnan,inf\n,3\n"))
    nums = table.numbers([0, 1])
    assert nums.is_number.tolist() == [[True, False], [True, True], [False, True]]
    assert nums.values[0, 0] == 1.0 and math.isnan(nums.values[0, 1])
    assert math.isnan(nums.values[1, 0]) and nums.values[1, 1] == math.inf
    assert math.isnan(nums.values[2, 0]) and nums.values[2, 1] == 3.0


def test_rows_of_another_width_are_set_aside_with_their_lines(tmp_path):
    """A quoted cell across two lines keeps the later rows on their own line numbers."""
    text = 'a,b\n"1\n",2\n3\n4,5,6\n7,8\n'
    nums = read_table(write(tmp_path, text)).numbers([0, 1])
    assert [(row.line, row.text) for row in nums.misshapen] == [(4, "3"), (5, "4,5,6")]
    assert nums.lines.tolist() == [2, 6]
    assert nums.values.tolist() == [[1.0, 2.0], [7.0, 8.0]]


def test_one_column_and_no_rows(tmp_path):
    assert read_table(write(tmp_path, "a\n5\n")).numbers([0]).values.tolist() == [[5.0]]
    nums = read_table(write(tmp_path, "a,b\n")).numbers([0, 1])
    assert nums.values.shape == (0, 2) and nums.lines.size == 0


def test_an_empty_file_has_no_header(tmp_path):
    table = read_table(write(tmp_path, ""))
    assert table.first is None and table.header == [] and table.rows == []


def test_an_unreadable_file_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="cannot read the file") as failed:
        read_table(tmp_path / "absent.csv")
    assert failed.value.source == str(tmp_path / "absent.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(InputError, match="not a readable CSV text file"):
        read_table(tmp_path / "bin.csv")


def test_findings_are_told_in_file_order_then_place_in_the_row():
    found = Findings()
    found.add(np.array([7, 3]), np.array([2, 1]), lambda k: f"late {k}")
    found.add([3, 3], [0, 5], lambda k: f"early {k}")
    problems = Problems("x")
    found.report(problems)
    assert problems.items == ["early 0", "late 1", "early 1", "late 0"]
    assert len(found) == 4


def test_findings_beyond_the_cap_are_counted_not_worded():
    worded = []

    def describe(k: int) -> str:
        worded.append(k)
        return f"problem {k}"

    found = Findings()
    found.add(np.arange(100, 0, -1), 0, describe)  # line 100 first: told last
    problems = Problems("x")
    found.report(problems)
    assert len(problems.items) == MAX_REPORTED + 1
    assert problems.items[0] == "problem 99"  # line 1
    assert problems.items[-1] == f"... and {100 - MAX_REPORTED} more"
    assert len(worded) == MAX_REPORTED


def test_no_findings_add_nothing():
    problems = Problems("x")
    Findings().report(problems)
    found = Findings()
    found.add([], 0, str)
    found.report(problems)
    assert problems.items == [] and len(found) == 0


def test_a_file_that_is_no_text_or_never_ends_is_refused_early(tmp_path, monkeypatch):
    """/dev/zero holds NULs without end: refused at its first chunk, not read whole; a file
    past the bound is refused at the bound."""
    with pytest.raises(InputError, match="not a readable CSV text file: it holds a NUL"):
        read_table("/dev/zero")
    monkeypatch.setattr(csv_table, "MAX_CSV_CHARS", 100)
    path = write(tmp_path, "a,b\n" + "1,2\n" * 30)
    with pytest.raises(InputError, match="it is longer than 100 characters"):
        read_table(path)
    assert len(read_table(write(tmp_path, "a,b\n" + "1,2\n" * 20)).rows) == 20
