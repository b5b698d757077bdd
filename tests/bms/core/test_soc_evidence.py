"""The SoC filter weighs the voltage by the evidence on its model (bms/core/soc_filter.py):
per OCV region and current level, a mean innovation that other levels do not share is the
model's error there and counts against the voltage; one that every level shares is the
state's error and raises the state's doubt. So a model that is wrong under load does not
pull a right SoC away from the coulomb count, and a wrong SoC is still pulled back.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bms.core.firmware import Firmware
from bms.core.soc_filter import FilterNoise, SocFilter
from bms.data.chemistry import Chemistry, parse_profile
from bms.data.presets import PRESETS
from hil.loads import pulses
from hil.pack import PackSpec, SimulatedPack
from hil.sensors import SensorSpec

NOISE = FilterNoise(voltage_v=1.5e-3, current_a=0.01, model_v=5e-3, model_dynamic=0.1,
                    correlation_s=300.0, capacity_rel=0.02, leak_per_sqrt_s=0.005 / 60.0,
                    offset_a=0.0, offset_walk_a_per_sqrt_s=0.0, flat_slope_v=1.0, one_c_a=1.5)
R0_OHM = np.full(2, 0.03)
DISCHARGE_A = -0.75  # 0.5 C


def _reading_v(f: SocFilter, soc: float, current_a: float, error_v: float) -> np.ndarray:
    """What the cells read at `soc` (no polarisation), the model's resistive drop included,
    off by `error_v`."""
    n = f.x.shape[0]
    ocv = f.chem.ocv.with_slope(np.full(n, soc), f.x[:, 3], np.full(n, 25.0))[0]
    return ocv + R0_OHM * current_a + error_v


def _feed(f: SocFilter, soc: float, current_a: float, error_v: float, seconds: int) -> None:
    """Once a second: a prediction that moves no charge (the cells stay at `soc`), whose RC
    voltages relax, and a reading."""
    for _ in range(seconds):
        f.predict(np.zeros(2), 1.0, np.full(2, 1.5 * 3600.0), np.full((2, 2), 0.01),
                  np.array([[4.0, 4.0], [120.0, 120.0]]), 10, current_a == 0.0)
        f.update(_reading_v(f, soc, current_a, error_v), current_a, np.full(2, 25.0), R0_OHM,
                 1.0, np.ones(2, dtype=bool))


def _soc_moved_by_biased_loads(rest_error_v: float) -> float:
    """A filter at the right SoC, 2 % doubt, sees rests (read `rest_error_v` off) and loads
    at 0.5 C (read 40 mV low); how far its SoC moves."""
    f = SocFilter(PRESETS["na-nfm"], np.full(2, 0.6), 0.02, NOISE)
    for _ in range(5):
        _feed(f, 0.6, 0.0, rest_error_v, 120)
        _feed(f, 0.6, DISCHARGE_A, -0.04, 300)
    return float(np.abs(f.soc - 0.6).max())


def test_load_readings_move_soc_only_when_the_rests_read_the_same():
    # Rests that read right: the model is wrong under load, and SoC stays (40 mV over the
    # ~1.5 V per unit slope here would be 2.7 points if believed). Rests that read low too:
    # the state is what is wrong, and SoC follows the voltage.
    model_wrong = _soc_moved_by_biased_loads(rest_error_v=0.0)
    state_wrong = _soc_moved_by_biased_loads(rest_error_v=-0.04)
    assert model_wrong < 0.01  # observed 0.7 points, nearly all while the load is new
    assert state_wrong > 3.0 * model_wrong  # observed 2.4 points


def test_a_confident_wrong_soc_is_pulled_back_by_readings_every_level_agrees_on():
    # Started 40 points low with 2 % doubt: rests and loads alike read the cell at 90 %.
    f = SocFilter(PRESETS["na-nfm"], np.full(2, 0.5), 0.02, NOISE)
    _feed(f, 0.9, 0.0, 0.0, 300)
    _feed(f, 0.9, DISCHARGE_A, 0.0, 300)
    assert np.abs(f.soc - 0.9).max() < 0.02


# --- against the simulated pack, with a chemistry the cells do not have --------------------


def _user_profile(chem: Chemistry) -> Chemistry:
    """What a user brings from a slow discharge: one OCV curve (the discharge branch less
    the C/20 drop, so no hysteresis), the capacity and the limits; no ECM values."""
    r = chem.ecm.lookup(chem.ocv.soc, np.full(chem.ocv.soc.size, 25.0))
    v = chem.ocv.discharge_v - 0.05 * chem.capacity_ah * (r[0] + r[1] + r[3])
    v[-1] = chem.thresholds.charge_v  # the table's end at the charge voltage
    return parse_profile({
        "name": "user", "capacity_ah": chem.capacity_ah,
        "limits": {"v_min": chem.limits.v_min, "v_max": chem.limits.v_max},
        "thresholds": dataclasses.asdict(chem.thresholds),
        "ocv": {"soc_pct": (chem.ocv.soc * 100.0).tolist(),
                "voltage_v": np.maximum(v, chem.limits.v_min).tolist()}}, "test")


def _errors_pct(stored_offset: float, hours: float) -> tuple[np.ndarray, np.ndarray]:
    """The pack SoC error of the estimator and of coulomb counting (from the true start)
    on na-nvpf cells (plateaus and a step) pulsed at -2C..+0.5C, once a second, percent."""
    tick_s = 1.0
    plant = PRESETS["na-nvpf"]
    pack = SimulatedPack(plant, PackSpec(n_series=4, initial_soc=0.95,
                                         sensors=SensorSpec(current_offset_c=0.005)), tick_s)
    duty = pulses(pack.capacity_ah, seed=1)
    true0 = pack.true_pack_soc
    fw = Firmware(_user_profile(plant), 4, pack.capacity_ah, stored_soc=true0 + stored_offset)
    counted = true0
    est, cc = [], []
    for k in range(round(hours * 3600.0 / tick_s)):
        m = pack.measure()
        act = fw.step(m, k * tick_s)
        pack.actuate(act)
        counted += m.current_a * tick_s / (pack.capacity_ah * 3600.0)
        est.append(act.soc - pack.true_pack_soc)
        cc.append(counted - pack.true_pack_soc)
        pack.advance(duty.demand(k * tick_s))
    return np.abs(est) * 100.0, np.abs(cc) * 100.0


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def test_a_right_stored_soc_stays_within_half_a_point_of_coulomb_counting():
    est, cc = _errors_pct(0.0, 1.5)
    assert rms(est) <= rms(cc) + 0.5


def test_a_stored_soc_40_points_low_converges_on_the_same_cells():
    est, _ = _errors_pct(-0.4, 1.5)
    after = est[1800:]  # after 30 minutes
    assert rms(after) <= 3.0 and after.max() <= 6.0
