"""A rig in a thread: one healthy MeasurementFrame a tick, its contactor feedback what the
device's last ActuationFrame commanded (contacts that follow their coils at once), its
cell voltages moving by a millivolt from one frame to the next (a reading that never
moves is a stuck sensor to the firmware)."""

from __future__ import annotations

import threading

from protocol import messages as pm
from protocol.codec import Frame
from protocol.framing import LATEST_REVISION, Flags
from tests.client.emulators import TICK_S, measurement
from tests.client.spec_client import SpecClient


def last_commanded(client: SpecClient) -> int:
    """The contactor bits of the newest ActuationFrame received (0 before any)."""
    for item in reversed(client.received):
        if isinstance(item, Frame) and isinstance(item.message, pm.ActuationFrame):
            return item.message.contactors
    return 0


class Rig:
    def __init__(self, client: SpecClient, revision: int = LATEST_REVISION):
        self.client = client
        self.revision = revision
        self.rig_seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Rig:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.rig_seq += 1
            frame = measurement(self.rig_seq, cell_v=3.3 + 0.001 * (self.rig_seq % 2),
                                contactors=last_commanded(self.client))
            self.client.send(frame, self.revision, Flags.EVENT)
            self._stop.wait(TICK_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
