"""Modbus RTU on a real pseudo-terminal, as on a USB-RS485 adapter: the server answers its
own unit and no other, and a port that vanishes (the adapter pulled) is reopened when it
returns, with one warning for the loss and one for the failed reopening however often it
retries."""

from __future__ import annotations

import asyncio
import logging
import os
import tty
from pathlib import Path

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.diag_message import DiagnosticBase
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
)

from tests.bms.links.modbus.pack_bench import UNIT, Bench, serving

WAIT_S = 10.0  # how long anything is waited for: far more than it takes


class Pty:
    """A pseudo-terminal reached by a stable path (a symlink, as udev names an adapter);
    the test holds the master, the server opens the path."""

    def __init__(self, path: Path):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(path)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def request(unit: int, address: int, count: int) -> bytes:
    pdu = ReadHoldingRegistersRequest(address=address, count=count, dev_id=unit)
    return FramerRTU(DecodePDU(False)).buildFrame(pdu)


async def answer(pty: Pty, size: int) -> bytes:
    """The next `size` bytes from the server."""
    data = b""
    async with asyncio.timeout(WAIT_S):
        while len(data) < size:
            try:
                data += os.read(pty.master, size - len(data))
            except BlockingIOError:
                await asyncio.sleep(0.01)
    return data


async def until(condition) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)


async def test_rtu_answers_its_own_unit_and_comes_back_after_the_port_vanishes(tmp_path,
                                                                              caplog):
    caplog.set_level(logging.INFO, logger="bms.links.modbus.server")
    path = tmp_path / "ttyRS485"
    pty = Pty(path)
    bench = Bench()
    bench.step()
    sun_s = request(UNIT, 40000, 2)
    expected = bytes([UNIT, 3, 4]) + b"SunS"
    async with serving(bench, address=f"rtu:{path}@19200,8N1") as link:
        os.write(pty.master, request(UNIT + 1, 40000, 2))  # another device's
        await until(lambda: link.counts["other_unit"] == 1)
        os.write(pty.master, sun_s)
        first = await answer(pty, 9)

        pty.close()  # the adapter pulled
        await until(lambda: not link.connected and link.counts["open_failed"] >= 5)
        pty = Pty(path)  # and plugged in again
        await until(lambda: link.connected)
        os.write(pty.master, sun_s)
        again = await answer(pty, 9)
        stats = link.stats()
    pty.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert first[:7] == expected and again[:7] == expected  # only unit 1's answer came
    assert stats["lost"] == 1 and stats["opened"] == 2
    assert len(warnings) == 2, warnings
    assert "went away" in warnings[0] and "cannot open" in warnings[1]
    assert str(path) in warnings[1]


async def test_rtu_refuses_other_functions_under_their_own_code(tmp_path):
    """Read input registers (04) and diagnostics (08): ILLEGAL_FUNCTION, each framed by
    its RTU size; then a read is answered as before."""
    path = tmp_path / "ttyRS485"
    pty = Pty(path)
    async with serving(Bench(), address=f"rtu:{path}@19200,8N1"):
        for pdu in (ReadInputRegistersRequest(address=40000, count=2, dev_id=UNIT),
                    DiagnosticBase(message=0x1234, dev_id=UNIT)):
            os.write(pty.master, FramerRTU(DecodePDU(False)).buildFrame(pdu))
            refused = await answer(pty, 5)
            assert refused[:3] == bytes([UNIT, pdu.function_code | 0x80, 1])
        os.write(pty.master, request(UNIT, 40000, 2))
        assert (await answer(pty, 9))[:7] == bytes([UNIT, 3, 4]) + b"SunS"
    pty.close()
