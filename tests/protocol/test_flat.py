"""The flat reader (protocol.flat) must read exactly what construct's parser reads from the
same definitions, and refuse exactly what it refuses."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.framing import LATEST_REVISION
from protocol.messages import CODECS, REGISTRY, encode_payload, same
from tests.protocol.test_messages import fits, message_strategy, type_and_revision

FLAT = sorted(key for key, codec in CODECS.items() if codec.flat is not None)


def construct_fields(key: tuple[int, int], payload: bytes) -> dict | None:
    """What construct's compiled parser reads, or None when it refuses the payload."""
    codec = CODECS[key]
    stream = io.BytesIO(payload)
    try:
        parsed = codec.compiled.parse_stream(stream)
    except Exception:  # noqa: BLE001 - any refusal counts as one
        return None
    return parsed if stream.tell() == len(payload) else None


def flat_fields(key: tuple[int, int], payload: bytes) -> dict | None:
    try:
        return CODECS[key].flat.parse(payload)
    except Exception:  # noqa: BLE001 - any refusal counts as one
        return None


def test_the_streaming_frames_take_the_flat_path():
    names = {REGISTRY[t].name for t, r in FLAT if r == LATEST_REVISION}
    assert {"MeasurementFrame", "ActuationFrame", "Status", "CellVoltages"} <= names
    assert "ParameterList" not in names and "Nack" not in names  # text and lists: construct


@pytest.mark.parametrize("key", FLAT, ids=type_and_revision)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_flat_and_construct_agree_on_good_and_mangled_payloads(key, data):
    type_id, revision = key
    msg = data.draw(message_strategy(type_id, revision).filter(lambda m: fits(m, revision)))
    payload = encode_payload(msg, revision)[1]
    cut = data.draw(st.integers(0, len(payload)))
    extra = data.draw(st.binary(max_size=8))
    for candidate in (payload, payload[:cut], payload + extra):
        by_construct = construct_fields(key, candidate)
        by_flat = flat_fields(key, candidate)
        assert (by_construct is None) == (by_flat is None), candidate.hex()
        if by_flat is not None:
            cls = REGISTRY[type_id].cls
            names = CODECS[key].names
            assert same(cls(**{n: by_flat[n] for n in names}),
                        cls(**{n: by_construct[n] for n in names}))


def test_a_count_over_its_limit_is_refused_by_both():
    payload = (513).to_bytes(2, "little") + bytes(4 * 513)
    for key in ((0x06, r) for r in REGISTRY[0x06].structs):
        assert construct_fields(key, payload) is None and flat_fields(key, payload) is None
