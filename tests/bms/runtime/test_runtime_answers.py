"""What the runtime answers that the spec promises: NOT_A_REQUEST from the header alone,
BAD_PAYLOAD in the protocol's words, a Nack for a MeasurementFrame it cannot read (an
event, but the rig must know), a watchdog ActuationFrame every tick of a silent rig, and
no SoC before there is an estimate. A fake endpoint records what would be sent; what
arrives is real bytes through the real decoder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bms.core.firmware import Firmware
from bms.data.presets import PRESETS
from bms.host.device import Device, Identity
from bms.runtime.realtime import Runtime
from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from protocol.framing import REVISION_1_0, Flags, encode_frame

CHEM = PRESETS["na-nfm"]
N_SERIES, N_TEMP = 4, 2
TYPE = {cls: mt.type_id for cls, mt in pm.BY_CLASS.items()}
NACK = Flags.RESPONSE | Flags.ERROR
PARSER_WORDS = ("unpack", "buffer", "stream", "Error in path", "codec")


class Endpoint:
    """What the Runtime uses of an Endpoint; records what is sent (each must encode)."""

    def __init__(self):
        self.on_frame = self.on_error = self.on_connection = None
        self.sent: list[tuple[object, int | None, Flags | None]] = []

    def send(self, msg: object, seq: int | None = None, flags: Flags | None = None,
             **_link_options) -> int:
        encode(msg, 0 if seq is None else seq, flags)
        self.sent.append((msg, seq, flags))
        return 0 if seq is None else seq

    def take(self) -> list[tuple[object, int | None, Flags | None]]:
        out, self.sent = self.sent, []
        return out


def hil_runtime() -> tuple[Runtime, Endpoint]:
    fw = Firmware(CHEM, N_SERIES, CHEM.capacity_ah)
    device = Device(fw, CHEM, Identity(CHEM.name, pm.Mode.HIL, 1, CHEM.capacity_ah, N_TEMP))
    ep = Endpoint()
    rt = Runtime(device, ep, 0.1)
    rt.now_s = lambda: 0.05  # outside an event loop: the time is the test's
    return rt, ep


def deliver(ep: Endpoint, data: bytes) -> None:
    for item in Decoder().feed(data):
        (ep.on_frame if isinstance(item, Frame) else ep.on_error)(item)


def measurement(rig_seq: int = 1) -> pm.MeasurementFrame:
    return pm.MeasurementFrame(rig_seq, 0.0, 0.0, 0.0, 0, np.full(N_SERIES, 3.5, np.float32),
                               np.full(N_TEMP, 25.0, np.float32))


@pytest.mark.parametrize(("cls", "payload"), [
    (pm.Status, b"\x01"), (pm.Status, b""), (pm.MeasurementFrame, b"\x00" * 5),
    (pm.ActuationFrame, b"\x07")])
def test_a_response_or_event_type_with_the_request_flag_is_not_a_request_whatever_its_payload(
        cls, payload):
    rt, ep = hil_runtime()
    deliver(ep, encode_frame(TYPE[cls], int(Flags.REQUEST), 321, payload))
    ((nack, seq, flags),) = ep.take()
    assert isinstance(nack, pm.Nack) and (seq, flags) == (321, NACK)
    assert (nack.request_type, nack.error) == (TYPE[cls], pm.ErrorCode.NOT_A_REQUEST)
    kind = "an event" if pm.BY_CLASS[cls].flags is Flags.EVENT else "a response"
    assert nack.detail.startswith(f"{cls.__name__} (0x{TYPE[cls]:02X}) is {kind}, not a "
                                  "request")


def test_a_good_response_frame_with_the_request_flag_gets_the_same_answer():
    rt, ep = hil_runtime()
    good = rt.device.status(0.0)
    deliver(ep, encode(good, 5, Flags.REQUEST))
    ((nack, _, _),) = ep.take()
    assert nack.error == pm.ErrorCode.NOT_A_REQUEST and "Status (0x04) is a response" in nack.detail


@pytest.mark.parametrize("cls", [pm.CounterPage, pm.FaultEvent])
def test_a_newer_revisions_response_or_event_type_in_an_older_frame_is_an_unknown_type(cls):
    """A 1.0 device has no such type, whatever its flags: UNKNOWN_TYPE, as it would say."""
    rt, ep = hil_runtime()
    deliver(ep, encode_frame(TYPE[cls], int(Flags.REQUEST), 9, b"\x01", REVISION_1_0))
    ((nack, seq, flags),) = ep.take()
    assert (nack.request_type, nack.error, seq, flags) == (
        TYPE[cls], pm.ErrorCode.UNKNOWN_TYPE, 9, NACK)
    assert "revision 1" in nack.detail and cls.__name__ in nack.detail


def test_a_request_whose_payload_does_not_parse_is_told_the_field_in_protocol_terms():
    rt, ep = hil_runtime()
    deliver(ep, encode_frame(TYPE[pm.GetFaultLog], int(Flags.REQUEST), 7, b"\x01"))
    ((nack, seq, _),) = ep.take()
    assert (nack.error, seq) == (pm.ErrorCode.BAD_PAYLOAD, 7)
    assert nack.detail == "GetFaultLog: payload is 1 byte, expected 3"


def good_payload() -> bytes:
    return pm.encode_payload(measurement())[1]


GOOD = good_payload()  # 51 bytes: 4 cells, 2 sensors, no balancing reported


@pytest.mark.parametrize(("payload", "detail"), [
    (GOOD[:21] + (513).to_bytes(2, "little"), "`n_cells` = 513; at most 512"),
    (GOOD[:-3], "payload is 48 bytes: it ends inside `temperature_c` (8 bytes for n_sensors "
                "= 2, 7 left)"),
    (GOOD + b"\x00", "payload is 52 bytes: 1 byte left over after the last field"),
], ids=["count over 512", "truncated", "a trailing byte"])
def test_a_measurement_frame_that_does_not_parse_is_answered_bad_payload_with_its_seq(
        payload, detail):
    rt, ep = hil_runtime()
    deliver(ep, encode_frame(TYPE[pm.MeasurementFrame], int(Flags.EVENT), 4242, payload))
    ((nack, seq, flags),) = ep.take()  # and no step: no ActuationFrame
    assert isinstance(nack, pm.Nack) and (seq, flags) == (4242, NACK)
    assert (nack.request_type, nack.error) == (TYPE[pm.MeasurementFrame],
                                               pm.ErrorCode.BAD_PAYLOAD)
    assert nack.detail == f"MeasurementFrame: {detail}"
    assert not any(word in nack.detail for word in PARSER_WORDS)
    assert rt.refused_measurements == 1 and rt.steps == 0


def test_other_events_that_do_not_parse_are_not_answered():
    rt, ep = hil_runtime()
    deliver(ep, encode_frame(TYPE[pm.ActuationFrame], int(Flags.EVENT), 1, b"\x01"))
    deliver(ep, encode_frame(TYPE[pm.Status], int(Flags.RESPONSE), 2, b"\x01"))
    assert ep.take() == []


def test_a_silent_rig_gets_a_watchdog_actuation_frame_every_tick_however_the_ticks_jitter():
    """Ticks wake a little late or early; each one without a measurement since the one
    before steps once (it used to be every other tick when one woke early)."""
    rt, ep = hil_runtime()
    wake_s = [0.1, 0.2012, 0.2999, 0.4003, 0.4998, 0.6001, 0.7009, 0.7995]
    for now_s in wake_s:
        rt._tick(now_s)
    frames = [m for m, _, _ in ep.take() if isinstance(m, pm.ActuationFrame)]
    assert [f.time_s for f in frames] == wake_s
    assert rt.watchdog_steps == len(wake_s)


def test_a_tick_after_a_measurement_sends_no_watchdog_frame():
    rt, ep = hil_runtime()
    rt._tick(0.1)
    rt.now_s = lambda: 0.15
    deliver(ep, encode(measurement(9), 1, Flags.EVENT))
    rt._tick(0.2)  # a measurement came since the last tick
    rt._tick(0.3)  # none since: the watchdog steps
    frames = [m for m, _, _ in ep.take() if isinstance(m, pm.ActuationFrame)]
    assert [(f.time_s, f.rig_seq) for f in frames] == [(0.1, 0), (0.15, 9), (0.3, 9)]


def test_status_and_actuation_before_any_estimate_have_no_soc_rather_than_zero():
    rt, ep = hil_runtime()
    for k in range(1, 4):
        rt._tick(0.1 * k)  # watchdog steps: an actuation, but no estimate
    status = rt.device.status(0.3)
    assert math.isnan(status.soc_pct) and math.isnan(status.remaining_wh)
    frames = [m for m, _, _ in ep.take() if isinstance(m, pm.ActuationFrame)]
    assert len(frames) == 3 and all(math.isnan(f.soc_pct) for f in frames)
    rt.now_s = lambda: 0.35
    deliver(ep, encode(measurement(), 1, Flags.EVENT))
    soc_pct = rt.device.status(0.35).soc_pct
    assert 0.0 <= soc_pct <= 100.0
    (answer,) = [m for m, _, _ in ep.take() if isinstance(m, pm.ActuationFrame)]
    assert answer.soc_pct == pytest.approx(soc_pct)
    rt._send_final_actuation()  # all open at the end: the SoC it last had
    ((final, _, _),) = ep.take()
    assert final.contactors == 0 and final.soc_pct == pytest.approx(soc_pct)
