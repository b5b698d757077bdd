"""The firmware library's public API: what `import bms` gives a user, and that it is the
same objects the rooms define."""

from __future__ import annotations

import numpy as np

import bms
from bms.core.firmware import Firmware


def test_every_public_name_is_there_and_is_the_rooms_own():
    for name in bms.__all__:
        assert getattr(bms, name) is not None, name
    assert bms.Firmware is Firmware


def test_a_firmware_steps_from_the_public_api_alone():
    chem = bms.PRESETS["na-nfm"]
    fw = bms.Firmware(chem, 4, chem.capacity_ah)
    m = bms.Measurement(np.full(4, 3.3), np.full(1, 25.0), 0.0, 0.0, bms.Contactors())
    act = fw.step(m, 0.0)
    assert isinstance(act, bms.Actuation) and act.state in list(bms.State)
    assert act.state == bms.State.STANDBY
