"""The runtime between the link and the firmware: measurement frames step the firmware and
are answered with actuation frames, requests are answered with their sequence number,
decoding errors a sender can be told of are, and a silent rig trips the watchdog.

Pure but for one real-time test: a fake endpoint records what would be sent, and what
arrives is real bytes through the real decoder (or a FrameError handed in directly)."""

from __future__ import annotations

import asyncio
import binascii

import numpy as np
import pytest
from cobs import cobs

from bms.core.firmware import Firmware
from bms.core.signals import Contactors, State
from bms.data.faults import FAULT_CODES
from bms.data.presets import PRESETS
from bms.host.device import Device, Identity
from bms.host.frames import actuation_frame, contactor_bits, measurement_of
from bms.host.policy import parse_policy
from bms.runtime.realtime import Runtime
from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from protocol.framing import (
    CRC,
    HEADER,
    REVISION_1_0,
    REVISION_1_1,
    REVISIONS,
    Flags,
    FrameError,
    FrameErrorKind,
    Header,
    encode_frame,
)

CHEM = PRESETS["na-nfm"]
N_SERIES = 4
N_TEMP = 3
CELLS_V = np.array([3.50, 3.48, 3.53, 3.51])
TEMPS_C = np.array([24.0, 27.5, 22.0])
TYPE = {cls: mt.type_id for cls, mt in pm.BY_CLASS.items()}
BITS = pm.CONTACTOR_BITS
NACK = Flags.RESPONSE | Flags.ERROR


class FakeEndpoint:
    """What Runtime uses of an Endpoint; records what is sent (each must encode)."""

    def __init__(self):
        self.on_frame = None
        self.on_error = None
        self.on_connection = None
        self.fail_next_send = False  # the next send raises as an unencodable answer would
        self.sent: list[tuple[object, int, Flags]] = []
        self.revisions: list[int] = []  # the revision each was sent in
        self.started = self.closed = False
        self._seq = 0

    def send(self, msg: object, seq: int | None = None, flags: Flags | None = None,
             revision: int = REVISION_1_0) -> int:
        if seq is None:
            self._seq += 1
            seq = self._seq
        if self.fail_next_send:
            self.fail_next_send = False
            raise ValueError(f"{type(msg).__name__} cannot be encoded: made to fail")
        encode(msg, seq, flags, revision)  # what the wire would carry
        self.sent.append((msg, seq, flags))
        self.revisions.append(revision)
        return seq

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def take(self) -> list[tuple[object, int, Flags]]:
        out, self.sent = self.sent, []
        return out

    def take_revisions(self) -> list[int]:
        out, self.revisions = self.revisions, []
        return out


class FakePlant:
    def measure(self):
        raise AssertionError("not stepped in these tests")

    def actuate(self, act):
        raise AssertionError("not stepped in these tests")

    def advance(self, now_s):
        raise AssertionError("not stepped in these tests")


class Clock:
    t = 0.0


def make_runtime(hil: bool = True, tick_s: float = 0.1,
                 fake_clock: bool = True) -> tuple[Runtime, FakeEndpoint, Clock]:
    fw = Firmware(CHEM, N_SERIES, CHEM.capacity_ah)
    mode = pm.Mode.HIL if hil else pm.Mode.SIM
    device = Device(fw, CHEM, Identity(CHEM.name, mode, 1, CHEM.capacity_ah, N_TEMP))
    ep = FakeEndpoint()
    rt = Runtime(device, ep, tick_s, None if hil else FakePlant())
    clock = Clock()
    if fake_clock:
        rt.now_s = lambda: clock.t  # outside an event loop: the time is the test's
    return rt, ep, clock


def deliver(ep: FakeEndpoint, data: bytes) -> None:
    """Bytes as Endpoint hands them on: frames to on_frame, errors to on_error."""
    for item in Decoder().feed(data):
        if isinstance(item, Frame):
            ep.on_frame(item)
        else:
            ep.on_error(item)


def measurement_frame(rig_seq: int, cells=CELLS_V, temps=TEMPS_C, contactors: int = 0,
                      balancing=None, current_a: float = 0.0) -> pm.MeasurementFrame:
    """Readings at rest; the bus is up when the feedback says the contactors connect it."""
    cells = np.asarray(cells, np.float32)
    bus_up = contactors & BITS["negative"] and contactors & (BITS["positive"] | BITS["precharge"])
    return pm.MeasurementFrame(rig_seq, 0.01 * rig_seq, current_a,
                               float(cells.sum()) if bus_up else 0.0, contactors, cells,
                               np.asarray(temps, np.float32), balancing)


def actuations(sent) -> list[pm.ActuationFrame]:
    return [m for m, _, _ in sent if isinstance(m, pm.ActuationFrame)]


# --- HIL: measurement frames --------------------------------------------------------------

def test_a_measurement_frame_steps_once_and_is_answered_with_an_actuation_frame():
    rt, ep, clock = make_runtime()
    clock.t = 0.5
    deliver(ep, encode(measurement_frame(77), seq=5, flags=Flags.EVENT))
    assert rt.steps == 1 and rt.fw.last_s == 0.5 and rt.last_rig_seq == 77
    [(msg, _, flags)] = ep.take()
    act = rt.device.act
    assert isinstance(msg, pm.ActuationFrame) and flags == Flags.EVENT
    assert (msg.rig_seq, msg.time_s) == (77, 0.5)
    assert State.from_code(msg.state) == act.state == "STANDBY"
    assert msg.contactors == contactor_bits(act.contactors) == 0
    assert msg.fault_bitmap == act.fault_bitmap == 0
    assert msg.soc_pct == pytest.approx(act.soc * 100.0)
    assert np.array_equal(msg.balance_mask, act.balance_mask)
    assert np.allclose(rt.device.measurement.cell_voltage_v, CELLS_V, atol=1e-6)


def test_actuation_frames_follow_the_firmware_to_run_and_into_a_fault():
    rt, ep, clock = make_runtime()
    contactors = 0
    states = []
    for k in range(1, 41):
        clock.t = 0.1 * k
        # from step 11 cell 2 over-voltage; 0.1 mV of dither: a reading that never changes
        # is a stuck sensor
        cells = (CELLS_V if k <= 10 else np.array([3.5, 3.5, 4.09, 3.5])) + 1e-4 * (k % 2)
        deliver(ep, encode(measurement_frame(1000 + k, cells, contactors=contactors), seq=k))
        [frame] = actuations(ep.take())
        act = rt.device.act
        assert frame.rig_seq == 1000 + k and frame.time_s == pytest.approx(clock.t)
        assert (frame.state, frame.contactors, frame.fault_bitmap) == (
            State(act.state).code, contactor_bits(act.contactors), act.fault_bitmap)
        assert np.array_equal(frame.balance_mask, act.balance_mask)
        contactors = frame.contactors  # the rig closes what it is told to
        states.append((State.from_code(frame.state), contactors))
    assert ("RUN", BITS["negative"] | BITS["positive"]) in states
    assert states[-1] == ("FAULT", 0)  # over-voltage on cell 2 held past its debounce
    assert frame.fault_bitmap >> FAULT_CODES["CELL_OVERVOLTAGE"] & 1
    assert rt.steps == 40 and rt.refused_measurements == 0


@pytest.mark.parametrize(("frame", "what"), [
    (measurement_frame(9, cells=CELLS_V[:3]), "n_cells = 3"),
    (measurement_frame(9, cells=np.append(CELLS_V, 3.5)), "n_cells = 5"),
    (measurement_frame(9, temps=TEMPS_C[:2]), "n_sensors = 2"),
    (measurement_frame(9, temps=[]), "n_sensors = 0"),
    (measurement_frame(9, balancing=np.zeros(3, bool)), "n_balancing = 3"),
    (measurement_frame(9, balancing=np.zeros(5, bool)), "n_balancing = 5"),
])
def test_a_measurement_of_the_wrong_size_is_refused_without_a_step(frame, what):
    rt, ep, clock = make_runtime()
    clock.t = 0.3
    deliver(ep, encode(frame, seq=4321, flags=Flags.EVENT))
    [(msg, seq, flags)] = ep.take()
    assert isinstance(msg, pm.Nack) and msg.error == pm.ErrorCode.WRONG_SIZE
    assert (msg.request_type, seq, flags) == (TYPE[pm.MeasurementFrame], 4321, NACK)
    assert what in msg.detail
    assert rt.steps == 0 and rt.fw.last_s is None and rt.device.act is None
    assert rt.refused_measurements == 1 and rt.last_rig_seq == 0


def test_a_measurement_with_the_balancing_reported_is_taken():
    rt, ep, _ = make_runtime()
    mask = np.array([True, False, True, False])
    deliver(ep, encode(measurement_frame(3, balancing=mask), seq=1))
    assert rt.steps == 1 and rt.refused_measurements == 0
    assert np.array_equal(rt.fw.last.balancing, mask)


def test_device_info_tells_the_rig_how_many_sensors_to_send_before_it_sends_any():
    rt, ep, _ = make_runtime()
    deliver(ep, encode(pm.GetInfo(), seq=1, flags=Flags.REQUEST))
    [(info, _, _)] = ep.take()
    assert info.n_temp_sensors == N_TEMP


def test_a_measurement_frame_in_sim_mode_is_not_in_this_mode():
    rt, ep, _ = make_runtime(hil=False)
    deliver(ep, encode(measurement_frame(3), seq=12))
    [(msg, seq, flags)] = ep.take()
    assert isinstance(msg, pm.Nack) and msg.error == pm.ErrorCode.NOT_IN_THIS_MODE
    assert (seq, flags) == (12, NACK) and msg.detail
    assert rt.steps == 0 and rt.fw.last_s is None


# --- requests -----------------------------------------------------------------------------

@pytest.mark.parametrize("hil", [True, False])
def test_a_request_is_answered_with_its_sequence_number(hil):
    rt, ep, clock = make_runtime(hil=hil)
    clock.t = 2.5
    deliver(ep, encode(pm.GetStatus(), seq=300, flags=Flags.REQUEST))
    deliver(ep, encode(pm.TimeSync(99.0), seq=301, flags=Flags.REQUEST))
    [(status, seq, flags), (time_info, seq2, flags2)] = ep.take()
    assert isinstance(status, pm.Status) and (seq, flags) == (300, Flags.RESPONSE)
    assert status.time_s == 2.5
    assert pm.same(time_info, pm.TimeInfo(99.0, 2.5)) and (seq2, flags2) == (301, Flags.RESPONSE)
    assert rt.steps == 0  # a request is not a step


@pytest.mark.parametrize(("msg", "code"), [
    (pm.GetConfig((0x0999,)), pm.ErrorCode.UNKNOWN_PARAM),
    (pm.CommandRequest(99, 0), pm.ErrorCode.BAD_VALUE),
    (pm.Inject("1:open-wire:cell=1"), pm.ErrorCode.NOT_IN_THIS_MODE),
    (pm.Ack(1), pm.ErrorCode.NOT_A_REQUEST),  # a response sent as a request
    (pm.ActuationFrame(1, 0.0, 1, 0, 0, 0.0, 0.0, 50.0, np.zeros(4, bool)),
     pm.ErrorCode.NOT_A_REQUEST),
])
def test_a_refused_request_is_a_nack_with_the_error_flag(msg, code):
    rt, ep, _ = make_runtime()
    deliver(ep, encode(msg, seq=0xFFFF, flags=Flags.REQUEST))
    [(reply, seq, flags)] = ep.take()
    assert isinstance(reply, pm.Nack) and reply.error == code and reply.detail
    assert (reply.request_type, seq, flags) == (TYPE[type(msg)], 0xFFFF, NACK)


def test_a_link_held_to_a_policy_answers_reads_and_refuses_changes_with_not_enabled():
    """The MQTT proto/in link: the emulator's command policy, as on cmd/*."""
    fw = Firmware(CHEM, N_SERIES, CHEM.capacity_ah)
    device = Device(fw, CHEM, Identity(CHEM.name, pm.Mode.HIL, 1, CHEM.capacity_ah, N_TEMP))
    ep = FakeEndpoint()
    rt = Runtime(device, ep, 0.1, policy=parse_policy("state=standby"))
    rt.now_s = lambda: 1.0
    deliver(ep, encode(pm.CommandRequest(pm.Command.STORAGE, 0), seq=5, flags=Flags.REQUEST))
    deliver(ep, encode(pm.SetConfig(({"param_id": 0x0101, "kind": int(pm.ValueKind.FLOAT),
                                      "value": 1.0},)), seq=6, flags=Flags.REQUEST))
    deliver(ep, encode(pm.CommandRequest(pm.Command.STANDBY, 0), seq=7, flags=Flags.REQUEST))
    deliver(ep, encode(pm.GetStatus(), seq=8, flags=Flags.REQUEST))
    (storage, s5, f5), (config, s6, f6), (standby, s7, f7), (status, s8, f8) = ep.take()
    assert (s5, f5, s6, f6) == (5, NACK, 6, NACK)
    assert storage.error == config.error == pm.ErrorCode.NOT_ENABLED
    assert "state 'storage' is not enabled" in storage.detail
    assert "config command is not enabled" in config.detail
    assert isinstance(standby, pm.Ack) and (s7, f7) == (7, Flags.RESPONSE)
    assert isinstance(status, pm.Status) and (s8, f8) == (8, Flags.RESPONSE)
    assert fw.requested == "standby" and fw.cfg.limits.max_charge_a != 1.0
    assert device.not_enabled == {"CommandRequest": 1, "SetConfig": 1}  # in serve's --stats


def test_an_answer_the_device_cannot_encode_becomes_a_nack_internal():
    rt, ep, _ = make_runtime()
    ep.fail_next_send = True
    deliver(ep, encode(pm.GetStatus(), seq=8, flags=Flags.REQUEST))
    [(reply, seq, flags)] = ep.take()
    assert isinstance(reply, pm.Nack) and reply.error == pm.ErrorCode.INTERNAL
    assert (reply.request_type, seq, flags) == (TYPE[pm.GetStatus], 8, NACK)


def test_a_measurement_frame_sent_as_a_request_is_not_a_request_and_steps_nothing():
    rt, ep, _ = make_runtime()
    deliver(ep, encode(measurement_frame(5), seq=9, flags=Flags.REQUEST))
    [(reply, seq, flags)] = ep.take()
    assert isinstance(reply, pm.Nack) and reply.error == pm.ErrorCode.NOT_A_REQUEST
    assert (seq, flags) == (9, NACK) and rt.steps == 0


def test_subscriptions_end_when_the_link_goes_down():
    rt, ep, _ = make_runtime()
    rt.device.handle(pm.Subscribe(({"msg_type": TYPE[pm.Status], "period_ms": 100},)), 0.0)
    ep.on_connection(True)
    assert rt.device.subscriptions
    ep.on_connection(False)
    assert rt.device.subscriptions == {} and rt.device.telemetry_due(10.0) == []


def test_frames_that_are_not_requests_are_not_answered():
    rt, ep, _ = make_runtime()
    deliver(ep, encode(pm.GetStatus(), seq=1, flags=Flags.EVENT))  # no REQUEST flag
    deliver(ep, encode(pm.Ack(1), seq=2))  # a response, as a response
    deliver(ep, encode(pm.Status(0.0, 1, 0, 0, *[0.0] * 8, 0.0, 0, 0.0, 0, 0.0, 0, 0.0, 0, 0),
                       seq=3))
    assert ep.sent == [] and rt.steps == 0


# --- decoding errors ----------------------------------------------------------------------

def raw_frame(msg_type: int, flags: int, seq: int, payload: bytes = b"", version: int = 1,
              crc_ok: bool = True, length: int | None = None) -> bytes:
    length = len(payload) if length is None else length
    body = HEADER.pack(version, msg_type, flags, seq, length) + payload
    crc = binascii.crc32(body) ^ (0 if crc_ok else 0xFFFF)
    return cobs.encode(body + CRC.pack(crc)) + b"\x00"


ANSWERED = [
    (encode_frame(0x99, Flags.REQUEST, 41, b""), 0x99, pm.ErrorCode.UNKNOWN_TYPE),
    (raw_frame(TYPE[pm.GetFaultLog], Flags.REQUEST, 42, b"\x00\x00\x05", length=4),
     TYPE[pm.GetFaultLog], pm.ErrorCode.BAD_PAYLOAD),  # BAD_LENGTH: header says 4, 3 came
    (encode_frame(TYPE[pm.GetFaultLog], Flags.REQUEST, 42, b"\x01"), TYPE[pm.GetFaultLog],
     pm.ErrorCode.BAD_PAYLOAD),
    (encode_frame(TYPE[pm.GetStatus], Flags.REQUEST, 42, b"\x01"), TYPE[pm.GetStatus],
     pm.ErrorCode.BAD_PAYLOAD),  # bytes left over
    (raw_frame(TYPE[pm.GetStatus], Flags.REQUEST, 42, version=max(REVISIONS) + 1),
     TYPE[pm.GetStatus], pm.ErrorCode.UNSUPPORTED_VERSION),
]


@pytest.mark.parametrize(("data", "msg_type", "code"), ANSWERED)
def test_a_request_that_does_not_decode_is_told_why(data, msg_type, code):
    rt, ep, _ = make_runtime()
    deliver(ep, data)
    [(reply, seq, flags)] = ep.take()
    assert isinstance(reply, pm.Nack) and reply.error == code and reply.detail
    assert (reply.request_type, flags) == (msg_type, NACK)
    assert seq == 41 if code == pm.ErrorCode.UNKNOWN_TYPE else seq == 42
    assert rt.steps == 0


@pytest.mark.parametrize(("kind", "code"), [
    (FrameErrorKind.UNKNOWN_TYPE, pm.ErrorCode.UNKNOWN_TYPE),
    (FrameErrorKind.BAD_PAYLOAD, pm.ErrorCode.BAD_PAYLOAD),
    (FrameErrorKind.BAD_LENGTH, pm.ErrorCode.BAD_PAYLOAD),
    (FrameErrorKind.UNSUPPORTED_VERSION, pm.ErrorCode.UNSUPPORTED_VERSION)])
def test_frame_errors_map_to_their_error_codes(kind, code):
    rt, ep, _ = make_runtime()
    rt._error(FrameError(kind, "what went wrong", Header(1, 0x42, Flags.REQUEST, 777, 3)))
    [(reply, seq, flags)] = ep.take()
    assert pm.same(reply, pm.Nack(0x42, code, "what went wrong"))
    assert (seq, flags) == (777, NACK)
    # the same error on an event is not answered: nobody waits for it
    rt._error(FrameError(kind, "what went wrong", Header(1, 0x42, Flags.EVENT, 778, 3)))
    assert ep.sent == []


@pytest.mark.parametrize("data", [
    raw_frame(TYPE[pm.GetStatus], Flags.REQUEST, 50, crc_ok=False),  # BAD_CRC
    b"\x05\x01\x00",  # BAD_COBS
    b"\x01\x01\x00",  # TOO_SHORT
    raw_frame(0x99, Flags.EVENT, 51),  # UNKNOWN_TYPE, but not a request
    encode_frame(TYPE[pm.ActuationFrame], Flags.EVENT, 52, b"\x00\x01"),  # BAD_PAYLOAD event
])  # (a MeasurementFrame that does not parse is answered: tests/bms/runtime/test_runtime_answers)
def test_errors_whose_sender_cannot_be_told_are_not_answered(data):
    rt, ep, _ = make_runtime()
    items = Decoder().feed(data)
    assert len(items) == 1 and isinstance(items[0], FrameError)
    deliver(ep, data)
    assert ep.sent == [] and rt.steps == 0


@pytest.mark.parametrize("kind", [FrameErrorKind.BAD_CRC, FrameErrorKind.BAD_COBS,
                                  FrameErrorKind.TOO_SHORT, FrameErrorKind.OVERSIZE])
def test_errors_without_a_trusted_header_are_not_answered(kind):
    rt, ep, _ = make_runtime()
    rt._error(FrameError(kind, "bad bytes"))
    assert ep.sent == []


# --- conversions --------------------------------------------------------------------------

@pytest.mark.parametrize(("bits", "expected"), [
    (0x00, Contactors()),
    (0x01, Contactors(negative=True)),
    (0x02, Contactors(precharge=True)),
    (0x04, Contactors(positive=True)),
    (0x03, Contactors(negative=True, precharge=True)),
    (0x05, Contactors(negative=True, positive=True)),
    (0x07, Contactors(negative=True, precharge=True, positive=True)),
])
def test_measurement_of_converts_the_contactor_bits(bits, expected):
    m = measurement_of(measurement_frame(1, contactors=bits))
    assert m.contactors == expected
    assert contactor_bits(m.contactors) == bits


def test_measurement_of_converts_the_arrays_from_the_wire():
    sent = pm.MeasurementFrame(5, 1.25, -2.5, 13.75, 0, CELLS_V.astype(np.float32),
                               TEMPS_C.astype(np.float32), None)
    [frame] = Decoder().feed(encode(sent, 1))
    m = measurement_of(frame.message)  # arrays straight off the wire: float32, read-only
    assert m.cell_voltage_v.dtype == np.float64 and m.temperature_c.dtype == np.float64
    assert m.cell_voltage_v.shape == (N_SERIES,) and m.temperature_c.shape == (N_TEMP,)
    assert np.array_equal(m.cell_voltage_v, CELLS_V.astype(np.float32))
    assert np.array_equal(m.temperature_c, TEMPS_C.astype(np.float32))
    assert (m.current_a, m.bus_voltage_v) == (-2.5, 13.75)
    assert type(m.current_a) is float and type(m.bus_voltage_v) is float
    assert m.balancing is None

    mask = np.array([False, True, True, False])
    [frame] = Decoder().feed(encode(pm.MeasurementFrame(6, 1.25, 0.0, 0.0, 0,
                                                        CELLS_V.astype(np.float32),
                                                        TEMPS_C.astype(np.float32), mask), 2))
    m = measurement_of(frame.message)
    assert m.balancing.dtype == bool and np.array_equal(m.balancing, mask)


def test_actuation_frame_carries_the_actuation():
    fw = Firmware(CHEM, N_SERIES, CHEM.capacity_ah)
    act = fw.step(measurement_of(measurement_frame(1)), 0.0)
    frame = actuation_frame(act, 123, 4.5)
    back = Decoder().feed(encode(frame, 1))[0].message
    assert (back.rig_seq, back.time_s, State.from_code(back.state)) == (123, 4.5, act.state)
    assert back.contactors == contactor_bits(act.contactors)
    assert back.soc_pct == pytest.approx(act.soc * 100.0, abs=1e-4)
    assert np.array_equal(back.balance_mask, act.balance_mask)


# --- the watchdog, in real time -----------------------------------------------------------

async def test_a_silent_rig_trips_the_timeout_and_opens_the_contactors():
    """The rig closes the contactors, then falls silent: within the measurement timeout and
    a tick the firmware has raised MEASUREMENT_TIMEOUT, opened them and told the rig."""
    tick_s = 0.05
    rt, ep, _ = make_runtime(tick_s=tick_s, fake_clock=False)
    timeout_s = rt.fw.cfg.measurement_timeout_s
    rt.device.handle(pm.Subscribe(({"msg_type": TYPE[pm.Status], "period_ms": 200},)), 0.0)
    task = asyncio.create_task(rt.run(duration_s=timeout_s + 0.6))
    await asyncio.sleep(0)  # the runtime has started its clock
    contactors = 0
    for k in range(1, 9):
        cells = CELLS_V + 1e-4 * (k % 2)
        ep.on_frame(Frame(Header(1, TYPE[pm.MeasurementFrame], Flags.EVENT, k, 0),
                          measurement_frame(k, cells, contactors=contactors)))
        contactors = actuations(ep.sent)[-1].contactors
        await asyncio.sleep(0.01)
    assert rt.fw.state == "RUN" and rt.fw.contactors.main_closed
    last_measurement_s = rt.fw.last_measurement_s
    await task

    fw = rt.fw
    assert ep.started and ep.closed
    assert "MEASUREMENT_TIMEOUT" in fw.event_faults
    assert fw.state == "FAULT" and fw.contactors == Contactors()
    [event] = [e.event for e in fw.log.entries]
    assert event.name == "MEASUREMENT_TIMEOUT" and event.action == "raised"
    assert timeout_s < event.t_s - last_measurement_s < timeout_s + 0.4
    frames = actuations(ep.sent)
    bit = 1 << FAULT_CODES["MEASUREMENT_TIMEOUT"]
    tripped = [f for f in frames if f.fault_bitmap & bit]
    assert tripped, "the rig was never told"
    assert tripped[0].contactors == 0 and State.from_code(tripped[0].state) == "FAULT"
    assert all(f.rig_seq == 8 for f in tripped)  # the last measurement answered
    assert frames[-1].contactors == 0  # and on the way out
    # the watchdog stepped without measurements: every tick while silent
    assert rt.steps > 8 + 0.5 * timeout_s / tick_s
    status = [(m, flags) for m, _, flags in ep.sent if isinstance(m, pm.Status)]
    assert len(status) >= 3 and all(flags == Flags.EVENT for _, flags in status)


def test_leaving_in_run_tells_the_rig_to_open_everything():
    """serve stopping (Ctrl-C, SIGTERM, --duration) while the pack runs: the last frame the
    rig gets is STANDBY with every contactor open and no current allowed."""
    rt, ep, clock = make_runtime()
    contactors = 0
    for k in range(1, 21):
        clock.t = 0.1 * k
        deliver(ep, encode(measurement_frame(k, CELLS_V + 1e-4 * (k % 2),
                                             contactors=contactors), seq=k))
        contactors = actuations(ep.take())[-1].contactors
    assert rt.fw.state == "RUN" and contactors == BITS["negative"] | BITS["positive"]
    rt._shut_down()
    [final] = actuations(ep.take())
    assert (State.from_code(final.state), final.contactors) == ("STANDBY", 0)
    assert final.charge_limit_a == final.discharge_limit_a == 0.0
    assert not final.balance_mask.any() and final.rig_seq == 20


def test_a_failing_shutdown_frame_does_not_stop_the_shutdown():
    rt, ep, clock = make_runtime()
    deliver(ep, encode(measurement_frame(1), seq=1))
    ep.take()
    ep.fail_next_send = True
    rt._shut_down()  # logs, does not raise
    assert ep.sent == []


# --- protocol revisions: every answer in the revision it answers -------------------------

@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_a_request_is_answered_in_its_own_revision(revision):
    """A 1.0 client sees exactly 1.0: its Status is the 1.0 layout, and the DeviceInfo it
    gets says revision 1."""
    rt, ep, _ = make_runtime()
    deliver(ep, encode(pm.GetStatus(), seq=3, flags=Flags.REQUEST, revision=revision))
    deliver(ep, encode(pm.GetInfo(), seq=4, flags=Flags.REQUEST, revision=revision))
    [(status, seq_status, _), (info, seq_info, _)] = ep.take()
    assert (seq_status, seq_info) == (3, 4) and ep.revisions == [revision, revision]
    assert info.protocol_version == revision
    wire = encode(status, 3, Flags.RESPONSE, revision)
    (frame,) = Decoder().feed(wire)
    assert frame.header.revision == revision
    assert frame.header.length == pm.REGISTRY[TYPE[pm.Status]].structs[revision].sizeof()


def test_telemetry_goes_out_in_the_revision_of_its_subscribe():
    rt, ep, clock = make_runtime(hil=False)
    rt._sim_step = lambda now_s: None  # telemetry only: no plant
    sub = pm.Subscribe(({"msg_type": TYPE[pm.Status], "period_ms": 100},))
    for revision in (REVISION_1_1, REVISION_1_0):
        deliver(ep, encode(sub, seq=1, flags=Flags.REQUEST, revision=revision))
        ep.take(), ep.take_revisions()
        clock.t += 0.1
        rt._tick(clock.t)
        [(msg, _, flags)] = ep.take()
        assert isinstance(msg, pm.Status) and flags == Flags.EVENT
        assert ep.take_revisions() == [revision]


def test_actuations_go_out_in_the_revision_of_the_rigs_last_measurement():
    """The answer to a measurement, the watchdog's while the rig is silent and the last one
    when serve leaves: all in the revision the rig last spoke (1.0 before it spoke)."""
    rt, ep, clock = make_runtime()
    clock.t = 0.5
    rt._tick(clock.t)  # silent from the start: the watchdog steps
    assert actuations(ep.take()) and ep.take_revisions() == [REVISION_1_0]
    clock.t = 0.6
    deliver(ep, encode(measurement_frame(1), seq=1, flags=Flags.EVENT, revision=REVISION_1_1))
    assert actuations(ep.take()) and ep.take_revisions() == [REVISION_1_1]
    for clock.t in (0.7, 0.8):  # the first tick saw the measurement, the second none
        rt._tick(clock.t)
    assert actuations(ep.take()) and ep.take_revisions() == [REVISION_1_1]
    rt._shut_down()
    assert actuations(ep.take()) and ep.take_revisions() == [REVISION_1_1]


def test_a_request_in_a_revision_nobody_speaks_is_refused_in_1_0():
    """What a 1.0 device did before 1.1 existed: a client can fall back on it."""
    rt, ep, _ = make_runtime()
    deliver(ep, raw_frame(TYPE[pm.GetInfo], Flags.REQUEST, 9, version=max(REVISIONS) + 1))
    [(reply, seq, flags)] = ep.take()
    assert reply.error == pm.ErrorCode.UNSUPPORTED_VERSION and (seq, flags) == (9, NACK)
    assert ep.revisions == [REVISION_1_0]
