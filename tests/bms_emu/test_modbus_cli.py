"""`serve --modbus`: the SunSpec map served beside the serial link by the real command, its
options refused together with a reason each, and docs/modbus.md what `bms-emu modbus-map`
prints."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest
import sunspec2.modbus.client as sunspec_client
from pymodbus.client import ModbusTcpClient

from bms.links.modbus.sunspec_points import point
from bms_emu.main import main
from tests.bms_emu.test_cli_input_errors import refused
from tests.support.processes import Proc

DOC = Path(__file__).resolve().parents[2] / "docs" / "modbus.md"


@pytest.fixture
def port():
    """A pseudo-terminal for the protocol (nobody at the other end)."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


def free_tcp_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def test_serve_serves_the_sunspec_map_beside_the_serial_link(port, tmp_path):
    tcp = free_tcp_port()
    stats = tmp_path / "stats.json"
    serve = Proc("serve", "--serial", port, "--sim", "--no-nvm", "--pack-id", "rack-7",
                 "--modbus", f"tcp://127.0.0.1:{tcp}", "--modbus-commands", "state",
                 "--stats", str(stats), "-v")
    try:
        serve.wait_for(f"Modbus server on tcp://127.0.0.1:{tcp}")
        device = sunspec_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1",
                                                             ipport=tcp, timeout=5)
        device.scan()
        found = sorted(mid for mid in device.models if isinstance(mid, int))
        serial_number = device.models[1][0].SN.cvalue
        control = device.models[802][0].LocRemCtl.value
        set_op = device.models[802][0].SetOp.offset + device.models[802][0].model_addr
        device.close()
        client = ModbusTcpClient("127.0.0.1", port=tcp, timeout=5, retries=0)
        client.connect()
        written = client.write_register(set_op, 2)  # DISCONNECT: state is enabled
        client.close()
        serve.popen.terminate()
        assert serve.popen.wait(10) == 0, serve.output()
    finally:
        serve.stop()
    assert found == [1, 802, 803, 804, 805] and serial_number == "rack-7"
    assert control == point("802.LocRemCtl").symbols["REMOTE"]  # --modbus-commands state
    assert not written.isError()
    assert serve.said(f"on {port} at 921600 baud and Modbus tcp://127.0.0.1:{tcp}") == 1
    figures = json.loads(stats.read_text())["modbus"]
    assert figures["reads"] > 0 and figures["writes"] == 1


def test_every_bad_modbus_option_is_named_at_once(capsys):
    err = refused(capsys, ["serve", "--sim", "--serial", "/dev/null", "--modbus", "udp://x",
                           "--modbus-unit", "300", "--modbus-commands", "config,state"])
    assert "'udp://x': not a Modbus address; give tcp://HOST[:PORT]" in err
    assert "--modbus-unit = 300" in err
    assert "config: no Modbus point does that; Modbus writes may enable state, clear-faults" in err


def test_modbus_options_without_modbus_are_refused(capsys):
    err = refused(capsys, ["serve", "--sim", "--serial", "/dev/null", "--modbus-unit", "3",
                           "--modbus-commands", "state"])
    assert "--modbus-unit = 3: needs --modbus" in err
    assert "--modbus-commands = 'state': needs --modbus" in err


def test_the_committed_reference_is_current(capsys):
    assert main(["modbus-map"]) == 0
    assert DOC.read_text(encoding="utf-8") == capsys.readouterr().out, (
        "docs/modbus.md is stale: run `bms-emu modbus-map > docs/modbus.md`")


def test_the_readmes_register_table_is_the_maps():
    text = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+(?:\.\.\d+)?) \| `(\d+\.\w+)` \|", text, re.MULTILINE)
    doc = DOC.read_text(encoding="utf-8")
    assert len(rows) >= 10
    for address, key in rows:
        model, name = key.split(".")
        assert f"| {address} | `{name}` |" in _model_section(doc, model), key


def _model_section(doc: str, model: str) -> str:
    return doc.split(f"### Model {model}:")[1].split("### Model")[0]
