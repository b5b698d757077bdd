"""Protocol 1.1's new requests on the device: SetTime and the UTC and boot of fault log
entries, the paged reads of counters, cell health and the configuration-write log,
FactoryDefaults and Reset as Commands, FaultEvents for a subscribed link. Every request
and answer goes over the codec (`Bench.ask`), as a host would see them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bms.data.config import default_config
from bms.data.faults import FAULT_CODES
from bms.data.parameters import value_of
from bms.host.device import MAX_PAGE
from bms.host.records import counter_entries
from bms.store.nvm import NvmStore, PackIdentity
from bms.store.persistence import Keeper
from protocol import messages as pm
from protocol.codec import Decoder, encode
from protocol.framing import REVISION_1_0, REVISION_1_1, Flags
from tests.bms.host.test_device import (
    CAPACITY_AH,
    CHEM,
    N_SERIES,
    OVERVOLTAGE,
    PARAM,
    TYPE,
    Bench,
    nack,
    value,
)

UTC_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
EVENTS = {"msg_type": TYPE[pm.FaultEvent], "period_ms": 0}  # the period is not used


@pytest.fixture
def bench() -> Bench:
    b = Bench()
    b.run(1.0)
    assert b.fw.state == "RUN"
    return b


def faulted(b: Bench) -> Bench:
    """Cell 3 over its FAULT threshold long enough for WARNING, ALARM and FAULT."""
    b.run(3.0, OVERVOLTAGE)
    assert b.fw.log.recorded >= 3
    return b


def whole_log(b: Bench, revision: int = REVISION_1_1) -> list[dict]:
    return list(b.ask(pm.GetFaultLog(0, MAX_PAGE), revision=revision).entries)


# --- SetTime ----------------------------------------------------------------------------

def test_set_time_gives_every_entry_of_this_boot_its_utc_those_before_it_too(bench):
    faulted(bench)
    before = whole_log(bench)
    assert before and all(math.isnan(e["utc_s"]) and e["boot"] == 0 for e in before)
    now_s = bench.now_s
    assert isinstance(bench.ask(pm.SetTime(UTC_S)), pm.Ack)
    after = whole_log(bench)
    for old, new in zip(before, after, strict=True):
        assert new["utc_s"] == pytest.approx(UTC_S + (new["t_s"] - now_s))
        assert (new["t_s"], new["code"]) == (old["t_s"], old["code"])
    # a later SetTime replaces the offset (a host that found its clock off)
    bench.ask(pm.SetTime(UTC_S + 10.0))
    assert whole_log(bench)[0]["utc_s"] == pytest.approx(after[0]["utc_s"] + 10.0)
    # a 1.0 client sees the 1.0 entry: its decoder fills in "unknown"
    old_page = whole_log(bench, REVISION_1_0)
    assert all(e["boot"] == 0 and math.isnan(e["utc_s"]) for e in old_page)


@pytest.mark.parametrize("utc_s", [math.nan, math.inf, -1.0, 0.0, 946_684_799.0,
                                   4_102_444_800.0])
def test_set_time_outside_2000_to_2100_is_refused_and_changes_nothing(bench, utc_s):
    detail = nack(bench.ask(pm.SetTime(utc_s)), pm.ErrorCode.OUT_OF_RANGE)
    assert "utc_s = " in detail and "2000-01-01" in detail and "2100-01-01" in detail
    assert bench.device.utc_offsets == {}


# --- counters, cell health --------------------------------------------------------------

def test_counters_are_the_firmwares_with_names_and_units_and_page_stably(bench):
    page = bench.ask(pm.GetCounters(0, 255))
    entries = {e["name"]: e for e in page.entries}
    assert page.total == len(page.entries) <= MAX_PAGE and page.start == 0
    c = bench.fw.counters
    assert entries["charge_in_ah"]["unit"] == "Ah"
    assert entries["energy_out_wh"]["unit"] == "Wh"
    assert entries["contactor_cycles"] == {"name": "contactor_cycles", "unit": "",
                                           "value": float(c.contactor_cycles)}
    assert c.contactor_cycles == 1  # closed once on the way to RUN
    assert entries["time_in_state_s.RUN"]["unit"] == "s"
    assert entries["time_in_state_s.RUN"]["value"] == pytest.approx(c.time_in_state_s["RUN"])
    assert entries["extremes.cell_v_max"]["unit"] == "V"
    assert entries["extremes.cell_v_max"]["value"] == pytest.approx(3.53, abs=1e-3)
    assert entries["equivalent_cycles"]["value"] == pytest.approx(
        c.charge_out_ah / CAPACITY_AH)
    # two pages asked for from where each ends are the one page
    first = bench.ask(pm.GetCounters(0, 5))
    rest = bench.ask(pm.GetCounters(len(first.entries), 255))
    assert [e["name"] for e in first.entries + rest.entries] == list(entries)
    assert bench.ask(pm.GetCounters(page.total, 10)).entries == ()


def test_an_extreme_not_seen_yet_is_nan():
    b = Bench()
    entries = {e["name"]: e["value"] for e in b.ask(pm.GetCounters(0, 255), now_s=0.0).entries}
    assert math.isnan(entries["extremes.cell_v_max"]) and entries["charge_in_ah"] == 0.0
    assert list(entries) == [e["name"] for e in counter_entries(b.fw.counters, CAPACITY_AH)]


def test_cell_health_is_the_estimators_cell_by_cell(bench):
    est = bench.fw.estimator
    est.capacity_ah = est.capacity_ah * np.array([1.0, 0.9, 1.0, 0.8])  # two cells aged
    page = bench.ask(pm.GetCellHealth(0, 255))
    assert page.total == N_SERIES == len(page.entries)
    soh = [e["soh_pct"] for e in page.entries]
    assert soh == pytest.approx([100.0, 90.0, 100.0, 80.0], abs=1e-3)
    assert page.entries[3]["capacity_ah"] == pytest.approx(0.8 * CAPACITY_AH, rel=1e-6)
    r = est.cell_resistance_ohm()
    assert [e["resistance_ohm"] for e in page.entries] == pytest.approx(r, rel=1e-6)
    assert all(e["resistance_ohm"] > 0 for e in page.entries)
    assert [e["resistance_pct"] for e in page.entries] == pytest.approx(100.0 * est.r_factor)
    tail = bench.ask(pm.GetCellHealth(2, 255))
    assert (tail.start, tail.total, len(tail.entries)) == (2, N_SERIES, 2)
    assert tail.entries[1]["soh_pct"] == pytest.approx(80.0, abs=1e-3)


def test_cell_resistance_is_nan_before_the_first_estimate():
    page = Bench().ask(pm.GetCellHealth(0, 255), now_s=0.0)
    assert all(math.isnan(e["resistance_ohm"]) and e["soh_pct"] == 100.0
               for e in page.entries)


# --- the configuration-write log --------------------------------------------------------

def kept_bench(tmp_path) -> tuple[Bench, Keeper]:
    """A device on a real store, as `serve` builds it."""
    b = Bench()
    store = NvmStore(tmp_path / "p.sqlite",
                     PackIdentity("p", "sim", CHEM.name, N_SERIES, CAPACITY_AH), lambda: 1.8e9)
    keeper = Keeper(store, b.fw)
    b.device.store = keeper
    b.device.on_config_change = keeper.config_written
    b.run(1.0)
    return b, keeper


def test_the_config_log_lists_each_write_with_its_boot_time_writer_and_values(tmp_path):
    b, keeper = kept_bench(tmp_path)
    charge = PARAM["limits.max_charge_a"]
    old = value_of(b.fw.cfg, charge)
    b.ask(pm.SetConfig((value(charge.id, pm.ValueKind.FLOAT, 1.25),)))
    written_s = b.now_s
    b.step()
    b.ask(pm.SetTime(UTC_S))
    set_s = b.now_s
    page = b.ask(pm.GetConfigLog(0, 10))
    assert page.total == 1 and page.start == 0
    (entry,) = page.entries
    assert entry == {"boot": keeper.boot, "t_s": pytest.approx(written_s),
                     "utc_s": pytest.approx(UTC_S - (set_s - written_s)), "who": "protocol",
                     "param": "limits.max_charge_a", "old": repr(float(old)), "new": "1.25"}
    assert b.ask(pm.GetConfigLog(1, 10)).entries == ()
    keeper.store.close()


def test_without_a_store_the_config_log_is_empty(bench):
    bench.ask(pm.SetConfig((value(PARAM["limits.max_charge_a"].id, pm.ValueKind.FLOAT, 1.0),)))
    page = bench.ask(pm.GetConfigLog(0, 10))
    assert (page.total, page.entries) == (0, ())


def test_a_store_restarted_entry_keeps_its_boot_and_its_boots_clock(tmp_path):
    """Entries of an earlier boot carry that boot and the clock that boot was given."""
    b, keeper = kept_bench(tmp_path)
    b.ask(pm.SetTime(UTC_S))
    faulted(b)
    for e in b.fw.log.entries:  # as the store hands them back after a restart
        e.snapshot["boot"] = keeper.boot
    keeper.store.new_boot()
    entries = whole_log(b)
    assert all(e["boot"] == 1 for e in entries) and keeper.boot == 2
    assert all(e["utc_s"] == pytest.approx(UTC_S + e["t_s"] - 1.0) for e in entries)
    keeper.store.close()


# --- FactoryDefaults and Reset ------------------------------------------------------------

def test_factory_defaults_are_refused_while_the_pack_may_be_on_the_bus(bench):
    bench.ask(pm.SetConfig((value(PARAM["limits.max_charge_a"].id, pm.ValueKind.FLOAT, 1.0),)))
    cfg = bench.fw.cfg
    detail = nack(bench.ask(pm.CommandRequest(pm.Command.FACTORY_DEFAULTS, 0)),
                  pm.ErrorCode.NOT_NOW)
    assert "FACTORY_DEFAULTS in RUN" in detail and "STANDBY first" in detail
    assert bench.fw.cfg is cfg and bench.device.overrides


def test_factory_defaults_undo_every_write_and_are_kept_as_a_write(bench):
    writes = []
    bench.device.on_config_change = lambda *args: writes.append(args)
    charge = PARAM["limits.max_charge_a"]
    bench.ask(pm.SetConfig((value(charge.id, pm.ValueKind.FLOAT, 1.0),)))
    bench.ask(pm.CommandRequest(pm.Command.STANDBY, 0))
    bench.run(0.5)
    assert bench.fw.state == "STANDBY"
    assert isinstance(bench.ask(pm.CommandRequest(pm.Command.FACTORY_DEFAULTS, 0)), pm.Ack)
    default = default_config(CHEM, N_SERIES, CAPACITY_AH)
    assert bench.fw.cfg == default and bench.device.overrides == {}
    who, changes, overrides, _ = writes[-1]
    assert who == "protocol, factory defaults" and overrides == {}
    assert [(c.param, c.old, c.new) for c in changes] == [
        ("limits.max_charge_a", 1.0, value_of(default, charge))]


def test_factory_defaults_the_store_cannot_keep_change_nothing(bench):
    def failing(*_):
        raise OSError("disk full")

    bench.ask(pm.SetConfig((value(PARAM["limits.max_charge_a"].id, pm.ValueKind.FLOAT, 1.0),)))
    bench.ask(pm.CommandRequest(pm.Command.STANDBY, 0))
    bench.run(0.5)
    bench.device.on_config_change = failing
    cfg = bench.fw.cfg
    detail = nack(bench.ask(pm.CommandRequest(pm.Command.FACTORY_DEFAULTS, 0)),
                  pm.ErrorCode.SAVE_FAILED)
    assert "disk full" in detail and bench.fw.cfg is cfg


def test_reset_is_asked_of_the_runtime_and_refused_without_one(bench):
    detail = nack(bench.ask(pm.CommandRequest(pm.Command.RESET, 0)),
                  pm.ErrorCode.NOT_IN_THIS_MODE)
    assert "RESET" in detail
    asked = []
    bench.device.on_reset = lambda: asked.append(bench.now_s)
    assert isinstance(bench.ask(pm.CommandRequest(pm.Command.RESET, 0)), pm.Ack)
    assert asked == [bench.now_s]


@pytest.mark.parametrize("command", [pm.Command.RESET, pm.Command.FACTORY_DEFAULTS])
def test_a_1_1_command_in_a_1_0_frame_is_bad_value_as_a_1_0_device_says(bench, command):
    asked = []
    bench.device.on_reset = lambda: asked.append(1)
    cfg = bench.fw.cfg
    detail = nack(bench.ask(pm.CommandRequest(command, 0), revision=REVISION_1_0),
                  pm.ErrorCode.BAD_VALUE)
    assert f"command {int(command)}; allowed in protocol 1.0: 1 RUN" in detail
    assert f"{int(command)} {command.name}" not in detail
    assert asked == [] and bench.fw.cfg is cfg


# --- fault events -------------------------------------------------------------------------

def test_a_subscribed_link_gets_each_logged_event_with_its_log_index(bench):
    assert isinstance(bench.ask(pm.Subscribe((EVENTS,))), pm.Ack)
    assert bench.device.events_subscribed and bench.device.subscriptions == {}
    pushed: list[pm.FaultEvent] = []
    for _ in range(30):
        act = bench.step(OVERVOLTAGE)
        pushed += bench.device.fault_events(act)
    assert len(pushed) == bench.fw.log.recorded >= 3
    assert [ev.log_index for ev in pushed] == list(range(len(pushed)))
    page = whole_log(bench)
    for ev, entry in zip(pushed, page, strict=True):
        assert (ev.time_s, ev.code, ev.level, ev.action, ev.index) == (
            entry["t_s"], entry["code"], entry["level"], entry["action"], entry["index"])
        assert ev.boot == entry["boot"] == 0 and math.isnan(ev.utc_s)
    assert {ev.code for ev in pushed} == {FAULT_CODES["CELL_OVERVOLTAGE"]}
    assert pushed[0].index == 2  # cell 3, 0-based on the wire
    # as the runtime sends them: events in the Subscribe's revision
    (frame,) = Decoder().feed(encode(pushed[0], 5, Flags.EVENT, bench.device.telemetry_revision))
    assert frame.message.log_index == 0 and frame.message.value == pytest.approx(4.09)


def test_events_carry_utc_once_set_and_stop_with_the_subscription(bench):
    bench.ask(pm.Subscribe((EVENTS,)))
    bench.ask(pm.SetTime(UTC_S))
    set_s = bench.now_s
    act = bench.run(1.0, OVERVOLTAGE)
    events = bench.device.fault_events(act) if act.events else []
    while not events:
        events = bench.device.fault_events(bench.step(OVERVOLTAGE))
    assert events[0].utc_s == pytest.approx(UTC_S + events[0].time_s - set_s)
    bench.ask(pm.Subscribe(()))
    assert not bench.device.events_subscribed
    act = bench.run(3.0, OVERVOLTAGE)
    assert bench.device.fault_events(act) == []


def test_fault_events_cannot_be_subscribed_in_1_0(bench):
    detail = nack(bench.ask(pm.Subscribe((EVENTS,)), revision=REVISION_1_0),
                  pm.ErrorCode.BAD_VALUE)
    assert f"msg_type 0x{TYPE[pm.FaultEvent]:02X} cannot be subscribed" in detail
    assert "FaultEvent" not in detail.split("allowed:")[1]
    assert not bench.device.events_subscribed


def test_a_restarted_firmware_answers_and_forgets_telemetry_and_the_clock(bench):
    bench.ask(pm.Subscribe((EVENTS, {"msg_type": TYPE[pm.Status], "period_ms": 100})))
    bench.ask(pm.SetTime(UTC_S))
    new = Bench().fw
    bench.device.restarted(new)
    assert bench.device.fw is new and bench.device.act is None
    assert not bench.device.events_subscribed and bench.device.subscriptions == {}
    assert bench.device.utc_offsets == {}
    status = bench.ask(pm.GetStatus())
    assert status.state == 0 and math.isnan(status.soc_pct)  # INIT, not stepped yet
