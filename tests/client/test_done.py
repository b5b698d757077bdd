"""An Ack means done (docs/protocol.md, Sequence numbers and matching): what a request asks
for is what the device then reports - a state in Status, a value in GetConfig, an entry in
the configuration-write log - from its next step on. Over a pty and over MQTT."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import pytest

from protocol import messages as pm
from tests.client.emulators import STATE, TICK_S, Emulator
from tests.client.samples import float_write

CLOSED = pm.CONTACTOR_BITS["negative"] | pm.CONTACTOR_BITS["positive"]


def acked(emulator: Emulator, command: pm.Command, argument: int = 0) -> None:
    answer = emulator.command(command, argument)
    assert isinstance(answer, pm.Ack), answer
    assert answer.request_type == pm.BY_CLASS[pm.CommandRequest].type_id


def in_state(name: str) -> Callable[[pm.Status], bool]:
    return lambda status: status.state == STATE[name]


def newest_config_log(emulator: Emulator, n: int = 1) -> list[dict]:
    """The last `n` entries of the configuration-write log."""
    total = emulator.client.ask(pm.GetConfigLog(0, 0)).total
    start = max(0, total - n)
    page = emulator.client.ask(pm.GetConfigLog(start, n))
    assert page.total == total and page.start == start
    return list(page.entries)


def test_a_pack_waits_in_standby_until_run_is_asked(read_only_mqtt: Emulator) -> None:
    """docs/protocol.md, States: without `--autostart` the contactors close only on RUN; this
    emulator's policy refuses every command, so nothing has asked. Not discharging, its
    runtime is NaN."""
    while read_only_mqtt.client.ask(pm.TimeSync(0.0)).device_time_s < 1.5:
        time.sleep(TICK_S)
    status = read_only_mqtt.status()
    assert (status.state, status.contactors) == (STATE["STANDBY"], 0)
    assert math.isnan(status.runtime_s) and status.remaining_wh > 0
    assert read_only_mqtt.client.ask(pm.GetFaultLog(0, 255)).total == 0


def test_run_then_standby_close_and_open_the_contactors(sim: Emulator) -> None:
    acked(sim, pm.Command.RUN)
    running = sim.until_status(in_state("RUN"), "RUN after an Acked RUN")
    assert running.contactors & CLOSED == CLOSED
    acked(sim, pm.Command.STANDBY)
    standby = sim.until_status(in_state("STANDBY"), "STANDBY after an Acked STANDBY")
    assert standby.contactors == 0


def test_storage_is_entered_and_left(sim: Emulator) -> None:
    acked(sim, pm.Command.STORAGE)
    assert sim.until_status(in_state("STORAGE"), "STORAGE after an Acked STORAGE").contactors == 0
    acked(sim, pm.Command.STANDBY)
    sim.until_status(in_state("STANDBY"), "STANDBY after STORAGE")


@pytest.mark.parametrize("command", [pm.Command.CLEAR_FAULTS, pm.Command.SERVICE_RESET],
                         ids=lambda c: c.name)
def test_clearing_with_nothing_latched_is_done(sim: Emulator, command: pm.Command) -> None:
    """"With nothing latched it is done (there is nothing to clear)"."""
    assert sim.status().fault_level_bitmap == 0
    acked(sim, command)
    assert sim.status().fault_level_bitmap == 0


@pytest.mark.parametrize("mode", list(pm.BalancingMode), ids=lambda m: m.name)
def test_balancing_mode_is_a_configuration_write_in_effect(sim: Emulator,
                                                           mode: pm.BalancingMode) -> None:
    acked(sim, pm.Command.BALANCING_MODE, int(mode))
    deadline = time.monotonic() + 5.0
    while sim.client.ask(pm.GetBalancing()).mode != mode and time.monotonic() < deadline:
        time.sleep(TICK_S)
    assert sim.client.ask(pm.GetBalancing()).mode == mode
    param = sim.param("balancing.mode")
    assert sim.value("balancing.mode") == param["choices"][int(mode)]
    assert newest_config_log(sim)[0]["param"] == "balancing.mode"


def test_a_configuration_write_is_in_effect_and_logged(sim: Emulator) -> None:
    param = sim.param("limits.max_charge_a")
    old = sim.value(param["name"])
    new = round(old * 0.9, 3) if old > param["min"] * 2 else param["default"]
    answer = sim.client.ask(float_write(param, new))
    assert answer.values == ({"param_id": param["param_id"], "kind": int(pm.ValueKind.FLOAT),
                              "value": new},)
    assert sim.value(param["name"]) == new
    entry = newest_config_log(sim)[0]
    assert (entry["param"], json.loads(entry["old"]), json.loads(entry["new"])) == (
        param["name"], old, new)
    assert entry["who"].startswith("protocol on") and entry["boot"] >= 1


def test_set_time_gives_later_log_entries_their_utc(sim: Emulator) -> None:
    utc_s = time.time()
    assert sim.client.ask(pm.SetTime(utc_s)).request_type == pm.BY_CLASS[pm.SetTime].type_id
    offset_s = utc_s - sim.status().time_s
    param = sim.param("limits.max_charge_a")
    sim.client.ask(float_write(param, sim.value(param["name"])))
    entry = newest_config_log(sim)[0]
    assert math.isfinite(entry["utc_s"])
    assert abs(entry["utc_s"] - (entry["t_s"] + offset_s)) < 1.0  # within a round trip


def test_factory_defaults_undoes_every_configuration_write(sim: Emulator) -> None:
    acked(sim, pm.Command.STANDBY)
    sim.until_status(in_state("STANDBY"), "STANDBY before FACTORY_DEFAULTS")
    param = sim.param("limits.max_charge_a")
    sim.client.ask(float_write(param, param["default"] * 0.5))
    acked(sim, pm.Command.FACTORY_DEFAULTS)
    assert sim.value(param["name"]) == param["default"]
    entries = newest_config_log(sim, 3)
    assert any(e["param"] == param["name"] and e["who"].endswith("factory defaults")
               for e in entries), entries


def test_reset_restarts_the_firmware_in_a_new_boot(sim: Emulator) -> None:
    """RUN before; after the Acked RESET the firmware starts again in INIT, then STANDBY
    (RUN only when asked again), in the next boot, without the wall clock it had, and its
    subscriptions gone; the emulator's time goes on."""
    param = sim.param("limits.max_charge_a")
    sim.client.ask(pm.SetTime(time.time()))
    sim.client.ask(float_write(param, sim.value(param["name"])))
    boot = newest_config_log(sim)[0]["boot"]
    status = pm.BY_CLASS[pm.Status].type_id
    sim.client.ask(pm.Subscribe(({"msg_type": status, "period_ms": 100},)))
    acked(sim, pm.Command.RUN)
    before = sim.until_status(in_state("RUN"), "RUN before RESET")
    acked(sim, pm.Command.RESET)
    after = sim.until_status(lambda s: s.state in (STATE["INIT"], STATE["STANDBY"]),
                             "INIT or STANDBY after an Acked RESET")
    assert after.contactors == 0 and after.time_s > before.time_s
    mark = sim.client.mark()
    sim.client.ask(float_write(param, sim.value(param["name"])))
    entry = newest_config_log(sim)[0]
    assert entry["boot"] == boot + 1
    assert math.isnan(entry["utc_s"])  # a restart starts without the wall clock
    until = after.time_s + 5 * 0.1  # five periods of the forgotten subscription
    while sim.client.ask(pm.TimeSync(0.0)).device_time_s < until:
        time.sleep(TICK_S)
    assert sim.client.events(pm.Status, mark) == []
    assert sim.status().state == STATE["STANDBY"]  # not RUN: not asked again
