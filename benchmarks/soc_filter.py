"""The SoC filter alone (`bms.core.soc_filter.SocFilter`): its calls of a headless run
(416S na-nfm, the data-centre day from the outage, a 0.1 s tick) recorded, then replayed
on a fresh filter and timed per method. Prints one JSON line.

    .venv/bin/python benchmarks/soc_filter.py [--series 416] [--duration-s 300] [--repeat 5]

The replay gives the recorded run's filter state bit for bit (`final_sha256`: compare it
across code versions to check a faster filter computes the same numbers). Figures are
microseconds per call, each call's best of `--repeat` replays; the whole run's figure, per
filter run (one predict and one update a second), is what a tick pays every tenth tick.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import platform
import time

import numpy as np

from bms.core import soc_filter
from bms.core.firmware import Firmware
from bms.data.presets import PRESETS
from hil.loads import datacenter
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run

# What a run calls on its filter (the estimator's every use of it that changes its state).
METHODS = ("predict", "update", "observe_offset", "recalibrate")


def record(args) -> tuple[tuple, list[tuple[str, tuple, dict]]]:
    """A headless run with every filter call's arguments kept (copied: the caller may reuse
    its arrays); returns the filter's constructor arguments and the calls in order."""
    cls = soc_filter.SocFilter
    made: list[tuple] = []
    calls: list[tuple[str, tuple, dict]] = []
    originals = {name: getattr(cls, name) for name in (*METHODS, "__init__")}

    def recording(name):
        def method(self, *a, **kw):
            (made if name == "__init__" else calls).append(
                (name, copy.deepcopy(a), copy.deepcopy(kw)))
            return originals[name](self, *a, **kw)
        return method

    for name in originals:
        setattr(cls, name, recording(name))
    try:
        pack = SimulatedPack(PRESETS["na-nfm"], PackSpec(n_series=args.series), 0.1)
        firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah)
        shifted = datacenter(pack.energy_wh, start_h=9.0)
        run(pack, firmware, shifted, RunOptions(duration_s=args.duration_s, tick_s=0.1))
    finally:
        for name, method in originals.items():
            setattr(cls, name, method)
    (_, init_args, init_kw), = made
    return (init_args, init_kw), calls


def replay(init, calls) -> tuple[np.ndarray, soc_filter.SocFilter]:
    """The calls on a fresh filter; the seconds each took."""
    init_args, init_kw = copy.deepcopy(init)
    f = soc_filter.SocFilter(*init_args, **init_kw)
    spent = np.zeros(len(calls))
    clock = time.perf_counter
    for k, (name, a, kw) in enumerate(calls):
        method = getattr(f, name)
        t0 = clock()
        method(*a, **kw)
        spent[k] = clock() - t0
    return spent, f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=416)
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    init, calls = record(args)
    counts = {name: sum(c[0] == name for c in calls) for name in METHODS}
    # Each call's best time over the replays: a shared machine's other work lands on a few
    # calls of each replay, different ones each time.
    fastest_s = np.full(len(calls), np.inf)
    for _ in range(args.repeat):
        spent, f = replay(init, calls)
        np.minimum(fastest_s, spent, out=fastest_s)
    names = np.array([name for name, _, _ in calls])
    best = {name: float(fastest_s[names == name].sum()) for name in METHODS}
    digest = hashlib.sha256()
    # A filter from before issue 19 has no `covariance`: its P is (cell, state, state).
    cov = np.ascontiguousarray(getattr(f, "covariance", f.P))
    for a in (f.x, cov, f.innovation_ms, f.moved_soc, f.residual_v, f.dynamic_v):
        digest.update(a.tobytes())
    per_call = {f"{k}_us": round(best[k] / counts[k] * 1e6, 1) for k in METHODS if counts[k]}
    runs = counts["update"]
    print(json.dumps({
        "benchmark": "soc_filter",
        "series": args.series,
        "filter_runs": runs,
        **per_call,
        "per_run_us": round(sum(best.values()) / runs * 1e6, 1),
        "calls": counts,
        "final_sha256": digest.hexdigest()[:16],
        "module": soc_filter.__file__,
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
