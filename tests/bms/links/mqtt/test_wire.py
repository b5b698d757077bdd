"""MQTT 5 packets found in a byte stream: where each ends, and the topic and payload of a
QoS 0 PUBLISH, as paho's own decoder reads them; anything it cannot judge quickly is left
to paho (None), and a stream a broker may not send is refused (WireError)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt._packet import decode_publish
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bms.links.mqtt.wire import WireError, packet_end, qos0_publish

BIG = 1 << 28


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


def publish(topic: bytes, payload: bytes, qos: int = 0, expiry_s: int | None = None,
            retain: bool = False) -> bytes:
    """A PUBLISH as a broker writes it, properties packed by paho."""
    properties = Properties(PacketTypes.PUBLISH)
    if expiry_s is not None:
        properties.MessageExpiryInterval = expiry_s
    mid = (7).to_bytes(2, "big") if qos else b""
    body = len(topic).to_bytes(2, "big") + topic + mid + properties.pack() + payload
    return packet(0x30 | qos << 1 | retain, body)


def paho_reads(data: bytes) -> tuple[str, bytes]:
    """The topic and payload paho's own decoder finds in one PUBLISH."""
    header_end = 2
    while data[header_end - 1] & 0x80:
        header_end += 1
    p = decode_publish(data[0], data[header_end:], MQTTProtocolVersion.MQTTv5)
    return p.topic.decode(), p.payload


@given(topic=st.text(st.characters(exclude_characters="+#\x00"), min_size=1, max_size=300),
       payload=st.binary(max_size=20_000), expiry_s=st.none() | st.integers(0, 2**32 - 1),
       retain=st.booleans())
def test_a_qos0_publish_reads_as_paho_reads_it(topic, payload, expiry_s, retain):
    data = publish(topic.encode(), payload, expiry_s=expiry_s, retain=retain)
    assert packet_end(data, 0, BIG) == len(data)
    assert qos0_publish(data, 0, len(data)) == paho_reads(data) == (topic, payload)


def test_packets_are_found_one_after_another_and_a_partial_one_waits():
    stream = (publish(b"bms/p/cmd/state", b'{"state": "run"}') + packet(0xD0, b"")
              + publish(b"bms/p/proto/in", b"x" * 300))
    ends = []
    start = 0
    while (end := packet_end(stream, start, BIG)) > 0:
        ends.append(end)
        start = end
    assert start == len(stream) and len(ends) == 3
    for cut in range(ends[1] + 1, len(stream)):  # the last packet, not all there yet
        assert packet_end(stream[:cut], ends[1], BIG) == -1


@pytest.mark.parametrize("data", [
    publish(b"bms/p/cmd/state", b"{}", qos=1),  # acknowledged: paho's to do
    publish(b"", b"{}"),  # a topic alias
    publish(b"bms/\xff", b"{}"),  # not UTF-8
    packet(0xD0, b""),  # PINGRESP
    packet(0x40, b"\x00\x07\x00"),  # PUBACK
    packet(0x30, b"\x00\x05bms/p"),  # no properties length: malformed, paho says so
])
def test_what_is_not_a_plain_qos0_publish_is_left_to_paho(data):
    assert packet_end(data, 0, BIG) == len(data)
    assert qos0_publish(data, 0, len(data)) is None


def test_a_packet_over_the_announced_maximum_or_with_a_5_byte_length_is_refused():
    data = publish(b"t", b"x" * 1000)
    assert packet_end(data, 0, len(data)) == len(data)
    with pytest.raises(WireError, match=f"{len(data)} bytes; this session takes at most 1000"):
        packet_end(data, 0, 1000)
    with pytest.raises(WireError, match="over 4 bytes"):
        packet_end(b"\x30\xff\xff\xff\xff\x01", 0, BIG)
