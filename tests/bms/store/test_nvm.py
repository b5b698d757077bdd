"""The persistent store and resuming from it: what survives a restart, what a store refuses,
when the keeper saves. Real SQLite files in a temporary directory; simulated time."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3

import numpy as np
import pytest

from bms.core.firmware import Firmware, HandOver
from bms.data.config_toml import parse_config
from bms.host.device import Device, Identity
from bms.runtime.restart import restarted
from bms.store.nvm import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    NvmError,
    NvmStore,
    PackIdentity,
    export,
)
from bms.store.persistence import Keeper, resume
from bms.store.retained import restore, retain
from bms_emu.nvm_args import data_dir
from protocol import messages as pm
from tests.bms.core.test_firmware import TICK_S, Bench

FLOAT = int(pm.ValueKind.FLOAT)  # a SetConfig value's kind, as a host sends it

class Clock:
    """Wall-clock seconds for the store, moved by the test."""

    def __init__(self, unix_s: float = 1.8e9):
        self.unix_s = unix_s

    def __call__(self) -> float:
        return self.unix_s


def identity(bench: Bench) -> PackIdentity:
    return PackIdentity("rack1", "sim", bench.pack.chem.name, bench.pack.n_series,
                        bench.pack.capacity_ah)


class Kept(Bench):
    """A bench whose firmware lives on a store: `reboot()` is a power cycle of the BMS (the
    pack and its state carry on)."""

    def __init__(self, path, period_s: float = 10.0, clock: Clock | None = None, **bench):
        super().__init__(**bench)
        self.path = path
        self.period_s = period_s
        self.clock = clock or Clock()
        self.boot()

    def boot(self, given=None) -> None:
        self.store = NvmStore(self.path, identity(self), self.clock)
        self.resumed = resume(self.store, self.pack.chem, self.pack.n_series,
                              self.pack.capacity_ah, given)
        self.fw = self.resumed.firmware
        self.keeper = Keeper(self.store, self.fw, self.period_s)
        self.k = 0  # a new boot's clock starts again

    def tick(self, demand_a: float = 0.0, measurement: bool = True):
        act = super().tick(demand_a, measurement)
        self.keeper.after_step(self.now_s - TICK_S, act)
        return act

    def reboot(self, off_s: float = 1.0, clean: bool = True, given=None) -> None:
        """`clean`: a shutdown save first; else the power just goes (the last save stands)."""
        if clean:
            self.keeper.close(self.now_s)
        else:
            self.store.close()
        self.clock.unix_s += self.now_s + off_s
        self.boot(given)


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "pack.sqlite"


# --- what survives a restart ----------------------------------------------------------------


def test_soc_health_counters_and_log_survive_a_clean_restart(store_path):
    kept = Kept(store_path)
    kept.run(60.0, demand_a=-1.5)  # a 1C discharge from 60 %
    fw = kept.fw
    fw.estimator.capacity_ah[1] *= 0.9  # as if learnt: cell 2 has lost a tenth
    before = retain(fw)
    soc_before = fw.estimate.cell_soc.copy()
    counters_before = fw.counters.as_dict()
    log_before = [e.event for e in fw.log.entries]
    assert counters_before["charge_out_ah"] > 0.02 and counters_before["contactor_cycles"] == 1
    kept.reboot(off_s=5.0)
    fw2 = kept.fw
    assert fw2 is not fw
    assert fw2.counters.as_dict() == counters_before
    np.testing.assert_array_equal(fw2.estimator.capacity_ah, before.cell_capacity_ah)
    assert [e.event for e in fw2.log.entries] == log_before
    act = kept.tick()
    # 5 s off is no rest: the stored SoC stands (not the voltage's), and SoH is the learnt one
    np.testing.assert_allclose(fw2.estimate.cell_soc, soc_before, atol=2e-3)
    assert act.estimate.soh_pct == pytest.approx(90.0)
    kept.run(30.0, demand_a=-1.5)
    assert fw2.counters.charge_out_ah > counters_before["charge_out_ah"]  # counting carries on
    assert fw2.counters.contactor_cycles == 2  # closed again after the reboot


def test_soc_after_a_long_rest_is_corrected_by_the_rest_voltage(store_path):
    """A stale stored SoC within the estimator's doubt stands after a short power-down; after
    one longer than the rest settling time the rest voltage sets it where the curve is steep."""
    kept = Kept(store_path, initial_soc=0.7)
    kept.run(5.0)
    true_soc = kept.pack.true_pack_soc
    # what the store holds is 8 % off (a slow drift); within 3 sigma of the voltage's doubt
    db = sqlite3.connect(store_path)
    kept.keeper.close(kept.now_s)
    cell_soc = json.loads(db.execute("SELECT cell_soc FROM snapshot").fetchone()[0])
    db.execute("UPDATE snapshot SET cell_soc = ?", (json.dumps([s - 0.08 for s in cell_soc]),))
    db.commit()
    db.close()
    kept.clock.unix_s += 60.0
    kept.boot()
    kept.tick()
    short = kept.fw.soc
    kept.store.close()
    kept.clock.unix_s += 3600.0  # an hour off: the cells have relaxed
    kept.boot()
    kept.tick()
    rested = kept.fw.soc
    assert abs(short - (true_soc - 0.08)) < 0.02
    assert abs(rested - true_soc) < 0.02


def test_a_latched_fault_stays_latched_across_a_restart(store_path):
    kept = Kept(store_path)
    kept.run(3.0)
    kept.inject("0:sensor-offset:cell=2,offset_v=2.0")  # implausible: a sensor fault
    kept.run(2.0)
    assert "VOLTAGE_SENSOR_FAULT" in kept.names()
    kept.pack.sensors.voltage_offset_v[:] = 0.0  # the sensor is repaired, power off
    kept.reboot(off_s=60.0, clean=False)  # the power just went: the fault's save stands
    act = kept.tick()
    assert act.state == "FAULT" and not act.contactors.negative
    assert act.fault_bitmap >> 14 & 1  # VOLTAGE_SENSOR_FAULT is bit 14
    kept.run(5.0)
    assert kept.fw.state == "FAULT"  # not cleared by time
    kept.fw.request("clear-faults")
    kept.run(2.0)
    assert kept.fw.state in ("STANDBY", "PRECHARGE", "RUN")


def test_a_latched_event_fault_stays_latched(store_path):
    kept = Kept(store_path)
    kept.run(2.0)
    for _ in range(15):  # the rig is silent: MEASUREMENT_TIMEOUT
        kept.tick(measurement=False)
    assert kept.fw.event_faults == {"MEASUREMENT_TIMEOUT"}
    kept.reboot()
    act = kept.tick()
    assert act.state == "FAULT" and kept.fw.event_faults == {"MEASUREMENT_TIMEOUT"}


def trip_a_sensor_fault(kept: Kept) -> None:
    """VOLTAGE_SENSOR_FAULT raised by an implausible reading of cell 2, then the reading
    back: a trip that a clear-faults may clear."""
    kept.inject("0:sensor-offset:cell=2,offset_v=1.5")
    kept.run(3.0)
    kept.inject("0:sensor-offset:cell=2,offset_v=-1.5")


def test_a_lockout_outlives_a_power_cycle_until_a_service_action(store_path):
    """Three trips lock the pack out; a power cycle (a host's way round clear-faults) leaves
    it locked out, clear-faults is still refused, and only a service action frees it."""
    kept = Kept(store_path)
    kept.fw.request("run")
    kept.run(10.0)
    for _ in range(3):
        trip_a_sensor_fault(kept)
        kept.tick()  # a clear is judged on the readings the firmware has
        kept.fw.request("clear-faults")
        kept.run(15.0)
    assert "VOLTAGE_SENSOR_FAULT" in kept.fw.locked_out
    kept.reboot(off_s=60.0, clean=False)  # the power just went: the trip's save stands
    assert "VOLTAGE_SENSOR_FAULT" in kept.fw.locked_out
    kept.fw.request("clear-faults")
    kept.run(15.0)
    assert kept.fw.state == "FAULT" and not kept.history[-1][1].contactors.negative
    kept.fw.request("service-reset")
    kept.run(15.0)
    assert not kept.fw.locked_out and kept.history[-1][1].contactors.main_closed
    kept.reboot()
    assert not kept.fw.locked_out  # the service action was saved too


def test_storage_is_kept_across_a_restart(store_path):
    kept = Kept(store_path)
    kept.fw.request("storage")
    kept.run(2.0)
    assert kept.fw.state == "STORAGE"
    kept.reboot()
    kept.run(1.0)
    assert kept.fw.state == "STORAGE"


# --- configuration ----------------------------------------------------------------------------


def device_on(kept: Kept) -> Device:
    return Device(kept.fw, kept.pack.chem, Identity(kept.pack.chem.name, pm.Mode.SIM, 1,
                                              kept.pack.capacity_ah, kept.pack.sensors.n_temp),
                  kept.resumed.overrides, on_config_change=kept.keeper.config_written,
                  store=kept.keeper)


def param_id(device: Device, name: str) -> int:
    return next(p.id for p in device.params if p.name == name)


def test_a_configuration_write_is_kept_and_logged_with_who_old_and_new(store_path):
    kept = Kept(store_path)
    device = device_on(kept)
    pid = param_id(device, "limits.max_charge_a")
    old = kept.fw.cfg.limits.max_charge_a
    reply = device.handle(pm.SetConfig(({"param_id": pid, "kind": FLOAT, "value": 1.0},)),
                          1.0, who="protocol on /dev/ttyUSB0")
    assert isinstance(reply, pm.ConfigValues)
    refused = device.handle(pm.SetConfig(({"param_id": pid, "kind": FLOAT, "value": -5.0},)),
                            2.0)
    assert isinstance(refused, pm.Nack)
    rows = kept.store.db.execute("SELECT who, param, old, new, t_s FROM config_changes").fetchall()
    # the write is on disk before its answer; the refused one left no trace
    assert rows == [("protocol on /dev/ttyUSB0", "limits.max_charge_a", json.dumps(old),
                     "1.0", 1.0)]
    kept.reboot()
    assert kept.fw.cfg.limits.max_charge_a == 1.0
    assert kept.resumed.overrides == {"limits": {"max_charge_a": 1.0}}


def test_a_config_file_given_at_start_replaces_the_stored_one_and_is_logged(store_path):
    kept = Kept(store_path)
    device = device_on(kept)
    device.handle(pm.SetConfig(({"param_id": param_id(device, "limits.max_charge_a"),
                                 "kind": FLOAT, "value": 1.0},)), 1.0)
    fw_cfg = kept.fw.cfg
    overrides = {"limits": {"max_discharge_a": 2.0}}
    cfg = parse_config(overrides, "site.toml", kept.pack.chem, kept.pack.n_series,
                       kept.pack.capacity_ah)
    kept.reboot(given=(cfg, overrides, "--config site.toml"))
    assert kept.fw.cfg.limits.max_discharge_a == 2.0
    assert kept.fw.cfg.limits.max_charge_a != 1.0  # the file, not the earlier write
    rows = kept.store.db.execute(
        "SELECT who, param, old, new FROM config_changes ORDER BY id").fetchall()
    assert rows[1:] == [
        ("--config site.toml", "limits.max_charge_a", "1.0", json.dumps(cfg.limits.max_charge_a)),
        ("--config site.toml", "limits.max_discharge_a",
         json.dumps(fw_cfg.limits.max_discharge_a), "2.0")]


# --- when the keeper saves --------------------------------------------------------------------


def saves(kept: Kept) -> tuple[str, float]:
    """The last save's reason and time (through the emulator's own connection: it holds
    the store)."""
    return kept.store.db.execute("SELECT reason, saved_at_s FROM snapshot").fetchone()


def test_saves_come_on_faults_state_changes_the_period_and_shutdown(store_path):
    kept = Kept(store_path, period_s=5.0)
    reasons = []
    last = None
    for _ in range(round(12.0 / TICK_S)):
        kept.tick()
        if kept.keeper.saves != last:
            last = kept.keeper.saves
            reasons.append(saves(kept))
    kinds = [r for r, _ in reasons]
    assert reasons[0] == ("state", 0.0)  # the first step: INIT to STANDBY
    assert kinds.count("state") == 3  # STANDBY, PRECHARGE, RUN
    period_times = [t for r, t in reasons if r == "period"]
    assert all(b - a >= 5.0 - 1e-9 for a, b in zip(period_times, period_times[1:], strict=False))
    assert len(period_times) >= 2
    kept.inject("0:temp-sensor-open:sensor=1")
    n = kept.keeper.saves
    for _ in range(round(2.0 / TICK_S)):
        act = kept.tick()
        if act.events:
            assert saves(kept) == ("fault", kept.now_s - TICK_S)
    assert kept.keeper.saves > n
    kept.keeper.close(kept.now_s)
    db = sqlite3.connect(store_path)
    assert db.execute("SELECT reason FROM snapshot").fetchone() == ("shutdown",)
    db.close()


def test_the_fault_log_is_saved_incrementally_and_pruned_by_the_stores_own_bound(
        store_path, monkeypatch):
    """The store's log is the pack's history: it keeps what the firmware's smaller log
    (5 here) pushed out, and prunes only beyond its own bound (FAULT_LOG_SIZE_MAX, made 10
    here); a restart hands back the newest the firmware's log holds."""
    monkeypatch.setattr("bms.store.nvm.FAULT_LOG_SIZE_MAX", 10)
    kept = Kept(store_path)
    fw = kept.fw
    from bms.core.signals import FaultEvent
    fw.log.resize(5)
    for k in range(12):
        fw.log.record(FaultEvent(float(k), "CELL_IMBALANCE", 11, "WARNING",
                                 "raised" if k % 2 == 0 else "cleared"), {"k": k})
        if k % 4 == 3:
            kept.store.save(retain(fw), None, float(k), "fault")
    kept.store.save(retain(fw), None, 12.0, "fault")
    rows = kept.store.db.execute("SELECT seq, t_s FROM fault_log ORDER BY seq").fetchall()
    assert rows == [(k, float(k)) for k in range(2, 12)]
    kept.reboot()  # fault_log_size is the default 1000 again: all the store holds comes back
    assert [e.event.t_s for e in kept.fw.log.entries] == [float(k) for k in range(2, 12)]
    assert kept.fw.log.recorded == 12 and kept.fw.log.dropped == 2


def test_a_failed_save_is_counted_and_the_next_one_tries_again(store_path):
    kept = Kept(store_path, period_s=1.0)
    kept.run(1.0)
    good = kept.keeper.saves
    kept.store.db.execute("PRAGMA query_only = 1")  # writes now fail, as on a full disk
    kept.run(2.0)
    assert kept.keeper.failures >= 1 and kept.keeper.saves == good
    kept.store.db.execute("PRAGMA query_only = 0")
    kept.run(2.0)
    assert kept.keeper.saves > good


# --- what a store refuses ---------------------------------------------------------------------


def test_a_second_emulator_on_the_same_store_is_refused(store_path):
    kept = Kept(store_path)
    with pytest.raises(NvmError, match="in use by a running emulator"):
        NvmStore(store_path, identity(kept), Clock())
    kept.keeper.close(0.0)
    NvmStore(store_path, identity(kept), Clock()).close()


def test_a_store_of_another_pack_is_refused_and_left_alone(store_path):
    kept = Kept(store_path)
    kept.run(1.0)
    kept.keeper.close(1.0)
    content = store_path.read_bytes()
    other = PackIdentity("rack1", "sim", "na-nfm", 8, identity(kept).capacity_ah)
    with pytest.raises(NvmError, match=r"belongs to pack rack1 \(sim, 4 cells of na-nfm"):
        NvmStore(store_path, other, Clock())
    assert store_path.read_bytes() == content


def test_a_store_from_a_newer_version_is_refused_unchanged(store_path):
    Kept(store_path).keeper.close(0.0)
    db = sqlite3.connect(store_path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    content = store_path.read_bytes()
    with pytest.raises(NvmError, match=f"schema version {SCHEMA_VERSION + 1}, from a newer"):
        NvmStore(store_path, identity(Bench()), Clock())
    assert store_path.read_bytes() == content


@pytest.mark.parametrize("content", [b"not a database at all" * 100, None])
def test_a_file_that_is_not_a_store_is_refused_unchanged(store_path, content):
    if content is None:  # an SQLite database of something else
        db = sqlite3.connect(store_path)
        db.execute("CREATE TABLE notes (text TEXT)")
        db.commit()
        db.close()
        content = store_path.read_bytes()
    else:
        store_path.write_bytes(content)
    with pytest.raises(NvmError, match="not"):
        NvmStore(store_path, identity(Bench()), Clock())
    assert store_path.read_bytes() == content


def test_an_older_store_is_migrated_with_its_contents(store_path):
    """A version-1 store (before the configuration write log) opens, migrates and resumes."""
    db = sqlite3.connect(store_path, isolation_level=None)
    db.execute("BEGIN")
    for statement in MIGRATIONS[0].split(";"):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("COMMIT")
    p = identity(Bench())
    db.execute("INSERT INTO pack VALUES (1, ?, ?, ?, 0)", (p.chemistry, p.n_series,
                                                          p.capacity_ah))
    db.execute("INSERT INTO config VALUES (1, ?)", (json.dumps({"limits": {"max_charge_a": 1.2}}),))
    db.close()
    kept = Kept(store_path)
    assert kept.fw.cfg.limits.max_charge_a == 1.2
    db = kept.store.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT COUNT(*) FROM config_changes").fetchone()[0] == 0


def test_the_default_store_lives_under_the_users_data_directory(own_data_dir):
    assert data_dir() == own_data_dir / "bms-emu" / "nvm"


def test_mqtt_configuration_commands_are_logged_as_such(store_path):
    from bms.host.policy import parse_policy
    from bms.links.mqtt.commands import handle_command

    kept = Kept(store_path)
    device = device_on(kept)
    done = handle_command("config", json.dumps({"set": {"limits.max_charge_a": 1.25}}).encode(),
                          parse_policy("config"), device, 3.0)
    refused = handle_command("config", json.dumps({"set": {"limits.max_charge_a": -1}}).encode(),
                             parse_policy("config"), device, 4.0)
    assert done["ok"] and not refused["ok"]
    rows = kept.store.db.execute("SELECT who, param, new, t_s FROM config_changes").fetchall()
    assert rows == [("MQTT command", "limits.max_charge_a", "1.25", 3.0)]


def empty_and_held(kept: Kept) -> None:
    """1C out of a pack at 8 % until its discharge is held at empty."""
    kept.fw.request("run")
    one_c_a = kept.pack.capacity_ah
    for _ in range(int(1800.0 / TICK_S)):
        kept.tick(demand_a=-one_c_a)
        if kept.fw.empty_charge_as is not None:
            break
    assert kept.fw.empty_charge_as == 0.0
    kept.run(30.0)  # at rest: the voltage recovers, the hold stands


def test_an_empty_hold_outlives_a_power_cycle_until_the_pack_has_taken_charge(store_path):
    """An emptied pack whose BMS loses power (or is reset) must not, on waking, invite the
    inverter back to an empty pack: the hold is kept in the store with the charge it has
    seen taken back, and released only once the share is in."""
    kept = Kept(store_path, initial_soc=0.08, period_s=3600.0)
    empty_and_held(kept)
    kept.reboot(off_s=600.0, clean=False)  # the power just went: the hold's save stands
    assert kept.fw.empty_charge_as == 0.0
    kept.fw.request("run")
    kept.run(60.0)
    assert kept.history[-1][1].contactors.main_closed
    assert max(act.discharge_limit_a for _, act in kept.history[-300:]) == 0.0
    kept.run(30.0, demand_a=0.5)  # some charge in, short of the share
    taken_as = kept.fw.empty_charge_as
    assert 0.0 < taken_as < kept.fw.cfg.limits.empty_release_fraction * kept.fw.capacity_as
    kept.keeper.close(kept.now_s)  # a clean shutdown: `nvm export` shows the hold
    assert export(store_path)["saved"]["empty_hold_charged_ah"] == pytest.approx(
        taken_as / 3600.0)
    kept.boot()
    assert kept.fw.empty_charge_as == taken_as  # the count carries on, not from 0
    kept.fw.request("run")
    kept.run(300.0, demand_a=0.5)
    assert kept.fw.empty_charge_as is None and kept.history[-1][1].discharge_limit_a > 0.0
    kept.keeper.close(kept.now_s)
    assert export(store_path)["saved"]["empty_hold_charged_ah"] is None


def test_a_hosts_reset_keeps_the_empty_hold():
    kept = Bench(initial_soc=0.08)
    kept.fw.request("run")
    for _ in range(int(1800.0 / TICK_S)):
        kept.tick(demand_a=-kept.pack.capacity_ah)
        if kept.fw.empty_charge_as is not None:
            break
    fw, lost = restarted(kept.fw, kept.pack.capacity_ah, boot=1)
    assert lost == [] and fw.empty_charge_as == 0.0


@pytest.mark.parametrize("stored_as", [-5.0, math.inf])
def test_a_stored_hold_that_is_no_count_holds_from_zero_and_says_so(stored_as):
    bench = Bench()
    kept = dataclasses.replace(retain(bench.fw), empty_charge_as=stored_as)
    fw = Firmware(bench.pack.chem, bench.pack.n_series, bench.pack.capacity_ah)
    lost = restore(fw, kept, off_s=1.0)
    assert fw.empty_charge_as == 0.0
    assert lost == [f"the empty hold's charge taken back ({stored_as} A s) is not a count: "
                    "held from 0"]


def test_trips_towards_lockout_outlive_a_power_cycle(store_path):
    """A host that cycles the BMS's supply before each clear of a short that stays: the
    trips are kept with the time off added, so the third within the window still locks the
    pack out (a power cycle forgot them, and the pack closed onto the short at every
    clear)."""
    kept = Kept(store_path)
    kept.fw.request("run")
    kept.run(10.0)
    for _ in range(3):
        trip_a_sensor_fault(kept)
        kept.reboot(off_s=30.0, clean=False)  # the trip's save stands
        kept.fw.request("clear-faults")
        kept.run(15.0)
    assert "VOLTAGE_SENSOR_FAULT" in kept.fw.locked_out
    kept.keeper.close(kept.now_s)
    saved = export(store_path)["saved"]
    ages = saved["lockout_trip_ages_s"]["VOLTAGE_SENSOR_FAULT"]
    assert len(ages) == 3 and ages == sorted(ages, reverse=True)


def test_trips_older_than_the_window_by_the_time_off_are_forgotten(store_path):
    kept = Kept(store_path)
    kept.fw.request("run")
    kept.run(10.0)
    trip_a_sensor_fault(kept)
    window_s = kept.fw.cfg.lockout_window_s
    kept.reboot(off_s=window_s + 1.0, clean=False)
    kept.tick()
    assert kept.fw.hand_over().trip_ages_s == {}


@pytest.mark.parametrize("when", ["while closed", "1 s after an opening"])
def test_a_pack_welded_when_the_power_went_is_found_before_anything_closes(store_path, when):
    """Contactors that were closed when the BMS's supply went (or whose opening was still
    being checked) are checked for a weld from the first step of the next boot: the pack
    precharged onto its live bus and ran, the weld never reported."""
    kept = Kept(store_path, n_series=16)
    kept.inject("0:contactor-weld:contactor=positive")
    kept.inject("0:contactor-weld:contactor=negative")
    kept.fw.request("run")
    kept.run(5.0, demand_a=-0.5)  # closes: the contacts weld
    assert kept.fw.state == "RUN"
    if when == "1 s after an opening":
        kept.fw.request("standby")
        kept.run(1.0)
        assert kept.fw.state == "STANDBY" and kept.fw.opened_at_s is not None
    kept.reboot(off_s=2.0)
    kept.fw.request("run")
    kept.run(30.0, demand_a=-0.5)
    assert "CONTACTOR_WELDED" in kept.fw.event_faults and kept.fw.state == "FAULT"
    assert not any(act.contactors.precharge for _, act in kept.history[-300:])


def test_a_healthy_pack_power_cycled_while_running_closes_again_after_the_check(store_path):
    kept = Kept(store_path, n_series=16)
    kept.fw.request("run")
    kept.run(5.0, demand_a=-0.5)
    kept.reboot(off_s=2.0)
    booted = len(kept.history)
    kept.fw.request("run")
    kept.run(10.0, demand_a=-0.5)
    assert kept.fw.state == "RUN" and not kept.fw.event_faults
    closed_s = next(t for t, act in kept.history[booted:] if act.contactors.main_closed)
    assert closed_s >= kept.fw.cfg.contactors.weld_check_s  # checked first


def test_what_a_restart_hands_over_is_saved_and_loaded_whole(store_path):
    """Store version 7's columns: the empty hold, the trips towards lockout, a weld check
    due and the FAULT rows debouncing come back from the store as they were retained."""
    kept = Kept(store_path)
    kept.run(1.0)
    handed = HandOver(
        trip_ages_s={"SHORT_CIRCUIT": [30.0, 2.5]}, weld_check_due=True,
        debouncing_rows=(("CELL_OVERVOLTAGE", "cell_v_max", True),), recovery_age_s=42.0,
        precharge_attempts=2)
    retained = dataclasses.replace(retain(kept.fw), empty_charge_as=12.5, hand_over=handed)
    kept.store.save(retained, 0.5, kept.now_s, "test")
    back = kept.store.load().retained
    assert (back.empty_charge_as, back.hand_over) == (12.5, handed)
    kept.store.close()


def test_a_stored_recovery_age_that_is_no_time_resumes_from_zero_and_says_so():
    bench = Bench()
    kept = dataclasses.replace(retain(bench.fw), hand_over=HandOver(recovery_age_s=-3.0))
    fw = Firmware(bench.pack.chem, bench.pack.n_series, bench.pack.capacity_ah)
    lost = restore(fw, kept, off_s=10.0)
    assert fw.hand_over().recovery_age_s == 10.0  # from 0, older by the time off
    assert lost == ["the recovery charge's age (-3.0 s) is not a time: resumed from 0"]


def test_a_restart_before_the_first_step_hands_over_what_it_was_handed():
    """Two resets in a row (or a boot shut down before its first step): the weld check and
    the FAULT rows debouncing go on to the next firmware, not lost by the one between."""
    bench = Bench()
    bench.fw.request("run")
    bench.run(5.0)
    middle, _ = restarted(bench.fw, bench.pack.capacity_ah, boot=1)
    middle.take_over(dataclasses.replace(
        middle.hand_over(), debouncing_rows=(("CELL_OVERVOLTAGE", "cell_v_max", True),)))
    last, lost = restarted(middle, bench.pack.capacity_ah, boot=2)
    assert lost == [] and last.hand_over().weld_check_due
    assert last.hand_over().debouncing_rows == (("CELL_OVERVOLTAGE", "cell_v_max", True),)


def test_a_recovery_that_ended_is_not_handed_over_again():
    """A recovery handed over and ended (its timeout latched the under-voltage FAULT): a
    later reset must neither resume it nor, by suspending the low-cell rows, clear that
    FAULT."""
    bench = Bench()
    kept = dataclasses.replace(retain(bench.fw), hand_over=HandOver(recovery_age_s=5.0))
    fw = Firmware(bench.pack.chem, bench.pack.n_series, bench.pack.capacity_ah)
    restore(fw, kept, off_s=0.0)
    bench.fw = fw
    bench.tick()
    assert fw.recovering_since_s is not None
    fw.recovering_since_s = None  # ended (into RUN, or its timeout's FAULT)
    bench.tick()
    assert fw.hand_over().recovery_age_s is None
    assert retain(fw).hand_over.recovery_age_s is None
