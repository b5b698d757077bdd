"""The firmware's step alone, without the plant: a headless run's measurements (na-nfm, the
data-centre day from the outage, a 0.1 s tick) recorded, then replayed into fresh firmwares
and timed. Prints one JSON line.

    .venv/bin/python benchmarks/firmware_step.py [--series 416] [--duration-s 600] [--repeat 3]

A firmware is deterministic, so a replay takes exactly the steps the run took. Figures are
microseconds a step, the best of `--repeat` replays, in CPU time (`time.process_time`: on a
shared machine the wait for a core is not the code's cost), for the whole step and for the
estimator's part of it (`Estimator.step`, timed inside the same replays). `outputs_sha256`
hashes every step's quantities and actuation: compare it across code versions to check that
a faster step decides the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time

from bms.core.firmware import Firmware
from bms.core.signals import Measurement
from bms.data.presets import PRESETS
from hil.loads import datacenter
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run


def record(args) -> tuple[float, list[tuple[float, Measurement]]]:
    """A headless run's (now_s, measurement) at every step, and the pack's capacity."""
    pack = SimulatedPack(PRESETS[args.chemistry], PackSpec(n_series=args.series), args.tick_s)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
    shifted = datacenter(pack.energy_wh, start_h=9.0)
    steps: list[tuple[float, Measurement]] = []
    run(pack, firmware, shifted, RunOptions(duration_s=args.duration_s, tick_s=args.tick_s),
        on_step=lambda now_s, m, act: steps.append((now_s, m)))
    return pack.capacity_ah, steps


def replay(args, capacity_ah: float, steps: list) -> tuple[float, float, str]:
    """(CPU seconds for every step, of which in the estimator, the outputs' hash)."""
    firmware = Firmware(PRESETS[args.chemistry], args.series, capacity_ah)
    estimator_step = firmware.estimator.step
    estimator_s = 0.0

    def timed_estimator_step(*a, **kw):
        nonlocal estimator_s
        start = time.process_time()
        try:
            return estimator_step(*a, **kw)
        finally:
            estimator_s += time.process_time() - start

    firmware.estimator.step = timed_estimator_step
    acts = []
    quantities = []
    start = time.process_time()
    for now_s, m in steps:
        acts.append(firmware.step(m, now_s))
        quantities.append(firmware.quantities.tobytes())
    total_s = time.process_time() - start
    sha = hashlib.sha256()
    for act, q in zip(acts, quantities, strict=True):
        sha.update(q)
        sha.update(act.balance_mask.tobytes())
        sha.update(repr((act.state, act.contactors, act.charge_limit_a, act.discharge_limit_a,
                         act.fault_bitmap, act.soc, act.level_bitmaps, act.open_wire_test,
                         [e.describe() for e in act.events])).encode())
    return total_s, estimator_s, sha.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=416)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--tick-s", type=float, default=0.1)
    parser.add_argument("--chemistry", default="na-nfm")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    capacity_ah, steps = record(args)
    runs = [replay(args, capacity_ah, steps) for _ in range(args.repeat)]
    assert len({sha for _, _, sha in runs}) == 1, "replays of one recording decided differently"
    total_s, estimator_s, sha = min(runs)
    n = len(steps)
    print(json.dumps({
        "benchmark": "firmware_step",
        "series": args.series,
        "chemistry": args.chemistry,
        "tick_s": args.tick_s,
        "steps": n,
        "us_per_step": round(total_s / n * 1e6, 1),
        "estimator_us_per_step": round(estimator_s / n * 1e6, 1),
        "rest_us_per_step": round((total_s - estimator_s) / n * 1e6, 1),
        "repeats": args.repeat,
        "outputs_sha256": sha,
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
