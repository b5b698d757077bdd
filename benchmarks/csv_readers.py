"""How the CSV readers scale: the time to read and check a file of twice the columns or twice
the rows, as a ratio of CPU times, in one run. Prints one JSON line.

    .venv/bin/python benchmarks/csv_readers.py [--repeat 3] [--quick]

Cases (each a file, one twice and one four times as wide or as long):
- replay_columns: `hil.replay.read_trace` on a trace of 20,000, 40,000 and 80,000 cells (v
  columns), three rows: what `bms-emu replay` reads. A header check that counted each name in
  the whole header made this quadratic: 20k columns took 14 s, 80k 126 s (issue 15).
- replay_rows: `read_trace` on 16 cells and 25,000 to 100,000 rows (5,000 to 20,000 quick).
- profile_rows: `hil.loads.load_csv_profile` on 50,000 to 200,000 rows (20,000 to 80,000).

A reader linear in rows x columns gives ratios near 2 and 4; a quadratic one, near 4 and 16
(small files read a little worse than linear: the caches). Each time is the process's CPU
time (not the wall clock, which other processes stretch), the best of `--repeat` reads, the
files taking turns, with the cyclic garbage collector paused during each read: its passes
over a heap that the read grows cost more than linearly in the objects alive (10,000 to
40,000 profile rows gave a ratio of 7-10 with it, 5 without), which is the interpreter's
cost, not the reader's, and it made the quick test fail by chance under load. `linear` is
true when every four-fold ratio is under LINEAR_RATIO_4X.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bms.data.presets import resolve_chemistry
from hil.loads import load_csv_profile
from hil.replay import read_trace

LINEAR_RATIO_4X = 8.0  # between 4 (linear) and 16 (quadratic) for four times the size
CHEMISTRY = resolve_chemistry("na-nfm")


def trace_file(path: Path, n_cells: int, n_rows: int) -> Path:
    """A replay trace: time_s, current_a, v1..vN at rest, every cell slightly different."""
    cells = ",".join(f"3.{600 + i % 100:03d}" for i in range(n_cells))
    with path.open("w", encoding="utf-8") as f:
        f.write(",".join(["time_s", "current_a", *(f"v{i + 1}" for i in range(n_cells))]))
        f.write("\n")
        for k in range(n_rows):
            f.write(f"{k}.0,{-0.5 - k % 7 * 0.1:.1f},{cells}\n")
    return path


def profile_file(path: Path, n_rows: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write("time_s,current_a\n")
        f.writelines(f"{k * 10},{(k % 13) - 6}\n" for k in range(n_rows))
    return path


def best_times_s(reads: list[Callable[[], object]], repeat: int) -> list[float]:
    """The best CPU time of each read over `repeat` rounds, the reads taking turns: the
    process's own time, which other processes on a shared machine do not stretch. The
    collector is paused while a read runs (see the module's docstring)."""
    best = [float("inf")] * len(reads)
    for _ in range(repeat):
        for i, read in enumerate(reads):
            gc.collect()
            gc.disable()
            try:
                start = time.process_time()
                read()
                best[i] = min(best[i], time.process_time() - start)
            finally:
                gc.enable()
    return best


def case(reads: list[Callable[[], object]], sizes: list[int], repeat: int) -> dict:
    """Three sizes, n, 2n, 4n: the times, and the ratios to the first."""
    times_s = best_times_s(reads, repeat)
    return {"sizes": sizes, "seconds": [round(t, 4) for t in times_s],
            "ratio_2x": round(times_s[1] / times_s[0], 2),
            "ratio_4x": round(times_s[2] / times_s[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="reads of each file (best)")
    parser.add_argument("--quick", action="store_true", help="fewer rows (the test suite's)")
    args = parser.parse_args()
    columns = (20_000, 40_000, 80_000)
    rows = (5_000, 10_000, 20_000) if args.quick else (25_000, 50_000, 100_000)
    profile_rows = (20_000, 40_000, 80_000) if args.quick else (50_000, 100_000, 200_000)
    with tempfile.TemporaryDirectory(prefix="bms-csv-bench-") as folder:
        d = Path(folder)
        wide = [trace_file(d / f"wide{n}.csv", n, 3) for n in columns]
        long = [trace_file(d / f"long{n}.csv", 16, n) for n in rows]
        profiles = [profile_file(d / f"profile{n}.csv", n) for n in profile_rows]
        cases = {
            "replay_columns": case([lambda p=p: read_trace(p, CHEMISTRY) for p in wide],
                                   list(columns), args.repeat),
            "replay_rows": case([lambda p=p: read_trace(p, CHEMISTRY) for p in long],
                                list(rows), args.repeat),
            "profile_rows": case([lambda p=p: load_csv_profile(p) for p in profiles],
                                 list(profile_rows), args.repeat),
        }
    print(json.dumps({
        "benchmark": "csv_readers", "quick": args.quick, "repeat": args.repeat,
        "cpus": os.cpu_count(), "python": platform.python_version(), "cases": cases,
        "linear_ratio_4x": LINEAR_RATIO_4X,
        "linear": all(c["ratio_4x"] < LINEAR_RATIO_4X for c in cases.values()),
    }))


if __name__ == "__main__":
    main()
