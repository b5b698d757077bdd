"""Which CAN bus to open: `INTERFACE:CHANNEL[@BITRATE]` for any python-can interface.

    socketcan:can0                the kernel's interface (its bitrate is the kernel's:
                                  `ip link set can0 type can bitrate 500000`)
    slcan:/dev/ttyACM0@500000     a USB-serial (LAWICEL / CANable) adapter
    udp_multicast:239.74.163.2    several processes on one host, no hardware
    virtual:NAME                  one process (tests)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from bms.data.validation import InputError

if TYPE_CHECKING:
    import can

FORMS = ("socketcan:can0", "slcan:/dev/ttyACM0@500000", "udp_multicast:239.74.163.2",
         "virtual:NAME")
BITRATE_RANGE = (10_000, 1_000_000)  # classic CAN
# Interfaces whose bitrate python-can does not set: the kernel's, or none (no wire).
NO_BITRATE = frozenset({"socketcan", "udp_multicast", "virtual", "socketcand"})


@functools.cache
def python_can() -> ModuleType:
    """python-can, imported when a bus is first named or opened: its ~50 ms would otherwise
    be paid by every `bms-emu` start, most of which have no CAN bus (start-up time)."""
    import can

    return can


@dataclass(frozen=True)
class BusSpec:
    interface: str
    channel: str
    bitrate: int | None = None  # None: the frame set's, where the interface takes one

    def describe(self) -> str:
        return f"{self.interface}:{self.channel}" + (
            f"@{self.bitrate}" if self.bitrate is not None else "")


def parse_bus_spec(text: str, where: str = "--can", source: str = "bms-emu") -> BusSpec:
    """The bus `text` names; InputError (from `source`) naming the value and the allowed
    forms otherwise."""
    allowed = f"INTERFACE:CHANNEL[@BITRATE], e.g. {', '.join(FORMS)}"
    interface, sep, rest = text.partition(":")
    channel, at, bitrate_text = rest.rpartition("@") if "@" in rest else (rest, "", "")
    problems = []
    if not sep or not interface or not channel:
        problems.append(f"{where} = {text!r}: must be {allowed}")
    elif interface not in (known := python_can().interfaces.VALID_INTERFACES):
        problems.append(f"{where} = {text!r}: unknown interface {interface!r}; python-can "
                        f"knows {', '.join(sorted(known))}")
    bitrate = None
    if at:
        low, high = BITRATE_RANGE
        if not bitrate_text.isdigit() or not low <= int(bitrate_text) <= high:
            problems.append(f"{where} = {text!r}: bitrate {bitrate_text!r} must be a whole "
                            f"number of bit/s within [{low}, {high}]")
        else:
            bitrate = int(bitrate_text)
    if problems:
        raise InputError(source, problems)
    return BusSpec(interface, channel, bitrate)


def open_bus(spec: BusSpec, default_bitrate: int) -> can.BusABC:
    """Opens the bus; python-can's errors (can.CanError, OSError, ...) pass through."""
    kwargs: dict = {}
    if spec.bitrate is not None or spec.interface not in NO_BITRATE:
        kwargs["bitrate"] = spec.bitrate or default_bitrate
    return python_can().Bus(interface=spec.interface, channel=spec.channel, **kwargs)
