"""Framing: the decoder survives any bytes, stays bounded, resynchronises at a delimiter, and
names every way a frame can be bad; the CRC and the header layout are pinned."""

from __future__ import annotations

import numpy as np
import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import framing
from protocol.codec import Decoder, Frame, encode
from protocol.framing import (
    HEADER,
    MAX_ENCODED_BYTES,
    MAX_PAYLOAD_BYTES,
    REVISION_1_0,
    REVISION_1_1,
    REVISIONS,
    FrameError,
    FrameErrorKind,
    crc32,
    encode_frame,
)
from protocol.messages import (
    REGISTRY,
    BalancingState,
    CellVoltages,
    GetStatus,
    MeasurementFrame,
    Nack,
    encode_payload,
    in_revision,
    same,
)
from tests.protocol.test_messages import fits, message_strategy

# Messages as every peer reads them (revision 1: what `encode` sends unless told).
FIRST = sorted(t for t, mt in REGISTRY.items() if REVISION_1_0 in mt.structs)
any_message = st.sampled_from(FIRST).flatmap(
    lambda t: message_strategy(t, REVISION_1_0)).filter(fits)
small_message = st.sampled_from([t for t in FIRST if REGISTRY[t].struct.subcons == []
                                 or t in (0x04, 0x0D, 0x7E, 0x7F)]).flatmap(
    lambda t: message_strategy(t, REVISION_1_0))


def reference_crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC bit by bit from its parameters, independent of zlib."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def raw(wire: bytes) -> bytes:
    """header + payload + CRC of one encoded frame."""
    assert wire.startswith(b"\x00") and wire.endswith(b"\x00") and wire.count(0) == 2
    return cobs.decode(wire[1:-1])


def wire(body: bytes) -> bytes:
    """A frame around `body` (header + payload) with a correct CRC."""
    return cobs.encode(body + crc32(body).to_bytes(4, "little")) + b"\x00"


def feed_all(data: bytes, chunks: list[int] | None = None) -> tuple[list, Decoder]:
    decoder = Decoder()
    out = []
    points = [0, *sorted(chunks or []), len(data)]
    for a, b in zip(points, points[1:], strict=False):
        out += decoder.feed(data[a:b])
        assert decoder.frames.buffered <= MAX_ENCODED_BYTES
    return out, decoder


def kinds(out: list) -> list:
    return [item.kind if isinstance(item, FrameError) else type(item).__name__ for item in out]


# --- CRC and layout -----------------------------------------------------------------------


def test_crc_check_value():
    assert crc32(b"123456789") == 0xCBF43926 == reference_crc32(b"123456789")
    assert "0xCBF43926" in framing.CRC_NAME


@given(st.binary(max_size=300))
def test_crc_matches_the_bitwise_definition(data: bytes):
    assert crc32(data) == reference_crc32(data)


@settings(max_examples=50, deadline=None)
@given(msg=any_message, seq=st.integers(0, 0xFFFF), revision=st.sampled_from(sorted(REVISIONS)))
def test_frame_is_header_payload_then_crc_of_both(msg, seq: int, revision: int):
    msg_type, payload = encode_payload(msg, revision)
    data = raw(encode(msg, seq, revision=revision))
    body, crc = data[:-4], data[-4:]
    assert body == HEADER.pack(revision, msg_type, REGISTRY[msg_type].flags
                               | (framing.Flags.ERROR if isinstance(msg, Nack) else 0),
                               seq, len(payload)) + payload
    assert int.from_bytes(crc, "little") == reference_crc32(body)


def test_get_status_frame_is_pinned():
    """Worked by hand from the spec: header 01 03 01 0100 0000 (revision 1, GetStatus,
    REQUEST, seq 1 LE, length 0 LE), CRC-32 LE 0x3853E8B1; COBS: 05|01 03 01 01, 01, 01,
    05|b1 e8 53 38; then the delimiter. Revision 2 differs in the first byte (and the CRC)."""
    header = bytes.fromhex("01030101000000")
    assert reference_crc32(header) == 0x3853E8B1
    assert encode(GetStatus(), 1).hex(" ") == "00 05 01 03 01 01 01 01 05 b1 e8 53 38 00"
    assert encode(GetStatus(), 1, revision=REVISION_1_0) == encode(GetStatus(), 1)
    crc = reference_crc32(bytes.fromhex("02030101000000")).to_bytes(4, "little")
    assert encode(GetStatus(), 1, revision=REVISION_1_1) == (
        b"\x00\x05\x02\x03\x01\x01\x01\x01\x05" + crc + b"\x00")


def test_zero_bytes_never_appear_inside_a_frame():
    """A payload full of zeros (and long enough for several COBS blocks) still has exactly
    two zeros on the wire: the delimiters at either end."""
    msg = CellVoltages(np.zeros(200, np.float32))
    data = encode(msg, 0)
    assert data.count(0) == 2 and data[0] == 0 and data[-1] == 0
    assert len(data) <= len(raw(data)) + len(raw(data)) // 254 + 3
    (frame,) = Decoder().feed(data)
    assert same(frame.message, msg)


def test_seq_wraps_to_16_bits():
    (frame,) = Decoder().feed(encode(GetStatus(), 0x1_0005))
    assert frame.header.seq == 5


# --- the encoder refuses what the decoder would refuse ----------------------------------------


def test_encode_refuses_an_oversize_payload():
    with pytest.raises(ValueError, match=f"at most {MAX_PAYLOAD_BYTES}"):
        encode(Nack(0x13, 7, "x" * MAX_PAYLOAD_BYTES), 1)
    with pytest.raises(ValueError, match=f"at most {MAX_PAYLOAD_BYTES}"):
        encode_frame(0x04, 0x02, 1, bytes(MAX_PAYLOAD_BYTES + 1))


@pytest.mark.parametrize("msg", [CellVoltages(np.zeros(513, np.float32)),
                                 BalancingState(1, np.ones(513, bool))],
                         ids=["513 cells", "513 bleed bits"])
def test_encode_refuses_more_than_512_cells(msg):
    with pytest.raises(Exception, match="513 elements; at most 512"):
        encode(msg, 1)


def test_largest_measurement_fits():
    """512 cells, 256 sensors and a 512-bit bleed mask: the biggest frame the limits allow."""
    msg = MeasurementFrame(1, 0.5, -3.0, 50.0, 7, np.full(512, 3.3, np.float32),
                           np.full(256, 25.0, np.float32), np.ones(512, bool))
    (frame,) = Decoder().feed(encode(msg, 1))
    assert same(frame.message, msg) and frame.header.length <= MAX_PAYLOAD_BYTES


# --- any bytes in: frames or typed errors out, bounded, never raising -----------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=6000), cuts=st.lists(st.integers(0, 6000), max_size=5))
def test_any_bytes_give_frames_or_errors(data: bytes, cuts: list[int]):
    out, _ = feed_all(data, [min(c, len(data)) for c in cuts])
    assert all(isinstance(item, Frame | FrameError) for item in out)


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.binary(max_size=200) | small_message.map(lambda m: encode(m, 1)),
                      max_size=8),
       cuts=st.lists(st.integers(0, 2000), max_size=5))
def test_frames_mixed_with_garbage(parts: list[bytes], cuts: list[int]):
    data = b"".join(parts)
    out, _ = feed_all(data, [min(c, len(data)) for c in cuts])
    assert all(isinstance(item, Frame | FrameError) for item in out)


@settings(max_examples=150, deadline=None)
@given(garbage=st.binary(max_size=5000), msg=any_message, seq=st.integers(0, 0xFFFF),
       cuts=st.lists(st.integers(0, 10000), max_size=4))
def test_resynchronises_after_garbage_and_a_delimiter(garbage: bytes, msg, seq: int,
                                                      cuts: list[int]):
    data = garbage + b"\x00" + encode(msg, seq)
    out, decoder = feed_all(data, [min(c, len(data)) for c in cuts])
    assert isinstance(out[-1], Frame), kinds(out)
    assert out[-1].header.seq == seq and same(out[-1].message, msg)
    assert decoder.frames.buffered == 0


@settings(max_examples=300, deadline=None)
@given(msg=small_message, seq=st.integers(0, 0xFFFF), data=st.data())
def test_a_single_bit_flip_is_never_a_different_frame(msg, seq: int, data):
    frame = bytearray(encode(msg, seq))
    bit = data.draw(st.integers(0, 8 * len(frame) - 1), label="bit")
    frame[bit // 8] ^= 1 << (bit % 8)
    out, _ = feed_all(bytes(frame) + b"\x00" + encode(msg, seq))  # a good frame follows
    assert all(isinstance(item, Frame | FrameError) for item in out)
    frames = [item for item in out if isinstance(item, Frame)]
    assert frames and all(f.header.seq == seq and same(f.message, msg) for f in frames)
    assert len(frames) <= 2 and isinstance(out[-1], Frame)


def test_empty_runs_are_padding():
    out, _ = feed_all(b"\x00\x00" + encode(GetStatus(), 1) + b"\x00\x00\x00")
    assert kinds(out) == ["Frame"]


# --- every error kind from a crafted input ------------------------------------------------


def status_body(length_delta: int = 0, revision: int = REVISION_1_0, msg_type: int = 0x03,
                payload: bytes = b"") -> bytes:
    return HEADER.pack(revision, msg_type, 0x01, 7, len(payload) + length_delta) + payload


def test_bad_cobs():
    (err,) = Decoder().feed(b"\x05\x01\x02\x00")  # a block of 4 with 2 bytes left
    assert err.kind is FrameErrorKind.BAD_COBS and err.header is None


def test_too_short():
    (err,) = Decoder().feed(cobs.encode(b"\x01\x03\x01\x01\x00\x00") + b"\x00")
    assert err.kind is FrameErrorKind.TOO_SHORT


def test_bad_crc_on_any_flipped_byte():
    good = raw(encode(Nack(0x13, 7, "no"), 3))
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x5A
        (err,) = Decoder().feed(cobs.encode(bytes(bad)) + b"\x00")
        assert err.kind is FrameErrorKind.BAD_CRC, i
        assert err.header is None  # a header under a bad CRC is not to be trusted


@pytest.mark.parametrize("revision", [0, max(REVISIONS) + 1, 0xFF])
def test_unsupported_revision(revision: int):
    (err,) = Decoder().feed(wire(status_body(revision=revision)))
    assert err.kind is FrameErrorKind.UNSUPPORTED_VERSION and err.header.revision == revision
    assert err.header.seq == 7 and "1 (1.0) and 2 (1.1)" in err.detail


@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_every_revision_is_read_in_its_own_layout(revision: int):
    (frame,) = Decoder().feed(wire(status_body(revision=revision)))
    assert frame.header.revision == revision and isinstance(frame.message, GetStatus)
    assert all(in_revision(t, revision) for t, mt in REGISTRY.items() if mt.since <= revision)


def test_encode_refuses_a_revision_nobody_speaks():
    with pytest.raises(ValueError, match="revision 3"):
        encode_frame(0x03, 0x01, 1, b"", 3)


@pytest.mark.parametrize("delta", [1, -1, 0x100])
def test_bad_length(delta: int):
    (err,) = Decoder().feed(wire(status_body(length_delta=delta, payload=b"\x01")))
    assert err.kind is FrameErrorKind.BAD_LENGTH and err.header.seq == 7


def test_a_payload_over_the_limit_is_bad_length_though_it_arrived_whole():
    """A payload of zeros costs COBS nothing, so a frame a few bytes over 7 + 4096 + 4
    passes the buffer bound (which allows for the worst case); its length is still outside
    0..4096."""
    payload = bytes(MAX_PAYLOAD_BYTES + 5)
    data = wire(status_body(payload=payload))
    assert len(data) - 1 <= MAX_ENCODED_BYTES  # within the decoder's buffer
    (err,) = Decoder().feed(data)
    assert err.kind is FrameErrorKind.BAD_LENGTH and err.header.seq == 7
    assert err.detail == (f"GetStatus: header says {MAX_PAYLOAD_BYTES + 5} payload bytes; at "
                          "most 4096")  # `Type: problem`, as every payload error
    (ok,) = Decoder().feed(wire(status_body(payload=b"\x01" * MAX_PAYLOAD_BYTES)))
    assert ok.kind is FrameErrorKind.BAD_PAYLOAD  # as long as allowed: read, as a GetStatus


@pytest.mark.parametrize("msg_type", [0x1B, 0x55])  # CounterPage (1.1 only), no such type
def test_a_type_the_revision_lacks_is_unknown_whatever_its_length(msg_type: int):
    data = wire(status_body(msg_type=msg_type, payload=bytes(MAX_PAYLOAD_BYTES + 5)))
    (err,) = Decoder().feed(data)
    assert err.kind is FrameErrorKind.UNKNOWN_TYPE and err.header.msg_type == msg_type


@pytest.mark.parametrize("chunk", [None, 100, 4125, 1])
def test_oversize_is_reported_once_then_the_next_frame_decodes(chunk: int | None):
    data = bytes([0x55]) * 5000 + b"\x00" + encode(GetStatus(), 1)
    cuts = list(range(chunk, len(data), chunk)) if chunk else []
    out, decoder = feed_all(data, cuts)
    assert kinds(out) == [FrameErrorKind.OVERSIZE, "Frame"]
    assert out[1].header.seq == 1 and decoder.frames.buffered == 0


def test_the_leading_zero_saves_a_frame_sent_straight_after_noise():
    """The sender's leading delimiter ends the noise run, so the frame after it decodes."""
    frame = encode(GetStatus(), 1)
    out, _ = feed_all(bytes([0x55]) * 5000 + frame + frame)
    assert kinds(out) == [FrameErrorKind.OVERSIZE, "Frame", "Frame"]
    out, _ = feed_all(bytes([0x55]) * 20 + frame)
    assert kinds(out) == [FrameErrorKind.BAD_COBS, "Frame"]


def test_longest_legal_run_is_not_oversize():
    payload = bytes(range(1, 256)) * (MAX_PAYLOAD_BYTES // 255) + b"\x01" * (
        MAX_PAYLOAD_BYTES % 255)
    data = encode_frame(0x55, 0x01, 1, payload)
    assert len(data) - 2 <= MAX_ENCODED_BYTES
    (err,) = Decoder().feed(data)
    assert err.kind is FrameErrorKind.UNKNOWN_TYPE  # reached the payload: not OVERSIZE


def test_unknown_type():
    (err,) = Decoder().feed(encode_frame(0x55, 0x01, 9, b"\x01\x02"))
    assert err.kind is FrameErrorKind.UNKNOWN_TYPE
    assert err.header.msg_type == 0x55 and err.header.seq == 9  # enough to send a Nack


def payload_of(msg) -> bytes:
    return encode_payload(msg)[1]


@pytest.mark.parametrize("msg_type, payload, detail", [
    (0x7F, payload_of(Nack(1, 2, "detail"))[:-1], "Nack"),  # truncated
    (0x06, (513).to_bytes(2, "little") + bytes(4 * 513), "at most 512"),  # count over limit
    (0x06, (3).to_bytes(2, "little") + bytes(8), "CellVoltages"),  # array cut short
    (0x03, b"\x00", "left over"),  # leftover bytes
    (0x18, b"\x02\xff\xfe", "Inject"),  # not UTF-8
], ids=["truncated", "count over limit", "short array", "leftover", "bad utf8"])
def test_bad_payload(msg_type: int, payload: bytes, detail: str):
    (err,) = Decoder().feed(encode_frame(msg_type, 0x01, 4, payload))
    assert err.kind is FrameErrorKind.BAD_PAYLOAD and detail in err.detail
    assert err.header.msg_type == msg_type and err.header.seq == 4


def test_every_error_kind_is_covered_here():
    """A new FrameErrorKind needs a crafted input above."""
    assert {k.name for k in FrameErrorKind} == {
        "BAD_COBS", "TOO_SHORT", "BAD_CRC", "UNSUPPORTED_VERSION", "BAD_LENGTH", "OVERSIZE",
        "UNKNOWN_TYPE", "BAD_PAYLOAD"}


def test_decoder_accepts_bytearray_and_memoryview():
    data = encode(GetStatus(), 1)
    assert kinds(Decoder().feed(bytearray(data))) == ["Frame"]
    assert kinds(Decoder().feed(memoryview(data))) == ["Frame"]
