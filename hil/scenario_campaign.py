"""A campaign: one scenario file run over a grid of values (seeds, injections, parameters),
each grid point a case of its own, every case checked before any runs.

The grid is the file's `[campaign]` table and `scenario --grid` items alike: each key is a
dotted key as `--set` takes it (`pack.seed`, `config.balancing.mode`, `timeline[1].inject`
for the inject of the file's second timeline entry), each value the array of values to try.
The cases are the product of the arrays, in the order the keys are given, the last key
varying fastest. Why and how: docs/internals.md, hil/scenario_campaign.py.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

from bms.data.validation import InputError, Problems, read_toml
from hil.scenario_file import Scenario, _flatten, parse_scenario, set_keys

MAX_CASES = 10_000  # past this a grid is more likely a mistake than a campaign

Grid = dict[str, list[object]]


def check_grid(problems: Problems, table: dict, where: str) -> Grid:
    """A grid table's keys flattened (`pack.seed = [..]` and `"pack.seed" = [..]` alike),
    each value a non-empty array without repeats; problems named `where.KEY`."""
    grid: Grid = {}
    for key, values in _flatten(table).items():
        if not isinstance(values, list) or not values:
            problems.add(f"{where}.{key}", values,
                         "must be a non-empty array of the values to try, e.g. [1, 2, 3]")
            continue
        seen = []
        for value in values:
            if value in seen:
                problems.add(f"{where}.{key}", value, "is given twice")
            seen.append(value)
        grid[key] = values
    return grid


def load_cases(path: str | Path, changes: dict[str, object] | None = None,
               grid: Grid | None = None) -> list[Scenario]:
    """The file's cases: the file itself (with `changes`, as `--set`), or one case per point
    of its `[campaign]` grid with `grid` (from `--grid`) over it. InputError names the file
    and, for a case, its grid point with each problem; nothing is returned unless all are
    good."""
    data = read_toml(path)
    problems = Problems(str(path))
    table = data.pop("campaign", {})
    if not isinstance(table, dict):
        problems.add("campaign", table, "must be a table of KEY = [VALUES]")
        table = {}
    full_grid = {**check_grid(problems, table, "campaign"), **(grid or {})}
    for key in (changes or {}):  # the grid's values would replace it: one would be lost
        if key in full_grid:
            problems.add(f"--set {key}", changes[key], "the file's [campaign] varies this key: "
                         f"give its values with --grid {key}=V1,V2,... instead")
    n_cases = math.prod(len(v) for v in full_grid.values())
    if n_cases > MAX_CASES:  # said before a case is read
        problems.add("campaign", {k: len(v) for k, v in full_grid.items()},
                     f"makes {n_cases} cases; at most {MAX_CASES}")
    problems.raise_if_any()
    set_keys(data, changes or {}, str(path))
    if not full_grid:
        return [parse_scenario(data, str(path), Path(path).parent)]
    # Each value alone first, so that a bad value is named once, not in every case it is in.
    for key, values in full_grid.items():
        for value in values:
            problems.take(_case, data, str(path), ((key, value),))
    problems.raise_if_any()
    points = itertools.product(*([(k, v) for v in values] for k, values in full_grid.items()))
    cases = [problems.take(_case, data, str(path), point) for point in points]
    problems.raise_if_any()
    return cases


def case_label(point: tuple[tuple[str, object], ...]) -> str:
    """`pack.seed=2; timeline[1].inject=cell-short:cell=3`: text as written, other values
    as JSON (`true`, `0.5`)."""
    return "; ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                     for k, v in point)


def _case(data: dict, path: str, point: tuple[tuple[str, object], ...]) -> Scenario:
    label = case_label(point)
    case_data = copy.deepcopy(data)
    try:
        set_keys(case_data, dict(point), path, source=f"case {label}")
        sc = parse_scenario(case_data, path, Path(path).parent)
    except InputError as exc:  # named by its grid point; the file is named by the caller
        raise InputError(f"case {label}", exc.problems) from exc
    return replace(sc, name=f"{sc.name} [{label}]", case=point)
