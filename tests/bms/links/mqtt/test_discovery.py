"""Home Assistant MQTT discovery: topics, payloads and templates against the real state JSON."""

from __future__ import annotations

import json
import math
import re

import pytest

from bms.core.signals import State
from bms.data.faults import Level
from bms.host.views import status_dict
from bms.links.mqtt import discovery as md
from protocol import messages as pm

ARGS = ("bms", "pack1", "Pack 1", "NaS-16S", "1.2.3")
TOPIC = re.compile(r"homeassistant/(sensor|binary_sensor)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)"
                   r"/config")
TEMPLATE = re.compile(r"\{\{ value_json((?:\.[A-Za-z_][A-Za-z0-9_]*)+) \}\}")
ATTRS_TEMPLATE = re.compile(r"\{\{ \{(.*)\} \| tojson \}\}")
REQUIRED = {"name", "unique_id", "default_entity_id", "state_topic", "value_template",
            "availability_topic", "payload_available", "payload_not_available", "device"}
# Home Assistant's units for the device classes used here.
UNITS = {"battery": {"%"}, "voltage": {"V", "mV"}, "current": {"A", "mA"},
         "power": {"W", "kW"}, "temperature": {"°C", "°F", "K"},
         "energy_storage": {"Wh", "kWh", "MWh"}, "duration": {"s", "min", "h", "d", "ms"}}


def state_json(runtime_s: float = math.nan, warning=False, alarm=False, fault=False) -> dict:
    """The state JSON the emulator publishes: status_dict plus power_w and levels, with a
    distinct value in every field a sensor reads, so that a mix-up shows."""
    status = pm.Status(time_s=12.0, state=State("RUN").code, contactors=0b101,
                       fault_bitmap=0b1, charge_limit_a=40.0, discharge_limit_a=80.0,
                       pack_voltage_v=51.25, current_a=-12.5, soc_pct=87.5, soh_pct=98.0,
                       remaining_wh=2450.0, runtime_s=runtime_s, cell_v_min=3.125,
                       cell_v_min_index=3, cell_v_max=3.25, cell_v_max_index=7,
                       temp_c_min=21.5, temp_c_min_index=0, temp_c_max=27.75,
                       temp_c_max_index=2, balancing_count=0)
    d = status_dict(status)
    d["power_w"] = d["pack_voltage_v"] * d["current_a"]
    d["levels"] = {"WARNING": warning, "ALARM": alarm, "FAULT": fault}
    d["charge_voltage_limit_v"], d["discharge_voltage_limit_v"] = 64.0, 30.88
    return json.loads(json.dumps(d, allow_nan=False))  # strict JSON, as published


def render(template: str, state: dict) -> str:
    """What Home Assistant renders for `{{ value_json.a.b }}`: str() of the value, so a
    JSON null is "None" (which its MQTT sensors take as unknown) and true is "True"."""
    m = TEMPLATE.fullmatch(template)
    assert m, f"template outside the checked form: {template!r}"
    value = state
    for part in m.group(1).lstrip(".").split("."):
        assert isinstance(value, dict) and part in value, f"{template}: no {part!r}"
        value = value[part]
    return str(value)


def configs(*args, **kwargs) -> dict[str, dict]:
    out = {}
    for topic, payload in md.discovery_messages(*args, **kwargs):
        assert topic not in out, f"topic twice: {topic}"
        out[topic] = json.loads(payload)
    return out


def by_key(cfgs: dict[str, dict]) -> dict[str, dict]:
    return {c["unique_id"].removeprefix("bms_pack1_"): c for c in cfgs.values()}


def test_every_payload_has_the_required_keys_and_the_pack_topics():
    cfgs = configs(*ARGS)
    assert len(cfgs) == len(md.ENTITIES) == 16
    for topic, c in cfgs.items():
        assert c.keys() >= REQUIRED, f"{topic}: missing {REQUIRED - c.keys()}"
        assert c["state_topic"] == "bms/pack1/state"
        assert c["availability_topic"] == "bms/pack1/availability"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["device"] == {"identifiers": ["bms_pack1"], "name": "Pack 1",
                               "manufacturer": md.MANUFACTURER, "model": "NaS-16S",
                               "sw_version": "1.2.3"}
        assert isinstance(c["name"], str) and c["name"]
        assert not c["name"].startswith("Pack 1")  # HA prefixes the device name itself


def test_a_pack_in_a_batch_is_available_only_while_its_process_is_online_too():
    cfgs = configs(*ARGS, also_available="bms/batch/b1/availability")
    assert len(cfgs) == len(md.ENTITIES)
    for c in cfgs.values():
        assert "availability_topic" not in c
        assert c["availability_mode"] == "all"
        assert c["availability"] == [
            {"topic": t, "payload_available": "online", "payload_not_available": "offline"}
            for t in ("bms/pack1/availability", "bms/batch/b1/availability")]
    alone = configs(*ARGS)
    for topic, c in cfgs.items():  # nothing else differs
        assert ({k: v for k, v in c.items() if not k.startswith("availability")}
                == {k: v for k, v in alone[topic].items()
                    if not k.startswith(("availability", "payload_"))
                    or k in ("payload_on", "payload_off")})


def test_topics_unique_ids_and_entity_ids_follow_ha_rules():
    cfgs = configs(*ARGS)
    uids = [c["unique_id"] for c in cfgs.values()]
    assert len(set(uids)) == len(uids)
    for topic, c in cfgs.items():
        m = TOPIC.fullmatch(topic)
        assert m, topic
        component, node, obj = m.groups()
        assert node == "bms_pack1"
        assert c["unique_id"] == f"bms_pack1_{obj}"
        assert re.fullmatch(rf"{component}\.[a-z0-9_]+", c["default_entity_id"])
        assert c["default_entity_id"] == f"{component}.bms_pack1_{obj}"
    assert "homeassistant/sensor/bms_pack1/soc/config" in cfgs


@pytest.mark.parametrize("pack_id", ["pack 1", "pack.1", "pack/1", "pâck:1", "Pack-1_ok"])
def test_pack_ids_with_other_characters_are_sanitised(pack_id):
    for topic, payload in md.discovery_messages("bms", pack_id, "P", "M", "1"):
        m = TOPIC.fullmatch(topic)
        assert m, topic
        c = json.loads(payload)
        assert c["state_topic"] == f"bms/{pack_id}/state"  # the real topic, unsanitised
        assert c["device"]["identifiers"] == [m.group(2)]
        assert re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", c["default_entity_id"])


def test_sanitised_ids_stay_distinct_and_stable():
    ids = {p: md.node_id("bms", p) for p in ("pack 1", "pack.1", "pack/1", "pack_1")}
    assert ids["pack_1"] == "bms_pack_1"  # clean ids are kept as they are
    assert len(set(ids.values())) == len(ids)
    assert md.node_id("bms", "pack.1") == md.node_id("bms", "pack.1")
    assert md.node_id("site/bms", "pack1") != md.node_id("bms", "pack1")
    assert md.node_id("other", "pack1") == "other_pack1"


@pytest.mark.parametrize("prefix, pack_id", [("bms", ""), ("bms", "p+1"), ("bms", "p#"),
                                             ("", "pack1")])
def test_unusable_ids_are_refused(prefix, pack_id):
    with pytest.raises(ValueError):
        md.discovery_messages(prefix, pack_id, "P", "M", "1")


def test_templates_render_the_expected_values_from_the_state_json():
    state = state_json()
    want = {"soc": "87.5", "pack_voltage": "51.25", "current": "-12.5", "power": "-640.625",
            "cell_voltage_min": "3.125", "cell_voltage_max": "3.25",
            "temperature_max": "27.75", "remaining_energy": "2450.0", "runtime": "None",
            "soh": "98.0", "state": "RUN", "level_warning": "False", "level_alarm": "False",
            "level_fault": "False", "charge_voltage_limit": "64.0",
            "discharge_voltage_limit": "30.88"}
    got = {k: render(c["value_template"], state) for k, c in by_key(configs(*ARGS)).items()}
    assert got == want
    busy = state_json(runtime_s=5400.0, alarm=True, fault=True)
    got = {k: render(c["value_template"], busy) for k, c in by_key(configs(*ARGS)).items()}
    assert got["runtime"] == "5400.0"
    assert (got["level_warning"], got["level_alarm"], got["level_fault"]) == (
        "False", "True", "True")


def test_null_values_render_as_unknown_not_as_an_error():
    state = state_json()
    nulled = {k: (None if isinstance(v, float) else v) for k, v in state.items()}
    nulled["levels"] = dict.fromkeys(Level)
    for key, c in by_key(configs(*ARGS)).items():
        if key != "state":
            assert render(c["value_template"], nulled) == "None", key


def test_attribute_template_reads_existing_fields():
    c = by_key(configs(*ARGS))["state"]
    assert c["json_attributes_topic"] == c["state_topic"]
    m = ATTRS_TEMPLATE.fullmatch(c["json_attributes_template"])
    assert m
    pairs = re.findall(r"'(\w+)': value_json\.(\w+)", m.group(1))
    assert {a for a, _ in pairs} == {"contactors", "faults"}
    assert all(a == f and f in state_json() for a, f in pairs)


def test_units_and_classes_are_valid_for_home_assistant():
    sensors = [c for t, c in configs(*ARGS).items() if "/sensor/" in t]
    for c in sensors:
        dc = c.get("device_class")
        if dc == "enum":
            assert "unit_of_measurement" not in c and "state_class" not in c
        else:
            assert c["state_class"] == "measurement"
        if dc in UNITS:
            assert c["unit_of_measurement"] in UNITS[dc], c["name"]
        else:
            assert dc in (None, "enum"), f"{c['name']}: unchecked device_class {dc}"
        assert c.get("entity_category") in (None, "diagnostic")
    classes = {c["unique_id"].removeprefix("bms_pack1_"): (
        c.get("device_class"), c.get("unit_of_measurement")) for c in sensors}
    assert classes["soc"] == ("battery", "%")
    assert classes["remaining_energy"] == ("energy_storage", "Wh")
    assert classes["runtime"] == ("duration", "s")
    assert classes["temperature_max"] == ("temperature", "°C")
    assert classes["soh"] == (None, "%")


def test_state_sensor_is_an_enum_of_the_firmware_states():
    c = by_key(configs(*ARGS))["state"]
    assert c["device_class"] == "enum"
    assert c["options"] == [s.value for s in State]
    assert set(c["options"]) <= set(State) and len(c["options"]) == len(set(c["options"]))


def test_one_problem_binary_sensor_per_fault_level():
    cfgs = configs(*ARGS)
    binary = [c for t, c in cfgs.items() if t.startswith("homeassistant/binary_sensor/")]
    levels = {c["value_template"].split(".")[-1].rstrip(" }") for c in binary}
    assert levels == {"WARNING", "ALARM", "FAULT"} and len(binary) == 3
    for c in binary:
        assert c["device_class"] == "problem"
        assert (c["payload_on"], c["payload_off"]) == ("True", "False")
        for flag in (True, False):
            level = c["value_template"].split(".")[-1].rstrip(" }")
            state = state_json(**{level.lower(): flag})
            rendered = render(c["value_template"], state)
            assert rendered == (c["payload_on"] if flag else c["payload_off"])


def test_payloads_are_json_with_the_unit_symbols_intact():
    for topic, payload in md.discovery_messages(*ARGS):
        assert json.loads(payload)
        if topic.endswith("/temperature_max/config"):
            assert "°C" in payload


def test_removal_mirrors_discovery_with_empty_payloads():
    topics = [t for t, _ in md.discovery_messages(*ARGS)]
    removal = md.removal_messages(*ARGS)
    assert [t for t, _ in removal] == topics
    assert all(p == "" for _, p in removal)
    assert md.removal_messages("bms", "pack1") == removal
    assert [t for t, _ in md.removal_messages("bms", "pack.1")] == [
        t for t, _ in md.discovery_messages("bms", "pack.1", "P", "M", "1")]


def test_discovery_prefix_can_be_changed():
    topics = [t for t, _ in md.discovery_messages(*ARGS, discovery_prefix="ha")]
    assert all(t.startswith("ha/") for t in topics)


def test_home_assistant_status():
    assert md.HA_STATUS_TOPIC == "homeassistant/status" and md.HA_ONLINE == "online"
    assert md.ha_came_online(b"online") and md.ha_came_online("online\n")
    assert not md.ha_came_online(b"offline")
