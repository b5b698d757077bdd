"""Contactors, precharge and DC-link capacitance (hil.power_path.PowerPath)."""

from __future__ import annotations

import math

import pytest

from bms.core.signals import OPEN, Contactors
from hil.power_path import PowerPath, PowerPathSpec

SPEC = PowerPathSpec(precharge_resistor_ohm=47.0, bus_capacitance_f=4.7e-3, bus_bleed_tau_s=2.0)
PRECHARGE = Contactors(negative=True, precharge=True, positive=False)
MAIN = Contactors(negative=True, precharge=False, positive=True)
EMF_V, R_PACK_OHM = 400.0, 0.5
DT_S = 0.01


def steps(path: PowerPath, seconds: float, load_a: float = 0.0) -> list[float]:
    """Pack currents of each step."""
    return [path.step(DT_S, EMF_V, R_PACK_OHM, load_a) for _ in range(round(seconds / DT_S))]


@pytest.mark.parametrize("t_s", [0.05, 0.22, 0.5, 1.0])
def test_precharge_charges_the_bus_with_rc_time_constant(t_s):
    """Bus voltage = E (1 - exp(-t / ((R_pre + R_pack) C))): tau = 47.5 ohm x 4.7 mF
    = 0.223 s."""
    path = PowerPath(SPEC)
    path.command(PRECHARGE)
    steps(path, t_s)
    t = round(t_s / DT_S) * DT_S
    tau_s = (47.0 + R_PACK_OHM) * 4.7e-3
    # The step is the exact exponential for a constant EMF: float rounding only.
    assert path.bus_v == pytest.approx(EMF_V * (1.0 - math.exp(-t / tau_s)), abs=1e-9)


def test_precharge_current_is_the_charge_the_capacitor_takes():
    """The pack discharges (negative current) into the bus; the total charge equals C V_bus,
    and the first step's mean current is at most E / (R_pre + R_pack)."""
    path = PowerPath(SPEC)
    path.command(PRECHARGE)
    currents = steps(path, 1.0)
    assert all(i < 0 for i in currents)
    assert -sum(currents) * DT_S == pytest.approx(4.7e-3 * path.bus_v, rel=1e-9)
    assert -currents[0] <= EMF_V / (47.0 + R_PACK_OHM)
    assert -currents[0] == pytest.approx(EMF_V / 47.5, rel=0.03)  # mean over 0.045 tau


def test_open_precharge_resistor_leaves_the_bus_at_zero():
    """An open precharge resistor never conducts: no bus voltage, no pack current."""
    path = PowerPath(SPEC)
    path.precharge_open = True
    path.command(PRECHARGE)
    currents = steps(path, 2.0)
    assert path.bus_v == 0.0
    assert all(i == 0.0 for i in currents)


def test_main_contactors_connect_the_bus_to_the_pack_terminals():
    """With both mains closed the bus is E + R I and the load current flows."""
    path = PowerPath(SPEC)
    path.command(MAIN)
    assert path.step(DT_S, EMF_V, R_PACK_OHM, -20.0) == -20.0
    assert path.bus_v == pytest.approx(EMF_V - 20.0 * R_PACK_OHM, abs=1e-12)
    assert path.step(DT_S, EMF_V, R_PACK_OHM, 8.0) == 8.0
    assert path.bus_v == pytest.approx(EMF_V + 8.0 * R_PACK_OHM, abs=1e-12)


def test_one_main_contactor_alone_carries_no_load_current():
    """Only the negative (or only the positive) closed: no circuit, no current."""
    for contactors in (Contactors(negative=True), Contactors(positive=True)):
        path = PowerPath(SPEC)
        path.command(contactors)
        assert steps(path, 0.1, load_a=-20.0) == [0.0] * 10
        assert path.bus_v == 0.0


@pytest.mark.parametrize("t_s", [0.5, 2.0, 6.0])
def test_open_bus_decays_with_the_bleed_time_constant(t_s):
    """After the contactors open, V_bus = V0 exp(-t / tau_bleed) and no current flows."""
    path = PowerPath(SPEC)
    path.command(MAIN)
    path.step(DT_S, EMF_V, R_PACK_OHM, 0.0)
    path.command(OPEN)
    currents = steps(path, t_s, load_a=-20.0)
    assert set(currents) == {0.0}
    assert path.bus_v == pytest.approx(EMF_V * math.exp(-t_s / 2.0), rel=1e-9)


def test_contactor_welded_while_closed_stays_closed_when_commanded_open():
    """A weld on a closed positive contactor: commanding all open leaves it closed (the
    auxiliary feedback shows it); the negative still opens, so no load current flows."""
    path = PowerPath(SPEC)
    path.command(MAIN)
    path.weld("positive")
    path.command(OPEN)
    assert path.actual == Contactors(negative=False, precharge=False, positive=True)
    assert path.step(DT_S, EMF_V, R_PACK_OHM, -20.0) == 0.0


def test_pending_weld_on_open_contactor_welds_when_it_next_closes():
    """Weld injected while open: nothing changes until the contactor closes; from then on it
    stays closed whatever is commanded."""
    path = PowerPath(SPEC)
    path.weld("negative")
    assert path.actual == OPEN
    path.command(Contactors(positive=True))  # the other one: still no weld on negative
    path.command(OPEN)
    assert path.actual == OPEN
    path.command(PRECHARGE)
    path.command(OPEN)
    assert path.actual == Contactors(negative=True, precharge=False, positive=False)
    path.command(MAIN)
    path.command(OPEN)
    assert path.actual.negative


def test_welded_positive_bypasses_precharge():
    """With the positive welded, closing negative + precharge connects the pack directly:
    the bus jumps to the pack voltage at once instead of charging through R_pre."""
    path = PowerPath(SPEC)
    path.command(MAIN)
    path.weld("positive")
    path.command(OPEN)
    steps(path, 10.0)
    path.command(PRECHARGE)
    assert path.actual.main_closed
    path.step(DT_S, EMF_V, R_PACK_OHM, 0.0)
    assert path.bus_v == pytest.approx(EMF_V)
