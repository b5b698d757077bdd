"""`--modbus` addresses: the forms taken, and every bad one named with the forms allowed."""

from __future__ import annotations

import pytest

from bms.data.validation import InputError
from bms.links.modbus.address import ModbusAddress, parse_address


@pytest.mark.parametrize(("text", "expected"), [
    ("tcp://127.0.0.1:1502", ModbusAddress("tcp", host="127.0.0.1", port=1502)),
    ("tcp://0.0.0.0", ModbusAddress("tcp", host="0.0.0.0", port=502)),
    ("tcp://[::1]:0", ModbusAddress("tcp", host="::1", port=0)),
    ("rtu:/dev/ttyUSB0@19200", ModbusAddress("rtu", device="/dev/ttyUSB0", baud=19200)),
    ("rtu:/dev/ttyUSB0", ModbusAddress("rtu", device="/dev/ttyUSB0", framing="8E1")),
    ("rtu:/dev/ttyACM1@9600,8n2", ModbusAddress("rtu", device="/dev/ttyACM1", baud=9600,
                                                framing="8N2")),
])
def test_the_forms_taken(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "named"), [
    ("udp://host:502", "not a Modbus address; give tcp://HOST[:PORT]"),
    ("tcp://host:70000", "port '70000' is not a TCP port; give 0..65535"),
    ("rtu:/dev/ttyUSB0@19k2", "baud rate '19k2'; give a whole number 1200..4000000"),
    ("rtu:/dev/ttyUSB0@19200,7E1", "framing '7E1'; give one of 8N1, 8E1, 8O1, 8N2"),
])
def test_a_bad_address_is_named_with_what_is_allowed(text, named):
    with pytest.raises(InputError) as caught:
        parse_address(text)
    (problem,) = caught.value.problems
    assert repr(text) in problem and named in problem
    assert caught.value.source == "--modbus"


def test_an_address_reads_back_as_given():
    assert parse_address("tcp://[::1]:1502").describe() == "tcp://[::1]:1502"
    assert parse_address("rtu:/dev/ttyUSB0").describe() == "rtu:/dev/ttyUSB0@19200,8E1"
