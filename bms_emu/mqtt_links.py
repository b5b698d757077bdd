"""The one place the MQTT options (`bms_emu.mqtt_args`) become a broker session, a protocol
link over MQTT and the emulator's MQTT bridge. Imported by a command only when it is
given --mqtt: aiomqtt and paho are a cost every other start need not pay."""

from __future__ import annotations

import secrets

from bms.host.device import Device
from bms.host.policy import parse_policy
from bms.links.mqtt.bridge import MqttBridge, MqttOptions, availability, pack_topic
from bms.links.mqtt.link import frame_rate_per_s, mqtt_link
from bms.links.mqtt.session import Broker, MqttSession, parse_broker
from bms.links.serial_link import LinkFactory
from bms.store.nvm import NvmStore
from bms.store.outbox import StoredOutbox


def broker(args) -> Broker:
    return parse_broker(args.mqtt, args.mqtt_ca, args.mqtt_cert, args.mqtt_key)


def device_session(args) -> MqttSession:
    """The emulator's session: its will says `offline` when it dies."""
    b = broker(args)
    will, online = availability(b.prefix, args.pack_id)
    return MqttSession(b, f"bms-emu-{args.pack_id}", will=will, online=online,
                       max_message_bytes=args.mqtt_max_bytes)


def device_bridge(args, session: MqttSession, device: Device,
                  store: NvmStore | None) -> MqttBridge:
    """`store`: the pack's, where fault events wait for the broker (None: in memory)."""
    options = MqttOptions(args.state_period, args.arrays_period, args.ha_discovery,
                          parse_policy(args.mqtt_commands,
                                       param_names=[p.name for p in device.params]),
                          args.mqtt_command_rate)
    return MqttBridge(session, device, args.pack_id, options,
                      StoredOutbox(store) if store is not None else None)


def device_link(args, session: MqttSession) -> LinkFactory:
    """The emulator's protocol link on the pack's proto topics, over its own `session`."""
    return mqtt_link(session, pack_topic(session.broker.prefix, args.pack_id),
                     device_side=True, owns_session=False,
                     rate_per_s=args.mqtt_frame_rate or frame_rate_per_s(args.tick))


def client_link(args) -> LinkFactory:
    """A client's protocol link to the pack `--pack-id` (its own session)."""
    b = broker(args)
    session = MqttSession(b, f"bms-emu-client-{secrets.token_hex(4)}")
    return mqtt_link(session, pack_topic(b.prefix, args.pack_id), device_side=False,
                     owns_session=True)
