"""A CAN bus kept open beside the serial and MQTT links, on the same firmware: frames due
go out, frames received are taken, once a poll. A bus that fails (an adapter unplugged,
an interface gone down, a frame nobody acknowledges) is closed and reopened with backoff,
logged once as the episode starts and once as it ends (`bms.links.can.kept_bus`); the
firmware never waits for it, and meanwhile the inverter's silence runs on toward
INVERTER_TIMEOUT as configured.

`poll(now_s)` does the work and never raises. On `serve`'s runtime it is a field link
(`bms.runtime.realtime.FieldLink`): `start(clock)` polls every POLL_S on the loop until
`close()`; a synchronous caller polls it itself and `shutdown()`s it (`run --can`, tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bms.host.device import Device
from bms.links.can.bus_spec import BusSpec, open_bus
from bms.links.can.frame_sets import FrameSet
from bms.links.can.kept_bus import KeptBus, Opener
from bms.links.can.node import CanNode
from bms.links.can.values import published
from bms.links.tasks import start_task, stop_task

log = logging.getLogger(__name__)

POLL_S = 0.02  # a request is answered within this; 50 polls a second cost little


class CanLink(KeptBus):
    """One bus, one frame set, one device. `open_bus` is injected for the tests."""

    name = "can"  # its key in `serve --stats` and `run --json`

    def __init__(self, spec: BusSpec, frames: FrameSet, device: Device,
                 opener: Opener = open_bus):
        super().__init__(spec, frames.bitrate, opener, frames.name, log)
        self.frames = frames
        self.device = device
        self.node = CanNode(frames, lambda now_s: published(device, now_s),
                            device.fw.inverter_watch.heard)
        self.errors = 0  # polls that failed for a reason not the bus's (a bug)
        self._started = False
        self._task: asyncio.Task | None = None

    def poll(self, now_s: float) -> None:
        """Opens the bus when due, takes what has arrived (answering requests), sends what
        is due. Never raises: a failing bus is closed and reopened later."""
        if not self._started:
            self._started = True
            self.device.fw.inverter_watch.watch(now_s)  # silence counts from the start
            self.node.start(now_s)
        try:
            self.exchange(now_s, lambda frame: self.node.receive(frame, now_s),
                          lambda: self.node.due(now_s))
        except Exception:  # noqa: BLE001 - a bug: the firmware runs on, the next poll retries
            self.errors += 1
            if self.errors == 1:
                log.exception("CAN link %s: a poll failed (counted in `errors`, logged once)",
                              self.spec.describe())

    async def start(self, clock: Callable[[], float]) -> None:
        """Polls on the running loop, on `clock` (the runtime's), until `close()`."""
        self._task = start_task(self._polls(clock), name=f"can {self.spec.describe()}")

    async def _polls(self, clock: Callable[[], float]) -> None:
        while True:
            self.poll(clock())
            await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
        self.shutdown()

    def describe(self) -> str:
        return f"CAN {self.spec.describe()} ({self.frames.name})"

    def stats(self) -> dict:
        """What `serve --stats` shows under "can"."""
        return {**self.bus_stats(), "errors": self.errors, **self.node.stats()}
