"""Byte transports for the spec client: one end of a pty pair, and an MQTT session on the
device's `proto/in` / `proto/out` topics (docs/protocol.md, MQTT transport).

The MQTT session is MQTT 3.1.1 at QoS 0 written on a socket with the standard library
(CONNECT, SUBSCRIBE, PUBLISH, DISCONNECT): the suite stays free of any client library,
as a rig engineer's own client would be.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
from collections.abc import Callable

Receiver = Callable[[bytes], None]
READ_BYTES = 65536
POLL_S = 0.05
CONNECT_TIMEOUT_S = 5.0


class PtyLink:
    """The host's end (the master) of a pty pair whose slave a device opens as its port.
    The slave stays open here too, so the master never reads a hang-up while the device
    has not opened it yet; `close` closes both."""

    def __init__(self, master_fd: int, slave_fd: int):
        self.fd = master_fd
        self.slave_fd = slave_fd
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, receive: Receiver) -> None:
        self._thread = threading.Thread(target=self._read, args=(receive,), daemon=True)
        self._thread.start()

    def _read(self, receive: Receiver) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], POLL_S)
            if not ready:
                continue
            try:
                data = os.read(self.fd, READ_BYTES)
            except OSError:  # EIO while nobody holds the slave open: try again
                self._stop.wait(POLL_S)
                continue
            if data:
                receive(data)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        os.close(self.fd)
        os.close(self.slave_fd)


def _varint(n: int) -> bytes:
    """MQTT's remaining length: 7 bits a byte, least significant first."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(s: str) -> bytes:
    data = s.encode()
    return struct.pack(">H", len(data)) + data


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


class MqttLink:
    """Publishes each frame as one message on `topic_in`; hands the payload of each message
    on `topic_out` to the receiver. Keep-alive 0: the broker never expects a ping."""

    def __init__(self, host: str, port: int, topic_in: str, topic_out: str, client_id: str):
        self.host, self.port = host, port
        self.topic_in, self.topic_out, self.client_id = topic_in, topic_out, client_id
        self.sock: socket.socket | None = None
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, receive: Receiver) -> None:
        """Connects and subscribes; returns once the broker acknowledged the subscription, so
        no answer to a request sent after it is missed."""
        self.sock = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_S)
        self.sock.settimeout(None)
        connect = b"\x00\x04MQTT\x04\x02\x00\x00" + _text(self.client_id)
        self.sock.sendall(_packet(0x10, connect))
        self._thread = threading.Thread(target=self._read, args=(receive,), daemon=True)
        self._thread.start()
        self.sock.sendall(_packet(0x82, struct.pack(">H", 1) + _text(self.topic_out) + b"\x00"))
        if not self._subscribed.wait(CONNECT_TIMEOUT_S):
            raise ConnectionError(f"no SUBACK for {self.topic_out} from {self.host}:{self.port}")

    def _read(self, receive: Receiver) -> None:
        stream = self.sock.makefile("rb")
        with contextlib.suppress(OSError, ValueError, IndexError):  # closed, or cut short
            while True:
                first = stream.read(1)
                if not first:
                    return
                length, shift = 0, 0
                while True:
                    byte = stream.read(1)[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = stream.read(length)
                kind = first[0] & 0xF0
                if kind == 0x90:  # SUBACK
                    self._subscribed.set()
                elif kind == 0x30:  # PUBLISH, QoS 0: topic, then the payload
                    (topic_len,) = struct.unpack_from(">H", body)
                    receive(body[2 + topic_len:])

    def send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(_packet(0x30, _text(self.topic_in) + data))

    def close(self) -> None:
        if self.sock is None:
            return
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self._thread is not None:
            self._thread.join(2)
