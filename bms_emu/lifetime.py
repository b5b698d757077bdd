"""How the long-running commands end: Ctrl-C and SIGTERM (what `kill`, systemd and test
fixtures send). In the asyncio ones (`serve`, `rig`, `pty`) both cancel the work, so its
clean-up runs (the emulator tells the rig to open its contactors, the rig prints its summary,
the pty pair removes its links). In `run`, a loop of steps, the signal is a request that the
loop takes between two steps, so the recording ends on a whole row and the summary of the run
so far is printed; the exit code is then 128 + the signal's number (130, 143), as a shell
reports a command the signal ended. A second signal stops at once (KeyboardInterrupt)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
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


@dataclass
class StopRequest:
    """The signal that asked a loop to stop, if one has; call it to ask whether one has."""

    signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """0, or 128 + the signal's number."""
        return 0 if self.signum is None else 128 + self.signum


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """While inside: Ctrl-C and SIGTERM set the request instead of ending the process; a
    second one raises KeyboardInterrupt. Outside the main thread (where Python cannot take
    signals) the request is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_signal(signum: int, _frame) -> None:
        if request.signum is not None:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
