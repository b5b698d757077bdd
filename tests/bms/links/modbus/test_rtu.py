"""Modbus RTU on a real pseudo-terminal, as on a USB-RS485 adapter: the server answers its
own unit and no other, and a port that vanishes (the adapter pulled) is reopened when it
returns, with one warning for the loss, one for the failed reopening however often it
retries, and one as it is back."""

from __future__ import annotations

import asyncio
import contextlib
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
    assert len(warnings) == 3, warnings  # the episode's start, its failed reopening, its end
    assert "went away" in warnings[0] and "cannot open" in warnings[1]
    assert str(path) in warnings[1] and warnings[2].startswith("Modbus server on rtu:")


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


async def test_rtu_codes_it_cannot_frame_cost_one_request_not_the_link(tmp_path):
    """An RTU frame has no length: a code whose size the framer cannot tell (0x41, no
    standard's; 2B 0E, sized by its sub-function) must not jam it for the requests after
    (it did, for ~500 bytes, each with a traceback): at most the next read is lost."""
    path = tmp_path / "ttyRS485"
    pty = Pty(path)
    read = request(UNIT, 40000, 2)
    async with serving(Bench(), address=f"rtu:{path}@19200,8N1"):
        for pdu in (b"\x41\x00\x00\x00\x01", b"\x2b\x0e\x01\x00"):
            frame = bytes([UNIT]) + pdu
            os.write(pty.master, frame + crc16(frame))
            await asyncio.sleep(0.3)
            with contextlib.suppress(BlockingIOError):
                os.read(pty.master, 1024)  # whatever it answered, if anything
            answered = 0
            for _ in range(5):
                os.write(pty.master, read)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        while True:
                            try:
                                got = os.read(pty.master, 64)
                                break
                            except BlockingIOError:
                                await asyncio.sleep(0.01)
                        answered += got[:7] == bytes([UNIT, 3, 4]) + b"SunS"
            assert answered >= 4, (pdu.hex(), answered)
    pty.close()


def crc16(frame: bytes) -> bytes:
    """Modbus RTU's CRC (poly 0xA001 reflected, init 0xFFFF), low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


async def test_a_port_that_refuses_the_framing_is_retried_and_named_not_a_crash(tmp_path):
    """A pseudo-terminal takes no parity: 8E1 (the default) made pyserial raise
    termios.error, which ended the Modbus task (and `serve` with a traceback)."""
    path = tmp_path / "ttyRS485"
    pty = Pty(path)
    async with serving(Bench(), address=f"rtu:{path}", wait=False) as link:
        await until(lambda: link.counts["open_failed"] >= 2)
        assert not link.connected and str(path) in link.last_error
        assert not link._task.done()  # still trying
    pty.close()
