"""The suite's own protocol client, as a rig engineer would write it from docs/protocol.md:
requests encoded with `protocol.codec`, every frame that comes back decoded in its own
revision and kept in order, answers matched by `seq`, events waited for with deadlines.

`raw_frame` builds what the codec refuses to (a revision nobody speaks, a header whose
length lies, a bad CRC): header, payload and CRC-32 as the spec's Frame layout gives them,
COBS-encoded between two zero delimiters.
"""

from __future__ import annotations

import binascii
import struct
import threading
import time
from collections.abc import Callable

import pytest

from protocol.codec import Decoder, Frame, encode
from protocol.framing import LATEST_REVISION, Flags, FrameError, Header
from protocol.messages import BY_CLASS, Nack

ANSWER_S = 10.0  # the longest a test waits for an answer before it fails
Item = Frame | FrameError  # what a decoder returns for one frame


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: each run of up to 254 non-zero bytes after a code
    byte saying how far the next zero is (0xFF: 254 bytes, no zero after them)."""
    out, block = bytearray(), bytearray()
    for byte in data:
        if byte:
            block.append(byte)
            if len(block) < 254:
                continue
        out.append(len(block) + 1)
        out += block
        block.clear()
    out.append(len(block) + 1)
    return bytes(out + block)


def raw_frame(revision: int, msg_type: int, flags: int, seq: int, payload: bytes = b"",
              length: int | None = None, crc_xor: int = 0) -> bytes:
    """A frame on the wire, built by hand: `length` in the header (default: the payload's),
    the CRC-32 of header and payload XORed with `crc_xor` (non-zero: a bad CRC)."""
    header = struct.pack("<BBBHH", revision, msg_type, flags, seq,
                         len(payload) if length is None else length)
    crc = (binascii.crc32(header + payload) ^ crc_xor) & 0xFFFFFFFF
    return b"\x00" + cobs_encode(header + payload + struct.pack("<I", crc)) + b"\x00"


def type_id(cls: type) -> int:
    """The type id of a message class."""
    return BY_CLASS[cls].type_id


def header_of(item: Item) -> Header | None:
    return item.header


def is_answer(item: Item, seq: int) -> bool:
    """A response frame (or one that failed to decode) carrying `seq`."""
    header = header_of(item)
    return header is not None and header.seq == seq and bool(header.flags & Flags.RESPONSE)


class SpecClient:
    """Sends over a link (`tests.client.links`) and keeps every decoded frame in `received`,
    in arrival order. Thread-safe: a rig thread may send measurements beside the tests."""

    def __init__(self, link, name: str):
        self.link = link
        self.name = name
        self.decoder = Decoder()
        self.received: list[Item] = []
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._seq = 0
        link.start(self._on_bytes)

    def _on_bytes(self, data: bytes) -> None:
        with self._cond:
            self.received.extend(self.decoder.feed(data))
            self._cond.notify_all()

    def close(self) -> None:
        self.link.close()

    def next_seq(self) -> int:
        """1, 2, ... wrapping after 65535."""
        with self._send_lock:
            self._seq = self._seq % 0xFFFF + 1
            return self._seq

    def mark(self) -> int:
        """Where the frames received from now on begin in `received`."""
        with self._cond:
            return len(self.received)

    def send_bytes(self, data: bytes) -> None:
        with self._send_lock:
            self.link.send(data)

    def send(self, msg: object, revision: int = LATEST_REVISION, flags: Flags | None = None,
             seq: int | None = None) -> int:
        """Encodes and sends `msg`; returns its seq."""
        seq = self.next_seq() if seq is None else seq
        self.send_bytes(encode(msg, seq, flags, revision))
        return seq

    def wait_for(self, predicate: Callable[[Item], bool], what: str, after: int = 0,
                 timeout_s: float = ANSWER_S) -> Item:
        """The first frame from position `after` on for which `predicate` holds; the test
        fails once `timeout_s` has passed without one."""
        item = self.find(predicate, after, timeout_s)
        if item is None:
            with self._cond:
                recent = "\n  ".join(map(repr, self.received[-4:])) or "nothing"
            pytest.fail(f"{self.name}: no {what} within {timeout_s:g} s; the last frames "
                        f"received:\n  {recent}")
        return item

    def find(self, predicate: Callable[[Item], bool], after: int,
             timeout_s: float) -> Item | None:
        """As `wait_for`, but None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            position = after
            while True:
                while position < len(self.received):
                    item = self.received[position]
                    position += 1
                    if predicate(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def answer(self, seq: int, after: int, timeout_s: float = ANSWER_S) -> Item:
        return self.wait_for(lambda item: is_answer(item, seq), f"answer with seq {seq}",
                             after, timeout_s)

    def answered_between(self, seq: int, after: int, before: int) -> list[Item]:
        """The answers carrying `seq` received between two marks."""
        with self._cond:
            return [item for item in self.received[after:before] if is_answer(item, seq)]

    def request(self, msg: object, revision: int = LATEST_REVISION, flags: Flags | None = None,
                seq: int | None = None) -> Frame:
        """Sends `msg` and returns the frame that answers it; fails when the answer does
        not decode in its own revision."""
        after = self.mark()
        seq = self.send(msg, revision, flags, seq)
        item = self.answer(seq, after)
        if isinstance(item, FrameError):
            pytest.fail(f"{self.name}: the answer to {type(msg).__name__} (seq {seq}, revision "
                        f"{revision}) does not decode: {item}")
        return item

    def ask(self, msg: object, revision: int = LATEST_REVISION) -> object:
        """The message answering `msg`; fails on a Nack."""
        message = self.request(msg, revision).message
        if isinstance(message, Nack):
            pytest.fail(f"{self.name}: {type(msg).__name__} refused: {message}")
        return message

    def events(self, cls: type, after: int) -> list[Frame]:
        """The EVENT frames of message class `cls` received from position `after` on."""
        with self._cond:
            return [item for item in self.received[after:] if isinstance(item, Frame)
                    and item.header.flags & Flags.EVENT and isinstance(item.message, cls)]
