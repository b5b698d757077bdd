"""The device keeps to the spec where it used to be lenient: a SetConfig value must come as
its parameter's ValueKind and each bad value gets the code of its cause; a command the
firmware cannot act on now is refused NOT_NOW with the firmware's reason, over the
protocol and over MQTT alike - never an Ack for nothing done."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bms.core.firmware import Firmware
from bms.core.signals import Measurement, State
from bms.data.parameters import catalogue
from bms.data.presets import PRESETS
from bms.host.device import Device, Identity
from bms.host.policy import COMMANDS, parse_policy
from bms.links.mqtt.commands import handle_command
from protocol import messages as pm
from protocol.codec import Decoder, encode
from protocol.framing import Flags

CHEM = PRESETS["na-nfm"]
N_SERIES = 4
CAPACITY_AH = 2 * CHEM.capacity_ah
PARAM = {p.name: p for p in catalogue(Firmware(CHEM, N_SERIES, CAPACITY_AH).cfg)}
K = pm.ValueKind
TICK_S = 0.1
HEALTHY_V = [3.5, 3.49, 3.51, 3.5]
OVERVOLTAGE_V = [3.5, 3.5, 4.09, 3.5]  # cell 3 past the FAULT threshold (4.08 V)


class Bench:
    """A Device on a firmware stepped by hand at rest, the feedback following the
    commands."""

    def __init__(self):
        self.fw = Firmware(CHEM, N_SERIES, CAPACITY_AH)
        self.device = Device(self.fw, CHEM, Identity(CHEM.name, pm.Mode.SIM, 2, CAPACITY_AH, 1))
        self.k = 0
        self.act = None

    def run(self, seconds: float, cells=HEALTHY_V) -> None:
        for _ in range(round(seconds / TICK_S)):
            closed = self.fw.contactors
            v = np.asarray(cells) + 1e-4 * (self.k % 2)  # dither: no stuck reading
            bus_v = float(v.sum()) if closed.negative and (closed.positive or
                                                           closed.precharge) else 0.0
            m = Measurement(v, np.array([25.0]), 0.0, bus_v, closed,
                            balancing=np.zeros(N_SERIES, bool))
            self.act = self.fw.step(m, self.k * TICK_S)
            self.device.observe(m, self.act)
            self.k += 1

    def ask(self, msg: object) -> object:
        """Over the codec both ways, as a host sees it."""
        (frame,) = Decoder().feed(encode(msg, 1, Flags.REQUEST))
        reply = self.device.handle(frame.message, self.k * TICK_S)
        (back,) = Decoder().feed(encode(reply, 1))
        return back.message


def set_config(name: str, kind: pm.ValueKind, value: object) -> pm.SetConfig:
    return pm.SetConfig(({"param_id": PARAM[name].id, "kind": int(kind), "value": value},))


@pytest.mark.parametrize(("name", "kind", "value", "code", "says"), [
    ("limits.max_charge_a", K.INT, 1, "BAD_TYPE", "sent as INT; this parameter is FLOAT"),
    ("fault_log_size", K.FLOAT, 500.0, "BAD_TYPE", "sent as FLOAT; this parameter is INT"),
    ("estimation.learn_offset_when_open", K.INT, 1, "BAD_TYPE",
     "sent as INT; this parameter is BOOL"),
    ("balancing.mode", K.INT, 1, "BAD_TYPE", "sent as INT; this parameter is CHOICE"),
    ("limits.max_charge_a", K.FLOAT, math.nan, "OUT_OF_RANGE", "must be a finite number"),
    ("limits.max_charge_a", K.FLOAT, math.inf, "OUT_OF_RANGE", "must be a finite number"),
    ("balancing.mode", K.CHOICE, "max", "BAD_VALUE", "must be one of ['off', 'voltage',"),
])
def test_set_config_refuses_each_bad_value_with_the_code_of_its_cause(name, kind, value, code,
                                                                       says):
    bench = Bench()
    before = bench.fw.cfg
    nack = bench.ask(set_config(name, kind, value))
    assert isinstance(nack, pm.Nack) and nack.error == pm.ErrorCode[code]
    assert nack.detail.startswith(f"{name} (id 0x{PARAM[name].id:04X}) = ") and says in nack.detail
    assert bench.fw.cfg is before


def test_set_config_takes_a_value_of_its_parameters_kind():
    bench = Bench()
    reply = bench.ask(set_config("limits.max_charge_a", K.FLOAT, 1.0))
    assert isinstance(reply, pm.ConfigValues) and bench.fw.cfg.limits.max_charge_a == 1.0


def tripped(bench: Bench) -> None:
    bench.run(5.0)
    bench.run(3.0, OVERVOLTAGE_V)
    assert bench.fw.state == State.FAULT


def command(c: pm.Command) -> pm.CommandRequest:
    return pm.CommandRequest(int(c), 0)


def test_run_and_clear_faults_the_firmware_cannot_do_are_refused_not_now():
    bench = Bench()
    tripped(bench)
    bench.ask(command(pm.Command.STANDBY))
    run = bench.ask(command(pm.Command.RUN))
    assert isinstance(run, pm.Nack) and run.error == pm.ErrorCode.NOT_NOW
    assert run.detail.startswith("run waits while a FAULT is latched (CELL_OVERVOLTAGE)")
    clear = bench.ask(command(pm.Command.CLEAR_FAULTS))
    assert clear.error == pm.ErrorCode.NOT_NOW
    assert "CELL_OVERVOLTAGE: cell_v_max was 4.09 V, not yet below its release" in clear.detail
    assert (bench.fw.requested, bench.fw.clear_requested) == ("standby", False)
    bench.run(1.0)  # the cell is back
    assert isinstance(bench.ask(command(pm.Command.CLEAR_FAULTS)), pm.Ack)
    assert isinstance(bench.ask(command(pm.Command.RUN)), pm.Ack)
    bench.run(5.0)
    assert bench.fw.state == State.RUN


def test_mqtt_commands_are_refused_alike_with_the_same_reason():
    bench = Bench()
    tripped(bench)
    bench.fw.request("standby")
    over_protocol = bench.ask(command(pm.Command.RUN))
    policy = parse_policy(",".join(COMMANDS))
    result = handle_command("state", json.dumps({"id": 3, "state": "run"}).encode(), policy,
                            bench.device, bench.k * TICK_S)
    assert result["ok"] is False
    assert result["error"] == {"code": "NOT_NOW", "detail": over_protocol.detail}
    result = handle_command("clear-faults", b"{}", policy, bench.device, bench.k * TICK_S)
    assert result["error"]["code"] == "NOT_NOW" and not bench.fw.clear_requested
