"""Fault levels as the inverter sees them: a WARNING sets the warning (pylon-hv: alarm)
flag of its fault, an ALARM or a FAULT its protection flag, by the one table
(`bms.links.can.fault_flags`); a FAULT takes the limits to 0 and the requests with them."""

from __future__ import annotations

import struct
from pathlib import Path

import can
import pytest

from bms.data.faults import FAULT_CODES, Level
from bms.links.can.fault_flags import FAULT_FLAGS, UNUSED_FLAGS, flag_table_markdown, flag_values
from bms.links.can.frame_sets import BMS_NODE, NAMES, frame_set
from bms.links.can.values import SOURCES
from tests.bms.links.can.bench import CanBench

DOCS = Path(__file__).resolve().parents[4] / "docs" / "can.md"


@pytest.mark.parametrize("name", NAMES)
def test_every_fault_has_a_flag_at_every_level_and_every_flag_is_in_the_dbc(name):
    table = FAULT_FLAGS[name]
    assert set(table) == set(FAULT_CODES)
    signals = {s.name for m in frame_set(name).db.messages if BMS_NODE in m.senders
               for s in m.signals}
    used = {s for flags in table.values() for s in flags if s}
    assert used | set(UNUSED_FLAGS[name]) <= signals


@pytest.mark.parametrize("name", NAMES)
def test_every_signal_the_bms_sends_has_a_source(name):
    flags = set(flag_values(name, (0, 0, 0)))
    missing = [f"{m.name}.{s.name}" for m in frame_set(name).db.messages
               if BMS_NODE in m.senders for s in m.signals
               if s.name not in SOURCES and s.name not in flags]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("level", list(Level))
def test_one_fault_at_one_level_sets_its_flag_and_no_other(name, level):
    k = list(Level).index(level)
    for fault, code in FAULT_CODES.items():
        bitmaps = [0, 0, 0]
        bitmaps[k] = 1 << code
        set_flags = {s for s, v in flag_values(name, tuple(bitmaps)).items() if v}
        assert set_flags == {FAULT_FLAGS[name][fault][k]} - {None}, fault


def test_the_warning_is_the_warning_flag_and_alarm_and_fault_the_protection_flag():
    assert FAULT_FLAGS["pylon-lv"]["CELL_OVERVOLTAGE"] == (
        "warning_high_voltage", "protection_high_voltage", "protection_high_voltage")
    assert FAULT_FLAGS["pylon-hv"]["DISCHARGE_OVERTEMP"] == (
        "alarm_discharge_high_temperature", "protection_discharge_high_temperature",
        "protection_discharge_high_temperature")
    # pylon-hv's error bits are malfunctions: a FAULT's only
    assert FAULT_FLAGS["pylon-hv"]["VOLTAGE_SENSOR_FAULT"] == (
        None, None, "error_voltage_sensor")
    # every level of every fault shows on pylon-lv
    assert all(None not in flags for flags in FAULT_FLAGS["pylon-lv"].values())


@pytest.mark.parametrize("name", NAMES)
def test_docs_show_the_table_the_code_uses(name):
    assert flag_table_markdown(name) in DOCS.read_text()


def flags_now(bench: CanBench) -> set[str]:
    """The flags set in the newest 0x359 (pylon-lv) or 0x4250 (pylon-hv)."""
    if bench.frames.name == "pylon-lv":
        decoded = bench.decoded("bms_protection_warning")
    else:
        bench.inverter.send(can.Message(arbitration_id=0x4200, is_extended_id=True,
                                        data=bytes(8)))
        bench.tick()
        decoded = bench.decoded("bms_status")
    return {k for k, v in decoded.items() if v == 1 and "_" in k and k.split("_")[0] in (
        "warning", "protection", "alarm", "error")}


HOT = {"pylon-lv": ("warning_high_temperature", "protection_high_temperature"),
       "pylon-hv": ("alarm_discharge_high_temperature", "protection_discharge_high_temperature")}


@pytest.mark.parametrize("name", NAMES)
def test_a_warning_raises_the_warning_flag_and_an_alarm_the_protection_flag(name):
    """Every temperature sensor read hot: past the DISCHARGE_OVERTEMP WARNING (54 degC),
    then past its ALARM (57 degC)."""
    bench = CanBench(name)
    try:
        bench.run(10.0)
        assert flags_now(bench) == set()
        warning, protection = HOT[name]
        for sensor in range(1, bench.pack.sensors.n_temp + 1):
            bench.inject(f"0:temp-sensor-offset:sensor={sensor},offset_c=30.5")
        bench.run(8.0)
        assert bench.act.level_bitmaps[0] == 1 << FAULT_CODES["DISCHARGE_OVERTEMP"]
        assert bench.act.level_bitmaps[1:] == (0, 0)
        assert flags_now(bench) == {warning}
        for sensor in range(1, bench.pack.sensors.n_temp + 1):
            bench.inject(f"0:temp-sensor-offset:sensor={sensor},offset_c=3.0")  # 58.5 degC
        bench.run(8.0)
        assert bench.act.level_bitmaps[1] == 1 << FAULT_CODES["DISCHARGE_OVERTEMP"]
        assert flags_now(bench) == {warning, protection}
        assert bench.act.state == "RUN"
    finally:
        bench.close()


def test_a_fault_takes_the_limits_to_zero_and_the_requests_with_them_pylon_lv():
    bench = CanBench("pylon-lv")
    try:
        bench.run(10.1)
        cvl, ccl, dcl, dvl = struct.unpack("<HhhH", bytes(bench.last("bms_limits").data))
        assert ccl > 0 and dcl > 0
        assert bench.last("bms_requests").data[0] & 0xC0 == 0xC0
        bench.inject("0:sensor-offset:cell=3,offset_v=1.2")  # reads past over-voltage
        bench.run(4.0)
        assert bench.act.state == "FAULT" and not bench.act.contactors.main_closed
        cvl, ccl, dcl, dvl = struct.unpack("<HhhH", bytes(bench.last("bms_limits").data))
        assert (ccl, dcl) == (0, 0)
        assert bench.last("bms_requests").data[0] & 0xE0 == 0  # no charge, discharge, force
        assert "protection_high_voltage" in flags_now(bench)
    finally:
        bench.close()


def test_a_fault_forbids_charge_and_discharge_pylon_hv():
    bench = CanBench("pylon-hv")
    try:
        bench.run(10.0)
        assert flags_now(bench) == set()
        assert bytes(bench.last("bms_forbidden").data)[:2] == b"\x00\x00"
        bench.inject("0:sensor-offset:cell=3,offset_v=1.2")
        bench.run(4.0)
        assert bench.act.state == "FAULT"
        assert "protection_cell_high_voltage" in flags_now(bench)
        assert bytes(bench.last("bms_forbidden").data)[:2] == b"\xaa\xaa"
        _, _, ccl, dcl = struct.unpack("<HHHH", bytes(bench.last("bms_limits").data))
        assert (ccl, dcl) == (30000, 30000)  # 0 A after the 3000 A offset
        assert bench.last("bms_status").data[0] & 0x07 == 0  # sleep: contactors open
    finally:
        bench.close()
