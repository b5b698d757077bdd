"""Every message type survives encode -> bytes split anywhere -> Decoder -> decode unchanged,
in every protocol revision that has it.

The strategies are derived from the construct definitions themselves (one mechanism for all
types), so a new message type or field is covered without writing a new strategy.
"""

from __future__ import annotations

import dataclasses
import math
import struct

import construct as c
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.codec import Decoder, Frame, encode
from protocol.fields import BitArray, FloatArray, OptionalFloatArray
from protocol.framing import (
    LATEST_REVISION,
    MAX_PAYLOAD_BYTES,
    REVISION_1_0,
    REVISION_1_1,
    REVISIONS,
    Flags,
    FrameError,
    FrameErrorKind,
    encode_frame,
)
from protocol.messages import (
    BY_CLASS,
    CODECS,
    REGISTRY,
    CellVoltages,
    DeviceInfo,
    ErrorCode,
    FaultLogPage,
    MeasurementFrame,
    Nack,
    ParameterList,
    Status,
    encode_payload,
    same,
)
from protocol.revisions import since

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
    if isinstance(con, OptionalFloatArray):  # like a BitArray: a count of 0 reads as None
        return st.none() | hnp.arrays(np.float32, st.integers(1, con.limit),
                                      elements=st.floats(width=32))
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


def message_strategy(type_id: int, revision: int = LATEST_REVISION) -> st.SearchStrategy:
    """Instances of a message type with the fields `revision` carries and the others at
    their defaults (in list elements too: as a peer of that revision reads them); count
    fields are the encoder's, not the message's."""
    mt = REGISTRY[type_id]
    names = [f.name for f in dataclasses.fields(mt.cls)]
    defaults = CODECS[type_id, revision].element_defaults
    return struct_strategy(mt.structs[revision], names).map(lambda d: mt.cls(**{
        **d, **{name: tuple(item | late for item in d[name]) for name, late in defaults.items()}}))


def fits(msg: object, revision: int = LATEST_REVISION) -> bool:
    return len(encode_payload(msg, revision)[1]) <= MAX_PAYLOAD_BYTES


TYPES_BY_REVISION = sorted(CODECS)


def type_and_revision(key: tuple[int, int]) -> str:
    return f"{REGISTRY[key[0]].name}-{REVISIONS[key[1]]}"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@pytest.mark.parametrize("key", TYPES_BY_REVISION, ids=type_and_revision)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_round_trips_in_every_revision(key: tuple[int, int], data: st.DataObject):
    type_id, revision = key
    msg = data.draw(message_strategy(type_id, revision), label="message")
    assume(fits(msg, revision))
    seq = data.draw(st.integers(0, 0xFFFF), label="seq")
    wire = encode(msg, seq, revision=revision)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6), label="cuts")
    decoder = Decoder()
    out = [item for chunk in split(wire, cuts) for item in decoder.feed(chunk)]
    assert len(out) == 1 and isinstance(out[0], Frame), out
    frame = out[0]
    assert frame.header.seq == seq and frame.header.msg_type == type_id
    assert frame.header.revision == revision
    assert same(frame.message, msg), (frame.message, msg)
    assert decoder.frames.buffered == 0


@pytest.mark.parametrize("type_id", sorted(REGISTRY), ids=lambda t: REGISTRY[t].name)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_older_revision_carries_exactly_its_own_fields(type_id: int, data: st.DataObject):
    """A message sent in an older revision arrives with the fields that revision has and
    every later field at its default; its payload is the newer one's leading bytes when
    the type has no lists (a list's elements grow too)."""
    mt = REGISTRY[type_id]
    msg = data.draw(message_strategy(type_id), label="message")
    assume(fits(msg))
    newest = encode_payload(msg, LATEST_REVISION)[1]
    for revision in mt.structs:
        (frame,) = Decoder().feed(encode(msg, 1, revision=revision))
        carried = set(CODECS[type_id, revision].names)
        for f in dataclasses.fields(mt.cls):
            got = getattr(frame.message, f.name)
            if f.name not in carried:
                assert same_value(got, f.default), (f.name, got)
        if not CODECS[type_id, revision].element_defaults:
            assert newest.startswith(encode_payload(msg, revision)[1])


def same_value(x: object, y: object) -> bool:
    return x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)


@pytest.mark.parametrize("type_id", sorted(REGISTRY), ids=lambda t: REGISTRY[t].name)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_frame_carries_the_type_flag(type_id: int, data: st.DataObject):
    """A request asks for an answer, a response and an event do not; a Nack says ERROR."""
    mt = REGISTRY[type_id]
    msg = data.draw(message_strategy(type_id))
    assume(fits(msg))
    (frame,) = Decoder().feed(encode(msg, 3, revision=LATEST_REVISION))
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
             "value": float("nan"), "state": 0, "soc_pct": 50.0, "boot": 2,
             "utc_s": float("nan")}
    a = FaultLogPage(1, 0, 0, (entry,))
    (frame,) = Decoder().feed(encode(a, 1, revision=LATEST_REVISION))
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


# The Status of the first 1.0 spec (commit d385d93), field by field: what a 1.0 client reads.
STATUS_1_0 = (("time_s", "d"), ("state", "B"), ("contactors", "B"), ("fault_bitmap", "I"),
              ("charge_limit_a", "f"), ("discharge_limit_a", "f"), ("pack_voltage_v", "f"),
              ("current_a", "f"), ("soc_pct", "f"), ("soh_pct", "f"), ("remaining_wh", "f"),
              ("runtime_s", "f"), ("cell_v_min", "f"), ("cell_v_min_index", "H"),
              ("cell_v_max", "f"), ("cell_v_max_index", "H"), ("temp_c_min", "f"),
              ("temp_c_min_index", "H"), ("temp_c_max", "f"), ("temp_c_max_index", "H"),
              ("balancing_count", "H"))


@settings(max_examples=20)
@given(msg=message_strategy(0x04))
def test_a_1_0_client_gets_the_1_0_status_byte_for_byte(msg: Status):
    """Revision 1 is the first 1.0 layout, whatever 1.1 appends; 1.1 only appends."""
    layout = struct.Struct("<" + "".join(code for _, code in STATUS_1_0))
    values = [getattr(msg, name) for name, _ in STATUS_1_0]
    floats = [np.float32(v) if code == "f" else v for v, (_, code) in zip(values, STATUS_1_0,
                                                                         strict=True)]
    assert encode_payload(msg, REVISION_1_0)[1] == layout.pack(*floats)
    assert len(encode_payload(msg, REVISION_1_0)[1]) == layout.size
    newer = encode_payload(msg, REVISION_1_1)[1]
    assert newer[:layout.size] == layout.pack(*floats)
    assert len(newer) == REGISTRY[0x04].structs[REVISION_1_1].sizeof()


def test_status_1_1_appends_the_levels_bus_voltage_and_feedback():
    fields = [sc.name for sc in REGISTRY[0x04].structs[REVISION_1_1].subcons]
    assert fields[:len(STATUS_1_0)] == [name for name, _ in STATUS_1_0]
    assert fields[len(STATUS_1_0):] == [
        "store", "save_failures", "charge_voltage_limit_v", "discharge_voltage_limit_v",
        "warning_bitmap", "alarm_bitmap", "fault_level_bitmap", "bus_voltage_v",
        "contactor_feedback"]


def test_a_1_0_status_reads_as_unknown_where_1_1_added_fields():
    (frame,) = Decoder().feed(encode(Status(*[1.0, 3, 5, 7], *[1.5] * 8, 3.3, 1, 3.4, 2,
                                            25.0, 0, 26.0, 1, 2, store=1, save_failures=4,
                                            warning_bitmap=2, bus_voltage_v=50.0,
                                            contactor_feedback=5), 1, revision=REVISION_1_0))
    s = frame.message
    assert (s.store, s.save_failures, s.warning_bitmap, s.contactor_feedback) == (0, 0, 0, 0)
    assert math.isnan(s.bus_voltage_v) and math.isnan(s.charge_voltage_limit_v)
    assert (s.fault_bitmap, s.balancing_count) == (7, 2)


def test_parameter_list_1_0_entries_are_the_1_0_layout_and_read_back_with_defaults():
    entry = {"param_id": 0x0101, "kind": 0, "name": "limits.max_charge_a", "unit": "A",
             "choices": (), "min": 0.0, "max": 1.5, "open_ends": 0, "default": 1.5,
             "access": 3, "persisted": True}
    page = ParameterList(1, 0, (entry,))
    name = b"limits.max_charge_a"
    assert encode_payload(page, REVISION_1_0)[1] == (
        struct.pack("<HHBHB", 1, 0, 1, 0x0101, 0) + bytes([len(name)]) + name + b"\x01A\x00")
    (frame,) = Decoder().feed(encode(page, 1, revision=REVISION_1_0))
    (got,) = frame.message.entries
    assert got["name"] == entry["name"] and got["access"] == 0 and not got["persisted"]
    assert math.isnan(got["min"]) and math.isnan(got["max"]) and math.isnan(got["default"])
    (frame,) = Decoder().feed(encode(page, 1, revision=REVISION_1_1))
    assert same(frame.message, page)


def test_device_info_identity_is_1_1():
    info = DeviceInfo(2, "0.1.0", "na-nfm", 0, 16, 1, 4, 3.0, 15, pack_id="rack-7",
                      serial="rack-7-sim", firmware_build="v0.1-3-gabc", config_schema_version=1,
                      max_page_entries=32, protocol_revisions=(1, 2), message_types=(1, 2))
    (frame,) = Decoder().feed(encode(info, 1, revision=REVISION_1_1))
    assert same(frame.message, info)
    (frame,) = Decoder().feed(encode(info, 1, revision=REVISION_1_0))
    assert (frame.message.pack_id, frame.message.protocol_revisions) == ("", ())
    assert frame.message.capabilities == 15


# --- the revision mechanism --------------------------------------------------------------

@pytest.fixture
def scratch_catalogue():
    """The catalogue as it was after the test, whatever the test registered."""
    import protocol.messages as pm

    kept = [(d, dict(d)) for d in (pm.REGISTRY, pm.BY_CLASS, pm.CODECS)]
    yield pm
    for live, saved in kept:
        live.clear()
        live.update(saved)


def test_a_type_of_a_later_revision_is_unknown_in_an_older_one(scratch_catalogue):
    """A 1.0 device does not know a 1.1 type: a revision-1 frame of it is UNKNOWN_TYPE, and
    an encoder refuses to lay it out in revision 1."""
    pm = scratch_catalogue

    @pm.message(0x60, Flags.REQUEST, "when_s" / pm.F64, added=REVISION_1_1)
    @pm.frozen
    class Later:
        """A request 1.1 added."""

        when_s: float

    mt = pm.REGISTRY[0x60]
    pm.CODECS.update({(0x60, r): pm._codec(mt, r) for r in mt.structs})
    assert set(mt.structs) == {REVISION_1_1}
    (frame,) = Decoder().feed(encode(Later(2.5), 3, revision=REVISION_1_1))
    assert frame.message.when_s == 2.5
    with pytest.raises(ValueError, match="protocol 1.1"):
        encode(Later(2.5), 3, revision=REVISION_1_0)
    (err,) = Decoder().feed(encode_frame(0x60, int(Flags.REQUEST), 4, bytes(8), REVISION_1_0))
    assert err.kind is FrameErrorKind.UNKNOWN_TYPE and "Later" in err.detail
    assert err.header.seq == 4


def test_a_field_added_later_must_come_last_and_have_a_default(scratch_catalogue):
    pm = scratch_catalogue

    with pytest.raises(ValueError, match="add fields at the end"):
        pm.message(0x61, Flags.EVENT, since(REVISION_1_1, "a" / pm.U8), "b" / pm.U8)(
            dataclasses.make_dataclass("Bad", [("a", int, dataclasses.field(default=0)),
                                               ("b", int, dataclasses.field(default=0))]))
    with pytest.raises(ValueError, match="without a default"):
        pm.message(0x61, Flags.EVENT, "a" / pm.U8, since(REVISION_1_1, "b" / pm.U8))(
            dataclasses.make_dataclass("Bad", [("a", int), ("b", int)]))
    assert 0x61 not in pm.REGISTRY


def test_one_code_space_for_nacks_and_decoder_errors():
    """A name the Nack's ErrorCode and the decoder's FrameErrorKind share has one number;
    a number has one name; decoder-only kinds sit above the Nack codes (1..31)."""
    for kind in FrameErrorKind:
        if kind.name in ErrorCode.__members__:
            assert ErrorCode[kind.name] == kind, kind
        else:
            assert kind >= 32 and kind not in set(ErrorCode), kind
    assert all(1 <= code < 32 for code in ErrorCode)


@pytest.mark.parametrize("key", TYPES_BY_REVISION, ids=type_and_revision)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_cut_or_padded_payload_is_bad_payload(key: tuple[int, int], data: st.DataObject):
    """A good CRC over a payload that is too short (even inside a string) or too long for
    the frame's revision is a BAD_PAYLOAD error naming the type: never an exception, never
    a shorter message (a newer, longer layout is not cut to the older one)."""
    type_id, revision = key
    msg = data.draw(message_strategy(type_id, revision), label="message")
    assume(fits(msg, revision))
    _, payload = encode_payload(msg, revision)
    if payload:
        cut = data.draw(st.integers(0, len(payload) - 1), label="cut")
        wrong = payload[:cut]
    else:
        wrong = data.draw(st.binary(min_size=1, max_size=3), label="extra")
    if data.draw(st.booleans(), label="pad instead") and len(payload) < MAX_PAYLOAD_BYTES:
        wrong = payload + b"\x00"
    if revision < LATEST_REVISION and data.draw(st.booleans(), label="a newer layout"):
        newer = encode_payload(msg, LATEST_REVISION)[1]
        assume(newer != payload)
        wrong = newer
    (err,) = Decoder().feed(encode_frame(type_id, int(REGISTRY[type_id].flags), 5, wrong,
                                         revision))
    assert isinstance(err, FrameError) and err.kind is FrameErrorKind.BAD_PAYLOAD, err
    assert err.detail.startswith(REGISTRY[type_id].name) and err.header.seq == 5
