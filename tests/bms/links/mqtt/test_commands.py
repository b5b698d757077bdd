"""MQTT commands against a real Device: each command's effect, each refusal's code and
reason (and that it changed nothing), the command policy, and that no payload makes
`handle_command` raise or answer with something JSON cannot carry."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bms.core.firmware import Firmware
from bms.data.parameters import catalogue, value_of
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from bms.host.device import Device, Identity
from bms.host.policy import COMMANDS, CommandPolicy, parse_policy
from bms.links.mqtt.commands import handle_command
from protocol import messages as pm

CHEM = PRESETS["na-nfm"]
N_SERIES = 4
CAPACITY_AH = 2 * CHEM.capacity_ah
PARAMS = catalogue(Firmware(CHEM, N_SERIES, CAPACITY_AH).cfg)
NAMES = [p.name for p in PARAMS]
ALL = parse_policy(",".join(COMMANDS))  # every command, no limits


def make_device() -> Device:
    fw = Firmware(CHEM, N_SERIES, CAPACITY_AH)
    return Device(fw, CHEM, Identity(CHEM.name, pm.Mode.SIM, 2, CAPACITY_AH, 3))


@pytest.fixture
def device() -> Device:
    return make_device()


def snapshot(device: Device) -> tuple:
    fw = device.fw
    return fw.cfg, dict(device.overrides), fw.requested, fw.clear_requested


def run(device: Device, name: str, payload: object, policy: CommandPolicy | None = ALL,
        now_s: float = 0.0) -> dict:
    """The result for a payload (a dict is sent as JSON), checked to be JSON; a refusal
    checked to have changed nothing."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    before = snapshot(device)
    result = handle_command(name, data, policy, device, now_s)
    json.dumps(result, allow_nan=False)
    assert result["command"] == name
    assert result["ok"] in (True, False)
    if not result["ok"]:
        after = snapshot(device)
        assert after[0] is before[0] and after[1:] == before[1:], result
        assert set(result["error"]) == {"code", "detail"} and result["error"]["detail"]
    return result


def refused(result: dict, code: str) -> str:
    assert result["ok"] is False, result
    assert result["error"]["code"] == code, result["error"]
    return result["error"]["detail"]


# --- each command -----------------------------------------------------------------------

@pytest.mark.parametrize("word", ["standby", "storage", "run"])
def test_state_requests_the_state(device, word):
    device.fw.requested = "standby" if word == "run" else "run"
    result = run(device, "state", {"state": word})
    assert result == {"id": None, "command": "state", "ok": True, "state": word}
    assert device.fw.requested == word


def test_clear_faults_requests_a_clear(device):
    assert device.fw.clear_requested is False
    assert run(device, "clear-faults", {}) == {"id": None, "command": "clear-faults",
                                                "ok": True}
    assert device.fw.clear_requested is True


def test_service_reset_requests_a_service_action(device):
    assert run(device, "service-reset", {"id": 4}) == {"id": 4, "command": "service-reset",
                                                       "ok": True}
    assert device.fw.service_requested is True


def test_inject_hands_the_spec_to_the_simulated_pack(device):
    assert refused(run(device, "inject", {"spec": "1:open-wire:cell=1"}),
                   "NOT_IN_THIS_MODE")  # no simulated pack: as the protocol says
    injected = []
    device.inject = lambda spec, now_s: injected.append((spec, now_s))
    result = run(device, "inject", {"spec": "1:open-wire:cell=1"}, now_s=2.0)
    assert result == {"id": None, "command": "inject", "ok": True, "spec": "1:open-wire:cell=1"}
    assert injected == [("1:open-wire:cell=1", 2.0)]
    assert "spec" in refused(run(device, "inject", {"spec": 1}), "BAD_TYPE")
    assert "spec" in refused(run(device, "inject", {}), "BAD_VALUE")


@pytest.mark.parametrize("mode", ["off", "soc", "voltage"])
def test_balancing_sets_the_mode(device, mode):
    if mode == "voltage":
        run(device, "balancing", {"mode": "off"})
    result = run(device, "balancing", {"mode": mode})
    assert result == {"id": None, "command": "balancing", "ok": True, "mode": mode}
    assert device.fw.cfg.balancing.mode == mode
    assert device.overrides["balancing"]["mode"] == mode


@pytest.mark.parametrize("payload", [{}, {"get": []}])
def test_config_get_all(device, payload):
    values = run(device, "config", payload)["values"]
    assert list(values) == NAMES
    assert values == {p.name: value_of(device.fw.cfg, p) for p in PARAMS}


def test_config_get_named_and_sections(device):
    values = run(device, "config", {"get": ["balancing.mode", "limits",
                                            "limits.max_charge_a"]})["values"]
    limits = [n for n in NAMES if n.startswith("limits.")]
    assert list(values) == ["balancing.mode", *limits]  # the section's names once each
    assert values["balancing.mode"] == "voltage"
    assert values["limits.max_charge_a"] == device.fw.cfg.limits.max_charge_a


def test_config_set_applies_every_value_and_answers_with_them(device):
    result = run(device, "config", {"id": "c1", "set": {
        "limits.max_charge_a": 1, "balancing.mode": "soc", "precharge.retries": 3.0,
        "estimation.learn_offset_when_open": False}})
    assert result == {"id": "c1", "command": "config", "ok": True, "values": {
        "limits.max_charge_a": 1.0, "balancing.mode": "soc", "precharge.retries": 3,
        "estimation.learn_offset_when_open": False}}
    cfg = device.fw.cfg
    assert (cfg.limits.max_charge_a, cfg.balancing.mode, cfg.precharge.retries) == (1.0, "soc", 3)
    assert cfg.estimation.learn_offset_when_open is False
    assert run(device, "config", {"get": ["limits.max_charge_a"]})["values"] == {
        "limits.max_charge_a": 1.0}


# --- all or nothing, and each refusal ------------------------------------------------------

@pytest.mark.parametrize(("bad", "code", "words"), [
    ({"limits.max_charge_a": 100.0}, "OUT_OF_RANGE", ["limits.max_charge_a", "100"]),
    ({"precharge.retries": 2.5}, "BAD_TYPE", ["precharge.retries", "2.5", "integer"]),
    ({"estimation.learn_offset_when_open": 1}, "BAD_TYPE",
     ["estimation.learn_offset_when_open", "true or false"]),
    ({"limits.max_charge_a": "1.0"}, "BAD_TYPE", ["limits.max_charge_a", "number"]),
    ({"balancing.mode": "sometimes"}, "BAD_VALUE", ["balancing.mode", "voltage"]),
    ({"limits.max_charg_a": 1.0}, "UNKNOWN_PARAM",
     ["limits.max_charg_a", "close names", "limits.max_charge_a"]),
])
def test_config_set_one_bad_value_applies_nothing(device, bad, code, words):
    good = {"balancing.mode": "soc", "limits.max_discharge_a": 2.0}
    detail = refused(run(device, "config", {"set": good | bad}), code)
    for word in words:
        assert word in detail
    assert device.fw.cfg.balancing.mode == "voltage"
    assert device.fw.cfg.limits.max_discharge_a != 2.0


def test_config_get_of_an_unknown_name_is_unknown_param(device):
    detail = refused(run(device, "config", {"get": ["limits.max_charge_a", "limits.nope",
                                                    "balancing.mod"]}), "UNKNOWN_PARAM")
    assert "'limits.nope'" in detail and "'balancing.mod'" in detail
    assert "balancing.mode" in detail  # a close name


@pytest.mark.parametrize(("name", "payload", "code", "words"), [
    ("state", {"state": "go"}, "BAD_VALUE", ["'go'", "run, standby, storage"]),
    ("state", {"state": 1}, "BAD_TYPE", ["state = 1", "string"]),
    ("state", {}, "BAD_VALUE", ["state missing"]),
    ("state", {"state": "run", "force": True}, "BAD_VALUE", ["'force'", "state, id"]),
    ("balancing", {"mode": "fast"}, "BAD_VALUE", ["'fast'", "off, voltage, soc"]),
    ("clear-faults", {"all": True}, "BAD_VALUE", ["'all'", "allowed: id"]),
    ("config", {"get": [], "set": {"limits.max_charge_a": 1.0}}, "BAD_VALUE", ["one of"]),
    ("config", {"get": "limits"}, "BAD_TYPE", ["list of parameter names"]),
    ("config", {"set": []}, "BAD_TYPE", ["object"]),
    ("config", {"set": {}}, "BAD_VALUE", ["nothing to set"]),
    ("state", {"state": "run", "id": [1]}, "BAD_TYPE", ["id = [1]", "string or number"]),
])
def test_bad_payload_fields(device, name, payload, code, words):
    detail = refused(run(device, name, payload), code)
    for word in words:
        assert word in detail, detail


@pytest.mark.parametrize(("payload", "words"), [
    (b"", ["empty"]),
    (b"state=run", ["not JSON", "Expecting value"]),
    (b'{"state": "run"', ["not JSON"]),
    (b'["run"]', ["array", "not an object"]),
    (b'"run"', ["string"]),
    (b"null", ["null"]),
    (b"\xff\xfe", ["UTF-8"]),
    (b'{"id": NaN, "state": "run"}', ["NaN"]),
    (b'{"state": "run", "id": 1e999}', ["1e999"]),
    (b'{"state": "run", "state": "standby"}', ["'state'", "more than once"]),
    (b"[" * 100_000, ["not usable JSON"]),
])
def test_bad_json(device, payload, words):
    detail = refused(run(device, "state", payload), "BAD_JSON")
    for word in words:
        assert word in detail, detail


def test_unknown_command_lists_the_commands(device):
    result = run(device, "reboot", {"id": 7})
    assert result["id"] == 7
    assert ", ".join(COMMANDS) in refused(result, "UNKNOWN_COMMAND")


@pytest.mark.parametrize("policy", [None, CommandPolicy(), parse_policy("clear-faults")])
def test_commands_are_off_unless_enabled(device, policy):
    detail = refused(run(device, "state", {"state": "standby"}, policy), "NOT_ENABLED")
    assert "state command is not enabled" in detail
    assert ("clear-faults" if policy and policy.limits else "none") in detail


def test_state_limit(device):
    policy = parse_policy("state=standby")
    detail = refused(run(device, "state", {"state": "run"}, policy), "NOT_ENABLED")
    assert "'run'" in detail and "allowed: standby" in detail
    assert run(device, "state", {"state": "standby"}, policy)["ok"]
    assert device.fw.requested == "standby"


def test_balancing_limit(device):
    policy = parse_policy("balancing=off|voltage")
    detail = refused(run(device, "balancing", {"mode": "soc"}, policy), "NOT_ENABLED")
    assert "allowed: off, voltage" in detail
    assert run(device, "balancing", {"mode": "off"}, policy)["ok"]


def test_config_limit_refuses_sets_outside_it_but_gets_anything(device):
    policy = parse_policy("config=limits.*")
    detail = refused(run(device, "config", {"set": {"limits.max_charge_a": 1.0,
                                                    "balancing.mode": "soc"}}, policy),
                     "NOT_ENABLED")
    assert "balancing.mode" in detail and "limits.*" in detail
    assert "limits.max_charge_a" not in detail.split("here")[0]
    assert device.fw.cfg.limits.max_charge_a != 1.0  # all or nothing
    assert run(device, "config", {"get": ["balancing.mode"]}, policy)["values"] == {
        "balancing.mode": "voltage"}
    assert run(device, "config", {"set": {"limits.max_charge_a": 1.0}}, policy)["ok"]
    assert device.fw.cfg.limits.max_charge_a == 1.0


# --- the correlation id ---------------------------------------------------------------------

@pytest.mark.parametrize("ident", ["abc-1", 42, 2.5, -1, ""])
def test_id_is_echoed_on_success_and_on_error(device, ident):
    assert run(device, "clear-faults", {"id": ident})["id"] == ident
    result = run(device, "state", {"id": ident, "state": "nowhere"})
    assert result["id"] == ident and result["ok"] is False
    assert run(device, "state", {"id": ident, "state": "run"}, None)["id"] == ident
    assert run(device, "nope", {"id": ident})["id"] == ident


def test_result_keys(device):
    ok = run(device, "state", {"id": "x", "state": "standby"})
    assert list(ok) == ["id", "command", "ok", "state"]
    bad = run(device, "state", {"id": "x", "state": "up"})
    assert list(bad) == ["id", "command", "ok", "error"]


# --- the policy -----------------------------------------------------------------------------

def test_parse_policy():
    policy = parse_policy("state=run|standby, clear-faults,balancing,config=limits.*|"
                          "balancing.mode")
    assert dict(policy.limits) == {"state": ("run", "standby"), "clear-faults": None,
                                   "balancing": None,
                                   "config": ("limits.*", "balancing.mode")}
    assert policy.enabled("state") and policy.allows("state", "run")
    assert not policy.allows("state", "storage")
    assert policy.allows("balancing", "soc")
    assert policy.may_set("limits.max_charge_a") and policy.may_set("balancing.mode")
    assert not policy.may_set("balancing.max_cells")
    assert parse_policy(policy.describe()) == policy
    assert parse_policy("config").may_set("protection.CELL_OVERVOLTAGE.FAULT.threshold")


@pytest.mark.parametrize("text", [None, "", "  "])
def test_empty_policy_enables_nothing(text):
    policy = parse_policy(text)
    assert not any(policy.enabled(c) for c in COMMANDS)
    assert policy.describe() == ""


@pytest.mark.parametrize(("text", "words"), [
    ("reboot", ["'reboot'", "not a command",
                "state, clear-faults, service-reset, balancing, config, inject"]),
    ("state=run|go", ["'state=run|go'", "'go'", "run|standby|storage"]),
    ("state=Run", ["'Run'"]),
    ("balancing=fast", ["'fast'", "off|voltage|soc"]),
    ("clear-faults=all", ["'clear-faults=all'", "takes no limit"]),
    ("state=", ["'state='", "empty word"]),
    ("config=limits.*|", ["empty word"]),
    ("state,,balancing", ["no command", "single commas"]),
    ("state=run,state=standby", ["'state=standby'", "twice"]),
])
def test_bad_policy_names_the_bad_part(text, words):
    with pytest.raises(InputError) as info:
        parse_policy(text)
    message = str(info.value)
    assert message.startswith("--mqtt-commands")
    for word in words:
        assert word in message, message


def test_bad_policy_lists_every_problem():
    with pytest.raises(InputError) as info:
        parse_policy("reboot,state=go,clear-faults=x", source="--cmds")
    assert len(info.value.problems) == 3 and info.value.source == "--cmds"


def test_config_patterns_checked_against_the_parameters():
    assert parse_policy("config=limits.*", param_names=NAMES).may_set("limits.max_charge_a")
    with pytest.raises(InputError, match=r"'limit\.\*' matches no parameter"):
        parse_policy("config=limit.*|balancing.mode", param_names=NAMES)


# --- never raises -----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)
IDS = st.integers() | st.text(max_size=8) | st.floats(allow_nan=False, allow_infinity=False) \
    | JSON
WORDS = st.sampled_from(["run", "standby", "storage", "off", "voltage", "soc", "", "RUN"])
VALUES = st.sampled_from([0, 1, 2, 2.5, 3.0, -1.0, 1e9, True, False, "soc", "off", "rest"])
# (command, payload) pairs mostly shaped as the command wants them, so that the property
# covers commands done as well as refused; and some that are anything at all.
NEAR_VALID = st.one_of(
    st.tuples(st.just("state"), st.fixed_dictionaries({"state": WORDS | JSON},
                                                      optional={"id": IDS})),
    st.tuples(st.just("balancing"), st.fixed_dictionaries({"mode": WORDS | JSON},
                                                          optional={"id": IDS})),
    st.tuples(st.just("clear-faults"), st.fixed_dictionaries({}, optional={"id": IDS})),
    st.tuples(st.just("config"), st.fixed_dictionaries({}, optional={"id": IDS, "get": st.lists(
        st.sampled_from(NAMES) | st.sampled_from(["limits", "protection", ""])
        | st.text(max_size=10), max_size=4) | JSON})),
    st.tuples(st.just("config"), st.fixed_dictionaries(
        {"set": st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8),
                                VALUES | JSON, max_size=3)}, optional={"id": IDS})),
    st.tuples(st.sampled_from([*COMMANDS, "reboot"]), JSON))
NAME = st.sampled_from([*COMMANDS, "reboot", ""])
EVERY = ",".join(COMMANDS)
POLICY = st.sampled_from([None, "", EVERY, EVERY, EVERY, "state=standby,config=limits.*",
                          "balancing=off|soc,clear-faults,config=balancing.*"])
EXAMPLE = settings(max_examples=300, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


def check_never_raises(name: str, payload: bytes, policy_text: str | None) -> None:
    device = make_device()
    before = snapshot(device)
    result = handle_command(name, payload, parse_policy(policy_text), device, 1.0)
    json.dumps(result, allow_nan=False)
    assert result["command"] == name and result["ok"] in (True, False)
    if not result["ok"]:
        assert result["error"]["code"] != "INTERNAL", result
        after = snapshot(device)
        assert after[0] is before[0] and after[1:] == before[1:], result


@EXAMPLE
@given(name=NAME, payload=st.binary(max_size=200), policy=POLICY)
def test_any_bytes_never_raise(name, payload, policy):
    check_never_raises(name, payload, policy)


@EXAMPLE
@given(command=NEAR_VALID, policy=POLICY)
def test_any_json_never_raises(command, policy):
    name, obj = command
    check_never_raises(name, json.dumps(obj).encode(), policy)
