"""A CAN bus kept open beside the serial and MQTT links, on the same firmware: frames due
go out, frames received are taken, once a poll. A bus that fails (an adapter unplugged,
an interface gone down, a frame nobody acknowledges) is closed and reopened with backoff,
logged once as the episode starts and once as it ends; the firmware never waits for it,
and meanwhile the inverter's silence runs on toward INVERTER_TIMEOUT as configured.

`poll(now_s)` does the work and never raises. On `serve`'s runtime it is a field link
(`bms.runtime.realtime.FieldLink`): `start(clock)` polls every POLL_S on the loop until
`close()`; a synchronous caller polls it itself and `shutdown()`s it (`run --can`, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import can

from bms.host.device import Device
from bms.links.can.bus_spec import BusSpec, open_bus
from bms.links.can.frame_sets import FrameSet
from bms.links.can.node import CanNode
from bms.links.can.values import published

log = logging.getLogger(__name__)

POLL_S = 0.02  # a request is answered within this; 50 polls a second cost little
FRAMES_PER_POLL = 200  # a flood waits for the next poll rather than hold up the loop
REOPEN_FIRST_S = 0.5
REOPEN_MAX_S = 5.0


class CanLink:
    """One bus, one frame set, one device. `open_bus` is injected for the tests."""

    name = "can"  # its key in `serve --stats` and `run --json`

    def __init__(self, spec: BusSpec, frames: FrameSet, device: Device,
                 opener: Callable[[BusSpec, int], can.BusABC] = open_bus):
        self.spec = spec
        self.frames = frames
        self.device = device
        self.opener = opener
        self.node = CanNode(frames, lambda now_s: published(device, now_s),
                            device.fw.inverter_watch.heard)
        self.bus: can.BusABC | None = None
        self.opens = 0  # times the bus was opened
        self.failures = 0  # episodes of a bus that failed or would not open
        self.send_failures = 0  # frames that could not be handed to the bus
        self.errors = 0  # polls that failed for a reason not the bus's (a bug)
        self.last_error = ""
        self._reopen_at_s = 0.0
        self._backoff_s = REOPEN_FIRST_S
        self._started = False
        self._task: asyncio.Task | None = None

    def poll(self, now_s: float) -> None:
        """Opens the bus when due, takes what has arrived (answering requests), sends what
        is due. Never raises: a failing bus is closed and reopened later."""
        if not self._started:
            self._started = True
            self.device.fw.inverter_watch.watch(now_s)  # silence counts from the start
            self.node.start(now_s)
        if self.bus is None and (now_s < self._reopen_at_s or not self._open(now_s)):
            return
        try:
            for _ in range(FRAMES_PER_POLL):
                frame = self.bus.recv(timeout=0.0)
                if frame is None:
                    break
                self._send(self.node.receive(frame, now_s))
            self._send(self.node.due(now_s))
        except (can.CanError, OSError) as exc:
            self._fail(now_s, f"CAN bus {self.spec.describe()} failed: {exc}")
        except Exception:  # noqa: BLE001 - a bug: the firmware runs on, the next poll retries
            self.errors += 1
            if self.errors == 1:
                log.exception("CAN link %s: a poll failed (counted in `errors`, logged once)",
                              self.spec.describe())

    async def start(self, clock: Callable[[], float]) -> None:
        """Polls on the running loop, on `clock` (the runtime's), until `close()`."""
        self._task = asyncio.create_task(self._polls(clock), name=f"can {self.spec.describe()}")

    async def _polls(self, clock: Callable[[], float]) -> None:
        while True:
            self.poll(clock())
            await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.shutdown()

    def describe(self) -> str:
        return f"CAN {self.spec.describe()} ({self.frames.name})"

    def shutdown(self) -> None:
        """Closes the bus (a poll after it opens it again)."""
        if self.bus is not None:
            bus, self.bus = self.bus, None
            try:
                bus.shutdown()
            except Exception:  # noqa: BLE001 - a bus gone bad may refuse to close cleanly
                log.debug("closing %s", self.spec.describe(), exc_info=True)

    def stats(self) -> dict:
        """What `serve --stats` shows under "can"."""
        return {"bus": self.spec.describe(), "connected": self.bus is not None,
                "opens": self.opens, "failures": self.failures,
                "send_failures": self.send_failures, "errors": self.errors,
                "last_error": self.last_error,
                **self.node.stats()}

    def _send(self, frames: list[can.Message]) -> None:
        for frame in frames:
            try:
                self.bus.send(frame, timeout=0.0)
            except can.CanError:
                self.send_failures += 1
                raise

    def _open(self, now_s: float) -> bool:
        try:
            self.bus = self.opener(self.spec, self.frames.bitrate)
        # python-can raises its own errors, OSError, or ImportError / ValueError for an
        # interface whose driver or arguments are missing
        except (can.CanError, OSError, ImportError, ValueError) as exc:
            self._fail(now_s, f"cannot open CAN bus {self.spec.describe()}: {exc}")
            return False
        self.opens += 1
        if self.last_error:
            log.warning("CAN bus %s open again", self.spec.describe())
        else:
            log.info("CAN bus %s open (%s)", self.spec.describe(), self.frames.name)
        self.last_error = ""
        self._backoff_s = REOPEN_FIRST_S
        return True

    def _fail(self, now_s: float, why: str) -> None:
        """Closes the bus and sets the next attempt, backing off; logged once an episode."""
        self.shutdown()
        if not self.last_error:
            self.failures += 1
            log.warning("%s; retrying every %g s at most", why, REOPEN_MAX_S)
        self.last_error = why
        self._reopen_at_s = now_s + self._backoff_s
        self._backoff_s = min(2.0 * self._backoff_s, REOPEN_MAX_S)
