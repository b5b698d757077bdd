"""`bms-emu config`: print the default firmware configuration, or check a file."""

from __future__ import annotations

from bms.data.config import default_config
from bms.data.config_toml import config_to_toml, load_config
from bms.data.presets import DEFAULT_PRESET, resolve_chemistry
from bms.data.validation import Problems


def add_parser(sub) -> None:
    p = sub.add_parser(
        "config",
        description="Print the firmware configuration defaults for a pack as TOML (every key "
        "with its unit and meaning), or check a configuration file against a pack. A file may "
        "set any subset of the keys; `bms-emu run --config FILE` uses it. Pack voltage and "
        "current thresholds depend on the pack, so check a file with the same --chemistry, "
        "--series, --parallel and --capacity-ah you run with.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--defaults", action="store_true",
                      help="print the default configuration for the pack as TOML")
    what.add_argument("--check", metavar="FILE.toml",
                      help="check a configuration file: print 'ok', or every problem (exit 2)")
    p.add_argument("--chemistry", default=DEFAULT_PRESET, metavar="NAME|PATH",
                   help="chemistry preset (see `bms-emu chemistries`) or cell profile TOML "
                   f"(default: {DEFAULT_PRESET})")
    p.add_argument("--series", type=int, default=16, metavar="N",
                   help="cells in series (default: 16)")
    p.add_argument("--parallel", type=int, default=1, metavar="P",
                   help="cells in parallel per series group (default: 1)")
    p.add_argument("--capacity-ah", type=float, default=None, metavar="AH",
                   help="capacity of one cell, Ah (default: the chemistry's)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    problems = Problems("bms-emu config")
    problems.check_range("--series", args.series, 1, 1024)
    problems.check_range("--parallel", args.parallel, 1, 256)
    if args.capacity_ah is not None:
        problems.check_range("--capacity-ah", args.capacity_ah, 1e-3, 1e5)
    problems.raise_if_any()
    chem = resolve_chemistry(args.chemistry)
    cell_ah = args.capacity_ah or chem.capacity_ah
    chem = chem.with_capacity(cell_ah)
    pack_ah = cell_ah * args.parallel  # as hil.pack.SimulatedPack.capacity_ah
    if args.check:
        load_config(args.check, chem, args.series, pack_ah)
        print("ok")
        return 0
    cfg = default_config(chem, args.series, pack_ah)
    print(f"# Defaults for a {args.series}S{args.parallel}P pack of {chem.name} cells, "
          f"{cell_ah:g} Ah each ({pack_ah:g} Ah per series group).")
    print(config_to_toml(cfg, chem), end="")
    return 0
