"""The MQTT options of `run`, `serve`, `rig`, `query` and `monitor`, and the one place they
become a broker session, a protocol link over MQTT and the emulator's MQTT bridge."""

from __future__ import annotations

import re
import secrets
import socket
from pathlib import Path

from bms.data.validation import Problems
from bms.host.device import Device
from bms.links.mqtt.bridge import MqttBridge, MqttOptions, availability, pack_topic
from bms.links.mqtt.commands import parse_policy
from bms.links.mqtt.link import mqtt_link
from bms.links.mqtt.session import PASSWORD_ENV, MqttSession, parse_broker
from bms.links.serial_link import LinkFactory

PACK_ID = re.compile(r"[A-Za-z0-9_.-]+")


def add_mqtt_arguments(p, device: bool) -> None:
    """`device`: the emulator's side (telemetry, commands, discovery); else a client's."""
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
                   help="commands accepted on <prefix>/<pack-id>/cmd/<name>, each optionally "
                   "limited: e.g. 'state=run|standby,clear-faults,balancing,config=limits.*' "
                   "(default: none)")
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


def broker(args):
    return parse_broker(args.mqtt, args.mqtt_ca, args.mqtt_cert, args.mqtt_key)


def device_session(args) -> MqttSession:
    """The emulator's session: its will says `offline` when it dies."""
    b = broker(args)
    will, online = availability(b.prefix, args.pack_id)
    return MqttSession(b, f"bms-emu-{args.pack_id}", will=will, online=online)


def device_bridge(args, session: MqttSession, device: Device) -> MqttBridge:
    options = MqttOptions(args.state_period, args.arrays_period, args.ha_discovery,
                          parse_policy(args.mqtt_commands,
                                       param_names=[p.name for p in device.params]))
    return MqttBridge(session, device, args.pack_id, options)


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
