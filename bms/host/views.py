"""Protocol messages as plain dicts with names: what `query --json` prints and what
`monitor` renders.

States, faults, levels and contactors appear by name (the names of `bms.core.signals`,
`bms.data.faults` and `protocol.messages`), SoC in percent as `soc_pct`, current positive when
charging, cells and sensors numbered from 1 as people count them (`cell`, `sensor`; the
payloads' 0-based `index` stays inside the protocol), arrays as lists (position 0: cell or
sensor 1), and NaN or an infinite value ("no reading", "not discharging") as None so that
the output is strict JSON.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from bms.data.faults import FAULT_NAMES, Level, names_in, subject_fields, subject_text
from bms.host.frames import BALANCING_MODES, state_name
from protocol import messages as pm
from protocol.framing import LATEST_REVISION, REVISION_1_1

VALUE_KIND_NAMES = {int(k): k.name.lower() for k in pm.ValueKind}
MESSAGE_NAMES = {t: mt.name for t, mt in pm.REGISTRY.items()}


SIGNIFICANT_DIGITS = 7  # what a float32 on the wire carries; 25.200000000000003 reads 25.2


def number(x: float | None) -> float | None:
    """A float for strict JSON: None for no number (None, NaN, infinite: an unreadable
    reading), rounded to what the readings carry."""
    if x is None:
        return None
    x = float(x)
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(x) else None


@functools.lru_cache(maxsize=1 << 16)
def _num_remembered(x: float) -> float | None:
    return number(x)


def _floats(a: np.ndarray) -> list[float | None]:
    """Each as `number` gives it, remembered: readings are quantised (an ADC's steps), so the
    few thousand values a pack reads are formatted once each, not 416 times a message (a
    fifth of a fleet's CPU). Zero goes round the memory: it would give -0.0 for 0.0."""
    return [_num_remembered(x) if x else number(x)
            for x in np.asarray(a, dtype=np.float64).tolist()]


class JsonText(str):
    """A value already written as JSON, as json.dumps writes it: `dumps` puts it in as is."""


# The JSON text of `number(x)` for each finite, non-zero x met (zero's sign would be lost in a
# dict, and NaN is never found again); emptied when it is full.
_TEXTS: dict[float, str] = {}
TEXTS_KEPT = 1 << 16


def _text(x: float) -> str:
    text = json.dumps(number(x))
    if x and math.isfinite(x):
        if len(_TEXTS) >= TEXTS_KEPT:
            _TEXTS.clear()
        _TEXTS[x] = text
    return text


def floats_text(a: np.ndarray) -> JsonText:
    """`_floats(a)` as JSON text, joined from each value's text, remembered as `_floats`
    remembers the values (looked up by `map`, in C): json.dumps wrote every float of a
    message anew, most of what a pack's 416 cells cost to publish."""
    values = np.asarray(a, dtype=np.float64).tolist()
    texts = list(map(_TEXTS.get, values))
    if None in texts:
        texts = [t if t is not None else _text(x) for t, x in zip(texts, values, strict=True)]
    return JsonText("[" + ", ".join(texts) + "]")


_STRICT = json.JSONEncoder(allow_nan=False)  # json.dumps(x, allow_nan=False) makes one a call


def dumps(body: dict[str, object]) -> str:
    """`json.dumps(body, allow_nan=False)`, byte for byte, but with its JsonText values put in
    as they are (string keys only)."""
    encode = _STRICT.encode
    if JsonText not in map(type, body.values()):
        return encode(body)
    return "{" + ", ".join(f"{encode(k)}: {v if type(v) is JsonText else encode(v)}"
                           for k, v in body.items()) + "}"


def _code_name(names: dict[int, str] | tuple[str, ...], code: int) -> str:
    """The name for a code; an unknown code (a newer device) as `code N`, not a crash."""
    try:
        return names[code]
    except (KeyError, IndexError):
        return f"code {code}"


def fault_name(code: int) -> str:
    return _code_name(FAULT_NAMES, code)


def level_name(code: int) -> str:
    try:
        return Level.from_code(code).value
    except ValueError:
        return f"level {code}"


def closed_contactors(bits: int) -> list[str]:
    """The names of the closed contactors, in CONTACTOR_BITS order."""
    return [name for name, bit in pm.CONTACTOR_BITS.items() if bits & bit]


def main_contactors(bits: int) -> str:
    """"closed" when both main contactors are, as `run --json` reports it; else "open"."""
    b = pm.CONTACTOR_BITS
    return "closed" if bits & b["negative"] and bits & b["positive"] else "open"


# What a 1.0 Status does not carry: None (unknown) in the dict of one, not a default.
STATUS_KEYS_1_1 = ("store", "save_failures", "charge_voltage_limit_v",
                   "discharge_voltage_limit_v", "faults_by_level", "bus_voltage_v",
                   "contactor_feedback")


def status_dict(s: pm.Status, revision: int = LATEST_REVISION) -> dict:
    """`revision`: the protocol revision the Status came in."""
    d = {
        "time_s": s.time_s,
        "state": state_name(s.state),
        "contactors": main_contactors(s.contactors),
        "contactors_closed": closed_contactors(s.contactors),
        "faults": names_in(s.fault_bitmap),
        "fault_bitmap": s.fault_bitmap,
        "charge_limit_a": number(s.charge_limit_a),
        "discharge_limit_a": number(s.discharge_limit_a),
        "pack_voltage_v": number(s.pack_voltage_v),
        "current_a": number(s.current_a),
        "soc_pct": number(s.soc_pct),
        "soh_pct": number(s.soh_pct),
        "remaining_wh": number(s.remaining_wh),
        "runtime_s": number(s.runtime_s),
        "cell_v_min": number(s.cell_v_min),
        "cell_v_min_cell": _number_of(s.cell_v_min_index, s.cell_v_min),
        "cell_v_max": number(s.cell_v_max),
        "cell_v_max_cell": _number_of(s.cell_v_max_index, s.cell_v_max),
        "temp_c_min": number(s.temp_c_min),
        "temp_c_min_sensor": _number_of(s.temp_c_min_index, s.temp_c_min),
        "temp_c_max": number(s.temp_c_max),
        "temp_c_max_sensor": _number_of(s.temp_c_max_index, s.temp_c_max),
        "balancing_count": s.balancing_count,
        "store": store_state(s.store),
        "save_failures": s.save_failures,
        "charge_voltage_limit_v": number(s.charge_voltage_limit_v),
        "discharge_voltage_limit_v": number(s.discharge_voltage_limit_v),
        "faults_by_level": {level.value: names_in(bits) for level, bits in zip(
            Level, (s.warning_bitmap, s.alarm_bitmap, s.fault_level_bitmap), strict=True)},
        "bus_voltage_v": number(s.bus_voltage_v),
        "contactor_feedback": closed_contactors(s.contactor_feedback),
    }
    if revision < REVISION_1_1:
        d.update(dict.fromkeys(STATUS_KEYS_1_1))
    return d


def _number_of(index: int, value: float) -> int | None:
    """The cell or sensor of an extreme, numbered from 1; None when there is no reading
    (the payload's index is then 0 and means nothing)."""
    return None if number(value) is None else index + 1


def store_state(bits: int) -> str:
    """The persistent store in a word: "none" (not kept), "ok", or "failing" (its last
    save failed)."""
    if not bits & pm.STORE_BITS["kept"]:
        return "none"
    return "failing" if bits & pm.STORE_BITS["failing"] else "ok"


def info_dict(i: pm.DeviceInfo) -> dict:
    try:
        mode = pm.Mode(i.mode).name
    except ValueError:
        mode = f"mode {i.mode}"
    return {
        "protocol_version": i.protocol_version,
        "firmware_version": i.firmware_version,
        "chemistry": i.chemistry,
        "mode": mode,
        "n_series": i.n_series,
        "n_parallel": i.n_parallel,
        "n_temp_sensors": i.n_temp_sensors,
        "capacity_ah": number(i.capacity_ah),
        "capabilities": [c.name for c in pm.Capability if i.capabilities & c],
        # from 1.1; None (or empty) from a 1.0 device
        "pack_id": i.pack_id or None,
        "serial": i.serial or None,
        "firmware_build": i.firmware_build or None,
        "config_schema_version": i.config_schema_version or None,
        "max_page_entries": i.max_page_entries or None,
        "protocol_revisions": list(i.protocol_revisions),
        "message_types": [f"0x{t:02X} {_code_name(MESSAGE_NAMES, t)}" for t in i.message_types],
    }


# How a view writes an array of readings: a list (`_floats`), or JSON text (`floats_text`)
# for a message that goes out as JSON at once (`dumps`).
FloatArray = Callable[[np.ndarray], list[float | None] | JsonText]


def cells_dict(m: pm.CellVoltages, array: FloatArray = _floats) -> dict:
    return {"cell_voltage_v": array(m.cell_voltage_v)}


def temps_dict(m: pm.Temperatures, array: FloatArray = _floats) -> dict:
    return {"temperature_c": array(m.temperature_c)}


def cell_soc_dict(m: pm.CellSoc) -> dict:
    return {"soc_pct": _floats(m.soc_pct)}


def balancing_dict(m: pm.BalancingState) -> dict:
    mask = np.asarray(m.mask, bool)
    return {"mode": _code_name(BALANCING_MODES, m.mode), "mask": mask.tolist(),
            "bleeding_cells": (np.flatnonzero(mask) + 1).tolist()}


def fault_entry_dict(e: dict) -> dict:
    """A fault log entry: the names of `FaultEvent.as_dict`, plus the state and pack SoC
    when it happened; `cell` / `sensor` from 1 (None: not that kind, or none), `value`
    None: no reading; from a 1.1 device also its `boot` and `utc_s` (None: unknown)."""
    name = fault_name(e["code"])
    return {
        "t_s": e["t_s"],
        "name": name,
        "code": e["code"],
        "level": level_name(e["level"]),
        "action": "raised" if e["action"] == 1 else "cleared",
        **subject_fields(name, e["index"]),
        "value": number(e["value"]),
        "state": state_name(e["state"]),
        "soc_pct": number(e["soc_pct"]),
        "boot": e.get("boot") or None,
        "utc_s": _time(e.get("utc_s", math.nan)),
    }


def fault_event_dict(ev: pm.FaultEvent) -> dict:
    """A pushed FaultEvent, with the names of a fault log entry (`fault_entry_dict`) and its
    number in the log (`log_index`)."""
    name = fault_name(ev.code)
    return {"log_index": ev.log_index, "boot": ev.boot or None, "t_s": ev.time_s,
            "utc_s": _time(ev.utc_s), "name": name, "code": ev.code,
            "level": level_name(ev.level), "action": "raised" if ev.action == 1 else "cleared",
            **subject_fields(name, ev.index), "value": number(ev.value)}


def _time(x: float) -> float | None:
    """A time as it is (float64 on the wire: not rounded like a reading); None unknown."""
    return None if not math.isfinite(x) else x


def counter_dicts(entries: list[dict]) -> list[dict]:
    """CounterPage entries: name, value (None: none yet) and unit."""
    return [{"name": e["name"], "value": _time(e["value"]), "unit": e["unit"]} for e in entries]


def cell_health_dicts(entries: list[dict]) -> list[dict]:
    """CellHealthPage entries from the first cell on: numbered from 1 as `cell`."""
    return [{"cell": i + 1, "soh_pct": number(e["soh_pct"]),
             "capacity_ah": number(e["capacity_ah"]), "resistance_ohm": number(e["resistance_ohm"]),
             "resistance_pct": number(e["resistance_pct"])} for i, e in enumerate(entries)]


def config_log_dict(e: dict) -> dict:
    """A ConfigLogPage entry, the values as JSON gives them (a text that is not JSON, one
    cut short, as it is)."""
    return {"boot": e["boot"] or None, "t_s": e["t_s"], "utc_s": _time(e["utc_s"]),
            "who": e["who"], "param": e["param"], "old": _json_value(e["old"]),
            "new": _json_value(e["new"])}


def _json_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def fmt_utc(utc_s: float | None) -> str:
    """A UTC time as people read it, to the second ("2025-03-01 12:00:05Z"); "-" unknown."""
    if utc_s is None:
        return "-"
    return datetime.fromtimestamp(utc_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def event_text(d: dict) -> str:
    """A fault event or log entry dict on one line, its cell or sensor from 1:
    `12.3 s  FAULT CELL_OVERVOLTAGE raised, cell 3`."""
    where = subject_text(d)
    return (f"{fmt(d['t_s'], '.1f', 's')}  {d['level']} {d['name']} {d['action']}"
            + (f", {where}" if where else ""))


def parameter_dict(p: dict) -> dict:
    """A ParameterList entry: id, name, kind name, unit, choices; the range, default,
    access and persistence a 1.1 device adds (None from a 1.0 one)."""
    access = p["access"]
    return {"id": p["param_id"], "name": p["name"],
            "kind": _code_name(VALUE_KIND_NAMES, p["kind"]), "unit": p["unit"],
            "choices": list(p["choices"]),
            "min": _bound(p["min"]), "min_excluded": bool(p["open_ends"] & pm.OPEN_END_BITS["min"]),
            "max": _bound(p["max"]), "max_excluded": bool(p["open_ends"] & pm.OPEN_END_BITS["max"]),
            "default": _default(p),
            "access": [name for name, bit in pm.ACCESS_BITS.items() if access & bit] or None,
            "persisted": p["persisted"] if access else None}


def _bound(x: float) -> float | None:
    """A parameter's bound as it is (a setting, exact on the wire); None for none."""
    return None if math.isnan(x) else x


def _default(p: dict) -> float | int | bool | str | None:
    """The default as the parameter's kind: a CHOICE's travels as its word's position."""
    x, kind = p["default"], p["kind"]
    if math.isnan(x):
        return None
    if kind == pm.ValueKind.CHOICE:
        return p["choices"][int(x)] if 0 <= x < len(p["choices"]) else None
    if kind == pm.ValueKind.BOOL:
        return bool(x)
    return int(x) if kind == pm.ValueKind.INT else x


def config_value(v: dict) -> float | int | bool | str | None:
    """A ConfigValues entry's value, as JSON takes it: a setting is exact (float64 on the
    wire), so it is not rounded like a reading."""
    value = v["value"]
    if v["kind"] == pm.ValueKind.FLOAT and math.isnan(value):
        return None
    return value


def fault_units(params: list[dict]) -> dict[str, str]:
    """Fault name -> the unit of its readings, from the device's parameter list
    (`protection.FAULT.LEVEL[.quantity].threshold`); only faults with one unit."""
    units: dict[str, set[str]] = {}
    for p in params:
        parts = p["name"].split(".")
        if parts[0] == "protection" and parts[-1] == "threshold" and len(parts) >= 4:
            units.setdefault(parts[1], set()).add(p["unit"])
    return {name: next(iter(u)) for name, u in units.items() if len(u) == 1}


# --- text for people (tables of `query`, the `monitor` view) ------------------------------

def fmt(x: float | None, spec: str, unit: str = "") -> str:
    """A number with its unit; "-" for no reading."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:{spec}} {unit}".rstrip()


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return "-"
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def fmt_current(a: float | None) -> str:
    if a is None or math.isnan(a):
        return "-"
    what = "charging" if a > 0 else "discharging" if a < 0 else "no current"
    return f"{a:+.3f} A ({what})"


def fmt_contactors(d: dict) -> str:
    closed = d["contactors_closed"]
    return f"{d['contactors']} ({'closed: ' + ', '.join(closed) if closed else 'all open'})"


def status_rows(d: dict) -> list[tuple[str, str]]:
    """A status dict (`status_dict`) as (label, text) rows."""

    def where(kind: str, number: int | None) -> str:
        return "" if number is None else f" ({kind} {number})"

    return [
        ("state", d["state"]),
        ("contactors", fmt_contactors(d)),
        ("contactor feedback", "-" if d["contactor_feedback"] is None
         else ", ".join(d["contactor_feedback"]) or "all open"),
        ("faults", ", ".join(d["faults"]) or "none"),
        ("fault levels", fmt_levels(d["faults_by_level"])),
        ("pack / bus voltage", f"{fmt(d['pack_voltage_v'], '.2f', 'V')} / "
                               f"{fmt(d['bus_voltage_v'], '.2f', 'V')}"),
        ("current", fmt_current(d["current_a"])),
        ("SoC / SoH", f"{fmt(d['soc_pct'], '.1f', '%')} / {fmt(d['soh_pct'], '.1f', '%')}"),
        ("limits charge / discharge", f"{fmt(d['charge_limit_a'], '.2f', 'A')} / "
                                      f"{fmt(d['discharge_limit_a'], '.2f', 'A')}"),
        ("voltage limits CVL / DVL", f"{fmt(d['charge_voltage_limit_v'], '.2f', 'V')} / "
                                     f"{fmt(d['discharge_voltage_limit_v'], '.2f', 'V')}"),
        ("remaining energy", fmt(d["remaining_wh"], ".1f", "Wh")),
        ("runtime", "- (not discharging)" if d["runtime_s"] is None
         else fmt_duration(d["runtime_s"])),
        ("cell voltage min / max",
         f"{fmt(d['cell_v_min'], '.3f', 'V')}"
         f"{where('cell', d['cell_v_min_cell'])} / "
         f"{fmt(d['cell_v_max'], '.3f', 'V')}"
         f"{where('cell', d['cell_v_max_cell'])}"),
        ("temperature min / max",
         f"{fmt(d['temp_c_min'], '.1f', '°C')}"
         f"{where('sensor', d['temp_c_min_sensor'])} / "
         f"{fmt(d['temp_c_max'], '.1f', '°C')}"
         f"{where('sensor', d['temp_c_max_sensor'])}"),
        ("balancing", f"{d['balancing_count']} cell(s) bleeding"),
        ("device time", fmt(d["time_s"], ".1f", "s")),
    ]


def fmt_levels(levels: dict[str, list[str]] | None) -> str:
    """The active faults by level ("WARNING: A, B; ALARM: A"); "-" when not known."""
    if levels is None:
        return "-"
    return "; ".join(f"{level}: {', '.join(names)}" for level, names in levels.items()
                     if names) or "none"


def fmt_value(v: object) -> str:
    """A configuration value as the TOML file writes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nan"
    return str(v)
