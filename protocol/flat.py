"""A faster reader for flat payloads, derived from the same construct definitions.

A payload made only of fixed-size numbers and counted arrays (the measurement, actuation
and status frames: the ones that stream) is read with one `struct.unpack_from` per run of
numbers and one `numpy.frombuffer` per array, skipping construct's per-field bookkeeping:
about three times faster than construct's compiled parser. Payloads with text, lists or
alternatives keep construct's parser. Both refuse the same payloads.
"""

from __future__ import annotations

import itertools
import struct

import construct as c

from protocol.fields import CountedArray

NUMBERS, ARRAY = 0, 1


class FlatReader:
    """Steps as plain tuples, the fastest thing for Python to walk:
    (NUMBERS, struct layout, field names) or (ARRAY, field, array type, count field, limit).
    """

    def __init__(self, steps: tuple[tuple, ...]):
        self.steps = steps

    def parse(self, payload: bytes) -> dict:
        """The fields by name; ValueError naming the field and what was wrong, in the
        protocol's terms, when the payload is short, long or has a count over its limit."""
        fields: dict = {}
        at = 0
        for step in self.steps:
            if step[0] == NUMBERS:
                _, layout, names = step
                if at + layout.size > len(payload):
                    raise ValueError(self._short(payload, at, layout, names))
                fields.update(zip(names, layout.unpack_from(payload, at), strict=True))
                at += layout.size
                continue
            _, name, kind, count, limit = step
            n = fields[count]
            if n > limit:
                raise ValueError(f"`{count}` = {n}; at most {limit}")
            size = kind.size(n)
            if at + size > len(payload):
                raise ValueError(f"payload is {_bytes(len(payload))}: it ends inside `{name}` "
                                 f"({size} bytes for {count} = {n}, {len(payload) - at} left)")
            fields[name] = kind.from_buffer(payload, at, n)
            at += size
        if at != len(payload):
            if len(self.steps) == 1:  # numbers only: the payload has one size
                raise ValueError(f"payload is {_bytes(len(payload))}, expected {at}")
            raise ValueError(f"payload is {_bytes(len(payload))}: {_bytes(len(payload) - at)} "
                             "left over after the last field")
        return fields

    def _short(self, payload: bytes, at: int, layout: struct.Struct,
               names: tuple[str, ...]) -> str:
        """A payload that ends inside a run of numbers: its size, and the field it ends in."""
        if len(self.steps) == 1:
            return f"payload is {_bytes(len(payload))}, expected {layout.size}"
        ends = itertools.accumulate(struct.calcsize("<" + code) for code in layout.format[1:])
        inside = next(name for name, end in zip(names, ends, strict=True)
                      if at + end > len(payload))
        return f"payload is {_bytes(len(payload))}: it ends inside `{inside}`"


def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def flat_reader(definition: c.Struct) -> FlatReader | None:
    """A FlatReader for a struct of numbers and counted arrays; None for any other."""
    steps: list[tuple] = []
    formats: list[str] = []
    names: list[str] = []

    def close_numbers() -> None:
        if names:
            steps.append((NUMBERS, struct.Struct("<" + "".join(formats)), tuple(names)))
            formats.clear()
            names.clear()

    for field in definition.subcons:
        sub = field.subcon
        if type(sub) is c.FormatField and sub.fmtstr[0] == "<":
            formats.append(sub.fmtstr[1:])
            names.append(field.name)
        elif isinstance(sub, CountedArray):
            close_numbers()
            steps.append((ARRAY, field.name, type(sub), sub.count, sub.limit))
        else:
            return None
    close_numbers()
    return FlatReader(tuple(steps))
