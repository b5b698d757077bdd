"""Tick timing in bounded memory: the histogram's percentiles, and what `ticks` counts as
lateness, work, overruns and skipped ticks, on a clock the test moves by hand (no timing is
asserted against the real clock)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bms.runtime.pacing import ticks
from bms.runtime.timing import Histogram, TickStats


def test_an_empty_histogram_has_no_figures():
    h = Histogram()
    assert h.percentile_s(50) is None
    assert h.summary_ms() == {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None,
                              "mean_ms": None, "overflow": 0}


def test_percentiles_are_bin_upper_edges_and_never_above_the_max():
    h = Histogram(bin_s=1e-3, range_s=0.1)
    for ms in range(100):  # 0.5, 1.5, ..., 99.5 ms
        h.add((ms + 0.5) * 1e-3)
    assert h.percentile_s(50) == pytest.approx(50e-3)  # the 50th value, 49.5 ms: bin 49..50
    assert h.percentile_s(99) == pytest.approx(99e-3)
    assert h.percentile_s(100) == pytest.approx(99.5e-3)  # capped at the exact max
    s = h.summary_ms()
    assert (s["count"], s["max_ms"], s["mean_ms"]) == (100, 99.5, 50.0)


def test_values_beyond_the_range_overflow_and_report_the_max():
    h = Histogram(bin_s=1e-3, range_s=0.01)
    for x_s in (0.001, 0.002, 0.5):
        h.add(x_s)
    assert h.overflow == 1
    assert h.percentile_s(99) == 0.5
    assert len(h.counts) == 11  # fixed, whatever is added


def test_a_slightly_early_timer_counts_as_on_time():
    h = Histogram()
    h.add(-1e-9)
    assert h.counts[0] == 1 and h.percentile_s(50) == pytest.approx(0.0)


class HandClock:
    """Time that moves only when told: by the test (a tick's work) or by a sleep."""

    def __init__(self, t_s: float):
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


async def test_ticks_count_lateness_work_overruns_and_skipped_ticks(monkeypatch, caplog):
    """10 ms ticks on a clock that starts 2 ms late; each tick's work ends at a given time."""
    clock = HandClock(0.012)
    real_sleep = asyncio.sleep

    async def sleep(delay_s: float) -> None:
        clock.t_s += delay_s
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    stats = TickStats(0.01)
    work_ends_s = [0.025,  # tick 1 (woke at 12 ms): past tick 2's due time, 20 ms
                   0.028,  # tick 2 (woke at 25 ms): before tick 3's, 30 ms
                   1.507]  # tick 3 (on time): 1.467 s past tick 4's, 40 ms
    woke = []
    with caplog.at_level(logging.WARNING, logger="bms.runtime.pacing"):
        async for now_s in ticks(0.01, clock, "test", stats):
            woke.append(now_s)
            if len(woke) == 4:
                break
            clock.t_s = work_ends_s[len(woke) - 1]
    # more than a second behind, tick 4 starts afresh as tick 151 (1.51 s): 147 skipped
    assert woke == pytest.approx([0.012, 0.025, 0.03, 1.51])
    assert stats.lateness.count == 4
    assert stats.lateness.max_s == pytest.approx(0.005)  # tick 2: due at 20 ms, woke at 25
    assert stats.latest_due_s == pytest.approx(0.02)
    assert stats.lateness.sum_s == pytest.approx(0.007)
    assert stats.work.count == 3
    assert stats.work.sum_s == pytest.approx(0.013 + 0.003 + 1.477)
    assert stats.overruns == 2  # ticks 1 and 3
    assert (stats.resyncs, stats.skipped) == (1, 147)
    assert stats.due_s == pytest.approx(1.51)
    assert "behind; resuming from now" in caplog.text


async def test_ticks_without_stats_still_pace():
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    n = 0
    async for _ in ticks(0.001, lambda: loop.time() - t0, "test"):
        n += 1
        if n == 3:
            break
    assert n == 3
