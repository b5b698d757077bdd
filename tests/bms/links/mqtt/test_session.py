"""The MQTT session's parts that need no broker: the URL and its errors, the bounded
queues that keep a slow broker from ever holding up the firmware, and the order in which
the outbox's messages and the ordinary ones go out."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from bms.data.validation import InputError
from bms.links.mqtt.inbound import Intake
from bms.links.mqtt.outbox import Outbox
from bms.links.mqtt.session import PASSWORD_ENV, MqttSession, parse_broker


def test_a_full_url_is_read_with_its_defaults():
    b = parse_broker("mqtt://ops:s%40cret@broker.example:1884/site1/hall2")
    assert (b.host, b.port, b.prefix, b.username, b.password, b.tls) == (
        "broker.example", 1884, "site1/hall2", "ops", "s@cret", None)
    b = parse_broker("mqtts://broker.example", ca="ca.pem")
    assert (b.port, b.prefix, b.tls.ca_certs) == (8883, "bms", "ca.pem")


def test_the_password_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert parse_broker("mqtt://ops@broker").password == "from-env"
    assert parse_broker("mqtt://ops:in-url@broker").password == "in-url"


@pytest.mark.parametrize(("url", "says"), [
    ("http://broker", "mqtt://"),
    ("mqtt://", "no host"),
    ("mqtt://broker:99999", "port"),
    ("mqtt://broker/a/#", "wildcards"),
    ("", "must start with mqtt://"),
    ("mqtt://[::1:1883/x", "Invalid IPv6 URL"),
    ("mqtt://broker:0/x", "port must be a number 1..65535"),
    ("mqtt://broker:/x", "port must be a number 1..65535"),
    ("mqtt://broker:abc/x", "port must be a number 1..65535"),
    ("mqtt://broker/$SYS", "starts with '$'"),
    ("mqtt:// broker/x", "has a space"),
])
def test_a_bad_url_is_refused_with_the_reason(url, says):
    with pytest.raises(InputError) as err:
        parse_broker(url)
    assert says in str(err.value) and url in str(err.value)


def test_an_ipv6_host_is_read_and_described_in_brackets():
    b = parse_broker("mqtt://[::1]:1884/site")
    assert (b.host, b.port, b.describe()) == ("::1", 1884, "mqtt://[::1]:1884/site")


def test_a_prefix_longer_than_a_topic_can_carry_is_refused():
    with pytest.raises(InputError, match="at most 1024"):
        parse_broker("mqtt://broker/" + "p" * 1100)


def test_tls_files_need_mqtts():
    with pytest.raises(InputError, match="mqtts"):
        parse_broker("mqtt://broker", ca="ca.pem")


def session(**kw) -> MqttSession:
    return MqttSession(parse_broker("mqtt://127.0.0.1:1"), "test", **kw)


def test_a_full_queue_drops_the_oldest_ordinary_messages_and_counts_them():
    s = session(queue_size=3)
    for k in range(5):
        s.publish("bms/p/cells", str(k))  # never blocks, never raises: nobody is connected
    assert s.dropped == 2 and s.backlog == 3
    assert [item.payload for item in s._queue] == [b"2", b"3", b"4"]


class Broker:
    """Stands in for the aiomqtt client `_send` and `_send_kept` publish through: what it
    was given, in order; `fail_on` a payload raises MqttError, as a connection lost
    mid-publish does; a QoS 1 publish waited for returns once `acked` is set (its PUBACK)."""

    def __init__(self, fail_on: bytes | None = None):
        self.sent: list[tuple[str, bytes, int]] = []
        self.fail_on = fail_on
        self.acked = asyncio.Event()
        self.acked.set()

    async def publish(self, topic: str, payload: bytes, qos: int = 0,
                      retain: bool = False, timeout: float | None = None) -> None:
        if payload == self.fail_on:
            raise aiomqtt.MqttError("Disconnected")
        self.sent.append((topic, payload, qos))
        if qos:
            await self.acked.wait()

    def publish_unacknowledged(self, topic: str, payload: bytes, qos: int,
                               retain: bool) -> None:
        self.sent.append((topic, payload, qos))


def with_outbox(*events: bytes) -> tuple[MqttSession, Outbox]:
    s = session()
    outbox = Outbox(None, lambda gap: ("bms/p/events/lost", b""))
    s.use_outbox(outbox)
    outbox.put([(seq, "bms/p/events", payload)
                for seq, payload in enumerate(events, start=1)])
    return s, outbox


async def send_both(s: MqttSession, broker: Broker) -> None:
    await asyncio.gather(s._send(broker), s._send_kept(broker))


def test_outbox_messages_and_ordinary_ones_each_go_in_order():
    s, _ = with_outbox(b"e1", b"e2", b"e3")
    for k in (1, 2):
        s.publish("bms/p/cells", f"c{k}")
        s.publish("bms/p/state", f"s{k}", qos=1)
    assert s.backlog == 7
    s._stopping = True  # both return once everything is out
    broker = Broker()
    asyncio.run(send_both(s, broker))
    sent = [(payload, qos) for _, payload, qos in broker.sent]
    assert [m for m in sent if m[1] == 1 and m[0].startswith(b"e")] == [
        (b"e1", 1), (b"e2", 1), (b"e3", 1)]
    assert [m for m in sent if not m[0].startswith(b"e")] == [
        (b"c1", 0), (b"s1", 1), (b"c2", 0), (b"s2", 1)]
    assert s.backlog == 0 and s.published == 7


def test_an_event_waiting_for_its_puback_holds_up_no_telemetry():
    """A PUBACK late behind a flood the read budget holds in TCP: the ordinary messages,
    QoS 1 ones too (not waited for), all go meanwhile; the event stays in the outbox."""
    s, outbox = with_outbox(b"e1", b"e2")
    for k in range(5):
        s.publish("bms/p/cells", f"c{k}")
        s.publish("bms/p/state", f"s{k}", qos=1)
    s._stopping = True
    broker = Broker()

    async def main() -> None:
        broker.acked.clear()
        kept = asyncio.create_task(s._send_kept(broker))
        await s._send(broker)  # returns: nothing waits for e1's PUBACK
        assert not kept.done() and outbox.waiting == 2
        broker.acked.set()
        await kept

    asyncio.run(main())
    payloads = [payload for _, payload, _ in broker.sent]
    assert payloads.index(b"e2") > payloads.index(b"s4")  # e2 only once e1 was acknowledged
    assert outbox.waiting == 0 and s.published == 12


def test_an_outbox_message_whose_publish_fails_stays_first_for_the_next_connection():
    s, outbox = with_outbox(b"e1", b"e2")
    s._stopping = True
    broker = Broker(fail_on=b"e2")
    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(s._send_kept(broker))
    assert [payload for _, payload, _ in broker.sent] == [b"e1"]
    assert outbox.waiting == 1 and outbox.next() == ("bms/p/events", b"e2")


def test_the_last_retained_payload_of_each_topic_is_remembered_for_a_reconnect():
    s = session()
    s.publish("bms/p/state", "old", retain=True)
    s.publish("bms/p/state", "new", retain=True)
    s.publish("bms/p/cells", "not retained")
    assert {t: i.payload for t, i in s._retained.items()} == {"bms/p/state": b"new"}


def test_a_session_shared_by_packs_sends_each_pack_outbox_in_order_on_its_own():
    s = session()
    boxes = [Outbox(None, lambda gap, p=p: (f"bms/{p}/events/lost", b"")) for p in "ab"]
    for p, box in zip("ab", boxes, strict=True):
        s.use_outbox(box)
        box.put([(seq, f"bms/{p}/events", f"{p}{seq}".encode()) for seq in (1, 2, 3)])
    assert s.backlog == 6
    s._stopping = True
    broker = Broker()

    async def both() -> None:
        await asyncio.gather(s._send_kept(broker, 0), s._send_kept(broker, 1))
    asyncio.run(both())
    for p in "ab":
        assert [m for t, m, _ in broker.sent if t == f"bms/{p}/events"] == [
            f"{p}{seq}".encode() for seq in (1, 2, 3)]
    assert s.backlog == 0


def count_wakes(s: MqttSession) -> list[int]:
    wakes = [0]
    s._notify = lambda: wakes.__setitem__(0, wakes[0] + 1)
    return wakes


def test_a_burst_of_publishes_wakes_the_sender_once():
    s = session()
    wakes = count_wakes(s)
    for k in range(5):
        s.publish("bms/p/cells", f"c{k}")
    assert wakes == [1] and s.backlog == 5


def test_a_batch_session_wakes_the_sender_only_when_flushed_with_something_queued():
    s = session(wake_on_publish=False)
    wakes = count_wakes(s)
    s.flush()
    assert wakes == [0]
    for k in range(5):
        s.publish("bms/p/cells", f"c{k}")
    assert wakes == [0]
    s.flush()
    assert wakes == [1]


def test_packs_sharing_a_subscription_each_get_what_its_intake_admits():
    s = session()
    got: list[str] = []
    for p in "abc":
        s.subscribe("homeassistant/status", lambda t, m, p=p: got.append(p),
                    Intake(rate_per_s=1.0))
    s._deliver("homeassistant/status", b"online")
    s._deliver("homeassistant/status", b"online")  # over the rate: refused for all
    assert got == ["a", "b", "c"]
