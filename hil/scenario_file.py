"""Scenario files: a scripted test of the firmware against the simulated pack, in TOML,
read and checked once into frozen data (`Scenario`) before anything runs.

Why and how: docs/internals.md, hil/scenario_file.py.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from bms.core.signals import HOST_REQUESTS, State
from bms.data.chemistry import Chemistry
from bms.data.config import FirmwareConfig, default_config
from bms.data.config_toml import parse_config
from bms.data.durations import parse_duration_s
from bms.data.faults import FAULT_CODES, Level
from bms.data.parameters import ParameterError, apply_changes, catalogue
from bms.data.presets import PRESETS, resolve_chemistry
from bms.data.quantities import QUANTITY_INDEX
from bms.data.validation import InputError, Problems, read_toml
from hil.injections import Injection, parse_injection
from hil.loads import StepProfile, resolve_profile
from hil.pack import SimulatedPack
from hil.pack_options import PACK_TABLE, PackOption, build_pack, check_pack_values
from hil.scenario_checks import (
    BOUND_KEYS,
    Bound,
    Check,
    Condition,
    ContactorsAre,
    FaultActive,
    FaultInactive,
    StateIs,
)

TOP_KEYS = ("name", "description", "duration", "tick", "pack", "load", "config", "timeline",
            "expect", "expect_never", "bounds", "campaign")  # campaign: hil.scenario_campaign
DEFAULT_TICK_S = 0.1
TICK_RANGE_S = (1e-3, 10.0)  # as `run --tick`
MAX_DURATION_S = 366 * 86400.0
TIME_EPS = 1e-9  # in ticks: a time a rounding error past a step still belongs to it
# A host's requests, and its Reset: a new firmware as after a power cycle
# (`bms.runtime.restart`), with what a store hands a firmware at power-up.
SCENARIO_REQUESTS = (*HOST_REQUESTS, "reset")
TIMELINE_ACTIONS = ("inject", "request", "config", "rig", "load")
RIG_WORDS = ("silent", "back")
CONTACTOR_WORDS = ("open", "closed")
FAULT_KEYS = ("fault", "level", "quantity")
EXPECT_KEYS = ("at", "until", "name", *FAULT_KEYS, "no_fault", "state", "contactors",
               *BOUND_KEYS)
NEVER_KEYS = ("from", "until", "name", *FAULT_KEYS, "state", "contactors")
WINDOW_KEYS = ("at", "from", "until", "name")
BOUNDS_AFTER_KEY = "soc_error_after"
CHARGE_V_RANGE = (0.5, 10.0)  # a charger's per-cell setpoint, V
_INDEXED = re.compile(r"(.+)\[(\d+)\]")  # `timeline[1]`: an entry of an array
KIND_WORDS = {int: "must be an integer", float: "must be a number", str: "must be a string"}


@dataclass(frozen=True)
class PackSection:
    """The pack as `run`'s options give it: the attribute names are the options' names, so
    the one pack-building code (`hil.pack_options`) takes it as it takes parsed arguments."""

    chemistry: str
    series: int
    parallel: int
    capacity_ah: float | None
    cells_per_temp_sensor: int
    initial_soc: float  # percent, as --initial-soc
    ambient_c: float
    seed: int
    age_years: float  # what the cells lived before (`hil.aging.AgeSpec`), as --age-years
    age_cycles: float
    age_soc: float  # percent, as --age-soc


@dataclass(frozen=True)
class LoadSection:
    profile: StepProfile
    profile_text: str
    ignore_limits: bool = False
    charge_v_per_cell: float | None = None


@dataclass(frozen=True)
class Action:
    """A timeline entry other than an injection (those go to the runner's schedule)."""

    step: int
    at_s: float
    kind: str  # "request", "config", "rig" or "load"
    value: object  # request name, FirmwareConfig, True for silent, StepProfile
    where: str  # "timeline[3]", for messages


@dataclass(frozen=True)
class Scenario:
    path: str
    name: str
    description: str
    duration_s: float
    tick_s: float
    n_steps: int
    pack: PackSection
    load: LoadSection
    config: FirmwareConfig | None
    injections: tuple[Injection, ...]
    actions: tuple[Action, ...]
    checks: tuple[Check, ...]
    chem: Chemistry  # [pack] chemistry read once: a case carries its cells, not a path
    case: tuple[tuple[str, object], ...] = ()  # a campaign's grid point; () for the file alone


def load_scenario(path: str | Path, changes: dict[str, object] | None = None) -> Scenario:
    """Reads and checks a scenario file; InputError names the file and every problem.
    `changes`: dotted keys set over the file's (`pack.series`, `load.profile`, `tick`), to
    run its story on another pack or load; checked as the file's own keys are."""
    data = read_toml(path)
    set_keys(data, changes or {}, str(path))
    return parse_scenario(data, str(path), Path(path).parent)


def set_keys(data: dict, changes: dict[str, object], path: str, source: str = "--set") -> None:
    """Dotted keys set over a file's data, in place; `timeline[1].inject` names an entry of
    an array of tables (from 0, as the file's messages count them). InputError names each
    key that cannot be set, under `source` (`--set`, `[campaign]`)."""
    problems = Problems(source)
    for key, value in changes.items():
        *tables, last = key.split(".")
        top = _INDEXED.sub(r"\1", (tables or [last])[0])
        if top not in TOP_KEYS:  # a new table named here would be reported as the file's
            problems.add(key, value, f"unknown key or table {top!r}; allowed: {list(TOP_KEYS)}")
            continue
        table = data
        for name in tables:
            table = _child_table(table, name)
            if table is None:
                problems.add(key, value, f"{name} is not a table in {path}")
                break
        else:
            table[last] = value
    problems.raise_if_any()


def _child_table(table: dict, name: str) -> dict | None:
    """`name` in `table` (made if missing), or entry `i` of `name[i]`; None if not a table."""
    indexed = _INDEXED.fullmatch(name)
    if indexed is None:
        child = table.setdefault(name, {})
        return child if isinstance(child, dict) else None
    entries, i = table.get(indexed[1]), int(indexed[2])
    ok = isinstance(entries, list) and i < len(entries) and isinstance(entries[i], dict)
    return entries[i] if ok else None


def parse_scenario(data: dict, source: str, base_dir: Path = Path(".")) -> Scenario:
    problems = Problems(source)
    for key in data:
        if key not in TOP_KEYS:
            problems.add(key, data[key], f"unknown key or table; allowed: {list(TOP_KEYS)}")
    name = _text(problems, "name", data.get("name", Path(source).stem))
    description = _text(problems, "description", data.get("description", ""))
    before = len(problems.items)
    tick_s = _number(problems, "tick", data.get("tick", DEFAULT_TICK_S), *TICK_RANGE_S)
    duration_s = _duration(problems, "duration", data.get("duration"), required=True)
    if duration_s is not None:
        problems.check_range("duration", duration_s, tick_s or 0.0, MAX_DURATION_S)
    clock_ok = len(problems.items) == before
    pack_section = _pack(problems, _table(problems, data, "pack"), base_dir)
    if pack_section is None or not clock_ok:  # nothing else can be checked without them
        problems.raise_if_any()
    n_steps = round(duration_s / tick_s)
    clock = _Clock(tick_s, n_steps)
    pack = build_pack(pack_section, tick_s)  # a probe for the sizes, never run
    load = _load(problems, _table(problems, data, "load"), pack, base_dir)
    overrides = _table(problems, data, "config")
    config = _config(problems, overrides, pack)
    rows = _fault_rows(pack)
    injections, actions = _timeline(problems, data.get("timeline", []), clock, pack, base_dir)
    if config is not None or not overrides:
        _check_config_writes(problems, actions, overrides, pack)
    checks = [*_expects(problems, data, clock, rows), *_nevers(problems, data, clock, rows),
              *_bounds(problems, _table(problems, data, "bounds"), clock)]
    if not any(k in data for k in ("expect", "expect_never", "bounds")):
        problems.add("expect", None, "a scenario must check something: give expect, "
                     "expect_never or bounds")
    problems.raise_if_any()
    return Scenario(source, name, description, duration_s, tick_s, n_steps, pack_section, load,
                    config, tuple(injections), tuple(actions), tuple(checks), pack.chem)


# --- values --------------------------------------------------------------------------------


class _Clock:
    """Times to steps: the first step at or after a time; the duration is the last step."""

    def __init__(self, tick_s: float, n_steps: int):
        self.tick_s = tick_s
        self.n_steps = n_steps

    @property
    def duration_s(self) -> float:
        return self.n_steps * self.tick_s

    def step(self, problems: Problems, where: str, value: object,
             default: int | None = None) -> int | None:
        if value is None and default is not None:
            return default
        t_s = _duration(problems, where, value, required=True)
        if t_s is None:
            return None
        if t_s > self.duration_s + TIME_EPS * self.tick_s:
            problems.add(where, value, f"must be at most the duration, {self.duration_s:g} s")
            return None
        # The end of the run is its last step, one tick before the duration.
        return min(math.ceil(t_s / self.tick_s - TIME_EPS), self.n_steps - 1)

    def time_s(self, step: int) -> float:
        return step * self.tick_s  # as the runner counts: exactly its now_s


def _text(problems: Problems, where: str, value: object) -> str:
    if isinstance(value, str):
        return value
    problems.add(where, value, "must be a string")
    return ""


def _number(problems: Problems, where: str, value: object, low: float | None = None,
            high: float | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(where, value, "must be a number")
        return None
    problems.check_range(where, float(value), low, high)
    return float(value)


def _duration(problems: Problems, where: str, value: object,
              required: bool = False) -> float | None:
    """Seconds from a number or a duration text ("90s", "5m", "1h30m")."""
    if value is None:
        if required:
            problems.add(where, None, "is required: seconds or a duration such as 90s or 5m")
        return None
    if isinstance(value, str):
        try:
            return parse_duration_s(value)
        except ValueError as exc:
            problems.add(where, value, str(exc))
            return None
    number = _number(problems, where, value, 0.0, None)
    return number if number is not None and number >= 0.0 else None


def _table(problems: Problems, data: dict, key: str) -> dict:
    value = data.get(key, {})
    if isinstance(value, dict):
        return value
    problems.add(key, value, "must be a table")
    return {}


def _unknown_keys(problems: Problems, where: str, table: dict, allowed) -> None:
    for key, value in table.items():
        if key not in allowed:
            problems.add(f"{where}.{key}", value, f"unknown key; allowed: {list(allowed)}")


def _nested_problems(problems: Problems, where: str, value: object, exc: InputError) -> None:
    problems.add(where, value, "; ".join(exc.problems))


def _local_path(text: str, base_dir: Path) -> str:
    """A relative path that exists beside the scenario file, else the text as given."""
    candidate = base_dir / text
    return str(candidate) if not Path(text).is_absolute() and candidate.exists() else text


# --- [pack], [load], [config] ----------------------------------------------------------------


def _pack_key(option: PackOption) -> str:
    return f"pack.{option.key}"


def _pack(problems: Problems, table: dict, base_dir: Path) -> PackSection | None:
    _unknown_keys(problems, "pack", table, PACK_TABLE)
    values: dict[str, object] = {}
    bad_types = False
    for key, option in PACK_TABLE.items():
        value = table.get(key, option.default)
        if key in table and not _is_kind(value, option.kind):
            problems.add(f"pack.{key}", value, KIND_WORDS[option.kind])
            value, bad_types = option.default, True  # the other keys are still checked
        elif option.kind is float and value is not None:
            value = float(value)
        values[option.name] = value
    if values["chemistry"] not in PRESETS:
        values["chemistry"] = _local_path(values["chemistry"], base_dir)
    section = PackSection(**values)
    # The ranges are `run`'s, from the one table of pack options.
    ranges = Problems("[pack]")
    check_pack_values(section, ranges, _pack_key)
    problems.items.extend(ranges.items)
    try:
        resolve_chemistry(section.chemistry)
    except InputError as exc:
        _nested_problems(problems, "pack.chemistry", table.get("chemistry"), exc)
        return None
    return None if ranges.items or bad_types else section


def _is_kind(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _profile(problems: Problems, where: str, value: object, pack: SimulatedPack,
             base_dir: Path) -> StepProfile | None:
    if not isinstance(value, str):
        problems.add(where, value, "must be a string: a profile as `run --profile` takes")
        return None
    try:
        return resolve_profile(_local_path(value, base_dir), pack.energy_wh, pack.capacity_ah)
    except InputError as exc:
        _nested_problems(problems, where, value, exc)
        return None


def _load(problems: Problems, table: dict, pack: SimulatedPack, base_dir: Path) -> LoadSection:
    _unknown_keys(problems, "load", table, ("profile", "ignore_limits", "charge_v_per_cell"))
    text = table.get("profile", "rest")
    profile = _profile(problems, "load.profile", text, pack, base_dir)
    ignore = table.get("ignore_limits", False)
    if not isinstance(ignore, bool):
        problems.add("load.ignore_limits", ignore, "must be true or false")
    charge_v = table.get("charge_v_per_cell")
    if charge_v is not None:
        charge_v = _number(problems, "load.charge_v_per_cell", charge_v, *CHARGE_V_RANGE)
    return LoadSection(profile, str(text), ignore is True, charge_v)


def _config(problems: Problems, overrides: dict, pack: SimulatedPack) -> FirmwareConfig | None:
    if not overrides:
        return None
    try:
        return parse_config(overrides, "config", pack.chem, pack.n_series, pack.capacity_ah)
    except InputError as exc:
        problems.items.extend(f"config.{p}" for p in exc.problems)
        return None


# --- [[timeline]] ------------------------------------------------------------------------------


def _entries(problems: Problems, data: dict, key: str) -> list[tuple[str, dict]]:
    """A single inline table or an array of tables, each with where the file has it."""
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, dict):
        return [(key, value)]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    problems.add(key, value, "must be a table or an array of tables")
    return []


def _timeline(problems: Problems, value: object, clock: _Clock, pack: SimulatedPack,
              base_dir: Path) -> tuple[list[Injection], list[Action]]:
    injections, actions = [], []
    for where, entry in _entries(problems, {"timeline": value}, "timeline"):
        _unknown_keys(problems, where, entry, ("at", *TIMELINE_ACTIONS))
        step = clock.step(problems, f"{where}.at", entry.get("at"))
        given = [k for k in TIMELINE_ACTIONS if k in entry]
        if len(given) != 1:
            problems.add(where, {k: entry[k] for k in given},
                         f"needs exactly one of {list(TIMELINE_ACTIONS)}")
            continue
        kind = given[0]
        text = entry[kind]
        at = f"{where}.{kind}"
        value = _action_value(problems, at, kind, text, pack, base_dir)
        if step is None or value is None:
            continue
        if kind == "inject":
            injections.append(replace(value, at_s=clock.time_s(step)))
        else:
            actions.append(Action(step, clock.time_s(step), kind, value, where))
    actions.sort(key=lambda a: a.step)  # stable: entries at one time keep the file's order
    return injections, actions


def _action_value(problems: Problems, where: str, kind: str, text: object,
                  pack: SimulatedPack, base_dir: Path) -> object:
    if kind == "config":
        return _parameter_changes(problems, where, text, pack)
    if kind == "load":
        return _profile(problems, where, text, pack, base_dir)
    if not isinstance(text, str):
        problems.add(where, text, "must be a string")
        return None
    if kind == "inject":
        try:
            return parse_injection(f"0:{text}", pack.n_series, pack.sensors.n_temp)
        except InputError as exc:
            _nested_problems(problems, where, text, exc)
            return None
    allowed = {"request": SCENARIO_REQUESTS, "rig": RIG_WORDS}[kind]
    if text not in allowed:
        problems.add(where, text, f"must be one of {list(allowed)}")
        return None
    return text == "silent" if kind == "rig" else text


def _flatten(table: dict, prefix: str = "") -> dict[str, object]:
    """{"limits": {"max_charge_a": 1}} and {"limits.max_charge_a": 1} alike, as dotted names."""
    out: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _parameter_changes(problems: Problems, where: str, table: object,
                       pack: SimulatedPack) -> dict[str, object] | None:
    """{dotted parameter name: value}, every name one a host may write."""
    if not isinstance(table, dict) or not table:
        problems.add(where, table, 'must be a table of parameters, e.g. '
                     '{ "limits.max_charge_a" = 1.0 } (names: `bms-emu config --defaults`)')
        return None
    changes = _flatten(table)
    ids = _parameter_ids(pack)
    for name, value in changes.items():
        if name not in ids:
            problems.add(f"{where}.{name}", value, "no such parameter (the names are the "
                         "dotted keys `bms-emu config --defaults` writes)")
    return changes if set(changes) <= set(ids) else None


def _parameter_ids(pack: SimulatedPack) -> dict[str, int]:
    return {p.name: p.id for p in catalogue(default_config(pack.chem, pack.n_series,
                                                           pack.capacity_ah))}


def _check_config_writes(problems: Problems, actions: list[Action], overrides: dict,
                         pack: SimulatedPack) -> None:
    """Each config write in time order over the overrides in effect then, refused or
    accepted exactly as a host's write is; the accepted configuration replaces the
    changes in the action (sent by id, as a host sends them)."""
    ids = _parameter_ids(pack)
    for i, action in enumerate(actions):
        if action.kind != "config":
            continue
        changes = [(ids[name], value) for name, value in action.value.items()]
        try:
            cfg, overrides = apply_changes(overrides, changes, pack.chem, pack.n_series,
                                           pack.capacity_ah)
        except ParameterError as exc:
            problems.add(f"{action.where}.config (at {action.at_s:g} s)", action.value,
                         f"refused as a host write would be ({exc.code}): "
                         + "; ".join(exc.problems))
            continue
        actions[i] = replace(action, value=cfg)


# --- checks --------------------------------------------------------------------------------


def _fault_rows(pack: SimulatedPack) -> frozenset[tuple[str, str, str | None]]:
    """What can be active: each protection row, and the faults raised outside the table."""
    rows = {(r.fault, r.level, r.quantity)
            for r in default_config(pack.chem, pack.n_series, pack.capacity_ah).protection}
    in_table = {f for f, _, _ in rows}
    return frozenset(rows | {(f, "FAULT", None) for f in FAULT_CODES if f not in in_table})


def _choice(problems: Problems, where: str, value: object, allowed) -> str | None:
    """`value` if it is one of `allowed` (names, or a StrEnum)."""
    if value is None:
        return None
    names = [str(name) for name in allowed]
    if isinstance(value, str) and value in names:
        return value
    problems.add(where, value, f"must be one of {names}")
    return None


def _fault(problems: Problems, where: str, entry: dict, rows) -> FaultActive | None:
    given = {k: entry[k] for k in FAULT_KEYS if k in entry}
    if not given:
        return None
    fault = _choice(problems, f"{where}.fault", entry.get("fault"), FAULT_CODES)
    level = _choice(problems, f"{where}.level", entry.get("level"), Level)
    quantity = _choice(problems, f"{where}.quantity", entry.get("quantity"), QUANTITY_INDEX)
    if len([v for v in (fault, level, quantity) if v is not None]) != len(given):
        return None
    cond = FaultActive(fault, level, quantity)
    if not any((fault is None or f == fault) and (level is None or lvl == level)
               and (quantity is None or q == quantity) for f, lvl, q in rows):
        levels = Counter(lvl for f, lvl, _ in rows if f == fault)
        have = sorted(lvl + (f" ({q})" if levels[lvl] > 1 else "")
                      for f, lvl, q in rows if f == fault)
        problems.add(where, given, f"no such protection row; {fault} has: {', '.join(have)}"
                     if fault else "no protection row matches")
        return None
    return cond


def _common(problems: Problems, where: str, entry: dict, rows) -> list[Condition]:
    conds: list[Condition] = []
    fault = _fault(problems, where, entry, rows)
    if fault is not None:
        conds.append(fault)
    state = _choice(problems, f"{where}.state", entry.get("state"), State)
    if state is not None:
        conds.append(StateIs(state))
    word = _choice(problems, f"{where}.contactors", entry.get("contactors"), CONTACTOR_WORDS)
    if word is not None:
        conds.append(ContactorsAre(word))
    return conds


def _label(where: str, entry: dict, window: str, conds: list[Condition], never: bool) -> str:
    joined = (" and " if never else "; ").join(c.describe() for c in conds)
    text = f"{'never ' if never else ''}{joined}"
    name = entry.get("name")
    return f"{where} {window}: " + (f"{name} ({text})" if isinstance(name, str) else text)


def _window(clock: _Clock, first: int, last: int, never: bool = False) -> str:
    a, b = clock.time_s(first), clock.time_s(last)
    if never and first == 0 and last == clock.n_steps - 1:
        return "over the run"
    return f"at {a:g} s" if first == last else f"from {a:g} s to {b:g} s"


def _expects(problems: Problems, data: dict, clock: _Clock, rows) -> list[Check]:
    checks = []
    for where, entry in _entries(problems, data, "expect"):
        _unknown_keys(problems, where, entry, EXPECT_KEYS)
        first = clock.step(problems, f"{where}.at", entry.get("at"))
        last = clock.step(problems, f"{where}.until", entry.get("until"), default=first)
        conds = _common(problems, where, entry, rows)
        no_fault = entry.get("no_fault", [])
        if not isinstance(no_fault, str | list):
            problems.add(f"{where}.no_fault", no_fault, "must be a fault name or a list")
            no_fault = []
        for name in [no_fault] if isinstance(no_fault, str) else no_fault:
            if _choice(problems, f"{where}.no_fault", name, FAULT_CODES) is not None:
                conds.append(FaultInactive(name))
        conds += _bound_conditions(problems, where, entry)
        check = _check(problems, where, entry, clock, first, last, conds, never=False)
        if check is not None:
            checks.append(check)
    return checks


def _nevers(problems: Problems, data: dict, clock: _Clock, rows) -> list[Check]:
    checks = []
    for where, entry in _entries(problems, data, "expect_never"):
        _unknown_keys(problems, where, entry, NEVER_KEYS)
        first = clock.step(problems, f"{where}.from", entry.get("from"), default=0)
        last = clock.step(problems, f"{where}.until", entry.get("until"),
                          default=clock.n_steps - 1)
        conds = _common(problems, where, entry, rows)
        check = _check(problems, where, entry, clock, first, last, conds, never=True)
        if check is not None:
            checks.append(check)
    return checks


def _check(problems: Problems, where: str, entry: dict, clock: _Clock, first: int | None,
           last: int | None, conds: list[Condition], never: bool) -> Check | None:
    if "name" in entry and not isinstance(entry["name"], str):
        problems.add(f"{where}.name", entry["name"], "must be a string")
    allowed = [k for k in (NEVER_KEYS if never else EXPECT_KEYS) if k not in WINDOW_KEYS]
    if not set(entry) & set(allowed):
        problems.add(where, entry, f"expects nothing; give at least one of {allowed}")
    if first is None or last is None or not conds:
        return None
    if last < first:
        problems.add(f"{where}.until", entry.get("until"),
                     f"must not be before the start ({clock.time_s(first):g} s)")
        return None
    label = _label(where, entry, _window(clock, first, last, never), conds, never)
    return Check(label, where, first, last, tuple(conds), never)


def _bound_conditions(problems: Problems, where: str, entry: dict) -> list[Bound]:
    out = []
    for key, (observable, side) in BOUND_KEYS.items():
        if key in entry:
            limit = _number(problems, f"{where}.{key}", entry[key])
            if limit is not None:
                out.append(Bound(observable, side, limit))
    return out


def _bounds(problems: Problems, table: dict, clock: _Clock) -> list[Check]:
    _unknown_keys(problems, "bounds", table, (*BOUND_KEYS, BOUNDS_AFTER_KEY))
    after = clock.step(problems, f"bounds.{BOUNDS_AFTER_KEY}", table.get(BOUNDS_AFTER_KEY),
                       default=0)
    checks = []
    for bound in _bound_conditions(problems, "bounds", table):
        first = (after or 0) if bound.observable == "soc_error_pct" else 0
        last = clock.n_steps - 1
        key = next(k for k, v in BOUND_KEYS.items() if v == (bound.observable, bound.side))
        label = f"bounds.{key} {_window(clock, first, last, never=True)}: {bound.describe()}"
        checks.append(Check(label, f"bounds.{key}", first, last, (bound,)))
    return checks
