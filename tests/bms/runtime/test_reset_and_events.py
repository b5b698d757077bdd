"""The runtime's part of protocol 1.1: fault events go out in the step they happen (a
measurement frame's step between two ticks included), and a host's Reset restarts the
firmware before the next step: contactors opened first, latched faults and the log kept, a
new boot in the store. A fake endpoint records what is sent; real bytes arrive."""

from __future__ import annotations

import numpy as np
import pytest

from bms.core.signals import State
from bms.data.faults import FAULT_CODES
from bms.store.nvm import NvmStore, PackIdentity
from bms.store.persistence import Keeper
from protocol import messages as pm
from protocol.codec import encode
from protocol.framing import REVISION_1_1, Flags
from tests.bms.runtime.test_realtime import (
    BITS,
    CELLS_V,
    CHEM,
    N_SERIES,
    TYPE,
    actuations,
    deliver,
    make_runtime,
    measurement_frame,
)

OVER_V = np.array([3.5, 3.5, 4.09, 3.5])  # cell 3 past its FAULT threshold
SUBSCRIBE = pm.Subscribe(({"msg_type": TYPE[pm.FaultEvent], "period_ms": 0},))


def request(ep, msg, seq: int) -> object:
    deliver(ep, encode(msg, seq, Flags.REQUEST, REVISION_1_1))
    [(reply, got_seq, _)] = [s for s in ep.take() if s[1] == seq]
    return reply


def drive(rt, ep, clock, seconds: float, cells=CELLS_V, start: int = 0) -> list:
    """Measurement frames every 0.1 s, the rig closing what it is told; what was sent."""
    sent = []
    contactors = actuations_state(rt)
    for k in range(round(seconds / 0.1)):
        clock.t += 0.1
        dither = 1e-4 * (k % 2)  # a reading that never changes is a stuck sensor
        deliver(ep, encode(measurement_frame(start + k + 1, np.asarray(cells) + dither,
                                             contactors=contactors), seq=k + 1,
                           revision=REVISION_1_1))
        out = ep.take()
        sent += out
        acts = actuations(out)
        if acts:
            contactors = acts[-1].contactors
    return sent


def actuations_state(rt) -> int:
    act = rt.device.act
    return 0 if act is None else int(act.contactors.negative) * BITS["negative"] | (
        int(act.contactors.positive) * BITS["positive"]
        | int(act.contactors.precharge) * BITS["precharge"])


def events(sent) -> list[pm.FaultEvent]:
    return [m for m, _, _ in sent if isinstance(m, pm.FaultEvent)]


def test_fault_events_go_out_in_the_measurements_step_after_its_actuation():
    rt, ep, clock = make_runtime()
    rt.device.fw.request("run")
    assert isinstance(request(ep, SUBSCRIBE, 900), pm.Ack)
    drive(rt, ep, clock, 1.0)
    sent = drive(rt, ep, clock, 3.0, OVER_V, start=100)
    pushed = events(sent)
    assert [e.log_index for e in pushed] == list(range(rt.fw.log.recorded)) != []
    assert {e.code for e in pushed} == {FAULT_CODES["CELL_OVERVOLTAGE"]}
    for k, (msg, _, flags) in enumerate(sent):  # each after the actuation of its step
        if isinstance(msg, pm.FaultEvent):
            assert flags == Flags.EVENT
            earlier = [m for m, _, _ in sent[:k] if isinstance(m, pm.ActuationFrame)]
            assert earlier and earlier[-1].time_s == pytest.approx(msg.time_s)


def test_no_events_without_a_subscription_and_none_after_the_link_went_down():
    rt, ep, clock = make_runtime()
    rt.device.fw.request("run")
    drive(rt, ep, clock, 1.0)
    assert events(drive(rt, ep, clock, 3.0, OVER_V)) == []
    request(ep, SUBSCRIBE, 901)
    ep.on_connection(False)
    assert events(drive(rt, ep, clock, 1.0, CELLS_V)) == []


def kept_runtime(tmp_path):
    rt, ep, clock = make_runtime()
    store = NvmStore(tmp_path / "p.sqlite",
                     PackIdentity("p", "hil", CHEM.name, N_SERIES, CHEM.capacity_ah),
                     lambda: 1.8e9)
    keeper = Keeper(store, rt.fw)
    rt.keeper = keeper
    rt.after_step = type(rt.after_step)(rt.device, keeper, None)
    rt.device.store = keeper
    return rt, ep, clock, keeper


def test_a_reset_opens_first_then_a_new_firmware_keeps_the_latched_fault_and_the_log(tmp_path):
    rt, ep, clock, keeper = kept_runtime(tmp_path)
    rt.device.fw.request("run")
    drive(rt, ep, clock, 1.0)
    assert rt.fw.state == State.RUN
    drive(rt, ep, clock, 3.0, OVER_V)
    assert rt.fw.state == State.FAULT
    old, recorded = rt.fw, rt.fw.log.recorded
    assert isinstance(request(ep, pm.CommandRequest(pm.Command.RESET, 0), 902), pm.Ack)
    assert rt.fw is old  # done before the next step, not in the request's answer
    sent = drive(rt, ep, clock, 0.1, CELLS_V, start=500)
    first, second = actuations(sent)
    assert first.contactors == 0 and State.from_code(first.state) == State.FAULT
    assert rt.fw is not old and rt.resets == 1 and keeper.boot == 2
    assert rt.device.fw is rt.fw is keeper.fw
    # a power cycle keeps the latched FAULT: the new firmware is in FAULT, contactors open
    assert State.from_code(second.state) == State.FAULT and second.contactors == 0
    assert second.fault_bitmap >> FAULT_CODES["CELL_OVERVOLTAGE"] & 1
    assert rt.fw.log.recorded == recorded  # the log goes on where it was
    assert {e.snapshot.get("boot") for e in list(rt.fw.log.entries)[:recorded]} == {1}
    page = request(ep, pm.GetFaultLog(0, 32), 903)
    assert {e["boot"] for e in page.entries} == {1}
    keeper.store.close()


@pytest.mark.parametrize(("autostart", "then"), [(False, State.STANDBY), (True, State.RUN)])
def test_a_reset_in_run_opens_checks_for_a_weld_then_starts_as_at_power_up(
        tmp_path, autostart, then):
    """`serve` without --autostart waits in STANDBY for a host's RUN after a Reset, as after
    a power cycle; with it the pack closes again, once the opening's weld check passed."""
    rt, ep, clock, keeper = kept_runtime(tmp_path)
    rt.fw.autostart = autostart
    rt.device.fw.request("run")
    drive(rt, ep, clock, 1.0)
    assert rt.fw.state == State.RUN
    request(ep, pm.CommandRequest(pm.Command.RESET, 0), 904)
    clock.t += 0.1
    rt._tick(clock.t)  # a watchdog tick: the reset happens before its step
    assert actuations(ep.take())[0].contactors == 0
    weld_check_s = rt.fw.cfg.contactors.weld_check_s
    drive(rt, ep, clock, weld_check_s - 0.2)
    assert rt.fw.state == State.STANDBY and rt.fw.opened_at_s is not None
    drive(rt, ep, clock, 1.5)
    assert rt.fw.opened_at_s is None and rt.fw.state == then
    assert rt.device.act.fault_bitmap == 0  # no weld: the feedback opened
    keeper.store.close()


def test_contactors_that_stay_closed_through_a_reset_are_found_welded(tmp_path):
    rt, ep, clock, keeper = kept_runtime(tmp_path)
    rt.device.fw.request("run")
    drive(rt, ep, clock, 1.0)
    request(ep, pm.CommandRequest(pm.Command.RESET, 0), 905)
    closed = BITS["negative"] | BITS["positive"]
    for k in range(round((rt.fw.cfg.contactors.weld_check_s + 0.5) / 0.1)):
        clock.t += 0.1
        deliver(ep, encode(measurement_frame(700 + k, CELLS_V + 1e-4 * (k % 2),
                                             contactors=closed), seq=k + 1,
                           revision=REVISION_1_1))
    assert rt.resets == 1
    assert rt.device.act.fault_bitmap >> FAULT_CODES["CONTACTOR_WELDED"] & 1
    keeper.store.close()
