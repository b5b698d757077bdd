"""How the long-running commands (`serve`, `rig`, `pty`) end: Ctrl-C and SIGTERM (what
`kill`, systemd and test fixtures send) both cancel the work, so its clean-up runs (the
emulator tells the rig to open its contactors, the rig prints its summary, the pty pair
removes its links)."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Coroutine
from typing import TypeVar

T = TypeVar("T")


def run_until_signalled(work: Coroutine[object, object, T]) -> T | None:
    """What `work` returns, or None when a signal ended it.

    What start-up built (modules, the firmware's tables, the pack) lives as long as the
    process: it is moved out of the garbage collector's sight first, so that a full
    collection walks only what came later. Walking it all stalled a 10 ms real-time loop
    for 50-100 ms every few tens of seconds (benchmarks/soak.py)."""
    gc.collect()
    gc.freeze()
    return asyncio.run(_until_signalled(work))


async def _until_signalled(work: Coroutine[object, object, T]) -> T | None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await work
    except asyncio.CancelledError:
        return None
