"""Run-time configuration by numeric parameter id: what a host may read and set, and how a
request of changes is checked and applied - all of them or none.
Why and how: docs/internals.md, bms/data/parameters.py."""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from dataclasses import dataclass
from enum import StrEnum

from bms.data.chemistry import Chemistry
from bms.data.config import FirmwareConfig, ProtectionRow, default_config
from bms.data.config_toml import (
    FIELD_DOCS,
    ROW_FIELDS,
    config_scalars,
    config_sections,
    parse_config,
    row_keys,
    static_bounds,
)
from bms.data.quantities import QUANTITY_BY_NAME
from bms.data.validation import InputError

SECTION_BLOCK = 0x0100
PROTECTION_BASE = 0x1000
IDS_PER_ROW = 4
MAX_ID = 0xFFFF
KINDS = {bool: "bool", int: "int", float: "float"}  # by the default's type; a StrEnum: choice
# Error codes, most basic first: a refused request carries the first that applies.
CODES = ("UNKNOWN_PARAM", "BAD_VALUE", "BAD_TYPE", "OUT_OF_RANGE")
SOURCE = "parameter change"  # what parse_config's problems are reported against
# The version of the catalogue (ids, names, kinds, units, choices) that a host may keep a
# copy of: bump it with any change there. tests/bms/data/test_parameters.py pins each
# version's fingerprint, so a change cannot go out under an old number.
CONFIG_SCHEMA_VERSION = 2  # 2: limits.empty_release_fraction added


@dataclass(frozen=True)
class Parameter:
    """One key a host may read and set, as the protocol and its tables name it."""

    id: int  # 0..65535, see the module docstring
    name: str  # dotted TOML path
    kind: str  # "float", "int", "bool" or "choice"
    choices: tuple[str, ...] = ()  # the words a choice takes
    unit: str = ""  # as the TOML file documents it; none for bool and choice

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))

    @property
    def label(self) -> str:
        """How messages name it: both the name and the id."""
        return f"{self.name} (id 0x{self.id:04X})"


@dataclass(frozen=True)
class Limits:
    """What a settings form needs of a parameter beyond its kind and unit: the range its
    value keeps to on its own (None: no bound that way; `*_open`: the bound itself is
    refused) and the value it has without a configuration."""

    low: float | None
    high: float | None
    low_open: bool
    high_open: bool
    default: float | int | bool | str


def limits(chem: Chemistry, n_series: int,
           pack_capacity_ah: float) -> dict[int, Limits]:
    """Every parameter's Limits for this pack, by id: the bounds `parse_config` checks a key
    against on its own, narrowed to one interval."""
    cfg = default_config(chem, n_series, pack_capacity_ah)
    bounds = static_bounds(chem, n_series, pack_capacity_ah)
    rows = rows_by_key(cfg)
    out = {}
    for p in catalogue(cfg):
        lows = [(b.low, b.low_open) for b in bounds.get(p.path, ()) if b.low is not None]
        highs = [(b.high, not b.high_open) for b in bounds.get(p.path, ()) if b.high is not None]
        low, low_open = max(lows, default=(None, False))  # the highest, open before closed
        high, high_closed = min(highs, default=(None, True))  # the lowest, open first
        out[p.id] = Limits(low, high, low_open, not high_closed, value_of(cfg, p, rows))
    return out


@dataclass(frozen=True)
class ConfigChange:
    """One parameter as a configuration write left it: what the store's log keeps."""

    param: str  # the dotted name
    old: float | int | bool | str
    new: float | int | bool | str


def changes_between(old: FirmwareConfig, new: FirmwareConfig) -> list[ConfigChange]:
    """The parameters whose value differs."""
    changes = []
    old_rows, new_rows = rows_by_key(old), rows_by_key(new)
    for p in catalogue(new):
        before, after = value_of(old, p, old_rows), value_of(new, p, new_rows)
        if before != after:
            changes.append(ConfigChange(p.name, before, after))
    return changes


class ParameterError(ValueError):
    """A refused request (nothing applied): `code` (one of CODES) for the protocol's reply,
    `problems` one line per problem naming the parameter, its id, the value and what is
    allowed."""

    def __init__(self, code: str, problems: list[str]):
        self.code = code
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{code}: {len(self.problems)} problem(s)\n{lines}")


def _field(pid: int, section: str, name: str, default: object) -> Parameter:
    dotted = f"{section}.{name}" if section else name
    if isinstance(default, StrEnum):  # its words are the enum's
        return Parameter(pid, dotted, "choice", tuple(type(default)))
    kind = KINDS.get(type(default))
    if kind is None:
        raise TypeError(f"{section}.{name}: no parameter kind for {type(default).__name__}")
    unit = FIELD_DOCS.get((section, name), ("", ""))[0] if kind != "bool" else ""
    return Parameter(pid, dotted, kind, unit=unit)


def catalogue(cfg: FirmwareConfig) -> tuple[Parameter, ...]:
    """Every key the configuration file can set, with its id (module docstring)."""
    params = [_field(1 + j, "", name, getattr(cfg, name))
              for j, name in enumerate(config_scalars(cfg))]
    for k, (section, obj) in enumerate(config_sections(cfg).items(), start=1):
        params += [_field(SECTION_BLOCK * k + 1 + j, section, f.name, getattr(obj, f.name))
                   for j, f in enumerate(dataclasses.fields(obj))]
    for r, (key, row) in enumerate(zip(row_keys(cfg.protection), cfg.protection, strict=True)):
        quantity_unit = QUANTITY_BY_NAME[row.quantity].unit
        params += [
            Parameter(PROTECTION_BASE + IDS_PER_ROW * r + j, ".".join(("protection", *key, f)),
                      "float",
                      unit=quantity_unit if f in ("threshold", "release") else "s")
            for j, f in enumerate(ROW_FIELDS)]
    ids = [p.id for p in params]
    # A block outgrown runs into the next one: refuse rather than hand out shifted ids.
    if len(set(ids)) != len(ids) or max(ids) > MAX_ID or len(ROW_FIELDS) > IDS_PER_ROW:
        raise ValueError("the configuration has outgrown the parameter id blocks")
    return tuple(params)


def rows_by_key(cfg: FirmwareConfig) -> dict[tuple[str, ...], ProtectionRow]:
    """`cfg`'s protection rows by their path under [protection] (`row_keys`)."""
    return dict(zip(row_keys(cfg.protection), cfg.protection, strict=True))


def value_of(cfg: FirmwareConfig, param: Parameter,
             rows: dict[tuple[str, ...], ProtectionRow] | None = None,
             ) -> float | int | bool | str:
    """The parameter's value in `cfg`. `rows`: `rows_by_key(cfg)`, from a caller that looks
    up every parameter (finding a row's key is a pass over all rows: limits took 50 ms a
    pack, the most of building one for a fleet)."""
    *where, name = param.path
    obj: object = cfg
    if where and where[0] == "protection":
        obj = (rows if rows is not None else rows_by_key(cfg))[tuple(where[1:])]
    elif where:
        obj = getattr(cfg, where[0])
    value = getattr(obj, name)
    return value.value if isinstance(value, StrEnum) else value  # a choice as its word


def _as_kind(param: Parameter, value: object) -> tuple[object, str, str]:
    """(the value as the parameter's type, "", "") or (None, error code, what is allowed):
    BAD_TYPE for a value of another type, BAD_VALUE for a word that is not one of a
    choice's, OUT_OF_RANGE for a number no parameter allows (NaN, infinite)."""
    if param.kind == "bool":
        return ((value, "", "") if isinstance(value, bool)
                else (None, "BAD_TYPE", "must be true or false"))
    if param.kind == "choice":
        allowed = f"must be one of {[str(word) for word in param.choices]}"
        if not isinstance(value, str):
            return None, "BAD_TYPE", allowed
        return (value, "", "") if value in param.choices else (None, "BAD_VALUE", allowed)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None, "BAD_TYPE", ("must be a number" if param.kind == "float"
                                  else "must be an integer")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if param.kind == "float":
        return ((number, "", "") if math.isfinite(number)
                else (None, "OUT_OF_RANGE", "must be a finite number"))
    if isinstance(value, numbers.Integral):
        return int(value), "", ""
    if math.isfinite(number) and number.is_integer():
        return int(number), "", ""
    return None, "BAD_TYPE", "must be an integer"


def _check(changes: list[tuple[int, object]], by_id: dict[int, Parameter],
           sent_kinds: list[str] | None = None) -> list[tuple[Parameter, object]]:
    """The changes with their values typed; raises ParameterError for an unknown id, an id
    given twice, a value of the wrong type or sent as another kind than the parameter's
    (`sent_kinds`, by change), naming every such change."""
    typed, seen = [], set()
    found: list[tuple[str, str]] = []  # (code, problem), in request order
    for k, (pid, value) in enumerate(changes):
        param = by_id.get(pid) if isinstance(pid, int) and not isinstance(pid, bool) else None
        if param is None:
            shown = f"0x{pid:04X}" if isinstance(pid, int) else repr(pid)
            found.append(("UNKNOWN_PARAM", f"id {shown} = {value!r}: no such parameter"))
        elif param.id in seen:
            found.append(("BAD_VALUE", f"{param.label} = {value!r}: given more than once in "
                                       "one request; set each parameter once"))
        else:
            seen.add(param.id)
            if sent_kinds is not None and sent_kinds[k] != param.kind:
                found.append(("BAD_TYPE", f"{param.label} = {value!r}: sent as "
                                          f"{sent_kinds[k].upper()}; this parameter is "
                                          f"{param.kind.upper()}"))
                continue
            typed_value, code, allowed = _as_kind(param, value)
            if allowed:
                found.append((code, f"{param.label} = {value!r}: {allowed}"))
            else:
                typed.append((param, typed_value))
    if found:
        code = min((c for c, _ in found), key=CODES.index)
        raise ParameterError(code, [p for _, p in found])
    return typed


def _with_id(problem: str, by_name: dict[str, Parameter]) -> str:
    """A parse_config problem (`name = value: allowed`) with the parameter's id added."""
    name, sep, rest = problem.partition(" = ")
    param = by_name.get(name)
    return f"{param.label}{sep}{rest}" if sep and param else problem


def apply_changes(cfg_overrides: dict, changes: list[tuple[int, object]], chem: Chemistry,
                  n_series: int, pack_capacity_ah: float,
                  sent_kinds: list[str] | None = None) -> tuple[FirmwareConfig, dict]:
    """The configuration with `changes` ((id, value) pairs) applied over `cfg_overrides`
    (the TOML-shaped overrides in effect, {} for the defaults), and the new overrides.
    Raises ParameterError and applies nothing if any change is bad; ids and types are
    checked for every change before the ranges. `sent_kinds` (by change): the kind each
    value was sent as, which must be its parameter's (the binary protocol's values carry
    one); None where the value's type is all there is (TOML, JSON). `cfg_overrides` is not
    changed."""
    params = catalogue(default_config(chem, n_series, pack_capacity_ah))
    typed = _check(changes, {p.id: p for p in params}, sent_kinds)
    merged = copy.deepcopy(cfg_overrides)
    for param, value in typed:
        node = merged
        for part in param.path[:-1]:
            node = node.setdefault(part, {})
        node[param.path[-1]] = value
    try:
        cfg = parse_config(merged, SOURCE, chem, n_series, pack_capacity_ah)
    except InputError as exc:
        by_name = {p.name: p for p in params}
        raise ParameterError("OUT_OF_RANGE",
                             [_with_id(p, by_name) for p in exc.problems]) from exc
    return cfg, merged
