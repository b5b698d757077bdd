"""The asyncio client of the protocol: what `query`, `monitor`, `rig` and the tests use.

Why and how: docs/internals.md, bms/links/client.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from bms.links.serial_link import DEFAULT_BAUD, Endpoint, LinkFactory
from protocol.codec import Frame
from protocol.framing import REVISION_1_0, REVISIONS, Flags
from protocol.messages import ErrorCode, Nack

DEFAULT_TIMEOUT_S = 1.0


class Refused(Exception):
    """The device answered a request with a NACK; nothing was changed."""

    def __init__(self, nack: Nack):
        self.nack = nack
        try:
            self.code = ErrorCode(nack.error).name
        except ValueError:
            self.code = f"error {nack.error}"
        super().__init__(f"{self.code}: {nack.detail}")


class Client:
    def __init__(self, port: str | LinkFactory, baud: int = DEFAULT_BAUD,
                 revision: int = REVISION_1_0):
        """`port`: a serial port's path, or a LinkFactory (MQTT: `bms.links.mqtt.link`).
        `revision`: the protocol revision to speak; a device that refuses it as
        UNSUPPORTED_VERSION is asked again one revision lower (`revision` then says which
        one it speaks)."""
        if revision not in REVISIONS:
            raise ValueError(f"revision {revision}; one of {list(REVISIONS)}")
        self.revision = revision
        self.endpoint = Endpoint(port, baud, on_frame=self._frame)
        self._pending: dict[int, asyncio.Future] = {}
        self._callbacks: dict[type, list[Callable[[object], None]]] = defaultdict(list)
        self.unmatched = 0  # responses for no pending request (late, or not ours)

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self, connect_timeout_s: float = 5.0) -> None:
        """Opens the port; TimeoutError when it cannot be opened in time."""
        await self.endpoint.start()
        try:
            await self.endpoint.wait_connected(connect_timeout_s)
        except TimeoutError:
            await self.close()
            link = self.endpoint.link  # its last error already names the port
            raise TimeoutError(link.last_error or f"cannot open {link.port}: no answer") from None

    async def close(self) -> None:
        await self.endpoint.close()
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()

    @property
    def connected(self) -> bool:
        return self.endpoint.link.connected

    def on(self, msg_class: type, callback: Callable[[object], None]) -> None:
        """Calls `callback(message)` for every frame of `msg_class` that answers no
        request: events, and responses nobody waits for."""
        self._callbacks[msg_class].append(callback)

    def send_event(self, msg: object) -> int:
        return self.endpoint.send(msg, flags=Flags.EVENT, revision=self.revision)

    async def request(self, msg: object, timeout_s: float = DEFAULT_TIMEOUT_S) -> object:
        """Sends a request and returns the response message; an older device's refusal of
        the revision lowers `revision` and asks again."""
        while True:
            reply = await self._ask(msg, timeout_s)
            older = self.revision - 1
            if not (isinstance(reply, Nack) and reply.error == ErrorCode.UNSUPPORTED_VERSION
                    and older in REVISIONS):
                break
            self.revision = older
        if isinstance(reply, Nack):
            raise Refused(reply)
        return reply

    async def _ask(self, msg: object, timeout_s: float) -> object:
        seq = self.endpoint.next_seq()
        fut = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self.endpoint.send(msg, seq=seq, flags=Flags.REQUEST, revision=self.revision)
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"no answer to {type(msg).__name__} within {timeout_s:g} s "
                               f"on {self.endpoint.link.port}") from None
        finally:
            self._pending.pop(seq, None)

    def _frame(self, frame: Frame) -> None:
        if frame.header.flags & Flags.RESPONSE:
            fut = self._pending.get(frame.header.seq)
            if fut is not None and not fut.done():
                fut.set_result(frame.message)
                return
            # Late, or answering an event frame (a Nack refusing a measurement frame):
            # nobody waits for it, so it goes to its type's callbacks like an event.
            self.unmatched += 1
        for callback in self._callbacks.get(type(frame.message), ()):
            callback(frame.message)
