"""Fuzzing the MQTT command handler (`bms.links.mqtt.commands.handle_command`).

tests/bms/test_mqtt_commands.py already sends any bytes and JSON of any shape. Here: good
payloads mutated and spliced at the byte level (so the JSON breaks in every way it can),
and every parameter set to values at the edges of what JSON, floats, int32 and the
configuration allow. A command is done as its result says, or refused with a code that is
not INTERNAL and a short reason; a refusal changes nothing, down to the firmware's inner
state (protection rows, balancer, fault log size, estimator settings).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bms.data.parameters import value_of
from bms.links.mqtt.commands import COMMANDS, handle_command
from tests.bms.links.mqtt.test_commands import ALL, PARAMS, make_device, snapshot
from tests.fuzz.mutations import big_ints, mutated, spliced

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_DETAIL_CHARS = 1500  # a reason quotes values cut short: it never echoes a payload
BY_NAME = {p.name: p for p in PARAMS}
DEFAULTS = {p.name: value_of(make_device().fw.cfg, p) for p in PARAMS}

GOOD = [
    ("state", b'{"state": "standby"}'), ("state", b'{"id": 3, "state": "storage"}'),
    ("state", b'{"state": "run"}'), ("balancing", b'{"mode": "soc", "id": "b"}'),
    ("balancing", b'{"mode": "off"}'), ("clear-faults", b"{}"),
    ("config", b'{"get": ["limits", "balancing.mode"]}'),
    ("config", b'{"set": {"limits.max_charge_a": 1.5, "precharge.retries": 3}}'),
    ("config", b'{"set": {"balancing.mode": "soc", "fault_log_size": 50}, "id": 9}'),
]


def deep_snapshot(device) -> tuple:
    """What a command may change, and the firmware's state a half-done change would leave
    behind."""
    fw = device.fw
    return (*snapshot(device), fw.protection.rows, fw.balancer.cfg, fw.log.entries.maxlen,
            fw.estimator.cfg, fw.rest_drift.rest_current_a)


def check(name: str, payload: bytes) -> dict:
    """The result for one command on a fresh device, with what must hold of it."""
    device = make_device()
    before = deep_snapshot(device)
    result = handle_command(name, payload, ALL, device, 1.0)
    event("done" if result["ok"] else result["error"]["code"])
    json.dumps(result, allow_nan=False)  # MQTT carries it as JSON
    assert result["command"] == name and result["ok"] in (True, False)
    cfg = device.fw.cfg
    if not result["ok"]:
        error = result["error"]
        assert error["code"] != "INTERNAL", result
        assert error["detail"] and len(error["detail"]) <= MAX_DETAIL_CHARS, result
        after = deep_snapshot(device)
        assert after[0] is before[0] and after[1:] == before[1:], result
    elif name == "state":
        assert device.fw.requested == result["state"]
    elif name == "balancing":
        assert cfg.balancing.mode == result["mode"]
    elif name == "clear-faults":
        assert device.fw.clear_requested
    elif name == "service-reset":
        assert device.fw.service_requested
    elif name == "factory-defaults":  # every parameter at its default (a fresh device's)
        assert {p.name: value_of(cfg, p) for p in PARAMS} == DEFAULTS
    elif name == "set-time":
        assert device.utc_offsets[device.boot] == result["utc_s"] - 1.0
    else:  # config (inject is refused: this device has no simulated pack)
        assert name == "config", result
        for param, value in result["values"].items():
            assert value_of(cfg, BY_NAME[param]) == value or value is None, param
    return result


@FUZZ
@given(data=st.data(), command=st.sampled_from(GOOD), other=st.sampled_from(GOOD))
@example(data=None, command=("config", b'{"set": {"fault_log_size": 1' + b"0" * 5000 + b"}}"),
         other=GOOD[0])  # an int of over 4300 digits: BAD_JSON
@example(data=None, command=("state", b'{"state": "' + b"x" * 20_000 + b'"}'), other=GOOD[0])
@example(data=None, command=("config", b'{"get": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
         other=GOOD[0])
def test_a_mutated_payload_is_done_as_answered_or_refused_changing_nothing(
        data, command: tuple[str, bytes], other: tuple[str, bytes]):
    name, payload = command
    if data is not None:
        payload = data.draw(mutated(payload, 6) | spliced(payload, other[1]), label="payload")
        name = data.draw(st.sampled_from([name, name, name, *COMMANDS]), label="name")
    check(name, payload)


def values_for(param) -> st.SearchStrategy:
    """Values at the edges: of the parameter's own type and range, and of every other."""
    default = DEFAULTS[param.name]
    own = st.just(default)
    if param.kind == "choice":
        own |= st.sampled_from([*param.choices, param.choices[0].upper(), ""])
    elif param.kind in ("float", "int") and not isinstance(default, bool):
        own |= st.sampled_from([-1.0, 0.0, 0.5, 1.0, 1.0 + 1e-12, 2.0, 1e6, 1e300]).map(
            lambda f: f * default)
        own |= st.sampled_from([2**31 - 1, 2**31, -(2**31), 65535, 65536, 0, -1])
    anything = st.one_of(st.booleans(), st.integers(), big_ints,
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
                         st.none(), st.lists(st.integers(), max_size=2))
    return own | anything


@FUZZ
@given(data=st.data(), names=st.lists(st.sampled_from(sorted(BY_NAME)), min_size=1,
                                      max_size=3, unique=True))
@example(data=None, names=["fault_log_size"])  # 10**30 was INTERNAL, half applied
def test_any_value_for_any_parameter_is_set_exactly_or_refused_changing_nothing(
        data, names: list[str]):
    if data is None:
        changes = {names[0]: 10**30}
    else:
        changes = {n: data.draw(values_for(BY_NAME[n]), label=n) for n in names}
    result = check("config", json.dumps({"set": changes}).encode())
    if result["ok"]:
        assert list(result["values"]) == names
        for n, value in changes.items():  # what was asked, as a float64 if a float
            assert result["values"][n] == (float(value) if BY_NAME[n].kind == "float"
                                           else value), n
    else:
        detail = result["error"]["detail"]
        assert any(n in detail for n in names), detail  # it names a parameter asked for
