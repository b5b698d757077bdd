"""The fleet's start gate: every batch process builds its packs, connects and sends its
discovery, says so, and waits; the fleet opens the gate for all at once when every process
has said so or ended. Without it the processes ready first start their clocks while the
others still build and connect on the same cores, and fall behind real time by up to a
second (200 packs of 416 cells on 2 cores); the lag then drains, but a host's dashboard saw
it.

Two pipes, made before the processes are forked: each batch writes a byte on `ready` and
closes it, then waits for `go` to close. The fleet reads `ready` to its end - which comes
once no process holds it open, ready or ended, so a process that fails before it is ready
holds no one back - and then closes `go`."""

from __future__ import annotations

import os
import select
from collections.abc import Callable

POLL_S = 0.1  # a waiting batch looks at its stop requests this often


class StartGate:
    def __init__(self) -> None:
        self._ready_r, self._ready_w = os.pipe()
        self._go_r, self._go_w = os.pipe()
        self.opened = False

    # --- in the fleet ------------------------------------------------------------------

    def forked(self) -> None:
        """Every process is forked: only they hold the ends they write and wait on now."""
        os.close(self._ready_w)
        os.close(self._go_r)
        os.set_blocking(self._ready_r, False)

    def poll(self) -> bool:
        """Opens the gate once every process is ready or ended; whether it is open."""
        while not self.opened:
            try:
                data = os.read(self._ready_r, 4096)
            except BlockingIOError:
                return False
            if not data:  # the end: no process holds `ready` open any more
                self.close()
        return True

    def close(self) -> None:
        """Open for good (also as the fleet ends, whatever happened)."""
        if not self.opened:
            self.opened = True
            os.close(self._go_w)
            os.close(self._ready_r)

    # --- in a forked process -----------------------------------------------------------

    def in_child(self, waits: bool) -> None:
        """Right after the fork: the fleet's ends closed; a process that does not wait (a
        pack's own `run`) closes its own too, so that it holds no one back."""
        os.close(self._ready_r)
        os.close(self._go_w)
        if not waits:
            os.close(self._ready_w)
            os.close(self._go_r)

    def wait(self, stop: Callable[[], bool]) -> None:
        """Says this process is ready, then waits for the gate (or a stop request)."""
        os.write(self._ready_w, b"r")
        os.close(self._ready_w)
        try:
            while not stop():
                readable, _, _ = select.select([self._go_r], [], [], POLL_S)
                if readable:  # closed by the fleet
                    return
        finally:
            os.close(self._go_r)
