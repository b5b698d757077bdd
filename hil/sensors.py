"""Sensors as a real BMS sees them, and the faults that can be injected into them.

Why and how: docs/internals.md, hil/sensors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bms.core.balancing import sense_wire_shift_v

# Noise is drawn in blocks of about this many values (at most 512 rows): one RNG call per
# 19 ticks for 416 cells, per 512 for a one-wide reading. A small block keeps a pack's first
# tick and each redraw cheap (a fleet steps hundreds of packs whose blocks run out in the
# same second) and its memory small; the values do not depend on it (see NoiseStream).
NOISE_BLOCK_VALUES = 8192
NOISE_BLOCK_MAX_ROWS = 512


@dataclass(frozen=True)
class SensorSpec:
    cell_noise_v: float = 1e-3  # rms
    cell_lsb_v: float = 1e-3  # quantisation step
    sense_wire_ohm: float = 0.1  # per wire; bleed current through it shifts readings
    current_offset_c: float = 1e-3  # |offset| as a fraction of the 1C current; sign from seed
    current_gain_error: float = 2e-3  # standard deviation of the relative gain error
    current_noise_c: float = 5e-4  # rms, as a fraction of the 1C current
    temp_noise_c: float = 0.1  # rms
    temp_lsb_c: float = 0.1
    cells_per_temp_sensor: int = 4
    # The pack's own voltage sensor (a divider inside the contactors, beside the AFE's cell
    # channels): what the firmware checks the sum of the cells against.
    pack_v_gain_error: float = 1e-3  # standard deviation of the relative gain error
    pack_v_noise_v: float = 0.01  # rms
    pack_v_lsb_v: float = 0.01


class NoiseStream:
    """Noise rows of a fixed width and standard deviation, drawn a block at a time.

    The distribution is triangular (the sum of two uniforms), which has the given rms, is
    bounded at 2.45 sigma like a real converter's noise, and costs a third of a Gaussian
    draw: with hundreds of cells per tick the draw is a visible share of the run time.
    Row k is made of the stream's uniforms 2kw to 2kw + 2w - 1 (w the width), whatever the
    block size: the generator gives the same values drawn in one call or in several.
    """

    def __init__(self, rng: np.random.Generator, width: int, sigma: float):
        self.rng = rng
        self.width = width
        self.sigma = sigma
        self.block_rows = min(NOISE_BLOCK_MAX_ROWS, max(1, NOISE_BLOCK_VALUES // width))
        self.block = np.empty((0, width))
        self.values: list[float] = []  # a one-wide block's column, as Python floats
        self.row = 0

    def next(self) -> np.ndarray:
        if self.row == self.block.shape[0]:
            uniform = self.rng.random((self.block_rows, 2, self.width))
            # (u0 + u1 - 1) * scale, worked in place in the sum: one block-sized array kept.
            block = np.add(uniform[:, 0], uniform[:, 1])
            block -= 1.0
            block *= self.sigma * np.sqrt(6.0)
            self.block = block
            self.values = block[:, 0].tolist() if self.width == 1 else []
            self.row = 0
        self.row += 1
        return self.block[self.row - 1]

    def next_value(self) -> float:
        """The next row of a one-wide stream, as a Python float (the same value `next()[0]`
        gives): a pack-level reading takes one a tick, and indexing a list is cheaper than
        converting a numpy scalar."""
        if self.row == self.block.shape[0]:
            self.next()
            return self.values[0]
        self.row += 1
        return self.values[self.row - 1]


class Sensors:
    def __init__(self, spec: SensorSpec, n_series: int, one_c_a: float,
                 rngs: list[np.random.Generator]):
        self.spec = spec
        self.n_series = n_series
        self.group_starts = np.arange(0, n_series, spec.cells_per_temp_sensor)
        self.group_sizes = np.diff(np.append(self.group_starts, n_series))
        self.n_temp = self.group_starts.size
        voltage_rng, current_rng, temp_rng, bias_rng, pack_v_rng, wire_test_rng = rngs
        self.voltage_noise = NoiseStream(voltage_rng, n_series, spec.cell_noise_v)
        # The open-wire test's conversion has its own noise (and stream: the ordinary
        # readings of a seeded run are the same whether or not tests are asked for).
        self.wire_test_noise = NoiseStream(wire_test_rng, n_series, spec.cell_noise_v)
        self.current_noise = NoiseStream(current_rng, 1, spec.current_noise_c * one_c_a)
        self.temp_noise = NoiseStream(temp_rng, self.n_temp, spec.temp_noise_c)
        sign = 1.0 if bias_rng.random() < 0.5 else -1.0
        self.current_offset_a = sign * spec.current_offset_c * one_c_a
        self.current_gain = 1.0 + spec.current_gain_error * float(bias_rng.standard_normal())
        self.pack_v_noise = NoiseStream(pack_v_rng, 1, spec.pack_v_noise_v)
        self.pack_v_gain = 1.0 + spec.pack_v_gain_error * float(pack_v_rng.standard_normal())
        self.pack_v_offset_v = 0.0  # injected
        # Injected faults (see hil.injections); all inactive by default.
        self.voltage_offset_v = np.zeros(n_series)
        self.voltage_stuck = np.zeros(n_series, dtype=bool)
        self.voltage_stuck_v = np.zeros(n_series)
        self.open_wires: list[OpenWire] = []
        self.temp_offset_c = np.zeros(self.n_temp)
        self.temp_forced = np.zeros(self.n_temp, dtype=bool)
        self.temp_forced_c = np.zeros(self.n_temp)
        self.extra_current_offset_a = 0.0
        # Measurement fields read as NaN: a sensor that stopped answering (a current sensor
        # on a bus that fell silent, a failed conversion).
        self.lost_readings: set[str] = set()
        self.voltage_faults = False
        self.temp_faults = False

    def read_voltages(self, true_v: np.ndarray, bleed_a: np.ndarray | None,
                      dt_s: float) -> np.ndarray:
        return self._convert(true_v + self.voltage_noise.next(), bleed_a,
                             lambda wire, v: wire.apply(v, dt_s))

    def read_wire_test(self, true_v: np.ndarray, bleed_a: np.ndarray | None) -> np.ndarray:
        """The AFE's open-wire test: a conversion of every channel with a test current
        pulling each sense line down. An intact wire holds its tap (the test current times
        the wire's resistance is microvolts: the reading is an ordinary one, with noise of
        its own); an open one lets the tap fall to the tap below, so the cell below it reads
        about 0 V and the cell above it both cells. Channel faults (offset, stuck) apply as
        to the ordinary readings."""
        return self._convert(true_v + self.wire_test_noise.next(), bleed_a,
                             lambda wire, v: wire.pull_down(v))

    def _convert(self, v: np.ndarray, bleed_a: np.ndarray | None,
                 open_wire: Callable[[OpenWire, np.ndarray], None]) -> np.ndarray:
        """What every conversion of the cell channels shares, on `v` (true voltages plus
        this conversion's noise, changed in place): the bleed currents' drop in the shared
        sense wires, each open wire as this conversion sees it, the channel faults, and the
        converter's step."""
        if bleed_a is not None:
            v += sense_wire_shift_v(bleed_a, self.spec.sense_wire_ohm)
        if self.voltage_faults:
            for wire in self.open_wires:
                open_wire(wire, v)
            v = np.where(self.voltage_stuck, self.voltage_stuck_v, v + self.voltage_offset_v)
        v *= 1.0 / self.spec.cell_lsb_v
        np.rint(v, out=v)
        v *= self.spec.cell_lsb_v
        return v

    def read_pack_voltage(self, true_v: float) -> float:
        v = true_v * self.pack_v_gain + self.pack_v_offset_v + self.pack_v_noise.next_value()
        return round(v / self.spec.pack_v_lsb_v) * self.spec.pack_v_lsb_v

    def read_current(self, true_a: float) -> float:
        noise_a = self.current_noise.next_value()
        offset_a = self.current_offset_a + self.extra_current_offset_a
        return true_a * self.current_gain + offset_a + noise_a

    def read_temperatures(self, cell_temp_c: np.ndarray) -> np.ndarray:
        mean_c = np.add.reduceat(cell_temp_c, self.group_starts) / self.group_sizes
        t = mean_c + self.temp_noise.next()
        if self.temp_faults:
            t = np.where(self.temp_forced, self.temp_forced_c, t + self.temp_offset_c)
        lsb = self.spec.temp_lsb_c
        return np.rint(t / lsb) * lsb  # what np.round gives to 0 decimals, without its wrapper


@dataclass
class OpenWire:
    """A sense wire shared by cells `cell` and `pair` (0-based) has come loose.

    The floating tap is held by the AFE's filter capacitor and drifts with time constant
    `tau_s` toward a point `bias_v` above the middle of the two cells, so `cell` reads high,
    `pair` reads low, their sum stays right, and neither reading follows the load.
    """

    cell: int
    pair: int
    bias_v: float
    tau_s: float
    reading_v: float | None = None

    def apply(self, v: np.ndarray, dt_s: float) -> None:
        total_v = v[self.cell] + v[self.pair]
        target_v = 0.5 * total_v + self.bias_v
        if self.reading_v is None:
            self.reading_v = float(v[self.cell])
        self.reading_v += (target_v - self.reading_v) * (1.0 - np.exp(-dt_s / self.tau_s))
        v[self.cell] = self.reading_v
        v[self.pair] = total_v - self.reading_v

    def pull_down(self, v: np.ndarray) -> None:
        """Under the open-wire test's pull-down current the floating tap follows the test
        current (its filter capacitor is all that holds it: microamps empty it within the
        test) to the tap below it. The tap's drift in the ordinary readings is left as it
        was: the test is over in milliseconds, and the model does not follow the capacitor
        back."""
        lower, upper = min(self.cell, self.pair), max(self.cell, self.pair)
        v[upper] += v[lower]
        v[lower] = 0.0
