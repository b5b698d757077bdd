"""The fault log: bounded, in order, every raise and clear with a snapshot of the pack."""

from __future__ import annotations

import dataclasses

import pytest

from bms.core.fault_log import FaultLog, LogEntry
from bms.core.firmware import Firmware
from bms.core.signals import FaultEvent, State
from bms.data.config import default_config
from tests.bms.core.test_firmware import TICK_S, Bench

SNAPSHOT_KEYS = {"state", "pack_v", "current_a", "cell_v_min", "cell_v_max"}


def event(k: int, action: str = "raised") -> FaultEvent:
    return FaultEvent(float(k), "CELL_OVERVOLTAGE", 0, "WARNING", action, k % 4, 4.0 + k / 100)


# --- the log on its own ------------------------------------------------------------------


def test_entries_keep_order_event_and_snapshot():
    log = FaultLog(10)
    snapshots = [{"state": "RUN", "pack_v": 60.0 + k} for k in range(4)]
    for k, snap in enumerate(snapshots):
        log.record(event(k, "raised" if k % 2 == 0 else "cleared"), snap)
    assert len(log) == 4 and log.dropped == 0
    assert [e.event for e in log.entries] == [
        event(k, "raised" if k % 2 == 0 else "cleared") for k in range(4)]
    assert [e.snapshot for e in log.entries] == snapshots
    assert all(isinstance(e, LogEntry) for e in log.entries)


def test_log_is_bounded_and_counts_what_it_drops():
    log = FaultLog(3)
    for k in range(8):
        log.record(event(k), {"k": k})
        assert len(log) == min(k + 1, 3)
        assert log.dropped == max(k + 1 - 3, 0)
    # the newest three survive, oldest first
    assert [e.event.t_s for e in log.entries] == [5.0, 6.0, 7.0]
    assert [e.snapshot["k"] for e in log.entries] == [5, 6, 7]


def test_log_of_one_entry_keeps_only_the_newest():
    log = FaultLog(1)
    log.record(event(0), {"k": 0})
    assert log.dropped == 0
    log.record(event(1), {"k": 1})
    assert len(log) == 1 and log.dropped == 1
    assert log.entries[0].snapshot == {"k": 1}


def test_entry_as_dict_is_the_event_plus_its_snapshot():
    entry = LogEntry(event(3), {"state": "FAULT", "pack_v": 61.2})
    d = entry.as_dict()
    assert d == {**event(3).as_dict(), "snapshot": {"state": "FAULT", "pack_v": 61.2}}
    assert d["name"] == "CELL_OVERVOLTAGE" and d["t_s"] == 3.0


# --- the log inside the firmware ---------------------------------------------------------


def fault_then_clear(bench: Bench) -> None:
    """Runs, injects an implausible cell reading (FAULT), removes it and clears the faults."""
    bench.run(10.0)
    assert bench.fw.state == "RUN"
    bench.inject("0:sensor-offset:cell=2,offset_v=1.5")
    bench.run(5.0)
    assert bench.fw.state == "FAULT"
    bench.pack.sensors.voltage_offset_v[:] = 0.0
    bench.run(15.0)  # WARNING / ALARM rows clear themselves; the FAULT rows wait
    bench.fw.request("clear-faults")
    bench.run(10.0)
    assert bench.fw.state == "RUN"


def test_firmware_logs_every_raise_and_clear_with_a_pack_snapshot():
    bench = Bench()
    fault_then_clear(bench)
    entries = list(bench.fw.log.entries)
    assert bench.fw.log.dropped == 0
    # one entry per event the firmware reported, in the same order
    assert [e.event for e in entries] == bench.events
    raised = [e.event.name for e in entries if e.event.action == "raised"]
    cleared = [e.event.name for e in entries if e.event.action == "cleared"]
    assert "VOLTAGE_SENSOR_FAULT" in raised and "VOLTAGE_SENSOR_FAULT" in cleared
    assert sorted(raised) == sorted(cleared)  # everything raised was cleared again
    times = [e.event.t_s for e in entries]
    assert times == sorted(times)
    for entry in entries:
        snap = entry.snapshot
        assert snap.keys() >= SNAPSHOT_KEYS, snap
        assert snap["state"] in list(State)
        m = bench.seen[round(entry.event.t_s, 6)]  # the measurement of the step it happened
        assert snap["pack_v"] == pytest.approx(float(m.cell_voltage_v.sum()), abs=1e-3)
        assert snap["current_a"] == pytest.approx(m.current_a, abs=1e-3)
        assert snap["cell_v_min"] == pytest.approx(float(m.cell_voltage_v.min()), abs=1e-4)
        assert snap["cell_v_max"] == pytest.approx(float(m.cell_voltage_v.max()), abs=1e-4)
    first = entries[0]
    assert first.event.name == "VOLTAGE_SENSOR_FAULT" and first.event.action == "raised"
    assert first.snapshot["state"] == "RUN"  # the state the fault found the pack in
    assert first.snapshot["cell_v_max"] > 4.1 + 0.3  # the implausible reading itself
    last_clear = [e for e in entries if e.event.name == "VOLTAGE_SENSOR_FAULT"
                  and e.event.action == "cleared"][-1]
    assert last_clear.snapshot["cell_v_max"] < 4.1


def test_firmware_log_is_bounded_by_the_configured_size():
    bench = Bench()
    size = 3
    cfg = dataclasses.replace(default_config(bench.pack.chem, 4, bench.pack.capacity_ah),
                              fault_log_size=size)
    bench.fw = Firmware(bench.pack.chem, 4, bench.pack.capacity_ah, cfg)
    fault_then_clear(bench)
    assert len(bench.events) > size
    assert len(bench.fw.log) == size
    assert bench.fw.log.dropped == len(bench.events) - size
    assert [e.event for e in bench.fw.log.entries] == bench.events[-size:]


def test_event_fault_is_logged_with_a_snapshot():
    bench = Bench()
    bench.inject("0:precharge-open")
    cfg = bench.fw.cfg.precharge
    bench.run((cfg.retries + 1) * (cfg.timeout_s + cfg.retry_wait_s) + 5 * TICK_S)
    (entry,) = bench.fw.log.entries
    assert (entry.event.name, entry.event.action) == ("PRECHARGE_FAILED", "raised")
    assert entry.snapshot.keys() >= SNAPSHOT_KEYS
    assert entry.snapshot["state"] in ("PRECHARGE", "FAULT")
    assert entry.snapshot["current_a"] == pytest.approx(0.0, abs=0.05)
