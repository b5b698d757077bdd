"""close_names: the one "did you mean" rule, as the CLI (defaults) and MQTT (fewer) ask it."""

import pytest

from bms.data.validation import close_names

NAMES = ["limits.max_charge_a", "limits.max_discharge_a", "limits.charge_taper_v",
         "limits.discharge_taper_v", "limits.alarm_fraction", "precharge.done_fraction",
         "balancing.mode", "balancing.min_delta_v"]
MQTT = {"similar": 3, "contains": False, "last_part": False, "limit": 4}


@pytest.mark.parametrize(("text", "cli", "mqtt"), [
    ("limits.max_charg_a",
     ["limits.max_charge_a", "limits.max_discharge_a", "limits.charge_taper_v",
      "limits.discharge_taper_v", "limits.alarm_fraction"],
     ["limits.max_charge_a", "limits.max_discharge_a", "limits.charge_taper_v"]),
    # the section left out: the name ending in it comes first
    ("max_charge_a", ["limits.max_charge_a", "limits.max_discharge_a"],
     ["limits.max_charge_a", "limits.max_discharge_a"]),
    # contained in names: the CLI only
    ("charge", ["limits.max_charge_a", "limits.max_discharge_a", "limits.charge_taper_v",
                "limits.discharge_taper_v", "precharge.done_fraction"], []),
    ("fraction", ["limits.alarm_fraction", "precharge.done_fraction"], []),
    # the last dotted part misspelt: the CLI only
    ("mdoe", ["balancing.mode"], []),
    ("mode", ["balancing.mode"], ["balancing.mode"]),
    ("balancing.mod", ["balancing.mode", "balancing.min_delta_v"],
     ["balancing.mode", "balancing.min_delta_v"]),
    # too short to be contained, too far to be similar
    ("ch", [], []),
    ("zzz", [], []),
])
def test_close_names_as_each_caller_asks(text: str, cli: list[str], mqtt: list[str]) -> None:
    assert close_names(text, NAMES) == cli
    assert close_names(text, NAMES, **MQTT) == mqtt


def test_close_names_are_listed_once_and_cut_at_the_limit() -> None:
    names = [f"{section}.x1" for section in "abcdefgh"]
    assert close_names("x1", names) == names[:6]
    assert close_names("x1", names, **MQTT) == names[:4]
    assert close_names("a.x1", ["a.x1", "b.a.x1"]) == ["a.x1", "b.a.x1"]
