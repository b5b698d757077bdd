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
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Protocol

import serial
import serial_asyncio_fast

from bms.links.tasks import start_task, stop_task
from protocol.codec import Decoder, Frame, encode
from protocol.framing import REVISION_1_0, Flags, FrameError
from protocol.messages import BY_CLASS

log = logging.getLogger(__name__)

DEFAULT_BAUD = 921600
REOPEN_EVERY_S = 0.5
# What may wait for an other end that reads slower than we write. An answer waits while
# less than MAX_QUEUED_BYTES do (a host that floods requests and never reads is bounded;
# and each wake-up of the writer joins what waits: a megabyte made ticks 40 ms late);
# an unasked frame (telemetry, a fault event, an actuation: a fresh one follows) only while
# less than EVENT_QUEUE_BYTES do (90 ms at 921600 baud), so a slow host reads fresh frames
# rather than a backlog, and a host that arrives after a silent one is answered at once.
MAX_QUEUED_BYTES = 64 * 1024
EVENT_QUEUE_BYTES = 8 * 1024
WARN_EVERY_S = 60.0  # a host that stays slow is told of once a minute, with the count


class _Transport(serial_asyncio_fast.SerialTransport):
    """serial_asyncio_fast's transport with its write path mended (POSIX).

    Two faults of the library (0.16) when the other end stops reading: once its buffer
    had drained it left the writer registered, so every wake-up after raised "Write buffer
    should not be empty" (thousands a second, the log growing by megabytes a second); and
    pyserial's non-blocking write retries without end while the port's buffer is full,
    freezing the event loop (the firmware's ticks with it) until the other end reads. Here
    a write goes to the descriptor once; what it did not take waits for the writer, which
    is removed once everything went. A port gone while writing is lost, as on reading (not
    an ERROR with a traceback)."""

    def _write_data(self, data: bytes | bytearray | memoryview) -> None:
        try:
            n = os.write(self._serial.fileno(), data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:  # the port gone (EIO): lost, as a read finds it
            self._abort(exc)
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
    def __init__(self, on_data: Callable[[bytes], None], lost: asyncio.Future):
        self.on_data = on_data
        self.lost = lost

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class SerialLink:
    """A serial port kept open: `run()` opens it, waits for it to fail, reopens it.

    8 data bits, no parity, 1 stop bit, no flow control. Bytes written while the port is
    away are dropped (`send` returns False): frames are not worth queueing, a fresh one
    follows. So are frames sent while the other end does not keep up (EVENT_QUEUE_BYTES,
    MAX_QUEUED_BYTES), counted in `frames_dropped` and said at most once a minute.
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
        self.frames_dropped = 0  # for an other end not keeping up, since the start
        self._told_dropped: tuple[float, int] | None = None  # when said, at what count

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def send(self, data: bytes, event: bool = False) -> bool:
        """Writes a frame; False when it was dropped. `event`: an unasked frame."""
        if self.transport is None:
            return False
        waiting = self.transport.get_write_buffer_size()
        if waiting + len(data) > (EVENT_QUEUE_BYTES if event else MAX_QUEUED_BYTES):
            self._dropped(waiting)
            return False
        if waiting == 0 and self._told_dropped is not None:
            log.info("%s: the other end caught up (%d frames dropped so far)", self.port,
                     self.frames_dropped)
            self._told_dropped = None
        self.transport.write(data)
        return True

    def _dropped(self, waiting: int) -> None:
        self.frames_dropped += 1
        now_s = time.monotonic()
        told = self._told_dropped
        if told is None or now_s - told[0] >= WARN_EVERY_S:
            log.warning("%s: the other end does not keep up (%d bytes wait); %d frames "
                        "dropped so far%s", self.port, waiting, self.frames_dropped,
                        "" if told is None else f", {self.frames_dropped - told[1]} in the "
                        "last minute")
            self._told_dropped = (now_s, self.frames_dropped)

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
                self._up(_Transport(loop, _Receiver(self.on_data, lost), port))
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

    def _down(self, why: str | None) -> None:
        """The port is gone: `why`, or None when we closed it ourselves."""
        self.transport = None
        self._told_dropped = None
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
    def send(self, data: bytes, event: bool = False) -> bool: ...
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
        kind = flags if flags is not None else BY_CLASS[type(msg)].flags
        if self.link.send(data, event=bool(kind & Flags.EVENT)):
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
