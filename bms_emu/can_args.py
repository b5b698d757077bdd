"""The CAN options of the commands that run the firmware (`serve`, `run`): which bus, which
frame set, checked before anything runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bms.data.validation import Problems
from bms.host.device import Device
from bms.links.can.bus_spec import FORMS, parse_bus_spec
from bms.links.can.frame_sets import DEFAULT, NAMES, SPECS, frame_set

if TYPE_CHECKING:
    from bms.links.can.link import CanLink


def add_can_arguments(p) -> None:
    p.add_argument("--can", metavar="INTERFACE:CHANNEL[@BITRATE]",
                   help="also speak to an inverter on a CAN bus, any python-can interface: "
                   + ", ".join(FORMS) + " (docs/can.md; README: Connect an inverter)")
    p.add_argument("--can-protocol", choices=NAMES, default=DEFAULT,
                   help="the frame set on --can: "
                   + "; ".join(f"{name}: {spec.summary}" for name, spec in SPECS.items())
                   + f" (default {DEFAULT}; `bms-emu can-dbc NAME` prints its DBC)")


def check_can_arguments(args, problems: Problems) -> None:
    if args.can is not None:
        problems.take(parse_bus_spec, args.can, "--can", problems.source)


def can_links(args, device: Device) -> list[CanLink]:
    """The link --can asks for (checked already), if any."""
    if args.can is None:
        return []
    # here, not at the top: python-can and cantools only with --can (start-up time)
    from bms.links.can.link import CanLink

    return [CanLink(parse_bus_spec(args.can), frame_set(args.can_protocol), device)]
