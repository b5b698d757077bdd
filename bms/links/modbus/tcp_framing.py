"""Modbus TCP framing of our own (the MBAP header), under pymodbus's request handling.

pymodbus's server reads one frame each time data arrives and drops the rest of the buffer
when it answers, so a client that pipelines (sends its next requests before the answers,
as the Modbus messaging guide allows) got only its first answered; after a header with a
protocol id other than 0 it stayed silent until its buffer overflowed (~43 requests); and
a request code of 0x80 or above was taken for an exception response and answered with
SERVER_DEVICE_FAILURE. Here each connection:

- answers every whole request in what arrives, in order, one at a time between the
  firmware's ticks (`MAX_WAITING` at most wait, and answers only while the socket takes
  them: beyond that the connection stops reading, and TCP holds the client back);
- answers what a client sent before it half-closed, then closes;
- skips a frame whose protocol id is not 0 (Modbus) by its length, unanswered, as the
  messaging guide says, and reads on;
- closes on a length no Modbus frame has (under 2: no unit and function; over 254: a PDU
  is 253 bytes at most): where the next frame starts is then unknown;
- answers a function code of 0x80 or above, which no request has, ILLEGAL_FUNCTION, and a
  served function whose data cannot be read, or is longer than the function's,
  ILLEGAL_DATA_VALUE.

Each is counted in the link's stats and said once a minute at most (the link's log filter).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter, deque

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from bms.links.modbus.functions import SERVED

log = logging.getLogger(__name__)

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
LENGTH_MIN, LENGTH_MAX = 2, 254  # the unit id and the PDU (1 + at most 253 bytes)
MAX_WAITING = 64  # requests read and not yet answered on one connection
FIXED_SIZE = {3: 5, 6: 5}  # PDU bytes of the served requests of one size (16 gives its count)


class TcpServer(ModbusTcpServer):
    """pymodbus's TCP server, each connection framed by `TcpConnection`; `counts` is the
    link's, where the connections count what they refused."""

    def __init__(self, *args, counts: Counter[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.counts = counts

    def callback_new_connection(self) -> TcpConnection:
        return TcpConnection(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class TcpConnection(ServerRequestHandler):
    """One client's connection: frames cut by their MBAP length, answered one after another."""

    def __init__(self, owner: TcpServer, *args):
        super().__init__(owner, *args)
        self.counts = owner.counts
        self._unread = bytearray()  # what arrived and is not yet cut into requests
        self._waiting: deque[ModbusPDU] = deque()
        self._addr: tuple | None = None
        self._answering: asyncio.Task | None = None  # held: the loop keeps only a weak one
        # Close once what waits is answered: a length that loses the frames' boundaries, or
        # the client's end of sending (a half-close).
        self._closing = False
        self._writable = asyncio.Event()  # cleared while the socket's send buffer is full
        self._writable.set()
        self._uncut = False  # whole frames may wait in `_unread`, past a pass's share
        self._said: set[str] = set()  # what this connection's refusals have logged

    # --- asyncio's calls ------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple | None) -> None:
        """(pymodbus's `data_received` hands each arrival here.)"""
        if self._closing:
            return
        self._unread += data
        self._addr = addr
        self._cut_frames()
        self._keep_answering()

    def eof_received(self) -> bool:
        """The client has sent all it will: what it sent is answered, then the connection
        closed (True keeps it open for the answers; asyncio closes it on False)."""
        self._closing = True
        return self._answering is not None

    def pause_writing(self) -> None:
        self._writable.clear()
        self._keep_answering()

    def resume_writing(self) -> None:
        self._writable.set()
        self._keep_answering()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()  # an answering task waiting to write ends
        super().connection_lost(exc)

    # --- framing and answering ------------------------------------------------------------

    def _cut_frames(self) -> None:
        """Whole frames out of what arrived, into the requests that wait: MAX_WAITING at
        most wait, and a pass cuts MAX_WAITING frames at most, skipped ones included (a
        flood of frames that are not Modbus held the loop for a second a read); the rest
        stays uncut for the answering task's next pass."""
        self._uncut = False
        for _ in range(MAX_WAITING):
            if len(self._waiting) >= MAX_WAITING or len(self._unread) < MBAP.size:
                break
            tid, protocol, length, unit = MBAP.unpack_from(self._unread)
            if not LENGTH_MIN <= length <= LENGTH_MAX:
                self._refuse("bad_length", f"MBAP length {length} is not "
                             f"{LENGTH_MIN}..{LENGTH_MAX}: connection closed")
                self._unread.clear()
                self._closing = True  # once the requests before it are answered
                return
            end = 6 + length
            if len(self._unread) < end:
                return  # the rest of the frame is still to come
            pdu_bytes = bytes(self._unread[MBAP.size:end])
            del self._unread[:end]
            if protocol != 0:
                self._refuse("not_modbus", f"MBAP protocol id {protocol} is not 0 (Modbus): "
                             "frame skipped")
                continue
            pdu = self._request(pdu_bytes)
            pdu.transaction_id, pdu.dev_id = tid, unit
            self._waiting.append(pdu)
        else:
            self._uncut = len(self._unread) >= MBAP.size

    def _keep_answering(self) -> None:
        """Answers what waits (one task, in order); closes a connection to be closed once
        nothing does; reads on only while requests and answers have room (TCP then holds
        the client back, as it holds a client that does not read its answers)."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if (self._waiting or self._uncut) and self._answering is None:
            self._answering = asyncio.get_running_loop().create_task(self._answer_waiting())
        elif self._closing and self._answering is None:
            t.close()
            return
        if (self._closing or self._uncut or len(self._waiting) >= MAX_WAITING
                or not self._writable.is_set()):
            t.pause_reading()
        else:
            t.resume_reading()

    async def _answer_waiting(self) -> None:
        try:
            while self._waiting or self._uncut:
                await self._writable.wait()
                if self.transport is None or self.transport.is_closing():
                    return  # the client has gone: its requests go unanswered
                if self._waiting:
                    self.last_pdu = self.trace_pdu(False, self._waiting.popleft())
                    self.last_addr = self._addr
                    await self.handle_request()  # answers last_pdu (None: dropped by the trace)
                self._cut_frames()  # frames read while the queue was full, or past a share
                self._keep_answering()
                # The firmware's ticks and the other connections run between two answers: a
                # client pipelining thousands held the loop for seconds.
                await asyncio.sleep(0)
        finally:
            self._answering = None
            self._keep_answering()

    def _request(self, pdu_bytes: bytes) -> ModbusPDU:
        """The request, or the exception that answers it."""
        code = pdu_bytes[0]
        sized = FIXED_SIZE.get(code, len(pdu_bytes)) == len(pdu_bytes)
        pdu = self.framer.decoder.decode(pdu_bytes) if code < 0x80 and sized else None
        if pdu is not None:
            return pdu
        self.counts["undecodable"] += 1
        return _Answered(code, ExcCodes.ILLEGAL_VALUE if code in SERVED
                         else ExcCodes.ILLEGAL_FUNCTION)

    def _refuse(self, what: str, text: str) -> None:
        """Counted each time; said once a connection (and the log's filter holds each kind
        to once a minute over all of them): a flood of one costs no log call a frame."""
        self.counts[what] += 1
        if what not in self._said:
            self._said.add(what)
            host, port = self.transport.get_extra_info("peername")[:2]
            log.warning("client %s:%d: %s", host, port, text)


class _Answered(ModbusPDU):
    """A request answered by an exception without reading it (its code, or its data, is
    not one this server can read)."""

    def __init__(self, code: int, exception: ExcCodes):
        super().__init__()
        self.function_code, self.exception = code, exception

    async def datastore_update(self, context, device_id: int) -> ModbusPDU:
        return ExceptionResponse(self.function_code, self.exception)
