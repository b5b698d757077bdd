"""What the store keeps for protocol 1.1: a boot a start (and one a host's Reset), each boot's
wall clock as a host set it, and the configuration-write log read back page by page. Real
SQLite files in a temporary directory."""

from __future__ import annotations

import sqlite3

import pytest

from bms.data.parameters import ConfigChange
from bms.store.nvm import NvmStore, PackIdentity, export
from bms.store.persistence import Keeper
from tests.bms.core.test_firmware import Bench
from tests.bms.store.older import store_at_version

PACK = PackIdentity("rack1", "sim", "na-nfm", 4, 1.5)


class Clock:
    unix_s = 1.8e9

    def __call__(self) -> float:
        return self.unix_s


def test_a_new_boot_is_numbered_on_and_recorded_as_a_start(tmp_path):
    clock = Clock()
    store = NvmStore(tmp_path / "p.sqlite", PACK, clock)
    assert store.boot == 1
    clock.unix_s += 60.0
    store.new_boot()
    assert store.boot == 2
    store.close()
    again = NvmStore(tmp_path / "p.sqlite", PACK, clock)
    assert again.boot == 3  # a start after a Reset goes on counting
    again.close()
    boots = export(tmp_path / "p.sqlite")["boots"]
    assert [b["boot"] for b in boots] == [1, 2, 3]
    assert boots[1]["started_unix_s"] == 1.8e9 + 60.0


def test_each_boot_keeps_the_wall_clock_its_host_set_and_only_its_own(tmp_path):
    store = NvmStore(tmp_path / "p.sqlite", PACK, Clock())
    assert store.utc_offsets() == {}
    store.set_utc_offset(1.7e9)
    store.set_utc_offset(1.7e9 + 2.5)  # a later SetTime replaces it
    store.new_boot()  # boot 2: no SetTime
    store.close()
    store = NvmStore(tmp_path / "p.sqlite", PACK, Clock())  # boot 3
    store.set_utc_offset(1.75e9)
    assert store.utc_offsets() == {1: 1.7e9 + 2.5, 3: 1.75e9}
    store.close()


def test_the_configuration_log_pages_in_the_order_written(tmp_path):
    store = NvmStore(tmp_path / "p.sqlite", PACK, Clock())
    assert store.config_log_total() == 0 and store.config_log(0, 10) == []
    for k in range(5):
        store.save_config({}, [ConfigChange("limits.max_charge_a", float(k), float(k + 1))],
                          f"writer {k}", 10.0 * k)
    assert store.config_log_total() == 5
    page = store.config_log(1, 3)
    assert [e.who for e in page] == ["writer 1", "writer 2", "writer 3"]
    assert (page[0].boot, page[0].t_s, page[0].param) == (1, 10.0, "limits.max_charge_a")
    assert (page[0].old_json, page[0].new_json) == ("1.0", "2.0")
    assert store.config_log(5, 3) == []
    store.close()


def test_a_version_5_store_gains_the_wall_clock_column_and_keeps_its_boots(tmp_path):
    path = tmp_path / "p.sqlite"
    db = store_at_version(path, 5)
    db.execute("INSERT INTO pack VALUES (1, 'na-nfm', 4, 1.5, 0, 'rack1', 'sim')")
    db.execute("INSERT INTO boots VALUES (1, 1.0e9, '0.1')")
    db.close()
    store = NvmStore(path, PACK, Clock())
    assert store.boot == 2 and store.utc_offsets() == {}
    store.set_utc_offset(5.0)
    assert store.utc_offsets() == {2: 5.0}
    store.close()


def test_the_keeper_counts_a_wall_clock_it_cannot_keep_as_a_failed_save(tmp_path):
    """SetTime is not refused for a store that fails: the offset holds for the boot."""
    store = NvmStore(tmp_path / "p.sqlite", PACK, Clock())
    keeper = Keeper(store, Bench(n_series=4).fw)
    store.db.close()  # every statement now fails
    keeper.time_set(1.7e9, 3.0)
    assert keeper.failures == 1 and keeper.failing
    with pytest.raises(sqlite3.ProgrammingError):
        store.utc_offsets()


@pytest.mark.parametrize(("state", "weld_check_due", "recovery_age_s"), [
    ("RUN", True, None), ("RECOVERY", True, 0.0), ("STANDBY", False, None)])
def test_a_version_6_store_migrates_to_what_its_saved_state_says(
        tmp_path, state, weld_check_due, recovery_age_s):
    """Version 7 keeps whether the next boot checks for a weld and a recovery under way: a
    store saved closed (or recovering) before them is migrated to say so, not to nothing."""
    path = tmp_path / "p.sqlite"
    db = store_at_version(path, 6)
    db.execute("INSERT INTO pack VALUES (1, 'na-nfm', 4, 1.5, 0, 'rack1', 'sim')")
    db.execute("INSERT INTO snapshot VALUES (1, 1, 5.0, 1.0e9, 'period', ?, 0.5, NULL, "
               "'[1.5, 1.5, 1.5, 1.5]', '[1, 1, 1, 1]', '[]', '[]', '{}', 0, 0, '[]')",
               (state,))
    db.close()
    store = NvmStore(path, PACK, Clock())
    kept = store.load().retained
    assert (kept.hand_over.weld_check_due, kept.hand_over.recovery_age_s) == (
        weld_check_due, recovery_age_s)
    store.close()
