"""The emulator on MQTT: telemetry, fault events, commands and Home Assistant discovery
under `<prefix>/<pack_id>/`.

Why and how: docs/internals.md, bms/links/mqtt/bridge.py.
"""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass

from bms import __version__
from bms.core.signals import Actuation
from bms.data.faults import Level
from bms.host import views
from bms.host.device import Device
from bms.host.periodic import Periodic
from bms.links.mqtt.commands import CommandPolicy, handle_command
from bms.links.mqtt.discovery import HA_ONLINE, HA_STATUS_TOPIC, discovery_messages
from bms.links.mqtt.session import MqttSession

AVAILABLE, UNAVAILABLE = b"online", b"offline"


def pack_topic(session_prefix: str, pack_id: str) -> str:
    return f"{session_prefix}/{pack_id}"


def availability(session_prefix: str, pack_id: str) -> tuple[tuple[str, bytes], ...]:
    """(will, online) for a pack's session."""
    topic = f"{pack_topic(session_prefix, pack_id)}/availability"
    return (topic, UNAVAILABLE), (topic, AVAILABLE)


@dataclass(frozen=True)
class MqttOptions:
    state_period_s: float = 1.0
    arrays_period_s: float = 1.0
    ha_discovery: bool = True
    commands: CommandPolicy | None = None  # None: every command refused (NOT_ENABLED)


class MqttBridge:
    def __init__(self, session: MqttSession, device: Device, pack_id: str,
                 options: MqttOptions):
        self.session = session
        self.device = device
        self.pack_id = pack_id
        self.options = options
        self.base = pack_topic(session.broker.prefix, pack_id)
        self.inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._state_due = Periodic(options.state_period_s)
        self._arrays_due = Periodic(options.arrays_period_s)
        self._last_change: tuple[str, int] | None = None
        self._seq = {"state": 0, "cells": 0, "temperatures": 0, "balancing": 0, "events": 0}
        session.subscribe(f"{self.base}/cmd/+", self._command_arrived)
        if options.ha_discovery:
            session.subscribe(HA_STATUS_TOPIC, self._ha_status)
            session.on_connect.append(self._publish_discovery)

    # --- from the control loop ---------------------------------------------------------

    def after_step(self, now_s: float, act: Actuation) -> None:
        for e in act.events:
            self._publish("events", e.as_dict(), qos=1, kept=True)
        change = (act.state, act.fault_bitmap)
        due = self._state_due.due(now_s)
        if due or change != self._last_change:
            if not due:  # out of turn, on a change: the next one a whole period later
                self._state_due.restart(now_s)
            self._last_change = change
            self._publish("state", self.state(now_s), qos=1, retain=True)
        if self._arrays_due.due(now_s):
            d = self.device
            self._publish("cells", views.cells_dict(d.cell_voltages()))
            self._publish("temperatures", views.temps_dict(d.temperatures()))
            self._publish("balancing", views.balancing_dict(d.balancing()))

    def poll(self, now_s: float) -> None:
        """Runs the commands that have arrived; each answers on its result topic."""
        while True:
            try:
                name, payload = self.inbox.get_nowait()
            except queue.Empty:
                return
            result = handle_command(name, payload, self.options.commands, self.device, now_s)
            self.session.publish(f"{self.base}/cmd/{name}/result",
                                 json.dumps(result, allow_nan=False), qos=1)

    def state(self, now_s: float) -> dict:
        """The retained state: the status every interface gives, plus power and which
        fault levels are active."""
        d = views.status_dict(self.device.status(now_s))
        v, i = d["pack_voltage_v"], d["current_a"]
        fw = self.device.fw
        levels = {level: fw.protection.any_active(level) for level in Level}
        levels[Level.FAULT] = levels[Level.FAULT] or bool(fw.event_faults)
        act = self.device.act
        return {**d, "power_w": None if v is None or i is None else v * i, "levels": levels,
                "charge_voltage_limit_v": None if act is None else act.charge_voltage_limit_v,
                "discharge_voltage_limit_v":
                    None if act is None else act.discharge_voltage_limit_v}

    # --- plumbing ------------------------------------------------------------------------

    def _publish(self, sub: str, body: dict, qos: int = 0, retain: bool = False,
                 kept: bool = False) -> None:
        """JSON with the pack id, a per-topic sequence number (a gap is a lost message)
        and the wall-clock time it was queued (for latency)."""
        if sub in self._seq:
            self._seq[sub] += 1
            body = {**body, "seq": self._seq[sub]}
        body = {**body, "pack_id": self.pack_id, "unix_time_s": round(time.time(), 6)}
        self.session.publish(f"{self.base}/{sub}", json.dumps(body, allow_nan=False),
                             qos=qos, retain=retain, kept=kept)

    def _command_arrived(self, topic: str, payload: bytes) -> None:
        self.inbox.put((topic.rsplit("/", 1)[1], payload))

    def _ha_status(self, _topic: str, payload: bytes) -> None:
        if payload.strip() == HA_ONLINE.encode():
            self._publish_discovery()

    def _publish_discovery(self) -> None:
        ident = self.device.identity
        model = (f"{ident.chemistry} {self.device.fw.n_series}S{ident.n_parallel}P "
                 f"{ident.capacity_ah:g} Ah")
        for topic, payload in discovery_messages(self.session.broker.prefix, self.pack_id,
                                                 f"BMS {self.pack_id}", model, __version__):
            self.session.publish(topic, payload, qos=1, retain=True)
