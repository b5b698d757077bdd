"""A client written from docs/protocol.md alone, driven against `bms-emu serve` over a real
pty and a real MQTT broker. It imports only the `protocol` package (the tables the spec
is generated from), the standard library and pytest: never the device's code."""

import pytest

# The answer checks live beside the tests: their asserts explain themselves as the tests' do.
pytest.register_assert_rewrite("tests.client.samples")
