"""A fixed-seed headless run gives, tick by tick, the same bits as the reference recorded
from the firmware and plant before they were made faster (issue 19): measurements,
actuations, estimates, events and the protection table's quantities.

The reference is a SHA-256 of each run's stream (`headless_identical.json`), first recorded
from main at 6053334 (where the faster code gave the same bits), recorded again with
issue 18's model changes (coulombic efficiency, ageing, the SoC filter's evidence), and again
when the sensors' noise streams took their rows tick by tick (issue 19: the same
distribution, other draws; the outage run then names cell 6, the open wire's other side,
for the imbalance, and trips the over-voltage 0.8 s sooner), and when the runtime came to
end with the discharge instead of at the next filter run (estimates only: measurements,
actuations, events and quantities gave the same bits).
Regenerate it only for a deliberate change of behaviour (a model or firmware change that
moves numbers), from the code whose behaviour is the reference, run
outside the repository so that its own tree is imported:

    cd /tmp && PYTHONPATH=/path/to/that/tree /path/to/.venv/bin/python \
        /path/to/that/tree/tests/hil/test_headless_identical.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bms.core.firmware import Firmware
from bms.data.presets import PRESETS
from hil.injections import parse_injection
from hil.loads import datacenter
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run

REFERENCE = Path(__file__).with_name("headless_identical.json")
TICK_S = 0.1
DURATION_S = 1200.0
# name: (chemistry, series, hour of the data-centre day to start at, injections). The first
# rides through the outage with an open sense wire, a temperature sensor gone open and a
# cell channel offset into over-voltage; the second floats, balances and recharges with a
# stuck channel, a lost current reading and a pack-sensor offset; the third, a longer string,
# rides through and recharges cleanly until a temperature sensor reads 35 °C high.
RUNS: dict[str, tuple[str, int, float, tuple[str, ...]]] = {
    "clean": ("na-nfm", 64, 9.0, ("1000:temp-sensor-offset:sensor=3,offset_c=35",)),
    "outage": ("na-nfm", 16, 9.0, ("200:sense-open:cell=5", "500:temp-sensor-open:sensor=2",
                                  "800:sensor-offset:cell=3,offset_v=0.4")),
    "float": ("na-nvpf", 16, 0.0, ("150:sensor-stuck:cell=7", "400:pack-sensor-offset:offset_v=1",
                                   "700:reading-lost:reading=current")),
}


class StreamHash:
    """SHA-256 over every value exactly as computed: arrays by their bytes, numbers by
    their shortest round-trip repr."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()

    def add(self, x: object) -> None:
        if isinstance(x, np.ndarray):
            self.sha.update(f"{x.dtype.str}{x.shape}".encode())
            self.sha.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, (tuple, list)):
            self.sha.update(b"(")
            for item in x:
                self.add(item)
            self.sha.update(b")")
        else:
            self.sha.update(repr(x).encode() + b";")

    def add_fields(self, obj: object, names: tuple[str, ...]) -> None:
        """`names` of `obj`, a fixed list: a field added later (a new figure) changes no
        reference unless a value named here changes."""
        self.add(None if obj is None else [getattr(obj, name) for name in names])


MEASUREMENT_FIELDS = ("cell_voltage_v", "temperature_c", "current_a", "bus_voltage_v",
                      "contactors", "balancing", "pack_voltage_v", "open_wire_test_v")
EVENT_FIELDS = ("t_s", "name", "code", "level", "action", "index", "value")
ESTIMATE_FIELDS = ("soc", "cell_soc", "cell_soc_sigma", "cell_capacity_ah",
                   "cell_resistance_factor", "cell_bled_soc", "reset_epoch", "soh_pct",
                   "resistance_pct", "current_offset_a", "remaining_wh", "runtime_s",
                   "runtime_reference_s", "cell_rest_soc", "cell_rest_soc_sigma", "soc_spread")


def stream_digest(name: str) -> dict:
    """The run's stream hash, with a few figures that say what it went through."""
    chemistry, series, start_h, texts = RUNS[name]
    pack = SimulatedPack(PRESETS[chemistry], PackSpec(n_series=series, seed=7), TICK_S)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
    profile = datacenter(pack.energy_wh, start_h)
    injections = tuple(parse_injection(t, pack.n_series, pack.sensors.n_temp) for t in texts)
    h = StreamHash()
    seen = {"states": set(), "bleeding_ticks": 0, "wire_tests": 0}
    last_estimate = None

    def on_step(now_s, m, act) -> None:
        nonlocal last_estimate
        h.add(now_s)
        h.add_fields(m, MEASUREMENT_FIELDS)
        h.add([act.state, act.contactors.negative, act.contactors.precharge,
               act.contactors.positive, act.balance_mask, act.charge_limit_a,
               act.discharge_limit_a, act.fault_bitmap, act.soc, act.charge_voltage_limit_v,
               act.discharge_voltage_limit_v, act.open_wire_test, act.level_bitmaps])
        for event in act.events:
            h.add_fields(event, EVENT_FIELDS)
        if act.estimate is not last_estimate:  # the same object between updates
            last_estimate = act.estimate
            h.add_fields(act.estimate, ESTIMATE_FIELDS)
        h.add(firmware.quantities)
        seen["states"].add(str(act.state))
        seen["bleeding_ticks"] += bool(act.balance_mask.any())
        seen["wire_tests"] += act.open_wire_test

    result = run(pack, firmware, profile,
                 RunOptions(duration_s=DURATION_S, tick_s=TICK_S, injections=injections),
                 on_step=on_step)
    h.add(json.dumps(firmware.counters.as_dict(), sort_keys=True))
    h.add(json.dumps([entry.as_dict() for entry in firmware.log.entries], sort_keys=True))
    return {"sha256": h.sha.hexdigest(),
            "events": [e.describe() for e in result.totals.events],
            "states": sorted(seen["states"]),
            "bleeding_ticks": seen["bleeding_ticks"], "wire_tests": seen["wire_tests"]}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_headless_run_is_bit_identical_to_the_reference(name: str) -> None:
    expected = json.loads(REFERENCE.read_text())[name]
    got = stream_digest(name)
    # The figures first: on a mismatch they say where the runs parted.
    assert got["events"] == expected["events"]
    assert got["states"] == expected["states"]
    assert (got["bleeding_ticks"], got["wire_tests"]) == (expected["bleeding_ticks"],
                                                          expected["wire_tests"])
    assert got["sha256"] == expected["sha256"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    REFERENCE.write_text(json.dumps({name: stream_digest(name) for name in sorted(RUNS)},
                                    indent=1) + "\n")
    print(f"wrote {REFERENCE}")
