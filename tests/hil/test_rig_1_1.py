"""The rig in protocol 1.1 over real pseudo-terminals: it speaks revision 2 and falls back to
1.0 on a device that refuses it; the emulator's ActuationFrames then carry the voltage
limits and the levels, ask for the open-wire test, and the rig runs it and reports it;
fault events reach a host subscribed on the same link."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bms.links.client import Client
from hil.rig import Rig
from protocol import messages as pm
from protocol.framing import REVISION_1_0, REVISION_1_1
from tests.hil.test_rig_hil import (
    PACK,
    TICK_S,
    Relay,
    answer,
    eventually,
    in_process_rig,
    in_state,
    running,
)
from tests.support.processes import Proc

TYPE = {cls: mt.type_id for cls, mt in pm.BY_CLASS.items()}


@pytest.fixture
def quiet_link(tmp_path):
    """A relay and `serve --hil` with balancing off: a bleed defers the open-wire test to
    the balancer's measuring pauses (every 10 s), without one it is asked every 2 s."""
    config = tmp_path / "firmware.toml"
    config.write_text('[balancing]\nmode = "off"\n')
    relay = Relay(tmp_path)
    relay.start()
    proc = Proc("serve", "--serial", relay.emulator_end, "--hil", "--tick", str(TICK_S),
                "--duration", "60", "--autostart", "-v", "--config", str(config), *PACK)
    try:
        proc.wait_for(f"serial port {relay.emulator_end} open")
        yield relay
    finally:
        proc.stop()
        relay.stop()


async def test_a_1_1_rig_runs_the_open_wire_test_the_emulator_asks_for(quiet_link):
    async with Client(quiet_link.rig_end, revision=REVISION_1_1) as client:
        rig = in_process_rig(client)
        tests_run: list[np.ndarray] = []
        measure = rig.plant.measure

        def measured():
            m = measure()
            if m.open_wire_test_v is not None:
                tests_run.append(m.open_wire_test_v)
            return m

        rig.plant.measure = measured
        pushed: list[pm.FaultEvent] = []
        client.on(pm.FaultEvent, pushed.append)
        async with running(rig):
            await eventually(in_state(rig, "RUN"), 15, "the rig's pack in RUN")
            assert client.revision == REVISION_1_1
            last = rig.last
            assert last.charge_voltage_limit_v > last.discharge_voltage_limit_v > 0
            # the emulator asks every open_wire.test_every_s (2 s); the rig answers
            await eventually(lambda: len(tests_run) >= 2, 10, "two open-wire tests run")
            assert all(t.shape == (rig.n_series,) for t in tests_run)
            # a host on the same link subscribes to the events and sees one as it happens
            await answer(client, pm.Subscribe(({"msg_type": TYPE[pm.FaultEvent],
                                                "period_ms": 0},)))
            rig.plant.inject("0:sensor-offset:cell=3,offset_v=0.6", rig.now_s())
            await eventually(lambda: any(e.index == 2 for e in pushed), 10,
                             "a fault event of cell 3")
        assert rig.nacks == {} and rig.refused is None
        assert all(math.isnan(e.utc_s) and e.boot >= 1 for e in pushed)


def test_a_rig_falls_back_to_1_0_when_the_emulator_refuses_revision_2():
    client = Client("/dev/ttyTEST", revision=REVISION_1_1)
    rig: Rig = in_process_rig(client)
    rig._nack(pm.Nack(TYPE[pm.MeasurementFrame], pm.ErrorCode.UNSUPPORTED_VERSION,
                      "revision 2; this end speaks 1 (1.0)"))
    assert client.revision == REVISION_1_0 and rig.refused is None
    assert rig.events[-1]["kind"] == "protocol" and "1.0" in rig.events[-1]["text"]
    rig._nack(pm.Nack(TYPE[pm.MeasurementFrame], pm.ErrorCode.UNSUPPORTED_VERSION, "again"))
    assert client.revision == REVISION_1_0  # nothing older to go down to
