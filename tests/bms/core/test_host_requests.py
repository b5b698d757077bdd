"""Host requests the firmware cannot act on are refused, by the firmware, with the reason and
what to do, and change nothing: a request it takes is one it acts on. Also the start: no
`run` without a host's (or autostart), and a rig silent from boot times out."""

from __future__ import annotations

import numpy as np

from bms.core.firmware import Firmware
from bms.core.signals import OPEN, Measurement, State
from tests.bms.core.test_firmware import TICK_S, Bench, welded
from tests.bms.core.test_recovery_charge import drained

IMPLAUSIBLE = "0:sensor-offset:cell=2,offset_v=1.5"  # past what a working sensor reads
BACK = "0:sensor-offset:cell=2,offset_v=-1.5"  # offsets add up


def tripped() -> Bench:
    """A running pack in FAULT on an implausible cell reading that still stands."""
    bench = Bench()
    bench.run(10.0)
    bench.inject(IMPLAUSIBLE)
    bench.run(5.0)
    assert bench.fw.state == State.FAULT
    return bench


def test_run_while_a_fault_is_latched_is_refused_naming_the_fault_and_changes_nothing():
    bench = tripped()
    bench.fw.request("standby")
    why = bench.fw.request("run")
    assert why is not None and why.startswith("run waits while a FAULT is latched (")
    assert "VOLTAGE_SENSOR_FAULT" in why and "clear again once it is" in why
    assert bench.fw.requested == "standby"
    assert bench.fw.request("storage").startswith("storage waits while a FAULT is latched")
    assert bench.fw.request("standby") is None  # opening is always possible


def test_a_clear_while_the_cause_persists_is_refused_naming_the_reading_and_its_release():
    bench = tripped()
    why = bench.fw.request("clear-faults")
    assert why.startswith("clear-faults would leave the pack in FAULT, so nothing was cleared")
    assert "VOLTAGE_SENSOR_FAULT: cell_v_max was " in why and "not yet below its release" in why
    assert not bench.fw.clear_requested
    bench.run(2.0)
    assert bench.fw.state == State.FAULT and "VOLTAGE_SENSOR_FAULT" not in bench.names("cleared")


def test_once_the_cause_is_gone_the_clear_and_then_run_are_taken_and_done():
    bench = tripped()
    bench.fw.request("standby")
    bench.inject(BACK)
    bench.run(TICK_S)  # the firmware judges on the readings it has
    assert bench.fw.request("clear-faults") is None
    assert bench.fw.request("run") is None  # a clear on its way ends the FAULT
    bench.run(10.0)
    assert bench.fw.state == State.RUN and "VOLTAGE_SENSOR_FAULT" in bench.names("cleared")


def test_a_hardware_fault_needs_a_service_action_and_the_refusal_says_so():
    bench = welded()
    why = bench.fw.request("clear-faults")
    assert "CONTACTOR_WELDED is a hardware fault: only a service action (service-reset)" in why
    assert bench.fw.request("service-reset") is None
    bench.run(1.0)
    assert "CONTACTOR_WELDED" in bench.names("cleared")


def test_a_lockout_refuses_every_clear_but_a_service_action():
    bench = tripped()
    for _ in range(2):  # trips two and three
        bench.inject(BACK)
        bench.run(TICK_S)
        assert bench.fw.request("clear-faults") is None
        bench.run(10.0)
        bench.inject(IMPLAUSIBLE)
        bench.run(5.0)
    bench.inject(BACK)
    bench.run(TICK_S)
    why = bench.fw.request("clear-faults")
    assert "VOLTAGE_SENSOR_FAULT is locked out (3 trips within" in why
    assert "only a service action (service-reset) clears it" in why
    assert bench.fw.request("service-reset") is None


def test_out_of_undervoltage_the_refusals_lead_to_a_recovery_charge():
    """A pack left in STANDBY ran down: the clear alone would leave it in FAULT, and says
    that a recovery charge needs run; run is then taken (the way out), and the clear
    starts the charge."""
    bench = drained()
    assert bench.fw.requested == "standby"
    why = bench.fw.request("clear-faults")
    assert "CELL_UNDERVOLTAGE: cell_v_min was" in why
    assert "the way out is a recovery charge, which closes the contactors: send run, then " \
           "clear-faults" in why
    assert bench.fw.request("storage") is not None
    assert bench.fw.request("run") is None
    assert bench.fw.request("clear-faults") is None
    bench.run(30.0, demand_a=0.05)
    assert bench.fw.state == State.RECOVERY


def test_without_autostart_the_pack_waits_in_standby_for_run():
    bench = Bench()
    bench.fw = Firmware(bench.pack.chem, 4, bench.pack.capacity_ah, autostart=False)
    bench.run(5.0)
    assert bench.fw.state == State.STANDBY and bench.history[-1][1].contactors == OPEN
    assert bench.fw.request("run") is None
    bench.run(5.0)
    assert bench.fw.state == State.RUN


def test_a_rig_silent_from_boot_times_out_and_the_first_measurement_clears_it():
    bench = Bench()
    timeout_s = bench.fw.cfg.measurement_timeout_s
    acts = [bench.tick(measurement=False) for _ in range(round(timeout_s / TICK_S) + 2)]
    raised = [e for a in acts for e in a.events if e.name == "MEASUREMENT_TIMEOUT"]
    assert [e.action for e in raised] == ["raised"]
    assert raised[0].t_s > timeout_s and raised[0].value > timeout_s
    assert bench.fw.state == State.FAULT and acts[-1].contactors == OPEN
    assert "clears itself with the first one" in bench.fw.request("clear-faults")
    assert bench.fw.log.entries[-1].snapshot["note"] == "no measurement since start"
    bench.run(5.0)
    assert "MEASUREMENT_TIMEOUT" in bench.names("cleared")
    cleared = [e for e in bench.fw.log.entries if e.event.name == "MEASUREMENT_TIMEOUT"
               and e.event.action == "cleared"]
    assert [e.snapshot["note"] for e in cleared] == ["the first measurement arrived"]
    assert bench.fw.state == State.RUN  # autostart: run was requested all along


def test_run_before_a_late_rig_is_taken_since_the_timeout_from_start_ends_by_itself():
    bench = Bench()
    bench.fw = Firmware(bench.pack.chem, 4, bench.pack.capacity_ah, autostart=False)
    for _ in range(15):
        bench.tick(measurement=False)
    assert bench.fw.state == State.FAULT
    assert bench.fw.request("run") is None
    bench.run(5.0)
    assert bench.fw.state == State.RUN


def test_a_timeout_after_measurements_latches_until_a_clear():
    bench = Bench()
    bench.run(5.0)
    for _ in range(20):
        bench.tick(measurement=False)
    assert bench.fw.state == State.FAULT
    assert "MEASUREMENT_TIMEOUT: no measurement for" in bench.fw.request("clear-faults")
    assert bench.fw.request("storage").startswith("storage waits while a FAULT is latched")
    bench.run(3.0)
    assert bench.fw.state == State.FAULT
    assert bench.fw.request("clear-faults") is None
    bench.run(10.0)
    assert bench.fw.state == State.RUN


def test_a_refused_request_leaves_a_firmware_stepping_on_exactly_as_before():
    """Refusals are answers, not changes: two firmwares fed alike, one of them also asked
    for what it refuses, end bit for bit alike."""
    a, b = tripped(), tripped()
    for bench in (a, b):
        bench.fw.request("standby")
    assert b.fw.request("run") and b.fw.request("clear-faults") and b.fw.request("storage")
    m = a.pack.measure()
    for k in range(30):
        now_s = a.now_s + k * TICK_S
        ma = Measurement(m.cell_voltage_v.copy(), m.temperature_c.copy(), 0.0, 0.0, OPEN)
        act_a, act_b = a.fw.step(ma, now_s), b.fw.step(ma, now_s)
        assert act_a.state == act_b.state and act_a.fault_bitmap == act_b.fault_bitmap
        assert np.array_equal(act_a.balance_mask, act_b.balance_mask)
