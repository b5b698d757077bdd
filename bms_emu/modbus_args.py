"""The Modbus options of `serve`, and the one place they become the Modbus link."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bms.data.validation import InputError, Problems
from bms.host.device import Device
from bms.host.policy import parse_policy
from bms.links.modbus.address import FORMS, parse_address
from bms.links.modbus.pack_view import nameplate_of
from bms.links.modbus.sunspec_points import WRITABLE_COMMANDS

if TYPE_CHECKING:
    from bms.links.modbus.server import ModbusLink

UNIT_RANGE = (1, 247)  # a Modbus serial line's unit addresses
DEFAULT_UNIT = 1
SOURCE = "--modbus-commands"


def add_modbus_arguments(p) -> None:
    p.add_argument("--modbus", metavar="ADDRESS",
                   help="also serve the pack as a SunSpec battery (models 1, 802, 803, 804, "
                   f"805; docs/modbus.md) on Modbus: {FORMS}")
    p.add_argument("--modbus-unit", type=int, default=None, metavar="ID",
                   help=f"the unit id RTU answers to, {UNIT_RANGE[0]}..{UNIT_RANGE[1]} "
                   f"(default {DEFAULT_UNIT}); TCP answers any")
    p.add_argument("--modbus-commands", metavar="POLICY", default="",
                   help="what Modbus writes may change, each optionally limited: "
                   f"{', '.join(WRITABLE_COMMANDS)}; e.g. 'state=run|standby,clear-faults' "
                   "(state: SetOp, StrSetCon, SetCon; clear-faults: AlmRst). Default: none, "
                   "read-only; a write not enabled is answered ILLEGAL_FUNCTION")


def check_modbus_arguments(args, problems: Problems) -> None:
    """Every bad Modbus option, added to `problems`; fills in `args.modbus_unit`."""
    if args.modbus is None:
        for flag, given in (("--modbus-unit", args.modbus_unit is not None),
                            (SOURCE, bool(args.modbus_commands))):
            if given:
                problems.add(flag, getattr(args, flag[2:].replace("-", "_")), "needs --modbus")
        return
    problems.take(parse_address, args.modbus)
    if args.modbus_unit is None:
        args.modbus_unit = DEFAULT_UNIT
    problems.check_range("--modbus-unit", args.modbus_unit, *UNIT_RANGE)
    policy = problems.take(parse_policy, args.modbus_commands, SOURCE)
    if policy is not None:
        problems.take(_check_writable, policy.limits)


def _check_writable(limits) -> None:
    other = [name for name in limits if name not in WRITABLE_COMMANDS]
    if other:
        raise InputError(SOURCE, [f"{', '.join(other)}: no Modbus point does that; Modbus "
                                  f"writes may enable {', '.join(WRITABLE_COMMANDS)}"])


def modbus_links(args, device: Device, cells_per_temp_sensor: int) -> list[ModbusLink]:
    """The Modbus link `--modbus` asks for, if any (the options checked already)."""
    if args.modbus is None:
        return []
    # here, not at the top: pymodbus only with --modbus (start-up time)
    from bms.links.modbus.server import ModbusLink

    policy = parse_policy(args.modbus_commands, SOURCE)
    plate = nameplate_of(device, args.pack_id, args.modbus_unit, cells_per_temp_sensor,
                         remote_control=policy.enabled("state"))
    return [ModbusLink(parse_address(args.modbus), device, plate, policy)]
