"""How much a session reads from the broker, when, and how cheaply: a budget of packets
and bytes a 10 ms window, read right after a control tick (when the owner paces it); what
the broker sends beyond it waits in TCP and at the broker, which drops QoS 0 messages for a
subscriber that falls behind. Within the budget each QoS 0 message is judged from its bytes
(~10 µs) and only the rest (acknowledgements, QoS 1 messages: a few a window) is parsed by
paho (~80 µs): a flood costs this process a bounded share of a core, between ticks,
whatever its rate.

Why and how: docs/internals.md, bms/links/mqtt/read_budget.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from bms.links.mqtt.inbound import EpisodeLog
from bms.links.mqtt.wire import WireError, answers_own_publish, packet_end, qos0_publish

log = logging.getLogger(__name__)

CHUNK_BYTES = 65536  # one recv
MAX_BURST_WINDOWS = 10  # a paced reader's budget after a long tick: 100 ms of it at most
FLOOD_HOLD_S = 1.0  # a paced reader reads only after ticks until this long after a throttle
THROTTLED = "throttled"
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


@dataclass(frozen=True)
class ReadBudget:
    """Every `window_s`: at most `packets` packets taken from the socket, `parsed` of them
    by paho (all but QoS 0 messages), and `bytes`. The defaults take 12 800 messages and
    13 MB a second, a fifth of a core at most (~10 µs a message judged here, ~80 µs one
    paho parses); legitimate traffic is far below them (a rig's frame a tick, commands at
    their rate, a PUBACK for each QoS 1 publish). QoS 1 and 2 messages also wait at the
    broker beyond `parsed` unacknowledged (MQTT 5's Receive Maximum), so they never fill TCP
    ahead of an acknowledgement."""

    packets: int = 128
    parsed: int = 8
    bytes: int = 131072
    window_s: float = 0.01


READ_BUDGET = ReadBudget()


class _Stream:
    """One connection's bytes: `raw` read from the socket and not yet judged, `for_paho`
    judged and waiting for paho, which reads them with `recv` in place of the socket's."""

    def __init__(self, sock: socket.socket, read_paho: Callable[[], None],
                 heard: Callable[[], None]):
        self.sock = sock
        self.read_paho = read_paho  # paho's loop_read: one packet (or a few) of `for_paho`
        self.heard = heard  # bytes came: the broker is there (for paho's keep-alive)
        self.raw = bytearray()
        self.for_paho = bytearray()
        # How the connection ended (b"": the broker closed it), for paho once it has read
        # `for_paho`.
        self.ended: bytes | OSError | None = None

    def recv(self, bufsize: int) -> bytes:
        """paho's `_sock_recv`: what it may read, then how the connection ended."""
        if not self.for_paho:
            if self.ended is None:
                raise BlockingIOError
            if isinstance(self.ended, OSError):
                raise self.ended
            return self.ended
        data = bytes(self.for_paho[:bufsize])
        del self.for_paho[:bufsize]
        return data


class SocketReader:
    """Reads the broker's socket in the session's event loop, within a ReadBudget, handing
    each QoS 0 message to `deliver(topic, payload)` and every other packet to paho.

    Once a window's budget is spent the socket rests. An owner that paces it (`pace`, each
    control tick) has it read again right after its tick, with what the budget accrued
    meanwhile, so that reading is done before the loop next wakes; and during a flood (until
    FLOOD_HOLD_S after the last throttled window) it reads only then, not as messages come.
    Unpaced (or should the ticks stop), it reads again when the window, or
    MAX_BURST_WINDOWS of them, are over."""

    def __init__(self, budget: ReadBudget, deliver: Callable[[str, bytes], None],
                 max_packet_bytes: int, episodes: EpisodeLog):
        self.budget = budget
        self.deliver = deliver
        self.max_packet_bytes = max_packet_bytes
        self.episodes = episodes
        self.throttled = 0  # windows whose budget ran out (read from other threads: an int)
        self.paused = False
        self._paced = False
        self._pace_pending = False  # a pace() handed to the loop, not yet run there
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: _Stream | None = None
        self._flood_until_s = 0.0  # paced, reading only after ticks until then
        self._renewed_s = 0.0  # when the budget was last renewed
        self._windows = 1.0  # how many windows' worth it was renewed with
        self._packets = self._parsed = self._bytes = 0
        self._resume: asyncio.TimerHandle | None = None

    def attach(self, stream: _Stream) -> None:
        """In the session's loop: reads `stream`'s socket from now on, in place of any
        reader it had; nothing if it has closed meanwhile."""
        self.detach()
        if stream.sock.fileno() < 0:
            return
        self._loop = asyncio.get_running_loop()
        self._stream = stream
        self._loop.add_reader(stream.sock.fileno(), self._readable)

    def detach(self) -> None:
        """The socket is closing: nothing more is read, no resumption is due."""
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self._stream = None
        self.paused = False

    def pace(self) -> None:
        """From the owner's thread, at the end of each of its ticks: a resting socket is
        read now, in the time before the next tick (nothing is done otherwise)."""
        self._paced = True
        loop = self._loop
        if self.paused and not self._pace_pending and loop is not None:
            self._pace_pending = True  # a headless run ticks thousands of times a second
            with contextlib.suppress(RuntimeError):  # the session's loop has closed
                loop.call_soon_threadsafe(self._resumed)

    def _readable(self) -> None:
        stream = self._stream
        if stream is None:
            return
        now_s = self._loop.time()
        if now_s - self._renewed_s >= self.budget.window_s:
            self._renew(now_s, 1.0)
        while stream is self._stream:
            self._judge(stream)
            self._hand_to_paho(stream)
            if self._spent():
                if stream is self._stream:
                    self._pause(stream)
                return
            if stream.ended is not None:
                return
            if not self._fill(stream):  # all read: during a flood, the rest after a tick
                if self._paced and now_s < self._flood_until_s:
                    self._rest(stream)
                return

    def _renew(self, now_s: float, max_windows: float) -> None:
        """A fresh budget: the windows' worth since the last, `max_windows` at most."""
        self._windows = min(max_windows, (now_s - self._renewed_s) / self.budget.window_s)
        self._renewed_s = now_s
        self._packets = self._parsed = self._bytes = 0

    def _spent(self) -> bool:
        return self._packets_spent() or self._bytes >= self.budget.bytes * self._windows

    def _packets_spent(self) -> bool:
        w = self._windows
        return self._packets >= self.budget.packets * w or self._parsed >= self.budget.parsed * w

    def _judge(self, stream: _Stream) -> None:
        """Takes the whole packets in `raw`, while the window's packets last."""
        raw, start = stream.raw, 0
        try:
            while not self._packets_spent():
                end = packet_end(raw, start, self.max_packet_bytes)
                if end < 0:
                    break
                message = qos0_publish(raw, start, end)
                if message is None:
                    stream.for_paho += raw[start:end]
                    # An answer to this session's own publish (a PUBACK) is bounded by what
                    # it has in flight: not a flood, and not counted against the window (a
                    # batch's discovery messages are answered 800 at once).
                    counted = not answers_own_publish(raw, start)
                    self._parsed += counted
                    self._packets += counted
                else:
                    self.deliver(*message)
                    self._packets += 1
                start = end
        except WireError as exc:
            log.warning("MQTT: %s; reconnecting", exc)
            stream.ended = ConnectionAbortedError(str(exc))
            start = len(raw)
        del raw[:start]

    def _hand_to_paho(self, stream: _Stream) -> None:
        """paho reads what is waiting for it (and learns how the stream ended, if it did)."""
        while stream is self._stream and (stream.for_paho or stream.ended is not None):
            waiting = len(stream.for_paho)
            stream.read_paho()
            if len(stream.for_paho) == waiting:  # paho read nothing: its socket has closed
                return

    def _fill(self, stream: _Stream) -> bool:
        """Reads what the socket holds, within the window's bytes; False if nothing was."""
        allowed = int(self.budget.bytes * self._windows) - self._bytes
        try:
            data = stream.sock.recv(max(1, min(CHUNK_BYTES, allowed)))
        except WOULD_BLOCK:
            return False
        except OSError as exc:
            stream.ended = exc
        else:
            if data:
                stream.raw += data
                self._bytes += len(data)
                stream.heard()
                return True
            stream.ended = b""
        self._hand_to_paho(stream)
        return False

    def _rest(self, stream: _Stream) -> None:
        """The socket out of the loop until the owner's next tick (or the window's end)."""
        self._loop.remove_reader(stream.sock.fileno())
        self.paused = True
        windows = MAX_BURST_WINDOWS if self._paced else 1
        self._resume = self._loop.call_at(
            self._renewed_s + windows * self.budget.window_s, self._resumed)

    def _pause(self, stream: _Stream) -> None:
        """The budget is spent: a window throttled, counted and logged once an episode."""
        self._rest(stream)
        self._flood_until_s = self._loop.time() + FLOOD_HOLD_S
        self.throttled += 1
        b = self.budget
        self.episodes.note(THROTTLED, self.throttled, "windows throttled",
                           "throttled: %d packets (%d parsed) or %d bytes in a %g ms window "
                           "from the broker, the rest left in TCP and at the broker (which "
                           "drops QoS 0 for a slow subscriber) until the next window",
                           b.packets, b.parsed, b.bytes, b.window_s * 1e3)

    def _resumed(self) -> None:
        """The next window (or tick): the socket back in the loop, and what was read but
        not judged (the selector would not say it is there) judged now."""
        self._pace_pending = False
        if not self.paused or self._stream is None:
            return
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self.paused = False
        self._renew(self._loop.time(), MAX_BURST_WINDOWS if self._paced else 1)
        self._loop.add_reader(self._stream.sock.fileno(), self._readable)
        self._readable()


class BudgetedClient(aiomqtt.Client):
    """aiomqtt's client reading its socket through a SocketReader. The one place that knows
    aiomqtt's and paho's inside: aiomqtt 2 registers, in `_on_socket_open`, a reader that
    has paho parse every packet; this one replaces it, and paho reads from it (`_sock_recv`)
    instead of from the socket."""

    def __init__(self, reader: SocketReader, **kwargs: Any):
        super().__init__(**kwargs)
        self._reader = reader

    def _on_socket_open(self, client, userdata, sock) -> None:
        """In paho's connecting thread, before anything is read."""
        super()._on_socket_open(client, userdata, sock)
        stream = _Stream(sock, self._read_paho, self._heard)
        client._sock_recv = stream.recv
        # aiomqtt's add_reader is queued to the loop before this, so this one replaces it
        self._loop.call_soon_threadsafe(self._reader.attach, stream)

    def _on_socket_close(self, client, userdata, sock) -> None:
        self._reader.detach()
        super()._on_socket_close(client, userdata, sock)

    def _heard(self) -> None:
        """paho takes bytes from the broker as a sign of life: with them coming, a PINGRESP
        late behind a flood held in TCP does not end the connection (paho sends another
        PINGREQ instead). The QoS 0 messages it no longer reads would not tell it."""
        with self._client._msgtime_mutex:
            self._client._last_bytes_received = time.monotonic()

    def publish_unacknowledged(self, topic: str, payload: bytes, qos: int,
                               retain: bool) -> None:
        """A publish not waited for: paho sends it with the next write the loop makes (all
        it holds at once), and takes a QoS 1 or 2 one's PUBACK whenever it comes (behind a
        flood held in TCP, seconds later); nothing waits meanwhile."""
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")

    @property
    def pending(self) -> int:
        """What paho holds of this session's: packets not yet written, and QoS 1 and 2
        publishes not yet acknowledged (in flight, or waiting for room in its window)."""
        return len(self._client._out_packet) + len(self._client._out_messages)

    def _read_paho(self) -> None:
        """As aiomqtt's reader: an exception ends the connection."""
        try:
            self._client.loop_read()
        except Exception as exc:  # noqa: BLE001 - a broken socket: the session reconnects
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
