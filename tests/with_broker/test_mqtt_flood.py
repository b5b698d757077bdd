"""A flood at an emulator, against a real Mosquitto, faster than its read budget takes
(mosquitto_pub from a pipe, tens of thousands of 1 kB messages a second): the session reads a
window's budget and leaves the rest in TCP and at the broker (each such window counted and
logged once), while

- its telemetry goes on, every message in order (a QoS 1 state's PUBACK, late behind the
  flood, holds nothing up), and a legitimate command gets through once the flood ends (sent
  again until answered, as a client does: the flood shares its topic's rate);
- its keep-alive holds through a flood several keep-alive periods long although it publishes
  nothing (paho sends PINGREQs, their PINGRESPs come late behind the flood).

The broker logs errors and warnings only: a line for each message would slow it below the
flood this needs. Each flood message is padded to about 1 kB (JSON allows the trailing
blanks): when the flood stops, TCP's buffers and the broker still hold megabytes of it, which
the session reads at its budget before anything sent after the flood; at 1 kB a message that
takes a second or two, where 17-byte messages took a quarter of a minute. Every wait has a
deadline; nothing is timed.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from bms.links.mqtt.inbound import Intake
from bms.links.mqtt.session import MqttSession, parse_broker
from tests.support.mqtt_broker import HOST, Broker
from tests.support.processes import wait_until
from tests.with_broker.test_mqtt_links import Watcher, serve, wait_ready

QUIET = "log_type none\nlog_type error\nlog_type warning"
DRAIN_S = 120.0  # for what the broker and TCP hold of a flood to come through a busy machine
PAD_BYTES = 1000  # blanks after each flood message's JSON: see above
# refused by the policies below: answered NOT_ENABLED
RUN = b'{"state": "run"}' + b" " * PAD_BYTES + b"\n"
TELEMETRY_DURING_FLOOD = 10


class Flood:
    """mosquitto_pub publishing the line `line` (QoS 0) on `topic` as fast as it can, from a
    pipe this keeps full until `stop`."""

    def __init__(self, broker: Broker, topic: str, line: bytes = RUN):
        self.proc = subprocess.Popen(["mosquitto_pub", "-h", HOST, "-p", str(broker.port),
                                      "-t", topic, "-l"], stdin=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.chunk = line * 10_000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        try:
            while not self._stop.is_set():
                self.proc.stdin.write(self.chunk)
        except (BrokenPipeError, ValueError):  # ended by stop()
            pass

    def stop(self) -> None:
        self._stop.set()
        self.proc.kill()
        self.proc.wait(5)
        self._thread.join(5)


def quiet_broker(mqtt_broker_factory) -> Broker:
    return mqtt_broker_factory(extra_config=QUIET)


def send_until(broker: Broker, topic: str, payload: bytes, arrived: Callable[[], object],
               what: str, details: Callable[[], str] = str) -> None:
    """Publishes (QoS 1) once a second until `arrived()`, as a client whose message went
    unanswered does: after a flood the broker may still be dropping what comes for the
    session (its queue for it full), and the flood's messages share the topic's rate."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-after-flood")
    client.connect(HOST, broker.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + DRAIN_S
        while not arrived():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} never got through (waited {DRAIN_S:g} s){details()}")
            client.publish(topic, payload, qos=1)
            time.sleep(1.0)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_flood_is_throttled_while_telemetry_flows_and_a_command_gets_through_after(
        mqtt_broker_factory, mosquitto_clients, tmp_path: Path):
    broker = quiet_broker(mqtt_broker_factory)
    stats = tmp_path / "stats.json"
    emulator = serve(broker, "--sim", "--tick", "0.05", "--arrays-period", "0.1",
                     "--mqtt-commands", "state=standby", "--stats", str(stats),
                     "--duration", str(3 * DRAIN_S))  # the drain may outlast the default
    base = "bms/p1"
    watcher = Watcher(broker.port, f"{base}/cells", f"{base}/cmd/state/result")
    flood = None
    try:
        wait_ready(broker, emulator)
        watcher.wait_subscribed()
        flood = Flood(broker, f"{base}/cmd/state")
        first = watcher.first(f"{base}/cmd/state/result", DRAIN_S)  # the flood is being read

        def cells_since_flood():
            return [r for r in watcher.on(f"{base}/cells") if r.at > first.at]

        wait_until(lambda: len(cells_since_flood()) >= TELEMETRY_DURING_FLOOD, DRAIN_S,
                   "telemetry starved by the flood", watcher.summary)
        flood.stop()
        tenth = cells_since_flood()[TELEMETRY_DURING_FLOOD - 1]
        # the emulator was still answering the flood's commands after that telemetry went out
        watcher.first(f"{base}/cmd/state/result", DRAIN_S, lambda r: r.at > tenth.at)
        answers = watcher.on(f"{base}/cmd/state/result")
        assert all(json.loads(r.payload)["error"]["code"] == "NOT_ENABLED" for r in answers)


        def answered() -> list:
            return [r for r in watcher.on(f"{base}/cmd/state/result")
                    if json.loads(r.payload).get("id") == "after"]

        send_until(broker, f"{base}/cmd/state", b'{"state": "standby", "id": "after"}',
                   answered, "a command after the flood", watcher.summary)
        assert json.loads(answered()[0].payload)["ok"] is True
        assert emulator.popen.poll() is None, emulator.output()
    finally:
        if flood is not None:
            flood.stop()
        watcher.stop()
        emulator.stop()
    seqs = [json.loads(r.payload)["seq"] for r in watcher.on(f"{base}/cells")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "telemetry lost or reordered"
    mqtt = json.loads(stats.read_text())["mqtt"]
    assert mqtt["throttled"] > 0 and mqtt["connects"] == 1 and mqtt["dropped"] == 0, mqtt
    assert mqtt["refused_messages"][f"{base}/cmd/+"]["over_rate"] > 0
    assert emulator.said("windows throttled so far") == 1, emulator.output()  # once an episode


def test_keepalive_holds_through_a_flood_of_several_keepalive_periods(
        mqtt_broker_factory, mosquitto_clients, caplog):
    broker = quiet_broker(mqtt_broker_factory)
    keepalive_s = 3  # aiomqtt checks it every second: 3 s leaves the broker's 4.5 s a margin
    session = MqttSession(parse_broker(f"{broker.url}/bms"), "test-keepalive",
                          keepalive_s=keepalive_s)
    taken: list[bytes] = []
    lost: list[bool] = []
    session.subscribe("bms/p1/cmd/+", lambda _t, p: taken.append(p), Intake(rate_per_s=10))
    session.on_disconnect.append(lambda: lost.append(True))
    flood = None
    caplog.set_level(logging.DEBUG, logger="mqtt")  # paho, through aiomqtt: its PINGREQs
    try:
        session.start()
        wait_until(session.connected.is_set, 20, "the session never connected")
        flood = Flood(broker, "bms/p1/cmd/state")
        wait_until(lambda: session.reader.throttled > 0, DRAIN_S, "the flood was never throttled")
        pings_before = caplog.text.count("Sending PINGREQ")

        def pings_in_flood() -> int:
            return caplog.text.count("Sending PINGREQ") - pings_before

        # The flood goes on and the session publishes nothing: keep-alive is needed, and must
        # be done, three times over (a loaded machine stretches the periods, so count them).
        wait_until(lambda: pings_in_flood() >= 3, 20 * keepalive_s,
                   "three keep-alive periods never passed in the flood",
                   lambda: caplog.text[-2000:], every_s=0.5)
        flood_alive = flood.proc.poll() is None
        flood.stop()
        send_until(broker, "bms/p1/cmd/marker", b"after the flood",
                   lambda: b"after the flood" in taken, "a message sent after the flood")
        # The broker answers: a PINGRESP held in TCP behind the flood, or one to the next
        # PINGREQ once the flood has drained (paho took the flood's bytes as signs of life).
        wait_until(lambda: "Received PINGRESP" in caplog.text, 4 * keepalive_s,
                   "no PINGRESP ever came", lambda: caplog.text[-2000:], every_s=0.2)
        lost_in_flood = list(lost)  # (a stop calls on_disconnect too)
    finally:
        if flood is not None:
            flood.stop()
        session.stop()
    assert flood_alive, "the flood ended before three keep-alive periods passed"
    assert lost_in_flood == [] and session.connects == 1
    refused = session.inbound.counts()["bms/p1/cmd/+"]["over_rate"]
    assert refused > session.reader.budget.packets  # more than a window's worth came
