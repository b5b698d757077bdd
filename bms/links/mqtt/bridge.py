"""The emulator on MQTT: telemetry, fault events, commands and Home Assistant discovery
under `<prefix>/<pack_id>/`.

Why and how: docs/internals.md, bms/links/mqtt/bridge.py.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

from bms import __version__
from bms.core.signals import Actuation
from bms.data.faults import Level
from bms.host import views
from bms.host.device import Device
from bms.host.periodic import Periodic
from bms.links.mqtt.commands import CommandPolicy, Parsed, parse_command, run_command
from bms.links.mqtt.defaults import COMMAND_RATE_PER_S
from bms.links.mqtt.discovery import HA_ONLINE, HA_STATUS_TOPIC, discovery_messages
from bms.links.mqtt.inbound import BACKLOG_FULL, Intake
from bms.links.mqtt.outbox import WINDOW, Gap, Outbox, OutboxStore
from bms.links.mqtt.session import MqttSession

log = logging.getLogger(__name__)

AVAILABLE, UNAVAILABLE = b"online", b"offline"
HA_STATUS_RATE_PER_S = 1.0  # Home Assistant announces itself once a start
COMMANDS_PER_POLL = 4  # done a tick at most: a burst waits, it does not stall the loop
OTHERS_AVAILABILITY_RATE_PER_S = 1.0  # another client on a pack's availability topic
INBOX_SIZE = 64  # commands waiting for the loop; more are refused unread


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
    command_rate_per_s: float = COMMAND_RATE_PER_S
    outbox_window: int = WINDOW  # fault events held in memory (the rest wait in the store)


class MqttBridge:
    def __init__(self, session: MqttSession, device: Device, pack_id: str,
                 options: MqttOptions, outbox_store: OutboxStore | None = None):
        """`outbox_store`: the pack's store, where fault events wait for the broker over
        any outage and a restart (None: in memory, up to `options.outbox_window` of them)."""
        self.session = session
        self.device = device
        self.pack_id = pack_id
        self.options = options
        self.base = pack_topic(session.broker.prefix, pack_id)
        self.inbox: queue.SimpleQueue[Parsed] = queue.SimpleQueue()  # for the control loop
        self.refused_commands: Counter[str] = Counter()  # results not ok, by error code
        self._refused_lock = threading.Lock()  # counted from the session's thread and the loop
        self._state_due = Periodic(options.state_period_s)
        self._arrays_due = Periodic(options.arrays_period_s)
        self._last_change: tuple[str, int] | None = None
        self.outbox = Outbox(outbox_store, self._gap_report, options.outbox_window)
        session.use_outbox(self.outbox)
        # Events are numbered on from the store's last: a restart starts no second seq 1.
        self._seq = {"state": 0, "cells": 0, "temperatures": 0, "balancing": 0,
                     "events": self.outbox.last_seq}
        self._commands_filter = f"{self.base}/cmd/+"
        session.subscribe(self._commands_filter, self._command_arrived,
                          Intake(options.command_rate_per_s))
        if options.ha_discovery:
            session.subscribe(HA_STATUS_TOPIC, self._ha_status, Intake(HA_STATUS_RATE_PER_S))
            session.on_connect.append(self._publish_discovery)
        # Another client publishing this pack's availability: a second emulator (or fleet)
        # with this pack id, whose messages mix with these on every topic; or a dead one's
        # will saying `offline` while this one runs. Only others' messages come (no-local).
        self.availability_from_others = 0
        self._availability = availability(session.broker.prefix, pack_id)
        session.subscribe(self._availability[0][0], self._availability_from_other,
                          Intake(OTHERS_AVAILABILITY_RATE_PER_S), others_only=True)

    # --- from the control loop ---------------------------------------------------------

    def after_step(self, now_s: float, act: Actuation) -> None:
        self.outbox.put([self._message("events", e.as_dict()) for e in act.events])
        change = (act.state, act.fault_bitmap)
        due = self._state_due.due(now_s)
        if due or change != self._last_change:
            if not due:  # out of turn, on a change: the next one a whole period later
                self._state_due.restart(now_s)
            self._last_change = change
            self._publish("state", self.state(now_s), qos=1, retain=True)
        if self._arrays_due.due(now_s):
            d = self.device
            self._publish("cells", views.cells_dict(d.cell_voltages(), views.floats_text))
            self._publish("temperatures", views.temps_dict(d.temperatures(), views.floats_text))
            self._publish("balancing", views.balancing_dict(d.balancing()))

    def poll(self, now_s: float) -> None:
        """Runs the commands that have arrived, COMMANDS_PER_POLL at most, oldest first;
        each answers on its result topic. Keeps the outbox's store up with what the broker
        has acknowledged. Paces the session's reading: a flood is read after a tick, not
        while the next one falls due."""
        self.session.reader.pace()
        self.outbox.sync()
        for _ in range(COMMANDS_PER_POLL):
            try:
                parsed = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._answer(parsed.name,
                         run_command(parsed, self.options.commands, self.device, now_s))

    def state(self, now_s: float) -> dict:
        """The retained state: the status every interface gives, plus power and which
        fault levels are active."""
        d = views.status_dict(self.device.status(now_s))
        v, i = d["pack_voltage_v"], d["current_a"]
        fw = self.device.fw
        levels = {level: fw.protection.any_active(level) for level in Level}
        levels[Level.FAULT] = levels[Level.FAULT] or bool(fw.event_faults)
        # Rounded as every figure of the status (30.88 V, not 30.880000000000003).
        return {**d, "power_w": None if v is None or i is None else views.number(v * i),
                "levels": levels}

    def close(self) -> None:
        """Stops the session (it delivers what it can in its time, then says offline) and
        deletes from the store what the broker has acknowledged, before the store closes:
        the next start sends none of it twice."""
        self.session.stop()
        self.outbox.sync(final=True)

    def counts(self) -> dict:
        """What went to the broker: connections made, messages published, ordinary ones
        dropped from a full queue; fault events still waiting (`kept`: in the store for the
        next start when there is one, else lost with the process) and lost for want of
        room (`kept_dropped`, reported on `events/lost`). What came in and was refused:
        messages dropped unread (`refused_messages`, by subscription and reason) and
        commands answered with an error (`refused_commands`, by code), and the read windows
        whose budget ran out (`throttled`: the rest waited in TCP, or the broker dropped it).
        `short_lived`: connections the broker ended within `STABLE_S` of accepting them and
        the next try made again at once (another client with the session's client id: a
        second emulator with this pack id?). `availability_from_others`: messages another
        client published on this pack's availability topic (another emulator with this
        pack id under another client id: a batch, another fleet's layout)."""
        s = self.session
        with self._refused_lock:
            refused_commands = dict(self.refused_commands)
        return {"connects": s.connects, "published": s.published, "dropped": s.dropped,
                "kept": self.outbox.waiting, "kept_dropped": self.outbox.lost,
                "refused_messages": s.inbound.counts(), "refused_commands": refused_commands,
                "throttled": s.reader.throttled, "short_lived": s.short_lived,
                "availability_from_others": self.availability_from_others}

    # --- plumbing ------------------------------------------------------------------------

    def _message(self, sub: str, body: dict) -> tuple[int, str, bytes]:
        """(seq, topic, payload): JSON with the pack id, a per-topic sequence number (a gap
        is a lost message) and the wall-clock time it was queued (for latency)."""
        self._seq[sub] += 1
        body = {**body, "seq": self._seq[sub], "pack_id": self.pack_id,
                "unix_time_s": round(time.time(), 6)}
        return self._seq[sub], f"{self.base}/{sub}", views.dumps(body).encode()

    def _publish(self, sub: str, body: dict, qos: int = 0, retain: bool = False) -> None:
        _, topic, payload = self._message(sub, body)
        self.session.publish(topic, payload, qos=qos, retain=retain)

    def _gap_report(self, gap: Gap) -> tuple[str, bytes]:
        """`events/lost`: how many events were lost for want of room, and their seqs."""
        body = {"dropped": gap.count, "first_seq": gap.first_seq, "last_seq": gap.last_seq,
                "pack_id": self.pack_id, "unix_time_s": round(time.time(), 6)}
        return f"{self.base}/events/lost", json.dumps(body).encode()

    def _command_arrived(self, topic: str, payload: bytes) -> None:
        """In the session's thread: the payload is parsed and gated here, and a command
        refused by then is answered at once; only the rest wait for the control loop."""
        if self.inbox.qsize() >= INBOX_SIZE:
            self.session.inbound.refuse(self._commands_filter, BACKLOG_FULL,
                                        f"{INBOX_SIZE} commands waiting for the loop")
            return
        parsed = parse_command(topic.rsplit("/", 1)[1], payload, self.options.commands)
        if parsed.refused is not None:
            self._answer(parsed.name, parsed.refused)
        else:
            self.inbox.put(parsed)

    def _answer(self, name: str, result: dict) -> None:
        if not result["ok"]:
            with self._refused_lock:
                self.refused_commands[result["error"]["code"]] += 1
        self.session.publish(f"{self.base}/cmd/{name}/result",
                             json.dumps(result, allow_nan=False), qos=1)

    def _availability_from_other(self, topic: str, payload: bytes) -> None:
        """From the session's thread. Warned once; an `offline` is answered with this
        pack's `online` again (it runs), an `online` is not (two live emulators answering
        each other's would never stop)."""
        self.availability_from_others += 1
        if self.availability_from_others == 1:
            log.warning("MQTT %s: another client published %r on %s while this pack runs: "
                        "another emulator or fleet with pack id %r on this broker? Their "
                        "messages mix on every topic of the pack. Give each its own "
                        "--pack-id / --pack-prefix (hosts splitting one fleet: the same "
                        "--packs with --shard K/N)", self.session.broker.describe(),
                        payload[:20], topic, self.pack_id)
        if payload == UNAVAILABLE:
            self.session.publish(*self._availability[1], qos=1, retain=True)

    def _ha_status(self, _topic: str, payload: bytes) -> None:
        if payload.strip() == HA_ONLINE.encode():
            self._publish_discovery()

    def _publish_discovery(self) -> None:
        ident = self.device.identity
        model = (f"{ident.chemistry} {self.device.fw.n_series}S{ident.n_parallel}P "
                 f"{ident.capacity_ah:g} Ah")
        prefix = self.session.broker.prefix
        # A session shared by a batch has a will of its own: the only word the broker
        # gives should the process die, so the entities are available only while it is
        # online too.
        will = self.session.will[0] if self.session.will else None
        shared = will if will not in (None, self._availability[0][0]) else None
        for topic, payload in discovery_messages(prefix, self.pack_id, f"BMS {self.pack_id}",
                                                 model, __version__, also_available=shared):
            self.session.publish(topic, payload, qos=1, retain=True)
