"""Scenario files (hil.scenario_file), their runs (hil.scenario) and `bms-emu scenario`:
a bad file names every problem and runs nothing, a failing expectation fails and the CLI
exits 1, the JUnit report is valid XML that counts failures, a refused configuration
write is a bad file, and the same file gives the same result."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bms.data.validation import InputError
from bms_emu.main import main
from bms_emu.scenario_cmd import parse_changes
from hil.scenario import TimelineFirmware, run_scenario
from hil.scenario_file import load_scenario

# A small, quick pack: 4S at rest, 20 s.
BASE = """
name = "quick"
duration = "20s"
pack = { series = 4, initial_soc_pct = 60 }
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InputError) as info:
        load_scenario(path)
    assert info.value.source == str(path)
    return info.value.problems


def failures_of(path: Path) -> list[str]:
    """What failed when the file ran: each failing expectation's message."""
    return [v.message for v in run_scenario(load_scenario(path)).verdicts if not v.passed]


def has(problems: list[str], *parts: str) -> bool:
    """Some problem line contains every part."""
    return any(all(p in line for p in parts) for line in problems)


# --- parsing ---------------------------------------------------------------------------


def test_every_problem_of_a_bad_file_is_named_at_once(tmp_path):
    path = write(tmp_path, """
        duration = "20s"
        colour = "red"
        [pack]
        series = 0
        seed = "zero"
        [load]
        profile = "sine:3"
        [[timeline]]
        at = "5s"
        request = "reboot"
        [[timeline]]
        at = "6s"
        request = "run"
        rig = "silent"
        [[timeline]]
        at = "7s"
        inject = "sensor-ofset:cell=2"
        [[expect]]
        at = "30s"
        fault = "CELL_OVERVOLTAG"
        [[expect]]
        at = "5s"
        until = "2s"
        state = "RUNNING"
        contactors = "ajar"
        [[expect_never]]
        fault = "CELL_IMBALANCE"
        level = "FAULT"
        [bounds]
        temp_c_maximum = 60
    """)
    problems = problems_of(path)
    # the pack is checked first: with a bad pack, nothing that depends on it can be
    assert has(problems, "colour = 'red'", "unknown key or table")
    assert has(problems, "pack.series = 0", "must be within [1, 1024]")
    assert has(problems, "pack.seed = 'zero'", "must be an integer")
    good_pack = path.read_text().replace("series = 0\n", "series = 4\n").replace(
        'seed = "zero"\n', "")
    path.write_text(good_pack)
    problems = problems_of(path)
    assert has(problems, "load.profile = 'sine:3'", "current:A")
    assert has(problems, "timeline[0].request = 'reboot'", "must be one of", "clear-faults",
               "'reset'")
    assert has(problems, "timeline[1]", "needs exactly one of")
    assert has(problems, "timeline[2].inject = 'sensor-ofset:cell=2'", "KIND", "sense-open")
    assert has(problems, "expect[0].at = '30s'", "must be at most the duration, 20 s")
    assert has(problems, "expect[0].fault = 'CELL_OVERVOLTAG'", "must be one of",
               "CELL_OVERVOLTAGE")
    assert has(problems, "expect[1].state = 'RUNNING'", "must be one of", "STORAGE")
    assert has(problems, "expect[1].contactors = 'ajar'", "['open', 'closed']")
    assert has(problems, "expect_never[0]", "no such protection row",
               "CELL_IMBALANCE has: ALARM, WARNING")
    assert has(problems, "bounds.temp_c_maximum = 60", "unknown key", "temp_c_max")


def test_until_before_at_is_refused(tmp_path):
    path = write(tmp_path, BASE + """
        [[expect]]
        at = "5s"
        until = "2s"
        state = "RUN"
    """)
    assert has(problems_of(path), "expect[0].until = '2s'", "must not be before the start (5 s)")


def test_a_row_with_two_quantities_at_one_level_may_be_named_by_quantity(tmp_path):
    path = write(tmp_path, BASE + """
        [[expect]]
        at = "5s"
        fault = "VOLTAGE_SENSOR_FAULT"
        level = "FAULT"
        quantity = "open_wire_v"
    """)
    assert has(problems_of(path), "no such protection row", "VOLTAGE_SENSOR_FAULT has:",
               "FAULT (reading_stuck_s)")


def test_a_scenario_that_checks_nothing_is_refused(tmp_path):
    assert has(problems_of(write(tmp_path, BASE)), "expect: a scenario", "must check something")
    path = write(tmp_path, BASE + """
        [[expect]]
        at = "5s"
    """)
    assert has(problems_of(path), "expect[0]", "expects nothing")


def test_config_errors_are_named_under_config(tmp_path):
    path = write(tmp_path, BASE + """
        [config.limits]
        max_charge_a = 99.0
        [[expect]]
        at = "5s"
        state = "RUN"
    """)
    assert has(problems_of(path), "config.limits.max_charge_a = 99.0", "must be within")


def test_a_refused_timeline_config_write_is_a_bad_file_naming_the_parameter(tmp_path):
    path = write(tmp_path, BASE + """
        [[timeline]]
        at = "5s"
        config = { "limits.max_charge_a" = 99.0 }
        [[timeline]]
        at = "6s"
        config = { "limits.max_chrage_a" = 1.0 }
        [[expect]]
        at = "10s"
        state = "RUN"
    """)
    problems = problems_of(path)
    assert has(problems, "timeline[0].config (at 5 s) = {'limits.max_charge_a': 99.0}",
               "refused as a host write would be",
               "OUT_OF_RANGE", "limits.max_charge_a (id 0x0101) = 99.0", "must be within")
    assert has(problems, "timeline[1].config.limits.max_chrage_a = 1.0", "no such parameter")


def test_config_writes_are_checked_over_the_writes_before_them(tmp_path):
    """A write that is fine alone may be refused after an earlier one: stop_mv must stay
    below start_mv, and the first write moved start_mv."""
    path = write(tmp_path, BASE + """
        [[timeline]]
        at = "5s"
        config = { "balancing.start_mv" = 8.0 }
        [[timeline]]
        at = "6s"
        config = { balancing = { stop_mv = 9.0 } }
        [[expect]]
        at = "10s"
        state = "RUN"
    """)
    assert has(problems_of(path), "timeline[1].config (at 6 s)", "balancing.stop_mv",
               "must be below balancing.start_mv (8)")


def test_times_round_up_to_the_tick_and_the_duration_is_the_last_step(tmp_path):
    path = write(tmp_path, BASE + """
        tick = 0.5
        [[timeline]]
        at = "1.2s"
        request = "standby"
        [[expect]]
        at = 20
        state = "STANDBY"
        [[expect]]
        at = "1.25s"
        until = "2s"
        state = "STANDBY"
    """)
    sc = load_scenario(path)
    assert sc.n_steps == 40
    assert [(a.step, a.at_s) for a in sc.actions] == [(3, 1.5)]
    assert [(c.first_step, c.last_step) for c in sc.checks] == [(39, 39), (3, 4)]


def test_a_single_inline_expect_table_is_one_expectation(tmp_path):
    path = write(tmp_path, BASE + """
        expect = { at = "10s", state = "RUN", contactors = "closed" }
    """)
    (check,) = load_scenario(path).checks
    assert check.where == "expect" and len(check.conditions) == 2


def test_paths_are_relative_to_the_scenario_file(tmp_path):
    (tmp_path / "load.csv").write_text("time_s,current_a\n0,0\n5,-1\n", encoding="utf-8")
    path = write(tmp_path, BASE + """
        [load]
        profile = "load.csv"
        [[expect]]
        at = "10s"
        current_a_max = -0.9
    """)
    assert run_scenario(load_scenario(path)).passed


# --- running -------------------------------------------------------------------------------


def test_the_same_file_gives_the_same_result(tmp_path):
    path = write(tmp_path, BASE + """
        [load]
        profile = "pulses:3"
        [[timeline]]
        at = "8s"
        inject = "sensor-offset:cell=2,offset_v=1.5"
        [[expect]]
        at = "10s"
        fault = "VOLTAGE_SENSOR_FAULT"
    """)
    first, second = (run_scenario(load_scenario(path)) for _ in range(2))
    assert first.passed and second.passed
    assert [e.as_dict() for e in first.events] == [e.as_dict() for e in second.events]


def test_a_silent_rig_steps_the_firmware_without_a_measurement():
    seen = []

    class Recording:
        def step(self, m, now_s):
            seen.append(m)

    from hil.scenario_file import Action
    driver = TimelineFirmware(Recording(), [Action(2, 0.2, "rig", True, "timeline[0]"),
                                            Action(4, 0.4, "rig", False, "timeline[1]")],
                              tick_s=0.1, capacity_ah=1.0)
    for k in range(6):
        driver.step(f"m{k}", k * 0.1)
    assert seen == ["m0", "m1", None, None, "m4", "m5"]


FORTY_S = BASE.replace('"20s"', '"40s"')


def test_a_reset_is_a_new_firmware_that_keeps_what_a_store_keeps(tmp_path):
    """A host's Reset in the timeline: the firmware starts again (STANDBY, contactors
    open, then RUN again at its own request) with what it keeps over a power-down - here a
    latched sensor fault, which stays latched and keeps the contactors open."""
    path = write(tmp_path, FORTY_S + """
        [[timeline]]
        at = "5s"
        inject = "sensor-offset:cell=2,offset_v=1.5"
        [[timeline]]
        at = "12s"
        inject = "sensor-offset:cell=2,offset_v=0"
        [[timeline]]
        at = "15s"
        request = "reset"
        [[expect]]
        at = "10s"
        fault = "VOLTAGE_SENSOR_FAULT"
        state = "FAULT"
        [[expect]]
        at = "16s"
        until = "39s"
        fault = "VOLTAGE_SENSOR_FAULT"
        state = "FAULT"
        contactors = "open"
    """)
    assert failures_of(path) == []
    clean = write(tmp_path, FORTY_S + """
        [[timeline]]
        at = "15s"
        request = "reset"
        [[expect]]
        at = "15s"
        state = "STANDBY"
        contactors = "open"
        [[expect]]
        at = "30s"
        until = "39s"
        state = "RUN"
        contactors = "closed"
    """, "clean.toml")
    assert failures_of(clean) == []


def test_an_expectation_that_does_not_hold_fails_with_what_was_found(tmp_path):
    path = write(tmp_path, BASE + """
        [[expect]]
        at = "10s"
        state = "FAULT"
        charge_limit_a_max = 0.1
        [[expect]]
        at = "10s"
        state = "RUN"
        [[expect_never]]
        state = "RUN"
    """)
    result = run_scenario(load_scenario(path))
    assert not result.passed and result.failures == 2
    wrong, right, never = result.verdicts
    assert wrong.message.startswith("at 10 s: ")
    assert "expected state FAULT, found state RUN" in wrong.message
    assert "expected charge_limit_a <= 0.1 A, found charge_limit_a 1.5 A" in wrong.message
    assert right.passed and right.message == ""
    assert "state RUN" in never.message


# --- the command line ------------------------------------------------------------------------


FAILING = BASE + """
    description = "one expectation holds, one does not"
    [[expect]]
    at = "10s"
    state = "RUN"
    [[expect]]
    name = "this one must fail"
    at = "12s"
    state = "STORAGE"
"""

PASSING = BASE + """
    expect = { at = "10s", state = "RUN", contactors = "closed" }
"""


def test_cli_exits_1_when_an_expectation_fails_and_reports_each_line(tmp_path, capsys):
    good = write(tmp_path, PASSING, "good.toml")
    bad = write(tmp_path, FAILING, "bad.toml")
    assert main(["scenario", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"PASS {good}" in out and f"FAIL {bad}" in out
    assert "  ok   expect at 10 s: state RUN; contactors closed" in out
    assert "  FAIL expect[1] at 12 s: this one must fail (state STORAGE)" in out
    assert "expected state STORAGE, found state RUN" in out
    assert "2 scenario(s), 3 expectation(s), 1 failed" in out


def test_cli_exits_0_when_everything_passes(tmp_path, capsys):
    assert main(["scenario", str(write(tmp_path, PASSING))]) == 0


def test_cli_set_runs_the_story_on_another_pack_and_load(tmp_path, capsys):
    """`--set` sets keys over the file's: a value read as TOML, else as text."""
    path = write(tmp_path, PASSING)
    assert load_scenario(path).pack.series == 4
    sc = load_scenario(path, parse_changes(["pack.series=6", "pack.chemistry=na-nvpf",
                                            "load.profile=current:-1", "tick=0.5"]))
    assert (sc.pack.series, sc.pack.chemistry, sc.pack.initial_soc) == (6, "na-nvpf", 60)
    assert sc.load.profile.demand(0.0).value == -1.0 and sc.tick_s == 0.5
    assert main(["scenario", str(path), "--set", "pack.series=6", "--json"]) == 0


@pytest.mark.parametrize(("item", "named"), [
    ("pack.series", "give KEY=VALUE"), ("pack..series=4", "give KEY=VALUE"),
    ("pack.series=0", "pack.series = 0"), ("pack.cells=4", "pack.cells = 4: unknown key"),
    ("name.x=1", "name is not a table"),
    ("PACK.seed=4", "--set: PACK.seed = 4: unknown key or table 'PACK'; allowed: ['name'"),
    ("tmeline[0].at=4", "unknown key or table 'tmeline'")])
def test_cli_set_refuses_what_it_cannot_set_and_runs_nothing(tmp_path, capsys, item, named):
    assert main(["scenario", str(write(tmp_path, PASSING)), "--set", item]) == 2
    captured = capsys.readouterr()
    assert named in captured.err and captured.out == ""


def test_cli_json(tmp_path, capsys):
    bad = write(tmp_path, FAILING, "bad.toml")
    assert main(["scenario", str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False
    (sc,) = data["scenarios"]
    assert sc["file"] == str(bad) and sc["name"] == "quick"
    assert [c["passed"] for c in sc["checks"]] == [True, False]
    assert "found state RUN" in sc["checks"][1]["message"]


def test_cli_exits_2_for_a_bad_file_and_runs_nothing(tmp_path, capsys):
    good = write(tmp_path, PASSING, "good.toml")
    bad = write(tmp_path, BASE + '\nexpect = { at = "5s", state = "ON" }\n', "bad.toml")
    missing = tmp_path / "missing.toml"
    junit = tmp_path / "report.xml"
    assert main(["scenario", str(good), str(bad), str(missing), "--junit", str(junit)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not junit.exists()
    assert f"{bad}: expect.state = 'ON': must be one of" in captured.err
    assert f"{missing}: cannot read the file" in captured.err


def test_cli_refused_config_write_exits_2(tmp_path, capsys):
    path = write(tmp_path, BASE + """
        [[timeline]]
        at = "5s"
        config = { "protection.SHORT_CIRCUIT.FAULT.threshold" = 1000.0 }
        [[expect]]
        at = "10s"
        state = "RUN"
    """)
    assert main(["scenario", str(path)]) == 2
    err = capsys.readouterr().err
    assert "protection.SHORT_CIRCUIT.FAULT.threshold" in err
    assert "may be tightened, not loosened" in err


def test_junit_report_is_valid_and_counts_failures(tmp_path, capsys):
    good = write(tmp_path, PASSING, "good.toml")
    bad = write(tmp_path, FAILING, "bad.toml")
    report = tmp_path / "out" / "report.xml"
    report.parent.mkdir()
    assert main(["scenario", str(good), str(bad), "--junit", str(report)]) == 1
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "0")
    suites = root.findall("testsuite")
    assert [(s.get("file"), s.get("tests"), s.get("failures")) for s in suites] == [
        (str(good), "1", "0"), (str(bad), "2", "1")]
    description = suites[1].find("properties/property[@name='description']")
    assert description.get("value") == "one expectation holds, one does not"
    cases = suites[1].findall("testcase")
    assert [c.get("classname") for c in cases] == ["scenario.bad", "scenario.bad"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert "expected state STORAGE, found state RUN" in failure.get("message")


CELL_3_TRIPS = BASE + """
    [[timeline]]
    at = "2s"
    inject = "sensor-offset:cell=3,offset_v=1.0"
    [[expect]]
    name = "fails, to show what happened"
    at = "15s"
    state = "RUN"
"""


def test_reports_name_the_faulty_cell_as_the_file_does(tmp_path, capsys):
    """Issue 16: `cell=3` in the file is `cell 3` in the report, its JSON and JUnit."""
    path = write(tmp_path, CELL_3_TRIPS)
    report = tmp_path / "report.xml"
    assert main(["scenario", str(path), "--junit", str(report)]) == 1
    lines = [x for x in capsys.readouterr().out.splitlines() if "CELL_OVERVOLTAGE" in x]
    assert lines and all(x.endswith(" raised, cell 3") for x in lines), lines
    failure = ET.parse(report).getroot().find("testsuite/testcase/failure")
    assert "FAULT CELL_OVERVOLTAGE raised, cell 3" in failure.text
    assert main(["scenario", str(path), "--json"]) == 1
    (sc,) = json.loads(capsys.readouterr().out)["scenarios"]
    over = [e for e in sc["events"] if e["name"] == "CELL_OVERVOLTAGE"]
    assert over and all((e["cell"], e["sensor"]) == (3, None) for e in over), over


def test_junit_to_an_unwritable_path_is_a_clear_error(tmp_path, capsys):
    good = write(tmp_path, PASSING, "good.toml")
    assert main(["scenario", str(good), "--junit", str(tmp_path / "no" / "r.xml")]) == 2
    captured = capsys.readouterr()
    assert "--junit = " in captured.err and "does not exist" in captured.err
    assert captured.out == ""  # refused before the scenario ran


def test_the_readme_example_is_a_passing_scenario(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Scenarios"):]
    example = section[section.index("```toml\n") + 8:section.index("```\n", section.index(
        "```toml\n") + 8)]
    assert failures_of(write(tmp_path, example)) == []
