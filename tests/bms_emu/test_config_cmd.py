"""`bms-emu config` and `bms-emu run --config`: defaults out, files checked, bad files refused."""

from __future__ import annotations

import json
import tomllib

import pytest

from bms.data.config import default_config
from bms.data.config_toml import parse_config
from bms.data.presets import PRESETS
from bms_emu.main import main

BAD = """
[limits]
max_charge_a = 99.0
[protection.CELL_OVERVOLTAGE.FAULT]
threshold = 4.3
"""


def write(tmp_path, text: str, name: str = "fw.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_help_gives_units(capsys):
    with pytest.raises(SystemExit) as done:
        main(["config", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for fragment in ("--defaults", "--check", "Ah", "cells in series", "exit 2"):
        assert fragment in out, fragment


def test_config_needs_defaults_or_check(capsys):
    with pytest.raises(SystemExit) as done:
        main(["config"])
    assert done.value.code == 2
    assert "--defaults" in capsys.readouterr().err


def test_defaults_parse_and_read_back_as_the_defaults(capsys):
    assert main(["config", "--defaults"]) == 0
    text = capsys.readouterr().out
    chem = PRESETS["na-nfm"]
    assert text.startswith("# Defaults for a 16S1P pack of na-nfm cells")
    assert parse_config(tomllib.loads(text), "out", chem, 16, chem.capacity_ah) == (
        default_config(chem, 16, chem.capacity_ah))


def test_defaults_follow_the_pack_options(capsys):
    assert main(["config", "--defaults", "--chemistry", "na-nvpf", "--series", "4",
                 "--parallel", "2", "--capacity-ah", "10"]) == 0
    data = tomllib.loads(capsys.readouterr().out)
    nvpf = PRESETS["na-nvpf"]
    assert data["protection"]["PACK_OVERVOLTAGE"]["FAULT"]["threshold"] == pytest.approx(
        4 * nvpf.thresholds.overvoltage_v)
    assert data["limits"]["max_charge_a"] == pytest.approx(nvpf.limits.max_charge_c * 20.0)
    expected = default_config(nvpf.with_capacity(10.0), 4, 20.0)
    assert parse_config(data, "out", nvpf, 4, 20.0) == expected


def test_check_accepts_the_printed_defaults_and_a_partial_file(tmp_path, capsys):
    assert main(["config", "--defaults", "--series", "8"]) == 0
    defaults = write(tmp_path, capsys.readouterr().out, "defaults.toml")
    assert main(["config", "--check", defaults, "--series", "8"]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    partial = write(tmp_path, "[balancing]\nmode = 'off'\n")
    assert main(["config", "--check", partial]) == 0
    assert capsys.readouterr().out.strip() == "ok"


def test_check_lists_every_problem_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, BAD)
    assert main(["config", "--check", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}: 2 problem(s)" in captured.err
    assert "limits.max_charge_a = 99.0: must be within [0, 1.5]" in captured.err
    assert ("protection.CELL_OVERVOLTAGE.FAULT.threshold = 4.3: must be within [1.5, 4.1] "
            "(the chemistry's absolute limits)") in captured.err


def test_check_uses_the_pack_options(tmp_path, capsys):
    """The 16S defaults put the pack overvoltage beyond what 4 cells can reach."""
    assert main(["config", "--defaults"]) == 0
    path = write(tmp_path, capsys.readouterr().out)
    assert main(["config", "--check", path, "--series", "4"]) == 2
    assert "protection.PACK_OVERVOLTAGE.FAULT.threshold" in capsys.readouterr().err


def test_check_names_a_file_that_is_not_toml(tmp_path, capsys):
    path = write(tmp_path, "[limits\n")
    assert main(["config", "--check", path]) == 2
    err = capsys.readouterr().err
    assert path in err and "not valid TOML" in err


def test_config_refuses_bad_pack_options(capsys):
    assert main(["config", "--defaults", "--series", "0"]) == 2
    assert "--series = 0" in capsys.readouterr().err


def test_run_refuses_a_bad_config_before_running(tmp_path, capsys):
    path = write(tmp_path, BAD)
    assert main(["run", "--json", "--duration", "1m", "--series", "4", "--config", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no run, no summary
    assert "bms-emu run: error:" in captured.err
    assert "limits.max_charge_a = 99.0" in captured.err
    assert "protection.CELL_OVERVOLTAGE.FAULT.threshold = 4.3" in captured.err


def test_run_checks_the_config_against_its_own_pack(tmp_path, capsys):
    path = write(tmp_path, "[limits]\nmax_charge_a = 3.0\n")  # 1C of a 1P pack is 1.5 A
    assert main(["run", "--json", "--duration", "1m", "--series", "4", "--config", path]) == 2
    assert "limits.max_charge_a = 3.0" in capsys.readouterr().err
    assert main(["run", "--json", "--duration", "1m", "--series", "4", "--parallel", "2",
                 "--config", path]) == 0
    assert json.loads(capsys.readouterr().out)["sim_s"] == 60.0


def test_run_names_a_missing_config(tmp_path, capsys):
    missing = str(tmp_path / "missing.toml")
    assert main(["run", "--duration", "1m", "--config", missing]) == 2
    err = capsys.readouterr().err
    assert missing in err and "cannot read the file" in err
