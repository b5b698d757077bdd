"""Many packs on one clock: one pacing loop steps each pack's run (`hil.runner.PackRun`) in
turn, so a process holds hundreds of packs without a pacing loop, an interpreter and a
broker session for each.

Each pack keeps its own simulated clock from 0: a batch changes when a pack's ticks run on
the wall clock, never what they compute. A pack may start some ticks after the batch
(`stagger`), so that packs publishing once a period do not all publish in the same tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from hil.runner import PackRun, RunResult, sleep_until


def stagger(n_packs: int, period_ticks: int) -> list[int]:
    """Start ticks that spread `n_packs` evenly over one period of `period_ticks`: pack j
    starts at tick j * period_ticks // n_packs (all at 0 when a period is one tick)."""
    return [j * max(1, period_ticks) // max(1, n_packs) for j in range(n_packs)]


def run_batch(runs: Sequence[PackRun], start_ticks: Sequence[int], tick_s: float,
              speed: float | None, stop: Callable[[], bool] | None = None,
              after_tick: Callable[[], None] | None = None,
              ) -> tuple[list[RunResult], dict[int, Exception]]:
    """Steps every run to its end on one clock: batch tick g steps, in order, each run that
    has started (g >= its start tick) and not finished, then calls `after_tick` (the shared
    MQTT session sends what the tick published); with `speed`, batch tick g ends at wall
    time start + (g + 1) * tick_s / speed. `stop()` true ends every run after the batch
    tick in progress. Each result's wall time is from the run's own first tick. A run whose
    tick raises is stepped no further, the others go on (as processes of their own would):
    the exceptions are returned by the run's index, beside the results."""
    if len(runs) != len(start_ticks):
        raise ValueError(f"{len(runs)} runs but {len(start_ticks)} start ticks")
    start = time.perf_counter()
    began = [start] * len(runs)
    ended = [start] * len(runs)
    failed: dict[int, Exception] = {}
    g = 0
    while any(not r.finished and j not in failed for j, r in enumerate(runs)):
        stepped = [j for j, r in enumerate(runs)
                   if g >= start_ticks[j] and not r.finished and j not in failed]
        for j in stepped:
            if runs[j].done == 0:
                began[j] = time.perf_counter()
            try:
                runs[j].tick()
            except Exception as exc:  # noqa: BLE001 - one pack's failure is its own
                failed[j] = exc
        if after_tick is not None:
            after_tick()
        g += 1
        if speed:
            sleep_until(start + g * tick_s / speed, stop)
        now = time.perf_counter()  # as `run` measures it: up to the end of the paced tick
        for j in stepped:
            ended[j] = now
        if stop is not None and stop():
            break
    results = [r.result(max(0.0, e - b)) for r, b, e in zip(runs, began, ended, strict=True)]
    return results, failed
