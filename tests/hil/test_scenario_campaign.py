"""Campaigns (hil.scenario_campaign): one scenario over a grid of seeds, injections and
parameters, every case checked before any runs, each named by its grid point."""

from __future__ import annotations

import json

import pytest

from bms.data.validation import InputError
from bms_emu.main import main
from hil.scenario_campaign import MAX_CASES, load_cases
from hil.scenario_file import load_scenario
from tests.hil.test_scenario import BASE, write

# A 4S pack at rest whose sensor-offset on a cell (the grid's subject) trips OVERVOLTAGE.
OFFSET = BASE + """
    [[timeline]]
    at = "2s"
    inject = "sensor-offset:cell=1,offset_v=1.0"
    [[expect]]
    name = "the faulty reading opens the contactors"
    at = "15s"
    contactors = "open"
"""


def test_the_cases_are_the_product_of_the_grid_last_key_fastest(tmp_path):
    path = write(tmp_path, OFFSET + """
        [campaign]
        "pack.seed" = [1, 2]
        pack.ambient_c = [20, 30]
    """)
    cases = load_cases(path)
    assert [c.case for c in cases] == [
        (("pack.seed", 1), ("pack.ambient_c", 20)), (("pack.seed", 1), ("pack.ambient_c", 30)),
        (("pack.seed", 2), ("pack.ambient_c", 20)), (("pack.seed", 2), ("pack.ambient_c", 30))]
    assert [(c.pack.seed, c.pack.ambient_c) for c in cases] == [(1, 20), (1, 30), (2, 20),
                                                                 (2, 30)]
    assert cases[1].name == "quick [pack.seed=1; pack.ambient_c=30]"
    assert all(c.path == str(path) for c in cases)
    # The file alone, as `load_scenario` reads it, is the file as written: no grid.
    assert load_scenario(path).case == () and load_scenario(path).name == "quick"


def test_a_grid_over_a_timeline_entry_varies_its_injection_at_its_time(tmp_path):
    path = write(tmp_path, OFFSET)
    cases = load_cases(path, grid={"timeline[0].inject": [
        "sensor-offset:cell=2,offset_v=1.0", "sensor-offset:cell=4,offset_v=1.0"]})
    assert [c.injections[0].params["cell"] for c in cases] == [2, 4]
    assert {c.injections[0].at_s for c in cases} == {2.0}


def test_cli_grid_replaces_the_files_key_and_adds_its_own(tmp_path):
    path = write(tmp_path, OFFSET + """
        [campaign]
        "pack.seed" = [1, 2, 3]
    """)
    cases = load_cases(path, {"pack.series": 6},
                       {"pack.seed": [7], "pack.ambient_c": [25.0, 35.0]})
    assert [(c.pack.seed, c.pack.ambient_c, c.pack.series) for c in cases] == [
        (7, 25.0, 6), (7, 35.0, 6)]


@pytest.mark.parametrize(("option", "items", "named"), [
    ("--grid", ["pack.seed=1,2", "pack.seed=3"],
     "pack.seed: given twice: give each key once, all its values in one (KEY=V1,V2,...)"),
    ("--set", ["pack.series=6", " pack.series=8"], "pack.series: given twice"),
])
def test_a_key_given_twice_on_the_command_line_is_refused_not_half_taken(
        tmp_path, capsys, option, items, named):
    """`--grid pack.seed=1,2 --grid pack.seed=3` ran seed 3 alone: the first was lost."""
    args = [arg for item in items for arg in (option, item)]
    assert main(["scenario", str(write(tmp_path, OFFSET)), *args]) == 2
    captured = capsys.readouterr()
    assert named in captured.err and captured.out == ""


def test_a_key_given_to_both_set_and_grid_is_refused_naming_it(tmp_path, capsys):
    """`--grid pack.seed=1,2 --set pack.seed=3` ran seeds 1 and 2: the --set was lost."""
    assert main(["scenario", str(write(tmp_path, OFFSET)), "--grid", "pack.seed=1,2",
                 "--set", "pack.seed=3"]) == 2
    captured = capsys.readouterr()
    assert "pack.seed: given to both --set and --grid: give it to one" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(("campaign", "named"), [
    ('"pack.seed" = 3', "campaign.pack.seed = 3: must be a non-empty array"),
    ('"pack.seed" = []', "campaign.pack.seed = []: must be a non-empty array"),
    ('"pack.seed" = [1, 1]', "campaign.pack.seed = 1: is given twice"),
    ('"pack.seed" = [1, -1]', "case pack.seed=-1: pack.seed = -1: must be within"),
    ('"pack.cells" = [4]', "case pack.cells=4: pack.cells = 4: unknown key"),
    ('"timeline[5].inject" = ["x"]', "timeline[5] is not a table in"),
    ('"timeline[0].inject" = ["sensor-offset:cell=9,offset_v=1"]',
     "case timeline[0].inject=sensor-offset:cell=9,offset_v=1: timeline[0].inject"),
])
def test_a_bad_grid_value_is_named_by_key_and_value(tmp_path, campaign, named):
    path = write(tmp_path, OFFSET + "\n[campaign]\n" + campaign + "\n")
    with pytest.raises(InputError) as info:
        load_cases(path)
    assert info.value.source == str(path)
    assert any(named in p for p in info.value.problems), info.value.problems


def test_a_bad_value_is_named_once_not_in_every_case_it_is_in(tmp_path):
    path = write(tmp_path, OFFSET + """
        [campaign]
        "pack.seed" = [1, -1]
        "pack.ambient_c" = [20, 25, 30]
    """)
    with pytest.raises(InputError) as info:
        load_cases(path)
    assert len(info.value.problems) == 1, info.value.problems


def test_a_grid_past_the_case_limit_is_refused_before_any_is_read(tmp_path):
    n = int(MAX_CASES ** 0.5) + 1
    with pytest.raises(InputError, match=f"makes {n * n} cases; at most {MAX_CASES}"):
        load_cases(write(tmp_path, OFFSET), grid={"pack.seed": list(range(n)),
                                                  "pack.ambient_c": list(range(n))})


def test_cli_grid_values_read_as_toml_or_as_text(tmp_path, capsys):
    """`1,2` is an array of numbers; `na-nfm,na-nvpf` texts; `[...]` a TOML array, for
    values with commas. The JSON lists every case with its grid point."""
    path = write(tmp_path, OFFSET)
    assert main(["scenario", str(path), "--json", "--grid", "pack.seed=1,2",
                 "--grid", "pack.chemistry=na-nfm,na-nvpf", "--grid",
                 'timeline[0].inject=["sensor-offset:cell=2,offset_v=1.0"]']) == 0
    cases = [s["case"] for s in json.loads(capsys.readouterr().out)["scenarios"]]
    assert cases == [{"pack.seed": s, "pack.chemistry": c,
                      "timeline[0].inject": "sensor-offset:cell=2,offset_v=1.0"}
                     for s in (1, 2) for c in ("na-nfm", "na-nvpf")]


def test_cli_campaign_table_names_each_case_and_its_failing_check(tmp_path, capsys,
                                                                  monkeypatch):
    """An offset too small to trip (0.01 V) fails the expectation: the table says which
    case did not hold, and what was found."""
    monkeypatch.setenv("COLUMNS", "250")  # one table row a line
    path = write(tmp_path, OFFSET)
    assert main(["scenario", str(path), "--grid",
                 "timeline[0].inject=[\"sensor-offset:cell=1,offset_v=1.0\", "
                 "\"sensor-offset:cell=1,offset_v=0.01\"]"]) == 1
    out = capsys.readouterr().out
    table = out[out.index("campaign: 1 of 2 case(s) held"):]
    rows = [line for line in table.splitlines() if "PASS" in line or "FAIL" in line]
    assert ["PASS" in rows[0], "FAIL" in rows[1]] == [True, True], table
    assert "the faulty reading opens the contactors" in rows[1] and "s.toml" in rows[1]
    assert "offset_v=0.01" in rows[1] and "offset_v=1.0" in rows[0]


def test_cli_bad_grid_items_exit_2_and_run_nothing(tmp_path, capsys):
    path = write(tmp_path, OFFSET)
    assert main(["scenario", str(path), "--grid", "pack.seed", "--grid", "pack.seed=0,-2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "'pack.seed': give KEY=VALUE" in captured.err


def test_a_set_key_the_files_campaign_varies_is_refused_naming_it(tmp_path, capsys):
    """`--set pack.seed=3` on a file whose [campaign] varies pack.seed ran the campaign's
    seeds: the --set was lost."""
    path = write(tmp_path, OFFSET + "\n[campaign]\n\"pack.seed\" = [1, 2]\n")
    assert main(["scenario", str(path), "--set", "pack.seed=3"]) == 2
    captured = capsys.readouterr()
    assert "--set pack.seed = 3: the file's [campaign] varies this key" in captured.err
    assert captured.out == ""
