"""Whether a store's file can be trusted, read before anything in it is used or written:
SQLite's own `PRAGMA quick_check`, the tables its schema version should have, the type of
every value and the JSON of every JSON column. A damaged store is refused whole (bms.store.nvm
says what to do), never half resumed: a traceback half-way through a resume, or a latched
fault silently lost, is worse than a clear refusal.

Why and how: docs/internals.md, bms/store/nvm.py.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from typing import NamedTuple

from bms.core.counters import Counters

# The storage classes each declared column type may hold (SQLite stores what it is given):
# a number column holds numbers, a text column text. Other declared types are not checked.
STORAGE_CLASSES = {"INTEGER": ("integer", "real"), "REAL": ("real", "integer"),
                   "TEXT": ("text",)}

Schema = dict[str, tuple[tuple, ...]]  # table: its columns (name, type, not null, default, key)


class JsonColumn(NamedTuple):
    """What one JSON column must hold. Every value is checked by SQLite (strict RFC 8259
    JSON, and its `json_type`), fast on the fault log's many rows; a finer check in Python is
    for the one-row tables."""

    what: str  # what it holds, in words, for the refusal
    json_type: str | None  # what `json_type` gives every value: "object", "array"; None: any
    holds: Callable[[object, int | None], bool] | None = None  # (value, the pack's cells)
    null_ok: bool = False  # SQL NULL allowed (not the JSON text null)


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _cells(v: object, n_series: int | None) -> bool:
    return (isinstance(v, list) and len(v) >= 1 and n_series in (None, len(v))
            and all(map(_finite, v)))


def _names(v: object, _n: int | None) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _rows(v: object, _n: int | None) -> bool:
    return isinstance(v, list) and all(
        isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and isinstance(r[1], str)
        and isinstance(r[2], bool) for r in v)


def _numbers(v: object) -> bool:
    return _finite(v) or v is None or (isinstance(v, dict) and all(map(_numbers, v.values())))


def _trip_ages(v: object, _n: int | None) -> bool:
    return isinstance(v, dict) and all(
        isinstance(ages, list) and all(_finite(a) and a >= 0 for a in ages)
        for ages in v.values())


def _counters(v: object, _n: int | None) -> bool:
    return isinstance(v, dict) and _numbers(v) and Counters.from_dict(v) is not None


JSON_COLUMNS: dict[tuple[str, str], JsonColumn] = {
    ("snapshot", "cell_soc"): JsonColumn("a list of one SoC a cell", "array", _cells,
                                         null_ok=True),
    ("snapshot", "cell_capacity_ah"): JsonColumn("a list of one capacity a cell", "array",
                                                 _cells),
    ("snapshot", "cell_resistance_factor"): JsonColumn("a list of one factor a cell", "array",
                                                       _cells),
    ("snapshot", "latched_rows"): JsonColumn("a list of [fault, quantity, above]", "array",
                                             _rows),
    ("snapshot", "event_faults"): JsonColumn("a list of fault names", "array", _names),
    ("snapshot", "locked_out"): JsonColumn("a list of fault names", "array", _names),
    ("snapshot", "debouncing_rows"): JsonColumn("a list of [fault, quantity, above]",
                                                "array", _rows),
    ("snapshot", "trip_ages_s"): JsonColumn("an object of fault name: trip ages, s", "object",
                                            _trip_ages),
    ("snapshot", "counters"): JsonColumn("the counters, an object of numbers", "object",
                                         _counters),
    ("config", "overrides"): JsonColumn("the configuration, an object", "object"),
    ("fault_log", "snapshot"): JsonColumn("the readings at the event, an object", "object"),
    ("config_changes", "old"): JsonColumn("a JSON value", None),
    ("config_changes", "new"): JsonColumn("a JSON value", None),
}


def schema(db: sqlite3.Connection) -> Schema:
    """Every table and its columns, as `PRAGMA table_info` gives them."""
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: tuple(tuple(c[1:]) for c in db.execute("SELECT * FROM pragma_table_info(?)",
                                                        (t,)))
            for t in tables}


def problem(db: sqlite3.Connection, expected: Schema) -> str | None:
    """The first thing wrong with the store `db`, whose version has the tables `expected`,
    in words; None when nothing is. Reads only."""
    found = [r[0] for r in db.execute("PRAGMA quick_check(3)")]
    if found != ["ok"]:
        return f"PRAGMA quick_check finds {'; '.join(found)}"
    tables = schema(db)
    if tables != expected:
        return f"its tables are not those its version has ({_difference(tables, expected)})"
    for table, columns in tables.items():
        wrong = _storage_problem(db, table, columns)
        if wrong:
            return wrong
    pack = db.execute("SELECT n_series FROM pack").fetchone()
    n_series = int(pack[0]) if pack else None
    for (table, name), column in JSON_COLUMNS.items():
        if name in {c[0] for c in tables.get(table, ())}:  # else a column of a later version
            wrong = _json_problem(db, table, name, column, n_series)
            if wrong:
                return f"{table}.{name} of row {wrong}"
    return None


def _storage_problem(db: sqlite3.Connection, table: str, columns: tuple[tuple, ...]) -> str | None:
    """A value of `table` whose storage class its column's declared type does not allow (one
    scan of the table)."""
    allowed = {name: STORAGE_CLASSES[declared] + (() if not_null else ("null",))
               for name, declared, not_null, _default, _key in columns
               if declared in STORAGE_CLASSES}
    if not allowed:
        return None
    kinds = ", ".join(f'typeof("{name}")' for name in allowed)
    wrong = " OR ".join(f'typeof("{name}") NOT IN ({", ".join(map(repr, classes))})'
                        for name, classes in allowed.items())
    row = db.execute(f'SELECT rowid, {kinds} FROM "{table}" WHERE {wrong} LIMIT 1').fetchone()
    if row is None:
        return None
    declared = {c[0]: c[1] for c in columns}
    name, kind = next((n, k) for n, k in zip(allowed, row[1:], strict=True)
                      if k not in allowed[n])
    return f"{table}.{name} of row {row[0]} holds {kind}, not {declared[name]}"


def _difference(tables: Schema, expected: Schema) -> str:
    missing = sorted(expected.keys() - tables.keys())
    unexpected = sorted(tables.keys() - expected.keys())
    changed = sorted(t for t in expected.keys() & tables.keys() if tables[t] != expected[t])
    parts = [f"{what} {', '.join(names)}" for what, names in (
        ("missing", missing), ("unexpected", unexpected), ("other columns in", changed))
        if names]
    return "; ".join(parts)


def _json_problem(db: sqlite3.Connection, table: str, name: str, column: JsonColumn,
                  n_series: int | None) -> str | None:
    """The first value of a JSON column that is not what `column` says, as "ROWID is not
    ..."; None when all are."""
    row = db.execute(
        f'SELECT rowid, "{name}" FROM "{table}" WHERE CASE WHEN "{name}" IS NULL THEN ? '
        f'WHEN json_valid("{name}") THEN ? IS NOT NULL AND json_type("{name}") IS NOT ? '
        "ELSE 1 END LIMIT 1", (not column.null_ok, column.json_type, column.json_type)
    ).fetchone()
    if row is not None:
        rowid, text = row
        if text is None:
            return f"{rowid} is NULL, not {column.what}"
        try:
            json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            return f"{rowid} is not JSON ({exc})"
        return f"{rowid} is not {column.what}"
    if column.holds is None:
        return None
    for rowid, text in db.execute(f'SELECT rowid, "{name}" FROM "{table}"'):
        if text is None:
            continue
        try:
            fine = column.holds(json.loads(text, parse_constant=_no_constant), n_series)
        except (TypeError, ValueError, AttributeError):
            fine = False
        if not fine:
            cells = f" ({n_series} cells)" if column.holds is _cells and n_series else ""
            return f"{rowid} is not {column.what}{cells}"
    return None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
