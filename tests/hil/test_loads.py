"""Load and charger profiles and the current they draw (hil.loads)."""

from __future__ import annotations

import numpy as np
import pytest

from bms.data.validation import InputError
from hil.loads import (
    Demand,
    StepProfile,
    datacenter,
    load_csv_profile,
    pack_current_a,
    pulses,
    resolve_profile,
)

# --- StepProfile -------------------------------------------------------------------


def test_step_profile_holds_each_value_until_the_next_time():
    """Each value holds from its own time (inclusive) until the next; before the first
    time the first value applies; after the last the last value holds for ever."""
    p = StepProfile((5.0, 10.0, 20.0), (1.0, 2.0, 3.0), "a")
    cases = {-3.0: 1.0, 0.0: 1.0, 5.0: 1.0, 9.999: 1.0, 10.0: 2.0, 19.9: 2.0, 20.0: 3.0,
             1e6: 3.0}
    for t_s, value in cases.items():
        assert p.demand(t_s) == Demand(value, "a"), t_s


def test_step_profile_repeats_with_its_period():
    """With period_s the profile repeats: t and t + k * period give the same demand."""
    p = StepProfile((0.0, 10.0, 20.0), (1.0, -2.0, 3.0), "w", period_s=30.0)
    for t_s in (0.0, 4.0, 10.0, 15.0, 25.0, 29.9):
        for k in (1, 2, 100):
            assert p.demand(t_s + k * 30.0) == p.demand(t_s)
    assert p.demand(31.0) == Demand(1.0, "w")
    assert p.demand(45.0) == Demand(-2.0, "w")


# --- the data-centre day -----------------------------------------------------------

# (hour inside the segment, power as a fraction of the pack energy per hour), from the
# documented day: float, 10-minute outage at 2 P/E, recharge, float, peak shave, recharge.
DAY = [(4.0, 0.05), (9.05, -2.0), (10.0, 0.5), (14.0, 0.05), (18.0, -0.2), (20.0, 0.3),
       (23.5, 0.05)]


@pytest.mark.parametrize("energy_wh", [1000.0, 48_000.0])
def test_datacenter_day_scales_with_pack_energy_and_repeats_daily(energy_wh):
    """Power = fraction x pack energy (W per Wh), in watts, the same every day."""
    p = datacenter(energy_wh)
    for hour, fraction in DAY:
        for day in (0, 1, 6):
            d = p.demand(day * 86400.0 + hour * 3600.0)
            assert d.unit == "w"
            assert d.value == pytest.approx(fraction * energy_wh, rel=1e-12), (hour, day)


def test_datacenter_outage_lasts_ten_minutes():
    """The 2 P/E ride-through starts at 09:00 and ends at 09:10."""
    p = datacenter(1000.0)
    assert p.demand(9 * 3600.0 - 1.0).value == pytest.approx(50.0)
    assert p.demand(9 * 3600.0).value == pytest.approx(-2000.0)
    assert p.demand(9 * 3600.0 + 599.0).value == pytest.approx(-2000.0)
    assert p.demand(9 * 3600.0 + 601.0).value == pytest.approx(500.0)


def test_resolve_profile_named_forms():
    """`rest`, `current:A` and `power:W` become constant demands; junk names the choices."""
    assert resolve_profile("rest", 1.0, 1.0).demand(123.0) == Demand(0.0, "a")
    assert resolve_profile("current:-10", 1.0, 1.0).demand(5.0) == Demand(-10.0, "a")
    assert resolve_profile("power:250", 1.0, 1.0).demand(5.0) == Demand(250.0, "w")
    assert resolve_profile("current:-0.5C", 1.0, 10.0).demand(5.0) == Demand(-5.0, "a")
    assert resolve_profile("current:2c", 1.0, 1.5).demand(5.0) == Demand(3.0, "a")
    with pytest.raises(InputError) as exc:
        resolve_profile("current:lots", 1.0, 1.0)
    assert "current:lots" in str(exc.value)


def test_cycles_charge_then_discharge_at_the_rate_and_repeat():
    """`cycles:0.5` on 10 Ah: +5 A for 2 h + 1 h, then -5 A for 2 h + 30 min, repeating."""
    p = resolve_profile("cycles:0.5", 1.0, 10.0)
    assert p.demand(0.0) == Demand(5.0, "a")
    assert p.demand(3 * 3600.0 - 1.0) == Demand(5.0, "a")
    assert p.demand(3 * 3600.0 + 1.0) == Demand(-5.0, "a")
    assert p.demand(5.5 * 3600.0 - 1.0) == Demand(-5.0, "a")
    assert p.demand(5.5 * 3600.0 + 1.0) == Demand(5.0, "a")


@pytest.mark.parametrize("spec", ["cycles:0", "cycles:-1", "cycles:6", "cycles:fast",
                                  "cycles:nan"])
def test_cycles_refuses_a_rate_outside_its_range_naming_it(spec):
    with pytest.raises(InputError) as exc:
        resolve_profile(spec, 1.0, 10.0)
    assert spec in str(exc.value) and "(0, 5]" in str(exc.value)


# --- CSV profiles ------------------------------------------------------------------


def write(tmp_path, text: str):
    path = tmp_path / "profile.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_profile_good_file(tmp_path):
    """A well-formed file gives its steps; blank lines and spaces are tolerated."""
    path = write(tmp_path, "time_s, current_a\n0,-5\n\n60, 2.5\n120,0\n")
    p = load_csv_profile(path)
    assert p.times_s == (0.0, 60.0, 120.0)
    assert p.values == (-5.0, 2.5, 0.0)
    assert p.unit == "a"
    assert p.demand(90.0) == Demand(2.5, "a")


def test_csv_power_profile_has_watts(tmp_path):
    p = load_csv_profile(write(tmp_path, "time_s,power_w\n0,-500\n10,300\n"))
    assert p.unit == "w"
    assert p.demand(11.0) == Demand(300.0, "w")


@pytest.mark.parametrize(
    ("text", "where", "value"),
    [
        ("time,current_a\n0,1\n", "line 1 (header)", "time,current_a"),
        ("time_s,voltage_v\n0,1\n", "line 1 (header)", "time_s,voltage_v"),
        ("time_s,current_a\n0,1\n10,abc\n", "line 3", "10,abc"),
        ("time_s,current_a\n0,1\n\n10,2\n10,3\n", "line 5 time_s", "10.0"),
        ("time_s,current_a\n0,1\n20,2\n5,3\n", "line 4 time_s", "5.0"),
        ("time_s,current_a\n0,1,2\n", "line 2", "0,1,2"),
        ("time_s,current_a\n0,1\n7\n", "line 3", "7"),
        ("time_s,current_a\n0,1\n5,nan\n", "line 3", "5,nan"),
        ("time_s,current_a\n0,1\ninf,2\n", "line 3", "inf,2"),
        # a quoted cell over two lines: later rows keep the file's own line numbers
        ('time_s,current_a\n"0",1\n"5\n",2\n9,x\n', "line 5", "9,x"),
    ],
    ids=["header-name", "header-unit", "non-numeric", "repeated-time", "time-goes-back",
         "three-columns", "one-column", "nan", "inf", "multi-line-cell"],
)
def test_csv_bad_input_names_the_line(tmp_path, text, where, value):
    """Each bad line raises InputError naming the file, the line number and the value."""
    path = write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        load_csv_profile(path)
    message = str(exc.value)
    assert str(path) in message
    assert any(p.startswith(where) and value in p for p in exc.value.problems), message


def test_csv_reports_every_bad_line_at_once(tmp_path):
    """All problems are listed together, each with its own line number."""
    path = write(tmp_path, "time_s,current_a\n4,1\nx,2\n5\n3,1\n")
    with pytest.raises(InputError) as exc:
        load_csv_profile(path)
    wheres = [p.split(" = ")[0] for p in exc.value.problems]
    assert wheres == ["line 3", "line 4", "line 5 time_s"]


@pytest.mark.parametrize("text", ["", "time_s,current_a\n", "time_s,current_a\n\n\n"])
def test_csv_without_data_rows_is_refused(tmp_path, text):
    with pytest.raises(InputError):
        load_csv_profile(write(tmp_path, text))


def test_csv_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as exc:
        load_csv_profile(tmp_path / "nope.csv")
    assert "nope.csv" in str(exc.value)


# --- pack_current_a ----------------------------------------------------------------

# A 16-cell pack near the top: EMF 60 V, 0.5 ohm, charging toward 64 V.
KW = {"terminal_v": 60.0, "pack_emf_v": 60.0, "pack_r_ohm": 0.5, "charge_voltage_v": 64.0}


def test_charge_current_is_capped_by_the_charge_limit():
    assert pack_current_a(Demand(100.0, "a"), **KW, charge_limit_a=3.0,
                          discharge_limit_a=50.0) == 3.0


def test_discharge_current_is_capped_by_the_discharge_limit():
    assert pack_current_a(Demand(-100.0, "a"), **KW, charge_limit_a=3.0,
                          discharge_limit_a=20.0) == -20.0


def test_demand_inside_the_limits_passes_unchanged():
    assert pack_current_a(Demand(-7.5, "a"), **KW, charge_limit_a=10.0,
                          discharge_limit_a=20.0) == -7.5
    assert pack_current_a(Demand(2.5, "a"), **KW, charge_limit_a=10.0,
                          discharge_limit_a=20.0) == 2.5


def test_charger_follows_constant_voltage():
    """When (Vcv - E) / R is the smallest, the charger gives exactly that: the current
    that puts the terminals at the charge voltage."""
    kw = dict(KW, pack_emf_v=63.0)
    i = pack_current_a(Demand(10.0, "a"), **kw, charge_limit_a=5.0, discharge_limit_a=5.0)
    assert i == pytest.approx((64.0 - 63.0) / 0.5)
    assert 63.0 + 0.5 * i == pytest.approx(64.0)


def test_charger_never_discharges_above_charge_voltage():
    """An EMF above the charge voltage gives no charge current (and no discharge)."""
    kw = dict(KW, pack_emf_v=64.5)
    assert pack_current_a(Demand(10.0, "a"), **kw, charge_limit_a=5.0,
                          discharge_limit_a=5.0) == 0.0


def test_power_demand_converts_through_terminal_voltage():
    """I = P / V_terminal: -1200 W at 48 V is -25 A; +480 W at 48 V is +10 A."""
    kw = dict(KW, terminal_v=48.0, pack_emf_v=48.0)
    assert pack_current_a(Demand(-1200.0, "w"), **kw, charge_limit_a=100.0,
                          discharge_limit_a=100.0) == pytest.approx(-25.0)
    assert pack_current_a(Demand(480.0, "w"), **kw, charge_limit_a=100.0,
                          discharge_limit_a=100.0) == pytest.approx(10.0)
    assert pack_current_a(Demand(-1200.0, "w"), **kw, charge_limit_a=100.0,
                          discharge_limit_a=12.0) == -12.0


def test_zero_limits_give_zero_current():
    for value in (-50.0, 50.0):
        assert pack_current_a(Demand(value, "a"), **KW, charge_limit_a=0.0,
                              discharge_limit_a=0.0) == 0.0


def test_current_never_exceeds_the_limits_for_any_inputs():
    """Over many random demands, voltages and limits: -discharge <= I <= charge."""
    rng = np.random.default_rng(1)
    for _ in range(5000):
        unit = "a" if rng.random() < 0.5 else "w"
        demand = Demand(float(rng.normal(0.0, 200.0 if unit == "a" else 10_000.0)), unit)
        charge, discharge = (float(x) for x in rng.uniform(0.0, 100.0, 2))
        i = pack_current_a(demand, terminal_v=float(rng.uniform(0.0, 80.0)),
                           pack_emf_v=float(rng.uniform(40.0, 70.0)),
                           pack_r_ohm=float(rng.uniform(0.01, 1.0)), charge_voltage_v=64.0,
                           charge_limit_a=charge, discharge_limit_a=discharge)
        assert -discharge <= i <= charge
        assert i * demand.value >= 0.0  # never the opposite direction from the demand


# --- the pulses profile ------------------------------------------------------------


def net_charge_as(profile: StepProfile, until_s: float) -> float:
    """The integral of the demanded current from 0 to `until_s`, A*s."""
    times = np.array(profile.times_s + (np.inf,))
    ends = np.minimum(times[1:], until_s)
    starts = np.minimum(times[:-1], until_s)
    return float(np.sum(np.array(profile.values) * (ends - starts)))


def test_pulses_are_deterministic_per_seed():
    a, b, c = pulses(1.5, seed=5), pulses(1.5, seed=5), pulses(1.5, seed=6)
    assert a.unit == "a" and a.period_s is None
    assert (a.times_s, a.values) == (b.times_s, b.values)
    assert a.values[:20] != c.values[:20]
    assert a.times_s[:20] != c.times_s[:20]


@pytest.mark.parametrize("capacity_ah", [1.5, 40.0])
def test_pulse_currents_lie_between_2c_discharge_and_half_c_charge(capacity_ah):
    p = pulses(capacity_ah, seed=1)
    currents = np.array(p.values[0::2])
    assert currents.size > 1000  # 48 h of pulses
    assert np.all(currents >= -2.0 * capacity_ah)
    assert np.all(currents <= 0.5 * capacity_ah)
    # the whole range is used, regeneration included
    assert currents.min() < -1.9 * capacity_ah and currents.max() > 0.45 * capacity_ah
    assert np.mean(currents > 0.0) == pytest.approx(0.2, abs=0.05)


def test_pulses_scale_with_capacity():
    small, large = pulses(1.5, seed=2), pulses(30.0, seed=2)
    assert small.times_s == large.times_s
    assert np.allclose(np.array(large.values), 20.0 * np.array(small.values), rtol=1e-12)


def test_pulses_alternate_with_rests_of_the_documented_lengths():
    """Pulse, rest, pulse, rest...: pulses last 10-60 s, rests 0-60 s, from t = 0."""
    p = pulses(1.5, seed=3)
    assert p.times_s[0] == 0.0
    values = np.array(p.values)
    assert np.all(values[1::2] == 0.0)
    assert np.all(values[0::2] != 0.0)
    lengths = np.diff(np.array(p.times_s))
    assert np.all(lengths[0::2] >= 10.0) and np.all(lengths[0::2] <= 60.0)
    assert np.all(lengths[1::2] >= 0.0) and np.all(lengths[1::2] <= 60.0)
    assert lengths[0::2].min() < 11.0 and lengths[0::2].max() > 59.0
    assert lengths[1::2].min() < 1.0 and lengths[1::2].max() > 59.0
    # demand() sees the same steps
    t0, t1 = p.times_s[0], p.times_s[1]
    assert p.demand(0.5 * (t0 + t1)) == Demand(p.values[0], "a")
    assert p.demand(t1) == Demand(0.0, "a")


def test_pulses_cover_the_hours_asked_for():
    for hours in (3.0, 48.0):
        p = pulses(1.5, seed=0, hours=hours)
        assert max(p.times_s[0::2]) < hours * 3600.0
        assert max(p.times_s) > hours * 3600.0 - 120.0


@pytest.mark.parametrize("seed", [0, 1, 7, 42])
def test_pulses_take_the_pack_from_high_to_low_in_about_three_hours(seed):
    """Discharge dominates: over three hours the net charge out exceeds 0.9 capacity,
    but not so much that the pack would be empty in two."""
    capacity_ah = 1.5
    p = pulses(capacity_ah, seed=seed)
    out_3h = -net_charge_as(p, 3 * 3600.0) / 3600.0
    out_2h = -net_charge_as(p, 2 * 3600.0) / 3600.0
    assert out_3h > 0.9 * capacity_ah
    assert out_2h < 1.0 * capacity_ah
    assert out_3h < 1.6 * capacity_ah


def test_resolve_profile_pulses_with_and_without_seed():
    """`pulses:7` is pulses(capacity, seed 7); plain `pulses` is seed 0."""
    cap = 3.0
    seven = resolve_profile("pulses:7", 1000.0, cap)
    expected = pulses(cap, 7)
    assert (seven.times_s, seven.values, seven.unit) == (
        expected.times_s, expected.values, expected.unit)
    for t_s in np.linspace(0.0, 6 * 3600.0, 500):
        assert seven.demand(float(t_s)) == expected.demand(float(t_s))
    plain = resolve_profile("pulses", 1000.0, cap)
    assert plain.values == pulses(cap, 0).values
    assert plain.values != seven.values
    # the capacity, not the energy, sets the currents
    assert resolve_profile("pulses:7", 5.0, cap).values == seven.values


@pytest.mark.parametrize("spec", ["pulses:x", "pulses:", "pulses:-1", "pulses:1.5"])
def test_resolve_profile_refuses_a_bad_pulses_seed(spec):
    with pytest.raises(InputError) as exc:
        resolve_profile(spec, 1000.0, 3.0)
    message = str(exc.value)
    assert repr(spec) in message
    assert "pulses:SEED" in message


def test_run_help_lists_the_pulses_profile(capsys):
    from bms_emu.main import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "pulses" in capsys.readouterr().out
