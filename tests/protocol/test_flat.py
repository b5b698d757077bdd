"""The flat reader (protocol.flat) must read exactly what construct's parser reads from the
same definitions, and refuse exactly what it refuses."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.messages import CODECS, REGISTRY, encode_payload, same
from tests.protocol.test_messages import fits, message_strategy

FLAT = sorted(t for t, codec in CODECS.items() if codec.flat is not None)


def construct_fields(type_id: int, payload: bytes) -> dict | None:
    """What construct's compiled parser reads, or None when it refuses the payload."""
    codec = CODECS[type_id]
    stream = io.BytesIO(payload)
    try:
        parsed = codec.compiled.parse_stream(stream)
    except Exception:  # noqa: BLE001 - any refusal counts as one
        return None
    return parsed if stream.tell() == len(payload) else None


def flat_fields(type_id: int, payload: bytes) -> dict | None:
    try:
        return CODECS[type_id].flat.parse(payload)
    except Exception:  # noqa: BLE001 - any refusal counts as one
        return None


def test_the_streaming_frames_take_the_flat_path():
    names = {REGISTRY[t].name for t in FLAT}
    assert {"MeasurementFrame", "ActuationFrame", "Status", "CellVoltages"} <= names
    assert "ParameterList" not in names and "Nack" not in names  # text and lists: construct


@pytest.mark.parametrize("type_id", FLAT, ids=lambda t: REGISTRY[t].name)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_flat_and_construct_agree_on_good_and_mangled_payloads(type_id, data):
    msg = data.draw(message_strategy(type_id).filter(fits))
    payload = encode_payload(msg)[1]
    cut = data.draw(st.integers(0, len(payload)))
    extra = data.draw(st.binary(max_size=8))
    for candidate in (payload, payload[:cut], payload + extra):
        by_construct = construct_fields(type_id, candidate)
        by_flat = flat_fields(type_id, candidate)
        assert (by_construct is None) == (by_flat is None), candidate.hex()
        if by_flat is not None:
            cls = REGISTRY[type_id].cls
            names = CODECS[type_id].names
            assert same(cls(**{n: by_flat[n] for n in names}),
                        cls(**{n: by_construct[n] for n in names}))


def test_a_count_over_its_limit_is_refused_by_both():
    payload = (513).to_bytes(2, "little") + bytes(4 * 513)
    assert construct_fields(0x06, payload) is None and flat_fields(0x06, payload) is None
