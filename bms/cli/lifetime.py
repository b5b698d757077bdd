"""How the long-running commands (`serve`, `rig`, `pty`) end: Ctrl-C and SIGTERM (what
`kill`, systemd and test fixtures send) both cancel the work, so its clean-up runs (the
emulator tells the rig to open its contactors, the rig prints its summary, the pty pair
removes its links)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine


def run_until_signalled(work: Coroutine) -> None:
    asyncio.run(_until_signalled(work))


async def _until_signalled(work: Coroutine) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await work
