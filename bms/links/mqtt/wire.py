"""MQTT 5 packets as the broker sends them, found in a byte stream without parsing them
whole: where each one ends, and the topic and payload of a QoS 0 PUBLISH. Enough to judge
a message at a few µs where paho takes ~80 µs (it builds a Properties object for each).

Why and how: docs/internals.md, bms/links/mqtt/read_budget.py.
"""

from __future__ import annotations

PUBLISH = 3  # the packet type, in the high nibble of the first byte
# The broker's answers to this session's own QoS 1 and 2 publishes (PUBACK, PUBREC,
# PUBCOMP): no more come than the session has in flight (paho's window, 20).
ANSWERS = frozenset({4, 5, 7})
QOS_BITS = 0b0110
MAX_LENGTH_BYTES = 4  # a Remaining Length takes 1..4 bytes


class WireError(ValueError):
    """The stream is not MQTT as this session asked for it: the connection must end."""


def packet_end(buf: bytes | bytearray, start: int, max_packet_bytes: int) -> int:
    """Where the packet starting at `start` ends (exclusive), or -1 if `buf` does not hold
    all of it yet. WireError: a malformed length, or a packet over `max_packet_bytes` (the
    Maximum Packet Size the session announced: a broker may not send one)."""
    length = 0
    shift = 0
    i = start + 1
    for _ in range(MAX_LENGTH_BYTES):
        if i >= len(buf):
            return -1
        byte = buf[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            end = i + length
            if end - start > max_packet_bytes:
                raise WireError(f"the broker sent a packet of {end - start} bytes; this "
                                f"session takes at most {max_packet_bytes}")
            return end if end <= len(buf) else -1
        shift += 7
    raise WireError("the broker sent a packet with a Remaining Length of over 4 bytes")


def answers_own_publish(buf: bytes | bytearray, start: int) -> bool:
    """Whether the packet at `start` is the broker's answer to a publish of this session."""
    return buf[start] >> 4 in ANSWERS


def qos0_publish(buf: bytes | bytearray, start: int, end: int) -> tuple[str, bytes] | None:
    """(topic, payload) of the QoS 0 PUBLISH in buf[start:end]; None for any other packet,
    and for one this cannot judge quickly (a topic alias, a topic not UTF-8, a truncated
    header): those go to paho, which answers for MQTT's rules."""
    first = buf[start]
    if first >> 4 != PUBLISH or first & QOS_BITS:
        return None
    i = start + 1
    while buf[i] & 0x80:  # the Remaining Length, checked by packet_end
        i += 1
    i += 1
    if i + 2 > end:
        return None
    topic_end = i + 2 + int.from_bytes(buf[i:i + 2], "big")
    if topic_end == i + 2 or topic_end >= end:  # empty (an alias), or no properties length
        return None
    try:
        topic = bytes(buf[i + 2:topic_end]).decode()
    except UnicodeDecodeError:
        return None
    properties_length = 0
    shift = 0
    i = topic_end
    while i < end:
        byte = buf[i]
        i += 1
        properties_length |= (byte & 0x7F) << shift
        if byte < 0x80:
            payload_start = i + properties_length
            return (topic, bytes(buf[payload_start:end])) if payload_start <= end else None
        shift += 7
    return None
