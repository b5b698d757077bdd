"""A rig's frame with an unreadable cell and sensor (NaN), through the runtime of
`serve --hil` with a persistent store: every frame is answered with an actuation frame,
the sensor faults name the cell and sensor, the store keeps saving (and holds them over a
restart), and `--stats` shows the store's figures.

Real bytes through the real decoder; a fake endpoint records what would be sent; a real
SQLite store in a temporary directory."""

from __future__ import annotations

import time

import numpy as np

from bms.core.signals import State
from bms.host.device import Device, Identity
from bms.runtime.realtime import Runtime
from bms.store.nvm import NvmStore, PackIdentity
from bms.store.persistence import Keeper, resume
from protocol import messages as pm
from protocol.codec import encode
from protocol.framing import Flags
from tests.bms.runtime.test_realtime import (
    CELLS_V,
    CHEM,
    N_SERIES,
    N_TEMP,
    TEMPS_C,
    Clock,
    FakeEndpoint,
    actuations,
    deliver,
    measurement_frame,
)

PACK = PackIdentity("rig1", "hil", CHEM.name, N_SERIES, CHEM.capacity_ah)


def hil_runtime(path) -> tuple[Runtime, FakeEndpoint, Clock, Keeper]:
    """`serve --hil --nvm PATH` as serve_cmd builds it, on a fake endpoint and clock."""
    store = NvmStore(path, PACK, time.time)
    fw = resume(store, CHEM, N_SERIES, CHEM.capacity_ah, None).firmware
    keeper = Keeper(store, fw, 10.0)
    device = Device(fw, CHEM, Identity(CHEM.name, pm.Mode.HIL, 1, CHEM.capacity_ah, N_TEMP),
                    on_config_change=keeper.config_written, store=keeper)
    ep = FakeEndpoint()
    # what stats() reads of an Endpoint
    ep.frames_in = ep.bytes_in = ep.bytes_out = ep.frames_unsent = 0
    ep.errors = {}
    rt = Runtime(device, ep, 0.1, None, None, keeper)
    clock = Clock()
    rt.now_s = lambda: clock.t
    return rt, ep, clock, keeper


def test_an_unreadable_frame_is_a_sensor_fault_and_the_loop_and_the_store_go_on(tmp_path):
    rt, ep, clock, keeper = hil_runtime(tmp_path / "rig.sqlite")
    contactors, answered = 0, []
    for k in range(1, 400):  # 40 s: the unreadable frames at 5-6.5 s
        clock.t = 0.1 * k
        cells, temps = CELLS_V + 1e-4 * (k % 2), TEMPS_C.copy()
        if 50 <= k < 65:
            cells[2], temps[1] = np.nan, np.nan
        deliver(ep, encode(measurement_frame(k, cells, temps, contactors), seq=k,
                           flags=Flags.EVENT))
        acts = actuations(ep.take())
        answered.extend(a.rig_seq for a in acts)
        contactors = acts[-1].contactors
    assert answered == list(range(1, 400))  # every frame, the unreadable ones included
    assert rt.device.act.state == State.FAULT and contactors == 0
    raised = {(e.event.name, e.event.index, e.event.value) for e in rt.fw.log.entries
              if e.event.action == "raised"}
    assert raised == {("VOLTAGE_SENSOR_FAULT", 2, None), ("TEMP_SENSOR_FAULT", 1, None)}
    assert keeper.failures == 0 and keeper.saved_at_s >= 30.0  # periodic saves went on
    stats = rt.stats()
    assert stats["nvm"]["failures"] == 0 and stats["nvm"]["saves"] == keeper.saves
    status = rt.device.status(clock.t)
    assert (status.store, status.save_failures) == (pm.STORE_BITS["kept"], 0)

    rt._shut_down()  # as serve leaves: the last save, the store released
    rt, *_ = hil_runtime(tmp_path / "rig.sqlite")
    assert rt.fw.fault_active  # the latched sensor faults came back: no RUN on restart
    assert {e.event.name for e in rt.fw.log.entries} == {"VOLTAGE_SENSOR_FAULT",
                                                        "TEMP_SENSOR_FAULT"}
    rt.keeper.store.close()
