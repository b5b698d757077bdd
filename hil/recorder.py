"""CSV time series of a run: one row every `every_s` of simulated time.

Why and how: docs/internals.md, hil/recorder.py.
"""

from __future__ import annotations

import csv
from typing import TextIO

import numpy as np

from bms.core.signals import Actuation, Measurement
from hil.pack import SimulatedPack

SUMMARY_COLUMNS = (
    "time_s", "pack_v", "current_a", "current_true_a", "soc_pct", "soc_true_pct",
    "cell_v_min", "cell_v_max", "cell_v_mean", "temp_c_min", "temp_c_max", "state",
    "contactors", "faults", "balancing_n", "balancing_mask", "charge_limit_a",
    "discharge_limit_a", "bus_v", "charge_voltage_limit_v", "discharge_voltage_limit_v",
)


def mask_hex(mask: np.ndarray) -> str:
    """A bleed mask as hexadecimal, bit i = cell i + 1 (`0` when none bleeds)."""
    packed = np.packbits(mask, bitorder="little").tobytes()
    return format(int.from_bytes(packed, "little"), "x")


def mask_from_hex(text: str, n_series: int) -> np.ndarray:
    """The inverse of `mask_hex`; ValueError for text that is not such a mask."""
    bits = int(text, 16)
    if bits < 0 or bits >> n_series:
        raise ValueError(f"{text!r} is not a mask of {n_series} cells")
    packed = np.frombuffer(bits.to_bytes((n_series + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(packed, bitorder="little")[:n_series].astype(bool)


def _volts(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def columns(n_series: int, n_temp: int) -> list[str]:
    return (
        list(SUMMARY_COLUMNS)
        + [f"v{i + 1}" for i in range(n_series)]
        + [f"t{i + 1}" for i in range(n_temp)]
        + [f"soc{i + 1}_true_pct" for i in range(n_series)]
    )


class Recorder:
    def __init__(self, stream: TextIO, n_series: int, n_temp: int):
        self.writer = csv.writer(stream, lineterminator="\n")
        self.writer.writerow(columns(n_series, n_temp))

    def write(self, t_s: float, m: Measurement, act: Actuation, pack: SimulatedPack) -> None:
        v = m.cell_voltage_v
        t = m.temperature_c
        row = [
            f"{t_s:.3f}", f"{pack.pack_voltage_v:.4f}", f"{m.current_a:.4f}",
            f"{pack.current_a:.4f}", f"{act.soc * 100:.3f}", f"{pack.true_pack_soc * 100:.3f}",
            f"{v.min():.4f}", f"{v.max():.4f}", f"{v.mean():.4f}", f"{t.min():.2f}",
            f"{t.max():.2f}", act.state, act.contactors.describe(), str(act.fault_bitmap),
            str(int(np.count_nonzero(pack.balancing))), mask_hex(pack.balancing),
            f"{act.charge_limit_a:.3f}",
            f"{act.discharge_limit_a:.3f}", f"{pack.power_path.bus_v:.3f}",
            _volts(act.charge_voltage_limit_v), _volts(act.discharge_voltage_limit_v),
        ]
        row += [f"{x:.4f}" for x in v.tolist()]
        row += [f"{x:.2f}" for x in t.tolist()]
        row += [f"{x * 100:.3f}" for x in pack.true_soc.tolist()]
        self.writer.writerow(row)
