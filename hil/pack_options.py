"""The simulated pack as data: the options `run`, `serve`, `rig` and a scenario's [pack] table
share (name, type, default, range, help), and the one place their values become a simulated
pack, a firmware configuration and a schedule of faults.

The command line (`bms_emu.pack_args`) and scenario files (`hil.scenario_file`) both read
`PACK_OPTIONS`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from bms.data.chemistry import Chemistry
from bms.data.config import FirmwareConfig
from bms.data.config_toml import parse_config
from bms.data.presets import DEFAULT_PRESET, resolve_chemistry
from bms.data.validation import InputError, Problems, read_toml
from hil.aging import AgeSpec
from hil.injections import Injection, injection_help, parse_injection
from hil.pack import PackSpec, SimulatedPack
from hil.sensors import SensorSpec


@dataclass(frozen=True)
class PackOption:
    """One option of the pack: `--name-with-dashes` on the command line, `file_key` in a
    scenario's [pack] table (None: not in [pack], another table holds it)."""

    name: str  # the attribute: args.<name>
    kind: type  # int, float or str
    default: object
    help: str
    metavar: str | None = None
    low: float | None = None  # the allowed range, checked by `check_pack_values`
    high: float | None = None
    plant: bool = False  # what the simulated pack starts from: not for `serve --hil`
    file_key: str | None = ""  # "": the same as name
    repeat: bool = False  # may be given several times (a list)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str | None:
        return self.name if self.file_key == "" else self.file_key


PACK_OPTIONS: tuple[PackOption, ...] = (
    PackOption("chemistry", str, DEFAULT_PRESET, metavar="NAME|PATH",
               help="chemistry preset (see `bms-emu chemistries`) or cell profile TOML"),
    PackOption("series", int, 16, metavar="N", help="cells in series", low=1, high=1024),
    PackOption("parallel", int, 1, metavar="P", help="cells in parallel per series group",
               low=1, high=256),
    PackOption("capacity_ah", float, None, metavar="AH",
               help="capacity of one cell, Ah (default: the chemistry's)", low=1e-3, high=1e5),
    PackOption("cells_per_temp_sensor", int, 4, metavar="N",
               help="cells sharing one temperature sensor", low=1, high=1024),
    PackOption("profile", str, "datacenter", metavar="NAME|PATH", plant=True, file_key=None,
               help="load: datacenter, pulses[:SEED] (random -2C..+0.5C pulses with rests), "
               "rest, current:A (or current:0.5C), power:W (negative = discharge), "
               "cycles:C (full cycles at C-rate C), a CSV file with time_s,current_a or "
               "time_s,power_w, or inverter: the current `bms-emu inverter` drives on the "
               "--can bus (not in scenario files)"),
    PackOption("seed", int, 0, plant=True, help="seed for cell spread and sensor noise",
               low=0, high=2**32 - 1),
    PackOption("ambient_c", float, 25.0, metavar="C", plant=True,
               help="ambient temperature, °C", low=-60.0, high=80.0),
    PackOption("initial_soc", float, 90.0, metavar="PCT", plant=True,
               file_key="initial_soc_pct", help="initial state of charge, percent",
               low=0.0, high=100.0),
    PackOption("age_years", float, 0.0, metavar="Y", plant=True,
               help="the cells start as if stored Y years at 25 °C and --age-soc (each cell "
               "with its own seeded rate; the chemistry's [aging] laws)", low=0.0, high=50.0),
    PackOption("age_cycles", float, 0.0, metavar="N", plant=True,
               help="the cells start as if cycled N full cycles (0-100 %) at 0.5C and 25 °C "
               "(on top of --age-years)", low=0.0, high=20000.0),
    PackOption("age_soc", float, 50.0, metavar="PCT", plant=True, file_key="age_soc_pct",
               help="the storage SoC of --age-years, percent", low=0.0, high=100.0),
    PackOption("inject", str, [], metavar="AT:KIND[:k=v,...]", plant=True, file_key=None,
               repeat=True,
               help="schedule a fault, repeatable; AT is a duration. Kinds: " + injection_help()),
)

# What a scenario's [pack] table may hold, by its key.
PACK_TABLE: dict[str, PackOption] = {o.key: o for o in PACK_OPTIONS if o.key is not None}


class PackValues(Protocol):
    """Parsed arguments, or a scenario's [pack]: the options by name (the plant's may be
    missing, as for `serve --hil`)."""

    chemistry: str
    series: int
    parallel: int
    capacity_ah: float | None
    cells_per_temp_sensor: int


def check_pack_values(values: PackValues, problems: Problems,
                      label: Callable[[PackOption], str]) -> None:
    """Each option that `values` holds, against its range; `label` names it in a problem
    (`--series` on the command line, `pack.series` in a scenario)."""
    for option in PACK_OPTIONS:
        value = getattr(values, option.name, None)
        if value is not None and (option.low is not None or option.high is not None):
            problems.check_range(label(option), value, option.low, option.high)


def pack_spec(values: PackValues) -> PackSpec:
    return PackSpec(
        n_series=values.series,
        n_parallel=values.parallel,
        capacity_ah=values.capacity_ah,
        ambient_c=getattr(values, "ambient_c", 25.0),
        initial_soc=getattr(values, "initial_soc", 90.0) / 100.0,
        seed=getattr(values, "seed", 0),
        sensors=replace(SensorSpec(), cells_per_temp_sensor=values.cells_per_temp_sensor),
        age=AgeSpec(years=getattr(values, "age_years", 0.0),
                    cycles=getattr(values, "age_cycles", 0.0),
                    storage_soc=getattr(values, "age_soc", 50.0) / 100.0),
    )


def build_pack(values: PackValues, tick_s: float,
               kind: type[SimulatedPack] = SimulatedPack,
               chem: Chemistry | None = None) -> SimulatedPack:
    """The simulated pack the values describe; `kind` a SimulatedPack with faults of its own
    (a scenario's load that disregards the limits); `chem` the chemistry already read (a
    scenario case run where its cell profile file is not)."""
    return kind(chem if chem is not None else resolve_chemistry(values.chemistry),
                pack_spec(values), tick_s)


@dataclass(frozen=True)
class PackConfig:
    """The firmware's view of a pack: chemistry, size and configuration, with the TOML
    overrides the configuration came from (a host may change them at run time)."""

    chem: Chemistry
    n_series: int
    capacity_ah: float  # the pack's
    config: FirmwareConfig | None
    overrides: dict


def firmware_config(config_path: str | None, pack: SimulatedPack) -> PackConfig:
    """The file is read once: its table is both the configuration and the overrides a host
    may change at run time."""
    if not config_path:
        return PackConfig(pack.chem, pack.n_series, pack.capacity_ah, None, {})
    overrides = read_toml(config_path)
    config = parse_config(overrides, str(config_path), pack.chem, pack.n_series,
                          pack.capacity_ah)
    return PackConfig(pack.chem, pack.n_series, pack.capacity_ah, config, overrides)


def parse_injections(specs: list[str], pack: SimulatedPack) -> tuple[Injection, ...]:
    """`--inject` specs as a schedule; InputError lists every bad one."""
    injections, errors = [], []
    for text in specs:
        try:
            injections.append(parse_injection(text, pack.n_series, pack.sensors.n_temp))
        except InputError as exc:  # its source, `--inject TEXT`, is said once: as "--inject"
            errors.extend(f"{text}: {p}" for p in exc.problems)
    if errors:
        raise InputError("--inject", errors)
    return tuple(injections)
