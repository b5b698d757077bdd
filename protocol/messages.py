"""The message catalogue: one frozen dataclass per message type, its payload layout as a
construct Struct, and one registry that encodes and decodes them all.

Quantities are little-endian IEEE-754 (float32 unless the field says float64) in the SI
unit the field name carries; current is positive when charging. States, faults,
contactors and balancing modes travel as the numeric codes listed in the spec.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import struct
from dataclasses import dataclass
from enum import IntEnum

import construct as c
import numpy as np

from protocol.fields import (
    F32,
    F64,
    I16,
    MAX_CELLS,
    MAX_TEMP_SENSORS,
    U8,
    U16,
    U32,
    BitArray,
    Bool,
    FloatArray,
    LongText,
    OptionalFloatArray,
    Text,
    array_fields,
)
from protocol.flat import FlatReader, flat_reader
from protocol.framing import LATEST_REVISION, REVISION_1_0, REVISION_1_1, REVISIONS, Flags
from protocol.payload_errors import payload_problem
from protocol.revisions import (
    at_revision,
    check_definition,
    element_defaults,
    revision_of,
    since,
)


class ErrorCode(IntEnum):
    """Why a request was refused (the NACK's `error`); the codes are stable and stay within
    1..31. One code space with the decoder's FrameErrorKind: a name both have, one number."""

    UNKNOWN_TYPE = 1  # no such message type in the frame's revision
    BAD_PAYLOAD = 2  # the payload does not parse as its type
    UNSUPPORTED_VERSION = 3
    NOT_A_REQUEST = 4  # a response or event type sent with the REQUEST flag
    UNKNOWN_PARAM = 5  # no parameter has that id
    BAD_TYPE = 6  # a parameter value of the wrong type
    OUT_OF_RANGE = 7  # a value outside what the firmware and chemistry allow
    BAD_VALUE = 8  # a value that is malformed (a repeated id, an unknown command)
    NOT_IN_THIS_MODE = 9  # e.g. a measurement frame to an emulator running its own pack
    WRONG_SIZE = 10  # an array whose length is not the pack's cell or sensor count
    INTERNAL = 11  # the device could not build its answer (its own fault; it logs it)
    NOT_ENABLED = 12  # the link's command policy does not allow it (MQTT: --mqtt-commands)
    SAVE_FAILED = 13  # a configuration write the persistent store could not save: not in effect
    NOT_NOW = 14  # the firmware cannot do it in its present state; the detail says why


class Command(IntEnum):
    RUN = 1
    STANDBY = 2
    STORAGE = 3
    CLEAR_FAULTS = 4
    BALANCING_MODE = 5  # argument: a BalancingMode
    SERVICE_RESET = 6  # a service action: clears hardware faults and a lockout too
    RESET = 7  # restart the firmware as after a power cycle (contactors opened first)
    FACTORY_DEFAULTS = 8  # undo every configuration write: the defaults; not on the bus


# The revision that added each command after 1.0: an older revision's CommandRequest that
# names one is BAD_VALUE, as a device of that revision answers it.
COMMAND_SINCE = {Command.RESET: REVISION_1_1, Command.FACTORY_DEFAULTS: REVISION_1_1}


def commands_in(revision: int) -> tuple[Command, ...]:
    """The commands a CommandRequest of `revision` may name."""
    return tuple(cmd for cmd in Command if COMMAND_SINCE.get(cmd, REVISION_1_0) <= revision)


class BalancingMode(IntEnum):
    OFF = 0
    VOLTAGE = 1
    SOC = 2


class Mode(IntEnum):
    SIM = 0  # the emulator runs its own simulated pack
    HIL = 1  # the emulator steps on measurement frames from a rig


class Capability(IntEnum):
    """Bits of DeviceInfo.capabilities."""

    HIL = 0x01
    INJECT = 0x02
    CONFIG_SET = 0x04
    TELEMETRY = 0x08


class ValueKind(IntEnum):
    FLOAT = 0  # float64
    INT = 1  # int32
    BOOL = 2  # one byte, 0 or 1
    CHOICE = 3  # text: one of the parameter's choices


# Contactor bits, in DeviceStatus.contactors, Measurement.contactors, Actuation.contactors.
CONTACTOR_BITS = {"negative": 0x01, "precharge": 0x02, "positive": 0x04}
# Store bits, in Status.store: the persistent store, and whether its last save failed.
STORE_BITS = {"kept": 0x01, "failing": 0x02}
# Access bits, in a ParameterList entry's `access`.
ACCESS_BITS = {"read": 0x01, "write": 0x02}
# Open-end bits, in a ParameterList entry's `open_ends`: that bound itself is not allowed.
OPEN_END_BITS = {"min": 0x01, "max": 0x02}
# Rig request bits, in ActuationFrame.rig_requests (1.1): what the rig's front end is to do.
RIG_REQUEST_BITS = {"open_wire_test": 0x01}

# A configuration value: parameter id, ValueKind, then the value in that kind's layout.
ParamValue = c.Struct("param_id" / U16, "kind" / U8, "value" / c.Switch(
    c.this.kind, {int(ValueKind.FLOAT): F64, int(ValueKind.INT): c.Int32sl,
                  int(ValueKind.BOOL): Bool, int(ValueKind.CHOICE): Text},
    default=c.Error))


@dataclass(frozen=True)
class MessageType:
    type_id: int
    name: str
    cls: type
    definition: c.Struct  # the fields, each with the revision that added it (`since`)
    structs: dict[int, c.Struct]  # the layout in each revision that has the type
    flags: Flags  # the flag a frame of this type carries (REQUEST, RESPONSE or EVENT)
    doc: str
    since: int  # the revision that added the type

    @property
    def struct(self) -> c.Struct:
        """The newest layout."""
        return self.structs[LATEST_REVISION]


REGISTRY: dict[int, MessageType] = {}
BY_CLASS: dict[type, MessageType] = {}


def message(type_id: int, flags: Flags, *fields: c.Construct, added: int = REVISION_1_0):
    """Registers a dataclass as message type `type_id` with the payload `fields`; the type
    is in revision `added` and later. A field wrapped in `since(revision, ...)` is in that
    revision's layout and later ones: such fields go after the older ones, and the class
    gives them the default that an older frame's message takes (NaN for an unknown
    quantity, 0 for bits and counters)."""

    def register(cls: type) -> type:
        if type_id in REGISTRY:
            raise ValueError(f"message type 0x{type_id:02X} registered twice")
        definition = c.Struct(*fields)
        check_definition(cls.__name__, definition, added)
        lacking = {f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        for field in fields:
            if revision_of(field) > added and field.name in lacking:
                raise ValueError(f"{cls.__name__}.{field.name}: added in revision "
                                 f"{revision_of(field)} without a default for older frames")
        structs = {r: at_revision(definition, r) for r in REVISIONS if r >= added}
        mt = MessageType(type_id, cls.__name__, cls, definition, structs, flags,
                         (cls.__doc__ or "").strip(), added)
        REGISTRY[type_id] = BY_CLASS[cls] = mt
        return cls

    return register


def frozen(cls):
    """Messages are immutable; arrays make `==` meaningless, so compare with `same`."""
    return dataclass(frozen=True, slots=True, eq=False)(cls)


REQ, RSP, EVT = Flags.REQUEST, Flags.RESPONSE, Flags.EVENT
NO_PAYLOAD: tuple[c.Construct, ...] = ()
FAULT_ENTRY = c.Struct(
    "t_s" / F64, "code" / U8, "level" / U8, "action" / U8, "index" / I16, "value" / F32,
    "state" / U8, "soc_pct" / F32,
    since(REVISION_1_1, "boot" / U32, 0), since(REVISION_1_1, "utc_s" / F64, math.nan))
PARAM_ENTRY = c.Struct(
    "param_id" / U16, "kind" / U8, "name" / Text, "unit" / Text,
    "choices" / c.PrefixedArray(U8, Text),
    since(REVISION_1_1, "min" / F64, math.nan), since(REVISION_1_1, "max" / F64, math.nan),
    since(REVISION_1_1, "open_ends" / U8, 0), since(REVISION_1_1, "default" / F64, math.nan),
    since(REVISION_1_1, "access" / U8, 0), since(REVISION_1_1, "persisted" / Bool, False))
SUBSCRIPTION = c.Struct("msg_type" / U8, "period_ms" / U32)
COUNTER_ENTRY = c.Struct("name" / Text, "unit" / Text, "value" / F64)
CELL_HEALTH_ENTRY = c.Struct("soh_pct" / F32, "capacity_ah" / F32, "resistance_ohm" / F32,
                             "resistance_pct" / F32)
CONFIG_LOG_ENTRY = c.Struct("boot" / U32, "t_s" / F64, "utc_s" / F64, "who" / Text,
                            "param" / Text, "old" / Text, "new" / Text)


# --- requests and their responses -----------------------------------------------------------

@message(0x01, REQ, *NO_PAYLOAD)
@frozen
class GetInfo:
    """Asks for DeviceInfo."""


@message(0x02, RSP, "protocol_version" / U8, "firmware_version" / Text, "chemistry" / Text,
         "mode" / U8, "n_series" / U16, "n_parallel" / U16, "n_temp_sensors" / U16,
         "capacity_ah" / F32, "capabilities" / U32,
         since(REVISION_1_1, "pack_id" / Text), since(REVISION_1_1, "serial" / Text),
         since(REVISION_1_1, "firmware_build" / Text),
         since(REVISION_1_1, "config_schema_version" / U16),
         since(REVISION_1_1, "max_page_entries" / U8),
         since(REVISION_1_1, "protocol_revisions" / c.PrefixedArray(U8, U8)),
         since(REVISION_1_1, "message_types" / c.PrefixedArray(U8, U8)))
@frozen
class DeviceInfo:
    """What the device is: versions, chemistry, mode (Mode), cell and sensor counts, pack
    capacity and the Capability bits; from 1.1 also who it is (pack id, serial, build), the
    version of its configuration parameters' layout, the most entries a page holds, the
    header revisions it speaks and the message types it knows in this answer's revision."""

    protocol_version: int
    firmware_version: str
    chemistry: str
    mode: int
    n_series: int
    n_parallel: int
    n_temp_sensors: int
    capacity_ah: float
    capabilities: int
    pack_id: str = ""
    serial: str = ""
    firmware_build: str = ""
    config_schema_version: int = 0
    max_page_entries: int = 0
    protocol_revisions: tuple = ()
    message_types: tuple = ()


@message(0x03, REQ, *NO_PAYLOAD)
@frozen
class GetStatus:
    """Asks for Status."""


@message(0x04, RSP, "time_s" / F64, "state" / U8, "contactors" / U8, "fault_bitmap" / U32,
         "charge_limit_a" / F32, "discharge_limit_a" / F32, "pack_voltage_v" / F32,
         "current_a" / F32, "soc_pct" / F32, "soh_pct" / F32, "remaining_wh" / F32,
         "runtime_s" / F32, "cell_v_min" / F32, "cell_v_min_index" / U16, "cell_v_max" / F32,
         "cell_v_max_index" / U16, "temp_c_min" / F32, "temp_c_min_index" / U16,
         "temp_c_max" / F32, "temp_c_max_index" / U16, "balancing_count" / U16,
         since(REVISION_1_1, "store" / U8), since(REVISION_1_1, "save_failures" / U32),
         since(REVISION_1_1, "charge_voltage_limit_v" / F32),
         since(REVISION_1_1, "discharge_voltage_limit_v" / F32),
         since(REVISION_1_1, "warning_bitmap" / U32), since(REVISION_1_1, "alarm_bitmap" / U32),
         since(REVISION_1_1, "fault_level_bitmap" / U32),
         since(REVISION_1_1, "bus_voltage_v" / F32),
         since(REVISION_1_1, "contactor_feedback" / U8))
@frozen
class Status:
    """The pack at a glance: emulator time, state, contactor bits (as commanded), fault
    bitmap (bit = fault code, any level), published current limits (magnitudes), pack
    voltage and current, SoC, SoH, remaining energy and runtime at the present discharge
    power (NaN when not discharging), cell voltage and temperature extremes with their
    0-based indices (of the readable cells and sensors), how many cells are bleeding. From
    1.1 also: the persistent store (its bits and how many saves failed since start), the
    pack voltage limits an inverter keeps to (CVL / DVL), the faults active by level, the
    bus voltage and the contactors' auxiliary-contact feedback as last measured."""

    time_s: float
    state: int
    contactors: int
    fault_bitmap: int
    charge_limit_a: float
    discharge_limit_a: float
    pack_voltage_v: float
    current_a: float
    soc_pct: float
    soh_pct: float
    remaining_wh: float
    runtime_s: float
    cell_v_min: float
    cell_v_min_index: int
    cell_v_max: float
    cell_v_max_index: int
    temp_c_min: float
    temp_c_min_index: int
    temp_c_max: float
    temp_c_max_index: int
    balancing_count: int
    store: int = 0  # STORE_BITS
    save_failures: int = 0
    charge_voltage_limit_v: float = math.nan
    discharge_voltage_limit_v: float = math.nan
    warning_bitmap: int = 0
    alarm_bitmap: int = 0
    fault_level_bitmap: int = 0
    bus_voltage_v: float = math.nan
    contactor_feedback: int = 0  # CONTACTOR_BITS


@message(0x05, REQ, *NO_PAYLOAD)
@frozen
class GetCellVoltages:
    """Asks for CellVoltages."""


@message(0x06, RSP, "n_cells" / U16, "cell_voltage_v" / FloatArray("n_cells", MAX_CELLS))
@frozen
class CellVoltages:
    """The last measured cell voltages, V."""

    cell_voltage_v: np.ndarray


@message(0x07, REQ, *NO_PAYLOAD)
@frozen
class GetTemperatures:
    """Asks for Temperatures."""


@message(0x08, RSP, "n_sensors" / U16,
         "temperature_c" / FloatArray("n_sensors", MAX_TEMP_SENSORS))
@frozen
class Temperatures:
    """The last temperature readings, °C."""

    temperature_c: np.ndarray


@message(0x09, REQ, *NO_PAYLOAD)
@frozen
class GetCellSoc:
    """Asks for CellSoc."""


@message(0x0A, RSP, "n_cells" / U16, "soc_pct" / FloatArray("n_cells", MAX_CELLS))
@frozen
class CellSoc:
    """The estimated state of charge of each cell, %."""

    soc_pct: np.ndarray


@message(0x0B, REQ, *NO_PAYLOAD)
@frozen
class GetBalancing:
    """Asks for BalancingState."""


@message(0x0C, RSP, "mode" / U8, "n_cells" / U16, "mask" / BitArray("n_cells", MAX_CELLS))
@frozen
class BalancingState:
    """The balancing mode (BalancingMode) and which bleed resistors are on."""

    mode: int
    mask: np.ndarray


@message(0x0D, REQ, "start" / U16, "count" / U8)
@frozen
class GetFaultLog:
    """Asks for up to `count` fault log entries from entry `start` (0 = the oldest kept). A
    page holds at most `max_page_entries` of DeviceInfo (bms-emu: 32), and fewer when more
    would not fit one frame: ask on from `start` + the entries received, never from `start`
    + `count`. Entry `start + i` of a page is the log's entry number `dropped + start + i`
    since the log began, a number that stays with the entry as older ones are pushed out."""

    start: int
    count: int


@message(0x0E, RSP, "total" / U16, "dropped" / U32, "start" / U16,
         "entries" / c.PrefixedArray(U8, FAULT_ENTRY))
@frozen
class FaultLogPage:
    """A page of the fault log: `total` entries kept, `dropped` pushed out by newer ones.
    Each entry: emulator time, fault code, level (1 WARNING, 2 ALARM, 3 FAULT), action
    (1 raised, 0 cleared), offending cell or sensor (0-based, -1 none), its reading (NaN
    none), the state and pack SoC when it happened; from 1.1 also the boot it happened in
    and its UTC time (NaN until a SetTime in that boot made the wall clock known)."""

    total: int
    dropped: int
    start: int
    entries: tuple


@message(0x0F, REQ, "start" / U16, "count" / U8)
@frozen
class GetParameterList:
    """Asks for up to `count` parameter descriptions from position `start`. A page holds at
    most `max_page_entries` of DeviceInfo (bms-emu: 32), and fewer when more would not fit
    one frame: ask on from `start` + the entries received."""

    start: int
    count: int


@message(0x10, RSP, "total" / U16, "start" / U16,
         "entries" / c.PrefixedArray(U8, PARAM_ENTRY))
@frozen
class ParameterList:
    """Configuration parameters: id, ValueKind, dotted name (as in the TOML file), unit,
    and for CHOICE parameters the allowed texts; from 1.1 also what a settings form needs:
    the range (`min`, `max`, and which of them is itself excluded), the default, the access
    bits and whether a written value is kept across restarts."""

    total: int
    start: int
    entries: tuple


@message(0x11, REQ, "param_ids" / c.PrefixedArray(U16, U16))
@frozen
class GetConfig:
    """Asks for the values of the listed parameters."""

    param_ids: tuple


@message(0x12, RSP, "values" / c.PrefixedArray(U16, ParamValue))
@frozen
class ConfigValues:
    """Parameter values: id, ValueKind, value. The answer to GetConfig and SetConfig."""

    values: tuple


@message(0x13, REQ, "values" / c.PrefixedArray(U16, ParamValue))
@frozen
class SetConfig:
    """Sets parameters, all or none: any bad value refuses the whole request (NACK with
    UNKNOWN_PARAM, BAD_TYPE, OUT_OF_RANGE or BAD_VALUE and the reasons)."""

    values: tuple


@message(0x14, REQ, "command" / U8, "argument" / U8)
@frozen
class CommandRequest:
    """A Command; BALANCING_MODE takes a BalancingMode as argument, the others 0 (another
    argument is BAD_VALUE)."""

    command: int
    argument: int


@message(0x15, REQ, "subscriptions" / c.PrefixedArray(U8, SUBSCRIPTION))
@frozen
class Subscribe:
    """Telemetry: send each listed response type as an EVENT every `period_ms`. The types
    that may be listed are Status, CellVoltages, Temperatures, CellSoc and BalancingState;
    `period_ms` is at least 10, and a message goes out at the first emulator tick (0.1 s
    unless `serve --tick` says otherwise) at or after it falls due: the first one falls due
    when the Subscribe is taken, so it goes out at the next tick (after the Ack), then one
    every `period_ms` from then, without drift. A type listed twice is sent once, at the
    period of its last listing (every listing's `period_ms` must still be valid). From 1.1
    FaultEvent may be listed too: its `period_ms` is ignored (any value), each event goes out
    in the step it happens in. Replaces any earlier subscription; an empty list stops
    telemetry, and so does the link going down or the device restarting."""

    subscriptions: tuple


@message(0x16, REQ, "host_time_s" / F64)
@frozen
class TimeSync:
    """The host's clock; answered with TimeInfo."""

    host_time_s: float


@message(0x17, RSP, "host_time_s" / F64, "device_time_s" / F64)
@frozen
class TimeInfo:
    """The host time echoed and the emulator's own time when it answered: the host learns
    the offset and the round trip."""

    host_time_s: float
    device_time_s: float


@message(0x18, REQ, "spec" / Text)
@frozen
class Inject:
    """A fault injection into the simulated pack, as `--inject` writes it
    (`AT:KIND[:key=value,...]`, AT relative to now, cells and sensors numbered from 1; the
    kinds and their keys: see Injections). SIM mode only; answered with Ack once scheduled."""

    spec: str


@message(0x19, REQ, "utc_s" / F64, added=REVISION_1_1)
@frozen
class SetTime:
    """The wall clock: the host's UTC in seconds since 1970-01-01T00:00:00Z (Unix time, no
    leap seconds), 2000-01-01 to 2100-01-01; answered with Ack. The device keeps the offset
    to its own time: from then on every fault log entry of this boot (those recorded before
    the SetTime too) and every FaultEvent carries `utc_s`, its device time mapped through
    that offset. A later SetTime replaces the offset; a restart (Reset, power cycle) starts
    without one: send SetTime after each boot."""

    utc_s: float


@message(0x1A, REQ, "start" / U16, "count" / U8, added=REVISION_1_1)
@frozen
class GetCounters:
    """Asks for up to `count` lifetime counters from position `start`; paged as
    GetParameterList. The list is fixed for a firmware version: entry `start + i` is the
    same counter every time."""

    start: int
    count: int


@message(0x1B, RSP, "total" / U16, "start" / U16,
         "entries" / c.PrefixedArray(U8, COUNTER_ENTRY), added=REVISION_1_1)
@frozen
class CounterPage:
    """Lifetime counters, kept in the persistent store across restarts (without a store,
    since start): dotted name, unit (empty: a count) and value, NaN when none is known yet
    (an extreme before the first reading)."""

    total: int
    start: int
    entries: tuple


@message(0x1C, REQ, "start" / U16, "count" / U8, added=REVISION_1_1)
@frozen
class GetCellHealth:
    """Asks for the health of up to `count` cells from cell `start` (0-based); paged as
    GetParameterList."""

    start: int
    count: int


@message(0x1D, RSP, "total" / U16, "start" / U16,
         "entries" / c.PrefixedArray(U8, CELL_HEALTH_ENTRY), added=REVISION_1_1)
@frozen
class CellHealthPage:
    """Each cell's health as the estimator has learnt it (a parallel group is one cell):
    entry `i` is cell `start + i` (0-based), `total` the number of series cells."""

    total: int
    start: int
    entries: tuple


@message(0x1E, REQ, "start" / U32, "count" / U8, added=REVISION_1_1)
@frozen
class GetConfigLog:
    """Asks for up to `count` entries of the configuration-write log from entry `start`
    (0 = the oldest); paged as GetParameterList. The persistent store keeps every write, so
    entry n stays entry n; a device without a store has none."""

    start: int
    count: int


@message(0x1F, RSP, "total" / U32, "start" / U32,
         "entries" / c.PrefixedArray(U8, CONFIG_LOG_ENTRY), added=REVISION_1_1)
@frozen
class ConfigLogPage:
    """The configuration-write log: each parameter written, when (boot, device time, UTC),
    by whom, and its value before and after as JSON text."""

    total: int
    start: int
    entries: tuple


@message(0x7E, RSP, "request_type" / U8)
@frozen
class Ack:
    """A request with no data to return was done."""

    request_type: int


@message(0x7F, RSP, "request_type" / U8, "error" / U8, "detail" / LongText)
@frozen
class Nack:
    """A request was refused; nothing was changed. Sent with the ERROR flag."""

    request_type: int
    error: int
    detail: str


# --- hardware in the loop -------------------------------------------------------------------

@message(0x20, EVT, "rig_seq" / U32, "rig_time_s" / F64, "current_a" / F32,
         "bus_voltage_v" / F32, "contactors" / U8, "n_cells" / U16,
         "cell_voltage_v" / FloatArray("n_cells", MAX_CELLS), "n_sensors" / U16,
         "temperature_c" / FloatArray("n_sensors", MAX_TEMP_SENSORS), "n_balancing" / U16,
         "balancing" / BitArray("n_balancing", MAX_CELLS),
         since(REVISION_1_1, "pack_voltage_v" / F32), since(REVISION_1_1, "n_open_wire" / U16),
         since(REVISION_1_1, "open_wire_test_v" / OptionalFloatArray("n_open_wire", MAX_CELLS)))
@frozen
class MeasurementFrame:
    """Rig to emulator: one measurement. `contactors` is the auxiliary-contact feedback;
    `balancing` the bleed switches that were on while it was measured (n_balancing = 0:
    not reported, taken as commanded). From 1.1 also the pack's own voltage sensor (inside
    the contactors; NaN: none, the sum of the cells is then not checked against it) and the
    open-wire test's readings when the last ActuationFrame asked for the test
    (`n_open_wire` = 0: no test run)."""

    rig_seq: int
    rig_time_s: float
    current_a: float
    bus_voltage_v: float
    contactors: int
    cell_voltage_v: np.ndarray
    temperature_c: np.ndarray
    balancing: np.ndarray | None = None
    pack_voltage_v: float = math.nan
    open_wire_test_v: np.ndarray | None = None


@message(0x21, EVT, "rig_seq" / U32, "time_s" / F64, "state" / U8, "contactors" / U8,
         "fault_bitmap" / U32, "charge_limit_a" / F32, "discharge_limit_a" / F32,
         "soc_pct" / F32, "n_cells" / U16, "balance_mask" / BitArray("n_cells", MAX_CELLS),
         since(REVISION_1_1, "charge_voltage_limit_v" / F32),
         since(REVISION_1_1, "discharge_voltage_limit_v" / F32),
         since(REVISION_1_1, "warning_bitmap" / U32), since(REVISION_1_1, "alarm_bitmap" / U32),
         since(REVISION_1_1, "fault_level_bitmap" / U32),
         since(REVISION_1_1, "rig_requests" / U8))
@frozen
class ActuationFrame:
    """Emulator to rig, after each firmware step in HIL mode: the measurement answered
    (`rig_seq`), emulator time, state, contactor commands, faults, current limits, SoC and
    the bleed resistors to switch on. From 1.1 also the pack voltage limits (CVL / DVL), the
    faults by level (as Status has them) and what the rig's front end is to do during the
    coming interval (`rig_requests`: run the open-wire test and report it with the next
    MeasurementFrame)."""

    rig_seq: int
    time_s: float
    state: int
    contactors: int
    fault_bitmap: int
    charge_limit_a: float
    discharge_limit_a: float
    soc_pct: float
    balance_mask: np.ndarray
    charge_voltage_limit_v: float = math.nan
    discharge_voltage_limit_v: float = math.nan
    warning_bitmap: int = 0
    alarm_bitmap: int = 0
    fault_level_bitmap: int = 0
    rig_requests: int = 0  # RIG_REQUEST_BITS


@message(0x22, EVT, "log_index" / U32, "boot" / U32, "time_s" / F64, "utc_s" / F64,
         "code" / U8, "level" / U8, "action" / U8, "index" / I16, "value" / F32,
         added=REVISION_1_1)
@frozen
class FaultEvent:
    """Device to host, pushed to a link that subscribed to it (Subscribe, FaultEvent
    listed) in the step the fault was raised or cleared, one per fault log entry, in log
    order. `log_index` is the entry's number in the fault log since it began (FaultLogPage:
    `dropped + start + i`): a gap in it is an event missed (the link was down, or not
    subscribed), and GetFaultLog from `log_index - dropped` reads what was missed. The fault
    log is the record: events are not repeated nor kept for a link that is down."""

    log_index: int
    boot: int
    time_s: float
    utc_s: float
    code: int
    level: int
    action: int
    index: int
    value: float


# --- one mechanism for all of them ---------------------------------------------------------

class PayloadError(ValueError):
    """A payload that does not parse as its type."""


@dataclass(frozen=True)
class _Codec:
    names: tuple[str, ...]  # the message's fields this revision carries
    counts: tuple[tuple[str, str], ...]  # (count field, array field)
    nested: frozenset[str]  # fields construct returns as its own containers
    layout: c.Struct  # the payload in this revision
    flat: FlatReader | None  # the fast reader, for payloads of numbers and arrays only
    element_defaults: dict[str, dict[str, object]]  # list element fields this revision lacks

    @functools.cached_property
    def compiled(self) -> c.Compiled:
        """The layout compiled on first use: construct compiles by generating and compiling
        Python source, ~1 ms a layout, 80 ms for the catalogue at import, where a process
        uses a few layouts (start-up time of every `bms-emu`)."""
        return self.layout.compile()


def _codec(mt: MessageType, revision: int) -> _Codec:
    struct_ = mt.structs[revision]
    arrays = array_fields(struct_)
    carried = {sc.name for sc in struct_.subcons}
    names = tuple(f.name for f in dataclasses.fields(mt.cls) if f.name in carried)
    nested = {f.name for f in dataclasses.fields(mt.cls) if f.type == "tuple"} & carried
    return _Codec(names, tuple((a.count, name) for name, a in arrays.items()),
                  frozenset(nested), struct_, flat_reader(struct_),
                  element_defaults(mt.definition, revision))


# (type id, revision) -> its codec, for every revision that has the type.
CODECS: dict[tuple[int, int], _Codec] = {
    (t, r): _codec(mt, r) for t, mt in REGISTRY.items() for r in mt.structs}


def in_revision(msg_type: int, revision: int) -> bool:
    """Whether `revision` has message type `msg_type` (an older one may not know it)."""
    return (msg_type, revision) in CODECS


def encode_payload(msg: object, revision: int = REVISION_1_0) -> tuple[int, bytes]:
    """(message type, payload bytes) for a message object in `revision`'s layout (the fields
    added later are left out); ValueError naming the message when a field does not fit its
    layout (a count over its limit, a number out of range) or the revision lacks the type."""
    mt = BY_CLASS[type(msg)]
    codec = CODECS.get((mt.type_id, revision))
    if codec is None:
        raise ValueError(f"{mt.name} is protocol {REVISIONS[mt.since]} (revision {mt.since}) "
                         f"and later; it cannot be sent in revision {revision}")
    fields = {name: getattr(msg, name) for name in codec.names}
    for count, array in codec.counts:
        value = fields[array]
        fields[count] = 0 if value is None else len(value)
    try:
        return mt.type_id, codec.compiled.build(fields)
    except (c.ConstructError, struct.error, TypeError, KeyError) as exc:
        raise ValueError(f"{mt.name} cannot be encoded: {exc}") from None


def decode_payload(msg_type: int, payload: bytes, revision: int = REVISION_1_0) -> object:
    """The message object for a payload laid out in `revision` (the fields it lacks take
    their defaults); raises KeyError for a type the revision does not have and
    PayloadError for a payload that does not parse."""
    codec = CODECS[msg_type, revision]
    if codec.flat is not None:
        try:
            fields = codec.flat.parse(payload)
        except (ValueError, struct.error) as exc:
            raise PayloadError(str(exc)) from None
        return REGISTRY[msg_type].cls(**{name: fields[name] for name in codec.names})
    stream = io.BytesIO(payload)
    try:
        parsed = codec.compiled.parse_stream(stream)
    except (c.ConstructError, ValueError, struct.error):  # struct: a short field
        raise PayloadError(payload_problem(codec.compiled.defersubcon, payload)) from None
    if stream.tell() != len(payload):
        raise PayloadError(f"{len(payload) - stream.tell()} bytes left over after the fields")
    if codec.nested:
        values = {name: _plain(parsed[name]) for name in codec.names}
        for name, defaults in codec.element_defaults.items():
            values[name] = tuple(item | defaults for item in values[name])
        return REGISTRY[msg_type].cls(**values)
    return REGISTRY[msg_type].cls(**{name: parsed[name] for name in codec.names})


def _plain(value: object) -> object:
    """construct's ListContainer/Container as tuples/dicts, so messages compare and print
    as plain data."""
    if isinstance(value, c.ListContainer):
        return tuple(_plain(v) for v in value)
    if isinstance(value, c.Container):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("_")}
    return value


def same(a: object, b: object) -> bool:
    """Message equality, arrays compared element by element (NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return False
        elif not _same_value(x, y):
            return False
    return True


def _same_value(x: object, y: object) -> bool:
    """Plain values, recursing into the tuples and dicts of nested fields: a fault log
    entry's `value` is NaN when there is no reading, and NaN must equal NaN there too."""
    if isinstance(x, tuple) and isinstance(y, tuple):
        return len(x) == len(y) and all(map(_same_value, x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same_value(x[k], y[k]) for k in x)
    return x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)
