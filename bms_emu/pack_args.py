"""The pack, load and injection options that `run`, `serve` and `rig` share, declared from
the one table of them (`hil.pack_options.PACK_OPTIONS`)."""

from __future__ import annotations

from bms.data.validation import Problems
from hil.pack_options import PACK_OPTIONS, PackOption, check_pack_values


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
