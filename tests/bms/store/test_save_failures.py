"""A store that cannot save (a full disk, a read-only one, a value JSON cannot hold): the
firmware steps on, every save point tries again, a run of failures is logged once as it
starts and once as it ends, Status shows it, and a configuration write is acknowledged
only once it is saved. Real SQLite files: a full disk is SQLite's own `max_page_count`,
a read-only one `query_only`."""

from __future__ import annotations

import json
import logging
import math

import pytest

from bms.core.signals import FaultEvent
from bms.host import views
from bms.host.policy import parse_policy
from bms.links.mqtt.commands import handle_command
from protocol import messages as pm
from tests.bms.core.test_firmware import TICK_S
from tests.bms.host.test_device import Bench as DeviceBench
from tests.bms.store.test_nvm import FLOAT, Kept, device_on, param_id

LOGGER = "bms.store.persistence"


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "pack.sqlite"


def set_read_only(kept: Kept, read_only: bool) -> None:
    kept.store.db.execute(f"PRAGMA query_only = {int(read_only)}")


def fill_disk(kept: Kept) -> None:
    """The store may not grow by a page from now on: what needs room fails as on a full
    disk ("database or disk is full")."""
    pages = kept.store.db.execute("PRAGMA page_count").fetchone()[0]
    kept.store.db.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(kept: Kept) -> None:
    kept.store.db.execute("PRAGMA max_page_count = 1073741823")


def latched(kept: Kept) -> set[str]:
    return {fault for fault, _, _ in kept.resumed.stored.retained.latched_rows}


def test_a_read_only_store_never_stops_the_step_and_each_run_of_failures_is_logged_once(
        store_path, caplog):
    kept = Kept(store_path, period_s=1.0)
    kept.run(10.0)
    assert kept.fw.state == "RUN"
    keeper, good = kept.keeper, kept.keeper.saves
    caplog.set_level(logging.WARNING, logger=LOGGER)
    set_read_only(kept, True)
    kept.inject("0:sensor-offset:cell=2,offset_v=1.5")
    steps = round(20.0 / TICK_S)
    kept.run(20.0)
    assert kept.fw.last_s == pytest.approx(kept.now_s - TICK_S)  # every step was taken
    assert kept.fw.state == "FAULT" and not kept.fw.contactors.main_closed
    assert keeper.saves == good and keeper.failing
    # Tried at each save point (the fault events, the state change, once a period), not
    # at every step.
    assert 20 <= keeper.failures < steps / 4
    assert "readonly" in keeper.last_error
    [started] = [r for r in caplog.records if r.name == LOGGER]
    assert started.levelno == logging.ERROR and str(store_path) in started.getMessage()
    assert not started.exc_info  # the disk's doing: no traceback

    set_read_only(kept, False)
    failures = keeper.failures
    kept.run(2.0)
    assert not keeper.failing and keeper.saves > good and keeper.failures == failures
    [ended] = [r for r in caplog.records if r.name == LOGGER][1:]
    assert ended.levelno == logging.WARNING
    assert f"after {failures} failed saves" in ended.getMessage()
    kept.reboot(clean=False)  # the power goes: what the last save held is what comes back
    assert {"VOLTAGE_SENSOR_FAULT", "CELL_OVERVOLTAGE"} <= latched(kept)
    assert kept.resumed.stored.retained.state == "FAULT"


def test_a_full_disk_fails_the_saves_that_need_room_and_the_store_catches_up_after(
        store_path):
    kept = Kept(store_path, period_s=1.0)
    kept.run(10.0)
    fill_disk(kept)
    for k in range(100):  # more log entries than the store has room for
        kept.fw.log.record(FaultEvent(10.0, "CELL_IMBALANCE", 11, "WARNING",
                                      "raised" if k % 2 == 0 else "cleared"), {"k": k})
    kept.run(5.0)
    assert kept.keeper.failing and kept.keeper.last_error == "database or disk is full"
    assert kept.fw.last_s == pytest.approx(kept.now_s - TICK_S)
    free_disk(kept)
    kept.run(2.0)
    assert not kept.keeper.failing
    kept.reboot(clean=False)
    ks = [e.snapshot.get("k") for e in kept.fw.log.entries]
    assert ks == list(range(100))  # every entry that waited came with the next save


def test_a_reading_that_is_none_is_logged_as_null_and_never_blocks_later_saves(
        store_path):
    """Strict JSON has no NaN: a fault log entry's non-finite number is kept as null."""
    kept = Kept(store_path)
    kept.run(2.0)
    kept.fw.log.record(FaultEvent(2.0, "TEMP_SENSOR_FAULT", 15, "FAULT", "raised", 1,
                                  math.inf), {"temp_c_max": math.nan, "cells": [math.inf, 3.5]})
    assert kept.keeper.save(2.0, "fault")
    row = kept.store.db.execute(
        "SELECT value, snapshot FROM fault_log ORDER BY seq DESC LIMIT 1").fetchone()
    assert row[0] is None
    assert json.loads(row[1]) == {"temp_c_max": None, "cells": [None, 3.5]}
    kept.run(2.0)
    assert kept.keeper.failures == 0


def test_a_retained_state_json_cannot_hold_fails_the_save_not_the_step(store_path, caplog):
    """A non-finite counter is a bug, not a reading: the save fails (rather than store what
    the next start would refuse), once with its traceback, and the firmware steps on."""
    kept = Kept(store_path, period_s=1.0)
    kept.run(2.0)
    caplog.set_level(logging.ERROR, logger=LOGGER)
    kept.fw.counters.charge_in_ah = math.nan
    kept.run(5.0)
    assert kept.keeper.failing and kept.keeper.failures >= 4
    assert kept.keeper.last_error.startswith("ValueError")
    assert kept.fw.last_s == pytest.approx(kept.now_s - TICK_S)
    [logged] = [r for r in caplog.records if r.name == LOGGER]
    assert logged.exc_info


def test_a_config_write_is_acknowledged_only_once_saved(store_path):
    """On a full disk the write that finds no room is refused with SAVE_FAILED and is not
    in effect; the writes before it, acknowledged, are saved and in effect."""
    kept = Kept(store_path)
    kept.run(2.0)
    device = device_on(kept)
    pid = param_id(device, "limits.max_charge_a")
    fill_disk(kept)
    acknowledged = None
    for k in range(1, 2000):  # each write adds a line to the log of writes: room runs out
        value = 1.0 + k / 4096
        cfg, overrides = kept.fw.cfg, dict(device.overrides)
        reply = device.handle(pm.SetConfig(({"param_id": pid, "kind": FLOAT, "value": value},)),
                              float(k))
        if isinstance(reply, pm.Nack):
            break
        assert kept.fw.cfg.limits.max_charge_a == value
        acknowledged = value
    else:
        pytest.fail("a store that cannot grow took every write")
    assert acknowledged is not None
    assert reply.error == pm.ErrorCode.SAVE_FAILED
    assert "not in effect" in reply.detail and "database or disk is full" in reply.detail
    assert kept.fw.cfg is cfg and device.overrides == overrides  # nothing changed
    status = views.status_dict(device.status(3.0))
    assert (status["store"], status["save_failures"]) == ("failing", 1)

    answer = handle_command("config", json.dumps({"set": {"limits.max_charge_a": 1.5}}).encode(),
                            parse_policy("config"), device, 4.0)
    assert not answer["ok"] and answer["error"]["code"] == "SAVE_FAILED"
    assert kept.fw.cfg.limits.max_charge_a == acknowledged

    free_disk(kept)
    kept.run(10.0)  # the next periodic save works, and ends the run of failures
    status = views.status_dict(device.status(5.0))
    assert (status["store"], status["save_failures"]) == ("ok", 2)
    kept.reboot(clean=False)
    assert kept.fw.cfg.limits.max_charge_a == acknowledged


def test_status_without_a_store_says_so():
    bench = DeviceBench()
    bench.run(1.0)
    status = bench.ask(pm.GetStatus())
    assert (status.store, status.save_failures) == (0, 0)
    assert views.status_dict(status)["store"] == "none"


def test_shrinking_the_fault_log_keeps_the_history_the_store_holds(store_path):
    """`set fault_log_size 1`: the firmware's own log holds one entry; the store keeps every
    entry it held, and those recorded since."""
    kept = Kept(store_path)
    kept.run(10.0)
    kept.inject("0:sensor-offset:cell=2,offset_v=1.5")
    kept.run(5.0)
    rows = kept.store.db.execute("SELECT seq FROM fault_log ORDER BY seq").fetchall()
    assert len(rows) >= 2
    device = device_on(kept)
    reply = device.handle(pm.SetConfig(({"param_id": param_id(device, "fault_log_size"),
                                         "kind": int(pm.ValueKind.INT), "value": 1},)), 15.0)
    assert isinstance(reply, pm.ConfigValues) and len(kept.fw.log) == 1
    kept.pack.sensors.voltage_offset_v[:] = 0.0
    kept.run(15.0)  # periodic saves with the smaller log; the WARNING / ALARM rows clear
    after = kept.store.db.execute("SELECT seq FROM fault_log ORDER BY seq").fetchall()
    assert after[:len(rows)] == rows and len(after) > len(rows)
    kept.reboot()
    # Two events of one step cannot both wait in a log of one: the store has each entry
    # the firmware's log held when it saved.
    assert len(kept.fw.log) == 1 and kept.fw.log.recorded == after[-1][0] + 1
    assert kept.fw.log.entries[0].event.t_s == kept.store.db.execute(
        "SELECT t_s FROM fault_log ORDER BY seq DESC LIMIT 1").fetchone()[0]
    assert kept.fw.log.dropped == kept.fw.log.recorded - 1
