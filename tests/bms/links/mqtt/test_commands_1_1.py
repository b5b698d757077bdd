"""The MQTT commands of protocol 1.1's writes - `set-time`, `reset`, `factory-defaults` - go
through the device exactly as the protocol's SetTime and CommandRequest do, held to the
same policy."""

from __future__ import annotations

import pytest

from bms.data.config import default_config
from bms.host.policy import parse_policy
from tests.bms.links.mqtt.test_commands import CAPACITY_AH, CHEM, N_SERIES, make_device, run

UTC_S = 1_767_225_600.0


@pytest.mark.parametrize("name", ["set-time", "reset", "factory-defaults"])
def test_off_unless_enabled(name):
    device = make_device()
    result = run(device, name, {"utc_s": UTC_S} if name == "set-time" else {},
                 parse_policy("state,config"))
    assert result["error"]["code"] == "NOT_ENABLED"
    assert f"the {name} command is not enabled" in result["error"]["detail"]
    assert device.utc_offsets == {}


def test_set_time_sets_the_wall_clock_of_this_boot():
    device = make_device()
    result = run(device, "set-time", {"id": 4, "utc_s": UTC_S}, now_s=12.0)
    assert result == {"id": 4, "command": "set-time", "ok": True, "utc_s": UTC_S}
    assert device.utc_offsets == {0: UTC_S - 12.0}


@pytest.mark.parametrize(("payload", "code", "words"), [
    ({}, "BAD_VALUE", "utc_s = None"),
    ({"utc_s": "now"}, "BAD_TYPE", "send {\"utc_s\": SECONDS_SINCE_1970}"),
    ({"utc_s": True}, "BAD_TYPE", "utc_s = True"),
    ({"utc_s": 12.0}, "OUT_OF_RANGE", "2000-01-01"),
    ({"utc_s": UTC_S, "zone": "CET"}, "BAD_VALUE", "'zone': not a field of set-time"),
])
def test_set_time_refusals(payload, code, words):
    device = make_device()
    result = run(device, "set-time", payload)
    assert result["error"]["code"] == code and words in result["error"]["detail"]
    assert device.utc_offsets == {}


def test_reset_is_done_by_the_runtime_and_refused_where_there_is_none():
    device = make_device()
    result = run(device, "reset", {})
    assert result["error"]["code"] == "NOT_IN_THIS_MODE"
    asked = []
    device.on_reset = lambda: asked.append(True)
    assert run(device, "reset", {"id": "r"}) == {"id": "r", "command": "reset", "ok": True}
    assert asked == [True]


def test_factory_defaults_undo_a_configuration_write():
    device = make_device()
    assert run(device, "config", {"set": {"limits.max_charge_a": 1.0}})["ok"]
    assert device.overrides
    assert run(device, "factory-defaults", {})["ok"]
    assert device.overrides == {}
    assert device.fw.cfg == default_config(CHEM, N_SERIES, CAPACITY_AH)
