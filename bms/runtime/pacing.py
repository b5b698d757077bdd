"""Real-time pacing shared by everything that ticks on a wall clock (the emulator's
runtime, the rig): tick k falls due k x tick_s after the start, so timing errors do not
add up, and a loop that fell far behind starts afresh instead of bursting to catch up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from bms.runtime.timing import TickStats

log = logging.getLogger(__name__)

RESYNC_AFTER_S = 1.0  # a loop this far behind starts afresh from now


async def ticks(tick_s: float, now_s: Callable[[], float], who: str,
                stats: TickStats | None = None) -> AsyncIterator[float]:
    """Sleeps until each tick falls due and yields the time then (`now_s()`). `stats`, when
    given, gets each tick's lateness and work time, overruns and skipped ticks."""
    k = 0
    woke_s = None  # when the last tick's work began; None before the first
    while True:
        k += 1
        due_s = k * tick_s
        done_s = now_s()  # the last tick's work has just ended
        behind_s = done_s - due_s
        if stats is not None and woke_s is not None:
            stats.work.add(done_s - woke_s)
            if behind_s > 0.0:
                stats.overruns += 1
        if behind_s > RESYNC_AFTER_S:
            log.warning("%s %.2f s behind; resuming from now", who, behind_s)
            skip_to = int(now_s() / tick_s) + 1
            if stats is not None:
                stats.resyncs += 1
                stats.skipped += skip_to - k
            k = skip_to
            due_s = k * tick_s
        await asyncio.sleep(max(0.0, due_s - now_s()))
        woke_s = now_s()
        if stats is not None:
            stats.due_s = due_s
            if woke_s - due_s > stats.lateness.max_s:
                stats.latest_due_s = due_s
            stats.lateness.add(woke_s - due_s)
        yield woke_s
