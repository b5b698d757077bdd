"""The serial link's edges that need no port: handlers that fail, connection callbacks set
after construction, and a port that cannot be opened."""

from __future__ import annotations

import asyncio

from bms.links.serial_link import Endpoint
from protocol import messages as pm
from protocol.codec import encode


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
