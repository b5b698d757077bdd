"""Issue 17, the inverter side: what the simulated inverter reads from the battery's frames
(built byte by byte from the public layouts in docs/can.md, not by our encoder), what it
decides from them, and the duty it is given on the command line."""

from __future__ import annotations

import math
from dataclasses import replace

import can
import numpy as np
import pytest

from bms.core.signals import Actuation, Contactors, State
from bms.data.presets import PRESETS
from bms.data.validation import Problems
from bms.links.can.frame_sets import frame_set
from hil.battery_view import BatteryReader, BatteryView
from hil.dc_bus import OFF, DcSetpoint, decode_setpoint, encode_setpoint
from hil.inverter import BMS_LOST_S, Decision, Mode, decide
from hil.loads import Demand
from hil.pack import PackSpec, SimulatedPack
from hil.ups_duty import Outage, UpsDuty, parse_duty


def std(arbitration_id: int, hex_bytes: str) -> can.Message:
    return can.Message(arbitration_id=arbitration_id, data=bytes.fromhex(hex_bytes),
                       is_extended_id=False)


def ext(arbitration_id: int, hex_bytes: str) -> can.Message:
    return can.Message(arbitration_id=arbitration_id, data=bytes.fromhex(hex_bytes),
                       is_extended_id=True)


def test_pylon_lv_frames_read_as_the_public_layout_says():
    """docs/can.md's example: 16S na-nfm at 60 % discharging 2 A."""
    reader = BatteryReader(frame_set("pylon-lv"))
    for frame in (std(0x351, "80020f002d003501"), std(0x355, "3c006400"),
                  std(0x356, "2a13ecfffc00"), std(0x359, "0400000001504e"),
                  std(0x35C, "c000"), std(0x35E, "50594c4f4e202020")):
        assert reader.take(frame, 7.0)
    v = reader.view
    assert (v.cvl_v, v.ccl_a, v.dcl_a, v.dvl_v) == pytest.approx((64.0, 1.5, 4.5, 30.9))
    assert (v.soc_pct, v.soh_pct) == (60, 100)
    assert (v.pack_v, v.current_a, v.temperature_c) == pytest.approx((49.06, -2.0, 25.2))
    assert (v.charge_enable, v.discharge_enable, v.force_charge) == (True, True, False)
    assert v.protections == ("low_voltage",) and v.warnings == ()  # byte 0 bit 2
    assert v.manufacturer == "PYLON" and v.limits_s == 7.0


def test_pylon_hv_frames_read_as_the_public_layout_says():
    """The HV set's offsets and signs: current offset -3000 A, the DCL sent negative, 0xAA
    forbids."""
    reader = BatteryReader(frame_set("pylon-hv"))
    for frame in (ext(0x4210, "eb011c75e4043c64"), ext(0x4220, "800235013f750375"),
                  ext(0x4250, "0a00000001000000"), ext(0x4280, "aa00000000000000"),
                  ext(0x7320, "1000011030000200")):
        assert reader.take(frame, 3.0)
    v = reader.view
    assert (v.cvl_v, v.dvl_v, v.ccl_a, v.dcl_a) == pytest.approx((64.0, 30.9, 1.5, 4.5))
    assert (v.pack_v, v.current_a, v.soc_pct) == pytest.approx((49.1, -2.0, 60))
    assert v.force_charge is True  # 0x4250 byte 0 bit 3
    assert v.warnings == ("cell_low_voltage",)  # alarm word bit 0
    assert (v.charge_enable, v.discharge_enable) == (False, True)  # 0xAA: forbidden
    assert (v.series_cells, v.capacity_ah) == (16, 2.0)


def test_frames_not_the_batterys_or_of_the_wrong_length_change_nothing():
    reader = BatteryReader(frame_set("pylon-lv"))
    assert not reader.take(std(0x351, "8002"), 1.0)  # too short
    assert not reader.take(std(0x305, "00" * 8), 1.0)  # the inverter's own keep-alive
    assert not reader.take(encode_setpoint(DcSetpoint(1.0, 64.0)), 1.0)
    assert reader.view == BatteryView()


def test_the_dc_setpoint_travels_in_its_frame():
    frame = encode_setpoint(DcSetpoint(-3.21, 46.4))
    assert frame.is_extended_id and frame.arbitration_id == 0x1FFFDC00
    assert decode_setpoint(frame) == DcSetpoint(-3.21, 46.4)
    assert decode_setpoint(std(0x351, "80020f002d003501")) is None


@pytest.mark.parametrize(("setpoint_a", "limit_above_v", "expect"), [
    (2.0, 30.0, "setpoint"),  # a limit far off: the setpoint flows
    (2.0, 0.02, "held"),  # charging into a limit 20 mV above the pack: it holds there
    (-2.0, -30.0, "setpoint"),
    (-2.0, -0.02, "held"),  # discharging down to a limit 20 mV below: held there
    (0.0, 0.0, "off"),
])
def test_the_pack_draws_the_inverters_setpoint_held_to_its_voltage_limit(
        setpoint_a, limit_above_v, expect):
    """Whatever the firmware last published (limits of 0 here): the inverter's current is the
    inverter's business; the voltage limit is its power stage's."""
    pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(initial_soc=0.5), 0.1)
    pack.actuate(Actuation(State.RUN, Contactors(True, False, True), np.zeros(16, bool),
                           0.0, 0.0, 0, 0.5, charge_voltage_limit_v=64.0,
                           discharge_voltage_limit_v=30.9))
    rest_v = pack.pack_voltage_v
    limit_v = rest_v + limit_above_v
    for _ in range(10):
        pack.advance(Demand(setpoint_a, "a", limit_v))
    if expect == "setpoint":
        assert pack.current_a == pytest.approx(setpoint_a)
    elif expect == "held":
        assert 0.0 < abs(pack.current_a) < abs(setpoint_a)
        assert pack.pack_voltage_v == pytest.approx(limit_v, abs=1e-3)
    else:
        assert pack.current_a == 0.0


# --- what it decides -----------------------------------------------------------------------

HEARD = BatteryView(cvl_v=64.0, ccl_a=1.5, dcl_a=4.5, dvl_v=30.9, soc_pct=60.0, pack_v=50.0,
                    current_a=0.0, charge_enable=True, discharge_enable=True, limits_s=10.0)
START = Decision(Mode.WAITING, OFF)


def test_nothing_is_driven_before_the_limits_come_or_once_they_stop():
    assert decide(BatteryView(), 0.0, True, 100.0, START) == Decision(Mode.WAITING, OFF)
    assert decide(HEARD, 10.0 + BMS_LOST_S, True, 100.0, START).mode == Mode.CHARGE_CC
    lost = decide(HEARD, 10.0 + BMS_LOST_S + 0.1, True, 100.0, START)
    assert lost == Decision(Mode.BMS_LOST, OFF)


def test_with_the_mains_up_it_charges_at_the_ccl_held_to_the_cvl_and_stays_in_cv():
    cc = decide(HEARD, 10.0, True, 100.0, START)
    assert cc == Decision(Mode.CHARGE_CC, DcSetpoint(1.5, 64.0))
    at_cvl = replace(HEARD, pack_v=63.9, ccl_a=0.4)
    cv = decide(at_cvl, 10.0, True, 100.0, cc)
    assert cv == Decision(Mode.CHARGE_CV, DcSetpoint(0.4, 64.0))
    # the taper lowers the voltage a little: still CV (a charger's absorption)
    assert decide(replace(at_cvl, pack_v=63.5), 10.0, True, 100.0, cv).mode == Mode.CHARGE_CV
    assert decide(replace(at_cvl, pack_v=63.5), 10.0, True, 100.0, cc).mode == Mode.CHARGE_CC
    forbidden = replace(HEARD, charge_enable=False)
    assert decide(forbidden, 10.0, True, 100.0, cv) == Decision(Mode.IDLE, OFF)
    forced = replace(HEARD, force_charge=True, discharge_enable=False, ccl_a=0.1)
    assert decide(forced, 10.0, True, 100.0, START) == Decision(Mode.FORCE_CHARGE,
                                                                 DcSetpoint(0.1, 64.0))


def test_with_the_mains_down_the_battery_carries_the_load_within_the_dcl_down_to_the_dvl():
    d = decide(HEARD, 10.0, False, 100.0, START)
    assert d.mode == Mode.DISCHARGE and not d.limited
    assert d.setpoint == DcSetpoint(-2.0, 30.9)  # 100 W at 50 V
    heavy = decide(HEARD, 10.0, False, 400.0, START)  # 8 A asked, 4.5 A allowed
    assert heavy == Decision(Mode.DISCHARGE, DcSetpoint(-4.5, 30.9), limited=True)
    assert decide(HEARD, 10.0, False, 0.0, START) == Decision(Mode.IDLE, OFF)


@pytest.mark.parametrize(("change", "why"), [
    ({"discharge_enable": False}, "the battery forbids discharge"),
    ({"dcl_a": 0.0}, "the battery forbids discharge"),
    ({"force_charge": True}, "the battery asks for a force charge"),
    ({"pack_v": 30.95}, "the battery at its DVL (30.9 V)"),
])
def test_the_load_is_dropped_when_the_battery_cannot_carry_it_until_the_mains_returns(
        change, why):
    cut = decide(replace(HEARD, **change), 10.0, False, 100.0, START)
    assert cut == Decision(Mode.CUT_OFF, OFF, cut_off=why)
    # the battery could carry it again (a DCL that recovers at rest): the load stays off
    assert decide(HEARD, 11.0, False, 100.0, cut) == cut
    assert decide(HEARD, 12.0, True, 100.0, cut).mode == Mode.CHARGE_CC
    assert decide(HEARD, 13.0, False, 100.0,
                  decide(HEARD, 12.0, True, 100.0, cut)).mode == Mode.DISCHARGE


def test_limits_without_a_pack_voltage_yet_drive_nothing():
    """pylon-lv's limits may come before its first 0x356: the load's current is unknown."""
    d = decide(replace(HEARD, pack_v=math.nan), 10.0, False, 100.0, START)
    assert d == Decision(Mode.WAITING, OFF)


# --- the duty from the command line ------------------------------------------------------

def test_a_duty_reads_outages_as_durations_and_knows_when_the_mains_is_away():
    problems = Problems("test")
    duty = parse_duty(["1h:10m", "60:300"], 150.0, problems)
    assert problems.items == []
    assert duty == UpsDuty((Outage(60.0, 300.0), Outage(3600.0, 600.0)), 150.0)
    assert [duty.mains_up(t) for t in (59.9, 60.0, 359.9, 360.0, 3700.0)] == [
        True, False, False, True, False]


@pytest.mark.parametrize(("outages", "load_w", "words"), [
    (["60"], 100.0, "--outage = '60': must be AT:LEN"),
    (["60:soon"], 100.0, "--outage = '60:soon': must be AT:LEN, two durations"),
    (["60:0"], 100.0, "--outage = '60:0': the outage must start at a finite time and last"),
    (["60:300", "200:100"], 100.0, "overlaps the outage 60-360 s"),
    (["60:300"], None, "--load-w: give the power the load draws"),
    ([], -5.0, "--load-w = -5.0: must be within [0.001, 10000000]"),
])
def test_a_bad_duty_is_refused_naming_the_value(outages, load_w, words):
    problems = Problems("test")
    assert parse_duty(outages, load_w, problems) is None
    assert any(words in p for p in problems.items), problems.items
