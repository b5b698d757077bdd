"""The MQTT session's parts that need no broker: the URL and its errors, and the bounded
queues that keep a slow broker from ever holding up the firmware."""

from __future__ import annotations

import pytest

from bms.data.validation import InputError
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
])
def test_a_bad_url_is_refused_with_the_reason(url, says):
    with pytest.raises(InputError) as err:
        parse_broker(url)
    assert says in str(err.value) and url in str(err.value)


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


def test_kept_messages_are_bounded_separately_and_keep_their_order():
    s = session(queue_size=1, kept_size=2)
    for k in range(3):
        s.publish("bms/p/events", f"e{k}", qos=1, kept=True)
    s.publish("bms/p/cells", "c")
    assert s.kept_dropped == 1 and s.dropped == 0
    assert [item.payload for item in s._kept] == [b"e1", b"e2"]


def test_the_last_retained_payload_of_each_topic_is_remembered_for_a_reconnect():
    s = session()
    s.publish("bms/p/state", "old", retain=True)
    s.publish("bms/p/state", "new", retain=True)
    s.publish("bms/p/cells", "not retained")
    assert {t: i.payload for t, i in s._retained.items()} == {"bms/p/state": b"new"}
