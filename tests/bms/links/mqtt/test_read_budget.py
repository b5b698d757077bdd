"""The session's reader of the broker's socket, on a real socket pair and event loop, without
a broker: QoS 0 messages judged from their bytes and delivered, everything else handed to
paho byte for byte; a window's budget of packets, parsed packets or bytes spent, the socket
rests until the next window (counted); how the stream ended reaches paho."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

import pytest

from bms.links.mqtt.inbound import EpisodeLog
from bms.links.mqtt.read_budget import ReadBudget, SocketReader, _Stream
from tests.bms.links.mqtt.test_wire import BIG, packet, publish

PUBACK = packet(0x40, b"\x00\x07")
PINGRESP = packet(0xD0, b"")
WINDOW_S = 0.01
# A window that ends long after the first is taken: the check of what the first took sees
# it before a second begins, however late a loaded machine runs the check.
HELD_WINDOW_S = 5.0


@dataclass
class Paho:
    """Stands in for paho behind the reader: what it read, and how the stream ended for it
    (it then closes the socket: the reader is detached, as aiomqtt's callback does)."""

    reader: SocketReader
    stream: _Stream | None = None
    read: bytearray = field(default_factory=bytearray)
    ended: bytes | OSError | None = None
    heard: int = 0

    def read_once(self) -> None:
        try:
            data = self.stream.recv(3)  # paho reads a few bytes at a time
        except BlockingIOError:
            return
        except OSError as exc:
            data = exc
        if isinstance(data, OSError) or not data:
            self.ended = data
            self.reader.detach()
        else:
            self.read += data

    def hear(self) -> None:
        self.heard += 1


def run(budget: ReadBudget, sent: bytes, until, max_packet_bytes: int = BIG,
        close: bool = False) -> tuple[list[tuple[str, bytes]], Paho, SocketReader]:
    """Writes `sent` (then closes, with `close`) and runs the reader until `until(delivered,
    paho, reader)` holds: everything is written before the reader starts, so what each
    window takes depends on the budget alone."""
    delivered: list[tuple[str, bytes]] = []

    async def main() -> tuple[Paho, SocketReader]:
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        broker.sendall(sent)
        if close:
            broker.close()
        reader = SocketReader(budget, lambda t, p: delivered.append((t, p)),
                              max_packet_bytes, EpisodeLog())
        paho = Paho(reader)
        paho.stream = _Stream(ours, paho.read_once, paho.hear)
        reader.attach(paho.stream)
        try:
            async with asyncio.timeout(10):
                while not until(delivered, paho, reader):
                    await asyncio.sleep(0.001)
        finally:
            reader.detach()
            ours.close()
            if not close:
                broker.close()
        return paho, reader

    paho, reader = asyncio.run(main())
    return delivered, paho, reader


def test_qos0_messages_are_delivered_and_the_rest_handed_to_paho_byte_for_byte():
    others = [PUBACK, publish(b"bms/p/cmd/config", b"{}", qos=1), PINGRESP]
    sent = (publish(b"bms/p/cmd/state", b"a") + others[0] + others[1]
            + publish(b"bms/p/proto/in", b"b", expiry_s=5) + others[2])
    delivered, paho, reader = run(ReadBudget(), sent, lambda d, p, r: len(d) == 2 and len(
        p.read) == len(b"".join(others)))
    assert delivered == [("bms/p/cmd/state", b"a"), ("bms/p/proto/in", b"b")]
    assert bytes(paho.read) == b"".join(others)
    assert reader.throttled == 0 and paho.heard >= 1


def test_a_window_takes_its_packets_then_the_socket_rests_until_the_next():
    sent = publish(b"t", b"x") * 12
    held = ReadBudget(packets=5, window_s=HELD_WINDOW_S)
    delivered, _, reader = run(held, sent, lambda d, p, r: r.throttled == 1)
    assert len(delivered) == 5
    budget = ReadBudget(packets=5, window_s=WINDOW_S)
    delivered, _, reader = run(budget, sent, lambda d, p, r: len(d) == 12)
    assert reader.throttled == 2  # after 5 and after 10; the last 2 left budget over


def test_packets_for_paho_have_a_budget_of_their_own():
    qos1 = publish(b"bms/p/cmd/config", b"{}", qos=1)
    sent = qos1 * 5 + publish(b"t", b"x")
    held = ReadBudget(parsed=2, window_s=HELD_WINDOW_S)
    delivered, paho, reader = run(held, sent, lambda d, p, r: r.throttled == 1)
    assert bytes(paho.read) == qos1 * 2 and delivered == []
    budget = ReadBudget(parsed=2, window_s=WINDOW_S)
    delivered, paho, reader = run(budget, sent, lambda d, p, r: len(d) == 1)
    assert bytes(paho.read) == qos1 * 5 and reader.throttled == 2


@pytest.mark.parametrize("answer", [PUBACK, packet(0x50, b"\x00\x07"), packet(0x70, b"\x00\x07")],
                         ids=["PUBACK", "PUBREC", "PUBCOMP"])
def test_the_answers_to_the_sessions_own_publishes_spend_no_parsed_budget(answer):
    """No more come than the session has in flight: a batch's discovery messages at start
    (16 a pack at QoS 1) drained at 8 PUBACKs a window, and the packs' states waited."""
    sent = answer * 40 + publish(b"t", b"x")
    budget = ReadBudget(parsed=2, window_s=WINDOW_S)
    delivered, paho, reader = run(budget, sent, lambda d, p, r: len(d) == 1)
    assert bytes(paho.read) == answer * 40 and reader.throttled == 0


def test_a_window_reads_its_bytes_from_the_socket_and_no_more():
    message = publish(b"t", b"x" * 50)
    held = ReadBudget(bytes=len(message) + 10, window_s=HELD_WINDOW_S)
    delivered, _, reader = run(held, message * 3, lambda d, p, r: r.throttled == 1)
    assert len(delivered) == 1  # the second is not all read yet
    budget = ReadBudget(bytes=len(message) + 10, window_s=WINDOW_S)
    delivered, _, reader = run(budget, message * 3, lambda d, p, r: len(d) == 3)
    assert reader.throttled >= 2


def test_the_end_of_the_stream_reaches_paho_after_what_came_before_it():
    delivered, paho, _ = run(ReadBudget(), PUBACK + publish(b"t", b"x"),
                             lambda d, p, r: p.ended is not None, close=True)
    assert delivered == [("t", b"x")] and bytes(paho.read) == PUBACK and paho.ended == b""


def test_a_packet_over_the_announced_maximum_ends_the_connection_with_the_reason(caplog):
    big = publish(b"t", b"x" * 500)
    with caplog.at_level(logging.WARNING):
        delivered, paho, _ = run(ReadBudget(), publish(b"t", b"ok") + big,
                                 lambda d, p, r: p.ended is not None, max_packet_bytes=100)
    assert delivered == [("t", b"ok")]
    assert isinstance(paho.ended, ConnectionAbortedError)
    assert f"packet of {len(big)} bytes; this session takes at most 100" in str(paho.ended)
    assert "reconnecting" in caplog.text


@pytest.mark.parametrize("budget", [ReadBudget(),
                                    ReadBudget(packets=1, parsed=1, bytes=1, window_s=0.001)])
def test_every_byte_arrives_once_whatever_the_budget(budget):
    messages = [(f"bms/p/cmd/{k}", bytes([k]) * k) for k in range(40)]
    sent = b"".join(publish(t.encode(), p) + PUBACK for t, p in messages)
    delivered, paho, _ = run(budget, sent, lambda d, p, r: len(d) == 40 and len(p.read) == 160)
    assert delivered == messages and bytes(paho.read) == PUBACK * 40


def test_a_paced_reader_reads_again_as_soon_as_its_owner_ends_a_tick():
    """Paced, the socket rests until the owner's next tick (the window's own timer is only
    a fallback, MAX_BURST_WINDOWS away: here 100 s), and is then read with what the budget
    accrued since: a few ms of a 10 s window, so one packet."""
    delivered: list[tuple[str, bytes]] = []

    async def main() -> SocketReader:
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        broker.sendall(publish(b"t", b"x") * 12)
        reader = SocketReader(ReadBudget(packets=5, window_s=10.0),
                              lambda t, p: delivered.append((t, p)), BIG, EpisodeLog())
        reader.pace()  # paced from now on; nothing rests yet, so nothing is done
        paho = Paho(reader)
        paho.stream = _Stream(ours, paho.read_once, paho.hear)
        reader.attach(paho.stream)
        try:
            async with asyncio.timeout(10):
                while not reader.paused:
                    await asyncio.sleep(0.001)
            assert len(delivered) == 5 and reader.throttled == 1
            reader.pace()
            await asyncio.sleep(0)  # the loop runs what pace() handed it
            return reader
        finally:
            reader.detach()
            ours.close()
            broker.close()

    reader = asyncio.run(main())
    assert len(delivered) == 6 and reader.throttled == 2


def test_during_a_flood_a_paced_reader_rests_between_ticks_even_with_budget_left():
    """Once a window was throttled (a flood), what comes between two ticks waits for the
    next: the reader takes the socket out of the loop after each tick's reading, whether or
    not it spent the budget; that rest is not counted as throttled."""
    delivered: list[tuple[str, bytes]] = []

    async def main() -> tuple[bool, int]:
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        broker.sendall(publish(b"t", b"x") * 5)
        reader = SocketReader(ReadBudget(packets=5, window_s=0.001),
                              lambda t, p: delivered.append((t, p)), BIG, EpisodeLog())
        reader.pace()
        paho = Paho(reader)
        paho.stream = _Stream(ours, paho.read_once, paho.hear)
        reader.attach(paho.stream)
        try:
            async with asyncio.timeout(10):
                while reader.throttled < 1:  # the flood: 5 packets spend the budget
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.002)  # a budget accrues again
                reader.pace()  # a tick: the socket is read, it is empty, and it rests
                await asyncio.sleep(0)
                rested = reader.paused, reader.throttled
                broker.sendall(publish(b"t", b"y"))
                while len(delivered) < 6:
                    reader.pace()
                    await asyncio.sleep(0.001)
            return rested
        finally:
            reader.detach()
            ours.close()
            broker.close()

    assert asyncio.run(main()) == (True, 1)
    assert delivered[-1] == ("t", b"y")
