"""Issue 17, the inverter side on the command line: `bms-emu inverter` refuses bad options
before it opens a bus, `--profile inverter` wants the bus, `serve --sim` runs on field links
alone; and the closed loop in two processes on one host over udp_multicast - `serve --sim
--can ... --profile inverter` (no serial port) and `bms-emu inverter` - rides through an
outage on the battery, recharges, and, once the inverter is gone, the emulator takes its
configured keep-alive action."""

from __future__ import annotations

import json
import subprocess

import pytest
from pymodbus.client import ModbusTcpClient

from bms_emu.main import main
from tests.bms.links.can.test_udp_multicast import group, multicast_or_skip
from tests.bms_emu.test_modbus_cli import free_tcp_port
from tests.support.processes import CLI, Proc

BUS = "udp_multicast:239.74.0.1"


@pytest.mark.parametrize(("argv", "words"), [
    (["inverter", "--can", "can0"], "--can = 'can0': must be INTERFACE:CHANNEL[@BITRATE]"),
    (["inverter", "--can", "virtual:bench"],
     "a virtual bus reaches only buses of the same process"),
    (["inverter", "--can", BUS, "--outage", "60:300"],
     "--load-w: give the power the load draws (W)"),
    (["inverter", "--can", BUS, "--outage", "60:300", "--outage", "2m:1m", "--load-w", "50"],
     "--outage = '120:60': overlaps the outage 60-360 s"),
    (["inverter", "--can", BUS, "--outage", "1h", "--load-w", "50"],
     "--outage = '1h': must be AT:LEN"),
    (["inverter", "--can", BUS, "--tick", "5"], "--tick = 5.0: must be within [0.001, 1]"),
    (["run", "--profile", "inverter"],
     "--profile = 'inverter': the pack's current comes from `bms-emu inverter` on a CAN bus"),
    (["rig", "--serial", "/dev/null", "--profile", "inverter"],
     "give that bus as --can INTERFACE:CHANNEL too"),
    (["serve", "--sim", "--no-nvm", "--serial", "/dev/null", "--profile", "inverter"],
     "--profile = 'inverter': the pack's current comes from"),
    (["serve", "--hil", "--no-nvm", "--can", BUS],
     "--sim may run on --can or --modbus alone"),
])
def test_bad_options_are_refused_before_a_bus_is_opened(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bms-emu {argv[0]}: error:") and words in err, err


def test_the_closed_loop_rides_through_recharges_and_meets_the_keepalive_action(
        tmp_path, multicast_alone):
    channel = group()
    multicast_or_skip(channel)
    bus = f"udp_multicast:{channel}"
    config = tmp_path / "fw.toml"
    config.write_text('[can]\nkeepalive_action = "open"\nkeepalive_timeout_s = 3\n')
    stats = tmp_path / "stats.json"
    serve = subprocess.Popen(
        [*CLI, "serve", "--sim", "--no-nvm", "--autostart", "--can", bus, "--profile",
         "inverter", "--initial-soc", "50", "--config", str(config), "--duration", "16",
         "--stats", str(stats)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = serve.stdout.readline()
        assert f"on CAN {bus} (pylon-lv)" in started, started  # no serial port, no MQTT
        inverter = subprocess.run(
            [*CLI, "inverter", "--can", bus, "--outage", "3:4", "--load-w", "150",
             "--duration", "8", "--json"], capture_output=True, text=True, timeout=60)
        _, serve_err = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
    assert inverter.returncode == 0, inverter.stderr
    assert serve.returncode == 0, serve_err
    summary = json.loads(inverter.stdout)
    outage = summary["outages"][0]
    assert outage["served_s"] > 2.0 and outage["cut_off_at_s"] is None, summary
    modes = [t["mode"] for t in summary["transitions"]]
    assert "discharge" in modes and modes[modes.index("discharge") + 1] == "charge CC"
    assert summary["discharged_wh"] > 0.0  # the pack's current was the inverter's
    assert summary["warnings_seen"] == [] and summary["protections_seen"] == []
    assert summary["frames"]["received"]["bms_limits"] >= 4
    assert "charge CC" in inverter.stderr  # the display, one line a second
    can = json.loads(stats.read_text())["can"]
    assert can["keepalives"] >= 4 and "0x1FFFDC00" in can["unknown_ids"]
    raised = [line for line in serve_err.splitlines() if "INVERTER_TIMEOUT" in line]
    assert raised and "FAULT" in raised[0] and "raised" in raised[0], serve_err


def test_serve_sim_runs_on_modbus_alone_with_no_protocol_link():
    tcp = free_tcp_port()
    serve = Proc("serve", "--sim", "--no-nvm", "--modbus", f"tcp://127.0.0.1:{tcp}", "-v")
    try:
        serve.wait_for(f"Modbus server on tcp://127.0.0.1:{tcp}")
        client = ModbusTcpClient("127.0.0.1", port=tcp, timeout=5, retries=0)
        client.connect()
        marker = client.read_holding_registers(40000, count=2)
        client.close()
        serve.popen.terminate()
        assert serve.popen.wait(10) == 0, serve.output()
    finally:
        serve.stop()
    assert marker.registers == [0x5375, 0x6E53]  # "SunS": the SunSpec map is served
    assert serve.said(f"16 cells (na-nfm) on Modbus tcp://127.0.0.1:{tcp}") == 1

