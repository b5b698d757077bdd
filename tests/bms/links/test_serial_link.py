"""The serial link's edges: handlers that fail, connection callbacks set after
construction, a port that cannot be opened, and (on a real pty) an other end that stops
reading."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty

import numpy as np

from bms.links.serial_link import EVENT_QUEUE_BYTES, MAX_QUEUED_BYTES, Endpoint
from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from protocol.framing import Flags


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


async def test_an_other_end_that_stops_reading_costs_events_never_answers_nor_the_loop():
    """The host stops reading: unasked frames (telemetry) are dropped, counted, once at
    most EVENT_QUEUE_BYTES wait; answers still wait for it (a host that arrives after a
    silent subscriber is answered at once); the loop keeps running and raises nothing (a
    library's drained-buffer writer once raised thousands of AssertionErrors a second, and
    its non-blocking write spun while the port was full). When the host reads again it
    gets whole frames, every answer among them."""
    loop = asyncio.get_running_loop()
    raised = []
    loop.set_exception_handler(lambda _loop, context: raised.append(context))
    async with on_a_pty() as (ep, master, slave_path):
        port = os.open(slave_path, os.O_WRONLY | os.O_NOCTTY)
        _filled(port)  # the host's side full before the link writes at all
        os.close(port)
        answers = []
        for k in range(200):  # 1,000 events of ~270 bytes and 200 answers, the loop turning
            for _ in range(5):
                ep.send(pm.CellVoltages(np.full(64, 3.1)), flags=Flags.EVENT)
            answers.append(ep.send(pm.Ack(k % 256), flags=Flags.RESPONSE))
            await asyncio.sleep(0)
        link = ep.link
        waiting = link.transport.get_write_buffer_size()
        assert 0 < link.frames_dropped < 1000 and ep.frames_unsent == link.frames_dropped
        assert EVENT_QUEUE_BYTES < waiting < EVENT_QUEUE_BYTES + 200 * 20  # answers past it
        assert raised == []
        got = b""  # the host reads again
        deadline = loop.time() + 10
        while link.transport.get_write_buffer_size() and loop.time() < deadline:
            with contextlib.suppress(BlockingIOError):
                got += os.read(master, 65536)
            await asyncio.sleep(0.01)
        ep.send(pm.GetStatus())
        deadline = loop.time() + 5
        while not got.endswith(encode(pm.GetStatus(), ep._seq)) and loop.time() < deadline:
            with contextlib.suppress(BlockingIOError):
                got += os.read(master, 65536)
            await asyncio.sleep(0.01)
        frames = list(Decoder().feed(got.lstrip(b"\0")))
        assert all(isinstance(f, Frame) for f in frames), frames[:3]
        assert [f.header.seq for f in frames if isinstance(f.message, pm.Ack)] == answers
        assert isinstance(frames[-1].message, pm.GetStatus) and raised == []


async def test_answers_to_a_host_that_never_reads_are_bounded_too():
    async with on_a_pty() as (ep, _master, _slave_path):
        big = pm.CellVoltages(np.full(512, 3.1))  # ~2 KB
        for _ in range(100):  # 200 KB of answers
            ep.send(big, flags=Flags.RESPONSE)
        assert ep.link.transport.get_write_buffer_size() <= MAX_QUEUED_BYTES
        assert ep.link.frames_dropped > 0


@contextlib.asynccontextmanager
async def on_a_pty():
    """(an Endpoint open on a pty's slave, the master (the host's end), the slave's
    path)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    ep = Endpoint(os.ttyname(slave))
    try:
        await ep.start()
        await ep.wait_connected(5)
        yield ep, master, os.ttyname(slave)
    finally:
        await ep.close()
        os.close(master)
        os.close(slave)
