"""The background task a link runs in: started with a name, reported if it dies, cancelled
and awaited on close. One mechanism for the serial, CAN and Modbus links."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine

log = logging.getLogger("bms.links")


def start_task(work: Coroutine, name: str) -> asyncio.Task:
    """`work` as a task on the running loop. A link's task only ends when cancelled; any
    other end is a bug worth shouting about, since the emulator would run on without it."""
    task = asyncio.create_task(work, name=name)
    task.add_done_callback(_report_end)
    return task


async def stop_task(task: asyncio.Task | None) -> None:
    """Cancels `task` (None: nothing to stop) and waits until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _report_end(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the %s task died", task.get_name(), exc_info=task.exception())
