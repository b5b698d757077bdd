"""One connection to an MQTT broker, kept up in a thread of its own; `publish` never blocks
and never raises.

Why and how: docs/internals.md, bms/links/mqtt/session.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bms.data.validation import InputError
from bms.links.mqtt.defaults import PASSWORD_ENV
from bms.links.mqtt.inbound import DEFAULT_MAX_MESSAGE_BYTES, EpisodeLog, InboundGate, Intake
from bms.links.mqtt.outbox import Outbox
from bms.links.mqtt.read_budget import (
    READ_BUDGET,
    BudgetedClient,
    ReadBudget,
    SocketReader,
)

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "bms"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# A connection the broker ends sooner than this after accepting it, and that the next try
# makes again at once, after one more such, was not a link that worked: the retries go on
# from the backoff reached (a first loss is retried at once, as any). The cause is another
# client with the same client id (two emulators given one pack id, two fleets one --shard):
# the broker hands the id to the newer connection, and each takes it back in turn (Mosquitto
# 2.0 says no reason). A broker that restarts refuses a try first. Said once
# SHORT_LIVED_WARN come in a row.
STABLE_S = 10.0
SHORT_LIVED_WARN = 3
KEEPALIVE_S = 10
PACKET_OVERHEAD_BYTES = 1024  # a PUBLISH's header and topic, beside its payload
# A QoS 1 publish waits for its PUBACK: sent behind a small QoS 0 message not yet
# acknowledged, Nagle's algorithm would hold it for the broker's delayed ACK (~40 ms a
# message: a backlog of events would drain at ~20 a second).
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
# Ordinary QoS 0 messages handed to paho before one is waited for (`_send`): a batch's
# tick queues a few hundred, and waiting for each was a third of the session thread's time.
SEND_BURST = 128
# Topic filters a SUBSCRIBE asks for: a batch's packs (a `cmd/+` each) subscribe in a few
# round trips, not one each, before anything queued goes out.
SUBSCRIBE_FILTERS = 100
# The topic prefix, in bytes: a topic is at most 65,535 (an MQTT length field); a prefix
# this long leaves room for any pack id and topic below it.
MAX_PREFIX_BYTES = 1024
IDLE_POLL_S = 0.01  # `wait_idle`'s look at the session, before a batch starts


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    prefix: str  # the first level of every topic
    username: str | None = None
    password: str | None = None
    tls: aiomqtt.TLSParameters | None = None

    def describe(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6, as written
        return f"{scheme}://{host}:{self.port}/{self.prefix}"


def parse_broker(url: str, ca: str | None = None, cert: str | None = None,
                 key: str | None = None) -> Broker:
    """`mqtt://[user[:password]@]host[:port][/prefix]` or `mqtts://...`; the password may
    instead come from $BMS_MQTT_PASSWORD, out of the process list. InputError names what is
    wrong."""
    problems = []
    try:
        parts = urlsplit(url)
        given_port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", a port out of range or not a number
        port_text = "port" in str(exc).lower()
        raise InputError("--mqtt", [f"--mqtt = {url!r}: " + (
            "the port must be a number 1..65535" if port_text else
            f"{exc} (mqtt://HOST[:PORT][/PREFIX], an IPv6 host in brackets: "
            "mqtt://[::1]:1883)")]) from None
    if parts.scheme not in ("mqtt", "mqtts"):
        problems.append(f"--mqtt = {url!r}: must start with mqtt:// or mqtts://")
    if not parts.hostname:
        problems.append(f"--mqtt = {url!r}: no host (mqtt://HOST[:PORT][/PREFIX])")
    elif any(c.isspace() or not c.isprintable() for c in parts.hostname):
        problems.append(f"--mqtt = {url!r}: the host {parts.hostname!r} has a space or a "
                        "control character")
    if given_port == 0 or (given_port is None and parts.netloc.endswith(":")):
        problems.append(f"--mqtt = {url!r}: the port must be a number 1..65535")
    port = given_port or (8883 if parts.scheme == "mqtts" else 1883)
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if any(c in prefix for c in "+#") or "//" in prefix or "#" in url or parts.query:
        problems.append(f"--mqtt = {url!r}: the prefix may have no wildcards (+, #), query or "
                        "empty levels")
    if prefix.startswith("$"):
        problems.append(f"--mqtt = {url!r}: the prefix {prefix!r} starts with '$', which "
                        "brokers keep for themselves ($SYS): clients cannot publish there")
    if len(prefix.encode()) > MAX_PREFIX_BYTES:
        problems.append(f"--mqtt = {url[:40]!r}...: the prefix has {len(prefix.encode())} "
                        f"bytes; at most {MAX_PREFIX_BYTES}")
    if parts.scheme != "mqtts" and (ca or cert or key):
        problems.append("--mqtt-ca, --mqtt-cert and --mqtt-key need an mqtts:// URL")
    if bool(cert) != bool(key):
        problems.append("--mqtt-cert and --mqtt-key go together")
    if problems:
        raise InputError("--mqtt", problems)
    password = unquote(parts.password) if parts.password else os.environ.get(PASSWORD_ENV)
    tls = (aiomqtt.TLSParameters(ca_certs=ca, certfile=cert, keyfile=key)
           if parts.scheme == "mqtts" else None)
    return Broker(parts.hostname, port, prefix,
                  unquote(parts.username) if parts.username else None, password, tls)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttSession:
    def __init__(self, broker: Broker, client_id: str,
                 will: tuple[str, bytes] | None = None, online: tuple[str, bytes] | None = None,
                 queue_size: int = 2000, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 read_budget: ReadBudget = READ_BUDGET, keepalive_s: int = KEEPALIVE_S,
                 wake_on_publish: bool = True, farewell: tuple[str, bytes] | None = None):
        """`will` is published by the broker if this session dies (retained); `online` is
        published, retained, on every connect; `farewell` (default: the will) on a clean
        stop. A message received of over
        `max_message_bytes` is dropped unread (`inbound` counts it); the socket is read
        within `read_budget` (`reader.throttled` counts the windows that spent it).
        `wake_on_publish` False: the owner calls `flush` once it has published a burst (a
        batch, once a tick), and the session's thread wakes once for all of it."""
        self.inbound = InboundGate(max_message_bytes)
        self.reader = SocketReader(read_budget, self._deliver,
                                   max_message_bytes + PACKET_OVERHEAD_BYTES, EpisodeLog())
        self.keepalive_s = keepalive_s
        self.wake_on_publish = wake_on_publish
        self.broker = broker
        self.client_id = client_id
        self.will = will
        self.farewell = farewell or will
        self.online = online
        self._lock = threading.Lock()
        self._queue: deque[Outgoing] = deque(maxlen=queue_size)
        self.outboxes: list[Outbox] = []  # see use_outbox
        self._retained: dict[str, Outgoing] = {}
        self._handlers: list[tuple[str, Callable[[str, bytes], None]]] = []
        self._options: dict[str, SubscribeOptions] = {}  # a filter's, where not plain QoS 1
        # Called in the session's thread on every connect and every loss of the connection.
        self.on_connect: list[Callable[[], None]] = []
        self.on_disconnect: list[Callable[[], None]] = []
        self.connected = threading.Event()
        self.connects = 0
        self.published = 0
        self.dropped = 0  # ordinary messages pushed out of a full queue
        self.last_error = ""
        self.short_lived = 0  # connections the broker ended within STABLE_S of accepting
        self._short_in_row = 0
        self._lost_soon = False  # the broker ended the last connection within STABLE_S
        self._accepted = False  # the broker accepted this try's connection
        self._connected_at_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None  # an ordinary message is queued
        self._wakes_kept: list[asyncio.Event] = []  # for each outbox: it has one
        self._halt: asyncio.Event | None = None  # set by stop(): ends a backoff wait
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._greeted: BudgetedClient | None = None  # connected, the on_connect callbacks run
        self._in_hand = 0  # a message `_send` has taken from the queue and not yet given paho

    # --- for the owner's thread -------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None],
                  intake: Intake | None = None, others_only: bool = False) -> None:
        """Before `start`: messages matching `topic_filter` go to `handler(topic, payload)`,
        within `intake`'s bounds (rate, size, check) and the session's size cap.
        `others_only`: only what other clients publish there from now on (MQTT 5 no-local;
        no retained message on subscribing)."""
        self._handlers.append((topic_filter, handler))
        if others_only:
            self._options[topic_filter] = SubscribeOptions(qos=1, noLocal=True, retainHandling=2)
        if intake is not None:
            self.inbound.add(topic_filter, intake)

    def use_outbox(self, outbox: Outbox) -> None:
        """Before `start`: `outbox`'s messages go at QoS 1, in order, each until the broker
        has acknowledged it, beside the ordinary ones (`_send_kept`). A session shared by
        several packs (a batch) has one outbox a pack, each sent on its own: one pack's
        backlog holds up no other's."""
        index = len(self.outboxes)
        self.outboxes.append(outbox)
        outbox.on_change = lambda: self._set_in_loop(self._kept_wake(index))

    def _kept_wake(self, index: int) -> asyncio.Event | None:
        wakes = self._wakes_kept
        return wakes[index] if index < len(wakes) else None

    def publish(self, topic: str, payload: bytes | str, qos: int = 0,
                retain: bool = False) -> None:
        """Queues a message; never blocks. The sender is woken only when the queue was
        empty (it empties the queue before it waits again), and not at all while the owner
        flushes instead: each wake-up is a write to the loop's self-pipe and a fight for the
        GIL with the owner's thread."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        item = Outgoing(topic, data, qos, retain)
        with self._lock:
            if retain:
                self._retained[topic] = item
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            was_empty = not self._queue
            self._queue.append(item)
        if was_empty and self.wake_on_publish:
            self._notify()

    def flush(self) -> None:
        """Wakes the sender for what has been published since it last emptied the queue."""
        with self._lock:
            waiting = bool(self._queue)
        if waiting:
            self._notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name=f"mqtt {self.client_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Delivers what is queued (within `timeout_s`), says offline, disconnects."""
        self._stopping = True
        self._notify()
        for index in range(len(self.outboxes)):
            self._set_in_loop(self._kept_wake(index))
        self._set_in_loop(self._halt)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wait_idle(self, timeout_s: float, stop: Callable[[], bool] | None = None) -> bool:
        """Waits until the session is connected, has run its on_connect callbacks and sent
        all that is queued, every QoS 1 message acknowledged; False after `timeout_s`
        without, once `stop()` is true, or once a try has failed before any connected (no
        broker there: waiting would only hold up what runs without it, as `run` does). A
        batch starts its packs' clocks then, so that their first messages wait neither for
        the connection nor behind the discovery messages of every pack (16 a pack at QoS 1,
        paho sending 20 at a time: a second for 50 packs)."""
        deadline_s = time.monotonic() + timeout_s
        while True:
            client = self._greeted
            if (client is not None and self.backlog + self._in_hand == 0
                    and client.pending == 0):
                return True
            if (time.monotonic() >= deadline_s or (stop is not None and stop())
                    or (self.connects == 0 and self.last_error)):
                return False
            time.sleep(IDLE_POLL_S)

    @property
    def backlog(self) -> int:
        with self._lock:
            queued = len(self._queue)
        return queued + sum(outbox.waiting for outbox in self.outboxes)

    @property
    def behind(self) -> bool:
        """A quarter of the ordinary queue is waiting for the broker: work that would add
        to it (answering a flood of requests) should wait, before it pushes telemetry out."""
        with self._lock:
            return len(self._queue) >= self._queue.maxlen // 4

    # --- the session's thread -----------------------------------------------------------

    def _notify(self) -> None:
        self._set_in_loop(self._wake)

    def _set_in_loop(self, event: asyncio.Event | None) -> None:
        """Sets one of the session loop's events from another thread (none before the loop
        runs, nothing once it has closed)."""
        loop = self._loop
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the session is over
                loop.call_soon_threadsafe(event.set)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._wakes_kept = [asyncio.Event() for _ in self.outboxes]
        self._halt = asyncio.Event()
        backoff_s = BACKOFF_FIRST_S
        while True:
            self._accepted = False
            try:
                await self._connected_session()
                backoff_s = BACKOFF_FIRST_S
            except aiomqtt.MqttError as exc:
                if str(exc) != self.last_error and self._short_in_row < SHORT_LIVED_WARN:
                    log.warning("MQTT %s: %s; retrying", self.broker.describe(), exc)
                self.last_error = str(exc)
            if not self._accepted:  # refused or unreachable: the broker away, no id taken
                self._lost_soon = False
                self._short_in_row = 0
            else:  # lost once the broker had accepted it, greeted or not yet
                self._lost_soon = (time.monotonic() - self._connected_at_s < STABLE_S
                                   and not self._stopping)
                if not self._lost_soon:
                    self._short_in_row = 0
                if self._short_in_row < 2:  # it was up: the first retry comes soon again
                    backoff_s = BACKOFF_FIRST_S
            if self.connected.is_set():
                self.connected.clear()
                for callback in self.on_disconnect:
                    callback()
            if self._stopping:
                return
            # Wait for the next attempt; stop() cuts the wait short for one last attempt
            # (it delivers what is queued if the broker is back) instead of outliving join.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halt.wait(), backoff_s * random.uniform(0.5, 1.5))
            backoff_s = min(2 * backoff_s, BACKOFF_MAX_S)

    def _reconnected(self) -> None:
        """A connection the broker ended soon after accepting it, then taken again at the
        first try: what a client id taken in turn looks like (a broker that restarts refuses
        a try or more first)."""
        if not self._lost_soon:
            return
        self._lost_soon = False
        self.short_lived += 1
        self._short_in_row += 1
        if self._short_in_row == SHORT_LIVED_WARN:
            log.warning("MQTT %s: the broker ended the session %d times in a row within %g s "
                        "of accepting it: is another client using the client id %r (two "
                        "emulators with the same pack id, two fleets with the same --shard)? "
                        "The broker's log then says it is closing the old connection. "
                        "Retrying at a growing interval", self.broker.describe(),
                        SHORT_LIVED_WARN, STABLE_S, self.client_id)

    async def _connected_session(self) -> None:
        b = self.broker
        will = aiomqtt.Will(self.will[0], self.will[1], qos=1, retain=True) if self.will else None
        async with BudgetedClient(self.reader, hostname=b.host, port=b.port,
                                  username=b.username, password=b.password,
                                  identifier=self.client_id, will=will, tls_params=b.tls,
                                  keepalive=self.keepalive_s, timeout=10,
                                  socket_options=(NO_DELAY,),
                                  protocol=aiomqtt.ProtocolVersion.V5,
                                  properties=self._connect_properties(),
                                  queue_type=self._dispatching_queue()) as client:
            self._accepted = True  # the broker's CONNACK: it took the client id
            self._connected_at_s = time.monotonic()
            self._reconnected()
            filters = list(dict.fromkeys(f for f, _ in self._handlers))  # once, if packs share it
            for first in range(0, len(filters), SUBSCRIBE_FILTERS):
                await client.subscribe([(f, self._options.get(f, 1))
                                        for f in filters[first:first + SUBSCRIBE_FILTERS]])
            if self.online:
                await self._publish(client, Outgoing(*self.online, qos=1, retain=True))
            with self._lock:
                retained = list(self._retained.values())
                # Their queued copies are older (or the same): sent after the republish they
                # would turn a retained topic back to a stale value (a FAULT state to RUN).
                fresh = [i for i in self._queue if not (i.retain and i.topic in self._retained)]
                self._queue.clear()
                self._queue.extend(fresh)
            for item in retained:
                await self._publish(client, item)
            self.connects += 1
            self.last_error = ""
            self.connected.set()
            log.info("MQTT connected to %s", b.describe())
            for callback in self.on_connect:
                callback()
            self._greeted = client
            receiver = asyncio.create_task(self._receive(client))
            sender = asyncio.create_task(self._send_all(client))
            try:
                done, pending = await asyncio.wait({receiver, sender},
                                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._greeted = None
            for task in pending:
                task.cancel()
            for task in done:
                task.result()  # a lost connection raises MqttError here: reconnect
            if self.farewell:  # a clean stop: say so, as the will would have after a crash
                await client.publish(*self.farewell, qos=1, retain=True)

    def _connect_properties(self) -> Properties:
        """MQTT 5's Maximum Packet Size: the broker sends this session nothing bigger than
        its size cap (it drops the message for us), so a huge one never crosses the wire;
        and its Receive Maximum: QoS 1 and 2 messages beyond what the read budget parses a
        window wait at the broker, not in TCP ahead of an acknowledgement."""
        properties = Properties(PacketTypes.CONNECT)
        properties.MaximumPacketSize = self.reader.max_packet_bytes
        properties.ReceiveMaximum = self.reader.budget.parsed
        return properties

    def _dispatching_queue(self) -> type[asyncio.Queue]:
        """aiomqtt's queue of received messages, made to hand each one on as paho reads it:
        nothing piles up (a flood read faster than it is handled would, in memory without
        bound), and no task is made for each message."""
        dispatch = self._dispatch

        class Dispatching(asyncio.Queue):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                dispatch(item)
        return Dispatching

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Ends (MqttError) when the connection is lost; the messages never wait in its
        queue (`_dispatching_queue`)."""
        async for _ in client.messages:
            pass

    def _dispatch(self, message: aiomqtt.Message) -> None:
        """A message paho has parsed (QoS 1 or 2: the reader judges QoS 0 ones itself)."""
        self._deliver(message.topic.value, bytes(message.payload or b""))

    def _deliver(self, topic: str, payload: bytes) -> None:
        """Each handler whose subscription matches gets the message, if the inbound gate
        takes it: judged once a subscription, so the packs of a batch that share one (Home
        Assistant's status) all get what it takes."""
        admitted: dict[str, bool] = {}
        for topic_filter, handler in self._handlers:
            if topic_filter not in admitted:
                admitted[topic_filter] = self.inbound.matches(
                    topic_filter, topic) and self.inbound.admit(topic_filter, topic, payload)
            if admitted[topic_filter]:
                try:
                    handler(topic, payload)
                except Exception:  # noqa: BLE001 - one bad message must not end the session
                    log.exception("MQTT handler for %s failed", topic)

    @staticmethod
    async def _publish(client: BudgetedClient, item: Outgoing) -> None:
        """An ordinary message: a QoS 1 one is not waited for (its PUBACK may come seconds
        late, behind a flood the read budget holds in TCP, and telemetry would wait)."""
        if item.qos == 0:
            await client.publish(item.topic, item.payload, retain=item.retain)
        else:
            client.publish_unacknowledged(item.topic, item.payload, item.qos, item.retain)

    async def _send_all(self, client: BudgetedClient) -> None:
        """The ordinary messages and the outbox's, each in a task of their own; ends when
        both have (a stop), or as the first to fail does."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._send(client))
                for index in range(len(self.outboxes)):
                    group.create_task(self._send_kept(client, index))
        except* aiomqtt.MqttError as failed:
            raise failed.exceptions[0] from None

    async def _send(self, client: BudgetedClient) -> None:
        """The ordinary messages, in order, as they are queued (until stopped and none is
        left). Each is handed to paho unwaited, and paho writes all it holds in one pass of
        the loop; a QoS 0 message is waited for (until written, and with it every one
        before it) only when it is the last queued or the SEND_BURST-th unwaited: a burst
        costs one wait and one writer registration, not one each, and paho holds no more
        than SEND_BURST of them (the bounded queue, not paho, is where a backlog waits)."""
        unwaited = 0  # QoS 0 messages handed to paho since the last wait
        while True:
            with self._lock:
                item = self._queue.popleft() if self._queue else None
                last = not self._queue
                self._in_hand = int(item is not None)
            if item is not None:
                try:
                    if item.qos == 0 and (last or unwaited + 1 >= SEND_BURST):
                        await client.publish(item.topic, item.payload, retain=item.retain)
                        unwaited = 0
                    else:
                        client.publish_unacknowledged(item.topic, item.payload, item.qos,
                                                      item.retain)
                        unwaited += item.qos == 0
                finally:
                    self._in_hand = 0
                self.published += 1
            elif self._stopping:
                return
            else:
                self._wake.clear()
                await self._wake.wait()

    async def _send_kept(self, client: BudgetedClient, index: int = 0) -> None:
        """Outbox `index`'s messages, beside the ordinary ones: in order, one at a time, each
        leaving the outbox once the broker has acknowledged it, however late its PUBACK
        comes (behind a flood held in TCP, say; keep-alive tells if the broker is gone).
        So a backlog of events holds up no telemetry, and one waiting for its PUBACK none
        either."""
        if index >= len(self.outboxes):
            return
        outbox = self.outboxes[index]
        while True:
            kept = outbox.next()
            if kept is not None:
                await client.publish(kept[0], kept[1], qos=1, timeout=math.inf)
                outbox.done()
                self.published += 1
            elif self._stopping:
                return
            else:
                wake = self._wakes_kept[index]
                wake.clear()
                await wake.wait()
