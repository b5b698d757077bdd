"""`serve --hil` as a rig sees it (docs/protocol.md, Sequence numbers and matching; States):
each MeasurementFrame answered by an ActuationFrame carrying its `rig_seq`, in its
revision; while the rig is silent one ActuationFrame a tick and, after
`measurement_timeout_s` from start, MEASUREMENT_TIMEOUT, which the first measurement
clears; before any measurement, Status says "unknown"."""

from __future__ import annotations

import math

import pytest

from protocol import messages as pm
from protocol.codec import Frame
from protocol.framing import REVISION_1_0, REVISIONS, Flags
from protocol.messages import encode_payload
from tests.client.conftest import Hil
from tests.client.emulators import MEASUREMENT_TIMEOUT, STATE, TICK_S, measurement

PERIOD_SLACK = 0.25  # the mean spacing may be this fraction off the tick


def actuation_answering(hil: Hil, rig_seq: int, after: int) -> Frame:
    return hil.emulator.client.wait_for(
        lambda item: isinstance(item, Frame) and isinstance(item.message, pm.ActuationFrame)
        and item.message.rig_seq == rig_seq, f"ActuationFrame with rig_seq {rig_seq}", after)


def test_the_device_says_it_is_driven_by_a_rig(hil_pty: Hil) -> None:
    info = hil_pty.emulator.info
    assert info.mode == pm.Mode.HIL and info.capabilities & pm.Capability.HIL
    assert not info.capabilities & pm.Capability.INJECT


def test_a_rig_silent_from_boot_gets_one_actuation_a_tick_in_revision_1(hil_pty: Hil) -> None:
    frames = hil_pty.silent_actuations
    assert len(frames) >= 10
    for frame in frames:
        assert frame.header.flags == Flags.EVENT and frame.header.revision == REVISION_1_0
        assert frame.message.rig_seq == 0 and frame.message.contactors == 0
    times = [f.message.time_s for f in frames]
    spacing_s = (times[-1] - times[0]) / (len(times) - 1)
    assert spacing_s == pytest.approx(TICK_S, rel=PERIOD_SLACK)


def test_a_rig_silent_from_boot_trips_measurement_timeout(hil_pty: Hil) -> None:
    tripped = [f.message for f in hil_pty.silent_actuations
               if f.message.fault_bitmap >> MEASUREMENT_TIMEOUT & 1]
    assert tripped and all(a.state == STATE["FAULT"] for a in tripped)
    assert tripped[0].time_s >= 1.0  # measurement_timeout_s, 1 s unless configured


def test_status_before_the_first_measurement_says_unknown(hil_pty: Hil) -> None:
    status = hil_pty.silent_status
    assert status.state == STATE["INIT"] and status.contactors == 0
    assert math.isnan(status.soc_pct) and math.isnan(status.bus_voltage_v)
    assert math.isnan(status.current_a) and math.isnan(status.cell_v_min)
    assert status.contactor_feedback == 0


def test_the_timeout_from_start_clears_itself_with_the_first_measurement(hil_pty: Hil) -> None:
    emulator = hil_pty.emulator
    status = emulator.until_status(lambda s: s.state == STATE["STANDBY"],
                                   "STANDBY once the rig measures")
    assert not status.fault_bitmap >> MEASUREMENT_TIMEOUT & 1
    log = emulator.client.ask(pm.GetFaultLog(0, 255)).entries
    actions = [e["action"] for e in log if e["code"] == MEASUREMENT_TIMEOUT]
    assert actions[:2] == [1, 0]  # raised from start, cleared by the first measurement


@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_a_measurement_is_answered_in_its_revision_with_its_rig_seq(hil_pty: Hil,
                                                                    revision: int) -> None:
    client = hil_pty.emulator.client
    rig_seq = 800_000 + revision
    after = client.mark()
    client.send(measurement(rig_seq), revision, Flags.EVENT)
    frame = actuation_answering(hil_pty, rig_seq, after)
    assert frame.header.flags == Flags.EVENT and frame.header.revision == revision
    assert frame.header.length == len(encode_payload(frame.message, revision)[1])
    assert len(frame.message.balance_mask) == hil_pty.emulator.info.n_series


def test_run_closes_the_contactors_through_precharge_and_standby_opens_them(
        hil_pty: Hil) -> None:
    emulator = hil_pty.emulator
    emulator.until_status(lambda s: s.state == STATE["STANDBY"], "STANDBY before RUN")
    after = emulator.client.mark()
    assert isinstance(emulator.command(pm.Command.RUN), pm.Ack)
    emulator.until_status(lambda s: s.state == STATE["RUN"], "RUN after an Acked RUN")
    commanded = [f.message.contactors for f in emulator.client.events(pm.ActuationFrame, after)]
    bits = pm.CONTACTOR_BITS
    assert any(c & bits["precharge"] for c in commanded)
    assert commanded[-1] & (bits["negative"] | bits["positive"]) == (
        bits["negative"] | bits["positive"])
    assert isinstance(emulator.command(pm.Command.STANDBY), pm.Ack)
    status = emulator.until_status(lambda s: s.state == STATE["STANDBY"], "STANDBY again")
    assert status.contactors == 0
