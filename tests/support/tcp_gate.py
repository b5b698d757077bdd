"""A TCP relay that a test shuts to cut one client off its server while the others stay on.

`TcpGate(target_port)` listens on a free port of its own (`port`) and relays every
connection to the target. `shut()` closes every connection through it and refuses new
ones, as a broker that died would; `open()` lets connections through again on the same
port. Only the clients that go through the gate see the outage: a test's subscriber
connected to the broker straight stays subscribed, and so sees, in order, everything the
client behind the gate delivers once it is back, with no race against its reconnection.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.mqtt_broker import HOST, free_port

CHUNK_BYTES = 65536


class TcpGate:
    def __init__(self, target_port: int, host: str = HOST):
        self.host = host
        self.target_port = target_port
        self.port = free_port(host)
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self.open()

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        """Every connection through the gate is cut; new ones are refused until `open`."""
        listener, self._listener = self._listener, None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [s for s in (listener,) if s is not None] + sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # shut
                return
            try:
                server = socket.create_connection((self.host, self.target_port))
            except OSError:
                client.close()
                continue
            for sock in (client, server):  # no Nagle delay on small MQTT packets
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_relay, args=(source, sink), daemon=True).start()

    def __enter__(self) -> TcpGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shut()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    """Bytes one way until either side closes; then both are closed."""
    try:
        while data := source.recv(CHUNK_BYTES):
            sink.sendall(data)
    except OSError:
        pass
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
