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

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"
HEADER = struct.Struct("<BBBHH")  # version, type, flags, sequence, payload length
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
    """Why bytes between two delimiters were not a frame; the codes are stable."""

    BAD_COBS = 1  # not valid COBS (a zero inside, or a block running past the end)
    TOO_SHORT = 2  # shorter than header and CRC
    BAD_CRC = 3
    UNSUPPORTED_VERSION = 4
    BAD_LENGTH = 5  # the header's payload length is not what arrived
    OVERSIZE = 6  # no delimiter within MAX_ENCODED_BYTES: the run was thrown away
    UNKNOWN_TYPE = 7  # a good frame of a message type this end does not know
    BAD_PAYLOAD = 8  # a good frame whose payload does not parse as its type


class Header(NamedTuple):  # a tuple, not a dataclass: one is made for every frame
    version: int
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


def crc32(data: bytes) -> int:
    return binascii.crc32(data)


def encode_frame(msg_type: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One frame ready for the wire, between two delimiters."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}")
    body = HEADER.pack(PROTOCOL_VERSION, msg_type, flags, seq & 0xFFFF, len(payload)) + payload
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
    version, msg_type, flags, seq, length = HEADER.unpack_from(body)
    header = Header(version, msg_type, flags & 0x0F, seq, length)
    if version != PROTOCOL_VERSION:
        return FrameError(FrameErrorKind.UNSUPPORTED_VERSION,
                          f"version {version}; this end speaks {PROTOCOL_VERSION}", header)
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
