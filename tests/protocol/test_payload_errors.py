"""A payload that does not parse is described in the protocol's terms - the field and what was
wrong with it - never in the parser's (construct's or Python's) words."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import Decoder
from protocol.framing import (
    LATEST_REVISION,
    REVISION_1_0,
    Flags,
    FrameError,
    FrameErrorKind,
    encode_frame,
)
from protocol.messages import REGISTRY, encode_payload
from tests.protocol.test_messages import fits, message_strategy

# Words of the parsers and of Python, which a client written from the spec cannot act on.
PARSER_WORDS = ("unpack", "buffer", "stream", "codec", "Error in path", "(parsing)",
                "activated", "construct", "Traceback")


def detail_of(type_id: int, payload: bytes, revision: int = REVISION_1_0) -> str:
    (err,) = Decoder().feed(encode_frame(type_id, int(Flags.REQUEST), 9, payload, revision))
    assert isinstance(err, FrameError) and err.kind is FrameErrorKind.BAD_PAYLOAD, err
    return err.detail


@pytest.mark.parametrize(("type_id", "payload", "detail"), [
    (0x04, b"\x01", "Status: payload is 1 byte, expected "),
    (0x0D, b"\x01\x00\x02\x03", "GetFaultLog: payload is 4 bytes, expected 3"),
    (0x14, b"\x01", "CommandRequest: payload is 1 byte, expected 2"),
    (0x13, b"\x01\x00\x01\x00\x09", "SetConfig: `values[].value`: its `kind` selects no layout"),
    (0x13, b"\x01\x00\x01\x00\x02\x02",
     "SetConfig: `values[].value`: flag byte 0x02; 0 (false) or 1 (true)"),
    (0x13, b"\x01\x00\x01\x00\x00\x01\x02",
     "SetConfig: `values[].value`: the payload ends inside it (8 bytes needed, 2 left)"),
    (0x13, b"\x01\x00\x01\x00\x03\x02\xff\xfe",
     "SetConfig: a text in `values` is not valid UTF-8"),
    (0x18, b"\x02\x00\xff\xfe", "Inject: `spec` is not valid UTF-8"),
    (0x15, b"\x01\x04", "Subscribe: `subscriptions[].period_ms`: the payload ends inside it"),
    (0x18, b"\x05ab", "Inject: `spec`: the payload ends inside it (5 bytes needed, 2 left)"),
    (0x20, bytes(21) + (513).to_bytes(2, "little"), "MeasurementFrame: `n_cells` = 513; at "
                                                    "most 512"),
    (0x20, bytes(21) + (2).to_bytes(2, "little") + bytes(5),
     "MeasurementFrame: payload is 28 bytes: it ends inside `cell_voltage_v` (8 bytes for "
     "n_cells = 2, 5 left)"),
    (0x20, bytes(23) + bytes(4) + b"\x01",
     "MeasurementFrame: payload is 28 bytes: 1 byte left over after the last field"),
    (0x20, bytes(20), "MeasurementFrame: payload is 20 bytes: it ends inside `contactors`"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_refused_payload_names_its_field_and_the_problem(type_id, payload, detail):
    assert detail_of(type_id, payload).startswith(detail)


def test_a_flag_byte_other_than_0_or_1_is_refused_not_read_as_true():
    """The spec says BOOL is 0 or 1; construct's own Flag reads 0x02 as true."""
    good = b"\x01\x00\x01\x00\x02\x01"
    (frame,) = Decoder().feed(encode_frame(0x13, int(Flags.REQUEST), 1, good))
    assert frame.message.values[0]["value"] is True
    assert "flag byte 0xFF" in detail_of(0x13, good[:-1] + b"\xff")


@pytest.mark.parametrize("type_id", sorted(REGISTRY), ids=lambda t: REGISTRY[t].name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_refusal_speaks_in_the_parsers_words(type_id: int, data: st.DataObject):
    msg = data.draw(message_strategy(type_id).filter(fits), label="message")
    payload = encode_payload(msg, LATEST_REVISION)[1]
    cut = data.draw(st.integers(0, max(len(payload) - 1, 0)), label="cut")
    extra = data.draw(st.binary(min_size=1, max_size=4), label="extra")
    for wrong in {payload[:cut], payload + extra} - {payload}:
        detail = detail_of(type_id, wrong, LATEST_REVISION)
        assert detail.startswith(REGISTRY[type_id].name + ": ")
        assert not any(word in detail for word in PARSER_WORDS), detail
