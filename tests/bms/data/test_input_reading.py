"""Reading TOML and gathering problems (bms.data.validation): what cannot be read is an
InputError naming the file and why, never another exception."""

from __future__ import annotations

import pytest

from bms.data import validation
from bms.data.validation import InputError, Problems, parse_toml, read_toml


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000,
                                  "a = " + "{b = " * 5000 + "1" + "}" * 5000],
                         ids=["arrays", "inline-tables"])
def test_toml_nested_too_deep_is_an_input_error(tmp_path, text):
    path = tmp_path / "deep.toml"
    path.write_text(text)
    with pytest.raises(InputError, match="nested too deep") as failed:
        read_toml(path)
    assert failed.value.source == str(path)


def test_toml_nested_a_hundred_deep_is_read():
    data = parse_toml("a = " + "[" * 100 + "1" + "]" * 100, "x")
    depth, value = 0, data["a"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert (depth, value) == (100, 1)


def test_an_integer_of_too_many_digits_is_an_input_error():
    with pytest.raises(InputError, match="cannot read a value: Exceeds the limit") as failed:
        parse_toml("a = " + "1" * 5000, "x.toml")
    assert "set_int_max_str_digits" not in str(failed.value)


def test_a_toml_file_that_is_no_text_or_too_long_is_refused_early(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="not valid TOML: it holds a NUL character"):
        read_toml("/dev/zero")
    monkeypatch.setattr(validation, "MAX_TOML_CHARS", 50)
    path = tmp_path / "long.toml"
    path.write_text("".join(f"k{i} = {i}\n" for i in range(10)))  # 70 characters
    with pytest.raises(InputError, match="longer than 50 characters"):
        read_toml(path)
    path.write_text("".join(f"k{i} = {i}\n" for i in range(7)))  # 49
    assert read_toml(path) == {f"k{i}": i for i in range(7)}


def test_take_gathers_the_problems_of_each_loader_under_its_source():
    def bad(name: str) -> int:
        raise InputError(name, [f"{name} is wrong"])

    problems = Problems("bms-emu run")
    assert problems.take(bad, "--config") is None
    assert problems.take(bad, "bms-emu run") is None
    assert problems.take(len, "four") == 4
    assert problems.items == ["--config: --config is wrong", "bms-emu run is wrong"]


def test_a_range_of_ints_is_written_in_full():
    problems = Problems("x")
    problems.check_range("--seed", -1, 0, 2**32 - 1)
    problems.check_range("--tick", 20.0, 1e-3, 10.0)
    assert problems.items == ["--seed = -1: must be within [0, 4294967295]",
                              "--tick = 20.0: must be within [0.001, 10]"]
