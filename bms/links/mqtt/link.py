"""Protocol frames over MQTT: the same frames as on a serial link, one per message, on
`<prefix>/<pack_id>/proto/in` (to the emulator) and `proto/out` (from it).

Like bytes on a wire they are sent at QoS 0 and dropped while the broker is away: the
protocol's own timeouts and the HIL watchdog deal with loss, as on a serial line. The
session runs in its own thread; what arrives is handed to the link owner's event loop,
one whole frame a message at most (`one_frame`), at most `rate_per_s` messages a second,
and taken there one message a loop iteration, so that a burst never holds up a tick. While
the session is behind with what it sends, requests are refused rather than answered: their
answers would push the telemetry out of its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable

from bms.links.mqtt.defaults import MAX_MESSAGE_BYTES, MIN_FRAME_RATE_PER_S
from bms.links.mqtt.inbound import BACKLOG_FULL, Intake
from bms.links.mqtt.session import MqttSession
from bms.links.serial_link import LinkFactory
from protocol.framing import DELIMITER

NOT_ONE_FRAME = "not_one_frame"
BACKLOG = 100  # messages waiting for the owner's loop (half a second at 200/s); more refused


def proto_topics(pack_topic: str, device_side: bool) -> tuple[str, str]:
    """(the topic this side receives on, the topic it sends on)."""
    to_device, from_device = f"{pack_topic}/proto/in", f"{pack_topic}/proto/out"
    return (to_device, from_device) if device_side else (from_device, to_device)


def one_frame(payload: bytes) -> str | None:
    """None when `payload` is one frame as `encode` writes it (a delimiter may lead, one
    ends it, none inside); else why not. Checked before any decoding: a message of many
    small requests would otherwise have each answered, one message costing hundreds."""
    start = 1 if payload[:1] == DELIMITER else 0
    end = payload.find(DELIMITER, start)
    return None if start < end == len(payload) - 1 else NOT_ONE_FRAME


class MqttLink:
    def __init__(self, session: MqttSession, pack_topic: str, device_side: bool,
                 on_data: Callable[[bytes], None], on_connection: Callable[[bool], None],
                 owns_session: bool, rate_per_s: float | None = None):
        """`owns_session`: start and stop the session with the link (a client's); else the
        session is shared (an emulator's, which also publishes telemetry) and its owner
        starts it. `rate_per_s`: messages a second taken, the rest refused (None: all)."""
        self.session = session
        self.port = f"{session.broker.describe()} {pack_topic}"
        self.inbound, self.outbound = proto_topics(pack_topic, device_side)
        self.on_data = on_data
        self.on_connection = on_connection
        self.owns_session = owns_session
        self.opened = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[bytes] = deque()  # for the owner's loop, oldest first
        self._lock = threading.Lock()
        self._taking = False  # a `_take_one` is scheduled on the owner's loop
        session.subscribe(self.inbound, self._message,
                          Intake(rate_per_s, MAX_MESSAGE_BYTES, one_frame))
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

    def send(self, data: bytes, event: bool = False) -> bool:
        """`event` (an unasked frame) changes nothing here: the session's queue is bounded."""
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
        """In the session's thread: queued for the owner's loop (dropped before `run`)."""
        with self._lock:
            if self._loop is None:
                return
            if len(self._waiting) >= BACKLOG or self.session.behind:
                self.session.inbound.refuse(self.inbound, BACKLOG_FULL,
                                            f"{len(self._waiting)} messages waiting for the "
                                            "loop, or their answers for the broker")
                return
            self._waiting.append(payload)
            if self._taking:
                return
            self._taking = True
        self._hand_over(self._take_one, None)

    def _take_one(self, _arg: None) -> None:
        """On the owner's loop: one message, and the next one an iteration later (after
        any timer that fell due meanwhile, a tick's included)."""
        with self._lock:
            payload = self._waiting.popleft() if self._waiting else None
            self._taking = bool(self._waiting)
        if self._taking:
            self._loop.call_soon(self._take_one, None)
        if payload is not None:
            self.on_data(payload)

    def _hand_over(self, callback, arg) -> None:
        """From the session's thread to the owner's loop (dropped before `run`)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(callback, arg)

    def _changed(self, up: bool) -> None:
        (self.opened.set if up else self.opened.clear)()
        self.on_connection(up)


def frame_rate_per_s(tick_s: float) -> float:
    """What `proto/in` takes by default: twice the tick rate (a rig sends a measurement a
    tick, and a host's requests come beside them), MIN_FRAME_RATE_PER_S at least."""
    return max(MIN_FRAME_RATE_PER_S, 2.0 / tick_s)


def mqtt_link(session: MqttSession, pack_topic: str, device_side: bool,
              owns_session: bool, rate_per_s: float | None = None) -> LinkFactory:
    return lambda on_data, on_connection: MqttLink(session, pack_topic, device_side, on_data,
                                                   on_connection, owns_session, rate_per_s)
