"""`bms-emu can-dbc NAME`: print a CAN frame set's DBC file, as the package ships it and
`serve --can` speaks it, for a CAN tool (cantools, SavvyCAN, a vendor's analyser)."""

from __future__ import annotations

import sys

from bms.links.can.frame_sets import NAMES, SPECS, dbc_text


def add_parser(sub) -> None:
    p = sub.add_parser(
        "can-dbc",
        description="Print the DBC file of a CAN frame set (docs/can.md): "
        + "; ".join(f"{name}: {spec.summary}" for name, spec in SPECS.items())
        + ". `bms-emu can-dbc pylon-lv > pylon_lv.dbc` loads in any DBC tool.")
    p.add_argument("name", choices=NAMES, help="the frame set")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    sys.stdout.write(dbc_text(args.name))
    return 0
