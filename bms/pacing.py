"""Real-time pacing shared by everything that ticks on a wall clock (the emulator's
runtime, the rig): tick k falls due k x tick_s after the start, so timing errors do not
add up, and a loop that fell far behind starts afresh instead of bursting to catch up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)

RESYNC_AFTER_S = 1.0  # a loop this far behind starts afresh from now


async def ticks(tick_s: float, now_s: Callable[[], float], who: str) -> AsyncIterator[float]:
    """Sleeps until each tick falls due and yields the time then (`now_s()`)."""
    k = 0
    while True:
        k += 1
        due_s = k * tick_s
        behind_s = now_s() - due_s
        if behind_s > RESYNC_AFTER_S:
            log.warning("%s %.2f s behind; resuming from now", who, behind_s)
            k = int(now_s() / tick_s) + 1
            due_s = k * tick_s
        await asyncio.sleep(max(0.0, due_s - now_s()))
        yield now_s()
