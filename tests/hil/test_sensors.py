"""What the BMS's sensors report (hil.sensors): noise, quantisation, bias, wiring effects."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bms.core.signals import Actuation, Contactors
from bms.data.presets import PRESETS
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack
from hil.sensors import NOISE_BLOCK_VALUES, NoiseStream, OpenWire, Sensors, SensorSpec

# Noise-free, finely quantised sensors, for tests about one effect at a time.
IDEAL = SensorSpec(cell_noise_v=0.0, cell_lsb_v=1e-9, current_noise_c=0.0,
                   temp_noise_c=0.0, temp_lsb_c=1e-9)
DT_S = 0.1


def make_sensors(spec: SensorSpec = IDEAL, n_series: int = 8, one_c_a: float = 1.5,
                 seed: int = 0) -> Sensors:
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    return Sensors(spec, n_series, one_c_a, rngs)


TRUE_V = np.array([3.30, 3.31, 3.32, 3.33, 3.34, 3.35, 3.36, 3.37])


# --- cell voltages -----------------------------------------------------------------


def test_cell_voltage_noise_has_the_specified_rms():
    """Readings scatter around the truth with the spec's rms (2 mV here) and no bias."""
    spec = dataclasses.replace(IDEAL, cell_noise_v=2e-3)
    s = make_sensors(spec)
    readings = np.array([s.read_voltages(TRUE_V, None, DT_S) for _ in range(4000)])
    err = readings - TRUE_V
    # 32 000 samples: the std estimate's relative error is 1/sqrt(2N) = 0.4 %; allow 3 %.
    assert err.std() == pytest.approx(2e-3, rel=0.03)
    # Mean error's standard error: 2 mV / sqrt(32 000) = 11 uV; allow 5 of them.
    assert abs(err.mean()) < 5 * 2e-3 / math.sqrt(err.size)


@pytest.mark.parametrize("width", [1, 7, 416])
def test_a_noise_stream_gives_the_same_rows_whatever_its_block_size(width):
    """Row k is the stream's uniforms 2kw..2kw+2w-1 however the draws are cut into blocks,
    so a block size chosen for speed or memory never moves a seeded run's readings."""
    rows = 700
    default = NoiseStream(np.random.default_rng(11), width, 1e-3)
    got = {}
    for block_rows in (default.block_rows, 1, 3, 64, rows):
        stream = NoiseStream(np.random.default_rng(11), width, 1e-3)
        stream.block_rows = block_rows
        got[block_rows] = np.array([stream.next().copy() for _ in range(rows)])
    first = got[default.block_rows]
    assert all(np.array_equal(first, g) for g in got.values())
    uniforms = np.random.default_rng(11).random(2 * width * rows).reshape(rows, 2, width)
    np.testing.assert_array_equal(
        first, (uniforms[:, 0] + uniforms[:, 1] - 1.0) * (1e-3 * np.sqrt(6.0)))


def test_a_wide_noise_stream_draws_and_holds_a_small_block():
    """416 cells: a block of at most NOISE_BLOCK_VALUES values and nothing else held (a
    fleet holds hundreds of packs, and their first ticks and redraws fall in the same
    second: a 512-tick block was 3.4 MB and 2 ms a pack)."""
    stream = NoiseStream(np.random.default_rng(0), 416, 1e-3)
    stream.next()
    assert stream.block.shape == (NOISE_BLOCK_VALUES // 416, 416)
    assert stream.block.base is None  # not a view keeping the uniforms alive
    one_wide = NoiseStream(np.random.default_rng(0), 1, 1e-3)
    assert one_wide.next_value() == one_wide.block[0, 0]
    assert one_wide.block.shape == (512, 1)


def test_default_noise_plus_quantisation_adds_in_quadrature():
    """1 mV rms noise read by a 1 mV-LSB ADC: error rms = sqrt(sigma^2 + LSB^2 / 12)."""
    s = make_sensors(SensorSpec())
    true_v = TRUE_V + 0.000437  # off the LSB grid
    err = np.array([s.read_voltages(true_v, None, DT_S) for _ in range(4000)]) - true_v
    assert err.std() == pytest.approx(math.sqrt(1e-6 + 1e-6 / 12), rel=0.03)  # as above


@pytest.mark.parametrize("lsb_v", [1e-3, 2.5e-3])
def test_cell_voltage_is_quantised_to_the_lsb(lsb_v):
    """Without noise every reading is a whole number of LSBs, the nearest one to the truth."""
    spec = dataclasses.replace(IDEAL, cell_lsb_v=lsb_v)
    s = make_sensors(spec, n_series=500)
    true_v = np.random.default_rng(7).uniform(1.5, 4.2, 500)
    v = s.read_voltages(true_v, None, DT_S)
    counts = v / lsb_v
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)
    assert np.all(np.abs(v - true_v) <= lsb_v / 2 + 1e-12)


def test_bleeding_a_cell_shifts_its_own_and_its_neighbours_readings():
    """Bleed current I through the sense wires (R each): the bled cell reads 2 I R low and
    each neighbour I R high; an interior cell leaves the sum of readings unchanged."""
    s = make_sensors()
    r_wire = IDEAL.sense_wire_ohm
    bleed = np.zeros(8)
    bleed[3] = 0.1
    v = s.read_voltages(TRUE_V, bleed, DT_S)
    expected = TRUE_V.copy()
    expected[3] -= 2 * 0.1 * r_wire
    expected[2] += 0.1 * r_wire
    expected[4] += 0.1 * r_wire
    np.testing.assert_allclose(v, expected, atol=1e-8)  # only the 1e-9 V LSB rounds
    assert v.sum() == pytest.approx(TRUE_V.sum(), abs=1e-8)


def test_bleeding_adjacent_and_end_cells_superposes():
    """Two adjacent bled cells each lift the other; an end cell has only one neighbour,
    and the end wire's drop takes I R from the sum of readings."""
    s = make_sensors()
    r = IDEAL.sense_wire_ohm
    bleed = np.zeros(8)
    bleed[[0, 4, 5]] = [0.08, 0.1, 0.12]
    v = s.read_voltages(TRUE_V, bleed, DT_S)
    expected = TRUE_V + r * np.array(
        [-2 * 0.08, 0.08, 0.0, 0.1, -2 * 0.1 + 0.12, -2 * 0.12 + 0.1, 0.12, 0.0])
    np.testing.assert_allclose(v, expected, atol=1e-8)
    assert v.sum() == pytest.approx(TRUE_V.sum() - 0.08 * r, abs=1e-8)


def test_pack_balancing_shows_in_the_measured_voltages():
    """In a pack, switching on cell 3's bleed resistor (33 ohm) makes its reading fall by
    2 I R_wire below its true voltage and its neighbours' rise by I R_wire."""
    assert PackSpec().sensors.sense_wire_ohm >= 0.05  # else the shift drowns in the noise
    pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=8), DT_S)
    mask = np.zeros(8, bool)
    mask[2] = True
    pack.actuate(Actuation("STANDBY", Contactors(), mask, 0.0, 0.0, 0, 0.9))
    for _ in range(5):
        pack.advance(Demand(0.0, "a"))
    m = pack.measure()
    bleed_a = pack.group_v[2] / 33.0
    assert bleed_a == pytest.approx(0.117, abs=0.003)  # ~3.86 V over 33 ohm
    err = m.cell_voltage_v - pack.group_v
    r_wire = pack.spec.sensors.sense_wire_ohm
    # 1 mV rms noise and a 1 mV LSB on a single reading: 5 mV is 5 sigma.
    assert err[2] == pytest.approx(-2 * bleed_a * r_wire, abs=5e-3)
    assert err[[1, 3]] == pytest.approx([bleed_a * r_wire] * 2, abs=5e-3)
    assert np.abs(err[[0, 4, 5, 6, 7]]).max() < 5e-3


def test_open_wire_reading_drifts_with_its_time_constant():
    """The floating tap drifts toward (sum / 2 + bias) as 1 - exp(-t / tau) and the pair
    reading takes the rest of the sum."""
    s = make_sensors()
    wire = OpenWire(cell=2, pair=3, bias_v=0.4, tau_s=2.0)
    s.open_wires.append(wire)
    s.voltage_faults = True
    target = 0.5 * (TRUE_V[2] + TRUE_V[3]) + 0.4
    for _ in range(20):  # 2 s = one tau
        v = s.read_voltages(TRUE_V, None, DT_S)
    expected = TRUE_V[2] + (target - TRUE_V[2]) * (1 - math.exp(-1.0))
    assert v[2] == pytest.approx(expected, abs=1e-8)  # exact first-order lag, LSB 1e-9 V
    assert v[2] + v[3] == pytest.approx(TRUE_V[2] + TRUE_V[3], abs=1e-8)
    np.testing.assert_allclose(np.delete(v, [2, 3]), np.delete(TRUE_V, [2, 3]), atol=1e-8)


def test_the_open_wire_test_pulls_an_open_tap_down_and_leaves_intact_ones():
    """Intact channels read under the test as they do otherwise; an open tap falls to the
    tap below: the cell below reads 0 V and the cell above both cells. An offset or a stuck
    channel reads the same way in both, so only an open wire makes the two differ."""
    s = make_sensors()
    np.testing.assert_allclose(s.read_wire_test(TRUE_V, None), TRUE_V, atol=1e-8)
    s.open_wires.append(OpenWire(cell=3, pair=2, bias_v=0.4, tau_s=2.0))  # the tap 3 | 4
    s.voltage_offset_v[6] = 0.2
    s.voltage_stuck[7], s.voltage_stuck_v[7] = True, 3.0
    s.voltage_faults = True
    ordinary = s.read_voltages(TRUE_V, None, DT_S)
    tested = s.read_wire_test(TRUE_V, None)
    assert tested[2] == pytest.approx(0.0, abs=1e-8)
    assert tested[3] == pytest.approx(TRUE_V[2] + TRUE_V[3], abs=1e-8)
    np.testing.assert_allclose(np.delete(tested, [2, 3]), np.delete(ordinary, [2, 3]),
                               atol=1e-8)
    # The floating tap's drift in the ordinary readings is not disturbed by the test.
    assert s.open_wires[0].reading_v == pytest.approx(ordinary[3], abs=1e-8)


def test_the_pack_runs_the_test_once_when_asked_with_noise_of_its_own():
    pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=8), DT_S)
    twin = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=8), DT_S)
    assert pack.measure().open_wire_test_v is None
    twin.measure()
    ask = Actuation("RUN", Contactors(), np.zeros(8, bool), 0.0, 0.0, 0, 0.5,
                    open_wire_test=True)
    pack.actuate(ask)
    pack.advance(Demand(0.0, "a"))
    twin.advance(Demand(0.0, "a"))
    m = pack.measure()
    assert m.open_wire_test_v is not None
    assert np.abs(m.open_wire_test_v - pack.group_v).max() < 5e-3  # noise and LSB only
    assert pack.measure().open_wire_test_v is None  # once: the next asks anew
    # The ordinary readings of a seeded pack are the same with or without tests.
    np.testing.assert_array_equal(m.cell_voltage_v, twin.measure().cell_voltage_v)


# --- current -----------------------------------------------------------------------


def test_current_reading_is_gain_times_truth_plus_offset():
    """Without noise: reading = gain * I + offset, |offset| = 1e-3 C (0.1 A at 100 A 1C)."""
    s = make_sensors(one_c_a=100.0)
    offset_a = s.read_current(0.0)
    assert abs(offset_a) == pytest.approx(SensorSpec().current_offset_c * 100.0, rel=1e-12)
    assert s.read_current(50.0) - offset_a == pytest.approx(50.0 * s.current_gain, rel=1e-12)
    assert s.current_gain != 1.0


def test_current_noise_has_the_specified_rms():
    """Current noise rms = current_noise_c x 1C (5e-4 x 100 A = 50 mA)."""
    spec = dataclasses.replace(IDEAL, current_noise_c=5e-4)
    s = make_sensors(spec, one_c_a=100.0)
    readings = np.array([s.read_current(-30.0) for _ in range(20000)])
    assert readings.std() == pytest.approx(0.05, rel=0.03)  # 20 000 samples: SE 0.5 %


def test_current_bias_is_deterministic_for_a_seed():
    """The same seed gives the same offset, gain and noise sequence; another seed does not."""
    spec = SensorSpec()
    a, b, c = (make_sensors(spec, one_c_a=10.0, seed=s) for s in (11, 11, 12))
    assert (a.current_offset_a, a.current_gain) == (b.current_offset_a, b.current_gain)
    assert [a.read_current(1.0) for _ in range(600)] == [b.read_current(1.0) for _ in range(600)]
    assert c.current_gain != a.current_gain


def test_pack_seed_fixes_the_sensor_bias():
    """Two packs with the same seed measure bit-identically; another seed differs."""
    def readings(seed):
        pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=4, seed=seed), DT_S)
        out = []
        for _ in range(30):
            m = pack.measure()
            out.append((m.current_a, *m.cell_voltage_v, *m.temperature_c))
            pack.advance(Demand(0.0, "a"))
        return np.array(out), pack.sensors.current_gain
    r1, g1 = readings(3)
    r2, g2 = readings(3)
    r3, g3 = readings(4)
    np.testing.assert_array_equal(r1, r2)
    assert g1 == g2 and g1 != g3
    assert not np.array_equal(r1, r3)


def test_current_bias_spread_over_seeds_matches_the_spec():
    """Over many seeds the gain error has the spec's standard deviation (0.2 %) and the
    offset's sign is positive about half the time."""
    sensors = [make_sensors(SensorSpec(), one_c_a=1.0, seed=s) for s in range(2000)]
    gains = np.array([s.current_gain for s in sensors])
    offsets = np.array([s.current_offset_a for s in sensors])
    assert (gains - 1.0).std() == pytest.approx(2e-3, rel=0.1)  # SE 1.6 % with 2000 seeds
    assert abs((gains - 1.0).mean()) < 5 * 2e-3 / math.sqrt(2000)
    assert 0.4 < (offsets > 0).mean() < 0.6  # binomial SE 1.1 %
    np.testing.assert_allclose(np.abs(offsets), 1e-3)


# --- temperatures ------------------------------------------------------------------


def test_temperature_sensor_reads_its_groups_mean():
    """One sensor per 4 cells reads the mean of its group; a short last group reads its own
    (here 10 cells: groups of 4, 4 and 2)."""
    s = make_sensors(n_series=10)
    cell_c = np.array([20.0, 22.0, 24.0, 26.0, 30.0, 30.0, 30.0, 34.0, 40.0, 41.0])
    assert s.read_temperatures(cell_c) == pytest.approx([23.0, 31.0, 40.5], abs=1e-8)


def test_temperature_noise_and_quantisation():
    """Default temperature sensors: 0.1 °C rms noise and 0.1 °C steps."""
    s = make_sensors(SensorSpec(), n_series=8)
    cell_c = np.full(8, 25.03)
    t = np.array([s.read_temperatures(cell_c) for _ in range(5000)])
    np.testing.assert_allclose(t / 0.1, np.round(t / 0.1), atol=1e-6)
    # sqrt(0.1^2 + 0.1^2 / 12) = 0.104 °C; 10 000 samples, 3 % tolerance is > 4 SE.
    assert (t - 25.03).std() == pytest.approx(math.sqrt(0.01 + 0.01 / 12), rel=0.03)
