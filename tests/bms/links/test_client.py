"""The client's revision negotiation, against devices on an in-memory link: a 1.1 client
keeps 1.1 with a 1.1 device and falls back to 1.0 with a device that refuses revision 2 as
a 1.0 device does (Nack UNSUPPORTED_VERSION)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bms.core.firmware import Firmware
from bms.data.presets import PRESETS
from bms.host.device import Device, Identity
from bms.links.client import Client, Refused
from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from protocol.framing import LATEST_REVISION, REVISION_1_0, REVISION_1_1, Flags

CHEM = PRESETS["na-nfm"]
Answer = Callable[[Frame], tuple[object, int]]  # a request -> (reply, the revision it goes in)


class MemoryLink:
    """A link to a device function: what is sent is decoded and answered at once."""

    def __init__(self, answer: Answer, on_data: Callable[[bytes], None]):
        self.answer = answer
        self.on_data = on_data
        self.port = "memory"
        self.opened = asyncio.Event()
        self.last_error = ""
        self.revisions: list[int] = []  # of every request received
        self.decoder = Decoder()

    @property
    def connected(self) -> bool:
        return True

    def send(self, data: bytes, event: bool = False) -> bool:
        for frame in self.decoder.feed(data):
            self.revisions.append(frame.header.revision)
            reply, revision = self.answer(frame)
            flags = Flags.RESPONSE | (Flags.ERROR if isinstance(reply, pm.Nack) else 0)
            wire = encode(reply, frame.header.seq, flags, revision)
            asyncio.get_running_loop().call_soon(self.on_data, wire)
        return True

    async def run(self) -> None:
        self.opened.set()
        await asyncio.Future()


def client_on(answer: Answer, revision: int) -> tuple[Client, list[MemoryLink]]:
    links: list[MemoryLink] = []

    def factory(on_data, _on_connection):
        links.append(MemoryLink(answer, on_data))
        return links[-1]

    return Client(factory, revision=revision), links


def device_1_1() -> Answer:
    device = Device(Firmware(CHEM, 4, CHEM.capacity_ah),
                    CHEM, Identity(CHEM.name, pm.Mode.SIM, 1, CHEM.capacity_ah, 2, "p1"))
    return lambda frame: (device.handle(frame.message, 0.0, revision=frame.header.revision),
                          frame.header.revision)


def device_1_0() -> Answer:
    """Speaks revision 1 only; a frame of any other revision is refused, in revision 1."""
    inner = device_1_1()

    def answer(frame: Frame) -> tuple[object, int]:
        if frame.header.revision != REVISION_1_0:
            return pm.Nack(frame.header.msg_type, pm.ErrorCode.UNSUPPORTED_VERSION,
                           f"version {frame.header.revision}; this end speaks 1"), REVISION_1_0
        return inner(frame)

    return answer


async def test_a_1_1_client_keeps_1_1_with_a_1_1_device():
    client, links = client_on(device_1_1(), LATEST_REVISION)
    async with client:
        info = await client.request(pm.GetInfo())
    assert client.revision == LATEST_REVISION == info.protocol_version
    assert info.pack_id == "p1" and links[0].revisions == [LATEST_REVISION]


async def test_a_1_1_client_falls_back_to_1_0_with_a_1_0_device():
    client, links = client_on(device_1_0(), REVISION_1_1)
    async with client:
        info = await client.request(pm.GetInfo())
        status = await client.request(pm.GetStatus())
    assert client.revision == REVISION_1_0 and info.protocol_version == REVISION_1_0
    assert info.pack_id == "" and isinstance(status, pm.Status)
    assert links[0].revisions == [REVISION_1_1, REVISION_1_0, REVISION_1_0]  # asked again once


async def test_a_1_0_client_stays_1_0_and_other_refusals_are_not_retried():
    client, links = client_on(device_1_1(), REVISION_1_0)
    async with client:
        info = await client.request(pm.GetInfo())
        with pytest.raises(Refused) as refused:
            await client.request(pm.CommandRequest(99, 0))
    assert info.protocol_version == REVISION_1_0 and refused.value.code == "BAD_VALUE"
    assert links[0].revisions == [REVISION_1_0, REVISION_1_0]


def test_a_client_refuses_a_revision_nobody_speaks():
    with pytest.raises(ValueError, match="revision 7"):
        Client("/dev/null", revision=7)
