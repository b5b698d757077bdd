"""Carrying protocol frames over a serial port: the I/O edge of the protocol.

`SerialLink` holds a port open in the background and reopens it when it vanishes (a USB
adapter unplugged, a pseudo-terminal closed): the user of the link keeps running and
simply finds it disconnected for a while. `Endpoint` puts the sans-IO codec on top: bytes
in, frames out to a callback; messages in, bytes out with sequence numbers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Protocol

import serial
import serial_asyncio_fast

from bms.links.tasks import start_task, stop_task
from protocol.codec import Decoder, Frame, encode
from protocol.framing import REVISION_1_0, Flags, FrameError

log = logging.getLogger(__name__)

DEFAULT_BAUD = 921600
REOPEN_EVERY_S = 0.5
# Bytes that may wait for a port whose other end reads slower than we write (0.7 s of
# output at 921600 baud); past them frames are dropped until a quarter of it is left.
MAX_QUEUED_BYTES = 64 * 1024


class _Transport(serial_asyncio_fast.SerialTransport):
    """serial_asyncio_fast's transport with its write path mended (POSIX).

    Two faults of the library (0.16) when the other end stops reading: once its buffer
    had drained it left the writer registered, so every wake-up after raised "Write buffer
    should not be empty" (thousands a second, the log growing by megabytes a second); and
    pyserial's non-blocking write retries without end while the port's buffer is full,
    freezing the event loop (the firmware's ticks with it) until the other end reads. Here
    a write goes to the descriptor once; what it did not take waits for the writer, which
    is removed once everything went."""

    def _write_data(self, data: bytes | bytearray | memoryview) -> None:
        try:
            n = os.write(self._serial.fileno(), data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._fatal_error(exc, "Fatal write error on serial transport")
            return
        if n == len(data):
            self._remove_writer()
            if self._closing:
                self._close()
            return
        self._write_buffer.append(data[n:])
        self._maybe_pause_protocol()
        self._ensure_writer()


class _Receiver(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None], lost: asyncio.Future,
                 on_paused: Callable[[bool], None]):
        self.on_data = on_data
        self.lost = lost
        self.on_paused = on_paused

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.on_paused(True)

    def resume_writing(self) -> None:
        self.on_paused(False)


class SerialLink:
    """A serial port kept open: `run()` opens it, waits for it to fail, reopens it.

    8 data bits, no parity, 1 stop bit, no flow control. Bytes written while the port is
    away are dropped (`send` returns False): frames are not worth queueing, a fresh one
    follows. So are frames sent while more than MAX_QUEUED_BYTES wait for an other end
    that does not read (counted in `frames_dropped`), until it has caught up.
    """

    def __init__(self, port: str, baud: int, on_data: Callable[[bytes], None],
                 on_connection: Callable[[bool], None] | None = None,
                 reopen_every_s: float = REOPEN_EVERY_S):
        self.port = port
        self.baud = baud
        self.on_data = on_data
        self.on_connection = on_connection
        self.reopen_every_s = reopen_every_s
        self.transport: asyncio.Transport | None = None
        self.opened = asyncio.Event()
        self.connects = 0  # times the port was opened
        self.last_error = ""
        self.writing_paused = False  # the other end is not keeping up
        self.frames_dropped = 0  # for it, since the start

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def send(self, data: bytes) -> bool:
        if self.transport is None:
            return False
        if self.writing_paused:
            self.frames_dropped += 1
            return False
        self.transport.write(data)
        return True

    async def run(self) -> None:
        """Open, serve, reopen; until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                lost: asyncio.Future = loop.create_future()
                try:
                    port = await loop.run_in_executor(
                        None, partial(serial.serial_for_url, self.port, baudrate=self.baud))
                # ValueError: settings the port refuses (pyserial's word for a bad baud rate)
                except (serial.SerialException, OSError, ValueError) as exc:
                    self._note_error(f"cannot open {self.port}: {exc}")
                    await asyncio.sleep(self.reopen_every_s)
                    continue
                transport = _Transport(loop, _Receiver(self.on_data, lost, self._paused), port)
                transport.set_write_buffer_limits(high=MAX_QUEUED_BYTES)
                self._up(transport)
                exc = await lost
                self._down(f"{self.port} lost: {exc}" if exc else f"{self.port} closed")
                await asyncio.sleep(self.reopen_every_s)
        finally:
            if self.transport is not None:
                self.transport.close()
                self._down(None)

    def _up(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.connects += 1
        self.last_error = ""
        self.opened.set()
        log.info("serial port %s open at %d baud", self.port, self.baud)
        if self.on_connection is not None:
            self.on_connection(True)

    def _paused(self, paused: bool) -> None:
        self.writing_paused = paused
        if paused:
            log.warning("%s: the other end is not reading what we write; frames are dropped "
                        "until it catches up", self.port)
        else:
            log.info("%s: the other end caught up (%d frames dropped so far)", self.port,
                     self.frames_dropped)

    def _down(self, why: str | None) -> None:
        """The port is gone: `why`, or None when we closed it ourselves."""
        self.transport = None
        self.writing_paused = False
        self.opened.clear()
        if why is not None:
            log.warning("%s", why)
        if self.on_connection is not None:
            self.on_connection(False)

    def _note_error(self, text: str) -> None:
        if text != self.last_error:  # say it once, not every half second
            log.warning("%s; retrying every %g s", text, self.reopen_every_s)
            self.last_error = text


class Link(Protocol):
    """What carries frames: a serial port here, MQTT topics in `bms.links.mqtt.link`."""

    port: str  # what it is connected to, for messages
    opened: asyncio.Event
    last_error: str

    @property
    def connected(self) -> bool: ...
    def send(self, data: bytes) -> bool: ...
    async def run(self) -> None: ...


# Builds a link that hands what arrives to `on_data` and tells `on_connection` of changes.
LinkFactory = Callable[[Callable[[bytes], None], Callable[[bool], None]], Link]


def serial_link(port: str, baud: int = DEFAULT_BAUD) -> LinkFactory:
    return lambda on_data, on_connection: SerialLink(port, baud, on_data, on_connection)


class Endpoint:
    """One end of a protocol link: decodes what arrives, numbers what it sends.

    `on_frame` gets every good frame; typed decoding errors are counted in `errors` by
    kind (and given to `on_error` when set): bad bytes never stop the link. `port` is a
    serial port's path or a LinkFactory (`serial_link`, `bms.links.mqtt.link.mqtt_link`).
    """

    def __init__(self, port: str | LinkFactory, baud: int = DEFAULT_BAUD,
                 on_frame: Callable[[Frame], None] | None = None,
                 on_error: Callable[[FrameError], None] | None = None,
                 on_connection: Callable[[bool], None] | None = None):
        self.decoder = Decoder()
        self.on_frame = on_frame
        self.on_error = on_error
        self.on_connection = on_connection
        make = port if callable(port) else serial_link(port, baud)
        self.link = make(self._received, self._connection)
        self.errors: Counter[str] = Counter()
        self.frames_in = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_unsent = 0  # dropped: the port away or its other end not reading
        # A random start: a late answer to a previous session's request is unlikely to
        # match one of this session's.
        self._seq = random.randrange(0x10000)
        self._task: asyncio.Task | None = None

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def send(self, msg: object, seq: int | None = None, flags: Flags | None = None,
             revision: int = REVISION_1_0) -> int:
        """Sends a message in `revision`'s layout (dropped while the port is away); returns
        its sequence number."""
        seq = self.next_seq() if seq is None else seq
        data = encode(msg, seq, flags, revision)
        if self.link.send(data):
            self.bytes_out += len(data)
        else:
            self.frames_unsent += 1
        return seq

    def _connection(self, up: bool) -> None:
        if self.on_connection is not None:
            self.on_connection(up)

    def _received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        for item in self.decoder.feed(data):
            if isinstance(item, Frame):
                self.frames_in += 1
                handler = self.on_frame
            else:
                self.errors[item.kind.name] += 1
                handler = self.on_error
            if handler is None:
                continue
            try:
                handler(item)
            except Exception:  # noqa: BLE001 - the frames after it must still be handled
                self.errors["HANDLER_FAILED"] += 1
                log.exception("handling %s failed", type(item).__name__)

    async def start(self) -> None:
        self._task = start_task(self.link.run(), name=f"serial {self.link.port}")

    async def wait_connected(self, timeout_s: float) -> None:
        await asyncio.wait_for(self.link.opened.wait(), timeout_s)

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
