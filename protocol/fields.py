"""Field types the message definitions are built from, beyond construct's own.

Arrays of cells and sensors are read with `numpy.frombuffer` in one call instead of
construct's element-by-element parse, which is what keeps a 416-cell frame cheap. Each
array names the count field that precedes it; the count is filled in when a message is
built (`protocol.messages`), so a message object carries only the array.
"""

from __future__ import annotations

import struct

import construct as c
import numpy as np

FLOAT32 = np.dtype("<f4")
MAX_CELLS = 512
MAX_TEMP_SENSORS = 256

U8, U16, U32 = c.Int8ul, c.Int16ul, c.Int32ul
I16 = c.Int16sl
F32, F64 = c.Float32l, c.Float64l


class CheckedText(c.StringEncoded):
    """construct's PascalString, but its compiled parser checks that the whole string
    arrived: construct's own reads a truncated string short without a word."""

    def _emitparse(self, code):
        code.append("from protocol.fields import read_text")
        return f"read_text(io, {self.subcon.lengthfield.fmtstr!r}, {self.encoding!r})"


def read_text(stream, length_format: str, encoding: str) -> str:
    (n,) = struct.unpack(length_format, stream.read(struct.calcsize(length_format)))
    data = stream.read(n)
    if len(data) != n:
        raise c.StreamError(f"text of {n} bytes, {len(data)} left")
    return data.decode(encoding)


class CheckedFlag(type(c.Flag)):
    """construct's Flag, but strict: one byte, 0 false or 1 true. construct's own reads any
    other byte as true, and its compiled parser reads a missing byte as true too."""

    def _parse(self, stream, context, path):
        return read_flag(stream, path)

    def _emitparse(self, code):
        code.append("from protocol.fields import read_flag")
        return "read_flag(io)"


def read_flag(stream, path: str | None = None) -> bool:
    data = stream.read(1)
    if len(data) != 1:
        raise c.StreamError("a flag byte needed, none left", path=path)
    if data not in (b"\x00", b"\x01"):
        raise c.ValidationError(f"flag byte 0x{data[0]:02X}; 0 (false) or 1 (true)", path=path)
    return data == b"\x01"


Bool = CheckedFlag()
Text = CheckedText(c.Prefixed(c.Int8ul, c.GreedyBytes), "utf8")  # length byte, then UTF-8
LongText = CheckedText(c.Prefixed(c.Int16ul, c.GreedyBytes), "utf8")


class CountedArray(c.Construct):
    """`count` elements, `count` read from an earlier field of the struct; `limit` caps the
    count, so a bad count is a payload error, not a huge allocation."""

    def __init__(self, count: str, limit: int):
        super().__init__()
        self.count = count
        self.limit = limit

    @staticmethod
    def size(n: int) -> int:
        raise NotImplementedError

    @staticmethod
    def from_buffer(data: bytes, offset: int, n: int):
        """The `n` elements at `offset` (the bytes are known to be there)."""
        raise NotImplementedError

    @staticmethod
    def to_bytes(obj) -> bytes:
        raise NotImplementedError

    @classmethod
    def read(cls, stream, n: int, limit: int):
        if n > limit:
            raise c.ValidationError(f"count {n}; at most {limit}")
        size = cls.size(n)
        data = stream.read(size)
        if len(data) != size:
            raise c.StreamError(f"{size} bytes needed, {len(data)} left")
        return cls.from_buffer(data, 0, n)

    def _parse(self, stream, context, path):
        return self.read(stream, context[self.count], self.limit)

    def _emitparse(self, code):
        """Compiled: a direct call, without construct's per-field path bookkeeping."""
        code.append(f"from protocol.fields import {type(self).__name__}")
        return f"{type(self).__name__}.read(io, this[{self.count!r}], {self.limit})"

    def _build(self, obj, stream, context, path):
        if obj is not None and len(obj) > self.limit:  # else the peer would refuse the frame
            raise c.ValidationError(f"{len(obj)} elements; at most {self.limit}", path=path)
        if obj is not None:
            data = self.to_bytes(obj)
            c.stream_write(stream, data, len(data), path)
        return obj

    def _sizeof(self, context, path):
        raise c.SizeofError("variable size", path=path)


class FloatArray(CountedArray):
    """float32 per element: cell voltages in V, temperatures in °C, SoC in %."""

    @staticmethod
    def size(n: int) -> int:
        return 4 * n

    @staticmethod
    def from_buffer(data: bytes, offset: int, n: int) -> np.ndarray:
        return np.frombuffer(data, FLOAT32, n, offset)

    @staticmethod
    def to_bytes(obj) -> bytes:
        return np.asarray(obj, dtype="<f4").tobytes()


class OptionalFloatArray(FloatArray):
    """A FloatArray the sender may leave out: a count of zero reads as None (not sent)."""

    @staticmethod
    def from_buffer(data: bytes, offset: int, n: int) -> np.ndarray | None:
        return None if n == 0 else np.frombuffer(data, FLOAT32, n, offset)


class BitArray(CountedArray):
    """One bit per element, least significant bit first, padded to whole bytes; a count of
    zero reads as None (the sender did not report it)."""

    @staticmethod
    def size(n: int) -> int:
        return (n + 7) // 8

    @staticmethod
    def from_buffer(data: bytes, offset: int, n: int) -> np.ndarray | None:
        if n == 0:
            return None
        packed = np.frombuffer(data, np.uint8, (n + 7) // 8, offset)
        return np.unpackbits(packed, count=n, bitorder="little").astype(bool)

    @staticmethod
    def to_bytes(obj) -> bytes:
        return np.packbits(np.asarray(obj, dtype=bool), bitorder="little").tobytes()


def array_fields(struct: c.Struct) -> dict[str, CountedArray]:
    """The counted arrays of a struct, by field name."""
    return {sc.name: sc.subcon for sc in struct.subcons if isinstance(sc.subcon, CountedArray)}
