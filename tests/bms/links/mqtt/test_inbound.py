"""What the emulator takes from the broker, bounded before anything reads it: the size cap,
the rate per topic, the subscriber's own check (one frame a message on proto/in), the
counts and the log; and where the bridge parses a command (the session's thread, so a
refused one never reaches the control loop). No broker: the session is handed aiomqtt
messages as paho hands them on (through aiomqtt's queue), on a clock the test sets."""

from __future__ import annotations

import asyncio
import json
import logging

import aiomqtt
import numpy as np
import pytest

from bms.host.policy import parse_policy
from bms.links.mqtt import inbound
from bms.links.mqtt.bridge import MqttBridge, MqttOptions
from bms.links.mqtt.inbound import BACKLOG_FULL, OVER_RATE, TOO_LARGE, InboundGate, Intake
from bms.links.mqtt.link import (
    MAX_MESSAGE_BYTES,
    NOT_ONE_FRAME,
    MqttLink,
    frame_rate_per_s,
    one_frame,
)
from bms.links.mqtt.session import PACKET_OVERHEAD_BYTES, MqttSession, parse_broker
from protocol import messages as pm
from protocol.codec import encode
from tests.bms.links.mqtt.test_commands import make_device

CMD = "bms/p1/cmd/+"


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


def gate(clock: Clock, max_bytes: int = 1000, **intakes: Intake) -> InboundGate:
    g = InboundGate(max_bytes, clock)
    for topic_filter, intake in intakes.items():
        g.add(topic_filter, intake)
    return g


def admitted(g: InboundGate, topic_filter: str, topics: list[str], payload=b"{}") -> list[str]:
    return [t for t in topics if g.admit(topic_filter, t, payload)]


# --- the gate ----------------------------------------------------------------------------

def test_a_message_over_the_cap_is_refused_and_one_at_it_taken(clock):
    g = gate(clock, max_bytes=100)
    assert g.admit("a/#", "a/b", b"x" * 100)
    assert not g.admit("a/#", "a/b", b"x" * 101)
    assert g.counts() == {"a/#": {TOO_LARGE: 1}}


def test_a_subscription_may_have_a_lower_cap_never_a_higher_one(clock):
    g = gate(clock, max_bytes=100, low=Intake(max_bytes=10), high=Intake(max_bytes=10_000))
    assert not g.admit("low", "low", b"x" * 11)
    assert not g.admit("high", "high", b"x" * 101)
    assert g.admit("high", "high", b"x" * 100)


def test_each_topic_takes_its_rate_and_a_burst_as_big(clock):
    g = gate(clock, **{CMD: Intake(rate_per_s=5)})
    state, config = "bms/p1/cmd/state", "bms/p1/cmd/config"
    assert admitted(g, CMD, [state] * 8) == [state] * 5
    assert admitted(g, CMD, [config] * 8) == [config] * 5  # a bucket of its own
    clock.t += 0.2  # one more token on each
    assert admitted(g, CMD, [state] * 3) == [state]
    clock.t += 60  # a full bucket again, not 300 tokens
    assert admitted(g, CMD, [state] * 8) == [state] * 5
    assert g.counts() == {CMD: {OVER_RATE: 3 + 3 + 2 + 3}}


def test_made_up_topics_beyond_the_kept_buckets_share_one(clock):
    g = gate(clock, **{CMD: Intake(rate_per_s=2)})
    known = [f"bms/p1/cmd/c{k}" for k in range(inbound.TOPICS_PER_FILTER)]
    assert admitted(g, CMD, known) == known
    made_up = [f"bms/p1/cmd/x{k}" for k in range(100)]
    assert len(admitted(g, CMD, made_up)) == 2  # one bucket of 2 for all of them


def test_the_subscribers_check_refuses_with_its_reason(clock):
    g = gate(clock, proto=Intake(check=lambda p: None if p == b"ok" else "not_ok"))
    assert g.admit("proto", "proto", b"ok")
    assert not g.admit("proto", "proto", b"no")
    assert g.counts() == {"proto": {"not_ok": 1}}


def test_the_cheap_checks_come_first(clock):
    """An oversized message is never rate-counted nor handed to the check."""
    seen = []
    g = gate(clock, max_bytes=10,
             t=Intake(rate_per_s=1, check=lambda p: seen.append(p)))
    assert not g.admit("t", "t", b"x" * 11)
    assert g.admit("t", "t", b"x")  # the token was not spent on the refused one
    assert seen == [b"x"]


def test_refusals_are_logged_once_an_episode_then_counted(clock, caplog):
    g = gate(clock, **{CMD: Intake(rate_per_s=1)})
    with caplog.at_level(logging.WARNING, logger=inbound.__name__):
        admitted(g, CMD, ["bms/p1/cmd/state"] * 1001)
        assert len(caplog.records) == 1
        assert "bms/p1/cmd/+" in caplog.text and "1 refused so far" in caplog.text
        clock.t += inbound.LOG_EVERY_S
        admitted(g, CMD, ["bms/p1/cmd/state"] * 2)
    assert len(caplog.records) == 2
    assert "1000 since the last report" in caplog.records[1].getMessage()
    assert g.counts() == {CMD: {OVER_RATE: 1001}}


@pytest.mark.parametrize(("topic_filter", "topic", "matched"), [
    ("bms/p1/cmd/+", "bms/p1/cmd/state", True), ("bms/p1/cmd/+", "bms/p1/cmd/", True),
    ("bms/p1/cmd/+", "bms/p1/cmd/state/result", False), ("bms/p1/cmd/+", "bms/p1/cmd", False),
    ("bms/+/proto/in", "bms/p.1/proto/in", True), ("bms.x/+", "bmsyx/a", False),
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("a/#", "ab", False), ("#", "x/y", True),
    ("homeassistant/status", "homeassistant/status", True),
    ("homeassistant/status", "homeassistant/status2", False),
    ("#", "$SYS/broker", False), ("+/broker", "$SYS/broker", False),  # MQTT 4.7.2
])
def test_topics_are_matched_as_mqtt_matches_them(clock, topic_filter, topic, matched):
    assert gate(clock).matches(topic_filter, topic) is matched


# --- one frame a message on proto/in ---------------------------------------------------------

FRAME = encode(pm.GetStatus(), 1, 1)


@pytest.mark.parametrize(("payload", "taken"), [
    (FRAME, True),
    (FRAME[1:], True),  # the leading delimiter is optional
    (FRAME + FRAME, False),  # two requests: each would be answered
    (FRAME[:-1], False),  # no end: the rest would wait to join the next message
    (FRAME[1:-1] + FRAME, False),
    (b"\x00", False), (b"", False), (b"\x00\x00", False),
])
def test_proto_in_takes_one_whole_frame_a_message(payload, taken):
    assert (one_frame(payload) is None) is taken
    if not taken:
        assert one_frame(payload) == NOT_ONE_FRAME


@pytest.mark.parametrize(("tick_s", "rate_per_s"), [(0.1, 50), (0.01, 200), (0.001, 2000)])
def test_proto_in_takes_twice_the_tick_rate_by_default(tick_s, rate_per_s):
    assert frame_rate_per_s(tick_s) == pytest.approx(rate_per_s)


def test_the_longest_frame_fits_the_proto_cap():
    big = pm.CellVoltages(np.full(512, 3.3, np.float32))
    assert len(encode(big, 1, 2)) <= MAX_MESSAGE_BYTES


# --- the session and the bridge ----------------------------------------------------------

def session(**kw) -> MqttSession:
    return MqttSession(parse_broker("mqtt://127.0.0.1:1"), "test", **kw)


def receive(s: MqttSession, messages: list[tuple[str, bytes]]) -> None:
    """As aiomqtt hands each message paho has read to its queue: the session's, which
    dispatches it there and then."""
    queue = s._dispatching_queue()()
    for topic, payload in messages:
        queue.put_nowait(aiomqtt.Message(topic, payload, 0, False, 1, None))
    assert queue.empty()  # nothing waits


def test_the_session_asks_the_broker_for_nothing_over_its_cap():
    properties = session(max_message_bytes=5000)._connect_properties()
    assert properties.MaximumPacketSize == 5000 + PACKET_OVERHEAD_BYTES


def test_the_session_hands_on_only_what_the_gate_takes():
    s = session(max_message_bytes=50)
    got = []
    s.subscribe("bms/p1/proto/in", lambda t, p: got.append(p), Intake(check=one_frame))
    receive(s, [("bms/p1/proto/in", FRAME), ("bms/p1/proto/in", FRAME * 2),
                ("bms/p1/proto/in", FRAME * 10)])
    assert got == [FRAME]
    assert s.inbound.counts() == {"bms/p1/proto/in": {NOT_ONE_FRAME: 1, TOO_LARGE: 1}}


def test_the_protocol_link_takes_frames_at_its_rate_one_whole_frame_each():
    s = session()
    MqttLink(s, "bms/p1", True, lambda data: None, lambda up: None, owns_session=False,
             rate_per_s=3)
    receive(s, [("bms/p1/proto/in", FRAME)] * 10 + [("bms/p1/proto/in", FRAME * 2)])
    assert s.inbound.counts() == {"bms/p1/proto/in": {OVER_RATE: 8}}
    s.inbound.clock = lambda: 1e9  # later: the bucket full again
    receive(s, [("bms/p1/proto/in", FRAME * 2)])
    assert s.inbound.counts()["bms/p1/proto/in"][NOT_ONE_FRAME] == 1


def test_the_link_takes_no_requests_while_their_answers_could_not_go_out():
    """Answers to a flood of reads would push the telemetry out of the session's queue."""
    s = session(queue_size=8)
    link = MqttLink(s, "bms/p1", True, lambda data: None, lambda up: None,
                    owns_session=False)
    link._loop = loop = asyncio.new_event_loop()  # as `run` sets it; the test runs nothing
    try:
        link._message("bms/p1/proto/in", FRAME)
        s.publish("bms/p1/state", b"{}")
        s.publish("bms/p1/cells", b"{}")  # a quarter of the queue waits for the broker
        link._message("bms/p1/proto/in", FRAME)
    finally:
        loop.close()
    assert list(link._waiting) == [FRAME]
    assert s.inbound.counts() == {"bms/p1/proto/in": {BACKLOG_FULL: 1}}


def bridge(policy: str, **options) -> tuple[MqttBridge, MqttSession]:
    s = session(max_message_bytes=2000)
    b = MqttBridge(s, make_device(), "p1",
                   MqttOptions(commands=parse_policy(policy), ha_discovery=False, **options))
    return b, s


def results(s: MqttSession) -> list[dict]:
    return [json.loads(item.payload) for item in s._queue if item.topic.endswith("/result")]


def test_a_command_refused_before_the_device_is_answered_in_the_sessions_thread():
    b, s = bridge("config")
    receive(s, [("bms/p1/cmd/state", b'{"id": 1, "state": "standby"}'),
                ("bms/p1/cmd/config", b'{"id": 2, "get": ['),
                ("bms/p1/cmd/reboot", b'{"id": 3}')])
    assert [(r["id"], r["error"]["code"]) for r in results(s)] == [
        (1, "NOT_ENABLED"), (None, "BAD_JSON"), (3, "UNKNOWN_COMMAND")]
    assert b.inbox.empty()  # nothing for the control loop
    assert b.counts()["refused_commands"] == {"NOT_ENABLED": 1, "BAD_JSON": 1,
                                              "UNKNOWN_COMMAND": 1}


def test_a_good_command_waits_parsed_for_the_control_loop():
    b, s = bridge("state")
    receive(s, [("bms/p1/cmd/state", b'{"id": 1, "state": "standby"}')])
    assert results(s) == [] and b.device.fw.requested != "standby"
    b.poll(1.0)
    assert results(s) == [{"id": 1, "command": "state", "ok": True, "state": "standby"}]
    assert b.device.fw.requested == "standby"


def test_a_command_flood_is_cut_to_the_rate_and_an_oversized_one_goes_unread():
    b, s = bridge("", command_rate_per_s=4)
    receive(s, [("bms/p1/cmd/state", b'{"state": "run"}')] * 50
            + [("bms/p1/cmd/config", b'{"get": []' + b" " * 5000 + b"}")])
    assert len(results(s)) == 4  # NOT_ENABLED, each answered: no more than the rate
    assert b.counts()["refused_messages"] == {"bms/p1/cmd/+": {OVER_RATE: 46, TOO_LARGE: 1}}
