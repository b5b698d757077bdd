"""Derating ends before protection: a load or charger that keeps to the published limits
never takes a cell to a voltage row, at any rate the chemistry allows; the limits reach 0
inside the WARNING thresholds, and the voltage limits (CVL, DVL) are published."""

from __future__ import annotations

import pytest

from bms.core.firmware import Firmware
from bms.data.presets import PRESETS
from hil.injections import parse_injection
from hil.loads import constant
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run

TICK_S = 0.25
VOLTAGE_FAULTS = {"CELL_UNDERVOLTAGE", "CELL_OVERVOLTAGE", "PACK_UNDERVOLTAGE",
                  "PACK_OVERVOLTAGE"}


def drive(chemistry: str, c_rate: float, initial_soc: float, hours: float):
    """16S of `chemistry` at `c_rate` (negative: discharge) from `initial_soc` until well past
    empty (or full), the load keeping to the limits as an inverter does."""
    pack = SimulatedPack(PRESETS[chemistry], PackSpec(n_series=16, initial_soc=initial_soc),
                         TICK_S)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
    firmware.request("run")
    profile = constant(c_rate * pack.capacity_ah, "a")
    result = run(pack, firmware, profile, RunOptions(duration_s=hours * 3600.0, tick_s=TICK_S))
    return pack, firmware, result


# Known misses (issue 14, plausibility): near empty a healthy na-nvpf pack's cells spread so
# far that the open-wire score trips (OPEN_WIRE FAULT); at the end of a 2C charge one of its
# cells creeps past the ceiling to the over-voltage WARNING. Strict: they fail today, and
# the test says so the day they are fixed.
NVPF_OPEN_WIRE = pytest.mark.xfail(strict=True, reason="OPEN_WIRE false positive near empty")
NVPF_CHARGE_END = pytest.mark.xfail(strict=True,
                                    reason="a cell passes the ceiling at the end of a 2C charge")


@pytest.mark.parametrize("chemistry", ["na-nfm", pytest.param("na-nvpf", marks=NVPF_OPEN_WIRE)])
@pytest.mark.parametrize("c_rate", [-0.5, -2.0])
def test_a_discharge_that_keeps_to_the_limits_ends_empty_without_a_voltage_row(
        chemistry, c_rate):
    pack, firmware, result = drive(chemistry, c_rate, initial_soc=0.25, hours=1.0)
    raised = [(e.name, e.level) for e in result.totals.events if e.action == "raised"]
    assert not [r for r in raised if r[0] in VOLTAGE_FAULTS], raised
    assert result.last.state == "RUN"
    assert pack.true_pack_soc < 0.05  # it did go to empty: the limit ended it, not a fault
    assert result.last.discharge_limit_a < 0.05 * firmware.cfg.limits.max_discharge_a
    # The weakest cell stopped inside the under-voltage WARNING, with the margin.
    assert result.totals.cell_v_min >= firmware.floor_v - 0.01


@pytest.mark.parametrize("chemistry", ["na-nfm", pytest.param("na-nvpf", marks=NVPF_CHARGE_END)])
def test_a_charge_at_the_maximum_rate_ends_full_without_a_voltage_row(chemistry):
    chem = PRESETS[chemistry]
    pack, firmware, result = drive(chemistry, chem.limits.max_charge_c, initial_soc=0.7,
                                   hours=0.75)
    raised = [(e.name, e.level) for e in result.totals.events if e.action == "raised"]
    assert not [r for r in raised if r[0] in VOLTAGE_FAULTS], raised
    assert result.last.state == "RUN" and pack.true_pack_soc > 0.9
    assert result.totals.cell_v_max <= firmware.ceiling_v + 0.005


@pytest.mark.parametrize("chemistry", ["na-nfm", "na-nvpf"])
def test_the_voltage_window_lies_inside_the_warnings_and_is_published(chemistry):
    chem = PRESETS[chemistry]
    firmware = Firmware(chem, 16, chem.capacity_ah)
    under = max(r.threshold for r in firmware.cfg.protection
                if r.fault == "CELL_UNDERVOLTAGE")
    over = min(r.threshold for r in firmware.cfg.protection if r.fault == "CELL_OVERVOLTAGE")
    assert under < firmware.floor_v < firmware.ceiling_v < over
    assert firmware.ceiling_v <= chem.thresholds.charge_v
    pack = SimulatedPack(chem, PackSpec(n_series=16), 0.1)
    act = firmware.step(pack.measure(), 0.0)
    assert act.charge_voltage_limit_v == pytest.approx(16 * firmware.ceiling_v)
    assert act.discharge_voltage_limit_v == pytest.approx(16 * firmware.floor_v)


def test_hours_of_rest_at_a_1_s_measurement_period_raise_nothing():
    """Identical 1 mV readings are normal at rest: not a stuck converter."""
    pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=16, initial_soc=0.6), 1.0)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
    result = run(pack, firmware, constant(0.0, "a"), RunOptions(duration_s=6 * 3600.0,
                                                                 tick_s=1.0))
    assert result.totals.events == [] and result.last.state == "RUN"


def test_a_stuck_reading_under_load_at_a_1_s_period_trips_within_its_row():
    pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=16, initial_soc=0.6), 1.0)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
    firmware.request("run")
    options = RunOptions(duration_s=120.0, tick_s=1.0,
                         injections=(parse_injection("60:sensor-stuck:cell=7", 16,
                                                     pack.sensors.n_temp),))
    result = run(pack, firmware, constant(-1.5, "a"), options)
    stuck = [e for e in result.totals.events if e.name == "VOLTAGE_SENSOR_FAULT"]
    # its 10 s count starts once the pack's mean reading has moved 5 mV: some seconds at 1C
    assert stuck and stuck[0].index == 6 and 70.0 <= stuck[0].t_s <= 90.0
