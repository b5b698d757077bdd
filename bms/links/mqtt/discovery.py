"""Home Assistant MQTT discovery for one pack: the retained config messages that make a pack
appear in Home Assistant as one device with its sensors, and the empty messages that take
it away again.

Why and how: docs/internals.md, bms/links/mqtt/discovery.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from bms import __version__
from bms.core.signals import State
from bms.data.faults import Level  # the keys of the state JSON's `levels`

DISCOVERY_PREFIX = "homeassistant"
HA_STATUS_TOPIC = f"{DISCOVERY_PREFIX}/status"
HA_ONLINE = "online"
PAYLOAD_AVAILABLE = "online"
PAYLOAD_NOT_AVAILABLE = "offline"
MANUFACTURER = "bms-emu"
ORIGIN = {"name": "bms-emu", "sw_version": __version__}

_ID_OK = re.compile(r"[A-Za-z0-9_-]+")
_ID_BAD_CHAR = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity: `field` is the path to its value in the state JSON."""

    component: str  # "sensor" or "binary_sensor"
    key: str  # object_id, and the last part of the unique_id
    name: str  # shown after the device name
    field: tuple[str, ...]
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    icon: str | None = None
    precision: int | None = None  # suggested_display_precision
    category: str | None = None  # entity_category
    options: tuple[str, ...] | None = None  # an enum sensor's states
    attributes: tuple[str, ...] = ()  # state JSON fields shown as entity attributes

    @property
    def template(self) -> str:
        return "{{ value_json." + ".".join(self.field) + " }}"


def _sensor(key: str, name: str, field: str, unit: str | None, device_class: str | None,
            state_class: str | None = "measurement", icon: str | None = None,
            precision: int | None = None, category: str | None = None) -> Entity:
    return Entity("sensor", key, name, (field,), unit, device_class, state_class, icon,
                  precision, category)


# key, name, state JSON field, unit, device_class, state_class, icon, precision, category
SENSORS: tuple[Entity, ...] = (
    _sensor("soc", "State of charge", "soc_pct", "%", "battery", precision=1),
    _sensor("pack_voltage", "Pack voltage", "pack_voltage_v", "V", "voltage", precision=2),
    _sensor("current", "Current", "current_a", "A", "current", precision=2),
    _sensor("power", "Power", "power_w", "W", "power", precision=0),
    _sensor("cell_voltage_min", "Min cell voltage", "cell_v_min", "V", "voltage",
            precision=3),
    _sensor("cell_voltage_max", "Max cell voltage", "cell_v_max", "V", "voltage",
            precision=3),
    _sensor("temperature_max", "Max temperature", "temp_c_max", "°C", "temperature",
            precision=1),
    _sensor("remaining_energy", "Remaining energy", "remaining_wh", "Wh", "energy_storage",
            precision=0),
    _sensor("runtime", "Runtime", "runtime_s", "s", "duration", icon="mdi:timer-outline",
            precision=0),
    _sensor("soh", "State of health", "soh_pct", "%", None, icon="mdi:battery-heart-variant",
            precision=1, category="diagnostic"),
    _sensor("charge_voltage_limit", "Charge voltage limit", "charge_voltage_limit_v", "V",
            "voltage", precision=2, category="diagnostic"),
    _sensor("discharge_voltage_limit", "Discharge voltage limit", "discharge_voltage_limit_v",
            "V", "voltage", precision=2, category="diagnostic"),
)

STATE_SENSOR = Entity("sensor", "state", "State", ("state",), device_class="enum",
                      icon="mdi:state-machine", options=tuple(s.value for s in State),
                      attributes=("contactors", "faults"))

LEVEL_SENSORS: tuple[Entity, ...] = tuple(
    Entity("binary_sensor", f"level_{level.lower()}", level.capitalize(), ("levels", level),
           device_class="problem")
    for level in Level
)

ENTITIES: tuple[Entity, ...] = (*SENSORS, STATE_SENSOR, *LEVEL_SENSORS)


def state_topic(prefix: str, pack_id: str) -> str:
    return f"{prefix}/{pack_id}/state"


def availability_topic(prefix: str, pack_id: str) -> str:
    return f"{prefix}/{pack_id}/availability"


def node_id(prefix: str, pack_id: str) -> str:
    """`<prefix>_<pack_id>` with only [a-zA-Z0-9_-]; a hash of the original appended when
    characters had to be replaced. ValueError for an empty pack id or MQTT wildcards."""
    for what, value in (("prefix", prefix), ("pack id", pack_id)):
        if not value or any(c in value for c in "+#\0"):
            raise ValueError(f"MQTT {what} {value!r}: must be non-empty, without + # or NUL")
    raw = f"{prefix}_{pack_id}"
    if _ID_OK.fullmatch(raw):
        return raw
    digest = hashlib.sha1(f"{prefix}/{pack_id}".encode()).hexdigest()[:8]
    return f"{_ID_BAD_CHAR.sub('_', raw)}_{digest}"


def config_topic(component: str, node: str, key: str,
                 discovery_prefix: str = DISCOVERY_PREFIX) -> str:
    return f"{discovery_prefix}/{component}/{node}/{key}/config"


def _availability(available: tuple[str, ...]) -> dict:
    """The availability keys: one topic, or several that must all say `online` (a pack in
    a batch: its own topic, and its process's will, the one the broker sends if it dies)."""
    if len(available) == 1:
        return {"availability_topic": available[0], "payload_available": PAYLOAD_AVAILABLE,
                "payload_not_available": PAYLOAD_NOT_AVAILABLE}
    return {"availability": [{"topic": topic, "payload_available": PAYLOAD_AVAILABLE,
                              "payload_not_available": PAYLOAD_NOT_AVAILABLE}
                             for topic in available],
            "availability_mode": "all"}


def _entity_config(e: Entity, node: str, state: str, available: tuple[str, ...],
                   device: dict) -> dict:
    """The discovery payload of one entity (the one renderer for every row)."""
    unique_id = f"{node}_{e.key}"
    config = {
        "name": e.name,
        "unique_id": unique_id,
        "default_entity_id": f"{e.component}.{unique_id.lower().replace('-', '_')}",
        "state_topic": state,
        "value_template": e.template,
        **_availability(available),
        "device": device,
        "origin": ORIGIN,
    }
    if e.component == "binary_sensor":
        # Jinja renders the JSON booleans as True / False; None (null) is "unknown".
        config["payload_on"] = "True"
        config["payload_off"] = "False"
    optional = {
        "unit_of_measurement": e.unit,
        "device_class": e.device_class,
        "state_class": e.state_class,
        "icon": e.icon,
        "suggested_display_precision": e.precision,
        "entity_category": e.category,
        "options": list(e.options) if e.options is not None else None,
    }
    config.update({k: v for k, v in optional.items() if v is not None})
    if e.attributes:
        config["json_attributes_topic"] = state
        config["json_attributes_template"] = (
            "{{ {" + ", ".join(f"'{a}': value_json.{a}" for a in e.attributes)
            + "} | tojson }}")
    return config


def discovery_messages(prefix: str, pack_id: str, device_name: str, model: str,
                       sw_version: str, *, discovery_prefix: str = DISCOVERY_PREFIX,
                       manufacturer: str = MANUFACTURER,
                       also_available: str | None = None) -> list[tuple[str, str]]:
    """(topic, JSON payload) for every entity of the pack, to publish retained.
    `also_available`: a second availability topic that must say `online` too (the will of
    a batch process the pack shares with others)."""
    node = node_id(prefix, pack_id)
    device = {"identifiers": [node], "name": device_name, "manufacturer": manufacturer,
              "model": model, "sw_version": sw_version}
    state = state_topic(prefix, pack_id)
    available = (availability_topic(prefix, pack_id),
                 *((also_available,) if also_available else ()))
    return [(config_topic(e.component, node, e.key, discovery_prefix),
             json.dumps(_entity_config(e, node, state, available, device),
                        ensure_ascii=False, separators=(",", ":")))
            for e in ENTITIES]


def removal_messages(prefix: str, pack_id: str, *_device: str,
                     discovery_prefix: str = DISCOVERY_PREFIX) -> list[tuple[str, str]]:
    """The same topics as `discovery_messages` with empty payloads, to publish retained:
    Home Assistant removes the entities (and the device, once it has none) and the broker
    forgets the retained configs. Further positional arguments (device name, model,
    version) are accepted and ignored so that a call can mirror `discovery_messages`."""
    node = node_id(prefix, pack_id)
    return [(config_topic(e.component, node, e.key, discovery_prefix), "")
            for e in ENTITIES]


def ha_came_online(payload: bytes | str) -> bool:
    """Whether a message on HA_STATUS_TOPIC says Home Assistant (re)started."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    return payload.strip() == HA_ONLINE
