"""Protocol frames over MQTT: the same frames as on a serial link, one per message, on
`<prefix>/<pack_id>/proto/in` (to the emulator) and `proto/out` (from it).

Like bytes on a wire they are sent at QoS 0 and dropped while the broker is away: the
protocol's own timeouts and the HIL watchdog deal with loss, as on a serial line. The
session runs in its own thread; what arrives is handed to the link owner's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from bms.links.mqtt.session import MqttSession
from bms.links.serial_link import LinkFactory


def proto_topics(pack_topic: str, device_side: bool) -> tuple[str, str]:
    """(the topic this side receives on, the topic it sends on)."""
    to_device, from_device = f"{pack_topic}/proto/in", f"{pack_topic}/proto/out"
    return (to_device, from_device) if device_side else (from_device, to_device)


class MqttLink:
    def __init__(self, session: MqttSession, pack_topic: str, device_side: bool,
                 on_data: Callable[[bytes], None], on_connection: Callable[[bool], None],
                 owns_session: bool):
        """`owns_session`: start and stop the session with the link (a client's); else the
        session is shared (an emulator's, which also publishes telemetry) and its owner
        starts it."""
        self.session = session
        self.port = f"{session.broker.describe()} {pack_topic}"
        self.inbound, self.outbound = proto_topics(pack_topic, device_side)
        self.on_data = on_data
        self.on_connection = on_connection
        self.owns_session = owns_session
        self.opened = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        session.subscribe(self.inbound, self._message)
        session.on_connect.append(lambda: self._hand_over(self._changed, True))
        session.on_disconnect.append(lambda: self._hand_over(self._changed, False))

    @property
    def connected(self) -> bool:
        return self.session.connected.is_set()

    @property
    def last_error(self) -> str:
        """Why there is no connection, naming the broker (as a serial link names its port)."""
        where = self.session.broker.describe()
        error = self.session.last_error
        return f"cannot connect to {where}: {error}" if error else f"no connection to {where}"

    def send(self, data: bytes) -> bool:
        if not self.connected:
            return False
        self.session.publish(self.outbound, data)
        return True

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.connected:
            self._changed(True)
        if self.owns_session:
            self.session.start()
        try:
            await asyncio.Future()
        finally:
            if self.owns_session:
                await asyncio.to_thread(self.session.stop)

    def _message(self, _topic: str, payload: bytes) -> None:
        self._hand_over(self.on_data, payload)

    def _hand_over(self, callback, arg) -> None:
        """From the session's thread to the owner's loop (dropped before `run`)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(callback, arg)

    def _changed(self, up: bool) -> None:
        (self.opened.set if up else self.opened.clear)()
        self.on_connection(up)


def mqtt_link(session: MqttSession, pack_topic: str, device_side: bool,
              owns_session: bool) -> LinkFactory:
    return lambda on_data, on_connection: MqttLink(session, pack_topic, device_side, on_data,
                                                   on_connection, owns_session)
