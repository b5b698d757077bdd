"""The non-volatile store: one SQLite database a pack, what the firmware keeps over a
power-down.
Why and how: docs/internals.md, bms/store/nvm.py."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shlex
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms import __version__
from bms.core.counters import Counters
from bms.core.fault_log import LogEntry, newer_than
from bms.core.firmware import HandOver
from bms.core.signals import FaultEvent
from bms.data.config import FAULT_LOG_SIZE_MAX
from bms.data.faults import subject_fields
from bms.data.parameters import ConfigChange
from bms.data.validation import InputError
from bms.store import integrity
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
_V4 = """
    CREATE TABLE outbox (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL);
    CREATE TABLE outbox_seq (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
    INSERT INTO outbox_seq VALUES (1, 0)
"""  # version 4 keeps the MQTT messages the broker has not acknowledged (bms.store.outbox)
_V5 = """
    ALTER TABLE pack ADD COLUMN pack_id TEXT;
    ALTER TABLE pack ADD COLUMN mode TEXT
"""  # version 5 names the pack (PackIdentity); a store from before is the first opener's
_V6 = """
    ALTER TABLE boots ADD COLUMN utc_offset_s REAL
"""  # version 6 keeps each boot's wall clock: UTC minus emulator time, from a host's SetTime
_V7 = """
    ALTER TABLE snapshot ADD COLUMN empty_charge_as REAL;
    ALTER TABLE snapshot ADD COLUMN trip_ages_s TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE snapshot ADD COLUMN weld_check_due INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE snapshot ADD COLUMN debouncing_rows TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE snapshot ADD COLUMN recovery_age_s REAL;
    ALTER TABLE snapshot ADD COLUMN precharge_attempts INTEGER NOT NULL DEFAULT 0;
    UPDATE snapshot SET weld_check_due = 1 WHERE state IN ('PRECHARGE', 'RUN', 'RECOVERY');
    UPDATE snapshot SET recovery_age_s = 0 WHERE state = 'RECOVERY'
"""  # version 7 keeps the empty hold (NULL: none), the trips towards lockout, whether the
# next boot checks for a weld first (contactors closed, or a check under way), the FAULT
# rows over their threshold, not yet raised (the next boot raises them), a recovery
# charge under way (its age; NULL: none), and the precharge attempts of a sequence under way


# MIGRATIONS[k] takes a store from version k to k + 1; a new store runs them all.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)
SCHEMA_VERSION = len(MIGRATIONS)


class NvmError(InputError):
    """A store that cannot be used: its path, and what is wrong and what to do, one line."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"NVM store {path}", [problem])

    def __str__(self) -> str:
        return f"{self.source} {self.problems[0]}"


def _start_afresh(path: Path) -> str:
    """What to do about a store that is refused but is a store: the one way out."""
    return (f"run `bms-emu nvm reset {shlex.quote(str(path))}` to start afresh (its contents "
            "are lost)")


@dataclass(frozen=True)
class PackIdentity:
    """Which pack a store belongs to; a store is never used for another (a `serve --hil`
    rig's pack is not the `serve --sim` pack of the same id)."""

    pack_id: str
    mode: str  # "sim": the emulator's own simulated pack; "hil": a rig's
    chemistry: str
    n_series: int
    capacity_ah: float  # the pack's

    def describe(self) -> str:
        return (f"pack {self.pack_id} ({self.mode}, {self.n_series} cells of "
                f"{self.chemistry}, {self.capacity_ah:g} Ah)")

    def same_as(self, other: PackIdentity) -> bool:
        return ((self.pack_id, self.mode, self.chemistry, self.n_series)
                == (other.pack_id, other.mode, other.chemistry, other.n_series)
                and math.isclose(self.capacity_ah, other.capacity_ah, rel_tol=1e-9))


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
    """Strict JSON (RFC 8259 has no NaN or infinity): ValueError for a non-finite number."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _finite(value: object) -> object:
    """`value` with every non-finite float (at any depth) replaced by None: what a fault log
    entry holds of a reading that is none (an unreadable sensor), so that one such reading
    can never make every later save fail."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _array(a: np.ndarray | None) -> str | None:
    return None if a is None else _json([float(x) for x in a])


class NvmStore:
    """A pack's store, held open and exclusive by the emulator that runs the pack."""

    def __init__(self, path: str | Path, pack: PackIdentity, unix_s: Callable[[], float]):
        """Opens the store (making it when missing), checks it, migrates it and claims it for
        `pack`. NvmError, with the file unchanged, when it is empty, damaged, not a store,
        from a newer version, another pack's or in use."""
        self.path = Path(path)
        self.pack = pack
        self.unix_s = unix_s
        if not self.path.parent.is_dir():
            raise NvmError(path, f"its directory {self.path.parent} does not exist")
        if not self.path.exists():
            _create(self.path)
        self.db = _connect(self.path, _RUN)
        try:
            # Checked: from here one transaction, so that a refusal leaves the file as it was.
            with self._transaction():
                _migrate(self.db)
                self._claim()
                self._add_boot()
            self.db.execute("PRAGMA journal_mode = WAL")
            self.log_saved = self._value("SELECT COALESCE(MAX(seq) + 1, 0) FROM fault_log")
        except sqlite3.Error as exc:
            self.db.close()
            raise _refusal(self.path, exc) from None
        except BaseException:
            self.db.close()
            raise

    def _value(self, sql: str) -> int:
        return int(self.db.execute(sql).fetchone()[0])

    def _add_boot(self) -> None:
        self.boot = self._value("SELECT COALESCE(MAX(boot), 0) + 1 FROM boots")
        self.db.execute("INSERT INTO boots (boot, started_unix_s, version) VALUES (?, ?, ?)",
                        (self.boot, self.unix_s(), __version__))

    def _transaction(self):
        return _Transaction(self.db)

    def _claim(self) -> None:
        """The store is this pack's (a new store, or one from before version 5, which names
        no pack id or mode, becomes this pack's), else NvmError."""
        ours = self.pack
        row = self.db.execute(
            "SELECT pack_id, mode, chemistry, n_series, capacity_ah FROM pack").fetchone()
        if row is None:
            self.db.execute(
                "INSERT INTO pack (id, pack_id, mode, chemistry, n_series, capacity_ah, "
                "created_unix_s) VALUES (1, ?, ?, ?, ?, ?, ?)",
                (ours.pack_id, ours.mode, ours.chemistry, ours.n_series, ours.capacity_ah,
                 self.unix_s()))
            return
        theirs = PackIdentity(row[0] or ours.pack_id, row[1] or ours.mode, row[2], int(row[3]),
                              float(row[4]))
        if not theirs.same_as(ours):
            raise NvmError(self.path, f"belongs to {theirs.describe()}, not to this "
                           f"{ours.describe()}: give this pack its own store (--nvm PATH), or "
                           + _start_afresh(self.path))
        if row[0] is None or row[1] is None:
            self.db.execute("UPDATE pack SET pack_id = ?, mode = ?", (ours.pack_id, ours.mode))

    # --- at start -----------------------------------------------------------------------

    def overrides(self) -> dict | None:
        """The stored configuration (TOML-shaped overrides); None when none was saved."""
        config = self.db.execute("SELECT overrides FROM config").fetchone()
        return json.loads(config[0]) if config else None

    def load(self, log_size: int | None = None) -> Stored | None:
        """The last save, with the newest `log_size` fault log entries (None: all the store
        keeps); None when the store is new."""
        row = self.db.execute(
            "SELECT boot, saved_at_s, saved_unix_s, state, soc, cell_soc, cell_capacity_ah, "
            "cell_resistance_factor, latched_rows, event_faults, counters, log_dropped, "
            "log_recorded, locked_out, empty_charge_as, trip_ages_s, weld_check_due, "
            "debouncing_rows, recovery_age_s, precharge_attempts FROM snapshot").fetchone()
        config = self.overrides()
        overrides = config or {}
        if row is None:
            return Stored(0, 0.0, 0.0, None, None, overrides) if config is not None else None
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
            empty_charge_as=row[14],
            hand_over=HandOver(
                trip_ages_s=json.loads(row[15]),
                weld_check_due=bool(row[16]),
                debouncing_rows=tuple((f, q, bool(a)) for f, q, a in json.loads(row[17])),
                recovery_age_s=row[18],
                precharge_attempts=int(row[19])),
        )
        return Stored(int(row[0]), float(row[1]), float(row[2]), kept, row[4], overrides)

    # --- while running ------------------------------------------------------------------

    def save(self, kept: Retained, soc: float | None, now_s: float, reason: str) -> None:
        """One transaction: the retained state, the fault log entries recorded since the
        last save. The store's log is the pack's history: it keeps the newest
        FAULT_LOG_SIZE_MAX entries, however small the firmware's own log (`fault_log_size`)
        is or becomes."""
        new = newer_than(kept.log, kept.log_recorded, self.log_saved)
        first = kept.log_recorded - len(new)
        h = kept.hand_over
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.boot, now_s, self.unix_s(), reason, kept.state, soc,
                 _array(kept.cell_soc), _array(kept.cell_capacity_ah),
                 _array(kept.cell_resistance_factor), _json(kept.latched_rows),
                 _json(list(kept.event_faults)), _json(kept.counters.as_dict()),
                 kept.log_dropped, kept.log_recorded, _json(list(kept.locked_out)),
                 kept.empty_charge_as, _json(h.trip_ages_s), int(h.weld_check_due),
                 _json(h.debouncing_rows), h.recovery_age_s, h.precharge_attempts))
            self.db.executemany(
                "INSERT OR REPLACE INTO fault_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(first + k, e.snapshot.get("boot", self.boot), e.event.t_s, e.event.name,
                  e.event.code, e.event.level, e.event.action, e.event.index,
                  _finite(e.event.value),
                  _json(_finite(e.snapshot))) for k, e in enumerate(new)])
            self.db.execute("DELETE FROM fault_log WHERE seq < ?",
                            (kept.log_recorded - FAULT_LOG_SIZE_MAX,))
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

    def new_boot(self) -> None:
        """A restart of the firmware without closing the store (a host's Reset): the next
        boot number, recorded as a start; its entries are saved under it from now on."""
        with self._transaction():
            self._add_boot()

    def set_utc_offset(self, offset_s: float) -> None:
        """This boot's wall clock: UTC minus emulator time (a host's SetTime)."""
        with self._transaction():
            self.db.execute("UPDATE boots SET utc_offset_s = ? WHERE boot = ?",
                            (offset_s, self.boot))

    def utc_offsets(self) -> dict[int, float]:
        """Each boot's wall clock offset, for the boots whose host set one."""
        return {int(boot): float(offset) for boot, offset in self.db.execute(
            "SELECT boot, utc_offset_s FROM boots WHERE utc_offset_s IS NOT NULL")}

    def config_log_total(self) -> int:
        return self._value("SELECT COUNT(*) FROM config_changes")

    def config_log(self, start: int, count: int) -> list[ConfigLogEntry]:
        """Up to `count` configuration writes from the `start`-th (0: the oldest)."""
        return [ConfigLogEntry(int(boot), float(t_s), who, param, old, new)
                for boot, t_s, who, param, old, new in self.db.execute(
                    "SELECT boot, t_s, who, param, old, new FROM config_changes ORDER BY id "
                    "LIMIT ? OFFSET ?", (count, start))]

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class ConfigLogEntry:
    """One parameter of a configuration write, as the store logged it."""

    boot: int
    t_s: float  # emulator time in that boot
    who: str
    param: str
    old_json: str  # the values as JSON text
    new_json: str


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block or the COMMIT raises (the
    error raised is theirs). SQLite rolls back on its own on some errors (a full disk):
    only a transaction still open is rolled back, so the next save can begin afresh."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the error being raised says more
                self.db.execute("ROLLBACK")


def _entry(row: tuple) -> LogEntry:
    boot, t_s, name, code, level, action, index, value, snapshot, _seq = row
    return LogEntry(FaultEvent(t_s, name, code, level, action, index, value),
                    {**json.loads(snapshot), "boot": boot})


_RUN, _READ, _RESET = "run", "read", "reset"  # who opens: the emulator, `nvm show`, `nvm reset`


def _connect(path: Path, purpose: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) to an existing file that
    passed every check `purpose` needs, else NvmError; it creates no file and writes
    nothing. The emulator's holds the store exclusively, the others only read. `nvm reset`
    needs only a store (damaged, another pack's or from a newer version alike) or an empty
    database, that no emulator holds."""
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True,
                             isolation_level=None, timeout=0.0)
    except sqlite3.Error as exc:
        raise _refusal(path, exc) from None
    try:
        db.execute("PRAGMA locking_mode = EXCLUSIVE" if purpose == _RUN
                   else "PRAGMA query_only = 1")
        db.execute("PRAGMA synchronous = FULL")
        _check_kind(db, path, purpose)
        if purpose != _RESET:
            _check_contents(db, path)
    except sqlite3.Error as exc:
        db.close()
        raise _refusal(path, exc) from None
    except BaseException:
        db.close()
        raise
    return db


def _refusal(path: Path, exc: sqlite3.Error) -> NvmError:
    """What an SQLite error while opening a store means, and what to do."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return NvmError(path, "is in use by a running emulator (it holds its store "
                        "exclusively): stop it first, or give this one its own --nvm PATH")
    if name.startswith("SQLITE_NOTADB"):
        return NvmError(path, f"is not an SQLite database ({exc}), so not a bms-emu store: "
                        "give another path (a store damaged this badly can only be deleted)")
    if name.startswith("SQLITE_CORRUPT"):
        return NvmError(path, f"is damaged ({exc}): {_start_afresh(path)}")
    return NvmError(path, f"cannot be opened: {exc}")


def _check_kind(db: sqlite3.Connection, path: Path, purpose: str) -> None:
    """A bms-emu store of a version this one reads (for `nvm reset` of any version, or an
    empty database: a 0-byte file, or a store whose making was cut short)."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
        if purpose == _RESET:
            return
        raise NvmError(path, "is empty, not a store (a store is never empty: this one lost "
                       f"its contents, or its making was cut short): {_start_afresh(path)}")
    if app_id != APPLICATION_ID:
        raise NvmError(path, "is an SQLite database but not a bms-emu store; give another "
                       "path")
    if version > SCHEMA_VERSION and purpose != _RESET:
        raise NvmError(path, f"has schema version {version}, from a newer bms-emu; this one "
                       f"({__version__}) reads versions up to {SCHEMA_VERSION}: run the newer "
                       f"bms-emu, or {_start_afresh(path)}")


def _check_contents(db: sqlite3.Connection, path: Path) -> None:
    """NvmError when what the store holds cannot be trusted (bms.store.integrity)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    try:
        wrong = integrity.problem(db, _tables_of(version))
    except sqlite3.DatabaseError as exc:
        wrong = str(exc)
    if wrong:
        raise NvmError(path, f"is damaged: {wrong}: {_start_afresh(path)}")


@functools.cache
def _tables_of(version: int) -> integrity.Schema:
    """The tables a store of `version` has: those its migrations make."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        _migrate(db, version)
        return integrity.schema(db)
    finally:
        db.close()


def _create(path: Path) -> None:
    """A new store (its tables, no pack yet), made under a temporary name and linked into
    place: a kill midway leaves no half-made store at `path`, and a store another emulator
    made there meanwhile stands."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            with _Transaction(db):
                _migrate(db)
        finally:
            db.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # made meanwhile: that one is opened, and checked, instead
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
    except (OSError, sqlite3.Error) as exc:
        raise NvmError(path, f"cannot be made: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _migrate(db: sqlite3.Connection, to_version: int = SCHEMA_VERSION) -> None:
    """The migrations from the store's version to `to_version`, in the caller's
    transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for k in range(version, to_version):
        for statement in MIGRATIONS[k].split(";"):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {k + 1}")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise NvmError(path, "does not exist")
    return path


def open_for_reading(path: str | Path) -> sqlite3.Connection:
    """A read-only look at a store (`bms-emu nvm`); NvmError when it is missing, empty,
    damaged, in use, not a store or from a newer version. An older store is seen as this
    version sees it: a copy in memory, migrated (the file is not touched)."""
    db = _connect(_existing(path), _READ)
    if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return db
    copy = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db.backup(copy)
        _migrate(copy)
    finally:
        db.close()
    return copy


def export(path: str | Path) -> dict:
    """Everything a store holds, as plain data (`bms-emu nvm export`): SoC in percent and a
    fault log entry's cell or sensor numbered from 1 (`cell`, `sensor`) at the edge, the
    rest as stored."""
    db = open_for_reading(path)
    try:
        def rows(sql: str) -> list[dict]:
            cur = db.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur]

        pack = rows("SELECT pack_id, mode, chemistry, n_series, capacity_ah, created_unix_s "
                    "FROM pack")
        snap = rows("SELECT * FROM snapshot")
        config = db.execute("SELECT overrides FROM config").fetchone()
        log = rows("SELECT * FROM fault_log ORDER BY seq")
        changes = rows("SELECT * FROM config_changes ORDER BY id")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        boots = rows("SELECT * FROM boots ORDER BY boot")
        outbox = rows("SELECT seq, topic, payload FROM outbox ORDER BY seq")
    finally:
        db.close()
    log = [_log_row_out(entry) for entry in log]
    for message in outbox:
        message["payload"] = json.loads(message["payload"])
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
        "mqtt_outbox": outbox,  # fault events the broker has not yet acknowledged
    }


def _log_row_out(row: dict) -> dict:
    """A fault log row as people read it: its stored 0-based `cell_index` (a cell's or a
    sensor's, by the fault) as `cell` / `sensor` from 1."""
    out = {k: v for k, v in row.items() if k not in ("cell_index", "value", "snapshot")}
    return {**out, **subject_fields(row["name"], row["cell_index"]), "value": row["value"],
            "snapshot": json.loads(row["snapshot"])}


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
    # The empty hold: the charge it has seen taken back, Ah (None: not held).
    held_as = row["empty_charge_as"]
    out["empty_hold_charged_ah"] = None if held_as is None else held_as / 3600.0
    out["lockout_trip_ages_s"] = json.loads(row["trip_ages_s"])  # fault: [s before the save]
    out["weld_check_due"] = bool(row["weld_check_due"])
    out["debouncing_rows"] = json.loads(row["debouncing_rows"])  # raised at the next boot
    out["recovery_age_s"] = row["recovery_age_s"]  # a recovery charge under way, so long
    out["precharge_attempts"] = row["precharge_attempts"]  # of a sequence under way
    out["counters"] = Counters.from_dict(json.loads(row["counters"])).as_dict()
    out["fault_log_dropped"] = row["log_dropped"]
    out["fault_log_recorded"] = row["log_recorded"]
    return out


def check_resettable(path: str | Path) -> None:
    """NvmError unless `reset` may delete `path`: a store (damaged, another pack's or from a
    newer version alike) or an empty database, that no emulator holds."""
    _connect(_existing(path), _RESET).close()


def reset(path: str | Path) -> None:
    """Deletes a store and its journal (NvmError unless `check_resettable`): the pack
    starts afresh next time."""
    path = Path(path)
    check_resettable(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
