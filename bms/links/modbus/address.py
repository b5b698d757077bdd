"""Where the Modbus server listens, as `--modbus` gives it: `tcp://HOST[:PORT]` or
`rtu:DEVICE[@BAUD[,FRAMING]]`. Every problem is named with the value and the forms allowed;
nothing is opened here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bms.data.validation import InputError

TCP_DEFAULT_PORT = 502
# The Modbus serial line specification's defaults: 19200 baud, even parity.
RTU_DEFAULT_BAUD = 19200
RTU_DEFAULT_FRAMING = "8E1"
FRAMINGS = ("8N1", "8E1", "8O1", "8N2")  # 8 data bits; parity N, E or O; 1 or 2 stop bits
BAUD_RANGE = (1200, 4_000_000)
FORMS = ("tcp://HOST[:PORT] (PORT 0: any free port; default 502) or "
         f"rtu:DEVICE[@BAUD[,FRAMING]] (default @{RTU_DEFAULT_BAUD},{RTU_DEFAULT_FRAMING}; "
         f"FRAMING one of {', '.join(FRAMINGS)})")
TCP = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]@]+)(?::(?P<port>[^:/]*))?")
RTU = re.compile(r"rtu:(?P<device>[^@]+?)(?:@(?P<baud>[^,]*)(?:,(?P<framing>.*))?)?")


@dataclass(frozen=True)
class ModbusAddress:
    transport: str  # "tcp" or "rtu"
    host: str = ""  # tcp
    port: int = TCP_DEFAULT_PORT  # tcp
    device: str = ""  # rtu: the serial port
    baud: int = RTU_DEFAULT_BAUD  # rtu
    framing: str = RTU_DEFAULT_FRAMING  # rtu

    @property
    def parity(self) -> str:
        return self.framing[1]

    @property
    def stop_bits(self) -> int:
        return int(self.framing[2])

    def describe(self, port: int | None = None) -> str:
        """As given (`port`: the port a TCP server was given when it asked for any)."""
        if self.transport == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp://{host}:{self.port if port is None else port}"
        return f"rtu:{self.device}@{self.baud},{self.framing}"


def parse_address(text: str, source: str = "--modbus") -> ModbusAddress:
    """The address `text` names; InputError from `source` naming what is wrong."""
    tcp, rtu = TCP.fullmatch(text), RTU.fullmatch(text)
    if tcp:
        return _tcp(text, tcp, source)
    if rtu:
        return _rtu(text, rtu, source)
    raise InputError(source, [f"{text!r}: not a Modbus address; give {FORMS}"])


def _tcp(text: str, match: re.Match, source: str) -> ModbusAddress:
    port_text = match["port"]
    if port_text is None:
        port = TCP_DEFAULT_PORT
    elif not port_text.isdigit() or int(port_text) > 65535:
        raise InputError(source, [f"{text!r}: port {port_text!r} is not a TCP port; give "
                                  "0..65535 (0: any free port; default 502)"])
    else:
        port = int(port_text)
    return ModbusAddress("tcp", host=match["host"].strip("[]"), port=port)


def _rtu(text: str, match: re.Match, source: str) -> ModbusAddress:
    problems = []
    baud_text, framing = match["baud"], match["framing"]
    baud = RTU_DEFAULT_BAUD
    if baud_text is not None:
        low, high = BAUD_RANGE
        if not baud_text.isdigit() or not low <= int(baud_text) <= high:
            problems.append(f"{text!r}: baud rate {baud_text!r}; give a whole number "
                            f"{low}..{high} (default {RTU_DEFAULT_BAUD})")
        else:
            baud = int(baud_text)
    if framing is not None and framing.upper() not in FRAMINGS:
        problems.append(f"{text!r}: framing {framing!r}; give one of {', '.join(FRAMINGS)} "
                        f"(default {RTU_DEFAULT_FRAMING}: 8 data bits, even parity, 1 stop bit)")
    if problems:
        raise InputError(source, problems)
    return ModbusAddress("rtu", device=match["device"], baud=baud,
                         framing=(framing or RTU_DEFAULT_FRAMING).upper())
