"""The serial link's edges: handlers that fail, connection callbacks set after
construction, a port that cannot be opened, and (on a real pty) an other end that stops
reading."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty

import numpy as np

from bms.links.serial_link import MAX_QUEUED_BYTES, Endpoint
from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode


def test_a_failing_handler_does_not_lose_the_frames_after_it():
    ep = Endpoint("/nonexistent")
    seen = []

    def handler(frame):
        seen.append(frame.header.seq)
        if frame.header.seq == 1:
            raise RuntimeError("a bug in a handler")

    ep.on_frame = handler
    ep._received(encode(pm.GetStatus(), 1) + encode(pm.GetStatus(), 2))
    assert seen == [1, 2] and ep.errors["HANDLER_FAILED"] == 1 and ep.frames_in == 2


def test_a_connection_callback_set_after_construction_is_called():
    ep = Endpoint("/nonexistent")
    calls = []
    ep.on_connection = calls.append
    ep.link._down("gone")
    assert calls == [False]


async def test_a_port_that_cannot_be_opened_is_retried_and_named(tmp_path):
    ep = Endpoint(str(tmp_path / "no-such-port"))
    ep.link.reopen_every_s = 0.05
    await ep.start()
    await asyncio.sleep(0.2)
    assert not ep.link.connected and "no-such-port" in ep.link.last_error
    assert not ep._task.done()  # still trying
    await ep.close()


def _filled(fd: int) -> int:
    """Writes to `fd` until the pty's buffer takes no more; the bytes it took."""
    os.set_blocking(fd, False)
    taken = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            taken += os.write(fd, b"\0" * 4096)
    return taken


async def test_an_other_end_that_stops_reading_costs_frames_never_the_loop():
    """The host stops reading: the link keeps at most MAX_QUEUED_BYTES waiting and drops
    (counts) frames past them; the loop keeps running and raises nothing (a library's
    drained-buffer writer once raised thousands of AssertionErrors a second, and its
    non-blocking write spun while the port was full); when the host reads again it gets
    whole frames and the link sends again."""
    loop = asyncio.get_running_loop()
    raised = []
    loop.set_exception_handler(lambda _loop, context: raised.append(context))
    master, slave = os.openpty()
    tty.setraw(slave)
    ep = Endpoint(os.ttyname(slave))
    try:
        await ep.start()
        await ep.wait_connected(5)
        port = os.open(os.ttyname(slave), os.O_WRONLY | os.O_NOCTTY)
        _filled(port)  # the host's side full before the link writes at all
        os.close(port)
        ticks = 0
        for _ in range(200):  # 1,000 frames of ~300 bytes, the loop turning between
            for _ in range(5):
                ep.send(pm.CellVoltages(np.full(64, 3.1)))
            await asyncio.sleep(0)
            ticks += 1
        await asyncio.sleep(0.3)
        link = ep.link
        assert ticks == 200 and link.writing_paused and link.frames_dropped > 0
        assert ep.frames_unsent == link.frames_dropped
        assert link.transport.get_write_buffer_size() <= MAX_QUEUED_BYTES + 4096
        assert raised == []
        got = b""  # the host reads again
        deadline = loop.time() + 10
        while (link.writing_paused or link.transport.get_write_buffer_size()) \
                and loop.time() < deadline:
            with contextlib.suppress(BlockingIOError):
                got += os.read(master, 65536)
            await asyncio.sleep(0.01)
        assert not link.writing_paused and link.transport.get_write_buffer_size() == 0
        dropped = link.frames_dropped
        ep.send(pm.GetStatus())
        deadline = loop.time() + 5
        while not got.endswith(encode(pm.GetStatus(), ep._seq)) and loop.time() < deadline:
            with contextlib.suppress(BlockingIOError):
                got += os.read(master, 65536)
            await asyncio.sleep(0.01)
        frames = list(Decoder().feed(got.lstrip(b"\0")))
        assert all(isinstance(f, Frame) for f in frames), frames[:3]
        assert isinstance(frames[-1].message, pm.GetStatus)
        assert link.frames_dropped == dropped and raised == []
    finally:
        await ep.close()
        os.close(master)
        os.close(slave)
