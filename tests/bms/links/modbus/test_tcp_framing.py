"""The TCP framing's share of the event loop, seen through a transport of our own: one
arrival of thousands of frames is cut a share at a time (MAX_WAITING frames a pass,
skipped ones included), with the connection not reading meanwhile, so the firmware's ticks
and the other connections run between the shares."""

from __future__ import annotations

import asyncio
from collections import Counter

from pymodbus.simulator import DataType, SimData, SimDevice

from bms.links.modbus.functions import custom_pdus
from bms.links.modbus.tcp_framing import MAX_WAITING, TcpConnection, TcpServer

BASE = 40000
NOT_MODBUS = b"\x00\x01\x00\x01\x00\x02\x01\x03"  # protocol id 1, length 2
READ = b"\x00\x01\x00\x00\x00\x06\x01\x03" + BASE.to_bytes(2, "big") + b"\x00\x01"


class Transport(asyncio.Transport):
    """What the connection writes and asks of its socket, kept."""

    def __init__(self):
        super().__init__()
        self.reading, self.closed, self.sent = True, False, b""

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        self.sent += data

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 50000) if name == "peername" else default


def connection() -> tuple[TcpConnection, Transport, Counter]:
    counts: Counter[str] = Counter()
    device = SimDevice(0, simdata=[SimData(BASE, values=[7] * 4, datatype=DataType.REGISTERS)])
    server = TcpServer(device, address=("127.0.0.1", 0), custom_pdu=list(custom_pdus("tcp")),
                       counts=counts)
    conn = server.callback_new_connection()
    transport = Transport()
    conn.connection_made(transport)
    return conn, transport, counts


async def passes(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_flood_of_frames_that_are_not_modbus_is_skipped_a_share_a_pass():
    """A flood of them held the loop for a second a read, counted toward nothing."""
    conn, transport, counts = connection()
    conn.data_received(NOT_MODBUS * 1000)
    assert counts["not_modbus"] == MAX_WAITING and not transport.reading
    await passes(3)
    assert MAX_WAITING < counts["not_modbus"] < 1000  # a share each pass, not all at once
    await passes(40)
    assert counts["not_modbus"] == 1000 and transport.reading and transport.sent == b""


async def test_thousands_of_requests_in_one_arrival_wait_a_share_at_a_time():
    conn, transport, counts = connection()
    conn.data_received(READ * 1000)
    assert len(conn._waiting) == MAX_WAITING and not transport.reading
    await passes(2000)
    answer = b"\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x07"
    assert transport.sent == answer * 1000 and transport.reading
