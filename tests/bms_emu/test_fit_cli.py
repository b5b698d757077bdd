"""`bms-emu fit`: lab files in, a profile that `run` takes out, residuals on held-out data
printed; bad input refused with exit 2 and nothing written."""

from __future__ import annotations

import json

import pytest

from bms_emu.main import main
from tests.support.lab_files import LAB_FILES, lab_files


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder, truth = lab_files()
    out = tmp_path_factory.mktemp("fit") / "cell.toml"
    plot = out.with_name("fit.png")
    code = main(["fit", *(str(folder / n) for n in LAB_FILES), "--out", str(out),
                 "--name", "lab-cell", "--plot", str(plot), "--json"])
    return code, out, plot, truth


def test_fit_writes_the_named_profile_with_its_efficiency_and_a_plot(fitted):
    code, out, plot, _ = fitted
    assert code == 0
    text = out.read_text()
    assert 'name = "lab-cell"' in text and "coulombic_efficiency" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_json_holds_the_figures_and_the_residual_table(tmp_path, capsys):
    folder, truth = lab_files()
    out = tmp_path / "cell.toml"
    assert main(["fit", *(str(folder / n) for n in LAB_FILES), "--out", str(out),
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["capacity_ah"] == pytest.approx(truth["capacity_ah"], rel=0.01)
    assert d["coulombic_efficiency"] == pytest.approx(truth["coulombic_efficiency"], abs=0.003)
    held = [r for r in d["residuals"] if r["part"] == "held-out"]
    assert {r["kind"] for r in held} >= {"pulse", "rest", "step"}
    assert all(r["rms_mv"] < 15.0 for r in held)
    assert any(h.startswith("HPPC level") for h in d["held_out"])


def test_the_fitted_profile_runs(fitted, capsys):
    _, out, _, _ = fitted
    capsys.readouterr()
    assert main(["run", "--chemistry", str(out), "--series", "4", "--duration", "10m",
                 "--profile", "pulses", "--initial-soc", "70", "--json", "--quiet"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["final"]["state"] == "RUN"
    assert abs(d["final"]["soc_pct"] - d["final"]["soc_true_pct"]) < 3.0
    assert [e for e in d["events"] if e["level"] != "WARNING"] == []


def test_the_table_names_each_kind_of_segment(tmp_path, capsys):
    folder, _ = lab_files()
    out = tmp_path / "cell.toml"
    assert main(["fit", *(str(folder / n) for n in LAB_FILES), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "held out: cycle" in text and "HPPC level at" in text
    for kind in ("rest", "pulse", "slow", "step"):
        assert f"\n{kind}" in text


def test_a_bad_csv_is_refused_with_its_line_and_nothing_is_written(tmp_path, capsys):
    bad = tmp_path / "lab.csv"
    bad.write_text("time_s,current_a,voltage_v\n" + "".join(f"{k},0,3.1\n" for k in range(12))
                   + "12,x,3.1\n")
    out = tmp_path / "cell.toml"
    assert main(["fit", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}" in err and "line 14, column current_a = 'x'" in err
    assert not out.exists()


def test_a_missing_test_is_named_and_nothing_is_written(tmp_path, capsys):
    folder, _ = lab_files()
    out = tmp_path / "cell.toml"
    assert main(["fit", str(folder / "hppc.csv"), "--out", str(out)]) == 2
    assert "no slow charge (<= C/20) found" in capsys.readouterr().err
    assert not out.exists()


def test_bad_options_are_refused_before_reading(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "none.csv"), "--out", str(tmp_path / "c.txt"),
                 "--holdout", "0.9", "--v-min", "4", "--v-max", "3"]) == 2
    err = capsys.readouterr().err
    assert "--holdout = 0.9: must be within [0, 0.5]" in err
    assert "--v-min = 4.0: must be below --v-max (3)" in err
    assert "--out" in err and ".toml" in err
