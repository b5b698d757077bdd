"""The way back from under-voltage: a recovery charge after a CELL_UNDERVOLTAGE FAULT and
out of storage at 0 V - a trickle in, nothing out, RUN once every cell is past the
release - and the ways it ends in the FAULT again (discharge, timeout, another fault)."""

from __future__ import annotations

import dataclasses

import pytest

from bms.core.firmware import TRANSITIONS
from bms.core.signals import State
from bms.data.parameters import ParameterError, apply_changes, catalogue
from hil.scenario import LimitBlindPack
from tests.bms.core.test_firmware import Bench

LEAK_OHM = 2.0


def drained(n_series: int = 4, **limits) -> Bench:
    """A pack left in STANDBY with a leak across every cell, run down into a latched
    CELL_UNDERVOLTAGE FAULT; the leak then taken away."""
    bench = Bench(n_series=n_series, initial_soc=0.02)
    if limits:
        cfg = bench.fw.cfg
        bench.fw.reconfigure(dataclasses.replace(
            cfg, limits=dataclasses.replace(cfg.limits, **limits)))
    bench.fw.request("standby")
    bench.run(1.0)
    for cell in range(1, n_series + 1):
        bench.inject(f"0:internal-short:cell={cell},resistance_ohm={LEAK_OHM}")
    bench.run(120.0)
    for cell in range(1, n_series + 1):
        bench.inject(f"0:internal-short-removed:cell={cell}")
    bench.run(10.0)
    assert bench.fw.state == State.FAULT
    assert ("CELL_UNDERVOLTAGE", "cell_v_min", False) in bench.fw.protection.latched_rows()
    assert float(bench.pack.group_v.min()) < bench.fw.chem.thresholds.undervoltage_v
    return bench


def start_recovery(bench: Bench) -> None:
    bench.fw.request("run")
    bench.fw.request("clear-faults")


def states(bench: Bench, since_s: float = 0.0) -> list[State]:
    seen = [act.state for t, act in bench.history if t >= since_s]
    return [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]


def test_before_recovery_a_clear_alone_leaves_the_pack_stranded_when_recovery_is_off():
    bench = drained(recovery_charge_a=0.0)
    start_recovery(bench)
    bench.run(20.0, demand_a=1.0)
    assert bench.fw.state == State.FAULT
    assert not bench.history[-1][1].contactors.main_closed


def test_a_clear_with_only_undervoltage_standing_starts_a_trickle_with_no_discharge():
    bench = drained()
    since_s = bench.now_s
    start_recovery(bench)
    act = bench.run(60.0, demand_a=1.0)
    assert states(bench, since_s - 1.0) == [State.FAULT, State.STANDBY, State.PRECHARGE,
                                      State.RECOVERY]
    cfg = bench.fw.cfg.limits
    assert act.contactors.main_closed
    assert 0.0 < act.charge_limit_a <= cfg.recovery_charge_a
    assert act.discharge_limit_a == 0.0
    # The rows the low cells suspend were cleared, and the log says why.
    cleared = [e for e in bench.events if e.action == "cleared" and e.t_s >= since_s]
    assert "CELL_UNDERVOLTAGE" in {e.name for e in cleared}
    notes = [entry.snapshot.get("note", "") for entry in bench.fw.log.entries]
    assert any("recovery charge" in note for note in notes)


def test_the_recovery_ends_in_run_once_every_cell_is_past_the_release():
    bench = drained(recovery_charge_a=0.2 * 1.5)  # the fastest trickle allowed: a short test
    start_recovery(bench)
    release_v = bench.fw.chem.thresholds.undervoltage_release_v
    for _ in range(40):
        bench.run(60.0, demand_a=0.3)
        if bench.fw.state == State.RUN:
            break
    assert bench.fw.state == State.RUN
    assert float(bench.pack.group_v.min()) >= release_v - 0.05  # true cells, not readings
    # closed all the way from RECOVERY into RUN: no reopening on the way
    moves = states(bench)
    assert moves[moves.index(State.RECOVERY):] == [State.RECOVERY, State.RUN]
    act = bench.run(30.0, demand_a=0.3)
    assert act.contactors.main_closed and act.charge_limit_a > bench.fw.cfg.limits.recovery_charge_a
    assert not [e for e in bench.events if e.level == "FAULT" and e.action == "raised"
                and e.t_s > 150.0]


def test_a_discharge_during_recovery_ends_it_in_the_undervoltage_fault():
    bench = drained()
    start_recovery(bench)
    bench.run(30.0, demand_a=0.05)
    assert bench.fw.state == State.RECOVERY
    # The sim load obeys the limits (0 A of discharge): a load that disregards them.
    bench.pack.__class__ = LimitBlindPack
    t0 = bench.now_s
    bench.run(5.0, demand_a=-1.0)
    assert bench.fw.state == State.FAULT
    assert not bench.history[-1][1].contactors.main_closed
    raised = [e for e in bench.events if e.t_s >= t0 and e.action == "raised"
              and e.name == "CELL_UNDERVOLTAGE" and e.level == "FAULT"]
    assert raised and raised[0].t_s - t0 <= 2.0 + 0.2  # the cell row's debounce
    assert "discharged" in bench.fw.log.entries[-1].snapshot.get("note", "") or any(
        "discharged" in e.snapshot.get("note", "") for e in bench.fw.log.entries)


def test_a_recovery_that_does_not_lift_the_cells_in_time_ends_in_the_fault():
    bench = drained(recovery_timeout_s=60.0)
    start_recovery(bench)
    bench.run(30.0)  # no charger: nothing lifts the cells
    assert bench.fw.state == State.RECOVERY
    bench.run(40.0)
    assert bench.fw.state == State.FAULT
    assert any("left a cell below the release" in e.snapshot.get("note", "")
               for e in bench.fw.log.entries)


def test_withdrawing_run_during_recovery_opens_and_restores_undervoltage_protection():
    bench = drained()
    start_recovery(bench)
    bench.run(30.0, demand_a=0.05)
    assert bench.fw.state == State.RECOVERY
    bench.fw.request("standby")
    bench.run(10.0)
    assert not bench.history[-1][1].contactors.main_closed
    assert bench.fw.recovering_since_s is None
    rows = bench.fw.protection.rows
    assert all(bench.fw.protection.enabled[i] for i, r in enumerate(rows)
               if r.fault == "CELL_UNDERVOLTAGE")
    # the cell is still below the threshold: the FAULT is back
    assert bench.fw.state == State.FAULT


def test_no_recovery_while_another_fault_stands():
    bench = drained()
    bench.inject("0:temp-sensor-short:sensor=1")  # a TEMP_SENSOR_FAULT FAULT
    bench.run(10.0)
    start_recovery(bench)
    bench.run(20.0, demand_a=0.05)
    assert bench.fw.state == State.FAULT
    assert State.RECOVERY not in states(bench)


def test_storage_at_0v_leaves_through_a_recovery_charge():
    bench = Bench(initial_soc=0.0)
    bench.fw.request("storage")
    bench.run(1.0)
    for cell in range(1, 5):
        bench.inject(f"0:internal-short:cell={cell},resistance_ohm=0.5")
    bench.run(120.0)
    for cell in range(1, 5):
        bench.inject(f"0:internal-short-removed:cell={cell}")
    assert float(bench.pack.group_v.max()) < 1.0
    bench.fw.request("run")
    act = bench.run(30.0, demand_a=1.0)
    assert states(bench) == [State.STANDBY, State.STORAGE, State.STANDBY,
                             State.PRECHARGE, State.RECOVERY]
    assert act.contactors.main_closed and act.discharge_limit_a == 0.0
    assert 0.0 < act.charge_limit_a <= bench.fw.cfg.limits.recovery_charge_a
    assert not [e for e in bench.events if e.action == "raised"]


def test_recovery_moves_are_in_the_transition_table():
    assert State.RECOVERY in TRANSITIONS[State.PRECHARGE]
    assert TRANSITIONS[State.RECOVERY] == {State.RUN, State.STANDBY}


@pytest.mark.parametrize("value, ok", [(0.0, True), (0.3, True), (0.31, False), (-0.1, False)])
def test_the_recovery_current_is_a_trickle_at_most_a_fifth_c(value, ok):
    fw = Bench().fw  # 1.5 Ah cells: a fifth C is 0.3 A
    pid = next(p.id for p in catalogue(fw.cfg) if p.name == "limits.recovery_charge_a")
    args = ({}, [(pid, value)], fw.chem, fw.n_series, 1.5)
    if ok:
        assert apply_changes(*args)[0].limits.recovery_charge_a == value
    else:
        with pytest.raises(ParameterError, match="recovery_charge_a"):
            apply_changes(*args)
