"""State estimation against the simulated pack: the SoC filter with a current offset, rest
recalibration, a flat plateau with a biased OCV, the pack SoC rule, capacity and resistance
learning, remaining energy and runtime, and the start from a stored SoC or the voltage.

Everything runs in simulated time. The long runs use a 0.5 s tick: the estimator runs its
filter once a second whatever the tick, and a finer tick only multiplies the plant's steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bms.core.estimator import Estimator, pack_soc
from bms.core.firmware import Firmware
from bms.core.signals import Contactors, Measurement
from bms.data.config import default_config
from bms.data.presets import PRESETS
from hil.injections import apply_injection, parse_injection
from hil.loads import Demand, pulses
from hil.pack import PackSpec, SimulatedPack, SpreadSpec
from hil.sensors import SensorSpec

TICK_S = 0.5


class Rig:
    """A firmware driving a small simulated pack one tick at a time. `plant_chem` lets the
    plant's cells differ from the chemistry the firmware believes in; `estimation` and
    `balancing` replace fields of the firmware's configuration."""

    def __init__(self, chem="na-nfm", n_series=4, initial_soc=0.6, *, stored_soc=None,
                 estimation=None, balancing=None, plant_chem=None, tick_s=TICK_S, **spec):
        self.chem = PRESETS[chem]
        self.tick_s = tick_s
        self.pack = SimulatedPack(plant_chem or self.chem,
                                  PackSpec(n_series=n_series, initial_soc=initial_soc, **spec),
                                  tick_s)
        cfg = default_config(self.chem, n_series, self.pack.capacity_ah)
        if estimation:
            cfg = dataclasses.replace(
                cfg, estimation=dataclasses.replace(cfg.estimation, **estimation))
        if balancing:
            cfg = dataclasses.replace(
                cfg, balancing=dataclasses.replace(cfg.balancing, **balancing))
        self.fw = Firmware(self.chem, n_series, self.pack.capacity_ah, cfg, stored_soc)
        self.k = 0
        self.m: Measurement | None = None  # the last measurement the firmware saw
        self.events = []

    @property
    def now_s(self) -> float:
        return self.k * self.tick_s

    @property
    def one_c_a(self) -> float:
        return self.pack.capacity_ah

    def tick(self, demand: float | Demand = 0.0):
        if not isinstance(demand, Demand):
            demand = Demand(demand, "a")
        self.m = self.pack.measure()
        act = self.fw.step(self.m, self.now_s)
        self.events.extend(act.events)
        self.pack.actuate(act)
        self.pack.advance(demand)
        self.k += 1
        return act

    def run(self, seconds: float, demand: float | Demand = 0.0):
        act = None
        for _ in range(round(seconds / self.tick_s)):
            act = self.tick(demand)
        return act

    def run_until_current_below(self, demand_a: float, below_a: float, hold_s: float,
                                limit_s: float) -> float:
        """Holds `demand_a` until the pack current has stayed below `below_a` for `hold_s`
        (a charger's taper, a discharge the firmware's limit has ended); returns the time."""
        start_s, low_s = self.now_s, 0.0
        while low_s < hold_s:
            assert self.now_s - start_s < limit_s, "the current never fell off"
            self.tick(demand_a)
            low_s = low_s + self.tick_s if abs(self.pack.current_a) < below_a else 0.0
        return self.now_s - start_s

    def soc_error(self) -> np.ndarray:
        return self.fw.estimate.cell_soc - self.pack.true_soc


# --- 1. the current offset, seen through the voltage ------------------------------------


def test_voltage_reveals_a_current_offset_during_a_constant_discharge():
    # Under a constant current an offset, a gain error and a capacity error all drift SoC
    # at a constant rate and cannot be told apart; with no capacity spread and no gain
    # error only the offset is left to explain the drift the voltage shows. Cells start at
    # one SoC so that nothing bleeds at rest before the load (see the bleed test below).
    rig = Rig(initial_soc=0.9, seed=0,
              sensors=SensorSpec(current_offset_c=0.01, current_gain_error=0.0),
              spread=SpreadSpec(capacity_rel=0.0, initial_soc=0.0),
              estimation={"learn_offset_when_open": False})
    rig.run(10.0)
    assert rig.fw.state == "RUN"
    start_soc = rig.pack.true_soc.copy()
    counted_as = 0.0
    for _ in range(round(50 * 60 / TICK_S)):
        rig.tick(-0.5 * rig.one_c_a)
        counted_as += rig.m.current_a * TICK_S
    est = rig.fw.estimate
    true_soc = rig.pack.true_soc
    true_offset_a = rig.pack.sensors.current_offset_a
    assert abs(true_offset_a) == pytest.approx(0.01 * rig.one_c_a)

    # The offset is weakly observable through the voltage here: the filter also allows for
    # a capacity error, which under a constant current drifts SoC the same way, so after
    # 50 min it has put about a third of the drift on the offset (0.34 on this seed) and
    # the rest on SoC. 0.2 is clear of "nothing learnt"; 1.3 rules out a runaway. (With
    # rests and current steps, as in benchmarks/soc_accuracy.py, it learns all of it.)
    assert np.sign(est.current_offset_a) == np.sign(true_offset_a)
    assert 0.2 < est.current_offset_a / true_offset_a < 1.3
    # Every cell within 1 % (observed 0.14-0.33 %): the steep OCV keeps SoC honest.
    est_error = np.abs(est.cell_soc - true_soc).max()
    assert est_error < 0.01
    # A plain count from the true start with the same readings (and the true capacity,
    # which the estimator does not even know) is off by the offset's 45 As = 0.83 %;
    # the estimator is at most 0.33 / 0.82 of that over eight seeds.
    counted_soc = start_soc + counted_as / (rig.pack.true_capacity_ah * 3600.0)
    count_error = np.abs(counted_soc - true_soc).max()
    assert count_error > 0.006
    assert est_error < 0.5 * count_error


# --- 2. a rest corrects a wrong start ------------------------------------------------------


@pytest.mark.parametrize("stored_sigma", [None, 0.01], ids=["default-sigma", "trusted"])
def test_rest_after_load_corrects_a_stored_soc_15_points_high(stored_sigma):
    # `trusted`: the firmware believes the stored SoC to 1 %; the rest voltage at power-up,
    # 0.3 V away on a steep curve, shows it is stale at once (see the next test).
    estimation = None if stored_sigma is None else {"stored_soc_sigma": stored_sigma}
    rig = Rig(initial_soc=0.6, stored_soc=0.75, seed=1, estimation=estimation)
    rig.tick()
    if stored_sigma is None:
        assert np.all(rig.soc_error() > 0.12)  # 15 points, less the 1 % spread of the cells
    else:
        assert np.all(np.abs(rig.soc_error()) < 0.02)
    rig.run(5 * 60.0, -0.5 * rig.one_c_a)
    rig.run(rig.fw.cfg.estimation.rest_settle_s + 60.0)
    # Observed <= 0.3 %; 1 % is the accuracy a relaxed rest on this steep curve gives
    # (5 mV model error over at least 1.5 V per unit SoC is 0.3 %), with margin.
    assert np.abs(rig.soc_error()).max() < 0.01


def test_load_alone_corrects_a_confident_but_stale_stored_soc():
    # A pack stored for months (3 %/month self-discharge) comes back with a stale SoC the
    # firmware was configured to trust. The voltage, 0.3 V away on a 2 V per unit slope,
    # should win at once: the first reading, at rest with the contactors still open, shows
    # the stored value is stale, and the load that follows keeps the estimate there.
    rig = Rig(initial_soc=0.6, stored_soc=0.75, seed=1, estimation={"stored_soc_sigma": 0.01})
    rig.tick()
    assert np.all(np.abs(rig.soc_error()) < 0.03)
    rig.run(20 * 60.0, -0.5 * rig.one_c_a)
    assert np.abs(rig.soc_error()).max() < 0.03


def test_estimator_settles_on_the_rest_voltage_after_rest_settle_s():
    chem = PRESETS["na-nfm"]
    n = 4
    cfg = default_config(chem, n, chem.capacity_ah)
    # A stored SoC 30 points low, believed to 11 %: not stale beyond doubt at start (three
    # standard deviations are 0.34), so the filter starts from it and the rest corrects it.
    est_cfg = dataclasses.replace(cfg.estimation, stored_soc_sigma=0.11)
    thr = chem.thresholds
    est = Estimator(chem, n, chem.capacity_ah, est_cfg, cfg.rest_current_a, thr.charge_v,
                    thr.undervoltage_v, cfg.balancing.bleed_resistor_ohm, stored_soc=0.4)
    rest_soc = np.array([0.66, 0.68, 0.70, 0.72])  # "70 %"; each cell its own
    t = np.full(n, 25.0)
    v = chem.ocv.voltage_v(rest_soc, np.zeros(n), t)  # relaxed, between the branches
    m = Measurement(v, np.array([25.0]), 0.0, float(v.sum()),
                    Contactors(negative=True, positive=True))
    dt_s = 1.0
    anchored = {}
    first = est.step(m, dt_s, 0.0, None)
    np.testing.assert_array_equal(first.cell_soc, np.full(n, 0.4))
    settle_s = est_cfg.rest_settle_s
    for k in range(1, round((settle_s + 100.0) / dt_s)):
        e = est.step(m, dt_s, k * dt_s, None)
        anchored[k * dt_s] = bool(np.isfinite(est._anchor_soc).all())
    # Within 1 % of the rest voltage's SoC (observed 0.5 %: the filter's hysteresis state,
    # unknown at rest, is worth half the 20 mV gap, 0.45 % SoC on this slope).
    np.testing.assert_allclose(e.cell_soc, rest_soc, atol=0.01)
    # The relaxed-rest anchor (a voltage-only SoC for the capacity estimate and a reset of
    # the filter) comes once the rest has lasted rest_settle_s, not before.
    assert not anchored[settle_s - 2.0]
    assert anchored[settle_s + 5.0]


# --- 3. a flat plateau with a biased OCV ------------------------------------------------


@pytest.fixture(scope="module")
def plateau_run():
    """na-nvpf whose real OCV sits 8 mV above the table, from a correct stored SoC at ~45 %
    down the 3.62-3.70 V plateau at 0.2C to ~25 %, then a 5 min rest."""
    chem = PRESETS["na-nvpf"]
    shifted = dataclasses.replace(chem, ocv=dataclasses.replace(
        chem.ocv, charge_v=chem.ocv.charge_v + 0.008, discharge_v=chem.ocv.discharge_v + 0.008))
    spec = {"initial_soc": 0.45, "seed": 0}
    true_start = SimulatedPack(shifted, PackSpec(n_series=4, **spec), TICK_S).true_soc
    # A stored SoC that is right and trusted to 1 %: with the default 15 % the first minute
    # already goes most of the way to the voltage's answer (1.8 %), a different question.
    rig = Rig("na-nvpf", plant_chem=shifted, stored_soc=true_start,
              estimation={"stored_soc_sigma": 0.01}, **spec)
    max_error = 0.0
    rig.run(60.0)
    max_error = max(max_error, float(np.abs(rig.soc_error()).max()))
    while rig.pack.true_soc.mean() > 0.25:
        rig.tick(-0.2 * rig.one_c_a)
        max_error = max(max_error, float(np.abs(rig.soc_error()).max()))
    rig.run(5 * 60.0)
    max_error = max(max_error, float(np.abs(rig.soc_error()).max()))
    # Voltage alone at the final rest, on the branch the cells are on (discharge): the
    # mid-branch inversion (hysteresis 0) would be flattered here, as the half gap (~9 mV at 25 %)
    # happens to cancel the +8 mV shift.
    v = rig.m.cell_voltage_v
    by_voltage, _ = chem.ocv.soc_on_branch(v, -np.ones(v.size), np.full(v.size, 25.0))
    inversion_error = float(np.abs(by_voltage - rig.pack.true_soc).max())
    return max_error, inversion_error


def test_plateau_with_biased_ocv_estimate_beats_voltage_inversion(plateau_run):
    max_error, inversion_error = plateau_run
    # 8 mV over the plateau's 0.25 V per unit SoC is 3.2 %: inversion gives 3.7 %.
    assert inversion_error > 0.03
    # Observed 0.8 %: the coulomb count carries SoC across the plateau.
    assert max_error < 0.85 * inversion_error


def test_plateau_with_biased_ocv_stays_within_2_pct(plateau_run):
    # The filter trusts the flat plateau's voltage less by the slope's shortfall squared,
    # so the 8 mV bias neither drags SoC nor is read as a current offset (observed 0.8 %).
    max_error, _ = plateau_run
    assert max_error < 0.02


# --- 4. the pack SoC rule -----------------------------------------------------------------


def test_pack_soc_of_equal_cells_is_their_soc():
    for soc in (0.0, 0.3, 0.77, 1.0):
        assert pack_soc(np.full(5, soc), np.ones(5)) == pytest.approx(soc)
        # Whatever their capacities: each side is set by the same (smallest) cell.
        assert pack_soc(np.full(3, soc), np.array([1.0, 0.8, 1.2])) == pytest.approx(soc)


def test_pack_soc_is_full_when_the_highest_cell_is_full_and_empty_when_the_lowest_is():
    cap = np.array([1.0, 1.1, 0.9])
    assert pack_soc(np.array([0.8, 1.0, 0.9]), cap) == 1.0
    assert pack_soc(np.array([0.2, 0.0, 0.4]), cap) == 0.0
    # Beyond the table (the filter allows -3 %..105 %) is the same as at its end.
    assert pack_soc(np.array([0.8, 1.04, 0.9]), cap) == 1.0
    assert pack_soc(np.array([0.2, -0.02, 0.4]), cap) == 0.0


def test_pack_soc_has_no_jump_when_the_limiting_cell_changes():
    # Sweep cell 0 across the others; with these capacities the cell limiting the discharge
    # hands over at 0.6 and the one limiting the charge at 0.8.
    cap = np.array([1.0, 1.2, 0.8])
    others = np.array([0.5, 0.75])
    step = 1e-3
    sweep = np.arange(0.3, 0.95, step)
    values = np.array([pack_soc(np.concatenate(([s], others)), cap) for s in sweep])
    limiting = [int(np.argmin(np.concatenate(([s], others)) * cap)) for s in sweep]
    assert len(set(limiting)) == 2  # the hand-over does happen inside the sweep
    # The slope is at most 1.5 per unit of cell SoC here; a rule that jumped to the new
    # limiting cell's SoC would move by ~0.1 in one step.
    assert np.abs(np.diff(values)).max() < 3 * step
    assert np.all(np.diff(values) >= 0.0)


def test_pack_soc_a_smaller_cell_limits_more():
    soc = np.array([0.2, 0.25, 0.5])
    equal = pack_soc(soc, np.ones(3))
    # Cell 1 holds a higher SoC than cell 0 but with half the capacity less charge (0.125
    # Ah against 0.2 Ah): it now sets what the pack can deliver (and, 0.375 Ah from full,
    # what it can take).
    weak = pack_soc(soc, np.array([1.0, 0.5, 1.0]))
    assert weak < equal
    assert weak == pytest.approx(0.125 / (0.125 + 0.375))


cell_socs = st.lists(st.floats(-0.05, 1.1, allow_nan=False), min_size=1, max_size=8)


@given(cell_socs, st.floats(0.1, 10.0))
def test_pack_soc_lies_between_the_cells_for_equal_capacities(socs, capacity_ah):
    soc = np.array(socs)
    result = pack_soc(soc, np.full(soc.size, capacity_ah))
    clipped = np.clip(soc, 0.0, 1.0)
    assert 0.0 <= result <= 1.0
    assert clipped.min() - 1e-12 <= result <= clipped.max() + 1e-12


@given(st.lists(st.tuples(st.floats(-0.05, 1.1, allow_nan=False), st.floats(0.1, 10.0)),
                min_size=1, max_size=8),
       st.integers(0, 7), st.floats(0.0, 0.2))
def test_pack_soc_is_in_range_and_never_falls_when_a_cell_gains(cells, which, gain):
    soc = np.array([s for s, _ in cells])
    cap = np.array([c for _, c in cells])
    before = pack_soc(soc, cap)
    assert 0.0 <= before <= 1.0
    more = soc.copy()
    more[which % soc.size] += gain
    assert pack_soc(more, cap) >= before - 1e-12


# --- 5 and 6. state of health -------------------------------------------------------------


def test_capacity_of_a_weak_cell_is_learnt_over_full_and_empty():
    # Hours of 0.5C at a 2 s tick: the filter runs every step (its period is 1 s), and a
    # finer tick only adds plant steps (the same estimates within 0.2 %, at 0.4 of the cost).
    rig = Rig(initial_soc=0.9, seed=0, tick_s=2.0)
    cells = rig.pack.cells
    cells.capacity_as[2] *= 0.8
    cells.soc_per_as = cells.dt_s / cells.capacity_as
    nominal_ah = rig.pack.capacity_ah
    half_c = 0.5 * rig.one_c_a
    rig.run(10.0)
    # Full: the charger's current has tapered under 0.04C at the charge voltage (the
    # estimator's own full mark is 0.05C); empty: the firmware's discharge limit has
    # ended the discharge.
    for phase in ("charge", "rest", "discharge", "rest", "charge", "rest", "discharge"):
        if phase == "charge":
            rig.run_until_current_below(half_c, 0.04 * rig.one_c_a, 30.0, 4 * 3600.0)
        elif phase == "discharge":
            rig.run_until_current_below(-half_c, 0.05 * rig.one_c_a, 10.0, 4 * 3600.0)
        else:
            rig.run(rig.fw.cfg.estimation.rest_settle_s + 60.0)
        assert rig.fw.state == "RUN", f"no longer running after a {phase}"
    est = rig.fw.estimate
    true_ah = rig.pack.true_capacity_ah
    # Three full-to-empty samples, each weighted 0.8 x the SoC swing: the estimate is
    # within 1 % of the truth (observed); 5 % leaves room for another seed's spread.
    assert est.cell_capacity_ah[2] / nominal_ah == pytest.approx(0.80, rel=0.05)
    np.testing.assert_allclose(est.cell_capacity_ah, true_ah, rtol=0.05)
    # The weakest cell is the pack's state of health, and the estimate knows which it is.
    assert int(np.argmin(est.cell_capacity_ah)) == 2
    assert est.soh_pct == pytest.approx(100.0 * est.cell_capacity_ah[2] / nominal_ah)
    assert est.soh_pct == pytest.approx(100.0 * true_ah[2] / nominal_ah, abs=4.0)


def test_resistance_of_a_high_resistance_cell_is_learnt_from_load_steps():
    rig = Rig(initial_soc=0.9, seed=0)
    cells = rig.pack.cells
    cells.r_factor[1] *= 1.5
    cells._refresh_ecm(rig.pack.thermal.temperature_c)
    profile = pulses(rig.pack.capacity_ah, seed=0)
    rig.run(10.0)
    start_s = rig.now_s
    for _ in range(round(30 * 60.0 / TICK_S)):
        rig.tick(profile.demand(rig.now_s - start_s))
    est = rig.fw.estimate
    factor = est.cell_resistance_factor
    # Observed 1.57 against the plant's 1.54 (1.5 x its 3 % manufacturing spread); the
    # others within 3 % of theirs (0.98-1.02).
    assert factor[1] > 1.25
    others = np.delete(factor, 1)
    assert np.all((others > 0.9) & (others < 1.1))
    np.testing.assert_allclose(factor, cells.r_factor[:, 0], rtol=0.1)
    assert est.resistance_pct > 105.0  # one cell in four at +50 % is +12.5 %
    assert est.resistance_pct == pytest.approx(100.0 * factor.mean())


@pytest.fixture(scope="module")
def first_step_errors():
    """Relative error of each cell's resistance learnt from the first load step (0.5C)
    after 10 s at rest, and which cells bled in that rest, over four seeds, with voltage
    balancing and with none. A quiet, fine voltage sensor and no temperature spread, so
    that one step measures each cell to about a percent."""
    out = {}
    for mode in ("off", "voltage"):
        errors, bled = [], []
        for seed in range(4):
            rig = Rig(initial_soc=0.9, seed=seed, tick_s=0.1, balancing={"mode": mode},
                      sensors=SensorSpec(cell_noise_v=0.0, cell_lsb_v=1e-4,
                                         current_noise_c=0.0),
                      spread=SpreadSpec(temperature_c=0.0))
            mask = np.zeros(rig.pack.n_series, dtype=bool)
            for _ in range(100):
                mask |= rig.tick().balance_mask
            rig.run(2.0, -0.5 * rig.one_c_a)
            learnt = rig.fw.estimate.cell_resistance_factor
            errors.append(learnt / rig.pack.cells.r_factor[:, 0] - 1.0)
            bled.append(mask)
        out[mode] = (np.array(errors), np.array(bled))
    return out


def test_first_load_step_measures_each_cells_resistance(first_step_errors):
    errors, bled = first_step_errors["off"]
    assert not bled.any()
    # Observed within 1.1 %: one step of ~26 mV read to 0.1 mV, RC timing and SoC error.
    assert np.abs(errors).max() < 0.04
    # With voltage balancing the 1 % SoC spread does bleed some cells, and those that did
    # not bleed are measured as well as without balancing (observed within 1.4 %).
    errors, bled = first_step_errors["voltage"]
    assert bled.any() and not bled.all()
    assert np.abs(errors[~bled]).max() < 0.04


def test_first_load_step_after_bleeding_measures_the_bleeding_cells_too(first_step_errors):
    errors, bled = first_step_errors["voltage"]
    assert np.abs(errors[bled]).max() < 0.04


@pytest.fixture(scope="module")
def load_from_start_errors():
    """Relative error of each cell's resistance after a 0.5C load demanded from power-up
    (the current comes with the contactors and the ramping limit), started from a stored
    SoC that is right or 15 points high, over four seeds. Quiet fine voltage sensor, no
    temperature spread, no balancing: nothing else disturbs the steps."""
    out = {}
    for label, error in (("right", 0.0), ("wrong", 0.15)):
        errors = []
        for seed in range(4):
            spec = {"initial_soc": 0.6, "seed": seed, "tick_s": 0.1,
                    "balancing": {"mode": "off"},
                    "sensors": SensorSpec(cell_noise_v=0.0, cell_lsb_v=1e-4,
                                          current_noise_c=0.0),
                    "spread": SpreadSpec(temperature_c=0.0)}
            true_soc = Rig(**spec).pack.true_soc
            rig = Rig(stored_soc=true_soc + error, **spec)
            rig.run(12.0, -0.5 * rig.one_c_a)
            errors.append(rig.fw.estimate.cell_resistance_factor
                          / rig.pack.cells.r_factor[:, 0] - 1.0)
        out[label] = np.array(errors)
    return out


def test_load_from_power_up_measures_resistance(load_from_start_errors):
    # Observed within 3 %: the ramp's steps are smaller than a full one.
    assert np.abs(load_from_start_errors["right"]).max() < 0.04


def test_load_from_power_up_after_a_wrong_stored_soc_measures_resistance(
        load_from_start_errors):
    assert load_from_start_errors["wrong"].max() < 0.04


def test_resistance_is_not_learnt_from_soc_convergence():
    # 30 points low at start, then load pulses: while SoC converges, the first corrections
    # are hundreds of mV; read as resistance they once drove the factor to 0.14. The
    # state's own doubt now weighs each step, so the factor stays near the truth.
    # At the firmware's own 0.1 s tick, where the fault showed.
    rig = Rig(initial_soc=0.95, seed=1, tick_s=0.1)
    rig.fw = Firmware(rig.chem, 4, rig.pack.capacity_ah,
                      stored_soc=float(rig.pack.true_pack_soc) - 0.3)
    profile = pulses(rig.one_c_a, seed=1)
    for _ in range(round(300.0 / rig.tick_s)):
        rig.tick(profile.demand(rig.now_s).value)
    ratio = rig.fw.estimate.cell_resistance_factor / rig.pack.cells.r_factor[:, 0]
    assert np.abs(ratio - 1.0).max() < 0.15
    assert np.abs(rig.soc_error()).max() < 0.01


# --- 7. remaining energy and runtime ------------------------------------------------------


def test_remaining_energy_and_runtime_at_the_reference_power():
    # 95 % is as full as the 4.0 V charge voltage takes an na-nfm cell (~96 %).
    rig = Rig(initial_soc=0.95, seed=0)
    rig.run(30.0)
    assert rig.fw.state == "RUN"
    start = rig.fw.estimate
    assert start.runtime_s is None  # at rest: no present discharge power
    assert start.remaining_wh == pytest.approx(
        start.runtime_reference_s * rig.fw.cfg.estimation.reference_power_w / 3600.0)
    power_w = rig.fw.cfg.estimation.reference_power_w
    delivered_wh = elapsed_s = 0.0
    runtimes = []
    while True:
        act = rig.tick(Demand(-power_w, "w"))
        delivered_wh -= rig.pack.pack_voltage_v * rig.pack.current_a * TICK_S / 3600.0
        elapsed_s += TICK_S
        if elapsed_s > 10.0 and round(elapsed_s / TICK_S) % round(300.0 / TICK_S) == 0:
            runtimes.append(act.estimate.runtime_s)
        if elapsed_s > 60.0 and act.discharge_limit_a <= 0.0:
            break
        assert elapsed_s < 4 * 3600.0, "the discharge limit never reached zero"
    # Observed within 0.5 % and 0.2 %; 10 %: the energy table integrates the model's OCV
    # and a resistance loss at the start's resistance, not the rising one near empty.
    assert delivered_wh == pytest.approx(start.remaining_wh, rel=0.10)
    assert elapsed_s == pytest.approx(start.runtime_reference_s, rel=0.10)
    assert len(runtimes) > 10
    assert all(r is not None for r in runtimes)
    assert np.all(np.diff(runtimes) < 0.0)
    # Each 5 min sample is about 5 min shorter (observed 286-306 s).
    assert np.median(-np.diff(runtimes)) == pytest.approx(300.0, rel=0.1)


def test_the_runtime_ends_with_the_discharge_not_at_the_next_filter_run():
    """No runtime when not discharging (the protocol's NaN), from the first step at rest:
    the filter runs once a second (up to 30 s apart while cells bleed), its runtime was of
    a discharge that has ended."""
    rig = Rig(initial_soc=0.8, seed=0, tick_s=0.1)
    power_w = rig.fw.cfg.estimation.reference_power_w
    for _ in range(300):
        act = rig.tick(Demand(-power_w, "w"))
    rig.tick(Demand(0.0, "a"))  # measured before the load stopped
    assert act.estimate.runtime_s is not None
    stops = 0
    for _ in range(30):
        act = rig.tick(Demand(0.0, "a"))
        if rig.fw.estimator._elapsed_s > 0.0:  # a step between filter runs
            stops += 1
        est = act.estimate
        assert est.runtime_s is None
        assert est.remaining_wh == pytest.approx(est.runtime_reference_s * power_w / 3600.0)
    assert stops > 0


# --- 8. the start -------------------------------------------------------------------------


def test_first_estimate_is_the_stored_soc():
    rig = Rig(initial_soc=0.6, stored_soc=0.4, tick_s=0.1)
    act = rig.tick()
    np.testing.assert_array_equal(act.estimate.cell_soc, np.full(4, 0.4))
    assert act.soc == pytest.approx(0.4)
    per_cell = np.array([0.4, 0.45, 0.5, 0.55])
    rig = Rig(initial_soc=0.6, stored_soc=per_cell, tick_s=0.1)
    act = rig.tick()
    np.testing.assert_array_equal(act.estimate.cell_soc, per_cell)
    assert act.soc == pytest.approx(pack_soc(per_cell, np.full(4, rig.pack.capacity_ah)))


@pytest.mark.parametrize(("chem", "soc", "tolerance"), [
    # 1 mV noise + quantisation (at most ~3 mV) over the local OCV slope, with margin:
    ("na-nfm", 0.6, 0.01),  # 1.7 V per unit SoC: 0.2 %
    ("na-nvpf", 0.35, 0.02),  # plateau, 0.25 V per unit SoC: 1.2 %
    ("na-nvpf", 0.75, 0.02),  # plateau, 0.2 V per unit SoC: 1.5 %
])
def test_first_estimate_without_a_stored_soc_is_the_rest_voltage(chem, soc, tolerance):
    for seed in range(3):
        rig = Rig(chem, initial_soc=soc, seed=seed, tick_s=0.1)
        act = rig.tick()
        assert np.abs(act.estimate.cell_soc - rig.pack.true_soc).max() < tolerance
        # It says how far it trusts that: 2 % on the steep curve, more on a plateau.
        expected_sigma = 0.02 if chem == "na-nfm" else 0.04
        assert np.all(act.estimate.cell_soc_sigma >= expected_sigma - 1e-9)


# --- edge cases found in review -------------------------------------------------------------


def _estimator(n: int = 4, stored_soc=None) -> Estimator:
    chem = PRESETS["na-nfm"]
    cfg = default_config(chem, n, chem.capacity_ah)
    thr = chem.thresholds
    return Estimator(chem, n, chem.capacity_ah, cfg.estimation, cfg.rest_current_a,
                     thr.charge_v, thr.undervoltage_v, cfg.balancing.bleed_resistor_ohm,
                     stored_soc=stored_soc)


def _rest_measurement(v: np.ndarray, temperature_c: float = 25.0) -> Measurement:
    return Measurement(v, np.array([temperature_c]), 0.0, float(np.nansum(v)),
                       Contactors(negative=True, positive=True))


def test_a_rest_reset_of_only_the_steep_cells():
    # Cell 0 rests at 35 %, where na-nfm is flatter (0.85 V per unit SoC) than the trusted
    # slope; the others are steep. The relaxed-rest reset takes only the steep ones (it once
    # raised here, assigning every cell's sigma to the trusted few).
    chem = PRESETS["na-nfm"]
    est = _estimator()
    soc = np.array([0.35, 0.5, 0.52, 0.5])
    v = chem.ocv.voltage_v(soc, np.zeros(4), np.full(4, 25.0))
    for k in range(700):
        est.step(_rest_measurement(v), 1.0, float(k), None)
    anchored = np.isfinite(est._anchor_soc)
    assert list(anchored) == [False, True, True, True]
    assert est.reset_epoch == 1


def test_no_self_discharge_alarm_after_a_long_discharge_with_capacity_spread():
    # A 10 % capacity spread leaves each cell's coulomb count off by a few % after a long
    # discharge; the first relaxed-rest reset corrects that, which is no internal short.
    rig = Rig(n_series=8, initial_soc=0.95, seed=3,
              spread=SpreadSpec(capacity_rel=0.1, initial_soc=0.0))
    rig.run(10.0)
    rig.run(5000.0, -0.5 * rig.one_c_a)
    rig.run(1500.0)
    assert "CELL_SELF_DISCHARGE" not in [e.name for e in rig.events]


def test_charge_is_counted_across_steps_without_a_measurement():
    # Two firmwares on one pack: one reads every tick, the other every other tick and steps
    # with None in between (a rig that sends at half the rate). Both count the same charge.
    rig = Rig(initial_soc=0.8, seed=0, tick_s=0.1)
    every = rig.fw
    half = Firmware(rig.chem, 4, rig.pack.capacity_ah)
    for k in range(round(600.0 / 0.1)):
        m = rig.pack.measure()
        act = every.step(m, rig.now_s)
        half.step(m if k % 2 == 0 else None, rig.now_s)
        rig.pack.actuate(act)
        rig.pack.advance(Demand(-0.5 * rig.one_c_a, "a"))
        rig.k += 1
    assert every.state == half.state == "RUN"
    # Every other current sample is 0.1 s apart from the one it stands for: the counts
    # differ by the sensor noise only (a lost half would be 4 % of SoC).
    assert np.abs(every.estimate.cell_soc - half.estimate.cell_soc).max() < 0.002


def test_unreadable_cells_at_start_do_not_poison_the_estimate():
    chem = PRESETS["na-nfm"]
    v = chem.ocv.voltage_v(np.full(4, 0.6), np.zeros(4), np.full(4, 25.0))
    est = _estimator()
    first = est.step(_rest_measurement(np.full(4, np.nan)), 0.0, 0.0, None)
    assert np.isfinite(first.cell_soc).all() and np.isfinite(first.soc)
    est = _estimator()
    with_inf = v.copy()
    with_inf[1] = np.inf
    first = est.step(_rest_measurement(with_inf), 0.0, 0.0, None)
    # The unreadable cell starts like the others, not full.
    assert first.cell_soc[1] == pytest.approx(float(first.cell_soc[0]), abs=0.01)
    for k in range(1, 30):
        e = est.step(_rest_measurement(with_inf), 1.0, float(k), None)
    assert np.isfinite(e.cell_soc).all() and np.abs(e.cell_soc - 0.6).max() < 0.02


def test_an_implausible_temperature_is_left_out():
    # A shorted NTC reading 150 °C is no temperature: the estimate is what 25 °C gives.
    chem = PRESETS["na-nfm"]
    v = chem.ocv.voltage_v(np.full(4, 0.6), np.zeros(4), np.full(4, 25.0))
    normal, shorted = _estimator(), _estimator()
    for k in range(300):
        a = normal.step(_rest_measurement(v, 25.0), 1.0, float(k), None)
        b = shorted.step(_rest_measurement(v, 150.0), 1.0, float(k), None)
    np.testing.assert_allclose(a.cell_soc, b.cell_soc, atol=1e-12)


def test_a_reading_in_doubt_corrects_nothing():
    """An open sense wire pulls one reading far above the charge voltage: once protection
    has flagged it, the estimator must not take it for a full cell (the pack SoC stays
    where counting puts it instead of jumping to 100 %)."""
    rig = Rig(n_series=4, initial_soc=0.6)
    rig.run(30.0)
    before_pct = rig.fw.soc * 100.0
    apply_injection(rig.pack, parse_injection("0:sense-open:cell=2,bias_v=0.6", 4, 1))
    rig.run(60.0)
    assert any(e.name in ("OPEN_WIRE", "VOLTAGE_SENSOR_FAULT") and e.action == "raised"
               for e in rig.events)
    assert abs(rig.fw.soc * 100.0 - before_pct) < 2.0


@pytest.mark.parametrize("reading_v", [-0.2, 9.0])
def test_an_implausible_reading_moves_no_soc_before_its_sensor_fault_trips(reading_v):
    """A reading no working sensor gives says nothing of the cell: from the very first one
    (the sensor fault trips only after its debounce) the estimate ignores it."""
    rig = Rig(tick_s=0.1)
    rig.run(20.0, -rig.one_c_a)
    before = rig.fw.soc
    for _ in range(3):  # 0.3 s of a broken reading on cell 1, under the 0.5 s debounce
        m = rig.pack.measure()
        v = m.cell_voltage_v.copy()
        v[0] = reading_v
        rig.fw.step(Measurement(v, m.temperature_c, m.current_a, m.bus_voltage_v,
                                m.contactors, m.balancing), rig.now_s)
        rig.pack.advance(Demand(-rig.one_c_a, "a"))
        rig.k += 1
    rig.run(2.0, -rig.one_c_a)
    assert rig.fw.soc == pytest.approx(before, abs=0.01)
