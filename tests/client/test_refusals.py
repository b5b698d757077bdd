"""Every ErrorCode a device can send, provoked through the wire as docs/protocol.md
(Refusals; Sequence numbers and matching; Versions and negotiation) describes it. Each
Nack carries the request's seq and type id, flags RESPONSE + ERROR, a detail for a
person, and a refused request changes nothing.

`test_every_error_code_is_provoked` iterates ErrorCode: a new code fails it until a test
here provokes it (`@provokes`) or NOT_PROVOKABLE says why none can.
"""

from __future__ import annotations

import math
import resource
import signal
import struct
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from protocol import messages as pm
from protocol.codec import Frame
from protocol.framing import LATEST_REVISION, REVISION_1_0, REVISIONS, Flags
from protocol.messages import REGISTRY, ErrorCode, encode_payload
from tests.client.conftest import Faulted, Hil
from tests.client.emulators import (
    SERIES,
    STATE,
    TEMP_SENSOR_FAULT,
    Emulator,
    measurement,
    over_pty,
)
from tests.client.samples import answer_type, float_write, request_types, sample
from tests.client.spec_client import SpecClient, raw_frame, type_id

PROVOKED: dict[ErrorCode, list[str]] = defaultdict(list)
# Codes no client can provoke from outside, and why.
NOT_PROVOKABLE: dict[ErrorCode, str] = {}
PYTHON_WORDS = ("unpack", "struct.error", "Traceback", "construct", "Container", "Error in")
UNUSED_TYPE = next(t for t in range(0x40, 0x7E) if t not in REGISTRY)
UTC_2000_S, UTC_2100_S = 946_684_800.0, 4_102_444_800.0


def provokes(code: ErrorCode) -> Callable:
    def mark(test: Callable) -> Callable:
        PROVOKED[code].append(test.__name__)
        return test
    return mark


def expect_nack(frame: Frame, seq: int, request_type: int, code: ErrorCode,
                revision: int = LATEST_REVISION) -> str:
    """Checks the Nack as the spec says it; returns its detail."""
    nack = frame.message
    assert isinstance(nack, pm.Nack), f"expected Nack {code.name}, got {nack}"
    assert (ErrorCode(nack.error), nack.request_type) == (code, request_type), nack.detail
    assert frame.header.seq == seq
    assert frame.header.flags == Flags.RESPONSE | Flags.ERROR
    assert frame.header.revision == revision
    assert nack.detail and not any(word in nack.detail for word in PYTHON_WORDS), nack.detail
    return nack.detail


def refused(client: SpecClient, msg: object, code: ErrorCode,
            revision: int = LATEST_REVISION) -> str:
    frame = client.request(msg, revision)
    return expect_nack(frame, frame.header.seq, type_id(type(msg)), code, revision)


def refused_raw(client: SpecClient, code: ErrorCode, msg_type: int, payload: bytes = b"",
                revision: int = LATEST_REVISION, flags: int = Flags.REQUEST,
                length: int | None = None, answer_revision: int | None = None) -> str:
    after, seq = client.mark(), client.next_seq()
    client.send_bytes(raw_frame(revision, msg_type, flags, seq, payload, length))
    frame = client.answer(seq, after)
    return expect_nack(frame, seq, msg_type, code,
                       revision if answer_revision is None else answer_revision)


def config_payload(param_id: int, kind: int, value: bytes) -> bytes:
    """A SetConfig payload of one value, laid out by hand (count, id, kind, value)."""
    return struct.pack("<HHB", 1, param_id, kind) + value


def first_of_kind(emulator: Emulator, kind: pm.ValueKind) -> dict:
    return next(p for p in emulator.params if p["kind"] == kind
                and p["access"] & pm.ACCESS_BITS["write"])


def unchanged(emulator: Emulator, param: dict, act: Callable[[], object]) -> object:
    """Runs `act` and checks the parameter kept its value; returns what `act` returned."""
    before = emulator.value(param["name"])
    result = act()
    after = emulator.value(param["name"])
    assert after == before or (after != after and before != before), param["name"]
    return result


# --- UNKNOWN_TYPE ------------------------------------------------------------------------------

@provokes(ErrorCode.UNKNOWN_TYPE)
def test_a_type_id_not_in_the_catalogue_is_unknown_type(sim: Emulator) -> None:
    detail = refused_raw(sim.client, ErrorCode.UNKNOWN_TYPE, UNUSED_TYPE)
    assert f"0x{UNUSED_TYPE:02X}" in detail


NEWER = [mt for mt in request_types() if mt.since > REVISION_1_0]


@provokes(ErrorCode.UNKNOWN_TYPE)
@pytest.mark.parametrize("mt", NEWER, ids=[mt.name for mt in NEWER])
def test_a_type_newer_than_the_frames_revision_is_unknown_type(
        sim: Emulator, mt: pm.MessageType) -> None:
    """As a device of the older revision would answer it."""
    payload = encode_payload(sample(mt, sim), mt.since)[1]
    refused_raw(sim.client, ErrorCode.UNKNOWN_TYPE, mt.type_id, payload, REVISION_1_0)


# --- BAD_PAYLOAD -------------------------------------------------------------------------------

@provokes(ErrorCode.BAD_PAYLOAD)
def test_a_short_payload_is_bad_payload_with_the_specs_detail(sim: Emulator) -> None:
    detail = refused_raw(sim.client, ErrorCode.BAD_PAYLOAD, type_id(pm.GetFaultLog), b"\x00")
    assert detail == "GetFaultLog: payload is 1 byte, expected 3"  # the spec's own example


@provokes(ErrorCode.BAD_PAYLOAD)
@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_a_payload_longer_than_its_layout_is_bad_payload(sim: Emulator, revision: int) -> None:
    refused_raw(sim.client, ErrorCode.BAD_PAYLOAD, type_id(pm.GetStatus), b"\x00", revision)
    command = encode_payload(pm.CommandRequest(int(pm.Command.STANDBY), 0), revision)[1]
    refused_raw(sim.client, ErrorCode.BAD_PAYLOAD, type_id(pm.CommandRequest), command + b"\x00",
                revision)


@provokes(ErrorCode.BAD_PAYLOAD)
def test_a_header_length_that_is_not_what_arrived_is_bad_payload(sim: Emulator) -> None:
    """BAD_LENGTH of the decoder is answered as BAD_PAYLOAD."""
    refused_raw(sim.client, ErrorCode.BAD_PAYLOAD, type_id(pm.GetStatus), b"", length=5)


@provokes(ErrorCode.BAD_PAYLOAD)
def test_a_bool_byte_other_than_0_or_1_is_bad_payload_and_changes_nothing(sim: Emulator) -> None:
    param = first_of_kind(sim, pm.ValueKind.BOOL)
    payload = config_payload(param["param_id"], pm.ValueKind.BOOL, b"\x02")
    detail = unchanged(sim, param, lambda: refused_raw(
        sim.client, ErrorCode.BAD_PAYLOAD, type_id(pm.SetConfig), payload))
    assert detail == "SetConfig: `values[].value`: flag byte 0x02; 0 (false) or 1 (true)"


@provokes(ErrorCode.BAD_PAYLOAD)
def test_a_kind_that_is_no_value_kind_is_bad_payload(sim: Emulator) -> None:
    param = first_of_kind(sim, pm.ValueKind.FLOAT)
    kind = max(pm.ValueKind) + 1
    payload = config_payload(param["param_id"], kind, struct.pack("<d", 1.0))
    detail = unchanged(sim, param, lambda: refused_raw(
        sim.client, ErrorCode.BAD_PAYLOAD, type_id(pm.SetConfig), payload))
    assert detail.startswith("SetConfig: ") and "kind" in detail


@provokes(ErrorCode.BAD_PAYLOAD)
def test_a_text_that_is_not_utf8_is_bad_payload(sim: Emulator) -> None:
    detail = refused_raw(sim.client, ErrorCode.BAD_PAYLOAD, type_id(pm.Inject), b"\x02\xff\xfe")
    assert detail.startswith("Inject: ") and "UTF-8" in detail


# --- UNSUPPORTED_VERSION -----------------------------------------------------------------------

@provokes(ErrorCode.UNSUPPORTED_VERSION)
@pytest.mark.parametrize("revision", [0, LATEST_REVISION + 1, 255])
def test_a_revision_the_device_does_not_speak_is_refused_in_revision_1(
        sim: Emulator, revision: int) -> None:
    """The Nack is in revision 1, which every peer reads; a client goes down and asks again."""
    detail = refused_raw(sim.client, ErrorCode.UNSUPPORTED_VERSION, type_id(pm.GetInfo),
                         revision=revision, answer_revision=REVISION_1_0)
    assert str(revision) in detail
    assert sim.client.ask(pm.GetInfo(), LATEST_REVISION).protocol_version == LATEST_REVISION


# --- NOT_A_REQUEST -----------------------------------------------------------------------------

NOT_REQUESTS = [(mt, r) for _, mt in sorted(REGISTRY.items()) if mt.flags != Flags.REQUEST
                for r in sorted(mt.structs)]


@provokes(ErrorCode.NOT_A_REQUEST)
@pytest.mark.parametrize(("mt", "revision"), NOT_REQUESTS,
                         ids=[f"{mt.name}-rev{r}" for mt, r in NOT_REQUESTS])
def test_a_response_or_event_type_sent_as_a_request_is_not_a_request(
        sim: Emulator, mt: pm.MessageType, revision: int) -> None:
    """Decided from the header alone: the payload (one stray byte here) is not looked at."""
    refused_raw(sim.client, ErrorCode.NOT_A_REQUEST, mt.type_id, b"\x01", revision)


@provokes(ErrorCode.NOT_A_REQUEST)
def test_a_measurement_frame_with_the_request_flag_is_not_a_request(sim: Emulator) -> None:
    seq = sim.client.next_seq()
    after = sim.client.mark()
    sim.client.send(measurement(1), flags=Flags.REQUEST, seq=seq)
    expect_nack(sim.client.answer(seq, after), seq, type_id(pm.MeasurementFrame),
                ErrorCode.NOT_A_REQUEST)


# --- configuration: UNKNOWN_PARAM, BAD_TYPE, OUT_OF_RANGE, BAD_VALUE -----------------------------

def unknown_id(emulator: Emulator) -> int:
    known = {p["param_id"] for p in emulator.params}
    return next(i for i in range(0xFFFF, 0, -1) if i not in known)


@provokes(ErrorCode.UNKNOWN_PARAM)
def test_an_id_no_parameter_has_is_unknown_param(sim: Emulator) -> None:
    bad = unknown_id(sim)
    assert f"0x{bad:04X}" in refused(sim.client, pm.GetConfig((bad,)), ErrorCode.UNKNOWN_PARAM)
    good = first_of_kind(sim, pm.ValueKind.FLOAT)
    values = ({"param_id": good["param_id"], "kind": int(pm.ValueKind.FLOAT),
               "value": good["default"]},
              {"param_id": bad, "kind": int(pm.ValueKind.FLOAT), "value": 1.0})
    unchanged(sim, good, lambda: refused(sim.client, pm.SetConfig(values),
                                         ErrorCode.UNKNOWN_PARAM))


@provokes(ErrorCode.BAD_TYPE)
@pytest.mark.parametrize(("kind", "sent_kind", "value"), [
    (pm.ValueKind.FLOAT, pm.ValueKind.INT, 1), (pm.ValueKind.INT, pm.ValueKind.FLOAT, 500.0)],
    ids=["int-for-float", "float-for-int"])
def test_a_value_of_another_kind_is_bad_type_and_not_converted(
        sim: Emulator, kind: pm.ValueKind, sent_kind: pm.ValueKind, value: object) -> None:
    param = first_of_kind(sim, kind)
    request = pm.SetConfig(({"param_id": param["param_id"], "kind": int(sent_kind),
                             "value": value},))
    detail = unchanged(sim, param, lambda: refused(sim.client, request, ErrorCode.BAD_TYPE))
    assert param["name"] in detail


@provokes(ErrorCode.OUT_OF_RANGE)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_a_float_that_is_not_finite_is_out_of_range(sim: Emulator, value: float) -> None:
    param = first_of_kind(sim, pm.ValueKind.FLOAT)
    unchanged(sim, param, lambda: refused(sim.client, float_write(param, value),
                                          ErrorCode.OUT_OF_RANGE))


@provokes(ErrorCode.OUT_OF_RANGE)
def test_a_value_past_the_listed_max_is_out_of_range(sim: Emulator) -> None:
    """ParameterList's `max` is where the device starts refusing."""
    param = next(p for p in sim.params if p["kind"] == pm.ValueKind.FLOAT
                 and math.isfinite(p["max"]) and not p["open_ends"] & pm.OPEN_END_BITS["max"])
    assert sim.client.request(float_write(param, param["max"])).message.values[0]["value"] == (
        param["max"])
    above = param["max"] + max(1.0, abs(param["max"]))
    detail = unchanged(sim, param, lambda: refused(sim.client, float_write(param, above),
                                                   ErrorCode.OUT_OF_RANGE))
    assert param["name"] in detail
    sim.client.ask(float_write(param, param["default"]))


@provokes(ErrorCode.OUT_OF_RANGE)
def test_a_release_past_its_threshold_is_out_of_range(sim: Emulator) -> None:
    """Refused for how it stands to another parameter; both within their own ranges."""
    row = "protection.CELL_OVERVOLTAGE.WARNING"
    threshold = sim.param(f"{row}.threshold")
    release = sim.param(f"{row}.release")
    above = sim.value(threshold["name"]) + 0.01
    assert above <= release["max"]
    detail = unchanged(sim, release, lambda: refused(sim.client, float_write(release, above),
                                                     ErrorCode.OUT_OF_RANGE))
    assert release["name"] in detail


@provokes(ErrorCode.OUT_OF_RANGE)
@pytest.mark.parametrize("utc_s", [0.0, UTC_2000_S - 1, UTC_2100_S, math.nan, math.inf])
def test_a_wall_clock_outside_2000_to_2100_is_out_of_range(sim: Emulator, utc_s: float) -> None:
    refused(sim.client, pm.SetTime(utc_s), ErrorCode.OUT_OF_RANGE)
    ack = sim.client.ask(pm.SetTime(UTC_2000_S))  # the bound itself is allowed
    assert ack.request_type == type_id(pm.SetTime)


@provokes(ErrorCode.OUT_OF_RANGE)
def test_a_telemetry_period_below_10_ms_is_refused(sim: Emulator) -> None:
    """Subscribe says `period_ms` is at least 10; Refusals: OUT_OF_RANGE."""
    status = type_id(pm.Status)
    refused(sim.client, pm.Subscribe(({"msg_type": status, "period_ms": 9},)),
            ErrorCode.OUT_OF_RANGE)


@provokes(ErrorCode.BAD_VALUE)
def test_an_id_given_twice_is_bad_value(sim: Emulator) -> None:
    param = first_of_kind(sim, pm.ValueKind.FLOAT)
    pid = param["param_id"]
    refused(sim.client, pm.GetConfig((pid, pid)), ErrorCode.BAD_VALUE)
    twice = float_write(param, param["default"]).values * 2
    unchanged(sim, param, lambda: refused(sim.client, pm.SetConfig(twice), ErrorCode.BAD_VALUE))


@provokes(ErrorCode.BAD_VALUE)
def test_a_choice_not_among_the_choices_is_bad_value(sim: Emulator) -> None:
    param = first_of_kind(sim, pm.ValueKind.CHOICE)
    request = pm.SetConfig(({"param_id": param["param_id"], "kind": int(pm.ValueKind.CHOICE),
                             "value": "no-such-choice"},))
    detail = unchanged(sim, param, lambda: refused(sim.client, request, ErrorCode.BAD_VALUE))
    assert "no-such-choice" in detail


NO_SUCH = [(max(pm.Command) + 1, 0, LATEST_REVISION),
           (pm.Command.BALANCING_MODE, max(pm.BalancingMode) + 1, LATEST_REVISION),
           *((cmd, 0, REVISION_1_0) for cmd, since in pm.COMMAND_SINCE.items()
             if since > REVISION_1_0)]


@provokes(ErrorCode.BAD_VALUE)
@pytest.mark.parametrize(("command", "argument", "revision"), NO_SUCH,
                         ids=[f"command-{int(c)}-argument-{a}-rev{r}" for c, a, r in NO_SUCH])
def test_a_command_or_mode_that_does_not_exist_in_the_revision_is_bad_value(
        sim: Emulator, command: int, argument: int, revision: int) -> None:
    refused(sim.client, pm.CommandRequest(int(command), argument), ErrorCode.BAD_VALUE, revision)


@provokes(ErrorCode.BAD_VALUE)
def test_subscribing_a_type_that_cannot_be_subscribed_is_bad_value(sim: Emulator) -> None:
    for request_type in (type_id(pm.GetStatus), type_id(pm.Nack), UNUSED_TYPE):
        refused(sim.client, pm.Subscribe(({"msg_type": request_type, "period_ms": 100},)),
                ErrorCode.BAD_VALUE)
    event = {"msg_type": type_id(pm.FaultEvent), "period_ms": 100}  # not in 1.0
    refused(sim.client, pm.Subscribe((event,)), ErrorCode.BAD_VALUE, REVISION_1_0)


@provokes(ErrorCode.BAD_VALUE)
def test_an_injection_that_does_not_parse_is_bad_value(sim: Emulator) -> None:
    """Injections: `AT:KIND[:key=value,...]`, cells numbered from 1; Refusals: a bad one is
    BAD_VALUE, the detail naming the bad part."""
    detail = refused(sim.client, pm.Inject(f"0:sensor-offset:cell={99},offset_v=0.1"),
                     ErrorCode.BAD_VALUE)
    assert "cell" in detail and "99" in detail
    refused(sim.client, pm.Inject("soon:no-such-kind"), ErrorCode.BAD_VALUE)


# --- the mode and the pack: NOT_IN_THIS_MODE, WRONG_SIZE -----------------------------------------

@provokes(ErrorCode.NOT_IN_THIS_MODE)
def test_a_measurement_to_an_emulator_running_its_own_pack_is_not_in_this_mode(
        sim: Emulator) -> None:
    """An event, but a rig must know it was not used: refused with the measurement's seq."""
    after, seq = sim.client.mark(), sim.client.next_seq()
    sim.client.send(measurement(7), flags=Flags.EVENT, seq=seq)
    expect_nack(sim.client.answer(seq, after), seq, type_id(pm.MeasurementFrame),
                ErrorCode.NOT_IN_THIS_MODE)


@provokes(ErrorCode.NOT_IN_THIS_MODE)
def test_an_injection_into_a_hil_emulator_is_not_in_this_mode(hil_pty: Hil) -> None:
    """Inject is "SIM mode only"; Refusals: NOT_IN_THIS_MODE to a `serve --hil`."""
    refused(hil_pty.emulator.client, pm.Inject("0:cooling-failure"), ErrorCode.NOT_IN_THIS_MODE)


def refused_measurement(hil: Hil, frame: pm.MeasurementFrame, code: ErrorCode) -> str:
    """Sends `frame` as the rig would; checks the Nack and that the firmware did not step on
    it (no ActuationFrame ever carries its `rig_seq`, while the rig's next ones do)."""
    client = hil.emulator.client
    after, seq = client.mark(), client.next_seq()
    client.send(frame, flags=Flags.EVENT, seq=seq)
    detail = expect_nack(client.answer(seq, after), seq, type_id(pm.MeasurementFrame), code)
    later = hil.rig.rig_seq + 2
    client.wait_for(lambda item: isinstance(item, Frame)
                    and isinstance(item.message, pm.ActuationFrame)
                    and item.message.rig_seq >= later, "the rig's next ActuationFrames", after)
    assert not [f for f in client.events(pm.ActuationFrame, after)
                if f.message.rig_seq == frame.rig_seq]
    return detail


@provokes(ErrorCode.WRONG_SIZE)
@pytest.mark.parametrize("shape", ["cells", "sensors", "balancing"])
def test_a_measurement_that_does_not_fit_the_pack_is_wrong_size(hil_pty: Hil, shape: str) -> None:
    n = hil_pty.emulator.info.n_series
    sensors = hil_pty.emulator.info.n_temp_sensors
    frame = {"cells": measurement(900_001, n_cells=n - 1),
             "sensors": measurement(900_002, n_sensors=sensors + 1),
             "balancing": measurement(900_003, balancing=[False] * (n - 3))}[shape]
    detail = refused_measurement(hil_pty, frame, ErrorCode.WRONG_SIZE)
    assert {"cells": "n_cells", "sensors": "n_sensors", "balancing": "n_balancing"}[shape] in detail


@provokes(ErrorCode.BAD_PAYLOAD)
@pytest.mark.parametrize("damage", ["count-over-512", "cut-short", "byte-left-over"])
def test_a_measurement_that_cannot_be_read_is_bad_payload(hil_pty: Hil, damage: str) -> None:
    client = hil_pty.emulator.client
    payload = encode_payload(measurement(900_010), LATEST_REVISION)[1]
    payload = {"count-over-512": payload[:21] + struct.pack("<H", 600) + payload[23:],
               "cut-short": payload[:-3], "byte-left-over": payload + b"\x00"}[damage]
    refused_raw(client, ErrorCode.BAD_PAYLOAD, type_id(pm.MeasurementFrame), payload,
                flags=Flags.EVENT)


@provokes(ErrorCode.UNSUPPORTED_VERSION)
def test_a_measurement_in_a_revision_the_device_does_not_speak_is_refused(hil_pty: Hil) -> None:
    payload = encode_payload(measurement(900_020), LATEST_REVISION)[1]
    refused_raw(hil_pty.emulator.client, ErrorCode.UNSUPPORTED_VERSION,
                type_id(pm.MeasurementFrame), payload, LATEST_REVISION + 1, Flags.EVENT,
                answer_revision=REVISION_1_0)


# --- the command policy: NOT_ENABLED ------------------------------------------------------------

READS = [mt for mt in request_types() if mt.name.startswith("Get")
         or mt.name in ("Subscribe", "TimeSync")]
WRITES = [mt for mt in request_types() if mt not in READS]


@provokes(ErrorCode.NOT_ENABLED)
@pytest.mark.parametrize("mt", WRITES, ids=[mt.name for mt in WRITES])
def test_a_write_the_mqtt_policy_does_not_enable_is_not_enabled(
        read_only_mqtt: Emulator, mt: pm.MessageType) -> None:
    """The default policy enables nothing; the detail names what would enable it."""
    detail = refused(read_only_mqtt.client, sample(mt, read_only_mqtt), ErrorCode.NOT_ENABLED)
    assert "--mqtt-commands" in detail


@provokes(ErrorCode.NOT_ENABLED)
@pytest.mark.parametrize("command", pm.commands_in(LATEST_REVISION), ids=lambda c: c.name)
def test_every_command_is_held_to_the_mqtt_policy(read_only_mqtt: Emulator,
                                                 command: pm.Command) -> None:
    argument = int(pm.BalancingMode.OFF) if command == pm.Command.BALANCING_MODE else 0
    refused(read_only_mqtt.client, pm.CommandRequest(int(command), argument),
            ErrorCode.NOT_ENABLED)


def test_a_refused_write_changes_nothing(read_only_mqtt: Emulator) -> None:
    param = first_of_kind(read_only_mqtt, pm.ValueKind.FLOAT)
    other = param["max"] if read_only_mqtt.value(param["name"]) != param["max"] else param["min"]
    unchanged(read_only_mqtt, param, lambda: refused(
        read_only_mqtt.client, float_write(param, other), ErrorCode.NOT_ENABLED))


@pytest.mark.parametrize("mt", READS, ids=[mt.name for mt in READS])
def test_reads_are_answered_whatever_the_policy(read_only_mqtt: Emulator,
                                                mt: pm.MessageType) -> None:
    frame = read_only_mqtt.client.request(sample(mt, read_only_mqtt))
    assert frame.header.msg_type == answer_type(mt).type_id, frame.message


# --- the firmware's state: NOT_NOW ---------------------------------------------------------------

@provokes(ErrorCode.NOT_NOW)
@pytest.mark.parametrize("command", [pm.Command.RUN, pm.Command.STORAGE,
                                     pm.Command.CLEAR_FAULTS, pm.Command.SERVICE_RESET],
                         ids=lambda c: c.name)
def test_a_command_a_latched_fault_whose_cause_stays_forbids_is_not_now(
        faulted_pty: Faulted, command: pm.Command) -> None:
    """Never an Ack for nothing: the detail names the fault, and the pack stays in FAULT."""
    emulator = faulted_pty.emulator
    detail = refused(emulator.client, pm.CommandRequest(int(command), 0), ErrorCode.NOT_NOW)
    assert "TEMP_SENSOR_FAULT" in detail
    status = emulator.status()
    assert status.state == STATE["FAULT"] and status.fault_level_bitmap >> TEMP_SENSOR_FAULT & 1
    assert status.contactors == 0


@provokes(ErrorCode.NOT_NOW)
def test_factory_defaults_while_the_pack_is_on_the_bus_is_not_now(sim: Emulator) -> None:
    assert isinstance(sim.command(pm.Command.RUN), pm.Ack)
    try:
        sim.until_status(lambda s: s.state == STATE["RUN"], "RUN after a CommandRequest RUN")
        detail = refused(sim.client, pm.CommandRequest(int(pm.Command.FACTORY_DEFAULTS), 0),
                         ErrorCode.NOT_NOW)
        assert "STANDBY" in detail
    finally:
        assert isinstance(sim.command(pm.Command.STANDBY), pm.Ack)
    sim.until_status(lambda s: s.state == STATE["STANDBY"], "STANDBY again")


# --- the persistent store: SAVE_FAILED ---------------------------------------------------------

def full_disk_at(max_file_bytes: int) -> Callable[[], None]:
    """For the child: no file may grow past `max_file_bytes`, as on a full disk (the write
    fails; SIGXFSZ ignored, so it does not kill)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    return limit


@provokes(ErrorCode.SAVE_FAILED)
def test_a_write_the_store_cannot_keep_is_save_failed_and_not_in_effect(tmp_path: Path) -> None:
    store = tmp_path / "nvm.sqlite"
    # The pack id named: by default it carries the port's name, and each start has its own pty.
    args = ("--sim", "--series", str(SERIES), "--pack-id", "save-failed", "--nvm", str(store),
            "--nvm-period", "0.1")
    first = over_pty(tmp_path, *args)
    try:
        param = first.param("limits.max_charge_a")
        written = first.client.ask(float_write(param, param["default"] * 0.5))
        assert written.values[0]["value"] == param["default"] * 0.5
    finally:
        first.close()
    emulator = over_pty(tmp_path, *args, preexec=full_disk_at(store.stat().st_size))
    try:
        emulator.until_status(lambda s: s.store & pm.STORE_BITS["failing"],
                              "Status saying the store's saves fail")
        assert emulator.status().save_failures >= 1
        new = param["default"] * 0.25
        detail = unchanged(emulator, param, lambda: refused(
            emulator.client, float_write(param, new), ErrorCode.SAVE_FAILED))
        assert "not in effect" in detail
        refused(emulator.client, pm.CommandRequest(int(pm.Command.FACTORY_DEFAULTS), 0),
                ErrorCode.SAVE_FAILED)
        assert emulator.value(param["name"]) == param["default"] * 0.5  # not the defaults
    finally:
        emulator.close()


# --- the device's own failure: INTERNAL --------------------------------------------------------

NOT_PROVOKABLE[ErrorCode.INTERNAL] = (
    "the device's own fault: an answer it cannot encode, or a GetConfigLog whose store "
    "cannot be read. Neither can be brought about from outside: overwriting or truncating "
    "the store file and its write-ahead log under a running serve still gets a good "
    "ConfigLogPage (the open connection answers from its cache)")


# --- coverage ------------------------------------------------------------------------------------

def test_every_error_code_is_provoked() -> None:
    """Iterates ErrorCode: each is provoked by a test above or listed as not provokable."""
    missing = [code.name for code in ErrorCode
               if code not in PROVOKED and code not in NOT_PROVOKABLE]
    assert not missing, f"no test provokes {', '.join(missing)}"
