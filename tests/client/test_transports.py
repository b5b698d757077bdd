"""Framing and matching as docs/protocol.md states them, over a pty and over MQTT: answers
matched by seq with several requests outstanding, seq wrapping, reserved flag bits
ignored, the leading zero optional; frames that cannot be trusted (bad CRC, bad COBS, too
short) and events other than measurements dropped without an answer; on MQTT, one frame
a message."""

from __future__ import annotations

import pytest

from protocol import messages as pm
from protocol.codec import encode
from protocol.framing import LATEST_REVISION, Flags
from protocol.spec import ANSWERS
from tests.client.emulators import Emulator
from tests.client.spec_client import raw_frame, type_id

RESERVED_FLAGS = 0xF0


def answer_name(msg: object) -> str:
    return ANSWERS[type(msg).__name__]


def test_several_outstanding_requests_are_matched_by_seq(sim: Emulator) -> None:
    requests = [pm.GetStatus(), pm.GetInfo(), pm.GetCellVoltages(), pm.TimeSync(42.0),
                pm.GetConfig((sim.params[0]["param_id"],)), pm.GetBalancing()]
    after = sim.client.mark()
    sent = [(sim.client.send(msg), msg) for msg in requests]
    for seq, msg in sent:
        frame = sim.client.answer(seq, after)
        assert type(frame.message).__name__ == answer_name(msg), (msg, frame.message)


@pytest.mark.parametrize("seq", [0, 0xFFFF])
def test_the_answer_carries_any_seq_even_at_the_ends_of_its_range(sim: Emulator,
                                                                 seq: int) -> None:
    frame = sim.client.request(pm.TimeSync(float(seq)), seq=seq)
    assert frame.header.seq == seq and frame.message.host_time_s == float(seq)


def test_reserved_flag_bits_are_ignored(sim: Emulator) -> None:
    frame = sim.client.request(pm.GetStatus(), flags=Flags.REQUEST | RESERVED_FLAGS)
    assert isinstance(frame.message, pm.Status)


def test_a_frame_without_its_leading_zero_is_taken(sim: Emulator) -> None:
    after, seq = sim.client.mark(), sim.client.next_seq()
    sim.client.send_bytes(encode(pm.GetStatus(), seq, revision=LATEST_REVISION)[1:])
    assert isinstance(sim.client.answer(seq, after).message, pm.Status)


UNTRUSTED = {
    "bad-crc": lambda seq: raw_frame(LATEST_REVISION, type_id(pm.GetStatus), Flags.REQUEST,
                                     seq, crc_xor=0x1),
    "bad-cobs": lambda seq: b"\x00\x09\x02\x03\x01\x00",  # a block running past the end
    "too-short": lambda seq: b"\x00\x03\x02\x03\x00",
    "event-flag": lambda seq: encode(pm.GetStatus(), seq, Flags.EVENT, LATEST_REVISION),
    "response-flag": lambda seq: encode(pm.TimeInfo(1.0, 2.0), seq, Flags.RESPONSE,
                                        LATEST_REVISION),
}


@pytest.mark.parametrize("kind", list(UNTRUSTED))
def test_what_is_not_a_request_is_not_answered(sim: Emulator, kind: str) -> None:
    """Dropped: the next request's answer comes, and nothing answered the first before it
    (answers go out in order)."""
    client = sim.client
    after, dropped = client.mark(), client.next_seq()
    client.send_bytes(UNTRUSTED[kind](dropped))
    seq = client.send(pm.GetStatus())
    client.answer(seq, after)
    assert client.answered_between(dropped, after, client.mark()) == []


def test_noise_before_a_frame_on_a_pty_does_not_lose_it(sim_pty: Emulator) -> None:
    after, seq = sim_pty.client.mark(), sim_pty.client.next_seq()
    sim_pty.client.send_bytes(bytes(range(1, 200)) + encode(pm.GetStatus(), seq))
    assert isinstance(sim_pty.client.answer(seq, after).message, pm.Status)


@pytest.mark.parametrize("kind", ["two-frames", "no-final-zero"])
def test_an_mqtt_message_that_is_not_exactly_one_frame_is_dropped(sim_mqtt: Emulator,
                                                                   kind: str) -> None:
    client = sim_mqtt.client
    after = client.mark()
    first, second = client.next_seq(), client.next_seq()
    one, two = encode(pm.GetStatus(), first), encode(pm.GetStatus(), second)
    client.send_bytes(one + two if kind == "two-frames" else one[:-1])
    seq = client.send(pm.GetStatus())
    client.answer(seq, after)
    before = client.mark()
    assert client.answered_between(first, after, before) == []
    assert client.answered_between(second, after, before) == []
