"""The SunSpec map of one pack: its register image, rendered from a PackView, and what a
write asks for. Sans-IO: the Modbus server (`bms.links.modbus.server`) moves the registers.

Each point's value comes from one place, `bms.links.modbus.sunspec_points`; the layout from
the SunSpec definitions (`bms.links.modbus.sunspec_layout`). A write is taken only whole:
every register it covers must belong to a point a client may write, each point written
entire, each value one the point takes; else nothing is asked of the firmware and the answer
is the Modbus exception that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pymodbus.constants import ExcCodes

from bms.links.modbus.pack_view import Nameplate, PackView
from bms.links.modbus.sunspec_layout import (
    END_MODEL_ID,
    SUNS_MARKER,
    VALUE_RANGE,
    Layout,
    Slot,
    encoder,
    layout,
    registers,
    value_of,
)
from bms.links.modbus.sunspec_points import (
    FILLS,
    FULL_SCALE,
    MODELS,
    UNIMPLEMENTED,
    WRITES,
    Source,
    point,
    repeats,
)
from protocol import messages as pm

HEADROOM = 2.0  # a scale factor holds twice the largest value its points are rated for
FINEST_EXPONENT = -3  # no point needs more than a thousandth of its unit

SOURCES: dict[str, Source] = {key: fill.value for fill in FILLS for key in fill.points}


class WriteRefused(Exception):
    """A write the map does not take: the Modbus exception and why."""

    def __init__(self, code: ExcCodes, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Write:
    """A write taken: the point, the value written, and the protocol request it makes."""

    key: str
    value: int
    request: pm.CommandRequest


def exponent(full_scale: float, type_max: int) -> int:
    """The finest power of ten (not below FINEST_EXPONENT) whose steps hold HEADROOM times
    `full_scale` in a register of at most `type_max`."""
    e = FINEST_EXPONENT
    while HEADROOM * abs(full_scale) / 10.0 ** e > type_max:
        e += 1
    return e


class SunSpecMap:
    """The registers from `layout.base` to the end model, for one pack."""

    def __init__(self, plate: Nameplate):
        self.plate = plate
        self.layout: Layout = layout(MODELS, repeats(plate))
        self.exponents = self._exponents()
        self._render: list[tuple[Slot, Callable[[PackView], list[int]]]] = [
            (slot, self._renderer(slot)) for slot in self.layout.slots()]
        # the slot each register belongs to (the markers and the end model have none)
        self._owner: dict[int, Slot] = {}
        for slot in self.layout.slots():
            for k in range(slot.point.size):
                self._owner[slot.address + k] = slot
        self._writes = {key: {_value_of(key, v): command for v, command in values.items()}
                        for key, values in WRITES.items()}

    @property
    def base(self) -> int:
        return self.layout.base

    @property
    def size(self) -> int:
        return self.layout.size

    def image(self, view: PackView) -> list[int]:
        """Every register of the map, from the base."""
        out = list(SUNS_MARKER)
        for _slot, render in self._render:
            out += render(view)
        return out + [END_MODEL_ID, 0]

    def writes(self, address: int, values: Sequence[int]) -> list[Write]:
        """What writing `values` from `address` asks for; WriteRefused when any of it cannot
        be taken (ILLEGAL_ADDRESS: not a whole point a client may write; ILLEGAL_VALUE: a
        value the point does not take)."""
        taken = []
        end = address + len(values)
        at = address
        while at < end:
            slot = self._owner.get(at)
            key = None if slot is None else slot.point.key
            if key not in self._writes:
                raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"register {at} ({self.describe(at)})"
                                   " is not one a client may write")
            if slot.address != at or at + slot.point.size > end:
                raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS,
                                   f"{key} takes registers {slot.address}.."
                                   f"{slot.address + slot.point.size - 1}: write it whole")
            written = values[at - address:at - address + slot.point.size]
            value = value_of(slot.point, written)
            allowed = self._writes[key]
            if value not in allowed:
                raise WriteRefused(ExcCodes.ILLEGAL_VALUE,
                                   f"{key} = {value}; allowed: {self.allowed_text(key)}")
            taken.append(Write(key, value, pm.CommandRequest(int(allowed[value]), 0)))
            at += slot.point.size
        return taken

    def describe(self, address: int) -> str:
        """What sits at `address`, for messages."""
        slot = self._owner.get(address)
        if slot is not None:
            return slot.point.key
        if self.base <= address < self.base + len(SUNS_MARKER):
            return "the SunS marker"
        if self.layout.end_address - 2 <= address < self.layout.end_address:
            return "the end model"
        return "outside the map"

    def allowed_text(self, key: str) -> str:
        names = {v: k for k, v in point(key).symbols.items()}
        return ", ".join(f"{v} {names.get(v, '')}".strip() for v in self._writes[key])

    def _exponents(self) -> dict[str, int]:
        """Each scale factor's exponent, for the narrowest type among the points it
        scales."""
        type_max: dict[str, int] = {}
        for slot in self.layout.slots():
            sf = slot.point.sf
            if sf is not None:
                high = VALUE_RANGE[slot.point.type][1]
                type_max[sf] = min(type_max.get(sf, high), high)
        missing = sorted(set(type_max) - set(FULL_SCALE))
        if missing:
            raise ValueError(f"no full scale for the scale factors {', '.join(missing)}")
        return {sf: exponent(FULL_SCALE[sf](self.plate), high) for sf, high in type_max.items()}

    def _renderer(self, slot: Slot) -> Callable[[PackView], list[int]]:
        p = slot.point
        if p.name == "ID":
            return _fixed(registers(p, p.model_id))
        if p.name == "L":
            length = next(m.length for m in self.layout.models if m.model_id == p.model_id)
            return _fixed(registers(p, length))
        if p.type == "sunssf":
            return _fixed(registers(p, self.exponents.get(p.name)))
        if p.type == "pad" or p.key in UNIMPLEMENTED:
            return _fixed(registers(p, None))
        source = SOURCES.get(p.key)
        if source is None:
            raise ValueError(f"{p.key} is neither filled nor left unimplemented with a reason "
                             "(bms.links.modbus.sunspec_points)")
        encode = encoder(p, self.exponents.get(p.sf) if p.sf else None)
        index = slot.index
        return lambda view: encode(source(view, index))


def _fixed(regs: list[int]) -> Callable[[PackView], list[int]]:
    return lambda _view: regs


def _value_of(key: str, value: str | int) -> int:
    """A write's value by symbol name or number, as a number."""
    return value if isinstance(value, int) else point(key).symbols[value]
