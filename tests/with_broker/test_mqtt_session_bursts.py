"""A session that carries many packs (a batch), against a real Mosquitto: a tick's burst of
messages handed to paho at once arrives whole and in order; its subscriptions go out a
SUBSCRIBE for many filters; `wait_idle` returns once what it queued on connecting (the
packs' discovery messages) is acknowledged, so the packs' clocks start behind nothing."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import aiomqtt

from bms.links.mqtt.session import SEND_BURST, SUBSCRIBE_FILTERS, MqttSession, parse_broker
from tests.support.mqtt_broker import Broker

DEADLINE_S = 60.0  # for a busy machine; nothing here is timed
RETAINED = 200  # more than paho sends at once (20 in flight)


class Listener:
    """A subscriber in a thread of its own: (topic, payload, retain) as received."""

    def __init__(self, broker: Broker, topic_filter: str):
        self.received: list[tuple[str, bytes, bool]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(broker,
                                                                            topic_filter),),
                                        daemon=True)
        self._thread.start()
        assert self._ready.wait(DEADLINE_S), "the listener never subscribed"

    async def _run(self, broker: Broker, topic_filter: str) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        with contextlib.suppress(asyncio.CancelledError):
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"listen-{id(self)}",
                                      max_queued_incoming_messages=0) as client:
                await client.subscribe(topic_filter, qos=1)
                self._ready.set()
                async for message in client.messages:
                    self.received.append((message.topic.value, bytes(message.payload),
                                          bool(message.retain)))

    def wait_for(self, count: int) -> list[tuple[str, bytes, bool]]:
        """What was received once `count` messages were (or the deadline passed)."""
        deadline = time.monotonic() + DEADLINE_S
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(DEADLINE_S)
        return list(self.received)


def session(broker: Broker, name: str, queue_size: int = 2000) -> MqttSession:
    return MqttSession(parse_broker(f"{broker.url}/t"), name, queue_size=queue_size,
                       wake_on_publish=False)


def test_a_burst_larger_than_paho_is_handed_at_once_arrives_whole_and_in_order(mqtt_broker):
    listener = Listener(mqtt_broker, "t/#")
    s = session(mqtt_broker, "t-burst", queue_size=5000)
    s.start()
    try:
        assert s.wait_idle(DEADLINE_S)
        n = 3 * SEND_BURST + 7
        for i in range(n):  # QoS 1 ones among them, as a batch's states among its arrays
            s.publish("t/q1" if i % 50 == 0 else "t/q0", str(i), qos=1 if i % 50 == 0 else 0)
        s.flush()
        received = listener.wait_for(n)
    finally:
        s.stop()
    for topic, qos in (("t/q0", 0), ("t/q1", 1)):
        sent = [str(i).encode() for i in range(n) if (i % 50 == 0) == (qos == 1)]
        assert [p for t, p, _ in received if t == topic] == sent
    assert (s.published, s.dropped) == (n, 0)


def test_more_filters_than_one_subscribe_carries_each_get_their_messages(mqtt_broker):
    got: list[tuple[str, bytes]] = []
    s = session(mqtt_broker, "t-filters")
    n = 2 * SUBSCRIBE_FILTERS + 1
    for k in range(1, n + 1):
        s.subscribe(f"t/p-{k}/cmd/+", lambda topic, payload: got.append((topic, payload)))
    s.start()
    try:
        assert s.wait_idle(DEADLINE_S)
        ks = (1, SUBSCRIBE_FILTERS, SUBSCRIBE_FILTERS + 1, n)
        for k in ks:
            s.publish(f"t/p-{k}/cmd/state", f"{k}", qos=1)
        s.flush()
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < len(ks) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        s.stop()
    assert sorted(got) == sorted((f"t/p-{k}/cmd/state", f"{k}".encode()) for k in ks)


def test_wait_idle_returns_once_what_was_queued_on_connecting_is_acknowledged(mqtt_broker):
    s = session(mqtt_broker, "t-idle")

    def discovery() -> None:  # as each pack's bridge does on every connect
        for i in range(RETAINED):
            s.publish(f"t/cfg/{i}", f"config {i}", qos=1, retain=True)
    s.on_connect.append(discovery)
    s.start()
    try:
        assert s.wait_idle(DEADLINE_S)
        # Subscribed only now: a message the broker had before comes flagged retained, one
        # that reached it later would not be.
        listener = Listener(mqtt_broker, "t/cfg/+")
        received = listener.wait_for(RETAINED)
    finally:
        s.stop()
    assert sorted(p for _, p, _ in received) == sorted(f"config {i}".encode()
                                                       for i in range(RETAINED))
    assert all(retain for _, _, retain in received)


def test_wait_idle_says_so_when_there_is_no_broker(mqtt_broker):
    s = session(mqtt_broker, "t-nobroker")
    mqtt_broker.stop()
    s.start()
    asked: list[bool] = []

    def stop() -> bool:  # a Ctrl-C while a batch waits for its session
        asked.append(True)
        return True
    try:
        assert s.wait_idle(0.3) is False
        assert s.wait_idle(DEADLINE_S, stop) is False and asked
    finally:
        s.stop()


def test_wait_idle_does_not_wait_out_its_time_once_a_try_has_failed(mqtt_broker):
    """No broker: the first refused try ends the wait (a batch's packs then run at once,
    as `run` does without its broker), not the whole timeout."""
    s = session(mqtt_broker, "t-refused")
    mqtt_broker.stop()
    s.start()
    try:
        started = time.monotonic()
        assert s.wait_idle(DEADLINE_S) is False
        assert time.monotonic() - started < DEADLINE_S / 2 and s.last_error
    finally:
        s.stop()
