"""`--can INTERFACE:CHANNEL[@BITRATE]`: every python-can interface, its channel as given
(a path, a multicast group with colons), and a refusal naming the value and the forms."""

from __future__ import annotations

import pytest

from bms.data.validation import InputError
from bms.links.can.bus_spec import BusSpec, open_bus, parse_bus_spec


@pytest.mark.parametrize(("text", "spec"), [
    ("socketcan:can0", BusSpec("socketcan", "can0")),
    ("slcan:/dev/ttyACM0@500000", BusSpec("slcan", "/dev/ttyACM0", 500_000)),
    ("udp_multicast:239.74.163.2", BusSpec("udp_multicast", "239.74.163.2")),
    ("udp_multicast:ff15:7079:7468:6f6e:6465:6d6f:6d63:6173",
     BusSpec("udp_multicast", "ff15:7079:7468:6f6e:6465:6d6f:6d63:6173")),
    ("virtual:bench@250000", BusSpec("virtual", "bench", 250_000)),
])
def test_the_forms_parse(text, spec):
    assert parse_bus_spec(text) == spec
    assert spec.describe() == text


@pytest.mark.parametrize(("text", "words"), [
    ("can0", "--can = 'can0': must be INTERFACE:CHANNEL[@BITRATE], e.g. socketcan:can0, "
             "slcan:/dev/ttyACM0@500000, udp_multicast:239.74.163.2, virtual:NAME"),
    ("socketcan:", "--can = 'socketcan:': must be INTERFACE:CHANNEL[@BITRATE]"),
    ("candy:can0", "--can = 'candy:can0': unknown interface 'candy'; python-can knows "),
    ("slcan:/dev/ttyACM0@fast", "--can = 'slcan:/dev/ttyACM0@fast': bitrate 'fast' must be a "
                                "whole number of bit/s within [10000, 1000000]"),
    ("slcan:/dev/ttyACM0@2000000", "bitrate '2000000' must be a whole number"),
])
def test_a_bad_spec_names_the_value_and_the_allowed_forms(text, words):
    with pytest.raises(InputError) as refused:
        parse_bus_spec(text)
    assert any(words in p for p in refused.value.problems), refused.value.problems


def test_the_frame_set_s_bitrate_goes_to_an_adapter_and_a_given_one_wins(monkeypatch):
    opened = []
    monkeypatch.setattr("can.Bus", lambda **kwargs: opened.append(kwargs))
    open_bus(parse_bus_spec("slcan:/dev/ttyACM0"), 500_000)
    open_bus(parse_bus_spec("slcan:/dev/ttyACM0@250000"), 500_000)
    open_bus(parse_bus_spec("socketcan:can0"), 500_000)  # the kernel's bitrate
    assert [k.get("bitrate") for k in opened] == [500_000, 250_000, None]
