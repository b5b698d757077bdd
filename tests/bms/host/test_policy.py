"""The command policy on protocol requests (`bms.host.policy` through `Device.handle`): every
request the device answers is a read (always allowed) or needs one named permission; a
refusal is Nack NOT_ENABLED naming what would enable it, changes nothing and is counted;
the limits of `state`, `balancing` and `config` hold; a trusted link is not checked."""

from __future__ import annotations

import pytest

from bms.data.validation import InputError
from bms.host import policy as policy_module
from bms.host.policy import COMMANDS, READS, TRUSTED, CommandPolicy, parse_policy
from protocol import messages as pm
from tests.bms.host.test_device import PARAM, REQUESTS, Bench, nack, value

# What each request that changes the pack needs, written out here (not read from the
# module under test): a request missing from this table and from READS fails below.
NEEDS = {pm.SetConfig: "config", pm.CommandRequest: "state", pm.Inject: "inject",
         pm.SetTime: "set-time"}
# Each CommandRequest and the permission (command=word) that allows exactly it.
COMMAND_NEEDS = [
    (pm.Command.RUN, 0, "state=run"), (pm.Command.STANDBY, 0, "state=standby"),
    (pm.Command.STORAGE, 0, "state=storage"), (pm.Command.CLEAR_FAULTS, 0, "clear-faults"),
    (pm.Command.SERVICE_RESET, 0, "service-reset"),
    (pm.Command.BALANCING_MODE, int(pm.BalancingMode.SOC), "balancing=soc"),
]
NOTHING = CommandPolicy()


def changeable(b: Bench) -> tuple:
    """What a request may change: configuration, overrides, requests to the firmware,
    injections made, the wall clock."""
    fw = b.fw
    return (fw.cfg, dict(b.device.overrides), fw.requested, fw.clear_requested,
            fw.service_requested, tuple(b.injected), dict(b.device.utc_offsets))


class InjectBench(Bench):
    def __init__(self):
        self.injected: list[tuple[str, float]] = []
        super().__init__(inject=lambda spec, now_s: self.injected.append((spec, now_s)))
        self.run(1.0)


@pytest.fixture
def b() -> InjectBench:
    return InjectBench()


def handle(b: Bench, msg: object, policy: CommandPolicy) -> object:
    return b.device.handle(msg, b.now_s, "test", policy)


def test_every_request_is_a_read_or_needs_a_permission():
    assert set(REQUESTS) == READS | set(NEEDS)
    assert not READS & set(NEEDS)


@pytest.mark.parametrize("cls", list(REQUESTS), ids=lambda c: c.__name__)
def test_with_nothing_enabled_reads_are_answered_and_changes_refused(b, cls):
    request, answer = REQUESTS[cls]
    before = changeable(b)
    reply = handle(b, request, NOTHING)
    if cls in READS:
        assert isinstance(reply, answer), reply
        assert b.device.not_enabled == {}
        return
    detail = nack(reply, pm.ErrorCode.NOT_ENABLED)
    assert f"the {NEEDS[cls]} command is not enabled here (enabled: none)" in detail
    assert "--mqtt-commands" in detail
    assert changeable(b) == before
    assert b.device.not_enabled == {cls.__name__: 1}


@pytest.mark.parametrize("cls", list(NEEDS), ids=lambda c: c.__name__)
def test_a_change_is_done_once_its_permission_is_enabled(b, cls):
    request, answer = REQUESTS[cls]
    before = changeable(b)
    reply = handle(b, request, parse_policy(NEEDS[cls]))
    assert isinstance(reply, answer), reply
    assert changeable(b) != before


@pytest.mark.parametrize(("command", "argument", "needs"), COMMAND_NEEDS)
def test_each_command_needs_its_own_permission(b, command, argument, needs):
    request = pm.CommandRequest(int(command), argument)
    name = needs.split("=")[0]
    # everything else enabled, this command off
    others = ",".join(c for c in COMMANDS if c != name)
    before = changeable(b)
    detail = nack(handle(b, request, parse_policy(others)), pm.ErrorCode.NOT_ENABLED)
    assert f"the {name} command is not enabled" in detail and command.name in detail
    assert changeable(b) == before
    assert isinstance(handle(b, request, parse_policy(needs)), pm.Ack)
    assert isinstance(handle(b, request, parse_policy(name)), pm.Ack)  # no limit: any word


def test_a_state_limit_allows_only_its_words(b):
    policy = parse_policy("state=standby")
    detail = nack(handle(b, pm.CommandRequest(pm.Command.STORAGE, 0), policy),
                  pm.ErrorCode.NOT_ENABLED)
    assert "state 'storage' is not enabled here; allowed: standby" in detail
    assert b.fw.requested != "storage"
    assert isinstance(handle(b, pm.CommandRequest(pm.Command.STANDBY, 0), policy), pm.Ack)
    assert b.fw.requested == "standby"


def test_a_balancing_limit_refuses_other_modes_and_unknown_ones(b):
    policy = parse_policy("balancing=off|voltage")
    for argument in (int(pm.BalancingMode.SOC), 99):
        detail = nack(handle(b, pm.CommandRequest(pm.Command.BALANCING_MODE, argument),
                             policy), pm.ErrorCode.NOT_ENABLED)
        assert "allowed: off, voltage" in detail
    assert isinstance(handle(b, pm.CommandRequest(pm.Command.BALANCING_MODE, 0), policy),
                      pm.Ack)
    # without a limit an unknown mode is the device's to refuse, as on a serial port
    nack(handle(b, pm.CommandRequest(pm.Command.BALANCING_MODE, 99),
                parse_policy("balancing")), pm.ErrorCode.BAD_VALUE)


def test_a_config_limit_refuses_the_whole_write_and_names_what_it_may_set(b):
    policy = parse_policy("config=limits.*")
    charge = value(PARAM["limits.max_charge_a"].id, pm.ValueKind.FLOAT, 1.0)
    mode = value(PARAM["balancing.mode"].id, pm.ValueKind.CHOICE, "soc")
    before = changeable(b)
    detail = nack(handle(b, pm.SetConfig((charge, mode)), policy), pm.ErrorCode.NOT_ENABLED)
    assert "may not set balancing.mode here" in detail and "limits.*" in detail
    assert changeable(b) == before  # all or nothing
    assert isinstance(handle(b, pm.SetConfig((charge,)), policy), pm.ConfigValues)
    assert b.fw.cfg.limits.max_charge_a == 1.0
    # an unknown id is the device's to refuse (UNKNOWN_PARAM), as on a serial port
    unknown = value(0x0999, pm.ValueKind.FLOAT, 1.0)
    nack(handle(b, pm.SetConfig((unknown,)), policy), pm.ErrorCode.UNKNOWN_PARAM)


@pytest.mark.parametrize("enabled", ["", ",".join(COMMANDS)], ids=["nothing", "everything"])
def test_a_command_code_that_is_no_command_is_the_devices_to_refuse(b, enabled):
    """It does nothing, so whatever the policy it gets the serial port's answer: BAD_VALUE."""
    before = changeable(b)
    for code in (0, max(pm.Command) + 1, 99):
        detail = nack(handle(b, pm.CommandRequest(code, 0), parse_policy(enabled)),
                      pm.ErrorCode.BAD_VALUE)
        assert f"command {code}" in detail and "1 RUN" in detail
    assert changeable(b) == before
    assert b.device.not_enabled == {}


def test_a_command_the_policy_does_not_map_is_refused_even_with_everything_enabled(
        b, monkeypatch):
    monkeypatch.delitem(policy_module.REQUEST_NEEDS, pm.Command.STORAGE)
    before = changeable(b)
    detail = nack(handle(b, pm.CommandRequest(pm.Command.STORAGE, 0),
                         parse_policy(",".join(COMMANDS))), pm.ErrorCode.NOT_ENABLED)
    assert "CommandRequest command 3 STORAGE: not a command this link may send" in detail
    assert changeable(b) == before


def test_a_request_type_the_policy_does_not_know_is_refused():
    class GetSecrets:  # a request added to the device and not to the policy's tables
        pass

    assert "GetSecrets is not a request this link may make" in parse_policy(
        ",".join(COMMANDS)).refusal(GetSecrets(), {})
    assert TRUSTED.refusal(GetSecrets(), {}) is None


def test_the_default_handle_is_trusted_and_refusals_are_counted_by_type(b):
    assert isinstance(b.device.handle(pm.CommandRequest(pm.Command.STANDBY, 0), b.now_s),
                      pm.Ack)
    for _ in range(3):
        handle(b, REQUESTS[pm.SetConfig][0], NOTHING)
    handle(b, REQUESTS[pm.Inject][0], NOTHING)
    handle(b, pm.GetStatus(), NOTHING)
    assert b.device.not_enabled == {"SetConfig": 3, "Inject": 1}


@pytest.mark.parametrize(("text", "problem"), [
    ("service-reset=all", "service-reset takes no limit"),
    ("inject=open-wire", "inject takes no limit"),
])
def test_commands_of_no_limit_take_none(text, problem):
    with pytest.raises(InputError, match=problem):
        parse_policy(text)
