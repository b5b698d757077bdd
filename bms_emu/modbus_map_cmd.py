"""`bms-emu modbus-map`: print the Modbus (SunSpec) map reference, docs/modbus.md, as
Markdown. Addresses and scale factors are those of the default pack; the document is
regenerated, never edited."""

from __future__ import annotations

from bms.core.firmware import Firmware
from bms.data.presets import DEFAULT_PRESET, resolve_chemistry
from bms.host.device import Device, Identity
from bms.links.modbus.pack_view import nameplate_of
from bms.links.modbus.reference import render
from bms.links.modbus.register_map import SunSpecMap
from protocol.messages import Mode

SERIES = 16  # the pack `bms-emu config --defaults` describes
CELLS_PER_TEMP_SENSOR = 4  # `serve`'s default


def add_parser(sub) -> None:
    p = sub.add_parser(
        "modbus-map",
        description="Print the reference of what `serve --modbus` serves - every SunSpec "
        "point's address, type, scale factor and value, the writes, exceptions, state and "
        "alarm tables - as Markdown, generated from the definitions: "
        "`bms-emu modbus-map > docs/modbus.md`.")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    chem = resolve_chemistry(DEFAULT_PRESET)
    fw = Firmware(chem, SERIES, chem.capacity_ah)
    n_temp = -(-SERIES // CELLS_PER_TEMP_SENSOR)
    device = Device(fw, chem, Identity(chem.name, Mode.SIM, 1, chem.capacity_ah, n_temp))
    plate = nameplate_of(device, "PACK-ID", 1, CELLS_PER_TEMP_SENSOR, remote_control=False)
    print(render(SunSpecMap(plate), f"the default pack ({DEFAULT_PRESET}, {SERIES}S1P)"),
          end="")
    return 0
