"""Fault injection (hil.injections): parsing `AT:KIND[:key=value,...]` and the effect of
each kind on a simulated 8-cell na-nfm pack."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bms.core.signals import OPEN, Actuation, Contactors
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from hil.injections import KINDS, InjectionSchedule, apply_injection, parse_injection
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack

N_SERIES = 8
N_TEMP = 2  # one sensor per four cells
DT_S = 0.1
MAIN = Contactors(negative=True, precharge=False, positive=True)
PRECHARGE = Contactors(negative=True, precharge=True, positive=False)


def make_pack(seed: int = 0) -> SimulatedPack:
    return SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=N_SERIES, seed=seed), DT_S)


def actuation(contactors: Contactors = OPEN, limit_a: float = 10.0) -> Actuation:
    return Actuation(state="RUN", contactors=contactors,
                     balance_mask=np.zeros(N_SERIES, bool), charge_limit_a=limit_a,
                     discharge_limit_a=limit_a, fault_bitmap=0, soc=0.5)


def run(pack: SimulatedPack, seconds: float, current_a: float = 0.0):
    """Ticks as the runner does (measure, then advance); returns the last measurement."""
    m = None
    for _ in range(round(seconds / DT_S)):
        m = pack.measure()
        pack.advance(Demand(current_a, "a"))
    return m


def inject(pack: SimulatedPack, text: str) -> None:
    apply_injection(pack, parse_injection(text, N_SERIES, N_TEMP))


def mean_voltages(pack: SimulatedPack, n: int = 100) -> np.ndarray:
    """Averaged readings of the same plant state (noise 1 mV rms -> 0.1 mV after 100)."""
    return np.mean([pack.measure().cell_voltage_v for _ in range(n)], axis=0)


# --- parsing -----------------------------------------------------------------------

# Every kind with all of its documented parameters given, and with the defaults.
PARSE_CASES = {
    "sense-open": [("600:sense-open:cell=3,bias_v=0.4,tau_s=1.5", 600.0,
                    {"cell": 3, "bias_v": 0.4, "tau_s": 1.5}),
                   ("0:sense-open:cell=1", 0.0, {"cell": 1, "bias_v": 0.5, "tau_s": 2.0})],
    "sensor-offset": [("10m:sensor-offset:cell=2,offset_v=-0.25", 600.0,
                       {"cell": 2, "offset_v": -0.25})],
    "sensor-stuck": [("1h:sensor-stuck:cell=8,value_v=3.1", 3600.0,
                      {"cell": 8, "value_v": 3.1}),
                     ("5:sensor-stuck:cell=2", 5.0, {"cell": 2})],  # present reading
    "temp-sensor-open": [("0:temp-sensor-open:sensor=1,value_c=-50", 0.0,
                          {"sensor": 1, "value_c": -50.0}),
                         ("0:temp-sensor-open:sensor=2", 0.0, {"sensor": 2, "value_c": -60.0})],
    "temp-sensor-short": [("90s:temp-sensor-short:sensor=2,value_c=120", 90.0,
                           {"sensor": 2, "value_c": 120.0}),
                          ("0:temp-sensor-short:sensor=1", 0.0, {"sensor": 1, "value_c": 150.0})],
    "temp-sensor-offset": [("1h30m:temp-sensor-offset:sensor=2,offset_c=-7.5", 5400.0,
                            {"sensor": 2, "offset_c": -7.5})],
    "current-offset": [("2d:current-offset:offset_a=2.5", 172800.0, {"offset_a": 2.5})],
    "pack-sensor-offset": [("1m:pack-sensor-offset:offset_v=-0.5", 60.0, {"offset_v": -0.5})],
    "reading-lost": [("5:reading-lost:reading=bus", 5.0, {"reading": "bus"}),
                     ("5:reading-lost", 5.0, {"reading": "current"})],
    "internal-short": [("5:internal-short:cell=5,resistance_ohm=50", 5.0,
                        {"cell": 5, "resistance_ohm": 50.0}),
                       ("5:internal-short:cell=5", 5.0, {"cell": 5, "resistance_ohm": 100.0})],
    "internal-short-removed": [("90:internal-short-removed:cell=2", 90.0, {"cell": 2})],
    "cooling-failure": [("1.5h:cooling-failure:factor=20", 5400.0, {"factor": 20.0}),
                        ("0:cooling-failure", 0.0, {"factor": 10.0})],
    "contactor-weld": [("0:contactor-weld:contactor=negative", 0.0, {"contactor": "negative"}),
                       ("0:contactor-weld", 0.0, {"contactor": "positive"})],
    "precharge-open": [("30:precharge-open", 30.0, {})],
}
FLAT_CASES = [case for cases in PARSE_CASES.values() for case in cases]


def test_parse_cases_cover_every_kind():
    assert set(PARSE_CASES) == set(KINDS)


@pytest.mark.parametrize(("text", "at_s", "params"), FLAT_CASES, ids=[c[0] for c in FLAT_CASES])
def test_every_kind_parses_with_its_parameters_and_defaults(text, at_s, params):
    inj = parse_injection(text, N_SERIES, N_TEMP)
    assert inj.at_s == at_s
    assert inj.kind == text.split(":")[1]
    assert inj.params == params


@pytest.mark.parametrize(("text", "at_s", "params"), FLAT_CASES, ids=[c[0] for c in FLAT_CASES])
def test_describe_round_trips_through_the_parser(text, at_s, params):
    inj = parse_injection(text, N_SERIES, N_TEMP)
    assert parse_injection(inj.describe(), N_SERIES, N_TEMP) == inj


@pytest.mark.parametrize(("text", "expected"), [
    ("10:bogus", "KIND = 'bogus'"),
    ("10:bogus:cell=1", "must be one of sense-open"),
    ("0:sensor-offset:cell=9,offset_v=0.1", "cell = 9: must be within [1, 8]"),
    ("0:sensor-offset:cell=0,offset_v=0.1", "cell = 0: must be within [1, 8]"),
    ("0:temp-sensor-offset:sensor=3,offset_c=1", "sensor = 3: must be within [1, 2]"),
    ("0:sensor-offset:cell=2", "offset_v: is required for sensor-offset"),
    ("0:current-offset", "offset_a: is required"),
    ("0:cooling-failure:speed=3", "speed=3"),
    ("0:cooling-failure:speed=3", "cooling-failure takes factor"),
    ("0:precharge-open:now", "precharge-open takes no parameters"),
    ("soon:precharge-open", "AT = 'soon'"),
    ("-5:precharge-open", "AT = '-5'"),
    ("10x:precharge-open", "AT = '10x'"),
    ("0:cooling-failure:factor=0.5", "factor = 0.5: must be within [1, 10000]"),
    ("0:cooling-failure:factor=fast", "factor = 'fast': must be a number"),
    ("0:internal-short:cell=2.5", "cell = '2.5': must be a whole number"),
    ("0:contactor-weld:contactor=middle", "contactor = 'middle': must be one of positive"),
    ("0:sensor-offset:cell=1,offset_v=9", "offset_v = 9.0: must be within [-5, 5]"),
])
def test_parse_errors_name_the_offending_field_and_value(text, expected):
    with pytest.raises(InputError) as exc:
        parse_injection(text, N_SERIES, N_TEMP)
    assert text in exc.value.source
    assert any(expected in p for p in exc.value.problems), exc.value.problems


def test_parse_reports_every_problem_at_once():
    with pytest.raises(InputError) as exc:
        parse_injection("soon:sensor-offset:cell=99", N_SERIES, N_TEMP)
    wheres = sorted(re.split(" = |: ", p)[0] for p in exc.value.problems)
    assert wheres == ["AT", "cell", "offset_v"]


@pytest.mark.parametrize("text", [
    "0:cooling-failure:factor=nan",
    "0:sensor-offset:cell=1,offset_v=nan",
    "0:internal-short:cell=1,resistance_ohm=nan",
    "0:current-offset:offset_a=nan",
])
def test_not_a_number_is_outside_every_range(text):
    """NaN lies in no range [low, high]: it must be refused like any out-of-range value
    (a NaN cooling factor or offset would turn the plant's state into NaN)."""
    with pytest.raises(InputError):
        parse_injection(text, N_SERIES, N_TEMP)


# --- effects on the pack -----------------------------------------------------------


def test_sense_open_cell_reads_high_pair_reads_low_sum_preserved():
    """A loose tap between cells 3 and 4 drifts to bias_v above their midpoint: cell 3
    reads high, cell 4 low, their sum stays right; after 5 tau the drift is done."""
    pack = make_pack()
    run(pack, 1.0)
    inject(pack, "0:sense-open:cell=3,bias_v=0.3,tau_s=2")
    m = run(pack, 10.0)
    true_v = pack.group_v
    mid = 0.5 * (true_v[2] + true_v[3])
    # Left to drift: 0.3 V x e^-5 = 2 mV; noise 1 mV rms and a 1 mV LSB: 6 mV in all.
    assert m.cell_voltage_v[2] == pytest.approx(mid + 0.3, abs=6e-3)
    assert m.cell_voltage_v[3] == pytest.approx(mid - 0.3, abs=6e-3)
    assert m.cell_voltage_v[2] > true_v[2] + 0.25 and m.cell_voltage_v[3] < true_v[3] - 0.25
    assert m.cell_voltage_v[2] + m.cell_voltage_v[3] == pytest.approx(true_v[2] + true_v[3],
                                                                      abs=5e-3)


def test_sense_open_on_the_last_cell_pairs_with_the_one_below():
    pack = make_pack()
    run(pack, 1.0)
    inject(pack, "0:sense-open:cell=8")
    m = run(pack, 15.0)
    true_v = pack.group_v
    assert m.cell_voltage_v[7] > true_v[7] + 0.4  # default bias 0.5 V
    assert m.cell_voltage_v[6] < true_v[6] - 0.4


def test_sensor_offset_shifts_one_reading():
    pack = make_pack()
    run(pack, 1.0)
    inject(pack, "0:sensor-offset:cell=2,offset_v=0.5")
    err = mean_voltages(pack) - pack.group_v
    # Averaged noise 0.1 mV; dithered quantisation leaves < 0.5 mV bias: 1 mV margin.
    assert err[1] == pytest.approx(0.5, abs=1e-3)
    assert np.abs(np.delete(err, 1)).max() < 1e-3


def test_sensor_stuck_at_a_value_reads_that_value_whatever_the_cell_does():
    pack = make_pack()
    pack.actuate(actuation(MAIN))
    run(pack, 1.0)
    inject(pack, "0:sensor-stuck:cell=4,value_v=3.1")
    readings = [run(pack, 10.0, current_a=-3.0).cell_voltage_v[3] for _ in range(3)]
    assert readings == [3.1, 3.1, 3.1]


def test_sensor_stuck_holds_the_present_reading_while_the_cell_moves():
    """Without value_v the reading freezes at the cell's voltage when it stuck (to the
    converter's 1 mV step, without the noise); under a 2C discharge the true voltage falls
    and the other readings follow it, the stuck one does not."""
    pack = make_pack()
    pack.actuate(actuation(MAIN))
    before = run(pack, 2.0).cell_voltage_v
    true_before = pack.group_v.copy()
    inject(pack, "0:sensor-stuck:cell=4")
    m = run(pack, 60.0, current_a=-3.0)
    assert pack.group_v[3] < true_before[3] - 0.1
    assert m.cell_voltage_v[3] == pytest.approx(true_before[3], abs=0.5e-3 + 1e-12)
    assert abs(m.cell_voltage_v[3] - before[3]) <= 3e-3  # the last reading, up to its noise
    others = np.delete(np.arange(N_SERIES), 3)
    np.testing.assert_allclose(m.cell_voltage_v[others], pack.group_v[others], atol=5e-3)


def test_sensor_stuck_at_the_start_holds_the_cells_voltage():
    """Injected at time 0 (the runner applies injections before the first measurement),
    the "present reading" is the cell's voltage, not 0 V."""
    pack = make_pack()
    inject(pack, "0:sensor-stuck:cell=3")
    m = pack.measure()
    assert m.cell_voltage_v[2] == pytest.approx(pack.group_v[2], abs=5e-3)


def test_temp_sensor_open_and_short_force_their_readings():
    """Temperatures are sampled once a second: from the next sample, an open sensor reads
    its low value and a shorted one its high value; the other sensor is unaffected."""
    pack = make_pack()
    run(pack, 1.0)
    inject(pack, "0:temp-sensor-open:sensor=1")
    m = run(pack, 1.2)
    assert m.temperature_c[0] == pytest.approx(-60.0)
    assert m.temperature_c[1] == pytest.approx(25.0, abs=1.5)  # ambient, 0.5 °C spread
    inject(pack, "0:temp-sensor-short:sensor=2")
    m = run(pack, 1.2)
    assert list(m.temperature_c) == pytest.approx([-60.0, 150.0])


def test_temp_sensor_offset_shifts_its_reading():
    pack = make_pack()
    run(pack, 1.0)
    inject(pack, "0:temp-sensor-offset:sensor=2,offset_c=5")
    m = run(pack, 1.2)
    err = m.temperature_c - pack.true_group_temperature_c.reshape(2, 4).mean(axis=1)
    # 0.1 °C noise rms plus 0.05 °C quantisation: 0.5 °C is 5 sigma.
    assert err[1] == pytest.approx(5.0, abs=0.5)
    assert abs(err[0]) < 0.5


def test_current_offset_adds_to_the_current_reading():
    pack = make_pack()
    run(pack, 1.0)
    before = np.mean([pack.measure().current_a for _ in range(200)])
    inject(pack, "0:current-offset:offset_a=2.5")
    after = np.mean([pack.measure().current_a for _ in range(200)])
    # Current noise 0.75 mA rms: averaged over 200 it is 0.05 mA.
    assert after - before == pytest.approx(2.5, abs=1e-3)
    assert pack.current_a == 0.0  # the true current is untouched


def test_pack_sensor_offset_adds_to_the_pack_voltage_reading_only():
    pack = make_pack()
    run(pack, 1.0)
    before = np.mean([pack.measure().pack_voltage_v for _ in range(200)])
    cells = pack.measure().cell_voltage_v.sum()
    inject(pack, "0:pack-sensor-offset:offset_v=-0.5")
    after = np.mean([pack.measure().pack_voltage_v for _ in range(200)])
    assert after - before == pytest.approx(-0.5, abs=5e-3)
    assert before == pytest.approx(pack.pack_voltage_v, rel=5e-3)  # the sensor's accuracy
    assert pack.measure().cell_voltage_v.sum() == pytest.approx(cells, abs=0.05)


@pytest.mark.parametrize(("reading", "field"), [
    ("current", "current_a"), ("bus", "bus_voltage_v"), ("pack", "pack_voltage_v")])
def test_a_lost_reading_is_nan_and_only_that_one(reading, field):
    pack = make_pack()
    run(pack, 1.0)
    inject(pack, f"0:reading-lost:reading={reading}")
    m = pack.measure()
    fields = ("current_a", "bus_voltage_v", "pack_voltage_v")
    assert [np.isnan(getattr(m, f)) for f in fields] == [f == field for f in fields]
    assert np.isfinite(m.cell_voltage_v).all() and np.isfinite(m.temperature_c).all()


def test_internal_short_drains_its_cell_at_rest_and_warms_it():
    """A 100 ohm short across cell 5 at ~3.86 V takes ~38.6 mA: in an hour ~2.6 % of a
    1.5 Ah cell, against ~0.004 % for self-discharge; its I^2 R heats that cell."""
    pack = make_pack()
    soc0 = pack.cells.soc[:, 0].copy()
    v0 = pack.group_v[4]
    inject(pack, "0:internal-short:cell=5")
    run(pack, 3600.0)
    drop = soc0 - pack.cells.soc[:, 0]
    mean_v = 0.5 * (v0 + pack.group_v[4])
    expected = mean_v / 100.0 * 3600.0 / pack.cells.capacity_as[4, 0]
    # OCV falls almost linearly over the hour (2.6 % SoC on a 1.8 V/SoC slope), so the
    # trapezoid mean voltage is good to well under 1 %.
    assert drop[4] == pytest.approx(expected, rel=0.01)
    others = np.delete(drop, 4)
    assert np.all(others > 0) and others.max() < drop[4] / 100
    temps = pack.true_group_temperature_c
    assert temps[4] == temps.max()
    assert temps[4] > np.delete(temps, 4).mean() + 0.3


def test_cooling_failure_makes_the_pack_hotter_under_load():
    """Same pack, same 1C discharge for 20 minutes: with the ambient thermal resistance
    ten times higher the temperature rise is much larger."""
    rises = []
    for failed in (False, True):
        pack = make_pack()
        start_c = pack.true_group_temperature_c.mean()
        if failed:
            inject(pack, "0:cooling-failure")
        pack.actuate(actuation(MAIN))
        m = run(pack, 1200.0, current_a=-1.5)
        rises.append((pack.true_group_temperature_c.mean() - start_c, m.temperature_c.mean()))
    (normal, normal_read), (failed, failed_read) = rises
    assert normal > 0.3
    assert failed > 2.0 * normal
    assert failed_read > normal_read + 0.5 * (failed - normal)


def test_contactor_weld_keeps_the_positive_closed_after_opening():
    """Welded while closed, the positive contactor stays closed when commanded open; the
    auxiliary feedback in the measurement shows it."""
    pack = make_pack()
    pack.actuate(actuation(MAIN))
    run(pack, 1.0, current_a=-1.0)
    inject(pack, "0:contactor-weld")
    pack.actuate(actuation(OPEN))
    m = run(pack, 1.0, current_a=-1.0)
    assert m.contactors == Contactors(negative=False, precharge=False, positive=True)
    assert pack.current_a == 0.0  # the negative did open


def test_contactor_weld_pending_welds_the_negative_when_it_next_closes():
    pack = make_pack()
    inject(pack, "0:contactor-weld:contactor=negative")
    assert pack.measure().contactors == OPEN
    pack.actuate(actuation(PRECHARGE))
    run(pack, 1.0)
    pack.actuate(actuation(OPEN))
    assert pack.measure().contactors == Contactors(negative=True)


def test_precharge_open_keeps_the_bus_at_zero():
    """With the precharge resistor open the bus never rises; a healthy pack's bus reaches
    the pack voltage within 2 s (tau ~0.22 s)."""
    buses = []
    for broken in (False, True):
        pack = make_pack()
        if broken:
            inject(pack, "0:precharge-open")
        pack.actuate(actuation(PRECHARGE))
        m = run(pack, 2.0)
        buses.append((m.bus_voltage_v, float(m.cell_voltage_v.sum())))
    (healthy_bus, pack_v), (broken_bus, _) = buses
    assert healthy_bus > 0.99 * pack_v
    assert broken_bus == 0.0


# --- the schedule --------------------------------------------------------------------

def parsed(text: str):
    return parse_injection(text, N_SERIES, N_TEMP)


def test_the_schedule_applies_each_injection_once_when_it_is_due_in_time_order():
    pack = make_pack()
    late = parsed("20:sensor-offset:cell=2,offset_v=0.2")
    first = parsed("10:sensor-offset:cell=1,offset_v=0.1")
    with_first = parsed("10:current-offset:offset_a=1.5")
    schedule = InjectionSchedule([late, first, with_first])
    assert schedule.pending == [first, with_first, late]  # equal times: in the order given
    schedule.apply_due(pack, 9.9)
    assert schedule.applied == [] and not pack.sensors.voltage_offset_v.any()
    for _ in range(2):  # due twice over, applied once
        schedule.apply_due(pack, 10.0)
    assert schedule.applied == [first, with_first] and schedule.pending == [late]
    assert pack.sensors.voltage_offset_v.tolist() == [0.1] + [0.0] * (N_SERIES - 1)
    assert pack.sensors.extra_current_offset_a == 1.5
    schedule.apply_due(pack, 1e9)
    assert schedule.applied == [first, with_first, late] and schedule.pending == []


def test_an_injection_added_later_comes_after_those_already_due_at_its_time():
    at_10 = parsed("10:cooling-failure")
    at_5 = parsed("5:current-offset:offset_a=1")
    added = parsed("10:cooling-failure:factor=3")
    schedule = InjectionSchedule([at_10])
    schedule.add(added)
    schedule.add(at_5)
    assert schedule.pending == [at_5, at_10, added]
