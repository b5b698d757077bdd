"""The firmware against the simulated pack: states, contactors, precharge, welds,
timeouts, storage, limits and fail-safe behaviour, in simulated time."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bms.core.firmware import TRANSITIONS, Firmware
from bms.core.signals import OPEN, Measurement, State
from bms.data.config import TEMP_PLAUSIBLE_C, OpenWireFallback
from bms.data.presets import PRESETS
from hil.injections import apply_injection, parse_injection
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack, SpreadSpec

TICK_S = 0.1


class Bench:
    """A firmware driving a small simulated pack, one tick at a time."""

    def __init__(self, n_series=4, initial_soc=0.6, wire_test=True, tick_s=TICK_S, **spec):
        """`wire_test=False`: a source that does not run the open-wire test (as a replay or
        a rig's frame): the measurements never carry one. `tick_s`: a longer tick for long
        rests, where nothing judged runs faster than the estimator's 1 s filter."""
        self.tick_s = tick_s
        self.pack = SimulatedPack(PRESETS["na-nfm"],
                                  PackSpec(n_series=n_series, initial_soc=initial_soc, **spec),
                                  tick_s)
        self.fw = Firmware(self.pack.chem, n_series, self.pack.capacity_ah)
        self.wire_test = wire_test
        self.k = 0
        self.events = []
        self.history = []
        self.seen = {}  # the measurement the firmware saw, by time

    @property
    def now_s(self) -> float:
        return self.k * self.tick_s

    def inject(self, text: str) -> None:
        apply_injection(self.pack, parse_injection(text, self.pack.n_series,
                                                   self.pack.sensors.n_temp))

    def tick(self, demand_a: float = 0.0, measurement: bool = True):
        m = self.pack.measure() if measurement else None
        if m is not None and not self.wire_test:
            m = dataclasses.replace(m, open_wire_test_v=None)
        self.seen[round(self.now_s, 6)] = m
        act = self.fw.step(m, self.now_s)
        self.events.extend(act.events)
        self.history.append((self.now_s, act))
        self.pack.actuate(act)
        self.pack.advance(Demand(demand_a, "a"))
        self.k += 1
        return act

    def run(self, seconds: float, demand_a: float = 0.0):
        act = None
        for _ in range(round(seconds / self.tick_s)):
            act = self.tick(demand_a)
        return act

    def names(self, action="raised"):
        return [e.name for e in self.events if e.action == action]


def test_closing_order_negative_then_precharge_then_positive():
    bench = Bench()
    seen = []
    for _ in range(40):
        act = bench.tick()
        c = act.contactors
        key = (c.negative, c.precharge, c.positive)
        if not seen or seen[-1][1] != key:
            seen.append((act.state, key))
    assert [k for _, k in seen] == [
        (False, False, False),  # INIT / STANDBY
        (True, False, False),  # negative first
        (True, True, False),  # then precharge
        (True, True, True),  # positive once the bus is up
        (True, False, True),  # then precharge opens
    ]
    assert bench.fw.state == "RUN" and bench.names() == []
    assert bench.fw.counters.contactor_cycles == 1


def test_positive_closes_only_once_the_bus_is_within_the_fraction():
    bench = Bench()
    for _ in range(40):
        m_bus = bench.pack.power_path.bus_v
        pack_v = bench.pack.pack_voltage_v
        act = bench.tick()
        if act.contactors.positive:
            assert m_bus >= 0.95 * pack_v - 0.05
            break
    else:
        pytest.fail("the positive contactor never closed")


def test_precharge_failure_retries_then_faults():
    bench = Bench()
    bench.inject("0:precharge-open")
    cfg = bench.fw.cfg.precharge
    closes = 0
    was_closed = False
    for _ in range(round((cfg.retries + 1) * (cfg.timeout_s + cfg.retry_wait_s) / TICK_S) + 50):
        act = bench.tick()
        if act.contactors.precharge and not was_closed:
            closes += 1
        was_closed = act.contactors.precharge
    assert closes == cfg.retries + 1
    assert bench.names() == ["PRECHARGE_FAILED"]
    assert act.state == "FAULT" and not act.contactors.negative


def test_precharge_succeeds_on_retry_when_the_fault_goes_away():
    bench = Bench()
    bench.pack.power_path.precharge_open = True
    bench.run(bench.fw.cfg.precharge.timeout_s + 1.0)
    bench.pack.power_path.precharge_open = False
    bench.run(bench.fw.cfg.precharge.retry_wait_s + 3.0)
    assert bench.fw.state == "RUN" and bench.names() == []


def test_fault_opens_contactors_in_the_same_step_and_zeroes_limits():
    bench = Bench()
    bench.run(10.0)
    bench.inject("0:sensor-offset:cell=2,offset_v=1.5")
    for _ in range(100):
        act = bench.tick()
        if act.events and any(e.level == "FAULT" for e in act.events):
            break
    assert act.state == "FAULT"
    assert not (act.contactors.negative or act.contactors.positive)
    assert act.charge_limit_a == 0.0 and act.discharge_limit_a == 0.0
    assert act.fault_bitmap != 0


def test_latched_fault_needs_condition_gone_and_clear_request():
    bench = Bench()
    bench.run(10.0)
    bench.inject("0:sensor-offset:cell=2,offset_v=1.5")
    bench.run(5.0)
    assert bench.fw.state == "FAULT"
    bench.fw.request("clear-faults")
    bench.run(1.0)
    assert bench.fw.state == "FAULT"  # the reading is still implausible
    bench.pack.sensors.voltage_offset_v[:] = 0.0
    bench.run(3.0)
    assert bench.fw.state == "FAULT"  # gone, but no request yet
    bench.fw.request("clear-faults")
    bench.run(10.0)
    assert bench.fw.state == "RUN"
    assert "VOLTAGE_SENSOR_FAULT" in bench.names("cleared")


def welded() -> Bench:
    """Both main contactors welded under a load, then commanded open (standby)."""
    bench = Bench()
    bench.run(10.0, demand_a=-0.5)
    bench.inject("0:contactor-weld:contactor=positive")
    bench.inject("0:contactor-weld:contactor=negative")
    bench.fw.request("standby")
    bench.run(bench.fw.cfg.contactors.weld_check_s + 6.0, demand_a=-0.5)
    return bench


def test_welded_contactor_is_detected_after_an_open_command():
    bench = welded()
    assert "CONTACTOR_WELDED" in bench.names()
    assert bench.fw.state == "FAULT"


def test_clear_faults_cannot_clear_a_weld_and_a_service_action_can():
    bench = welded()
    assert "CONTACTOR_WELDED" in bench.names()
    for _ in range(3):  # a host that keeps clearing
        bench.fw.request("clear-faults")
        bench.run(2.0)
    assert "CONTACTOR_WELDED" not in bench.names("cleared") and bench.fw.state == "FAULT"
    bench.fw.request("service-reset")
    bench.run(1.0)
    assert "CONTACTOR_WELDED" in bench.names("cleared")
    cleared = [e for e in bench.fw.log.entries if e.event.name == "CONTACTOR_WELDED"
               and e.event.action == "cleared"]
    assert "service" in cleared[-1].snapshot["note"]


def test_the_same_fault_three_times_in_ten_minutes_locks_the_pack_out_until_service():
    """A host that clears a fault whose cause comes back (a short that keeps returning)
    gets the pack back twice; the third trip locks it out."""
    bench = Bench()
    bench.fw.request("run")
    bench.run(10.0)
    closings = []
    for _ in range(5):
        bench.inject("0:sensor-offset:cell=2,offset_v=1.5")  # an implausible reading
        bench.run(3.0)
        assert bench.fw.state == "FAULT"
        bench.inject("0:sensor-offset:cell=2,offset_v=-1.5")  # offsets add up
        bench.run(TICK_S)  # a clear is judged on the readings the firmware has
        bench.fw.request("clear-faults")
        bench.run(15.0)
        closings.append(bench.history[-1][1].contactors.main_closed)
    assert closings == [True, True, False, False, False]
    # the implausible reading trips its sensor row and the over-voltage FAULT alike
    assert bench.fw.locked_out == {"VOLTAGE_SENSOR_FAULT", "CELL_OVERVOLTAGE"}
    assert bench.names().count("VOLTAGE_SENSOR_FAULT") == 3  # it never closed again
    locked = [e for e in bench.fw.log.entries if "locked out" in e.snapshot.get("note", "")]
    assert len(locked) == 2
    bench.fw.request("service-reset")
    bench.run(15.0)
    assert not bench.fw.locked_out and bench.history[-1][1].contactors.main_closed


def test_no_weld_is_reported_on_a_clean_open():
    bench = Bench()
    bench.run(10.0)
    bench.fw.request("standby")
    bench.run(10.0)
    assert bench.fw.state == "STANDBY" and bench.names() == []


def test_silent_rig_trips_measurement_timeout_and_opens():
    bench = Bench()
    bench.run(10.0)
    timeout_s = bench.fw.cfg.measurement_timeout_s
    acts = [bench.tick(measurement=False) for _ in range(round(timeout_s / TICK_S) + 3)]
    assert acts[round(timeout_s / TICK_S) - 1].contactors.main_closed  # not yet
    assert not acts[-1].contactors.main_closed
    assert bench.names() == ["MEASUREMENT_TIMEOUT"]


def test_exception_in_the_step_is_internal_error_with_contactors_open():
    bench = Bench()
    bench.run(10.0)
    broken = Measurement("not an array", None, 0.0, 0.0,  # type: ignore[arg-type]
                         bench.pack.power_path.actual)
    act = bench.fw.step(broken, bench.now_s)
    assert act.state == "FAULT" and not act.contactors.main_closed
    assert [e.name for e in act.events] == ["INTERNAL_ERROR"]
    assert "note" in bench.fw.log.entries[-1].snapshot


def test_every_state_has_its_row_and_every_run_keeps_to_the_table():
    """The transition table covers every state, and an ordinary run (standby, precharge,
    run, a fault, its clearing, standby again) moves only along it."""
    assert set(TRANSITIONS) == set(State)
    bench = Bench()
    bench.fw.request("run")
    bench.run(10.0)
    bench.inject("0:sensor-offset:cell=2,offset_v=1.5")  # past what a working sensor reads
    bench.run(5.0)
    bench.inject("0:sensor-offset:cell=2,offset_v=-1.5")  # offsets add up
    bench.run(TICK_S)  # a clear is judged on the readings the firmware has
    bench.fw.request("clear-faults")
    bench.run(10.0)
    seen = [a.state for _, a in bench.history]
    moves = {(s, t) for s, t in zip(seen, seen[1:], strict=False) if s != t}
    assert {State.PRECHARGE, State.RUN, State.FAULT} <= set(seen)
    assert (State.FAULT, State.STANDBY) in moves
    assert all(t in TRANSITIONS[s] or t == State.FAULT for s, t in moves), moves
    assert "INTERNAL_ERROR" not in bench.names()


def test_a_move_the_table_does_not_list_is_an_internal_error_with_contactors_open():
    bench = Bench()
    bench.fw.request("run")
    bench.run(10.0)
    assert bench.fw.state == State.RUN and bench.history[-1][1].contactors.main_closed
    bench.fw._enter = lambda state, now_s: Firmware._enter(bench.fw, State.STORAGE, now_s)
    bench.fw.request("standby")  # RUN -> STANDBY, made RUN -> STORAGE: not in the table
    bench.run(3.0)
    assert bench.fw.state == State.FAULT
    assert not bench.history[-1][1].contactors.main_closed
    assert "INTERNAL_ERROR" in bench.names()


def test_storage_suspends_undervoltage_and_leaves_through_a_self_check():
    bench = Bench(initial_soc=0.0)
    bench.fw.request("storage")
    bench.run(1.0)
    assert bench.fw.state == "STORAGE"
    # drain the cells toward 0 V with an internal short on each (storage may go to 0 V)
    for cell in range(1, 5):
        bench.inject(f"0:internal-short:cell={cell},resistance_ohm=0.5")
    bench.run(120.0)
    assert float(bench.pack.group_v.max()) < 1.5
    assert "CELL_UNDERVOLTAGE" not in bench.names()
    assert not bench.history[-1][1].contactors.negative


def test_leaving_storage_with_healthy_cells_returns_to_standby():
    bench = Bench(initial_soc=0.5)
    bench.fw.request("storage")
    bench.run(2.0)
    bench.fw.request("standby")
    bench.run(2.0)
    assert bench.fw.state == "STANDBY"


def test_limits_ramp_up_and_respect_the_maximum():
    bench = Bench()
    limits = [act.discharge_limit_a for act in (bench.tick() for _ in range(300))]
    cfg = bench.fw.cfg.limits
    rises = np.diff(limits)
    assert max(limits) <= cfg.max_discharge_a + 1e-9
    assert rises.max() <= cfg.ramp_a_per_s * TICK_S + 1e-9
    assert limits[-1] > 0.5 * cfg.max_discharge_a


def test_charge_limit_tapers_to_zero_near_the_charge_voltage():
    # Resting at 3.97 V (about 99 %), 30 mV under the 4.0 V charge voltage: 30 % of the
    # voltage taper. The SoC taper, which would cut the limit there too, is taken out.
    ocv = PRESETS["na-nfm"].ocv
    bench = Bench(initial_soc=float(np.interp(3.97, ocv.mid_v, ocv.soc)),
                  spread=SpreadSpec(initial_soc=0.002))
    cfg = bench.fw.cfg
    bench.fw.reconfigure(dataclasses.replace(
        cfg, limits=dataclasses.replace(cfg.limits, soc_taper=1e-3)))
    bench.run(30.0)
    act = bench.run(1.0)
    assert act.state == "RUN"
    assert act.charge_limit_a < 0.5 * bench.fw.cfg.limits.max_charge_a


def open_wire_raised(bench: Bench) -> list:
    return [e for e in bench.events if e.name == "OPEN_WIRE" and e.action == "raised"]


def open_wire_bound_s(fw: Firmware, period_s: float) -> float:
    """Tests `period_s` apart: the first after the wire opens comes within a period and is
    answered a tick later, the confirming ones a period each, then the row's debounce."""
    cfg = fw.cfg.open_wire
    row = next(r for r in fw.cfg.protection if r.fault == "OPEN_WIRE")
    return cfg.confirm_tests * period_s + TICK_S + row.debounce_s + 1e-9


@pytest.mark.parametrize("initial_soc", [0.03, 0.5, 0.97])
def test_open_wire_is_found_by_the_afe_test_within_its_bound(initial_soc):
    bench = Bench(n_series=8, initial_soc=initial_soc)
    bench.run(5.0, -1.0)  # under load: no cell bleeds, a test every period
    bench.inject("0:sense-open:cell=3")
    opened_s = bench.now_s
    bench.run(10.0, -1.0)
    hits = open_wire_raised(bench)
    assert hits and hits[0].t_s - opened_s <= open_wire_bound_s(
        bench.fw, bench.fw.cfg.open_wire.test_every_s)
    assert hits[0].index == 2  # cell 3 on the label: the cell below the open tap
    assert hits[0].value > 1.0  # its reading fell by volts under the test, not millivolts
    assert bench.fw.open_wire.testing


def test_the_test_is_asked_for_every_period_and_never_with_a_cell_bleeding():
    bench = Bench(n_series=8, initial_soc=0.6, spread=SpreadSpec(initial_soc=0.02))
    bench.run(60.0)  # at rest, cells apart: balancing bleeds, pausing every 10 s to measure
    asked = [(t, act) for t, act in bench.history if act.open_wire_test]
    assert any(act.balance_mask.any() for _, act in bench.history)
    assert not any(act.balance_mask.any() for _, act in asked)
    gaps = np.diff([t for t, _ in asked])
    cfg = bench.fw.cfg
    assert gaps.min() >= cfg.open_wire.test_every_s - 1e-9
    # While bleeding, a test rides on each of the balancer's measuring pauses (the first
    # pause may come up to a test period later: bleeding began before the test fell due).
    assert gaps.max() <= cfg.open_wire.test_every_s + cfg.balancing.measure_every_s + 1e-9
    assert np.count_nonzero(np.abs(gaps - cfg.balancing.measure_every_s) < 1e-6) >= 3
    assert bench.fw.open_wire.testing and open_wire_raised(bench) == []


def test_while_cells_bleed_an_open_wire_is_found_in_the_balancers_pauses():
    bench = Bench(n_series=8, initial_soc=0.6, spread=SpreadSpec(initial_soc=0.02))
    bench.run(30.0)
    assert bench.pack.balancing.any()
    bench.inject("0:sense-open:cell=3")
    opened_s = bench.now_s
    bench.run(30.0)
    hits = open_wire_raised(bench)
    assert hits and hits[0].index == 2
    assert hits[0].t_s - opened_s <= open_wire_bound_s(
        bench.fw, bench.fw.cfg.balancing.measure_every_s + TICK_S)


def test_a_source_without_the_test_falls_back_to_the_readings():
    bench = Bench(n_series=8, wire_test=False)
    bench.run(5.0, -1.0)
    assert not bench.fw.open_wire.testing and open_wire_raised(bench) == []
    bench.inject("0:sense-open:cell=3")
    bench.run(5.0, -1.0)
    hits = open_wire_raised(bench)
    assert hits and hits[0].index in (2, 3)  # the passive fallback: the reading off the mean


def test_with_the_fallback_off_a_source_without_the_test_reports_no_open_wire():
    bench = Bench(n_series=8, wire_test=False)
    cfg = bench.fw.cfg
    bench.fw.reconfigure(dataclasses.replace(
        cfg, open_wire=dataclasses.replace(cfg.open_wire, fallback=OpenWireFallback.OFF)))
    bench.run(5.0, -1.0)
    bench.inject("0:sense-open:cell=3")
    bench.run(10.0, -1.0)
    assert open_wire_raised(bench) == []  # documented: detection is off for such a source
    # The same pack with a source that runs the test: the fallback does not matter.
    bench.wire_test = True
    bench.run(6.0, -1.0)
    assert open_wire_raised(bench)


# Half-hour rests at a 1 s tick: the drift is judged on the estimate, which the filter moves
# once a second whatever the tick, and the plant integrates a held current exactly; at 0.1 s
# the short raised its rows 0.6 s earlier (1140.4 s, 1500.4 s) and nothing else changed.
REST_TICK_S = 1.0


def test_internal_short_shows_as_self_discharge_at_rest():
    bench = Bench(n_series=8, initial_soc=0.6, tick_s=REST_TICK_S)
    bench.run(5.0)
    bench.inject("0:internal-short:cell=3,resistance_ohm=20")
    bench.run(25 * 60.0)
    raised = [e for e in bench.events if e.name == "CELL_SELF_DISCHARGE" and e.action == "raised"]
    assert raised and raised[0].index == 2
    assert raised[0].t_s >= 600.0  # not before the rest has settled


def test_a_healthy_pack_at_rest_shows_no_self_discharge():
    bench = Bench(n_series=8, initial_soc=0.6, tick_s=REST_TICK_S)
    bench.run(30 * 60.0)
    assert "CELL_SELF_DISCHARGE" not in bench.names()


def test_stuck_cell_reading_is_a_voltage_sensor_fault_once_the_pack_moves():
    """At rest an unchanging reading is right (nothing moves the cell); under a load the
    others move, and a reading that does not is stuck: its 10 s count starts once the pack's
    mean reading has moved 5 mV since the reading last changed."""
    bench = Bench()
    bench.run(5.0)
    bench.inject("0:sensor-stuck:cell=2")
    bench.run(30.0)
    assert "VOLTAGE_SENSOR_FAULT" not in bench.names()  # at rest: nothing to tell it by
    bench.run(20.0, demand_a=-1.5)
    raised = [e for e in bench.events if e.name == "VOLTAGE_SENSOR_FAULT"]
    assert raised and raised[0].index == 1
    assert bench.fw.state == "FAULT"


def test_current_step_the_voltage_does_not_follow_is_a_sensor_alarm():
    bench = Bench()
    bench.run(20.0, demand_a=-0.5)
    bench.inject("0:current-offset:offset_a=0.8")
    bench.run(1.0, demand_a=-0.5)
    raised = [e for e in bench.events if e.name == "CURRENT_SENSOR_FAULT"]
    assert raised and raised[0].level == "ALARM"


def test_real_load_steps_are_not_sensor_alarms():
    bench = Bench()
    bench.run(20.0)
    for demand_a in (-1.0, -3.0, 0.0, -2.0, 1.0, 0.0):
        bench.run(10.0, demand_a=demand_a)
    assert "CURRENT_SENSOR_FAULT" not in bench.names()


@pytest.mark.parametrize(("cells", "temps", "current", "fault"), [
    ([3.5, np.nan, 3.5, 3.5], [25.0], 0.0, "VOLTAGE_SENSOR_FAULT"),
    ([3.5, np.inf, 3.5, 3.5], [25.0], 0.0, "VOLTAGE_SENSOR_FAULT"),
    ([3.5, 3.5, 3.5, 3.5], [np.nan], 0.0, "TEMP_SENSOR_FAULT"),
    ([3.5, 3.5, 3.5, 3.5], [25.0], np.nan, "CURRENT_SENSOR_FAULT"),
    ([3.5, 3.5, 3.5], [25.0], 0.0, "INTERNAL_ERROR"),
])
def test_unreadable_measurements_end_in_a_fault_with_contactors_open(cells, temps, current,
                                                                     fault):
    bench = Bench()
    bench.run(10.0)
    assert bench.fw.state == "RUN"
    m = Measurement(np.array(cells), np.array(temps), current, bench.pack.power_path.bus_v,
                    bench.pack.power_path.actual)
    acts = [bench.fw.step(m, bench.now_s + k * TICK_S) for k in range(15)]
    assert fault in [e.name for a in acts for e in a.events]
    assert acts[-1].state == "FAULT" and not acts[-1].contactors.main_closed


def test_leaving_storage_through_a_fault_restores_undervoltage_protection():
    bench = Bench()
    bench.fw.request("storage")
    bench.run(2.0)
    bench.inject("0:sensor-offset:cell=1,offset_v=1.5")
    bench.run(2.0)
    assert bench.fw.state == "FAULT"
    rows = bench.fw.protection.rows
    enabled = [bench.fw.protection.enabled[i] for i, r in enumerate(rows)
               if r.fault == "CELL_UNDERVOLTAGE"]
    assert enabled == [True, True, True]


def test_silent_rig_zeroes_the_limits_and_faults():
    bench = Bench()
    bench.run(30.0)
    acts = [bench.tick(measurement=False) for _ in range(20)]
    assert acts[-1].state == "FAULT"
    assert acts[-1].charge_limit_a == 0.0 and acts[-1].discharge_limit_a == 0.0


def test_no_charging_below_the_charge_minimum_temperature():
    bench = Bench(ambient_c=-30.0)  # discharge allowed down to -40 °C, charge to -20 °C
    act = bench.run(30.0)
    assert act.state == "RUN"
    assert act.charge_limit_a == 0.0 and act.discharge_limit_a > 0.0


def test_standby_request_drops_the_limits_at_once():
    bench = Bench()
    bench.run(30.0, demand_a=-1.0)
    bench.fw.request("standby")
    act = bench.tick(demand_a=-1.0)
    assert act.charge_limit_a == 0.0 and act.discharge_limit_a == 0.0
    bench.run(2.0, demand_a=-1.0)
    assert bench.fw.state == "STANDBY"
    assert bench.fw.counters.opened_under_load == 0


def test_run_soon_after_an_open_waits_for_the_weld_check():
    bench = Bench()
    bench.run(10.0)
    bench.fw.request("standby")
    bench.run(1.0)
    bench.fw.request("run")
    bench.run(10.0)
    assert bench.fw.state == "RUN" and bench.names() == []


def test_entering_storage_reports_the_suspended_rows_it_clears():
    bench = Bench(initial_soc=0.0)
    bench.run(0.1)
    bench.fw.protection.active[:] = [r.fault == "CELL_UNDERVOLTAGE" and r.level == "WARNING"
                                     for r in bench.fw.protection.rows]
    bench.fw.request("storage")
    bench.run(1.0)
    assert ("CELL_UNDERVOLTAGE", "cleared") in [(e.name, e.action) for e in bench.events]


def test_temperatures_updated_in_place_are_read_again():
    bench = Bench()
    bench.run(10.0)
    m = bench.pack.measure()
    temps = m.temperature_c.copy()
    m = Measurement(m.cell_voltage_v, temps, m.current_a, m.bus_voltage_v, m.contactors)
    bench.fw.step(m, bench.now_s)
    temps[:] = 90.0
    acts = [bench.fw.step(m, bench.now_s + (k + 1) * TICK_S) for k in range(60)]
    assert "DISCHARGE_OVERTEMP" in [e.name for a in acts for e in a.events]


def test_an_alarm_stops_balancing():
    bench = Bench(n_series=8, initial_soc=0.6, spread=SpreadSpec(initial_soc=0.02))
    bench.run(20.0)
    assert bench.pack.balancing.any()
    alarm = [r.level == "ALARM" and r.fault == "CELL_SELF_DISCHARGE"
             for r in bench.fw.protection.rows]
    bench.fw.protection.active[:] = alarm
    bench.fw.protection._summarise()
    bench.run(1.0)
    assert not bench.pack.balancing.any()


def _held(bench: Bench, temps_at, seconds: float) -> list:
    """The firmware stepped on the pack's present cell readings with the temperatures
    `temps_at(k)` at tick k, for `seconds` and one tick more."""
    m = bench.pack.measure()
    acts = []
    for k in range(round(seconds / TICK_S) + 1):
        t = Measurement(m.cell_voltage_v, temps_at(k), m.current_a, m.bus_voltage_v,
                        m.contactors)
        acts.append(bench.fw.step(t, bench.now_s + k * TICK_S))
    return acts


def _raised_faults(acts) -> list[str]:
    return [e.name for a in acts for e in a.events if e.action == "raised" and e.level == "FAULT"]


@pytest.mark.parametrize(("reading_c", "fault"), [(TEMP_PLAUSIBLE_C[1], "DISCHARGE_OVERTEMP"),
                                                  (TEMP_PLAUSIBLE_C[0], "DISCHARGE_UNDERTEMP")])
def test_a_temperature_on_the_edge_of_plausible_is_a_reading(reading_c, fault):
    """The TEMP_SENSOR_FAULT rows trip beyond the plausible window, not on its edge; a
    reading of exactly 125 °C (or -55 °C) was also left out of the temperatures as
    implausible, so it tripped nothing, and the pack ran on."""
    bench = Bench()
    bench.run(10.0)
    debounce_s = 5.0
    acts = _held(bench, lambda k: np.full(bench.pack.sensors.n_temp, reading_c), debounce_s)
    assert acts[-2].contactors.main_closed  # 4.9 s: not yet
    assert acts[-1].contactors == OPEN and acts[-1].state == "FAULT"  # 5.0 s: open
    assert _raised_faults(acts) == [fault]


@pytest.mark.parametrize("dropout_c", [np.nan, 150.0, -60.0])
def test_a_hot_sensor_dropping_every_other_reading_still_trips_overtemperature(dropout_c):
    """A loose wire on a sensor at 90 °C: every other reading unreadable, or an open or
    shorted NTC's. Each implausible reading used to drop the sensor (so the over-temperature
    debounce restarted) and each good one restarted the sensor-fault debounce: nothing ever
    tripped. The sensor now stands at its last plausible reading."""
    bench = Bench()
    bench.run(10.0)

    def temps(k: int) -> np.ndarray:
        t = np.full(bench.pack.sensors.n_temp, 25.0)
        t[0] = dropout_c if k % 2 else 90.0
        return t

    acts = _held(bench, temps, 5.0)
    assert acts[-2].contactors.main_closed
    assert acts[-1].contactors == OPEN and acts[-1].state == "FAULT"
    assert _raised_faults(acts) == ["DISCHARGE_OVERTEMP"]


def test_a_precharge_retry_waits_while_a_fault_is_due():
    """A retry, like the first attempt from STANDBY, closes nothing while a FAULT row is over
    its threshold and debouncing: the negative contactor closed on a cell over the
    over-voltage FAULT threshold, to open again when the row tripped."""
    bench = Bench()
    bench.pack.power_path.precharge_open = True
    cfg = bench.fw.cfg.precharge
    bench.run(cfg.timeout_s + 1.0)
    assert bench.fw.state == "PRECHARGE" and bench.fw.contactors == OPEN  # first one failed
    retry_at_s = bench.fw.phase_since_s + cfg.retry_wait_s
    while bench.now_s < retry_at_s - 0.5:
        bench.tick()
    (row,) = [r for r in bench.fw.cfg.protection if (r.fault, r.level) == (
        "CELL_OVERVOLTAGE", "FAULT")]
    over_v = row.threshold + 0.005
    acts = []
    for _ in range(15):  # 1.5 s: past the retry, short of the 2 s debounce
        m = bench.pack.measure()
        v = m.cell_voltage_v.copy()
        v[0] = over_v
        acts.append(bench.fw.step(Measurement(v, m.temperature_c, m.current_a,
                                              m.bus_voltage_v, m.contactors), bench.now_s))
        bench.pack.actuate(acts[-1])
        bench.pack.advance(Demand(0.0, "a"))
        bench.k += 1
    assert bench.now_s > retry_at_s and bench.fw.protection.fault_pending()
    assert all(a.contactors == OPEN for a in acts)


def test_a_rows_clear_names_the_cell_its_raise_named():
    """Cell 3 over the over-voltage WARNING raises it; it clears once cell 3 is back, while
    cell 1 is then the highest (under the release): the clear names cell 3, as the raise
    did, so that a monitor pairs them (it named cell 1, the highest at the clear)."""
    fw = Firmware(PRESETS["na-nfm"], 4, 3.0)
    row = next(r for r in fw.cfg.protection
               if r.fault == "CELL_OVERVOLTAGE" and r.level == "WARNING")
    temps_c = np.array([25.0, 25.0])
    events = []

    def hold(cells_v, seconds: float, t0_s: float) -> float:
        for k in range(round(seconds / TICK_S)):
            m = Measurement(np.array(cells_v), temps_c, 0.0, 0.0, OPEN)
            events.extend(fw.step(m, t0_s + k * TICK_S).events)
        return t0_s + seconds

    t_s = hold([3.6, 3.6, 3.6, 3.6], 5.0, 0.0)
    over_v = row.threshold + 0.005  # under the ALARM's
    t_s = hold([3.6, 3.6, over_v, 3.6], 5.0, t_s)
    hold([row.release - 0.05, 3.6, 3.6, 3.6], 5.0, t_s)
    ours = [(e.action, e.index) for e in events if e.name == "CELL_OVERVOLTAGE"]
    assert ours == [("raised", 2), ("cleared", 2)]


def test_a_fault_row_debouncing_when_the_firmware_restarts_is_raised_by_the_new_one():
    """A host resetting every few seconds restarted every debounce: a charger ignoring the
    limits took a cell past its absolute maximum with no FAULT. The new firmware raises a
    FAULT row the old one was debouncing, at its first step, logged as such, counted
    towards lockout."""
    from bms.runtime.restart import restarted

    fw = Firmware(PRESETS["na-nfm"], 4, 3.0)
    row = next(r for r in fw.cfg.protection
               if r.fault == "CELL_OVERVOLTAGE" and r.level == "FAULT")
    temps_c = np.array([25.0, 25.0])

    def m(cells_v):
        return Measurement(np.array(cells_v), temps_c, 0.0, 0.0, OPEN)

    for k in range(50):
        fw.step(m([3.6, 3.6, 3.6, 3.6]), k * TICK_S)
    over = [3.6, 3.6, row.threshold + 0.01, 3.6]
    before = []
    for k in range(50, 50 + round(row.debounce_s / 2 / TICK_S)):  # half its debounce
        before += fw.step(m(over), k * TICK_S).events
    assert ("CELL_OVERVOLTAGE", "FAULT") not in {(e.name, e.level) for e in before}
    new, lost = restarted(fw, 3.0, boot=1)
    act = new.step(m(over), 7.0)
    raised = [(e.name, e.level) for e in act.events if e.action == "raised"]
    assert lost == [] and ("CELL_OVERVOLTAGE", "FAULT") in raised
    assert "restarted" in new.log.entries[-1].snapshot["note"]
    assert new.hand_over().trip_ages_s["CELL_OVERVOLTAGE"] == [0.0]


def test_a_latched_inverter_timeout_fault_stays_latched_over_a_restart():
    """With the keep-alive action `open` the INVERTER_TIMEOUT row is a FAULT, latched like
    any: the first step of the next firmware, setting up which level's row watches the
    inverter, turned it off and on, and so cleared it."""
    from bms.core.protection import row_key
    from bms.data.config import KeepaliveAction, default_config
    from bms.runtime.restart import restarted

    cfg = default_config(PRESETS["na-nfm"], 4, 3.0)
    cfg = dataclasses.replace(cfg, can=dataclasses.replace(
        cfg.can, keepalive_action=KeepaliveAction.OPEN))
    fw = Firmware(PRESETS["na-nfm"], 4, 3.0, cfg)
    m = Measurement(np.full(4, 3.6), np.array([25.0, 25.0]), 0.0, 0.0, OPEN)
    fw.step(m, 0.0)
    rows = [row_key(r) for r in fw.protection.rows
            if r.fault == "INVERTER_TIMEOUT" and r.level == "FAULT"]
    fw.protection.latch(rows)
    new, lost = restarted(fw, 3.0, boot=1)
    act = new.step(m, 0.1)
    assert lost == [] and not act.events
    assert new.protection.latched_rows() == rows and new.fault_active
