"""Passive balancing as behaviour in simulated time: hand-made readings for each rule,
then a closed loop with the simulated pack."""

from __future__ import annotations

import numpy as np
import pytest

from bms.core.balancing import SOC_PER_MV, Balancer
from bms.core.signals import Actuation, Contactors
from bms.data.config import BalancingConfig
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack, SpreadSpec

N = 6
DT_S = 0.1
REST_A = 0.2
BASE_V = 3.4  # above the default min_cell_v (3.0 V)


def volts(*excess_mv: float, base_v: float = BASE_V) -> np.ndarray:
    """Cell voltages `excess_mv` above `base_v`, the rest of the N cells at base_v."""
    v = np.full(N, base_v)
    v[: len(excess_mv)] += np.asarray(excess_mv) * 1e-3
    return v


class Driver:
    """Steps a balancer on a 0.1 s tick, keeping the time and the masks it returned."""

    def __init__(self, n: int = N, **cfg):
        self.b = Balancer(BalancingConfig(**cfg), n)
        self.t_s = 0.0
        self.masks: list[np.ndarray] = []
        self.measuring: list[bool] = []

    def step(self, v, soc=None, temp_c=25.0, current_a=0.0, allowed=True) -> np.ndarray:
        mask = self.b.step(v, soc, temp_c, current_a, REST_A, allowed, self.t_s)
        self.masks.append(mask)
        self.measuring.append(self.b.measuring)
        self.t_s = round(self.t_s + DT_S, 9)
        return mask

    def run(self, seconds: float, v, **kw) -> np.ndarray:
        """The same reading for `seconds` (long enough to pass a measurement window, the
        reading is taken up at the clean step after the pause)."""
        for _ in range(round(seconds / DT_S)):
            mask = self.step(v, **kw)
        return mask


def on(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


# --- start / stop hysteresis ------------------------------------------------------------


def test_a_cell_starts_above_start_mv_and_bleeds_until_within_stop_mv():
    d = Driver()  # voltage mode, start 10 mV, stop 5 mV, every 10 s
    assert on(d.step(volts(10.0))) == []  # "more than" start_mv
    assert on(d.step(volts(11.0))) == [0]
    assert on(d.run(15.0, volts(7.0))) == [0]  # between stop and start: keeps bleeding
    assert on(d.run(15.0, volts(5.5))) == [0]
    assert on(d.run(15.0, volts(5.0))) == []  # within stop_mv: stops
    assert on(d.run(15.0, volts(7.0))) == []  # and does not start again below start_mv
    assert on(d.run(1.0, volts(10.5))) == [0]


def test_the_hysteresis_is_per_cell():
    d = Driver()
    assert on(d.step(volts(12.0, 8.0))) == [0]  # cell 1 never passed start
    assert on(d.run(15.0, volts(8.0, 8.0))) == [0]
    assert on(d.run(12.0, volts(4.0, 12.0))) == [1]  # 15.1 .. 27.0 s, clean at 20.1 s


def test_the_excess_is_over_the_lowest_cell():
    d = Driver()
    v = volts(0.0, 0.0, 0.0, 0.0, 0.0, -20.0)  # five cells 20 mV above the lowest
    assert on(d.step(v)) == [0, 1, 2, 3, 4]


# --- gates --------------------------------------------------------------------------------


def test_a_cell_below_min_cell_v_never_bleeds():
    d = Driver(min_cell_v=3.0)
    v = np.array([3.05, 2.999, 2.98, 2.98, 2.98, 2.98])  # both 19+ mV above the lowest
    assert on(d.step(v)) == [0]
    d = Driver(min_cell_v=3.0)
    assert on(d.run(25.0, volts(50.0, 50.0, base_v=2.9))) == []


def test_no_bleeding_above_max_temp_c():
    d = Driver(max_temp_c=50.0)
    assert on(d.step(volts(20.0), temp_c=50.1)) == []
    assert on(d.step(volts(20.0), temp_c=50.0)) == [0]  # "above" the limit stops it
    assert on(d.step(volts(20.0), temp_c=55.0)) == []
    assert on(d.step(volts(20.0), temp_c=float("nan"))) == []  # unknown: fail safe
    assert on(d.step(volts(20.0), temp_c=30.0)) == [0]


@pytest.mark.parametrize(("when", "current_a", "bleeds"), [
    ("rest", 0.0, True), ("rest", 0.19, True), ("rest", -0.19, True),
    ("rest", 0.2, False), ("rest", -5.0, False), ("rest", 5.0, False),
    ("charge", 5.0, True), ("charge", 0.21, True), ("charge", 0.2, False),
    ("charge", 0.0, False), ("charge", -5.0, False),
    ("always", 0.0, True), ("always", 5.0, True), ("always", -50.0, True),
])
def test_when_selects_the_current(when, current_a, bleeds):
    d = Driver(when=when)
    assert bool(d.step(volts(20.0), current_a=current_a).any()) is bleeds


def test_not_allowed_means_no_bleeding_and_resumes_when_allowed():
    d = Driver()
    assert on(d.step(volts(20.0), allowed=False)) == []
    assert on(d.step(volts(20.0), allowed=True)) == [0]
    assert on(d.step(volts(20.0), allowed=False)) == []
    assert on(d.step(volts(20.0), allowed=True)) == [0]


def test_mode_off_never_bleeds():
    d = Driver(mode="off")
    assert on(d.run(30.0, volts(200.0, 100.0))) == []
    assert not any(d.measuring)


# --- max cells ------------------------------------------------------------------------


def test_at_most_max_cells_bleed_and_they_are_the_highest():
    d = Driver(max_cells=3)
    v = volts(15.0, 40.0, 20.0, 35.0, 30.0)  # cell 5 is the lowest
    assert on(d.step(v)) == [1, 3, 4]
    # The three drain to within stop_mv; the two that waited (still latched) take over.
    assert on(d.run(15.0, volts(15.0, 3.0, 20.0, 2.0, 4.0))) == [0, 2]


def test_max_cells_ties_pick_exactly_max_cells():
    d = Driver(n=16, max_cells=8)
    v = np.full(16, BASE_V + 0.02)
    v[0] = BASE_V
    assert np.count_nonzero(d.step(v)) == 8


# --- identity -----------------------------------------------------------------------------


def test_the_mask_is_the_same_object_until_it_changes():
    d = Driver(measure_every_s=1000.0)
    first = d.step(volts(20.0))
    assert on(first) == [0]
    for _ in range(20):
        assert d.step(volts(20.0)) is first
    stopped = d.step(volts(20.0), current_a=5.0)  # gated: changes
    assert stopped is not first and on(stopped) == []
    assert d.step(volts(20.0), current_a=5.0) is stopped
    resumed = d.step(volts(20.0))
    assert resumed is not stopped and on(resumed) == [0]
    assert on(first) == [0]  # never mutated


def test_returned_masks_are_read_only_bool_arrays():
    d = Driver()
    for mask in (d.step(volts(20.0)), d.step(volts(20.0), allowed=False)):
        assert mask.dtype == bool and mask.shape == (N,)
        with pytest.raises(ValueError):
            mask[0] = True


def test_consecutive_masks_differ_by_identity_exactly_when_they_differ_by_value():
    rng = np.random.default_rng(1)
    d = Driver(max_cells=2, measure_every_s=1.0)
    prev = None
    for _ in range(600):
        v = volts(*rng.uniform(0.0, 25.0, N))
        mask = d.step(v, current_a=float(rng.choice([0.0, 0.0, 0.0, 1.0])))
        if prev is not None:
            assert (mask is prev) == np.array_equal(mask, prev)
        prev = mask


# --- measurement windows -------------------------------------------------------------------


def test_bleeding_pauses_one_step_every_measure_every_s():
    d = Driver(measure_every_s=10.0)
    d.run(45.0, volts(20.0))  # steps at 0.0 .. 44.9 s; the cell never drains here
    masks = np.array(d.masks)
    pauses = [round(i * DT_S, 6) for i, m in enumerate(d.measuring) if m]
    assert pauses == [10.0, 20.0, 30.0, 40.0]
    off = [round(i * DT_S, 6) for i in np.flatnonzero(~masks.any(axis=1))]
    assert off == pauses  # the pause is the only all-False step
    assert masks.sum(axis=0)[0] == 450 - 4


def test_decisions_use_only_clean_readings():
    """While cell 0 bleeds, the wire drop (0.5 ohm wires) makes it read 100 mV low and its
    neighbour 50 mV high; those readings are ignored. The reading after a pause is clean
    and counts."""
    d = Driver(measure_every_s=10.0)
    assert on(d.step(volts(20.0))) == [0]
    assert d.b.clean_reading
    disturbed = volts(20.0 - 100.0, 50.0)
    for _ in range(99):  # 0.1 .. 9.9 s: bleeding, dirty readings
        assert on(d.step(disturbed)) == [0]
        assert not d.b.clean_reading and not d.b.measuring
    assert on(d.step(disturbed)) == []  # 10.0 s: the measurement pause
    assert d.b.measuring
    assert on(d.step(volts(18.0))) == [0]  # 10.1 s: clean, cell 0 still 18 mV high
    assert d.b.clean_reading
    np.testing.assert_array_equal(d.b.held_voltage_v, volts(18.0))
    assert d.b.held_at_s == pytest.approx(10.1)
    d.run(9.8, volts(0.0))  # 10.2 .. 19.9 s: dirty, ignored even though "balanced"
    assert on(d.masks[-1]) == [0]
    assert on(d.step(volts(0.0))) == []  # 20.0 s: pause
    assert on(d.step(volts(3.0))) == []  # 20.1 s: clean, within stop_mv: done
    assert not d.b.measuring


def test_idle_readings_are_all_clean_and_need_no_pause():
    d = Driver()
    d.run(30.0, volts(8.0))
    assert not any(d.measuring)
    assert d.b.clean_reading and d.b.held_at_s == pytest.approx(29.9)


# --- soc mode ---------------------------------------------------------------------------------


def soc(*excess: float, base: float = 0.6) -> np.ndarray:
    s = np.full(N, base)
    s[: len(excess)] += excess
    return s


def test_soc_mode_converts_the_thresholds():
    start, stop = 10.0 * SOC_PER_MV, 5.0 * SOC_PER_MV
    assert (start, stop) == pytest.approx((0.005, 0.0025))
    flat_v = volts()  # equal voltages: only the SoC can start anything
    d = Driver(mode="soc")
    assert on(d.step(flat_v, soc=soc(start - 1e-4))) == []
    assert on(d.step(flat_v, soc=soc(start + 1e-4))) == [0]
    assert d.b.basis == "soc"
    assert on(d.run(15.0, flat_v, soc=soc(stop + 1e-4))) == [0]
    assert on(d.run(15.0, flat_v, soc=soc(stop - 1e-4))) == []


def test_soc_mode_ignores_the_voltages_when_a_soc_is_given():
    d = Driver(mode="soc")
    assert on(d.step(volts(50.0), soc=soc())) == []


def test_soc_mode_without_a_soc_falls_back_to_voltage():
    d = Driver(mode="soc")
    assert on(d.step(volts(11.0), soc=None)) == [0]
    assert d.b.basis == "voltage"
    assert on(d.run(15.0, volts(5.0), soc=None)) == []
    # A SoC arrives at the next clean reading and takes over.
    assert on(d.step(volts(0.0), soc=soc(0.0, 0.01))) == [1]
    assert d.b.basis == "soc"


def test_voltage_mode_ignores_a_given_soc():
    d = Driver(mode="voltage")
    assert on(d.step(volts(), soc=soc(0.05))) == []


# --- bad input ----------------------------------------------------------------------------------


def test_nan_readings_never_bleed():
    d = Driver()
    v = volts(20.0, 30.0)
    v[0] = np.nan
    assert on(d.step(v)) == []  # the lowest-cell reference is unknown


def test_a_bad_configuration_is_refused_naming_each_field():
    with pytest.raises(InputError) as err:
        Balancer(BalancingConfig(mode="smart", when="night", start_mv=2.0, stop_mv=5.0,
                                 measure_every_s=0.0), N)
    text = str(err.value)
    for field in ("balancing.mode", "balancing.when", "balancing.start_mv",
                  "balancing.measure_every_s"):
        assert field in text


# --- closed loop with the simulated pack --------------------------------------------------------


def test_closed_loop_at_rest_the_true_soc_spread_falls():
    """16S na-nfm at 70 % with a 2 % (sd) SoC spread, at rest, default configuration
    (voltage mode, 8 cells at once, measured voltages with the bleed's wire drop).
    A 33 ohm bleed is ~0.105 A, ~1 % SoC per 515 s: in 40 simulated minutes the spread
    of ~4.7 points falls below 1 point. The lowest cell is never bled."""
    pack = SimulatedPack(PRESETS["na-nfm"],
                         PackSpec(n_series=16, initial_soc=0.7,
                                  spread=SpreadSpec(initial_soc=0.02)), DT_S)
    cfg = BalancingConfig()
    balancer = Balancer(cfg, 16)
    soc0 = pack.true_soc.copy()
    lowest = int(np.argmin(soc0))
    spread = [float(np.ptp(soc0))]
    demand = Demand(0.0, "a")
    most_bleeding = 0
    act = None
    for k in range(round(2400.0 / DT_S)):
        m = pack.measure()
        mask = balancer.step(m.cell_voltage_v, None, float(m.temperature_c.max()),
                             m.current_a, REST_A, True, k * DT_S)
        if act is None or mask is not act.balance_mask:
            act = Actuation(state="RUN", contactors=Contactors(), balance_mask=mask,
                            charge_limit_a=0.0, discharge_limit_a=0.0, fault_bitmap=0, soc=0.5)
            most_bleeding = max(most_bleeding, int(mask.sum()))
            assert not mask[lowest]
        pack.actuate(act)
        pack.advance(demand)
        if (k + 1) % 6000 == 0:  # every 10 minutes
            spread.append(float(np.ptp(pack.true_soc)))
    assert spread[0] > 0.04
    assert all(b < a for a, b in zip(spread, spread[1:], strict=False))
    assert spread[-1] < 0.01
    assert most_bleeding == cfg.max_cells
    # The lowest cell lost only its self-discharge (~3 %/month: ~2e-5 in 40 minutes).
    assert pack.true_soc[lowest] == pytest.approx(soc0[lowest], abs=1e-4)
