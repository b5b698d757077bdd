"""Bad input on the command line is one message naming the value and the rule, exit code 2,
never a traceback (issue 15); output paths are checked before a run starts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bms_emu import config_cmd
from bms_emu.main import main

SHORT = ["--duration", "10s", "--series", "4"]
SCENARIO = str(Path(__file__).resolve().parents[2] / "scenarios" / "cooling-failure.toml")
NESTED_ARRAY = "a = " + "[" * 5000 + "]" * 5000 + "\n"
NESTED_TABLE = "limits = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"
HUGE_INT = "fault_log_size = " + "1" * 5000 + "\n"


def refused(capsys, argv: list[str]) -> str:
    """`bms-emu ARGV` exits 2 with a message on stderr only and no traceback; the message."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.startswith(f"bms-emu {argv[0]}: error:")
    return captured.err


@pytest.mark.parametrize("seed", ["-1", "4294967296", str(10**30)])
def test_a_seed_outside_what_the_generator_takes_is_refused(capsys, seed):
    err = refused(capsys, ["run", *SHORT, "--seed", seed])
    assert f"--seed = {seed}: must be within [0, 4294967295]" in err


def test_the_largest_seed_runs(capsys):
    assert main(["run", *SHORT, "--seed", "4294967295", "--quiet"]) == 0


def test_the_command_is_named_once(capsys):
    """The problems of the command's own options come under its name, said once."""
    err = refused(capsys, ["run", "--series", "0", "--parallel", "0"])
    assert err.startswith("bms-emu run: error: 2 problem(s)\n")
    assert err.count("bms-emu run") == 1


@pytest.mark.parametrize("profile", ["current:nan", "current:inf", "current:-inf",
                                     "power:nan", "power:inf", "current:nanC", "current:infC"])
def test_a_profile_that_is_not_a_finite_number_is_refused(capsys, profile):
    err = refused(capsys, ["run", *SHORT, "--profile", profile])
    assert f"'{profile}'" in err and "must be a finite number" in err


@pytest.mark.parametrize("command", [
    ["run", *SHORT], ["serve", "--sim", "--series", "4"], ["rig", "--series", "4"]],
    ids=["run", "serve", "rig"])
def test_every_problem_of_config_injections_and_profile_is_listed_together(capsys, tmp_path,
                                                                          command):
    """In one error, whichever command (the rig takes no --config); and a refused start
    opens no store."""
    config = tmp_path / "bad.toml"
    config.write_text("rest_current_aa = 0.2\nfault_log_size = -5\n")
    store = tmp_path / "pack.sqlite"
    port = [] if command[0] == "run" else ["--serial", str(tmp_path / "port")]
    file_options = [] if command[0] == "rig" else ["--config", str(config), "--nvm", str(store)]
    err = refused(capsys, [*command, *port, *file_options, "--inject", "5s:bogus",
                           "--profile", "current:nan"])
    expected = [f"{config}: rest_current_aa = 0.2: unknown key",
                f"{config}: fault_log_size = -5: must be within [1, 65535]"] if file_options else []
    expected += ["--inject: 5s:bogus: KIND = 'bogus'", "--profile: 'current:nan'"]
    assert f"{len(expected)} problem(s)" in err
    for fragment in expected:
        assert fragment in err, fragment
    assert not store.exists()


# --- output paths, before the run ---------------------------------------------------------------


@pytest.mark.parametrize(("flag", "name", "fragment"), [
    ("--record", "no/such/dir/x.csv", "its directory"),
    ("--plot", "no/such/dir/x.png", "its directory"),
    ("--plot", "x.txt", "must end in one of .avif, .eps"),
    ("--record", ".", "is a directory"),
])
def test_a_run_that_could_not_write_its_output_never_starts(capsys, tmp_path, flag, name,
                                                            fragment):
    """Refused before the first step: the recording asked beside it was never opened."""
    beside = tmp_path / "beside.csv"
    other = ["--record", str(beside)] if flag == "--plot" else []
    err = refused(capsys, ["run", "--duration", "24h", *other, flag, str(tmp_path / name)])
    assert flag in err and fragment in err
    assert not beside.exists()


def test_plot_checks_its_output_before_reading(capsys, tmp_path):
    err = refused(capsys, ["plot", str(tmp_path / "absent.csv"), "-o",
                           str(tmp_path / "no" / "x.png")])
    assert "--output" in err and "does not exist" in err
    assert "absent.csv" not in err


def test_a_plot_output_without_an_image_type_is_refused(capsys, tmp_path):
    """matplotlib would have written `out.png` beside `out` and printed `out`."""
    err = refused(capsys, ["plot", str(tmp_path / "r.csv"), "-o", str(tmp_path / "out")])
    assert "must end in one of" in err


def test_scenario_checks_its_report_path_before_running(capsys, tmp_path):
    err = refused(capsys, ["scenario", SCENARIO, "--junit",
                           str(tmp_path / "no" / "j.xml")])
    assert "--junit" in err and "does not exist" in err


def test_serve_checks_its_statistics_path_with_its_other_options(capsys, tmp_path):
    err = refused(capsys, ["serve", "--sim", "--no-nvm", "--stats",
                           str(tmp_path / "no" / "s.json")])
    assert "--stats" in err and "does not exist" in err
    assert "--serial/--mqtt" in err  # told together


# --- TOML ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [NESTED_ARRAY, NESTED_TABLE], ids=["array", "inline-table"])
@pytest.mark.parametrize("command", [
    ["config", "--check"], ["run", *SHORT, "--config"], ["scenario"], ["chemistries"],
    ["run", *SHORT, "--chemistry"]], ids=["config", "run-config", "scenario", "chemistries",
                                          "run-chemistry"])
def test_toml_nested_too_deep_is_refused(capsys, tmp_path, text, command):
    path = tmp_path / "deep.toml"
    path.write_text(text)
    err = refused(capsys, [*command, str(path)])
    assert "deep.toml" in err and "nested too deep" in err


def test_a_scenario_set_value_nested_too_deep_or_too_long_is_refused(capsys):
    err = refused(capsys, ["scenario", SCENARIO, "--set",
                           "pack.series=" + "[" * 3000 + "]" * 3000, "--set",
                           "pack.seed=" + "1" * 5000])
    assert "pack.series: arrays or inline tables nested too deep" in err
    assert "pack.seed: cannot read the value: Exceeds the limit (4300 digits)" in err
    assert "set_int_max_str_digits" not in err  # Python's advice, not the user's


def test_an_integer_of_too_many_digits_is_refused(capsys, tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(HUGE_INT)
    err = refused(capsys, ["config", "--check", str(path)])
    assert "cannot read a value" in err and "4300 digits" in err


# --- cell profiles -------------------------------------------------------------------------------


def test_an_unknown_key_in_a_cell_profile_hides_no_other_problem(capsys, tmp_path):
    path = tmp_path / "cell.toml"
    path.write_text('name = "c"\ncapacity_ah = -3.0\ncolour = "red"\n[limits]\nv_min = 2.0\n'
                    "v_max = 4.3\nvmax = 4\n[ocv]\nsoc_pct = [0, 50, 100]\n"
                    "voltage_v = [2.0, 3.0, 4.1]\n")
    err = refused(capsys, ["chemistries", str(path)])
    assert "3 problem(s)" in err
    for fragment in ("colour = 'red': unknown field", "limits.vmax = 4: unknown field",
                     "capacity_ah = -3.0: must be within [0.001, 100000]"):
        assert fragment in err, fragment


def test_inverted_cell_limits_are_told_once_and_never_as_a_range(capsys, tmp_path):
    """v_min above v_max: that is the problem, said once; no 'within [4.5, 4.3]', and a
    voltage_v problem (both branches at once) is not told twice."""
    path = tmp_path / "cell.toml"
    path.write_text('name = "c"\ncapacity_ah = 3.0\n[limits]\nv_min = 4.5\nv_max = 4.3\n'
                    "[ocv]\nsoc_pct = [0, 50, 100]\nvoltage_v = [2.0, 3.0, 2.9]\n")
    err = refused(capsys, ["chemistries", str(path)])
    lines = [line for line in err.splitlines() if line.startswith("  - ")]
    assert lines == ["  - limits.v_min = 4.5: must be below limits.v_max (4.3)",
                     "  - ocv.voltage_v[2] = 2.9: OCV must not fall as SoC rises"]


# --- interruption --------------------------------------------------------------------------------


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(capsys, monkeypatch):
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(config_cmd, "handle", interrupted)
    assert main(["config", "--defaults"]) == 128 + signal.SIGINT
    captured = capsys.readouterr()
    assert captured.err == "bms-emu config: interrupted\n"


def test_ctrl_c_while_a_command_loads_is_one_line_and_exit_130(capsys, monkeypatch):
    """A Ctrl-C in the moment the command's module is imported (numpy and the firmware: the
    first half second) is said as any other, not a traceback."""
    import bms_emu.main as main_module

    def loading(_commands):
        raise KeyboardInterrupt

    monkeypatch.setattr(main_module, "build_parser", loading)
    assert main(["fleet", "--packs", "2"]) == 128 + signal.SIGINT
    assert capsys.readouterr().err == "bms-emu fleet: interrupted\n"


def test_the_entry_point_loads_nothing_a_ctrl_c_could_interrupt_before_main_runs():
    """The console script imports `bms_emu.main` before `main` can catch anything: numpy
    and the firmware (a third of a second) load inside it, where a Ctrl-C is one line."""
    code = "import sys, bms_emu.main; print(sorted({'numpy', 'bms'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_a_ctrl_c_while_a_command_loads_is_acted_on_once_loaded_never_lost(capsys,
                                                                          monkeypatch):
    """Raised inside an import, a KeyboardInterrupt may be swallowed by Python (a module
    lock's callback) and the command run on: while loading, Ctrl-C is noted instead, and
    acted on once loaded."""
    import bms_emu.main as main_module

    build = main_module.build_parser
    loaded: list[bool] = []

    def loading(commands):
        signal.raise_signal(signal.SIGINT)  # as if it came in the middle of an import
        loaded.append(True)  # not cut short: the load goes on to its end
        return build(commands)

    monkeypatch.setattr(main_module, "build_parser", loading)
    assert main(["config", "--defaults"]) == 128 + signal.SIGINT
    assert loaded == [True]
    captured = capsys.readouterr()
    assert captured.err == "bms-emu config: interrupted\n" and captured.out == ""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_not_interrupted_says_so(capsys):
    assert main(["run", *SHORT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["interrupted"] is None


@pytest.mark.parametrize("command", [["config", "--check"], ["run", *SHORT, "--profile"],
                                     ["chemistries"], ["scenario"]])
def test_an_endless_file_is_refused_not_read(capsys, command):
    err = refused(capsys, [*command, "/dev/zero"])
    assert "/dev/zero" in err and "it holds a NUL character" in err


def test_nvm_export_checks_its_output_before_reading_the_store(capsys, tmp_path):
    err = refused(capsys, ["nvm", "export", str(tmp_path / "absent.sqlite"), "-o",
                           str(tmp_path / "no" / "x.json")])
    assert "--output" in err and "does not exist" in err


def test_replay_checks_its_output_before_reading_the_trace(capsys, tmp_path):
    err = refused(capsys, ["replay", str(tmp_path / "absent.csv"), "--cell", "na-nfm",
                           "--out", str(tmp_path / "no" / "out.csv")])
    assert "--out" in err and "does not exist" in err
    assert "absent.csv" not in err


@pytest.mark.parametrize(("argv", "hint"), [
    (["fleet", "--packs", "2", "--shard", "-1/2"], "give it as --shard=-1/2"),
    (["run", *SHORT, "--pack-id", "-p1"], "give it as --pack-id=-p1")])
def test_a_value_that_starts_with_a_dash_is_refused_saying_how_to_give_it(capsys, argv, hint):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "expected one argument" in err and hint in err


def test_an_option_missing_its_value_gets_no_such_hint(capsys):
    with pytest.raises(SystemExit):
        main(["fleet", "--packs", "2", "--shard"])
    err = capsys.readouterr().err
    assert err.rstrip().endswith("argument --shard: expected one argument")


@pytest.mark.parametrize(("argv", "says"), [
    (["run", *SHORT, "--mqtt", ""], "--mqtt = '': must start with mqtt://"),
    (["run", *SHORT, "--mqtt", "mqtt://[::1:1883/x"], "Invalid IPv6 URL"),
    (["run", *SHORT, "--mqtt", "mqtt://127.0.0.1:0/x"], "port must be a number 1..65535"),
    (["run", *SHORT, "--mqtt", "mqtt://127.0.0.1/$SYS"], "starts with '$'"),
    (["run", *SHORT, "--mqtt", "mqtt://127.0.0.1/x", "--pack-id", "p" * 129],
     "129 characters; at most 128"),
    (["run", *SHORT, "--mqtt", "mqtt://127.0.0.1/x", "--pack-id", ""], "must not be empty"),
    (["fleet", "--packs", "2", "--mqtt", ""], "--mqtt = '': must start with mqtt://"),
    (["fleet", "--packs", "2", "--mqtt", "mqtt://127.0.0.1/x", "--pack-prefix", "p" * 124],
     "124 characters; at most 123"),
    (["fleet", "--packs", "2", "--mqtt", "mqtt://127.0.0.1/x", "--packs-per-process", "0"],
     "must be 'auto' or within [1, 1000]"),
    (["query", "status", "--mqtt", "", "--pack-id", "p1"], "must start with mqtt://")])
def test_a_broker_url_or_pack_id_no_broker_takes_is_refused_before_anything_runs(
        capsys, argv, says):
    err = refused(capsys, argv)
    assert says in err


def test_a_fleet_of_no_size_is_told_without_the_shares_it_cannot_have(capsys):
    err = refused(capsys, ["fleet", "--packs", "0", "--shard", "0/0",
                           "--mqtt", "mqtt://127.0.0.1/x"])
    assert "--packs = 0: must be within [1, 1000]" in err and "--shard" not in err
