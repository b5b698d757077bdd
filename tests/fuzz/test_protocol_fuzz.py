"""Fuzzing the protocol decoder (`protocol.codec.Decoder` over `protocol.framing`).

tests/protocol already feeds it arbitrary bytes, garbage + delimiter + frame, single bit
flips and cut or padded payloads. Here: how a stream is split never changes what comes
out; mutated and spliced frames give typed errors and never a frame that was not sent;
a frame sent after any garbage (a cut frame, a run just past the size limit) decodes
without an extra delimiter, and garbage never gives more errors than it has delimiters;
any payload under a good CRC is a message that encodes back, or BAD_PAYLOAD naming its type.
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from protocol.framing import (
    MAX_ENCODED_BYTES,
    MAX_PAYLOAD_BYTES,
    REVISIONS,
    FrameError,
    FrameErrorKind,
    encode_frame,
)
from tests.fuzz.mutations import mutated, spliced
from tests.protocol.test_framing import any_message, small_message
from tests.protocol.test_messages import fits, message_strategy

# Errors found before the CRC is checked carry no header (it is not to be trusted); the
# others were read from a frame whose CRC held, and carry it (enough to send a NACK).
NO_HEADER = {FrameErrorKind.BAD_COBS, FrameErrorKind.TOO_SHORT, FrameErrorKind.BAD_CRC,
             FrameErrorKind.OVERSIZE}
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

message = small_message | any_message
seq = st.integers(0, 0xFFFF)
wire = st.tuples(message, seq).map(lambda ms: encode(*ms))


def canon(item: Frame | FrameError) -> tuple:
    """A decoded item as plain comparable data (messages hold arrays: `==` will not do)."""
    if isinstance(item, Frame):
        return ("frame", item.header, pm.encode_payload(item.message))
    return (item.kind, item.detail, item.header)


def feed(data: bytes, cuts: list[int] = ()) -> tuple[list, Decoder]:
    """Everything `data` decodes to, fed in pieces split at `cuts`; checks the decoder's
    buffer stays bounded and every item is a frame or a well-formed typed error."""
    decoder = Decoder()
    out: list = []
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    for a, b in zip(points, points[1:], strict=False):
        out += decoder.feed(data[a:b])
        assert decoder.frames.buffered <= MAX_ENCODED_BYTES
    for item in out:
        if isinstance(item, FrameError):
            assert isinstance(item.kind, FrameErrorKind) and item.detail, item
            assert (item.header is None) == (item.kind in NO_HEADER), item
        else:
            assert isinstance(item, Frame), item
    return out, decoder


def part(frames: list[bytes]) -> st.SearchStrategy[bytes]:
    """A piece of a stream: garbage, a good frame, or one mutated or spliced."""
    good = st.sampled_from(frames)
    return st.one_of(st.binary(max_size=120), good, good.flatmap(mutated),
                     st.tuples(good, good).flatmap(lambda ab: spliced(*ab)))


@st.composite
def stream(draw: st.DrawFn) -> bytes:
    frames = draw(st.lists(wire, min_size=1, max_size=3))
    return b"".join(draw(st.lists(part(frames), max_size=6)))


@FUZZ
@given(data=stream(), cuts=st.lists(st.integers(0, 4000), max_size=12),
       bytewise=st.booleans())
def test_how_a_stream_is_split_never_changes_what_it_decodes_to(data: bytes, cuts: list[int],
                                                                bytewise: bool):
    whole, _ = feed(data)
    if bytewise and len(data) <= 600:
        cuts = list(range(1, len(data)))
    split, _ = feed(data, cuts)
    assert [canon(i) for i in split] == [canon(i) for i in whole]


@FUZZ
@given(sent=st.lists(wire, min_size=2, max_size=2), data=st.data())
@example(sent=[encode(pm.GetStatus(), 1), encode(pm.GetInfo(), 2)], data=None)
def test_a_mutated_or_spliced_frame_is_typed_errors_never_a_frame_not_sent(sent, data):
    first, second = sent
    if data is None:  # the explicit example: a frame cut just before its closing delimiter
        bad = first[:-1]
    else:
        bad = data.draw(mutated(first) | spliced(first, second), label="bad")
    out, decoder = feed(bad + second)
    for item in out[:-1]:
        event(item.kind.name if isinstance(item, FrameError) else "decoded")
    sent_items = {canon(feed(f)[0][0]) for f in sent}
    frames = [canon(i) for i in out if isinstance(i, Frame)]
    assert set(frames) <= sent_items, (bad.hex(), frames)
    assert canon(out[-1]) == canon(feed(second)[0][0])  # the frame after it is not lost
    assert decoder.frames.buffered == 0


nonzero_run = st.integers(MAX_ENCODED_BYTES - 2, MAX_ENCODED_BYTES + 2).map(
    lambda n: b"\x55" * n)
garbage = st.one_of(
    st.binary(max_size=600),
    wire.flatmap(lambda f: st.integers(1, len(f) - 1).map(lambda n: f[:n])),  # a cut frame
    wire.flatmap(mutated).map(lambda f: f.rstrip(b"\x00")),  # no delimiter after it
    nonzero_run,  # a run just under, at, or just over the size limit
    st.tuples(st.binary(max_size=40), nonzero_run).map(b"".join))


@FUZZ
@given(noise=garbage, msg=message, n=seq, cuts=st.lists(st.integers(0, 9000), max_size=4))
def test_a_frame_after_any_garbage_decodes_and_garbage_is_bounded(noise: bytes, msg, n: int,
                                                                  cuts: list[int]):
    """The frame's own leading delimiter ends the garbage: no extra one is needed. Each
    delimiter ends at most one run, so garbage gives no more errors than it has delimiters
    (plus the run the frame's delimiter ends); an over-long run is one OVERSIZE."""
    out, decoder = feed(noise + encode(msg, n), cuts)
    last = out[-1]
    assert isinstance(last, Frame) and last.header.seq == n and pm.same(last.message, msg)
    assert len(out) - 1 <= noise.count(0) + 1
    assert decoder.frames.buffered == 0


types = st.sampled_from(sorted(pm.REGISTRY)) | st.integers(0, 255)


@st.composite
def payload_for(draw: st.DrawFn, type_id: int, revision: int) -> bytes:
    """Random bytes, or a good payload of the type in `revision`'s layout, mutated."""
    if pm.in_revision(type_id, revision) and draw(st.booleans()):
        msg = draw(message_strategy(type_id).filter(fits))
        return draw(mutated(pm.encode_payload(msg, revision)[1]))[:MAX_PAYLOAD_BYTES]
    return draw(st.binary(max_size=200))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(type_id=types, revision=st.sampled_from(sorted(REVISIONS)), n=seq, data=st.data())
def test_any_payload_under_a_good_crc_is_a_message_that_encodes_back_or_a_named_error(
        type_id: int, revision: int, n: int, data: st.DataObject):
    """In every revision; a type the revision does not have (unknown, or added later) is
    UNKNOWN_TYPE whatever its payload."""
    payload = data.draw(payload_for(type_id, revision), label="payload")
    (item,), _ = feed(encode_frame(type_id, 0x01, n, payload, revision))
    event(item.kind.name if isinstance(item, FrameError) else "decoded")
    if not pm.in_revision(type_id, revision):
        assert item.kind is FrameErrorKind.UNKNOWN_TYPE and item.header.msg_type == type_id
        assert f"0x{type_id:02X}" in item.detail
    elif isinstance(item, FrameError):
        assert item.kind is FrameErrorKind.BAD_PAYLOAD, item
        assert item.detail.startswith(pm.REGISTRY[type_id].name + ": ") and item.header.seq == n
    else:
        again = pm.encode_payload(item.message, revision)  # a decoded message is valid
        assert pm.same(pm.decode_payload(*again, revision), item.message)
