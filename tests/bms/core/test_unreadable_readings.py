"""Unreadable readings (NaN, infinite) are sensor faults, never values: the fault names the
cell or sensor that gave one, no event, log entry or status carries a non-finite number
(a store and a broker write strict JSON), and the firmware keeps stepping."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from bms.host import views
from hil.loads import Demand
from protocol import messages as pm
from tests.bms.core.test_firmware import TICK_S, Bench
from tests.bms.host.test_device import Bench as DeviceBench

UNREADABLE = [math.nan, math.inf, -math.inf]


def step_with(bench: Bench, seconds: float, cell: int | None = None,
              sensor: int | None = None, value: float = math.nan, **readings) -> list:
    """Steps as `bench.tick` does, with cell `cell` and/or sensor `sensor` (0-based) read
    as `value`, and the Measurement's other fields as `readings` gives them; the
    actuations (the readings are in `bench.seen`)."""
    acts = []
    for _ in range(round(seconds / TICK_S)):
        m = bench.pack.measure()
        v, t = m.cell_voltage_v.copy(), m.temperature_c.copy()
        if cell is not None:
            v[cell] = value
        if sensor is not None:
            t[sensor] = value
        m = dataclasses.replace(m, **{"cell_voltage_v": v, "temperature_c": t, **readings})
        bench.seen[round(bench.now_s, 6)] = m
        acts.append(bench.fw.step(m, bench.now_s))
        bench.pack.actuate(acts[-1])
        bench.pack.advance(Demand(0.0, "a"))
        bench.k += 1
    return acts


def raised(acts, name: str) -> list:
    return [e for a in acts for e in a.events if e.name == name and e.action == "raised"]


@pytest.mark.parametrize("value", UNREADABLE)
def test_an_unreadable_cell_is_a_voltage_sensor_fault_at_that_cell(value):
    bench = Bench(n_series=8)
    bench.run(10.0)
    assert bench.fw.state == "RUN"
    acts = step_with(bench, 0.5, cell=5, value=value)
    [fault] = raised(acts, "VOLTAGE_SENSOR_FAULT")
    assert fault.index == 5 and fault.value is None  # no number to give
    assert acts[-1].state == "FAULT" and not acts[-1].contactors.main_closed


@pytest.mark.parametrize("value", UNREADABLE)
def test_an_unreadable_temperature_is_a_temp_sensor_fault_at_that_sensor(value):
    bench = Bench(n_series=8)  # two sensors, four cells each
    bench.run(10.0)
    acts = step_with(bench, 2.0, sensor=1, value=value)
    [fault] = raised(acts, "TEMP_SENSOR_FAULT")  # one entry, not one each way (issue 16)
    assert (fault.index, fault.value) == (1, None)
    assert acts[-1].state == "FAULT" and not acts[-1].contactors.main_closed


def test_an_unreadable_sensor_beside_an_open_one_is_one_fault_each_at_its_own_sensor():
    """The unreadable one counts as the hottest reading; the open one (the -60 °C rail) is
    still the coldest, and named as such."""
    bench = Bench(n_series=8)
    bench.run(10.0)
    acts = step_with(bench, 2.0, temperature_c=np.array([math.nan, -60.0]))
    faults = raised(acts, "TEMP_SENSOR_FAULT")
    assert sorted((e.index, e.value) for e in faults) == [(0, None), (1, -60.0)]


def test_events_and_log_entries_hold_only_finite_numbers_and_name_the_unreadable():
    bench = Bench(n_series=8)
    bench.run(10.0)
    logged = len(bench.fw.log)
    acts = step_with(bench, 2.0, cell=2, sensor=1)
    events = [e for a in acts for e in a.events]
    entries = list(bench.fw.log.entries)[logged:]
    assert events and len(entries) == len(events)
    for item in [e.as_dict() for e in events] + [e.as_dict() for e in entries]:
        json.dumps(item, allow_nan=False)  # strict JSON takes it
    named = {(d["name"], d["cell"], d["sensor"]) for d in (e.as_dict() for e in events)}
    assert {("VOLTAGE_SENSOR_FAULT", 3, None), ("TEMP_SENSOR_FAULT", None, 2)} <= named
    snap = entries[-1].snapshot
    assert snap["unreadable"] == "cell 3, sensor 2"  # as people count them
    assert snap["pack_v"] is None  # a sum with a cell missing is no pack voltage
    m = bench.seen[round(entries[-1].event.t_s, 6)]
    readable_v = np.delete(m.cell_voltage_v, 2)
    assert snap["cell_v_min"] == round(float(readable_v.min()), 4)
    assert snap["cell_v_max"] == round(float(readable_v.max()), 4)
    assert snap["temp_c_max"] == round(float(m.temperature_c[0]), 2)


def test_the_firmware_steps_on_and_clears_once_the_readings_are_back():
    bench = Bench(n_series=8)
    bench.run(10.0)
    acts = step_with(bench, 2.0, cell=2, sensor=1)
    assert len(acts) == 20 and acts[-1].state == "FAULT"
    bench.run(5.0)
    bench.fw.request("clear-faults")
    assert bench.run(10.0).state == "RUN"


@pytest.mark.parametrize("value", UNREADABLE)
def test_an_unreadable_current_is_a_current_sensor_fault_that_opens_in_that_step(value):
    """Blind to a short circuit, the pack opens at once: a latched FAULT, not an
    INTERNAL_ERROR (which only a service action clears); the estimate stays a number."""
    bench = Bench(n_series=8)
    bench.run(10.0, demand_a=-1.0)
    assert bench.fw.state == "RUN"
    acts = step_with(bench, 2.0, current_a=value)
    assert [(e.name, e.level, e.index, e.value) for a in acts for e in a.events] == [
        ("CURRENT_SENSOR_FAULT", "FAULT", None, None)]
    assert acts[0].state == "FAULT" and not acts[0].contactors.main_closed
    assert math.isfinite(bench.fw.soc) and np.isfinite(bench.fw.estimate.cell_soc).all()
    entry = bench.fw.log.entries[-1]
    json.dumps(entry.as_dict(), allow_nan=False)
    assert (entry.snapshot["unreadable"], entry.snapshot["current_a"]) == ("current", None)


def test_a_current_sensor_fault_holds_while_the_current_is_unreadable():
    bench = Bench(n_series=8)
    bench.run(10.0)
    step_with(bench, 1.0, current_a=math.nan)
    bench.fw.request("clear-faults")
    assert {a.state for a in step_with(bench, 3.0, current_a=math.nan)} == {"FAULT"}
    bench.run(1.0)
    bench.fw.request("clear-faults")
    assert bench.run(10.0).state == "RUN"


@pytest.mark.parametrize("value", UNREADABLE)
@pytest.mark.parametrize("under_way", [False, True], ids=["from-boot", "mid-precharge"])
def test_no_precharge_is_confirmed_on_an_unreadable_bus_voltage(value, under_way):
    """An infinite reading once passed for a charged bus: the pack closed onto the bus
    before the sensor row tripped."""
    bench = Bench(n_series=8)  # run is requested from the start
    while under_way and not (bench.fw.state == "PRECHARGE" and bench.fw.contactors.precharge):
        bench.tick()
    acts = step_with(bench, 30.0, bus_voltage_v=value)
    assert not any(a.contactors.positive for a in acts)
    [fault] = raised(acts, "VOLTAGE_SENSOR_FAULT")
    assert (fault.level, fault.index, fault.value) == ("FAULT", None, None)
    assert acts[-1].state == "FAULT" and not acts[-1].contactors.negative
    assert not raised(acts, "PRECHARGE_FAILED")


def test_an_unreadable_bus_voltage_in_run_opens_the_contactors():
    bench = Bench(n_series=8)
    bench.run(10.0)
    acts = step_with(bench, 1.0, bus_voltage_v=math.nan)
    [fault] = raised(acts, "VOLTAGE_SENSOR_FAULT")
    assert (fault.level, fault.index) == ("FAULT", None)
    assert acts[-1].state == "FAULT" and not acts[-1].contactors.main_closed
    assert bench.fw.log.entries[-1].snapshot["unreadable"] == "bus voltage"


def test_a_weld_check_waits_for_a_readable_bus_voltage():
    """Opened while the bus is unreadable, nothing is proved open: the check is made once
    the bus reads again (here still up: welded), and no precharge starts before it."""
    bench = Bench(n_series=8)
    bench.run(10.0)
    acts = step_with(bench, 10.0, bus_voltage_v=math.nan)
    assert not raised(acts, "CONTACTOR_WELDED") and bench.fw.opened_at_s is not None
    pack_v = float(bench.pack.measure().cell_voltage_v.sum())
    acts = step_with(bench, 0.2, bus_voltage_v=0.9 * pack_v)
    assert raised(acts, "CONTACTOR_WELDED")


def test_an_unreadable_pack_voltage_sensor_is_a_voltage_sensor_alarm():
    """The pack sensor checks the cells, which still protect: as when it disagrees, an
    ALARM (limits cut), after its debounce."""
    bench = Bench(n_series=8)
    bench.run(10.0)
    acts = step_with(bench, 6.0, pack_voltage_v=math.nan)
    [fault] = raised(acts, "VOLTAGE_SENSOR_FAULT")
    assert (fault.level, fault.index, fault.value) == ("ALARM", None, None)
    assert acts[-1].state == "RUN"


def test_status_gives_the_extremes_of_the_readable_cells_and_sensors():
    """The unreadable reading is for the sensor fault to name; Status and its JSON show
    the extremes of the others, and JSON gets no non-finite number."""
    bench = DeviceBench()
    bench.run(1.0)
    bench.run(0.3, {"cells": [3.50, np.nan, 3.53, 3.51], "temps": [24.0, np.inf, 22.0]})
    s = bench.ask(pm.GetStatus())
    assert (s.cell_v_min_index, s.cell_v_max_index) == (0, 2)
    assert (s.temp_c_min_index, s.temp_c_max_index) == (2, 0)
    assert (s.temp_c_min, s.temp_c_max) == pytest.approx((22.0, 24.0))
    assert math.isnan(s.pack_voltage_v)
    d = views.status_dict(s)
    assert d["pack_voltage_v"] is None
    assert (d["cell_v_min_cell"], d["cell_v_max_cell"]) == (1, 3)  # from 1, as people count
    assert (d["temp_c_min_sensor"], d["temp_c_max_sensor"]) == (3, 1)
    json.dumps(d, allow_nan=False)
    json.dumps(views.temps_dict(bench.ask(pm.GetTemperatures())), allow_nan=False)
