"""What follows each firmware step, in one order for every loop that steps the firmware
(`serve`'s real-time runtime and the headless `run`): the store saves first, so that
nothing a host hears of is lost with the process; then the device takes the step in, so
that requests and telemetry answer from it; then MQTT publishes it. How the loops differ
(when MQTT commands run) is a field, not a second copy of the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bms.core.signals import Actuation, Measurement
from bms.host.device import Device
from bms.store.persistence import Keeper

if TYPE_CHECKING:  # a bridge is handed in: aiomqtt is imported only by runs with MQTT
    from bms.links.mqtt.bridge import MqttBridge


@dataclass(frozen=True, eq=False)
class AfterStep:
    """Called as `after_step(now_s, m, act)` once a step. A part left None is not there:
    no store, no MQTT, or no device (a headless run without MQTT has no host to answer)."""

    device: Device | None = None
    keeper: Keeper | None = None
    bridge: MqttBridge | None = None
    # True where a tick is one step and nothing else (the headless run): MQTT commands run
    # right after each step. False: the loop calls `poll` once a tick itself (`serve`, where
    # a HIL tick may have no step and a measurement frame brings one between ticks).
    poll_each_step: bool = False

    def __call__(self, now_s: float, m: Measurement | None, act: Actuation) -> None:
        if self.keeper is not None:  # on disk before any host hears of it
            self.keeper.after_step(now_s, act)
        if self.device is not None:
            self.device.observe(m, act)
        if self.bridge is not None:
            self.bridge.after_step(now_s, act)
            if self.poll_each_step:
                self.bridge.poll(now_s)

    def poll(self, now_s: float) -> None:
        """Runs the MQTT commands that have arrived; they act from the next step on."""
        if self.bridge is not None:
            self.bridge.poll(now_s)
