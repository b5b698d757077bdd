"""The pack, load and injection options that `run`, `serve` and `rig` share, and the one
place they become a simulated pack, a firmware configuration and a schedule of faults."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bms.chemistry import Chemistry, resolve_chemistry
from bms.config import FirmwareConfig
from bms.config_toml import parse_config
from bms.presets import DEFAULT_PRESET
from bms.validation import InputError, Problems, read_toml
from hil.injections import Injection, injection_help, parse_injection
from hil.pack import PackSpec, SimulatedPack
from hil.sensors import SensorSpec


def add_pack_arguments(p, plant: bool = True) -> None:
    """The pack's make-up; with `plant`, also what the simulated pack starts from."""
    p.add_argument("--chemistry", default=DEFAULT_PRESET, metavar="NAME|PATH",
                   help="chemistry preset (see `bms-emu chemistries`) or cell profile TOML")
    p.add_argument("--series", type=int, default=16, metavar="N", help="cells in series")
    p.add_argument("--parallel", type=int, default=1, metavar="P",
                   help="cells in parallel per series group")
    p.add_argument("--capacity-ah", type=float, default=None, metavar="AH",
                   help="capacity of one cell, Ah (default: the chemistry's)")
    p.add_argument("--cells-per-temp-sensor", type=int, default=4, metavar="N",
                   help="cells sharing one temperature sensor")
    if not plant:
        return
    p.add_argument("--profile", default="datacenter", metavar="NAME|PATH",
                   help="load: datacenter, pulses[:SEED] (random -2C..+0.5C pulses with rests), "
                   "rest, current:A, power:W (negative = discharge) or a CSV file with "
                   "time_s,current_a or time_s,power_w")
    p.add_argument("--seed", type=int, default=0, help="seed for cell spread and sensor noise")
    p.add_argument("--ambient-c", type=float, default=25.0, metavar="C",
                   help="ambient temperature, °C")
    p.add_argument("--initial-soc", type=float, default=90.0, metavar="PCT",
                   help="initial state of charge, percent")
    p.add_argument("--inject", action="append", default=[], metavar="AT:KIND[:k=v,...]",
                   help="schedule a fault, repeatable; AT is a duration. Kinds: "
                   + injection_help().replace("%", "%%"))


def add_config_argument(p) -> None:
    p.add_argument("--config", metavar="FILE.toml",
                   help="firmware configuration overriding any subset of the defaults "
                   "(see `bms-emu config --defaults`)")


def check_pack_arguments(args, problems: Problems) -> None:
    problems.check_range("--series", args.series, 1, 1024)
    problems.check_range("--parallel", args.parallel, 1, 256)
    problems.check_range("--cells-per-temp-sensor", args.cells_per_temp_sensor, 1, 1024)
    if args.capacity_ah is not None:
        problems.check_range("--capacity-ah", args.capacity_ah, 1e-3, 1e5)
    if hasattr(args, "initial_soc"):
        problems.check_range("--initial-soc", args.initial_soc, 0.0, 100.0)
        problems.check_range("--ambient-c", args.ambient_c, -60.0, 80.0)


def pack_spec(args) -> PackSpec:
    return PackSpec(
        n_series=args.series,
        n_parallel=args.parallel,
        capacity_ah=args.capacity_ah,
        ambient_c=getattr(args, "ambient_c", 25.0),
        initial_soc=getattr(args, "initial_soc", 90.0) / 100.0,
        seed=getattr(args, "seed", 0),
        sensors=replace(SensorSpec(), cells_per_temp_sensor=args.cells_per_temp_sensor),
    )


def build_pack(args, tick_s: float) -> SimulatedPack:
    return SimulatedPack(resolve_chemistry(args.chemistry), pack_spec(args), tick_s)


@dataclass(frozen=True)
class PackConfig:
    """The firmware's view of a pack: chemistry, size and configuration, with the TOML
    overrides the configuration came from (a host may change them at run time)."""

    chem: Chemistry
    n_series: int
    capacity_ah: float  # the pack's
    config: FirmwareConfig | None
    overrides: dict


def firmware_config(args, pack: SimulatedPack) -> PackConfig:
    """The file is read once: its table is both the configuration and the overrides a host
    may change at run time."""
    if not args.config:
        return PackConfig(pack.chem, pack.n_series, pack.capacity_ah, None, {})
    overrides = read_toml(args.config)
    config = parse_config(overrides, str(args.config), pack.chem, pack.n_series,
                          pack.capacity_ah)
    return PackConfig(pack.chem, pack.n_series, pack.capacity_ah, config, overrides)


def parse_injections(args, pack: SimulatedPack) -> tuple[Injection, ...]:
    injections, errors = [], []
    for text in args.inject:
        try:
            injections.append(parse_injection(text, pack.n_series, pack.sensors.n_temp))
        except InputError as exc:
            errors.extend(f"{exc.source}: {p}" for p in exc.problems)
    if errors:
        raise InputError("--inject", errors)
    return tuple(injections)
