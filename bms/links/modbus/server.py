"""The Modbus server: the pack's SunSpec map on Modbus TCP or RTU (pymodbus, asyncio), on the
runtime's event loop beside the protocol link and MQTT, reading the same Device.

Reads render the map from what the firmware has published (`bms.links.modbus.pack_view`),
at most once a step. Writes go through the protocol request they stand for and the link's
command policy, as MQTT's commands do (`bms.host.policy`); the answers, per the Modbus
application protocol:

- a register outside the map (reads too), or not a whole point a client may write:
  ILLEGAL_DATA_ADDRESS (02);
- a value the point does not take: ILLEGAL_DATA_VALUE (03);
- a write the policy does not enable (the default: read-only), or that the firmware will
  not act on in its present state: ILLEGAL_FUNCTION (01), "not a request this server
  processes now" (Modbus: "the server is in the wrong state to process a request of this
  type"); so is any function but 03 (read holding registers), 06 and 16 (write), under
  its own code (`bms.links.modbus.functions`);
- anything else going wrong: SERVER_DEVICE_FAILURE (04), logged with its traceback.

TCP answers any unit id (a direct connection has only this device behind it); RTU answers
only its own (`unit_id`) and stays silent for the others and for broadcasts, as a device
on a shared bus must. TCP frames are cut by our own MBAP framing
(`bms.links.modbus.tcp_framing`): pipelined requests are answered in order. A serial port
that cannot be opened or vanishes is retried, and said once per episode, as the protocol's
serial link does; so is a TCP address that cannot be listened on. pymodbus's own log is
held to errors: this module says what matters once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import termios
from collections import Counter
from collections.abc import Callable

import serial
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from bms.core.signals import Actuation, Measurement
from bms.host.device import Device
from bms.host.policy import CommandPolicy
from bms.links.modbus.address import ModbusAddress
from bms.links.modbus.functions import custom_pdus
from bms.links.modbus.pack_view import Nameplate, view_of
from bms.links.modbus.register_map import SunSpecMap, WriteRefused
from bms.links.modbus.tcp_framing import TcpServer
from bms.links.modbus.tcp_framing import log as framing_log
from bms.links.tasks import start_task, stop_task
from protocol import messages as pm

log = logging.getLogger(__name__)

REOPEN_EVERY_S = 1.0
PYMODBUS_LOGGER = "pymodbus.logging"  # `pymodbus.logging.Log`'s
DIGITS = re.compile(r"\d+")
READ_HOLDING, WRITE_ONE, WRITE_MANY = 3, 6, 16
# What a refusal of the device means on Modbus (any other refusal: SERVER_DEVICE_FAILURE).
REFUSALS: dict[int, ExcCodes] = {
    pm.ErrorCode.NOT_ENABLED: ExcCodes.ILLEGAL_FUNCTION,
    pm.ErrorCode.NOT_NOW: ExcCodes.ILLEGAL_FUNCTION,
    pm.ErrorCode.BAD_VALUE: ExcCodes.ILLEGAL_VALUE,
}


class _OneLineOnce(logging.Filter):
    """pymodbus's errors on one line each, and each kind (the text, numbers aside) at most
    once a minute: it appends the last 20 frames it saw (any client's) to every error as a
    hex dump, so a client sending bad headers flooded the log with other clients'
    traffic."""

    def __init__(self, every_s: float = 60.0):
        super().__init__()
        self.every_s = every_s
        self.said_s: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().split("\n", 1)[0]
        kind = DIGITS.sub("#", text)  # "protocol id: 7" and "...: 8" are one kind
        if record.created - self.said_s.get(kind, -math.inf) < self.every_s:
            return False
        self.said_s[kind] = record.created
        record.msg, record.args = f"Modbus: {text} (said once a minute at most)", ()
        return True


class ModbusLink:
    """Serves one Device's SunSpec map at `address` until closed. `start(now_s)` is given
    the runtime's clock; `stats()` is what `serve --stats` shows of it."""

    name = "modbus"

    def __init__(self, address: ModbusAddress, device: Device, plate: Nameplate,
                 policy: CommandPolicy, reopen_every_s: float = REOPEN_EVERY_S):
        self.address = address
        self.device = device
        self.plate = plate
        self.policy = policy
        self.map = SunSpecMap(plate)
        self.reopen_every_s = reopen_every_s
        self.who = f"modbus {address.describe()}"
        self.counts: Counter[str] = Counter()  # reads, writes, refusals by exception, ...
        self.opened = asyncio.Event()
        self.port: int | None = None  # the TCP port listened on
        self.last_error = ""
        self._now_s: Callable[[], float] = lambda: 0.0
        self._task: asyncio.Task | None = None
        self._server: TcpServer | ModbusSerialServer | None = None
        self._lost = asyncio.Event()
        self._image: list[int] = []
        self._image_of: tuple[Actuation | None, Measurement | None, int] | None = None

    @property
    def connected(self) -> bool:
        return self.opened.is_set()

    async def start(self, now_s: Callable[[], float]) -> None:
        logging.getLogger("pymodbus").setLevel(logging.ERROR)
        # Where pymodbus logs everything, and where our TCP framing says what it refused.
        for said in logging.getLogger(PYMODBUS_LOGGER), framing_log:
            if not any(isinstance(f, _OneLineOnce) for f in said.filters):
                said.addFilter(_OneLineOnce())
        self._now_s = now_s
        self._task = start_task(self._keep_serving(), name=self.who)

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    def stats(self) -> dict:
        return {"address": self.address.describe(self.port), "up": self.connected,
                **dict(sorted(self.counts.items()))}

    def describe(self) -> str:
        unit = f" unit {self.plate.unit_id}" if self.address.transport == "rtu" else ""
        return f"Modbus {self.address.describe(self.port)}{unit}"

    # --- the server, kept up ------------------------------------------------------------

    async def _keep_serving(self) -> None:
        try:
            while True:
                self._lost.clear()
                self._server = self._make_server()
                try:
                    await self._server.serve_forever(background=True)
                # pymodbus: could not open / listen; termios: a port that refuses the
                # framing (a pseudo-terminal takes no parity)
                except (RuntimeError, OSError, termios.error):
                    await self._server.shutdown()
                    self.counts["open_failed"] += 1
                    self._note_error(self._why_not_open())
                    await asyncio.sleep(self.reopen_every_s)
                    continue
                self._up()
                await self._lost.wait()  # only a serial port goes away under a server
                self.counts["lost"] += 1
                self._down(f"{self.address.describe()}: the port went away")
                await self._server.shutdown()
                await asyncio.sleep(self.reopen_every_s)
        finally:
            if self._server is not None:
                await self._server.shutdown()
                self._server = None
            self.opened.clear()

    def _make_server(self) -> TcpServer | ModbusSerialServer:
        device = SimDevice(0, simdata=[SimData(self.map.base, values=[0] * self.map.size,
                                               datatype=DataType.REGISTERS)],
                           action=self._action)
        a = self.address
        if a.transport == "tcp":
            return TcpServer(device, address=(a.host, a.port), custom_pdu=list(custom_pdus("tcp")),
                             trace_pdu=self._trace, counts=self.counts)
        return ModbusSerialServer(device, port=a.device, baudrate=a.baud, parity=a.parity,
                                  stopbits=a.stop_bits, bytesize=8,
                                  custom_pdu=list(custom_pdus("rtu")),
                                  trace_pdu=self._trace,
                                  trace_connect=self._connection)

    def _up(self) -> None:
        if self.address.transport == "tcp":
            self.port = self._server.transport.sockets[0].getsockname()[1]
        self.opened.set()
        # Said as loudly as the trouble before it (the end of an episode of warnings), or
        # as the only word of the port the system chose for port 0 (the banner could not).
        said = self.last_error or self.counts["lost"] or (self.address.transport == "tcp"
                                                           and not self.address.port)
        self.last_error = ""
        self.counts["opened"] += 1
        log.log(logging.WARNING if said else logging.INFO, "Modbus server on %s (SunSpec "
                "map at %d)", self.address.describe(self.port), self.map.base)

    def _down(self, why: str) -> None:
        self.opened.clear()
        log.warning("%s; reopening every %g s", why, self.reopen_every_s)

    def _note_error(self, text: str) -> None:
        if text != self.last_error:  # once an episode, not every retry
            log.warning("%s; retrying every %g s", text, self.reopen_every_s)
            self.last_error = text

    def _why_not_open(self) -> str:
        """pymodbus only says that it failed: try it the plain way to learn why."""
        a = self.address
        try:
            if a.transport == "tcp":
                with socket.create_server((a.host, a.port)):
                    pass
            else:
                serial.Serial(a.device, a.baud, parity=a.parity, stopbits=a.stop_bits).close()
        except (OSError, ValueError, termios.error) as exc:
            return f"{a.describe()}: cannot {'listen' if a.transport == 'tcp' else 'open'}: {exc}"
        return f"{a.describe()}: could not be opened"

    def _connection(self, up: bool) -> None:
        if not up:
            self._lost.set()

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """Each exception sent is counted by its code (`serve --stats`), whoever raised it
        (this module or pymodbus's framing); RTU: a request for another unit, or a
        broadcast, is dropped unanswered."""
        if sending:
            if isinstance(pdu, ExceptionResponse):
                self.counts[f"exception_{ExcCodes(pdu.exception_code).name}"] += 1
            return pdu
        if self.address.transport == "tcp" or pdu.dev_id == self.plate.unit_id:
            return pdu
        self.counts["other_unit"] += 1
        return None

    # --- requests -----------------------------------------------------------------------

    async def _action(self, function: int, start: int, address: int, count: int,
                      registers: list[int], values: list[int] | None) -> ExcCodes | None:
        """pymodbus asks this for every request that falls inside the map: fill the
        registers for a read, act on a write, or say which exception answers it."""
        try:
            if values is None and function == READ_HOLDING:
                image = self._current_image()
                offset = address - start
                registers[offset:offset + count] = image[offset:offset + count]
                self.counts["reads"] += 1
                return None
            if function in (WRITE_ONE, WRITE_MANY):
                if values is None:  # pymodbus reading back what was written, to echo it
                    return None
                return self._write(address, values)
            return ExcCodes.ILLEGAL_FUNCTION
        except Exception:  # noqa: BLE001 - a bad request must not take the server down
            log.exception("Modbus request %d at %d failed", function, address)
            return ExcCodes.DEVICE_FAILURE

    def _write(self, address: int, values: list[int]) -> ExcCodes | None:
        try:
            writes = self.map.writes(address, values)
        except WriteRefused as exc:
            log.info("%s: write refused: %s", self.who, exc.reason)
            return exc.code
        for w in writes:
            reply = self.device.handle(w.request, self._now_s(), self.who, self.policy)
            if isinstance(reply, pm.Nack):
                log.info("%s: %s = %d refused: %s", self.who, w.key, w.value, reply.detail)
                self.counts[f"refused_{pm.ErrorCode(reply.error).name}"] += 1
                return REFUSALS.get(reply.error, ExcCodes.DEVICE_FAILURE)
            self.counts["writes"] += 1
        return None

    def _current_image(self) -> list[int]:
        """The map as of the firmware's latest step (and the heartbeat's second)."""
        now_s = self._now_s()
        act, m = self.device.act, self.device.measurement
        cached = self._image_of
        if (cached is None or cached[0] is not act or cached[1] is not m
                or cached[2] != int(now_s)):
            self._image = self.map.image(view_of(self.device, self.plate, now_s))
            self._image_of = (act, m, int(now_s))
        return self._image
