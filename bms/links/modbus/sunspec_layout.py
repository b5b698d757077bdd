"""Where every SunSpec point sits, read from the SunSpec Alliance's model definitions, and
how a value becomes registers. No offset is typed by hand: a model's points follow each
other in the order of its definition (a group's points, then its groups, a repeating group
once per repeat), so the map cannot drift from what a SunSpec client expects.

Sans-IO: definitions in, addresses and register values out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MODELS_DIR = Path(__file__).with_name("sunspec_models")
BASE_ADDRESS = 40000  # the usual of SunSpec's three (0, 40000, 50000); protocol address
SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF
HEADER_REGISTERS = 2  # a model's ID and L, not counted in L

# The registers each type takes, the range a value may take (the rest is SunSpec's
# "not implemented" value, which a value never takes) and that value, by type.
UNSIGNED16 = ("uint16", "enum16", "bitfield16", "count")
UNSIGNED32 = ("uint32", "enum32", "bitfield32")
VALUE_RANGE: dict[str, tuple[int, int]] = {
    **dict.fromkeys(UNSIGNED16, (0, 0xFFFE)),
    **dict.fromkeys(UNSIGNED32, (0, 0xFFFF_FFFE)),
    "int16": (-0x7FFF, 0x7FFF),
    "sunssf": (-10, 10),
}
NOT_IMPLEMENTED: dict[str, int] = {
    **dict.fromkeys(UNSIGNED16, 0xFFFF),
    **dict.fromkeys(UNSIGNED32, 0xFFFF_FFFF),
    "int16": 0x8000,
    "sunssf": 0x8000,
    "pad": 0x8000,
}
TYPES = (*VALUE_RANGE, "pad", "string")  # the types this map can carry


@dataclass(frozen=True)
class Point:
    """One point of a model definition."""

    model_id: int
    name: str
    type: str
    size: int  # registers
    sf: str | None  # the name of its scale factor point
    writable: bool  # RW in the definition
    mandatory: bool
    units: str
    label: str
    symbols: Mapping[str, int]  # an enum's values or a bitfield's bits, by name

    @property
    def key(self) -> str:
        """`<model>.<name>`: unique, as a model's point names are."""
        return f"{self.model_id}.{self.name}"


@dataclass(frozen=True)
class Slot:
    """A point at its address; `index` is its group's repeat (0-based; 0 outside a repeating
    group)."""

    point: Point
    address: int
    index: int = 0


@dataclass(frozen=True)
class ModelBlock:
    model_id: int
    address: int  # of its ID register
    length: int  # L: the registers after ID and L
    slots: tuple[Slot, ...]  # ID and L included


@dataclass(frozen=True)
class Layout:
    """The whole map: `SunS` at `base`, the models, then the end model (ID 0xFFFF, L 0)."""

    base: int
    models: tuple[ModelBlock, ...]

    @property
    def end_address(self) -> int:
        """One past the end model's L."""
        last = self.models[-1]
        return last.address + HEADER_REGISTERS + last.length + HEADER_REGISTERS

    @property
    def size(self) -> int:
        return self.end_address - self.base

    def slots(self) -> Iterator[Slot]:
        for model in self.models:
            yield from model.slots


@cache
def definition(model_id: int) -> dict:
    """A model's definition as the SunSpec Alliance publishes it (JSON)."""
    return json.loads((MODELS_DIR / f"model_{model_id}.json").read_text(encoding="utf-8"))


@cache
def points_of(model_id: int) -> tuple[Point, ...]:
    """Every point the definition has, each once, in definition order (groups flattened)."""
    return tuple(_walk(model_id, definition(model_id)["group"]))


def _walk(model_id: int, group: dict) -> Iterator[Point]:
    for p in group.get("points", ()):
        yield _point(model_id, p)
    for sub in group.get("groups", ()):
        yield from _walk(model_id, sub)


def _point(model_id: int, p: dict) -> Point:
    if p["type"] not in TYPES:
        raise ValueError(f"model {model_id} point {p['name']}: type {p['type']!r} is not one "
                         f"this map carries ({', '.join(TYPES)})")
    return Point(model_id, p["name"], p["type"], int(p["size"]), p.get("sf"),
                 p.get("access", "R") == "RW", p.get("mandatory") == "M", p.get("units", ""),
                 p.get("label", p["name"]),
                 {s["name"]: int(s["value"]) for s in p.get("symbols", ())})


def layout(model_ids: Sequence[int], repeats: Mapping[str, int],
           base: int = BASE_ADDRESS) -> Layout:
    """The models in this order from `base` + 2 (after `SunS`). `repeats`: how many times
    each repeating group is there, by `<model>.<group name>`; every repeating group of the
    models must be given (ValueError otherwise)."""
    blocks = []
    address = base + len(SUNS_MARKER)
    for model_id in model_ids:
        slots = list(_place(model_id, definition(model_id)["group"], address, repeats, 0))
        end = slots[-1].address + slots[-1].point.size
        blocks.append(ModelBlock(model_id, address, end - address - HEADER_REGISTERS,
                                 tuple(slots)))
        address = end
    return Layout(base, tuple(blocks))


def _place(model_id: int, group: dict, address: int, repeats: Mapping[str, int],
           index: int) -> Iterator[Slot]:
    for p in group.get("points", ()):
        point = _point(model_id, p)
        yield Slot(point, address, index)
        address += point.size
    for sub in group.get("groups", ()):
        key = f"{model_id}.{sub['name']}"
        if "count" not in sub:
            count = 1
        elif key in repeats:
            count = repeats[key]
        else:
            raise ValueError(f"{key} repeats: give its count")
        for k in range(count):
            slots = list(_place(model_id, sub, address, repeats, k))
            yield from slots
            if slots:
                address = slots[-1].address + slots[-1].point.size


def registers(point: Point, value: object, exponent: int | None = None) -> list[int]:
    """The registers for `value`: `encoder(point, exponent)(value)`."""
    return encoder(point, exponent)(value)


def encoder(point: Point, exponent: int | None = None) -> Callable[[object], list[int]]:
    """What turns a value of `point` into its registers, made once per point: a read walks
    every point. None or NaN: SunSpec's "not implemented" value. A number is scaled by
    10**-exponent where the point has a scale factor, rounded, and held inside the type's
    range (never reaching the "not implemented" value); a string is UTF-8, cut to the
    point's size and padded with NULs."""
    size, kind = point.size, point.type
    if kind == "string":
        def text(value: object) -> list[int]:
            data = b"" if value is None else str(value).encode()[:2 * size]
            data = data.ljust(2 * size, b"\0")
            return [int.from_bytes(data[k:k + 2], "big") for k in range(0, 2 * size, 2)]
        return text
    absent = _split(NOT_IMPLEMENTED[kind], size)
    if kind == "pad":
        return lambda _value: absent
    scale = 10.0 ** -(exponent or 0)
    low, high = VALUE_RANGE[kind]
    mask = (1 << 16 * size) - 1

    def number(value: object) -> list[int]:
        if value is None:
            return absent
        x = float(value) * scale
        if x != x:  # NaN
            return absent
        raw = low if x <= low else high if x >= high else round(x)
        return [raw & mask] if size == 1 else _split(raw & mask, size)
    return number


def _split(raw: int, size: int) -> list[int]:
    return [(raw >> 16 * (size - 1 - k)) & 0xFFFF for k in range(size)]


def value_of(point: Point, regs: Sequence[int]) -> int:
    """The integer a client wrote to a one- or two-register point (signed for int16)."""
    raw = 0
    for r in regs:
        raw = raw << 16 | r
    if point.type == "int16" and raw >= 0x8000:
        raw -= 0x10000
    return raw
