"""The frames as an inverter receives them: each at its period (counted over simulated
time), decoded twice - by cantools from our DBC and by hand from the public byte layout
(struct, the documented scale and sign) - and both agreeing with Device.status()."""

from __future__ import annotations

import struct
from collections import Counter

import can
import pytest

from bms.links.can.frame_sets import NAMES, frame_set
from tests.bms.links.can.bench import CanBench

LV_IDS = {0x351: "bms_limits", 0x355: "bms_soc_soh", 0x356: "bms_measurements",
          0x359: "bms_protection_warning", 0x35C: "bms_requests", 0x35E: "bms_manufacturer"}


@pytest.fixture
def lv():
    bench = CanBench("pylon-lv")
    yield bench
    bench.close()


@pytest.fixture
def hv():
    bench = CanBench("pylon-hv")
    yield bench
    bench.close()


def test_pylon_lv_frames_come_at_their_periods(lv):
    lv.run(30.0)  # t = 0 .. 29.9 s
    count = Counter(f.arbitration_id for _, f in lv.received)
    assert count == {0x351: 30, 0x355: 30, 0x356: 30, 0x359: 30, 0x35C: 30, 0x35E: 6}
    times = [t for t, f in lv.received if f.arbitration_id == 0x351]
    assert times == pytest.approx([float(k) for k in range(30)])
    assert not any(f.is_extended_id for _, f in lv.received)


def test_the_periods_are_the_dbc_s_and_the_bitrate_500_kbit_s():
    lv = frame_set("pylon-lv")
    assert {m.frame_id: p for m, p in lv.periodic} == {
        0x351: 1.0, 0x355: 1.0, 0x356: 1.0, 0x359: 1.0, 0x35C: 1.0, 0x35E: 5.0}
    assert lv.bitrate == frame_set("pylon-hv").bitrate == 500_000
    assert frame_set("pylon-hv").periodic == ()  # it answers requests only


def hand_decoded_lv(frames: dict[int, bytes]) -> dict:
    """The public pylon-lv layout (diyBMS pylon_canbus.cpp, Battery-Emulator
    PYLON-LV-CAN.cpp): little-endian, 0.1 V / 0.1 A / 1 % / 0.01 V / 0.1 degC."""
    cvl, ccl, dcl, dvl = struct.unpack("<HhhH", frames[0x351])
    soc, soh = struct.unpack("<HH", frames[0x355])
    volts, amps, temp = struct.unpack("<hhh", frames[0x356])
    requests = frames[0x35C][0]
    return {"cvl": cvl / 10, "ccl": ccl / 10, "dcl": dcl / 10, "dvl": dvl / 10, "soc": soc,
            "soh": soh, "pack_v": volts / 100, "current_a": amps / 10, "temp_c": temp / 10,
            "charge_enable": bool(requests & 0x80), "discharge_enable": bool(requests & 0x40),
            "force_charge": bool(requests & 0x20), "name": frames[0x35E].decode("ascii"),
            "module_count_pn": frames[0x359][4:7]}


def test_pylon_lv_both_decoders_agree_with_the_published_status(lv):
    lv.run(20.1, demand_a=-2.0)  # the last tick (t = 20 s) sends the frames
    st = lv.device.status(lv.now_s)
    assert lv.act.state == "RUN" and st.current_a < -1.5  # discharging
    frames = {fid: bytes(lv.last(name).data) for fid, name in LV_IDS.items()}
    hand = hand_decoded_lv(frames)
    dbc = {name: lv.decoded(name) for name in LV_IDS.values()}
    expected = {"cvl": st.charge_voltage_limit_v, "ccl": st.charge_limit_a,
                "dcl": st.discharge_limit_a, "dvl": st.discharge_voltage_limit_v,
                "pack_v": st.pack_voltage_v, "current_a": st.current_a, "temp_c": st.temp_c_max}
    resolution = {"cvl": 0.1, "ccl": 0.1, "dcl": 0.1, "dvl": 0.1, "pack_v": 0.01,
                  "current_a": 0.1, "temp_c": 0.1}
    for key, value in expected.items():
        assert hand[key] == pytest.approx(value, abs=resolution[key] / 2 + 1e-9), key
    assert st.charge_limit_a > 0 and st.discharge_limit_a > 0
    assert dbc["bms_limits"] == pytest.approx({
        "charge_voltage_limit": hand["cvl"], "charge_current_limit": hand["ccl"],
        "discharge_current_limit": hand["dcl"], "discharge_voltage_limit": hand["dvl"]})
    assert dbc["bms_measurements"] == pytest.approx({
        "pack_voltage": hand["pack_v"], "current": hand["current_a"],
        "temperature": hand["temp_c"]})
    assert hand["soc"] == dbc["bms_soc_soh"]["soc"] == round(st.soc_pct)
    assert hand["soh"] == dbc["bms_soc_soh"]["soh"] == round(st.soh_pct)
    assert hand["charge_enable"] and hand["discharge_enable"] and not hand["force_charge"]
    assert dbc["bms_requests"]["charge_enable"] == dbc["bms_requests"]["discharge_enable"] == 1
    assert hand["name"] == "PYLON   "
    assert hand["module_count_pn"] == b"\x01PN"
    assert frames[0x359][:4] == bytes(4)  # no fault: no flag


def test_the_current_sign_is_positive_when_charging(lv):
    lv.run(20.1, demand_a=1.0)
    st = lv.device.status(lv.now_s)
    _, amps, _ = struct.unpack("<hhh", bytes(lv.last("bms_measurements").data))
    assert st.current_a > 0.5 and amps / 10 == pytest.approx(st.current_a, abs=0.05)


def ask(bench: CanBench, request: int) -> list[can.Message]:
    """The frames the BMS answers a 0x4200 request with, within one poll."""
    bench.received.clear()
    bench.inverter.send(can.Message(arbitration_id=0x4200, is_extended_id=True,
                                    data=bytes([request]) + bytes(7)))
    bench.tick(inverter_alive=False)
    return [f for _, f in bench.received]


def test_pylon_hv_answers_each_request_within_one_poll_and_sends_nothing_unasked(hv):
    hv.run(5.0, inverter_alive=False)
    assert hv.received == []
    ensemble = ask(hv, 0)
    assert [f.arbitration_id for f in ensemble] == [0x4210, 0x4220, 0x4230, 0x4240, 0x4250,
                                                     0x4280]
    assert all(f.is_extended_id and f.dlc == 8 for f in ensemble)
    assert [f.arbitration_id for f in ask(hv, 2)] == [0x7310, 0x7320]


def test_pylon_hv_both_decoders_agree_with_the_published_status(hv):
    hv.run(20.0, demand_a=-2.0)
    frames = {f.arbitration_id: bytes(f.data) for f in ask(hv, 0)}
    st = hv.device.status(hv.now_s - 0.1)  # as at the poll that answered
    # The public layout (Pylontech / Sermatec / Deye HV documents as diyBMS
    # pylonforce_canbus.cpp sends them): little-endian, current offset 3000 A, temperature
    # offset 100 degC, the discharge limit negative.
    volts, amps, temp, soc, soh = struct.unpack("<HHHBB", frames[0x4210])
    cvl, dvl, ccl, dcl = struct.unpack("<HHHH", frames[0x4220])
    v_max, v_min, i_max, i_min = struct.unpack("<HHHH", frames[0x4230])
    t_max, t_min, s_max, s_min = struct.unpack("<HHHH", frames[0x4240])
    status, cycles, errors, alarms, protections = struct.unpack("<BHBHH", frames[0x4250])
    charge_mark, discharge_mark = frames[0x4280][:2]
    assert volts / 10 == pytest.approx(st.pack_voltage_v, abs=0.05)
    assert amps / 10 - 3000 == pytest.approx(st.current_a, abs=0.05)
    assert st.current_a < -1.5
    assert temp / 10 - 100 == pytest.approx(st.temp_c_max, abs=0.05)
    assert (soc, soh) == (round(st.soc_pct), round(st.soh_pct))
    assert cvl / 10 == pytest.approx(st.charge_voltage_limit_v, abs=0.05)
    assert dvl / 10 == pytest.approx(st.discharge_voltage_limit_v, abs=0.05)
    assert ccl / 10 - 3000 == pytest.approx(st.charge_limit_a, abs=0.05)
    assert dcl / 10 - 3000 == pytest.approx(-st.discharge_limit_a, abs=0.05)
    assert st.discharge_limit_a > 0
    assert (v_max / 1000, v_min / 1000) == pytest.approx((st.cell_v_max, st.cell_v_min),
                                                         abs=0.0005)
    assert (i_max, i_min) == (st.cell_v_max_index, st.cell_v_min_index)
    assert (t_max / 10 - 100, t_min / 10 - 100) == pytest.approx(
        (st.temp_c_max, st.temp_c_min), abs=0.05)
    assert (s_max, s_min) == (st.temp_c_max_index, st.temp_c_min_index)
    assert status & 0x07 == 2  # discharging
    assert (errors, alarms, protections) == (0, 0, 0)
    assert (charge_mark, discharge_mark) == (0, 0)  # both allowed
    db = hv.frames
    decoded = {name: db.message(name).decode(frames[db.message(name).frame_id],
                                             decode_choices=False)
               for name in ("bms_totals", "bms_limits")}
    assert decoded["bms_totals"] == pytest.approx({
        "pack_voltage": volts / 10, "current": amps / 10 - 3000, "temperature": temp / 10 - 100,
        "soc": soc, "soh": soh})
    assert decoded["bms_limits"] == pytest.approx({
        "charge_voltage_limit": cvl / 10, "discharge_voltage_limit": dvl / 10,
        "charge_current_limit": ccl / 10 - 3000,
        "discharge_current_limit_negative": dcl / 10 - 3000})


def test_pylon_hv_system_information_names_the_pack(hv):
    hv.run(1.0, inverter_alive=False)
    frames = {f.arbitration_id: bytes(f.data) for f in ask(hv, 2)}
    series, modules, per_module, volts, amp_hours = struct.unpack("<HBBHH", frames[0x7320])
    assert (series, modules, per_module) == (16, 1, 16)
    assert volts == round(16 * hv.pack.chem.nominal_v)
    assert amp_hours == round(hv.pack.capacity_ah)


@pytest.mark.parametrize("name", NAMES)
def test_nothing_goes_out_before_the_firmware_has_published(name):
    bench = CanBench(name)
    try:
        if name == "pylon-hv":
            bench.inverter.send(can.Message(arbitration_id=0x4200, is_extended_id=True,
                                            data=bytes(8)))
        bench.link.poll(0.05)  # no step yet
        assert bench.inverter.recv(timeout=0.0) is None
        assert bench.link.node.keepalives == (1 if name == "pylon-hv" else 0)
        if name == "pylon-lv":  # the frames due wait for the first step, then go at once
            bench.tick(inverter_alive=False)
            assert {f.arbitration_id for _, f in bench.received} == set(LV_IDS)
    finally:
        bench.close()


def test_the_enable_flags_never_say_yes_beside_a_limit_of_zero_on_the_wire(lv):
    """From boot: the contactors close and the limits ramp up from 0."""
    lv.run(20.0)
    at = {}
    for t, f in lv.received:
        at.setdefault(t, {})[f.arbitration_id] = bytes(f.data)
    pairs = [(struct.unpack("<HhhH", frames[0x351]), frames[0x35C][0])
             for frames in at.values() if 0x351 in frames]
    assert any(ccl == 0 for (_, ccl, _, _), _ in pairs)  # seen at 0 ...
    assert any(ccl > 0 for (_, ccl, _, _), _ in pairs)  # ... and above
    for (_, ccl, dcl, _), requests in pairs:
        assert bool(requests & 0x80) == (ccl > 0) and bool(requests & 0x40) == (dcl > 0)
