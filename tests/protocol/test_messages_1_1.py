"""What protocol 1.1 added to the catalogue: new message types that a 1.0 frame cannot carry,
Command codes of 1.1, and the rig's frames gaining the open-wire test, the pack voltage,
the voltage limits and the levels while a 1.0 rig's frames stay byte for byte as they
were."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from protocol.codec import Decoder, Frame, encode
from protocol.framing import (
    REVISION_1_0,
    REVISION_1_1,
    Flags,
    FrameError,
    FrameErrorKind,
    encode_frame,
)
from protocol.messages import (
    BY_CLASS,
    COMMAND_SINCE,
    REGISTRY,
    RIG_REQUEST_BITS,
    ActuationFrame,
    Command,
    FaultEvent,
    MeasurementFrame,
    commands_in,
    encode_payload,
    same,
)

NEW_TYPES = sorted(t for t, mt in REGISTRY.items() if mt.since == REVISION_1_1)
CELLS_V = np.array([3.5, 3.625, 3.75, 3.875], np.float32)
TEMPS_C = np.array([25.0], np.float32)


def test_the_new_messages_are_1_1():
    names = {REGISTRY[t].name for t in NEW_TYPES}
    assert names == {"SetTime", "GetCounters", "CounterPage", "GetCellHealth",
                     "CellHealthPage", "GetConfigLog", "ConfigLogPage", "FaultEvent"}


@pytest.mark.parametrize("type_id", NEW_TYPES, ids=lambda t: REGISTRY[t].name)
def test_a_1_0_frame_of_a_1_1_type_is_unknown_type_naming_the_revision(type_id):
    """As a 1.0 device would answer: the type is not in its catalogue."""
    mt = REGISTRY[type_id]
    flags = int(mt.flags)
    wire = encode(mt.cls(**_zeroes(mt)), 3, Flags(flags), REVISION_1_1)
    (good,) = Decoder().feed(wire)
    assert isinstance(good, Frame) and type(good.message) is mt.cls
    with pytest.raises(ValueError, match=r"protocol 1\.1 \(revision 2\) and later"):
        encode(good.message, 3, Flags(flags), REVISION_1_0)
    (err,) = Decoder().feed(encode_frame(type_id, flags, 3, encode_payload(
        good.message, REVISION_1_1)[1], REVISION_1_0))
    assert isinstance(err, FrameError) and err.kind is FrameErrorKind.UNKNOWN_TYPE
    assert f"{mt.name} (0x{type_id:02X}) is protocol 1.1" in err.detail
    assert "this frame is revision 1" in err.detail


def _zeroes(mt) -> dict:
    """Each field of a message without a default at zero (an empty list, 0)."""
    out = {}
    for f in dataclasses.fields(mt.cls):
        if f.default is not dataclasses.MISSING:
            continue
        out[f.name] = () if f.type == "tuple" else 0
    return out


def test_commands_of_1_1_are_not_commands_of_1_0():
    assert set(COMMAND_SINCE) == {Command.RESET, Command.FACTORY_DEFAULTS}
    assert Command.RESET not in commands_in(REVISION_1_0)
    assert set(commands_in(REVISION_1_1)) == set(Command)
    assert commands_in(REVISION_1_0) == tuple(c for c in Command if c.value <= 6)


def test_a_1_0_measurement_frame_is_unchanged_and_reads_as_no_test_and_no_pack_sensor():
    frame = MeasurementFrame(7, 1.0, -2.0, 14.6, 5, CELLS_V, TEMPS_C)
    old = encode_payload(frame, REVISION_1_0)[1]
    assert len(old) == 2 + 21 + 4 * 4 + 2 + 4 + 2  # header fields, cells, sensors, no bleed
    (got,) = Decoder().feed(encode(frame, 1, revision=REVISION_1_0))
    assert math.isnan(got.message.pack_voltage_v) and got.message.open_wire_test_v is None


def test_a_1_1_measurement_frame_carries_the_open_wire_test_and_the_pack_voltage():
    test_v = np.array([3.5, 0.25, 7.25, 3.75], np.float32)
    frame = MeasurementFrame(7, 1.0, -2.0, 14.5, 5, CELLS_V, TEMPS_C, None, 14.625, test_v)
    (got,) = Decoder().feed(encode(frame, 1, revision=REVISION_1_1))
    assert same(got.message, frame)
    assert got.message.pack_voltage_v == 14.625
    assert np.array_equal(got.message.open_wire_test_v, test_v)
    no_test = MeasurementFrame(7, 1.0, -2.0, 14.5, 5, CELLS_V, TEMPS_C, None, 14.625)
    payload = encode_payload(no_test, REVISION_1_1)[1]
    assert payload.endswith(b"\x00\x00")  # n_open_wire = 0: no test run
    (got,) = Decoder().feed(encode(no_test, 1, revision=REVISION_1_1))
    assert got.message.open_wire_test_v is None


def test_an_actuation_frame_asks_for_the_open_wire_test_only_in_1_1():
    frame = ActuationFrame(3, 1.0, 3, 5, 1, 1.5, 4.5, 50.0, np.zeros(4, bool),
                           charge_voltage_limit_v=16.0, discharge_voltage_limit_v=9.5,
                           warning_bitmap=1, alarm_bitmap=0, fault_level_bitmap=0,
                           rig_requests=RIG_REQUEST_BITS["open_wire_test"])
    (new,) = Decoder().feed(encode(frame, 1, revision=REVISION_1_1))
    assert same(new.message, frame)
    (old,) = Decoder().feed(encode(frame, 1, revision=REVISION_1_0))
    assert old.message.rig_requests == 0 and math.isnan(old.message.charge_voltage_limit_v)
    assert old.header.length == len(encode_payload(frame, REVISION_1_0)[1]) == 33


def test_a_fault_event_is_an_event_of_fixed_size():
    ev = FaultEvent(17, 3, 12.5, math.nan, 0, 1, 1, 2, 4.0625)
    (got,) = Decoder().feed(encode(ev, 43, revision=REVISION_1_1))
    assert got.header.flags == Flags.EVENT and BY_CLASS[FaultEvent].flags is Flags.EVENT
    assert same(got.message, ev) and got.header.length == 33


def test_the_spec_says_what_1_1_added_and_when_each_command_came():
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    assert "## Events, time and restarts" in text and "## Rig request bits" in text
    for cmd in Command:
        since = "1.1" if cmd in COMMAND_SINCE else "1.0"
        row = next(line for line in text.splitlines()
                   if line.startswith(f"| {cmd.value} | {cmd.name} |"))
        assert row.endswith(f"| {since} |"), row
    assert "GetConfigLog | the persistent store could not be read" in text
