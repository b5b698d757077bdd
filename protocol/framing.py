"""Framing for a byte stream: header, CRC-32 and COBS with a 0x00 delimiter. Sans-IO:
`encode_frame` returns bytes, `FrameDecoder.feed` takes bytes and returns what they completed.

Why and how: docs/internals.md, protocol/framing.py.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import NamedTuple

from cobs import cobs

# The header's first byte: the protocol revision a frame's payload is laid out in. A frame
# is answered in the revision it came in, so a peer that speaks only 1.0 sees only 1.0.
REVISIONS = {1: "1.0", 2: "1.1"}  # revision -> the protocol version it is
REVISION_1_0, REVISION_1_1 = 1, 2
LATEST_REVISION = max(REVISIONS)
DELIMITER = b"\x00"
HEADER = struct.Struct("<BBBHH")  # revision, type, flags, sequence, payload length
CRC = struct.Struct("<I")
HEADER_BYTES = HEADER.size
CRC_BYTES = CRC.size
MAX_PAYLOAD_BYTES = 4096  # a 512-cell, 256-sensor measurement frame is 3,100 bytes
MAX_FRAME_BYTES = HEADER_BYTES + MAX_PAYLOAD_BYTES + CRC_BYTES
# COBS adds at most one byte in 254 plus one: the longest run a decoder ever buffers.
MAX_ENCODED_BYTES = MAX_FRAME_BYTES + MAX_FRAME_BYTES // 254 + 1
CRC_NAME = ("CRC-32/ISO-HDLC (as zlib.crc32): poly 0x04C11DB7 reflected, init 0xFFFFFFFF, "
            "xorout 0xFFFFFFFF, check value 0xCBF43926 for the ASCII bytes '123456789'")


class Flags(IntFlag):
    """What a frame is: a request wants a response or a NACK with the same sequence number;
    an event (telemetry, measurement, actuation) wants nothing back."""

    REQUEST = 0x01  # wants a response with the same seq
    RESPONSE = 0x02  # answers the request with the same seq
    EVENT = 0x04  # telemetry, measurement or actuation: nothing comes back
    ERROR = 0x08  # set on NACK responses


class FrameErrorKind(IntEnum):
    """Why bytes between two delimiters were not a frame. One code space with the Nack's
    ErrorCode (`protocol.messages`): a name both have has the same number there, and the
    kinds only a decoder reports are numbered from 32 up."""

    UNKNOWN_TYPE = 1  # a good frame of a message type this end does not know in its revision
    BAD_PAYLOAD = 2  # a good frame whose payload does not parse as its type
    UNSUPPORTED_VERSION = 3  # a header revision this end does not speak
    BAD_COBS = 32  # not valid COBS (a zero inside, or a block running past the end)
    TOO_SHORT = 33  # shorter than header and CRC
    BAD_CRC = 34  # the CRC does not match: the header is not trusted either
    BAD_LENGTH = 35  # the header's payload length is not what arrived, or over 4096
    OVERSIZE = 36  # no delimiter within MAX_ENCODED_BYTES: the run was thrown away


class Header(NamedTuple):  # a tuple, not a dataclass: one is made for every frame
    revision: int  # REVISIONS: the layout of the payload
    msg_type: int
    flags: int  # Flags bits; the upper four are reserved and ignored
    seq: int  # 0..65535; a response carries its request's
    length: int  # payload bytes


@dataclass(frozen=True, slots=True)
class FrameError:
    """A typed decoding error: the decoder reports these instead of raising."""

    kind: FrameErrorKind
    detail: str
    header: Header | None = None  # when the header could be read and the CRC held


class RawFrame(NamedTuple):
    header: Header
    payload: bytes


def spoken() -> str:
    """The revisions this end speaks, as a message says them: "1 (1.0) and 2 (1.1)"."""
    return " and ".join(f"{r} ({v})" for r, v in REVISIONS.items())


def crc32(data: bytes) -> int:
    return binascii.crc32(data)


def encode_frame(msg_type: int, flags: int, seq: int, payload: bytes,
                 revision: int = REVISION_1_0) -> bytes:
    """One frame ready for the wire, between two delimiters; `revision` goes in the header
    (the payload must be laid out in it)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}")
    if revision not in REVISIONS:
        raise ValueError(f"revision {revision}; this end speaks {spoken()}")
    body = HEADER.pack(revision, msg_type, flags, seq & 0xFFFF, len(payload)) + payload
    return DELIMITER + cobs.encode(body + CRC.pack(binascii.crc32(body))) + DELIMITER


def decode_frame(encoded: bytes) -> RawFrame | FrameError:
    """The frame between two delimiters (delimiter excluded), or why it is not one."""
    try:
        data = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        return FrameError(FrameErrorKind.BAD_COBS, str(exc))
    if len(data) < HEADER_BYTES + CRC_BYTES:
        return FrameError(FrameErrorKind.TOO_SHORT,
                          f"{len(data)} bytes; a frame has at least {HEADER_BYTES + CRC_BYTES}")
    body = data[:-CRC_BYTES]
    (sent,) = CRC.unpack_from(data, len(body))
    if binascii.crc32(body) != sent:
        return FrameError(FrameErrorKind.BAD_CRC,
                          f"CRC 0x{sent:08X} sent, 0x{binascii.crc32(body):08X} computed")
    revision, msg_type, flags, seq, length = HEADER.unpack_from(body)
    header = Header(revision, msg_type, flags & 0x0F, seq, length)
    if revision not in REVISIONS:
        return FrameError(FrameErrorKind.UNSUPPORTED_VERSION,
                          f"revision {revision}; this end speaks {spoken()}", header)
    if length > MAX_PAYLOAD_BYTES:  # COBS's slack lets a few more bytes through
        return FrameError(FrameErrorKind.BAD_LENGTH,
                          f"header says {length} payload bytes; at most {MAX_PAYLOAD_BYTES}",
                          header)
    if length != len(body) - HEADER_BYTES:
        return FrameError(FrameErrorKind.BAD_LENGTH,
                          f"header says {length} payload bytes, "
                          f"{len(body) - HEADER_BYTES} arrived", header)
    return RawFrame(header, body[HEADER_BYTES:])


class FrameDecoder:
    """Feed it bytes as they arrive; it returns the frames and errors they complete.

    The buffer never holds more than MAX_ENCODED_BYTES: a longer run without a delimiter is
    reported once as OVERSIZE and dropped up to the next delimiter. `feed` never raises.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._discarding = False  # inside an oversize run, waiting for its delimiter

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[RawFrame | FrameError]:
        out: list[RawFrame | FrameError] = []
        start = 0
        while True:
            end = data.find(0, start)
            if end < 0:
                self._keep(data[start:], out)
                return out
            if self._discarding:
                self._discarding = False
            elif self._buffer:
                self._buffer += data[start:end]
                if len(self._buffer) > MAX_ENCODED_BYTES:
                    out.append(_oversize())
                else:
                    out.append(decode_frame(bytes(self._buffer)))
                self._buffer.clear()
            elif end > start:
                if end - start > MAX_ENCODED_BYTES:
                    out.append(_oversize())
                else:
                    out.append(decode_frame(data[start:end]))
            # an empty run (two delimiters in a row) is padding: a sender may flush with it
            start = end + 1

    def _keep(self, tail: bytes, out: list) -> None:
        if self._discarding or not tail:
            return
        self._buffer += tail
        if len(self._buffer) > MAX_ENCODED_BYTES:
            out.append(_oversize())
            self._buffer.clear()
            self._discarding = True


def _oversize() -> FrameError:
    return FrameError(FrameErrorKind.OVERSIZE,
                      f"more than {MAX_ENCODED_BYTES} bytes without a delimiter; dropped")
