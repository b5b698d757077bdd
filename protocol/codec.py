"""Messages to bytes and back: the framing of `protocol.framing` around the payloads of
`protocol.messages`. This is what a transport's user talks to (`encode`, `Decoder.feed`).

Why and how: docs/internals.md, protocol/codec.py.
"""

from __future__ import annotations

from typing import NamedTuple

from protocol.framing import (
    REVISION_1_0,
    REVISIONS,
    Flags,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    Header,
    RawFrame,
    encode_frame,
)
from protocol.messages import (
    BY_CLASS,
    REGISTRY,
    Nack,
    PayloadError,
    decode_payload,
    encode_payload,
    in_revision,
)


class Frame(NamedTuple):
    header: Header
    message: object


def encode(msg: object, seq: int, flags: Flags | None = None,
           revision: int = REVISION_1_0) -> bytes:
    """A message as one delimited frame in `revision`'s layout (1.0 unless asked: what a
    peer of any revision reads); the flags default to the type's own (a Nack also carries
    ERROR)."""
    if flags is None:
        flags = BY_CLASS[type(msg)].flags | (Flags.ERROR if isinstance(msg, Nack) else 0)
    msg_type, payload = encode_payload(msg, revision)
    return encode_frame(msg_type, flags, seq, payload, revision)


def _unknown_type(header: Header) -> FrameError | None:
    """UNKNOWN_TYPE for a type the frame's revision does not have, whatever else is wrong
    with the frame (a device of that revision knows no more of it)."""
    if in_revision(header.msg_type, header.revision):
        return None
    known = REGISTRY.get(header.msg_type)
    detail = (f"message type 0x{header.msg_type:02X} is not in the catalogue"
              if known is None else
              f"{known.name} (0x{header.msg_type:02X}) is protocol "
              f"{REVISIONS[known.since]} (revision {known.since}) and later; this frame "
              f"is revision {header.revision}")
    return FrameError(FrameErrorKind.UNKNOWN_TYPE, detail, header)


def _named(error: FrameError) -> FrameError:
    """A BAD_LENGTH in the payload's words: UNKNOWN_TYPE for a type the revision lacks,
    else `Type: problem`, as BAD_PAYLOAD's detail is."""
    header = error.header
    if error.kind is not FrameErrorKind.BAD_LENGTH or header is None:
        return error
    return _unknown_type(header) or FrameError(
        error.kind, f"{REGISTRY[header.msg_type].name}: {error.detail}", header)


def decode(raw: RawFrame) -> Frame | FrameError:
    """The message in a frame whose framing and CRC were good, read in its revision."""
    header = raw.header
    if (unknown := _unknown_type(header)) is not None:
        return unknown
    try:
        return Frame(header, decode_payload(header.msg_type, raw.payload, header.revision))
    except PayloadError as exc:
        name = REGISTRY[header.msg_type].name
        return FrameError(FrameErrorKind.BAD_PAYLOAD, f"{name}: {exc}", header)


class Decoder:
    """Bytes in, frames and typed errors out; bounded, resynchronising, never raises."""

    def __init__(self) -> None:
        self.frames = FrameDecoder()

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        return [decode(item) if isinstance(item, RawFrame) else _named(item)
                for item in self.frames.feed(bytes(data))]
