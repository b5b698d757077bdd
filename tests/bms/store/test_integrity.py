"""Damaged stores and stores of another pack: refused before anything is written, with a
message naming the file, what is wrong and what to do, the file left byte for byte as it
was; `reset` still deletes them. Real SQLite files in a temporary directory."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

from bms.store import nvm
from bms.store.nvm import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    NvmError,
    NvmStore,
    PackIdentity,
    check_resettable,
    open_for_reading,
    reset,
)
from tests.bms.store.older import store_at_version
from tests.bms.store.test_nvm import Clock, Kept, identity


def files(directory) -> dict[str, bytes]:
    """Every file in `directory` and its bytes: a refusal leaves no journal behind either."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def saved_store(path) -> PackIdentity:
    """A store with a save and a fault log entry in it, closed; its pack."""
    kept = Kept(path)
    kept.run(2.0)
    kept.fw.event_faults.add("MEASUREMENT_TIMEOUT")  # a latched fault to lose
    kept.keeper.close(2.0)
    return identity(kept)


def sql(path, *statements: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        db.execute(statement)
    db.close()


def random_bytes_inside(path) -> None:
    """256 random bytes across the page boundary in the middle of the file."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle - 100:middle + 156] = random.Random(1).randbytes(256)
    path.write_bytes(bytes(data))


def right_id_wrong_tables(path) -> None:
    path.unlink()
    sql(path, f"PRAGMA application_id = {APPLICATION_ID}",
        f"PRAGMA user_version = {SCHEMA_VERSION}", "CREATE TABLE notes (text TEXT)")


DAMAGE = {  # what is done to a good store, and the words its refusal must hold
    "random bytes inside": (random_bytes_inside, "is damaged"),
    "right application id, wrong tables": (
        right_id_wrong_tables, "tables are not those its version has (missing boots"),
    "bad JSON in a snapshot column": (
        lambda p: sql(p, "UPDATE snapshot SET counters = '{not json'"),
        "snapshot.counters of row 1 is not JSON"),
    "NaN in a snapshot column": (
        lambda p: sql(p, "UPDATE snapshot SET cell_soc = '[0.5, NaN, 0.5, 0.5]'"),
        "snapshot.cell_soc of row 1 is not JSON (NaN"),
    "a cell too few": (
        lambda p: sql(p, "UPDATE snapshot SET cell_capacity_ah = '[1.5, 1.5, 1.5]'"),
        "snapshot.cell_capacity_ah of row 1 is not a list of one capacity a cell (4 cells)"),
    "text in a number column": (
        lambda p: sql(p, "UPDATE snapshot SET soc = 'full'"),
        "snapshot.soc of row 1 holds text, not REAL"),
    "a latched row of another shape": (
        lambda p: sql(p, "UPDATE snapshot SET latched_rows = '[[\"CELL_OVERVOLTAGE\"]]'"),
        "snapshot.latched_rows of row 1 is not a list of [fault, quantity, above]"),
    "a trip towards lockout in the future": (
        lambda p: sql(p, "UPDATE snapshot SET trip_ages_s = '{\"SHORT_CIRCUIT\": [-5.0]}'"),
        "snapshot.trip_ages_s of row 1 is not an object of fault name: trip ages, s"),
    "a fault log entry's readings not an object": (
        lambda p: sql(p, "INSERT INTO fault_log VALUES (99, 1, 1.0, 'CELL_OVERVOLTAGE', 1, "
                         "'FAULT', 'raised', 0, 4.3, '[1, 2]')"),
        "fault_log.snapshot of row 99 is not the readings at the event, an object"),
    "a 0-byte file": (lambda p: p.write_bytes(b""), "is empty, not a store"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_store_is_refused_unchanged_and_reset_deletes_it(tmp_path, case):
    path = tmp_path / "pack.sqlite"
    pack = saved_store(path)
    damage, words = DAMAGE[case]
    damage(path)
    before = files(tmp_path)
    for attempt in (lambda: NvmStore(path, pack, Clock()), lambda: open_for_reading(path)):
        with pytest.raises(NvmError) as refused:
            attempt()
        text = str(refused.value)
        assert words in text
        assert text.startswith(f"NVM store {path} ") and "\n" not in text
        assert f"run `bms-emu nvm reset {path}` to start afresh" in text
        assert files(tmp_path) == before  # no WAL switch, no boot row, no journal
    check_resettable(path)
    reset(path)
    assert files(tmp_path) == {}
    store = NvmStore(path, pack, Clock())  # afresh: nothing latched, boot 1
    assert store.load() is None and store.boot == 1
    store.close()


def test_an_older_store_that_is_damaged_is_refused_unmigrated(tmp_path):
    """A version-1 store migrates in the transaction that checks and claims it: refused, it
    is left at version 1, byte for byte."""
    path = tmp_path / "pack.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("INSERT INTO pack VALUES (1, 'na-nfm', 4, 1.5, 0)")
    db.execute("INSERT INTO config VALUES (1, ?)", (json.dumps([1, 2]),))
    db.close()
    before = files(tmp_path)
    with pytest.raises(NvmError, match="config.overrides of row 1 is not the configuration"):
        NvmStore(path, PackIdentity("rack1", "sim", "na-nfm", 4, 1.5), Clock())
    assert files(tmp_path) == before


OTHERS = {  # a pack that differs in one part of its identity, and how it is described
    "pack id": ({"pack_id": "rack2"}, "not to this pack rack2 (sim, 4 cells"),
    "mode": ({"mode": "hil"}, "not to this pack rack1 (hil, 4 cells"),
    "chemistry": ({"chemistry": "na-nvpf"}, "4 cells of na-nvpf"),
    "series": ({"n_series": 8}, "8 cells of na-nfm"),
}


@pytest.mark.parametrize("part", list(OTHERS))
def test_a_store_of_another_pack_is_refused_unchanged(tmp_path, part):
    path = tmp_path / "pack.sqlite"
    ours = saved_store(path)
    change, words = OTHERS[part]
    other = PackIdentity(**{**vars(ours), **change})
    before = files(tmp_path)
    with pytest.raises(NvmError) as refused:
        NvmStore(path, other, Clock())
    text = str(refused.value)
    assert "belongs to pack rack1 (sim, 4 cells of na-nfm, 1.5 Ah)" in text and words in text
    assert "give this pack its own store (--nvm PATH)" in text and "bms-emu nvm reset" in text
    assert files(tmp_path) == before
    NvmStore(path, ours, Clock()).close()  # its own pack still opens it


def version_4_store(tmp_path) -> tuple:
    """A store as made before pack ids (version 4), for a 4-cell na-nfm pack: its path and an
    open connection to it."""
    path = tmp_path / "pack.sqlite"
    db = store_at_version(path, 4)
    db.execute("INSERT INTO pack VALUES (1, 'na-nfm', 4, 1.5, 0)")
    return path, db


def test_a_store_from_before_pack_ids_becomes_the_first_openers(tmp_path):
    """A version-4 store names no pack id or mode: it resumes, and is that pack's from then
    on."""
    path, db = version_4_store(tmp_path)
    db.execute("INSERT INTO config VALUES (1, ?)",
               (json.dumps({"limits": {"max_charge_a": 1.2}}),))
    db.close()
    ours = PackIdentity("rack1", "hil", "na-nfm", 4, 1.5)
    store = NvmStore(path, ours, Clock())
    assert store.load().overrides == {"limits": {"max_charge_a": 1.2}}
    store.close()
    with pytest.raises(NvmError, match=r"belongs to pack rack1 \(hil"):
        NvmStore(path, PackIdentity("rack1", "sim", "na-nfm", 4, 1.5), Clock())


def test_an_older_store_is_read_as_migrated_and_left_as_it_was(tmp_path):
    """`nvm show|export` of a store from before pack ids (version 4): read from a migrated
    copy in memory, the file untouched."""
    path, db = version_4_store(tmp_path)
    db.close()
    before = files(tmp_path)
    data = nvm.export(path)
    assert data["pack"]["pack_id"] is None and data["pack"]["n_series"] == 4
    assert files(tmp_path) == before


@pytest.mark.parametrize("content", [b"some notes, not a database\n" * 50, None])
def test_reset_refuses_a_file_that_is_not_a_store(tmp_path, content):
    path = tmp_path / "notes.sqlite"
    if content is None:
        sql(path, "CREATE TABLE notes (text TEXT)")
    else:
        path.write_bytes(content)
    before = files(tmp_path)
    with pytest.raises(NvmError, match="not"):
        reset(path)
    assert files(tmp_path) == before


def test_a_new_store_is_made_whole_and_never_over_another(tmp_path):
    """Made under a temporary name and linked into place: nothing is left beside it, and a
    store another emulator made in the meantime stands."""
    path = tmp_path / "pack.sqlite"
    store = NvmStore(path, PackIdentity("rack1", "sim", "na-nfm", 4, 1.5), Clock())
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    assert sorted(files(tmp_path)) == ["pack.sqlite"]
    before = files(tmp_path)
    nvm._create(path)  # as if another emulator made it between the look and the making
    assert files(tmp_path) == before
