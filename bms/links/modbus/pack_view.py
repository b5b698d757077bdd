"""What the SunSpec map shows: the pack's nameplate, fixed while serving, and a snapshot of
what the firmware publishes (the Device's Status, the latest Actuation and measurement)
taken when a client reads. Nothing here decides anything the firmware decides; it only
gathers what the firmware has published."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bms import __version__
from bms.core.signals import State
from bms.data.config import TEMP_PLAUSIBLE_C
from bms.host.device import Device
from protocol import messages as pm

DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class Nameplate:
    """The pack as it is while serving: identity, ratings and the full scales the scale
    factors are chosen for."""

    pack_id: str
    chemistry: str
    mode: str  # SIM or HIL
    version: str
    unit_id: int
    n_series: int
    n_parallel: int
    cells_per_temp_sensor: int
    capacity_ah: float  # the pack's
    nominal_pack_v: float
    max_charge_w: float  # the chemistry's C-rate at the nominal voltage
    max_discharge_w: float
    self_discharge_pct_per_day: float
    max_cell_v: float  # the chemistry's absolute limit
    max_current_a: float  # the largest current a protection row trips at (short circuit)
    max_temp_c: float  # the largest magnitude a plausible temperature reading takes
    remote_control: bool  # a Modbus client may change the pack's state


def nameplate_of(device: Device, pack_id: str, unit_id: int, cells_per_temp_sensor: int,
                 remote_control: bool) -> Nameplate:
    chem, ident, cfg = device.chem, device.identity, device.fw.cfg
    n_series = device.fw.n_series
    nominal_v = chem.nominal_v * n_series
    c_rate_a = ident.capacity_ah  # one C, A
    current_rows = [r.threshold for r in cfg.protection
                    if r.quantity in ("charge_a", "discharge_a")]
    return Nameplate(
        pack_id=pack_id, chemistry=ident.chemistry, mode=pm.Mode(ident.mode).name,
        version=__version__, unit_id=unit_id, n_series=n_series, n_parallel=ident.n_parallel,
        cells_per_temp_sensor=cells_per_temp_sensor, capacity_ah=ident.capacity_ah,
        nominal_pack_v=nominal_v,
        max_charge_w=chem.limits.max_charge_c * c_rate_a * nominal_v,
        max_discharge_w=chem.limits.max_discharge_c * c_rate_a * nominal_v,
        self_discharge_pct_per_day=chem.self_discharge_pct_per_month / DAYS_PER_MONTH,
        max_cell_v=chem.limits.v_max,
        max_current_a=max(current_rows, default=chem.limits.max_discharge_c * c_rate_a),
        max_temp_c=max(abs(t) for t in TEMP_PLAUSIBLE_C),
        remote_control=remote_control)


@dataclass(frozen=True, eq=False)
class PackView:
    """One read's worth of the firmware's published state. Cells and sensors are arrays in
    pack order (empty before the first measurement)."""

    plate: Nameplate
    status: pm.Status
    state: State
    cell_v: np.ndarray
    temp_c: np.ndarray
    balancing: np.ndarray  # bool, per cell
    cycles: float  # equivalent full cycles
    rest_current_a: float
    seconds: int  # since the emulator started
    cell_v_mean: float  # of the readable cells; NaN: none
    temp_c_mean: float  # of the readable sensors; NaN: none

    @property
    def level_bitmaps(self) -> tuple[int, int, int]:
        """The faults active at WARNING, ALARM and FAULT (bit = fault code), as Status
        publishes them."""
        s = self.status
        return s.warning_bitmap, s.alarm_bitmap, s.fault_level_bitmap

    def temp_of_cell(self, cell: int) -> float:
        """The reading of the sensor over cell `cell` (0-based): each sensor covers
        `cells_per_temp_sensor` cells in order."""
        sensor = cell // self.plate.cells_per_temp_sensor
        return float(self.temp_c[sensor]) if sensor < len(self.temp_c) else math.nan


def view_of(device: Device, plate: Nameplate, now_s: float) -> PackView:
    act, m = device.act, device.measurement
    status = device.status(now_s)
    empty = np.empty(0)
    cell_v = empty if m is None else np.asarray(m.cell_voltage_v, float)
    temp_c = empty if m is None else np.asarray(m.temperature_c, float)
    return PackView(
        plate=plate, status=status, state=State.from_code(status.state),
        cell_v=cell_v, temp_c=temp_c,
        balancing=(np.zeros(plate.n_series, bool) if act is None
                   else np.asarray(act.balance_mask, bool)),
        cycles=device.fw.counters.cycles(plate.capacity_ah),
        rest_current_a=device.fw.cfg.rest_current_a,
        seconds=max(0, int(now_s)), cell_v_mean=_mean(cell_v), temp_c_mean=_mean(temp_c))


def _mean(values: np.ndarray) -> float:
    readable = values[np.isfinite(values)]
    return float(readable.mean()) if readable.size else math.nan
