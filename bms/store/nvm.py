"""The non-volatile store: one SQLite database a pack, what the firmware keeps over a
power-down.
Why and how: docs/internals.md, bms/store/nvm.py."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms import __version__
from bms.core.counters import Counters
from bms.core.fault_log import LogEntry, newer_than
from bms.core.signals import FaultEvent
from bms.data.parameters import ConfigChange
from bms.data.validation import InputError
from bms.store.retained import Retained

APPLICATION_ID = 0x424D5331  # "BMS1": a bms-emu store, not any SQLite file


# Each migration is the statements that take a store from one version to the next.
_V1 = """
    CREATE TABLE pack (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        chemistry TEXT NOT NULL, n_series INTEGER NOT NULL, capacity_ah REAL NOT NULL,
        created_unix_s REAL NOT NULL);
    CREATE TABLE snapshot (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        boot INTEGER NOT NULL, saved_at_s REAL NOT NULL, saved_unix_s REAL NOT NULL,
        reason TEXT NOT NULL, state TEXT NOT NULL, soc REAL,
        cell_soc TEXT, cell_capacity_ah TEXT NOT NULL, cell_resistance_factor TEXT NOT NULL,
        latched_rows TEXT NOT NULL, event_faults TEXT NOT NULL, counters TEXT NOT NULL,
        log_dropped INTEGER NOT NULL, log_recorded INTEGER NOT NULL);
    CREATE TABLE config (id INTEGER PRIMARY KEY CHECK (id = 1), overrides TEXT NOT NULL);
    CREATE TABLE fault_log (
        seq INTEGER PRIMARY KEY, boot INTEGER NOT NULL, t_s REAL NOT NULL,
        name TEXT NOT NULL, code INTEGER NOT NULL, level TEXT NOT NULL,
        action TEXT NOT NULL, cell_index INTEGER, value REAL, snapshot TEXT NOT NULL);
    CREATE TABLE boots (boot INTEGER PRIMARY KEY, started_unix_s REAL NOT NULL,
        version TEXT NOT NULL)
"""
_V2 = """
    CREATE TABLE config_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, boot INTEGER NOT NULL, t_s REAL NOT NULL,
        unix_s REAL NOT NULL, who TEXT NOT NULL, param TEXT NOT NULL, old TEXT, new TEXT)
"""  # version 2 logs every configuration write
_V3 = """
    ALTER TABLE snapshot ADD COLUMN locked_out TEXT NOT NULL DEFAULT '[]'
"""  # version 3 keeps a lockout over a power-down


# MIGRATIONS[k] takes a store from version k to k + 1; a new store runs them all.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)


class NvmError(InputError):
    """A store that cannot be used: its path, and what is wrong and what to do."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"NVM store {path}", [problem])


@dataclass(frozen=True)
class PackIdentity:
    """Which pack a store belongs to; a store is never used for another."""

    chemistry: str
    n_series: int
    capacity_ah: float  # the pack's

    def describe(self) -> str:
        return f"{self.n_series} cells of {self.chemistry}, {self.capacity_ah:g} Ah"


@dataclass(frozen=True, eq=False)
class Stored:
    """What a store held at start."""

    boot: int  # the boot that saved it
    saved_at_s: float  # emulator time of that boot
    saved_unix_s: float
    retained: Retained | None  # None: only a configuration was ever saved
    soc: float | None
    overrides: dict


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _array(a: np.ndarray | None) -> str | None:
    return None if a is None else _json([float(x) for x in a])


class NvmStore:
    """A pack's store, held open and exclusive by the emulator that runs the pack."""

    def __init__(self, path: str | Path, pack: PackIdentity, unix_s: Callable[[], float]):
        """Opens (creating it when missing) and migrates the store; NvmError when it is not
        a store, is from a newer version, belongs to another pack or is in use."""
        self.path = Path(path)
        self.pack = pack
        self.unix_s = unix_s
        if not self.path.parent.is_dir():
            raise NvmError(path, f"its directory {self.path.parent} does not exist")
        self.db = _connect(self.path, exclusive=True)
        try:
            _migrate(self.db)
            self._claim()
            self.log_saved = self._value("SELECT COALESCE(MAX(seq) + 1, 0) FROM fault_log")
            with self._transaction():
                self.boot = self._value("SELECT COALESCE(MAX(boot), 0) + 1 FROM boots")
                self.db.execute("INSERT INTO boots VALUES (?, ?, ?)",
                                (self.boot, unix_s(), __version__))
        except BaseException:
            self.db.close()
            raise

    def _value(self, sql: str) -> int:
        return int(self.db.execute(sql).fetchone()[0])

    def _transaction(self):
        return _Transaction(self.db)

    def _claim(self) -> None:
        row = self.db.execute("SELECT chemistry, n_series, capacity_ah FROM pack").fetchone()
        if row is None:
            with self._transaction():
                self.db.execute("INSERT INTO pack VALUES (1, ?, ?, ?, ?)",
                                (self.pack.chemistry, self.pack.n_series,
                                 self.pack.capacity_ah, self.unix_s()))
            return
        theirs = PackIdentity(row[0], int(row[1]), float(row[2]))
        if (theirs.chemistry, theirs.n_series) != (self.pack.chemistry, self.pack.n_series) or (
                not math.isclose(theirs.capacity_ah, self.pack.capacity_ah, rel_tol=1e-9)):
            raise NvmError(self.path, f"belongs to another pack ({theirs.describe()}); this "
                           f"one is {self.pack.describe()}: give this pack its own store, or "
                           "`bms-emu nvm reset` this one (its contents are lost)")

    # --- at start -----------------------------------------------------------------------

    def load(self, log_size: int | None = None) -> Stored | None:
        """The last save, with the newest `log_size` fault log entries (None: all the store
        keeps); None when the store is new."""
        row = self.db.execute(
            "SELECT boot, saved_at_s, saved_unix_s, state, soc, cell_soc, cell_capacity_ah, "
            "cell_resistance_factor, latched_rows, event_faults, counters, log_dropped, "
            "log_recorded, locked_out FROM snapshot").fetchone()
        config = self.db.execute("SELECT overrides FROM config").fetchone()
        overrides = json.loads(config[0]) if config else {}
        if row is None:
            return Stored(0, 0.0, 0.0, None, None, overrides) if config else None
        entries = [_entry(r) for r in self.db.execute(
            "SELECT * FROM (SELECT boot, t_s, name, code, level, action, cell_index, value, "
            "snapshot, seq FROM fault_log ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (-1 if log_size is None else log_size,))]
        kept = Retained(
            cell_soc=None if row[5] is None else np.array(json.loads(row[5])),
            cell_capacity_ah=np.array(json.loads(row[6])),
            cell_resistance_factor=np.array(json.loads(row[7])),
            latched_rows=tuple((f, q, bool(a)) for f, q, a in json.loads(row[8])),
            event_faults=tuple(json.loads(row[9])),
            counters=Counters.from_dict(json.loads(row[10])),
            state=row[3],
            log=tuple(entries),
            log_dropped=int(row[11]),
            log_recorded=int(row[12]),
            locked_out=tuple(json.loads(row[13])),
        )
        return Stored(int(row[0]), float(row[1]), float(row[2]), kept, row[4], overrides)

    # --- while running ------------------------------------------------------------------

    def save(self, kept: Retained, soc: float | None, now_s: float, reason: str,
             log_size: int) -> None:
        """One transaction: the retained state, the fault log entries recorded since the
        last save (the oldest beyond `log_size` pruned)."""
        new = newer_than(kept.log, kept.log_recorded, self.log_saved)
        first = kept.log_recorded - len(new)
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?)",
                (self.boot, now_s, self.unix_s(), reason, kept.state, soc,
                 _array(kept.cell_soc), _array(kept.cell_capacity_ah),
                 _array(kept.cell_resistance_factor), _json(kept.latched_rows),
                 _json(list(kept.event_faults)), _json(kept.counters.as_dict()),
                 kept.log_dropped, kept.log_recorded, _json(list(kept.locked_out))))
            self.db.executemany(
                "INSERT OR REPLACE INTO fault_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(first + k, e.snapshot.get("boot", self.boot), e.event.t_s, e.event.name,
                  e.event.code, e.event.level, e.event.action, e.event.index, e.event.value,
                  _json(e.snapshot)) for k, e in enumerate(new)])
            self.db.execute("DELETE FROM fault_log WHERE seq < ?",
                            (kept.log_recorded - log_size,))
        self.log_saved = kept.log_recorded

    def save_config(self, overrides: dict, changes: list[ConfigChange], who: str,
                    now_s: float) -> None:
        """A configuration write: the new configuration and one log line a parameter,
        in one transaction."""
        unix_s = self.unix_s()
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO config VALUES (1, ?)", (_json(overrides),))
            self.db.executemany(
                "INSERT INTO config_changes (boot, t_s, unix_s, who, param, old, new) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(self.boot, now_s, unix_s, who, c.param, _json(c.old), _json(c.new))
                 for c in changes])

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def _entry(row: tuple) -> LogEntry:
    boot, t_s, name, code, level, action, index, value, snapshot, _seq = row
    return LogEntry(FaultEvent(t_s, name, code, level, action, index, value),
                    {**json.loads(snapshot), "boot": boot})


def _connect(path: Path, exclusive: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) to a bms-emu store, or
    to an empty database that is to become one; the emulator's holds the store
    exclusively, a reader's only reads. Nothing is written before the file is known to be a
    store this version can read (a foreign or newer file is left exactly as it was)."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=0.0)
    except sqlite3.Error as exc:
        raise NvmError(path, f"cannot be opened: {exc}") from None
    try:
        db.execute("PRAGMA locking_mode = EXCLUSIVE" if exclusive else "PRAGMA query_only = 1")
        _check_kind(db, path, new_ok=exclusive)
        if exclusive:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
    except NvmError:
        db.close()
        raise
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise NvmError(path, "is in use by a running emulator (it holds its store "
                           "exclusively): stop it first, or give this one its own --nvm "
                           "PATH") from None
        raise NvmError(path, f"cannot be opened: {exc}") from None
    except sqlite3.DatabaseError as exc:
        db.close()
        raise NvmError(path, f"is not an SQLite database ({exc})") from None
    return db


def _check_kind(db: sqlite3.Connection, path: Path, new_ok: bool) -> None:
    """A bms-emu store of a version this one reads (or, with `new_ok`, an empty file)."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
    if app_id != APPLICATION_ID and (tables or not new_ok):
        raise NvmError(path, "is an SQLite database but not a bms-emu store; give another "
                       "path")
    if version > SCHEMA_VERSION:
        raise NvmError(path, f"has schema version {version}, from a newer bms-emu; this one "
                       f"({__version__}) reads versions up to {SCHEMA_VERSION}: run the newer "
                       "bms-emu, or `bms-emu nvm reset` the store (its contents are lost)")


def _migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for k in range(version, SCHEMA_VERSION):
        with _Transaction(db):
            for statement in MIGRATIONS[k].split(";"):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {k + 1}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def open_for_reading(path: str | Path) -> sqlite3.Connection:
    """A read-only look at a store (`bms-emu nvm`); NvmError when it is missing, in use,
    not a store or from a newer version."""
    path = Path(path)
    if not path.is_file():
        raise NvmError(path, "does not exist")
    return _connect(path, exclusive=False)


def export(path: str | Path) -> dict:
    """Everything a store holds, as plain data (`bms-emu nvm export`): SoC in percent at
    the edge, the rest as stored."""
    db = open_for_reading(path)
    try:
        def rows(sql: str) -> list[dict]:
            cur = db.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur]

        pack = rows("SELECT chemistry, n_series, capacity_ah, created_unix_s FROM pack")
        snap = rows("SELECT * FROM snapshot")
        config = db.execute("SELECT overrides FROM config").fetchone()
        log = rows("SELECT * FROM fault_log ORDER BY seq")
        changes = rows("SELECT * FROM config_changes ORDER BY id")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        boots = rows("SELECT * FROM boots ORDER BY boot")
    finally:
        db.close()
    for entry in log:
        entry["snapshot"] = json.loads(entry["snapshot"])
    for change in changes:
        change["old"], change["new"] = json.loads(change["old"]), json.loads(change["new"])
    return {
        "schema_version": version,
        "pack": pack[0] if pack else None,
        "boots": boots,
        "saved": _snapshot_out(snap[0]) if snap else None,
        "config": json.loads(config[0]) if config else {},
        "fault_log": log,
        "config_changes": changes,
    }


def _snapshot_out(row: dict) -> dict:
    out = {k: row[k] for k in ("boot", "saved_at_s", "saved_unix_s", "reason", "state")}
    out["soc_pct"] = None if row["soc"] is None else row["soc"] * 100.0
    cell_soc = json.loads(row["cell_soc"]) if row["cell_soc"] else None
    out["cell_soc_pct"] = None if cell_soc is None else [x * 100.0 for x in cell_soc]
    out["cell_capacity_ah"] = json.loads(row["cell_capacity_ah"])
    out["cell_resistance_factor"] = json.loads(row["cell_resistance_factor"])
    out["latched_rows"] = json.loads(row["latched_rows"])
    out["latched_faults"] = json.loads(row["event_faults"])
    out["locked_out"] = json.loads(row["locked_out"])
    out["counters"] = json.loads(row["counters"])
    out["fault_log_dropped"] = row["log_dropped"]
    out["fault_log_recorded"] = row["log_recorded"]
    return out


def reset(path: str | Path) -> None:
    """Deletes a store and its journal (NvmError when it is not a store or is in use): the
    pack starts afresh next time."""
    path = Path(path)
    open_for_reading(path).close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
