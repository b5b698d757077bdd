"""Fault events over a broker outage longer than memory holds, against a real Mosquitto:
with a store every event arrives once, in order, also when the emulator restarts during
the outage; without one the first `MEMORY` (the outbox's window) arrive and the rest are
counted and reported in their place on `events/lost`; `run --mqtt` that never reaches its
broker exits 4 and says what became of its events.

The emulator's MQTT side runs in this process (a real Device, MqttBridge, MqttSession and
SQLite store), the test being its control loop: each step carries one event of a flapping
fault, far faster than any real pack raises them. Its outbox holds `MEMORY` events in
memory, a tenth of the default `outbox.WINDOW`, so that an outage longer than memory holds
is a few hundred events, not thousands (each is delivered and acknowledged in turn: a
backlog's wall time is its length). Its outage is either the broker stopped or a TcpGate
between it and the broker shut: behind the gate only the emulator is cut off, and the
test's subscriber, on the broker all along, sees everything delivered after it. Every wait
has a deadline.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from bms.core.firmware import Firmware
from bms.core.signals import FaultEvent
from bms.data.faults import FAULT_CODES, Level
from bms.data.presets import PRESETS
from bms.host.device import Device, Identity
from bms.links.mqtt.bridge import MqttBridge, MqttOptions, availability
from bms.links.mqtt.outbox import WINDOW
from bms.links.mqtt.session import MqttSession, parse_broker
from bms.store.nvm import NvmStore, PackIdentity
from bms.store.outbox import StoredOutbox
from protocol import messages as pm
from tests.support.mqtt_broker import HOST, Broker, free_port
from tests.support.processes import CLI, wait_until
from tests.support.tcp_gate import TcpGate

PACK = "p1"
CHEM = PRESETS["na-nfm"]
SERIES = 4
MEMORY = WINDOW // 10  # the emulator's outbox window: events held in memory
OUTAGE_EVENTS = 2 * MEMORY + 50  # well past what memory holds
KEPT, MORE = MEMORY + MEMORY // 2, MEMORY // 2  # kept over a restart, raised after it
LOST = MEMORY // 2  # events past the window of an outbox without a store
EVENTS_PER_STEP = 10  # the fault flaps on every cell at once
DELIVERY_S = 120.0  # deadline for a backlog to come through a busy machine


class Emulator:
    """The firmware's MQTT side: `raise_events(n)` is n events, EVENTS_PER_STEP a step."""

    def __init__(self, port: int, store_path: Path | None = None):
        fw = Firmware(CHEM, SERIES, CHEM.capacity_ah)
        self.device = Device(fw, CHEM, Identity(CHEM.name, pm.Mode.SIM, 1, CHEM.capacity_ah, 2))
        self.store = None if store_path is None else NvmStore(
            store_path, PackIdentity(PACK, "sim", CHEM.name, SERIES, CHEM.capacity_ah),
            time.time)
        broker = parse_broker(f"mqtt://{HOST}:{port}")
        will, online = availability(broker.prefix, PACK)
        self.session = MqttSession(broker, f"bms-emu-{PACK}", will=will, online=online)
        self.bridge = MqttBridge(self.session, self.device, PACK,
                                 MqttOptions(ha_discovery=False, outbox_window=MEMORY),
                                 None if self.store is None else StoredOutbox(self.store))
        self.now_s = 0.0
        self.act = fw.step(None, self.now_s)
        self.device.observe(None, self.act)
        self.raised = 0

    def start(self) -> Emulator:
        self.session.start()
        wait_until(self.session.connected.is_set, 20, "the emulator never connected")
        return self

    def raise_events(self, n: int) -> None:
        """A CELL_OVERVOLTAGE WARNING raised and cleared in turn."""
        for first in range(0, n, EVENTS_PER_STEP):
            self.now_s += 0.1
            events = []
            for _ in range(min(EVENTS_PER_STEP, n - first)):
                action = "cleared" if self.raised % 2 else "raised"
                events.append(FaultEvent(self.now_s, "CELL_OVERVOLTAGE",
                                         FAULT_CODES["CELL_OVERVOLTAGE"], Level.WARNING,
                                         action, self.raised % SERIES, 4.2))
                self.raised += 1
            self.bridge.after_step(self.now_s,
                                   dataclasses.replace(self.act, events=tuple(events)))

    def tick_until(self, done: Callable[[], object], what: str,
                   timeout_s: float = DELIVERY_S) -> None:
        """The control loop's ticks (`poll`: the outbox brings in what waits on disk)."""
        def ticked() -> object:
            self.bridge.poll(self.now_s)
            return done()

        wait_until(ticked, timeout_s, what, lambda: f"; counts {self.bridge.counts()}",
                   every_s=0.01)

    def close(self) -> None:
        self.bridge.close()
        if self.store is not None:
            self.store.close()


class Subscriber:
    """Everything on `<prefix>/<pack>/events` and `events/lost`, in arrival order."""

    def __init__(self, broker: Broker, pack: str = PACK):
        self.received: list[tuple[str, dict]] = []
        subscribed = threading.Event()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=f"test-outbox-{time.monotonic_ns()}")
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = lambda _c, _u, m: self.received.append(
            (m.topic.rsplit("/", 1)[1], json.loads(m.payload)))
        client.connect(broker.host, broker.port, keepalive=30)
        client.subscribe([(f"bms/{pack}/events", 1), (f"bms/{pack}/events/lost", 1)])
        client.loop_start()
        self._client = client
        if not subscribed.wait(10):
            pytest.fail("the test's subscriber was not subscribed within 10 s")

    def seqs(self) -> list[int]:
        return [body["seq"] for topic, body in list(self.received) if topic == "events"]

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_every_event_of_an_outage_longer_than_memory_holds_arrives_once_in_order(
        mqtt_broker, tmp_path):
    subscriber = Subscriber(mqtt_broker)
    gate = TcpGate(mqtt_broker.port)
    emulator = Emulator(gate.port, tmp_path / "p1.sqlite").start()
    try:
        emulator.raise_events(3)
        emulator.tick_until(lambda: StoredOutbox(emulator.store).waiting() == 0,
                            "3 events delivered and forgotten")
        gate.shut()
        wait_until(lambda: not emulator.session.connected.is_set(), 20, "still connected")
        emulator.raise_events(OUTAGE_EVENTS)
        counts = emulator.bridge.counts()
        assert (counts["kept"], counts["kept_dropped"]) == (OUTAGE_EVENTS, 0)
        assert StoredOutbox(emulator.store).waiting() == OUTAGE_EVENTS  # on disk, all of them
        gate.open()
        total = 3 + OUTAGE_EVENTS
        emulator.tick_until(lambda: len(subscriber.seqs()) >= total, f"{total} events")
        emulator.raise_events(1)  # a new one, after the backlog
        emulator.tick_until(lambda: len(subscriber.seqs()) > total, "the event after")
    finally:
        emulator.close()
        gate.shut()
        subscriber.stop()
    assert subscriber.seqs() == list(range(1, total + 2))  # each once, in order
    assert [topic for topic, _ in subscriber.received] == ["events"] * (total + 1)  # no loss
    bodies = [body for _, body in subscriber.received]
    assert [b["action"] for b in bodies] == ["raised", "cleared"] * ((total + 1) // 2)
    assert {(b["name"], b["level"], b["pack_id"]) for b in bodies} == {
        ("CELL_OVERVOLTAGE", "WARNING", PACK)}
    store = NvmStore(tmp_path / "p1.sqlite", emulator.store.pack, time.time)
    try:
        assert StoredOutbox(store).waiting() == 0  # delivered: forgotten before closing
    finally:
        store.close()


def test_an_emulator_restarted_during_an_outage_delivers_what_its_store_kept(
        mqtt_broker, tmp_path):
    broker, path = mqtt_broker, tmp_path / "p1.sqlite"
    first = Emulator(broker.port, path).start()
    try:
        first.raise_events(2)
        first.tick_until(lambda: first.bridge.counts()["kept"] == 0, "2 events delivered")
        broker.stop()
        first.raise_events(KEPT)
    finally:
        first.close()  # the power goes, the broker still away
    second = Emulator(broker.port, path)  # the restart
    subscriber = None
    try:
        assert second.bridge.counts()["kept"] == KEPT
        second.raise_events(MORE)  # numbered on from the first run's
        broker.start()
        subscriber = Subscriber(broker)
        # Its session starts after the subscriber is on the restarted broker: one already
        # retrying could deliver before the subscriber is there to see it.
        second.start()
        second.tick_until(lambda: len(subscriber.seqs()) >= KEPT + MORE, "every kept event")
    finally:
        second.close()
        if subscriber is not None:
            subscriber.stop()
    assert subscriber.seqs() == list(range(3, 3 + KEPT + MORE))
    assert second.bridge.counts()["kept"] == 0


def test_without_a_store_the_first_events_arrive_and_the_rest_are_reported_lost_in_place(
        mqtt_broker):
    subscriber = Subscriber(mqtt_broker)
    gate = TcpGate(mqtt_broker.port)
    emulator = Emulator(gate.port).start()
    try:
        gate.shut()
        wait_until(lambda: not emulator.session.connected.is_set(), 20, "still connected")
        emulator.raise_events(MEMORY + LOST)
        counts = emulator.bridge.counts()
        assert (counts["kept"], counts["kept_dropped"]) == (MEMORY, LOST)
        gate.open()
        emulator.tick_until(lambda: len(subscriber.received) >= MEMORY + 1, "the window")
        emulator.raise_events(1)
        emulator.tick_until(lambda: len(subscriber.received) >= MEMORY + 2, "the event after")
    finally:
        emulator.close()
        gate.shut()
        subscriber.stop()
    stream = subscriber.received
    assert [body["seq"] for _, body in stream[:MEMORY]] == list(range(1, MEMORY + 1))
    topic, report = stream[MEMORY]
    assert topic == "lost" and report["pack_id"] == PACK
    assert (report["dropped"], report["first_seq"], report["last_seq"]) == (
        LOST, MEMORY + 1, MEMORY + LOST)
    assert stream[MEMORY + 1:] == [("events", stream[MEMORY + 1][1])]
    assert stream[MEMORY + 1][1]["seq"] == MEMORY + LOST + 1


# --- run --mqtt ---------------------------------------------------------------------------

def run(broker_port: int, *args: str) -> tuple[int, dict, str]:
    """`bms-emu run --mqtt ... --json`: exit code, summary, stderr."""
    done = subprocess.run([*CLI, "run", "--mqtt", f"mqtt://{HOST}:{broker_port}",
                           "--pack-id", "r1", "--series", str(SERIES), "--json", *args],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout), done.stderr


INJECT = ("--duration", "20s", "--inject", "5s:temp-sensor-open:sensor=1")


def export(store: str) -> dict:
    done = subprocess.run([*CLI, "nvm", "export", store], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_run_that_never_reaches_its_broker_exits_4_and_its_store_delivers_next_time(
        mqtt_broker, tmp_path):
    broker, store = mqtt_broker, str(tmp_path / "r1.sqlite")
    broker.stop()
    code, summary, err = run(broker.port, *INJECT, "--nvm", store)
    assert code == 4, err
    assert {k: summary["mqtt"][k] for k in ("connects", "published", "kept", "kept_dropped")
            } == {"connects": 0, "published": 0, "kept": 1, "kept_dropped": 0}
    assert f"never reached the broker mqtt://{HOST}:{broker.port}/bms" in err
    assert "1 fault event(s) wait in the store for the next start" in err
    raised = summary["events"][0]
    [waiting] = export(store)["mqtt_outbox"]
    assert waiting["seq"] == 1 and waiting["payload"]["name"] == raised["name"]
    broker.start()
    subscriber = Subscriber(broker, "r1")
    try:
        code, summary, err = run(broker.port, "--duration", "1s", "--nvm", store)
        assert code == 0, err
        assert summary["mqtt"]["connects"] == 1 and summary["mqtt"]["kept"] == 0
        wait_until(lambda: subscriber.received, 10, "the first run's event never came")
    finally:
        subscriber.stop()
    [(topic, body)] = subscriber.received
    assert topic == "events" and body["seq"] == 1
    assert {k: body[k] for k in raised} == raised  # the first run's TEMP_SENSOR_FAULT
    assert export(store)["mqtt_outbox"] == []


def test_a_run_without_a_store_that_never_reaches_its_broker_says_its_events_are_lost():
    code, summary, err = run(free_port(), *INJECT)
    assert code == 4 and summary["mqtt"]["kept"] == 1
    assert "1 fault event(s) are lost" in err
