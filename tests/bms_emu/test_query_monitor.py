"""`bms-emu query` and `bms-emu monitor` against a real `serve --sim` over a real pty pair.

The emulator runs as a subprocess (with a --duration safety limit) on one end of a
`bms-emu pty` pair; the commands run in-process through `bms_emu.main.main` on the other
end, so their exit codes and output are what a user gets. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from bms.core.signals import State
from bms.data.validation import InputError
from bms.host import views
from bms.links.client import Client
from bms_emu.main import main
from bms_emu.monitor_cmd import (
    BALANCING_MARK,
    BAR_WIDTH,
    STALE_PERIODS,
    Monitor,
    Snapshot,
    bar,
    render,
)
from bms_emu.query_cmd import parse_pairs
from protocol import messages as pm
from tests.support.processes import CLI, wait_until

SERIES = 8
BAR = re.compile(f"[█░]{{{BAR_WIDTH}}}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def query(capsys, port: str, *args: str, timeout: str = "2") -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `bms-emu query --serial PORT ...`."""
    capsys.readouterr()
    code = main(["query", "--serial", port, "--timeout", timeout, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def query_json(capsys, port: str, *args: str) -> dict:
    code, out, err = query(capsys, port, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def _emulator(tmp: Path, *serve_args: str):
    """Starts a pty pair and `serve --sim` on its first end; returns (port, processes)."""
    a, b = tmp / "bms", tmp / "host"
    procs = [subprocess.Popen([*CLI, "pty", "--link", str(a), "--link", str(b)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    try:
        wait_until(lambda: a.exists() and b.exists(), 10, "the pty pair", every_s=0.1)
        procs.append(subprocess.Popen(
            [*CLI, "serve", "--serial", str(a), "--sim", "--series", str(SERIES),
             "--tick", "0.05", "--duration", "120", *serve_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        wait_until(lambda: main(["query", "--serial", str(b), "--timeout", "0.5", "info"]) == 0,
                   20, "the emulator's first answer", every_s=0.2)
    except BaseException:
        for p in reversed(procs):
            _stop(p)
        raise
    return str(b), procs


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """One emulator for the module: 8 cells, healthy."""
    port, procs = _emulator(tmp_path_factory.mktemp("link"))
    try:
        yield port
    finally:
        for p in reversed(procs):
            _stop(p)


# --- query ---------------------------------------------------------------------------------

def test_query_info_and_status_use_names(capsys, port):
    info = query_json(capsys, port, "info")
    assert info["n_series"] == SERIES and info["mode"] == "SIM"
    assert info["chemistry"] == "na-nfm" and "TELEMETRY" in info["capabilities"]
    status = query_json(capsys, port, "status")
    assert status["state"] in list(State) and status["faults"] == []
    assert status["contactors"] in ("open", "closed")
    assert set(status["contactors_closed"]) <= set(pm.CONTACTOR_BITS)
    assert 0.0 <= status["soc_pct"] <= 100.0
    assert 1.0 < status["cell_v_min"] <= status["cell_v_max"] < 5.0
    assert 1 <= status["cell_v_max_cell"] <= SERIES  # numbered as on the label
    code, out, _ = query(capsys, port, "status")  # the table a person reads
    assert code == 0
    # By name; the state may have moved on since the JSON query (a fresh pack precharges).
    assert any(name in out for name in list(State))
    assert "%" in out and " V" in out and " A (" in out


def test_query_speaks_1_1_and_shows_identity_levels_and_ranges(capsys, port):
    """`query` asks in the newest revision: DeviceInfo names the pack and build, Status gives
    the faults by level, the bus voltage and the feedback, the parameters their ranges."""
    info = query_json(capsys, port, "info")
    assert info["protocol_version"] == 2 and info["protocol_revisions"] == [1, 2]
    assert info["pack_id"] and info["serial"] == f"{info['pack_id']}-sim"
    assert info["firmware_build"] and info["max_page_entries"] == 32
    assert info["config_schema_version"] >= 1 and "0x04 Status" in info["message_types"]
    status = query_json(capsys, port, "status")
    assert set(status["faults_by_level"]) == {"WARNING", "ALARM", "FAULT"}
    assert status["store"] in ("none", "ok") and isinstance(status["contactor_feedback"], list)
    config = query_json(capsys, port, "config", "measurement_timeout_s")
    timeout = config["parameters"]["measurement_timeout_s"]
    assert (timeout["min"], timeout["min_excluded"], timeout["max"]) == (0.0, True, 10.0)
    assert timeout["default"] == 1.0 and timeout["access"] == ["read", "write"]
    code, out, _ = query(capsys, port, "config", "measurement_timeout_s")
    assert code == 0 and "(0, 10]" in out


def test_query_cells_temps_soc_balancing(capsys, port):
    cells = query_json(capsys, port, "cells")["cell_voltage_v"]
    assert len(cells) == SERIES and all(1.0 < v < 5.0 for v in cells)
    temps = query_json(capsys, port, "temps")["temperature_c"]
    assert len(temps) == query_json(capsys, port, "info")["n_temp_sensors"] == 2
    assert len(query_json(capsys, port, "soc")["soc_pct"]) == SERIES
    balancing = query_json(capsys, port, "balancing")
    assert balancing["mode"] in ("off", "voltage", "soc") and len(balancing["mask"]) == SERIES
    code, out, _ = query(capsys, port, "cells")
    assert code == 0 and "spread" in out
    assert re.search(rf"\b{SERIES}\b\D*\d\.\d{{3}} V", out)  # cells numbered from 1


def test_query_through_the_console_script(port):
    done = subprocess.run([*CLI, "query", "--serial", port, "--json", "status"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] in list(State)


def _value(capsys, port: str, name: str):
    return query_json(capsys, port, "config", name)["values"][name]


def test_set_a_value_and_read_it_back(capsys, port):
    new = 1.25 if _value(capsys, port, "limits.max_charge_a") != 1.25 else 1.2
    result = query_json(capsys, port, "set", "limits.max_charge_a", str(new))
    assert result["values"] == {"limits.max_charge_a": new}
    assert _value(capsys, port, "limits.max_charge_a") == new
    # by numeric id, and a choice parameter
    ids = query_json(capsys, port, "config", "limits")["parameters"]
    pid = ids["limits.max_charge_a"]["id"]
    assert query_json(capsys, port, "set", hex(pid), "1.1")["values"] == {
        "limits.max_charge_a": 1.1}
    mode = _value(capsys, port, "balancing.mode")
    other = "soc" if mode != "soc" else "voltage"
    code, out, err = query(capsys, port, "set", "balancing.mode", other)
    assert code == 0, err
    assert "balancing.mode" in out and other in out  # the values now in effect, as a table
    assert query_json(capsys, port, "balancing")["mode"] == other


def test_set_out_of_range_is_refused_and_changes_nothing(capsys, port):
    before = _value(capsys, port, "limits.max_charge_a")
    code, _, err = query(capsys, port, "set", "limits.max_charge_a", "1e6")
    assert code == 3
    assert err.startswith("bms-emu query: refused: OUT_OF_RANGE: ")
    assert "limits.max_charge_a" in err and "1000000" in err
    assert _value(capsys, port, "limits.max_charge_a") == before


def test_set_two_values_one_bad_applies_neither(capsys, port):
    charge = _value(capsys, port, "limits.max_charge_a")
    discharge = _value(capsys, port, "limits.max_discharge_a")
    new_charge = 1.0 if charge != 1.0 else 0.9
    code, _, err = query(capsys, port, "set", "limits.max_charge_a", str(new_charge),
                         "limits.max_discharge_a", "-5")
    assert code == 3 and "limits.max_discharge_a" in err
    assert _value(capsys, port, "limits.max_charge_a") == charge
    assert _value(capsys, port, "limits.max_discharge_a") == discharge


def test_set_bad_names_and_values_are_local_errors(capsys, port):
    charge = _value(capsys, port, "limits.max_charge_a")
    code, _, err = query(capsys, port, "set", "limits.max_charg_a", "1", "limits.max_charge_a",
                         "lots", "balancing.mode", "fast")
    assert code == 2
    assert "'limits.max_charg_a'" in err and "close names: limits.max_charge_a" in err
    assert "'lots'" in err and "must be a number" in err
    assert "'fast'" in err and "off, voltage, soc" in err
    assert _value(capsys, port, "limits.max_charge_a") == charge
    code, _, err = query(capsys, port, "set", "limits.max_charge_a")
    assert code == 2 and "give a value after each parameter" in err


def test_command_standby_shows_in_status(capsys, port):
    code, out, err = query(capsys, port, "command", "standby")
    assert code == 0 and "accepted" in out, err
    wait_until(lambda: query_json(capsys, port, "status")["state"] == "STANDBY", 3,
               "STANDBY after `command standby`", every_s=0.1)
    status = query_json(capsys, port, "status")
    assert status["contactors"] == "open" and status["contactors_closed"] == []


def test_no_port_and_no_answer_exit_4(capsys, tmp_path):
    code, _, err = query(capsys, str(tmp_path / "nothing"), "status", timeout="0.3")
    assert code == 4 and "cannot open" in err and "nothing" in err
    master, slave = os.openpty()  # a port nobody answers on
    try:
        code, _, err = query(capsys, os.ttyname(slave), "status", timeout="0.3")
    finally:
        os.close(master)
        os.close(slave)
    assert code == 4 and "no answer to GetStatus" in err


def test_a_bad_injection_is_refused_with_its_reason(capsys, port):
    code, _, err = query(capsys, port, "inject", "0:sensor-offset:cell=99,offset_v=0.1")
    assert code == 3 and "BAD_VALUE" in err and "cell" in err and "99" in err


def test_faults_pages_through_the_log_with_names(capsys, tmp_path):
    """The fault comes from `query inject` into the running emulator's pack."""
    port, procs = _emulator(tmp_path)
    try:
        code, out, err = query(capsys, port, "inject", "0:temp-sensor-open:sensor=2")
        assert code == 0 and "scheduled" in out, err
        log = wait_until(lambda: (lambda d: d if d["entries"] else None)(
            query_json(capsys, port, "faults")), 8, "a fault log entry", every_s=0.1)
        first = log["entries"][0]
        assert (first["name"], first["level"], first["action"]) == (
            "TEMP_SENSOR_FAULT", "FAULT", "raised")
        assert (first["sensor"], first["cell"]) == (2, None)  # as injected, from 1
        assert first["value"] == -60.0
        assert first["state"] in list(State) and log["total"] >= len(log["entries"])
        code, out, _ = query(capsys, port, "faults")
        assert code == 0
        assert "TEMP_SENSOR_FAULT" in out and "sensor 2" in out and "-60 °C" in out
        status = query_json(capsys, port, "status")
        assert "TEMP_SENSOR_FAULT" in status["faults"]
    finally:
        for p in reversed(procs):
            _stop(p)


# --- monitor -------------------------------------------------------------------------------

def test_monitor_once_shows_state_and_one_bar_per_cell(capsys, port):
    capsys.readouterr()
    assert main(["monitor", "--serial", port, "--once", "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    state = re.search(r"state\s+(\w+)", out).group(1)
    assert state in list(State)
    assert len(BAR.findall(out)) == SERIES
    assert "link: connected" in out and "temperatures:" in out


async def test_monitor_subscribes_again_when_telemetry_stops(port):
    client = Client(port)
    await client.start(connect_timeout_s=2)
    monitor = Monitor(client, period_s=0.05, timeout_s=1.0)
    loop = asyncio.get_running_loop()

    async def until(cond, within_s: float, what: str):
        end = loop.time() + within_s
        while not cond():
            assert loop.time() < end, what
            await monitor.step()
            await asyncio.sleep(0.02)

    try:
        await until(lambda: monitor.snap.status is not None and monitor.snap.cells_v, 2,
                    "telemetry after subscribing")
        assert monitor.snap.subscribes == 1 and len(monitor.snap.cells_v) == SERIES
        assert monitor.snap.info["n_series"] == SERIES
        # The device forgets the subscription (as after a restart): the monitor notices.
        await client.request(pm.Subscribe(()), 1.0)
        t = monitor.snap.status["time_s"]
        await until(lambda: monitor.snap.subscribes == 2, 2, "a second Subscribe")
        await until(lambda: monitor.snap.status["time_s"] > t + 0.2, 2,
                    "telemetry again")
        await monitor.step()
        assert monitor.snap.link == "connected" and monitor.snap.subscribes == 2
    finally:
        await client.close()


class StaleAnswers(Client):
    """A client on a port that is up, every request answered by a stale Ack."""

    connected = True

    def __init__(self):
        super().__init__("/dev/ttyTEST")
        self.requests = 0

    async def request(self, msg: object, timeout_s: float = 1.0) -> object:
        self.requests += 1
        return pm.Ack(pm.BY_CLASS[pm.GetStatus].type_id)


async def test_monitor_skips_a_poll_answered_with_the_wrong_type():
    client = StaleAnswers()
    monitor = Monitor(client, period_s=0.05, timeout_s=0.1)
    await monitor.step()  # not a crash of the live view: this poll is skipped
    assert monitor.snap.link == "waiting for telemetry" and monitor.snap.info is None
    assert monitor.snap.last_error == "GetInfo was answered with Ack, not DeviceInfo"
    assert monitor.snap.errors == 1 and client.requests == 1
    await asyncio.sleep(STALE_PERIODS * 0.05 + 0.01)
    await monitor.step()  # and the next one tries again
    assert monitor.snap.errors == 2 and client.requests == 2


def _snapshot() -> Snapshot:
    status = pm.Status(
        time_s=12.5, state=State("FAULT").code, contactors=0, fault_bitmap=(1 << 0) | (1 << 15),
        charge_limit_a=0.0, discharge_limit_a=0.0, pack_voltage_v=15.6, current_a=-0.5,
        soc_pct=55.0, soh_pct=98.0, remaining_wh=20.0, runtime_s=math.nan, cell_v_min=3.8,
        cell_v_min_index=0, cell_v_max=4.1, cell_v_max_index=3, temp_c_min=24.0,
        temp_c_min_index=0, temp_c_max=26.0, temp_c_max_index=1, balancing_count=2,
        warning_bitmap=1 << 0, fault_level_bitmap=(1 << 0) | (1 << 15), bus_voltage_v=15.5,
        contactor_feedback=pm.CONTACTOR_BITS["negative"])
    info = pm.DeviceInfo(2, "9.9", "na-nfm", int(pm.Mode.HIL), 4, 1, 2, 1.5, 1,
                         pack_id="rack-7", serial="rack-7-hil", firmware_build="v9.9-2-gabc",
                         protocol_revisions=(1, 2))
    return Snapshot(
        port="/dev/ttyTEST", link="reconnecting", frames=42, errors=1,
        info=views.info_dict(info),
        status=views.status_dict(status), cells_v=[3.8, 3.9, 4.0, 4.1], temps_c=[24.0, 26.0],
        balancing={"mode": "voltage", "mask": [False, True, False, True]})


def _text(renderable, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_render_marks_balancing_cells_and_names_faults():
    out = _text(render(_snapshot()))
    lines = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\W*(\d+) \d\.\d{3} V.*$", out,
                                                              re.M)}
    assert sorted(lines) == [1, 2, 3, 4]
    assert [BALANCING_MARK in lines[i] for i in (1, 2, 3, 4)] == [False, True, False, True]
    assert len(BAR.findall(out)) == 4
    assert "░" * BAR_WIDTH in lines[1] and "█" * BAR_WIDTH in lines[4]  # lowest .. highest
    assert "CELL_OVERVOLTAGE" in out and "TEMP_SENSOR_FAULT" in out
    # The extremes by the cells and sensors a person counts: payload index 3 is cell 4.
    assert "3.800 V (cell 1) / 4.100 V (cell 4)" in out
    assert "24.0 °C (sensor 1) / 26.0 °C (sensor 2)" in out
    assert "FAULT" in out and "open (all open)" in out and "-0.500 A (discharging)" in out
    assert "link: reconnecting" in out and "42 frames" in out
    assert "1: 24.0 °C" in out and "2: 26.0 °C" in out
    assert "55.0 %" in out and "not discharging" in out
    # protocol 1.1: who the device is, the faults by level, the bus and the feedback
    assert "protocol revision 2" in out
    assert "pack rack-7, serial rack-7-hil, build v9.9-2-gabc" in out
    assert "WARNING: CELL_OVERVOLTAGE; FAULT: CELL_OVERVOLTAGE, TEMP_SENSOR_FAULT" in out
    assert "15.60 V / 15.50 V" in out and re.search(r"contactor feedback\s+negative", out)


def test_render_without_data_and_with_many_cells():
    assert "no status yet" in _text(render(Snapshot(port="x")))
    snap = _snapshot()
    snap.cells_v = [3.5 + 0.01 * i for i in range(60)]
    snap.balancing = {"mode": "soc", "mask": [i % 7 == 0 for i in range(60)]}
    snap.window_v = (1.5, 4.2)
    out = _text(render(snap), width=160)
    assert len(BAR.findall(out)) == 60 and out.count(BALANCING_MARK) == 9 + 1  # + caption
    assert "1.500 .. 4.200 V" in out


def test_bar_scales_and_shows_missing_readings():
    assert bar(1.0, 1.0, 2.0, 10) == "░" * 10
    assert bar(2.5, 1.0, 2.0, 10) == "█" * 10
    assert bar(1.5, 1.0, 2.0, 10) == "█" * 5 + "░" * 5
    assert "█" not in bar(None, 1.0, 2.0, 10) and "█" not in bar(math.nan, 1.0, 2.0, 10)


# --- set's conversions, without a device -----------------------------------------------------

PARAMS = [
    {"param_id": 0x101, "kind": int(pm.ValueKind.FLOAT), "name": "limits.max_charge_a",
     "unit": "A", "choices": ()},
    {"param_id": 3, "kind": int(pm.ValueKind.INT), "name": "fault_log_size", "unit": "entries",
     "choices": ()},
    {"param_id": 0x502, "kind": int(pm.ValueKind.BOOL), "name": "balancing.enabled",
     "unit": "", "choices": ()},
    {"param_id": 0x501, "kind": int(pm.ValueKind.CHOICE), "name": "balancing.mode", "unit": "",
     "choices": ("off", "voltage", "soc")},
]


def test_parse_pairs_converts_by_kind():
    values = parse_pairs(["limits.max_charge_a", "1.5", "3", "64.0", "balancing.enabled",
                          "False", "0x501", "soc"], PARAMS)
    assert [(v["param_id"], v["value"]) for v in values] == [
        (0x101, 1.5), (3, 64), (0x502, False), (0x501, "soc")]
    assert isinstance(values[1]["value"], int) and values[2]["value"] is False


def test_parse_pairs_names_every_problem():
    with pytest.raises(InputError) as err:
        parse_pairs(["max_charge_a", "1", "fault_log_size", "2.5", "balancing.enabled", "yes",
                     "balancing.mode", "on", "0x999", "1"], PARAMS)
    text = str(err.value)
    assert "'max_charge_a'" in text and "close names: limits.max_charge_a" in text
    assert "fault_log_size = '2.5': must be a whole number" in text
    assert "balancing.enabled = 'yes': must be true or false" in text
    assert "balancing.mode = 'on': must be one of off, voltage, soc" in text
    assert "'0x999'" in text and len(err.value.problems) == 5
