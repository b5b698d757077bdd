"""The pack, load and injection options that `run`, `serve` and `rig` share, declared from
the one table of them (`hil.pack_options.PACK_OPTIONS`)."""

from __future__ import annotations

from bms.data.validation import Problems
from bms.links.can.bus_spec import parse_bus_spec
from hil.injections import Injection
from hil.inverter_load import InverterLoad
from hil.loads import Load, resolve_profile
from hil.pack import SimulatedPack
from hil.pack_options import PACK_OPTIONS, PackOption, check_pack_values, parse_injections

INVERTER_PROFILE = "inverter"


def add_pack_arguments(p, plant: bool = True) -> None:
    """The pack's make-up; with `plant`, also what the simulated pack starts from."""
    for option in PACK_OPTIONS:
        if option.plant and not plant:
            continue
        extra = {"type": option.kind} if option.kind is not str else {}
        if option.metavar is not None:
            extra["metavar"] = option.metavar
        if option.repeat:
            extra["action"] = "append"
        p.add_argument(option.flag, default=option.default, help=option.help.replace("%", "%%"),
                       **extra)


def add_config_argument(p) -> None:
    p.add_argument("--config", metavar="FILE.toml",
                   help="firmware configuration overriding any subset of the defaults "
                   "(see `bms-emu config --defaults`)")


def _flag(option: PackOption) -> str:
    return option.flag


def check_pack_arguments(args, problems: Problems) -> None:
    check_pack_values(args, problems, _flag)


def plant_inputs(args, pack: SimulatedPack, problems: Problems
                 ) -> tuple[tuple[Injection, ...] | None, Load | None]:
    """--inject and --profile for `pack`. Their problems go to `problems` (None for an input
    that had some), for the caller to list with every other one at once. `--profile
    inverter`: the pack draws what `bms-emu inverter` drives on the --can bus."""
    injections = problems.take(parse_injections, args.inject, pack)
    if args.profile != INVERTER_PROFILE:
        return injections, problems.take(resolve_profile, args.profile, pack.energy_wh,
                                         pack.capacity_ah)
    if args.can is None:
        problems.add("--profile", args.profile, "the pack's current comes from `bms-emu "
                     "inverter` on a CAN bus: give that bus as --can INTERFACE:CHANNEL too")
        return injections, None
    spec = problems.take(parse_bus_spec, args.can, "--can", problems.source)
    return injections, None if spec is None else InverterLoad(spec)
