"""The MQTT options of `run`, `serve`, `rig`, `query` and `monitor`, and the one place they
become a broker session, a protocol link over MQTT and the emulator's MQTT bridge."""

from __future__ import annotations

import re
import secrets
import socket
from pathlib import Path

from bms.data.validation import Problems
from bms.host.device import Device
from bms.host.policy import COMMANDS, parse_policy
from bms.links.mqtt.bridge import MqttBridge, MqttOptions, availability, pack_topic
from bms.links.mqtt.inbound import DEFAULT_MAX_MESSAGE_BYTES
from bms.links.mqtt.link import MAX_MESSAGE_BYTES, MIN_FRAME_RATE_PER_S, mqtt_link
from bms.links.mqtt.session import PASSWORD_ENV, MqttSession, parse_broker
from bms.links.serial_link import LinkFactory
from bms.store.nvm import NvmStore
from bms.store.outbox import StoredOutbox

PACK_ID = re.compile(r"[A-Za-z0-9_.-]+")


def add_mqtt_arguments(p, device: bool, protocol: bool = False) -> None:
    """`device`: the emulator's side (telemetry, commands, discovery); else a client's.
    `protocol`: the emulator also serves the protocol on the broker (`serve`)."""
    p.add_argument("--mqtt", metavar="URL",
                   help="broker: mqtt://[user[:password]@]host[:port][/prefix] or mqtts://...; "
                   f"the password may come from ${PASSWORD_ENV} instead (prefix default: bms)")
    p.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate for mqtts://")
    p.add_argument("--mqtt-cert", metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--mqtt-key", metavar="FILE", help="client key for mqtts://")
    p.add_argument("--pack-id", metavar="ID",
                   help="the pack's name in topics (<prefix>/<pack-id>/...); default: the host "
                   "name, with the serial port's name when there is one")
    if not device:
        return
    p.add_argument("--mqtt-commands", metavar="POLICY", default="",
                   help="what MQTT may change, on <prefix>/<pack-id>/cmd/<name> and through "
                   "the protocol on proto/in, each optionally limited: e.g. "
                   "'state=run|standby,clear-faults,balancing,config=limits.*'; from: "
                   f"{', '.join(COMMANDS)} (default: none; reading is always allowed)")
    p.add_argument("--mqtt-max-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   metavar="N", help="the largest MQTT message taken; a bigger one is dropped "
                   "unread and counted (default: %(default)s; give the broker a matching "
                   "message_size_limit)")
    p.add_argument("--mqtt-command-rate", type=float, default=MqttOptions.command_rate_per_s,
                   metavar="PER_S", help="messages a second taken on each cmd/<name> topic; "
                   "the rest are dropped unread and counted (default: %(default)s)")
    if protocol:
        p.add_argument("--mqtt-frame-rate", type=float, default=None, metavar="PER_S",
                       help="messages a second taken on proto/in (a rig sends one a tick, "
                       "plus requests); the rest are dropped unread and counted (default: "
                       f"twice the tick rate, {MIN_FRAME_RATE_PER_S:g} at least)")
    p.add_argument("--state-period", type=float, default=1.0, metavar="S",
                   help="seconds between retained state messages (also sent on every change)")
    p.add_argument("--arrays-period", type=float, default=1.0, metavar="S",
                   help="seconds between cells, temperatures and balancing messages")
    p.add_argument("--no-ha-discovery", dest="ha_discovery", action="store_false",
                   help="do not publish Home Assistant discovery")


def default_pack_id(serial: str | None) -> str:
    host = socket.gethostname().split(".")[0] or "bms"
    return f"{host}-{Path(serial).name}" if serial else host


def check_mqtt_arguments(args, problems: Problems, serial: str | None = None) -> None:
    """Fills in args.pack_id; adds a problem for each bad option."""
    if args.pack_id is None:
        args.pack_id = re.sub(r"[^A-Za-z0-9_.-]", "-", default_pack_id(serial))
    elif not PACK_ID.fullmatch(args.pack_id):
        problems.add("--pack-id", args.pack_id, "letters, digits, '_', '.' and '-' only")
    if args.mqtt is None:
        for flag in ("mqtt_ca", "mqtt_cert", "mqtt_key"):
            if getattr(args, flag):
                problems.add(f"--{flag.replace('_', '-')}", getattr(args, flag),
                             "needs --mqtt")
        return
    for flag in ("state_period", "arrays_period"):
        if hasattr(args, flag):
            problems.check_range(f"--{flag.replace('_', '-')}", getattr(args, flag), 0.01, 3600)
    if hasattr(args, "mqtt_max_bytes"):  # the longest protocol frame must get through
        problems.check_range("--mqtt-max-bytes", args.mqtt_max_bytes, MAX_MESSAGE_BYTES)
    for flag in ("mqtt_command_rate", "mqtt_frame_rate"):
        if getattr(args, flag, None) is not None:
            problems.check_range(f"--{flag.replace('_', '-')}", getattr(args, flag), 0.1,
                                 100_000)
    if hasattr(args, "mqtt_commands"):  # told with the rest; its patterns with the pack
        problems.take(parse_policy, args.mqtt_commands)


def broker(args):
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


def client_link(args) -> LinkFactory:
    """A client's protocol link to the pack `--pack-id` (its own session)."""
    b = broker(args)
    session = MqttSession(b, f"bms-emu-client-{secrets.token_hex(4)}")
    return mqtt_link(session, pack_topic(b.prefix, args.pack_id), device_side=False,
                     owns_session=True)


def check_one_link(args, problems: Problems) -> None:
    """A client talks to one emulator: over a serial port or over MQTT, not both."""
    if (args.serial is None) == (args.mqtt is None):
        problems.add("--serial/--mqtt", args.serial or args.mqtt,
                     "give one: --serial PORT or --mqtt URL (with --pack-id)")
    check_mqtt_arguments(args, problems)


def client_target(args) -> str | LinkFactory:
    """What a client's Endpoint opens: the serial port, or the pack's MQTT topics."""
    return args.serial if args.serial is not None else client_link(args)
