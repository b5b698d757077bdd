"""The pty pair carries every byte to a reader: a write larger than a pty's buffer, and a
reader that pauses, lose nothing; the writer is held back instead. An end nobody reads
(STALL_S without taking a byte) loses what is sent to it, as on a wire, and its writer is
not held up for long."""

from __future__ import annotations

import asyncio
import contextlib
import os

from hil.pty_pair import STALL_S, PtyPair


def _open(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    os.set_blocking(fd, False)
    return fd


async def _read(fd: int, n: int, pause_s: float = 0.0, wait_s: float = 20.0) -> bytes:
    """Reads until n bytes came (or wait_s passed), pausing between reads."""
    got = b""
    deadline = asyncio.get_running_loop().time() + wait_s
    while len(got) < n and asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(BlockingIOError):
            got += os.read(fd, 4096)
        await asyncio.sleep(pause_s)
    return got


async def _write_all(fd: int, data: bytes) -> int:
    """Writes everything, waiting while the pty takes nothing; the times it was full."""
    view, full = memoryview(data), 0
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            full += 1
            await asyncio.sleep(0.005)
    return full


async def _with_pair(body) -> None:
    pair = PtyPair()
    relay = asyncio.create_task(pair.relay())
    a, b = _open(pair.paths[0]), _open(pair.paths[1])
    try:
        await body(pair, a, b)
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        os.close(a)
        os.close(b)


async def test_one_write_far_larger_than_a_ptys_buffer_arrives_whole():
    data = bytes(range(256)) * 400  # 102,400 bytes

    async def body(pair, a, b):
        writer = asyncio.create_task(_write_all(a, data))
        got = await _read(b, len(data), pause_s=0.01)  # a reader slower than the writer
        await writer
        assert got == data
        assert pair.relayed == [len(data), 0]

    await _with_pair(body)


async def test_a_reader_that_stops_holds_the_writer_back_and_loses_nothing():
    data = os.urandom(300_000)

    async def body(pair, a, b):
        writer = asyncio.create_task(_write_all(a, data))
        await asyncio.sleep(1.0)  # b reads nothing for a second
        assert not writer.done()  # held back, its bytes not thrown away
        got = await _read(b, len(data))
        full = await writer
        assert full > 0 and got == data
        os.write(b, b"and back")  # the other way is unaffected
        assert await _read(a, 8) == b"and back"

    await _with_pair(body)


async def test_an_end_nobody_reads_loses_bytes_as_a_wire_and_never_holds_the_writer_long():
    """A `serve` not running yet, or stopped: a rig writing to it must not block (a
    pyserial host with a blocking write hung) nor leave a backlog for the next program."""
    async def body(pair, a, b):
        loop = asyncio.get_running_loop()
        started = loop.time()
        full = await _write_all(a, os.urandom(400_000))  # nobody reads b
        held_s = loop.time() - started
        assert full > 0 and held_s < STALL_S + 2.0
        assert pair.dropped[0] > 0 and pair.relayed[0] + pair.dropped[0] <= 400_000
        kept, quiet = 0, 0  # b's reader arrives: what the ptys kept comes first
        while quiet < 5:
            try:
                kept += len(os.read(b, 1 << 20))
                quiet = 0
            except BlockingIOError:
                quiet += 1
                await asyncio.sleep(0.05)
        assert 0 < kept <= 256 * 1024 and pair.relayed[0] + pair.dropped[0] == 400_000
        os.write(a, b"fresh")
        assert await _read(b, 5) == b"fresh"

    await _with_pair(body)


def test_a_pair_closing_leaves_links_another_pair_has_taken_over(tmp_path):
    """Two `bms-emu pty --link A --link B` one after the other: the first one's exit must
    not delete the links the second one now owns."""
    links = (str(tmp_path / "a"), str(tmp_path / "b"))
    first = PtyPair(links)
    second = PtyPair(links)
    first.close()
    assert [os.readlink(link) for link in links] == second.ttys
    second.close()
    assert not any(os.path.lexists(link) for link in links)
