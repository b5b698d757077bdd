"""Every message type survives encode -> bytes split anywhere -> Decoder -> decode unchanged.

The strategies are derived from the construct definitions themselves (one mechanism for all
types), so a new message type or field is covered without writing a new strategy.
"""

from __future__ import annotations

import dataclasses
import struct

import construct as c
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.codec import Decoder, Frame, encode
from protocol.fields import BitArray, FloatArray
from protocol.framing import MAX_PAYLOAD_BYTES, Flags, FrameError, FrameErrorKind, encode_frame
from protocol.messages import (
    BY_CLASS,
    REGISTRY,
    CellVoltages,
    FaultLogPage,
    MeasurementFrame,
    Nack,
    Status,
    encode_payload,
    same,
)

MAX_LIST = 4  # elements of a prefixed list: enough to show order and nesting, small payloads
MAX_TEXT_BYTES = 255


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 fits in `max_bytes`."""
    return text.encode()[:max_bytes].decode("utf8", "ignore")


def int_range(fmt: str) -> tuple[int, int]:
    bits = 8 * struct.calcsize(fmt)
    if fmt[-1].islower():  # b h i q: signed
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def strategy(con: c.Construct) -> st.SearchStrategy:
    """Valid values for a construct field, from its type."""
    if isinstance(con, c.Renamed):
        return strategy(con.subcon)
    if isinstance(con, FloatArray):
        return hnp.arrays(np.float32, st.integers(0, con.limit), elements=st.floats(width=32))
    if isinstance(con, BitArray):  # a count of 0 reads back as None: "not reported"
        return st.none() | hnp.arrays(np.bool_, st.integers(1, con.limit))
    if isinstance(con, c.FormatField):
        if con.fmtstr[-1] == "f":
            return st.floats(width=32)
        if con.fmtstr[-1] == "d":
            return st.floats()
        return st.integers(*int_range(con.fmtstr))
    if isinstance(con, type(c.Flag)):
        return st.booleans()
    if isinstance(con, c.StringEncoded):  # PascalString: length prefix, then the text
        _, top = int_range(con.subcon.lengthfield.fmtstr)
        limit = min(top, MAX_TEXT_BYTES)
        return st.text(max_size=limit).map(lambda s: truncate_utf8(s, limit))
    if isinstance(con, c.FocusedSeq):  # PrefixedArray: count, then the items
        items = next(sc.subcon for sc in con.subcons if sc.name == con.parsebuildfrom)
        return st.lists(strategy(items.subcon), max_size=MAX_LIST).map(tuple)
    if isinstance(con, c.Struct):
        return struct_strategy(con, [sc.name for sc in con.subcons])
    raise TypeError(f"no strategy for {con!r}: teach tests/protocol/test_messages.py")


def struct_strategy(struct_: c.Struct, names: list[str]) -> st.SearchStrategy:
    """Dicts of the named fields; a Switch draws its case first and fixes its key field."""
    subcons = {sc.name: sc.subcon for sc in struct_.subcons if sc.name in names}
    switches = {n: sc for n, sc in subcons.items() if isinstance(sc, c.Switch)}
    if not switches:
        return st.fixed_dictionaries({n: strategy(sc) for n, sc in subcons.items()})
    (name, switch), = switches.items()  # one per struct is all the catalogue uses
    key = switch.keyfunc({n: n for n in names})  # this.kind -> "kind"
    rest = {n: strategy(sc) for n, sc in subcons.items() if n not in (name, key)}
    return st.one_of([st.fixed_dictionaries({**rest, key: st.just(k), name: strategy(case)})
                      for k, case in switch.cases.items()])


def message_strategy(type_id: int) -> st.SearchStrategy:
    """Instances of a message type; count fields are the encoder's, not the message's."""
    mt = REGISTRY[type_id]
    names = [f.name for f in dataclasses.fields(mt.cls)]
    return struct_strategy(mt.struct, names).map(lambda d: mt.cls(**d))


def fits(msg: object) -> bool:
    return len(encode_payload(msg)[1]) <= MAX_PAYLOAD_BYTES


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@pytest.mark.parametrize("type_id", sorted(REGISTRY), ids=lambda t: REGISTRY[t].name)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_round_trips(type_id: int, data: st.DataObject):
    msg = data.draw(message_strategy(type_id), label="message")
    assume(fits(msg))
    seq = data.draw(st.integers(0, 0xFFFF), label="seq")
    wire = encode(msg, seq)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6), label="cuts")
    decoder = Decoder()
    out = [item for chunk in split(wire, cuts) for item in decoder.feed(chunk)]
    assert len(out) == 1 and isinstance(out[0], Frame), out
    frame = out[0]
    assert frame.header.seq == seq and frame.header.msg_type == type_id
    assert same(frame.message, msg), (frame.message, msg)
    assert decoder.frames.buffered == 0


@pytest.mark.parametrize("type_id", sorted(REGISTRY), ids=lambda t: REGISTRY[t].name)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_frame_carries_the_type_flag(type_id: int, data: st.DataObject):
    """A request asks for an answer, a response and an event do not; a Nack says ERROR."""
    mt = REGISTRY[type_id]
    msg = data.draw(message_strategy(type_id))
    assume(fits(msg))
    (frame,) = Decoder().feed(encode(msg, 3))
    expected = mt.flags | (Flags.ERROR if mt.cls is Nack else 0)
    assert frame.header.flags == expected
    assert bin(int(mt.flags)).count("1") == 1 and mt.flags in (Flags.REQUEST, Flags.RESPONSE,
                                                              Flags.EVENT)


def test_explicit_flags_override_the_default():
    """A subscribed response goes out as an EVENT; the flags travel as given."""
    msg = CellVoltages(np.array([3.1, 3.2], np.float32))
    (frame,) = Decoder().feed(encode(msg, 9, Flags.EVENT))
    assert frame.header.flags == Flags.EVENT


def test_registry_is_consistent():
    """One type id per class, and each class knows its id."""
    assert len({mt.cls for mt in REGISTRY.values()}) == len(REGISTRY)
    for type_id, mt in REGISTRY.items():
        assert BY_CLASS[mt.cls] is mt and mt.type_id == type_id and 0 < type_id < 0x100
        assert mt.doc, f"{mt.name} has no docstring: the spec prints it"


def test_same_treats_nan_as_equal_also_inside_nested_fields():
    entry = {"t_s": 1.0, "code": 1, "level": 1, "action": 1, "index": -1,
             "value": float("nan"), "state": 0, "soc_pct": 50.0}
    a = FaultLogPage(1, 0, 0, (entry,))
    (frame,) = Decoder().feed(encode(a, 1))
    assert same(frame.message, a)
    assert not same(frame.message, FaultLogPage(1, 0, 0, ({**entry, "value": 1.0},)))


def test_same_tells_arrays_and_missing_arrays_apart():
    base = dict(rig_seq=1, rig_time_s=0.0, current_a=0.0, bus_voltage_v=0.0, contactors=0,
                cell_voltage_v=np.array([3.0, np.nan], np.float32),
                temperature_c=np.zeros(1, np.float32))
    a = MeasurementFrame(**base)
    assert same(a, MeasurementFrame(**base))
    assert not same(a, MeasurementFrame(**base, balancing=np.array([True, False])))
    assert not same(a, MeasurementFrame(**{**base, "cell_voltage_v": np.array([3.0, 4.0])}))
    assert not same(a, CellVoltages(np.zeros(2, np.float32)))


def test_bit_arrays_pack_least_significant_bit_first():
    """The bleed mask on the wire: cell 0 in bit 0 of the first byte, padded to whole bytes."""
    mask = np.zeros(10, bool)
    mask[[0, 3, 9]] = True
    msg = REGISTRY[0x0C].cls(mode=1, mask=mask)
    _, payload = encode_payload(msg)
    assert payload == bytes([1, 10, 0, 0b0000_1001, 0b0000_0010])


def test_float_arrays_are_float32_little_endian():
    _, payload = encode_payload(CellVoltages(np.array([1.0, -2.5])))
    assert payload == struct.pack("<H2f", 2, 1.0, -2.5)


@settings(max_examples=20)
@given(msg=message_strategy(0x04))
def test_status_layout_is_fixed_size(msg: Status):
    """Status has no variable field: its payload size is pinned so a layout change shows
    (72 bytes, and 5 appended for the store: its bits and failed saves)."""
    assert len(encode_payload(msg)[1]) == REGISTRY[0x04].struct.sizeof() == 85


@pytest.mark.parametrize("type_id", sorted(REGISTRY), ids=lambda t: REGISTRY[t].name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_cut_or_padded_payload_is_bad_payload(type_id: int, data: st.DataObject):
    """A good CRC over a payload that is too short (even inside a string) or too long is a
    BAD_PAYLOAD error naming the type: never an exception, never a shorter message."""
    msg = data.draw(message_strategy(type_id), label="message")
    assume(fits(msg))
    _, payload = encode_payload(msg)
    if payload:
        cut = data.draw(st.integers(0, len(payload) - 1), label="cut")
        wrong = payload[:cut]
    else:
        wrong = data.draw(st.binary(min_size=1, max_size=3), label="extra")
    if data.draw(st.booleans(), label="pad instead") and len(payload) < MAX_PAYLOAD_BYTES:
        wrong = payload + b"\x00"
    (err,) = Decoder().feed(encode_frame(type_id, int(REGISTRY[type_id].flags), 5, wrong))
    assert isinstance(err, FrameError) and err.kind is FrameErrorKind.BAD_PAYLOAD, err
    assert err.detail.startswith(REGISTRY[type_id].name) and err.header.seq == 5
