"""What fills each SunSpec point, what is left "not implemented" and why, and which points a
client may write: the map's content as data, read by `bms.links.modbus.register_map` and
rendered into docs/modbus.md. Points are named `<model>.<point>` as in the definitions, and
enumerations and bitfields by their symbols there.

The pack is one string of one module: models 803 (bank), 804 (string) and 805 (module)
each describe the whole pack. Nothing in their points is particular to lithium; sodium-ion
cells fill them as they are. Cells are numbered from 1 where a point names a cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bms.core.signals import State
from bms.data.faults import FAULT_CODES
from bms.host.policy import REQUEST_NEEDS
from bms.links.modbus.pack_view import Nameplate, PackView
from bms.links.modbus.sunspec_events import event_bitfield
from bms.links.modbus.sunspec_layout import Point, points_of
from protocol import messages as pm

MODELS = (1, 802, 803, 804, 805)

Source = Callable[[PackView, int], object]  # the view and the point's repeat (a cell)


@dataclass(frozen=True)
class Fill:
    """`what` the points carry, for the reference; `value` in the point's units (None or
    NaN: not available now, sent as "not implemented")."""

    what: str
    value: Source
    points: tuple[str, ...]


def point(key: str) -> Point:
    """The point `<model>.<name>` of the definitions (KeyError for none)."""
    model, _, name = key.partition(".")
    found = [p for p in points_of(int(model)) if p.name == name]
    if not found:
        raise KeyError(f"model {model} has no point {name}")
    return found[0]


def const(value: object) -> Source:
    return lambda _v, _i: value


def _status(field: str) -> Source:
    return lambda v, _i: getattr(v.status, field)


def _cell_of(field: str) -> Source:
    """Status's 0-based cell index `<x>_index`, from 1, where `<x>` has a reading."""
    reading = field.removesuffix("_index")
    return lambda v, _i: (None if math.isnan(getattr(v.status, reading))
                          else getattr(v.status, field) + 1)


def _symbol(key: str, name_of: Callable[[PackView], str]) -> Source:
    """An enumeration: the value of the symbol `name_of` names."""
    symbols = point(key).symbols
    return lambda v, _i: symbols[name_of(v)]


def _bits(key: str, names_of: Callable[[PackView], list[str]]) -> Source:
    """A bitfield: the bits of the symbols `names_of` names."""
    symbols = point(key).symbols
    return lambda v, _i: sum(1 << symbols[name] for name in names_of(v))


def _events(key: str) -> Source:
    symbols = point(key).symbols
    return lambda v, _i: event_bitfield(v.level_bitmaps, symbols)


MAIN = pm.CONTACTOR_BITS["negative"] | pm.CONTACTOR_BITS["positive"]
POSITIVE_PATH = pm.CONTACTOR_BITS["precharge"] | pm.CONTACTOR_BITS["positive"]
CONTACTOR_ORDER = ("negative", "precharge", "positive")  # CONTACTOR_0, _1, _2


def _connected(v: PackView) -> bool:
    """Both main contactors commanded closed (Status.contactors)."""
    return v.status.contactors & MAIN == MAIN


def _connecting(v: PackView) -> bool:
    """A contactor of the positive path commanded closed: precharging or connected."""
    return bool(v.status.contactors & POSITIVE_PATH)


def _charge_status(v: PackView) -> str:
    """OFF with the contactors open; else by the current against the rest current."""
    current = v.status.current_a
    if not _connected(v) or math.isnan(current):
        return "OFF"
    if current > v.rest_current_a:
        return "CHARGING"
    if current < -v.rest_current_a:
        return "DISCHARGING"
    return "HOLDING"


def _string_status(v: PackView) -> list[str]:
    enabled = v.state not in (State.FAULT, State.SERVICE)
    return ["STRING_ENABLED"] * enabled + ["CONTACTOR_STATUS"] * _connected(v)


def _contactors(v: PackView) -> list[str]:
    return [f"CONTACTOR_{k}" for k, name in enumerate(CONTACTOR_ORDER)
            if v.status.contactors & pm.CONTACTOR_BITS[name]]


def _connection_failure(v: PackView) -> str:
    """The first FAULT-level fault with a reason of its own, else STRING_FAULT for any
    other FAULT-level fault, else NO_FAILURE."""
    fault_bits = v.level_bitmaps[2]
    for fault, reason in CONNECTION_FAILURE.items():
        if fault_bits >> FAULT_CODES[fault] & 1:
            return reason
    return "STRING_FAULT" if fault_bits else "NO_FAILURE"


def _cell(values_of: Callable[[PackView], object]) -> Source:
    """A per-cell value of the cell group's repeat (None beyond the readings)."""
    def value(v: PackView, i: int) -> object:
        values = values_of(v)
        return values[i].item() if i < len(values) else None
    return value


CONTACTORS_TEXT = ("contactors as commanded: CONTACTOR_0 negative, CONTACTOR_1 precharge, "
                   "CONTACTOR_2 positive")
STRING_TEXT = ("STRING_ENABLED unless in FAULT or SERVICE; CONTACTOR_STATUS with the main "
               "contactors closed")
EVENTS_TEXT = "warnings and alarms, by the alarm table"
ONE = ("802.CellVMaxStr", "802.CellVMaxMod", "802.CellVMinStr", "802.CellVMinMod",
       "803.NStr", "803.ModTmpMaxStr", "803.ModTmpMaxMod", "803.ModTmpMinStr",
       "803.ModTmpMinMod", "803.StrVMaxStr", "803.StrVMinStr", "803.StrAMaxStr",
       "803.StrAMinStr", "803.StrNMod", "803.StrCellVMaxMod", "803.StrCellVMinMod",
       "803.StrModTmpMaxMod", "803.StrModTmpMinMod", "804.Idx", "804.NMod", "804.CellVMaxMod",
       "804.CellVMinMod", "804.ModTmpMaxMod", "804.ModTmpMinMod", "805.StrIdx", "805.ModIdx")

FILLS: tuple[Fill, ...] = (
    Fill("`bms-emu`", const("bms-emu"), ("1.Mn",)),
    Fill("chemistry and cells, series x parallel (`na-nfm 16s1p`)",
         lambda v, _i: f"{v.plate.chemistry} {v.plate.n_series}s{v.plate.n_parallel}p",
         ("1.Md",)),
    Fill("mode: `SIM` (its own simulated pack) or `HIL` (a rig's measurements)",
         lambda v, _i: v.plate.mode, ("1.Opt",)),
    Fill("the emulator's version", lambda v, _i: v.plate.version, ("1.Vr",)),
    Fill("the pack id (`--pack-id`)", lambda v, _i: v.plate.pack_id, ("1.SN", "805.SN")),
    Fill("the Modbus unit id (`--modbus-unit`)", lambda v, _i: v.plate.unit_id, ("1.DA",)),
    Fill("pack capacity (cell capacity x parallel cells), Ah",
         lambda v, _i: v.plate.capacity_ah, ("802.AHRtg",)),
    Fill("capacity x nominal pack voltage, Wh",
         lambda v, _i: v.plate.capacity_ah * v.plate.nominal_pack_v, ("802.WHRtg",)),
    Fill("the chemistry's highest charge C-rate at the nominal voltage, W",
         lambda v, _i: v.plate.max_charge_w, ("802.WChaRteMax",)),
    Fill("the chemistry's highest discharge C-rate at the nominal voltage, W",
         lambda v, _i: v.plate.max_discharge_w, ("802.WDisChaRteMax",)),
    Fill("the chemistry's self-discharge, % a day",
         lambda v, _i: v.plate.self_discharge_pct_per_day, ("802.DisChaRte",)),
    Fill("100: SoC runs over the rated range", const(100), ("802.SoCMax",)),
    Fill("0", const(0), ("802.SoCMin",)),
    Fill("SoC, % (`Status.soc_pct`)", _status("soc_pct"),
         ("802.SoC", "803.StrSoC", "804.SoC", "804.ModSoC", "805.SoC")),
    Fill("100 - SoC, %", lambda v, _i: 100.0 - v.status.soc_pct,
         ("802.DoD", "804.DoD", "805.DoD")),
    Fill("SoH, % (`Status.soh_pct`)", _status("soh_pct"),
         ("802.SoH", "803.StrSoH", "804.SoH", "804.ModSoH", "805.SoH")),
    Fill("equivalent full cycles (charge taken out over the capacity), whole",
         lambda v, _i: math.floor(v.cycles), ("802.NCyc", "804.NCyc", "805.NCyc")),
    Fill("OFF with the main contactors open; else CHARGING or DISCHARGING beyond the rest "
         "current (`rest_current_a`), HOLDING within it",
         _symbol("802.ChaSt", _charge_status), ("802.ChaSt",)),
    Fill("REMOTE when `--modbus-commands` enables `state`, else LOCAL",
         _symbol("802.LocRemCtl", lambda v: "REMOTE" if v.plate.remote_control else "LOCAL"),
         ("802.LocRemCtl",)),
    Fill("seconds since the emulator started, modulo 65535", lambda v, _i: v.seconds % 0xFFFF,
         ("802.Hb",)),
    Fill("0 (write 1: clear faults)", const(0), ("802.AlmRst",)),
    Fill("OTHER: SunSpec lists no sodium-ion type", _symbol("802.Typ", lambda v: "OTHER"),
         ("802.Typ",)),
    Fill("the firmware's state, by the state table",
         _symbol("802.State", lambda v: BANK_STATE[v.state]), ("802.State",)),
    Fill("the firmware's state code (`Status.state`, docs/protocol.md)", _status("state"),
         ("802.StateVnd",)),
    Fill(EVENTS_TEXT, _events("802.Evt1"), ("802.Evt1",)),
    Fill(EVENTS_TEXT, _events("803.StrEvt1"), ("803.StrEvt1",)),
    Fill(EVENTS_TEXT, _events("804.Evt1"), ("804.Evt1",)),
    Fill("0 (reserved by SunSpec)", const(0), ("802.Evt2", "803.StrEvt2", "804.Evt2")),
    Fill("every active fault, any level (bit = fault code, `Status.fault_bitmap`)",
         _status("fault_bitmap"), ("802.EvtVnd1", "803.StrEvtVnd1", "804.EvtVnd1")),
    Fill("the faults at FAULT level (contactors open, latched; bit = fault code)",
         lambda v, _i: v.level_bitmaps[2], ("802.EvtVnd2", "803.StrEvtVnd2", "804.EvtVnd2")),
    Fill("pack voltage, V: the sum of the cells (`Status.pack_voltage_v`)",
         _status("pack_voltage_v"),
         ("802.V", "803.StrVMax", "803.StrVMin", "803.StrVAvg", "804.V", "805.V")),
    Fill("the charge voltage limit (CVL) the firmware publishes, V",
         _status("charge_voltage_limit_v"), ("802.VMax",)),
    Fill("the discharge voltage limit (DVL) the firmware publishes, V",
         _status("discharge_voltage_limit_v"), ("802.VMin",)),
    Fill("highest cell voltage, V", _status("cell_v_max"),
         ("802.CellVMax", "803.StrCellVMax", "804.CellVMax", "804.ModCellVMax",
          "805.CellVMax")),
    Fill("lowest cell voltage, V", _status("cell_v_min"),
         ("802.CellVMin", "803.StrCellVMin", "804.CellVMin", "804.ModCellVMin",
          "805.CellVMin")),
    Fill("mean cell voltage, V", lambda v, _i: v.cell_v_mean,
         ("802.CellVAvg", "803.StrCellVAvg", "804.CellVAvg", "804.ModCellVAvg",
          "805.CellVAvg")),
    Fill("the cell with the highest voltage, from 1", _cell_of("cell_v_max_index"),
         ("804.ModCellVMaxCell", "805.CellVMaxCell")),
    Fill("the cell with the lowest voltage, from 1", _cell_of("cell_v_min_index"),
         ("804.ModCellVMinCell", "805.CellVMinCell")),
    Fill("1: the pack is one string of one module", const(1), ONE),
    Fill("pack current, A; positive = charging (`Status.current_a`)", _status("current_a"),
         ("802.A", "803.StrAMax", "803.StrAMin", "803.StrAAvg", "803.StrA", "804.A")),
    Fill("the charge current limit the firmware publishes (CCL), A",
         _status("charge_limit_a"), ("802.AChaMax",)),
    Fill("the discharge current limit the firmware publishes (DCL), A",
         _status("discharge_limit_a"), ("802.ADisChaMax",)),
    Fill("pack voltage x current, W; positive = charging",
         lambda v, _i: v.status.pack_voltage_v * v.status.current_a, ("802.W",)),
    Fill("NO REQUEST: the firmware makes none",
         _symbol("802.ReqInvState", lambda v: "NO REQUEST"), ("802.ReqInvState",)),
    Fill("CONNECT while the firmware has the precharge or positive contactor closed, else "
         "DISCONNECT; a write asks for RUN or STANDBY",
         _symbol("802.SetOp", lambda v: "CONNECT" if _connecting(v) else "DISCONNECT"),
         ("802.SetOp",)),
    Fill("CONNECT_STRING while the firmware has the precharge or positive contactor closed, "
         "else DISCONNECT_STRING; a write asks for RUN or STANDBY",
         _symbol("804.SetCon",
                 lambda v: "CONNECT_STRING" if _connecting(v) else "DISCONNECT_STRING"),
         ("803.StrSetCon", "804.SetCon")),
    Fill("1 when the main contactors are closed, else 0", lambda v, _i: int(_connected(v)),
         ("803.NStrCon",)),
    Fill("highest temperature reading, °C", _status("temp_c_max"),
         ("803.ModTmpMax", "803.StrModTmpMax", "804.ModTmpMax", "804.ModCellTmpMax",
          "805.CellTmpMax")),
    Fill("lowest temperature reading, °C", _status("temp_c_min"),
         ("803.ModTmpMin", "803.StrModTmpMin", "804.ModTmpMin", "804.ModCellTmpMin",
          "805.CellTmpMin")),
    Fill("mean of the temperature readings, °C", lambda v, _i: v.temp_c_mean,
         ("803.ModTmpAvg", "803.StrModTmpAvg", "804.ModTmpAvg", "804.ModCellTmpAvg",
          "805.CellTmpAvg")),
    Fill("cells bleeding (`Status.balancing_count`)", _status("balancing_count"),
         ("803.NCellBal", "804.NCellBal", "805.NCellBal")),
    Fill(STRING_TEXT, _bits("803.StrSt", _string_status), ("803.StrSt",)),
    Fill(STRING_TEXT, _bits("804.St", _string_status), ("804.St",)),
    Fill("by the connection failure table", _symbol("804.ConFail", _connection_failure),
         ("803.StrConFail", "804.ConFail")),
    Fill("FAULT in FAULT, MAINTENANCE in SERVICE, else NONE",
         _symbol("803.StrDisRsn", lambda v: DISABLED_REASON.get(v.state, "NONE")),
         ("803.StrDisRsn",)),
    Fill(CONTACTORS_TEXT, _bits("803.StrConSt", _contactors), ("803.StrConSt",)),
    Fill(CONTACTORS_TEXT, _bits("804.ConSt", _contactors), ("804.ConSt",)),
    Fill("cells in series", lambda v, _i: v.plate.n_series, ("804.ModNCell", "805.NCell")),
    Fill("the cell's voltage, V (a group per cell, cell 1 first)", _cell(lambda v: v.cell_v),
         ("805.CellV",)),
    Fill("the reading of the sensor over the cell, °C (`--cells-per-temp-sensor` cells to a "
         "sensor)", lambda v, i: v.temp_of_cell(i), ("805.CellTmp",)),
    Fill("CELL_IS_BALANCING while the cell's bleed resistor is on",
         _cell(lambda v: v.balancing.astype(int)), ("805.CellSt",)),
)

# Points left at SunSpec's "not implemented" value, and why.
NO_RESERVE = "the firmware keeps no SoC reserve: its limits taper at the ends of the range"
BY_SENSOR = "temperatures are read by sensor, each over a group of cells, not by cell"
UNIMPLEMENTED: dict[str, str] = {
    "802.SocRsvMax": NO_RESERVE,
    "802.SoCRsvMin": NO_RESERVE,
    "802.CtrlHb": "no controller heartbeat is watched over Modbus",
    "802.WarrDt": "an emulator has no warranty",
    "802.ReqW": "the firmware asks for no power",
    "802.SetInvState": "the firmware takes no account of the inverter's state",
    "803.StrSetEna": "the one string is the pack: SetOp and StrSetCon connect it",
    "804.SetEna": "the one string is the pack: SetOp and SetCon connect it",
    "804.ModCellTmpMaxCell": BY_SENSOR,
    "804.ModCellTmpMinCell": BY_SENSOR,
    "805.CellTmpMaxCell": BY_SENSOR,
    "805.CellTmpMinCell": BY_SENSOR,
}

# What a client may write: the values each writable point takes (by symbol, or the number
# where the point has no symbols) and the protocol command each asks for, held to the
# link's command policy as MQTT's commands are.
WRITES: dict[str, dict[str | int, pm.Command]] = {
    "802.SetOp": {"CONNECT": pm.Command.RUN, "DISCONNECT": pm.Command.STANDBY},
    "802.AlmRst": {1: pm.Command.CLEAR_FAULTS},
    "803.StrSetCon": {"CONNECT_STRING": pm.Command.RUN,
                      "DISCONNECT_STRING": pm.Command.STANDBY},
    "804.SetCon": {"CONNECT_STRING": pm.Command.RUN, "DISCONNECT_STRING": pm.Command.STANDBY},
}
# The command policy's commands those writes need (`--modbus-commands` takes only these).
WRITABLE_COMMANDS: tuple[str, ...] = tuple(dict.fromkeys(
    REQUEST_NEEDS[command][0] for values in WRITES.values() for command in values.values()))

# SunSpec's battery bank State for each firmware state; StateVnd carries the state itself.
BANK_STATE: dict[State, str] = {
    State.INIT: "INITIALIZING",
    State.STANDBY: "DISCONNECTED",  # contactors open, ready to connect
    State.PRECHARGE: "INITIALIZING",  # connecting
    State.RUN: "CONNECTED",
    State.FAULT: "FAULT",
    State.STORAGE: "DISCONNECTED",
    State.SERVICE: "DISCONNECTED",
    State.RECOVERY: "SOC PROTECTION",  # connected for a recovery charge only
}
DISABLED_REASON: dict[State, str] = {State.FAULT: "FAULT", State.SERVICE: "MAINTENANCE"}

# The FAULT-level faults that are a connection failure of their own (ConFail); any other
# FAULT-level fault is STRING_FAULT.
CONNECTION_FAILURE: dict[str, str] = {
    "PRECHARGE_FAILED": "PRECHARGE_FAILURE",
    "CONTACTOR_WELDED": "CONTACTOR_FAILURE",
}

# Each scale factor by the largest value its points carry (the exponent is the finest that
# holds twice that: `bms.links.modbus.register_map`).
FULL_SCALE: dict[str, Callable[[Nameplate], float]] = {
    "AHRtg_SF": lambda p: p.capacity_ah,
    "WHRtg_SF": lambda p: p.capacity_ah * p.nominal_pack_v,
    "WChaDisChaMax_SF": lambda p: max(p.max_charge_w, p.max_discharge_w),
    "DisChaRte_SF": lambda p: p.self_discharge_pct_per_day,
    "SoC_SF": lambda p: 100.0,
    "DoD_SF": lambda p: 100.0,
    "SoH_SF": lambda p: 100.0,
    "V_SF": lambda p: p.n_series * p.max_cell_v,
    "CellV_SF": lambda p: p.max_cell_v,
    "A_SF": lambda p: p.max_current_a,
    "AMax_SF": lambda p: p.max_current_a,
    "W_SF": lambda p: p.n_series * p.max_cell_v * p.max_current_a,
    "ModTmp_SF": lambda p: p.max_temp_c,
    "Tmp_SF": lambda p: p.max_temp_c,
}


def repeats(plate: Nameplate) -> dict[str, int]:
    """How often each repeating group is there: one string, one module, a group per cell."""
    return {"803.string": 1, "804.lithium_ion_string_module": 1,
            "805.lithium-ion-module-cell": plate.n_series}
