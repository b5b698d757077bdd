"""The `bms-emu` command line: options, summaries, recordings, plots and error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bms.core.firmware import Firmware
from bms.data.presets import PRESETS
from bms_emu.main import build_parser, main
from hil.loads import datacenter
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run, summary

SHORT = ["--duration", "5m", "--series", "4"]


def run_json(capsys, *args: str) -> dict:
    assert main(["run", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_console_script_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "bms_emu.main", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("run", "chemistries", "plot"):
        assert name in out


@pytest.mark.parametrize("command", ["run", "chemistries", "plot"])
def test_every_subcommand_has_help(capsys, command):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert len(capsys.readouterr().out) > 200


def test_run_help_gives_units_for_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for fragment in ("Ah", "seconds", "°C", "percent", "cells in series", "sense-open",
                     "precharge-open", "default: 24h"):
        assert fragment in out, fragment


def test_run_defaults_are_the_documented_ones():
    args = build_parser().parse_args(["run"])
    assert (args.chemistry, args.series, args.parallel, args.profile, args.duration,
            args.tick, args.speed, args.record_every) == (
        "na-nfm", 16, 1, "datacenter", "24h", 0.1, "max", "1s")


def test_run_json_summary_has_the_documented_fields(capsys):
    d = run_json(capsys, *SHORT, "--initial-soc", "50")
    assert d["sim_s"] == 300.0
    assert d["wall_s"] > 0 and d["rtf"] > 0
    final = d["final"]
    assert final["state"] == "RUN" and final["contactors"] == "closed"
    assert abs(final["soc_true_pct"] - 50.0) < 3.0
    assert abs(final["soc_pct"] - final["soc_true_pct"]) < 5.0
    assert 2.5 < final["cell_v_min"] <= final["cell_v_max"] < 4.1
    assert 20.0 < final["temp_c_max"] < 35.0
    assert d["events"] == []


def datacenter_hours(start_h: float, end_h: float, tick_s: float) -> dict:
    """What `bms-emu run` does with no options (the 16S na-nfm pack on the datacenter day),
    from hour `start_h` to `end_h` of the day: the whole day is `benchmarks/headless_rtf.py
    --duration-s 86400`; the tests take its two working windows, each a few hours."""
    pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=16, initial_soc=0.9), tick_s)
    shifted = datacenter(pack.energy_wh, start_h)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
    result = run(pack, firmware, shifted,
                 RunOptions(duration_s=(end_h - start_h) * 3600.0, tick_s=tick_s))
    return summary(result, pack)


# The outage runs at the command's 0.1 s tick: the day's steepest step (2 P/E) and a recharge
# to CV. The four slow hours of peak shaving run at 1 s: the energies are integrals of a
# held power; at 0.1 s that window gave 28.80 Wh out and 38.77 Wh in, 99.2 % at the end and
# nothing raised, at 1 s 28.80, 38.72, 99.2 % and nothing.
@pytest.mark.parametrize(("start_h", "end_h", "drawn_fraction", "tick_s"),
                         [(8.9, 10.5, 2.0 / 6, 0.1), (16.9, 20.9, 0.2 * 2, 1.0)])
def test_the_datacenter_day_windows_take_energy_out_and_the_charger_puts_it_back(
        start_h, end_h, drawn_fraction, tick_s):
    """The outage (9:00, 10 min at 2 P/E) and the peak shaving (17:00-19:00 at 0.2 P/E) take
    energy out; the recharge after each puts it back and leaves the pack running and full."""
    d = datacenter_hours(start_h, end_h, tick_s)
    assert d["energy_out_wh"] > 0.5 * 16 * 3.0 * 1.5 * drawn_fraction
    assert d["energy_in_wh"] > d["energy_out_wh"]
    assert d["final"]["state"] == "RUN"
    assert d["final"]["soc_true_pct"] > 85.0
    assert d["events"] == []


def test_constant_current_discharge_moves_soc_by_coulombs(capsys):
    """1.5 A out of a 1.5 Ah pack for 30 min takes 50 points of SoC."""
    d = run_json(capsys, "--duration", "30m", "--series", "4", "--profile", "current:-1.5",
                 "--initial-soc", "80")
    # 80 - 50 = 30, give or take the seeded spread: initial SoC (1 point per cell, 0.5 for
    # the mean of 4) and capacity (1 %, 0.5 point of 50)
    assert 28.5 < d["final"]["soc_true_pct"] < 31.5
    assert d["energy_out_wh"] == pytest.approx(0.75 * 4 * 2.9, rel=0.1)


def test_injection_ends_in_a_fault_event(capsys):
    d = run_json(capsys, *SHORT, "--inject", "60:sensor-offset:cell=3,offset_v=0.6")
    raised = [e for e in d["events"] if e["action"] == "raised"]
    # 0.6 V on a cell near 3.9 V: beyond what a working sensor reads, and over-voltage
    assert raised and raised[0]["name"] in ("VOLTAGE_SENSOR_FAULT", "CELL_OVERVOLTAGE")
    assert raised[0]["cell"] == 3 and raised[0]["sensor"] is None  # numbered as injected
    assert raised[0]["t_s"] >= 60.0
    assert d["final"]["state"] == "FAULT" and d["final"]["contactors"] == "open"


def test_open_precharge_resistor_fails_the_precharge(capsys):
    d = run_json(capsys, *SHORT, "--inject", "0:precharge-open")
    assert [e["name"] for e in d["events"]] == ["PRECHARGE_FAILED"]
    assert d["final"]["contactors"] == "open"


def test_csv_profile_and_user_cell_profile(capsys, tmp_path):
    profile = tmp_path / "load.csv"
    profile.write_text("time_s,power_w\n0,0\n60,-20\n")
    cell = tmp_path / "cell.toml"
    cell.write_text('name = "c"\ncapacity_ah = 2.0\n[limits]\nv_min = 2.0\nv_max = 4.2\n'
                    "[ocv]\nsoc_pct = [0, 100]\nvoltage_v = [2.5, 4.0]\n")
    d = run_json(capsys, *SHORT, "--profile", str(profile), "--chemistry", str(cell))
    assert d["chemistry"] == "c" and d["cell_capacity_ah"] == 2.0
    assert d["energy_out_wh"] == pytest.approx(20.0 * 240 / 3600, rel=0.05)


def test_paced_run_is_not_faster_than_asked(capsys):
    d = run_json(capsys, "--duration", "2s", "--series", "2", "--speed", "10")
    assert d["wall_s"] >= 0.2 * 0.99


def test_summary_table_is_printed(capsys):
    assert main(["run", *SHORT]) == 0
    out = capsys.readouterr().out
    for fragment in ("real-time factor", "SoC estimated / true", "energy in / out",
                     "fault events"):
        assert fragment in out


def test_summary_table_names_the_faulty_cell_as_injected(capsys):
    """Issue 16: the 3rd cell is `cell 3` in the table, as on the label and in --inject."""
    assert main(["run", *SHORT, "--inject", "60:sensor-offset:cell=3,offset_v=0.6"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "CELL_OVERVOLTAGE" in line]
    assert lines and all(" at cell 3 (" in line for line in lines), out
    assert "index" not in out


def record(tmp_path: Path, name: str, *extra: str) -> bytes:
    path = tmp_path / name
    assert main(["run", "--quiet", *SHORT, "--record", str(path), *extra]) == 0
    return path.read_bytes()


def test_same_seed_gives_the_same_csv_byte_for_byte(tmp_path):
    first = record(tmp_path, "a.csv", "--seed", "7", "--inject", "120:sense-open:cell=2")
    again = record(tmp_path, "b.csv", "--seed", "7", "--inject", "120:sense-open:cell=2")
    other = record(tmp_path, "c.csv", "--seed", "8", "--inject", "120:sense-open:cell=2")
    assert first == again
    assert first != other


def test_recording_has_the_documented_columns(tmp_path):
    lines = record(tmp_path, "r.csv", "--record-every", "10s").decode().splitlines()
    header = lines[0].split(",")
    for column in ("time_s", "pack_v", "current_a", "soc_pct", "soc_true_pct", "cell_v_min",
                   "cell_v_max", "cell_v_mean", "state", "faults", "balancing_n", "v1", "v4",
                   "t1", "soc4_true_pct"):
        assert column in header
    assert len(lines) == 1 + 30
    assert lines[2].split(",")[0] == "10.000"


def test_recording_columns_count_cells_and_sensors_from_1(tmp_path):
    """Issue 16: `v3` is the 3rd cell and `t2` the 2nd sensor, as --inject numbers them."""
    text = record(tmp_path, "r.csv", "--series", "8", "--record-every", "10s",
                  "--inject", "0:sensor-offset:cell=3,offset_v=0.2",
                  "--inject", "0:temp-sensor-offset:sensor=2,offset_c=5").decode()
    header, *rows = [line.split(",") for line in text.splitlines()]
    col = {name: j for j, name in enumerate(header)}
    assert "v0" not in col and "t0" not in col and "t3" not in col
    for row in rows[1:]:  # the first was measured before the injections took effect
        v = {k: float(row[col[f"v{k}"]]) for k in range(1, 9)}
        assert max(v, key=v.get) == 3, row
        assert float(row[col["t2"]]) > float(row[col["t1"]]) + 3.0, row


def test_run_plot_and_plot_command_write_pngs(tmp_path, capsys):
    png = tmp_path / "run.png"
    assert main(["run", "--quiet", *SHORT, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_path = tmp_path / "r.csv"
    record(tmp_path, "r.csv")
    assert main(["plot", str(csv_path), "-o", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 20_000


def test_chemistries_lists_both_presets(capsys):
    assert main(["chemistries", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"na-nfm", "na-nvpf"}
    nfm = next(r for r in rows if r["name"] == "na-nfm")
    assert nfm["charge_temp_c"] == [-20.0, 55.0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--chemistry", "na-unknown"], "'na-unknown' is neither a preset"),
        (["--duration", "ten minutes"], "--duration = 'ten minutes'"),
        (["--duration", "0.01"], "--duration = '0.01': must be at least one tick"),
        (["--series", "0"], "--series = 0: must be within [1, 1024]"),
        (["--initial-soc", "120"], "--initial-soc = 120.0: must be within [0, 100]"),
        (["--speed", "fast"], "--speed = 'fast'"),
        (["--profile", "sinewave"], "'sinewave': use datacenter, pulses"),
        (["--inject", "10:meteor-strike"], "KIND = 'meteor-strike'"),
        (["--inject", "10:sensor-offset:cell=99,offset_v=0.1"],
         "cell = 99: must be within [1, 16]"),
        (["--inject", "10:sensor-offset:cell=2"], "offset_v: is required"),
        (["--inject", "soon:cooling-failure"], "AT = 'soon'"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(capsys, args, expected):
    assert main(["run", "--json", *args]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err
    assert captured.out == ""


def test_serves_mqtt_bounds_and_policy_are_told_with_every_other_problem(capsys):
    assert main(["serve", "--sim", "--mqtt", "mqtt://127.0.0.1:1", "--no-nvm",
                 "--series", "0", "--mqtt-max-bytes", "100", "--mqtt-command-rate", "0",
                 "--mqtt-frame-rate", "nan", "--mqtt-commands", "inject=x,reboot"]) == 2
    err = capsys.readouterr().err
    for expected in ("--series = 0", "--mqtt-max-bytes = 100: must be within [4126, inf]",
                     "--mqtt-command-rate = 0.0: must be within [0.1, 100000]",
                     "--mqtt-frame-rate = nan", "'inject=x': inject takes no limit",
                     "'reboot' is not a command"):
        assert expected in err, err


def test_malformed_cell_profile_is_refused(capsys, tmp_path):
    cell = tmp_path / "bad.toml"
    cell.write_text('name = "c"\ncapacity_ah = 2.0\n[limits]\nv_min = 2.0\nv_max = 4.2\n'
                    "[ocv]\nsoc_pct = [0, 60, 50, 100]\nvoltage_v = [2.5, 3, 3.5, 4.0]\n")
    assert main(["run", "--chemistry", str(cell)]) == 2
    assert "ocv.soc_pct[2] = 50.0: soc_pct must be strictly ascending" in capsys.readouterr().err


def test_bad_load_csv_names_the_line(capsys, tmp_path):
    profile = tmp_path / "load.csv"
    profile.write_text("time_s,current_a\n0,1\n10,abc\n")
    assert main(["run", "--profile", str(profile)]) == 2
    assert "line 3" in capsys.readouterr().err


def test_plot_refuses_a_file_that_is_not_a_recording(capsys, tmp_path):
    other = tmp_path / "x.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["plot", str(other)]) == 2
    assert "missing column 'pack_v'" in capsys.readouterr().err


@pytest.mark.parametrize("profile", ["rest", "current:0.1"])
@pytest.mark.parametrize("chemistry", ["na-nfm", "na-nvpf"])
def test_a_full_pack_is_quiet(capsys, chemistry, profile):
    """`--initial-soc 100` is a full pack: at rest or on a small charge, nothing is raised."""
    d = run_json(capsys, "--chemistry", chemistry, "--initial-soc", "100", "--series", "16",
                 "--duration", "5m", "--profile", profile, "--quiet")
    assert d["events"] == []
    assert d["final"]["state"] == "RUN" and d["final"]["soc_true_pct"] > 99.0


@pytest.mark.parametrize("profile", ["rest", "current:0.1"])
def test_a_full_nvpf_pack_that_does_not_balance_is_quiet(capsys, tmp_path, profile):
    """The full na-nvpf cells themselves rest below every over-voltage row."""
    config = tmp_path / "config.toml"
    config.write_text('[balancing]\nmode = "off"\n')
    d = run_json(capsys, "--chemistry", "na-nvpf", "--initial-soc", "100", "--series", "16",
                 "--duration", "5m", "--profile", profile, "--quiet", "--config", str(config))
    assert d["events"] == []
    assert d["final"]["state"] == "RUN" and d["final"]["soc_true_pct"] > 99.0


@pytest.mark.parametrize("command", ["run", "fleet", "scenario"])
def test_help_gives_the_defaults_there_are_and_no_empty_ones(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    for empty in ("(default: None)", "(default: [])", "(default: True)", "(default: False)"):
        assert empty not in text
    assert "(default: 1)" in text if command == "scenario" else "(default: 16)" in text
