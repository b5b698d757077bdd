"""The firmware end to end through `bms-emu run --json`: injected faults in the simulated
pack come out as fault events, a final state and final contactors in the JSON summary."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from bms.data.config import ContactorConfig, default_config
from bms.data.presets import PRESETS
from bms_emu.main import main

NFM = PRESETS["na-nfm"]


def run_json(capsys, *args: str) -> dict:
    assert main(["run", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def raised(d: dict, *names: str) -> list[dict]:
    return [e for e in d["events"] if e["action"] == "raised" and (not names or e["name"] in names)]


def default_row(fault: str, level: str, quantity: str, n_series: int):
    (row,) = [r for r in default_config(NFM, n_series, NFM.capacity_ah).protection
              if (r.fault, r.level, r.quantity) == (fault, level, quantity)]
    return row


def test_sensor_offset_trips_within_the_debounce_and_opens_the_contactors(capsys):
    d = run_json(capsys, "--series", "4", "--duration", "20m",
                 "--inject", "600:sensor-offset:cell=3,offset_v=0.6")
    hits = raised(d, "CELL_OVERVOLTAGE", "VOLTAGE_SENSOR_FAULT")
    assert hits, d["events"]
    first = hits[0]
    row = default_row(first["name"], first["level"], "cell_v_max", 4)
    assert 600.0 <= first["t_s"] <= 600.0 + row.debounce_s + 1.0
    assert first["cell"] == 3  # numbered as on the label, as injected
    assert first["value"] > row.threshold
    assert not [e for e in d["events"] if e["t_s"] < 600.0]
    assert d["final"]["state"] == "FAULT"
    assert d["final"]["contactors"] == "open"
    assert d["final"]["charge_limit_a"] == 0.0 and d["final"]["discharge_limit_a"] == 0.0


def test_open_sense_wire_is_reported_after_it_opens(capsys):
    d = run_json(capsys, "--series", "8", "--duration", "10m",
                 "--inject", "300:sense-open:cell=5")
    hits = raised(d, "OPEN_WIRE")
    assert hits, d["events"]
    assert 300.0 < hits[0]["t_s"] < 300.0 + 10.0
    assert hits[0]["cell"] in (5, 6)  # cell 5 or the neighbour sharing the wire
    assert not [e for e in d["events"] if e["t_s"] < 300.0]
    assert d["final"]["state"] == "FAULT" and d["final"]["contactors"] == "open"


def test_open_precharge_resistor_ends_in_precharge_failed_and_fault(capsys):
    d = run_json(capsys, "--series", "4", "--duration", "1m", "--inject", "0:precharge-open")
    assert [e["name"] for e in raised(d)] == ["PRECHARGE_FAILED"]
    assert raised(d)[0]["level"] == "FAULT"
    assert d["final"]["state"] == "FAULT"
    assert d["final"]["contactors"] == "open"


def test_welded_positive_contactor_is_reported_after_a_fault_opens_the_contactors(capsys):
    d = run_json(capsys, "--series", "4", "--duration", "3m",
                 "--inject", "60:contactor-weld:contactor=positive",
                 "--inject", "120:sensor-offset:cell=1,offset_v=1.5")
    faults = [e for e in raised(d) if e["level"] == "FAULT" and e["name"] != "CONTACTOR_WELDED"]
    assert faults and faults[0]["t_s"] >= 120.0, d["events"]
    opened_s = faults[0]["t_s"]  # a FAULT opens every contactor in the step it trips
    welds = raised(d, "CONTACTOR_WELDED")
    assert welds, f"no CONTACTOR_WELDED after the open at {opened_s} s: {d['events']}"
    weld_check_s = ContactorConfig().weld_check_s
    assert opened_s < welds[0]["t_s"] <= opened_s + weld_check_s + 1.0
    assert d["final"]["state"] == "FAULT"


# --- a configuration file changes when the fault trips ----------------------------------

# Under the default 4.08 V threshold; its WARNING and ALARM, 20 and 10 mV lower, still above
# a full cell's 4.0 V (a row at or under that is refused).
TIGHT_OV_FAULT_V = 4.03
# At 90 % SoC the cells read ~3.77 V at rest (3.76-3.79 V with the bleeds): +0.28 V puts
# cell 1 near 4.04-4.07 V, over the tightened threshold and under the default one.
OFFSET = ["--inject", "60:sensor-offset:cell=1,offset_v=0.28"]
SMALL = ["--series", "4", "--duration", "90s", "--profile", "rest"]


def tightened_defaults(capsys, threshold_v: float) -> tuple[str, float]:
    """`bms-emu config --defaults` output with the CELL_OVERVOLTAGE FAULT threshold changed
    (and its WARNING and ALARM 20 and 10 mV under it: a WARNING trips before its ALARM,
    an ALARM before its FAULT); returns the text and the default threshold it replaced."""
    assert main(["config", "--defaults", "--series", "4"]) == 0
    text = capsys.readouterr().out
    default_v = tomllib.loads(text)["protection"]["CELL_OVERVOLTAGE"]["FAULT"]["threshold"]
    for level, below_v in (("WARNING", 0.02), ("ALARM", 0.01), ("FAULT", 0.0)):
        section = re.compile(rf"(\[protection\.CELL_OVERVOLTAGE\.{level}\]\nthreshold = )(\S+)")
        text, n = section.subn(lambda m, v=threshold_v - below_v: f"{m.group(1)}{v:.3f}", text)
        assert n == 1
    data = tomllib.loads(text)
    assert data["protection"]["CELL_OVERVOLTAGE"]["FAULT"]["threshold"] == threshold_v
    return text, default_v


def ov_fault(d: dict) -> list[dict]:
    return [e for e in raised(d, "CELL_OVERVOLTAGE") if e["level"] == "FAULT"]


def test_config_file_with_a_tighter_overvoltage_fault_trips_where_the_default_does_not(
        capsys, tmp_path):
    text, default_v = tightened_defaults(capsys, TIGHT_OV_FAULT_V)
    assert default_v > TIGHT_OV_FAULT_V
    path = tmp_path / "tight.toml"
    path.write_text(text, encoding="utf-8")

    default_run = run_json(capsys, *SMALL, *OFFSET)
    # the offset cell reads between the two thresholds
    assert TIGHT_OV_FAULT_V < default_run["final"]["cell_v_max"] < default_v
    assert ov_fault(default_run) == []
    assert default_run["final"]["state"] == "RUN"
    assert default_run["final"]["contactors"] == "closed"

    tight_run = run_json(capsys, *SMALL, *OFFSET, "--config", str(path))
    debounce_s = default_row("CELL_OVERVOLTAGE", "FAULT", "cell_v_max", 4).debounce_s
    (trip,) = ov_fault(tight_run)
    assert trip["t_s"] == pytest.approx(60.0 + debounce_s)
    assert trip["cell"] == 1
    assert TIGHT_OV_FAULT_V < trip["value"] < default_v
    assert tight_run["final"]["state"] == "FAULT"
    assert tight_run["final"]["contactors"] == "open"
